//! Secondary CPU bring-up through PSCI CPU_ON.
//!
//! Each secondary enters through aarch64-rt's `secondary_entry`, which runs
//! our `enable_mmu` (same page table, same EL2 set-up as the boot CPU) and
//! the exception vector set-up, then switches to a stack of its own taken
//! from the heap and runs [`secondary_main`]. All CPUs are started at once
//! and the boot CPU waits, with a bound, for each to report in.

use alloc::alloc::{Layout, alloc_zeroed};
use core::sync::atomic::{AtomicUsize, Ordering};

use aarch64_rt::Stack;
use common::platform::{Conduit, EnableMethod, Platform};
use smccc::Smc;

use crate::{arch, irq, println};

/// Stack pages per secondary CPU.
const STACK_PAGES: usize = 16;

/// CPUs running (the boot CPU counts from the start).
static ONLINE: AtomicUsize = AtomicUsize::new(1);

/// A CPU the hypervisor will run on.
#[derive(Clone, Copy, Debug)]
pub struct CpuSlot {
    /// Logical id (0 = boot CPU).
    pub id: usize,
    /// MPIDR affinity.
    pub mpidr: u64,
    /// Its GIC redistributor frame.
    pub frame: usize,
}

/// CPUs currently online.
pub fn online() -> usize {
    ONLINE.load(Ordering::Acquire)
}

/// Starts every CPU in `slots` except the boot CPU; returns how many were
/// asked to start.
pub fn start_secondaries(platform: &Platform, slots: &[CpuSlot]) -> usize {
    let conduit = platform.psci.map(|p| p.conduit);
    let mut started = 0;
    for slot in slots.iter().filter(|s| s.id != 0) {
        let method = platform
            .cpus
            .iter()
            .find(|c| c.mpidr == slot.mpidr)
            .map(|c| c.enable_method);
        match (method, conduit) {
            (Some(EnableMethod::Psci), Some(Conduit::Smc)) => {}
            (Some(EnableMethod::Psci), Some(Conduit::Hvc)) => {
                println!(
                    "cpu {}: PSCI conduit is hvc, which EL2 cannot use; left off",
                    slot.id
                );
                continue;
            }
            (Some(EnableMethod::Psci), None) => {
                println!(
                    "cpu {}: enable-method psci but no /psci node; left off",
                    slot.id
                );
                continue;
            }
            _ => {
                println!("cpu {}: enable-method is not psci; left off", slot.id);
                continue;
            }
        }
        let layout = Layout::new::<Stack<STACK_PAGES>>();
        // SAFETY: the layout is non-zero-sized.
        let stack = unsafe { alloc_zeroed(layout) }.cast::<Stack<STACK_PAGES>>();
        if stack.is_null() {
            println!("cpu {}: no memory for its stack; left off", slot.id);
            continue;
        }
        let s = *slot;
        // SAFETY: `stack` is a fresh allocation that is never freed or
        // reused, so the new CPU owns it for good; PSCI is reached through SMC
        // as the DT says.
        match unsafe {
            aarch64_rt::start_core::<Smc, _, STACK_PAGES>(s.mpidr, stack, move || secondary_main(s))
        } {
            Ok(()) => started += 1,
            Err(e) => println!(
                "cpu {}: PSCI CPU_ON(mpidr {:#x}) failed: {:?}",
                s.id, s.mpidr, e
            ),
        }
    }
    started
}

/// Waits until `expected` CPUs are online or `timeout_ticks` of counter
/// time pass; returns the number online.
pub fn wait_online(expected: usize, timeout_ticks: u64) -> usize {
    let start = arch::counter();
    loop {
        let n = online();
        if n >= expected || arch::counter().wrapping_sub(start) > timeout_ticks {
            return n;
        }
        core::hint::spin_loop();
    }
}

fn secondary_main(slot: CpuSlot) -> ! {
    arch::set_cpu_id(slot.id);
    if let Some(gic) = irq::GIC.get() {
        let mut gic = gic.lock();
        gic.init_cpu(slot.frame);
        if let Err(e) = gic.enable_private(irq::hyp_timer_intid(), slot.frame, true) {
            println!("cpu {}: cannot enable its timer interrupt: {}", slot.id, e);
        }
        // The kick SGI wakes this CPU from WFI when there is work for it.
        if let Err(e) = gic.enable_private(gic::IntId::sgi(irq::KICK_SGI), slot.frame, false) {
            println!("cpu {}: cannot enable the kick SGI: {}", slot.id, e);
        }
    }
    println!("cpu {}: up (mpidr {:#x})", slot.id, slot.mpidr);
    crate::info!(
        "cpu {} up at EL{}, mpidr {:#x}",
        slot.id,
        arch::current_el(),
        slot.mpidr
    );
    ONLINE.fetch_add(1, Ordering::AcqRel);
    crate::secondary_work(slot)
}
