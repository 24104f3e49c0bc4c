//! Scheduling: which vCPU each physical CPU runs.
//!
//! Every vCPU is placed on one physical CPU when its domain is built and
//! stays there (no migration: partitioned systems want to know where their
//! vCPUs run). Placement follows the domain's `xen,vcpu` hard affinity when
//! it has one, else the least loaded CPU (ties to the lowest number).
//!
//! - A CPU with one vCPU runs it alone: the null scheduler. No tick; a WFI
//!   from the guest waits at EL2 with the guest's timer still live, so an
//!   idle guest costs nothing and wakes at once.
//! - A CPU with several vCPUs time-slices them round robin: each runs for
//!   at most one slice (`sched_slice_ms=` on the hypervisor's command
//!   line, 10 ms by default) while another is runnable. A vCPU that
//!   executes WFI with nothing to take leaves the CPU (blocked) until an
//!   interrupt is deliverable to it or its virtual timer is due: the EL2
//!   timer is armed for the earliest such deadline of the blocked vCPUs, so
//!   a sleeping guest still wakes on time.
//!
//! A CPU with no vCPU (or whose vCPUs are all off) waits in WFI and still
//! serves what comes to it: kicks, and on the boot CPU the console UART.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use arrayvec::ArrayVec;
use spin::Once;

use crate::domain::{Domain, ON, ON_PENDING, Outcome, Stop};
use crate::guest_entry::GuestRegs;
use crate::run::{self, Next};
use crate::sysregs::{self, El1Regs, write};
use crate::{MAX_CPUS, arch, info, println};

/// Most domains the hypervisor builds.
pub const MAX_DOMAINS: usize = common::dom0less::MAX_DOMAINS + 1;
/// Most vCPUs placed on one physical CPU.
pub const MAX_PER_CPU: usize = 32;
/// Time slice when the command line does not say (ms).
pub const DEFAULT_SLICE_MS: u32 = 10;

/// Every domain built at boot, in id order (never changes afterwards; a
/// destroyed domain stays here, dead).
static DOMAINS: Once<Vec<&'static Domain>> = Once::new();
/// Slice length in counter ticks.
static SLICE_TICKS: AtomicU64 = AtomicU64::new(0);
/// Per CPU: it time-slices (more than one vCPU placed on it).
static SHARED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Per CPU: the EL2 timer fired since the flag was last taken.
static TIMER_FIRED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Domains not yet destroyed.
static LIVE: AtomicU32 = AtomicU32::new(0);
/// Set when a domain was destroyed after a crash.
static ANY_CRASHED: AtomicBool = AtomicBool::new(false);

/// Records the domains and the slice; called once, before any CPU serves.
pub fn install(domains: Vec<&'static Domain>, slice_ms: u32) {
    LIVE.store(domains.len() as u32, Ordering::Release);
    let hz = crate::time::frequency().max(1);
    SLICE_TICKS.store(
        (hz * u64::from(slice_ms.max(1)) / 1000).max(1),
        Ordering::Relaxed,
    );
    let mut placed = [0usize; MAX_CPUS];
    for v in domains.iter().flat_map(|d| d.vcpus.iter()) {
        if let Some(n) = placed.get_mut(v.pcpu) {
            *n += 1;
        }
    }
    for (flag, n) in SHARED.iter().zip(placed) {
        flag.store(n > 1, Ordering::Relaxed);
    }
    DOMAINS.call_once(|| domains);
}

/// Every domain, in id order.
pub fn domains() -> &'static [&'static Domain] {
    DOMAINS.get().map_or(&[], |v| v.as_slice())
}

/// The domain with id `id`.
pub fn domain(id: u16) -> Option<&'static Domain> {
    domains().iter().copied().find(|d| d.id == id)
}

/// Whether the calling CPU time-slices several vCPUs.
pub fn shared_here() -> bool {
    SHARED
        .get(arch::cpu_id())
        .is_some_and(|s| s.load(Ordering::Relaxed))
}

/// The EL2 timer fired on this CPU (called from the interrupt path).
pub fn note_timer() {
    if let Some(f) = TIMER_FIRED.get(arch::cpu_id()) {
        f.store(true, Ordering::Relaxed);
    }
}

fn take_timer() -> bool {
    TIMER_FIRED
        .get(arch::cpu_id())
        .is_some_and(|f| f.swap(false, Ordering::Relaxed))
}

/// Places `nr` vCPUs on the online CPUs `0..online`: vCPU i on the least
/// loaded CPU of `affinity[i]` (all CPUs when 0), counting what is already
/// placed in `load`. Errs with the vCPU whose affinity names no online CPU.
pub fn place(
    nr: usize,
    affinity: &[u64],
    online: usize,
    load: &mut [u32; MAX_CPUS],
) -> Result<Vec<usize>, usize> {
    let mut out = Vec::with_capacity(nr);
    for i in 0..nr {
        let mask = affinity.get(i).copied().unwrap_or(0);
        let pick = (0..online.min(MAX_CPUS))
            .filter(|&c| mask == 0 || (c < 64 && mask & (1 << c) != 0))
            .filter(|&c| load[c] < MAX_PER_CPU as u32)
            .min_by_key(|&c| (load[c], c))
            .ok_or(i)?;
        load[pick] += 1;
        out.push(pick);
    }
    Ok(out)
}

/// Sets up the calling CPU's EL2 for guests, then serves the vCPUs placed
/// on it, forever.
pub fn cpu_loop() -> ! {
    let me = arch::cpu_id();
    run::setup_el2();
    let mine: ArrayVec<(&'static Domain, u32), MAX_PER_CPU> = domains()
        .iter()
        .flat_map(|d| d.vcpus.iter().map(move |v| (*d, v)))
        .filter(|(_, v)| v.pcpu == me)
        .map(|(d, v)| (d, v.id))
        .take(MAX_PER_CPU)
        .collect();
    info!(
        "cpu {} serves {} vcpus{}",
        me,
        mine.len(),
        if shared_here() { ", time-sliced" } else { "" }
    );
    let mut next = 0usize;
    loop {
        let n = mine.len();
        let picked = (0..n)
            .map(|k| (next + k) % n)
            .find(|&i| mine.get(i).is_some_and(|&(d, v)| runnable(d, v)));
        match picked.and_then(|i| mine.get(i).map(|&(d, v)| (i, d, v))) {
            Some((i, d, v)) => {
                next = i + 1;
                run_vcpu(d, v);
            }
            None => idle(&mine),
        }
    }
}

/// Whether vCPU `v` of `d` has something to do on its CPU.
fn runnable(d: &Domain, v: u32) -> bool {
    let Some(vcpu) = d.vcpus.get(v as usize) else {
        return false;
    };
    if d.is_dead() {
        return false;
    }
    match vcpu.power() {
        ON_PENDING => true,
        ON => {
            if d.stopping() != Stop::None {
                return true;
            }
            let ctx = vcpu.ctx.lock();
            if !ctx.blocked {
                return true;
            }
            let due = deadline(&ctx.el1, d.cntvoff()).is_some_and(|t| arch::counter() >= t);
            drop(ctx);
            due || d.vgic.lock().has_deliverable(v as usize)
        }
        _ => false,
    }
}

/// When a blocked vCPU's virtual timer fires, in physical counter ticks.
fn deadline(el1: &El1Regs, cntvoff: u64) -> Option<u64> {
    el1.vtimer_armed().map(|cval| cval.wrapping_add(cntvoff))
}

/// Nothing to run: serve interrupts, wake at the earliest timer deadline
/// of a blocked vCPU, else sleep until an interrupt.
fn idle(mine: &[(&'static Domain, u32)]) {
    run::handle_irqs(None);
    let _ = take_timer();
    if mine.iter().any(|&(d, v)| runnable(d, v)) {
        return;
    }
    let earliest = mine
        .iter()
        .filter(|(d, _)| !d.is_dead())
        .filter_map(|&(d, v)| {
            let vcpu = d.vcpus.get(v as usize)?;
            if vcpu.power() != ON {
                return None;
            }
            let ctx = vcpu.ctx.lock();
            if ctx.blocked {
                deadline(&ctx.el1, d.cntvoff())
            } else {
                None
            }
        })
        .min();
    match earliest {
        Some(t) => arch::hyp_timer_at(t),
        None => arch::hyp_timer_stop(),
    }
    // A kick or the timer after the check above is still pending at the
    // GIC, so WFI returns at once.
    arch::wait_for_interrupt();
}

/// Why a vCPU left its CPU.
enum Left {
    /// Its slice ran out while another vCPU here was runnable.
    Preempted,
    /// WFI with nothing to take, on a shared CPU.
    Blocked,
    /// PSCI CPU_OFF.
    Off,
    /// Its domain is stopping.
    Stopping,
}

/// Runs vCPU `v` of `d` until it leaves the CPU.
fn run_vcpu(d: &'static Domain, v: u32) {
    let Some(vcpu) = d.vcpus.get(v as usize) else {
        return;
    };
    let shared = shared_here();
    let mut ctx = vcpu.ctx.lock();
    if d.stopping() != Stop::None {
        drop(ctx);
        stopped(d, v);
        return;
    }
    if vcpu.power() == ON_PENDING {
        let Some((entry, context)) = d.take_boot(v) else {
            return;
        };
        ctx.regs = GuestRegs::new(entry, sysregs::PSTATE_EL1H_MASKED);
        ctx.regs.x[0] = context;
        ctx.el1 = El1Regs::reset();
        if v == 0 {
            d.note_first_entry();
        }
    }
    ctx.blocked = false;
    if d.has_xen() {
        crate::xen::runstate(d.id, v, common::xen::abi::RUNSTATE_RUNNING);
    }
    ctx.el1.restore();
    write!("vttbr_el2", d.vttbr());
    write!("cntvoff_el2", d.cntvoff());
    write!("vmpidr_el2", armvm::layout::vcpu_mpidr(v));
    sysregs::isb();
    let slice_end = arch::counter().wrapping_add(SLICE_TICKS.load(Ordering::Relaxed));
    if shared {
        arch::hyp_timer_at(slice_end);
    }
    let _ = take_timer();
    let left = run::guest_loop(d, v, &mut ctx.regs, &mut || {
        // After each interrupt exit: is the slice over with another vCPU
        // waiting?
        if !shared || !take_timer() {
            return false;
        }
        if arch::counter() >= slice_end && others_runnable(d, v) {
            return true;
        }
        arch::hyp_timer_at(arch::counter().wrapping_add(SLICE_TICKS.load(Ordering::Relaxed)));
        false
    });
    // Leaving the CPU: the EL1 state is saved (which also stops the
    // virtual timer firing here), the list registers emptied (the vGIC
    // model holds their state), and a virtual timer interrupt the guest
    // has not deactivated yet is unlinked from the physical one, which is
    // deactivated here: the next vCPU's timer must be free to fire.
    ctx.el1.save();
    run::clear_lrs();
    if let Some(p) = d
        .vgic
        .lock()
        .unforward(v as usize, armvm::layout::VTIMER_INTID)
    {
        gic::host::HostGic::deactivate(run::intid_of(p));
    }
    if shared {
        arch::hyp_timer_stop();
    }
    let left = match left {
        Next::Resume | Next::Preempt => Left::Preempted,
        Next::Block => Left::Blocked,
        Next::Off => Left::Off,
        Next::Stopping => Left::Stopping,
    };
    if d.has_xen() {
        use common::xen::abi::{RUNSTATE_BLOCKED, RUNSTATE_OFFLINE, RUNSTATE_RUNNABLE};
        let state = match left {
            Left::Preempted => RUNSTATE_RUNNABLE,
            Left::Blocked => RUNSTATE_BLOCKED,
            Left::Off | Left::Stopping => RUNSTATE_OFFLINE,
        };
        crate::xen::runstate(d.id, v, state);
    }
    match left {
        Left::Preempted => {}
        Left::Blocked => ctx.blocked = true,
        Left::Off | Left::Stopping => {
            drop(ctx);
            run::log_exit_stats(d, v);
            stopped(d, v);
        }
    }
}

/// Whether a vCPU other than `v` of `d` is runnable on this CPU.
fn others_runnable(d: &Domain, v: u32) -> bool {
    let me = arch::cpu_id();
    domains()
        .iter()
        .flat_map(|o| o.vcpus.iter().map(move |x| (*o, x)))
        .filter(|(o, x)| x.pcpu == me && !(o.id == d.id && x.id == v))
        .any(|(o, x)| runnable(o, x.id))
}

/// vCPU `v` of `d` is off; if it was the domain's last, the domain's stop
/// is carried out here.
fn stopped(d: &'static Domain, v: u32) {
    match d.vcpu_stopped(v) {
        None | Some(Outcome::Restarted) => {}
        Some(outcome) => {
            if outcome == Outcome::Destroyed {
                ANY_CRASHED.store(true, Ordering::Relaxed);
            }
            if outcome == Outcome::PoweredOff {
                println!("({}) powered off", d.name());
            }
            crate::console::domain_gone(d.id);
            if LIVE.fetch_sub(1, Ordering::AcqRel) == 1 {
                let code = if ANY_CRASHED.load(Ordering::Relaxed) {
                    crate::EXIT_DOMAIN_CRASHED
                } else {
                    0
                };
                crate::all_domains_gone(code);
            }
        }
    }
}
