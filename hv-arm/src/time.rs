//! Time since entry, from the architected counter.

use core::sync::atomic::{AtomicU64, Ordering};

/// Counter value at entry.
static T0: AtomicU64 = AtomicU64::new(0);
/// Counter frequency in Hz (CNTFRQ_EL0, or the DT's clock-frequency).
static FREQ: AtomicU64 = AtomicU64::new(0);

/// Records the entry time. First thing the boot CPU does.
pub fn mark_entry() {
    T0.store(crate::arch::counter(), Ordering::Relaxed);
    FREQ.store(crate::arch::counter_frequency(), Ordering::Relaxed);
}

/// Overrides a frequency the firmware failed to program.
pub fn set_frequency(hz: u64) {
    FREQ.store(hz, Ordering::Relaxed);
}

/// Counter frequency in Hz (0 if unknown).
pub fn frequency() -> u64 {
    FREQ.load(Ordering::Relaxed)
}

/// Counter ticks since entry.
pub fn ticks_since_entry() -> u64 {
    crate::arch::counter().wrapping_sub(T0.load(Ordering::Relaxed))
}

/// Converts counter ticks to microseconds.
pub fn ticks_to_us(ticks: u64) -> u64 {
    match frequency() {
        0 => 0,
        f => ((u128::from(ticks) * 1_000_000) / u128::from(f)) as u64,
    }
}

/// Microseconds since entry.
pub fn uptime_us() -> u64 {
    ticks_to_us(ticks_since_entry())
}
