//! Transcendent memory: pages guests park in memory the hypervisor holds
//! for them, addressed by (pool, object id, index).
//!
//! This is the store and its rules; `xen::tmem` speaks Xen's tmem ABI
//! (hypercall 38 and the control domain's XEN_SYSCTL_tmem_op) on top of
//! it. Nothing here names an architecture or touches guest memory: puts
//! and gets move whole pages in and out of byte arrays.
//!
//! The rules, each tested below and checked by [`Tmem::check_invariants`]
//! (which the fuzz target calls after every operation):
//! - A pool is ephemeral or persistent, private or shared (shared and
//!   persistent together is refused, as in Xen). A domain holds at most
//!   [`MAX_POOLS_PER_DOMAIN`] pools; at most [`MAX_SHARED_POOLS`] shared
//!   pools exist at once.
//! - A shared pool is joined by UUID, and only by a domain authorized for
//!   that UUID ([`Tmem::authorize`]: the control domain, or the domain
//!   builder acting for it). It outlives the departure of any member
//!   while one remains; pages the departing member put are then charged
//!   to a remaining member.
//! - Ephemeral pages may be dropped whenever room is needed. The victim is
//!   the least recently used page of the domain holding the most ephemeral
//!   pages per unit of weight, so a heavy domain cannot push a light one
//!   out. A domain's ephemeral cap makes it drop its own oldest pages
//!   first. A get from a private ephemeral pool is exclusive (the page
//!   leaves the pool); from a shared one it is not.
//! - Persistent pages are never dropped. A put that would take a domain's
//!   persistent pages past its quota or past the memory it has given back
//!   ([`Tmem::put_within`]), or that finds no room after every ephemeral
//!   page is gone, fails with ENOMEM and changes nothing.
//! - A frozen domain's puts fail (EFROZEN); its gets and flushes work.
//! - With compression on (per domain or for all), a page is stored LZ4
//!   compressed when that saves at least an eighth of it. The budget
//!   counts the bytes actually held.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use lz4_flex::block::{CompressTable, compress_into_with_table, decompress_into};

/// Bytes of a tmem page (4 KiB; the only page size Xen's ABI allowed on
/// a 4 KiB-page host).
pub const PAGE: usize = 4096;
/// Pools one domain may hold at once (Xen's MAX_POOLS_PER_DOMAIN).
pub const MAX_POOLS_PER_DOMAIN: usize = 16;
/// Shared pools that may exist at once (Xen's MAX_GLOBAL_SHARED_POOLS).
pub const MAX_SHARED_POOLS: usize = 16;
/// A compressed page is kept only at or under this size.
const COMPRESSED_MAX: usize = PAGE - PAGE / 8;
/// Room for LZ4's worst case of one page.
const LZ4_BOUND: usize = lz4_flex::block::get_maximum_output_size(PAGE);

/// Domain id.
pub type Dom = u16;
/// Object id: three 64-bit words, chosen by the guest.
pub type Oid = [u64; 3];
/// A shared pool's name.
pub type Uuid = [u64; 2];

/// Why an operation failed. [`Error::errno`] gives Xen's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// No such pool for this domain (Xen: ENODEV).
    NoPool,
    /// Refused: bad pool flags, no slot left, not authorized (EPERM).
    Perm,
    /// No room, or over the persistent quota (ENOMEM).
    NoMem,
    /// A put over an existing page found no room: the old page is gone
    /// too (ENOSPC, as Xen answers a failed duplicate put).
    NoSpace,
    /// The domain is frozen (Xen's EFROZEN, 1000).
    Frozen,
    /// The pool holds no page at all (Xen's EEMPTY, 1001).
    Empty,
}

/// Xen's tmem-specific errno value: the domain is frozen.
pub const EFROZEN: i32 = 1000;
/// Xen's tmem-specific errno value: the pool holds nothing.
pub const EEMPTY: i32 = 1001;

impl Error {
    /// Xen's (positive) errno value.
    pub fn errno(self) -> i32 {
        use crate::xen::abi::{ENODEV, ENOMEM, ENOSPC, EPERM};
        match self {
            Error::NoPool => ENODEV,
            Error::Perm => EPERM,
            Error::NoMem => ENOMEM,
            Error::NoSpace => ENOSPC,
            Error::Frozen => EFROZEN,
            Error::Empty => EEMPTY,
        }
    }
}

/// How a pool is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PoolKind {
    /// Never dropped, counted against the domain's quota.
    pub persistent: bool,
    /// Joinable by UUID.
    pub shared: bool,
}

/// Per-domain settings (the control domain's SET_CLIENT_INFO and the
/// domain builder set them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Share of ephemeral room relative to other domains (at least 1).
    pub weight: u32,
    /// Most ephemeral pages the domain may hold; 0: no cap.
    pub eph_cap: u64,
    /// Most persistent pages the domain may hold.
    pub pers_quota: u64,
    /// Store this domain's pages compressed when that pays.
    pub compress: bool,
    /// Puts refused with EFROZEN.
    pub frozen: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            weight: 1,
            eph_cap: 0,
            pers_quota: 0,
            compress: false,
            frozen: false,
        }
    }
}

/// Counters of one domain (the control domain's LIST).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClientStats {
    /// Ephemeral pages charged to it now.
    pub eph_pages: u64,
    /// Persistent pages it holds now.
    pub pers_pages: u64,
    /// Bytes its pages take in the store.
    pub bytes: u64,
    /// Puts tried and puts that stored a page.
    pub puts: u64,
    /// Puts that stored a page.
    pub good_puts: u64,
    /// Gets tried.
    pub gets: u64,
    /// Gets that found a page.
    pub found_gets: u64,
    /// Its ephemeral pages dropped to make room.
    pub evicted: u64,
    /// Pools it holds.
    pub pools: u32,
}

/// Store-wide counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stats {
    /// Pages held.
    pub pages: u64,
    /// Of which stored compressed.
    pub compressed_pages: u64,
    /// Bytes held (what the budget counts).
    pub bytes: u64,
    /// Bytes the same pages would take uncompressed.
    pub raw_bytes: u64,
    /// Ephemeral pages dropped to make room, ever.
    pub evictions: u64,
}

enum Data {
    Raw(Box<[u8; PAGE]>),
    Lz4(Box<[u8]>),
}

impl Data {
    fn bytes(&self) -> usize {
        match self {
            Data::Raw(_) => PAGE,
            Data::Lz4(b) => b.len(),
        }
    }
}

struct Entry {
    data: Data,
    /// Recency, for ephemeral pages (key in the charged client's LRU).
    stamp: u64,
    /// The domain whose counts and LRU hold this page.
    charged: Dom,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Loc {
    pool: u32,
    oid: Oid,
    index: u32,
}

struct Pool {
    kind: PoolKind,
    uuid: Uuid,
    members: BTreeSet<Dom>,
    objs: BTreeMap<Oid, BTreeMap<u32, Entry>>,
    pages: u64,
}

#[derive(Default)]
struct Client {
    cfg: ClientConfig,
    slots: [Option<u32>; MAX_POOLS_PER_DOMAIN],
    lru: BTreeMap<u64, Loc>,
    stats: ClientStats,
}

/// The store.
pub struct Tmem {
    budget: usize,
    used: usize,
    compress_all: bool,
    clients: BTreeMap<Dom, Client>,
    pools: BTreeMap<u32, Pool>,
    auth: BTreeSet<(Dom, Uuid)>,
    next_pool: u32,
    clock: u64,
    table: Box<CompressTable>,
    scratch: Box<[u8; LZ4_BOUND]>,
    stats: Stats,
}

impl Tmem {
    /// A store that may hold `budget_bytes` of page data.
    pub fn new(budget_bytes: usize) -> Self {
        Tmem {
            budget: budget_bytes,
            used: 0,
            compress_all: false,
            clients: BTreeMap::new(),
            pools: BTreeMap::new(),
            auth: BTreeSet::new(),
            next_pool: 0,
            clock: 0,
            table: Box::new(CompressTable::small()),
            scratch: Box::new([0; LZ4_BOUND]),
            stats: Stats::default(),
        }
    }

    /// Bytes the store may hold.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// A new budget (the hypervisor sets it once it knows its free
    /// memory). Ephemeral pages are dropped down to it at once; while
    /// persistent pages alone exceed it, every put fails.
    pub fn set_budget(&mut self, budget_bytes: usize) {
        self.budget = budget_bytes;
        while self.used > self.budget && self.evict_one() {}
    }

    /// Compress every domain's pages (on top of the per-domain setting).
    pub fn set_compress_all(&mut self, on: bool) {
        self.compress_all = on;
    }

    /// Store-wide counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.bytes = self.used as u64;
        s
    }

    /// A domain's settings (defaults when it never used tmem).
    pub fn config(&self, dom: Dom) -> ClientConfig {
        self.clients.get(&dom).map(|c| c.cfg).unwrap_or_default()
    }

    /// Sets a domain's settings. A weight of 0 counts as 1. Lowering a
    /// cap or quota below what the domain holds keeps its pages; only
    /// new puts are refused (ephemeral ones drop the domain's oldest).
    pub fn configure(&mut self, dom: Dom, cfg: ClientConfig) {
        let c = self.clients.entry(dom).or_default();
        c.cfg = ClientConfig {
            weight: cfg.weight.max(1),
            ..cfg
        };
    }

    /// A domain's counters.
    pub fn client_stats(&self, dom: Dom) -> Option<ClientStats> {
        self.clients.get(&dom).map(|c| c.stats)
    }

    /// Domains that have used tmem or been configured.
    pub fn clients(&self) -> impl Iterator<Item = Dom> + '_ {
        self.clients.keys().copied()
    }

    /// Lets `dom` join (or create) the shared pool named `uuid`, or takes
    /// that back. Taking it back does not remove a pool already joined.
    pub fn authorize(&mut self, dom: Dom, uuid: Uuid, allow: bool) {
        if allow {
            self.auth.insert((dom, uuid));
        } else {
            self.auth.remove(&(dom, uuid));
        }
    }

    /// Whether `dom` may join the shared pool `uuid`.
    pub fn authorized(&self, dom: Dom, uuid: Uuid) -> bool {
        self.auth.contains(&(dom, uuid))
    }

    /// The pools `dom` holds: (pool id, kind, uuid, pages).
    pub fn pools_of(&self, dom: Dom) -> Vec<(u32, PoolKind, Uuid, u64)> {
        let Some(c) = self.clients.get(&dom) else {
            return Vec::new();
        };
        c.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let p = self.pools.get(&(*s)?)?;
                Some((i as u32, p.kind, p.uuid, p.pages))
            })
            .collect()
    }

    /// Creates a pool for `dom`, or joins the shared pool `uuid`: its id
    /// (0..MAX_POOLS_PER_DOMAIN). A shared pool asked for with the
    /// all-ones UUID is made private, as Xen does.
    pub fn new_pool(&mut self, dom: Dom, kind: PoolKind, uuid: Uuid) -> Result<u32, Error> {
        if kind.shared && kind.persistent {
            return Err(Error::Perm);
        }
        let shared = kind.shared && uuid != [u64::MAX; 2];
        let c = self.clients.entry(dom).or_default();
        let slot = c
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(Error::Perm)?;
        let uid = if shared {
            if !self.auth.contains(&(dom, uuid)) {
                return Err(Error::Perm);
            }
            let existing = self
                .pools
                .iter()
                .find(|(_, p)| p.kind.shared && p.uuid == uuid)
                .map(|(u, _)| *u);
            match existing {
                Some(u) => {
                    if c.slots.contains(&Some(u)) {
                        // Joined already: the same pool id again.
                        return c
                            .slots
                            .iter()
                            .position(|s| *s == Some(u))
                            .map(|i| i as u32)
                            .ok_or(Error::Perm);
                    }
                    if let Some(p) = self.pools.get_mut(&u) {
                        p.members.insert(dom);
                    }
                    u
                }
                None => {
                    let nr_shared = self.pools.values().filter(|p| p.kind.shared).count();
                    if nr_shared >= MAX_SHARED_POOLS {
                        return Err(Error::Perm);
                    }
                    self.make_pool(dom, kind, uuid)
                }
            }
        } else {
            self.make_pool(
                dom,
                PoolKind {
                    persistent: kind.persistent,
                    shared: false,
                },
                uuid,
            )
        };
        let c = self.clients.entry(dom).or_default();
        c.slots[slot] = Some(uid);
        c.stats.pools += 1;
        Ok(slot as u32)
    }

    fn make_pool(&mut self, dom: Dom, kind: PoolKind, uuid: Uuid) -> u32 {
        let uid = self.next_pool;
        self.next_pool = self.next_pool.wrapping_add(1);
        let mut members = BTreeSet::new();
        members.insert(dom);
        self.pools.insert(
            uid,
            Pool {
                kind,
                uuid,
                members,
                objs: BTreeMap::new(),
                pages: 0,
            },
        );
        uid
    }

    /// Whether `dom` holds a pool with id `pool`.
    pub fn has_pool(&self, dom: Dom, pool: u32) -> bool {
        self.pool_uid(dom, pool).is_ok()
    }

    fn pool_uid(&self, dom: Dom, pool: u32) -> Result<u32, Error> {
        self.clients
            .get(&dom)
            .and_then(|c| c.slots.get(pool as usize).copied().flatten())
            .ok_or(Error::NoPool)
    }

    /// Leaves pool `pool` of `dom`: Ok(false) when there is no such pool
    /// (Xen answers 0). A private pool, or a shared one nobody else holds,
    /// is emptied and goes; a shared pool others hold stays, and the
    /// pages `dom` put there are charged to one of them.
    pub fn destroy_pool(&mut self, dom: Dom, pool: u32) -> bool {
        let Ok(uid) = self.pool_uid(dom, pool) else {
            return false;
        };
        if let Some(c) = self.clients.get_mut(&dom) {
            c.slots[pool as usize] = None;
            c.stats.pools = c.stats.pools.saturating_sub(1);
        }
        let Some(p) = self.pools.get_mut(&uid) else {
            return true;
        };
        p.members.remove(&dom);
        match p.members.first().copied() {
            None => self.drop_pool(uid),
            Some(heir) => self.recharge(uid, dom, heir),
        }
        true
    }

    /// Moves the pages of pool `uid` charged to `from` over to `to`.
    fn recharge(&mut self, uid: u32, from: Dom, to: Dom) {
        let Some(p) = self.pools.get_mut(&uid) else {
            return;
        };
        let mut moved = Vec::new();
        for (oid, pages) in p.objs.iter_mut() {
            for (index, e) in pages.iter_mut() {
                if e.charged == from {
                    e.charged = to;
                    moved.push((
                        e.stamp,
                        Loc {
                            pool: uid,
                            oid: *oid,
                            index: *index,
                        },
                        e.data.bytes(),
                    ));
                }
            }
        }
        let persistent = p.kind.persistent;
        for (stamp, loc, bytes) in moved {
            if let Some(c) = self.clients.get_mut(&from) {
                c.lru.remove(&stamp);
                uncount(&mut c.stats, persistent, bytes);
            }
            let c = self.clients.entry(to).or_default();
            if !persistent {
                c.lru.insert(stamp, loc);
            }
            count(&mut c.stats, persistent, bytes);
        }
    }

    fn drop_pool(&mut self, uid: u32) {
        let Some(p) = self.pools.remove(&uid) else {
            return;
        };
        for pages in p.objs.into_values() {
            for e in pages.into_values() {
                self.forget(e, p.kind.persistent);
            }
        }
    }

    /// Accounts for an entry leaving the store.
    fn forget(&mut self, e: Entry, persistent: bool) {
        let bytes = e.data.bytes();
        self.used -= bytes;
        self.stats.pages -= 1;
        self.stats.raw_bytes -= PAGE as u64;
        if matches!(e.data, Data::Lz4(_)) {
            self.stats.compressed_pages -= 1;
        }
        if let Some(c) = self.clients.get_mut(&e.charged) {
            if !persistent {
                c.lru.remove(&e.stamp);
            }
            uncount(&mut c.stats, persistent, bytes);
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Stores a copy of `page` at (`pool`, `oid`, `index`) for `dom`,
    /// replacing what was there.
    pub fn put(
        &mut self,
        dom: Dom,
        pool: u32,
        oid: Oid,
        index: u32,
        page: &[u8; PAGE],
    ) -> Result<(), Error> {
        self.put_within(dom, pool, oid, index, page, u64::MAX)
    }

    /// [`Tmem::put`] where the domain may hold no more persistent pages
    /// than the smaller of its quota and `pers_room`. Persistent pages
    /// count against a domain's memory: `xen::tmem` passes the frames the
    /// domain has given back.
    pub fn put_within(
        &mut self,
        dom: Dom,
        pool: u32,
        oid: Oid,
        index: u32,
        page: &[u8; PAGE],
        pers_room: u64,
    ) -> Result<(), Error> {
        let uid = self.pool_uid(dom, pool)?;
        let cfg = self.config(dom);
        if let Some(c) = self.clients.get_mut(&dom) {
            c.stats.puts += 1;
        }
        if cfg.frozen {
            return Err(Error::Frozen);
        }
        let persistent = self.pools.get(&uid).is_some_and(|p| p.kind.persistent);
        // A duplicate put first removes the old page (Xen replaces it, and
        // when the new one cannot be stored the old one is gone: ENOSPC).
        let old = self.take(uid, oid, index);
        let dup = old.is_some();
        if let Some(e) = old {
            self.forget(e, persistent);
        }
        let fail = if dup { Error::NoSpace } else { Error::NoMem };
        let data = self.encode(page, cfg.compress || self.compress_all);
        let bytes = data.bytes();
        let c = self.clients.get(&dom).map(|c| c.stats).unwrap_or_default();
        if persistent && c.pers_pages >= cfg.pers_quota.min(pers_room) {
            return Err(fail);
        }
        if !persistent && cfg.eph_cap > 0 {
            // Over its cap the domain makes room from its own pages.
            while self.clients.get(&dom).map_or(0, |c| c.stats.eph_pages) >= cfg.eph_cap {
                if !self.evict_from(dom) {
                    return Err(fail);
                }
            }
        }
        while self.used + bytes > self.budget {
            if !self.evict_one() {
                return Err(fail);
            }
        }
        // Eviction drops pages, never pools: `uid` is still there.
        let stamp = self.tick();
        let Some(p) = self.pools.get_mut(&uid) else {
            return Err(Error::NoPool);
        };
        let compressed = matches!(data, Data::Lz4(_));
        p.objs.entry(oid).or_default().insert(
            index,
            Entry {
                data,
                stamp,
                charged: dom,
            },
        );
        p.pages += 1;
        self.used += bytes;
        self.stats.pages += 1;
        self.stats.raw_bytes += PAGE as u64;
        if compressed {
            self.stats.compressed_pages += 1;
        }
        let c = self.clients.entry(dom).or_default();
        if !persistent {
            c.lru.insert(
                stamp,
                Loc {
                    pool: uid,
                    oid,
                    index,
                },
            );
        }
        count(&mut c.stats, persistent, bytes);
        c.stats.good_puts += 1;
        Ok(())
    }

    fn encode(&mut self, page: &[u8; PAGE], compress: bool) -> Data {
        if compress
            && let Ok(n) = compress_into_with_table(page, &mut self.scratch[..], &mut self.table)
            && n <= COMPRESSED_MAX
        {
            return Data::Lz4(self.scratch[..n].into());
        }
        Data::Raw(Box::new(*page))
    }

    /// Removes the entry at a location from its pool (no accounting).
    fn take(&mut self, uid: u32, oid: Oid, index: u32) -> Option<Entry> {
        let p = self.pools.get_mut(&uid)?;
        let pages = p.objs.get_mut(&oid)?;
        let e = pages.remove(&index)?;
        if pages.is_empty() {
            p.objs.remove(&oid);
        }
        p.pages -= 1;
        Some(e)
    }

    /// Drops the oldest ephemeral page of `dom`. False when it has none.
    fn evict_from(&mut self, dom: Dom) -> bool {
        let Some(loc) = self
            .clients
            .get(&dom)
            .and_then(|c| c.lru.first_key_value().map(|(_, l)| *l))
        else {
            return false;
        };
        match self.take(loc.pool, loc.oid, loc.index) {
            Some(e) => {
                self.forget(e, false);
                self.stats.evictions += 1;
                if let Some(c) = self.clients.get_mut(&dom) {
                    c.stats.evicted += 1;
                }
                true
            }
            None => {
                // Cannot happen while the invariants hold; never loop on it.
                if let Some(c) = self.clients.get_mut(&dom) {
                    c.lru.pop_first();
                }
                true
            }
        }
    }

    /// Drops one ephemeral page: the oldest of the domain holding the
    /// most ephemeral pages per unit of weight. False when no ephemeral
    /// page is left.
    fn evict_one(&mut self) -> bool {
        let victim = self
            .clients
            .iter()
            .filter(|(_, c)| !c.lru.is_empty())
            .max_by(|(da, a), (db, b)| {
                // a.eph / a.weight against b.eph / b.weight, without
                // division; on a tie the domain holding more pages loses
                // one, then the higher id.
                let l = u128::from(a.stats.eph_pages) * u128::from(b.cfg.weight.max(1));
                let r = u128::from(b.stats.eph_pages) * u128::from(a.cfg.weight.max(1));
                l.cmp(&r)
                    .then(a.stats.eph_pages.cmp(&b.stats.eph_pages))
                    .then(da.cmp(db))
            })
            .map(|(d, _)| *d);
        match victim {
            Some(d) => self.evict_from(d),
            None => false,
        }
    }

    /// Copies the page at (`pool`, `oid`, `index`) into `out`: Ok(true)
    /// when found, Ok(false) when not, Empty when the pool holds nothing.
    /// From a private ephemeral pool the page leaves the pool.
    pub fn get(
        &mut self,
        dom: Dom,
        pool: u32,
        oid: Oid,
        index: u32,
        out: &mut [u8; PAGE],
    ) -> Result<bool, Error> {
        let uid = self.pool_uid(dom, pool)?;
        if let Some(c) = self.clients.get_mut(&dom) {
            c.stats.gets += 1;
        }
        let Some(p) = self.pools.get(&uid) else {
            return Err(Error::NoPool);
        };
        if p.pages == 0 {
            return Err(Error::Empty);
        }
        let kind = p.kind;
        let Some(e) = p.objs.get(&oid).and_then(|o| o.get(&index)) else {
            return Ok(false);
        };
        let (charged, old) = (e.charged, e.stamp);
        if !decode(&e.data, out) {
            // Our own data failed to decode: drop it rather than hand out
            // garbage (cannot happen; counted as a miss).
            if let Some(e) = self.take(uid, oid, index) {
                self.forget(e, kind.persistent);
            }
            return Ok(false);
        }
        if !kind.persistent && !kind.shared {
            if let Some(e) = self.take(uid, oid, index) {
                self.forget(e, false);
            }
        } else if !kind.persistent {
            // A shared ephemeral page read is recent again.
            let stamp = self.tick();
            if let Some(e) = self
                .pools
                .get_mut(&uid)
                .and_then(|p| p.objs.get_mut(&oid))
                .and_then(|o| o.get_mut(&index))
            {
                e.stamp = stamp;
            }
            if let Some(c) = self.clients.get_mut(&charged) {
                c.lru.remove(&old);
                c.lru.insert(
                    stamp,
                    Loc {
                        pool: uid,
                        oid,
                        index,
                    },
                );
            }
        }
        if let Some(c) = self.clients.get_mut(&dom) {
            c.stats.found_gets += 1;
        }
        Ok(true)
    }

    /// Forgets one page: Ok(true) when it was there.
    pub fn flush_page(&mut self, dom: Dom, pool: u32, oid: Oid, index: u32) -> Result<bool, Error> {
        let uid = self.pool_uid(dom, pool)?;
        let persistent = self.pools.get(&uid).is_some_and(|p| p.kind.persistent);
        match self.take(uid, oid, index) {
            Some(e) => {
                self.forget(e, persistent);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Forgets every page of one object: Ok(true) when it had any.
    pub fn flush_object(&mut self, dom: Dom, pool: u32, oid: Oid) -> Result<bool, Error> {
        let uid = self.pool_uid(dom, pool)?;
        let Some(p) = self.pools.get_mut(&uid) else {
            return Err(Error::NoPool);
        };
        let persistent = p.kind.persistent;
        let Some(pages) = p.objs.remove(&oid) else {
            return Ok(false);
        };
        p.pages -= pages.len() as u64;
        for e in pages.into_values() {
            self.forget(e, persistent);
        }
        Ok(true)
    }

    /// Drops up to `pages` of `dom`'s ephemeral pages, oldest first: how
    /// many went (the control domain's FLUSH).
    pub fn flush_client(&mut self, dom: Dom, pages: u64) -> u64 {
        let mut n = 0;
        while n < pages && self.clients.get(&dom).is_some_and(|c| !c.lru.is_empty()) {
            if !self.evict_from(dom) {
                break;
            }
            n += 1;
        }
        n
    }

    /// Everything of `dom` goes: its private pools and their pages, its
    /// membership of shared pools (which stay while others hold them),
    /// its settings and authorizations. Called when a domain dies, before
    /// its memory is scrubbed and returned.
    pub fn remove_client(&mut self, dom: Dom) {
        for pool in 0..MAX_POOLS_PER_DOMAIN as u32 {
            self.destroy_pool(dom, pool);
        }
        self.clients.remove(&dom);
        self.auth.retain(|(d, _)| *d != dom);
    }

    /// The store's bookkeeping agrees with its contents: byte and page
    /// counts, every client's counts and LRU, membership and pool ids,
    /// budget and quotas. Panics with the first disagreement. For tests
    /// and fuzzing.
    #[cfg(any(test, feature = "testenv"))]
    #[allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
    pub fn check_invariants(&self) {
        use alloc::format;
        let mut used = 0usize;
        let mut pages = 0u64;
        let mut per: BTreeMap<Dom, ClientStats> = BTreeMap::new();
        let mut lru: BTreeMap<Dom, BTreeMap<u64, Loc>> = BTreeMap::new();
        for (uid, p) in &self.pools {
            assert!(!p.members.is_empty(), "pool {uid} has no member");
            assert!(!(p.kind.shared && p.kind.persistent));
            let n: u64 = p.objs.values().map(|o| o.len() as u64).sum();
            assert_eq!(n, p.pages, "pool {uid} page count");
            for m in &p.members {
                let c = self.clients.get(m).expect("member without client");
                assert_eq!(
                    c.slots.iter().filter(|s| **s == Some(*uid)).count(),
                    1,
                    "member {m} holds pool {uid} once"
                );
            }
            for (oid, o) in &p.objs {
                assert!(!o.is_empty(), "empty object kept");
                for (index, e) in o {
                    used += e.data.bytes();
                    pages += 1;
                    assert!(
                        p.members.contains(&e.charged),
                        "page charged to non-member {}",
                        e.charged
                    );
                    let s = per.entry(e.charged).or_default();
                    count(s, p.kind.persistent, e.data.bytes());
                    if !p.kind.persistent {
                        let prev = lru.entry(e.charged).or_default().insert(
                            e.stamp,
                            Loc {
                                pool: *uid,
                                oid: *oid,
                                index: *index,
                            },
                        );
                        assert!(prev.is_none(), "stamp {} used twice", e.stamp);
                    }
                }
            }
        }
        assert_eq!(used, self.used, "bytes held");
        // Over it only after a smaller budget, with nothing left to drop.
        assert!(
            self.used <= self.budget || self.clients.values().all(|c| c.lru.is_empty()),
            "over budget"
        );
        assert_eq!(pages, self.stats.pages, "pages held");
        for (d, c) in &self.clients {
            let want = per.remove(d).unwrap_or_default();
            assert_eq!(c.stats.eph_pages, want.eph_pages, "d{d} ephemeral pages");
            assert_eq!(c.stats.pers_pages, want.pers_pages, "d{d} persistent pages");
            assert_eq!(c.stats.bytes, want.bytes, "d{d} bytes");
            assert_eq!(c.lru, lru.remove(d).unwrap_or_default(), "d{d} LRU");
            let held = c.slots.iter().flatten().count() as u32;
            assert_eq!(c.stats.pools, held, "d{d} pool count");
            for uid in c.slots.iter().flatten() {
                let p = self.pools.get(uid).expect("slot names no pool");
                assert!(
                    p.members.contains(d),
                    "{}",
                    format!("d{d} not member of {uid}")
                );
            }
        }
        assert!(per.is_empty(), "pages charged to unknown domains");
        let shared = self.pools.values().filter(|p| p.kind.shared).count();
        assert!(shared <= MAX_SHARED_POOLS);
    }

    /// Reads a page without touching recency or exclusivity (for tests
    /// and the fuzz target's model).
    #[cfg(any(test, feature = "testenv"))]
    pub fn peek(&self, dom: Dom, pool: u32, oid: Oid, index: u32) -> Option<[u8; PAGE]> {
        let uid = self.pool_uid(dom, pool).ok()?;
        let e = self.pools.get(&uid)?.objs.get(&oid)?.get(&index)?;
        let mut out = [0u8; PAGE];
        decode(&e.data, &mut out).then_some(out)
    }
}

fn decode(d: &Data, out: &mut [u8; PAGE]) -> bool {
    match d {
        Data::Raw(b) => {
            out.copy_from_slice(&b[..]);
            true
        }
        Data::Lz4(b) => matches!(decompress_into(b, out), Ok(PAGE)),
    }
}

fn count(s: &mut ClientStats, persistent: bool, bytes: usize) {
    if persistent {
        s.pers_pages += 1;
    } else {
        s.eph_pages += 1;
    }
    s.bytes += bytes as u64;
}

fn uncount(s: &mut ClientStats, persistent: bool, bytes: usize) {
    if persistent {
        s.pers_pages -= 1;
    } else {
        s.eph_pages -= 1;
    }
    s.bytes -= bytes as u64;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const EPH: PoolKind = PoolKind {
        persistent: false,
        shared: false,
    };
    const PERS: PoolKind = PoolKind {
        persistent: true,
        shared: false,
    };
    const SHARED: PoolKind = PoolKind {
        persistent: false,
        shared: true,
    };
    const U: Uuid = [0x1234, 0x5678];

    fn page(seed: u8) -> [u8; PAGE] {
        let mut p = [0u8; PAGE];
        for (i, b) in p.iter_mut().enumerate() {
            *b = seed.wrapping_add((i * 7 / 5) as u8);
        }
        p
    }

    /// Mostly zeros, like many pages of a guest.
    fn sparse(seed: u8) -> [u8; PAGE] {
        let mut p = [0u8; PAGE];
        for (i, b) in p.iter_mut().take(64).enumerate() {
            *b = seed ^ i as u8;
        }
        p
    }

    /// Incompressible bytes (xorshift).
    fn noise(seed: u64) -> [u8; PAGE] {
        let mut x = seed | 1;
        let mut p = [0u8; PAGE];
        for b in p.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        p
    }

    fn oid(n: u64) -> Oid {
        [n, 0, 0]
    }

    fn store(pages: usize) -> Tmem {
        Tmem::new(pages * PAGE)
    }

    fn quota(t: &mut Tmem, dom: Dom, pers: u64) {
        let cfg = ClientConfig {
            pers_quota: pers,
            ..t.config(dom)
        };
        t.configure(dom, cfg);
    }

    #[test]
    fn put_get_flush_in_a_private_ephemeral_pool() {
        let mut t = store(8);
        let p = t.new_pool(1, EPH, [0; 2]).unwrap();
        assert_eq!(p, 0);
        let mut out = [0u8; PAGE];
        assert_eq!(t.get(1, p, oid(1), 0, &mut out), Err(Error::Empty));
        t.put(1, p, oid(1), 0, &page(1)).unwrap();
        t.put(1, p, oid(1), 1, &page(2)).unwrap();
        t.check_invariants();
        assert_eq!(t.get(1, p, oid(2), 0, &mut out), Ok(false));
        assert_eq!(t.get(1, p, oid(1), 0, &mut out), Ok(true));
        assert_eq!(out, page(1));
        // Exclusive: the page left the pool.
        assert_eq!(t.get(1, p, oid(1), 0, &mut out), Ok(false));
        assert_eq!(t.flush_page(1, p, oid(1), 1), Ok(true));
        assert_eq!(t.flush_page(1, p, oid(1), 1), Ok(false));
        t.check_invariants();
        assert_eq!(t.stats().pages, 0);
    }

    #[test]
    fn persistent_gets_are_not_exclusive_and_flush_object_takes_every_index() {
        let mut t = store(8);
        quota(&mut t, 1, 8);
        let p = t.new_pool(1, PERS, [0; 2]).unwrap();
        for i in 0..3 {
            t.put(1, p, oid(9), i, &page(i as u8)).unwrap();
        }
        let mut out = [0u8; PAGE];
        assert_eq!(t.get(1, p, oid(9), 2, &mut out), Ok(true));
        assert_eq!(t.get(1, p, oid(9), 2, &mut out), Ok(true));
        assert_eq!(out, page(2));
        assert_eq!(t.flush_object(1, p, oid(9)), Ok(true));
        assert_eq!(t.flush_object(1, p, oid(9)), Ok(false));
        assert_eq!(t.client_stats(1).unwrap().pers_pages, 0);
        t.check_invariants();
    }

    #[test]
    fn a_duplicate_put_replaces_the_page() {
        let mut t = store(4);
        let p = t.new_pool(1, EPH, [0; 2]).unwrap();
        t.put(1, p, oid(1), 5, &page(1)).unwrap();
        t.put(1, p, oid(1), 5, &page(2)).unwrap();
        assert_eq!(t.stats().pages, 1);
        assert_eq!(t.peek(1, p, oid(1), 5).unwrap(), page(2));
        t.check_invariants();
    }

    #[test]
    fn bad_pool_ids_and_flags() {
        let mut t = store(4);
        let mut out = [0u8; PAGE];
        assert_eq!(t.put(1, 0, oid(1), 0, &page(0)), Err(Error::NoPool));
        assert_eq!(t.get(1, 99, oid(1), 0, &mut out), Err(Error::NoPool));
        assert_eq!(t.flush_page(1, 16, oid(1), 0), Err(Error::NoPool));
        assert_eq!(t.flush_object(1, u32::MAX, oid(1)), Err(Error::NoPool));
        assert!(!t.destroy_pool(1, 3));
        assert!(!t.destroy_pool(1, u32::MAX));
        let both = PoolKind {
            persistent: true,
            shared: true,
        };
        assert_eq!(t.new_pool(1, both, U), Err(Error::Perm));
        // Pools of another domain are not ours.
        let p = t.new_pool(2, EPH, [0; 2]).unwrap();
        assert_eq!(t.put(1, p, oid(1), 0, &page(0)), Err(Error::NoPool));
        t.check_invariants();
    }

    #[test]
    fn at_most_sixteen_pools_per_domain() {
        let mut t = store(4);
        for i in 0..MAX_POOLS_PER_DOMAIN as u32 {
            assert_eq!(t.new_pool(1, EPH, [0; 2]), Ok(i));
        }
        assert_eq!(t.new_pool(1, EPH, [0; 2]), Err(Error::Perm));
        assert!(t.destroy_pool(1, 7));
        assert_eq!(t.new_pool(1, PERS, [0; 2]), Ok(7));
        t.check_invariants();
    }

    #[test]
    fn shared_pools_need_authorization_and_gets_are_not_exclusive() {
        let mut t = store(8);
        assert_eq!(t.new_pool(1, SHARED, U), Err(Error::Perm));
        t.authorize(1, U, true);
        t.authorize(2, U, true);
        let a = t.new_pool(1, SHARED, U).unwrap();
        let _pad = t.new_pool(2, EPH, [0; 2]).unwrap();
        let b = t.new_pool(2, SHARED, U).unwrap();
        assert_eq!(b, 1);
        // Joining again gives the same id.
        assert_eq!(t.new_pool(2, SHARED, U), Ok(1));
        assert_eq!(t.new_pool(3, SHARED, U), Err(Error::Perm));
        t.put(1, a, oid(4), 0, &page(4)).unwrap();
        let mut out = [0u8; PAGE];
        assert_eq!(t.get(2, b, oid(4), 0, &mut out), Ok(true));
        assert_eq!(out, page(4));
        assert_eq!(t.get(1, a, oid(4), 0, &mut out), Ok(true));
        t.check_invariants();
        // An all-ones uuid makes a private pool, authorized or not.
        let q = t.new_pool(3, SHARED, [u64::MAX; 2]).unwrap();
        t.put(3, q, oid(1), 0, &page(1)).unwrap();
        assert_eq!(t.get(3, q, oid(1), 0, &mut out), Ok(true));
        // Exclusive, and the pool is now empty (Xen's EEMPTY).
        assert_eq!(t.get(3, q, oid(1), 0, &mut out), Err(Error::Empty));
    }

    #[test]
    fn a_shared_pool_survives_a_member_leaving() {
        let mut t = store(8);
        t.authorize(1, U, true);
        t.authorize(2, U, true);
        let a = t.new_pool(1, SHARED, U).unwrap();
        let b = t.new_pool(2, SHARED, U).unwrap();
        t.put(1, a, oid(1), 0, &page(1)).unwrap();
        t.put(2, b, oid(1), 1, &page(2)).unwrap();
        t.remove_client(1);
        t.check_invariants();
        assert_eq!(t.client_stats(2).unwrap().eph_pages, 2);
        let mut out = [0u8; PAGE];
        assert_eq!(t.get(2, b, oid(1), 0, &mut out), Ok(true));
        assert_eq!(out, page(1));
        // Authorization went with the domain.
        assert!(!t.authorized(1, U));
        t.remove_client(2);
        t.check_invariants();
        assert_eq!(t.stats().pages, 0);
        assert_eq!(t.stats().bytes, 0);
    }

    #[test]
    fn destroying_a_domain_leaves_other_domains_pages_intact() {
        let mut t = store(16);
        quota(&mut t, 2, 4);
        let a = t.new_pool(1, EPH, [0; 2]).unwrap();
        let b = t.new_pool(2, PERS, [0; 2]).unwrap();
        for i in 0..4 {
            t.put(1, a, oid(1), i, &page(i as u8)).unwrap();
            t.put(2, b, oid(1), i, &page(100 + i as u8)).unwrap();
        }
        t.remove_client(1);
        t.check_invariants();
        for i in 0..4 {
            assert_eq!(t.peek(2, b, oid(1), i).unwrap(), page(100 + i as u8));
        }
        assert_eq!(t.stats().pages, 4);
    }

    #[test]
    fn ephemeral_pages_make_room_and_persistent_ones_never_do() {
        let mut t = store(4);
        quota(&mut t, 1, 4);
        let e = t.new_pool(1, EPH, [0; 2]).unwrap();
        let p = t.new_pool(1, PERS, [0; 2]).unwrap();
        for i in 0..4 {
            t.put(1, e, oid(1), i, &page(i as u8)).unwrap();
        }
        // Memory pressure: each persistent put drops the oldest ephemeral.
        for i in 0..4 {
            t.put(1, p, oid(2), i, &page(50 + i as u8)).unwrap();
            assert!(t.peek(1, e, oid(1), i).is_none(), "oldest went first");
            t.check_invariants();
        }
        // Full of persistent pages: nothing can be dropped.
        assert_eq!(t.put(1, e, oid(1), 9, &page(9)), Err(Error::NoMem));
        quota(&mut t, 1, 8);
        assert_eq!(t.put(1, p, oid(2), 9, &page(9)), Err(Error::NoMem));
        for i in 0..4 {
            assert_eq!(t.peek(1, p, oid(2), i).unwrap(), page(50 + i as u8));
        }
        assert_eq!(t.stats().evictions, 4);
        t.check_invariants();
    }

    #[test]
    fn the_persistent_quota_is_enforced_and_a_failed_put_changes_nothing() {
        let mut t = store(16);
        quota(&mut t, 1, 2);
        let p = t.new_pool(1, PERS, [0; 2]).unwrap();
        t.put(1, p, oid(1), 0, &page(0)).unwrap();
        t.put(1, p, oid(1), 1, &page(1)).unwrap();
        assert_eq!(t.put(1, p, oid(1), 2, &page(2)), Err(Error::NoMem));
        assert_eq!(t.client_stats(1).unwrap().pers_pages, 2);
        // A duplicate put at the quota replaces (the old page is counted
        // out first).
        t.put(1, p, oid(1), 1, &page(7)).unwrap();
        assert_eq!(t.peek(1, p, oid(1), 1).unwrap(), page(7));
        // The default quota is zero.
        let q = t.new_pool(2, PERS, [0; 2]).unwrap();
        assert_eq!(t.put(2, q, oid(1), 0, &page(0)), Err(Error::NoMem));
        t.check_invariants();
    }

    #[test]
    fn persistent_pages_stay_within_the_room_the_domain_gave_back() {
        let mut t = store(16);
        quota(&mut t, 1, 8);
        let p = t.new_pool(1, PERS, [0; 2]).unwrap();
        // Room for 2 although the quota is 8.
        t.put_within(1, p, oid(1), 0, &page(0), 2).unwrap();
        t.put_within(1, p, oid(1), 1, &page(1), 2).unwrap();
        assert_eq!(
            t.put_within(1, p, oid(1), 2, &page(2), 2),
            Err(Error::NoMem)
        );
        // Replacing a page needs no more room.
        t.put_within(1, p, oid(1), 1, &page(5), 2).unwrap();
        assert_eq!(t.peek(1, p, oid(1), 1).unwrap(), page(5));
        // More room: the quota is the limit again.
        for i in 2..8 {
            t.put_within(1, p, oid(1), i, &page(i as u8), 100).unwrap();
        }
        assert_eq!(
            t.put_within(1, p, oid(1), 8, &page(8), 100),
            Err(Error::NoMem)
        );
        // Ephemeral puts ignore the room.
        let e = t.new_pool(1, EPH, [0; 2]).unwrap();
        t.put_within(1, e, oid(1), 0, &page(9), 0).unwrap();
        assert_eq!(t.client_stats(1).unwrap().pers_pages, 8);
        t.check_invariants();
    }

    #[test]
    fn a_smaller_budget_drops_ephemeral_pages_at_once() {
        let mut t = store(8);
        quota(&mut t, 1, 8);
        let p = t.new_pool(1, PERS, [0; 2]).unwrap();
        let e = t.new_pool(1, EPH, [0; 2]).unwrap();
        for i in 0..3 {
            t.put(1, p, oid(1), i, &page(i as u8)).unwrap();
            t.put(1, e, oid(1), i, &page(i as u8)).unwrap();
        }
        t.set_budget(4 * PAGE);
        assert_eq!(t.stats().pages, 4);
        t.check_invariants();
        // Below the persistent pages: they stay, puts fail.
        t.set_budget(2 * PAGE);
        assert_eq!(t.stats().pages, 3);
        t.check_invariants();
        assert_eq!(t.put(1, e, oid(2), 0, &page(9)), Err(Error::NoMem));
        assert_eq!(t.peek(1, p, oid(1), 2).unwrap(), page(2));
    }

    #[test]
    fn eviction_is_fair_by_weight() {
        let mut t = store(8);
        let a = t.new_pool(1, EPH, [0; 2]).unwrap();
        let b = t.new_pool(2, EPH, [0; 2]).unwrap();
        // Domain 1 fills the store; domain 2 then takes half back.
        for i in 0..8 {
            t.put(1, a, oid(1), i, &page(i as u8)).unwrap();
        }
        for i in 0..4 {
            t.put(2, b, oid(1), i, &page(i as u8)).unwrap();
        }
        assert_eq!(t.client_stats(1).unwrap().eph_pages, 4);
        assert_eq!(t.client_stats(2).unwrap().eph_pages, 4);
        // Equal shares now: domain 2's next put drops its own oldest.
        t.put(2, b, oid(1), 4, &page(4)).unwrap();
        assert_eq!(t.client_stats(1).unwrap().eph_pages, 4);
        assert!(t.peek(2, b, oid(1), 0).is_none());
        // Weight 3 for domain 2: it may hold three times domain 1's share.
        t.configure(
            2,
            ClientConfig {
                weight: 3,
                ..ClientConfig::default()
            },
        );
        for i in 5..12 {
            t.put(2, b, oid(1), i, &page(i as u8)).unwrap();
        }
        let (d1, d2) = (
            t.client_stats(1).unwrap().eph_pages,
            t.client_stats(2).unwrap().eph_pages,
        );
        assert_eq!(d1 + d2, 8);
        assert_eq!((d1, d2), (2, 6), "3:1 by weight");
        t.check_invariants();
    }

    #[test]
    fn an_ephemeral_cap_drops_the_domains_own_oldest() {
        let mut t = store(16);
        let a = t.new_pool(1, EPH, [0; 2]).unwrap();
        let b = t.new_pool(2, EPH, [0; 2]).unwrap();
        t.put(2, b, oid(1), 0, &page(0)).unwrap();
        t.configure(
            1,
            ClientConfig {
                eph_cap: 3,
                ..ClientConfig::default()
            },
        );
        for i in 0..10 {
            t.put(1, a, oid(1), i, &page(i as u8)).unwrap();
        }
        assert_eq!(t.client_stats(1).unwrap().eph_pages, 3);
        assert!(t.peek(1, a, oid(1), 9).is_some());
        assert!(t.peek(1, a, oid(1), 6).is_none());
        assert!(
            t.peek(2, b, oid(1), 0).is_some(),
            "the other domain kept its page"
        );
        t.check_invariants();
    }

    #[test]
    fn frozen_domains_cannot_put_but_can_get_and_flush() {
        let mut t = store(4);
        let p = t.new_pool(1, EPH, [0; 2]).unwrap();
        t.put(1, p, oid(1), 0, &page(0)).unwrap();
        t.configure(
            1,
            ClientConfig {
                frozen: true,
                ..t.config(1)
            },
        );
        assert_eq!(t.put(1, p, oid(1), 1, &page(1)), Err(Error::Frozen));
        assert_eq!(Error::Frozen.errno(), EFROZEN);
        let mut out = [0u8; PAGE];
        assert_eq!(t.get(1, p, oid(1), 0, &mut out), Ok(true));
        t.put(1, p, oid(1), 0, &page(0)).unwrap_err();
        assert_eq!(t.flush_page(1, p, oid(1), 0), Ok(false));
        t.check_invariants();
    }

    #[test]
    fn compression_saves_room_and_round_trips() {
        let mut t = store(4);
        t.configure(
            1,
            ClientConfig {
                compress: true,
                ..ClientConfig::default()
            },
        );
        let p = t.new_pool(1, EPH, [0; 2]).unwrap();
        // Sixty mostly-zero pages fit in a four-page budget.
        for i in 0..60 {
            t.put(1, p, oid(1), i, &sparse(i as u8)).unwrap();
        }
        let s = t.stats();
        assert_eq!(s.pages, 60);
        assert_eq!(s.compressed_pages, 60);
        assert!(s.bytes < 4 * PAGE as u64);
        assert_eq!(s.evictions, 0);
        // An incompressible page is kept raw (making room by dropping the
        // oldest compressed ones).
        t.put(1, p, oid(2), 0, &noise(3)).unwrap();
        let s2 = t.stats();
        assert_eq!(s2.pages - s2.compressed_pages, 1);
        assert_eq!(s2.pages, 61 - s2.evictions);
        let mut out = [0u8; PAGE];
        assert_eq!(t.get(1, p, oid(2), 0, &mut out), Ok(true));
        assert_eq!(out, noise(3));
        assert_eq!(t.get(1, p, oid(1), 59, &mut out), Ok(true));
        assert_eq!(out, sparse(59));
        t.check_invariants();
    }

    #[test]
    fn flush_client_drops_oldest_ephemeral_pages_only() {
        let mut t = store(8);
        quota(&mut t, 1, 2);
        let e = t.new_pool(1, EPH, [0; 2]).unwrap();
        let p = t.new_pool(1, PERS, [0; 2]).unwrap();
        for i in 0..3 {
            t.put(1, e, oid(1), i, &page(0)).unwrap();
        }
        t.put(1, p, oid(1), 0, &page(0)).unwrap();
        assert_eq!(t.flush_client(1, 2), 2);
        assert!(t.peek(1, e, oid(1), 2).is_some());
        assert_eq!(t.flush_client(1, 10), 1);
        assert_eq!(t.client_stats(1).unwrap().pers_pages, 1);
        t.check_invariants();
    }
}
