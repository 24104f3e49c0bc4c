//! Guest page walks over hostile page tables, in two modes chosen by the
//! first byte's low bit.
//!
//! Guest RAM is 16 frames at fuzzed frame numbers, every 8-byte word of a
//! frame reading as the frame's fill value unless written. Raw: the input
//! gives the paging registers, MAXPHYADDR, the frames, their fills and
//! any words, so the walk mostly meets junk. Generated: the input picks a
//! paging mode (off, 32-bit with or without PSE, PAE, 4- and 5-level, the
//! refused LMA-without-paging state) and builds the chain of tables for
//! one virtual address through the frames, entries mostly right (present,
//! permissions and page sizes at random) and at times not (a clear present
//! bit, reserved or high bits, a misaligned large page, a table outside
//! RAM or a table reused), then writes junk into other slots.
//!
//! Then virtual addresses near the built one and anywhere are translated
//! for every access kind, and ranges of them chunked. Nothing may panic,
//! and:
//! - the walk reads only aligned words below 2^MAXPHYADDR, at most five
//!   per translation;
//! - an Ok address is below 2^MAXPHYADDR (below 2^32 with paging off,
//!   where it is the address truncated), keeps the page offset, and
//!   outside long mode depends only on the low 32 bits of the address;
//! - a MAXPHYADDR outside 32..=52 is refused, a non-canonical address in
//!   long mode is refused, LMA without paging is refused;
//! - permissions are monotonic: an access that succeeds succeeds with
//!   less asked (fewer of write, user, fetch), at the same address, and
//!   every failure that is not a permission is the same for all accesses;
//! - chunks: at most ceil(len / 4096) + 1 of them, within size_hint, none
//!   crossing a 4 KiB boundary on either side, each at the address
//!   `translate` gives for its first byte, offsets contiguous, a failure
//!   only as the last item, lengths summing to len when all are Ok, and
//!   nothing after the end;
//! - every error is one line.
#![no_main]

use std::cell::Cell;
use std::collections::HashMap;

use hv_x86::gwalk::{
    self, Access, CHUNK_GRANULE, GuestPhys, MAX_CHUNKED_LEN, MAXPHYADDR_LIMIT, MAXPHYADDR_MIN,
    Paging, WalkError,
};
use libfuzzer_sys::fuzz_target;

const FRAMES: usize = 16;
const CR0_PE: u64 = 1;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
const P: u64 = 1;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PS: u64 = 1 << 7;
const NX: u64 = 1 << 63;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut g = Input(rest);
    let (ram, paging, va) = if mode & 1 == 0 {
        raw(&mut g)
    } else {
        generated(&mut g)
    };
    ram.limit.set(phys_limit(paging.maxphyaddr));
    queries(&mut g, &ram, paging, va);
});

/// The input, consumed from the front; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | u32::from(self.u16()) << 16
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }

    /// True about once in `n` times; never once the input is used up, so
    /// a short input builds what is well formed.
    fn rarely(&mut self, n: u8) -> bool {
        !self.0.is_empty() && self.u8().is_multiple_of(n)
    }
}

/// 2^maxphyaddr, or no limit when the width is one the walk refuses.
fn phys_limit(maxphyaddr: u8) -> u64 {
    if (MAXPHYADDR_MIN..=MAXPHYADDR_LIMIT).contains(&maxphyaddr) {
        1 << maxphyaddr
    } else {
        u64::MAX
    }
}

/// Guest RAM: frames at their frame numbers, words written or the fill.
#[derive(Default)]
struct Ram {
    frames: Vec<(u64, u64)>,
    words: HashMap<u64, u64>,
    reads: Cell<usize>,
    limit: Cell<u64>,
}

impl Ram {
    fn word(&self, gpa: u64) -> Option<u64> {
        let fill = self
            .frames
            .iter()
            .find(|(gfn, _)| *gfn == gpa >> 12)
            .map(|(_, fill)| *fill)?;
        Some(self.words.get(&(gpa & !7)).copied().unwrap_or(fill))
    }

    fn put(&mut self, gpa: u64, value: u64) {
        self.words.insert(gpa & !7, value);
    }

    fn put32(&mut self, gpa: u64, value: u32) {
        let shift = (gpa & 4) * 8;
        let word = self.word(gpa).unwrap_or(0);
        self.put(
            gpa,
            (word & !(0xffff_ffff << shift)) | u64::from(value) << shift,
        );
    }

    fn read(&self, gpa: u64, align: u64) {
        assert_eq!(gpa % align, 0, "unaligned table read at {gpa:#x}");
        assert!(gpa < self.limit.get(), "table read at {gpa:#x}");
        self.reads.set(self.reads.get() + 1);
    }
}

impl GuestPhys for Ram {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        self.read(gpa, 8);
        self.word(gpa)
    }

    fn read_u32(&self, gpa: u64) -> Option<u32> {
        self.read(gpa, 4);
        self.word(gpa).map(|w| (w >> ((gpa & 4) * 8)) as u32)
    }
}

/// Frame numbers: small and together, anywhere below 2^maxphyaddr, or
/// (rarely) anywhere at all.
fn frames(g: &mut Input, maxphyaddr: u8) -> Vec<(u64, u64)> {
    let width = u32::from(maxphyaddr.clamp(MAXPHYADDR_MIN, MAXPHYADDR_LIMIT)) - 12;
    let base = u64::from(g.u16()) << 4;
    (0..FRAMES as u64)
        .map(|i| {
            let gfn = match g.u8() % 8 {
                0..=4 => base + i,
                5 | 6 => g.u64() & ((1 << width) - 1),
                _ => g.u64() >> 12,
            };
            let fill = match g.u8() % 4 {
                0 | 1 => 0,
                2 => u64::from(g.u8()) | 1,
                _ => g.u64(),
            };
            (gfn, fill)
        })
        .collect()
}

fn raw(g: &mut Input) -> (Ram, Paging, u64) {
    let paging = Paging {
        cr0: g.u64(),
        cr3: g.u64(),
        cr4: g.u64(),
        efer: g.u64(),
        maxphyaddr: g.u8(),
    };
    let mut ram = Ram {
        frames: frames(g, paging.maxphyaddr),
        ..Ram::default()
    };
    for _ in 0..g.u8() % 64 {
        let frame = ram.frames[usize::from(g.u8()) % FRAMES].0;
        let slot = u64::from(g.u16() % 512);
        let value = g.u64();
        ram.put((frame << 12) | (slot * 8), value);
    }
    let va = g.u64();
    (ram, paging, va)
}

/// The paging modes the generator builds tables for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Off,
    Bits32,
    Pae,
    Long4,
    Long5,
}

/// A table entry's flags: present unless rarely, the rest at random.
fn flags(g: &mut Input) -> u64 {
    let bits = g.u8();
    let mut f = if g.rarely(24) { 0 } else { P };
    if bits & 1 != 0 {
        f |= RW;
    }
    if bits & 2 != 0 {
        f |= US;
    }
    if bits & 4 != 0 {
        f |= NX;
    }
    // Accessed, dirty, global, PWT/PCD: ignored by the walk.
    f | u64::from(bits & 0xe0) << 1 & 0x178
}

/// High bits an entry rarely carries: reserved or ignored by the mode.
fn junk_high(g: &mut Input) -> u64 {
    if g.rarely(16) {
        1 << (32 + g.u8() % 31)
    } else {
        0
    }
}

fn generated(g: &mut Input) -> (Ram, Paging, u64) {
    let kind = match g.u8() % 6 {
        0 => Kind::Off,
        1 => Kind::Bits32,
        2 => Kind::Pae,
        3 | 4 => Kind::Long4,
        _ => Kind::Long5,
    };
    let maxphyaddr = match g.u8() % 8 {
        0 => 32,
        1 => 36,
        2 => 39,
        3 => 40,
        4 => 46,
        5 => 48,
        6 => MAXPHYADDR_LIMIT,
        _ => g.u8() % 64,
    };
    let extra = g.u8();
    let mut cr0 = CR0_PE | if extra & 1 != 0 { CR0_WP } else { 0 };
    let mut cr4 = if extra & 2 != 0 { CR4_PSE } else { 0 };
    let mut efer = if extra & 4 != 0 { EFER_NXE } else { 0 };
    match kind {
        Kind::Off => {}
        Kind::Bits32 => cr0 |= CR0_PG,
        Kind::Pae => {
            cr0 |= CR0_PG;
            cr4 |= CR4_PAE;
        }
        Kind::Long4 | Kind::Long5 => {
            cr0 |= CR0_PG;
            cr4 |= CR4_PAE | if kind == Kind::Long5 { CR4_LA57 } else { 0 };
            efer |= EFER_LME | EFER_LMA;
        }
    }
    if g.rarely(32) {
        // EFER.LMA without paging or PAE.
        cr0 &= !CR0_PG;
        efer |= EFER_LMA;
    }
    let mut ram = Ram {
        frames: frames(g, maxphyaddr),
        ..Ram::default()
    };
    let gfn = |ram: &Ram, i: usize| ram.frames[i % FRAMES].0;

    // A virtual address canonical for the mode (rarely not).
    let va = match kind {
        Kind::Long4 => ((g.u64() << 16) as i64 >> 16) as u64,
        Kind::Long5 => ((g.u64() << 7) as i64 >> 7) as u64,
        _ => u64::from(g.u32()),
    } ^ if g.rarely(32) { 1 << (g.u8() % 64) } else { 0 };

    // Tables from frame 0 on, each the next frame (rarely one already used).
    let mut next = 0usize;
    let mut take = |g: &mut Input| {
        next += 1;
        if g.rarely(16) {
            usize::from(g.u8())
        } else {
            next
        }
    };
    let mut cr3 = gfn(&ram, 0) << 12;
    match kind {
        Kind::Off => {}
        Kind::Bits32 => {
            let pde_gpa = cr3 | (((va >> 22) & 0x3ff) * 4);
            if cr4 & CR4_PSE != 0 && g.rarely(3) {
                // A 4 MiB page, PSE-36 bits at random.
                let pde = (u64::from(g.u16() & 0x3ff) << 22)
                    | u64::from(g.u8()) << 13
                    | if g.rarely(16) { 1 << 21 } else { 0 }
                    | PS
                    | flags(g);
                ram.put32(pde_gpa, pde as u32);
            } else {
                let table = gfn(&ram, take(g)) << 12;
                ram.put32(pde_gpa, (table | (flags(g) & 0xfff)) as u32);
                let pte_gpa = table | (((va >> 12) & 0x3ff) * 4);
                let leaf = (g.u64() << 12) | flags(g);
                ram.put32(pte_gpa, leaf as u32);
            }
        }
        Kind::Pae | Kind::Long4 | Kind::Long5 => {
            let top = match kind {
                Kind::Pae => 3,
                Kind::Long4 => 4,
                _ => 5,
            };
            if kind == Kind::Pae {
                cr3 |= u64::from(g.u8() & 0x7f) << 5;
            }
            if g.rarely(16) {
                cr3 |= g.u64() & 0xfff;
            }
            let mut table = cr3 & !0x1f & if kind == Kind::Pae { !0 } else { !0xfff };
            for level in (1..=top).rev() {
                let shift = 12 + 9 * (level - 1);
                let slot = if kind == Kind::Pae && level == 3 {
                    (va >> 30) & 3
                } else {
                    (va >> shift) & 0x1ff
                };
                let entry_gpa = table + slot * 8;
                let large = (level == 2 || level == 3) && kind != Kind::Pae || level == 2;
                if level == 1 || (large && g.rarely(4)) {
                    // The leaf: a page frame, aligned to its size unless
                    // rarely.
                    let size_mask = (1u64 << shift) - 1;
                    let mut addr = (g.u64() << 12) & !size_mask;
                    if g.rarely(16) {
                        addr |= 1 << (12 + g.u8() % 20);
                    }
                    let ps = if level == 1 { 0 } else { PS };
                    ram.put(entry_gpa, addr | ps | flags(g) | junk_high(g));
                    break;
                }
                let t = gfn(&ram, take(g)) << 12;
                let entry = if kind == Kind::Pae && level == 3 {
                    // PDPTEs: present, no permissions (rarely some).
                    t | if g.rarely(16) { flags(g) } else { P }
                } else {
                    t | flags(g) & !PS
                };
                ram.put(entry_gpa, entry | junk_high(g));
                table = t;
            }
        }
    }
    if g.rarely(16) {
        cr3 = g.u64();
    }

    // Junk in other slots.
    for _ in 0..g.u8() % 16 {
        let frame = gfn(&ram, usize::from(g.u8()));
        let slot = u64::from(g.u16() % 512);
        let value = if g.rarely(2) {
            (gfn(&ram, usize::from(g.u8())) << 12) | flags(g)
        } else {
            g.u64()
        };
        ram.put((frame << 12) | (slot * 8), value);
    }
    let paging = Paging {
        cr0,
        cr3,
        cr4,
        efer,
        maxphyaddr,
    };
    (ram, paging, va)
}

const ACCESSES: [Access; 8] = {
    let mut all = [Access::READ; 8];
    let mut i = 0;
    while i < 8 {
        all[i] = Access {
            write: i & 1 != 0,
            user: i & 2 != 0,
            fetch: i & 4 != 0,
        };
        i += 1;
    }
    all
};

fn is_permission(e: &WalkError) -> bool {
    matches!(
        e,
        WalkError::WriteProtected | WalkError::User | WalkError::NoExecute
    )
}

fn check_error(e: &WalkError) {
    let text = e.to_string();
    assert!(!text.is_empty() && !text.contains('\n'), "{text}");
}

fn long_mode(p: &Paging) -> bool {
    p.efer & EFER_LMA != 0
}

fn translate(ram: &Ram, p: Paging, va: u64, acc: Access) -> Result<u64, WalkError> {
    ram.reads.set(0);
    let r = gwalk::translate(ram, p, va, acc);
    assert!(ram.reads.get() <= 5, "{} reads", ram.reads.get());
    r
}

/// `va` for every access kind, checked.
fn check_translate(ram: &Ram, p: Paging, va: u64) {
    let results = ACCESSES.map(|acc| translate(ram, p, va, acc));
    let valid_width = (MAXPHYADDR_MIN..=MAXPHYADDR_LIMIT).contains(&p.maxphyaddr);
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(gpa) => {
                assert!(valid_width);
                assert!(*gpa < phys_limit(p.maxphyaddr), "{va:#x} -> {gpa:#x}");
                assert_eq!(gpa & 0xfff, va & 0xfff, "{va:#x} -> {gpa:#x}");
                if p.cr0 & CR0_PG == 0 {
                    assert_eq!(*gpa, va & 0xffff_ffff);
                }
            }
            Err(e) => check_error(e),
        }
        // Less asked (a subset of write, user, fetch): the same address.
        if r.is_ok() {
            for (j, s) in results.iter().enumerate() {
                if j & i == j {
                    assert_eq!(s, r, "{:?} vs {:?} at {va:#x}", ACCESSES[j], ACCESSES[i]);
                }
            }
        }
    }
    // A failure of the walk itself is the same whatever the access.
    if let Some(e) = results
        .iter()
        .find_map(|r| r.err().filter(|e| !is_permission(e)))
    {
        assert!(results.iter().all(|r| *r == Err(e)), "{results:?}");
    }
    if !valid_width {
        assert_eq!(
            results[0],
            Err(WalkError::BadMaxPhysAddr { bits: p.maxphyaddr })
        );
        return;
    }
    if long_mode(&p) {
        let top = if p.cr4 & CR4_LA57 != 0 { 57 } else { 48 };
        let canonical = ((va << (64 - top)) as i64 >> (64 - top)) as u64 == va;
        let paging_on = p.cr0 & CR0_PG != 0 && p.cr4 & CR4_PAE != 0;
        if !paging_on {
            assert_eq!(results[0], Err(WalkError::BadMode));
        } else if !canonical {
            assert_eq!(results[0], Err(WalkError::NonCanonical { va }));
        }
    } else if va >> 32 != 0 {
        assert_eq!(
            results[0],
            translate(ram, p, va & 0xffff_ffff, ACCESSES[0]),
            "{va:#x} outside long mode"
        );
    }
}

/// `chunks` of `[va, va + len)` for `acc`, checked.
fn check_chunks(ram: &Ram, p: Paging, va: u64, len: usize, acc: Access) {
    ram.reads.set(0);
    let mut it = gwalk::chunks(ram, p, va, len, acc);
    let (at_least, at_most) = it.size_hint();
    let at_most = at_most.expect("an upper bound");
    let base = if long_mode(&p) { va } else { va & 0xffff_ffff };
    let mut items = 0usize;
    let mut done = 0usize;
    let mut failed = false;
    for item in it.by_ref() {
        items += 1;
        assert!(!failed, "an item after a failure");
        assert!(ram.reads.get() <= 5 * items, "{} reads", ram.reads.get());
        match item {
            Ok(c) => {
                assert_eq!(c.offset, done, "offsets not contiguous");
                assert!(c.len > 0 && done + c.len <= len);
                let start = base
                    .checked_add(c.offset as u64)
                    .expect("a chunk past the top");
                assert!(start % CHUNK_GRANULE + c.len as u64 <= CHUNK_GRANULE);
                assert!(c.gpa % CHUNK_GRANULE + c.len as u64 <= CHUNK_GRANULE);
                let saved = ram.reads.get();
                assert_eq!(translate(ram, p, start, acc), Ok(c.gpa), "{start:#x}");
                ram.reads.set(saved);
                done += c.len;
            }
            Err(e) => {
                check_error(&e);
                failed = true;
            }
        }
    }
    assert!(
        it.next().is_none() && it.next().is_none(),
        "items after the end"
    );
    if len == 0 {
        assert_eq!(items, 0);
        return;
    }
    assert!(
        items <= len.div_ceil(CHUNK_GRANULE as usize) + 1,
        "{items} chunks of {len:#x}"
    );
    assert!(
        at_least <= items && items <= at_most,
        "{items} outside {at_least}..={at_most}"
    );
    if !failed {
        assert_eq!(done, len, "chunks short of the range");
    }
    if len > MAX_CHUNKED_LEN {
        assert_eq!(items, 1);
        assert!(failed);
    }
}

fn queries(g: &mut Input, ram: &Ram, p: Paging, va: u64) {
    check_translate(ram, p, va);
    for _ in 0..8 {
        if g.0.is_empty() {
            break;
        }
        let near = match g.u8() % 6 {
            0 => va,
            1 => va.wrapping_add(u64::from(g.u16())),
            2 => va.wrapping_sub(u64::from(g.u16())),
            3 => va ^ (1 << (g.u8() % 64)),
            4 => u64::MAX - u64::from(g.u16()),
            _ => g.u64(),
        };
        check_translate(ram, p, near);
        let len = match g.u8() % 8 {
            0 => 0,
            1..=4 => usize::from(g.u16() % 0x3000),
            5 => usize::from(g.u16()) << 4,
            6 => MAX_CHUNKED_LEN - usize::from(g.u8()) + usize::from(g.u8()),
            _ => g.u32() as usize,
        };
        let acc = ACCESSES[usize::from(g.u8() % 8)];
        check_chunks(ram, p, near, len, acc);
    }
}
