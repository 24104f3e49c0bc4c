//! The physical CPU's loop: wait for its vCPU, run it, handle its traps.
//!
//! Each physical CPU serves the one vCPU pinned to it. Traps are handled
//! here: HVC/SMC as PSCI (and SMCCC discovery), WFI/WFE, stage-2 data
//! aborts as MMIO to the vGIC distributor and redistributors and the
//! vPL011, trapped ICC_SGI1R_EL1 writes as SGIs, and physical interrupts:
//! the guest's virtual timer (forwarded with the HW bit), maintenance,
//! kicks from other CPUs and console input.
//!
//! What the hypervisor cannot handle for a guest becomes an exception for
//! that guest (an external abort or an undefined instruction, as real
//! hardware would raise) or, failing that, crashes the domain: never the
//! hypervisor.

use core::sync::atomic::{AtomicU64, Ordering};

use armvm::esr::{self, Exit as Trap};
use armvm::layout;
use armvm::psci::{self, Call};
use gic::IntId;
use gic::host::HostGic;

use crate::domain::{Domain, Stop};
use crate::guest_entry::{self, Exit, GuestRegs};
use crate::sysregs::{self, read, write};
use crate::{arch, console, info, irq, println, warn};

/// HCR_EL2 while guests run: VM (stage 2), SWIO, FMO/IMO/AMO (physical
/// interrupts to EL2, virtual ones to the guest), FB and BSU=inner
/// shareable (broadcast the guest's TLB and cache maintenance), TWI/TWE
/// (trap WFI/WFE), TSC (trap SMC), TID3 (ID registers read through
/// `sysregs::guest_id_register`), RW (EL1 is AArch64), and APK/API
/// (pointer authentication keys and instructions do not trap).
const HCR_GUEST: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 9)
    | (1 << 10)
    | (1 << 13)
    | (1 << 14)
    | (1 << 18)
    | (1 << 19)
    | (1 << 31)
    | (1 << 40)
    | (1 << 41);
/// CNTHCTL_EL2: the guest reads the physical counter (EL1PCTEN) but its
/// physical timer traps (EL1PCEN clear): it gets the virtual timer.
const CNTHCTL_GUEST: u64 = 1;
/// ICH_HCR_EL2.En and .UIE.
const ICH_HCR_EN: u64 = 1;
const ICH_HCR_UIE: u64 = 1 << 1;
/// Most list registers used (the architecture's maximum).
const MAX_LRS: usize = 16;
/// Host interrupts the vCPU loop expects.
const VTIMER_PPI: u32 = layout::VTIMER_INTID;

/// Exit counters of the vCPU running on a CPU, for the log line written
/// when it stops.
#[derive(Clone, Copy)]
enum Stat {
    Irq,
    Wfi,
    WfiWaited,
    Wfe,
    Mmio,
    Call,
    SysReg,
    Other,
    /// Counter ticks spent at EL2 between an exit and the next entry,
    /// waiting in WFI excluded.
    El2Ticks,
    /// Counter ticks spent waiting in WFI for the guest.
    IdleTicks,
}
const NR_STATS: usize = 10;

/// One row of counters per CPU. Only its own CPU writes a row, on every
/// exit, so a relaxed load and store do (no lock, no atomic
/// read-modify-write on the exit path).
static STATS: [[AtomicU64; NR_STATS]; crate::MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; NR_STATS] }; crate::MAX_CPUS];

fn stat(which: Stat, n: u64) {
    if let Some(c) = STATS
        .get(arch::cpu_id())
        .and_then(|row| row.get(which as usize))
    {
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
}

/// What to do after a trap, or why the guest loop ended.
pub enum Next {
    /// Back into the guest.
    Resume,
    /// The vCPU turned itself off (PSCI CPU_OFF).
    Off,
    /// WFI with nothing to take on a CPU shared with other vCPUs.
    Block,
    /// Its slice is over.
    Preempt,
    /// Its domain is stopping.
    Stopping,
}

/// Sets the calling CPU's EL2 controls for running guests.
pub fn setup_el2() {
    let Some(vtcr) = crate::stage2::vtcr() else {
        crate::fatal(
            crate::EXIT_REFUSED,
            format_args!("this CPU cannot output 40-bit addresses for stage 2"),
        )
    };
    sysregs::detect_features();
    write!("vtcr_el2", vtcr);
    write!("hcr_el2", HCR_GUEST);
    write!("cnthctl_el2", CNTHCTL_GUEST);
    write!("vpidr_el2", read!("midr_el1"));
    // MDCR_EL2: no debug or PMU traps; HPMN = all counters (PMCR_EL0.N).
    write!("mdcr_el2", (read!("pmcr_el0") >> 11) & 0x1f);
    // ICC_SRE_EL2: system registers at EL2, and EL1 may use them (Enable).
    write!("icc_sre_el2", 0xf);
    // Fine-grained traps (FEAT_FGT) and HCRX_EL2 (FEAT_HCX) reset to
    // UNKNOWN values on hardware: no fine-grained traps, no extensions.
    if (read!("id_aa64mmfr0_el1") >> 56) & 0xf != 0 {
        write!("s3_4_c1_c1_4", 0); // HFGRTR_EL2
        write!("s3_4_c1_c1_5", 0); // HFGWTR_EL2
        write!("s3_4_c1_c1_6", 0); // HFGITR_EL2
        write!("s3_4_c3_c1_4", 0); // HDFGRTR_EL2
        write!("s3_4_c3_c1_5", 0); // HDFGWTR_EL2
    }
    if (read!("id_aa64mmfr1_el1") >> 40) & 0xf != 0 {
        write!("s3_4_c1_c2_2", 0); // HCRX_EL2
    }
    sysregs::isb();
}

/// Runs vCPU `vcpu` of `dom` (its state already loaded) until it must
/// leave the CPU. `slice_over` is asked after each interrupt exit.
pub fn guest_loop(
    dom: &'static Domain,
    vcpu: u32,
    regs: &mut GuestRegs,
    slice_over: &mut dyn FnMut() -> bool,
) -> Next {
    let nr_lrs = sysregs::nr_lrs().min(MAX_LRS);
    let mut lrs = [0u64; MAX_LRS];
    // What this loop last wrote: the LRs are written only up to the
    // highest one that may hold something, and ICH_HCR_EL2 only when it
    // changes. Unknown at the start: all are written once.
    let mut hw = LrHw {
        written: nr_lrs,
        hcr: u64::MAX,
    };
    let mut exited = arch::counter();
    loop {
        if dom.stopping() != Stop::None {
            return Next::Stopping;
        }
        let used = fill_lrs(dom, vcpu, &mut lrs[..nr_lrs], &mut hw);
        let entered = arch::counter();
        stat(Stat::El2Ticks, entered.wrapping_sub(exited));
        let exit = guest_entry::run(regs);
        exited = arch::counter();
        sync_lrs(dom, vcpu, &mut lrs[..used]);
        match exit {
            Exit::Sync => match handle_sync(dom, vcpu, regs) {
                Next::Resume => {}
                other => return other,
            },
            Exit::Irq | Exit::Fiq => {
                stat(Stat::Irq, 1);
                handle_irqs(Some((dom, vcpu)));
                // A maintenance interrupt turned the interface off.
                hw.hcr = u64::MAX;
                if slice_over() {
                    return Next::Preempt;
                }
            }
            Exit::SError => {
                dom.crash(
                    vcpu,
                    format_args!("SError from the guest (ESR_EL2 {:#x})", read!("esr_el2")),
                );
            }
        }
    }
}

/// Empties the list registers and turns the virtual CPU interface off.
pub fn clear_lrs() {
    for n in 0..sysregs::nr_lrs().min(MAX_LRS) {
        sysregs::write_lr(n, 0);
    }
    sysregs::set_ich_hcr(0);
}

/// Logs the exit counts of the vCPU that ran on this CPU (when it stops).
pub fn log_exit_stats(dom: &Domain, vcpu: u32) {
    if let Some(row) = STATS.get(arch::cpu_id()) {
        let mut s = [0u64; NR_STATS];
        for (v, c) in s.iter_mut().zip(row) {
            *v = c.swap(0, Ordering::Relaxed);
        }
        let at = |w: Stat| s.get(w as usize).copied().unwrap_or(0);
        info!(
            "d{}v{}: exits: {} irq, {} wfi ({} waited), {} wfe, {} mmio, {} hvc/smc, {} sysreg, {} other; {} ticks at EL2, {} idle",
            dom.id,
            vcpu,
            at(Stat::Irq),
            at(Stat::Wfi),
            at(Stat::WfiWaited),
            at(Stat::Wfe),
            at(Stat::Mmio),
            at(Stat::Call),
            at(Stat::SysReg),
            at(Stat::Other),
            at(Stat::El2Ticks),
            at(Stat::IdleTicks)
        );
    }
    let (eoi, underflow) = irq::maintenance_counts();
    info!(
        "d{}v{}: off; this cpu took {} EOI and {} underflow maintenance events",
        dom.id, vcpu, eoi, underflow
    );
}

/// The list-register state `fill_lrs` last wrote on this CPU.
struct LrHw {
    /// LRs at and above this index hold zero.
    written: usize,
    /// ICH_HCR_EL2's value.
    hcr: u64,
}

/// Writes the list registers from the vGIC; returns how many it used.
fn fill_lrs(dom: &Domain, vcpu: u32, lrs: &mut [u64], hw: &mut LrHw) -> usize {
    let mut vgic = dom.vgic.lock();
    vgic.drain_hw_deactivations(vcpu as usize, &mut |pintid| {
        HostGic::deactivate(intid_of(pintid));
    });
    let fill = vgic.fill_lrs(vcpu as usize, lrs);
    drop(vgic);
    for (n, lr) in lrs.iter().enumerate().take(hw.written.max(fill.used)) {
        sysregs::write_lr(n, if n < fill.used { *lr } else { 0 });
    }
    hw.written = fill.used;
    let hcr = ICH_HCR_EN | if fill.underflow { ICH_HCR_UIE } else { 0 };
    if hcr != hw.hcr {
        sysregs::set_ich_hcr(hcr);
        hw.hcr = hcr;
    }
    fill.used
}

/// Reads back the list registers `fill_lrs` used into the vGIC.
fn sync_lrs(dom: &Domain, vcpu: u32, lrs: &mut [u64]) {
    // Nothing was filled: nothing to read back, and only reading back
    // produces kicks.
    if lrs.is_empty() {
        return;
    }
    // An LR the hardware lists as empty (ELRSR) finished its interrupt: no
    // need to read it back, only to mark it invalid.
    let empty = sysregs::ich_elrsr();
    for (n, lr) in lrs.iter_mut().enumerate() {
        *lr = if empty & (1 << n) != 0 {
            *lr & !(gic::vgic::LR_PENDING | gic::vgic::LR_ACTIVE)
        } else {
            sysregs::read_lr(n)
        };
    }
    let mut vgic = dom.vgic.lock();
    vgic.sync_lrs(vcpu as usize, lrs);
    let kicks = vgic.take_kicks();
    drop(vgic);
    dom.kick_mask(kicks, vcpu);
}

/// Drains the physical interrupts pending at this CPU; `current` is the
/// vCPU loaded on it, if any.
pub fn handle_irqs(current: Option<(&'static Domain, u32)>) {
    irq::for_each_pending(|intid| {
        let raw = intid.raw_value();
        if raw == VTIMER_PPI {
            match current {
                // Stays active until the guest deactivates the virtual one.
                Some((dom, vcpu)) => {
                    let mask = dom
                        .vgic
                        .lock()
                        .inject_hw(vcpu as usize, VTIMER_PPI, VTIMER_PPI);
                    dom.kick_mask(mask, vcpu);
                }
                None => HostGic::deactivate(intid),
            }
            return;
        }
        HostGic::deactivate(intid);
        if intid == irq::hyp_timer_intid() {
            arch::hyp_timer_stop();
            crate::sched::note_timer();
        } else if Some(raw) == irq::console_intid() {
            console_input();
        } else if Some(raw) == irq::maintenance_intid() {
            // The list registers were already read back; the causes are
            // counted for the statistics the domain prints when it stops.
            let misr = sysregs::ich_misr();
            let eois = sysregs::ich_eisr().count_ones();
            irq::count_maintenance(misr, eois);
            // The interrupt is a level: its condition (underflow, an
            // EOI'd LR) holds until the next fill rewrites the LRs, so it
            // would fire again at once. The virtual interface stays off
            // until then (the guest loop rewrites ICH_HCR_EL2 after every
            // interrupt exit).
            sysregs::set_ich_hcr(0);
        } else if raw != irq::KICK_SGI {
            warn!("cpu {}: unexpected interrupt {}", arch::cpu_id(), raw);
        }
    });
}

/// Moves console input into the vPL011 of the domain that has the input
/// focus; CTRL-A three times moves the focus (see [`console`]).
fn console_input() {
    // Domains whose vPL011 got bytes (ids are below 64).
    let mut pushed = 0u64;
    for _ in 0..64 {
        let Some(b) = console::take_input() else {
            break;
        };
        for byte in console::filter_input(b) {
            let Some(dom) = console::focus().and_then(crate::sched::domain) else {
                continue;
            };
            dom.uart.lock().queue_rx(byte);
            pushed |= 1 << (dom.id % 64);
        }
    }
    for dom in crate::sched::domains() {
        if pushed & (1 << (dom.id % 64)) != 0 {
            let level = dom.uart.lock().irq_level();
            let mask = dom.vgic.lock().set_line(0, layout::VPL011_INTID, level);
            dom.kick_mask(mask, u32::MAX);
        }
    }
}

fn handle_sync(dom: &'static Domain, vcpu: u32, regs: &mut GuestRegs) -> Next {
    let esr_val = read!("esr_el2");
    match esr::decode(esr_val) {
        Trap::Hvc { imm: 0 } => {
            stat(Stat::Call, 1);
            psci_call(dom, vcpu, regs)
        }
        Trap::Hvc {
            imm: crate::xen::HYPERCALL_TAG,
        } if dom.has_xen() => {
            stat(Stat::Call, 1);
            crate::xen::hypercall(dom, vcpu, regs)
        }
        Trap::Smc { imm: 0 } => {
            // A trapped SMC returns to the SMC itself: step over it.
            regs.pc = regs.pc.wrapping_add(4);
            psci_call(dom, vcpu, regs)
        }
        Trap::Hvc { imm } | Trap::Smc { imm } => {
            warn!("d{}v{}: hvc/smc #{:#x} unknown: undef", dom.id, vcpu, imm);
            // HVC's preferred return is the next instruction; the undef
            // must point at the HVC itself.
            if matches!(esr::decode(esr_val), Trap::Hvc { .. }) {
                regs.pc = regs.pc.wrapping_sub(4);
            }
            inject_undef(regs);
            Next::Resume
        }
        Trap::Wfx { wfe } => {
            stat(if wfe { Stat::Wfe } else { Stat::Wfi }, 1);
            regs.pc = regs.pc.wrapping_add(4);
            if wfe {
                Next::Resume
            } else {
                wait_for_interrupt(dom, vcpu)
            }
        }
        Trap::DataAbort(da) => {
            stat(Stat::Mmio, 1);
            let ipa = sysregs::fault_ipa();
            // A fault inside a 2 MiB block being split into pages (Xen ABI
            // mappings) is transient: the entry is back, try again.
            if esr_val & 0x3c == 0x04 && dom.stage2().is_mapped(ipa) {
                return Next::Resume;
            }
            mmio(dom, vcpu, regs, ipa, da);
            Next::Resume
        }
        Trap::SysReg(sr) => {
            stat(Stat::SysReg, 1);
            if sr.is(esr::ICC_SGI1R_EL1) && !sr.read {
                let value = regs.get(sr.rt);
                let mask = dom.vgic.lock().send_sgi(vcpu as usize, value);
                dom.kick_mask(mask, vcpu);
            } else if let Some(v) = sr
                .read
                .then(|| sysregs::guest_id_register(sr.op0, sr.op1, sr.crn, sr.crm, sr.op2))
                .flatten()
            {
                regs.set(sr.rt, v);
            } else if sr.is(esr::ICC_SGI0R_EL1) || sr.is(esr::ICC_ASGI1R_EL1) {
                // Group 0 and other-security-state SGIs do not exist for a
                // non-secure guest: ignored, as the GIC does.
            } else {
                warn!(
                    "d{}v{}: system register access (ESR {:#x}) not handled: undef",
                    dom.id, vcpu, esr_val
                );
                inject_undef(regs);
                return Next::Resume;
            }
            regs.pc = regs.pc.wrapping_add(4);
            Next::Resume
        }
        Trap::InstructionAbort { .. } => {
            let ipa = sysregs::fault_ipa();
            if esr_val & 0x3c == 0x04 && dom.stage2().is_mapped(ipa) {
                return Next::Resume;
            }
            warn!(
                "d{}v{}: instruction fetch from {:#x} outside its memory: abort",
                dom.id, vcpu, ipa
            );
            inject_abort(regs, read!("far_el2"), false, true);
            Next::Resume
        }
        Trap::Other { ec } => {
            stat(Stat::Other, 1);
            dom.crash(
                vcpu,
                format_args!(
                    "unhandled trap EC {:#x} (ESR {:#x}) at pc {:#x}",
                    ec, esr_val, regs.pc
                ),
            );
            Next::Resume
        }
    }
}

/// SCHEDOP_block: as a WFI.
pub fn block(dom: &Domain, vcpu: u32) -> Next {
    wait_for_interrupt(dom, vcpu)
}

/// A trapped WFI: back to the guest at once if it has an interrupt to
/// take, else wait here (IRQs stay masked at EL2; WFI still wakes).
fn wait_for_interrupt(dom: &Domain, vcpu: u32) -> Next {
    console::guest_idle(dom.id, dom.name(), vcpu);
    if dom.vgic.lock().has_deliverable(vcpu as usize) || dom.stopping() != Stop::None {
        return Next::Resume;
    }
    // Other vCPUs share this CPU: leave it to them until there is
    // something to take.
    if crate::sched::shared_here() {
        return Next::Block;
    }
    // Anything that could make the vCPU runnable arrives as a physical
    // interrupt (its timer, a kick) and ends the WFI; the interrupt itself
    // is taken as an exit right after re-entering the guest.
    let t0 = arch::counter();
    aarch64_cpu::asm::wfi();
    let waited = arch::counter().wrapping_sub(t0);
    stat(Stat::WfiWaited, 1);
    stat(Stat::IdleTicks, waited);
    stat(Stat::El2Ticks, waited.wrapping_neg());
    Next::Resume
}

fn psci_call(dom: &'static Domain, vcpu: u32, regs: &mut GuestRegs) -> Next {
    let (x0, x1, x2, x3) = (regs.x[0], regs.x[1], regs.x[2], regs.x[3]);
    let ret: i64 = match psci::decode(x0, x1, x2, x3) {
        Call::Version => i64::from(psci::VERSION_1_1),
        Call::SmcccVersion => i64::from(psci::SMCCC_VERSION_1_1),
        Call::SmcccArchFeatures { function_id } => i64::from(psci::arch_features(function_id)),
        Call::Features { function_id } => i64::from(psci::features(function_id)),
        Call::MigrateInfoType => psci::MIGRATE_INFO_TYPE_NOT_REQUIRED as i64,
        Call::CpuOn {
            target_mpidr,
            entry,
            context_id,
        } => match layout::vcpu_of_mpidr(target_mpidr, dom.vcpus.len() as u32) {
            None => i64::from(psci::INVALID_PARAMETERS),
            Some(t) => match dom.cpu_on(t, entry, context_id) {
                Ok(()) => i64::from(psci::SUCCESS),
                Err(e) => i64::from(e),
            },
        },
        Call::CpuOff => {
            info!("d{}v{}: PSCI CPU_OFF", dom.id, vcpu);
            return Next::Off;
        }
        Call::AffinityInfo {
            target_mpidr,
            lowest_level,
        } => {
            if lowest_level != 0 {
                i64::from(psci::INVALID_PARAMETERS)
            } else {
                match layout::vcpu_of_mpidr(target_mpidr, dom.vcpus.len() as u32)
                    .and_then(|t| dom.affinity_info(t))
                {
                    Some(s) => i64::from(s),
                    None => i64::from(psci::INVALID_PARAMETERS),
                }
            }
        }
        Call::CpuSuspend { .. } => {
            // Standby semantics: like WFI, then success.
            regs.x[0] = psci::SUCCESS as u64;
            return wait_for_interrupt(dom, vcpu);
        }
        Call::SystemOff => {
            println!("({}) PSCI SYSTEM_OFF", dom.name());
            info!("d{}v{}: PSCI SYSTEM_OFF", dom.id, vcpu);
            dom.request_stop(Stop::PowerOff);
            return Next::Resume;
        }
        Call::SystemReset => {
            info!("d{}v{}: PSCI SYSTEM_RESET", dom.id, vcpu);
            dom.request_stop(Stop::Reboot);
            return Next::Resume;
        }
        Call::SystemReset2 {
            reset_type: psci::SYSTEM_WARM_RESET,
            ..
        } => {
            // Our panic-report convention (docs/decisions.md): Linux booted
            // with `reboot=panic_warm panic=-1` resets warm only after a
            // panic, so a warm reset is a crash and follows on-crash.
            dom.crash(vcpu, format_args!("warm reset requested (a kernel panic)"));
            return Next::Resume;
        }
        Call::SystemReset2 { reset_type, .. } => {
            warn!(
                "d{}v{}: SYSTEM_RESET2 type {:#x} not supported",
                dom.id, vcpu, reset_type
            );
            i64::from(psci::INVALID_PARAMETERS)
        }
        Call::Unknown(fid) => {
            warn!("d{}v{}: unknown SMCCC function {:#x}", dom.id, vcpu, fid);
            i64::from(psci::NOT_SUPPORTED)
        }
    };
    regs.x[0] = ret as u64;
    Next::Resume
}

/// Emulates an MMIO access, or gives the guest an external abort.
fn mmio(dom: &'static Domain, vcpu: u32, regs: &mut GuestRegs, ipa: u64, da: esr::DataAbort) {
    let far = read!("far_el2");
    let region = if (layout::GICD_BASE..layout::GICD_BASE + layout::GICD_SIZE).contains(&ipa) {
        Region::Gicd(ipa - layout::GICD_BASE)
    } else if (layout::GICR_BASE..layout::GICR_BASE + layout::GICR_STRIDE * dom.vcpus.len() as u64)
        .contains(&ipa)
    {
        let off = ipa - layout::GICR_BASE;
        Region::Gicr(
            (off / layout::GICR_STRIDE) as usize,
            off % layout::GICR_STRIDE,
        )
    } else if dom.has_vpl011()
        && (layout::VPL011_BASE..layout::VPL011_BASE + layout::VPL011_SIZE).contains(&ipa)
    {
        Region::Uart(ipa - layout::VPL011_BASE)
    } else {
        warn!(
            "d{}v{}: access to {:#x} (pc {:#x}) outside its memory map: external abort",
            dom.id, vcpu, ipa, regs.pc
        );
        inject_abort(regs, far, da.write, false);
        return;
    };
    if !da.isv {
        warn!(
            "d{}v{}: MMIO at {:#x} with an instruction the hypervisor cannot decode (no ISV): abort",
            dom.id, vcpu, ipa
        );
        inject_abort(regs, far, da.write, false);
        return;
    }
    let size = da.sas_bytes;
    let value = if da.write { regs.get(da.rt) } else { 0 };
    let result: Result<u64, ()> = match region {
        Region::Gicd(off) => {
            let mut g = dom.vgic.lock();
            if da.write {
                g.dist_write(off, size, value).map(|m| {
                    drop(g);
                    dom.kick_mask(m, vcpu);
                    0
                })
            } else {
                g.dist_read(off, size)
            }
            .map_err(|_| ())
        }
        Region::Gicr(n, off) => {
            let mut g = dom.vgic.lock();
            if da.write {
                g.redist_write(n, off, size, value).map(|m| {
                    drop(g);
                    dom.kick_mask(m, vcpu);
                    0
                })
            } else {
                g.redist_read(n, off, size)
            }
            .map_err(|_| ())
        }
        Region::Uart(off) => {
            let mut u = dom.uart.lock();
            let r = if da.write {
                u.write(off, size, value as u32, &mut |b| {
                    console::guest_put(dom.id, dom.name(), vcpu, b)
                })
                .map(|_| 0)
            } else {
                u.read(off, size).map(u64::from)
            };
            let level = u.irq_level();
            drop(u);
            let mask = dom
                .vgic
                .lock()
                .set_line(vcpu as usize, layout::VPL011_INTID, level);
            dom.kick_mask(mask, vcpu);
            r.map_err(|_| ())
        }
    };
    match result {
        Ok(v) => {
            if !da.write {
                let v = extend(v, size, da.sign_extend, da.sf);
                regs.set(da.rt, v);
            }
            regs.pc = regs.pc.wrapping_add(4);
        }
        Err(()) => {
            warn!(
                "d{}v{}: {}-byte {} at {:#x} refused by the device model: abort",
                dom.id,
                vcpu,
                size,
                if da.write { "write" } else { "read" },
                ipa
            );
            inject_abort(regs, far, da.write, false);
        }
    }
}

enum Region {
    Gicd(u64),
    Gicr(usize, u64),
    Uart(u64),
}

/// Sign- or zero-extends a `size`-byte load into a W (sf=false) or X register.
fn extend(v: u64, size: u8, sign: bool, sf: bool) -> u64 {
    let bits = u32::from(size) * 8;
    let v = if bits >= 64 {
        v
    } else {
        v & ((1u64 << bits) - 1)
    };
    let v = if sign && bits < 64 {
        let shift = 64 - bits;
        (((v << shift) as i64) >> shift) as u64
    } else {
        v
    };
    if sf { v } else { v & 0xffff_ffff }
}

/// Takes the guest to its EL1 synchronous exception vector with `esr`.
fn inject(regs: &mut GuestRegs, esr_value: u64, far: Option<u64>) {
    let vbar = read!("vbar_el1");
    write!("elr_el1", regs.pc);
    write!("spsr_el1", regs.pstate);
    write!("esr_el1", esr_value);
    if let Some(far) = far {
        write!("far_el1", far);
    }
    regs.pc = vbar.wrapping_add(esr::vector_offset(regs.pstate, esr::VectorKind::Sync));
    let mut pstate = esr::injected_pstate(regs.pstate);
    // PAN is set on exception entry unless SCTLR_EL1.SPAN says otherwise.
    if read!("sctlr_el1") & (1 << 23) == 0 && read!("id_aa64mmfr1_el1") & (0xf << 20) != 0 {
        pstate |= 1 << 22;
    }
    regs.pstate = pstate;
}

fn from_el0(pstate: u64) -> bool {
    // AArch32 (M[4]) or EL0t.
    pstate & 0x10 != 0 || pstate & 0xf == 0
}

fn inject_abort(regs: &mut GuestRegs, far: u64, write: bool, instruction: bool) {
    let el0 = from_el0(regs.pstate);
    let esr_value = if instruction {
        // Instruction abort, same or lower EL (EC 0x21/0x20), IL, IFSC
        // synchronous external abort.
        let ec: u64 = if el0 { 0x20 } else { 0x21 };
        (ec << 26) | (1 << 25) | u64::from(esr::FSC_SYNC_EXTERNAL)
    } else {
        esr::external_dabt_syndrome(el0, write)
    };
    inject(regs, esr_value, Some(far));
}

fn inject_undef(regs: &mut GuestRegs) {
    inject(regs, esr::undef_syndrome(), None);
}

/// The arm-gic INTID for a raw number.
pub fn intid_of(raw: u32) -> IntId {
    match raw {
        0..16 => IntId::sgi(raw),
        16..32 => IntId::ppi(raw - 16),
        _ => IntId::spi(raw - 32),
    }
}
