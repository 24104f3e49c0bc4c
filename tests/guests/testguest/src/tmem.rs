//! The test guest's tmem programs, chosen by `/chosen/bootargs`
//! (`testguest tmem=ROLE`): two domains drive transcendent memory through
//! Xen's hypercall 38 (`HYPERVISOR_tmem_op`, Xen 4.12's `struct tmem_op`)
//! and take turns through a mailbox in static shared memory
//! ([`hw::MAILBOX`]), as scenarios/tmem-pair.toml sets them up:
//!
//! - `a` makes a shared ephemeral pool (the UUID both domains are
//!   authorized for), a private persistent pool and a private ephemeral
//!   pool; checks the refusals (bad pool, offsets, foreign frame, unknown
//!   command, an unauthorized UUID, persistent pages without room); puts
//!   pages in the shared pool for `b`; gets `b`'s pages back; gives back
//!   memory, parks persistent pages in it and floods its ephemeral pool
//!   far past the hypervisor's budget; then waits for `b` to be destroyed
//!   and checks that every page it still expects is intact.
//! - `b` joins the shared pool, gets `a`'s pages (twice: shared gets are
//!   not exclusive), checks that a private get is, puts its own pages in
//!   the shared pool, and powers off in the middle of `a`'s run.
//! - `bench-raw` and `bench-lz4` (`cargo run -- bench tmem`, one domain
//!   per QEMU run) time puts and gets of a page mix against a null
//!   hypercall; the runs differ only in `hv,tmem-compress`.
//!
//! Pages move through two frames of this image's bss; the frames given
//! back to the hypervisor are another bss array nothing else touches.
//! The MMU stays off (all accesses are Device memory, uncached), which
//! QEMU does not model differently, so the hypervisor's copies and ours
//! agree.

use core::cell::UnsafeCell;

use crate::hw::{self, MAILBOX, now, say, wait_for};
use crate::{Msg, Tally, ensure, msg};

const PAGE: u64 = 4096;
const HC_MEMORY_OP: u64 = 12;
const HC_XEN_VERSION: u64 = 17;
const HC_EVENT_CHANNEL_OP: u64 = 32;
const HC_TMEM_OP: u64 = 38;
const XENMEM_DECREASE_RESERVATION: u64 = 1;
const XENMEM_POPULATE_PHYSMAP: u64 = 6;
const EVTCHNOP_BIND_INTERDOMAIN: u64 = 0;
const DOMID_SELF: u16 = 0x7ff0;

const TMEM_NEW_POOL: u32 = 1;
const TMEM_DESTROY_POOL: u32 = 2;
const TMEM_PUT_PAGE: u32 = 4;
const TMEM_GET_PAGE: u32 = 5;
const TMEM_FLUSH_PAGE: u32 = 6;
const TMEM_FLUSH_OBJECT: u32 = 7;
const POOL_PERSIST: u32 = 1;
const POOL_SHARED: u32 = 2;
const POOL_V1: u32 = 1 << 24;

const EPERM: i64 = -1;
const ESRCH: i64 = -3;
const ENOMEM: i64 = -12;
const EFAULT: i64 = -14;
const ENODEV: i64 = -19;
const EINVAL: i64 = -22;
const ENOSYS: i64 = -38;
const EEMPTY: i64 = -1001;

/// The shared pool's UUID (scenarios/tmem-pair.toml authorizes both
/// domains for `5a7d0f1e-0000-4000-8000-000000000001`), as the tmem ABI
/// reads its 16 bytes: two little-endian words.
const SHARED_UUID: [u64; 2] = [0x0040_0000_1e0f_7d5a, 0x0100_0000_0000_0080];
/// A UUID neither domain is authorized for.
const OTHER_UUID: [u64; 2] = [0x1111, 0x2222];

/// Pages `a` puts for `b`, and `b` for `a`.
const SHARED_PAGES: u32 = 32;
const B_PAGES: u32 = 16;
/// Frames `a` gives back, and the persistent pages it parks there.
const GIVEN: usize = 64;
/// Ephemeral pages `a` puts: well past the scenario's 1 MiB budget.
const FLOOD: u32 = 768;
/// Of which the last this many must survive (they are the newest).
const NEWEST: u32 = 16;

/// Mailbox words (each `STEP | n`, so stale memory never looks like a
/// step): `a`'s progress at 0, `b`'s at 8.
const STEP: u64 = 0x5eed_0000;
const A_WORD: u64 = 0;
const B_WORD: u64 = 8;

// --------------------------------------------------------------- memory

/// Page-aligned memory of this image that only this module touches, by
/// address, with volatile accesses (the hypervisor writes it too).
#[repr(C, align(4096))]
struct Frames<const N: usize>(UnsafeCell<[[u64; 512]; N]>);

// SAFETY: only vCPU 0 runs the tmem programs; nothing else touches these.
unsafe impl<const N: usize> Sync for Frames<N> {}

impl<const N: usize> Frames<N> {
    const fn new() -> Self {
        Frames(UnsafeCell::new([[0; 512]; N]))
    }

    fn addr(&self, i: usize) -> u64 {
        self.0.get() as u64 + (i.min(N - 1) as u64) * PAGE
    }
}

/// Two frames pages go out of and come back into.
static DATA: Frames<2> = Frames::new();
/// The op structures and the extent list.
static ARGS: Frames<1> = Frames::new();
/// Given back to the hypervisor and taken back; never read otherwise.
static BALLOON: Frames<GIVEN> = Frames::new();

fn write64(addr: u64, v: u64) {
    // SAFETY: `addr` is an 8-byte aligned word of one of the frames above
    // (every caller derives it from `Frames::addr` plus an offset below a
    // page), which nothing else references.
    unsafe { core::ptr::write_volatile(addr as *mut u64, v) }
}

fn read64(addr: u64) -> u64 {
    // SAFETY: as in `write64`.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

/// The content of page (`seed`, `kind`), one word at a time: kind 0 is
/// mostly zero, 1 text-like, 2 noise. Deterministic, so a page is checked
/// without keeping a copy.
fn word(seed: u64, kind: u64, i: u64) -> u64 {
    match kind % 3 {
        0 if i < 4 => seed ^ i,
        0 => 0,
        1 => {
            // Lower-case words and spaces: what a text file's page holds.
            let mut w = 0u64;
            for b in 0..8 {
                let n = (i * 8 + b + seed) % 7;
                let c = if n == 0 {
                    b' '
                } else {
                    b'a' + ((seed + i + b) % 26) as u8
                };
                w |= u64::from(c) << (b * 8);
            }
            w
        }
        _ => {
            let mut x = (seed << 32 | i).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            x ^= x >> 29;
            x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x ^ (x >> 32)
        }
    }
}

fn fill(frame: usize, seed: u64, kind: u64) {
    let base = DATA.addr(frame);
    for i in 0..512 {
        write64(base + i * 8, word(seed, kind, i));
    }
}

fn clear(frame: usize) {
    let base = DATA.addr(frame);
    for i in 0..512 {
        write64(base + i * 8, 0xdead_beef_dead_beef);
    }
}

fn holds(frame: usize, seed: u64, kind: u64) -> bool {
    let base = DATA.addr(frame);
    (0..512).all(|i| read64(base + i * 8) == word(seed, kind, i))
}

// ----------------------------------------------------------- hypercalls

/// `hvc #0xea1`: Xen's hypercall, number in x16, arguments in x0..x4,
/// result in x0.
fn hypercall(nr: u64, a0: u64, a1: u64) -> i64 {
    let r: u64;
    // SAFETY: the hypervisor reads our memory only where the arguments
    // point (the frames above) and changes no register but x0.
    unsafe {
        core::arch::asm!("hvc #0xea1",
            inout("x0") a0 => r, inout("x1") a1 => _, inout("x16") nr => _,
            options(nostack));
    }
    r as i64
}

/// One `struct tmem_op` at the start of [`ARGS`].
#[derive(Clone, Copy)]
struct Op {
    cmd: u32,
    pool: u32,
    /// uuid (NEW_POOL) or oid (page ops): words at offsets 8, 16, 24.
    words: [u64; 3],
    /// flags (NEW_POOL) or index.
    index: u32,
    /// tmem_offset, pfn_offset, len.
    offsets: [u32; 3],
    cmfn: u64,
}

impl Op {
    fn call(&self) -> i64 {
        let b = ARGS.addr(0);
        write64(b, u64::from(self.cmd) | u64::from(self.pool) << 32);
        for (i, w) in self.words.iter().enumerate() {
            write64(b + 8 + 8 * i as u64, *w);
        }
        write64(
            b + 32,
            u64::from(self.index) | u64::from(self.offsets[0]) << 32,
        );
        write64(
            b + 40,
            u64::from(self.offsets[1]) | u64::from(self.offsets[2]) << 32,
        );
        write64(b + 48, self.cmfn);
        hypercall(HC_TMEM_OP, b, 0)
    }
}

fn new_pool(flags: u32, uuid: [u64; 2]) -> i64 {
    // For NEW_POOL the flags sit where an oid's third word starts.
    Op {
        cmd: TMEM_NEW_POOL,
        pool: 0,
        words: [uuid[0], uuid[1], u64::from(flags | POOL_V1)],
        index: 0,
        offsets: [0; 3],
        cmfn: 0,
    }
    .call()
}

fn page_op(cmd: u32, pool: u32, oid: u64, index: u32, frame: usize) -> i64 {
    Op {
        cmd,
        pool,
        words: [oid, 0, 0],
        index,
        offsets: [0; 3],
        cmfn: DATA.addr(frame) / PAGE,
    }
    .call()
}

fn put(pool: u32, oid: u64, index: u32) -> i64 {
    page_op(TMEM_PUT_PAGE, pool, oid, index, 0)
}

/// A get into frame 1 (cleared first, so a stale copy cannot pass).
fn get(pool: u32, oid: u64, index: u32) -> i64 {
    clear(1);
    page_op(TMEM_GET_PAGE, pool, oid, index, 1)
}

/// Puts page (`seed`, `kind`) at (`pool`, `oid`, `index`); Err names the
/// result.
fn put_page(pool: u32, oid: u64, index: u32, seed: u64, kind: u64) -> Result<(), Msg> {
    fill(0, seed, kind);
    let r = put(pool, oid, index);
    ensure(r == 1, || msg!("put pool {pool} {oid}/{index}: {r}"))
}

/// Gets (`pool`, `oid`, `index`), which must be page (`seed`, `kind`).
fn get_page(pool: u32, oid: u64, index: u32, seed: u64, kind: u64) -> Result<(), Msg> {
    let r = get(pool, oid, index);
    ensure(r == 1, || {
        msg!("get pool {pool} {oid}/{index}: {r}, want 1")
    })?;
    ensure(holds(1, seed, kind), || {
        msg!("pool {pool} {oid}/{index}: not the page put")
    })
}

/// decrease_reservation or populate_physmap of the [`BALLOON`] frames
/// `range`: the extents done, or an errno.
fn reservation(cmd: u64, range: core::ops::Range<usize>) -> i64 {
    let b = ARGS.addr(0);
    let list = b + 2048;
    let n = range.len() as u64;
    for (k, f) in range.enumerate() {
        write64(list + 8 * k as u64, BALLOON.addr(f) / PAGE);
    }
    // struct xen_memory_reservation: extent_start, nr_extents,
    // extent_order, mem_flags, domid.
    write64(b + 1024, list);
    write64(b + 1032, n);
    write64(b + 1040, 0);
    write64(b + 1048, u64::from(DOMID_SELF));
    hypercall(HC_MEMORY_OP, cmd, b + 1024)
}

/// EVTCHNOP_bind_interdomain to port 0 of domain `dom`: EINVAL while the
/// domain exists (port 0 is never unbound), ESRCH once it is gone.
fn domain_exists(dom: u16) -> bool {
    let b = ARGS.addr(0) + 3072;
    write64(b, u64::from(dom));
    write64(b + 8, 0);
    hypercall(HC_EVENT_CHANNEL_OP, EVTCHNOP_BIND_INTERDOMAIN, b) != ESRCH
}

// -------------------------------------------------------------- mailbox

fn post(word_at: u64, step: u64) {
    MAILBOX.write64(word_at, STEP | step);
}

/// Waits (up to `ms`) until the word at `word_at` reaches `step`.
fn await_step(word_at: u64, step: u64, ms: u64) -> Result<(), Msg> {
    let ok = wait_for(ms, || {
        let v = MAILBOX.read64(word_at);
        v & !0xffff == STEP && v & 0xffff >= step
    });
    ensure(ok, || {
        msg!(
            "no step {step} at mailbox +{word_at} within {ms} ms (read {:#x})",
            MAILBOX.read64(word_at)
        )
    })
}

// ------------------------------------------------------------- programs

/// Runs the program `role` names; the caller prints PASS or FAIL from
/// the tally and powers off.
pub fn run(role: &str, t: &mut Tally) {
    match role {
        "a" => role_a(t),
        "b" => role_b(t),
        "bench-raw" => bench(t, false),
        "bench-lz4" => bench(t, true),
        other => t.check("tmem_role", Err(msg!("unknown role {other:?}"))),
    }
}

/// Object ids: what `a` shares, what `b` shares, `a`'s persistent and
/// ephemeral objects.
const OID_A: u64 = 0xa;
const OID_B: u64 = 0xb;
const OID_PERS: u64 = 0x9e55;
const OID_EPH: u64 = 0xe9;

fn role_a(t: &mut Tally) {
    // The pools: ids in creation order.
    let shared = new_pool(POOL_SHARED, SHARED_UUID);
    let pers = new_pool(POOL_PERSIST, [0; 2]);
    let eph = new_pool(0, [0; 2]);
    t.check(
        "tmem_pools",
        ensure(shared == 0 && pers == 1 && eph == 2, || {
            msg!("pool ids {shared}, {pers}, {eph}, want 0, 1, 2")
        }),
    );
    let (shared, pers, eph) = (0u32, 1u32, 2u32);
    t.check("tmem_refusals", refusals(pers, eph));

    // Pages for b, in the shared pool.
    t.check(
        "tmem_shared_put",
        (0..SHARED_PAGES)
            .try_for_each(|i| put_page(shared, OID_A, i, 0xa000 + u64::from(i), u64::from(i))),
    );
    post(A_WORD, 1);
    // b's pages come back to us through the same pool.
    t.check(
        "tmem_shared_get_from_b",
        await_step(B_WORD, 1, 20_000).and_then(|()| {
            (0..B_PAGES)
                .try_for_each(|i| get_page(shared, OID_B, i, 0xb000 + u64::from(i), u64::from(i)))
        }),
    );

    t.check("tmem_persistent_needs_room", persistent_room(pers));
    t.check("tmem_pressure", pressure(pers, eph));
    post(A_WORD, 2);

    // b powers off now: wait for its domain to be gone.
    let gone = await_step(B_WORD, 2, 20_000).and_then(|()| {
        // Asked every 10 ms: each EINVAL answer is a log line.
        let gone = wait_for(20_000, || {
            hw::delay_ms(10);
            !domain_exists(2)
        });
        ensure(gone, || {
            msg!("domain 2 still exists 20 s after it said it was leaving")
        })
    });
    t.check("tmem_other_domain_destroyed", gone);
    t.check(
        "tmem_intact_after_destroy",
        intact_after_destroy(shared, pers, eph),
    );
    t.check("tmem_teardown", teardown(shared, pers, eph));
}

/// Every refusal a guest can provoke with bad fields.
fn refusals(pers: u32, eph: u32) -> Result<(), Msg> {
    let expect = |what: &str, got: i64, want: i64| {
        ensure(got == want, || msg!("{what}: {got}, want {want}"))
    };
    fill(0, 1, 0);
    expect("pool 9 (none)", put(9, 1, 0), ENODEV)?;
    expect("pool 0xffffffff", put(u32::MAX, 1, 0), ENODEV)?;
    let mut op = Op {
        cmd: TMEM_PUT_PAGE,
        pool: eph,
        words: [1, 0, 0],
        index: 0,
        offsets: [0, 0, 0],
        cmfn: DATA.addr(0) / PAGE,
    };
    for (i, offsets) in [[8, 0, 0], [0, 8, 0], [0, 0, 8], [0, 0, 4097]]
        .into_iter()
        .enumerate()
    {
        op.offsets = offsets;
        expect(
            ["tmem_offset", "pfn_offset", "len 8", "len 4097"][i],
            op.call(),
            EINVAL,
        )?;
    }
    op.offsets = [0, 0, 4096];
    expect("len 4096", op.call(), 1)?;
    op.offsets = [0; 3];
    // Frames that are not our RAM: a device frame, the top of the IPA space.
    for cmfn in [hw::UART_BASE / PAGE, (1u64 << 40) / PAGE - 1, u64::MAX] {
        op.cmfn = cmfn;
        expect("foreign frame", op.call(), EFAULT)?;
    }
    op.cmd = 3;
    op.cmfn = DATA.addr(0) / PAGE;
    expect("command 3", op.call(), ENOSYS)?;
    op.cmd = 99;
    expect("command 99", op.call(), ENOSYS)?;
    expect(
        "unauthorized shared pool",
        new_pool(POOL_SHARED, OTHER_UUID),
        EPERM,
    )?;
    expect(
        "shared and persistent",
        new_pool(POOL_SHARED | POOL_PERSIST, SHARED_UUID),
        EPERM,
    )?;
    // The persistent pool needs memory given back first.
    expect("persistent without room", put(pers, OID_PERS, 0), ENOMEM)?;
    // A private ephemeral get is exclusive: the pool is then empty.
    expect("private get", get(eph, 1, 0), 1)?;
    ensure(holds(1, 1, 0), || msg!("private get: not the page put"))?;
    expect("private get again", get(eph, 1, 0), EEMPTY)
}

/// Persistent pages count against our memory: room comes from frames
/// given back, and those frames cannot come back while the pages hold it.
fn persistent_room(pers: u32) -> Result<(), Msg> {
    let r = reservation(XENMEM_DECREASE_RESERVATION, 0..GIVEN);
    ensure(r == GIVEN as i64, || {
        msg!("decrease_reservation: {r}, want {GIVEN}")
    })?;
    for i in 0..GIVEN as u32 {
        put_page(pers, OID_PERS, i, 0x9000 + u64::from(i), u64::from(i))?;
    }
    fill(0, 0, 0);
    let r = put(pers, OID_PERS, GIVEN as u32);
    ensure(r == ENOMEM, || {
        msg!("persistent put past the room: {r}, want {ENOMEM}")
    })?;
    let r = reservation(XENMEM_POPULATE_PHYSMAP, 0..1);
    ensure(r == 0, || {
        msg!("populate_physmap while persistent pages hold the room: {r}, want 0")
    })
}

/// Ephemeral pages far past the budget: the oldest go, the newest and
/// every persistent page stay.
fn pressure(pers: u32, eph: u32) -> Result<(), Msg> {
    for i in 0..FLOOD {
        put_page(eph, OID_EPH, i, 0xe000 + u64::from(i), 2)?;
    }
    let mut dropped = 0;
    for i in 0..64 {
        match get(eph, OID_EPH, i) {
            0 => dropped += 1,
            1 => {}
            r => return Err(msg!("get of old ephemeral page {i}: {r}")),
        }
    }
    ensure(dropped > 0, || {
        msg!("no ephemeral page dropped after {FLOOD} puts")
    })?;
    say!("testguest: tmem_pressure: {dropped} of the 64 oldest ephemeral pages dropped");
    for i in FLOOD - NEWEST..FLOOD {
        // Private ephemeral gets are exclusive: put it back after.
        get_page(eph, OID_EPH, i, 0xe000 + u64::from(i), 2)?;
        put_page(eph, OID_EPH, i, 0xe000 + u64::from(i), 2)?;
    }
    (0..GIVEN as u32)
        .try_for_each(|i| get_page(pers, OID_PERS, i, 0x9000 + u64::from(i), u64::from(i)))
}

/// After `b` is destroyed: our persistent pages, our newest ephemeral
/// pages and the pages `b` left in the shared pool are all there.
fn intact_after_destroy(shared: u32, pers: u32, eph: u32) -> Result<(), Msg> {
    (0..GIVEN as u32)
        .try_for_each(|i| get_page(pers, OID_PERS, i, 0x9000 + u64::from(i), u64::from(i)))?;
    (FLOOD - NEWEST..FLOOD)
        .try_for_each(|i| get_page(eph, OID_EPH, i, 0xe000 + u64::from(i), 2))?;
    (0..B_PAGES)
        .try_for_each(|i| get_page(shared, OID_B, i, 0xb000 + u64::from(i), u64::from(i)))?;
    // The pool still takes pages.
    put_page(shared, OID_A, 999, 0xa999, 1)?;
    get_page(shared, OID_A, 999, 0xa999, 1)
}

/// Flushing the persistent pages frees the room: the frames come back.
fn teardown(shared: u32, pers: u32, eph: u32) -> Result<(), Msg> {
    let r = page_op(TMEM_FLUSH_PAGE, pers, OID_PERS, 0, 0);
    ensure(r == 1, || msg!("flush page: {r}, want 1"))?;
    let r = reservation(XENMEM_POPULATE_PHYSMAP, 0..1);
    ensure(r == 1, || {
        msg!("populate_physmap of the freed room: {r}, want 1")
    })?;
    let r = page_op(TMEM_FLUSH_OBJECT, pers, OID_PERS, 0, 0);
    ensure(r == 1, || msg!("flush object: {r}, want 1"))?;
    let r = reservation(XENMEM_POPULATE_PHYSMAP, 1..GIVEN);
    ensure(r == GIVEN as i64 - 1, || {
        msg!("populate_physmap of the rest: {r}, want {}", GIVEN - 1)
    })?;
    // Populated frames come back zeroed.
    ensure(
        (0..512).all(|i| read64(BALLOON.addr(GIVEN - 1) + i * 8) == 0),
        || msg!("a populated frame is not zeroed"),
    )?;
    for pool in [shared, pers, eph] {
        let r = Op {
            cmd: TMEM_DESTROY_POOL,
            pool,
            words: [0; 3],
            index: 0,
            offsets: [0; 3],
            cmfn: 0,
        }
        .call();
        ensure(r == 1, || msg!("destroy pool {pool}: {r}, want 1"))?;
    }
    let r = put(shared, OID_A, 0);
    ensure(r == ENODEV, || {
        msg!("put into a destroyed pool: {r}, want {ENODEV}")
    })
}

fn role_b(t: &mut Tally) {
    let joined = await_step(A_WORD, 1, 20_000).and_then(|()| {
        // A private pool first, so the shared one is not id 0 here: the
        // id is per domain.
        let own = new_pool(0, [0; 2]);
        let shared = new_pool(POOL_SHARED, SHARED_UUID);
        ensure(own == 0 && shared == 1, || {
            msg!("pool ids {own}, {shared}, want 0, 1")
        })
    });
    let ok = joined.is_ok();
    t.check("tmem_join_shared", joined);
    if !ok {
        return;
    }
    let (own, shared) = (0u32, 1u32);
    // a's pages, twice: a shared get leaves the page.
    for pass in ["tmem_shared_get", "tmem_shared_get_again"] {
        t.check(
            pass,
            (0..SHARED_PAGES)
                .try_for_each(|i| get_page(shared, OID_A, i, 0xa000 + u64::from(i), u64::from(i))),
        );
    }
    t.check(
        "tmem_private_get_exclusive",
        put_page(own, 5, 0, 0xbb, 1).and_then(|()| {
            put_page(own, 5, 1, 0xbc, 1)?;
            get_page(own, 5, 0, 0xbb, 1)?;
            let r = get(own, 5, 0);
            ensure(r == 0, || msg!("second private get: {r}, want 0"))
        }),
    );
    t.check(
        "tmem_shared_put",
        (0..B_PAGES)
            .try_for_each(|i| put_page(shared, OID_B, i, 0xb000 + u64::from(i), u64::from(i))),
    );
    post(B_WORD, 1);
    // Leave in the middle of a's run, with pages in both kinds of pool.
    t.check("tmem_wait_for_a", await_step(A_WORD, 2, 60_000));
    post(B_WORD, 2);
}

// ------------------------------------------------------------- benchmark

/// Pages per timed loop.
const BENCH_PAGES: u32 = 256;
const BENCH_ROUNDS: u32 = 4;

/// Times a null hypercall, puts and gets of [`BENCH_PAGES`] pages of a
/// mix (a third mostly zero, a third text-like, a third noise) and
/// prints `tmembench: ...` in counter ticks and nanoseconds per op.
fn bench(t: &mut Tally, lz4: bool) {
    let pool = new_pool(0, [0; 2]);
    if pool < 0 {
        t.check("tmem_bench_pool", Err(msg!("new pool: {pool}")));
        return;
    }
    let pool = pool as u32;
    let hz = hw::counter_hz();
    let ns = |ticks: u64, ops: u64| ticks * 1_000_000_000 / hz / ops.max(1);
    let ops = u64::from(BENCH_PAGES * BENCH_ROUNDS);
    let t0 = now();
    for _ in 0..ops {
        hypercall(HC_XEN_VERSION, 0, 0);
    }
    let null = now() - t0;
    // Pages are filled outside the timed part: only the hypercall is
    // timed.
    let (mut put_ticks, mut get_ticks, mut bad) = (0u64, 0u64, 0u32);
    for round in 0..BENCH_ROUNDS {
        for i in 0..BENCH_PAGES {
            let seed = u64::from(round * BENCH_PAGES + i);
            fill(0, seed, u64::from(i));
            let t0 = now();
            let r = put(pool, 1, i);
            put_ticks += now() - t0;
            bad += u32::from(r != 1);
        }
        for i in 0..BENCH_PAGES {
            let t0 = now();
            let r = page_op(TMEM_GET_PAGE, pool, 1, i, 1);
            get_ticks += now() - t0;
            bad += u32::from(r != 1);
        }
    }
    t.check(
        "tmem_bench_ops",
        ensure(bad == 0, || msg!("{bad} puts or gets failed")),
    );
    say!(
        "tmembench: mode={} ops={ops} null_ns={} put_ns={} get_ns={}",
        if lz4 { "lz4" } else { "raw" },
        ns(null, ops),
        ns(put_ticks, ops),
        ns(get_ticks, ops)
    );
}
