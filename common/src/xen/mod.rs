//! Xen's guest ABI: the hypercalls an unmodified Xen guest (Linux's Xen
//! drivers) makes, answered the way Xen answers them.
//!
//! This module owns the ABI state of every domain (shared-info page,
//! vcpu_info and runstate registrations, HVM parameters, the overrides of
//! its guest-physical map, event channels, grant tables) and one
//! dispatcher, [`hypercall`]. How a guest traps (an HVC on arm64, a VMCALL
//! on x86) and how memory is mapped belongs to the architecture, which
//! hands the dispatcher an [`Env`]. Nothing here names an architecture.
//!
//! Rules kept everywhere below:
//! - every guest-supplied number is checked where it enters; a bad one is
//!   answered with Xen's negative errno value (or a GNTST_ status inside a
//!   grant structure), logged (rate-limited per domain), never a panic;
//! - memory a guest shares with the hypervisor is only touched through
//!   [`page::Page`]'s atomics, so a racing guest cannot tear a word the
//!   hypervisor writes;
//! - a domain may only reach another through an event channel or a grant
//!   when the policy ([`Xen::may_talk`]) says so; privilege is a capability
//!   from the device tree ([`CAP_CONTROL`], [`CAP_HARDWARE`]), never a
//!   domain id;
//! - teardown is ordered: grants this domain maps are released (its
//!   granters' entries unpinned), mappings others hold of its pages are
//!   revoked from their translations, event channels are closed (peers'
//!   ends fall back to unbound), then the guest-physical overrides are
//!   undone. Only then may the architecture scrub and free the memory.
//!
//! Decided, differently from Xen:
//! - One lock (the architecture's, around [`Xen`]) serialises all ABI
//!   state. Simple and obviously free of lock-order bugs; per-domain locks
//!   can come when a benchmark shows contention.
//! - SCHEDOP_poll returns at once when a polled port is pending and
//!   otherwise yields and returns 0: a spurious return, which Xen's
//!   callers must already handle (they re-check the port).

pub mod abi;
pub mod evtchn;
pub mod grant;
pub mod page;
pub mod tmem;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use abi::*;
pub use page::{HostFrame, PAGE_SIZE, Page};

/// The domain may control others (Xen's control domain).
pub const CAP_CONTROL: u32 = crate::dom0less::CAP_CONTROL;
/// The domain owns the hardware (Xen's hardware domain).
pub const CAP_HARDWARE: u32 = crate::dom0less::CAP_HARDWARE;
/// The domain runs xenstore.
pub const CAP_XENSTORE: u32 = crate::dom0less::CAP_XENSTORE;

/// Domains the ABI state can hold (ids 1..MAX_DOMAINS).
pub const MAX_DOMAINS: usize = 64;
/// Default grant-table frames per domain (Xen's default max_grant_frames).
pub const DEFAULT_GRANT_FRAMES: u32 = 64;
/// Default event-channel ports per domain (Xen's default max_event_channels
/// for a domU is 1023; ports 0..1024).
pub const DEFAULT_EVTCHN_PORTS: u32 = 1024;
/// Bytes of a console_io write handled per trap; the rest continues.
pub const CONSOLE_CHUNK: usize = 1024;
/// Multicall entries handled per trap; the rest continues.
pub const MULTICALL_CHUNK: u64 = 32;
/// Denials logged per domain before only every 1024th is.
const LOGGED_DENIALS: u32 = 32;

/// What the architecture provides to the dispatcher for one trap: access
/// to the caller's memory through its own translation, to every domain's
/// RAM by frame, to the guest-physical maps, and to interrupt delivery.
/// Every method takes `&self`: implementations use their own locks, which
/// rank below the lock around [`Xen`].
pub trait Env {
    /// Nanoseconds since boot.
    fn now_ns(&self) -> u64;
    /// Copies from a virtual address of the calling vCPU (translated as
    /// the guest would, checked for RAM); EFAULT when any byte is not
    /// readable guest RAM.
    fn read_virt(&self, va: u64, out: &mut [u8]) -> Result<(), i32>;
    /// Copies to a virtual address of the calling vCPU; EFAULT when any
    /// byte is not writable guest RAM.
    fn write_virt(&self, va: u64, data: &[u8]) -> Result<(), i32>;
    /// The guest-physical address the calling vCPU's `va` maps to.
    fn virt_to_phys(&self, va: u64, write: bool) -> Result<u64, i32>;
    /// The host page behind RAM frame `gfn` of domain `dom`, whatever is
    /// mapped over it now (the core tracks overrides). None when `gfn` is
    /// not in the domain's RAM or the domain is gone.
    fn ram_page(&self, dom: DomId, gfn: u64) -> Option<&Page>;
    /// Maps `frame` at `gfn` in `dom`'s translation (replacing what is
    /// there), read-only unless `writable`. EINVAL when `gfn` is outside
    /// the guest-physical space or inside a region the architecture
    /// emulates.
    fn map_frame(&self, dom: DomId, gfn: u64, frame: HostFrame, writable: bool) -> Result<(), i32>;
    /// Leaves `gfn` of `dom` unmapped (any access faults).
    fn unmap_frame(&self, dom: DomId, gfn: u64) -> Result<(), i32>;
    /// Maps `dom`'s own RAM page back at `gfn` (a RAM frame).
    fn restore_ram(&self, dom: DomId, gfn: u64) -> Result<(), i32>;
    /// Makes the event-channel upcall interrupt pending for `vcpu` of
    /// `dom` and wakes that vCPU.
    fn raise_upcall(&self, dom: DomId, vcpu: u32);
    /// Writes guest console output of `dom`.
    fn console_write(&self, dom: DomId, bytes: &[u8]);
    /// Feature bits of submap 0 the architecture adds (e.g. SMCCC on arm).
    fn arch_features(&self) -> u32;
    /// `XENVER_capabilities` string.
    fn capabilities(&self) -> &'static str;
    /// Writes a hypervisor log line.
    fn log(&self, args: fmt::Arguments);
}

/// What the arch does after the call (besides writing the return value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Back to the guest.
    None,
    /// Give the CPU to another runnable vCPU if there is one.
    Yield,
    /// Block until an interrupt is deliverable (SCHEDOP_block).
    Block,
    /// The calling domain shuts down with this SHUTDOWN_* reason.
    Shutdown(u32),
    /// Another domain (the caller holds CAP_CONTROL) shuts down.
    RemoteShutdown(DomId, u32),
}

/// The result of one trap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The return register's value.
    pub ret: i64,
    /// What the architecture does next.
    pub action: Action,
    /// Some: not finished; put these arguments back and re-execute the
    /// call instruction (a continuation; `ret` is then ignored).
    pub cont: Option<[u64; 5]>,
}

impl Reply {
    /// A plain return value.
    pub fn ret(ret: i64) -> Self {
        Reply {
            ret,
            action: Action::None,
            cont: None,
        }
    }

    /// A negative errno.
    pub fn err(errno: i32) -> Self {
        Self::ret(-i64::from(errno))
    }
}

impl From<Result<i64, i32>> for Reply {
    fn from(r: Result<i64, i32>) -> Self {
        match r {
            Ok(v) => Reply::ret(v),
            Err(e) => Reply::err(e),
        }
    }
}

/// What the guest-physical map holds at a frame instead of the domain's
/// own RAM (or, outside RAM, instead of nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// A RAM frame given back (decrease_reservation, removed mappings).
    Hole,
    /// The shared-info page.
    SharedInfo,
    /// Grant-table frame `idx` of this domain.
    GrantFrame(u32),
    /// Another domain's page, mapped through grant handle `handle`.
    Foreign(u32),
}

/// A vCPU's registered areas and run-state accounting.
#[derive(Clone, Debug, Default)]
pub struct Vcpu {
    /// vcpu_info placed by VCPUOP_register_vcpu_info: (gfn, offset).
    pub info: Option<(u64, u16)>,
    /// Runstate area: guest-physical address of each 8-byte word's page
    /// (the area may straddle two pages) and the offset in the first.
    runstate: Option<([u64; 2], u16)>,
    state: u32,
    state_entry: u64,
    times: [u64; 4],
}

/// What a domain is created with.
#[derive(Clone, Debug)]
pub struct DomainConfig {
    /// Its id (1.., also what other domains name it by).
    pub id: DomId,
    /// Name for log lines.
    pub name: String,
    /// vCPUs.
    pub nr_vcpus: u32,
    /// CAP_* bits.
    pub caps: u32,
    /// Its RAM frames: `ram_base_gfn .. ram_base_gfn + ram_pages`.
    pub ram_base_gfn: u64,
    /// Number of RAM frames.
    pub ram_pages: u64,
    /// Grant-table frames it may have.
    pub max_grant_frames: u32,
    /// Event-channel ports it may have.
    pub max_evtchn_ports: u32,
    /// Its tmem settings and the shared-pool UUIDs it may join, applied
    /// whenever its state is (re)made (the domain builder acts for the
    /// control domain).
    pub tmem: TmemSetup,
}

/// A domain's tmem settings from the domain builder.
#[derive(Clone, Debug, Default)]
pub struct TmemSetup {
    /// Weight, caps, quota, compression.
    pub client: crate::tmem::ClientConfig,
    /// Shared pools it is authorized to join.
    pub shared: Vec<crate::tmem::Uuid>,
}

/// One domain's ABI state.
pub struct Domain {
    /// What it was created with.
    pub cfg: DomainConfig,
    /// The shared-info page.
    pub shared_info: Box<Page>,
    /// Per vCPU.
    pub vcpus: Vec<Vcpu>,
    /// Event channels.
    pub evtchn: evtchn::EventChannels,
    /// Grant table (its own grants and the maptrack of what it maps).
    pub grant: grant::GrantTable,
    /// Overrides of its guest-physical map.
    pub p2m: BTreeMap<u64, Slot>,
    params: [u64; HVM_NR_PARAMS as usize],
    vm_assist: u64,
    /// Reason given with SCHEDOP_shutdown_code / SCHEDOP_shutdown.
    pub shutdown_code: Option<u32>,
    denials: u32,
    /// Where its shared_info and vcpu_info fields are (per architecture).
    pub layout: Layout,
}

impl Domain {
    fn new(cfg: DomainConfig, layout: Layout) -> Self {
        Domain {
            layout,
            shared_info: Page::new_zeroed(),
            vcpus: (0..cfg.nr_vcpus).map(|_| Vcpu::default()).collect(),
            evtchn: evtchn::EventChannels::new(cfg.max_evtchn_ports),
            grant: grant::GrantTable::new(cfg.max_grant_frames),
            p2m: BTreeMap::new(),
            params: [0; HVM_NR_PARAMS as usize],
            vm_assist: 0,
            shutdown_code: None,
            denials: 0,
            cfg,
        }
    }

    /// Its id.
    pub fn id(&self) -> DomId {
        self.cfg.id
    }

    /// HVM parameter `index` (HVM_PARAM_*); 0 for an index out of range,
    /// the value every parameter starts with.
    pub fn param(&self, index: u32) -> u64 {
        self.params.get(index as usize).copied().unwrap_or(0)
    }

    /// Its viridian feature mask (HVM_PARAM_VIRIDIAN, `HVMPV_*` bits): 0
    /// until the domain builder or a control domain sets it.
    pub fn viridian_mask(&self) -> u64 {
        self.param(HVM_PARAM_VIRIDIAN)
    }

    /// Whether `gfn` is one of its RAM frames.
    pub fn is_ram(&self, gfn: u64) -> bool {
        gfn >= self.cfg.ram_base_gfn && gfn - self.cfg.ram_base_gfn < self.cfg.ram_pages
    }

    /// Whether `gfn` is RAM the guest sees as its own now (no override).
    pub fn is_plain_ram(&self, gfn: u64) -> bool {
        self.is_ram(gfn) && !self.p2m.contains_key(&gfn)
    }

    /// RAM frames whose page the domain does not use now: ballooned out,
    /// or displaced by a mapping (Xen counts neither in tot_pages). The
    /// room its persistent tmem pages may take.
    pub fn given_back(&self) -> u64 {
        let base = self.cfg.ram_base_gfn;
        self.p2m
            .range(base..base.saturating_add(self.cfg.ram_pages))
            .count() as u64
    }

    /// Runs `f` on the page and offset of `vcpu`'s vcpu_info: the
    /// registered one, else the legacy slot in shared_info (vCPUs below
    /// [`LEGACY_MAX_VCPUS`]); None when the vCPU has none.
    pub fn with_vcpu_info<R>(
        &self,
        env: &dyn Env,
        vcpu: u32,
        f: impl FnOnce(&Page, usize) -> R,
    ) -> Option<R> {
        match self.vcpus.get(vcpu as usize)?.info {
            Some((gfn, off)) => env.ram_page(self.id(), gfn).map(|p| f(p, usize::from(off))),
            None if vcpu < self.layout.legacy_max_vcpus => Some(f(
                &self.shared_info,
                vcpu as usize * self.layout.vcpu_info_size,
            )),
            None => None,
        }
    }

    /// Whether `vcpu` has an event upcall pending (evtchn_upcall_pending).
    pub fn upcall_pending(&self, env: &dyn Env, vcpu: u32) -> bool {
        self.with_vcpu_info(env, vcpu, |p, off| {
            p.load8(off + VCPU_INFO_UPCALL_PENDING) != 0
        })
        .unwrap_or(false)
    }

    /// Sets `vcpu`'s evtchn_upcall_pending; raises the upcall interrupt
    /// when it was clear. Used by both event-channel ABIs.
    pub fn mark_upcall(&self, env: &dyn Env, vcpu: u32) {
        let was = self.with_vcpu_info(env, vcpu, |p, off| {
            let word = off & !7;
            let shift = ((off + VCPU_INFO_UPCALL_PENDING) & 7) * 8;
            p.fetch_or64(word, 1 << shift) >> shift & 0xff
        });
        if was == Some(0) {
            env.raise_upcall(self.id(), vcpu);
        }
    }

    /// Logs a refused request (rate-limited) and returns `errno` for the
    /// caller to pass on.
    pub fn deny(&mut self, env: &dyn Env, errno: i32, what: fmt::Arguments) -> i32 {
        self.denials = self.denials.saturating_add(1);
        if self.denials <= LOGGED_DENIALS || self.denials.is_multiple_of(1024) {
            env.log(format_args!(
                "{}: {} refused: errno {}{}",
                self.cfg.name,
                what,
                errno,
                if self.denials == LOGGED_DENIALS {
                    " (further refusals are logged 1 in 1024)"
                } else {
                    ""
                }
            ));
        }
        errno
    }
}

/// The ABI state of all domains and the policy between them.
pub struct Xen {
    doms: Vec<Option<Domain>>,
    links: BTreeSet<(DomId, DomId)>,
    /// Transcendent memory (hypercall 38). Its budget is 0, so every put
    /// fails with ENOMEM, until the architecture gives it one.
    pub tmem: crate::tmem::Tmem,
    /// The shared_info/vcpu_info layout of the guests' architecture.
    layout: Layout,
}

impl Default for Xen {
    fn default() -> Self {
        Self::new()
    }
}

impl Xen {
    /// No domains; arm64's shared_info layout.
    pub fn new() -> Self {
        Self::with_layout(Layout::ARM64)
    }

    /// No domains; guests with `layout` (x86_64's for hv-x86).
    pub fn with_layout(layout: Layout) -> Self {
        Xen {
            doms: (0..MAX_DOMAINS).map(|_| None).collect(),
            links: BTreeSet::new(),
            tmem: crate::tmem::Tmem::new(0),
            layout,
        }
    }

    /// Adds a domain's ABI state. EINVAL for id 0, an id at or above
    /// [`MAX_DOMAINS`], no vCPUs or no RAM; EEXIST when the id is taken.
    pub fn add_domain(&mut self, cfg: DomainConfig) -> Result<(), i32> {
        let id = usize::from(cfg.id);
        if id == 0 || id >= MAX_DOMAINS || cfg.nr_vcpus == 0 || cfg.ram_pages == 0 {
            return Err(EINVAL);
        }
        if self.doms[id].is_some() {
            return Err(EEXIST);
        }
        self.tmem.configure(cfg.id, cfg.tmem.client);
        for uuid in &cfg.tmem.shared {
            self.tmem.authorize(cfg.id, *uuid, true);
        }
        self.doms[id] = Some(Domain::new(cfg, self.layout));
        Ok(())
    }

    /// Lets `a` and `b` open event channels and exchange grants.
    pub fn allow(&mut self, a: DomId, b: DomId) {
        self.links.insert((a.min(b), a.max(b)));
    }

    /// Whether `a` may reach `b`: itself, a declared link, or `a` holds
    /// CAP_CONTROL.
    pub fn may_talk(&self, a: DomId, b: DomId) -> bool {
        a == b
            || self.links.contains(&(a.min(b), a.max(b)))
            || self
                .domain(a)
                .is_some_and(|d| d.cfg.caps & CAP_CONTROL != 0)
    }

    /// A domain's state.
    pub fn domain(&self, id: DomId) -> Option<&Domain> {
        self.doms.get(usize::from(id))?.as_ref()
    }

    /// A domain's state, mutable.
    pub fn domain_mut(&mut self, id: DomId) -> Option<&mut Domain> {
        self.doms.get_mut(usize::from(id))?.as_mut()
    }

    /// Two different domains, both mutable.
    pub fn two_mut(&mut self, a: DomId, b: DomId) -> Option<(&mut Domain, &mut Domain)> {
        let (a, b) = (usize::from(a), usize::from(b));
        if a == b || a >= self.doms.len() || b >= self.doms.len() {
            return None;
        }
        if a < b {
            let (lo, hi) = self.doms.split_at_mut(b);
            Some((lo[a].as_mut()?, hi[0].as_mut()?))
        } else {
            let (lo, hi) = self.doms.split_at_mut(a);
            Some((hi[0].as_mut()?, lo[b].as_mut()?))
        }
    }

    /// Ids of the domains present.
    pub fn ids(&self) -> impl Iterator<Item = DomId> + '_ {
        self.doms
            .iter()
            .enumerate()
            .filter(|(_, d)| d.is_some())
            .map(|(i, _)| i as DomId)
    }

    /// Resolves DOMID_SELF.
    fn resolve(caller: DomId, dom: DomId) -> DomId {
        if dom == DOMID_SELF { caller } else { dom }
    }

    /// Releases everything `id` holds, in order (see the module doc), and
    /// removes its state. Afterwards its memory may be scrubbed and freed.
    /// The policy links stay (a restarted domain keeps its peers).
    pub fn remove_domain(&mut self, env: &dyn Env, id: DomId) {
        if self.domain(id).is_none() {
            return;
        }
        // Its tmem first: private pools go, shared ones pass to the
        // remaining members.
        self.tmem.remove_client(id);
        grant::teardown(self, env, id);
        evtchn::teardown(self, env, id);
        if let Some(d) = self.domain_mut(id) {
            let slots: Vec<(u64, Slot)> = d.p2m.iter().map(|(g, s)| (*g, *s)).collect();
            for (gfn, _) in slots {
                if d.is_ram(gfn) {
                    let _ = env.restore_ram(id, gfn);
                } else {
                    let _ = env.unmap_frame(id, gfn);
                }
            }
            d.p2m.clear();
        }
        self.doms[usize::from(id)] = None;
    }

    /// A domain is rebuilt (reboot, restart after a crash): everything is
    /// released and it starts again from `cfg`.
    pub fn reset_domain(&mut self, env: &dyn Env, id: DomId) {
        let Some(cfg) = self.domain(id).map(|d| d.cfg.clone()) else {
            return;
        };
        self.remove_domain(env, id);
        let _ = self.add_domain(cfg);
    }

    /// Records a run-state change of `vcpu` (RUNSTATE_*), writing the
    /// registered runstate area.
    pub fn set_runstate(&mut self, env: &dyn Env, dom: DomId, vcpu: u32, state: u32) {
        let Some(d) = self.domain_mut(dom) else {
            return;
        };
        let flag = d.vm_assist & (1 << VMASST_TYPE_RUNSTATE_UPDATE_FLAG) != 0;
        let Some(v) = d.vcpus.get_mut(vcpu as usize) else {
            return;
        };
        let now = env.now_ns();
        if let Some(t) = v.times.get_mut(v.state as usize) {
            *t = t.wrapping_add(now.saturating_sub(v.state_entry));
        }
        v.state = state;
        v.state_entry = now;
        let v = v.clone();
        write_runstate(env, dom, &v, flag);
    }
}

/// Writes `v`'s runstate to its registered area. With the update flag the
/// guest sees XEN_RUNSTATE_UPDATE in state_entry_time while the words
/// change (its readers retry).
fn write_runstate(env: &dyn Env, dom: DomId, v: &Vcpu, flag: bool) {
    let Some((pages, off)) = v.runstate else {
        return;
    };
    let word = |i: usize, val: u64| {
        let at = usize::from(off) + i * 8;
        let (gfn, o) = if at < PAGE_SIZE {
            (pages[0], at)
        } else {
            (pages[1], at - PAGE_SIZE)
        };
        if let Some(p) = env.ram_page(dom, gfn) {
            p.store64(o, val);
        }
    };
    if flag {
        word(1, v.state_entry | XEN_RUNSTATE_UPDATE);
    }
    word(0, u64::from(v.state));
    for (i, t) in v.times.iter().enumerate() {
        word(2 + i, *t);
    }
    word(1, v.state_entry);
}

/// Handles hypercall `nr` with `args` from `vcpu` of `dom`.
pub fn hypercall(
    xen: &mut Xen,
    env: &dyn Env,
    dom: DomId,
    vcpu: u32,
    nr: u64,
    args: [u64; 5],
) -> Reply {
    if xen.domain(dom).is_none() {
        return Reply::err(ESRCH);
    }
    match nr {
        HC_XEN_VERSION => xen_version(xen, env, dom, args[0], args[1]).into(),
        HC_CONSOLE_IO => console_io(xen, env, dom, args),
        HC_VM_ASSIST => vm_assist(xen, env, dom, args[0], args[1]).into(),
        HC_SCHED_OP => sched_op(xen, env, dom, args[0], args[1]),
        HC_VCPU_OP => vcpu_op(xen, env, dom, args[0], args[1], args[2]).into(),
        HC_MEMORY_OP => memory_op(xen, env, dom, args),
        HC_HVM_OP => hvm_op(xen, env, dom, args[0], args[1]).into(),
        HC_MULTICALL => multicall(xen, env, dom, vcpu, args),
        HC_EVENT_CHANNEL_OP => evtchn::op(xen, env, dom, vcpu, args[0], args[1]).into(),
        HC_GRANT_TABLE_OP => grant::op(xen, env, dom, vcpu, args),
        HC_TMEM_OP => tmem::op(xen, env, dom, args[0]).into(),
        HC_SYSCTL => tmem::sysctl(xen, env, dom, args[0]).into(),
        _ => {
            if let Some(d) = xen.domain_mut(dom) {
                d.deny(env, ENOSYS, format_args!("hypercall {}", nr));
            }
            Reply::err(ENOSYS)
        }
    }
}

/// Calls answered from constants, without the ABI state: the
/// architecture may answer them before taking the lock around [`Xen`],
/// so vCPUs asking only for the version never wait for one another.
/// `None`: take the lock and call [`hypercall`]. What it answers is what
/// [`hypercall`] would (tested).
pub fn lockless(nr: u64, args: [u64; 5]) -> Option<Reply> {
    match (nr, args[0]) {
        (HC_XEN_VERSION, XENVER_VERSION) => {
            Some(Reply::ret(((XEN_MAJOR << 16) | XEN_MINOR) as i64))
        }
        _ => None,
    }
}

/// [`deny`] with the message's format arguments inline.
macro_rules! refuse {
    ($xen:expr, $env:expr, $dom:expr, $errno:expr, $($fmt:tt)+) => {
        deny($xen, $env, $dom, $errno, format_args!($($fmt)+))
    };
}

impl Xen {
    /// Refuses `what` of `dom` with `errno`: logged like every denial.
    fn refuse(&mut self, env: &dyn Env, dom: DomId, errno: i32, what: &str) -> i32 {
        deny(self, env, dom, errno, format_args!("{}", what))
    }
}

fn deny(xen: &mut Xen, env: &dyn Env, dom: DomId, errno: i32, what: fmt::Arguments) -> i32 {
    match xen.domain_mut(dom) {
        Some(d) => d.deny(env, errno, what),
        None => errno,
    }
}

fn read_struct<const N: usize>(env: &dyn Env, va: u64) -> Result<[u8; N], i32> {
    let mut b = [0u8; N];
    env.read_virt(va, &mut b)?;
    Ok(b)
}

fn put_string(env: &dyn Env, va: u64, s: &str, len: usize) -> Result<i64, i32> {
    let mut buf = alloc::vec![0u8; len];
    let n = s.len().min(len.saturating_sub(1));
    buf[..n].copy_from_slice(&s.as_bytes()[..n]);
    env.write_virt(va, &buf)?;
    Ok(0)
}

fn xen_version(xen: &mut Xen, env: &dyn Env, dom: DomId, cmd: u64, arg: u64) -> Result<i64, i32> {
    let caps = xen.domain(dom).map_or(0, |d| d.cfg.caps);
    match cmd {
        XENVER_VERSION => Ok(((XEN_MAJOR << 16) | XEN_MINOR) as i64),
        XENVER_EXTRAVERSION => put_string(env, arg, ".0", EXTRAVERSION_LEN),
        XENVER_CAPABILITIES => put_string(env, arg, env.capabilities(), CAPABILITIES_LEN),
        XENVER_CHANGESET => put_string(env, arg, "<unknown>", CHANGESET_LEN),
        XENVER_COMPILE_INFO => {
            // compiler[64], compile_by[16], compile_domain[32], compile_date[32].
            let mut b = [0u8; 144];
            b[..5].copy_from_slice(b"rustc");
            env.write_virt(arg, &b)?;
            Ok(0)
        }
        XENVER_PLATFORM_PARAMETERS => {
            env.write_virt(arg, &0u64.to_le_bytes())?;
            Ok(0)
        }
        XENVER_GET_FEATURES => {
            // struct xen_feature_info { unsigned int submap_idx; uint32_t submap; }
            let mut b: [u8; 8] = read_struct(env, arg)?;
            if get_u32(&b, 0) != 0 {
                return Err(refuse!(
                    xen,
                    env,
                    dom,
                    EINVAL,
                    "get_features submap {}",
                    get_u32(&b, 0)
                ));
            }
            let mut map = (1 << XENFEAT_WRITABLE_PAGE_TABLES)
                | (1 << XENFEAT_AUTO_TRANSLATED_PHYSMAP)
                | (1 << XENFEAT_MEMORY_OP_VNODE_SUPPORTED)
                | (1 << XENFEAT_NOT_DIRECT_MAPPED)
                | env.arch_features();
            if caps & CAP_HARDWARE != 0 {
                map |= 1 << XENFEAT_DOM0;
            }
            put_u32(&mut b, 4, map);
            env.write_virt(arg, &b)?;
            Ok(0)
        }
        XENVER_PAGESIZE => {
            if arg != 0 {
                return Err(EINVAL);
            }
            Ok(PAGE_SIZE as i64)
        }
        XENVER_GUEST_HANDLE => {
            env.write_virt(arg, &[0u8; 16])?;
            Ok(0)
        }
        XENVER_COMMANDLINE | XENVER_BUILD_ID => {
            if caps & (CAP_CONTROL | CAP_HARDWARE) == 0 {
                return Err(refuse!(xen, env, dom, EPERM, "xen_version {}", cmd));
            }
            if cmd == XENVER_COMMANDLINE {
                put_string(env, arg, "", 1024)
            } else {
                Err(ENOENT)
            }
        }
        _ => Err(refuse!(xen, env, dom, ENOSYS, "xen_version {}", cmd)),
    }
}

/// console_io: writes go to the domain's console line (every domain may
/// write: its output is prefixed with its name, so nobody can pose as
/// another); reads are for privileged domains and find nothing, since
/// console input reaches guests through their virtual UART.
fn console_io(xen: &mut Xen, env: &dyn Env, dom: DomId, args: [u64; 5]) -> Reply {
    let (cmd, count, buf) = (args[0], args[1], args[2]);
    match cmd {
        CONSOLEIO_WRITE => {
            let n = count.min(CONSOLE_CHUNK as u64) as usize;
            let mut bytes = [0u8; CONSOLE_CHUNK];
            if let Err(e) = env.read_virt(buf, &mut bytes[..n]) {
                return Reply::err(refuse!(xen, env, dom, e, "console_io write"));
            }
            env.console_write(dom, &bytes[..n]);
            if (n as u64) < count {
                let mut next = args;
                next[1] = count - n as u64;
                next[2] = buf.wrapping_add(n as u64);
                return Reply {
                    ret: 0,
                    action: Action::None,
                    cont: Some(next),
                };
            }
            Reply::ret(0)
        }
        CONSOLEIO_READ => {
            let caps = xen.domain(dom).map_or(0, |d| d.cfg.caps);
            if caps & (CAP_CONTROL | CAP_HARDWARE) == 0 {
                return Reply::err(refuse!(xen, env, dom, EPERM, "console_io read"));
            }
            Reply::ret(0)
        }
        _ => Reply::err(refuse!(xen, env, dom, ENOSYS, "console_io {}", cmd)),
    }
}

fn vm_assist(xen: &mut Xen, env: &dyn Env, dom: DomId, cmd: u64, kind: u64) -> Result<i64, i32> {
    if kind != VMASST_TYPE_RUNSTATE_UPDATE_FLAG {
        return Err(refuse!(xen, env, dom, EINVAL, "vm_assist type {}", kind));
    }
    let d = xen.domain_mut(dom).ok_or(ESRCH)?;
    match cmd {
        VMASST_CMD_ENABLE => d.vm_assist |= 1 << kind,
        VMASST_CMD_DISABLE => d.vm_assist &= !(1 << kind),
        _ => return Err(d.deny(env, ENOSYS, format_args!("vm_assist cmd {}", cmd))),
    }
    Ok(0)
}

fn sched_op(xen: &mut Xen, env: &dyn Env, dom: DomId, cmd: u64, arg: u64) -> Reply {
    let act = |action| Reply {
        ret: 0,
        action,
        cont: None,
    };
    match cmd {
        SCHEDOP_YIELD => act(Action::Yield),
        SCHEDOP_BLOCK => act(Action::Block),
        SCHEDOP_SHUTDOWN | SCHEDOP_SHUTDOWN_CODE => {
            let b: [u8; 4] = match read_struct(env, arg) {
                Ok(b) => b,
                Err(e) => {
                    return Reply::err(refuse!(xen, env, dom, e, "sched_op shutdown"));
                }
            };
            let reason = get_u32(&b, 0);
            if reason > SHUTDOWN_SOFT_RESET {
                return Reply::err(refuse!(xen, env, dom, EINVAL, "shutdown reason {}", reason));
            }
            if let Some(d) = xen.domain_mut(dom) {
                d.shutdown_code = Some(reason);
            }
            if cmd == SCHEDOP_SHUTDOWN {
                act(Action::Shutdown(reason))
            } else {
                Reply::ret(0)
            }
        }
        SCHEDOP_REMOTE_SHUTDOWN => {
            // struct sched_remote_shutdown { domid_t domain_id; unsigned int reason; }
            let b: [u8; 8] = match read_struct(env, arg) {
                Ok(b) => b,
                Err(e) => {
                    return Reply::err(refuse!(xen, env, dom, e, "remote_shutdown"));
                }
            };
            let (target, reason) = (Xen::resolve(dom, get_u16(&b, 0)), get_u32(&b, 4));
            let caps = xen.domain(dom).map_or(0, |d| d.cfg.caps);
            if caps & CAP_CONTROL == 0 {
                return Reply::err(refuse!(
                    xen,
                    env,
                    dom,
                    EPERM,
                    "remote_shutdown of {}",
                    target
                ));
            }
            if xen.domain(target).is_none() {
                return Reply::err(refuse!(
                    xen,
                    env,
                    dom,
                    ESRCH,
                    "remote_shutdown of {}",
                    target
                ));
            }
            if reason > SHUTDOWN_SOFT_RESET {
                return Reply::err(refuse!(xen, env, dom, EINVAL, "shutdown reason {}", reason));
            }
            act(Action::RemoteShutdown(target, reason))
        }
        SCHEDOP_POLL => {
            let b: [u8; SCHED_POLL_SIZE] = match read_struct(env, arg) {
                Ok(b) => b,
                Err(e) => return Reply::err(refuse!(xen, env, dom, e, "sched_op poll")),
            };
            let (ports, nr) = (get_u64(&b, 0), get_u32(&b, 8));
            if nr > 128 {
                return Reply::err(refuse!(xen, env, dom, EINVAL, "poll of {} ports", nr));
            }
            let mut list = [0u8; 128 * 4];
            let list = &mut list[..nr as usize * 4];
            if let Err(e) = env.read_virt(ports, list) {
                return Reply::err(refuse!(xen, env, dom, e, "poll port list"));
            }
            let mut any = false;
            for p in list.chunks_exact(4) {
                let port = get_u32(p, 0);
                match evtchn::is_pending(xen, env, dom, port) {
                    Ok(true) => any = true,
                    Ok(false) => {}
                    Err(e) => {
                        return Reply::err(refuse!(xen, env, dom, e, "poll port {}", port));
                    }
                }
            }
            if any {
                Reply::ret(0)
            } else {
                act(Action::Yield)
            }
        }
        _ => Reply::err(refuse!(xen, env, dom, ENOSYS, "sched_op {}", cmd)),
    }
}

fn vcpu_op(
    xen: &mut Xen,
    env: &dyn Env,
    dom: DomId,
    cmd: u64,
    vcpu: u64,
    arg: u64,
) -> Result<i64, i32> {
    let nr = xen.domain(dom).map_or(0, |d| d.cfg.nr_vcpus);
    if vcpu >= u64::from(nr) {
        return Err(refuse!(
            xen,
            env,
            dom,
            ENOENT,
            "vcpu_op {} on vcpu {}",
            cmd,
            vcpu
        ));
    }
    let vcpu = vcpu as u32;
    match cmd {
        VCPUOP_REGISTER_VCPU_INFO => {
            let b: [u8; REGISTER_VCPU_INFO_SIZE] = read_struct(env, arg)
                .map_err(|e| refuse!(xen, env, dom, e, "register_vcpu_info"))?;
            let (gfn, off) = (get_u64(&b, 0), get_u32(&b, 8));
            let d = xen.domain_mut(dom).ok_or(ESRCH)?;
            let size = d.layout.vcpu_info_size;
            if off as usize > PAGE_SIZE - size || off % 8 != 0 {
                return Err(d.deny(env, EINVAL, format_args!("vcpu_info at offset {:#x}", off)));
            }
            if !d.is_plain_ram(gfn) {
                return Err(d.deny(env, EINVAL, format_args!("vcpu_info in frame {:#x}", gfn)));
            }
            if d.vcpus[vcpu as usize].info.is_some() {
                return Err(d.deny(
                    env,
                    EINVAL,
                    format_args!("vcpu_info of vcpu {} registered twice", vcpu),
                ));
            }
            // Carry over what the old location held, then mark everything
            // pending so the guest rescans (as Xen does on a move).
            let mut buf = [0u8; Layout::X86_64.vcpu_info_size];
            let old = buf.get_mut(..size).ok_or(EINVAL)?;
            d.with_vcpu_info(env, vcpu, |p, o| p.read(o, old));
            d.vcpus[vcpu as usize].info = Some((gfn, off as u16));
            d.with_vcpu_info(env, vcpu, |p, o| {
                p.write(o, old);
                p.store64(o + VCPU_INFO_PENDING_SEL, u64::MAX);
                p.store8(o + VCPU_INFO_UPCALL_PENDING, 0);
            });
            d.mark_upcall(env, vcpu);
            Ok(0)
        }
        VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA => {
            let b: [u8; 8] = read_struct(env, arg)
                .map_err(|e| refuse!(xen, env, dom, e, "register_runstate_memory_area"))?;
            let va = get_u64(&b, 0);
            let area = if va == 0 {
                None
            } else {
                let last = va
                    .checked_add(RUNSTATE_INFO_SIZE as u64 - 1)
                    .ok_or(EFAULT)?;
                if !va.is_multiple_of(8) {
                    return Err(refuse!(xen, env, dom, EINVAL, "runstate area at {:#x}", va));
                }
                let first = env
                    .virt_to_phys(va, true)
                    .map_err(|e| refuse!(xen, env, dom, e, "runstate area at {:#x}", va))?;
                let second = env
                    .virt_to_phys(last, true)
                    .map_err(|e| refuse!(xen, env, dom, e, "runstate area at {:#x}", va))?;
                let d = xen.domain_mut(dom).ok_or(ESRCH)?;
                let (g0, g1) = (first >> 12, second >> 12);
                if !d.is_plain_ram(g0) || !d.is_plain_ram(g1) {
                    return Err(d.deny(
                        env,
                        EINVAL,
                        format_args!("runstate area in frame {:#x}", g0),
                    ));
                }
                Some(([g0, g1], (first & 0xfff) as u16))
            };
            let d = xen.domain_mut(dom).ok_or(ESRCH)?;
            let flag = d.vm_assist & (1 << VMASST_TYPE_RUNSTATE_UPDATE_FLAG) != 0;
            let v = &mut d.vcpus[vcpu as usize];
            v.runstate = area;
            let v = v.clone();
            write_runstate(env, dom, &v, flag);
            Ok(0)
        }
        // As on Xen/arm, the other vCPU operations are not offered (vCPUs
        // come up through the platform's firmware interface).
        _ => Err(refuse!(xen, env, dom, EINVAL, "vcpu_op {}", cmd)),
    }
}

fn memory_op(xen: &mut Xen, env: &dyn Env, dom: DomId, args: [u64; 5]) -> Reply {
    // The low bits carry the command; the rest where a continuation
    // resumes (Xen's MEMOP_EXTENT_SHIFT).
    let (cmd, start, arg) = (args[0] & 0x3f, args[0] >> 6, args[1]);
    if cmd == XENMEM_DECREASE_RESERVATION
        || cmd == XENMEM_POPULATE_PHYSMAP
        || cmd == XENMEM_INCREASE_RESERVATION
    {
        let b: [u8; MEMORY_RESERVATION_SIZE] = match read_struct(env, arg) {
            Ok(b) => b,
            Err(e) => {
                return Reply::err(refuse!(xen, env, dom, e, "memory reservation"));
            }
        };
        let (list, nr, order, target) = (
            get_u64(&b, 0),
            get_u64(&b, 8),
            get_u32(&b, 16),
            get_u16(&b, 24),
        );
        if Xen::resolve(dom, target) != dom {
            return Reply::err(refuse!(
                xen,
                env,
                dom,
                EPERM,
                "reservation for domain {}",
                target
            ));
        }
        if order != 0 {
            return Reply::err(refuse!(
                xen,
                env,
                dom,
                EINVAL,
                "reservation of order {}",
                order
            ));
        }
        return reservation(xen, env, dom, cmd, list, nr, start, args);
    }
    memory_op_simple(xen, env, dom, cmd, arg).into()
}

fn memory_op_simple(
    xen: &mut Xen,
    env: &dyn Env,
    dom: DomId,
    cmd: u64,
    arg: u64,
) -> Result<i64, i32> {
    match cmd {
        XENMEM_ADD_TO_PHYSMAP => {
            let b: [u8; ADD_TO_PHYSMAP_SIZE] =
                read_struct(env, arg).map_err(|e| refuse!(xen, env, dom, e, "add_to_physmap"))?;
            let (target, space, idx, gpfn) = (
                Xen::resolve(dom, get_u16(&b, 0)),
                get_u32(&b, 4),
                get_u64(&b, 8),
                get_u64(&b, 16),
            );
            if target != dom {
                return Err(refuse!(
                    xen,
                    env,
                    dom,
                    EPERM,
                    "add_to_physmap for domain {}",
                    target
                ));
            }
            add_to_physmap(xen, env, dom, space, idx, gpfn).map(|()| 0)
        }
        XENMEM_REMOVE_FROM_PHYSMAP => {
            let b: [u8; REMOVE_FROM_PHYSMAP_SIZE] = read_struct(env, arg)
                .map_err(|e| refuse!(xen, env, dom, e, "remove_from_physmap"))?;
            let (target, gpfn) = (Xen::resolve(dom, get_u16(&b, 0)), get_u64(&b, 8));
            if target != dom {
                return Err(refuse!(
                    xen,
                    env,
                    dom,
                    EPERM,
                    "remove_from_physmap for {}",
                    target
                ));
            }
            remove_slot(xen, env, dom, gpfn).map(|()| 0)
        }
        XENMEM_CURRENT_RESERVATION | XENMEM_MAXIMUM_RESERVATION => {
            let b: [u8; 2] = read_struct(env, arg)?;
            let target = Xen::resolve(dom, get_u16(&b, 0));
            if !xen.may_talk(dom, target)
                || target != dom
                    && xen
                        .domain(dom)
                        .is_some_and(|d| d.cfg.caps & CAP_CONTROL == 0)
            {
                return Err(refuse!(
                    xen,
                    env,
                    dom,
                    EPERM,
                    "reservation of domain {}",
                    target
                ));
            }
            let d = xen.domain(target).ok_or(ESRCH)?;
            // Persistent tmem pages count as the domain's memory (they
            // are what Xen allocated to the domain for them).
            let pers = xen.tmem.client_stats(target).map_or(0, |s| s.pers_pages);
            Ok(if cmd == XENMEM_CURRENT_RESERVATION {
                (d.cfg.ram_pages - d.given_back()).saturating_add(pers)
            } else {
                d.cfg.ram_pages
            } as i64)
        }
        XENMEM_MAXIMUM_GPFN => {
            let d = xen.domain(dom).ok_or(ESRCH)?;
            let top = d.p2m.keys().next_back().copied().unwrap_or(0);
            Ok((d.cfg.ram_base_gfn + d.cfg.ram_pages - 1).max(top) as i64)
        }
        _ => Err(refuse!(xen, env, dom, ENOSYS, "memory_op {}", cmd)),
    }
}

/// Replaces whatever `dom` sees at `gpfn` by `frame`.
fn place(
    xen: &mut Xen,
    env: &dyn Env,
    dom: DomId,
    gpfn: u64,
    slot: Slot,
    frame: HostFrame,
) -> Result<(), i32> {
    let d = xen.domain_mut(dom).ok_or(ESRCH)?;
    if let Some(Slot::Foreign(_)) = d.p2m.get(&gpfn) {
        return Err(d.deny(
            env,
            EBUSY,
            format_args!("frame {:#x} holds a grant mapping", gpfn),
        ));
    }
    if d.vcpus.iter().any(|v| {
        v.info.is_some_and(|(g, _)| g == gpfn) || v.runstate.is_some_and(|(g, _)| g.contains(&gpfn))
    }) {
        return Err(d.deny(
            env,
            EBUSY,
            format_args!("frame {:#x} holds a vcpu_info or runstate area", gpfn),
        ));
    }
    if let Err(e) = env.map_frame(dom, gpfn, frame, true) {
        return Err(d.deny(env, e, format_args!("mapping at frame {:#x}", gpfn)));
    }
    // The frame leaves its old place (one place at a time, as in Xen).
    let old: Vec<u64> = d
        .p2m
        .iter()
        .filter(|(g, s)| **s == slot && **g != gpfn)
        .map(|(g, _)| *g)
        .collect();
    for g in old {
        if d.is_ram(g) {
            d.p2m.insert(g, Slot::Hole);
            let _ = env.unmap_frame(dom, g);
        } else {
            d.p2m.remove(&g);
            let _ = env.unmap_frame(dom, g);
        }
    }
    d.p2m.insert(gpfn, slot);
    Ok(())
}

fn add_to_physmap(
    xen: &mut Xen,
    env: &dyn Env,
    dom: DomId,
    space: u32,
    idx: u64,
    gpfn: u64,
) -> Result<(), i32> {
    match space {
        XENMAPSPACE_SHARED_INFO => {
            if idx != 0 {
                return Err(refuse!(xen, env, dom, EINVAL, "shared_info index {}", idx));
            }
            let frame = xen.domain(dom).ok_or(ESRCH)?.shared_info.frame();
            place(xen, env, dom, gpfn, Slot::SharedInfo, frame)
        }
        XENMAPSPACE_GRANT_TABLE => {
            if idx & XENMAPIDX_GRANT_TABLE_STATUS != 0 || idx > u64::from(u32::MAX) {
                return Err(refuse!(
                    xen,
                    env,
                    dom,
                    EINVAL,
                    "grant frame {:#x} (v1 has no status frames)",
                    idx
                ));
            }
            let frame = {
                let d = xen.domain_mut(dom).ok_or(ESRCH)?;
                match d.grant.frame(idx as u32) {
                    Ok(f) => f,
                    Err(e) => return Err(d.deny(env, e, format_args!("grant frame {}", idx))),
                }
            };
            place(xen, env, dom, gpfn, Slot::GrantFrame(idx as u32), frame)
        }
        _ => Err(refuse!(
            xen,
            env,
            dom,
            EOPNOTSUPP,
            "add_to_physmap space {}",
            space
        )),
    }
}

/// Undoes an override at `gpfn`: a RAM frame becomes a hole, anything
/// else is unmapped. Grant mappings are left to GNTTABOP_unmap_grant_ref.
fn remove_slot(xen: &mut Xen, env: &dyn Env, dom: DomId, gpfn: u64) -> Result<(), i32> {
    let d = xen.domain_mut(dom).ok_or(ESRCH)?;
    match d.p2m.get(&gpfn).copied() {
        Some(Slot::Foreign(_)) => Err(d.deny(
            env,
            EBUSY,
            format_args!("remove_from_physmap of a grant mapping"),
        )),
        Some(Slot::Hole) => Ok(()),
        Some(_) | None if d.is_ram(gpfn) => {
            if d.vcpus
                .iter()
                .any(|v| v.info.is_some_and(|(g, _)| g == gpfn))
            {
                return Err(d.deny(
                    env,
                    EBUSY,
                    format_args!("frame {:#x} holds a vcpu_info", gpfn),
                ));
            }
            env.unmap_frame(dom, gpfn)?;
            d.p2m.insert(gpfn, Slot::Hole);
            Ok(())
        }
        Some(_) => {
            env.unmap_frame(dom, gpfn)?;
            d.p2m.remove(&gpfn);
            Ok(())
        }
        None => Err(d.deny(
            env,
            EINVAL,
            format_args!("remove_from_physmap of empty frame {:#x}", gpfn),
        )),
    }
}

/// decrease_reservation gives RAM frames back (they become holes, the
/// guest uses them to map grants); populate_physmap and
/// increase_reservation put the domain's own (zeroed) RAM back in holes,
/// but not into room its persistent tmem pages take (the domain's
/// memory is its RAM in use plus those pages). Returns the number of
/// extents done, Xen's convention.
#[allow(clippy::too_many_arguments)]
fn reservation(
    xen: &mut Xen,
    env: &dyn Env,
    dom: DomId,
    cmd: u64,
    list: u64,
    nr: u64,
    start: u64,
    args: [u64; 5],
) -> Reply {
    /// Extents per trap before a continuation.
    const CHUNK: u64 = 512;
    let mut done = start;
    let pers = xen.tmem.client_stats(dom).map_or(0, |s| s.pers_pages);
    let mut given = xen.domain(dom).map_or(0, Domain::given_back);
    while done < nr {
        if done - start == CHUNK {
            let mut next = args;
            next[0] = cmd | (done << 6);
            return Reply {
                ret: 0,
                action: Action::None,
                cont: Some(next),
            };
        }
        let mut b = [0u8; 8];
        if env.read_virt(list.wrapping_add(done * 8), &mut b).is_err() {
            break;
        }
        let gfn = u64::from_le_bytes(b);
        let Some(d) = xen.domain_mut(dom) else {
            return Reply::err(ESRCH);
        };
        let ok = match cmd {
            XENMEM_DECREASE_RESERVATION => {
                // A frame others map through a grant keeps its page: the
                // hole would later be refilled with that very page.
                if d.is_plain_ram(gfn)
                    && !d.grant.gfn_pinned(gfn)
                    && !d
                        .vcpus
                        .iter()
                        .any(|v| v.info.is_some_and(|(g, _)| g == gfn))
                {
                    env.unmap_frame(dom, gfn).is_ok() && {
                        d.p2m.insert(gfn, Slot::Hole);
                        true
                    }
                } else {
                    false
                }
            }
            _ => {
                if given <= pers {
                    d.deny(
                        env,
                        ENOMEM,
                        format_args!(
                            "memory_op {}: {} pages given back, all taken by persistent tmem",
                            cmd, given
                        ),
                    );
                    break;
                }
                if d.p2m.get(&gfn) == Some(&Slot::Hole) {
                    if let Some(p) = env.ram_page(dom, gfn) {
                        p.zero();
                    }
                    env.restore_ram(dom, gfn).is_ok() && {
                        d.p2m.remove(&gfn);
                        given -= 1;
                        true
                    }
                } else {
                    false
                }
            }
        };
        if !ok {
            d.deny(
                env,
                EINVAL,
                format_args!("memory_op {} on frame {:#x}", cmd, gfn),
            );
            break;
        }
        done += 1;
    }
    Reply::ret(done as i64)
}

fn hvm_op(xen: &mut Xen, env: &dyn Env, dom: DomId, op: u64, arg: u64) -> Result<i64, i32> {
    let mut b: [u8; HVM_PARAM_SIZE] =
        read_struct(env, arg).map_err(|e| refuse!(xen, env, dom, e, "hvm_op"))?;
    let (target, index, value) = (
        Xen::resolve(dom, get_u16(&b, 0)),
        get_u32(&b, 4),
        get_u64(&b, 8),
    );
    let control = xen
        .domain(dom)
        .is_some_and(|d| d.cfg.caps & CAP_CONTROL != 0);
    if target != dom && !control {
        return Err(refuse!(xen, env, dom, EPERM, "hvm_op on domain {}", target));
    }
    if xen.domain(target).is_none() {
        return Err(refuse!(xen, env, dom, ESRCH, "hvm_op on domain {}", target));
    }
    if index >= HVM_NR_PARAMS {
        return Err(refuse!(xen, env, dom, EINVAL, "hvm param {}", index));
    }
    let own = target == dom;
    match op {
        HVMOP_SET_PARAM => {
            match param_rule(index) {
                Rule::Guest => {}
                Rule::Deprecated => {
                    return Err(refuse!(xen, env, dom, EINVAL, "set hvm param {}", index));
                }
                Rule::Toolstack if own => {
                    return Err(refuse!(xen, env, dom, EPERM, "set hvm param {}", index));
                }
                Rule::Toolstack => {}
            }
            let d = xen.domain_mut(target).ok_or(ESRCH)?;
            let cur = d.params[index as usize];
            if index == HVM_PARAM_VIRIDIAN {
                if let Err(e) = viridian_mask_change(cur, value) {
                    return Err(d.deny(
                        env,
                        e,
                        format_args!("viridian mask {:#x} (now {:#x})", value, cur),
                    ));
                }
            } else if SET_ONCE.contains(&index) && cur != 0 && cur != value {
                return Err(d.deny(env, EEXIST, format_args!("hvm param {} set twice", index)));
            }
            d.params[index as usize] = value;
            Ok(0)
        }
        HVMOP_GET_PARAM => {
            let readable = matches!(param_rule(index), Rule::Guest)
                || matches!(index, HVM_PARAM_STORE_PFN | HVM_PARAM_CONSOLE_PFN);
            if matches!(param_rule(index), Rule::Deprecated) {
                return Err(refuse!(xen, env, dom, EINVAL, "get hvm param {}", index));
            }
            if own && !readable {
                return Err(refuse!(xen, env, dom, EPERM, "get hvm param {}", index));
            }
            let v = xen.domain(target).ok_or(ESRCH)?.params[index as usize];
            put_u64(&mut b, 8, v);
            env.write_virt(arg, &b)?;
            Ok(0)
        }
        _ => Err(refuse!(xen, env, dom, ENOSYS, "hvm_op {}", op)),
    }
}

enum Rule {
    /// The guest may set (and read) it.
    Guest,
    /// Only a controlling domain may set it.
    Toolstack,
    /// Deprecated: EINVAL for everybody.
    Deprecated,
}

/// Parameters only set once (a second, different value is EEXIST):
/// IOREQ_PFN (5), BUFIOREQ_PFN (6), IOREQ_SERVER_PFN (32),
/// NR_IOREQ_SERVER_PAGES (33), MCA_CAP (38). VIRIDIAN (9) has its own,
/// stricter rule: [`viridian_mask_change`].
const SET_ONCE: [u32; 5] = [5, 6, 32, 33, 38];

/// Whether `mask` may be HVM_PARAM_VIRIDIAN's value: 0 (no
/// enlightenments), or a mask holding HVMPV_BASE_FREQ and no bit outside
/// HVMPV_FEATURE_MASK (every other group builds on the base one). EINVAL
/// otherwise. The one definition of the rule; hv-x86 calls it too.
pub fn check_viridian_mask(mask: u64) -> Result<(), i32> {
    if mask != 0 && (mask & !HVMPV_FEATURE_MASK != 0 || mask & HVMPV_BASE_FREQ == 0) {
        return Err(EINVAL);
    }
    Ok(())
}

/// Whether HVM_PARAM_VIRIDIAN may go from `current` to `new`, checked in
/// this order: the same value again is accepted (0 on 0 included); a
/// change once it is non-zero is EEXIST (CPUID leaves and MSRs must not
/// vanish under a running guest); then [`check_viridian_mask`]. Who may
/// write at all (never the guest itself) is the caller's check.
pub fn viridian_mask_change(current: u64, new: u64) -> Result<(), i32> {
    if new == current {
        return Ok(());
    }
    if current != 0 {
        return Err(EEXIST);
    }
    check_viridian_mask(new)
}

impl Xen {
    /// The domain builder sets `dom`'s viridian feature mask, acting as
    /// the toolstack: the rules of [`viridian_mask_change`] (ESRCH when
    /// there is no such domain). A reset domain starts again at 0, so the
    /// builder sets it again after [`Xen::reset_domain`].
    pub fn set_viridian(&mut self, env: &dyn Env, dom: DomId, mask: u64) -> Result<(), i32> {
        let d = self.domain_mut(dom).ok_or(ESRCH)?;
        let cur = d.viridian_mask();
        if let Err(e) = viridian_mask_change(cur, mask) {
            return Err(d.deny(
                env,
                e,
                format_args!("builder: viridian mask {:#x} (now {:#x})", mask, cur),
            ));
        }
        d.params[HVM_PARAM_VIRIDIAN as usize] = mask;
        Ok(())
    }
}

/// Xen's write rules for a guest setting its own parameters.
fn param_rule(index: u32) -> Rule {
    match index {
        // CALLBACK_IRQ, VM86_TSS, ACPI_IOPORTS_LOCATION, STORE_EVTCHN,
        // CONSOLE_EVTCHN, VM_GENERATION_ID_ADDR, X87_FIP_WIDTH,
        // VM86_TSS_SIZED.
        0 | 15 | 19 | 2 | 18 | 34 | 36 | 37 => Rule::Guest,
        // PAE_ENABLED, DM_DOMAIN, MEMORY_EVENT_*, NESTEDHVM,
        // BUFIOREQ_EVTCHN.
        4 | 13 | 20 | 21 | 22 | 23 | 24 | 25 | 26 | 30 => Rule::Deprecated,
        _ => Rule::Toolstack,
    }
}

fn multicall(xen: &mut Xen, env: &dyn Env, dom: DomId, vcpu: u32, args: [u64; 5]) -> Reply {
    let (list, nr) = (args[0], args[1]);
    let mut action = Action::None;
    let mut i = 0;
    while i < nr {
        if i == MULTICALL_CHUNK || action != Action::None {
            let mut next = args;
            next[0] = list.wrapping_add(i * MULTICALL_ENTRY_SIZE as u64);
            next[1] = nr - i;
            return Reply {
                ret: 0,
                action,
                cont: Some(next),
            };
        }
        let at = list.wrapping_add(i * MULTICALL_ENTRY_SIZE as u64);
        let e: [u8; MULTICALL_ENTRY_SIZE] = match read_struct(env, at) {
            Ok(e) => e,
            Err(err) => {
                return Reply::err(refuse!(xen, env, dom, err, "multicall entry {}", i));
            }
        };
        let op = get_u64(&e, 0);
        let a = core::array::from_fn(|k| get_u64(&e, 16 + 8 * k));
        let r = if op == HC_MULTICALL {
            Reply::err(refuse!(xen, env, dom, EINVAL, "nested multicall"))
        } else {
            hypercall(xen, env, dom, vcpu, op, a)
        };
        // A sub-call's continuation is finished here, bounded by its own
        // chunking; its action is taken after this entry.
        let mut ret = r.ret;
        let mut cur = r;
        let mut rounds = 0;
        while let Some(c) = cur.cont {
            rounds += 1;
            if rounds > 4096 {
                ret = -i64::from(EBUSY);
                break;
            }
            cur = hypercall(xen, env, dom, vcpu, op, c);
            ret = cur.ret;
        }
        if cur.action != Action::None {
            action = cur.action;
        }
        if env.write_virt(at + 8, &ret.to_le_bytes()).is_err() {
            return Reply::err(EFAULT);
        }
        i += 1;
    }
    Reply {
        ret: 0,
        action,
        cont: None,
    }
}

#[cfg(any(test, feature = "testenv"))]
pub mod testenv;

#[cfg(test)]
mod tests;
