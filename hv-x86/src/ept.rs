//! Extended page tables: one guest's map from guest-physical to
//! host-physical memory.
//!
//! Owns the four-level EPT of a guest: building it, changing it, walking it,
//! tearing it down, and invalidating the CPU's cached translations after
//! every change. Tables are reached only through [`TableMemory`].
//!
//! Never maps more or other than asked, never links a table before its
//! entries are written, never frees a table the hardware may still walk
//! (tables emptied by unmapping stay until [`Ept::destroy`]), and never
//! panics on an address: ranges are checked before anything is touched.

use core::fmt;

/// A 4 KiB page.
pub const PAGE_SIZE: u64 = 0x1000;
/// A 2 MiB page: what one page-directory entry maps.
pub const LARGE_PAGE_SIZE: u64 = 0x20_0000;
/// End of the guest-physical space a 4-level walk translates.
pub const GPA_LIMIT: u64 = 1 << 48;
/// End of the host-physical space an EPT entry can name.
pub const HPA_LIMIT: u64 = 1 << 52;

const READ: u64 = 1 << 0;
const WRITE: u64 = 1 << 1;
const EXEC: u64 = 1 << 2;
const PERMS: u64 = READ | WRITE | EXEC;
/// Leaf memory type write-back (bits 5:3); IPAT (bit 6) clear so the
/// guest's PAT still applies.
const MEMORY_TYPE_WB: u64 = 6 << 3;
/// In a page-directory entry: maps a 2 MiB page rather than a table.
const LARGE: u64 = 1 << 7;
const ADDRESS: u64 = 0x000F_FFFF_FFFF_F000;
const LARGE_ADDRESS: u64 = 0x000F_FFFF_FFE0_0000;
/// Non-leaf entries allow everything; leaves decide.
const TABLE_ENTRY_PERMS: u64 = PERMS;
/// EPTP: write-back paging structures, walk length 4 (encoded as 3),
/// accessed/dirty flags off.
const EPTP_WB: u64 = 6;
const EPTP_WALK_4: u64 = 3 << 3;

/// Where the EPT's tables live: the binary's page allocator.
pub trait TableMemory {
    /// A zeroed 4 KiB page for a table; its host-physical address, or None when out of memory.
    fn alloc_table(&mut self) -> Option<u64>;
    /// The table at host-physical `pa` (returned earlier by alloc_table).
    fn table(&mut self, pa: u64) -> &mut [u64; 512];
    fn free_table(&mut self, pa: u64);
    /// Invalidate cached translations of the EPT whose EPTP is `eptp` (INVEPT single-context).
    fn invept(&mut self, eptp: u64);
}

/// What a guest may do with a mapped page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Perm {
    pub const RWX: Perm = Perm {
        read: true,
        write: true,
        exec: true,
    };
    pub const RW: Perm = Perm {
        read: true,
        write: true,
        exec: false,
    };
    pub const RX: Perm = Perm {
        read: true,
        write: false,
        exec: true,
    };
    pub const R: Perm = Perm {
        read: true,
        write: false,
        exec: false,
    };

    fn bits(self) -> u64 {
        (if self.read { READ } else { 0 })
            | (if self.write { WRITE } else { 0 })
            | (if self.exec { EXEC } else { 0 })
    }

    fn from_bits(entry: u64) -> Perm {
        Perm {
            read: entry & READ != 0,
            write: entry & WRITE != 0,
            exec: entry & EXEC != 0,
        }
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = |on: bool, c: &'static str| if on { c } else { "-" };
        write!(
            f,
            "{}{}{}",
            flag(self.read, "r"),
            flag(self.write, "w"),
            flag(self.exec, "x")
        )
    }
}

/// Why a change to the EPT was refused or stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EptError {
    /// An address or length is not a multiple of 4 KiB.
    Misaligned { what: &'static str, value: u64 },
    /// The length is zero.
    EmptyRange,
    /// The guest-physical range runs past 2^48.
    GpaOutOfRange { gpa: u64, len: u64 },
    /// The host-physical range runs past 2^52.
    HpaOutOfRange { hpa: u64, len: u64 },
    /// Write or execute without read: an EPT misconfiguration (or, for
    /// execute-only, a feature not every CPU has); unmap instead of "none".
    NoRead(Perm),
    /// The allocator had no page for a table.
    OutOfTableMemory,
    /// The allocator returned an address no EPT entry can hold.
    BadTableAddress(u64),
}

impl fmt::Display for EptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Misaligned { what, value } => {
                write!(f, "EPT {what} {value:#x} is not a multiple of 4 KiB")
            }
            Self::EmptyRange => f.write_str("EPT range is empty"),
            Self::GpaOutOfRange { gpa, len } => write!(
                f,
                "guest-physical range {gpa:#x} + {len:#x} runs past the 48-bit EPT space"
            ),
            Self::HpaOutOfRange { hpa, len } => write!(
                f,
                "host-physical range {hpa:#x} + {len:#x} runs past the 52-bit address space"
            ),
            Self::NoRead(perm) => write!(
                f,
                "EPT permissions {perm} lack read; only r, rw, rx and rwx can be mapped"
            ),
            Self::OutOfTableMemory => f.write_str("no memory left for an EPT table"),
            Self::BadTableAddress(pa) => write!(
                f,
                "EPT table allocator returned {pa:#x}, not a 4 KiB-aligned address below 2^52"
            ),
        }
    }
}

/// Index of `gpa` in the table at `level` (3 = PML4 .. 0 = page table).
fn index(gpa: u64, level: u32) -> usize {
    // Masked to 0..=511: always within a 512-entry table.
    (gpa >> (12 + 9 * level) & 0x1FF) as usize
}

fn present(entry: u64) -> bool {
    entry & PERMS != 0
}

/// The table an entry points to, if it points to one.
fn child(entry: u64) -> Option<u64> {
    (present(entry) && entry & LARGE == 0).then_some(entry & ADDRESS)
}

fn large_leaf(entry: u64) -> bool {
    present(entry) && entry & LARGE != 0
}

/// Splits `[gpa, gpa + len)` at 2 MiB boundaries: (offset, length) pieces,
/// each within one page-directory entry.
fn pieces(gpa: u64, len: u64) -> impl Iterator<Item = (u64, u64)> {
    let mut offset = 0;
    core::iter::from_fn(move || {
        if offset >= len {
            return None;
        }
        let here = gpa + offset;
        let to_boundary = LARGE_PAGE_SIZE - here % LARGE_PAGE_SIZE;
        let piece = to_boundary.min(len - offset);
        let item = (offset, piece);
        offset += piece;
        Some(item)
    })
}

/// Whether each step of an operation only builds structure or also writes
/// the new translations.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Prepare,
    Write,
}

/// A guest's extended page tables.
///
/// Every change runs in two passes: the first allocates and splits tables
/// (translations stay the same), the second writes the new entries and
/// cannot run out of memory. So a change either happens completely or, on
/// [`EptError::OutOfTableMemory`], not at all: every translation is as
/// before; tables allocated on the way stay linked (empty, or splits
/// mapping exactly what the 2 MiB leaf did) until [`Ept::destroy`].
/// 4 KiB entries are never merged back into a 2 MiB leaf, and a 2 MiB
/// range mapped over an existing page table is written as 512 entries in
/// it rather than replacing it (freeing it would need an INVEPT first).
#[derive(Debug, PartialEq, Eq)]
pub struct Ept {
    root: u64,
    two_mib_leaves: bool,
}

impl Ept {
    /// An empty EPT using 2 MiB leaves where it can.
    pub fn new(mem: &mut impl TableMemory) -> Result<Ept, EptError> {
        Self::with_2mib_leaves(mem, true)
    }

    /// An empty EPT; `allowed` false keeps to 4 KiB leaves, for CPUs whose
    /// EPT lacks 2 MiB pages (`Controls::ept_2mib`).
    pub fn with_2mib_leaves(mem: &mut impl TableMemory, allowed: bool) -> Result<Ept, EptError> {
        Ok(Ept {
            root: alloc(mem)?,
            two_mib_leaves: allowed,
        })
    }

    /// The value for the VMCS `EPT_POINTER` field.
    pub fn eptp(&self) -> u64 {
        self.root | EPTP_WB | EPTP_WALK_4
    }

    /// Maps `[gpa, gpa + len)` to `[hpa, hpa + len)` with `perm`, write-back,
    /// replacing what was there. One INVEPT if anything changed.
    pub fn map(
        &mut self,
        mem: &mut impl TableMemory,
        gpa: u64,
        hpa: u64,
        len: u64,
        perm: Perm,
    ) -> Result<(), EptError> {
        check_range(gpa, len)?;
        if !hpa.is_multiple_of(PAGE_SIZE) {
            return Err(EptError::Misaligned {
                what: "host-physical address",
                value: hpa,
            });
        }
        if hpa.checked_add(len).is_none_or(|end| end > HPA_LIMIT) {
            return Err(EptError::HpaOutOfRange { hpa, len });
        }
        if !perm.read {
            return Err(EptError::NoRead(perm));
        }
        let leaf = perm.bits() | MEMORY_TYPE_WB;
        self.run(
            mem,
            gpa,
            len,
            |ept, mem, piece_gpa, offset, piece_len, pass, changed| {
                ept.map_piece(mem, piece_gpa, hpa + offset, piece_len, leaf, pass, changed)
            },
        )
    }

    /// Unmaps `[gpa, gpa + len)`; unmapped parts are fine. One INVEPT if
    /// anything changed.
    pub fn unmap(
        &mut self,
        mem: &mut impl TableMemory,
        gpa: u64,
        len: u64,
    ) -> Result<(), EptError> {
        check_range(gpa, len)?;
        self.run(
            mem,
            gpa,
            len,
            |ept, mem, piece_gpa, _, piece_len, pass, changed| {
                ept.unmap_piece(mem, piece_gpa, piece_len, pass, changed)
            },
        )
    }

    /// The host-physical address `gpa` maps to and its permissions.
    pub fn translate(&self, mem: &mut impl TableMemory, gpa: u64) -> Option<(u64, Perm)> {
        if gpa >= GPA_LIMIT {
            return None;
        }
        let pdpt = child(mem.table(self.root)[index(gpa, 3)])?;
        let pd = child(mem.table(pdpt)[index(gpa, 2)])?;
        let pde = mem.table(pd)[index(gpa, 1)];
        if large_leaf(pde) {
            let hpa = (pde & LARGE_ADDRESS) + gpa % LARGE_PAGE_SIZE;
            return Some((hpa, Perm::from_bits(pde)));
        }
        let pte = mem.table(child(pde)?)[index(gpa, 0)];
        present(pte).then(|| ((pte & ADDRESS) + gpa % PAGE_SIZE, Perm::from_bits(pte)))
    }

    /// Frees every table, the root included.
    pub fn destroy(self, mem: &mut impl TableMemory) {
        for i in 0..512 {
            let Some(pdpt) = child(mem.table(self.root)[i]) else {
                continue;
            };
            for j in 0..512 {
                let Some(pd) = child(mem.table(pdpt)[j]) else {
                    continue;
                };
                for k in 0..512 {
                    if let Some(pt) = child(mem.table(pd)[k]) {
                        mem.free_table(pt);
                    }
                }
                mem.free_table(pd);
            }
            mem.free_table(pdpt);
        }
        mem.free_table(self.root);
    }

    /// Runs `step` over the 2 MiB pieces of the range, first preparing,
    /// then writing; invalidates once at the end if anything changed,
    /// also when preparing fails after a split.
    fn run<M: TableMemory>(
        &mut self,
        mem: &mut M,
        gpa: u64,
        len: u64,
        mut step: impl FnMut(&mut Ept, &mut M, u64, u64, u64, Pass, &mut bool) -> Result<(), EptError>,
    ) -> Result<(), EptError> {
        let mut changed = false;
        let mut result = Ok(());
        'passes: for pass in [Pass::Prepare, Pass::Write] {
            for (offset, piece_len) in pieces(gpa, len) {
                result = step(
                    self,
                    mem,
                    gpa + offset,
                    offset,
                    piece_len,
                    pass,
                    &mut changed,
                );
                if result.is_err() {
                    break 'passes;
                }
            }
        }
        if changed {
            mem.invept(self.eptp());
        }
        result
    }

    /// The page directory covering `gpa`, allocating the path to it.
    fn page_directory(&mut self, mem: &mut impl TableMemory, gpa: u64) -> Result<u64, EptError> {
        let pdpt = ensure_child(mem, self.root, index(gpa, 3))?;
        ensure_child(mem, pdpt, index(gpa, 2))
    }

    /// The page directory covering `gpa`, if it exists.
    fn find_page_directory(&self, mem: &mut impl TableMemory, gpa: u64) -> Option<u64> {
        let pdpt = child(mem.table(self.root)[index(gpa, 3)])?;
        child(mem.table(pdpt)[index(gpa, 2)])
    }

    /// Maps one piece (within one 2 MiB region).
    #[allow(clippy::too_many_arguments)]
    fn map_piece(
        &mut self,
        mem: &mut impl TableMemory,
        gpa: u64,
        hpa: u64,
        len: u64,
        leaf: u64,
        pass: Pass,
        changed: &mut bool,
    ) -> Result<(), EptError> {
        let pd = self.page_directory(mem, gpa)?;
        let slot = index(gpa, 1);
        let pde = mem.table(pd)[slot];
        // A whole region (so gpa is aligned) with an aligned hpa, and no
        // page table already there: one leaf.
        if self.two_mib_leaves
            && len == LARGE_PAGE_SIZE
            && hpa.is_multiple_of(LARGE_PAGE_SIZE)
            && child(pde).is_none()
        {
            if pass == Pass::Write {
                write_entry(mem, pd, slot, hpa | leaf | LARGE, changed);
            }
            return Ok(());
        }
        let pt = ensure_page_table(mem, pd, slot, changed)?;
        if pass == Pass::Write {
            for page in 0..len / PAGE_SIZE {
                let offset = page * PAGE_SIZE;
                write_entry(
                    mem,
                    pt,
                    index(gpa + offset, 0),
                    (hpa + offset) | leaf,
                    changed,
                );
            }
        }
        Ok(())
    }

    /// Unmaps one piece (within one 2 MiB region).
    fn unmap_piece(
        &mut self,
        mem: &mut impl TableMemory,
        gpa: u64,
        len: u64,
        pass: Pass,
        changed: &mut bool,
    ) -> Result<(), EptError> {
        let Some(pd) = self.find_page_directory(mem, gpa) else {
            return Ok(());
        };
        let slot = index(gpa, 1);
        let pde = mem.table(pd)[slot];
        if !present(pde) {
            return Ok(());
        }
        if large_leaf(pde) && len == LARGE_PAGE_SIZE {
            if pass == Pass::Write {
                write_entry(mem, pd, slot, 0, changed);
            }
            return Ok(());
        }
        let pt = ensure_page_table(mem, pd, slot, changed)?;
        if pass == Pass::Write {
            for page in 0..len / PAGE_SIZE {
                write_entry(mem, pt, index(gpa + page * PAGE_SIZE, 0), 0, changed);
            }
        }
        Ok(())
    }
}

/// Checks an aligned, non-empty guest-physical range inside 2^48.
fn check_range(gpa: u64, len: u64) -> Result<(), EptError> {
    if !gpa.is_multiple_of(PAGE_SIZE) {
        return Err(EptError::Misaligned {
            what: "guest-physical address",
            value: gpa,
        });
    }
    if !len.is_multiple_of(PAGE_SIZE) {
        return Err(EptError::Misaligned {
            what: "length",
            value: len,
        });
    }
    if len == 0 {
        return Err(EptError::EmptyRange);
    }
    if gpa.checked_add(len).is_none_or(|end| end > GPA_LIMIT) {
        return Err(EptError::GpaOutOfRange { gpa, len });
    }
    Ok(())
}

/// A fresh, zeroed table.
fn alloc(mem: &mut impl TableMemory) -> Result<u64, EptError> {
    let pa = mem.alloc_table().ok_or(EptError::OutOfTableMemory)?;
    if !pa.is_multiple_of(PAGE_SIZE) || pa >= HPA_LIMIT {
        mem.free_table(pa);
        return Err(EptError::BadTableAddress(pa));
    }
    // The contract says zeroed; a stale page would map whatever it held.
    *mem.table(pa) = [0; 512];
    Ok(pa)
}

/// The table entry `slot` of `table` points to, allocating and linking an
/// empty one if there is none (which changes no translation).
fn ensure_child(mem: &mut impl TableMemory, table: u64, slot: usize) -> Result<u64, EptError> {
    if let Some(pa) = child(mem.table(table)[slot]) {
        return Ok(pa);
    }
    let pa = alloc(mem)?;
    mem.table(table)[slot] = pa | TABLE_ENTRY_PERMS;
    Ok(pa)
}

/// The page table under page-directory entry `slot`, allocating an empty
/// one or splitting a 2 MiB leaf into 512 equal 4 KiB entries.
fn ensure_page_table(
    mem: &mut impl TableMemory,
    pd: u64,
    slot: usize,
    changed: &mut bool,
) -> Result<u64, EptError> {
    let pde = mem.table(pd)[slot];
    if !large_leaf(pde) {
        return ensure_child(mem, pd, slot);
    }
    let pt = alloc(mem)?;
    let base = pde & LARGE_ADDRESS;
    let flags = pde & !LARGE_ADDRESS & !LARGE;
    // Filled before it is linked: the hardware never sees a half-built table.
    for (page, entry) in (0u64..).zip(mem.table(pt).iter_mut()) {
        *entry = (base + page * PAGE_SIZE) | flags;
    }
    mem.table(pd)[slot] = pt | TABLE_ENTRY_PERMS;
    // Same translations, but the page size changed: cached 2 MiB entries
    // must go, so this counts as a change.
    *changed = true;
    Ok(pt)
}

fn write_entry(
    mem: &mut impl TableMemory,
    table: u64,
    slot: usize,
    value: u64,
    changed: &mut bool,
) {
    let entry = &mut mem.table(table)[slot];
    if *entry != value {
        *entry = value;
        *changed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x40_0000_0000;
    const MIB2: u64 = LARGE_PAGE_SIZE;

    /// Tables in a Vec. New pages are deliberately dirty: the EPT must not
    /// trust the "zeroed" promise. Every misuse (unknown table, double
    /// free) panics, failing the test.
    struct Fake {
        tables: Vec<Option<Box<[u64; 512]>>>,
        budget: usize,
        allocated: usize,
        freed: usize,
        invepts: Vec<u64>,
        hand_out: Option<u64>,
        foreign_frees: Vec<u64>,
    }

    impl Fake {
        fn new() -> Fake {
            Fake::with_budget(usize::MAX)
        }

        fn with_budget(budget: usize) -> Fake {
            Fake {
                tables: Vec::new(),
                budget,
                allocated: 0,
                freed: 0,
                invepts: Vec::new(),
                hand_out: None,
                foreign_frees: Vec::new(),
            }
        }

        fn live(&self) -> usize {
            self.tables.iter().filter(|t| t.is_some()).count()
        }
    }

    impl TableMemory for Fake {
        fn alloc_table(&mut self) -> Option<u64> {
            if let Some(pa) = self.hand_out.take() {
                return Some(pa);
            }
            if self.budget == 0 {
                return None;
            }
            self.budget -= 1;
            self.allocated += 1;
            self.tables
                .push(Some(Box::new([0xDEAD_0000_0000_0007; 512])));
            Some(BASE + (self.tables.len() as u64 - 1) * PAGE_SIZE)
        }

        fn table(&mut self, pa: u64) -> &mut [u64; 512] {
            let i = ((pa - BASE) / PAGE_SIZE) as usize;
            assert_eq!(pa % PAGE_SIZE, 0, "table address {pa:#x} misaligned");
            self.tables[i]
                .as_mut()
                .expect("table freed or never allocated")
        }

        fn free_table(&mut self, pa: u64) {
            let i = (pa.wrapping_sub(BASE) / PAGE_SIZE) as usize;
            if pa < BASE || !pa.is_multiple_of(PAGE_SIZE) || i >= self.tables.len() {
                self.foreign_frees.push(pa);
                return;
            }
            self.tables[i].take().expect("double free");
            self.freed += 1;
        }

        fn invept(&mut self, eptp: u64) {
            self.invepts.push(eptp);
        }
    }

    fn setup() -> (Fake, Ept) {
        let mut mem = Fake::new();
        let ept = Ept::new(&mut mem).unwrap();
        (mem, ept)
    }

    /// The page-directory entry covering `gpa`.
    fn pde(mem: &mut Fake, ept: &Ept, gpa: u64) -> u64 {
        let pd = ept.find_page_directory(mem, gpa).expect("page directory");
        mem.table(pd)[index(gpa, 1)]
    }

    #[test]
    fn a_new_ept_is_one_empty_root_and_its_eptp() {
        let (mut mem, ept) = setup();
        assert_eq!(mem.allocated, 1);
        assert_eq!(ept.eptp(), BASE | 0x1E);
        assert!(mem.table(BASE).iter().all(|e| *e == 0), "root not zeroed");
        assert_eq!(ept.translate(&mut mem, 0), None);
        assert!(mem.invepts.is_empty());
    }

    #[test]
    fn aligned_ranges_use_2mib_leaves() {
        let (mut mem, mut ept) = setup();
        ept.map(&mut mem, 0, 0x8000_0000, 2 * MIB2, Perm::RWX)
            .unwrap();
        // Root, PDPT, PD: no page table.
        assert_eq!(mem.allocated, 3);
        assert_eq!(pde(&mut mem, &ept, 0), 0x8000_0000 | 0x80 | 0x30 | 0x7);
        assert_eq!(pde(&mut mem, &ept, MIB2), 0x8020_0000 | 0x80 | 0x30 | 0x7);
        assert_eq!(
            ept.translate(&mut mem, 0x1234),
            Some((0x8000_1234, Perm::RWX))
        );
        assert_eq!(
            ept.translate(&mut mem, 2 * MIB2 - 1),
            Some((0x803F_FFFF, Perm::RWX))
        );
        assert_eq!(ept.translate(&mut mem, 2 * MIB2), None);
        assert_eq!(mem.invepts, [ept.eptp()]);
    }

    #[test]
    fn unaligned_host_addresses_use_4kib_leaves() {
        let (mut mem, mut ept) = setup();
        ept.map(&mut mem, 0, 0x8000_1000, MIB2, Perm::RW).unwrap();
        assert_eq!(mem.allocated, 4);
        let pt = pde(&mut mem, &ept, 0) & ADDRESS;
        assert_eq!(pde(&mut mem, &ept, 0), pt | 0x7);
        assert_eq!(mem.table(pt)[5], (0x8000_1000 + 5 * PAGE_SIZE) | 0x30 | 0x3);
        assert_eq!(
            ept.translate(&mut mem, 0x5678),
            Some((0x8000_6678, Perm::RW))
        );
        assert_eq!(
            ept.translate(&mut mem, MIB2 - 1),
            Some((0x8020_0FFF, Perm::RW))
        );
        assert_eq!(mem.invepts.len(), 1);
    }

    #[test]
    fn a_range_crossing_regions_mixes_leaf_sizes() {
        let (mut mem, mut ept) = setup();
        let gpa = MIB2 - PAGE_SIZE;
        let hpa = 0x1_0000_0000 + gpa;
        ept.map(&mut mem, gpa, hpa, MIB2 + 2 * PAGE_SIZE, Perm::RX)
            .unwrap();
        assert_eq!(pde(&mut mem, &ept, MIB2) & LARGE, LARGE);
        assert_eq!(pde(&mut mem, &ept, 0) & LARGE, 0);
        assert_eq!(pde(&mut mem, &ept, 2 * MIB2) & LARGE, 0);
        for g in [gpa, MIB2, 2 * MIB2 - 1, 2 * MIB2, 2 * MIB2 + 0xFFF] {
            assert_eq!(
                ept.translate(&mut mem, g),
                Some((0x1_0000_0000 + g, Perm::RX)),
                "{g:#x}"
            );
        }
        assert_eq!(ept.translate(&mut mem, gpa - 1), None);
        assert_eq!(ept.translate(&mut mem, 2 * MIB2 + PAGE_SIZE), None);
        assert_eq!(mem.invepts.len(), 1);
        // Root, PDPT, PD and two page tables.
        assert_eq!(mem.allocated, 5);
    }

    #[test]
    fn without_2mib_leaves_everything_is_4kib() {
        let mut mem = Fake::new();
        let mut ept = Ept::with_2mib_leaves(&mut mem, false).unwrap();
        ept.map(&mut mem, 0, 0, MIB2, Perm::RWX).unwrap();
        assert_eq!(pde(&mut mem, &ept, 0) & LARGE, 0);
        assert_eq!(mem.allocated, 4);
        assert_eq!(
            ept.translate(&mut mem, 0x10_0000),
            Some((0x10_0000, Perm::RWX))
        );
    }

    #[test]
    fn a_4kib_change_splits_a_2mib_leaf_and_keeps_its_neighbours() {
        let (mut mem, mut ept) = setup();
        ept.map(&mut mem, MIB2, 0x4000_0000, MIB2, Perm::RWX)
            .unwrap();
        let before = mem.allocated;
        ept.map(&mut mem, MIB2 + 0x5000, 0x9000_0000, PAGE_SIZE, Perm::R)
            .unwrap();
        assert_eq!(mem.allocated, before + 1);
        assert_eq!(pde(&mut mem, &ept, MIB2) & LARGE, 0);
        for page in 0..512 {
            let g = MIB2 + page * PAGE_SIZE + 0x10;
            let want = if page == 5 {
                (0x9000_0010, Perm::R)
            } else {
                (0x4000_0000 + page * PAGE_SIZE + 0x10, Perm::RWX)
            };
            assert_eq!(ept.translate(&mut mem, g), Some(want), "page {page}");
        }
        // The split entries keep write-back.
        let pt = pde(&mut mem, &ept, MIB2) & ADDRESS;
        assert_eq!(mem.table(pt)[4] & 0x78, 0x30);
        assert_eq!(mem.invepts.len(), 2);
    }

    #[test]
    fn unmap_clears_leaves_and_splits_when_partial() {
        let (mut mem, mut ept) = setup();
        ept.map(&mut mem, 0, 0x4000_0000, 2 * MIB2, Perm::RWX)
            .unwrap();
        let tables = mem.allocated;
        // A whole leaf: the entry goes, no table needed.
        ept.unmap(&mut mem, MIB2, MIB2).unwrap();
        assert_eq!(mem.allocated, tables);
        assert_eq!(pde(&mut mem, &ept, MIB2), 0);
        assert_eq!(ept.translate(&mut mem, MIB2 + 0x1000), None);
        // Part of a leaf: split, the rest stays.
        ept.unmap(&mut mem, 0x3000, 2 * PAGE_SIZE).unwrap();
        assert_eq!(mem.allocated, tables + 1);
        assert_eq!(ept.translate(&mut mem, 0x3000), None);
        assert_eq!(ept.translate(&mut mem, 0x4FFF), None);
        assert_eq!(
            ept.translate(&mut mem, 0x2FFF),
            Some((0x4000_2FFF, Perm::RWX))
        );
        assert_eq!(
            ept.translate(&mut mem, 0x5000),
            Some((0x4000_5000, Perm::RWX))
        );
        // Then the rest of that region, through its page table.
        ept.unmap(&mut mem, 0, MIB2).unwrap();
        assert_eq!(ept.translate(&mut mem, 0x5000), None);
        assert_eq!(mem.invepts.len(), 4);
        // The emptied page table stays linked until destroy.
        assert_eq!(mem.live(), tables + 1);
    }

    #[test]
    fn unmapping_what_is_not_mapped_changes_nothing() {
        let (mut mem, mut ept) = setup();
        ept.unmap(&mut mem, 0x1000_0000, 16 * MIB2).unwrap();
        assert_eq!(mem.allocated, 1);
        ept.map(&mut mem, 0, 0, PAGE_SIZE, Perm::RWX).unwrap();
        ept.unmap(&mut mem, PAGE_SIZE, MIB2 - PAGE_SIZE).unwrap();
        assert_eq!(mem.invepts.len(), 1);
        assert_eq!(ept.translate(&mut mem, 0), Some((0, Perm::RWX)));
    }

    #[test]
    fn mapping_replaces_and_identical_remaps_are_free() {
        let (mut mem, mut ept) = setup();
        ept.map(&mut mem, 0, 0x10_0000, 4 * PAGE_SIZE, Perm::RWX)
            .unwrap();
        ept.map(&mut mem, PAGE_SIZE, 0x77_0000, PAGE_SIZE, Perm::R)
            .unwrap();
        assert_eq!(
            ept.translate(&mut mem, PAGE_SIZE),
            Some((0x77_0000, Perm::R))
        );
        assert_eq!(ept.translate(&mut mem, 0), Some((0x10_0000, Perm::RWX)));
        assert_eq!(mem.invepts.len(), 2);
        ept.map(&mut mem, PAGE_SIZE, 0x77_0000, PAGE_SIZE, Perm::R)
            .unwrap();
        assert_eq!(mem.invepts.len(), 2);
        // Same for a 2 MiB leaf.
        ept.map(&mut mem, 4 * MIB2, 0, MIB2, Perm::RW).unwrap();
        ept.map(&mut mem, 4 * MIB2, 0, MIB2, Perm::RW).unwrap();
        assert_eq!(mem.invepts.len(), 3);
        ept.map(&mut mem, 4 * MIB2, MIB2, MIB2, Perm::RW).unwrap();
        assert_eq!(
            ept.translate(&mut mem, 4 * MIB2 + 1),
            Some((MIB2 + 1, Perm::RW))
        );
        assert_eq!(mem.invepts.len(), 4);
    }

    #[test]
    fn a_2mib_map_over_a_page_table_fills_the_table() {
        let (mut mem, mut ept) = setup();
        ept.map(&mut mem, 0, 0x3000, PAGE_SIZE, Perm::RWX).unwrap();
        let tables = mem.allocated;
        ept.map(&mut mem, 0, 0x20_0000, MIB2, Perm::RX).unwrap();
        assert_eq!(mem.allocated, tables);
        assert_eq!(pde(&mut mem, &ept, 0) & LARGE, 0);
        for page in [0, 1, 511] {
            let g = page * PAGE_SIZE;
            assert_eq!(ept.translate(&mut mem, g), Some((0x20_0000 + g, Perm::RX)));
        }
    }

    #[test]
    fn one_invept_per_changing_call_and_none_otherwise() {
        let (mut mem, mut ept) = setup();
        // Many pieces, several tables: still one.
        ept.map(&mut mem, 0x3000, 0x5000, 8 * MIB2, Perm::RWX)
            .unwrap();
        assert_eq!(mem.invepts, [ept.eptp()]);
        ept.unmap(&mut mem, 0, 16 * MIB2).unwrap();
        assert_eq!(mem.invepts.len(), 2);
        // Refusals and no-ops: none.
        assert!(ept.map(&mut mem, 1, 0, PAGE_SIZE, Perm::RWX).is_err());
        assert!(ept.unmap(&mut mem, 0, 0).is_err());
        ept.unmap(&mut mem, 0, 16 * MIB2).unwrap();
        assert_eq!(mem.invepts.len(), 2);
    }

    #[test]
    fn destroy_frees_every_table() {
        let (mut mem, mut ept) = setup();
        let gib = 1 << 30;
        for gpa in [0, MIB2 + PAGE_SIZE, gib, 512 * gib, GPA_LIMIT - PAGE_SIZE] {
            ept.map(&mut mem, gpa, 0x1000, PAGE_SIZE, Perm::RW).unwrap();
        }
        ept.map(&mut mem, 3 * MIB2, 0, MIB2, Perm::RW).unwrap();
        ept.unmap(&mut mem, 0, PAGE_SIZE).unwrap();
        assert!(mem.allocated > 10);
        ept.destroy(&mut mem);
        assert_eq!(mem.freed, mem.allocated);
        assert_eq!(mem.live(), 0);
    }

    #[test]
    fn out_of_table_memory_changes_no_translation() {
        assert_eq!(
            Ept::new(&mut Fake::with_budget(0)),
            Err(EptError::OutOfTableMemory)
        );

        // Room for the PDPT and PD but not the page table.
        let mut mem = Fake::with_budget(3);
        let mut ept = Ept::new(&mut mem).unwrap();
        assert_eq!(
            ept.map(&mut mem, 0, 0x1000, 2 * PAGE_SIZE, Perm::RWX),
            Err(EptError::OutOfTableMemory)
        );
        assert_eq!(ept.translate(&mut mem, 0), None);
        assert!(mem.invepts.is_empty());

        // A split succeeds, the next page table does not: the old leaf's
        // translations hold, nothing new is mapped, and the split is
        // invalidated once.
        let mut mem = Fake::with_budget(4);
        let mut ept = Ept::new(&mut mem).unwrap();
        ept.map(&mut mem, 0, 0x4000_0000, MIB2, Perm::RWX).unwrap();
        mem.invepts.clear();
        assert_eq!(
            ept.map(
                &mut mem,
                MIB2 - PAGE_SIZE,
                0x9000_0000,
                2 * PAGE_SIZE,
                Perm::R
            ),
            Err(EptError::OutOfTableMemory)
        );
        assert_eq!(mem.invepts.len(), 1);
        for page in 0..512 {
            let g = page * PAGE_SIZE;
            assert_eq!(
                ept.translate(&mut mem, g),
                Some((0x4000_0000 + g, Perm::RWX))
            );
        }
        assert_eq!(ept.translate(&mut mem, MIB2), None);

        // Unmapping part of a leaf with no memory for the split.
        let mut mem = Fake::with_budget(3);
        let mut ept = Ept::new(&mut mem).unwrap();
        ept.map(&mut mem, 0, 0, MIB2, Perm::RWX).unwrap();
        assert_eq!(
            ept.unmap(&mut mem, PAGE_SIZE, PAGE_SIZE),
            Err(EptError::OutOfTableMemory)
        );
        assert_eq!(
            ept.translate(&mut mem, PAGE_SIZE),
            Some((PAGE_SIZE, Perm::RWX))
        );
        assert_eq!(mem.invepts.len(), 1);

        // Whatever was allocated on the way is still freed by destroy.
        mem.budget = 10;
        ept.unmap(&mut mem, PAGE_SIZE, PAGE_SIZE).unwrap();
        ept.destroy(&mut mem);
        assert_eq!(mem.live(), 0);
    }

    #[test]
    fn bad_table_addresses_are_refused_and_returned() {
        for bad in [BASE + 0x10, HPA_LIMIT] {
            let mut mem = Fake::new();
            mem.hand_out = Some(bad);
            assert_eq!(Ept::new(&mut mem), Err(EptError::BadTableAddress(bad)));
            assert_eq!(mem.foreign_frees, [bad]);
        }
        let (mut mem, mut ept) = setup();
        mem.hand_out = Some(7);
        assert_eq!(
            ept.map(&mut mem, 0, 0, PAGE_SIZE, Perm::R),
            Err(EptError::BadTableAddress(7))
        );
        assert!(mem.invepts.is_empty());
    }

    #[test]
    fn every_refusal_leaves_the_tables_alone() {
        let (mut mem, mut ept) = setup();
        let misaligned = |what, value| EptError::Misaligned { what, value };
        let cases = [
            (
                ept.map(&mut mem, 0x800, 0, PAGE_SIZE, Perm::RWX),
                misaligned("guest-physical address", 0x800),
            ),
            (
                ept.map(&mut mem, 0, 0x10, PAGE_SIZE, Perm::RWX),
                misaligned("host-physical address", 0x10),
            ),
            (
                ept.map(&mut mem, 0, 0, 0x1001, Perm::RWX),
                misaligned("length", 0x1001),
            ),
            (ept.map(&mut mem, 0, 0, 0, Perm::RWX), EptError::EmptyRange),
            (
                ept.map(&mut mem, GPA_LIMIT - PAGE_SIZE, 0, 2 * PAGE_SIZE, Perm::RWX),
                EptError::GpaOutOfRange {
                    gpa: GPA_LIMIT - PAGE_SIZE,
                    len: 2 * PAGE_SIZE,
                },
            ),
            (
                ept.map(&mut mem, u64::MAX - 0xFFF, 0, PAGE_SIZE, Perm::RWX),
                EptError::GpaOutOfRange {
                    gpa: u64::MAX - 0xFFF,
                    len: PAGE_SIZE,
                },
            ),
            (
                ept.map(&mut mem, 0, HPA_LIMIT, PAGE_SIZE, Perm::RWX),
                EptError::HpaOutOfRange {
                    hpa: HPA_LIMIT,
                    len: PAGE_SIZE,
                },
            ),
            (
                ept.map(&mut mem, 0, u64::MAX - 0xFFF, PAGE_SIZE, Perm::RWX),
                EptError::HpaOutOfRange {
                    hpa: u64::MAX - 0xFFF,
                    len: PAGE_SIZE,
                },
            ),
            (
                ept.unmap(&mut mem, 0x10, PAGE_SIZE),
                misaligned("guest-physical address", 0x10),
            ),
            (ept.unmap(&mut mem, 0, 0x20), misaligned("length", 0x20)),
            (ept.unmap(&mut mem, 0, 0), EptError::EmptyRange),
            (
                ept.unmap(&mut mem, GPA_LIMIT, PAGE_SIZE),
                EptError::GpaOutOfRange {
                    gpa: GPA_LIMIT,
                    len: PAGE_SIZE,
                },
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, Err(want));
        }
        let no_read = [
            Perm {
                read: false,
                write: true,
                exec: false,
            },
            Perm {
                read: false,
                write: false,
                exec: true,
            },
            Perm {
                read: false,
                write: false,
                exec: false,
            },
        ];
        for perm in no_read {
            assert_eq!(
                ept.map(&mut mem, 0, 0, PAGE_SIZE, perm),
                Err(EptError::NoRead(perm))
            );
        }
        assert_eq!(mem.allocated, 1);
        assert!(mem.invepts.is_empty());
        // The edges themselves are fine.
        ept.map(
            &mut mem,
            GPA_LIMIT - PAGE_SIZE,
            HPA_LIMIT - PAGE_SIZE,
            PAGE_SIZE,
            Perm::R,
        )
        .unwrap();
        assert_eq!(
            ept.translate(&mut mem, GPA_LIMIT - 1),
            Some((HPA_LIMIT - 1, Perm::R))
        );
        assert_eq!(ept.translate(&mut mem, GPA_LIMIT), None);
        assert_eq!(ept.translate(&mut mem, u64::MAX), None);
    }

    #[test]
    fn errors_and_permissions_display() {
        let perm = Perm {
            read: false,
            write: true,
            exec: true,
        };
        assert_eq!(Perm::RX.to_string(), "r-x");
        assert_eq!(Perm::RWX.to_string(), "rwx");
        assert_eq!(
            EptError::NoRead(perm).to_string(),
            "EPT permissions -wx lack read; only r, rw, rx and rwx can be mapped"
        );
        assert_eq!(
            EptError::Misaligned {
                what: "length",
                value: 0x10
            }
            .to_string(),
            "EPT length 0x10 is not a multiple of 4 KiB"
        );
        let all = [
            EptError::EmptyRange,
            EptError::GpaOutOfRange { gpa: 1, len: 2 },
            EptError::HpaOutOfRange { hpa: 1, len: 2 },
            EptError::OutOfTableMemory,
            EptError::BadTableAddress(0x10),
        ];
        let mut texts: Vec<String> = all.iter().map(|e| e.to_string()).collect();
        assert!(texts[1].contains("48-bit") && texts[2].contains("52-bit"));
        assert!(texts[4].contains("0x10"));
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), all.len());
    }

    #[test]
    fn pieces_split_at_2mib_boundaries() {
        let got: Vec<_> = pieces(MIB2 - PAGE_SIZE, 2 * MIB2).collect();
        assert_eq!(
            got,
            [
                (0, PAGE_SIZE),
                (PAGE_SIZE, MIB2),
                (MIB2 + PAGE_SIZE, MIB2 - PAGE_SIZE)
            ]
        );
        assert_eq!(pieces(0, MIB2).collect::<Vec<_>>(), [(0, MIB2)]);
    }
}
