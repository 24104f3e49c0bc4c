//! Small wrappers over the system registers and instructions the boot path
//! needs. aarch64-cpu covers most registers; CNTHP_TVAL_EL2 is missing from
//! it, so that one accessor is written here.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{
    CNTFRQ_EL0, CNTHP_CTL_EL2, CNTPCT_EL0, CurrentEL, ELR_EL2, ESR_EL2, FAR_EL2, MPIDR_EL1,
    Readable, TPIDR_EL2, Writeable,
};

/// The MPIDR affinity fields (Aff3, Aff2, Aff1, Aff0) of the calling CPU.
pub fn mpidr() -> u64 {
    MPIDR_EL1.get() & 0xff_00ff_ffff
}

/// The exception level the CPU runs at.
pub fn current_el() -> u64 {
    CurrentEL.read(CurrentEL::EL)
}

/// Physical counter value (ISB first so it is not read early).
pub fn counter() -> u64 {
    barrier::isb(barrier::SY);
    CNTPCT_EL0.get()
}

/// Counter frequency the firmware programmed (0 when it did not).
pub fn counter_frequency() -> u64 {
    CNTFRQ_EL0.get()
}

/// Logical id of the calling CPU (0 on the boot CPU until set).
pub fn cpu_id() -> usize {
    TPIDR_EL2.get() as usize
}

/// Records the calling CPU's logical id.
pub fn set_cpu_id(id: usize) {
    TPIDR_EL2.set(id as u64);
}

/// Exception syndrome, fault address and return address of the exception
/// being handled.
pub fn fault_registers() -> (u64, u64, u64) {
    (ESR_EL2.get(), FAR_EL2.get(), ELR_EL2.get())
}

/// Arms the EL2 physical timer to fire `ticks` counter ticks from now.
pub fn hyp_timer_arm(ticks: u32) {
    // SAFETY: writes the EL2 physical timer's down-counter, a register of
    // this CPU that only the hypervisor owns; it has no memory effects.
    unsafe {
        core::arch::asm!("msr cnthp_tval_el2, {0:x}", in(reg) u64::from(ticks), options(nomem, nostack, preserves_flags));
    }
    CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET + CNTHP_CTL_EL2::IMASK::CLEAR);
    barrier::isb(barrier::SY);
}

/// Arms the EL2 physical timer to fire when the counter reaches `at`.
pub fn hyp_timer_at(at: u64) {
    // SAFETY: writes the EL2 physical timer's compare value, a register of
    // this CPU that only the hypervisor owns; it has no memory effects.
    unsafe {
        core::arch::asm!("msr cnthp_cval_el2, {0}", in(reg) at, options(nomem, nostack, preserves_flags));
    }
    CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET + CNTHP_CTL_EL2::IMASK::CLEAR);
    barrier::isb(barrier::SY);
}

/// Stops the EL2 physical timer (its interrupt deasserts).
pub fn hyp_timer_stop() {
    CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::CLEAR + CNTHP_CTL_EL2::IMASK::SET);
    barrier::isb(barrier::SY);
}

/// Unmasks IRQs at EL2.
pub fn irq_enable() {
    arm_gic::irq_enable();
}

/// Masks IRQs and returns whether they were unmasked before.
pub fn irq_save() -> bool {
    use aarch64_cpu::registers::DAIF;
    let was_enabled = !DAIF.is_set(DAIF::I);
    arm_gic::irq_disable();
    was_enabled
}

/// Restores the IRQ mask saved by [`irq_save`].
pub fn irq_restore(was_enabled: bool) {
    if was_enabled {
        arm_gic::irq_enable();
    }
}

/// Waits for an interrupt.
pub fn wait_for_interrupt() {
    aarch64_cpu::asm::wfi();
}

/// How a CPU waits for a lock another CPU holds: the YIELD hint, which
/// tells an emulator running CPUs round-robin (QEMU TCG under -icount) to
/// run the holder instead of spinning out a whole time slice, and costs
/// nothing on hardware. (Rust's `spin_loop` emits ISB, which yields nothing.)
pub struct CpuYield;

impl spin::relax::RelaxStrategy for CpuYield {
    fn relax() {
        aarch64_cpu::asm::nop();
        // SAFETY: a hint instruction with no architectural effect.
        unsafe { core::arch::asm!("yield", options(nomem, nostack, preserves_flags)) };
    }
}

/// The spin lock every shared structure of the hypervisor uses.
pub type Lock<T> = spin::mutex::SpinMutex<T, CpuYield>;
