//! Guest-virtual to guest-physical translation, done the way the guest's own
//! MMU would do it, for hypercall arguments (Xen passes guest-virtual
//! pointers) and anything else the hypervisor must reach through the
//! guest's page tables.
//!
//! This module owns the paging-mode rules: which mode CR0/CR4/EFER select,
//! the table formats of 32-bit, PAE, 4-level and 5-level paging, reserved
//! bits, and the write/user/no-execute permission checks. Every table entry
//! comes from guest memory and is hostile: it is read only through
//! [`GuestPhys`], and a table outside guest RAM, a reserved bit or a missing
//! entry is a [`WalkError`], never a panic.
//!
//! It must never write guest memory. In particular it does not set the
//! accessed and dirty bits the hardware would set: doing so safely needs an
//! atomic compare-and-exchange on guest memory racing the guest's other
//! CPUs, and a read-only walk cannot corrupt a table the guest is editing.
//! The cost is visible to a guest that reclaims pages by their A/D bits: a
//! page the hypervisor wrote on its behalf may still look clean. Hypercall
//! buffers are locked, already-touched memory, so guests do not rely on it
//! (Xen does set the bits).
//!
//! Not modelled, because hypercall accesses carry no CPL or EFLAGS.AC and
//! privileged kernels legitimately pass user buffers (privcmd): SMEP, SMAP
//! and protection keys. 1 GiB pages are always accepted. The final
//! guest-physical address is not checked here; the caller's EPT/RAM view
//! does that when it copies.

use core::fmt;
use core::iter::FusedIterator;

/// The granule [`chunks`] never crosses: every guest page size is a
/// multiple of it, so a chunk lies inside one guest frame.
pub const CHUNK_GRANULE: u64 = 4096;
/// Longest range [`chunks`] accepts; hypercall buffers are far smaller.
pub const MAX_CHUNKED_LEN: usize = 1 << 20;
/// The architectural upper bound of MAXPHYADDR, used by [`Paging::new`].
pub const MAXPHYADDR_LIMIT: u8 = 52;
/// The smallest MAXPHYADDR any x86-64 CPU reports.
pub const MAXPHYADDR_MIN: u8 = 32;

const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

const ENTRY_PRESENT: u64 = 1 << 0;
const ENTRY_WRITABLE: u64 = 1 << 1;
const ENTRY_USER: u64 = 1 << 2;
/// Page size in a directory entry; PAT in a last-level entry.
const ENTRY_LARGE: u64 = 1 << 7;
const ENTRY_NO_EXEC: u64 = 1 << 63;

/// PAE's PDPT base in CR3: 32-byte aligned, below 4 GiB.
const CR3_PAE_PDPT: u64 = 0xFFFF_FFE0;
/// 32-bit paging's page-directory base in CR3.
const CR3_32_DIRECTORY: u64 = 0xFFFF_F000;
/// PSE-36 cannot address more than 40 bits, whatever MAXPHYADDR says.
const PSE36_LIMIT: u8 = 40;

/// Guest-physical reads, answered by the caller's view of guest RAM.
pub trait GuestPhys {
    /// The 8 bytes at guest-physical `gpa` (8-aligned), None when `gpa` is
    /// not guest RAM.
    fn read_u64(&self, gpa: u64) -> Option<u64>;
    /// The 4 bytes at guest-physical `gpa` (4-aligned), for 32-bit non-PAE
    /// tables; None when `gpa` is not guest RAM.
    fn read_u32(&self, gpa: u64) -> Option<u32>;
}

/// The guest's paging state: its control registers and the width of
/// physical addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    /// Physical-address width in bits (32..=52). Under VMX the guest's own
    /// walks use the CPU's width whatever CPUID tells the guest, so this is
    /// the host's CPUID 0x80000008 EAX[7:0]; table entries with bits at or
    /// above it are refused as reserved.
    pub maxphyaddr: u8,
}

impl Paging {
    /// Paging state with MAXPHYADDR at its architectural limit (52): never
    /// refuses a mapping a real CPU would accept, only misses reserved-bit
    /// faults between the CPU's width and 52.
    pub fn new(cr0: u64, cr3: u64, cr4: u64, efer: u64) -> Self {
        Self {
            cr0,
            cr3,
            cr4,
            efer,
            maxphyaddr: MAXPHYADDR_LIMIT,
        }
    }

    /// The paging mode these registers select. EFER.LMA without CR0.PG and
    /// CR4.PAE is a state VM entry refuses; it is refused here too.
    pub fn mode(&self) -> Result<Mode, WalkError> {
        let paging = self.cr0 & CR0_PG != 0;
        let pae = self.cr4 & CR4_PAE != 0;
        let long = self.efer & EFER_LMA != 0;
        match (paging, pae, long) {
            (false, _, false) => Ok(Mode::Off),
            (true, false, false) => Ok(Mode::Bits32),
            (true, true, false) => Ok(Mode::Pae),
            (true, true, true) if self.cr4 & CR4_LA57 != 0 => Ok(Mode::Level5),
            (true, true, true) => Ok(Mode::Level4),
            (_, _, true) => Err(WalkError::BadMode),
        }
    }

    fn write_protect(&self) -> bool {
        self.cr0 & CR0_WP != 0
    }

    fn no_exec_enabled(&self) -> bool {
        self.efer & EFER_NXE != 0
    }
}

/// A paging mode, as selected by CR0.PG, CR4.PAE, EFER.LMA and CR4.LA57.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No paging: the 32-bit linear address is the physical address.
    Off,
    /// Two levels of 4-byte entries; 4 MiB pages with CR4.PSE.
    Bits32,
    /// Four PDPTEs, then two levels of 8-byte entries; 2 MiB pages.
    Pae,
    /// Four levels; 1 GiB and 2 MiB pages; 48-bit canonical addresses.
    Level4,
    /// Five levels (CR4.LA57); 57-bit canonical addresses.
    Level5,
}

impl Mode {
    fn is_long(self) -> bool {
        matches!(self, Mode::Level4 | Mode::Level5)
    }
}

/// What the access does, as the permission checks see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub write: bool,
    /// Checked as a CPL 3 access: every level must allow user access and,
    /// for writes, writing, regardless of CR0.WP.
    pub user: bool,
    pub fetch: bool,
}

impl Access {
    /// A supervisor data read.
    pub const READ: Access = Access {
        write: false,
        user: false,
        fetch: false,
    };
    /// A supervisor data write.
    pub const WRITE: Access = Access {
        write: true,
        user: false,
        fetch: false,
    };
}

/// Why a translation failed. Levels are numbered as the SDM does: 1 is the
/// page table, 2 the page directory, 3 the PDPT, 4 the PML4, 5 the PML5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// The entry at `level` has its present bit clear.
    NotPresent { level: u8 },
    /// The entry at `level` sets a bit the mode reserves.
    Reserved { level: u8 },
    /// A write to a page some level maps read-only.
    WriteProtected,
    /// A user access to a page some level keeps for the supervisor.
    User,
    /// A fetch from a page some level marks no-execute.
    NoExecute,
    /// A table (or, under PAE, the PDPT) at `gpa` is not guest RAM.
    TableNotRam { gpa: u64 },
    /// `va` is not canonical for the long-mode paging depth.
    NonCanonical { va: u64 },
    /// EFER.LMA is set without CR0.PG and CR4.PAE.
    BadMode,
    /// [`Paging::maxphyaddr`] is outside 32..=52.
    BadMaxPhysAddr { bits: u8 },
    /// A [`chunks`] range longer than [`MAX_CHUNKED_LEN`].
    TooLong { len: usize },
    /// A [`chunks`] range running past the top of the linear address space.
    RangeWraps { va: u64, len: usize },
}

fn level_name(level: u8) -> &'static str {
    match level {
        1 => "page table",
        2 => "page directory",
        3 => "page-directory-pointer table",
        4 => "PML4",
        5 => "PML5",
        _ => "unknown table",
    }
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotPresent { level } => {
                write!(f, "level {level} ({}) entry not present", level_name(level))
            }
            Self::Reserved { level } => write!(
                f,
                "level {level} ({}) entry sets a reserved bit",
                level_name(level)
            ),
            Self::WriteProtected => f.write_str("write to a read-only page"),
            Self::User => f.write_str("user access to a supervisor page"),
            Self::NoExecute => f.write_str("instruction fetch from a no-execute page"),
            Self::TableNotRam { gpa } => {
                write!(f, "page table at guest-physical {gpa:#x} is not guest RAM")
            }
            Self::NonCanonical { va } => write!(f, "virtual address {va:#x} is not canonical"),
            Self::BadMode => f.write_str("EFER.LMA set without CR0.PG and CR4.PAE"),
            Self::BadMaxPhysAddr { bits } => {
                write!(
                    f,
                    "maxphyaddr {bits} outside {MAXPHYADDR_MIN}..={MAXPHYADDR_LIMIT}"
                )
            }
            Self::TooLong { len } => {
                write!(f, "length {len:#x} exceeds the limit {MAX_CHUNKED_LEN:#x}")
            }
            Self::RangeWraps { va, len } => write!(
                f,
                "range at {va:#x} of length {len:#x} runs past the top of the address space"
            ),
        }
    }
}

/// Bits `low..=high` set; empty when `low > high`.
const fn bit_range(low: u32, high: u32) -> u64 {
    if low > high || high > 63 {
        return 0;
    }
    (u64::MAX >> (63 - high)) & (u64::MAX << low)
}

/// What every level met so far allows: writes and user accesses need all
/// levels to allow them, one no-execute level forbids fetches.
#[derive(Clone, Copy)]
struct Rights {
    writable: bool,
    user: bool,
    no_exec: bool,
}

impl Rights {
    const ALL: Rights = Rights {
        writable: true,
        user: true,
        no_exec: false,
    };

    fn narrow(&mut self, entry: u64, no_exec_enabled: bool) {
        self.writable &= entry & ENTRY_WRITABLE != 0;
        self.user &= entry & ENTRY_USER != 0;
        self.no_exec |= no_exec_enabled && entry & ENTRY_NO_EXEC != 0;
    }

    fn check(self, p: &Paging, acc: Access) -> Result<(), WalkError> {
        if acc.user && !self.user {
            return Err(WalkError::User);
        }
        if acc.write && !self.writable && (acc.user || p.write_protect()) {
            return Err(WalkError::WriteProtected);
        }
        if acc.fetch && self.no_exec {
            return Err(WalkError::NoExecute);
        }
        Ok(())
    }
}

/// Translates guest-virtual `va` to the guest-physical address the guest's
/// MMU would reach for access `acc`, or says why the MMU would fault.
///
/// Outside long mode the linear address is 32 bits wide, so `va` is
/// truncated to 32 bits there, as the hardware does.
pub fn translate(mem: &dyn GuestPhys, p: Paging, va: u64, acc: Access) -> Result<u64, WalkError> {
    if !(MAXPHYADDR_MIN..=MAXPHYADDR_LIMIT).contains(&p.maxphyaddr) {
        return Err(WalkError::BadMaxPhysAddr { bits: p.maxphyaddr });
    }
    match p.mode()? {
        Mode::Off => Ok(va & 0xFFFF_FFFF),
        Mode::Bits32 => walk_32(mem, &p, va & 0xFFFF_FFFF, acc),
        Mode::Pae => walk_pae(mem, &p, va & 0xFFFF_FFFF, acc),
        Mode::Level4 => walk_long(mem, &p, va, acc, 4),
        Mode::Level5 => walk_long(mem, &p, va, acc, 5),
    }
}

/// Physical-address bits 12..maxphyaddr of an entry or CR3.
fn frame_mask(p: &Paging) -> u64 {
    bit_range(12, u32::from(p.maxphyaddr) - 1)
}

/// 32-bit paging: 4-byte entries, no NX, 4 MiB pages when CR4.PSE.
fn walk_32(mem: &dyn GuestPhys, p: &Paging, va: u64, acc: Access) -> Result<u64, WalkError> {
    let dir_gpa = (p.cr3 & CR3_32_DIRECTORY) | ((va >> 22) << 2);
    let pde = u64::from(
        mem.read_u32(dir_gpa)
            .ok_or(WalkError::TableNotRam { gpa: dir_gpa })?,
    );
    if pde & ENTRY_PRESENT == 0 {
        return Err(WalkError::NotPresent { level: 2 });
    }
    let mut rights = Rights::ALL;
    rights.narrow(pde, false);
    if pde & ENTRY_LARGE != 0 && p.cr4 & CR4_PSE != 0 {
        // PSE-36: entry bits 20:13 carry physical bits 39:32; the entry
        // bits that would carry bits at or above MAXPHYADDR, and bit 21,
        // are reserved.
        let width = u32::from(p.maxphyaddr.min(PSE36_LIMIT));
        if pde & bit_range(width - 19, 21) != 0 {
            return Err(WalkError::Reserved { level: 2 });
        }
        rights.check(p, acc)?;
        let high = ((pde >> 13) & 0xFF) << 32;
        return Ok(high | (pde & 0xFFC0_0000) | (va & 0x3F_FFFF));
    }
    let table_gpa = (pde & 0xFFFF_F000) | (((va >> 12) & 0x3FF) << 2);
    let pte = u64::from(
        mem.read_u32(table_gpa)
            .ok_or(WalkError::TableNotRam { gpa: table_gpa })?,
    );
    if pte & ENTRY_PRESENT == 0 {
        return Err(WalkError::NotPresent { level: 1 });
    }
    rights.narrow(pte, false);
    rights.check(p, acc)?;
    Ok((pte & 0xFFFF_F000) | (va & 0xFFF))
}

/// PAE paging: four PDPTEs (read from memory here, where the CPU uses the
/// copies it loaded with CR3), then a directory and a table.
fn walk_pae(mem: &dyn GuestPhys, p: &Paging, va: u64, acc: Access) -> Result<u64, WalkError> {
    let pdpte_gpa = (p.cr3 & CR3_PAE_PDPT) | (((va >> 30) & 3) << 3);
    let pdpte = mem
        .read_u64(pdpte_gpa)
        .ok_or(WalkError::TableNotRam { gpa: pdpte_gpa })?;
    if pdpte & ENTRY_PRESENT == 0 {
        return Err(WalkError::NotPresent { level: 3 });
    }
    // PDPTEs carry no permissions; bits 2:1, 8:5 and 63:MAXPHYADDR are reserved.
    let reserved = bit_range(1, 2) | bit_range(5, 8) | bit_range(u32::from(p.maxphyaddr), 63);
    if pdpte & reserved != 0 {
        return Err(WalkError::Reserved { level: 3 });
    }
    // Below the PDPT, PAE reserves 62:MAXPHYADDR (long mode ignores 62:52).
    let levels = Levels {
        top: 2,
        table: pdpte & frame_mask(p),
        reserved_high: bit_range(u32::from(p.maxphyaddr), 62),
    };
    walk_levels(mem, p, va, acc, levels)
}

/// 4- or 5-level paging, after the canonical check.
fn walk_long(
    mem: &dyn GuestPhys,
    p: &Paging,
    va: u64,
    acc: Access,
    top: u8,
) -> Result<u64, WalkError> {
    let width = if top == 5 { 57 } else { 48 };
    let unused = 64 - width;
    // Canonical: the bits above the width repeat the top implemented bit.
    if ((va << unused) as i64 >> unused) as u64 != va {
        return Err(WalkError::NonCanonical { va });
    }
    let levels = Levels {
        top,
        table: p.cr3 & frame_mask(p),
        reserved_high: bit_range(u32::from(p.maxphyaddr), 51),
    };
    walk_levels(mem, p, va, acc, levels)
}

/// Where a walk of 8-byte entries starts and what it reserves.
struct Levels {
    top: u8,
    table: u64,
    /// Address bits at or above MAXPHYADDR the mode reserves.
    reserved_high: u64,
}

/// The walk shared by PAE (levels 2..1) and long mode (5 or 4..1).
fn walk_levels(
    mem: &dyn GuestPhys,
    p: &Paging,
    va: u64,
    acc: Access,
    levels: Levels,
) -> Result<u64, WalkError> {
    let nxe = p.no_exec_enabled();
    let no_exec_reserved = if nxe { 0 } else { ENTRY_NO_EXEC };
    let mut rights = Rights::ALL;
    let mut table = levels.table;
    for level in (1..=levels.top).rev() {
        let shift = 12 + 9 * u32::from(level - 1);
        let entry_gpa = table | (((va >> shift) & 0x1FF) << 3);
        let entry = mem
            .read_u64(entry_gpa)
            .ok_or(WalkError::TableNotRam { gpa: entry_gpa })?;
        if entry & ENTRY_PRESENT == 0 {
            return Err(WalkError::NotPresent { level });
        }
        let large = level != 1 && entry & ENTRY_LARGE != 0;
        let level_reserved = match (level, large) {
            // The PML4 and PML5 have no page size bit.
            (4 | 5, _) => ENTRY_LARGE,
            // A large page's address starts at its size; the bits below
            // it, except PAT (bit 12), are reserved.
            (3, true) => bit_range(13, 29),
            (2, true) => bit_range(13, 20),
            _ => 0,
        };
        if entry & (levels.reserved_high | no_exec_reserved | level_reserved) != 0 {
            return Err(WalkError::Reserved { level });
        }
        rights.narrow(entry, nxe);
        if level == 1 || large {
            rights.check(p, acc)?;
            let offset_mask = (1u64 << shift) - 1;
            return Ok((entry & frame_mask(p) & !offset_mask) | (va & offset_mask));
        }
        table = entry & frame_mask(p);
    }
    // Unreachable for top >= 1: level 1 always returns above.
    Err(WalkError::NotPresent { level: 1 })
}

/// One piece of a guest-virtual range: `len` bytes at guest-physical `gpa`,
/// which are bytes `offset..offset + len` of the range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub gpa: u64,
    pub offset: usize,
    pub len: usize,
}

/// The chunks of a guest-virtual range, from [`chunks`].
pub struct Chunks<'m> {
    mem: &'m dyn GuestPhys,
    paging: Paging,
    access: Access,
    /// Start of the range, already truncated outside long mode.
    va: u64,
    len: usize,
    /// Bytes handed out so far; `len` once finished or failed.
    done: usize,
    /// A refusal of the whole range, reported as the first item.
    refused: Option<WalkError>,
}

/// Splits guest-virtual `[va, va + len)` into chunks that never cross a
/// 4 KiB boundary, so each lies inside one guest frame; callers copy chunk
/// by chunk. The walk happens once per chunk, lazily: the first failure is
/// the last item, and the chunks before it are valid (a partial copy, as
/// Xen's copy_from_guest does). A caller that wants all-or-nothing collects
/// first; there are at most `ceil(len / 4096) + 1` chunks.
///
/// `len` 0 yields nothing and checks nothing. Refused as the only item: a
/// `len` above [`MAX_CHUNKED_LEN`], a range past the top of the 32-bit (or,
/// in long mode, 64-bit) linear address space, and a bad paging state.
pub fn chunks<'m>(
    mem: &'m dyn GuestPhys,
    p: Paging,
    va: u64,
    len: usize,
    acc: Access,
) -> Chunks<'m> {
    let mut out = Chunks {
        mem,
        paging: p,
        access: acc,
        va,
        len,
        done: 0,
        refused: None,
    };
    if len == 0 {
        return out;
    }
    out.refused = range_refusal(&p, &mut out.va, len);
    out
}

/// Why `[va, va + len)` (len > 0) cannot be chunked, truncating `va` to 32
/// bits outside long mode.
fn range_refusal(p: &Paging, va: &mut u64, len: usize) -> Option<WalkError> {
    if len > MAX_CHUNKED_LEN {
        return Some(WalkError::TooLong { len });
    }
    let mode = match p.mode() {
        Ok(mode) => mode,
        Err(e) => return Some(e),
    };
    let top = if mode.is_long() {
        u64::MAX
    } else {
        *va &= 0xFFFF_FFFF;
        0xFFFF_FFFF
    };
    let last = (len as u64 - 1).checked_add(*va);
    match last {
        Some(last) if last <= top => None,
        _ => Some(WalkError::RangeWraps { va: *va, len }),
    }
}

impl Iterator for Chunks<'_> {
    type Item = Result<Chunk, WalkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.refused.take() {
            self.done = self.len;
            return Some(Err(e));
        }
        let remaining = self.len.checked_sub(self.done).filter(|&n| n > 0)?;
        // In range: the constructor checked va + len - 1 does not overflow.
        let Some(va) = self.va.checked_add(self.done as u64) else {
            self.done = self.len;
            return Some(Err(WalkError::RangeWraps {
                va: self.va,
                len: self.len,
            }));
        };
        let to_boundary = CHUNK_GRANULE - (va % CHUNK_GRANULE);
        let len = remaining.min(to_boundary as usize);
        match translate(self.mem, self.paging, va, self.access) {
            Ok(gpa) => {
                let chunk = Chunk {
                    gpa,
                    offset: self.done,
                    len,
                };
                self.done += len;
                Some(Ok(chunk))
            }
            Err(e) => {
                self.done = self.len;
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let remaining = self.len.saturating_sub(self.done);
        if self.refused.is_some() {
            return (1, Some(1));
        }
        let at_least = usize::from(remaining > 0);
        // An unaligned start adds one chunk to the aligned count.
        let at_most = remaining.div_ceil(CHUNK_GRANULE as usize) + at_least;
        (at_least, Some(at_most))
    }
}

impl FusedIterator for Chunks<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::vec::Vec;

    const P: u64 = ENTRY_PRESENT;
    const RW: u64 = ENTRY_WRITABLE;
    const US: u64 = ENTRY_USER;
    const PS: u64 = ENTRY_LARGE;
    const NX: u64 = ENTRY_NO_EXEC;
    const PE: u64 = 1;
    /// Guest RAM in the fake: [0, 1 GiB).
    const RAM_TOP: u64 = 0x4000_0000;
    const OUTSIDE_RAM: u64 = 0x8000_0000;

    /// Sparse guest RAM below `RAM_TOP`, zero where never written.
    #[derive(Default)]
    struct FakeRam {
        words: HashMap<u64, u64>,
    }

    impl FakeRam {
        fn get(&self, gpa: u64) -> u64 {
            self.words.get(&gpa).copied().unwrap_or(0)
        }
        fn put(&mut self, gpa: u64, value: u64) {
            assert_eq!(gpa % 8, 0);
            self.words.insert(gpa, value);
        }
        fn put32(&mut self, gpa: u64, value: u32) {
            assert_eq!(gpa % 4, 0);
            let shift = (gpa & 4) * 8;
            let word = self.words.entry(gpa & !7).or_default();
            *word = (*word & !(0xFFFF_FFFF << shift)) | (u64::from(value) << shift);
        }
        fn get32(&self, gpa: u64) -> u32 {
            (self.get(gpa & !7) >> ((gpa & 4) * 8)) as u32
        }
    }

    impl GuestPhys for FakeRam {
        fn read_u64(&self, gpa: u64) -> Option<u64> {
            (gpa.is_multiple_of(8) && gpa < RAM_TOP).then(|| self.get(gpa))
        }
        fn read_u32(&self, gpa: u64) -> Option<u32> {
            (gpa.is_multiple_of(4) && gpa < RAM_TOP).then(|| self.get32(gpa))
        }
    }

    /// A guest whose tables are allocated upwards from 1 MiB.
    struct Guest {
        ram: FakeRam,
        next_table: u64,
    }

    impl Guest {
        fn new() -> Self {
            Self {
                ram: FakeRam::default(),
                next_table: 0x10_0000,
            }
        }

        fn alloc(&mut self) -> u64 {
            let table = self.next_table;
            self.next_table += 0x1000;
            table
        }

        /// Maps `va` through 8-byte-entry tables rooted at `root` (top
        /// level `top`; 3 means a PAE PDPT), ending with `leaf` at
        /// `leaf_level`. Returns each level's entry address.
        fn map64(
            &mut self,
            root: u64,
            top: u8,
            va: u64,
            leaf_level: u8,
            leaf: u64,
            dir_flags: u64,
        ) -> [u64; 6] {
            let mut table = root;
            let mut at = [0; 6];
            for level in (leaf_level..=top).rev() {
                let shift = 12 + 9 * u32::from(level - 1);
                let index = if top == 3 && level == 3 {
                    (va >> 30) & 3
                } else {
                    (va >> shift) & 0x1FF
                };
                let gpa = table + index * 8;
                at[usize::from(level)] = gpa;
                if level == leaf_level {
                    self.ram.put(gpa, leaf);
                    break;
                }
                let entry = self.ram.get(gpa);
                if entry & P != 0 {
                    table = entry & 0x000F_FFFF_FFFF_F000;
                } else {
                    let new = self.alloc();
                    // PAE PDPTEs reserve the permission bits.
                    let flags = if top == 3 && level == 3 { P } else { dir_flags };
                    self.ram.put(gpa, new | flags);
                    table = new;
                }
            }
            at
        }

        /// Maps `va` through 32-bit tables at `dir`; returns the PDE and
        /// PTE addresses (0 for a 4 MiB page).
        fn map32(
            &mut self,
            dir: u64,
            va: u64,
            leaf_level: u8,
            leaf: u32,
            dir_flags: u32,
        ) -> [u64; 3] {
            let pde_gpa = dir + ((va >> 22) & 0x3FF) * 4;
            if leaf_level == 2 {
                self.ram.put32(pde_gpa, leaf);
                return [0, 0, pde_gpa];
            }
            let pde = self.ram.get32(pde_gpa);
            let table = if pde & 1 != 0 {
                u64::from(pde & 0xFFFF_F000)
            } else {
                let new = self.alloc();
                self.ram.put32(pde_gpa, new as u32 | dir_flags);
                new
            };
            let pte_gpa = table + ((va >> 12) & 0x3FF) * 4;
            self.ram.put32(pte_gpa, leaf);
            [0, pte_gpa, pde_gpa]
        }

        fn set(&mut self, gpa: u64, or: u64, and_not: u64) {
            let entry = self.ram.get(gpa);
            self.ram.put(gpa, (entry | or) & !and_not);
        }
    }

    fn long4(cr3: u64) -> Paging {
        Paging {
            cr0: CR0_PG | CR0_WP | PE,
            cr3,
            cr4: CR4_PAE,
            efer: EFER_LMA | EFER_NXE,
            maxphyaddr: 46,
        }
    }

    fn long5(cr3: u64) -> Paging {
        Paging {
            cr4: CR4_PAE | CR4_LA57,
            ..long4(cr3)
        }
    }

    fn pae(cr3: u64) -> Paging {
        Paging {
            cr0: CR0_PG | CR0_WP | PE,
            cr3,
            cr4: CR4_PAE,
            efer: EFER_NXE,
            maxphyaddr: 46,
        }
    }

    fn bits32(cr3: u64, pse: bool) -> Paging {
        Paging {
            cr0: CR0_PG | CR0_WP | PE,
            cr3,
            cr4: if pse { CR4_PSE } else { 0 },
            efer: 0,
            maxphyaddr: 40,
        }
    }

    const USER_READ: Access = Access {
        write: false,
        user: true,
        fetch: false,
    };
    const USER_WRITE: Access = Access {
        write: true,
        user: true,
        fetch: false,
    };
    const FETCH: Access = Access {
        write: false,
        user: false,
        fetch: true,
    };

    // ---- modes ----

    #[test]
    fn mode_follows_cr0_cr4_efer() {
        let p = |cr0, cr4, efer| Paging::new(cr0, 0, cr4, efer).mode();
        assert_eq!(p(0, 0, 0), Ok(Mode::Off));
        assert_eq!(p(PE, CR4_PAE | CR4_PSE, EFER_NXE), Ok(Mode::Off));
        assert_eq!(p(CR0_PG, 0, 0), Ok(Mode::Bits32));
        assert_eq!(p(CR0_PG, CR4_PAE, 0), Ok(Mode::Pae));
        // LA57 means nothing outside long mode.
        assert_eq!(p(CR0_PG, CR4_PAE | CR4_LA57, 0), Ok(Mode::Pae));
        assert_eq!(p(CR0_PG, CR4_PAE, EFER_LMA), Ok(Mode::Level4));
        assert_eq!(p(CR0_PG, CR4_PAE | CR4_LA57, EFER_LMA), Ok(Mode::Level5));
    }

    #[test]
    fn long_mode_without_paging_or_pae_is_refused() {
        let ram = FakeRam::default();
        for (cr0, cr4) in [(0, 0), (0, CR4_PAE), (CR0_PG, 0)] {
            let p = Paging::new(cr0, 0, cr4, EFER_LMA);
            assert_eq!(p.mode(), Err(WalkError::BadMode));
            assert_eq!(
                translate(&ram, p, 0x1000, Access::READ),
                Err(WalkError::BadMode)
            );
        }
    }

    #[test]
    fn maxphyaddr_outside_32_to_52_is_refused() {
        let ram = FakeRam::default();
        for bits in [0, 31, 53, 64] {
            let p = Paging {
                maxphyaddr: bits,
                ..Paging::new(0, 0, 0, 0)
            };
            assert_eq!(
                translate(&ram, p, 0, Access::READ),
                Err(WalkError::BadMaxPhysAddr { bits })
            );
        }
        for bits in [32, 52] {
            let p = Paging {
                maxphyaddr: bits,
                ..Paging::new(0, 0, 0, 0)
            };
            assert_eq!(translate(&ram, p, 0x10, Access::READ), Ok(0x10));
        }
    }

    #[test]
    fn paging_off_truncates_to_32_bits_and_checks_nothing() {
        // Memory is never read: an empty RAM view still translates.
        struct NoRam;
        impl GuestPhys for NoRam {
            fn read_u64(&self, _: u64) -> Option<u64> {
                None
            }
            fn read_u32(&self, _: u64) -> Option<u32> {
                None
            }
        }
        let p = Paging::new(PE, 0xDEAD_B000, 0, EFER_NXE);
        let all = Access {
            write: true,
            user: true,
            fetch: true,
        };
        assert_eq!(translate(&NoRam, p, 0x1_2345_6789, all), Ok(0x2345_6789));
        assert_eq!(
            translate(&NoRam, p, 0xFFFF_FFFF, Access::READ),
            Ok(0xFFFF_FFFF)
        );
    }

    // ---- 32-bit paging ----

    const VA32: u64 = 0x8055_1ABC;

    #[test]
    fn bits32_4k_page() {
        let mut g = Guest::new();
        let dir = g.alloc();
        g.map32(dir, VA32, 1, 0x0ABC_D000 | (P | RW) as u32, (P | RW) as u32);
        // CR3's PWT/PCD bits are not part of the address.
        let p = bits32(dir | 0x18, false);
        assert_eq!(translate(&g.ram, p, VA32, Access::WRITE), Ok(0x0ABC_DABC));
        // The linear address is 32 bits: upper bits are dropped.
        assert_eq!(
            translate(&g.ram, p, VA32 | 0xFFFF_FFFF_0000_0000, Access::READ),
            Ok(0x0ABC_DABC)
        );
    }

    #[test]
    fn bits32_4m_page_needs_cr4_pse() {
        let mut g = Guest::new();
        let dir = g.alloc();
        g.map32(dir, VA32, 2, 0x0AC0_0000 | (P | RW | PS) as u32, 0);
        assert_eq!(
            translate(&g.ram, bits32(dir, true), VA32, Access::READ),
            Ok(0x0AD5_1ABC)
        );
        // Without PSE the PS bit is ignored: the entry names a page table.
        g.ram.put32(0x0AC0_0000 + 0x151 * 4, 0x5000 | P as u32);
        assert_eq!(
            translate(&g.ram, bits32(dir, false), VA32, Access::READ),
            Ok(0x5ABC)
        );
    }

    #[test]
    fn bits32_4m_page_pse36_and_its_reserved_bits() {
        let mut g = Guest::new();
        let dir = g.alloc();
        let [_, _, pde] = g.map32(
            dir,
            VA32,
            2,
            0x0AC0_0000 | (P | PS) as u32 | (0x12 << 13),
            0,
        );
        let p40 = bits32(dir, true);
        assert_eq!(
            translate(&g.ram, p40, VA32, Access::READ),
            Ok(0x12_0AD5_1ABC)
        );
        // Beyond 40 bits PSE-36 has no entry bits: 52 behaves as 40.
        let p52 = Paging {
            maxphyaddr: 52,
            ..p40
        };
        assert_eq!(
            translate(&g.ram, p52, VA32, Access::READ),
            Ok(0x12_0AD5_1ABC)
        );
        // With 36 bits, physical bit 36 (entry bit 17) is reserved.
        let p36 = Paging {
            maxphyaddr: 36,
            ..p40
        };
        assert_eq!(
            translate(&g.ram, p36, VA32, Access::READ),
            Err(WalkError::Reserved { level: 2 })
        );
        g.ram
            .put32(pde, 0x0AC0_0000 | (P | PS) as u32 | (0x2 << 13));
        assert_eq!(
            translate(&g.ram, p36, VA32, Access::READ),
            Ok(0x2_0AD5_1ABC)
        );
        // Bit 21 is always reserved.
        g.ram.put32(pde, 0x0AC0_0000 | (P | PS) as u32 | (1 << 21));
        assert_eq!(
            translate(&g.ram, p40, VA32, Access::READ),
            Err(WalkError::Reserved { level: 2 })
        );
    }

    #[test]
    fn bits32_not_present_at_each_level() {
        let mut g = Guest::new();
        let dir = g.alloc();
        let p = bits32(dir, true);
        assert_eq!(
            translate(&g.ram, p, VA32, Access::READ),
            Err(WalkError::NotPresent { level: 2 })
        );
        g.map32(dir, VA32, 1, 0x0ABC_D000 | RW as u32, P as u32);
        assert_eq!(
            translate(&g.ram, p, VA32, Access::READ),
            Err(WalkError::NotPresent { level: 1 })
        );
    }

    #[test]
    fn bits32_tables_outside_ram() {
        let mut g = Guest::new();
        let p = bits32(OUTSIDE_RAM, false);
        assert_eq!(
            translate(&g.ram, p, VA32, Access::READ),
            Err(WalkError::TableNotRam {
                gpa: OUTSIDE_RAM + 0x201 * 4
            })
        );
        let dir = g.alloc();
        g.ram.put32(dir + 0x201 * 4, 0x7000_0000 | P as u32);
        assert_eq!(
            translate(&g.ram, bits32(dir, false), VA32, Access::READ),
            Err(WalkError::TableNotRam {
                gpa: 0x7000_0000 + 0x151 * 4
            })
        );
    }

    #[test]
    fn bits32_permissions() {
        let mut g = Guest::new();
        let dir = g.alloc();
        // Read-only supervisor page under a user-writable directory entry.
        g.map32(dir, VA32, 1, 0x0ABC_D000 | P as u32, (P | RW | US) as u32);
        let wp = bits32(dir, false);
        let no_wp = Paging {
            cr0: CR0_PG | PE,
            ..wp
        };
        assert_eq!(
            translate(&g.ram, wp, VA32, Access::WRITE),
            Err(WalkError::WriteProtected)
        );
        assert_eq!(
            translate(&g.ram, no_wp, VA32, Access::WRITE),
            Ok(0x0ABC_DABC)
        );
        assert_eq!(
            translate(&g.ram, no_wp, VA32, USER_READ),
            Err(WalkError::User)
        );
        // No NX in 32-bit paging.
        assert_eq!(translate(&g.ram, wp, VA32, FETCH), Ok(0x0ABC_DABC));
        g.map32(dir, VA32, 1, 0x0ABC_D000 | (P | US) as u32, 0);
        assert_eq!(translate(&g.ram, no_wp, VA32, USER_READ), Ok(0x0ABC_DABC));
        assert_eq!(
            translate(&g.ram, no_wp, VA32, USER_WRITE),
            Err(WalkError::WriteProtected)
        );
    }

    // ---- PAE ----

    const VA_PAE: u64 = 0xC055_1ABC;
    /// A PDPT that is 32-byte but not page aligned.
    const PDPT: u64 = 0x20_0020;

    #[test]
    fn pae_4k_and_2m_pages() {
        let mut g = Guest::new();
        // CR3 bits 4:3 (PCD/PWT) are not part of the PDPT address.
        let p = pae(PDPT | 0x18);
        g.map64(PDPT, 3, VA_PAE, 1, 0x0123_4000 | P | RW, P | RW);
        assert_eq!(translate(&g.ram, p, VA_PAE, Access::WRITE), Ok(0x0123_4ABC));
        assert_eq!(
            translate(&g.ram, p, VA_PAE | 0x7_0000_0000, Access::READ),
            Ok(0x0123_4ABC)
        );
        let other = 0x4055_1ABC;
        // PAT (bit 12) is not part of a 2 MiB page's address.
        g.map64(PDPT, 3, other, 2, 0x0120_0000 | P | PS | (1 << 12), P | RW);
        assert_eq!(translate(&g.ram, p, other, Access::READ), Ok(0x0135_1ABC));
    }

    #[test]
    fn pae_pdpte_rules() {
        let mut g = Guest::new();
        let p = pae(PDPT);
        assert_eq!(
            translate(&g.ram, p, VA_PAE, Access::READ),
            Err(WalkError::NotPresent { level: 3 })
        );
        let at = g.map64(PDPT, 3, VA_PAE, 1, 0x0123_4000 | P, P | RW);
        assert_eq!(translate(&g.ram, p, VA_PAE, Access::READ), Ok(0x0123_4ABC));
        for bit in [1, 2, 5, 8, 46, 62, 63] {
            g.set(at[3], 1 << bit, 0);
            assert_eq!(
                translate(&g.ram, p, VA_PAE, Access::READ),
                Err(WalkError::Reserved { level: 3 }),
                "bit {bit}"
            );
            g.set(at[3], 0, 1 << bit);
        }
        assert_eq!(
            translate(&g.ram, pae(OUTSIDE_RAM), VA_PAE, Access::READ),
            Err(WalkError::TableNotRam {
                gpa: OUTSIDE_RAM + 3 * 8
            })
        );
    }

    #[test]
    fn pae_reserved_bits() {
        let mut g = Guest::new();
        let p = pae(PDPT);
        let at = g.map64(PDPT, 3, VA_PAE, 1, 0x0123_4000 | P, P | RW);
        // PAE reserves bits 62:MAXPHYADDR, unlike long mode.
        g.set(at[2], 1 << 62, 0);
        assert_eq!(
            translate(&g.ram, p, VA_PAE, Access::READ),
            Err(WalkError::Reserved { level: 2 })
        );
        g.set(at[2], 0, 1 << 62);
        g.set(at[1], 1 << 46, 0);
        assert_eq!(
            translate(&g.ram, p, VA_PAE, Access::READ),
            Err(WalkError::Reserved { level: 1 })
        );
        let wide = Paging {
            maxphyaddr: 52,
            ..p
        };
        assert_eq!(
            translate(&g.ram, wide, VA_PAE, Access::READ),
            Ok((1 << 46) | 0x0123_4ABC)
        );
        g.set(at[1], 0, 1 << 46);
        let other = 0x4055_1ABC;
        let at = g.map64(PDPT, 3, other, 2, 0x0120_0000 | P | PS | (1 << 13), P);
        assert_eq!(
            translate(&g.ram, p, other, Access::READ),
            Err(WalkError::Reserved { level: 2 })
        );
        g.set(at[2], 0, 1 << 13);
        assert_eq!(translate(&g.ram, p, other, Access::READ), Ok(0x0135_1ABC));
    }

    #[test]
    fn pae_no_execute_needs_nxe() {
        let mut g = Guest::new();
        let p = pae(PDPT);
        g.map64(PDPT, 3, VA_PAE, 1, 0x0123_4000 | P, P | RW | NX);
        assert_eq!(
            translate(&g.ram, p, VA_PAE, FETCH),
            Err(WalkError::NoExecute)
        );
        assert_eq!(translate(&g.ram, p, VA_PAE, Access::READ), Ok(0x0123_4ABC));
        let no_nxe = Paging { efer: 0, ..p };
        assert_eq!(
            translate(&g.ram, no_nxe, VA_PAE, Access::READ),
            Err(WalkError::Reserved { level: 2 })
        );
    }

    // ---- 4- and 5-level paging ----

    const VA: u64 = 0x0000_7F12_3456_7ABC;

    fn long_guest(leaf_level: u8, leaf: u64, dir_flags: u64) -> (Guest, u64, [u64; 6]) {
        let mut g = Guest::new();
        let root = g.alloc();
        let at = g.map64(root, 4, VA, leaf_level, leaf, dir_flags);
        (g, root, at)
    }

    #[test]
    fn long_4k_2m_1g_pages() {
        let (g, root, _) = long_guest(1, 0x0ABC_D000 | P | RW, P | RW);
        // CR3's PCID bits are not part of the address.
        assert_eq!(
            translate(&g.ram, long4(root | 0x123), VA, Access::WRITE),
            Ok(0x0ABC_DABC)
        );
        let (g, root, _) = long_guest(2, 0x0AC0_0000 | P | RW | PS, P | RW);
        assert_eq!(
            translate(&g.ram, long4(root), VA, Access::WRITE),
            Ok(0x0AC0_0000 | (VA & 0x1F_FFFF))
        );
        // PAT (bit 12) is not part of a 1 GiB page's address.
        let (g, root, _) = long_guest(3, 0x4000_0000 | P | PS | (1 << 12), P | RW);
        assert_eq!(
            translate(&g.ram, long4(root), VA, Access::READ),
            Ok(0x4000_0000 | (VA & 0x3FFF_FFFF))
        );
        // PAT (bit 7) in a 4 KiB entry is not a page size.
        let (g, root, _) = long_guest(1, 0x0ABC_D000 | P | PS, P);
        assert_eq!(
            translate(&g.ram, long4(root), VA, Access::READ),
            Ok(0x0ABC_DABC)
        );
    }

    #[test]
    fn long_high_half_and_non_canonical() {
        let mut g = Guest::new();
        let root = g.alloc();
        let high = 0xFFFF_8000_0000_1234;
        g.map64(root, 4, high, 1, 0x9000 | P, P);
        assert_eq!(
            translate(&g.ram, long4(root), high, Access::READ),
            Ok(0x9234)
        );
        for va in [
            0x0000_8000_0000_0000,
            0xFFFF_7FFF_FFFF_F000,
            0x0001_0000_0000_0000,
            1 << 63,
        ] {
            assert_eq!(
                translate(&g.ram, long4(root), va, Access::READ),
                Err(WalkError::NonCanonical { va })
            );
        }
    }

    #[test]
    fn level5_walks_five_tables_and_widens_canonical() {
        let mut g = Guest::new();
        let root = g.alloc();
        // Canonical with 57 bits, not with 48.
        let va = 0x00FF_0000_0000_1ABC;
        let at = g.map64(root, 5, va, 1, 0x0ABC_D000 | P, P);
        assert_eq!(
            translate(&g.ram, long5(root), va, Access::READ),
            Ok(0x0ABC_DABC)
        );
        assert_eq!(
            translate(&g.ram, long4(root), va, Access::READ),
            Err(WalkError::NonCanonical { va })
        );
        let bad = 0x0100_0000_0000_0000;
        assert_eq!(
            translate(&g.ram, long5(root), bad, Access::READ),
            Err(WalkError::NonCanonical { va: bad })
        );
        g.set(at[5], PS, 0);
        assert_eq!(
            translate(&g.ram, long5(root), va, Access::READ),
            Err(WalkError::Reserved { level: 5 })
        );
        g.set(at[5], 0, PS | P);
        assert_eq!(
            translate(&g.ram, long5(root), va, Access::READ),
            Err(WalkError::NotPresent { level: 5 })
        );
    }

    #[test]
    fn long_not_present_at_each_level() {
        for level in 1..=4u8 {
            let (mut g, root, at) = long_guest(1, 0x0ABC_D000 | P, P | RW);
            g.set(at[usize::from(level)], 0, P);
            assert_eq!(
                translate(&g.ram, long4(root), VA, Access::READ),
                Err(WalkError::NotPresent { level })
            );
        }
    }

    #[test]
    fn long_reserved_bits() {
        // Bits above MAXPHYADDR at every level.
        for level in 1..=4u8 {
            let (mut g, root, at) = long_guest(1, 0x0ABC_D000 | P, P | RW);
            g.set(at[usize::from(level)], 1 << 46, 0);
            assert_eq!(
                translate(&g.ram, long4(root), VA, Access::READ),
                Err(WalkError::Reserved { level })
            );
        }
        // With a wider MAXPHYADDR the same table pointer is just not RAM.
        let (mut g, root, at) = long_guest(1, 0x0ABC_D000 | P, P | RW);
        g.set(at[3], 1 << 46, 0);
        let wide = Paging {
            maxphyaddr: 52,
            ..long4(root)
        };
        let pd = (g.ram.get(at[3]) & 0x000F_FFFF_FFFF_F000) + ((VA >> 21) & 0x1FF) * 8;
        assert_eq!(
            translate(&g.ram, wide, VA, Access::READ),
            Err(WalkError::TableNotRam { gpa: pd })
        );
        // Bits 62:52 are ignored in long mode.
        let (mut g, root, at) = long_guest(1, 0x0ABC_D000 | P, P | RW);
        for &entry in &at[1..=4] {
            g.set(entry, 0x7FF << 52, 0);
        }
        assert_eq!(
            translate(&g.ram, long4(root), VA, Access::READ),
            Ok(0x0ABC_DABC)
        );
        // The PML4 has no page size bit.
        let (mut g, root, at) = long_guest(1, 0x0ABC_D000 | P, P | RW);
        g.set(at[4], PS, 0);
        assert_eq!(
            translate(&g.ram, long4(root), VA, Access::READ),
            Err(WalkError::Reserved { level: 4 })
        );
        // Large pages reserve the address bits below their size, PAT aside.
        let (g, root, _) = long_guest(3, 0x4000_0000 | P | PS | (1 << 29), P);
        assert_eq!(
            translate(&g.ram, long4(root), VA, Access::READ),
            Err(WalkError::Reserved { level: 3 })
        );
        let (g, root, _) = long_guest(2, 0x0AC0_0000 | P | PS | (1 << 20), P);
        assert_eq!(
            translate(&g.ram, long4(root), VA, Access::READ),
            Err(WalkError::Reserved { level: 2 })
        );
        // XD without EFER.NXE.
        let (g, root, _) = long_guest(1, 0x0ABC_D000 | P | NX, P);
        let no_nxe = Paging {
            efer: EFER_LMA,
            ..long4(root)
        };
        assert_eq!(
            translate(&g.ram, no_nxe, VA, Access::READ),
            Err(WalkError::Reserved { level: 1 })
        );
        assert_eq!(
            translate(&g.ram, long4(root), VA, Access::READ),
            Ok(0x0ABC_DABC)
        );
    }

    #[test]
    fn long_tables_outside_ram() {
        let g = Guest::new();
        let pml4e = OUTSIDE_RAM + ((VA >> 39) & 0x1FF) * 8;
        assert_eq!(
            translate(&g.ram, long4(OUTSIDE_RAM), VA, Access::READ),
            Err(WalkError::TableNotRam { gpa: pml4e })
        );
        let (mut g, root, at) = long_guest(1, 0x0ABC_D000 | P, P);
        g.ram.put(at[2], 0x7000_0000 | P);
        let pte = 0x7000_0000 + ((VA >> 12) & 0x1FF) * 8;
        assert_eq!(
            translate(&g.ram, long4(root), VA, Access::READ),
            Err(WalkError::TableNotRam { gpa: pte })
        );
    }

    #[test]
    fn long_write_protection() {
        let (g, root, _) = long_guest(1, 0x0ABC_D000 | P | US, P | RW | US);
        let wp = long4(root);
        let no_wp = Paging {
            cr0: CR0_PG | PE,
            ..wp
        };
        assert_eq!(
            translate(&g.ram, wp, VA, Access::WRITE),
            Err(WalkError::WriteProtected)
        );
        assert_eq!(translate(&g.ram, no_wp, VA, Access::WRITE), Ok(0x0ABC_DABC));
        // User writes fault whatever CR0.WP says.
        assert_eq!(
            translate(&g.ram, no_wp, VA, USER_WRITE),
            Err(WalkError::WriteProtected)
        );
        assert_eq!(translate(&g.ram, wp, VA, USER_READ), Ok(0x0ABC_DABC));
        // One read-only level is enough.
        let (mut g, root, at) = long_guest(1, 0x0ABC_D000 | P | RW | US, P | RW | US);
        assert_eq!(
            translate(&g.ram, long4(root), VA, USER_WRITE),
            Ok(0x0ABC_DABC)
        );
        g.set(at[3], 0, RW);
        assert_eq!(
            translate(&g.ram, long4(root), VA, USER_WRITE),
            Err(WalkError::WriteProtected)
        );
        assert_eq!(
            translate(&g.ram, long4(root), VA, Access::WRITE),
            Err(WalkError::WriteProtected)
        );
    }

    #[test]
    fn long_user_access() {
        let (mut g, root, at) = long_guest(1, 0x0ABC_D000 | P | RW | US, P | RW | US);
        let p = long4(root);
        assert_eq!(translate(&g.ram, p, VA, USER_READ), Ok(0x0ABC_DABC));
        g.set(at[2], 0, US);
        assert_eq!(translate(&g.ram, p, VA, USER_READ), Err(WalkError::User));
        assert_eq!(translate(&g.ram, p, VA, USER_WRITE), Err(WalkError::User));
        // The supervisor may read and write user pages (no SMAP here).
        g.set(at[2], US, 0);
        assert_eq!(translate(&g.ram, p, VA, Access::WRITE), Ok(0x0ABC_DABC));
    }

    #[test]
    fn long_no_execute() {
        let (mut g, root, at) = long_guest(1, 0x0ABC_D000 | P | RW | US, P | RW | US);
        let p = long4(root);
        assert_eq!(translate(&g.ram, p, VA, FETCH), Ok(0x0ABC_DABC));
        // One no-execute level is enough, reads and writes stay allowed.
        g.set(at[4], NX, 0);
        assert_eq!(translate(&g.ram, p, VA, FETCH), Err(WalkError::NoExecute));
        let user_fetch = Access {
            user: true,
            ..FETCH
        };
        assert_eq!(
            translate(&g.ram, p, VA, user_fetch),
            Err(WalkError::NoExecute)
        );
        assert_eq!(translate(&g.ram, p, VA, Access::WRITE), Ok(0x0ABC_DABC));
    }

    // ---- chunks ----

    fn collect(c: Chunks<'_>) -> Vec<Result<Chunk, WalkError>> {
        c.collect()
    }

    fn ok(gpa: u64, offset: usize, len: usize) -> Result<Chunk, WalkError> {
        Ok(Chunk { gpa, offset, len })
    }

    #[test]
    fn chunks_of_zero_length_check_nothing() {
        let ram = FakeRam::default();
        let bad = Paging::new(0, 0, 0, EFER_LMA);
        assert!(collect(chunks(&ram, bad, 1 << 63, 0, Access::READ)).is_empty());
        let p = long4(OUTSIDE_RAM);
        assert!(collect(chunks(&ram, p, VA, 0, Access::READ)).is_empty());
    }

    #[test]
    fn chunks_split_at_4k_boundaries() {
        let mut g = Guest::new();
        let root = g.alloc();
        g.map64(root, 4, 0x40_0000, 1, 0x0900_0000 | P | RW, P | RW);
        g.map64(root, 4, 0x40_1000, 1, 0x0700_0000 | P | RW, P | RW);
        let p = long4(root);
        assert_eq!(
            collect(chunks(&g.ram, p, 0x40_0010, 0x20, Access::WRITE)),
            [ok(0x0900_0010, 0, 0x20)]
        );
        assert_eq!(
            collect(chunks(&g.ram, p, 0x40_0F00, 0x200, Access::WRITE)),
            [ok(0x0900_0F00, 0, 0x100), ok(0x0700_0000, 0x100, 0x100)]
        );
        // Exactly one page, aligned: one chunk.
        assert_eq!(
            collect(chunks(&g.ram, p, 0x40_1000, 0x1000, Access::READ)),
            [ok(0x0700_0000, 0, 0x1000)]
        );
    }

    #[test]
    fn chunks_across_2m_pages() {
        let mut g = Guest::new();
        let root = g.alloc();
        g.map64(root, 4, 0x4000_0000, 2, 0x0AC0_0000 | P | PS, P);
        g.map64(root, 4, 0x4020_0000, 2, 0x0A00_0000 | P | PS, P);
        let p = long4(root);
        assert_eq!(
            collect(chunks(&g.ram, p, 0x401F_FF80, 0x100, Access::READ)),
            [ok(0x0ADF_FF80, 0, 0x80), ok(0x0A00_0000, 0x80, 0x80)]
        );
        // Inside one 2 MiB page the 4 KiB granule still splits.
        assert_eq!(
            collect(chunks(&g.ram, p, 0x4000_0F80, 0x100, Access::READ)),
            [ok(0x0AC0_0F80, 0, 0x80), ok(0x0AC0_1000, 0x80, 0x80)]
        );
    }

    #[test]
    fn chunks_stop_at_the_first_fault() {
        let mut g = Guest::new();
        let root = g.alloc();
        g.map64(root, 4, 0x40_0000, 1, 0x0900_0000 | P, P | RW);
        g.map64(root, 4, 0x40_2000, 1, 0x0800_0000 | P | RW, P | RW);
        let p = long4(root);
        let mut it = chunks(&g.ram, p, 0x40_0800, 0x2000, Access::READ);
        assert_eq!(it.next(), Some(ok(0x0900_0800, 0, 0x800)));
        assert_eq!(it.next(), Some(Err(WalkError::NotPresent { level: 1 })));
        assert_eq!(it.next(), None);
        assert_eq!(it.next(), None);
        // A read-only first page stops a write before anything is handed out.
        assert_eq!(
            collect(chunks(&g.ram, p, 0x40_0800, 0x10, Access::WRITE)),
            [Err(WalkError::WriteProtected)]
        );
    }

    #[test]
    fn chunks_into_the_canonical_hole() {
        let mut g = Guest::new();
        let root = g.alloc();
        let last_page = 0x0000_7FFF_FFFF_F000;
        g.map64(root, 4, last_page, 1, 0x5000 | P, P);
        assert_eq!(
            collect(chunks(
                &g.ram,
                long4(root),
                last_page + 0xF80,
                0x100,
                Access::READ
            )),
            [
                ok(0x5F80, 0, 0x80),
                Err(WalkError::NonCanonical {
                    va: 0x0000_8000_0000_0000
                })
            ]
        );
    }

    #[test]
    fn chunks_refuse_too_long_and_are_bounded() {
        let ram = FakeRam::default();
        let off = Paging::new(0, 0, 0, 0);
        let too_long = MAX_CHUNKED_LEN + 1;
        assert_eq!(
            collect(chunks(&ram, off, 0, too_long, Access::READ)),
            [Err(WalkError::TooLong { len: too_long })]
        );
        // Unaligned: ceil(len / 4096) + 1 chunks, covering the range.
        let it = chunks(&ram, off, 0x123, MAX_CHUNKED_LEN, Access::READ);
        let hint = it.size_hint();
        let all: Vec<Chunk> = it.map(|c| c.expect("paging off never faults")).collect();
        assert_eq!(all.len(), MAX_CHUNKED_LEN / 4096 + 1);
        assert_eq!(hint, (1, Some(all.len())));
        let mut expected_offset = 0;
        for c in &all {
            assert_eq!(c.offset, expected_offset);
            assert_eq!(c.gpa, 0x123 + c.offset as u64);
            assert!(c.gpa % 4096 + c.len as u64 <= 4096);
            expected_offset += c.len;
        }
        assert_eq!(expected_offset, MAX_CHUNKED_LEN);
        // Aligned: exactly ceil(len / 4096).
        assert_eq!(
            chunks(&ram, off, 0x1000, MAX_CHUNKED_LEN, Access::READ).count(),
            256
        );
    }

    #[test]
    fn chunks_refuse_ranges_past_the_top() {
        let ram = FakeRam::default();
        let p = long4(OUTSIDE_RAM);
        let va = u64::MAX - 10;
        assert_eq!(
            collect(chunks(&ram, p, va, 100, Access::READ)),
            [Err(WalkError::RangeWraps { va, len: 100 })]
        );
        // Ending on the last byte is fine: the walk itself then runs.
        assert_eq!(
            collect(chunks(&ram, p, u64::MAX - 99, 100, Access::READ)),
            [Err(WalkError::TableNotRam {
                gpa: OUTSIDE_RAM + 511 * 8
            })]
        );
        // Outside long mode the space ends at 4 GiB, after truncation.
        let off = Paging::new(0, 0, 0, 0);
        assert_eq!(
            collect(chunks(&ram, off, 0x1_FFFF_FF00, 0x100, Access::READ)),
            [ok(0xFFFF_FF00, 0, 0x100)]
        );
        assert_eq!(
            collect(chunks(&ram, off, 0xFFFF_FF00, 0x101, Access::READ)),
            [Err(WalkError::RangeWraps {
                va: 0xFFFF_FF00,
                len: 0x101
            })]
        );
        let bad = Paging::new(0, 0, 0, EFER_LMA);
        assert_eq!(
            collect(chunks(&ram, bad, 0, 1, Access::READ)),
            [Err(WalkError::BadMode)]
        );
    }

    #[test]
    fn errors_say_what_was_wrong() {
        use std::string::ToString;
        let all = [
            WalkError::NotPresent { level: 2 },
            WalkError::Reserved { level: 3 },
            WalkError::WriteProtected,
            WalkError::User,
            WalkError::NoExecute,
            WalkError::TableNotRam { gpa: 0x8000_0000 },
            WalkError::NonCanonical {
                va: 0x8000_0000_0000,
            },
            WalkError::BadMode,
            WalkError::BadMaxPhysAddr { bits: 53 },
            WalkError::TooLong { len: 0x10_0001 },
            WalkError::RangeWraps {
                va: 0xFFFF_FF00,
                len: 0x101,
            },
        ];
        let texts: Vec<_> = all.iter().map(ToString::to_string).collect();
        assert!(texts[0].contains("level 2") && texts[0].contains("page directory"));
        assert!(texts[1].contains("level 3") && texts[1].contains("reserved"));
        assert!(texts[5].contains("0x80000000"));
        assert!(texts[6].contains("0x800000000000"));
        assert!(texts[8].contains("53"));
        assert!(texts[9].contains("0x100001"));
        for (i, a) in texts.iter().enumerate() {
            for b in &texts[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
