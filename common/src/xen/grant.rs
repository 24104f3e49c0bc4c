//! Grant tables, version 1, as Xen on Arm offers them to auto-translated
//! guests.
//!
//! A domain's grant table is a run of shared frames holding
//! `grant_entry_v1 { u16 flags; u16 domid; u32 frame; }` (512 per frame)
//! that the guest writes and the hypervisor reads and marks. Beside them
//! each domain has the "active" entries (pin counts of its grants others
//! map or copy through, Xen's `active_grant_entry`) and the maptrack of
//! what it maps of others (handle → granter, ref, where, how).
//!
//! Entries are only touched through [`Page`] atomics: an entry is one
//! aligned 64-bit word, read once, validated, and GTF_reading/GTF_writing
//! are set with a compare-and-swap of the whole word, retried at most
//! [`SET_STATUS_TRIES`] times (Xen's `_set_status_v1`), so a guest racing
//! its own entry gets GNTST_general_error, never a livelock or a torn view.
//! The frame an entry names is read in the same word that the swap
//! succeeded on, and kept in the active entry while pinned, as in Xen:
//! later changes of the entry do not move a live mapping.
//!
//! Handles: allocation and insertion are one step ([`GrantTable`]'s
//! `insert`, under the caller's `&mut`, i.e. the one lock around [`Xen`]).
//! The seed-000 lesson: a handle picked in one step and filled in another
//! lets two vCPUs mapping at once both pick the same free handle, and the
//! second mapping silently overwrites the first (whose pin then leaks and
//! whose unmap releases the wrong grant). Here no handle is ever visible as
//! free once returned. Freed handles go to the tail of a FIFO free list
//! (as Xen's), so a stale handle is reused as late as possible.
//!
//! Decided, differently from Xen (each also noted where it applies):
//! - When a granter is destroyed, mappings other domains hold of its pages
//!   are revoked: removed from the mappers' translations and marked in their
//!   maptrack, whose later unmap succeeds and only frees the handle. Xen
//!   keeps the page alive until the mapper unmaps; our pages go back to a
//!   heap another domain may get.
//! - The target of a map must be a ballooned RAM frame (a hole) or an empty
//!   frame outside the mapper's RAM (Xen/arm replaces whatever is there).
//!   Unmap needs the exact frame recorded for the handle (Xen/arm accepts
//!   any frame showing the same page).
//! - `dev_bus_addr` returned by map is the granted frame's guest-physical
//!   address in the granter (Xen gives the machine address; that equals it
//!   for the direct-mapped granters whose mappers use it, and host
//!   addresses are not shown to guests here).
//! - GNTTABOP_cache_flush answers -ENOSYS (Xen/arm implements it for
//!   direct-mapped domains that hand machine addresses to devices; there
//!   are none here, and a mapping is cacheable on both sides). Linux only
//!   uses it with swiotlb-xen, which XENFEAT_not_direct_mapped turns off.
//! - Unmapping never needs the policy (it only releases).
//! - A copy names a frame of its own with DOMID_SELF only, as in Xen (its
//!   own domain id is GNTST_permission_denied there too); the frame must
//!   be plain RAM of the caller (Xen also accepts its own grant frames).
//!
//! Limits, as Xen's defaults: [`PIN_LIMIT`] pins of each kind per grant,
//! [`MAX_HANDLES`] live handles per domain (maptrack grows in steps of
//! 256 entries, so a domain that maps little costs little).
//!
//! Refused entries of a batch get their GNTST_ status and the call returns
//! 0, as in Xen; they are logged through [`Domain::deny`] once per trap
//! (the count and the first reason), so a guest cannot flood the log.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::abi::*;
use super::{Action, CAP_CONTROL, Domain, Env, HostFrame, PAGE_SIZE, Page, Reply, Slot, Xen};

/// Frames a table starts with (Xen/arm's INITIAL_NR_GRANT_FRAMES).
pub const INITIAL_FRAMES: u32 = 1;
/// Entries of a batched operation handled per trap; the rest continues.
pub const GRANT_CHUNK: u64 = 32;
/// Maptrack entries per allocation step (Xen: one 4 KiB maptrack frame of
/// 16-byte entries).
const MAPTRACK_PER_CHUNK: u32 = 256;
/// Maptrack steps per domain (Xen's default gnttab_max_maptrack_frames).
const MAPTRACK_CHUNKS: u32 = 1024;
/// Handles (live mappings) a domain may hold.
pub const MAX_HANDLES: u32 = MAPTRACK_PER_CHUNK * MAPTRACK_CHUNKS;
/// Pins of one kind (read-only, writable) per grant: Xen's 8-bit pin
/// counters refuse from 128 on (GNTPIN_incr2oflow_mask).
pub const PIN_LIMIT: u16 = 128;
/// Compare-and-swap attempts on a guest-written entry (Xen: 5).
pub const SET_STATUS_TRIES: u32 = 5;
/// What setup_table reports for a frame not placed in the guest's map
/// (Xen's INVALID_GFN).
pub const INVALID_GFN: u64 = u64::MAX;

/// End of the maptrack free list.
const NONE: u32 = u32::MAX;
/// GNTTABOP_CMD_MASK: bits above carry a continuation argument (only
/// cache_flush may set them).
const CMD_MASK: u32 = 0xfff;
/// GNTMAP flags a map on an auto-translated guest may not carry.
const GNTMAP_NOT_AUTO: u32 = GNTMAP_DEVICE_MAP | GNTMAP_APPLICATION_MAP | GNTMAP_CONTAINS_PTE;

// Layouts of grant_table.h on a 64-bit guest (guest handles are 8 bytes).
/// `gnttab_map_grant_ref`: host_addr u64 @0, flags u32 @8, ref u32 @12,
/// dom u16 @16, status i16 @18, handle u32 @20, dev_bus_addr u64 @24.
const MAP_SIZE: usize = 32;
/// `gnttab_unmap_grant_ref`: host_addr u64 @0, dev_bus_addr u64 @8,
/// handle u32 @16, status i16 @20. `gnttab_unmap_and_replace` is the same
/// with new_addr in place of dev_bus_addr.
const UNMAP_SIZE: usize = 24;
/// `gnttab_copy`: source {u64 ref/gmfn @0, domid u16 @8, offset u16 @10}
/// (16 bytes), dest the same @16, len u16 @32, flags u16 @34, status i16
/// @36, padded to 40.
const COPY_SIZE: usize = 40;
/// `gnttab_swap_grant_ref`: ref_a u32 @0, ref_b u32 @4, status i16 @8.
const SWAP_SIZE: usize = 12;
/// `gnttab_query_size`: dom u16 @0, nr_frames u32 @4, max_nr_frames u32
/// @8, status i16 @12.
const QUERY_SIZE_SIZE: usize = 16;
/// `gnttab_setup_table`: dom u16 @0, nr_frames u32 @4, status i16 @8,
/// frame_list handle @16.
const SETUP_TABLE_SIZE: usize = 24;
/// `gnttab_get_status_frames`: nr_frames u32 @0, dom u16 @4, status i16
/// @6, frame_list handle @8.
const GET_STATUS_FRAMES_SIZE: usize = 16;
/// `gnttab_get_version`: dom u16 @0, pad u16, version u32 @4.
const GET_VERSION_SIZE: usize = 8;

/// One mapping a domain holds of another's grant (a maptrack entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The granting domain.
    pub granter: DomId,
    /// The grant reference in the granter's table.
    pub gref: u32,
    /// The frame of the mapper's guest-physical map it is mapped at.
    pub gfn: u64,
    /// Mapped read-only.
    pub readonly: bool,
    /// The granter is gone and the mapping was removed; only the handle
    /// remains, for the mapper to unmap.
    pub revoked: bool,
}

#[derive(Clone, Copy, Debug)]
enum Track {
    /// A free handle and the next one on the free list.
    Free(u32),
    Live(Mapping),
}

/// A grant of this domain pinned by mappings or a copy in progress (Xen's
/// active grant entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pin {
    /// The domain it is pinned for (no other may use it while pinned).
    pub mapper: DomId,
    /// The granter's frame, as the entry named it when first pinned.
    pub gfn: u64,
    /// Read-only pins.
    pub readers: u16,
    /// Writable pins.
    pub writers: u16,
}

/// Why one entry of a batch was refused.
#[derive(Clone, Copy, Debug)]
struct Fail {
    status: i16,
    why: &'static str,
    val: u64,
}

fn fail(status: i16, why: &'static str, val: u64) -> Fail {
    Fail { status, why, val }
}

/// A domain's grant table and maptrack.
pub struct GrantTable {
    max_frames: u32,
    frames: Vec<Box<Page>>,
    /// Pinned entries by ref.
    active: BTreeMap<u32, Pin>,
    /// Maptrack in steps of [`MAPTRACK_PER_CHUNK`] entries.
    maptrack: Vec<Vec<Track>>,
    free_head: u32,
    free_tail: u32,
    live: u32,
}

impl GrantTable {
    /// A table of [`INITIAL_FRAMES`] frames (fewer if `max_frames` is
    /// smaller) that may grow to `max_frames` frames.
    pub fn new(max_frames: u32) -> Self {
        GrantTable {
            max_frames,
            frames: (0..INITIAL_FRAMES.min(max_frames))
                .map(|_| Page::new_zeroed())
                .collect(),
            active: BTreeMap::new(),
            maptrack: Vec::new(),
            free_head: NONE,
            free_tail: NONE,
            live: 0,
        }
    }

    /// Grant frame `idx`, allocated (with the ones below it) on first use;
    /// EINVAL at or beyond the limit.
    pub fn frame(&mut self, idx: u32) -> Result<HostFrame, i32> {
        if idx >= self.max_frames {
            return Err(EINVAL);
        }
        while self.frames.len() <= idx as usize {
            self.frames.push(Page::new_zeroed());
        }
        self.frames
            .get(idx as usize)
            .map(|p| p.frame())
            .ok_or(EINVAL)
    }

    /// Frames allocated now.
    pub fn nr_frames(&self) -> u32 {
        self.frames.len() as u32
    }

    /// Frames the table may grow to.
    pub fn max_frames(&self) -> u32 {
        self.max_frames
    }

    /// Grant references valid now.
    pub fn nr_entries(&self) -> u32 {
        self.nr_frames().saturating_mul(GRANT_ENTRIES_PER_FRAME)
    }

    /// The page and offset of entry `gref`; None beyond the table.
    fn entry_at(&self, gref: u32) -> Option<(&Page, usize)> {
        let page = self.frames.get((gref / GRANT_ENTRIES_PER_FRAME) as usize)?;
        Some((
            page,
            (gref % GRANT_ENTRIES_PER_FRAME) as usize * GRANT_ENTRY_V1_SIZE,
        ))
    }

    /// Entry `gref` as (flags, domid, frame), read atomically.
    pub fn entry(&self, gref: u32) -> Option<(u16, DomId, u32)> {
        let (page, off) = self.entry_at(gref)?;
        let w = page.load64(off);
        Some((w as u16, (w >> 16) as u16, (w >> 32) as u32))
    }

    /// Writes entry `gref` as the guest would (tests and fuzzing); false
    /// beyond the table.
    #[cfg(any(test, feature = "testenv"))]
    pub fn set_entry(&self, gref: u32, flags: u16, domid: DomId, frame: u32) -> bool {
        let Some((page, off)) = self.entry_at(gref) else {
            return false;
        };
        page.store64(
            off,
            u64::from(flags) | u64::from(domid) << 16 | u64::from(frame) << 32,
        );
        true
    }

    /// The pin of entry `gref`; None when unpinned.
    pub fn pin(&self, gref: u32) -> Option<Pin> {
        self.active.get(&gref).copied()
    }

    /// The refs pinned now.
    pub fn pinned(&self) -> impl Iterator<Item = u32> + '_ {
        self.active.keys().copied()
    }

    /// Whether a pinned grant names this domain's frame `gfn` (its page is
    /// then seen by another domain).
    pub fn gfn_pinned(&self, gfn: u64) -> bool {
        self.active.values().any(|a| a.gfn == gfn)
    }

    /// The mapping behind `handle`, if it is live.
    pub fn mapping(&self, handle: u32) -> Option<Mapping> {
        match self.track(handle)? {
            Track::Live(m) => Some(*m),
            Track::Free(_) => None,
        }
    }

    /// Live handles and their mappings, in handle order.
    pub fn mappings(&self) -> impl Iterator<Item = (u32, Mapping)> + '_ {
        self.maptrack.iter().enumerate().flat_map(|(c, chunk)| {
            chunk.iter().enumerate().filter_map(move |(i, t)| match t {
                Track::Live(m) => Some((c as u32 * MAPTRACK_PER_CHUNK + i as u32, *m)),
                Track::Free(_) => None,
            })
        })
    }

    /// Number of live handles.
    pub fn nr_mappings(&self) -> u32 {
        self.live
    }

    fn track(&self, h: u32) -> Option<&Track> {
        self.maptrack
            .get((h / MAPTRACK_PER_CHUNK) as usize)?
            .get((h % MAPTRACK_PER_CHUNK) as usize)
    }

    fn track_mut(&mut self, h: u32) -> Option<&mut Track> {
        self.maptrack
            .get_mut((h / MAPTRACK_PER_CHUNK) as usize)?
            .get_mut((h % MAPTRACK_PER_CHUNK) as usize)
    }

    /// Whether a handle can be had.
    fn has_room(&self) -> bool {
        self.free_head != NONE || (self.maptrack.len() as u32) < MAPTRACK_CHUNKS
    }

    /// Adds a step of free handles at the tail of the free list.
    fn grow_maptrack(&mut self) -> bool {
        let chunk = self.maptrack.len() as u32;
        if chunk >= MAPTRACK_CHUNKS {
            return false;
        }
        let base = chunk * MAPTRACK_PER_CHUNK;
        let last = base + MAPTRACK_PER_CHUNK - 1;
        self.maptrack.push(
            (base..=last)
                .map(|h| Track::Free(if h == last { NONE } else { h + 1 }))
                .collect(),
        );
        self.append_free(base, last);
        true
    }

    /// Links the free run `first..=last` (already chained) after the tail.
    fn append_free(&mut self, first: u32, last: u32) {
        if self.free_tail == NONE {
            self.free_head = first;
        } else if let Some(t) = self.track_mut(self.free_tail) {
            *t = Track::Free(first);
        }
        self.free_tail = last;
    }

    /// Takes a free handle and records `m` under it, in one step: a handle
    /// is never seen free once handed out (see the module doc). None when
    /// [`MAX_HANDLES`] are live.
    fn insert(&mut self, m: Mapping) -> Option<u32> {
        if self.free_head == NONE && !self.grow_maptrack() {
            return None;
        }
        let h = self.free_head;
        let slot = self.track_mut(h)?;
        let Track::Free(next) = *slot else {
            return None;
        };
        *slot = Track::Live(m);
        self.free_head = next;
        if next == NONE {
            self.free_tail = NONE;
        }
        self.live += 1;
        Some(h)
    }

    /// Frees a live handle (to the tail of the free list); its mapping.
    fn remove(&mut self, h: u32) -> Option<Mapping> {
        let slot = self.track_mut(h)?;
        let Track::Live(m) = *slot else {
            return None;
        };
        *slot = Track::Free(NONE);
        self.append_free(h, h);
        self.live -= 1;
        Some(m)
    }

    fn revoke(&mut self, h: u32) {
        if let Some(Track::Live(m)) = self.track_mut(h) {
            m.revoked = true;
        }
    }

    /// Drops everything (the domain is going).
    fn clear(&mut self) {
        self.frames.clear();
        self.active.clear();
        self.maptrack.clear();
        self.free_head = NONE;
        self.free_tail = NONE;
        self.live = 0;
    }
}

/// Sets GTF_reading, and GTF_writing unless `readonly`, in entry `off` of
/// `page` for `mapper`: Xen's `_set_status_v1`. Unless the entry is already
/// `pinned` its type must be permit_access (without GTF_sub_page for a
/// `map`) and its domid `mapper`. Returns the frame the entry names.
fn set_status(
    page: &Page,
    off: usize,
    mapper: DomId,
    readonly: bool,
    map: bool,
    pinned: bool,
) -> Result<u32, Fail> {
    let mask = if map {
        GTF_TYPE_MASK | GTF_SUB_PAGE
    } else {
        GTF_TYPE_MASK
    };
    let mut cur = page.load64(off);
    for _ in 0..SET_STATUS_TRIES {
        let (flags, domid) = (cur as u16, (cur >> 16) as u16);
        if !pinned && (flags & mask != GTF_PERMIT_ACCESS || domid != mapper) {
            return Err(fail(
                GNTST_GENERAL_ERROR,
                "entry does not permit access to this domain, flags",
                cur,
            ));
        }
        let mut set = GTF_READING;
        if !readonly {
            if flags & GTF_READONLY != 0 {
                return Err(fail(
                    GNTST_GENERAL_ERROR,
                    "writable use of a read-only grant, entry",
                    cur,
                ));
            }
            set |= GTF_WRITING;
        }
        match page.cas64(off, cur, cur | u64::from(set)) {
            Ok(_) => return Ok((cur >> 32) as u32),
            Err(now) => cur = now,
        }
    }
    Err(fail(
        GNTST_GENERAL_ERROR,
        "entry changing under the update, entry",
        cur,
    ))
}

/// Clears GTF bits in entry `gref` of `gt`.
fn clear_flags(gt: &GrantTable, gref: u32, bits: u16) {
    if let Some((page, off)) = gt.entry_at(gref) {
        page.fetch_and64(off, !u64::from(bits));
    }
}

/// Pins grant `gref` of `granter` for `mapper` (Xen's map path and
/// acquire_grant_for_copy for a v1 entry); the granter's frame.
fn acquire(
    granter: &mut Domain,
    env: &dyn Env,
    gref: u32,
    mapper: DomId,
    readonly: bool,
    map: bool,
) -> Result<u64, Fail> {
    let gt = &granter.grant;
    let Some((page, off)) = gt.entry_at(gref) else {
        return Err(fail(
            GNTST_BAD_GNTREF,
            "grant ref beyond the table",
            u64::from(gref),
        ));
    };
    let act = gt.active.get(&gref).copied();
    if let Some(a) = act {
        if a.mapper != mapper {
            return Err(fail(
                GNTST_GENERAL_ERROR,
                "grant pinned for domain",
                u64::from(a.mapper),
            ));
        }
        if (if readonly { a.readers } else { a.writers }) >= PIN_LIMIT {
            return Err(fail(
                GNTST_GENERAL_ERROR,
                "pin count at its limit, ref",
                u64::from(gref),
            ));
        }
    }
    let gfn = match act {
        Some(a) if readonly || a.writers > 0 => a.gfn,
        Some(a) => {
            set_status(page, off, mapper, readonly, map, true)?;
            a.gfn
        }
        None => {
            let gfn = u64::from(set_status(page, off, mapper, readonly, map, false)?);
            if !granter.is_plain_ram(gfn) || env.ram_page(granter.id(), gfn).is_none() {
                // Back to what the pin count (none) says.
                clear_flags(
                    gt,
                    gref,
                    GTF_READING | if readonly { 0 } else { GTF_WRITING },
                );
                return Err(fail(
                    GNTST_BAD_PAGE,
                    "granted frame is not plain RAM of the granter",
                    gfn,
                ));
            }
            gfn
        }
    };
    let a = granter.grant.active.entry(gref).or_insert(Pin {
        mapper,
        gfn,
        readers: 0,
        writers: 0,
    });
    if readonly {
        a.readers += 1;
    } else {
        a.writers += 1;
    }
    Ok(gfn)
}

/// Drops one pin taken by [`acquire`]; clears GTF_writing when no writable
/// pin is left and GTF_reading when none is (Xen's reduce_status_for_pin).
fn release(granter: &mut Domain, gref: u32, readonly: bool) {
    let gt = &mut granter.grant;
    let Some(a) = gt.active.get_mut(&gref) else {
        return;
    };
    if readonly {
        a.readers = a.readers.saturating_sub(1);
    } else {
        a.writers = a.writers.saturating_sub(1);
    }
    let mut bits = 0;
    if a.writers == 0 {
        bits |= GTF_WRITING;
    }
    if a.readers == 0 && a.writers == 0 {
        bits |= GTF_READING;
        gt.active.remove(&gref);
    }
    clear_flags(gt, gref, bits);
}

/// Undoes a grant mapping's place in `d`'s p2m (the caller unmapped it
/// from the translation): a RAM frame becomes a hole again, another frame
/// empty.
fn drop_slot(d: &mut Domain, handle: u32, gfn: u64) {
    if d.p2m.get(&gfn) == Some(&Slot::Foreign(handle)) {
        if d.is_ram(gfn) {
            d.p2m.insert(gfn, Slot::Hole);
        } else {
            d.p2m.remove(&gfn);
        }
    }
}

/// One GNTTABOP_map_grant_ref entry.
fn map_one(
    xen: &mut Xen,
    env: &dyn Env,
    mapper: DomId,
    b: &mut [u8; MAP_SIZE],
) -> Result<(), Fail> {
    let (host_addr, flags, gref, granter) =
        (get_u64(b, 0), get_u32(b, 8), get_u32(b, 12), get_u16(b, 16));
    // grant_table.c map_grant_ref: no pin increment → bad_gntref; device,
    // application and PTE mappings are refused for translated guests.
    if flags & (GNTMAP_DEVICE_MAP | GNTMAP_HOST_MAP) == 0 {
        return Err(fail(
            GNTST_BAD_GNTREF,
            "map without GNTMAP_host_map, flags",
            u64::from(flags),
        ));
    }
    if flags & GNTMAP_NOT_AUTO != 0 {
        return Err(fail(
            GNTST_GENERAL_ERROR,
            "device/application/PTE map on a translated guest, flags",
            u64::from(flags),
        ));
    }
    // DOMID_SELF is not resolved here (Xen: rcu_lock_domain_by_id).
    if xen.domain(granter).is_none() {
        return Err(fail(
            GNTST_BAD_DOMAIN,
            "map from missing domain",
            u64::from(granter),
        ));
    }
    if !xen.may_talk(mapper, granter) {
        return Err(fail(
            GNTST_PERMISSION_DENIED,
            "map from unlinked domain",
            u64::from(granter),
        ));
    }
    if !xen.domain(mapper).is_some_and(|d| d.grant.has_room()) {
        return Err(fail(
            GNTST_NO_SPACE,
            "maptrack full, live handles",
            u64::from(MAX_HANDLES),
        ));
    }
    let readonly = flags & GNTMAP_READONLY != 0;
    let Some(g) = xen.domain_mut(granter) else {
        return Err(fail(
            GNTST_BAD_DOMAIN,
            "map from missing domain",
            u64::from(granter),
        ));
    };
    let ggfn = acquire(g, env, gref, mapper, readonly, true)?;
    let frame = env.ram_page(granter, ggfn).map(|p| p.frame());
    let m = Mapping {
        granter,
        gref,
        gfn: host_addr >> 12,
        readonly,
        revoked: false,
    };
    match place_mapping(xen, env, mapper, host_addr, frame, m) {
        Ok(h) => {
            put_u32(b, 20, h);
            put_u64(b, 24, ggfn << 12);
            Ok(())
        }
        Err(f) => {
            if let Some(g) = xen.domain_mut(granter) {
                release(g, gref, readonly);
            }
            Err(f)
        }
    }
}

/// Maps `frame` at `host_addr` of `mapper` and records `m`; the handle.
/// (Xen/arm's create_grant_host_mapping: any failure is general_error.)
fn place_mapping(
    xen: &mut Xen,
    env: &dyn Env,
    mapper: DomId,
    host_addr: u64,
    frame: Option<HostFrame>,
    m: Mapping,
) -> Result<u32, Fail> {
    let Some(frame) = frame else {
        return Err(fail(GNTST_GENERAL_ERROR, "granted page gone", m.gfn));
    };
    if host_addr & (PAGE_SIZE as u64 - 1) != 0 {
        return Err(fail(
            GNTST_GENERAL_ERROR,
            "host_addr not page aligned",
            host_addr,
        ));
    }
    let Some(d) = xen.domain_mut(mapper) else {
        return Err(fail(GNTST_GENERAL_ERROR, "mapper gone", u64::from(mapper)));
    };
    let gfn = m.gfn;
    match d.p2m.get(&gfn) {
        Some(Slot::Hole) => {}
        None if !d.is_ram(gfn) => {}
        _ => {
            return Err(fail(
                GNTST_GENERAL_ERROR,
                "map over a frame in use (not a ballooned or empty frame)",
                gfn,
            ));
        }
    }
    if env.map_frame(mapper, gfn, frame, !m.readonly).is_err() {
        return Err(fail(
            GNTST_GENERAL_ERROR,
            "map at a frame the translation refuses",
            gfn,
        ));
    }
    let Some(h) = d.grant.insert(m) else {
        let _ = env.unmap_frame(mapper, gfn);
        return Err(fail(
            GNTST_NO_SPACE,
            "maptrack full, live handles",
            u64::from(MAX_HANDLES),
        ));
    };
    d.p2m.insert(gfn, Slot::Foreign(h));
    Ok(h)
}

/// One unmap_grant_ref (`new_addr` 0) or unmap_and_replace entry.
fn unmap_one(
    xen: &mut Xen,
    env: &dyn Env,
    mapper: DomId,
    host_addr: u64,
    handle: u32,
    new_addr: u64,
) -> Result<(), Fail> {
    let Some(d) = xen.domain_mut(mapper) else {
        return Err(fail(
            GNTST_BAD_HANDLE,
            "unmap by missing domain",
            u64::from(mapper),
        ));
    };
    let Some(m) = d.grant.mapping(handle) else {
        return Err(fail(
            GNTST_BAD_HANDLE,
            "unmap of a handle not in use",
            u64::from(handle),
        ));
    };
    if m.revoked {
        // The granter went away and the mapping with it.
        d.grant.remove(handle);
        return Ok(());
    }
    // grant_table.c unmap_common: the host mapping is only touched when
    // host_addr is given; otherwise nothing is done and the handle stays.
    if host_addr == 0 {
        return Ok(());
    }
    // arm/mm.c replace_grant_host_mapping: no replacement address;
    // p2m_remove_mapping: the frame must show this mapping (-EILSEQ).
    if new_addr != 0 {
        return Err(fail(
            GNTST_GENERAL_ERROR,
            "unmap_and_replace with a new address",
            new_addr,
        ));
    }
    if host_addr >> 12 != m.gfn {
        return Err(fail(
            GNTST_GENERAL_ERROR,
            "unmap at a frame the handle is not mapped at",
            host_addr,
        ));
    }
    if env.unmap_frame(mapper, m.gfn).is_err() {
        return Err(fail(
            GNTST_GENERAL_ERROR,
            "translation refused the unmap of frame",
            m.gfn,
        ));
    }
    drop_slot(d, handle, m.gfn);
    d.grant.remove(handle);
    if let Some(g) = xen.domain_mut(m.granter) {
        release(g, m.gref, m.readonly);
    }
    Ok(())
}

/// One side of a copy: (domain, frame in it, offset, through a grant).
#[derive(Clone, Copy)]
struct CopySide {
    dom: DomId,
    ptr: u64,
    offset: u16,
    gref: bool,
}

/// Resolves a copy side's domain (grant_table.c gnttab_copy_lock_domain:
/// a frame may only be named by DOMID_SELF).
fn copy_domain(xen: &Xen, caller: DomId, domid: DomId, gref: bool) -> Result<DomId, Fail> {
    if domid != DOMID_SELF && !gref {
        return Err(fail(
            GNTST_PERMISSION_DENIED,
            "copy of a frame of domain",
            u64::from(domid),
        ));
    }
    let dom = Xen::resolve(caller, domid);
    if xen.domain(dom).is_none() {
        return Err(fail(
            GNTST_BAD_DOMAIN,
            "copy with missing domain",
            u64::from(domid),
        ));
    }
    Ok(dom)
}

/// Takes what a copy side needs: a temporary pin of its grant, or checks
/// the caller's frame. The frame in the side's domain.
fn claim(
    xen: &mut Xen,
    env: &dyn Env,
    caller: DomId,
    s: CopySide,
    readonly: bool,
) -> Result<u64, Fail> {
    let Some(d) = xen.domain_mut(s.dom) else {
        return Err(fail(
            GNTST_BAD_DOMAIN,
            "copy with missing domain",
            u64::from(s.dom),
        ));
    };
    if s.gref {
        // The union's ref is the low 32 bits.
        return acquire(d, env, s.ptr as u32, caller, readonly, false);
    }
    if !d.is_plain_ram(s.ptr) || env.ram_page(s.dom, s.ptr).is_none() {
        return Err(fail(
            GNTST_BAD_PAGE,
            "copy with a frame that is not plain RAM",
            s.ptr,
        ));
    }
    Ok(s.ptr)
}

fn unclaim(xen: &mut Xen, s: CopySide, readonly: bool) {
    if s.gref
        && let Some(d) = xen.domain_mut(s.dom)
    {
        release(d, s.ptr as u32, readonly);
    }
}

/// One GNTTABOP_copy entry.
fn copy_one(
    xen: &mut Xen,
    env: &dyn Env,
    caller: DomId,
    b: &mut [u8; COPY_SIZE],
) -> Result<(), Fail> {
    let (len, flags) = (get_u16(b, 32), get_u16(b, 34));
    if len == 0 {
        return Ok(());
    }
    let side = |at: usize, gref: bool| -> Result<CopySide, Fail> {
        Ok(CopySide {
            dom: copy_domain(xen, caller, get_u16(b, at + 8), gref)?,
            ptr: get_u64(b, at),
            offset: get_u16(b, at + 10),
            gref,
        })
    };
    let src = side(0, flags & GNTCOPY_SOURCE_GREF != 0)?;
    let dst = side(16, flags & GNTCOPY_DEST_GREF != 0)?;
    if !xen.may_talk(caller, src.dom) || !xen.may_talk(caller, dst.dom) {
        let other = if xen.may_talk(caller, src.dom) {
            dst.dom
        } else {
            src.dom
        };
        return Err(fail(
            GNTST_PERMISSION_DENIED,
            "copy with unlinked domain",
            u64::from(other),
        ));
    }
    let sgfn = claim(xen, env, caller, src, true)?;
    let dgfn = match claim(xen, env, caller, dst, false) {
        Ok(g) => g,
        Err(f) => {
            unclaim(xen, src, true);
            return Err(f);
        }
    };
    let r = copy_bytes(
        env,
        (src.dom, sgfn, src.offset),
        (dst.dom, dgfn, dst.offset),
        len,
    );
    unclaim(xen, dst, false);
    unclaim(xen, src, true);
    r
}

/// Copies `len` bytes between two pages (as memmove when both are the
/// same page).
fn copy_bytes(
    env: &dyn Env,
    src: (DomId, u64, u16),
    dst: (DomId, u64, u16),
    len: u16,
) -> Result<(), Fail> {
    let (so, dof, len) = (usize::from(src.2), usize::from(dst.2), usize::from(len));
    if so + len > PAGE_SIZE || dof + len > PAGE_SIZE {
        return Err(fail(
            GNTST_BAD_COPY_ARG,
            "copy beyond the page, offset + len",
            (so.max(dof) + len) as u64,
        ));
    }
    let (Some(sp), Some(dp)) = (env.ram_page(src.0, src.1), env.ram_page(dst.0, dst.1)) else {
        return Err(fail(GNTST_GENERAL_ERROR, "copy page gone", src.1));
    };
    if dp.copy_range(dof, sp, so, len) {
        Ok(())
    } else {
        Err(fail(
            GNTST_GENERAL_ERROR,
            "copy out of the page at",
            so as u64,
        ))
    }
}

/// One GNTTABOP_swap_grant_ref entry (the caller's own table).
fn swap_one(
    xen: &mut Xen,
    _env: &dyn Env,
    dom: DomId,
    b: &mut [u8; SWAP_SIZE],
) -> Result<(), Fail> {
    let (a, c) = (get_u32(b, 0), get_u32(b, 4));
    let Some(d) = xen.domain(dom) else {
        return Err(fail(
            GNTST_GENERAL_ERROR,
            "swap by missing domain",
            u64::from(dom),
        ));
    };
    let gt = &d.grant;
    let (Some((pa, oa)), Some((pc, oc))) = (gt.entry_at(a), gt.entry_at(c)) else {
        return Err(fail(
            GNTST_BAD_GNTREF,
            "swap of a ref beyond the table",
            u64::from(a.max(c)),
        ));
    };
    if a == c {
        return Ok(());
    }
    if gt.active.contains_key(&a) || gt.active.contains_key(&c) {
        let busy = if gt.active.contains_key(&a) { a } else { c };
        return Err(fail(GNTST_EAGAIN, "swap of a pinned ref", u64::from(busy)));
    }
    let (wa, wc) = (pa.load64(oa), pc.load64(oc));
    pa.store64(oa, wc);
    pc.store64(oc, wa);
    Ok(())
}

/// Per-batch record of refused entries, logged once.
struct Refusals {
    n: u64,
    first: Option<(u64, Fail)>,
}

impl Refusals {
    fn note(&mut self, i: u64, f: Fail) {
        self.n += 1;
        if self.first.is_none() {
            self.first = Some((i, f));
        }
    }

    fn log(&self, xen: &mut Xen, env: &dyn Env, dom: DomId, name: &str, of: u64) {
        let Some((i, f)) = self.first else { return };
        if let Some(d) = xen.domain_mut(dom) {
            d.deny(
                env,
                i32::from(f.status),
                format_args!(
                    "grant {}: {} of {} entries (first: entry {}, {} {:#x}, GNTST {})",
                    name, self.n, of, i, f.why, f.val, f.status
                ),
            );
        }
    }
}

/// Handles one entry of a batch (its bytes, outputs filled in on success).
type EntryFn<const N: usize> = fn(&mut Xen, &dyn Env, DomId, &mut [u8; N]) -> Result<(), Fail>;

/// A batched operation on entries of `N` bytes.
struct Batch<const N: usize> {
    name: &'static str,
    /// The output fields written back; the status first.
    out: core::ops::Range<usize>,
    one: EntryFn<N>,
}

/// Runs a batched operation: at most [`GRANT_CHUNK`] entries from
/// `args[1]`, the rest as a continuation.
fn batch<const N: usize>(
    xen: &mut Xen,
    env: &dyn Env,
    dom: DomId,
    args: [u64; 5],
    count: u32,
    op: Batch<N>,
) -> Reply {
    let Batch { name, out, one } = op;
    let (uop, count) = (args[1], u64::from(count));
    let n = count.min(GRANT_CHUNK);
    let mut refused = Refusals { n: 0, first: None };
    for i in 0..n {
        let at = uop.wrapping_add(i * N as u64);
        let mut b: [u8; N] = match super::read_struct(env, at) {
            Ok(b) => b,
            Err(e) => {
                refused.log(xen, env, dom, name, i);
                return Reply::err(super::deny(
                    xen,
                    env,
                    dom,
                    e,
                    format_args!("grant {} entry {} at {:#x}", name, i, at),
                ));
            }
        };
        let status = match one(xen, env, dom, &mut b) {
            Ok(()) => GNTST_OKAY,
            Err(f) => {
                refused.note(i, f);
                f.status
            }
        };
        put_u16(&mut b, out.start, status as u16);
        let Some(bytes) = b.get(out.clone()) else {
            return Reply::err(EFAULT);
        };
        if env
            .write_virt(at.wrapping_add(out.start as u64), bytes)
            .is_err()
        {
            refused.log(xen, env, dom, name, i + 1);
            return Reply::err(super::deny(
                xen,
                env,
                dom,
                EFAULT,
                format_args!("grant {} status of entry {}", name, i),
            ));
        }
    }
    refused.log(xen, env, dom, name, n);
    if n < count {
        let mut next = args;
        next[1] = uop.wrapping_add(n * N as u64);
        next[2] = count - n;
        return Reply {
            ret: 0,
            action: Action::None,
            cont: Some(next),
        };
    }
    Reply::ret(0)
}

/// Whether `caller` may query or set up `target`'s table (Xen's
/// XSM_TARGET: itself, or a controlling domain).
fn may_inspect(xen: &Xen, caller: DomId, target: DomId) -> bool {
    caller == target
        || xen
            .domain(caller)
            .is_some_and(|d| d.cfg.caps & CAP_CONTROL != 0)
}

fn query_size(xen: &mut Xen, env: &dyn Env, dom: DomId, uop: u64, count: u32) -> Result<i64, i32> {
    if count != 1 {
        return Err(super::deny(
            xen,
            env,
            dom,
            EINVAL,
            format_args!("grant query_size count {}", count),
        ));
    }
    let mut b: [u8; QUERY_SIZE_SIZE] = super::read_struct(env, uop)
        .map_err(|e| super::deny(xen, env, dom, e, format_args!("grant query_size")))?;
    let target = Xen::resolve(dom, get_u16(&b, 0));
    let status = match xen.domain(target) {
        None => GNTST_BAD_DOMAIN,
        Some(_) if !may_inspect(xen, dom, target) => GNTST_PERMISSION_DENIED,
        Some(t) => {
            put_u32(&mut b, 4, t.grant.nr_frames());
            put_u32(&mut b, 8, t.grant.max_frames());
            GNTST_OKAY
        }
    };
    if status != GNTST_OKAY {
        super::deny(
            xen,
            env,
            dom,
            i32::from(status),
            format_args!("grant query_size of domain {}, GNTST", target),
        );
    }
    put_u16(&mut b, 12, status as u16);
    env.write_virt(uop, &b)?;
    Ok(0)
}

fn setup_table(xen: &mut Xen, env: &dyn Env, dom: DomId, uop: u64, count: u32) -> Result<i64, i32> {
    if count != 1 {
        return Err(super::deny(
            xen,
            env,
            dom,
            EINVAL,
            format_args!("grant setup_table count {}", count),
        ));
    }
    let b: [u8; SETUP_TABLE_SIZE] = super::read_struct(env, uop)
        .map_err(|e| super::deny(xen, env, dom, e, format_args!("grant setup_table")))?;
    let (target, nr, list) = (
        Xen::resolve(dom, get_u16(&b, 0)),
        get_u32(&b, 4),
        get_u64(&b, 16),
    );
    let status = if xen.domain(target).is_none() {
        GNTST_BAD_DOMAIN
    } else if !may_inspect(xen, dom, target) {
        GNTST_PERMISSION_DENIED
    } else {
        setup_frames(xen, env, target, nr, list)
    };
    if status != GNTST_OKAY {
        super::deny(
            xen,
            env,
            dom,
            i32::from(status),
            format_args!(
                "grant setup_table of {} frames of domain {}, GNTST",
                nr, target
            ),
        );
    }
    env.write_virt(uop.wrapping_add(8), &status.to_le_bytes())?;
    Ok(0)
}

/// Grows `target`'s table to `nr` frames and lists where each is placed in
/// its guest-physical map (INVALID_GFN where it is not): what Xen/arm's
/// gnttab_shared_gfn gives an auto-translated guest.
fn setup_frames(xen: &mut Xen, env: &dyn Env, target: DomId, nr: u32, list: u64) -> i16 {
    let Some(d) = xen.domain_mut(target) else {
        return GNTST_BAD_DOMAIN;
    };
    if nr > d.grant.max_frames() {
        return GNTST_GENERAL_ERROR;
    }
    if nr > 0 && d.grant.frame(nr - 1).is_err() {
        return GNTST_GENERAL_ERROR;
    }
    let placed: BTreeMap<u32, u64> = d
        .p2m
        .iter()
        .filter_map(|(g, s)| match s {
            Slot::GrantFrame(i) if *i < nr => Some((*i, *g)),
            _ => None,
        })
        .collect();
    for i in 0..nr {
        let gfn = placed.get(&i).copied().unwrap_or(INVALID_GFN);
        if env
            .write_virt(list.wrapping_add(u64::from(i) * 8), &gfn.to_le_bytes())
            .is_err()
        {
            return GNTST_BAD_VIRT_ADDR;
        }
    }
    GNTST_OKAY
}

fn get_status_frames(
    xen: &mut Xen,
    env: &dyn Env,
    dom: DomId,
    uop: u64,
    count: u32,
) -> Result<i64, i32> {
    if count != 1 {
        return Err(super::deny(
            xen,
            env,
            dom,
            EINVAL,
            format_args!("grant get_status_frames count {}", count),
        ));
    }
    let b: [u8; GET_STATUS_FRAMES_SIZE] = super::read_struct(env, uop)
        .map_err(|e| super::deny(xen, env, dom, e, format_args!("grant get_status_frames")))?;
    let (nr, target) = (get_u32(&b, 0), Xen::resolve(dom, get_u16(&b, 4)));
    let status = if xen.domain(target).is_none() {
        GNTST_BAD_DOMAIN
    } else if !may_inspect(xen, dom, target) {
        GNTST_PERMISSION_DENIED
    } else if nr > 0 {
        // Version 1 has no status frames.
        GNTST_GENERAL_ERROR
    } else {
        GNTST_OKAY
    };
    if status != GNTST_OKAY {
        super::deny(
            xen,
            env,
            dom,
            i32::from(status),
            format_args!("grant get_status_frames ({} frames, v1), GNTST", nr),
        );
    }
    env.write_virt(uop.wrapping_add(6), &status.to_le_bytes())?;
    Ok(0)
}

fn set_version(xen: &mut Xen, env: &dyn Env, dom: DomId, uop: u64) -> Result<i64, i32> {
    let b: [u8; 4] = super::read_struct(env, uop)
        .map_err(|e| super::deny(xen, env, dom, e, format_args!("grant set_version")))?;
    let version = get_u32(&b, 0);
    // grant_table.c gnttab_set_version: not 1 or 2 → EINVAL; 2 beyond the
    // domain's max_version (1 on Arm: GNTTAB_MAX_VERSION) → ENOSYS. The
    // version in force is written back either way.
    let res = match version {
        1 => Ok(0),
        2 => Err(ENOSYS),
        _ => Err(EINVAL),
    };
    env.write_virt(uop, &1u32.to_le_bytes())?;
    res.map_err(|e| {
        super::deny(
            xen,
            env,
            dom,
            e,
            format_args!("grant set_version {}", version),
        )
    })
}

fn get_version(xen: &mut Xen, env: &dyn Env, dom: DomId, uop: u64) -> Result<i64, i32> {
    let b: [u8; GET_VERSION_SIZE] = super::read_struct(env, uop)
        .map_err(|e| super::deny(xen, env, dom, e, format_args!("grant get_version")))?;
    let target = Xen::resolve(dom, get_u16(&b, 0));
    if xen.domain(target).is_none() {
        return Err(super::deny(
            xen,
            env,
            dom,
            ESRCH,
            format_args!("grant get_version of domain {}", target),
        ));
    }
    if !may_inspect(xen, dom, target) {
        return Err(super::deny(
            xen,
            env,
            dom,
            EPERM,
            format_args!("grant get_version of domain {}", target),
        ));
    }
    env.write_virt(uop.wrapping_add(4), &1u32.to_le_bytes())?;
    Ok(0)
}

/// grant_table_op(cmd = `args[0]`, uop = `args[1]`, count = `args[2]`).
///
/// Like Xen, `cmd` and `count` are C `unsigned int`s (the upper halves of
/// the registers are ignored), a count with bit 31 set is EINVAL, and the
/// bits of `cmd` above GNTTABOP_CMD_MASK are EINVAL.
pub fn op(xen: &mut Xen, env: &dyn Env, dom: DomId, vcpu: u32, args: [u64; 5]) -> Reply {
    // One maptrack per domain: the vCPU does not matter (Xen keeps per-vCPU
    // free lists only to avoid a lock; here one lock covers everything).
    let _ = vcpu;
    let (cmd, uop, count) = (args[0] as u32, args[1], args[2] as u32);
    if (count as i32) < 0 {
        return Reply::err(super::deny(
            xen,
            env,
            dom,
            EINVAL,
            format_args!("grant_table_op count {:#x}", count),
        ));
    }
    if cmd & !CMD_MASK != 0 && u64::from(cmd & CMD_MASK) != GNTTABOP_CACHE_FLUSH {
        return Reply::err(super::deny(
            xen,
            env,
            dom,
            EINVAL,
            format_args!("grant_table_op cmd {:#x}", cmd),
        ));
    }
    match u64::from(cmd & CMD_MASK) {
        GNTTABOP_MAP_GRANT_REF => batch::<MAP_SIZE>(
            xen,
            env,
            dom,
            args,
            count,
            Batch {
                name: "map_grant_ref",
                out: 18..MAP_SIZE,
                one: map_one,
            },
        ),
        GNTTABOP_UNMAP_GRANT_REF => batch::<UNMAP_SIZE>(
            xen,
            env,
            dom,
            args,
            count,
            Batch {
                name: "unmap_grant_ref",
                out: 20..22,
                one: |x, e, d, b| unmap_one(x, e, d, get_u64(b, 0), get_u32(b, 16), 0),
            },
        ),
        GNTTABOP_UNMAP_AND_REPLACE => batch::<UNMAP_SIZE>(
            xen,
            env,
            dom,
            args,
            count,
            Batch {
                name: "unmap_and_replace",
                out: 20..22,
                one: |x, e, d, b| unmap_one(x, e, d, get_u64(b, 0), get_u32(b, 16), get_u64(b, 8)),
            },
        ),
        GNTTABOP_COPY => batch::<COPY_SIZE>(
            xen,
            env,
            dom,
            args,
            count,
            Batch {
                name: "copy",
                out: 36..38,
                one: copy_one,
            },
        ),
        GNTTABOP_SWAP_GRANT_REF => batch::<SWAP_SIZE>(
            xen,
            env,
            dom,
            args,
            count,
            Batch {
                name: "swap_grant_ref",
                out: 8..10,
                one: swap_one,
            },
        ),
        GNTTABOP_QUERY_SIZE => query_size(xen, env, dom, uop, count).into(),
        GNTTABOP_SETUP_TABLE => setup_table(xen, env, dom, uop, count).into(),
        GNTTABOP_GET_STATUS_FRAMES => get_status_frames(xen, env, dom, uop, count).into(),
        GNTTABOP_SET_VERSION => set_version(xen, env, dom, uop).into(),
        GNTTABOP_GET_VERSION => get_version(xen, env, dom, uop).into(),
        // Only PV guests may transfer pages (opt_grant_transfer is false
        // without CONFIG_PV).
        GNTTABOP_TRANSFER => Reply::err(super::deny(
            xen,
            env,
            dom,
            EOPNOTSUPP,
            format_args!("grant transfer"),
        )),
        // dump_table has no case in do_grant_table_op; cache_flush: see
        // the module doc.
        _ => Reply::err(super::deny(
            xen,
            env,
            dom,
            ENOSYS,
            format_args!("grant_table_op {}", cmd),
        )),
    }
}

/// Releases what `dom` holds and revokes what others map of it; called
/// before its memory is scrubbed (see the module doc of [`super`]).
///
/// 1. Every mapping `dom` holds is removed from its translation, the
///    granter's entry unpinned (GTF_reading/GTF_writing cleared so the
///    granter can end access), the handle freed.
/// 2. Every mapping another domain holds of `dom`'s pages is removed from
///    that domain's translation (the frame becomes a hole if it is RAM,
///    else empty) and its maptrack entry marked revoked.
/// 3. `dom`'s grant frames are taken out of its translation and freed.
pub fn teardown(xen: &mut Xen, env: &dyn Env, dom: DomId) {
    let held: Vec<(u32, Mapping)> = match xen.domain(dom) {
        Some(d) => d.grant.mappings().collect(),
        None => return,
    };
    for (h, m) in held {
        if let Some(d) = xen.domain_mut(dom) {
            if !m.revoked {
                let _ = env.unmap_frame(dom, m.gfn);
                drop_slot(d, h, m.gfn);
            }
            d.grant.remove(h);
        }
        if !m.revoked
            && let Some(g) = xen.domain_mut(m.granter)
        {
            release(g, m.gref, m.readonly);
        }
    }
    let others: Vec<DomId> = xen.ids().filter(|&i| i != dom).collect();
    for o in others {
        let Some(d) = xen.domain_mut(o) else { continue };
        let theirs: Vec<(u32, u64)> = d
            .grant
            .mappings()
            .filter(|(_, m)| m.granter == dom && !m.revoked)
            .map(|(h, m)| (h, m.gfn))
            .collect();
        for (h, gfn) in theirs {
            let _ = env.unmap_frame(o, gfn);
            drop_slot(d, h, gfn);
            d.grant.revoke(h);
        }
    }
    if let Some(d) = xen.domain_mut(dom) {
        let frames: Vec<u64> = d
            .p2m
            .iter()
            .filter(|(_, s)| matches!(s, Slot::GrantFrame(_)))
            .map(|(g, _)| *g)
            .collect();
        for gfn in frames {
            let _ = env.unmap_frame(dom, gfn);
            if d.is_ram(gfn) {
                d.p2m.insert(gfn, Slot::Hole);
            } else {
                d.p2m.remove(&gfn);
            }
        }
        d.grant.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::super::testenv::{GRANT_GFN, MMIO_GFN, RAM_BASE_GFN, TestEnv};
    use super::super::{DomainConfig, hypercall};
    use super::*;
    use alloc::collections::BTreeSet;
    use alloc::vec;

    const D1: DomId = 1;
    const D2: DomId = 2;
    const D3: DomId = 3;
    const PAGES: usize = 32;
    /// A frame outside every domain's RAM, free for mappings.
    const FAR: u64 = 0x50000;
    const RW: u32 = GNTMAP_HOST_MAP;
    const RO: u32 = GNTMAP_HOST_MAP | GNTMAP_READONLY;

    fn g(i: u64) -> u64 {
        RAM_BASE_GFN + i
    }

    fn a(i: u64) -> u64 {
        g(i) << 12
    }

    /// Domains 1, 2, 3 with 32 frames each; 1 and 2 linked.
    fn setup() -> (TestEnv, Xen) {
        let env = TestEnv::new(&[D1, D2, D3], PAGES);
        let mut xen = env.xen();
        xen.allow(D1, D2);
        (env, xen)
    }

    fn call(xen: &mut Xen, env: &TestEnv, dom: DomId, vcpu: u32, args: [u64; 5]) -> Reply {
        env.current.set(dom);
        hypercall(xen, env, dom, vcpu, HC_GRANT_TABLE_OP, args)
    }

    /// grant_table_op run to completion; its return value.
    fn run(xen: &mut Xen, env: &TestEnv, dom: DomId, cmd: u64, uop: u64, count: u64) -> i64 {
        let mut r = call(xen, env, dom, 0, [cmd, uop, count, 0, 0]);
        let mut rounds = 0;
        while let Some(c) = r.cont {
            rounds += 1;
            assert!(rounds < 10_000);
            r = call(xen, env, dom, 0, c);
        }
        r.ret
    }

    fn grant(xen: &Xen, granter: DomId, gref: u32, flags: u16, to: DomId, frame: u64) {
        assert!(
            xen.domain(granter)
                .unwrap()
                .grant
                .set_entry(gref, flags, to, frame as u32)
        );
    }

    fn flags(xen: &Xen, dom: DomId, gref: u32) -> u16 {
        xen.domain(dom).unwrap().grant.entry(gref).unwrap().0
    }

    fn pin(xen: &Xen, dom: DomId, gref: u32) -> Option<(u16, u16)> {
        xen.domain(dom)
            .unwrap()
            .grant
            .pin(gref)
            .map(|p| (p.readers, p.writers))
    }

    fn page(env: &TestEnv, dom: DomId, frame: u64) -> HostFrame {
        env.ram_page(dom, g(frame)).unwrap().frame()
    }

    /// decrease_reservation of RAM frames `frames` (indices) of `dom`.
    fn balloon(xen: &mut Xen, env: &TestEnv, dom: DomId, frames: &[u64]) {
        env.current.set(dom);
        let list = a(0) + 2048;
        for (i, f) in frames.iter().enumerate() {
            env.poke(list + 8 * i as u64, &g(*f).to_le_bytes());
        }
        let mut r = [0u8; MEMORY_RESERVATION_SIZE];
        put_u64(&mut r, 0, list);
        put_u64(&mut r, 8, frames.len() as u64);
        put_u16(&mut r, 24, DOMID_SELF);
        env.poke(a(0) + 1024, &r);
        let rep = hypercall(
            xen,
            env,
            dom,
            0,
            HC_MEMORY_OP,
            [XENMEM_DECREASE_RESERVATION, a(0) + 1024, 0, 0, 0],
        );
        assert_eq!(rep.ret, frames.len() as i64);
    }

    /// add_to_physmap of grant frame `idx` at `gpfn`.
    fn add_grant_frame(xen: &mut Xen, env: &TestEnv, dom: DomId, idx: u64, gpfn: u64) -> i64 {
        env.current.set(dom);
        let mut b = [0u8; ADD_TO_PHYSMAP_SIZE];
        put_u16(&mut b, 0, DOMID_SELF);
        put_u32(&mut b, 4, XENMAPSPACE_GRANT_TABLE);
        put_u64(&mut b, 8, idx);
        put_u64(&mut b, 16, gpfn);
        env.poke(a(0) + 1024, &b);
        hypercall(
            xen,
            env,
            dom,
            0,
            HC_MEMORY_OP,
            [XENMEM_ADD_TO_PHYSMAP, a(0) + 1024, 0, 0, 0],
        )
        .ret
    }

    fn map_op(host_addr: u64, flags: u32, gref: u32, dom: DomId) -> [u8; MAP_SIZE] {
        let mut b = [0u8; MAP_SIZE];
        put_u64(&mut b, 0, host_addr);
        put_u32(&mut b, 8, flags);
        put_u32(&mut b, 12, gref);
        put_u16(&mut b, 16, dom);
        put_u16(&mut b, 18, 0x7777);
        put_u32(&mut b, 20, 0xdead);
        b
    }

    /// Maps with the given struct; (status, handle, dev_bus_addr).
    fn map_raw(xen: &mut Xen, env: &TestEnv, mapper: DomId, op: [u8; MAP_SIZE]) -> (i16, u32, u64) {
        env.current.set(mapper);
        env.poke(a(0), &op);
        assert_eq!(run(xen, env, mapper, GNTTABOP_MAP_GRANT_REF, a(0), 1), 0);
        let b = env.peek(a(0), MAP_SIZE);
        (get_u16(&b, 18) as i16, get_u32(&b, 20), get_u64(&b, 24))
    }

    /// Maps `granter`'s `gref` at guest frame `gfn` of `mapper`.
    fn map(
        xen: &mut Xen,
        env: &TestEnv,
        mapper: DomId,
        granter: DomId,
        gref: u32,
        gfn: u64,
        ro: bool,
    ) -> (i16, u32) {
        let (st, h, _) = map_raw(
            xen,
            env,
            mapper,
            map_op(gfn << 12, if ro { RO } else { RW }, gref, granter),
        );
        (st, h)
    }

    fn unmap_cmd(
        xen: &mut Xen,
        env: &TestEnv,
        mapper: DomId,
        cmd: u64,
        host_addr: u64,
        second: u64,
        handle: u32,
    ) -> i16 {
        let mut b = [0u8; UNMAP_SIZE];
        put_u64(&mut b, 0, host_addr);
        put_u64(&mut b, 8, second);
        put_u32(&mut b, 16, handle);
        put_u16(&mut b, 20, 0x7777);
        env.current.set(mapper);
        env.poke(a(0), &b);
        assert_eq!(run(xen, env, mapper, cmd, a(0), 1), 0);
        get_u16(&env.peek(a(0), UNMAP_SIZE), 20) as i16
    }

    fn unmap(xen: &mut Xen, env: &TestEnv, mapper: DomId, gfn: u64, handle: u32) -> i16 {
        unmap_cmd(
            xen,
            env,
            mapper,
            GNTTABOP_UNMAP_GRANT_REF,
            gfn << 12,
            0,
            handle,
        )
    }

    fn copy_op(
        src: (u64, DomId, u16),
        dst: (u64, DomId, u16),
        len: u16,
        flags: u16,
    ) -> [u8; COPY_SIZE] {
        let mut b = [0u8; COPY_SIZE];
        put_u64(&mut b, 0, src.0);
        put_u16(&mut b, 8, src.1);
        put_u16(&mut b, 10, src.2);
        put_u64(&mut b, 16, dst.0);
        put_u16(&mut b, 24, dst.1);
        put_u16(&mut b, 26, dst.2);
        put_u16(&mut b, 32, len);
        put_u16(&mut b, 34, flags);
        put_u16(&mut b, 36, 0x7777);
        b
    }

    fn copy(xen: &mut Xen, env: &TestEnv, caller: DomId, op: [u8; COPY_SIZE]) -> i16 {
        env.current.set(caller);
        env.poke(a(0), &op);
        assert_eq!(run(xen, env, caller, GNTTABOP_COPY, a(0), 1), 0);
        get_u16(&env.peek(a(0), COPY_SIZE), 36) as i16
    }

    fn fill(env: &TestEnv, dom: DomId, frame: u64, seed: u8) {
        let data: Vec<u8> = (0..PAGE_SIZE)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
            .collect();
        assert!(env.ram_page(dom, g(frame)).unwrap().write(0, &data));
    }

    fn bytes(env: &TestEnv, dom: DomId, frame: u64, off: usize, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        assert!(env.ram_page(dom, g(frame)).unwrap().read(off, &mut v));
        v
    }

    /// The invariants: pins equal live mappings, every Foreign slot has a
    /// live handle mapped there, translations show the granted page with
    /// the right writability, GTF_reading/GTF_writing follow the pins.
    fn check(xen: &Xen, env: &TestEnv) {
        let ids: Vec<DomId> = xen.ids().collect();
        let mut want: BTreeMap<(DomId, u32), (u16, u16)> = BTreeMap::new();
        for &m in &ids {
            let d = xen.domain(m).unwrap();
            let mut gfns = BTreeSet::new();
            let mut n = 0;
            for (h, mp) in d.grant.mappings() {
                n += 1;
                if mp.revoked {
                    assert_ne!(d.p2m.get(&mp.gfn), Some(&Slot::Foreign(h)));
                    continue;
                }
                assert!(gfns.insert(mp.gfn), "two live handles at one frame");
                assert_eq!(d.p2m.get(&mp.gfn), Some(&Slot::Foreign(h)));
                let gd = xen
                    .domain(mp.granter)
                    .expect("live mapping of a live granter");
                let p = gd.grant.pin(mp.gref).expect("mapped grant is pinned");
                assert_eq!(p.mapper, m);
                let frame = env.ram_page(mp.granter, p.gfn).unwrap().frame();
                assert_eq!(env.seen(m, mp.gfn), Some((frame, !mp.readonly)));
                let e = want.entry((mp.granter, mp.gref)).or_default();
                if mp.readonly {
                    e.0 += 1;
                } else {
                    e.1 += 1;
                }
            }
            assert_eq!(n, d.grant.nr_mappings());
            for (gfn, s) in &d.p2m {
                if let Slot::Foreign(h) = s {
                    let mp = d
                        .grant
                        .mapping(*h)
                        .expect("Foreign slot without a live handle");
                    assert!(!mp.revoked);
                    assert_eq!(mp.gfn, *gfn);
                }
            }
        }
        for &gid in &ids {
            let gt = &xen.domain(gid).unwrap().grant;
            for r in gt.pinned() {
                let p = gt.pin(r).unwrap();
                assert_eq!(
                    Some(&(p.readers, p.writers)),
                    want.get(&(gid, r)),
                    "pins of d{} ref {}",
                    gid,
                    r
                );
            }
            for r in 0..gt.nr_entries() {
                let f = gt.entry(r).unwrap().0;
                let p = gt.pin(r);
                assert_eq!(
                    f & GTF_READING != 0,
                    p.is_some(),
                    "GTF_reading of d{} ref {}",
                    gid,
                    r
                );
                assert_eq!(
                    f & GTF_WRITING != 0,
                    p.is_some_and(|p| p.writers > 0),
                    "GTF_writing of d{} ref {}",
                    gid,
                    r
                );
            }
        }
        for ((gid, r), p) in want {
            assert_eq!(pin(xen, gid, r), Some(p));
        }
    }

    #[test]
    fn map_unmap_rw_and_ro() {
        let (env, mut xen) = setup();
        grant(&xen, D1, 10, GTF_PERMIT_ACCESS, D2, g(3));
        grant(&xen, D1, 11, GTF_PERMIT_ACCESS | GTF_READONLY, D2, g(4));
        balloon(&mut xen, &env, D2, &[20, 21]);
        let (st, h, bus) = map_raw(&mut xen, &env, D2, map_op(a(20), RW, 10, D1));
        assert_eq!(st, GNTST_OKAY);
        assert_eq!(bus, a(3));
        assert_eq!(env.seen(D2, g(20)), Some((page(&env, D1, 3), true)));
        assert_eq!(
            flags(&xen, D1, 10),
            GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING
        );
        assert_eq!(
            xen.domain(D2).unwrap().p2m.get(&g(20)),
            Some(&Slot::Foreign(h))
        );
        // Data goes through.
        env.current.set(D2);
        env.poke(a(20) + 100, b"hello");
        assert_eq!(bytes(&env, D1, 3, 100, 5), b"hello");

        let (st2, h2) = map(&mut xen, &env, D2, D1, 11, g(21), true);
        assert_eq!(st2, GNTST_OKAY);
        assert_ne!(h, h2);
        assert_eq!(env.seen(D2, g(21)), Some((page(&env, D1, 4), false)));
        assert_eq!(
            flags(&xen, D1, 11),
            GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING
        );
        // A second, read-only mapping of the writable grant, outside RAM.
        let (st3, h3) = map(&mut xen, &env, D2, D1, 10, FAR, true);
        assert_eq!(st3, GNTST_OKAY);
        assert_eq!(pin(&xen, D1, 10), Some((1, 1)));
        assert_eq!(env.seen(D2, FAR), Some((page(&env, D1, 3), false)));
        check(&xen, &env);

        assert_eq!(unmap(&mut xen, &env, D2, g(20), h), GNTST_OKAY);
        // GTF_writing goes with the last writable pin, GTF_reading stays.
        assert_eq!(flags(&xen, D1, 10), GTF_PERMIT_ACCESS | GTF_READING);
        assert_eq!(xen.domain(D2).unwrap().p2m.get(&g(20)), Some(&Slot::Hole));
        assert_eq!(env.seen(D2, g(20)), None);
        assert_eq!(unmap(&mut xen, &env, D2, FAR, h3), GNTST_OKAY);
        assert_eq!(flags(&xen, D1, 10), GTF_PERMIT_ACCESS);
        assert_eq!(xen.domain(D2).unwrap().p2m.get(&FAR), None);
        assert_eq!(unmap(&mut xen, &env, D2, g(21), h2), GNTST_OKAY);
        assert_eq!(flags(&xen, D1, 11), GTF_PERMIT_ACCESS | GTF_READONLY);
        assert_eq!(pin(&xen, D1, 10), None);
        assert_eq!(unmap(&mut xen, &env, D2, g(21), h2), GNTST_BAD_HANDLE);
        // The hole can be mapped again.
        assert_eq!(map(&mut xen, &env, D2, D1, 10, g(20), false).0, GNTST_OKAY);
        check(&xen, &env);
    }

    #[test]
    fn map_refusals() {
        let (env, mut xen) = setup();
        xen.allow(D1, D3);
        grant(&xen, D1, 1, GTF_PERMIT_ACCESS, D2, g(3));
        grant(&xen, D1, 2, GTF_PERMIT_ACCESS | GTF_READONLY, D2, g(4));
        grant(&xen, D1, 3, GTF_PERMIT_ACCESS, D3, g(5));
        grant(&xen, D1, 4, GTF_INVALID, D2, g(5));
        grant(&xen, D1, 5, GTF_PERMIT_ACCESS, D2, 0x10);
        grant(&xen, D1, 6, GTF_PERMIT_ACCESS, D2, g(7));
        grant(&xen, D1, 7, GTF_ACCEPT_TRANSFER, D2, g(5));
        grant(&xen, D1, 8, GTF_PERMIT_ACCESS | GTF_SUB_PAGE, D2, g(5));
        grant(&xen, D3, 1, GTF_PERMIT_ACCESS, D2, g(3));
        balloon(&mut xen, &env, D1, &[7]);
        balloon(&mut xen, &env, D2, &[20, 21]);
        let cases: [(&str, [u8; MAP_SIZE], i16); 17] = [
            ("no host_map", map_op(a(20), 0, 1, D1), GNTST_BAD_GNTREF),
            (
                "readonly only",
                map_op(a(20), GNTMAP_READONLY, 1, D1),
                GNTST_BAD_GNTREF,
            ),
            (
                "device_map",
                map_op(a(20), RW | GNTMAP_DEVICE_MAP, 1, D1),
                GNTST_GENERAL_ERROR,
            ),
            (
                "application_map",
                map_op(a(20), RW | GNTMAP_APPLICATION_MAP, 1, D1),
                GNTST_GENERAL_ERROR,
            ),
            (
                "contains_pte",
                map_op(a(20), RW | GNTMAP_CONTAINS_PTE, 1, D1),
                GNTST_GENERAL_ERROR,
            ),
            ("missing domain", map_op(a(20), RW, 1, 9), GNTST_BAD_DOMAIN),
            (
                "DOMID_SELF",
                map_op(a(20), RW, 1, DOMID_SELF),
                GNTST_BAD_DOMAIN,
            ),
            (
                "unlinked",
                map_op(a(20), RW, 1, D3),
                GNTST_PERMISSION_DENIED,
            ),
            ("ref beyond", map_op(a(20), RW, 512, D1), GNTST_BAD_GNTREF),
            ("other domid", map_op(a(20), RW, 3, D1), GNTST_GENERAL_ERROR),
            (
                "invalid entry",
                map_op(a(20), RW, 4, D1),
                GNTST_GENERAL_ERROR,
            ),
            (
                "transfer entry",
                map_op(a(20), RW, 7, D1),
                GNTST_GENERAL_ERROR,
            ),
            (
                "sub-page entry",
                map_op(a(20), RW, 8, D1),
                GNTST_GENERAL_ERROR,
            ),
            (
                "readonly grant written",
                map_op(a(20), RW, 2, D1),
                GNTST_GENERAL_ERROR,
            ),
            ("frame not RAM", map_op(a(20), RW, 5, D1), GNTST_BAD_PAGE),
            ("frame ballooned", map_op(a(20), RW, 6, D1), GNTST_BAD_PAGE),
            (
                "misaligned",
                map_op(a(20) + 8, RW, 1, D1),
                GNTST_GENERAL_ERROR,
            ),
        ];
        for (what, op, want) in cases {
            let (st, h, bus) = map_raw(&mut xen, &env, D2, op);
            assert_eq!(st, want, "{}", what);
            // Outputs other than the status are left as they were.
            assert_eq!((h, bus), (0xdead, 0), "{}", what);
            check(&xen, &env);
        }
        // Targets that are not a hole or an empty frame.
        let (st, h) = map(&mut xen, &env, D2, D1, 1, g(5), false);
        assert_eq!(st, GNTST_GENERAL_ERROR, "plain RAM target");
        assert_eq!(h, 0xdead);
        assert_eq!(
            map(&mut xen, &env, D2, D1, 1, MMIO_GFN.start, false).0,
            GNTST_GENERAL_ERROR
        );
        assert_eq!(
            map(&mut xen, &env, D2, D1, 1, 1 << 40, false).0,
            GNTST_GENERAL_ERROR
        );
        assert_eq!(map(&mut xen, &env, D2, D1, 1, g(20), false).0, GNTST_OKAY);
        assert_eq!(
            map(&mut xen, &env, D2, D1, 1, g(20), false).0,
            GNTST_GENERAL_ERROR,
            "already mapped"
        );
        assert_eq!(add_grant_frame(&mut xen, &env, D2, 0, g(21)), 0);
        assert_eq!(
            map(&mut xen, &env, D2, D1, 1, g(21), false).0,
            GNTST_GENERAL_ERROR,
            "grant frame"
        );
        // The refused maps left no pins or flags behind.
        assert_eq!(pin(&xen, D1, 1), Some((0, 1)));
        for r in 2..9 {
            assert_eq!(pin(&xen, D1, r), None);
            assert_eq!(
                flags(&xen, D1, r) & (GTF_READING | GTF_WRITING),
                0,
                "ref {}",
                r
            );
        }
        // The entry from an unlinked domain's view stays untouched.
        assert_eq!(flags(&xen, D3, 1), GTF_PERMIT_ACCESS);
        check(&xen, &env);
    }

    #[test]
    fn pinned_grant_stays_with_its_mapper_and_frame() {
        let (env, mut xen) = setup();
        xen.allow(D1, D3);
        grant(&xen, D1, 5, GTF_PERMIT_ACCESS, D2, g(3));
        let (st, h) = map(&mut xen, &env, D2, D1, 5, FAR, false);
        assert_eq!(st, GNTST_OKAY);
        // The guest rewrites the entry under the mapping (keeping the
        // status bits, as a racing guest might).
        let f = flags(&xen, D1, 5);
        grant(&xen, D1, 5, f, D3, g(9));
        assert_eq!(
            map(&mut xen, &env, D3, D1, 5, FAR, false).0,
            GNTST_GENERAL_ERROR
        );
        let (st2, h2) = map(&mut xen, &env, D2, D1, 5, FAR + 1, false);
        assert_eq!(st2, GNTST_OKAY);
        assert_eq!(env.seen(D2, FAR + 1), Some((page(&env, D1, 3), true)));
        assert_eq!(pin(&xen, D1, 5), Some((0, 2)));
        assert_eq!(unmap(&mut xen, &env, D2, FAR, h), GNTST_OKAY);
        assert_eq!(unmap(&mut xen, &env, D2, FAR + 1, h2), GNTST_OKAY);
        assert_eq!(flags(&xen, D1, 5) & (GTF_READING | GTF_WRITING), 0);
        // Unpinned, the entry is read afresh: now it is D3's.
        assert_eq!(map(&mut xen, &env, D3, D1, 5, FAR, false).0, GNTST_OKAY);
        assert_eq!(env.seen(D3, FAR), Some((page(&env, D1, 9), true)));
        check(&xen, &env);
    }

    #[test]
    fn read_only_pin_upgraded_checks_readonly_flag() {
        let (env, mut xen) = setup();
        grant(&xen, D1, 1, GTF_PERMIT_ACCESS, D2, g(3));
        assert_eq!(map(&mut xen, &env, D2, D1, 1, FAR, true).0, GNTST_OKAY);
        assert_eq!(flags(&xen, D1, 1), GTF_PERMIT_ACCESS | GTF_READING);
        // The guest makes it read-only while pinned: no writable map.
        let f = flags(&xen, D1, 1);
        grant(&xen, D1, 1, f | GTF_READONLY, D2, g(3));
        assert_eq!(
            map(&mut xen, &env, D2, D1, 1, FAR + 1, false).0,
            GNTST_GENERAL_ERROR
        );
        assert_eq!(map(&mut xen, &env, D2, D1, 1, FAR + 1, true).0, GNTST_OKAY);
        assert_eq!(pin(&xen, D1, 1), Some((2, 0)));
        check(&xen, &env);
    }

    #[test]
    fn pin_limit() {
        let (env, mut xen) = setup();
        grant(&xen, D1, 1, GTF_PERMIT_ACCESS, D2, g(3));
        let n = u64::from(PIN_LIMIT) + 1;
        env.current.set(D2);
        for i in 0..n {
            env.poke(
                a(1) + i * MAP_SIZE as u64,
                &map_op((FAR + i) << 12, RO, 1, D1),
            );
        }
        assert_eq!(run(&mut xen, &env, D2, GNTTABOP_MAP_GRANT_REF, a(1), n), 0);
        for i in 0..n {
            let st = get_u16(&env.peek(a(1) + i * MAP_SIZE as u64, MAP_SIZE), 18) as i16;
            assert_eq!(
                st,
                if i < n - 1 {
                    GNTST_OKAY
                } else {
                    GNTST_GENERAL_ERROR
                },
                "entry {}",
                i
            );
        }
        assert_eq!(pin(&xen, D1, 1), Some((PIN_LIMIT, 0)));
        check(&xen, &env);
    }

    #[test]
    fn self_mapping() {
        let (env, mut xen) = setup();
        grant(&xen, D1, 1, GTF_PERMIT_ACCESS, D1, g(3));
        balloon(&mut xen, &env, D1, &[20]);
        let (st, h) = map(&mut xen, &env, D1, D1, 1, g(20), false);
        assert_eq!(st, GNTST_OKAY);
        assert_eq!(env.seen(D1, g(20)), Some((page(&env, D1, 3), true)));
        check(&xen, &env);
        assert_eq!(unmap(&mut xen, &env, D1, g(20), h), GNTST_OKAY);
        assert_eq!(flags(&xen, D1, 1), GTF_PERMIT_ACCESS);
        // Torn down with a self-mapping in place.
        assert_eq!(map(&mut xen, &env, D1, D1, 1, g(20), false).0, GNTST_OKAY);
        xen.remove_domain(&env, D1);
        check(&xen, &env);
    }

    #[test]
    fn unmap_refusals() {
        let (env, mut xen) = setup();
        grant(&xen, D1, 1, GTF_PERMIT_ACCESS, D2, g(3));
        balloon(&mut xen, &env, D2, &[20]);
        let (st, h) = map(&mut xen, &env, D2, D1, 1, g(20), false);
        assert_eq!(st, GNTST_OKAY);
        assert_eq!(unmap(&mut xen, &env, D2, g(20), h + 1), GNTST_BAD_HANDLE);
        assert_eq!(unmap(&mut xen, &env, D2, g(20), u32::MAX), GNTST_BAD_HANDLE);
        assert_eq!(unmap(&mut xen, &env, D2, g(20), 1 << 20), GNTST_BAD_HANDLE);
        // Another domain's handle means nothing here.
        assert_eq!(unmap(&mut xen, &env, D3, g(20), h), GNTST_BAD_HANDLE);
        assert_eq!(unmap(&mut xen, &env, D2, g(21), h), GNTST_GENERAL_ERROR);
        // No host address: nothing is done (Xen), the mapping stays.
        assert_eq!(
            unmap_cmd(&mut xen, &env, D2, GNTTABOP_UNMAP_GRANT_REF, 0, 0, h),
            GNTST_OKAY
        );
        // unmap_and_replace: a new address is refused on Arm.
        assert_eq!(
            unmap_cmd(
                &mut xen,
                &env,
                D2,
                GNTTABOP_UNMAP_AND_REPLACE,
                a(20),
                a(22),
                h
            ),
            GNTST_GENERAL_ERROR
        );
        assert_eq!(pin(&xen, D1, 1), Some((0, 1)));
        assert!(xen.domain(D2).unwrap().grant.mapping(h).is_some());
        check(&xen, &env);
        // The offset in host_addr does not matter (Xen compares frames).
        assert_eq!(
            unmap_cmd(
                &mut xen,
                &env,
                D2,
                GNTTABOP_UNMAP_AND_REPLACE,
                a(20) + 5,
                0,
                h
            ),
            GNTST_OKAY
        );
        assert_eq!(pin(&xen, D1, 1), None);
        assert_eq!(flags(&xen, D1, 1), GTF_PERMIT_ACCESS);
        check(&xen, &env);
    }

    #[test]
    fn copy_all_four_ways() {
        let (env, mut xen) = setup();
        grant(&xen, D1, 1, GTF_PERMIT_ACCESS, D2, g(3));
        grant(&xen, D1, 2, GTF_PERMIT_ACCESS | GTF_READONLY, D2, g(4));
        fill(&env, D1, 3, 1);
        fill(&env, D1, 4, 2);
        fill(&env, D2, 5, 3);
        fill(&env, D2, 6, 4);
        let src = bytes(&env, D2, 5, 10, 50);
        // gmfn → gmfn (the caller's own frames).
        let op = copy_op((g(5), DOMID_SELF, 10), (g(6), DOMID_SELF, 100), 50, 0);
        assert_eq!(copy(&mut xen, &env, D2, op), GNTST_OKAY);
        assert_eq!(bytes(&env, D2, 6, 100, 50), src);
        // gref → gmfn: through a read-only grant as the source.
        let src = bytes(&env, D1, 4, 0, 4096);
        let op = copy_op((2, D1, 0), (g(6), DOMID_SELF, 0), 4096, GNTCOPY_SOURCE_GREF);
        assert_eq!(copy(&mut xen, &env, D2, op), GNTST_OKAY);
        assert_eq!(bytes(&env, D2, 6, 0, 4096), src);
        // gmfn → gref.
        let src = bytes(&env, D2, 5, 1000, 300);
        let op = copy_op(
            (g(5), DOMID_SELF, 1000),
            (1, D1, 3000),
            300,
            GNTCOPY_DEST_GREF,
        );
        assert_eq!(copy(&mut xen, &env, D2, op), GNTST_OKAY);
        assert_eq!(bytes(&env, D1, 3, 3000, 300), src);
        // gref → gref.
        let src = bytes(&env, D1, 4, 7, 777);
        let op = copy_op(
            (2, D1, 7),
            (1, D1, 9),
            777,
            GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF,
        );
        assert_eq!(copy(&mut xen, &env, D2, op), GNTST_OKAY);
        assert_eq!(bytes(&env, D1, 3, 9, 777), src);
        // Temporary pins are gone, and so are the status bits.
        assert_eq!(pin(&xen, D1, 1), None);
        assert_eq!(flags(&xen, D1, 1), GTF_PERMIT_ACCESS);
        assert_eq!(flags(&xen, D1, 2), GTF_PERMIT_ACCESS | GTF_READONLY);
        // Overlapping ranges in one page copy as memmove does.
        fill(&env, D2, 7, 5);
        let before = bytes(&env, D2, 7, 0, 4096);
        let op = copy_op((g(7), DOMID_SELF, 0), (g(7), DOMID_SELF, 100), 1000, 0);
        assert_eq!(copy(&mut xen, &env, D2, op), GNTST_OKAY);
        assert_eq!(bytes(&env, D2, 7, 100, 1000), before[..1000]);
        let op = copy_op((g(7), DOMID_SELF, 100), (g(7), DOMID_SELF, 0), 1000, 0);
        assert_eq!(copy(&mut xen, &env, D2, op), GNTST_OKAY);
        assert_eq!(bytes(&env, D2, 7, 0, 1000), before[..1000]);
        // A copy through a grant the caller also maps keeps the mapping's pin.
        let (st, h) = map(&mut xen, &env, D2, D1, 1, FAR, true);
        assert_eq!(st, GNTST_OKAY);
        let op = copy_op((g(5), DOMID_SELF, 0), (1, D1, 0), 8, GNTCOPY_DEST_GREF);
        assert_eq!(copy(&mut xen, &env, D2, op), GNTST_OKAY);
        assert_eq!(pin(&xen, D1, 1), Some((1, 0)));
        assert_eq!(flags(&xen, D1, 1), GTF_PERMIT_ACCESS | GTF_READING);
        assert_eq!(unmap(&mut xen, &env, D2, FAR, h), GNTST_OKAY);
        check(&xen, &env);
    }

    #[test]
    fn copy_refusals() {
        let (env, mut xen) = setup();
        grant(&xen, D1, 1, GTF_PERMIT_ACCESS, D2, g(3));
        grant(&xen, D1, 2, GTF_PERMIT_ACCESS | GTF_READONLY, D2, g(4));
        grant(&xen, D1, 3, GTF_PERMIT_ACCESS, D3, g(3));
        grant(&xen, D3, 1, GTF_PERMIT_ACCESS, D1, g(3));
        balloon(&mut xen, &env, D2, &[20]);
        let sg = GNTCOPY_SOURCE_GREF;
        let dg = GNTCOPY_DEST_GREF;
        let me = DOMID_SELF;
        let cases: [(&str, [u8; COPY_SIZE], i16); 15] = [
            (
                "source beyond page",
                copy_op((1, D1, 4000), (g(5), me, 0), 200, sg),
                GNTST_BAD_COPY_ARG,
            ),
            (
                "dest beyond page",
                copy_op((g(5), me, 0), (1, D1, 4095), 2, dg),
                GNTST_BAD_COPY_ARG,
            ),
            (
                "len beyond page",
                copy_op((g(5), me, 0), (g(6), me, 0), 4097, 0),
                GNTST_BAD_COPY_ARG,
            ),
            (
                "dest via readonly grant",
                copy_op((g(5), me, 0), (2, D1, 0), 8, dg),
                GNTST_GENERAL_ERROR,
            ),
            (
                "frame of own id",
                copy_op((g(5), D2, 0), (g(6), me, 0), 8, 0),
                GNTST_PERMISSION_DENIED,
            ),
            (
                "frame of other domain",
                copy_op((g(5), me, 0), (g(6), D1, 0), 8, 0),
                GNTST_PERMISSION_DENIED,
            ),
            (
                "frame not RAM",
                copy_op((0x10, me, 0), (g(6), me, 0), 8, 0),
                GNTST_BAD_PAGE,
            ),
            (
                "frame ballooned",
                copy_op((g(5), me, 0), (g(20), me, 0), 8, 0),
                GNTST_BAD_PAGE,
            ),
            (
                "missing domain",
                copy_op((1, 9, 0), (g(6), me, 0), 8, sg),
                GNTST_BAD_DOMAIN,
            ),
            (
                "unlinked domain",
                copy_op((g(5), me, 0), (1, D3, 0), 8, dg),
                GNTST_PERMISSION_DENIED,
            ),
            (
                "ref beyond",
                copy_op((600, D1, 0), (g(6), me, 0), 8, sg),
                GNTST_BAD_GNTREF,
            ),
            (
                "not granted to caller",
                copy_op((3, D1, 0), (g(6), me, 0), 8, sg),
                GNTST_GENERAL_ERROR,
            ),
            (
                "dest bad after source ok",
                copy_op((1, D1, 0), (600, D1, 0), 8, sg | dg),
                GNTST_BAD_GNTREF,
            ),
            (
                "source bad, dest ok",
                copy_op((0x10, me, 0), (1, D1, 0), 8, dg),
                GNTST_BAD_PAGE,
            ),
            (
                "empty copy of nothing",
                copy_op((0, 9, 0), (0, 9, 0), 0, 0),
                GNTST_OKAY,
            ),
        ];
        for (what, op, want) in cases {
            assert_eq!(copy(&mut xen, &env, D2, op), want, "{}", what);
            assert_eq!(pin(&xen, D1, 1), None, "{}", what);
            assert_eq!(flags(&xen, D1, 1), GTF_PERMIT_ACCESS, "{}", what);
            assert_eq!(
                flags(&xen, D1, 2),
                GTF_PERMIT_ACCESS | GTF_READONLY,
                "{}",
                what
            );
            check(&xen, &env);
        }
    }

    #[test]
    fn batch_continues_and_logs_once_per_trap() {
        let (env, mut xen) = setup();
        for r in 0..70 {
            grant(&xen, D1, r, GTF_PERMIT_ACCESS, D2, g(u64::from(r % 8) + 1));
        }
        env.current.set(D2);
        let n = 70u64;
        for i in 0..n {
            let gref = if i == 3 || i == 40 { 999 } else { i as u32 };
            env.poke(
                a(1) + i * MAP_SIZE as u64,
                &map_op((FAR + i) << 12, RW, gref, D1),
            );
        }
        let logs = env.logs.borrow().len();
        let r = call(
            &mut xen,
            &env,
            D2,
            0,
            [GNTTABOP_MAP_GRANT_REF, a(1), n, 0, 0],
        );
        let c = r.cont.expect("continued");
        assert_eq!(
            c,
            [
                GNTTABOP_MAP_GRANT_REF,
                a(1) + GRANT_CHUNK * MAP_SIZE as u64,
                n - GRANT_CHUNK,
                0,
                0
            ]
        );
        assert_eq!(env.logs.borrow().len(), logs + 1);
        assert_eq!(xen.domain(D2).unwrap().grant.nr_mappings(), 31);
        check(&xen, &env);
        let mut r = call(&mut xen, &env, D2, 0, c);
        while let Some(c) = r.cont {
            r = call(&mut xen, &env, D2, 0, c);
        }
        assert_eq!(r.ret, 0);
        assert_eq!(env.logs.borrow().len(), logs + 2);
        let mut handles = BTreeSet::new();
        for i in 0..n {
            let b = env.peek(a(1) + i * MAP_SIZE as u64, MAP_SIZE);
            let st = get_u16(&b, 18) as i16;
            if i == 3 || i == 40 {
                assert_eq!(st, GNTST_BAD_GNTREF);
            } else {
                assert_eq!(st, GNTST_OKAY);
                assert!(handles.insert(get_u32(&b, 20)));
            }
        }
        check(&xen, &env);
        // Unmap them all in one batch, with continuations.
        let mut k = 0;
        for i in 0..n {
            let b = env.peek(a(1) + i * MAP_SIZE as u64, MAP_SIZE);
            if get_u16(&b, 18) != 0 {
                continue;
            }
            let mut u = [0u8; UNMAP_SIZE];
            put_u64(&mut u, 0, (FAR + i) << 12);
            put_u32(&mut u, 16, get_u32(&b, 20));
            env.poke(a(8) + k * UNMAP_SIZE as u64, &u);
            k += 1;
        }
        assert_eq!(
            run(&mut xen, &env, D2, GNTTABOP_UNMAP_GRANT_REF, a(8), k),
            0
        );
        for i in 0..k {
            assert_eq!(
                get_u16(&env.peek(a(8) + i * UNMAP_SIZE as u64, UNMAP_SIZE), 20),
                0
            );
        }
        assert_eq!(xen.domain(D2).unwrap().grant.nr_mappings(), 0);
        assert_eq!(xen.domain(D1).unwrap().grant.pinned().count(), 0);
        check(&xen, &env);
    }

    #[test]
    fn bad_calls() {
        let (env, mut xen) = setup();
        let ret = |xen: &mut Xen, cmd: u64, uop: u64, count: u64| {
            call(xen, &env, D2, 0, [cmd, uop, count, 0, 0]).ret
        };
        assert_eq!(
            ret(&mut xen, GNTTABOP_MAP_GRANT_REF, 0x10, 1),
            -i64::from(EFAULT)
        );
        assert_eq!(
            ret(&mut xen, GNTTABOP_UNMAP_GRANT_REF, 0x10, 1),
            -i64::from(EFAULT)
        );
        assert_eq!(ret(&mut xen, GNTTABOP_COPY, 0x10, 1), -i64::from(EFAULT));
        assert_eq!(ret(&mut xen, GNTTABOP_MAP_GRANT_REF, 0x10, 0), 0);
        assert_eq!(
            ret(&mut xen, GNTTABOP_MAP_GRANT_REF, a(0), 0x8000_0000),
            -i64::from(EINVAL)
        );
        assert_eq!(
            ret(&mut xen, GNTTABOP_MAP_GRANT_REF | 0x1000, a(0), 1),
            -i64::from(EINVAL)
        );
        assert_eq!(
            ret(&mut xen, GNTTABOP_CACHE_FLUSH | 0x1000, a(0), 1),
            -i64::from(ENOSYS)
        );
        assert_eq!(
            ret(&mut xen, GNTTABOP_CACHE_FLUSH, a(0), 1),
            -i64::from(ENOSYS)
        );
        assert_eq!(
            ret(&mut xen, GNTTABOP_DUMP_TABLE, a(0), 1),
            -i64::from(ENOSYS)
        );
        assert_eq!(
            ret(&mut xen, GNTTABOP_TRANSFER, a(0), 1),
            -i64::from(EOPNOTSUPP)
        );
        assert_eq!(ret(&mut xen, 99, a(0), 1), -i64::from(ENOSYS));
        // The upper halves of cmd and count are not looked at (C unsigned int).
        assert_eq!(
            ret(&mut xen, GNTTABOP_MAP_GRANT_REF | 1 << 32, a(0), 1 << 32),
            0
        );
        // A fault in the middle of a batch: the entries before are done.
        grant(&xen, D1, 1, GTF_PERMIT_ACCESS, D2, g(3));
        env.current.set(D2);
        let last = a(PAGES as u64 - 1) + PAGE_SIZE as u64 - MAP_SIZE as u64;
        env.poke(last, &map_op(FAR << 12, RW, 1, D1));
        assert_eq!(
            ret(&mut xen, GNTTABOP_MAP_GRANT_REF, last, 2),
            -i64::from(EFAULT)
        );
        assert_eq!(get_u16(&env.peek(last, MAP_SIZE), 18), 0);
        assert_eq!(xen.domain(D2).unwrap().grant.nr_mappings(), 1);
        check(&xen, &env);
    }

    #[test]
    fn query_setup_and_versions() {
        let (env, mut xen) = setup();
        let q = |xen: &mut Xen, caller: DomId, dom: DomId, count: u64| -> (i64, u32, u32, i16) {
            let mut b = [0u8; QUERY_SIZE_SIZE];
            put_u16(&mut b, 0, dom);
            env.current.set(caller);
            env.poke(a(0), &b);
            let r = call(
                xen,
                &env,
                caller,
                0,
                [GNTTABOP_QUERY_SIZE, a(0), count, 0, 0],
            )
            .ret;
            let b = env.peek(a(0), QUERY_SIZE_SIZE);
            (r, get_u32(&b, 4), get_u32(&b, 8), get_u16(&b, 12) as i16)
        };
        assert_eq!(q(&mut xen, D1, DOMID_SELF, 1), (0, 1, 4, GNTST_OKAY));
        assert_eq!(q(&mut xen, D1, D1, 1), (0, 1, 4, GNTST_OKAY));
        assert_eq!(q(&mut xen, D1, D2, 1), (0, 0, 0, GNTST_PERMISSION_DENIED));
        assert_eq!(q(&mut xen, D1, 9, 1), (0, 0, 0, GNTST_BAD_DOMAIN));
        assert_eq!(q(&mut xen, D1, DOMID_SELF, 2).0, -i64::from(EINVAL));
        assert_eq!(
            call(&mut xen, &env, D1, 0, [GNTTABOP_QUERY_SIZE, 0x10, 1, 0, 0]).ret,
            -i64::from(EFAULT)
        );
        assert_eq!(add_grant_frame(&mut xen, &env, D1, 2, GRANT_GFN + 2), 0);
        assert_eq!(q(&mut xen, D1, DOMID_SELF, 1), (0, 3, 4, GNTST_OKAY));
        assert_eq!(
            add_grant_frame(&mut xen, &env, D1, 4, GRANT_GFN + 4),
            -i64::from(EINVAL)
        );

        // setup_table: the frames' places, INVALID_GFN where not placed.
        let setup = |xen: &mut Xen, dom: DomId, nr: u32, list: u64| -> (i64, i16) {
            let mut b = [0u8; SETUP_TABLE_SIZE];
            put_u16(&mut b, 0, dom);
            put_u32(&mut b, 4, nr);
            put_u64(&mut b, 16, list);
            env.current.set(D1);
            env.poke(a(0), &b);
            let r = call(xen, &env, D1, 0, [GNTTABOP_SETUP_TABLE, a(0), 1, 0, 0]).ret;
            (r, get_u16(&env.peek(a(0), SETUP_TABLE_SIZE), 8) as i16)
        };
        assert_eq!(setup(&mut xen, DOMID_SELF, 4, a(1)), (0, GNTST_OKAY));
        let list: Vec<u64> = (0..4)
            .map(|i| get_u64(&env.peek(a(1) + i * 8, 8), 0))
            .collect();
        assert_eq!(list, [INVALID_GFN, INVALID_GFN, GRANT_GFN + 2, INVALID_GFN]);
        assert_eq!(xen.domain(D1).unwrap().grant.nr_frames(), 4);
        assert_eq!(
            setup(&mut xen, DOMID_SELF, 5, a(1)),
            (0, GNTST_GENERAL_ERROR)
        );
        assert_eq!(
            setup(&mut xen, DOMID_SELF, 1, 0x10),
            (0, GNTST_BAD_VIRT_ADDR)
        );
        assert_eq!(setup(&mut xen, D2, 1, a(1)), (0, GNTST_PERMISSION_DENIED));
        assert_eq!(setup(&mut xen, 9, 1, a(1)), (0, GNTST_BAD_DOMAIN));
        assert_eq!(
            call(&mut xen, &env, D1, 0, [GNTTABOP_SETUP_TABLE, a(0), 0, 0, 0]).ret,
            -i64::from(EINVAL)
        );

        // get_status_frames: v1 has none.
        let gsf = |xen: &mut Xen, nr: u32| -> (i64, i16) {
            let mut b = [0u8; GET_STATUS_FRAMES_SIZE];
            put_u32(&mut b, 0, nr);
            put_u16(&mut b, 4, DOMID_SELF);
            put_u64(&mut b, 8, a(1));
            env.current.set(D1);
            env.poke(a(0), &b);
            let r = call(
                xen,
                &env,
                D1,
                0,
                [GNTTABOP_GET_STATUS_FRAMES, a(0), 1, 0, 0],
            )
            .ret;
            (
                r,
                get_u16(&env.peek(a(0), GET_STATUS_FRAMES_SIZE), 6) as i16,
            )
        };
        assert_eq!(gsf(&mut xen, 0), (0, GNTST_OKAY));
        assert_eq!(gsf(&mut xen, 1), (0, GNTST_GENERAL_ERROR));

        // Versions: 1 only, as Xen on Arm.
        let setv = |xen: &mut Xen, v: u32| -> (i64, u32) {
            env.current.set(D1);
            env.poke(a(0), &v.to_le_bytes());
            let r = call(xen, &env, D1, 0, [GNTTABOP_SET_VERSION, a(0), 1, 0, 0]).ret;
            (r, get_u32(&env.peek(a(0), 4), 0))
        };
        assert_eq!(setv(&mut xen, 1), (0, 1));
        assert_eq!(setv(&mut xen, 2), (-i64::from(ENOSYS), 1));
        assert_eq!(setv(&mut xen, 0), (-i64::from(EINVAL), 1));
        assert_eq!(setv(&mut xen, 3), (-i64::from(EINVAL), 1));
        let getv = |xen: &mut Xen, dom: DomId| -> (i64, u32) {
            let mut b = [0u8; GET_VERSION_SIZE];
            put_u16(&mut b, 0, dom);
            env.current.set(D1);
            env.poke(a(0), &b);
            let r = call(xen, &env, D1, 0, [GNTTABOP_GET_VERSION, a(0), 1, 0, 0]).ret;
            (r, get_u32(&env.peek(a(0), GET_VERSION_SIZE), 4))
        };
        assert_eq!(getv(&mut xen, DOMID_SELF), (0, 1));
        assert_eq!(getv(&mut xen, D2), (-i64::from(EPERM), 0));
        assert_eq!(getv(&mut xen, 9), (-i64::from(ESRCH), 0));
    }

    #[test]
    fn control_domain_may_query_others() {
        let env = TestEnv::new(&[D1, D2], PAGES);
        let mut xen = Xen::new();
        for (id, caps) in [(D1, CAP_CONTROL), (D2, 0)] {
            xen.add_domain(DomainConfig {
                id,
                name: alloc::format!("d{}", id),
                nr_vcpus: 1,
                caps,
                ram_base_gfn: RAM_BASE_GFN,
                ram_pages: PAGES as u64,
                max_grant_frames: 8,
                max_evtchn_ports: 64,
                tmem: Default::default(),
            })
            .unwrap();
        }
        let mut b = [0u8; QUERY_SIZE_SIZE];
        put_u16(&mut b, 0, D2);
        env.current.set(D1);
        env.poke(a(0), &b);
        assert_eq!(
            call(&mut xen, &env, D1, 0, [GNTTABOP_QUERY_SIZE, a(0), 1, 0, 0]).ret,
            0
        );
        let b = env.peek(a(0), QUERY_SIZE_SIZE);
        assert_eq!((get_u32(&b, 4), get_u32(&b, 8), get_u16(&b, 12)), (1, 8, 0));
        // Control may map without a link.
        grant(&xen, D2, 1, GTF_PERMIT_ACCESS, D1, g(3));
        assert_eq!(map(&mut xen, &env, D1, D2, 1, FAR, false).0, GNTST_OKAY);
        // The other way round needs a link.
        grant(&xen, D1, 1, GTF_PERMIT_ACCESS, D2, g(3));
        assert_eq!(
            map(&mut xen, &env, D2, D1, 1, FAR, false).0,
            GNTST_PERMISSION_DENIED
        );
        check(&xen, &env);
    }

    #[test]
    fn swap_grant_refs() {
        let (env, mut xen) = setup();
        grant(&xen, D1, 3, GTF_PERMIT_ACCESS, D2, g(3));
        grant(&xen, D1, 4, GTF_PERMIT_ACCESS | GTF_READONLY, D3, g(4));
        let swap = |xen: &mut Xen, x: u32, y: u32| -> i16 {
            let mut b = [0u8; SWAP_SIZE];
            put_u32(&mut b, 0, x);
            put_u32(&mut b, 4, y);
            env.current.set(D1);
            env.poke(a(0), &b);
            assert_eq!(run(xen, &env, D1, GNTTABOP_SWAP_GRANT_REF, a(0), 1), 0);
            get_u16(&env.peek(a(0), SWAP_SIZE), 8) as i16
        };
        assert_eq!(swap(&mut xen, 3, 4), GNTST_OKAY);
        let gt = &xen.domain(D1).unwrap().grant;
        assert_eq!(
            gt.entry(3),
            Some((GTF_PERMIT_ACCESS | GTF_READONLY, D3, g(4) as u32))
        );
        assert_eq!(gt.entry(4), Some((GTF_PERMIT_ACCESS, D2, g(3) as u32)));
        assert_eq!(swap(&mut xen, 3, 3), GNTST_OKAY);
        assert_eq!(swap(&mut xen, 3, 512), GNTST_BAD_GNTREF);
        assert_eq!(map(&mut xen, &env, D2, D1, 4, FAR, false).0, GNTST_OKAY);
        assert_eq!(swap(&mut xen, 3, 4), GNTST_EAGAIN);
        check(&xen, &env);
    }

    #[test]
    fn teardown_of_the_mapper_unpins() {
        let (env, mut xen) = setup();
        grant(&xen, D1, 1, GTF_PERMIT_ACCESS, D2, g(3));
        grant(&xen, D1, 2, GTF_PERMIT_ACCESS, D2, g(4));
        balloon(&mut xen, &env, D2, &[20]);
        assert_eq!(map(&mut xen, &env, D2, D1, 1, g(20), false).0, GNTST_OKAY);
        assert_eq!(map(&mut xen, &env, D2, D1, 2, FAR, true).0, GNTST_OKAY);
        assert_eq!(map(&mut xen, &env, D2, D1, 1, FAR + 1, true).0, GNTST_OKAY);
        xen.remove_domain(&env, D2);
        assert_eq!(flags(&xen, D1, 1), GTF_PERMIT_ACCESS);
        assert_eq!(flags(&xen, D1, 2), GTF_PERMIT_ACCESS);
        assert_eq!(xen.domain(D1).unwrap().grant.pinned().count(), 0);
        assert_eq!(env.seen(D2, FAR), None);
        // Restarted, it can map again.
        grant(&xen, D1, 1, GTF_PERMIT_ACCESS, D3, g(3));
        xen.allow(D1, D3);
        assert_eq!(map(&mut xen, &env, D3, D1, 1, FAR, false).0, GNTST_OKAY);
        xen.reset_domain(&env, D3);
        assert_eq!(flags(&xen, D1, 1), GTF_PERMIT_ACCESS);
        assert_eq!(xen.domain(D3).unwrap().grant.nr_mappings(), 0);
        check(&xen, &env);
    }

    #[test]
    fn teardown_of_the_granter_revokes() {
        let (env, mut xen) = setup();
        grant(&xen, D1, 1, GTF_PERMIT_ACCESS, D2, g(3));
        balloon(&mut xen, &env, D2, &[20]);
        assert_eq!(add_grant_frame(&mut xen, &env, D1, 0, GRANT_GFN), 0);
        let (_, h1) = map(&mut xen, &env, D2, D1, 1, g(20), false);
        let (_, h2) = map(&mut xen, &env, D2, D1, 1, FAR, true);
        check(&xen, &env);
        xen.reset_domain(&env, D1);
        // D1 starts afresh: one empty frame, its grant frame unmapped.
        let gt = &xen.domain(D1).unwrap().grant;
        assert_eq!((gt.nr_frames(), gt.entry(1)), (1, Some((0, 0, 0))));
        assert_eq!(env.seen(D1, GRANT_GFN), None);
        // D2 no longer sees the page; its frames are a hole and empty.
        let d2 = xen.domain(D2).unwrap();
        assert_eq!(d2.p2m.get(&g(20)), Some(&Slot::Hole));
        assert_eq!(d2.p2m.get(&FAR), None);
        assert_eq!(env.seen(D2, g(20)), None);
        assert_eq!(env.seen(D2, FAR), None);
        assert!(d2.grant.mapping(h1).is_some_and(|m| m.revoked));
        check(&xen, &env);
        // The hole may be used again before the stale handle is unmapped.
        grant(&xen, D1, 1, GTF_PERMIT_ACCESS, D2, g(5));
        let (st, h3) = map(&mut xen, &env, D2, D1, 1, g(20), false);
        assert_eq!(st, GNTST_OKAY);
        assert!(h3 != h1 && h3 != h2);
        // Unmapping a revoked handle succeeds and leaves the new mapping.
        assert_eq!(unmap(&mut xen, &env, D2, g(20), h1), GNTST_OKAY);
        assert_eq!(unmap(&mut xen, &env, D2, g(20), h1), GNTST_BAD_HANDLE);
        assert_eq!(unmap(&mut xen, &env, D2, 0, h2), GNTST_OKAY);
        assert_eq!(env.seen(D2, g(20)), Some((page(&env, D1, 5), true)));
        check(&xen, &env);
        // Destroyed for good: the same.
        xen.remove_domain(&env, D1);
        assert!(
            xen.domain(D2)
                .unwrap()
                .grant
                .mapping(h3)
                .is_some_and(|m| m.revoked)
        );
        assert_eq!(unmap(&mut xen, &env, D2, g(20), h3), GNTST_OKAY);
        assert_eq!(xen.domain(D2).unwrap().grant.nr_mappings(), 0);
        check(&xen, &env);
    }

    #[test]
    fn handles_stay_distinct_when_two_vcpus_interleave() {
        let (env, mut xen) = setup();
        for r in 0..100 {
            grant(&xen, D1, r, GTF_PERMIT_ACCESS, D2, g(u64::from(r % 16) + 1));
        }
        env.current.set(D2);
        let n = 45u64;
        // vCPU 0's batch in frame 1, vCPU 1's in frame 4; different targets.
        for i in 0..n {
            env.poke(
                a(1) + i * MAP_SIZE as u64,
                &map_op((FAR + i) << 12, RW, i as u32, D1),
            );
            env.poke(
                a(4) + i * MAP_SIZE as u64,
                &map_op((FAR + 100 + i) << 12, RO, 50 + i as u32, D1),
            );
        }
        let c0 = call(
            &mut xen,
            &env,
            D2,
            0,
            [GNTTABOP_MAP_GRANT_REF, a(1), n, 0, 0],
        )
        .cont
        .unwrap();
        let c1 = call(
            &mut xen,
            &env,
            D2,
            1,
            [GNTTABOP_MAP_GRANT_REF, a(4), n, 0, 0],
        )
        .cont
        .unwrap();
        // vCPU 0 unmaps one of its first mappings meanwhile (its handle is
        // freed and may come back later, but never twice).
        let first = get_u32(&env.peek(a(1), MAP_SIZE), 20);
        assert_eq!(unmap(&mut xen, &env, D2, FAR, first), GNTST_OKAY);
        assert!(call(&mut xen, &env, D2, 1, c1).cont.is_none());
        assert!(call(&mut xen, &env, D2, 0, c0).cont.is_none());
        let mut live = BTreeSet::new();
        for (base, off) in [(a(1), 0u64), (a(4), 100)] {
            for i in 0..n {
                let b = env.peek(base + i * MAP_SIZE as u64, MAP_SIZE);
                assert_eq!(get_u16(&b, 18), 0);
                let h = get_u32(&b, 20);
                if base == a(1) && i == 0 {
                    continue;
                }
                assert!(live.insert(h), "handle {} given twice", h);
                let m = xen.domain(D2).unwrap().grant.mapping(h).unwrap();
                assert_eq!(m.gfn, FAR + off + i);
            }
        }
        assert_eq!(
            live.len() as u32,
            xen.domain(D2).unwrap().grant.nr_mappings()
        );
        check(&xen, &env);
    }

    #[test]
    fn maptrack_limit_and_fifo_reuse() {
        let mut gt = GrantTable::new(1);
        let m = Mapping {
            granter: D1,
            gref: 0,
            gfn: 0,
            readonly: false,
            revoked: false,
        };
        assert_eq!(
            (gt.insert(m), gt.insert(m), gt.insert(m)),
            (Some(0), Some(1), Some(2))
        );
        assert_eq!(gt.remove(0), Some(m));
        assert_eq!(gt.remove(0), None);
        // Freed handles wait at the tail.
        assert_eq!(gt.insert(m), Some(3));
        let mut seen = BTreeSet::new();
        seen.extend([1, 2, 3]);
        while let Some(h) = gt.insert(m) {
            assert!(seen.insert(h));
        }
        assert_eq!(seen.len() as u32, MAX_HANDLES);
        assert_eq!(gt.nr_mappings(), MAX_HANDLES);
        assert!(!gt.has_room());
        assert_eq!(gt.remove(77), Some(m));
        assert_eq!(gt.remove(5), Some(m));
        assert_eq!(
            (gt.insert(m), gt.insert(m), gt.insert(m)),
            (Some(77), Some(5), None)
        );
    }

    /// xorshift64*.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn random_operations_keep_the_invariants() {
        const OK_STATUSES: [i16; 8] = [
            GNTST_OKAY,
            GNTST_GENERAL_ERROR,
            GNTST_BAD_DOMAIN,
            GNTST_BAD_GNTREF,
            GNTST_BAD_HANDLE,
            GNTST_PERMISSION_DENIED,
            GNTST_BAD_PAGE,
            GNTST_BAD_COPY_ARG,
        ];
        for seed in 1..=6u64 {
            let (env, mut xen) = setup();
            xen.allow(D2, D3);
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let doms = [D1, D2, D3];
            for &d in &doms {
                balloon(&mut xen, &env, d, &[20, 21, 22, 23, 24, 25]);
            }
            let (mut maps, mut copies) = (0, 0);
            for step in 0..1500 {
                let d = doms[rng.below(3) as usize];
                let o = doms[rng.below(3) as usize];
                let r = rng.below(16) as u32;
                // Refs of `o` granted to `d`, to pick from mostly.
                let mine: Vec<u32> = (0..16)
                    .filter(|&k| xen.domain(o).unwrap().grant.entry(k).unwrap().1 == d)
                    .collect();
                let pick = |rng: &mut Rng| match rng.below(20) {
                    0 => 5000,
                    1..=4 => rng.below(18) as u32,
                    _ => mine
                        .get(rng.below(mine.len() as u64 + 1) as usize)
                        .copied()
                        .unwrap_or(r),
                };
                match rng.below(100) {
                    // The guest grants a free ref.
                    0..=19 => {
                        let gt = &xen.domain(d).unwrap().grant;
                        if gt.entry(r).unwrap().0 & (GTF_READING | GTF_WRITING) == 0 {
                            let ro = if rng.below(3) == 0 { GTF_READONLY } else { 0 };
                            let frame = match rng.below(10) {
                                0 => 0x10,
                                1 => g(20),
                                _ => g(1 + rng.below(8)),
                            };
                            grant(&xen, d, r, GTF_PERMIT_ACCESS | ro, o, frame);
                        }
                    }
                    // The guest ends access where it may.
                    20..=24 => {
                        let gt = &xen.domain(d).unwrap().grant;
                        if gt.entry(r).unwrap().0 & (GTF_READING | GTF_WRITING) == 0 {
                            grant(&xen, d, r, 0, 0, 0);
                        }
                    }
                    // The guest scribbles over an entry, keeping the status bits.
                    25..=27 => {
                        let gt = &xen.domain(d).unwrap().grant;
                        let f = gt.entry(r).unwrap().0 & (GTF_READING | GTF_WRITING);
                        let junk = rng.next();
                        grant(
                            &xen,
                            d,
                            r,
                            f | (junk as u16 & !(GTF_READING | GTF_WRITING)),
                            (junk >> 16) as u16 % 4,
                            g(junk >> 40 & 15),
                        );
                    }
                    // Map.
                    28..=54 => {
                        let target = if rng.below(2) == 0 {
                            g(20 + rng.below(7))
                        } else {
                            FAR + rng.below(8)
                        };
                        let gref = pick(&mut rng);
                        let (st, _) = map(&mut xen, &env, d, o, gref, target, rng.below(2) == 0);
                        assert!(OK_STATUSES.contains(&st), "status {}", st);
                        if st == GNTST_OKAY {
                            maps += 1;
                        }
                    }
                    // Unmap a live handle (sometimes at the wrong place) or junk.
                    55..=79 => {
                        let live: Vec<(u32, Mapping)> =
                            xen.domain(d).unwrap().grant.mappings().collect();
                        let (h, gfn) = match live.get(rng.below(live.len() as u64 + 1) as usize) {
                            Some((h, m)) if rng.below(8) != 0 => (*h, m.gfn),
                            Some((h, _)) => (*h, FAR + 9),
                            None => (rng.below(600) as u32, FAR),
                        };
                        let st = unmap(&mut xen, &env, d, gfn, h);
                        assert!(OK_STATUSES.contains(&st), "status {}", st);
                    }
                    // Copy.
                    80..=95 => {
                        let flags = rng.below(4) as u16;
                        let side = |rng: &mut Rng, gref: bool| {
                            let off = if rng.below(8) == 0 {
                                rng.below(4096)
                            } else {
                                rng.below(2048)
                            };
                            if gref {
                                (u64::from(pick(rng)), o, off as u16)
                            } else {
                                (g(rng.below(24)), DOMID_SELF, off as u16)
                            }
                        };
                        let s = side(&mut rng, flags & GNTCOPY_SOURCE_GREF != 0);
                        let t = side(&mut rng, flags & GNTCOPY_DEST_GREF != 0);
                        let op = copy_op(s, t, rng.below(2049) as u16, flags);
                        let st = copy(&mut xen, &env, d, op);
                        assert!(OK_STATUSES.contains(&st), "status {}", st);
                        if st == GNTST_OKAY {
                            copies += 1;
                        }
                    }
                    // A domain restarts.
                    96 => {
                        xen.reset_domain(&env, d);
                        balloon(&mut xen, &env, d, &[20, 21, 22, 23, 24, 25]);
                    }
                    _ => {
                        let sp = rng.below(16) as u32;
                        let mut b = [0u8; SWAP_SIZE];
                        put_u32(&mut b, 0, r);
                        put_u32(&mut b, 4, sp);
                        env.current.set(d);
                        env.poke(a(0), &b);
                        assert_eq!(run(&mut xen, &env, d, GNTTABOP_SWAP_GRANT_REF, a(0), 1), 0);
                    }
                }
                check(&xen, &env);
                let _ = step;
            }
            assert!(
                maps > 50 && copies > 50,
                "seed {}: only {} maps and {} copies succeeded",
                seed,
                maps,
                copies
            );
            for &d in &doms {
                xen.remove_domain(&env, d);
            }
        }
    }
}
