//! Event channels: Xen's 2-level and FIFO ABIs (public/event_channel.h),
//! answered as Xen's common/event_channel.c, event_2l.c and event_fifo.c
//! answer them.
//!
//! A domain's ports live in a table that grows in steps of 64 ports (Xen's
//! bucket), up to the limit of the domain (`max_ports`, from its
//! configuration) and of the active ABI (4096 ports for 2-level on a
//! 64-bit guest, 2^17 for FIFO). A port is *valid* when the table covers
//! it (operations on ports beyond answer EINVAL, as Xen's
//! `port_is_valid`); port 0 is reserved and never allocated.
//!
//! Delivery:
//! - 2-level: the port's bit in shared_info's `evtchn_pending`, unless
//!   masked in `evtchn_mask` its word's bit in the vCPU's
//!   `evtchn_pending_sel`, then [`Domain::mark_upcall`].
//! - FIFO (after the first successful EVTCHNOP_init_control): the port's
//!   event word in the guest's event array; an unmasked event is linked
//!   onto the tail of the queue of (notified vCPU, priority), the
//!   hypervisor keeping each queue's tail and writing the guest's
//!   `head[prio]` when a queue was empty; a queue that becomes non-empty
//!   sets its bit in the control block's `ready` and marks the upcall.
//!
//! Decided, and why:
//! - Guest frames of the FIFO ABI (control blocks, event-array pages) are
//!   remembered by frame number and looked up with [`Env::ram_page`] at
//!   each use, after checking [`Domain::is_plain_ram`] again (a map
//!   lookup). A frame the guest has since given back or mapped something
//!   else over no longer carries its events: the delivery is dropped and
//!   logged (rate-limited), rather than written into a page the guest can
//!   no longer see.
//! - Linking onto a tail word follows Xen: one compare-and-swap, then the
//!   tail is marked BUSY (which keeps a well-behaved guest from unmasking
//!   it) and at most four more. A guest that keeps changing the word
//!   defeats that; the event is then left unlinked (as Xen does) and the
//!   failure logged. Nothing spins unbounded.
//! - Policy: a channel between two different domains needs
//!   [`Xen::may_talk`] in either direction (each end consents anyway: an
//!   interdomain channel exists only after one side allocated an unbound
//!   port naming the other). Acting on another domain's ports
//!   (alloc_unbound for it, status, reset) needs CAP_CONTROL (Xen's
//!   XSM_TARGET rule). These are checked before the port-level checks, so
//!   an unprivileged caller learns nothing about another domain's ports.
//! - Global VIRQs (VIRQ_CONSOLE, ...) may only be bound by a domain holding
//!   CAP_HARDWARE: Xen's default global-VIRQ handler is the hardware
//!   domain, and nothing here re-assigns one (others get EBUSY, as there).
//! - EVTCHNOP_reset of another domain needs CAP_CONTROL; Xen also wants
//!   that domain paused by its controller, which has no meaning here (the
//!   lock around [`Xen`] serialises it with the domain's own calls).
//!   reset and reset_cont run to completion (bounded by the port limit).
//! - EVTCHNOP_bind_pirq: EOPNOTSUPP, as Xen on Arm since 4.19 (no pIRQs).
//! - A pending event saved for a FIFO port without an event-array page yet
//!   is cleared when the port is closed (Xen keeps the flag).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::abi::*;
use super::page::PAGE_SIZE;
use super::{CAP_CONTROL, CAP_HARDWARE, Domain, Env, Page, Xen};

/// Ports by which the port table grows (Xen's EVTCHNS_PER_BUCKET).
const BUCKET: u32 = 64;
/// 32-bit event words per event-array page.
const WORDS_PER_PAGE: u32 = (PAGE_SIZE / 4) as u32;
/// Compare-and-swap attempts on a BUSY-marked tail word (Xen's bound).
const LINK_TRIES: u32 = 4;
/// Attempts at storing a queue head a guest keeps changing.
const STORE_TRIES: u32 = 4;
/// Dropped deliveries logged per domain before only every 1024th is.
const LOGGED_DROPS: u32 = 32;

const PENDING: u32 = 1 << EVTCHN_FIFO_PENDING;
const MASKED: u32 = 1 << EVTCHN_FIFO_MASKED;
const LINKED: u32 = 1 << EVTCHN_FIFO_LINKED;
const BUSY: u32 = 1 << EVTCHN_FIFO_BUSY;
/// Control block: `ready` at 0, `head[16]` from 8.
const CB_HEAD: usize = 8;

// Argument structures (64-bit little-endian layouts of event_channel.h).
/// `evtchn_alloc_unbound { domid_t dom, remote_dom; evtchn_port_t port; }`.
const ALLOC_UNBOUND_SIZE: usize = 8;
/// `evtchn_bind_interdomain { domid_t remote_dom; evtchn_port_t
/// remote_port, local_port; }`.
const BIND_INTERDOMAIN_SIZE: usize = 12;
/// `evtchn_bind_virq { uint32_t virq, vcpu; evtchn_port_t port; }`.
const BIND_VIRQ_SIZE: usize = 12;
/// `evtchn_bind_pirq { uint32_t pirq, flags; evtchn_port_t port; }`.
const BIND_PIRQ_SIZE: usize = 12;
/// `evtchn_bind_ipi { uint32_t vcpu; evtchn_port_t port; }`.
const BIND_IPI_SIZE: usize = 8;
/// `evtchn_close`, `evtchn_send`, `evtchn_unmask`: `{ evtchn_port_t port; }`.
const PORT_SIZE: usize = 4;
/// `evtchn_status { domid_t dom; evtchn_port_t port; uint32_t status,
/// vcpu; union { .. } u; }`: the union at 16.
const STATUS_SIZE: usize = 24;
/// `evtchn_bind_vcpu { evtchn_port_t port; uint32_t vcpu; }`.
const BIND_VCPU_SIZE: usize = 8;
/// `evtchn_reset { domid_t dom; }`.
const RESET_SIZE: usize = 2;
/// `evtchn_init_control { uint64_t control_gfn; uint32_t offset, vcpu;
/// uint8_t link_bits; uint8_t _pad[7]; }`.
const INIT_CONTROL_SIZE: usize = 24;
/// `evtchn_expand_array { uint64_t array_gfn; }`.
const EXPAND_ARRAY_SIZE: usize = 8;
/// `evtchn_set_priority { evtchn_port_t port; uint32_t priority; }`.
const SET_PRIORITY_SIZE: usize = 8;

/// xen.h's VIRQ_XENOPROF, VIRQ_ARGO, VIRQ_XENPMU (the others are in abi.rs).
const VIRQ_XENOPROF: u32 = 7;
const VIRQ_ARGO: u32 = 11;
const VIRQ_XENPMU: u32 = 13;

/// Which event-channel ABI a domain uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abi {
    /// The 2-level bitmaps in shared_info (until init_control succeeds).
    TwoLevel,
    /// FIFO queues in guest memory.
    Fifo,
}

/// What a port is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not in use.
    Free,
    /// Port 0: never allocated.
    Reserved,
    /// Waiting for `remote_dom` to bind it.
    Unbound {
        /// The domain that may bind it.
        remote_dom: DomId,
    },
    /// Connected to `remote_port` of `remote_dom`.
    Interdomain {
        /// The other end's domain.
        remote_dom: DomId,
        /// The other end's port.
        remote_port: u32,
    },
    /// Bound to a virtual interrupt.
    Virq {
        /// VIRQ_*.
        virq: u32,
    },
    /// An inter-processor event within the domain.
    Ipi,
}

/// How a VIRQ is delivered (Xen's `enum virq_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VirqType {
    /// Bound per vCPU.
    Vcpu,
    /// Bound once per domain (on vCPU 0), any domain.
    Domain,
    /// Bound once, only by the global handler (the hardware domain).
    Global,
}

fn virq_type(virq: u32) -> VirqType {
    match virq {
        VIRQ_TIMER | VIRQ_DEBUG | VIRQ_XENOPROF | VIRQ_XENPMU => VirqType::Vcpu,
        VIRQ_ARGO => VirqType::Domain,
        // Arm's architecture VIRQs (16..23) are global too.
        _ => VirqType::Global,
    }
}

#[derive(Clone, Copy, Debug)]
struct Channel {
    state: State,
    /// The vCPU notified.
    vcpu: u32,
    /// FIFO priority (0..=15).
    priority: u8,
    /// FIFO: an event raised while the port had no event word.
    pending: bool,
    /// FIFO: the queue (vCPU, priority) the event was last linked on.
    last_q: (u32, u8),
}

impl Channel {
    const FREE: Channel = Channel {
        state: State::Free,
        vcpu: 0,
        priority: EVTCHN_FIFO_PRIORITY_DEFAULT as u8,
        pending: false,
        last_q: (0, 0),
    };
}

/// Whether a guest may use the channel (Xen's `evtchn_usable`).
fn usable(state: State) -> bool {
    !matches!(state, State::Free | State::Reserved)
}

#[derive(Clone, Copy, Debug, Default)]
struct FifoVcpu {
    /// The control block: frame and offset.
    control: Option<(u64, u16)>,
    /// Last port linked on each priority's queue (0: none).
    tails: [u32; EVTCHN_FIFO_MAX_QUEUES as usize],
}

#[derive(Clone, Debug)]
struct Fifo {
    vcpus: Vec<FifoVcpu>,
    /// Frames of the event array, in order.
    pages: Vec<u64>,
}

/// A domain's event channels.
#[derive(Debug, Default)]
pub struct EventChannels {
    max_ports: u32,
    chans: Vec<Channel>,
    /// (vCPU, VIRQ) → port; domain-wide VIRQs are kept on vCPU 0.
    virqs: BTreeMap<(u32, u32), u32>,
    fifo: Option<Fifo>,
    drops: u32,
}

impl EventChannels {
    /// No channels; ports below `max_ports` may be allocated.
    pub fn new(max_ports: u32) -> Self {
        let mut chans = Vec::new();
        chans.resize(BUCKET as usize, Channel::FREE);
        if let Some(c) = chans.first_mut() {
            c.state = State::Reserved;
        }
        EventChannels {
            max_ports,
            chans,
            virqs: BTreeMap::new(),
            fifo: None,
            drops: 0,
        }
    }

    /// The active ABI.
    pub fn abi(&self) -> Abi {
        if self.fifo.is_some() {
            Abi::Fifo
        } else {
            Abi::TwoLevel
        }
    }

    /// Ports the domain may have (its configuration).
    pub fn max_ports(&self) -> u32 {
        self.max_ports
    }

    /// Ports below this may be allocated now (the configuration and the
    /// active ABI's limit).
    pub fn limit(&self) -> u32 {
        let abi = match self.abi() {
            Abi::TwoLevel => EVTCHN_2L_NR_CHANNELS,
            Abi::Fifo => EVTCHN_FIFO_NR_CHANNELS,
        };
        self.max_ports.min(abi)
    }

    /// Ports the table covers (valid ports are below this).
    pub fn valid_ports(&self) -> u32 {
        self.chans.len() as u32
    }

    /// What `port` is bound to; None for a port the table does not cover.
    pub fn state(&self, port: u32) -> Option<State> {
        self.chan(port).map(|c| c.state)
    }

    /// The vCPU `port` notifies.
    pub fn notify_vcpu(&self, port: u32) -> Option<u32> {
        self.chan(port).map(|c| c.vcpu)
    }

    /// The FIFO priority of `port`.
    pub fn priority(&self, port: u32) -> Option<u32> {
        self.chan(port).map(|c| u32::from(c.priority))
    }

    /// The port `virq` is bound to on `vcpu` (domain-wide VIRQs: vCPU 0).
    pub fn virq_port(&self, vcpu: u32, virq: u32) -> Option<u32> {
        self.virqs.get(&(vcpu, virq)).copied()
    }

    fn chan(&self, port: u32) -> Option<&Channel> {
        self.chans.get(port as usize)
    }

    fn chan_mut(&mut self, port: u32) -> Option<&mut Channel> {
        self.chans.get_mut(port as usize)
    }

    /// Extends the table to cover `port` (whole buckets).
    fn grow(&mut self, port: u32) -> Result<(), i32> {
        let want = (port / BUCKET + 1) as usize * BUCKET as usize;
        if want > self.chans.len() {
            self.chans
                .try_reserve(want - self.chans.len())
                .map_err(|_| ENOMEM)?;
            self.chans.resize(want, Channel::FREE);
        }
        Ok(())
    }

    /// Binds free `port` (covered by the table) to `state`, notifying
    /// `vcpu`, with the default priority (Xen's `evtchn_port_init`).
    fn bind(&mut self, port: u32, state: State, vcpu: u32) {
        if let Some(c) = self.chan_mut(port) {
            c.state = state;
            c.vcpu = vcpu;
            c.priority = EVTCHN_FIFO_PRIORITY_DEFAULT as u8;
            c.pending = false;
        }
    }
}

/// Runs `f` on `d`'s event channels and the rest of `d` (whose `evtchn`
/// field is empty meanwhile: `f` must only use the first argument).
fn split<R>(d: &mut Domain, f: impl FnOnce(&mut EventChannels, &Domain) -> R) -> R {
    let mut ec = core::mem::take(&mut d.evtchn);
    let r = f(&mut ec, d);
    d.evtchn = ec;
    r
}

fn with_dom<R>(
    xen: &mut Xen,
    dom: DomId,
    f: impl FnOnce(&mut EventChannels, &Domain) -> R,
) -> Option<R> {
    xen.domain_mut(dom).map(|d| split(d, f))
}

/// A delivery that could not be made: logged, rate-limited per domain.
fn note_drop(drops: &mut u32, env: &dyn Env, d: &Domain, what: fmt::Arguments) {
    *drops = drops.saturating_add(1);
    if *drops <= LOGGED_DROPS || (*drops).is_multiple_of(1024) {
        env.log(format_args!("{}: event dropped: {}", d.cfg.name, what));
    }
}

/// `gfn` of `d` if it is still the domain's own RAM.
fn guest_page<'e>(d: &Domain, env: &'e dyn Env, gfn: u64) -> Option<&'e Page> {
    if d.is_plain_ram(gfn) {
        env.ram_page(d.id(), gfn)
    } else {
        None
    }
}

enum Miss {
    /// The event array does not reach the port (yet).
    NoPage,
    /// The frame holding it is no longer the domain's RAM.
    Gone(u64),
}

/// The page and offset of `port`'s event word.
fn word_in<'e>(
    pages: &[u64],
    d: &Domain,
    env: &'e dyn Env,
    port: u32,
) -> Result<(&'e Page, usize), Miss> {
    let gfn = *pages
        .get((port / WORDS_PER_PAGE) as usize)
        .ok_or(Miss::NoPage)?;
    let page = guest_page(d, env, gfn).ok_or(Miss::Gone(gfn))?;
    Ok((page, (port % WORDS_PER_PAGE) as usize * 4))
}

fn event_word<'e>(
    ec: &EventChannels,
    d: &Domain,
    env: &'e dyn Env,
    port: u32,
) -> Result<(&'e Page, usize), Miss> {
    match &ec.fifo {
        Some(f) => word_in(&f.pages, d, env, port),
        None => Err(Miss::NoPage),
    }
}

/// 2-level: the shared_info word and bit of `port`.
fn l2_bit(port: u32) -> Option<(usize, u64)> {
    (port < EVTCHN_2L_NR_CHANNELS).then(|| ((port / 64) as usize * 8, 1u64 << (port % 64)))
}

fn l2_pending(d: &Domain, port: u32) -> bool {
    l2_bit(port).is_some_and(|(w, b)| d.shared_info.load64(d.layout.evtchn_pending() + w) & b != 0)
}

/// Sets `port`'s selector bit in `vcpu`'s vcpu_info; marks the upcall
/// when it was clear.
fn l2_select(d: &Domain, env: &dyn Env, vcpu: u32, port: u32) {
    let sel = 1u64 << (port / 64);
    let was = d.with_vcpu_info(env, vcpu, |p, off| {
        p.fetch_or64(off + VCPU_INFO_PENDING_SEL, sel)
    });
    if was.is_some_and(|w| w & sel == 0) {
        d.mark_upcall(env, vcpu);
    }
}

fn l2_set_pending(d: &Domain, env: &dyn Env, vcpu: u32, port: u32) {
    let Some((w, bit)) = l2_bit(port) else { return };
    if d.shared_info.fetch_or64(d.layout.evtchn_pending() + w, bit) & bit != 0 {
        return;
    }
    if d.shared_info.load64(d.layout.evtchn_mask() + w) & bit == 0 {
        l2_select(d, env, vcpu, port);
    }
}

fn l2_unmask(d: &Domain, env: &dyn Env, vcpu: u32, port: u32) {
    let Some((w, bit)) = l2_bit(port) else { return };
    if d.shared_info.fetch_and64(d.layout.evtchn_mask() + w, !bit) & bit != 0
        && d.shared_info.load64(d.layout.evtchn_pending() + w) & bit != 0
    {
        l2_select(d, env, vcpu, port);
    }
}

/// Stores a 32-bit word a guest may be changing (bounded retries).
fn store32(page: &Page, off: usize, v: u32) -> bool {
    (0..STORE_TRIES).any(|_| page.cas32(off, page.load32(off), v).is_ok())
}

enum Link {
    /// The tail now links to the port.
    Linked,
    /// The tail is no longer linked: the queue is empty.
    Empty,
    /// The guest kept changing the tail word.
    GaveUp,
}

/// One attempt at setting the LINK field of a LINKED word; None when the
/// word changed under us (`w` then holds its new value).
fn try_link(page: &Page, off: usize, w: &mut u32, link: u32) -> Option<Link> {
    if *w & LINKED == 0 {
        return Some(Link::Empty);
    }
    let new = (*w & !(BUSY | EVTCHN_FIFO_LINK_MASK)) | link;
    match page.cas32(off, *w, new) {
        Ok(_) => Some(Link::Linked),
        Err(now) => {
            *w = now;
            None
        }
    }
}

/// Links the tail word at `off` to `link` if it is still LINKED.
fn set_link(page: &Page, off: usize, link: u32) -> Link {
    let mut w = page.load32(off);
    if let Some(r) = try_link(page, off, &mut w, link) {
        return r;
    }
    // Keep a well-behaved guest from unmasking it meanwhile.
    page.fetch_or32(off, BUSY);
    w = page.load32(off);
    for _ in 0..LINK_TRIES {
        match try_link(page, off, &mut w, link) {
            Some(Link::Empty) => {
                page.fetch_clear32(off, BUSY);
                return Link::Empty;
            }
            Some(r) => return r,
            None => {}
        }
    }
    page.fetch_clear32(off, BUSY);
    Link::GaveUp
}

fn fifo_set_pending(ec: &mut EventChannels, d: &Domain, env: &dyn Env, vcpu: u32, port: u32) {
    let Some(ch) = ec.chan(port).copied() else {
        return;
    };
    let (wp, wo) = match event_word(ec, d, env, port) {
        Ok(w) => w,
        Err(Miss::NoPage) => {
            // Raised again when the array page arrives.
            if let Some(c) = ec.chan_mut(port) {
                c.pending = true;
            }
            return;
        }
        Err(Miss::Gone(gfn)) => {
            note_drop(
                &mut ec.drops,
                env,
                d,
                format_args!(
                    "port {}: event array frame {:#x} is no longer RAM",
                    port, gfn
                ),
            );
            return;
        }
    };
    let prio = ch.priority.min(EVTCHN_FIFO_PRIORITY_MIN as u8);
    let EventChannels {
        fifo, chans, drops, ..
    } = ec;
    let Some(fifo) = fifo.as_mut() else { return };
    let Some((cgfn, coff)) = fifo.vcpus.get(vcpu as usize).and_then(|v| v.control) else {
        note_drop(
            drops,
            env,
            d,
            format_args!("port {}: vcpu {} has no FIFO control block", port, vcpu),
        );
        return;
    };
    let Some(cb) = guest_page(d, env, cgfn) else {
        note_drop(
            drops,
            env,
            d,
            format_args!(
                "port {}: control block frame {:#x} is no longer RAM",
                port, cgfn
            ),
        );
        return;
    };
    let coff = usize::from(coff);
    wp.fetch_or32(wo, PENDING);
    let mut linked = true;
    if wp.load32(wo) & MASKED == 0 && wp.fetch_or32(wo, LINKED) & LINKED == 0 {
        // A port that was the tail of its last queue leaves it empty.
        let (ov, op) = ch.last_q;
        if let Some(t) = fifo
            .vcpus
            .get_mut(ov as usize)
            .and_then(|q| q.tails.get_mut(usize::from(op)))
            && *t == port
        {
            *t = 0;
        }
        if ch.last_q != (vcpu, prio)
            && let Some(c) = chans.get_mut(port as usize)
        {
            c.last_q = (vcpu, prio);
        }
        let tail = fifo
            .vcpus
            .get(vcpu as usize)
            .and_then(|q| q.tails.get(usize::from(prio)))
            .copied()
            .unwrap_or(0);
        linked = false;
        if tail != 0 {
            match word_in(&fifo.pages, d, env, tail) {
                Ok((tp, to)) => match set_link(tp, to, port) {
                    Link::Linked => linked = true,
                    Link::Empty => {}
                    Link::GaveUp => {
                        // As Xen: the event stays LINKED but unreachable
                        // until the guest sorts its queue out.
                        linked = true;
                        note_drop(
                            drops,
                            env,
                            d,
                            format_args!("port {} not linked: tail {} kept changing", port, tail),
                        );
                    }
                },
                Err(_) => note_drop(
                    drops,
                    env,
                    d,
                    format_args!("port {}: tail {} has no event word", port, tail),
                ),
            }
        }
        if !linked && !store32(cb, coff + CB_HEAD + 4 * usize::from(prio), port) {
            note_drop(
                drops,
                env,
                d,
                format_args!("port {}: queue head kept changing", port),
            );
        }
        if let Some(t) = fifo
            .vcpus
            .get_mut(vcpu as usize)
            .and_then(|q| q.tails.get_mut(usize::from(prio)))
        {
            *t = port;
        }
    }
    let ready = 1u32 << prio;
    if !linked && cb.fetch_or32(coff, ready) & ready == 0 {
        d.mark_upcall(env, vcpu);
    }
}

/// Makes `port` pending, notifying `vcpu` (Xen's `evtchn_port_set_pending`).
fn set_pending(ec: &mut EventChannels, d: &Domain, env: &dyn Env, vcpu: u32, port: u32) {
    if !ec.chan(port).is_some_and(|c| usable(c.state)) {
        return;
    }
    if ec.fifo.is_some() {
        fifo_set_pending(ec, d, env, vcpu, port);
    } else {
        l2_set_pending(d, env, vcpu, port);
    }
}

fn clear_pending(ec: &mut EventChannels, d: &Domain, env: &dyn Env, port: u32) {
    if ec.fifo.is_some() {
        if let Ok((p, o)) = event_word(ec, d, env, port) {
            p.fetch_clear32(o, PENDING);
        }
    } else if let Some((w, bit)) = l2_bit(port) {
        d.shared_info
            .fetch_and64(d.layout.evtchn_pending() + w, !bit);
    }
    if let Some(c) = ec.chan_mut(port) {
        c.pending = false;
    }
}

fn pending(ec: &EventChannels, d: &Domain, env: &dyn Env, port: u32) -> bool {
    if ec.fifo.is_some() {
        event_word(ec, d, env, port).is_ok_and(|(p, o)| p.load32(o) & PENDING != 0)
    } else {
        l2_pending(d, port)
    }
}

/// FIFO: a port still LINKED in its queue may not be reused.
fn busy(ec: &EventChannels, d: &Domain, env: &dyn Env, port: u32) -> bool {
    ec.fifo.is_some() && event_word(ec, d, env, port).is_ok_and(|(p, o)| p.load32(o) & LINKED != 0)
}

fn unmask(ec: &mut EventChannels, d: &Domain, env: &dyn Env, port: u32) {
    let Some(ch) = ec.chan(port).copied() else {
        return;
    };
    if !usable(ch.state) {
        return;
    }
    if ec.fifo.is_some() {
        if let Ok((p, o)) = event_word(ec, d, env, port) {
            p.fetch_clear32(o, MASKED);
            if p.load32(o) & PENDING != 0 {
                fifo_set_pending(ec, d, env, ch.vcpu, port);
            }
        }
    } else {
        l2_unmask(d, env, ch.vcpu, port);
    }
}

/// The lowest free port, the table grown to cover it; ENOSPC when none
/// is left below the limit.
fn free_port(ec: &mut EventChannels, d: &Domain, env: &dyn Env) -> Result<u32, i32> {
    let limit = ec.limit();
    for port in 1..limit {
        match ec.chan(port) {
            Some(c) => {
                if c.state == State::Free && !busy(ec, d, env, port) {
                    return Ok(port);
                }
            }
            None => {
                ec.grow(port)?;
                return Ok(port);
            }
        }
    }
    Err(ENOSPC)
}

fn deliver(xen: &mut Xen, env: &dyn Env, dom: DomId, vcpu: u32, port: u32) {
    with_dom(xen, dom, |ec, d| set_pending(ec, d, env, vcpu, port));
}

/// Closes `port` of `dom` (Xen's `evtchn_close`): an interdomain peer's
/// end falls back to unbound (for `dom`).
pub fn close_port(xen: &mut Xen, env: &dyn Env, dom: DomId, port: u32) -> Result<(), i32> {
    let ch = xen
        .domain(dom)
        .and_then(|d| d.evtchn.chan(port).copied())
        .ok_or(EINVAL)?;
    match ch.state {
        State::Free | State::Reserved => return Err(EINVAL),
        State::Unbound { .. } | State::Ipi => {}
        State::Virq { virq } => {
            let key = match virq_type(virq) {
                VirqType::Vcpu => (ch.vcpu, virq),
                _ => (0, virq),
            };
            if let Some(d) = xen.domain_mut(dom)
                && d.evtchn.virqs.get(&key) == Some(&port)
            {
                d.evtchn.virqs.remove(&key);
            }
        }
        State::Interdomain {
            remote_dom,
            remote_port,
        } => {
            if let Some(peer) = xen
                .domain_mut(remote_dom)
                .and_then(|d| d.evtchn.chan_mut(remote_port))
                && peer.state
                    == (State::Interdomain {
                        remote_dom: dom,
                        remote_port: port,
                    })
            {
                peer.state = State::Unbound { remote_dom: dom };
            }
        }
    }
    with_dom(xen, dom, |ec, d| {
        clear_pending(ec, d, env, port);
        if let Some(c) = ec.chan_mut(port) {
            // The last queue is kept: the port may still be a tail.
            c.state = State::Free;
            c.vcpu = 0;
        }
    });
    Ok(())
}

/// Closes every port of `dom` and returns it to the 2-level ABI.
fn close_all(xen: &mut Xen, env: &dyn Env, dom: DomId) {
    let n = xen.domain(dom).map_or(0, |d| d.evtchn.valid_ports());
    for port in 1..n {
        // Free ports answer EINVAL: nothing to do.
        let _ = close_port(xen, env, dom, port);
    }
    if let Some(d) = xen.domain_mut(dom) {
        d.evtchn.fifo = None;
    }
}

/// A refusal: errno, what was wrong, the value concerned.
struct No(i32, &'static str, u64);

type Res<T> = Result<T, No>;

fn read_arg<const N: usize>(env: &dyn Env, arg: u64) -> Res<[u8; N]> {
    super::read_struct(env, arg).map_err(|e| No(e, "argument unreadable at", arg))
}

fn write_arg(env: &dyn Env, arg: u64, b: &[u8]) -> Res<()> {
    env.write_virt(arg, b)
        .map_err(|e| No(e, "result unwritable at", arg))
}

fn has_cap(xen: &Xen, dom: DomId, cap: u32) -> bool {
    xen.domain(dom).is_some_and(|d| d.cfg.caps & cap != 0)
}

/// Whether a channel may join `a` and `b`.
fn may_connect(xen: &Xen, a: DomId, b: DomId) -> bool {
    xen.may_talk(a, b) || xen.may_talk(b, a)
}

fn alloc_port(xen: &mut Xen, env: &dyn Env, dom: DomId) -> Res<u32> {
    match with_dom(xen, dom, |ec, d| free_port(ec, d, env)) {
        Some(Ok(p)) => Ok(p),
        Some(Err(e)) => Err(No(e, "no free port below", limit_of(xen, dom).into())),
        None => Err(No(ESRCH, "no domain", dom.into())),
    }
}

fn limit_of(xen: &Xen, dom: DomId) -> u32 {
    xen.domain(dom).map_or(0, |d| d.evtchn.limit())
}

fn channel(xen: &Xen, dom: DomId, port: u32) -> Res<Channel> {
    xen.domain(dom)
        .and_then(|d| d.evtchn.chan(port).copied())
        .ok_or(No(EINVAL, "invalid port", port.into()))
}

fn nr_vcpus(xen: &Xen, dom: DomId) -> u32 {
    xen.domain(dom).map_or(0, |d| d.cfg.nr_vcpus)
}

fn bind_state(xen: &mut Xen, dom: DomId, port: u32, state: State, vcpu: u32) {
    if let Some(d) = xen.domain_mut(dom) {
        d.evtchn.bind(port, state, vcpu);
    }
}

fn alloc_unbound(xen: &mut Xen, env: &dyn Env, caller: DomId, arg: u64) -> Res<()> {
    let mut b: [u8; ALLOC_UNBOUND_SIZE] = read_arg(env, arg)?;
    let dom = Xen::resolve(caller, get_u16(&b, 0));
    let remote = Xen::resolve(caller, get_u16(&b, 2));
    if xen.domain(dom).is_none() {
        return Err(No(ESRCH, "no domain", dom.into()));
    }
    if dom != caller && !has_cap(xen, caller, CAP_CONTROL) {
        return Err(No(EPERM, "no control capability for domain", dom.into()));
    }
    if dom != remote && !may_connect(xen, dom, remote) {
        return Err(No(EPERM, "policy: no link to domain", remote.into()));
    }
    let port = alloc_port(xen, env, dom)?;
    bind_state(xen, dom, port, State::Unbound { remote_dom: remote }, 0);
    put_u32(&mut b, 4, port);
    write_arg(env, arg, &b)
}

fn bind_interdomain(xen: &mut Xen, env: &dyn Env, caller: DomId, arg: u64) -> Res<()> {
    let mut b: [u8; BIND_INTERDOMAIN_SIZE] = read_arg(env, arg)?;
    let rdom = Xen::resolve(caller, get_u16(&b, 0));
    let rport = get_u32(&b, 4);
    if xen.domain(rdom).is_none() {
        return Err(No(ESRCH, "no domain", rdom.into()));
    }
    if rdom != caller && !may_connect(xen, caller, rdom) {
        return Err(No(EPERM, "policy: no link to domain", rdom.into()));
    }
    let lport = alloc_port(xen, env, caller)?;
    let peer =
        channel(xen, rdom, rport).map_err(|_| No(EINVAL, "invalid remote port", rport.into()))?;
    if peer.state != (State::Unbound { remote_dom: caller }) {
        return Err(No(EINVAL, "remote port not unbound for us", rport.into()));
    }
    bind_state(
        xen,
        caller,
        lport,
        State::Interdomain {
            remote_dom: rdom,
            remote_port: rport,
        },
        0,
    );
    if let Some(c) = xen.domain_mut(rdom).and_then(|d| d.evtchn.chan_mut(rport)) {
        c.state = State::Interdomain {
            remote_dom: caller,
            remote_port: lport,
        };
    }
    // Events sent to the unbound end were lost: Xen makes the new local
    // end pending once, and Linux relies on it.
    deliver(xen, env, caller, 0, lport);
    put_u32(&mut b, 8, lport);
    write_arg(env, arg, &b)
}

fn bind_virq(xen: &mut Xen, env: &dyn Env, caller: DomId, arg: u64) -> Res<()> {
    let mut b: [u8; BIND_VIRQ_SIZE] = read_arg(env, arg)?;
    let (virq, vcpu) = (get_u32(&b, 0), get_u32(&b, 4));
    if virq >= NR_VIRQS {
        return Err(No(EINVAL, "no virq", virq.into()));
    }
    let kind = virq_type(virq);
    if kind != VirqType::Vcpu && vcpu != 0 {
        return Err(No(EINVAL, "domain-wide virq on vcpu", vcpu.into()));
    }
    if vcpu >= nr_vcpus(xen, caller) {
        return Err(No(ENOENT, "no vcpu", vcpu.into()));
    }
    if kind == VirqType::Global && !has_cap(xen, caller, CAP_HARDWARE) {
        return Err(No(EBUSY, "global virq handled elsewhere", virq.into()));
    }
    if xen
        .domain(caller)
        .is_some_and(|d| d.evtchn.virqs.contains_key(&(vcpu, virq)))
    {
        return Err(No(EEXIST, "virq already bound", virq.into()));
    }
    let port = alloc_port(xen, env, caller)?;
    bind_state(xen, caller, port, State::Virq { virq }, vcpu);
    if let Some(d) = xen.domain_mut(caller) {
        d.evtchn.virqs.insert((vcpu, virq), port);
    }
    put_u32(&mut b, 8, port);
    write_arg(env, arg, &b)
}

fn bind_ipi(xen: &mut Xen, env: &dyn Env, caller: DomId, arg: u64) -> Res<()> {
    let mut b: [u8; BIND_IPI_SIZE] = read_arg(env, arg)?;
    let vcpu = get_u32(&b, 0);
    if vcpu >= nr_vcpus(xen, caller) {
        return Err(No(ENOENT, "no vcpu", vcpu.into()));
    }
    let port = alloc_port(xen, env, caller)?;
    bind_state(xen, caller, port, State::Ipi, vcpu);
    put_u32(&mut b, 4, port);
    write_arg(env, arg, &b)
}

fn close(xen: &mut Xen, env: &dyn Env, caller: DomId, arg: u64) -> Res<()> {
    let b: [u8; PORT_SIZE] = read_arg(env, arg)?;
    let port = get_u32(&b, 0);
    close_port(xen, env, caller, port).map_err(|e| No(e, "port not open", port.into()))
}

fn send(xen: &mut Xen, env: &dyn Env, caller: DomId, arg: u64) -> Res<()> {
    let b: [u8; PORT_SIZE] = read_arg(env, arg)?;
    let port = get_u32(&b, 0);
    let ch = channel(xen, caller, port)?;
    match ch.state {
        State::Interdomain {
            remote_dom,
            remote_port,
        } => {
            let peer = xen
                .domain(remote_dom)
                .and_then(|d| d.evtchn.chan(remote_port).copied());
            match peer {
                Some(p)
                    if p.state
                        == (State::Interdomain {
                            remote_dom: caller,
                            remote_port: port,
                        }) =>
                {
                    deliver(xen, env, remote_dom, p.vcpu, remote_port);
                }
                _ => {
                    // Cannot happen while both ends are kept together.
                    env.log(format_args!(
                        "d{} port {}: peer d{} port {} does not point back",
                        caller, port, remote_dom, remote_port
                    ));
                }
            }
            Ok(())
        }
        State::Ipi => {
            deliver(xen, env, caller, ch.vcpu, port);
            Ok(())
        }
        // Nobody listens yet: dropped silently.
        State::Unbound { .. } => Ok(()),
        _ => Err(No(EINVAL, "cannot send on port", port.into())),
    }
}

fn status(xen: &mut Xen, env: &dyn Env, caller: DomId, arg: u64) -> Res<()> {
    let mut b: [u8; STATUS_SIZE] = read_arg(env, arg)?;
    let dom = Xen::resolve(caller, get_u16(&b, 0));
    let port = get_u32(&b, 4);
    if xen.domain(dom).is_none() {
        return Err(No(ESRCH, "no domain", dom.into()));
    }
    if dom != caller && !has_cap(xen, caller, CAP_CONTROL) {
        return Err(No(EPERM, "no control capability for domain", dom.into()));
    }
    let ch = channel(xen, dom, port)?;
    let st = match ch.state {
        State::Free | State::Reserved => EVTCHNSTAT_CLOSED,
        State::Unbound { remote_dom } => {
            put_u16(&mut b, 16, remote_dom);
            EVTCHNSTAT_UNBOUND
        }
        State::Interdomain {
            remote_dom,
            remote_port,
        } => {
            put_u16(&mut b, 16, remote_dom);
            put_u32(&mut b, 20, remote_port);
            EVTCHNSTAT_INTERDOMAIN
        }
        State::Virq { virq } => {
            put_u32(&mut b, 16, virq);
            EVTCHNSTAT_VIRQ
        }
        State::Ipi => EVTCHNSTAT_IPI,
    };
    put_u32(&mut b, 8, st);
    put_u32(&mut b, 12, ch.vcpu);
    write_arg(env, arg, &b)
}

fn bind_vcpu(xen: &mut Xen, env: &dyn Env, caller: DomId, arg: u64) -> Res<()> {
    let b: [u8; BIND_VCPU_SIZE] = read_arg(env, arg)?;
    let (port, vcpu) = (get_u32(&b, 0), get_u32(&b, 4));
    if vcpu >= nr_vcpus(xen, caller) {
        return Err(No(ENOENT, "no vcpu", vcpu.into()));
    }
    let ch = channel(xen, caller, port)?;
    let ok = match ch.state {
        State::Virq { virq } => virq_type(virq) != VirqType::Vcpu,
        State::Unbound { .. } | State::Interdomain { .. } => true,
        _ => false,
    };
    if !ok {
        return Err(No(EINVAL, "cannot move port", port.into()));
    }
    if let Some(c) = xen.domain_mut(caller).and_then(|d| d.evtchn.chan_mut(port)) {
        c.vcpu = vcpu;
    }
    Ok(())
}

fn unmask_op(xen: &mut Xen, env: &dyn Env, caller: DomId, arg: u64) -> Res<()> {
    let b: [u8; PORT_SIZE] = read_arg(env, arg)?;
    let port = get_u32(&b, 0);
    channel(xen, caller, port)?;
    with_dom(xen, caller, |ec, d| unmask(ec, d, env, port));
    Ok(())
}

fn reset(xen: &mut Xen, env: &dyn Env, caller: DomId, arg: u64) -> Res<()> {
    let b: [u8; RESET_SIZE] = read_arg(env, arg)?;
    let dom = Xen::resolve(caller, get_u16(&b, 0));
    if xen.domain(dom).is_none() {
        return Err(No(ESRCH, "no domain", dom.into()));
    }
    if dom != caller && !has_cap(xen, caller, CAP_CONTROL) {
        return Err(No(EPERM, "no control capability for domain", dom.into()));
    }
    close_all(xen, env, dom);
    Ok(())
}

fn init_control(xen: &mut Xen, env: &dyn Env, caller: DomId, arg: u64) -> Res<()> {
    let mut b: [u8; INIT_CONTROL_SIZE] = read_arg(env, arg)?;
    let (gfn, offset, vcpu) = (get_u64(&b, 0), get_u32(&b, 8), get_u32(&b, 12));
    let d = xen
        .domain_mut(caller)
        .ok_or(No(ESRCH, "no domain", caller.into()))?;
    if vcpu >= d.cfg.nr_vcpus {
        return Err(No(ENOENT, "no vcpu", vcpu.into()));
    }
    if offset as usize > PAGE_SIZE - EVTCHN_FIFO_CONTROL_BLOCK_SIZE || offset % 8 != 0 {
        return Err(No(EINVAL, "control block at offset", offset.into()));
    }
    if guest_page(d, env, gfn).is_none() {
        return Err(No(EINVAL, "control block in frame", gfn));
    }
    if d.evtchn.fifo.is_none() {
        // Switching ABI: events pending in the 2-level bitmap are kept,
        // raised again once the event array covers their ports.
        let n = d.evtchn.chans.len().min(EVTCHN_2L_NR_CHANNELS as usize);
        split(d, |ec, d| {
            for (port, c) in ec.chans.iter_mut().enumerate().take(n).skip(1) {
                if l2_pending(d, port as u32) {
                    c.pending = true;
                }
                c.priority = EVTCHN_FIFO_PRIORITY_DEFAULT as u8;
            }
            let mut vcpus = Vec::new();
            vcpus.resize(d.cfg.nr_vcpus as usize, FifoVcpu::default());
            ec.fifo = Some(Fifo {
                vcpus,
                pages: Vec::new(),
            });
        });
    }
    let slot = d
        .evtchn
        .fifo
        .as_mut()
        .and_then(|f| f.vcpus.get_mut(vcpu as usize))
        .ok_or(No(ENOENT, "no vcpu", vcpu.into()))?;
    if slot.control.is_some() {
        return Err(No(
            EINVAL,
            "control block already set for vcpu",
            vcpu.into(),
        ));
    }
    slot.control = Some((gfn, offset as u16));
    b[16] = EVTCHN_FIFO_LINK_BITS as u8;
    write_arg(env, arg, &b)
}

fn expand_array(xen: &mut Xen, env: &dyn Env, caller: DomId, arg: u64) -> Res<()> {
    let b: [u8; EXPAND_ARRAY_SIZE] = read_arg(env, arg)?;
    let gfn = get_u64(&b, 0);
    let d = xen
        .domain_mut(caller)
        .ok_or(No(ESRCH, "no domain", caller.into()))?;
    let max_pages = d
        .evtchn
        .max_ports
        .min(EVTCHN_FIFO_NR_CHANNELS)
        .div_ceil(WORDS_PER_PAGE) as usize;
    let ok_frame = guest_page(d, env, gfn).is_some();
    let Some(fifo) = d.evtchn.fifo.as_mut() else {
        return Err(No(EOPNOTSUPP, "2-level ABI: no event array for frame", gfn));
    };
    let slot = fifo.pages.len();
    if slot >= max_pages {
        return Err(No(ENOSPC, "event array full: frame", gfn));
    }
    if !ok_frame {
        return Err(No(EINVAL, "event array page in frame", gfn));
    }
    fifo.pages.push(gfn);
    // Events raised while these ports had no word.
    let first = slot as u32 * WORDS_PER_PAGE;
    split(d, |ec, d| {
        for port in first..first + WORDS_PER_PAGE {
            let Some(c) = ec.chan_mut(port) else { break };
            if c.pending {
                c.pending = false;
                let vcpu = c.vcpu;
                set_pending(ec, d, env, vcpu, port);
            }
        }
    });
    Ok(())
}

fn set_priority(xen: &mut Xen, env: &dyn Env, caller: DomId, arg: u64) -> Res<()> {
    let b: [u8; SET_PRIORITY_SIZE] = read_arg(env, arg)?;
    let (port, prio) = (get_u32(&b, 0), get_u32(&b, 4));
    let ch = channel(xen, caller, port)?;
    let d = xen
        .domain_mut(caller)
        .ok_or(No(ESRCH, "no domain", caller.into()))?;
    if d.evtchn.fifo.is_none() {
        return Err(No(ENOSYS, "2-level ABI: no priority for port", port.into()));
    }
    if !usable(ch.state) {
        return Err(No(EACCES, "priority of closed port", port.into()));
    }
    if prio > EVTCHN_FIFO_PRIORITY_MIN {
        return Err(No(EINVAL, "priority", prio.into()));
    }
    if let Some(c) = d.evtchn.chan_mut(port) {
        c.priority = prio as u8;
    }
    Ok(())
}

fn bind_pirq(env: &dyn Env, arg: u64) -> Res<()> {
    let b: [u8; BIND_PIRQ_SIZE] = read_arg(env, arg)?;
    Err(No(
        EOPNOTSUPP,
        "no physical irqs: pirq",
        get_u32(&b, 0).into(),
    ))
}

fn op_name(cmd: u64) -> &'static str {
    match cmd {
        EVTCHNOP_BIND_INTERDOMAIN => "bind_interdomain",
        EVTCHNOP_BIND_VIRQ => "bind_virq",
        EVTCHNOP_BIND_PIRQ => "bind_pirq",
        EVTCHNOP_CLOSE => "close",
        EVTCHNOP_SEND => "send",
        EVTCHNOP_STATUS => "status",
        EVTCHNOP_ALLOC_UNBOUND => "alloc_unbound",
        EVTCHNOP_BIND_IPI => "bind_ipi",
        EVTCHNOP_BIND_VCPU => "bind_vcpu",
        EVTCHNOP_UNMASK => "unmask",
        EVTCHNOP_RESET => "reset",
        EVTCHNOP_INIT_CONTROL => "init_control",
        EVTCHNOP_EXPAND_ARRAY => "expand_array",
        EVTCHNOP_SET_PRIORITY => "set_priority",
        EVTCHNOP_RESET_CONT => "reset_cont",
        _ => "?",
    }
}

/// EVTCHNOP_* `cmd` with its argument structure at `arg`.
pub fn op(
    xen: &mut Xen,
    env: &dyn Env,
    dom: DomId,
    vcpu: u32,
    cmd: u64,
    arg: u64,
) -> Result<i64, i32> {
    // Xen's event-channel operations name their vCPUs explicitly.
    let _ = vcpu;
    if xen.domain(dom).is_none() {
        return Err(ESRCH);
    }
    let r = match cmd {
        EVTCHNOP_ALLOC_UNBOUND => alloc_unbound(xen, env, dom, arg),
        EVTCHNOP_BIND_INTERDOMAIN => bind_interdomain(xen, env, dom, arg),
        EVTCHNOP_BIND_VIRQ => bind_virq(xen, env, dom, arg),
        EVTCHNOP_BIND_PIRQ => bind_pirq(env, arg),
        EVTCHNOP_BIND_IPI => bind_ipi(xen, env, dom, arg),
        EVTCHNOP_CLOSE => close(xen, env, dom, arg),
        EVTCHNOP_SEND => send(xen, env, dom, arg),
        EVTCHNOP_STATUS => status(xen, env, dom, arg),
        EVTCHNOP_BIND_VCPU => bind_vcpu(xen, env, dom, arg),
        EVTCHNOP_UNMASK => unmask_op(xen, env, dom, arg),
        EVTCHNOP_RESET | EVTCHNOP_RESET_CONT => reset(xen, env, dom, arg),
        EVTCHNOP_INIT_CONTROL => init_control(xen, env, dom, arg),
        EVTCHNOP_EXPAND_ARRAY => expand_array(xen, env, dom, arg),
        EVTCHNOP_SET_PRIORITY => set_priority(xen, env, dom, arg),
        _ => Err(No(ENOSYS, "unknown command", cmd)),
    };
    match r {
        Ok(()) => Ok(0),
        Err(No(errno, why, val)) => Err(super::deny(
            xen,
            env,
            dom,
            errno,
            format_args!("event_channel_op {}: {} {}", op_name(cmd), why, val),
        )),
    }
}

/// Whether `port` of `dom` is pending (SCHEDOP_poll); EINVAL for a port
/// out of range or not in use (Xen's `evtchn_port_poll`).
pub fn is_pending(xen: &mut Xen, env: &dyn Env, dom: DomId, port: u32) -> Result<bool, i32> {
    let d = xen.domain(dom).ok_or(ESRCH)?;
    match d.evtchn.chan(port) {
        Some(c) if usable(c.state) => Ok(pending(&d.evtchn, d, env, port)),
        _ => Err(EINVAL),
    }
}

/// Closes every channel of `dom`; interdomain peers' ends become unbound.
pub fn teardown(xen: &mut Xen, env: &dyn Env, dom: DomId) {
    close_all(xen, env, dom);
    if let Some(d) = xen.domain_mut(dom) {
        d.evtchn = EventChannels::new(d.evtchn.max_ports);
    }
}

/// A static channel from the device tree, at domain build: `port_a` of
/// `a` and `port_b` of `b` bound to each other, and the two domains
/// linked ([`Xen::allow`]). No event is raised. EINVAL for a port out of
/// range (0 or at or above the limit) or `a == b`; ESRCH for an unknown
/// domain; EEXIST when a port is taken.
pub fn bind_static(
    xen: &mut Xen,
    env: &dyn Env,
    a: DomId,
    port_a: u32,
    b: DomId,
    port_b: u32,
) -> Result<(), i32> {
    let _ = env;
    if a == b {
        return Err(EINVAL);
    }
    for (dom, port) in [(a, port_a), (b, port_b)] {
        let d = xen.domain(dom).ok_or(ESRCH)?;
        if port == 0 || port >= d.evtchn.limit() {
            return Err(EINVAL);
        }
        if d.evtchn.chan(port).is_some_and(|c| c.state != State::Free) {
            return Err(EEXIST);
        }
    }
    for (dom, port, remote_dom, remote_port) in [(a, port_a, b, port_b), (b, port_b, a, port_a)] {
        let d = xen.domain_mut(dom).ok_or(ESRCH)?;
        d.evtchn.grow(port)?;
        d.evtchn.bind(
            port,
            State::Interdomain {
                remote_dom,
                remote_port,
            },
            0,
        );
    }
    xen.allow(a, b);
    Ok(())
}

/// The hypervisor raises `virq` for `vcpu` of `dom`: a per-vCPU VIRQ on
/// that vCPU's binding, a domain-wide or global one on its single binding
/// (notifying whichever vCPU it is bound to). Nothing when unbound.
pub fn send_virq(xen: &mut Xen, env: &dyn Env, dom: DomId, vcpu: u32, virq: u32) {
    if virq >= NR_VIRQS {
        return;
    }
    let per_vcpu = virq_type(virq) == VirqType::Vcpu;
    let key = (if per_vcpu { vcpu } else { 0 }, virq);
    let Some((port, ch)) = xen.domain(dom).and_then(|d| {
        let port = *d.evtchn.virqs.get(&key)?;
        Some((port, *d.evtchn.chan(port)?))
    }) else {
        return;
    };
    if ch.state != (State::Virq { virq }) {
        return;
    }
    let target = if per_vcpu { vcpu } else { ch.vcpu };
    deliver(xen, env, dom, target, port);
}

/// Checks the invariants of every domain's event channels: both ends of
/// an interdomain channel name each other, no port in use at or above
/// the limits, port 0 reserved, VIRQ bindings and channels agree, vCPUs
/// and priorities in range. For tests and fuzzing.
pub fn check_invariants(xen: &Xen) -> Result<(), String> {
    use alloc::format;
    for id in xen.ids() {
        let Some(d) = xen.domain(id) else { continue };
        let ec = &d.evtchn;
        if ec.state(0) != Some(State::Reserved) {
            return Err(format!("d{}: port 0 is {:?}", id, ec.state(0)));
        }
        if ec.chans.len() % BUCKET as usize != 0 {
            return Err(format!("d{}: table of {} ports", id, ec.chans.len()));
        }
        let cap = ec.max_ports.min(EVTCHN_FIFO_NR_CHANNELS);
        let limit = ec.limit();
        for (port, c) in ec.chans.iter().enumerate().skip(1) {
            let port = port as u32;
            if c.state == State::Reserved {
                return Err(format!("d{} port {}: reserved", id, port));
            }
            if usable(c.state) && port >= limit {
                return Err(format!(
                    "d{} port {}: in use above the limit {}",
                    id, port, limit
                ));
            }
            if c.vcpu >= d.cfg.nr_vcpus || u32::from(c.priority) > EVTCHN_FIFO_PRIORITY_MIN {
                return Err(format!(
                    "d{} port {}: vcpu {} priority {}",
                    id, port, c.vcpu, c.priority
                ));
            }
            match c.state {
                State::Interdomain {
                    remote_dom,
                    remote_port,
                } => {
                    let back = xen
                        .domain(remote_dom)
                        .and_then(|r| r.evtchn.state(remote_port));
                    let want = State::Interdomain {
                        remote_dom: id,
                        remote_port: port,
                    };
                    if back != Some(want) {
                        return Err(format!(
                            "d{} port {} → d{} port {}, which is {:?}",
                            id, port, remote_dom, remote_port, back
                        ));
                    }
                }
                State::Virq { virq } => {
                    let v = if virq_type(virq) == VirqType::Vcpu {
                        c.vcpu
                    } else {
                        0
                    };
                    if ec.virq_port(v, virq) != Some(port) {
                        return Err(format!(
                            "d{} port {}: virq {} not in the table",
                            id, port, virq
                        ));
                    }
                }
                _ => {}
            }
        }
        for (&(v, virq), &port) in &ec.virqs {
            if ec.state(port) != Some(State::Virq { virq }) || v >= d.cfg.nr_vcpus {
                return Err(format!(
                    "d{}: virq {} of vcpu {} → port {}",
                    id, virq, v, port
                ));
            }
        }
        if let Some(f) = &ec.fifo {
            if f.vcpus.len() != d.cfg.nr_vcpus as usize {
                return Err(format!("d{}: {} FIFO vcpus", id, f.vcpus.len()));
            }
            let max_pages = cap.div_ceil(WORDS_PER_PAGE) as usize;
            if f.pages.len() > max_pages {
                return Err(format!("d{}: {} event array pages", id, f.pages.len()));
            }
            for v in &f.vcpus {
                if v.tails.iter().any(|&t| t as usize >= ec.chans.len()) {
                    return Err(format!("d{}: queue tail beyond the table", id));
                }
            }
        }
    }
    Ok(())
}

/// Fuzzing entry: `data` drives a sequence of event-channel operations
/// (hypercalls from three domains, guest writes to their memory, VIRQs,
/// static bindings, domain restarts) on a [`super::testenv::TestEnv`];
/// panics when an invariant ([`check_invariants`]) breaks.
#[cfg(any(test, feature = "testenv"))]
pub fn fuzz(data: &[u8]) {
    use super::testenv::{RAM_BASE_GFN, TestEnv};

    const DOMS: [DomId; 3] = [1, 2, 3];
    const FRAMES: usize = 8;
    // Argument structures live in the last frame.
    let arg = TestEnv::addr(FRAMES as u64 - 1, 0x800);
    let env = TestEnv::new(&DOMS, FRAMES);
    let mut xen = env.xen();
    xen.allow(1, 2);
    if let Some(d) = xen.domain_mut(3) {
        d.cfg.caps |= CAP_CONTROL;
    }
    let mut it = data.iter().copied();
    let mut next = move || it.next();
    let port_of = |b: u8| -> u32 {
        match b >> 6 {
            0..=2 => u32::from(b & 15),
            _ => [63, 64, 1023, 1024, 4096, 131_071, u32::MAX][usize::from(b & 7).min(6)],
        }
    };
    while let (Some(sel), Some(kind)) = (next(), next()) {
        let mut a = [0u8; 6];
        for x in &mut a {
            *x = next().unwrap_or(0);
        }
        let dom = DOMS[usize::from(sel) % DOMS.len()];
        let other = DOMS[usize::from(sel >> 2) % DOMS.len()];
        let domid = |b: u8| match b % 5 {
            0 => DOMID_SELF,
            1..=3 => DOMS[usize::from(b % 5) - 1],
            _ => 9,
        };
        env.current.set(dom);
        let mut s = [0u8; 24];
        let cmd = match kind % 20 {
            0 => {
                put_u16(&mut s, 0, domid(a[0]));
                put_u16(&mut s, 2, domid(a[1]));
                Some(EVTCHNOP_ALLOC_UNBOUND)
            }
            1 => {
                put_u16(&mut s, 0, domid(a[0]));
                put_u32(&mut s, 4, port_of(a[1]));
                Some(EVTCHNOP_BIND_INTERDOMAIN)
            }
            2 => {
                put_u32(&mut s, 0, u32::from(a[0] % 26));
                put_u32(&mut s, 4, u32::from(a[1] % 3));
                Some(EVTCHNOP_BIND_VIRQ)
            }
            3 => {
                put_u32(&mut s, 0, u32::from(a[0] % 3));
                Some(EVTCHNOP_BIND_IPI)
            }
            4..=6 => {
                put_u32(&mut s, 0, port_of(a[0]));
                Some([EVTCHNOP_CLOSE, EVTCHNOP_SEND, EVTCHNOP_UNMASK][usize::from(kind % 20 - 4)])
            }
            7 => {
                put_u16(&mut s, 0, domid(a[0]));
                put_u32(&mut s, 4, port_of(a[1]));
                Some(EVTCHNOP_STATUS)
            }
            8 => {
                put_u32(&mut s, 0, port_of(a[0]));
                put_u32(&mut s, 4, u32::from(a[1] % 3));
                Some(EVTCHNOP_BIND_VCPU)
            }
            9 => {
                put_u16(&mut s, 0, domid(a[0]));
                Some(EVTCHNOP_RESET)
            }
            10 => {
                put_u64(&mut s, 0, RAM_BASE_GFN + u64::from(a[0] % 10));
                put_u32(&mut s, 8, u32::from(a[1]) * 8 + u32::from(a[2] & 1));
                put_u32(&mut s, 12, u32::from(a[3] % 3));
                Some(EVTCHNOP_INIT_CONTROL)
            }
            11 => {
                put_u64(&mut s, 0, RAM_BASE_GFN + u64::from(a[0] % 10));
                Some(EVTCHNOP_EXPAND_ARRAY)
            }
            12 => {
                put_u32(&mut s, 0, port_of(a[0]));
                put_u32(&mut s, 4, u32::from(a[1] % 18));
                Some(EVTCHNOP_SET_PRIORITY)
            }
            13 => {
                // The guest writes a word of its memory (event words,
                // control blocks, shared_info are all fair game).
                let frame = u64::from(a[0]) % (FRAMES as u64 - 1);
                let off = (usize::from(a[1]) << 4 | usize::from(a[2] & 15)) & 0xffc;
                let v = u32::from_le_bytes([a[3], a[4], a[5], a[2]]);
                if let Some(p) = super::Env::ram_page(&env, dom, RAM_BASE_GFN + frame) {
                    p.store64(off & !7, u64::from(v) << ((off & 4) * 8));
                }
                if let Some(d) = xen.domain(dom) {
                    d.shared_info
                        .fetch_or64(SHINFO_EVTCHN_MASK + (off & 0x1f8), u64::from(a[5]));
                }
                None
            }
            14 => {
                send_virq(
                    &mut xen,
                    &env,
                    dom,
                    u32::from(a[0] % 3),
                    u32::from(a[1] % 26),
                );
                None
            }
            15 => {
                if a[0] % 4 == 0 {
                    xen.reset_domain(&env, dom);
                    if dom == 3
                        && let Some(d) = xen.domain_mut(3)
                    {
                        d.cfg.caps |= CAP_CONTROL;
                    }
                }
                None
            }
            16 => {
                let _ = bind_static(&mut xen, &env, dom, port_of(a[0]), other, port_of(a[1]));
                None
            }
            17 => {
                let _ = is_pending(&mut xen, &env, dom, port_of(a[0]));
                None
            }
            18 => {
                // The guest balloons a frame out or back in.
                let gfn = RAM_BASE_GFN + u64::from(a[0] % 8);
                if let Some(d) = xen.domain_mut(dom)
                    && d.p2m.remove(&gfn).is_none()
                {
                    d.p2m.insert(gfn, super::Slot::Hole);
                }
                None
            }
            _ => {
                put_u32(&mut s, 0, port_of(a[0]));
                Some(u64::from(a[1] % 17))
            }
        };
        if let Some(cmd) = cmd {
            env.poke(arg, &s);
            let at = if a[5] == 0xff { 0x10 } else { arg };
            let _ = super::hypercall(
                &mut xen,
                &env,
                dom,
                u32::from(a[4] % 2),
                HC_EVENT_CHANNEL_OP,
                [cmd, at, 0, 0, 0],
            );
        }
        if let Err(e) = check_invariants(&xen) {
            panic!("invariant broken: {}", e);
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use super::super::testenv::{RAM_BASE_GFN, TestEnv};
    use super::super::{CAP_CONTROL, CAP_HARDWARE, Domain, Slot, hypercall};
    use super::*;

    const D1: DomId = 1;
    const D2: DomId = 2;
    const D3: DomId = 3;
    const D4: DomId = 4;
    const FRAMES: usize = 16;
    /// Frame of the argument structures.
    const ARG: u64 = 15;
    /// Control blocks: vCPU 0 at frame 1 offset 0, vCPU 1 at frame 2
    /// offset 64; the event array's first page at frame 3; vCPU 1's
    /// vcpu_info at frame 13.
    const CB: [(u64, usize); 2] = [(1, 0), (2, 64)];
    const ARRAY: u64 = 3;
    const VINFO1: u64 = 13;

    /// D1..D4; D1 and D2 linked; D3 holds CAP_CONTROL; D4 talks to nobody.
    struct T {
        env: TestEnv,
        xen: Xen,
    }

    fn gfn(frame: u64) -> u64 {
        RAM_BASE_GFN + frame
    }

    impl T {
        fn new() -> T {
            let env = TestEnv::new(&[D1, D2, D3, D4], FRAMES);
            let mut xen = env.xen();
            xen.allow(D1, D2);
            xen.domain_mut(D3).unwrap().cfg.caps |= CAP_CONTROL;
            T { env, xen }
        }

        fn call(&mut self, dom: DomId, cmd: u64, s: &[u8]) -> (i64, Vec<u8>) {
            self.env.current.set(dom);
            let a = TestEnv::addr(ARG, 0);
            self.env.poke(a, s);
            let r = hypercall(
                &mut self.xen,
                &self.env,
                dom,
                0,
                HC_EVENT_CHANNEL_OP,
                [cmd, a, 0, 0, 0],
            );
            assert_eq!(r.cont, None);
            (r.ret, self.env.peek(a, s.len()))
        }

        fn port_result(&mut self, dom: DomId, cmd: u64, s: &[u8], at: usize) -> Result<u32, i64> {
            let (r, out) = self.call(dom, cmd, s);
            if r == 0 {
                Ok(get_u32(&out, at))
            } else {
                Err(r)
            }
        }

        fn alloc(&mut self, caller: DomId, dom: DomId, remote: DomId) -> Result<u32, i64> {
            let mut s = [0u8; 8];
            put_u16(&mut s, 0, dom);
            put_u16(&mut s, 2, remote);
            self.port_result(caller, EVTCHNOP_ALLOC_UNBOUND, &s, 4)
        }

        fn bind(&mut self, caller: DomId, rdom: DomId, rport: u32) -> Result<u32, i64> {
            let mut s = [0u8; 12];
            put_u16(&mut s, 0, rdom);
            put_u32(&mut s, 4, rport);
            self.port_result(caller, EVTCHNOP_BIND_INTERDOMAIN, &s, 8)
        }

        /// An interdomain channel: (port of a, port of b).
        fn connect(&mut self, a: DomId, b: DomId) -> (u32, u32) {
            let pa = self.alloc(a, DOMID_SELF, b).unwrap();
            let pb = self.bind(b, a, pa).unwrap();
            (pa, pb)
        }

        fn virq(&mut self, caller: DomId, virq: u32, vcpu: u32) -> Result<u32, i64> {
            let mut s = [0u8; 12];
            put_u32(&mut s, 0, virq);
            put_u32(&mut s, 4, vcpu);
            self.port_result(caller, EVTCHNOP_BIND_VIRQ, &s, 8)
        }

        fn ipi(&mut self, caller: DomId, vcpu: u32) -> Result<u32, i64> {
            let mut s = [0u8; 8];
            put_u32(&mut s, 0, vcpu);
            self.port_result(caller, EVTCHNOP_BIND_IPI, &s, 4)
        }

        fn port_op(&mut self, caller: DomId, cmd: u64, port: u32) -> i64 {
            self.call(caller, cmd, &port.to_le_bytes()).0
        }

        fn close(&mut self, caller: DomId, port: u32) -> i64 {
            self.port_op(caller, EVTCHNOP_CLOSE, port)
        }

        fn send(&mut self, caller: DomId, port: u32) -> i64 {
            self.port_op(caller, EVTCHNOP_SEND, port)
        }

        fn unmask(&mut self, caller: DomId, port: u32) -> i64 {
            self.port_op(caller, EVTCHNOP_UNMASK, port)
        }

        fn status(&mut self, caller: DomId, dom: DomId, port: u32) -> Result<[u32; 5], i64> {
            let mut s = [0u8; 24];
            put_u16(&mut s, 0, dom);
            put_u32(&mut s, 4, port);
            let (r, o) = self.call(caller, EVTCHNOP_STATUS, &s);
            if r != 0 {
                return Err(r);
            }
            Ok([
                get_u32(&o, 8),
                get_u32(&o, 12),
                u32::from(get_u16(&o, 16)),
                get_u32(&o, 16),
                get_u32(&o, 20),
            ])
        }

        fn bind_vcpu(&mut self, caller: DomId, port: u32, vcpu: u32) -> i64 {
            let mut s = [0u8; 8];
            put_u32(&mut s, 0, port);
            put_u32(&mut s, 4, vcpu);
            self.call(caller, EVTCHNOP_BIND_VCPU, &s).0
        }

        fn reset(&mut self, caller: DomId, dom: DomId) -> i64 {
            self.call(caller, EVTCHNOP_RESET, &dom.to_le_bytes()).0
        }

        fn init_control(&mut self, caller: DomId, frame: u64, offset: u32, vcpu: u32) -> i64 {
            let mut s = [0u8; 24];
            put_u64(&mut s, 0, gfn(frame));
            put_u32(&mut s, 8, offset);
            put_u32(&mut s, 12, vcpu);
            s[16] = 0xee;
            let (r, o) = self.call(caller, EVTCHNOP_INIT_CONTROL, &s);
            if r == 0 {
                assert_eq!(o[16], 17, "link_bits");
            }
            r
        }

        fn expand(&mut self, caller: DomId, frame: u64) -> i64 {
            self.call(caller, EVTCHNOP_EXPAND_ARRAY, &gfn(frame).to_le_bytes())
                .0
        }

        fn set_priority(&mut self, caller: DomId, port: u32, prio: u32) -> i64 {
            let mut s = [0u8; 8];
            put_u32(&mut s, 0, port);
            put_u32(&mut s, 4, prio);
            self.call(caller, EVTCHNOP_SET_PRIORITY, &s).0
        }

        /// Both vCPUs on FIFO with one event-array page, as Linux sets it
        /// up (vCPU 1 with a registered vcpu_info so it can be notified).
        fn fifo(&mut self, dom: DomId) {
            self.vcpu1_info(dom);
            assert_eq!(self.init_control(dom, CB[0].0, CB[0].1 as u32, 0), 0);
            assert_eq!(self.init_control(dom, CB[1].0, CB[1].1 as u32, 1), 0);
            assert_eq!(self.expand(dom, ARRAY), 0);
            assert_eq!(self.d(dom).evtchn.abi(), Abi::Fifo);
        }

        fn vcpu1_info(&mut self, dom: DomId) {
            self.xen.domain_mut(dom).unwrap().vcpus[1].info = Some((gfn(VINFO1), 0));
        }

        fn d(&self, dom: DomId) -> &Domain {
            self.xen.domain(dom).unwrap()
        }

        fn page(&self, dom: DomId, frame: u64) -> &Page {
            super::super::Env::ram_page(&self.env, dom, gfn(frame)).unwrap()
        }

        fn upcalls(&self) -> Vec<(DomId, u32)> {
            self.env.upcalls.borrow().clone()
        }

        fn clear_upcalls(&self) {
            self.env.upcalls.borrow_mut().clear();
        }

        fn l2(&self, dom: DomId, base: usize, port: u32) -> bool {
            self.d(dom)
                .shared_info
                .load64(base + (port / 64) as usize * 8)
                & (1 << (port % 64))
                != 0
        }

        fn set_l2(&self, dom: DomId, base: usize, port: u32, on: bool) {
            let (w, b) = (base + (port / 64) as usize * 8, 1u64 << (port % 64));
            let si = &self.d(dom).shared_info;
            if on {
                si.fetch_or64(w, b);
            } else {
                si.fetch_and64(w, !b);
            }
        }

        fn sel(&self, dom: DomId, vcpu: u32) -> u64 {
            self.d(dom)
                .with_vcpu_info(&self.env, vcpu, |p, o| p.load64(o + VCPU_INFO_PENDING_SEL))
                .unwrap()
        }

        /// What the guest does after an upcall: clears its
        /// evtchn_upcall_pending and the selector.
        fn ack(&self, dom: DomId, vcpu: u32) {
            self.d(dom).with_vcpu_info(&self.env, vcpu, |p, o| {
                p.store8(o + VCPU_INFO_UPCALL_PENDING, 0);
                p.store64(o + VCPU_INFO_PENDING_SEL, 0);
            });
        }

        fn word(&self, dom: DomId, port: u32) -> u32 {
            self.page(dom, ARRAY).load32(port as usize * 4)
        }

        fn set_word(&self, dom: DomId, port: u32, v: u32) {
            let p = self.page(dom, ARRAY);
            let o = port as usize * 4;
            assert!(p.cas32(o, p.load32(o), v).is_ok());
        }

        fn head(&self, dom: DomId, vcpu: usize, prio: u32) -> u32 {
            let (f, o) = CB[vcpu];
            self.page(dom, f).load32(o + CB_HEAD + 4 * prio as usize)
        }

        fn ready(&self, dom: DomId, vcpu: usize) -> u32 {
            let (f, o) = CB[vcpu];
            self.page(dom, f).load32(o)
        }

        /// The guest's side of a FIFO queue, as Linux consumes it: from
        /// the head, clearing LINKED (and PENDING: handled) word by word;
        /// the ready bit is cleared at the end. Returns the ports handled.
        fn consume(&self, dom: DomId, vcpu: usize, prio: u32) -> Vec<u32> {
            let (f, o) = CB[vcpu];
            let cb = self.page(dom, f);
            let mut port = cb.load32(o + CB_HEAD + 4 * prio as usize);
            let mut out = Vec::new();
            while port != 0 {
                let w = self.word(dom, port);
                self.set_word(dom, port, w & !(LINKED | EVTCHN_FIFO_LINK_MASK | PENDING));
                if w & PENDING != 0 && w & MASKED == 0 {
                    out.push(port);
                }
                port = w & EVTCHN_FIFO_LINK_MASK;
                assert!(out.len() < 4096, "queue loops");
            }
            cb.fetch_clear32(o, 1 << prio);
            let h = o + CB_HEAD + 4 * prio as usize;
            assert!(cb.cas32(h, cb.load32(h), 0).is_ok());
            out
        }

        fn logged(&self, what: &str) -> bool {
            self.env.logs.borrow().iter().any(|l| l.contains(what))
        }
    }

    const EPERM_: i64 = -(EPERM as i64);
    const ENOENT_: i64 = -(ENOENT as i64);
    const ESRCH_: i64 = -(ESRCH as i64);
    const EFAULT_: i64 = -(EFAULT as i64);
    const EBUSY_: i64 = -(EBUSY as i64);
    const EEXIST_: i64 = -(EEXIST as i64);
    const EINVAL_: i64 = -(EINVAL as i64);
    const ENOSPC_: i64 = -(ENOSPC as i64);
    const ENOSYS_: i64 = -(ENOSYS as i64);
    const EACCES_: i64 = -(EACCES as i64);
    const EOPNOTSUPP_: i64 = -(EOPNOTSUPP as i64);

    #[test]
    fn alloc_unbound_paths() {
        let mut t = T::new();
        let p = t.alloc(D1, DOMID_SELF, D2).unwrap();
        assert_eq!(p, 1);
        assert_eq!(
            t.d(D1).evtchn.state(p),
            Some(State::Unbound { remote_dom: D2 })
        );
        assert_eq!(
            t.status(D1, DOMID_SELF, p),
            Ok([EVTCHNSTAT_UNBOUND, 0, u32::from(D2), 2, 0])
        );
        // DOMID_SELF as remote is the caller.
        let q = t.alloc(D1, D1, DOMID_SELF).unwrap();
        assert_eq!(q, 2);
        assert_eq!(
            t.d(D1).evtchn.state(q),
            Some(State::Unbound { remote_dom: D1 })
        );
        assert_eq!(t.alloc(D1, 9, D2), Err(ESRCH_));
        assert_eq!(t.alloc(D1, DOMID_SELF, D4), Err(EPERM_));
        assert_eq!(t.alloc(D1, D2, D1), Err(EPERM_));
        assert!(t.logged("alloc_unbound"));
        // An unreadable argument.
        t.env.current.set(D1);
        let r = hypercall(
            &mut t.xen,
            &t.env,
            D1,
            0,
            HC_EVENT_CHANNEL_OP,
            [EVTCHNOP_ALLOC_UNBOUND, 0x10, 0, 0, 0],
        );
        assert_eq!(r.ret, EFAULT_);
        // Out of ports.
        t.xen.domain_mut(D2).unwrap().evtchn = EventChannels::new(4);
        assert_eq!(t.alloc(D2, DOMID_SELF, D1), Ok(1));
        assert_eq!(t.alloc(D2, DOMID_SELF, D1), Ok(2));
        assert_eq!(t.alloc(D2, DOMID_SELF, D1), Ok(3));
        assert_eq!(t.alloc(D2, DOMID_SELF, D1), Err(ENOSPC_));
        assert_eq!(t.close(D2, 2), 0);
        assert_eq!(t.alloc(D2, DOMID_SELF, D1), Ok(2));
    }

    #[test]
    fn the_table_grows_in_buckets_to_the_limit() {
        let mut t = T::new();
        assert_eq!(t.d(D1).evtchn.valid_ports(), 64);
        for want in 1..64 {
            assert_eq!(t.ipi(D1, 0), Ok(want));
        }
        assert_eq!(t.d(D1).evtchn.valid_ports(), 64);
        assert_eq!(t.ipi(D1, 0), Ok(64));
        assert_eq!(t.d(D1).evtchn.valid_ports(), 128);
        // Port 100 is valid (closed), port 128 is not.
        assert_eq!(
            t.status(D1, DOMID_SELF, 100),
            Ok([EVTCHNSTAT_CLOSED, 0, 0, 0, 0])
        );
        assert_eq!(t.status(D1, DOMID_SELF, 128), Err(EINVAL_));
        for _ in 65..1024 {
            t.ipi(D1, 1).unwrap();
        }
        assert_eq!(t.ipi(D1, 0), Err(ENOSPC_));
        assert_eq!(t.d(D1).evtchn.valid_ports(), 1024);
        check_invariants(&t.xen).unwrap();
    }

    #[test]
    fn two_level_caps_ports_at_4096() {
        let mut t = T::new();
        t.xen.domain_mut(D1).unwrap().evtchn = EventChannels::new(EVTCHN_FIFO_NR_CHANNELS);
        assert_eq!(t.d(D1).evtchn.limit(), 4096);
        for _ in 1..4096 {
            t.ipi(D1, 0).unwrap();
        }
        assert_eq!(t.ipi(D1, 0), Err(ENOSPC_));
        // FIFO lifts it to 2^17.
        t.fifo(D1);
        assert_eq!(t.d(D1).evtchn.limit(), EVTCHN_FIFO_NR_CHANNELS);
        assert_eq!(t.ipi(D1, 0), Ok(4096));
    }

    #[test]
    fn bind_interdomain_paths() {
        let mut t = T::new();
        let p1 = t.alloc(D1, DOMID_SELF, D2).unwrap();
        assert_eq!(t.bind(D2, 9, p1), Err(ESRCH_));
        assert_eq!(t.bind(D4, D1, p1), Err(EPERM_));
        assert_eq!(t.bind(D2, D1, 5000), Err(EINVAL_));
        assert_eq!(t.bind(D2, D1, 7), Err(EINVAL_));
        assert_eq!(t.bind(D2, D1, 0), Err(EINVAL_));
        let own = t.alloc(D1, DOMID_SELF, DOMID_SELF).unwrap();
        assert_eq!(t.bind(D2, D1, own), Err(EINVAL_));
        // The refused binds left no port behind.
        assert_eq!(t.d(D2).evtchn.state(1), Some(State::Free));
        let p2 = t.bind(D2, D1, p1).unwrap();
        assert_eq!(p2, 1);
        assert_eq!(t.bind(D2, D1, p1), Err(EINVAL_), "bound twice");
        assert_eq!(
            t.status(D1, DOMID_SELF, p1),
            Ok([EVTCHNSTAT_INTERDOMAIN, 0, 2, 2, p2])
        );
        assert_eq!(
            t.status(D2, DOMID_SELF, p2),
            Ok([EVTCHNSTAT_INTERDOMAIN, 0, 1, 1, p1])
        );
        // A loopback channel within one domain.
        let l2 = t.bind(D1, DOMID_SELF, own).unwrap();
        assert_eq!(
            t.d(D1).evtchn.state(own),
            Some(State::Interdomain {
                remote_dom: D1,
                remote_port: l2
            })
        );
        t.ack(D1, 0);
        t.set_l2(D1, SHINFO_EVTCHN_PENDING, l2, false);
        assert_eq!(t.send(D1, l2), 0);
        assert!(t.l2(D1, SHINFO_EVTCHN_PENDING, own));
        assert_eq!(t.close(D1, own), 0);
        assert_eq!(
            t.d(D1).evtchn.state(l2),
            Some(State::Unbound { remote_dom: D1 })
        );
        // Out of local ports.
        let p = t.alloc(D1, DOMID_SELF, D3).unwrap();
        t.xen.domain_mut(D3).unwrap().evtchn = EventChannels::new(1);
        assert_eq!(t.bind(D3, D1, p), Err(ENOSPC_));
        check_invariants(&t.xen).unwrap();
    }

    #[test]
    fn two_level_ping_both_ways() {
        let mut t = T::new();
        let p1 = t.alloc(D1, DOMID_SELF, D2).unwrap();
        let p2 = t.bind(D2, D1, p1).unwrap();
        // Binding makes the new local end pending once.
        assert!(t.l2(D2, SHINFO_EVTCHN_PENDING, p2));
        assert_eq!(t.sel(D2, 0), 1 << (p2 / 64));
        assert_eq!(t.upcalls(), vec![(D2, 0)]);
        assert!(t.d(D2).upcall_pending(&t.env, 0));
        assert!(!t.l2(D1, SHINFO_EVTCHN_PENDING, p1));
        // The guest handles it.
        t.ack(D2, 0);
        t.set_l2(D2, SHINFO_EVTCHN_PENDING, p2, false);
        t.clear_upcalls();
        // D1 → D2.
        assert_eq!(t.send(D1, p1), 0);
        assert!(t.l2(D2, SHINFO_EVTCHN_PENDING, p2));
        assert_eq!(t.upcalls(), vec![(D2, 0)]);
        // Again before the guest looked: nothing new.
        assert_eq!(t.send(D1, p1), 0);
        assert_eq!(t.upcalls(), vec![(D2, 0)]);
        // D2 → D1.
        assert_eq!(t.send(D2, p2), 0);
        assert!(t.l2(D1, SHINFO_EVTCHN_PENDING, p1));
        assert_eq!(t.sel(D1, 0), 1 << (p1 / 64));
        assert_eq!(t.upcalls(), vec![(D2, 0), (D1, 0)]);
        // Another port pending while the upcall is still pending: the
        // selector changes, no second interrupt.
        t.clear_upcalls();
        let q1 = t.alloc(D1, DOMID_SELF, D2).unwrap();
        let _q2 = t.bind(D2, D1, q1).unwrap();
        let far = t.ipi(D1, 0).unwrap();
        let _ = far;
        assert!(t.upcalls().is_empty() || t.upcalls() == vec![(D2, 0)]);
        t.clear_upcalls();
        // Masked: pending, but no selector bit and no upcall until unmask.
        t.ack(D1, 0);
        t.set_l2(D1, SHINFO_EVTCHN_PENDING, p1, false);
        t.set_l2(D1, SHINFO_EVTCHN_MASK, p1, true);
        assert_eq!(t.send(D2, p2), 0);
        assert!(t.l2(D1, SHINFO_EVTCHN_PENDING, p1));
        assert_eq!(t.sel(D1, 0), 0);
        assert!(t.upcalls().is_empty());
        assert_eq!(is_pending(&mut t.xen, &t.env, D1, p1), Ok(true));
        assert_eq!(t.unmask(D1, p1), 0);
        assert!(!t.l2(D1, SHINFO_EVTCHN_MASK, p1));
        assert_eq!(t.sel(D1, 0), 1 << (p1 / 64));
        assert_eq!(t.upcalls(), vec![(D1, 0)]);
        // Unmasking a port that is not pending raises nothing.
        t.ack(D1, 0);
        t.set_l2(D1, SHINFO_EVTCHN_PENDING, p1, false);
        t.set_l2(D1, SHINFO_EVTCHN_MASK, p1, true);
        t.clear_upcalls();
        assert_eq!(t.unmask(D1, p1), 0);
        assert!(t.upcalls().is_empty());
        assert_eq!(is_pending(&mut t.xen, &t.env, D1, p1), Ok(false));
        assert_eq!(is_pending(&mut t.xen, &t.env, D1, 40), Err(EINVAL));
        assert_eq!(is_pending(&mut t.xen, &t.env, D1, 0), Err(EINVAL));
        assert_eq!(is_pending(&mut t.xen, &t.env, D1, 99_999), Err(EINVAL));
        // Closing clears the pending bit.
        assert_eq!(t.send(D2, p2), 0);
        assert!(t.l2(D1, SHINFO_EVTCHN_PENDING, p1));
        assert_eq!(t.close(D1, p1), 0);
        assert!(!t.l2(D1, SHINFO_EVTCHN_PENDING, p1));
    }

    #[test]
    fn a_port_moved_to_vcpu1_notifies_vcpu1() {
        let mut t = T::new();
        t.vcpu1_info(D2);
        let (p1, p2) = t.connect(D1, D2);
        t.ack(D2, 0);
        t.set_l2(D2, SHINFO_EVTCHN_PENDING, p2, false);
        t.clear_upcalls();
        assert_eq!(t.bind_vcpu(D2, p2, 2), ENOENT_);
        assert_eq!(t.bind_vcpu(D2, 999, 1), EINVAL_);
        assert_eq!(t.bind_vcpu(D2, 30, 1), EINVAL_, "free port");
        assert_eq!(t.bind_vcpu(D2, p2, 1), 0);
        assert_eq!(t.status(D2, DOMID_SELF, p2).unwrap()[1], 1);
        assert_eq!(t.send(D1, p1), 0);
        assert_eq!(t.upcalls(), vec![(D2, 1)]);
        assert_eq!(t.sel(D2, 1), 1);
        assert_eq!(t.sel(D2, 0), 0);
        // An unbound port may be moved too.
        let u = t.alloc(D2, DOMID_SELF, D1).unwrap();
        assert_eq!(t.bind_vcpu(D2, u, 1), 0);
    }

    #[test]
    fn virq_rules() {
        let mut t = T::new();
        t.vcpu1_info(D1);
        let t0 = t.virq(D1, VIRQ_TIMER, 0).unwrap();
        let t1 = t.virq(D1, VIRQ_TIMER, 1).unwrap();
        assert_ne!(t0, t1);
        assert_eq!(t.virq(D1, VIRQ_TIMER, 1), Err(EEXIST_));
        assert_eq!(t.virq(D1, VIRQ_TIMER, 2), Err(ENOENT_));
        assert_eq!(t.virq(D1, NR_VIRQS, 0), Err(EINVAL_));
        assert_eq!(
            t.virq(D1, VIRQ_CONSOLE, 0),
            Err(EBUSY_),
            "global, not the hardware domain"
        );
        assert_eq!(t.virq(D1, VIRQ_CONSOLE, 1), Err(EINVAL_));
        assert_eq!(t.virq(D1, VIRQ_ARGO, 1), Err(EINVAL_));
        assert!(t.virq(D1, VIRQ_ARGO, 0).is_ok(), "domain-wide: anybody");
        assert_eq!(
            t.status(D1, DOMID_SELF, t1),
            Ok([EVTCHNSTAT_VIRQ, 1, VIRQ_TIMER, VIRQ_TIMER, 0])
        );
        assert_eq!(t.send(D1, t0), EINVAL_, "no sending on a VIRQ");
        assert_eq!(t.bind_vcpu(D1, t1, 0), EINVAL_, "per-vCPU VIRQs stay");
        // The hypervisor raises them.
        send_virq(&mut t.xen, &t.env, D1, 1, VIRQ_TIMER);
        assert!(t.l2(D1, SHINFO_EVTCHN_PENDING, t1));
        assert!(!t.l2(D1, SHINFO_EVTCHN_PENDING, t0));
        assert_eq!(t.upcalls(), vec![(D1, 1)]);
        send_virq(&mut t.xen, &t.env, D1, 0, VIRQ_DEBUG);
        send_virq(&mut t.xen, &t.env, D1, 0, 99);
        assert_eq!(t.upcalls(), vec![(D1, 1)], "unbound VIRQs go nowhere");
        // Closing unbinds; it may be bound again.
        assert_eq!(t.close(D1, t1), 0);
        assert_eq!(t.d(D1).evtchn.virq_port(1, VIRQ_TIMER), None);
        assert_eq!(t.virq(D1, VIRQ_TIMER, 1), Ok(t1));
        // A hardware domain binds the global ones, once, and may move
        // them to another vCPU.
        t.xen.domain_mut(D2).unwrap().cfg.caps |= CAP_HARDWARE;
        t.vcpu1_info(D2);
        let c = t.virq(D2, VIRQ_CONSOLE, 0).unwrap();
        assert_eq!(t.virq(D2, VIRQ_CONSOLE, 0), Err(EEXIST_));
        assert_eq!(t.bind_vcpu(D2, c, 1), 0);
        t.clear_upcalls();
        send_virq(&mut t.xen, &t.env, D2, 0, VIRQ_CONSOLE);
        assert!(t.l2(D2, SHINFO_EVTCHN_PENDING, c));
        assert_eq!(t.upcalls(), vec![(D2, 1)]);
        check_invariants(&t.xen).unwrap();
    }

    #[test]
    fn ipi_paths() {
        let mut t = T::new();
        t.vcpu1_info(D1);
        assert_eq!(t.ipi(D1, 2), Err(ENOENT_));
        let i = t.ipi(D1, 1).unwrap();
        assert_eq!(
            t.status(D1, DOMID_SELF, i),
            Ok([EVTCHNSTAT_IPI, 1, 0, 0, 0])
        );
        assert_eq!(t.send(D1, i), 0);
        assert!(t.l2(D1, SHINFO_EVTCHN_PENDING, i));
        assert_eq!(t.upcalls(), vec![(D1, 1)]);
        assert_eq!(t.bind_vcpu(D1, i, 0), EINVAL_);
        assert_eq!(t.close(D1, i), 0);
        assert_eq!(t.send(D1, i), EINVAL_);
    }

    #[test]
    fn close_and_send_errors() {
        let mut t = T::new();
        assert_eq!(t.close(D1, 0), EINVAL_);
        assert_eq!(t.close(D1, 5), EINVAL_);
        assert_eq!(t.close(D1, 5000), EINVAL_);
        assert_eq!(t.close(D1, u32::MAX), EINVAL_);
        assert_eq!(t.send(D1, 0), EINVAL_);
        assert_eq!(t.send(D1, 5), EINVAL_);
        assert_eq!(t.send(D1, 5000), EINVAL_);
        let u = t.alloc(D1, DOMID_SELF, D2).unwrap();
        assert_eq!(t.send(D1, u), 0, "unbound: dropped silently");
        assert!(t.upcalls().is_empty());
        assert_eq!(t.close(D1, u), 0);
        assert_eq!(t.close(D1, u), EINVAL_);
        assert_eq!(t.unmask(D1, 5000), EINVAL_);
        assert_eq!(t.unmask(D1, 5), 0, "free but valid");
        assert_eq!(t.call(D1, 99, &[0; 8]).0, ENOSYS_);
        assert_eq!(t.call(D1, EVTCHNOP_BIND_PIRQ, &[0; 12]).0, EOPNOTSUPP_);
        assert!(t.logged("bind_pirq"));
    }

    #[test]
    fn closing_one_end_leaves_the_peer_unbound() {
        let mut t = T::new();
        let (p1, p2) = t.connect(D1, D2);
        assert_eq!(t.close(D1, p1), 0);
        assert_eq!(
            t.d(D2).evtchn.state(p2),
            Some(State::Unbound { remote_dom: D1 })
        );
        assert_eq!(
            t.status(D2, DOMID_SELF, p2),
            Ok([EVTCHNSTAT_UNBOUND, 0, 1, 1, 0])
        );
        assert_eq!(t.send(D2, p2), 0);
        // D1 may connect again to the same port.
        let again = t.bind(D1, D2, p2).unwrap();
        assert_eq!(
            t.d(D2).evtchn.state(p2),
            Some(State::Interdomain {
                remote_dom: D1,
                remote_port: again
            })
        );
        check_invariants(&t.xen).unwrap();
    }

    #[test]
    fn status_and_control() {
        let mut t = T::new();
        let (p1, _) = t.connect(D1, D2);
        assert_eq!(t.status(D2, D1, p1), Err(EPERM_));
        assert_eq!(t.status(D3, D1, p1).unwrap()[0], EVTCHNSTAT_INTERDOMAIN);
        assert_eq!(t.status(D3, 9, 1), Err(ESRCH_));
        assert_eq!(
            t.status(D1, DOMID_SELF, 0),
            Ok([EVTCHNSTAT_CLOSED, 0, 0, 0, 0])
        );
        assert_eq!(t.status(D1, DOMID_SELF, 5000), Err(EINVAL_));
        // A controlling domain allocates for others, towards itself or
        // towards a domain the other may talk to; never across the policy.
        let a = t.alloc(D3, D1, DOMID_SELF).unwrap();
        assert_eq!(
            t.d(D1).evtchn.state(a),
            Some(State::Unbound { remote_dom: D3 })
        );
        let b = t.bind(D3, D1, a).unwrap();
        assert_eq!(
            t.d(D3).evtchn.state(b),
            Some(State::Interdomain {
                remote_dom: D1,
                remote_port: a
            })
        );
        assert!(t.alloc(D3, D1, D2).is_ok());
        assert_eq!(t.alloc(D3, D1, D4), Err(EPERM_));
        // A domain may bind to a port the control domain offered it.
        let c = t.alloc(D3, DOMID_SELF, D4).unwrap();
        assert!(t.bind(D4, D3, c).is_ok());
        // reset of another domain.
        assert_eq!(t.reset(D2, D1), EPERM_);
        assert_eq!(t.reset(D3, 9), ESRCH_);
        assert_eq!(t.reset(D3, D1), 0);
        assert_eq!(t.d(D1).evtchn.state(p1), Some(State::Free));
        assert_eq!(
            t.d(D3).evtchn.state(b),
            Some(State::Unbound { remote_dom: D1 })
        );
        check_invariants(&t.xen).unwrap();
    }

    #[test]
    fn reset_closes_everything_and_returns_to_two_level() {
        let mut t = T::new();
        let (p1, p2) = t.connect(D1, D2);
        let v = t.virq(D1, VIRQ_TIMER, 0).unwrap();
        let i = t.ipi(D1, 1).unwrap();
        t.fifo(D1);
        assert_eq!(t.reset(D1, DOMID_SELF), 0);
        for p in [p1, v, i] {
            assert_eq!(t.d(D1).evtchn.state(p), Some(State::Free));
        }
        assert_eq!(t.d(D1).evtchn.abi(), Abi::TwoLevel);
        assert_eq!(t.d(D1).evtchn.virq_port(0, VIRQ_TIMER), None);
        assert_eq!(
            t.d(D2).evtchn.state(p2),
            Some(State::Unbound { remote_dom: D1 })
        );
        // reset_cont does the same.
        let _ = t.ipi(D1, 0).unwrap();
        assert_eq!(
            t.call(D1, EVTCHNOP_RESET_CONT, &DOMID_SELF.to_le_bytes()).0,
            0
        );
        assert_eq!(t.d(D1).evtchn.state(1), Some(State::Free));
        // FIFO may be set up again.
        t.fifo(D1);
        check_invariants(&t.xen).unwrap();
    }

    #[test]
    fn fifo_setup_errors() {
        let mut t = T::new();
        assert_eq!(t.expand(D1, ARRAY), EOPNOTSUPP_);
        assert_eq!(t.set_priority(D1, 1, 3), ENOSYS_);
        assert_eq!(t.init_control(D1, 1, 0, 2), ENOENT_);
        assert_eq!(t.init_control(D1, 1, 4, 0), EINVAL_, "unaligned");
        assert_eq!(t.init_control(D1, 1, 4032, 0), EINVAL_, "crosses the page");
        assert_eq!(t.init_control(D1, 99, 0, 0), EINVAL_, "not RAM");
        t.xen.domain_mut(D1).unwrap().p2m.insert(gfn(1), Slot::Hole);
        assert_eq!(t.init_control(D1, 1, 0, 0), EINVAL_, "ballooned out");
        assert_eq!(t.d(D1).evtchn.abi(), Abi::TwoLevel, "failures keep 2-level");
        t.xen.domain_mut(D1).unwrap().p2m.remove(&gfn(1));
        assert_eq!(t.init_control(D1, 1, 4024, 0), 0, "last fitting offset");
        assert_eq!(t.d(D1).evtchn.abi(), Abi::Fifo);
        assert_eq!(t.init_control(D1, 2, 0, 0), EINVAL_, "twice for vCPU 0");
        assert_eq!(t.init_control(D1, 2, 0, 1), 0);
        assert_eq!(t.expand(D1, 99), EINVAL_);
        assert_eq!(t.expand(D1, ARRAY), 0);
        assert_eq!(t.expand(D1, 4), ENOSPC_, "1024 ports fit one page");
        let p = t.ipi(D1, 0).unwrap();
        assert_eq!(t.set_priority(D1, 5000, 3), EINVAL_);
        assert_eq!(t.set_priority(D1, 30, 3), EACCES_);
        assert_eq!(t.set_priority(D1, p, 16), EINVAL_);
        assert_eq!(t.set_priority(D1, p, 15), 0);
        assert_eq!(t.d(D1).evtchn.priority(p), Some(15));
        // A larger domain may have more pages, up to its limit.
        t.xen.domain_mut(D2).unwrap().evtchn = EventChannels::new(2048);
        assert_eq!(t.init_control(D2, 1, 0, 0), 0);
        assert_eq!(t.expand(D2, 3), 0);
        assert_eq!(t.expand(D2, 4), 0);
        assert_eq!(t.expand(D2, 5), ENOSPC_);
        check_invariants(&t.xen).unwrap();
    }

    #[test]
    fn fifo_ping_queues_in_order() {
        let mut t = T::new();
        t.fifo(D1);
        t.fifo(D2);
        t.clear_upcalls();
        // Three channels; each bind queues the new local end on D2.
        let mut ch = Vec::new();
        for _ in 0..3 {
            ch.push(t.connect(D1, D2));
        }
        let d2: Vec<u32> = ch.iter().map(|c| c.1).collect();
        assert_eq!(t.head(D2, 0, 7), d2[0]);
        assert_eq!(t.ready(D2, 0), 1 << 7);
        assert_eq!(t.word(D2, d2[0]), PENDING | LINKED | d2[1]);
        assert_eq!(t.word(D2, d2[1]), PENDING | LINKED | d2[2]);
        assert_eq!(t.word(D2, d2[2]), PENDING | LINKED);
        assert_eq!(
            t.upcalls(),
            vec![(D2, 0)],
            "one upcall: the queue became ready once"
        );
        assert_eq!(t.consume(D2, 0, 7), d2);
        assert_eq!(t.ready(D2, 0), 0);
        t.ack(D2, 0);
        t.clear_upcalls();
        // D1 sends in another order.
        for i in [2, 0, 1] {
            assert_eq!(t.send(D1, ch[i].0), 0);
        }
        assert_eq!(t.upcalls(), vec![(D2, 0)]);
        assert_eq!(t.consume(D2, 0, 7), vec![d2[2], d2[0], d2[1]]);
        // And back: D2 → D1.
        t.clear_upcalls();
        assert_eq!(t.send(D2, d2[1]), 0);
        assert_eq!(t.head(D1, 0, 7), ch[1].0);
        assert_eq!(t.upcalls(), vec![(D1, 0)]);
        assert_eq!(is_pending(&mut t.xen, &t.env, D1, ch[1].0), Ok(true));
        assert_eq!(t.consume(D1, 0, 7), vec![ch[1].0]);
        assert_eq!(is_pending(&mut t.xen, &t.env, D1, ch[1].0), Ok(false));
        // Priorities: a separate queue each, with its ready bit.
        t.ack(D2, 0);
        t.clear_upcalls();
        assert_eq!(t.set_priority(D2, d2[1], 2), 0);
        assert_eq!(t.send(D1, ch[0].0), 0);
        assert_eq!(t.send(D1, ch[1].0), 0);
        assert_eq!(t.ready(D2, 0), 1 << 7 | 1 << 2);
        assert_eq!(t.head(D2, 0, 2), d2[1]);
        assert_eq!(t.upcalls(), vec![(D2, 0)], "upcall_pending was still set");
        assert_eq!(t.consume(D2, 0, 2), vec![d2[1]]);
        assert_eq!(t.consume(D2, 0, 7), vec![d2[0]]);
        // A port moved to vCPU 1 queues there.
        t.ack(D2, 0);
        t.clear_upcalls();
        assert_eq!(t.bind_vcpu(D2, d2[2], 1), 0);
        assert_eq!(t.send(D1, ch[2].0), 0);
        assert_eq!(t.ready(D2, 1), 1 << 7);
        assert_eq!(t.ready(D2, 0), 0);
        assert_eq!(t.upcalls(), vec![(D2, 1)]);
        assert_eq!(t.consume(D2, 1, 7), vec![d2[2]]);
        check_invariants(&t.xen).unwrap();
    }

    #[test]
    fn fifo_moves_a_tail_to_its_new_queue() {
        let mut t = T::new();
        t.fifo(D1);
        t.fifo(D2);
        let (a1, a2) = t.connect(D1, D2);
        let (_, b2) = t.connect(D1, D2);
        // a2 and b2 are queued (7); the guest consumes them.
        assert_eq!(t.consume(D2, 0, 7), vec![a2, b2]);
        // b2 was the tail of queue 7. Moving a2 to priority 3 and raising
        // it must not link it after the stale tail.
        assert_eq!(t.set_priority(D2, a2, 3), 0);
        assert_eq!(t.send(D1, a1), 0);
        assert_eq!(t.head(D2, 0, 3), a2);
        assert_eq!(t.consume(D2, 0, 3), vec![a2]);
        assert_eq!(t.set_priority(D2, a2, 7), 0);
        assert_eq!(t.send(D1, a1), 0);
        assert_eq!(t.head(D2, 0, 7), a2);
        assert_eq!(t.word(D2, b2) & EVTCHN_FIFO_LINK_MASK, 0);
    }

    #[test]
    fn fifo_masked_events_wait_for_unmask() {
        let mut t = T::new();
        t.fifo(D1);
        t.fifo(D2);
        let (p1, p2) = t.connect(D1, D2);
        assert_eq!(t.consume(D2, 0, 7), vec![p2]);
        t.ack(D2, 0);
        t.clear_upcalls();
        t.set_word(D2, p2, MASKED);
        assert_eq!(t.send(D1, p1), 0);
        assert_eq!(t.word(D2, p2), MASKED | PENDING);
        assert_eq!(t.ready(D2, 0), 0);
        assert!(t.upcalls().is_empty());
        assert_eq!(is_pending(&mut t.xen, &t.env, D2, p2), Ok(true));
        assert_eq!(t.unmask(D2, p2), 0);
        assert_eq!(t.word(D2, p2), PENDING | LINKED);
        assert_eq!(t.head(D2, 0, 7), p2);
        assert_eq!(t.ready(D2, 0), 1 << 7);
        assert_eq!(t.upcalls(), vec![(D2, 0)]);
        // Unmasking what is not pending links nothing.
        assert_eq!(t.consume(D2, 0, 7), vec![p2]);
        t.set_word(D2, p2, MASKED);
        assert_eq!(t.unmask(D2, p2), 0);
        assert_eq!(t.word(D2, p2), 0);
        // Closing clears PENDING in the word.
        t.set_word(D2, p2, MASKED);
        assert_eq!(t.send(D1, p1), 0);
        assert_eq!(t.close(D2, p2), 0);
        assert_eq!(t.word(D2, p2), MASKED);
    }

    #[test]
    fn fifo_links_over_a_busy_tail() {
        let mut t = T::new();
        t.fifo(D1);
        t.fifo(D2);
        let (_, a2) = t.connect(D1, D2);
        // a2 is the tail, still LINKED. A guest (or a stale hypervisor
        // lock) leaves BUSY on it: linking still works, BUSY is cleared.
        t.set_word(D2, a2, t.word(D2, a2) | BUSY);
        let (_, b2) = t.connect(D1, D2);
        assert_eq!(t.word(D2, a2), PENDING | LINKED | b2);
        assert_eq!(t.consume(D2, 0, 7), vec![a2, b2]);
    }

    #[test]
    fn fifo_gives_up_on_a_tail_the_guest_keeps_changing() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let mut t = T::new();
        t.fifo(D1);
        t.fifo(D2);
        let (a1, a2) = t.connect(D1, D2);
        let (b1, b2) = t.connect(D1, D2);
        assert_eq!(t.consume(D2, 0, 7), vec![a2, b2]);
        let stop = AtomicBool::new(false);
        let env = &t.env;
        let xen = &mut t.xen;
        let array = super::super::Env::ram_page(env, D2, gfn(ARRAY)).unwrap();
        let cb = super::super::Env::ram_page(env, D2, gfn(CB[0].0)).unwrap();
        let (oa, ob) = (a2 as usize * 4, b2 as usize * 4);
        let a = TestEnv::addr(ARG, 0);
        env.current.set(D1);
        let raise = |xen: &mut Xen, port: u32| {
            env.poke(a, &port.to_le_bytes());
            assert_eq!(op(xen, env, D1, 0, EVTCHNOP_SEND, a), Ok(0));
        };
        std::thread::scope(|s| {
            // The guest flips MASKED on b2's word as fast as it can.
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    array.fetch_or32(ob, MASKED);
                    array.fetch_clear32(ob, MASKED);
                }
            });
            for _ in 0..300 {
                // b2 becomes the tail (when caught unmasked), then a2 is
                // linked onto it: every attempt ends, whatever the guest.
                raise(xen, b1);
                raise(xen, a1);
                // The guest empties the queue.
                for o in [oa, ob] {
                    array.fetch_clear32(o, LINKED | PENDING | EVTCHN_FIFO_LINK_MASK | BUSY);
                }
                cb.fetch_clear32(CB[0].1, u32::MAX);
            }
            stop.store(true, Ordering::Relaxed);
        });
        check_invariants(&t.xen).unwrap();
    }

    #[test]
    fn switching_to_fifo_keeps_pending_events() {
        let mut t = T::new();
        let (p1, p2) = t.connect(D1, D2);
        let (_, q2) = t.connect(D1, D2);
        assert!(t.l2(D2, SHINFO_EVTCHN_PENDING, p2));
        assert!(t.l2(D2, SHINFO_EVTCHN_PENDING, q2));
        t.set_l2(D2, SHINFO_EVTCHN_PENDING, q2, false);
        t.vcpu1_info(D2);
        assert_eq!(t.init_control(D2, CB[0].0, 0, 0), 0);
        // No event array yet: a new event is kept for later.
        assert_eq!(t.send(D1, p1), 0);
        assert_eq!(is_pending(&mut t.xen, &t.env, D2, p2), Ok(false));
        // Linux starts every word of a new array page masked.
        for port in 0..1024 {
            t.set_word(D2, port, MASKED);
        }
        t.ack(D2, 0);
        t.clear_upcalls();
        assert_eq!(t.expand(D2, ARRAY), 0);
        assert_eq!(t.word(D2, p2), MASKED | PENDING);
        assert_eq!(t.word(D2, q2), MASKED);
        assert!(t.upcalls().is_empty());
        assert_eq!(t.unmask(D2, p2), 0);
        assert_eq!(t.head(D2, 0, 7), p2);
        assert_eq!(t.upcalls(), vec![(D2, 0)]);
        // Unmasked words are linked at once.
        let mut t = T::new();
        let (_, p2) = t.connect(D1, D2);
        assert_eq!(t.init_control(D2, CB[0].0, 0, 0), 0);
        assert_eq!(t.expand(D2, ARRAY), 0);
        assert_eq!(t.word(D2, p2), PENDING | LINKED);
        assert_eq!(t.head(D2, 0, 7), p2);
    }

    #[test]
    fn fifo_without_control_block_or_frame_drops_and_logs() {
        let mut t = T::new();
        t.fifo(D1);
        assert_eq!(t.init_control(D2, CB[0].0, 0, 0), 0);
        assert_eq!(t.expand(D2, ARRAY), 0);
        let (p1, p2) = t.connect(D1, D2);
        assert_eq!(t.consume(D2, 0, 7), vec![p2]);
        t.ack(D2, 0);
        // vCPU 1 never set a control block up.
        t.vcpu1_info(D2);
        assert_eq!(t.bind_vcpu(D2, p2, 1), 0);
        t.clear_upcalls();
        assert_eq!(t.send(D1, p1), 0);
        assert!(t.upcalls().is_empty());
        assert!(t.logged("no FIFO control block"));
        assert_eq!(t.bind_vcpu(D2, p2, 0), 0);
        // The guest balloons the event-array page out.
        t.xen
            .domain_mut(D2)
            .unwrap()
            .p2m
            .insert(gfn(ARRAY), Slot::Hole);
        assert_eq!(t.send(D1, p1), 0);
        assert!(t.upcalls().is_empty());
        assert!(t.logged("no longer RAM"));
        assert_eq!(t.word(D2, p2), 0, "nothing written to the old frame");
        assert_eq!(is_pending(&mut t.xen, &t.env, D2, p2), Ok(false));
        t.xen.domain_mut(D2).unwrap().p2m.remove(&gfn(ARRAY));
        assert_eq!(t.send(D1, p1), 0);
        assert_eq!(t.upcalls(), vec![(D2, 0)]);
        // Or the control block's frame.
        assert_eq!(t.consume(D2, 0, 7), vec![p2]);
        t.ack(D2, 0);
        t.clear_upcalls();
        t.xen
            .domain_mut(D2)
            .unwrap()
            .p2m
            .insert(gfn(CB[0].0), Slot::Hole);
        assert_eq!(t.send(D1, p1), 0);
        assert!(t.upcalls().is_empty());
        assert!(t.logged("control block frame"));
    }

    #[test]
    fn fifo_ports_still_linked_are_not_reused() {
        let mut t = T::new();
        t.fifo(D1);
        let a = t.ipi(D1, 0).unwrap();
        assert_eq!(t.send(D1, a), 0);
        assert_eq!(t.close(D1, a), 0);
        assert_eq!(
            t.word(D1, a),
            LINKED,
            "closed: PENDING cleared, still queued"
        );
        let b = t.ipi(D1, 0).unwrap();
        assert_ne!(a, b);
        // Once the guest has walked the queue the port is free again.
        assert_eq!(t.consume(D1, 0, 7), Vec::<u32>::new());
        t.set_word(D1, b, 0);
        let c = t.ipi(D1, 0).unwrap();
        assert_eq!(c, a);
    }

    #[test]
    fn teardown_leaves_peers_unbound() {
        let mut t = T::new();
        let (p1, p2) = t.connect(D1, D2);
        let (q2, q1) = t.connect(D2, D1);
        t.virq(D1, VIRQ_TIMER, 0).unwrap();
        t.fifo(D1);
        teardown(&mut t.xen, &t.env, D1);
        assert_eq!(
            t.d(D2).evtchn.state(p2),
            Some(State::Unbound { remote_dom: D1 })
        );
        assert_eq!(
            t.d(D2).evtchn.state(q2),
            Some(State::Unbound { remote_dom: D1 })
        );
        assert_eq!(t.d(D1).evtchn.state(p1), Some(State::Free));
        assert_eq!(t.d(D1).evtchn.state(q1), Some(State::Free));
        assert_eq!(t.d(D1).evtchn.abi(), Abi::TwoLevel);
        check_invariants(&t.xen).unwrap();
        // Through the core's removal too; a restarted domain binds again.
        let (_, r2) = t.connect(D1, D2);
        t.xen.reset_domain(&t.env, D1);
        assert_eq!(
            t.d(D2).evtchn.state(r2),
            Some(State::Unbound { remote_dom: D1 })
        );
        assert!(t.bind(D1, D2, r2).is_ok());
        check_invariants(&t.xen).unwrap();
    }

    #[test]
    fn static_channels() {
        let mut t = T::new();
        assert_eq!(bind_static(&mut t.xen, &t.env, D1, 5, D4, 700), Ok(()));
        assert!(t.xen.may_talk(D1, D4));
        assert_eq!(
            t.d(D1).evtchn.state(5),
            Some(State::Interdomain {
                remote_dom: D4,
                remote_port: 700
            })
        );
        assert_eq!(
            t.d(D4).evtchn.state(700),
            Some(State::Interdomain {
                remote_dom: D1,
                remote_port: 5
            })
        );
        assert!(t.upcalls().is_empty());
        assert!(!t.l2(D1, SHINFO_EVTCHN_PENDING, 5));
        assert_eq!(bind_static(&mut t.xen, &t.env, D1, 5, D2, 6), Err(EEXIST));
        assert_eq!(bind_static(&mut t.xen, &t.env, D2, 6, D4, 700), Err(EEXIST));
        assert_eq!(bind_static(&mut t.xen, &t.env, D1, 0, D2, 6), Err(EINVAL));
        assert_eq!(
            bind_static(&mut t.xen, &t.env, D1, 6, D2, 1024),
            Err(EINVAL)
        );
        assert_eq!(bind_static(&mut t.xen, &t.env, D1, 6, D1, 7), Err(EINVAL));
        assert_eq!(bind_static(&mut t.xen, &t.env, D1, 6, 9, 7), Err(ESRCH));
        assert_eq!(
            t.d(D2).evtchn.state(6),
            Some(State::Free),
            "nothing half-bound"
        );
        // Dynamic allocation goes around them; they carry events.
        assert_eq!(t.ipi(D1, 0), Ok(1));
        assert_eq!(t.send(D4, 700), 0);
        assert!(t.l2(D1, SHINFO_EVTCHN_PENDING, 5));
        assert_eq!(t.upcalls(), vec![(D1, 0)]);
        check_invariants(&t.xen).unwrap();
    }

    #[test]
    fn refusals_are_logged() {
        let mut t = T::new();
        let before = t.env.logs.borrow().len();
        assert_eq!(t.close(D1, 9), EINVAL_);
        assert_eq!(t.bind(D4, D1, 1), Err(EPERM_));
        let logs = t.env.logs.borrow();
        assert_eq!(logs.len(), before + 2);
        assert!(logs[before].contains("close") && logs[before].contains("errno 22"));
        assert!(logs[before + 1].contains("policy"));
    }

    /// xorshift64*: random sequences without extra crates.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    #[test]
    fn random_operation_sequences_keep_the_invariants() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..300 {
            let len = 8 + (rng.next() % 2048) as usize;
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            fuzz(&data);
        }
    }

    #[test]
    fn random_two_domain_pings_stay_consistent() {
        // Targeted: only channel traffic between D1 and D2, both ABIs.
        let mut rng = Rng(42);
        for round in 0..20 {
            let mut t = T::new();
            if round % 2 == 1 {
                t.fifo(D1);
                t.fifo(D2);
            }
            let mut open: Vec<(u32, u32)> = Vec::new();
            for _ in 0..400 {
                let r = rng.next();
                match r % 6 {
                    0 | 1 => open.push(t.connect(D1, D2)),
                    2 if !open.is_empty() => {
                        let (a, b) = open.swap_remove((r >> 8) as usize % open.len());
                        if r & 0x10000 != 0 {
                            assert_eq!(t.close(D1, a), 0);
                            assert_eq!(t.close(D2, b), 0);
                        } else {
                            assert_eq!(t.close(D2, b), 0);
                            assert_eq!(t.close(D1, a), 0);
                        }
                    }
                    3 | 4 if !open.is_empty() => {
                        let (a, b) = open[(r >> 8) as usize % open.len()];
                        assert_eq!(t.send(D1, a), 0);
                        assert_eq!(t.send(D2, b), 0);
                        assert_eq!(is_pending(&mut t.xen, &t.env, D2, b), Ok(true));
                        assert_eq!(is_pending(&mut t.xen, &t.env, D1, a), Ok(true));
                    }
                    _ => {
                        if round % 2 == 1 {
                            for v in 0..2 {
                                for p in 0..16 {
                                    t.consume(D1, v, p);
                                    t.consume(D2, v, p);
                                }
                            }
                        } else {
                            for d in [D1, D2] {
                                for w in 0..64 {
                                    t.d(d).shared_info.store64(SHINFO_EVTCHN_PENDING + w * 8, 0);
                                }
                                t.ack(d, 0);
                            }
                        }
                    }
                }
                check_invariants(&t.xen).unwrap();
            }
        }
    }
}
