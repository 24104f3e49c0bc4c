//! The system registers a guest owns, and the EL2 controls around it.
//!
//! [`El1Regs`] is everything of a vCPU that lives in EL1/EL0 system
//! registers (MMU, exception, thread and timer state, and its part of the
//! GIC virtual CPU interface); it is saved when a vCPU leaves a physical
//! CPU and restored when it comes back. The general and FP/SIMD registers
//! are switched on every trap by [`crate::guest_entry`].
//!
//! aarch64-cpu lacks ICH_ELRSR_EL2 and ICH_EISR_EL2 and the per-index list
//! register access needs one instruction per index, so those accessors are
//! written here.

macro_rules! read {
    ($reg:literal) => {{
        let v: u64;
        // SAFETY: reading an EL1/EL2 system register at EL2 has no side
        // effects and touches no memory.
        unsafe { core::arch::asm!(concat!("mrs {0}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}

macro_rules! write {
    ($reg:literal, $v:expr) => {{
        let v: u64 = $v;
        // SAFETY: these registers belong to the guest context or to EL2's
        // control of it; the hypervisor's own EL2 translation and
        // exception state are not among them.
        unsafe { core::arch::asm!(concat!("msr ", $reg, ", {0}"), in(reg) v, options(nomem, nostack, preserves_flags)) };
    }};
}

pub(crate) use {read, write};

/// SCTLR_EL1 at reset: MMU and caches off, RES1 bits set.
pub const SCTLR_EL1_RESET: u64 = 0x30d0_0800;
/// PSTATE a vCPU starts in: EL1h with D, A, I and F masked.
pub const PSTATE_EL1H_MASKED: u64 = 0x3c5;

/// A vCPU's EL1/EL0 system-register state.
#[derive(Clone, Copy, Debug, Default)]
pub struct El1Regs {
    sctlr: u64,
    cpacr: u64,
    ttbr0: u64,
    ttbr1: u64,
    tcr: u64,
    esr: u64,
    far: u64,
    afsr0: u64,
    afsr1: u64,
    mair: u64,
    amair: u64,
    vbar: u64,
    contextidr: u64,
    tpidr_el0: u64,
    tpidrro_el0: u64,
    tpidr_el1: u64,
    sp_el0: u64,
    sp_el1: u64,
    elr_el1: u64,
    spsr_el1: u64,
    par: u64,
    csselr: u64,
    cntkctl: u64,
    mdscr: u64,
    cntv_ctl: u64,
    cntv_cval: u64,
    ich_vmcr: u64,
    ich_ap0r0: u64,
    ich_ap1r0: u64,
    /// Pointer authentication keys (APIA, APIB, APDA, APDB, APGA; low and
    /// high halves), when the CPU has them: each guest kernel sets its
    /// own, and a vCPU resumed with another's would fail every check.
    pauth: [u64; 10],
}

/// Whether the CPUs implement pointer authentication (set once by
/// [`detect_features`]).
static HAS_PAUTH: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Records which optional EL1 state this CPU has (call on each CPU before
/// saving or restoring [`El1Regs`]; every CPU of a system matches).
pub fn detect_features() {
    let isar1 = read!("id_aa64isar1_el1");
    let isar2 = read!("s3_0_c0_c6_2"); // ID_AA64ISAR2_EL1
    // APA [7:4], API [11:8], GPA [27:24], GPI [31:28]; ISAR2 APA3 [15:12], GPA3 [11:8].
    let pauth = (isar1 >> 4) & 0xff != 0 || (isar1 >> 24) & 0xff != 0 || (isar2 >> 8) & 0xff != 0;
    HAS_PAUTH.store(pauth, core::sync::atomic::Ordering::Relaxed);
}

fn has_pauth() -> bool {
    HAS_PAUTH.load(core::sync::atomic::Ordering::Relaxed)
}

impl El1Regs {
    /// The architected reset state of a vCPU.
    pub fn reset() -> Self {
        Self {
            sctlr: SCTLR_EL1_RESET,
            ..Self::default()
        }
    }

    /// CNTV_CVAL_EL0 when the saved virtual timer would fire (enabled, not
    /// masked): its compare value in the guest's virtual count.
    pub fn vtimer_armed(&self) -> Option<u64> {
        (self.cntv_ctl & 0b11 == 0b01).then_some(self.cntv_cval)
    }

    /// Reads the calling CPU's registers.
    pub fn save(&mut self) {
        self.sctlr = read!("sctlr_el1");
        self.cpacr = read!("cpacr_el1");
        self.ttbr0 = read!("ttbr0_el1");
        self.ttbr1 = read!("ttbr1_el1");
        self.tcr = read!("tcr_el1");
        self.esr = read!("esr_el1");
        self.far = read!("far_el1");
        self.afsr0 = read!("afsr0_el1");
        self.afsr1 = read!("afsr1_el1");
        self.mair = read!("mair_el1");
        self.amair = read!("amair_el1");
        self.vbar = read!("vbar_el1");
        self.contextidr = read!("contextidr_el1");
        self.tpidr_el0 = read!("tpidr_el0");
        self.tpidrro_el0 = read!("tpidrro_el0");
        self.tpidr_el1 = read!("tpidr_el1");
        self.sp_el0 = read!("sp_el0");
        self.sp_el1 = read!("sp_el1");
        self.elr_el1 = read!("elr_el1");
        self.spsr_el1 = read!("spsr_el1");
        self.par = read!("par_el1");
        self.csselr = read!("csselr_el1");
        self.cntkctl = read!("cntkctl_el1");
        self.mdscr = read!("mdscr_el1");
        self.cntv_ctl = read!("cntv_ctl_el0");
        self.cntv_cval = read!("cntv_cval_el0");
        self.ich_vmcr = read!("ich_vmcr_el2");
        self.ich_ap0r0 = read!("ich_ap0r0_el2");
        self.ich_ap1r0 = read!("ich_ap1r0_el2");
        if has_pauth() {
            self.pauth = [
                read!("s3_0_c2_c1_0"), // APIAKeyLo_EL1
                read!("s3_0_c2_c1_1"), // APIAKeyHi_EL1
                read!("s3_0_c2_c1_2"), // APIBKeyLo_EL1
                read!("s3_0_c2_c1_3"), // APIBKeyHi_EL1
                read!("s3_0_c2_c2_0"), // APDAKeyLo_EL1
                read!("s3_0_c2_c2_1"), // APDAKeyHi_EL1
                read!("s3_0_c2_c2_2"), // APDBKeyLo_EL1
                read!("s3_0_c2_c2_3"), // APDBKeyHi_EL1
                read!("s3_0_c2_c3_0"), // APGAKeyLo_EL1
                read!("s3_0_c2_c3_1"), // APGAKeyHi_EL1
            ];
        }
        // The timer stays with the vCPU: stop it firing on this CPU.
        write!("cntv_ctl_el0", 0);
    }

    /// Loads these registers into the calling CPU.
    pub fn restore(&self) {
        write!("sctlr_el1", self.sctlr);
        write!("cpacr_el1", self.cpacr);
        write!("ttbr0_el1", self.ttbr0);
        write!("ttbr1_el1", self.ttbr1);
        write!("tcr_el1", self.tcr);
        write!("esr_el1", self.esr);
        write!("far_el1", self.far);
        write!("afsr0_el1", self.afsr0);
        write!("afsr1_el1", self.afsr1);
        write!("mair_el1", self.mair);
        write!("amair_el1", self.amair);
        write!("vbar_el1", self.vbar);
        write!("contextidr_el1", self.contextidr);
        write!("tpidr_el0", self.tpidr_el0);
        write!("tpidrro_el0", self.tpidrro_el0);
        write!("tpidr_el1", self.tpidr_el1);
        write!("sp_el0", self.sp_el0);
        write!("sp_el1", self.sp_el1);
        write!("elr_el1", self.elr_el1);
        write!("spsr_el1", self.spsr_el1);
        write!("par_el1", self.par);
        write!("csselr_el1", self.csselr);
        write!("cntkctl_el1", self.cntkctl);
        write!("mdscr_el1", self.mdscr);
        write!("cntv_cval_el0", self.cntv_cval);
        write!("cntv_ctl_el0", self.cntv_ctl);
        write!("ich_vmcr_el2", self.ich_vmcr);
        write!("ich_ap0r0_el2", self.ich_ap0r0);
        write!("ich_ap1r0_el2", self.ich_ap1r0);
        if has_pauth() {
            let k = &self.pauth;
            write!("s3_0_c2_c1_0", k[0]);
            write!("s3_0_c2_c1_1", k[1]);
            write!("s3_0_c2_c1_2", k[2]);
            write!("s3_0_c2_c1_3", k[3]);
            write!("s3_0_c2_c2_0", k[4]);
            write!("s3_0_c2_c2_1", k[5]);
            write!("s3_0_c2_c2_2", k[6]);
            write!("s3_0_c2_c2_3", k[7]);
            write!("s3_0_c2_c3_0", k[8]);
            write!("s3_0_c2_c3_1", k[9]);
        }
        isb();
    }
}

/// Instruction synchronisation barrier.
pub fn isb() {
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// The faulting IPA of a stage-2 abort: HPFAR_EL2.FIPA with FAR's page offset.
pub fn fault_ipa() -> u64 {
    let hpfar = read!("hpfar_el2");
    let far = read!("far_el2");
    ((hpfar & 0x0fff_ffff_ffff_fff0) << 8) | (far & 0xfff)
}

/// Number of list registers (ICH_VTR_EL2.ListRegs + 1).
pub fn nr_lrs() -> usize {
    ((read!("ich_vtr_el2") & 0x1f) + 1) as usize
}

/// ICH_ELRSR_EL2: bit n set = LR n holds no interrupt.
pub fn ich_elrsr() -> u64 {
    read!("ich_elrsr_el2")
}

/// ICH_EISR_EL2: bit n set = LR n signalled an EOI maintenance event.
pub fn ich_eisr() -> u64 {
    read!("ich_eisr_el2")
}

/// ICH_MISR_EL2: which maintenance conditions hold.
pub fn ich_misr() -> u64 {
    read!("ich_misr_el2")
}

/// Writes ICH_HCR_EL2.
pub fn set_ich_hcr(v: u64) {
    write!("ich_hcr_el2", v);
}

/// Reads list register `n` (0..16; others read as 0).
pub fn read_lr(n: usize) -> u64 {
    match n {
        0 => read!("ich_lr0_el2"),
        1 => read!("ich_lr1_el2"),
        2 => read!("ich_lr2_el2"),
        3 => read!("ich_lr3_el2"),
        4 => read!("ich_lr4_el2"),
        5 => read!("ich_lr5_el2"),
        6 => read!("ich_lr6_el2"),
        7 => read!("ich_lr7_el2"),
        8 => read!("ich_lr8_el2"),
        9 => read!("ich_lr9_el2"),
        10 => read!("ich_lr10_el2"),
        11 => read!("ich_lr11_el2"),
        12 => read!("ich_lr12_el2"),
        13 => read!("ich_lr13_el2"),
        14 => read!("ich_lr14_el2"),
        15 => read!("ich_lr15_el2"),
        _ => 0,
    }
}

/// Writes list register `n` (0..16; others ignored).
pub fn write_lr(n: usize, v: u64) {
    match n {
        0 => write!("ich_lr0_el2", v),
        1 => write!("ich_lr1_el2", v),
        2 => write!("ich_lr2_el2", v),
        3 => write!("ich_lr3_el2", v),
        4 => write!("ich_lr4_el2", v),
        5 => write!("ich_lr5_el2", v),
        6 => write!("ich_lr6_el2", v),
        7 => write!("ich_lr7_el2", v),
        8 => write!("ich_lr8_el2", v),
        9 => write!("ich_lr9_el2", v),
        10 => write!("ich_lr10_el2", v),
        11 => write!("ich_lr11_el2", v),
        12 => write!("ich_lr12_el2", v),
        13 => write!("ich_lr13_el2", v),
        14 => write!("ich_lr14_el2", v),
        15 => write!("ich_lr15_el2", v),
        _ => {}
    }
}

/// The value an EL1 read of the ID register `(op0, op1, crn, crm, op2)`
/// returns under HCR_EL2.TID3: the CPU's own value with the features the
/// hypervisor does not virtualise removed. SVE and SME are hidden because
/// their wide registers are not context-switched (the hypervisor's own
/// NEON use would clobber their upper bits); MTE, AMU and MPAM because
/// their registers are not switched either. Unallocated encodings in the
/// ID space read as zero, as the architecture defines them.
pub fn guest_id_register(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> Option<u64> {
    if (op0, op1, crn) != (3, 0, 0) || !(1..=7).contains(&crm) {
        return None;
    }
    let v = match (crm, op2) {
        (1, 0) => read!("s3_0_c0_c1_0"),
        (1, 1) => read!("s3_0_c0_c1_1"),
        (1, 2) => read!("s3_0_c0_c1_2"),
        (1, 3) => read!("s3_0_c0_c1_3"),
        (1, 4) => read!("s3_0_c0_c1_4"),
        (1, 5) => read!("s3_0_c0_c1_5"),
        (1, 6) => read!("s3_0_c0_c1_6"),
        (1, 7) => read!("s3_0_c0_c1_7"),
        (2, 0) => read!("s3_0_c0_c2_0"),
        (2, 1) => read!("s3_0_c0_c2_1"),
        (2, 2) => read!("s3_0_c0_c2_2"),
        (2, 3) => read!("s3_0_c0_c2_3"),
        (2, 4) => read!("s3_0_c0_c2_4"),
        (2, 5) => read!("s3_0_c0_c2_5"),
        (2, 6) => read!("s3_0_c0_c2_6"),
        (2, 7) => read!("s3_0_c0_c2_7"),
        (3, 0) => read!("s3_0_c0_c3_0"),
        (3, 1) => read!("s3_0_c0_c3_1"),
        (3, 2) => read!("s3_0_c0_c3_2"),
        (3, 4) => read!("s3_0_c0_c3_4"),
        (3, 5) => read!("s3_0_c0_c3_5"),
        (3, 6) => read!("s3_0_c0_c3_6"),
        // ID_AA64PFR0_EL1: SVE [35:32], MPAM [43:40], AMU [47:44] removed.
        (4, 0) => read!("s3_0_c0_c4_0") & !(0xf << 32 | 0xf << 40 | 0xf << 44),
        // ID_AA64PFR1_EL1: MTE [11:8], SME [27:24], MPAM_frac [19:16] removed.
        (4, 1) => read!("s3_0_c0_c4_1") & !(0xf << 8 | 0xf << 16 | 0xf << 24),
        // ID_AA64ZFR0_EL1 (SVE) and ID_AA64SMFR0_EL1 (SME): hidden.
        (4, 4) | (4, 5) => 0,
        (5, 0) => read!("s3_0_c0_c5_0"),
        (5, 1) => read!("s3_0_c0_c5_1"),
        (5, 4) => read!("s3_0_c0_c5_4"),
        (5, 5) => read!("s3_0_c0_c5_5"),
        (6, 0) => read!("s3_0_c0_c6_0"),
        (6, 1) => read!("s3_0_c0_c6_1"),
        (6, 2) => read!("s3_0_c0_c6_2"),
        (7, 0) => read!("s3_0_c0_c7_0"),
        (7, 1) => read!("s3_0_c0_c7_1"),
        (7, 2) => read!("s3_0_c0_c7_2"),
        _ => 0,
    };
    Some(v)
}
