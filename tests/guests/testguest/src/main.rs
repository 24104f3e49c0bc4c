//! testguest: a small bare-metal EL1 guest that checks, from the inside,
//! what hv-arm promises a domain.
//!
//! It boots exactly like a Linux kernel (an arm64 Image loaded at guest RAM
//! base + text_offset, entered at EL1h with the MMU off, DAIF masked and
//! x0 = the guest DTB) and runs on two vCPUs. The MMU stays off throughout,
//! so it depends on nothing but the boot protocol and the devices of the
//! guest memory map (`armvm::layout`).
//!
//! What it checks, one console line each (`testguest: <name> ok` or
//! `testguest: <name> FAIL <details>`), then `testguest: PASS` or
//! `testguest: FAIL <n>` and PSCI SYSTEM_OFF:
//! - the boot state (EL1h, MPIDR, DAIF, MMU off) and the DTB with its
//!   `/chosen/bootargs`;
//! - its own exception vectors (an `udf`), so later failures are not ours;
//! - PSCI through `hvc #0`: version 1.1, PSCI_FEATURES, MIGRATE_INFO_TYPE,
//!   unknown functions, CPU_ON and AFFINITY_INFO with bad and good targets;
//!   vCPU 1 must start at the given entry with the given context id;
//! - the virtual GIC and timer: both vCPUs wake their redistributors and
//!   take a 1 ms virtual-timer tick; vCPU 0 sends vCPU 1 an SGI;
//! - hostile acts by vCPU 0 while vCPU 1 keeps ticking: a load from an IPA
//!   nothing is mapped at, an HVC with an unknown immediate, and a pair
//!   load (no syndrome to emulate from) from the vPL011 must each come back
//!   as the right exception at EL1 — and vCPU 1 must keep ticking, showing
//!   the hypervisor kept serving the other vCPU;
//! - CPU_OFF from vCPU 1, seen by vCPU 0 through AFFINITY_INFO.
//!
//! With `/chosen/bootargs` = `testguest tmem=ROLE` it runs one of the
//! tmem programs instead (see `tmem.rs`), with the same line format.
//!
//! Every wait is bounded by the virtual counter, so a broken hypervisor
//! gives FAIL lines rather than a hang. With the `bare-qemu` feature the
//! guest runs on QEMU itself (no hypervisor) to check the guest: both
//! aborts are then provoked at an address QEMU leaves unassigned, and the
//! HVC-immediate check, which QEMU's PSCI cannot pass, is skipped.
#![no_std]
#![no_main]

mod boot;
mod fdt;
mod hw;
mod tmem;

use core::arch::asm;
use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use boot::{CPUS, TICK_INTERVAL};
use hw::{say, smccc, sysreg_read};

/// A failure's details, formatted into a fixed buffer (there is no heap);
/// longer text is cut.
#[derive(Clone, Copy)]
pub struct Msg {
    buf: [u8; MSG_MAX],
    len: u8,
}

/// Small enough that `Result<_, Msg>` stays cheap to return.
const MSG_MAX: usize = 120;

impl Msg {
    pub const fn new() -> Self {
        Self {
            buf: [0; MSG_MAX],
            len: 0,
        }
    }

    /// Appends one byte (non-ASCII as `?`, so the text stays UTF-8).
    pub fn push(&mut self, b: u8) {
        let at = self.len as usize;
        if at < MSG_MAX {
            self.buf[at] = if b.is_ascii() { b } else { b'?' };
            self.len += 1;
        }
    }

    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("?")
    }
}

impl Default for Msg {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Write for Msg {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(|b| self.push(b));
        Ok(())
    }
}

/// Formats a [`Msg`].
macro_rules! msg {
    ($($arg:tt)*) => {{
        let mut m = $crate::Msg::new();
        let _ = core::fmt::Write::write_fmt(&mut m, format_args!($($arg)*));
        m
    }};
}
pub(crate) use msg;

/// Counts failed checks and prints one line per check.
struct Tally {
    failed: u32,
}

impl Tally {
    fn check(&mut self, name: &str, result: Result<(), Msg>) {
        match result {
            Ok(()) => say!("testguest: {name} ok"),
            Err(m) => {
                self.failed += 1;
                say!("testguest: {name} FAIL {}", m.as_str());
            }
        }
    }

    fn skip(&self, name: &str) {
        say!("testguest: {name} skipped (no hypervisor)");
    }
}

/// `Err` with the message unless `cond`.
fn ensure(cond: bool, m: impl FnOnce() -> Msg) -> Result<(), Msg> {
    if cond { Ok(()) } else { Err(m()) }
}

// ------------------------------------------------- what the vCPUs share

/// Written by vCPU 1 at its entry, before `SECONDARY_UP`.
static SECONDARY_X0: AtomicU64 = AtomicU64::new(0);
static SECONDARY_DAIF: AtomicU64 = AtomicU64::new(0);
static SECONDARY_MPIDR: AtomicU64 = AtomicU64::new(0);
static SECONDARY_EL: AtomicU64 = AtomicU64::new(0);
/// 0 until vCPU 1 is up; then 1 with its GIC working, 2 if not (the
/// reason in `SECONDARY_GIC_ERROR`).
static SECONDARY_UP: AtomicU64 = AtomicU64::new(0);
static SECONDARY_GIC_ERROR: Mailbox = Mailbox(UnsafeCell::new(Msg::new()));
/// Set by vCPU 0: vCPU 1 is to call CPU_OFF.
static STOP: AtomicU64 = AtomicU64::new(0);
/// Set by vCPU 1 if CPU_OFF returned (it must not), with its result.
static CPU_OFF_RETURNED: AtomicU64 = AtomicU64::new(0);
static CPU_OFF_RESULT: AtomicU64 = AtomicU64::new(0);

/// One message from vCPU 1 to vCPU 0.
struct Mailbox(UnsafeCell<Msg>);

// SAFETY: vCPU 1 writes the message before it stores 2 to `SECONDARY_UP`
// (release) and never again; vCPU 0 reads it only after loading 2 from
// `SECONDARY_UP` (acquire). The two never overlap.
unsafe impl Sync for Mailbox {}

/// The context id vCPU 1 must receive in x0.
const CONTEXT_ID: u64 = 0x1234;

// --------------------------------------------------------------- vCPU 0

#[unsafe(no_mangle)]
extern "C" fn primary_main(dtb: u64, entry_daif: u64) -> ! {
    // Formatting goes through tables of absolute addresses, right only if
    // the image runs where it was linked: check that first, without them.
    let base: u64;
    // SAFETY: computes an address; touches no memory.
    unsafe {
        asm!("adrp {0}, testguest_header", "add {0}, {0}, :lo12:testguest_header",
            out(reg) base, options(nomem, nostack, preserves_flags));
    }
    if base != hw::LINK_ADDRESS {
        hw::put_str("testguest: load FAIL not running at its link address\n");
        hw::put_str("testguest: FAIL 1\n");
        power_off();
    }
    let hz = hw::counter_hz();
    say!("testguest: vcpu 0 up, dtb {dtb:#x}, counter {hz} Hz");
    TICK_INTERVAL.store(hz / 1000, Relaxed);

    let mut t = Tally { failed: 0 };
    // `testguest tmem=ROLE`: one of the tmem programs instead.
    if let Ok(args) = fdt::bootargs(dtb)
        && let Some(role) = args.as_str().strip_prefix("testguest tmem=")
    {
        say!("testguest: tmem role {role}");
        tmem::run(role, &mut t);
        finish(&t);
    }
    t.check("boot_state", boot_state(entry_daif));
    t.check("dtb", check_dtb(dtb));
    t.check("vectors", check_vectors());
    t.check(
        "counter",
        ensure(sysreg_read!("cntfrq_el0") != 0, || msg!("CNTFRQ_EL0 is 0")),
    );
    psci_queries(&mut t);

    t.check("gic_distributor", hw::gic_distributor_init());
    let gic0 = hw::gic_cpu_init(0);
    let gic0_ok = gic0.is_ok();
    t.check("gic_vcpu0", gic0);
    if gic0_ok {
        hw::timer_arm(TICK_INTERVAL.load(Relaxed));
        hw::irqs_on();
    }
    t.check("timer_vcpu0", wait_ticks(0, 5));

    let vcpu1 = start_vcpu1(&mut t);
    if vcpu1 {
        t.check("timer_vcpu1", wait_ticks(1, 10));
    }
    hostile(&mut t);
    if vcpu1 {
        t.check("sgi_to_vcpu1", sgi_to_vcpu1());
        t.check("vcpu1_still_ticking", still_ticking());
    }
    t.check("no_unexpected_exceptions", no_unexpected());
    if vcpu1 {
        t.check("cpu_off", cpu_off());
    }

    hw::irqs_off();
    hw::timer_stop();
    finish(&t);
}

/// The verdict line, then SYSTEM_OFF.
fn finish(t: &Tally) -> ! {
    if t.failed == 0 {
        say!("testguest: PASS");
    } else {
        say!("testguest: FAIL {}", t.failed);
    }
    power_off();
}

/// State at entry: EL1 on SP_EL1, MMU off, all of DAIF masked, vCPU 0's MPIDR.
fn boot_state(entry_daif: u64) -> Result<(), Msg> {
    let el = (sysreg_read!("currentel") >> 2) & 3;
    ensure(el == 1, || msg!("running at EL{el}, want EL1"))?;
    let spsel = sysreg_read!("spsel");
    ensure(spsel == 1, || msg!("SPSel {spsel}, want 1 (EL1h)"))?;
    ensure(entry_daif == 0x3c0, || {
        msg!("DAIF at entry {entry_daif:#x}, want 0x3c0")
    })?;
    let sctlr = sysreg_read!("sctlr_el1");
    ensure(sctlr & 1 == 0, || {
        msg!("SCTLR_EL1 {sctlr:#x}: MMU on at entry")
    })?;
    let mpidr = sysreg_read!("mpidr_el1") & 0xff_ffff_ffff;
    ensure(mpidr == hw::MPIDR[0], || {
        msg!("MPIDR_EL1 {mpidr:#x}, want {:#x}", hw::MPIDR[0])
    })
}

/// x0 points at a device tree in RAM whose `/chosen/bootargs` is ours.
fn check_dtb(dtb: u64) -> Result<(), Msg> {
    ensure(
        dtb.is_multiple_of(8) && (hw::RAM_BASE..hw::RAM_LIMIT).contains(&dtb),
        || msg!("x0 = {dtb:#x}: not an 8-byte aligned RAM address"),
    )?;
    let me = &CPUS[0];
    let before = me.syncs.load(Relaxed);
    let r = fdt::check_bootargs(dtb, "testguest");
    let faults = me.syncs.load(Relaxed) - before;
    // Reported here, so not again as unexpected.
    PROVOKED.store(PROVOKED.load(Relaxed) + faults, Relaxed);
    ensure(faults == 0, || {
        msg!(
            "{faults} aborts reading the tree (last FAR {:#x})",
            me.far.load(Relaxed)
        )
    })?;
    r
}

// -------------------------------------------------- expected exceptions

/// Exception classes (ESR_EL1.EC).
const EC_UNKNOWN: u64 = 0x00;
const EC_DABT_CUR: u64 = 0x25;
/// Data fault status: synchronous external abort.
const DFSC_EXTERNAL: u64 = 0x10;

/// Synchronous exceptions vCPU 0 provoked on purpose (compared at the end
/// with all it took).
static PROVOKED: AtomicU64 = AtomicU64::new(0);

/// One provoked exception: what the handler recorded.
struct Trap {
    esr: u64,
    far: u64,
}

/// Runs `probe` (which returns the address of the instruction meant to
/// trap) and checks that exactly one synchronous exception of class `ec`
/// was taken with ELR_EL1 at that instruction.
fn expect_trap(ec: u64, probe: impl FnOnce() -> u64) -> Result<Trap, Msg> {
    let me = &CPUS[0];
    let before = me.syncs.load(Relaxed);
    let pc = probe();
    let taken = me.syncs.load(Relaxed) - before;
    PROVOKED.store(PROVOKED.load(Relaxed) + taken, Relaxed);
    ensure(taken == 1, || {
        msg!("{taken} exceptions taken at {pc:#x}, want 1")
    })?;
    let (esr, far, elr) = (
        me.esr.load(Relaxed),
        me.far.load(Relaxed),
        me.elr.load(Relaxed),
    );
    let got = (esr >> 26) & 0x3f;
    ensure(got == ec, || {
        msg!("ESR_EL1 {esr:#x}: EC {got:#x}, want {ec:#x}")
    })?;
    ensure(elr == pc, || {
        msg!("ELR_EL1 {elr:#x}, want {pc:#x} (the trapping instruction)")
    })?;
    Ok(Trap { esr, far })
}

/// Our own vectors work: `udf` is undefined at EL1 and never leaves it.
fn check_vectors() -> Result<(), Msg> {
    expect_trap(EC_UNKNOWN, || {
        let pc: u64;
        // SAFETY: the undefined instruction is taken by our vector, which
        // skips it; no register or memory is changed.
        unsafe { asm!("adr {pc}, 2f", "2: udf #0", pc = out(reg) pc, options(nostack)) };
        pc
    })
    .map(|_| ())
}

/// (a) A load from an IPA that stage 2 does not map: a synchronous external
/// abort, FAR_EL1 = the address.
fn abort_unmapped() -> Result<(), Msg> {
    let trap = expect_trap(EC_DABT_CUR, || {
        let pc: u64;
        // SAFETY: nothing is mapped at the address: the hypervisor injects
        // a data abort, our vector skips the load; the destination register
        // is declared clobbered.
        unsafe {
            asm!("adr {pc}, 2f", "2: ldr {v}, [{a}]", pc = out(reg) pc, v = out(reg) _,
                a = in(reg) hw::UNMAPPED_IPA, options(nostack));
        }
        pc
    })?;
    ensure(trap.far == hw::UNMAPPED_IPA, || {
        msg!("FAR_EL1 {:#x}, want {:#x}", trap.far, hw::UNMAPPED_IPA)
    })?;
    let dfsc = trap.esr & 0x3f;
    ensure(dfsc == DFSC_EXTERNAL, || {
        msg!("DFSC {dfsc:#x}, want {DFSC_EXTERNAL:#x}")
    })
}

/// (b) `hvc` with an immediate other than 0 is no call: undefined at EL1,
/// ELR at the `hvc`, x0 (a valid PSCI function id) untouched.
fn hvc_unknown_immediate() -> Result<(), Msg> {
    let mut x0 = hw::PSCI_VERSION as u64;
    expect_trap(EC_UNKNOWN, || {
        let pc: u64;
        // SAFETY: the hypervisor must answer with an undefined-instruction
        // exception, which our vector skips; every register a call could
        // change is declared clobbered.
        unsafe {
            asm!("adr {pc}, 2f", "2: hvc #0x1234", pc = out(reg) pc,
                inout("x0") x0, out("x1") _, out("x2") _, out("x3") _, out("x4") _,
                out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
                out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _,
                out("x15") _, out("x16") _, out("x17") _, options(nostack));
        }
        pc
    })?;
    ensure(x0 == hw::PSCI_VERSION as u64, || {
        msg!("x0 changed to {x0:#x}: treated as a call")
    })
}

/// Where (c) loads from: the vPL011; with no hypervisor, QEMU's real PL011
/// would answer, so the unassigned address stands in (it still checks the
/// probe and the vector).
const LDP_TARGET: u64 = if hw::BARE_QEMU {
    hw::UNMAPPED_IPA
} else {
    hw::UART_BASE
};

/// (c) A pair load from the vPL011: ESR has no instruction syndrome, the
/// hypervisor cannot emulate it and must inject a data abort.
fn abort_unemulated_mmio() -> Result<(), Msg> {
    let trap = expect_trap(EC_DABT_CUR, || {
        let pc: u64;
        // SAFETY: reading the UART's first two words has no side effect
        // we rely on; the hypervisor injects an abort that our vector skips.
        unsafe {
            asm!("adr {pc}, 2f", "2: ldp {a}, {b}, [{u}]", pc = out(reg) pc, a = out(reg) _,
                b = out(reg) _, u = in(reg) LDP_TARGET, options(nostack));
        }
        pc
    })?;
    ensure(trap.far == LDP_TARGET, || {
        msg!("FAR_EL1 {:#x}, want {LDP_TARGET:#x}", trap.far)
    })
}

/// The hostile part, while vCPU 1 ticks.
fn hostile(t: &mut Tally) {
    t.check("abort_unmapped_ipa", abort_unmapped());
    if hw::BARE_QEMU {
        // QEMU's own PSCI takes any HVC as a call, whatever its immediate.
        t.skip("hvc_unknown_immediate");
    } else {
        t.check("hvc_unknown_immediate", hvc_unknown_immediate());
    }
    t.check("abort_ldp_mmio", abort_unemulated_mmio());
}

// ---------------------------------------------------------------- PSCI

/// PSCI results are status codes (negative) or values such as a version:
/// shown in decimal and hex.
fn expect_psci(what: &str, got: i64, want: i64) -> Result<(), Msg> {
    ensure(got == want, || {
        msg!("{what} returned {got} ({got:#x}), want {want} ({want:#x})")
    })
}

/// The PSCI calls that only ask questions.
fn psci_queries(t: &mut Tally) {
    use hw::*;
    t.check(
        "psci_version",
        expect_psci("PSCI_VERSION", smccc(PSCI_VERSION, 0, 0, 0), 0x1_0001),
    );
    t.check(
        "psci_features",
        expect_psci(
            "PSCI_FEATURES(CPU_ON)",
            smccc(PSCI_FEATURES, PSCI_CPU_ON as u64, 0, 0),
            0,
        )
        .and(expect_psci(
            "PSCI_FEATURES(0x840000ff)",
            smccc(PSCI_FEATURES, 0x8400_00ff, 0, 0),
            PSCI_NOT_SUPPORTED,
        )),
    );
    t.check(
        "migrate_info_type",
        expect_psci(
            "MIGRATE_INFO_TYPE",
            smccc(PSCI_MIGRATE_INFO_TYPE, 0, 0, 0),
            2,
        ),
    );
    t.check(
        "unknown_function",
        expect_psci(
            "function 0x840000ee",
            smccc(0x8400_00ee, 0, 0, 0),
            PSCI_NOT_SUPPORTED,
        ),
    );
    t.check(
        "cpu_on_bad_target",
        expect_psci(
            "CPU_ON(0x80000055)",
            smccc(PSCI_CPU_ON, 0x8000_0055, secondary_entry_address(), 0),
            PSCI_INVALID_PARAMETERS,
        ),
    );
    t.check(
        "affinity_info_bad_target",
        expect_psci(
            "AFFINITY_INFO(0x55)",
            smccc(PSCI_AFFINITY_INFO, 0x55, 0, 0),
            PSCI_INVALID_PARAMETERS,
        ),
    );
}

fn secondary_entry_address() -> u64 {
    boot::secondary_entry as *const () as usize as u64
}

/// vCPU 1's affinity as PSCI takes it (Aff0 = 1).
const VCPU1: u64 = 1;

/// CPU_ON for vCPU 1 and everything about its start; true if it is up and
/// ticking-capable.
fn start_vcpu1(t: &mut Tally) -> bool {
    use hw::*;
    let r = smccc(PSCI_CPU_ON, VCPU1, secondary_entry_address(), CONTEXT_ID);
    t.check("cpu_on", expect_psci("CPU_ON(1)", r, 0));
    if r != 0 {
        return false;
    }
    if hw::BARE_QEMU {
        // QEMU 7.2 accepts a second CPU_ON while the first is still
        // pending (and restarts the CPU): ask only once it is up.
        wait_for(2000, || SECONDARY_UP.load(Acquire) != 0);
    }
    let again = smccc(PSCI_CPU_ON, VCPU1, secondary_entry_address(), CONTEXT_ID);
    t.check(
        "cpu_on_again",
        ensure(again == PSCI_ALREADY_ON || again == PSCI_ON_PENDING, || {
            msg!("second CPU_ON(1) returned {again}, want -4 or -5")
        }),
    );
    let mut last = 0;
    let on = wait_for(2000, || {
        last = smccc(PSCI_AFFINITY_INFO, VCPU1, 0, 0);
        last == 0
    });
    t.check(
        "affinity_info_on",
        ensure(on, || msg!("AFFINITY_INFO(1) stays {last}, want 0 (ON)")),
    );

    let up = wait_for(2000, || SECONDARY_UP.load(Acquire) != 0);
    t.check("secondary_entry", secondary_entry_state(up));
    if !up {
        return false;
    }
    let gic = match SECONDARY_UP.load(Acquire) {
        1 => Ok(()),
        // SAFETY: state 2 was stored after the message, never to change
        // again (see `Mailbox`).
        _ => Err(unsafe { *SECONDARY_GIC_ERROR.0.get() }),
    };
    let ok = gic.is_ok();
    t.check("gic_vcpu1", gic);
    ok
}

/// What vCPU 1 found at its entry.
fn secondary_entry_state(up: bool) -> Result<(), Msg> {
    ensure(up, || {
        msg!("vcpu 1 did not reach its entry point within 2 s")
    })?;
    let x0 = SECONDARY_X0.load(Relaxed);
    ensure(x0 == CONTEXT_ID, || {
        msg!("x0 at entry {x0:#x}, want the context id {CONTEXT_ID:#x}")
    })?;
    let el = SECONDARY_EL.load(Relaxed);
    ensure(el == 1, || msg!("entered at EL{el}"))?;
    let daif = SECONDARY_DAIF.load(Relaxed);
    ensure(daif == 0x3c0, || {
        msg!("DAIF at entry {daif:#x}, want 0x3c0")
    })?;
    let mpidr = SECONDARY_MPIDR.load(Relaxed);
    ensure(mpidr == hw::MPIDR[1], || {
        msg!("MPIDR_EL1 {mpidr:#x}, want {:#x}", hw::MPIDR[1])
    })
}

/// vCPU 1 off by its own CPU_OFF, as AFFINITY_INFO reports.
fn cpu_off() -> Result<(), Msg> {
    STOP.store(1, Release);
    let mut last = 0;
    let off = wait_for(2000, || {
        last = smccc(hw::PSCI_AFFINITY_INFO, VCPU1, 0, 0);
        last == 1
    });
    ensure(CPU_OFF_RETURNED.load(Acquire) == 0, || {
        msg!(
            "CPU_OFF returned {} on vcpu 1",
            CPU_OFF_RESULT.load(Relaxed) as i64
        )
    })?;
    ensure(off, || {
        msg!("AFFINITY_INFO(1) stays {last} after CPU_OFF, want 1 (OFF)")
    })
}

// ----------------------------------------------------- interrupts, time

use hw::wait_for;

/// `cpu` takes at least `n` timer interrupts within 2 s.
fn wait_ticks(cpu: usize, n: u64) -> Result<(), Msg> {
    let ticks = &CPUS[cpu].ticks;
    let ok = wait_for(2000, || ticks.load(Relaxed) >= n);
    ensure(ok, || {
        msg!(
            "{} virtual timer interrupts in 2 s, want {n}",
            ticks.load(Relaxed)
        )
    })
}

/// (d) An SGI written to ICC_SGI1R_EL1 reaches vCPU 1.
fn sgi_to_vcpu1() -> Result<(), Msg> {
    let sgis = &CPUS[1].sgis;
    let before = sgis.load(Relaxed);
    hw::send_sgi(hw::TEST_SGI, 1);
    let ok = wait_for(2000, || sgis.load(Relaxed) > before);
    ensure(ok, || {
        msg!("SGI {} never reached vcpu 1 (2 s)", hw::TEST_SGI)
    })
}

/// (e) After all of the above, both vCPUs still take timer interrupts.
fn still_ticking() -> Result<(), Msg> {
    let before = [CPUS[0].ticks.load(Relaxed), CPUS[1].ticks.load(Relaxed)];
    hw::delay_ms(50);
    let after = [CPUS[0].ticks.load(Relaxed), CPUS[1].ticks.load(Relaxed)];
    ensure(after[1] > before[1], || {
        msg!("vcpu 1 took no tick in 50 ms (count {})", after[1])
    })?;
    ensure(after[0] > before[0], || {
        msg!("vcpu 0 took no tick in 50 ms (count {})", after[0])
    })
}

/// No exception or interrupt that nothing asked for, on either vCPU.
fn no_unexpected() -> Result<(), Msg> {
    for (i, c) in CPUS.iter().enumerate() {
        let n = c.unexpected.load(Relaxed);
        ensure(n == 0, || {
            msg!(
                "vcpu {i}: {n} exceptions through vector slot {}",
                c.last_unexpected.load(Relaxed)
            )
        })?;
        let n = c.other_irqs.load(Relaxed);
        ensure(n == 0, || {
            msg!(
                "vcpu {i}: {n} unexpected interrupts (last INTID {})",
                c.last_other_irq.load(Relaxed)
            )
        })?;
    }
    let (took, provoked) = (CPUS[0].syncs.load(Relaxed), PROVOKED.load(Relaxed));
    ensure(took == provoked, || {
        msg!(
            "vcpu 0 took {took} synchronous exceptions, provoked {provoked} (last ESR {:#x} ELR {:#x})",
            CPUS[0].esr.load(Relaxed),
            CPUS[0].elr.load(Relaxed)
        )
    })?;
    let n = CPUS[1].syncs.load(Relaxed);
    ensure(n == 0, || {
        msg!(
            "vcpu 1 took {n} synchronous exceptions (last ESR {:#x} ELR {:#x})",
            CPUS[1].esr.load(Relaxed),
            CPUS[1].elr.load(Relaxed)
        )
    })
}

fn power_off() -> ! {
    hw::irqs_off();
    hw::timer_stop();
    let r = smccc(hw::PSCI_SYSTEM_OFF, 0, 0, 0);
    say!("testguest: SYSTEM_OFF returned {r:#x}");
    loop {
        core::hint::spin_loop();
    }
}

// --------------------------------------------------------------- vCPU 1

#[unsafe(no_mangle)]
extern "C" fn secondary_main(context_id: u64, entry_daif: u64) -> ! {
    SECONDARY_X0.store(context_id, Relaxed);
    SECONDARY_DAIF.store(entry_daif, Relaxed);
    SECONDARY_MPIDR.store(sysreg_read!("mpidr_el1") & 0xff_ffff_ffff, Relaxed);
    SECONDARY_EL.store((sysreg_read!("currentel") >> 2) & 3, Relaxed);
    let gic = hw::gic_cpu_init(1);
    let ticking = gic.is_ok();
    match gic {
        Ok(()) => {
            hw::timer_arm(TICK_INTERVAL.load(Relaxed));
            hw::irqs_on();
            SECONDARY_UP.store(1, Release);
        }
        Err(m) => {
            // SAFETY: only this vCPU writes the mailbox, once, before
            // publishing it with the release store below (see `Mailbox`).
            unsafe { *SECONDARY_GIC_ERROR.0.get() = m };
            SECONDARY_UP.store(2, Release);
        }
    }
    loop {
        if STOP.load(Acquire) != 0 {
            hw::irqs_off();
            hw::timer_stop();
            let r = smccc(hw::PSCI_CPU_OFF, 0, 0, 0);
            CPU_OFF_RESULT.store(r as u64, Relaxed);
            CPU_OFF_RETURNED.store(1, Release);
            loop {
                core::hint::spin_loop();
            }
        }
        if ticking {
            // Sleep until the next tick or SGI: the hypervisor must block
            // this vCPU and wake it for its virtual interrupts.
            // SAFETY: waits for an interrupt; changes no state.
            unsafe { asm!("wfi", options(nostack, preserves_flags)) };
        } else {
            core::hint::spin_loop();
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    say!(
        "testguest: panic on vcpu {}: {}",
        hw::cpu_index(),
        info.message()
    );
    say!("testguest: FAIL 1");
    power_off();
}
