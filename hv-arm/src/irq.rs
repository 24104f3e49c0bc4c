//! Physical interrupts at EL2: the host GIC and the EL2 physical timer.
//!
//! Every interrupt taken is acknowledged (IAR), priority-dropped (EOIR) and
//! then deactivated (DIR): the CPU interface runs in EOImode 1, so the drop
//! and the deactivation are separate steps, as they will be when a guest
//! deactivates a hardware interrupt routed to it.

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use gic::IntId;
use gic::host::HostGic;
use spin::Once;

use crate::arch::Lock as Mutex;

use crate::{MAX_CPUS, arch};

/// Timer interrupts each CPU takes in the bring-up check.
pub const TARGET_TICKS: u32 = 10;

/// The physical GIC, shared by all CPUs.
pub static GIC: Once<Mutex<HostGic>> = Once::new();

/// INTID of the EL2 physical timer (from the DT).
static HYP_TIMER: AtomicU32 = AtomicU32::new(26);
/// Timer period in counter ticks.
static PERIOD: AtomicU32 = AtomicU32::new(0);
/// Timer interrupts taken, per CPU.
static TICKS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// CPUs that took all their ticks.
static TICKED: AtomicUsize = AtomicUsize::new(0);
/// Interrupts nobody claimed.
static SPURIOUS: AtomicU32 = AtomicU32::new(0);

/// Sets the timer's INTID and period (1 ms of counter time, at least 1 tick).
pub fn configure_timer(intid: u32, counter_hz: u64) {
    HYP_TIMER.store(intid, Ordering::Relaxed);
    let period = (counter_hz / 1000).clamp(1, u64::from(u32::MAX));
    PERIOD.store(period as u32, Ordering::Relaxed);
}

/// INTID of the EL2 physical timer.
pub fn hyp_timer_intid() -> IntId {
    let raw = HYP_TIMER.load(Ordering::Relaxed);
    IntId::ppi(raw.saturating_sub(16))
}

/// Starts the calling CPU's EL2 timer.
pub fn start_ticking() {
    arch::hyp_timer_arm(PERIOD.load(Ordering::Relaxed));
}

/// Number of CPUs that have taken [`TARGET_TICKS`] timer interrupts.
pub fn cpus_done_ticking() -> usize {
    TICKED.load(Ordering::Acquire)
}

/// Interrupts that arrived and belonged to nobody.
pub fn spurious() -> u32 {
    SPURIOUS.load(Ordering::Relaxed)
}

/// The IRQ exception handler's body.
pub fn handle() {
    for_each_pending(|intid| {
        if intid == hyp_timer_intid() {
            on_hyp_timer();
        } else if intid == IntId::sgi(KICK_SGI) {
            // A wake-up; nothing to do.
        } else {
            SPURIOUS.fetch_add(1, Ordering::Relaxed);
            crate::warn!(
                "unclaimed interrupt {} on cpu {}",
                intid.raw_value(),
                arch::cpu_id()
            );
        }
        HostGic::deactivate(intid);
    });
}

/// Acknowledges the interrupts pending at this CPU one by one (at most 16
/// per call, so a stuck source cannot hold the CPU), drops each one's
/// priority and hands it to `f`, which decides when to deactivate it.
pub fn for_each_pending(mut f: impl FnMut(IntId)) {
    for _ in 0..16 {
        let Some(intid) = HostGic::acknowledge() else {
            break;
        };
        if intid == IntId::SPECIAL_NONE {
            break;
        }
        HostGic::priority_drop(intid);
        f(intid);
    }
}

fn on_hyp_timer() {
    let cpu = arch::cpu_id();
    let Some(count) = TICKS.get(cpu) else {
        arch::hyp_timer_stop();
        return;
    };
    let n = count.fetch_add(1, Ordering::Relaxed) + 1;
    if n < TARGET_TICKS {
        start_ticking();
    } else {
        arch::hyp_timer_stop();
        crate::println!("cpu {}: {} timer ticks", cpu, n);
        crate::info!(
            "cpu {}: timer fired {} times, each acked, dropped and deactivated",
            cpu,
            n
        );
        TICKED.fetch_add(1, Ordering::Release);
        // Wake the boot CPU, which waits for every CPU in WFE.
        aarch64_cpu::asm::sev();
    }
}

/// The SGI one CPU sends another to make it look at its vCPU's state
/// (leave the guest, or end a WFI).
pub const KICK_SGI: u32 = 0;

/// Host INTID of the console UART's receive interrupt, once enabled.
static CONSOLE_INTID: AtomicU32 = AtomicU32::new(0);
/// Host INTID of the GIC maintenance interrupt.
static MAINTENANCE_INTID: AtomicU32 = AtomicU32::new(25);

/// The console UART's INTID, if console input is routed to the guest.
pub fn console_intid() -> Option<u32> {
    match CONSOLE_INTID.load(Ordering::Relaxed) {
        0 => None,
        n => Some(n),
    }
}

/// The GIC maintenance interrupt's INTID.
pub fn maintenance_intid() -> Option<u32> {
    Some(MAINTENANCE_INTID.load(Ordering::Relaxed))
}

/// Sends the kick SGI to the CPU with `mpidr`.
pub fn kick(mpidr: u64) {
    if let Err(e) = gic::host::send_sgi_to(IntId::sgi(KICK_SGI), mpidr) {
        crate::println!("kick to {:#x} failed: {}", mpidr, e);
    }
}

/// Enables, on the calling CPU served by redistributor `frame`, what a CPU
/// running a vCPU needs: the kick SGI, the maintenance interrupt and the
/// virtual timer PPI (forwarded to the guest with the HW bit).
pub fn enable_guest_interrupts(frame: usize, maintenance: u32, vtimer: u32) {
    MAINTENANCE_INTID.store(maintenance, Ordering::Relaxed);
    let Some(gic) = GIC.get() else { return };
    let mut gic = gic.lock();
    let private = [
        (IntId::sgi(KICK_SGI), false),
        (IntId::ppi(maintenance.saturating_sub(16)), true),
        (IntId::ppi(vtimer.saturating_sub(16)), true),
    ];
    for (intid, level) in private {
        if let Err(e) = gic.enable_private(intid, frame, level) {
            crate::println!("cannot enable interrupt {}: {}", intid.raw_value(), e);
        }
    }
}

/// Routes the console UART's interrupt to the CPU with `mpidr` and
/// unmasks its receive interrupts.
pub fn enable_console_input(intid: u32, mpidr: u64, level: bool) {
    let Some(gic) = GIC.get() else { return };
    match gic
        .lock()
        .enable_shared(IntId::spi(intid.saturating_sub(32)), mpidr, level)
    {
        Ok(()) => {
            CONSOLE_INTID.store(intid, Ordering::Relaxed);
            crate::console::enable_input_irq();
        }
        Err(e) => crate::println!("console input interrupt {}: {}", intid, e),
    }
}

/// Maintenance events per CPU: list registers EOId with the EOI bit, and
/// underflows (few list registers left valid while more were pending).
static MAINT_EOI: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static MAINT_UNDERFLOW: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// Records one maintenance interrupt: ICH_MISR_EL2 and the number of
/// ICH_EISR_EL2 bits set.
pub fn count_maintenance(misr: u64, eois: u32) {
    let cpu = arch::cpu_id();
    if let Some(c) = MAINT_EOI.get(cpu) {
        c.fetch_add(eois, Ordering::Relaxed);
    }
    // MISR.U: underflow.
    if misr & (1 << 1) != 0
        && let Some(c) = MAINT_UNDERFLOW.get(cpu)
    {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// This CPU's maintenance counts: (EOI, underflow).
pub fn maintenance_counts() -> (u32, u32) {
    let cpu = arch::cpu_id();
    (
        MAINT_EOI.get(cpu).map_or(0, |c| c.load(Ordering::Relaxed)),
        MAINT_UNDERFLOW
            .get(cpu)
            .map_or(0, |c| c.load(Ordering::Relaxed)),
    )
}

/// Sends the kick SGI to every other CPU (and an event, for WFE waiters).
pub fn kick_others() {
    if let Err(e) = HostGic::send_sgi_to_others(IntId::sgi(KICK_SGI)) {
        crate::println!("kick to all failed: {}", e);
    }
    aarch64_cpu::asm::sev();
}

/// Acknowledges and retires whatever interrupts are pending at this CPU,
/// for CPUs with nothing to do.
pub fn discard_pending() {
    for_each_pending(HostGic::deactivate);
}
