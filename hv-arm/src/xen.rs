//! The arm64 front end of Xen's guest ABI: `HVC #0xEA1` with the
//! hypercall number in x16 and arguments in x0..x4 goes to the portable
//! dispatcher (`common::xen`), which gets an [`Env`] built here.
//!
//! What this module owns: the one lock around all ABI state, address
//! translation for hypercall arguments (the guest's own stage 1 and our
//! stage 2, walked by the AT instruction, so a copy reaches exactly what
//! the guest itself would), page-level stage-2 changes, the upcall PPI,
//! and the order of teardown when a domain stops (ABI state first, then
//! memory). It must never hold the ABI lock while waiting for a vCPU.

use core::arch::asm;
use core::fmt;

use armvm::layout;
use common::xen::abi::{self, DomId};
use common::xen::{self as core_xen, Action, Env, HostFrame, Page, Xen};

use crate::arch::{self, Lock};
use crate::domain::{Domain, Stop};
use crate::guest_entry::GuestRegs;
use crate::run::Next;
use crate::stage2::Access;
use crate::sysregs::{isb, read, write};
use crate::{info, println, warn};

/// The HVC immediate Xen guests use (`XEN_HYPERCALL_TAG`).
pub const HYPERCALL_TAG: u16 = 0xea1;

/// All ABI state, behind one lock (see common::xen for why one).
static XEN: Lock<Option<Xen>> = Lock::new(None);

/// A static event channel from the device tree, re-established when one
/// of its domains is rebuilt.
#[derive(Clone, Copy)]
pub struct StaticChannel {
    /// One end: domain and port.
    pub a: (DomId, u32),
    /// The other end.
    pub b: (DomId, u32),
}

static STATIC_CHANNELS: Lock<alloc::vec::Vec<StaticChannel>> = Lock::new(alloc::vec::Vec::new());

/// Adds the ABI state of `dom` (built with Xen enabled), with its tmem
/// settings from the device tree.
pub fn add_domain(dom: &Domain, caps: u32, tmem: core_xen::TmemSetup) -> Result<(), i32> {
    let mut g = XEN.lock();
    let xen = g.get_or_insert_with(Xen::new);
    xen.add_domain(config(dom, caps, tmem))
}

/// Gives tmem its budget (bytes of page data for all domains together,
/// taken from the heap as pages are put) and whether every domain's
/// pages are compressed. Until this is called the budget is 0 and every
/// put fails. False when no domain speaks Xen's ABI (no one could use
/// tmem).
pub fn configure_tmem(budget: usize, compress_all: bool) -> bool {
    let mut g = XEN.lock();
    let Some(xen) = g.as_mut() else { return false };
    xen.tmem.set_budget(budget);
    xen.tmem.set_compress_all(compress_all);
    true
}

fn config(dom: &Domain, caps: u32, tmem: core_xen::TmemSetup) -> core_xen::DomainConfig {
    core_xen::DomainConfig {
        id: dom.id,
        name: alloc::string::String::from(dom.name()),
        nr_vcpus: dom.vcpus.len() as u32,
        caps,
        ram_base_gfn: layout::RAM0_BASE >> 12,
        ram_pages: dom.ram_size() >> 12,
        max_grant_frames: core_xen::DEFAULT_GRANT_FRAMES,
        max_evtchn_ports: core_xen::DEFAULT_EVTCHN_PORTS,
        tmem,
    }
}

/// Lets two domains talk (the device tree's hv,xen-peers).
pub fn allow(a: DomId, b: DomId) {
    if let Some(xen) = XEN.lock().as_mut() {
        xen.allow(a, b);
    }
}

/// Binds a static event channel and remembers it for rebuilds.
pub fn bind_static(ch: StaticChannel) -> Result<(), i32> {
    let env = ArmEnv { caller: ch.a.0 };
    let mut g = XEN.lock();
    let xen = g.as_mut().ok_or(abi::ESRCH)?;
    core_xen::evtchn::bind_static(xen, &env, ch.a.0, ch.a.1, ch.b.0, ch.b.1)?;
    STATIC_CHANNELS.lock().push(ch);
    Ok(())
}

/// `dom` is about to be rebuilt (`rebuild`) or destroyed: everything its
/// ABI state holds is released, in order, before its memory is touched.
pub fn domain_stopping(dom: DomId, rebuild: bool) {
    let env = ArmEnv { caller: dom };
    let mut g = XEN.lock();
    let Some(xen) = g.as_mut() else { return };
    if xen.domain(dom).is_none() {
        return;
    }
    if rebuild {
        xen.reset_domain(&env, dom);
        // Static channels come back where the other end is still free
        // (after the teardown it is unbound, waiting for this domain).
        for ch in STATIC_CHANNELS.lock().iter() {
            if ch.a.0 == dom || ch.b.0 == dom {
                let (mine, other) = if ch.a.0 == dom {
                    (ch.a, ch.b)
                } else {
                    (ch.b, ch.a)
                };
                let _ = core_xen::evtchn::close_port(xen, &env, other.0, other.1);
                if let Err(e) =
                    core_xen::evtchn::bind_static(xen, &env, mine.0, mine.1, other.0, other.1)
                {
                    warn!(
                        "d{}: static event channel {} not re-bound: errno {}",
                        dom, mine.1, e
                    );
                }
            }
        }
    } else {
        xen.remove_domain(&env, dom);
    }
}

/// Records a run-state change (RUNSTATE_*) of a vCPU that speaks the ABI.
pub fn runstate(dom: DomId, vcpu: u32, state: u32) {
    let env = ArmEnv { caller: dom };
    if let Some(xen) = XEN.lock().as_mut() {
        xen.set_runstate(&env, dom, vcpu, state);
    }
}

/// Handles `HVC #0xEA1` from `vcpu` of `dom`.
pub fn hypercall(dom: &'static Domain, vcpu: u32, regs: &mut GuestRegs) -> Next {
    let nr = regs.x[16];
    let args = [regs.x[0], regs.x[1], regs.x[2], regs.x[3], regs.x[4]];
    let env = ArmEnv { caller: dom.id };
    let reply = if let Some(r) = core_xen::lockless(nr, args) {
        r
    } else {
        let mut g = XEN.lock();
        match g.as_mut() {
            Some(xen) if xen.domain(dom.id).is_some() => {
                core_xen::hypercall(xen, &env, dom.id, vcpu, nr, args)
            }
            _ => core_xen::Reply::err(abi::ENOSYS),
        }
    };
    match reply.cont {
        Some(next) => {
            // Re-execute the HVC with the arguments where the work stopped.
            regs.x[..5].copy_from_slice(&next);
            regs.pc = regs.pc.wrapping_sub(4);
        }
        None => regs.x[0] = reply.ret as u64,
    }
    match reply.action {
        Action::None => Next::Resume,
        Action::Yield => {
            if crate::sched::shared_here() {
                Next::Preempt
            } else {
                Next::Resume
            }
        }
        Action::Block => crate::run::block(dom, vcpu),
        Action::Shutdown(reason) => {
            shutdown(dom, vcpu, reason);
            Next::Resume
        }
        Action::RemoteShutdown(target, reason) => {
            if let Some(t) = crate::sched::domain(target) {
                shutdown(t, u32::MAX, reason);
            }
            Next::Resume
        }
    }
}

/// SCHEDOP_shutdown: the reason decides what the domain's stop is.
/// Suspend and soft reset, which need a toolstack we do not have, rebuild
/// the domain like a reboot.
fn shutdown(dom: &'static Domain, vcpu: u32, reason: u32) {
    let (what, stop) = match reason {
        abi::SHUTDOWN_POWEROFF => ("poweroff", Stop::PowerOff),
        abi::SHUTDOWN_REBOOT => ("reboot", Stop::Reboot),
        abi::SHUTDOWN_CRASH => ("crash", Stop::Crash),
        abi::SHUTDOWN_WATCHDOG => ("watchdog", Stop::Crash),
        abi::SHUTDOWN_SUSPEND => ("suspend", Stop::Reboot),
        _ => ("soft_reset", Stop::Reboot),
    };
    println!("({}) shutdown: {} (SCHEDOP_shutdown)", dom.name(), what);
    info!("d{}v{}: SCHEDOP_shutdown {}", dom.id, vcpu, what);
    if stop == Stop::Crash {
        dom.crash(
            vcpu,
            format_args!("the guest reported a {} (SCHEDOP_shutdown)", what),
        );
    } else {
        dom.request_stop(stop);
    }
}

/// Whether the page at `ipa` lies in a frame the hypervisor emulates for
/// the guest: nothing may be mapped over it.
fn emulated(ipa: u64) -> bool {
    layout::device_frame(ipa, ipa.saturating_add(4096)).is_some()
}

/// The page at host address `pa` (page aligned).
///
/// Only called for pages the caller found in a domain's stage 2 or RAM
/// while holding the ABI lock: guest RAM, grant frames, shared-info pages,
/// all heap memory mapped at EL2, none of which is freed before the ABI
/// state that reaches it has been torn down under the same lock.
fn host_page(pa: u64) -> &'static Page {
    // SAFETY: see above: `pa` is a page-aligned address of live heap
    // memory, identity-mapped at EL2; `Page` only allows atomic accesses,
    // so a guest writing it concurrently is not a data race.
    unsafe { &*(pa as usize as *const Page) }
}

/// Address translation of the calling vCPU (its EL1 context is the one
/// loaded on this CPU while a hypercall is handled).
#[derive(Clone, Copy)]
enum At {
    /// Stage 1 and 2, read: the host address.
    S12Read,
    /// Stage 1 and 2, write.
    S12Write,
    /// Stage 1 only, read: the guest-physical address.
    S1Read,
    /// Stage 1 only, write.
    S1Write,
}

fn translate(va: u64, op: At) -> Option<u64> {
    let saved = read!("par_el1");
    // SAFETY: address translation instructions only write PAR_EL1, which is
    // saved above and restored below so the guest never sees the change.
    unsafe {
        match op {
            At::S12Read => asm!("at s12e1r, {0}", in(reg) va, options(nostack, preserves_flags)),
            At::S12Write => asm!("at s12e1w, {0}", in(reg) va, options(nostack, preserves_flags)),
            At::S1Read => asm!("at s1e1r, {0}", in(reg) va, options(nostack, preserves_flags)),
            At::S1Write => asm!("at s1e1w, {0}", in(reg) va, options(nostack, preserves_flags)),
        }
    }
    isb();
    let par = read!("par_el1");
    write!("par_el1", saved);
    if par & 1 != 0 {
        None
    } else {
        Some((par & 0x0000_ffff_ffff_f000) | (va & 0xfff))
    }
}

/// The architecture as the dispatcher sees it during one call.
struct ArmEnv {
    caller: DomId,
}

impl ArmEnv {
    fn copy(
        &self,
        va: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(&Page, usize, core::ops::Range<usize>) -> bool,
    ) -> Result<(), i32> {
        let mut done = 0usize;
        while done < len {
            let a = va.checked_add(done as u64).ok_or(abi::EFAULT)?;
            let off = (a & 0xfff) as usize;
            let n = (4096 - off).min(len - done);
            let pa =
                translate(a, if write { At::S12Write } else { At::S12Read }).ok_or(abi::EFAULT)?;
            if !f(host_page(pa & !0xfff), off, done..done + n) {
                return Err(abi::EFAULT);
            }
            done += n;
        }
        Ok(())
    }
}

impl Env for ArmEnv {
    fn now_ns(&self) -> u64 {
        let f = crate::time::frequency().max(1);
        let t = arch::counter();
        ((u128::from(t) * 1_000_000_000) / u128::from(f)) as u64
    }

    fn read_virt(&self, va: u64, out: &mut [u8]) -> Result<(), i32> {
        let len = out.len();
        self.copy(va, len, false, |p, off, r| p.read(off, &mut out[r]))
    }

    fn write_virt(&self, va: u64, data: &[u8]) -> Result<(), i32> {
        self.copy(va, data.len(), true, |p, off, r| p.write(off, &data[r]))
    }

    fn virt_to_phys(&self, va: u64, write: bool) -> Result<u64, i32> {
        translate(va, if write { At::S1Write } else { At::S1Read }).ok_or(abi::EFAULT)
    }

    fn ram_page(&self, dom: DomId, gfn: u64) -> Option<&Page> {
        let d = crate::sched::domain(dom)?;
        d.ram_host(gfn).map(host_page)
    }

    fn map_frame(&self, dom: DomId, gfn: u64, frame: HostFrame, writable: bool) -> Result<(), i32> {
        let d = crate::sched::domain(dom).ok_or(abi::ESRCH)?;
        let ipa = gfn.checked_mul(4096).ok_or(abi::EINVAL)?;
        if emulated(ipa) || d.in_shm(ipa) {
            return Err(abi::EINVAL);
        }
        let access = if writable {
            Access::DataReadWrite
        } else {
            Access::DataReadOnly
        };
        d.stage2().map_page(ipa, frame.0, access).map_err(map_errno)
    }

    fn unmap_frame(&self, dom: DomId, gfn: u64) -> Result<(), i32> {
        let d = crate::sched::domain(dom).ok_or(abi::ESRCH)?;
        let ipa = gfn.checked_mul(4096).ok_or(abi::EINVAL)?;
        if emulated(ipa) || d.in_shm(ipa) {
            return Err(abi::EINVAL);
        }
        d.stage2().unmap_page(ipa).map_err(map_errno)
    }

    fn restore_ram(&self, dom: DomId, gfn: u64) -> Result<(), i32> {
        let d = crate::sched::domain(dom).ok_or(abi::ESRCH)?;
        let pa = d.ram_host(gfn).ok_or(abi::EINVAL)?;
        d.stage2()
            .map_page(gfn << 12, pa, Access::ReadWrite)
            .map_err(map_errno)
    }

    fn raise_upcall(&self, dom: DomId, vcpu: u32) {
        let Some(d) = crate::sched::domain(dom) else {
            return;
        };
        let mask = d.vgic.lock().raise(vcpu as usize, layout::EVTCHN_INTID);
        d.kick_mask(mask, u32::MAX);
    }

    fn console_write(&self, dom: DomId, bytes: &[u8]) {
        let Some(d) = crate::sched::domain(dom) else {
            return;
        };
        for &b in bytes {
            // Not a vCPU's UART: shown a whole line at a time.
            crate::console::guest_put(dom, d.name(), u32::MAX, b);
        }
    }

    fn arch_features(&self) -> u32 {
        1 << abi::XENFEAT_ARM_SMCCC_SUPPORTED
    }

    fn capabilities(&self) -> &'static str {
        "xen-3.0-aarch64"
    }

    fn log(&self, args: fmt::Arguments) {
        // Refusals are rate-limited by the core, so they can go to the
        // console, marked as the hypervisor's the way Xen marks its own.
        let _ = self.caller;
        crate::console::print(format_args!("(XEN) {}\n", args));
    }
}

fn map_errno(e: crate::stage2::MapError) -> i32 {
    match e {
        crate::stage2::MapError::NoMemory => abi::ENOMEM,
        crate::stage2::MapError::BadRange | crate::stage2::MapError::Busy => abi::EINVAL,
    }
}
