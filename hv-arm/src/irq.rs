//! Physical interrupts at EL2: the host GIC and the EL2 physical timer.
//!
//! Every interrupt taken is acknowledged (IAR), priority-dropped (EOIR) and
//! then deactivated (DIR): the CPU interface runs in EOImode 1, so the drop
//! and the deactivation are separate steps, as they will be when a guest
//! deactivates a hardware interrupt routed to it.

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use gic::IntId;
use gic::host::HostGic;
use spin::{Mutex, Once};

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
    // Bounded: at most a handful of back-to-back interrupts per exception.
    for _ in 0..16 {
        let Some(intid) = HostGic::acknowledge() else {
            break;
        };
        if intid == IntId::SPECIAL_NONE {
            break;
        }
        if intid == hyp_timer_intid() {
            on_hyp_timer();
        } else {
            SPURIOUS.fetch_add(1, Ordering::Relaxed);
            crate::warn!(
                "unclaimed interrupt {} on cpu {}",
                intid.raw_value(),
                arch::cpu_id()
            );
        }
        HostGic::priority_drop(intid);
        HostGic::deactivate(intid);
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
