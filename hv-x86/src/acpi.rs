//! The firmware's ACPI tables, read with every length, offset and count
//! checked: the RSDP (found by the legacy BIOS search or handed over by the
//! loader), the RSDT or XSDT, the MADT (CPUs, I/O APICs, interrupt source
//! overrides, NMI wiring) and, when present, the DMAR (VT-d remapping units,
//! reserved memory, ATS ports).
//!
//! A buggy BIOS is as bad as a hostile one, so what goes wrong is sorted by
//! how much of the rest stays usable:
//! - the RSDP or the root table (RSDT/XSDT) is wrong: [`AcpiError`], nothing
//!   is usable;
//! - a table the root points at is unreadable, badly sized or checksummed,
//!   listed twice, or is a MADT/DMAR whose structure cannot be walked: the
//!   table is rejected ([`Acpi::rejected`], the first reason kept) and the
//!   others are still read;
//! - a MADT entry of sound length whose fields cannot be right (too short
//!   for its type, APIC id 0xff, reserved polarity): that entry is skipped
//!   and counted ([`Madt::rejected`]);
//! - any malformed DMAR structure rejects the whole DMAR: an IOMMU driver
//!   working from part of the list would leave devices unprotected;
//! - more than a fixed capacity: the rest is counted as dropped, never
//!   stored past the end.
//!
//! This module reads memory only through [`Memory`] and never writes it. It
//! follows no pointer but RSDP → root → table (not the FADT's, so no walk can
//! loop) and looks at no more than [`MAX_TABLES`] root entries.

use core::fmt;
use core::ops::Deref;

use crate::multiboot::Memory;

/// Largest table accepted (a MADT for 64 CPUs is under 1 KiB; a DSDT, which
/// is not parsed here, can be a few hundred KiB).
pub const MAX_TABLE: u32 = 1 << 20;
/// Root entries looked at; the rest are counted in [`Acpi::tables_ignored`].
pub const MAX_TABLES: usize = 64;
/// Largest RSDP `length` accepted (ACPI 2.0 through 6.5 define 36 bytes).
pub const MAX_RSDP_LEN: usize = 1024;
/// CPUs kept from the MADT.
pub const MAX_CPUS: usize = 64;
/// I/O APICs kept from the MADT.
pub const MAX_IO_APICS: usize = 8;
/// Interrupt source overrides kept (ISA has 16 IRQs).
pub const MAX_OVERRIDES: usize = 16;
/// Local APIC NMI entries kept (firmware often gives one per CPU).
pub const MAX_LOCAL_NMIS: usize = MAX_CPUS;
/// DMAR hardware units kept.
pub const MAX_DRHDS: usize = 8;
/// DMAR reserved memory regions kept.
pub const MAX_RMRRS: usize = 16;
/// DMAR ATS-capable root port entries kept.
pub const MAX_ATSRS: usize = 4;
/// Device scopes kept per DRHD (the catch-all unit lists I/O APICs and
/// HPETs; a dedicated unit one or two devices).
pub const MAX_DRHD_SCOPES: usize = 8;
/// Device scopes kept per RMRR or ATSR.
pub const MAX_SCOPES: usize = 4;
/// Bridge hops kept per device scope path.
pub const MAX_PATH: usize = 4;

/// Length of the ACPI 1.0 RSDP, which its checksum covers.
const RSDP_V1_LEN: usize = 20;
/// Length of the ACPI 2.0 RSDP fields read here.
const RSDP_V2_LEN: usize = 36;
/// The common header of every table but the RSDP.
const SDT_HEADER_LEN: usize = 36;
/// MADT: header, local APIC address, flags.
const MADT_ENTRIES: usize = 44;
/// DMAR: header, host address width, flags, 10 reserved bytes.
const DMAR_STRUCTURES: usize = 48;

/// Where the BIOS data area keeps the EBDA's real-mode segment.
const EBDA_SEGMENT_PTR: u64 = 0x40e;
/// How much of the EBDA the RSDP may be in.
const EBDA_SEARCH_LEN: u64 = 1024;
/// The BIOS read-only area the RSDP may be in.
const BIOS_AREA: core::ops::Range<u64> = 0xe_0000..0x10_0000;
/// The RSDP is 16-byte aligned.
const RSDP_ALIGN: u64 = 16;
const RSDP_SIGNATURE: &[u8; 8] = b"RSD PTR ";

const RSDT: Signature = Signature(*b"RSDT");
const XSDT: Signature = Signature(*b"XSDT");
const MADT: Signature = Signature(*b"APIC");
const DMAR: Signature = Signature(*b"DMAR");

const MADT_PCAT_COMPAT: u32 = 1 << 0;
const MADT_LOCAL_APIC: u8 = 0;
const MADT_IO_APIC: u8 = 1;
const MADT_SOURCE_OVERRIDE: u8 = 2;
const MADT_LOCAL_APIC_NMI: u8 = 4;
const MADT_LOCAL_APIC_ADDRESS: u8 = 5;
const MADT_LOCAL_X2APIC: u8 = 9;
const MADT_LOCAL_X2APIC_NMI: u8 = 10;
const CPU_ENABLED: u32 = 1 << 0;
const CPU_ONLINE_CAPABLE: u32 = 1 << 1;
/// An xAPIC id meaning "all": never a CPU's.
const XAPIC_BROADCAST: u32 = 0xff;
/// An x2APIC id meaning "all": never a CPU's.
const X2APIC_BROADCAST: u32 = u32::MAX;
/// ISA is the only bus an override may name.
const ISA_BUS: u8 = 0;
const ISA_IRQS: u8 = 16;

const DMAR_INTR_REMAP: u8 = 1 << 0;
const DMAR_X2APIC_OPT_OUT: u8 = 1 << 1;
const DMAR_DMA_CTRL_OPT_IN: u8 = 1 << 2;
const DMAR_DRHD: u16 = 0;
const DMAR_RMRR: u16 = 1;
const DMAR_ATSR: u16 = 2;
/// Fixed fields before each structure's device scopes.
const DRHD_SCOPES: usize = 16;
const RMRR_SCOPES: usize = 24;
const ATSR_SCOPES: usize = 8;
const DRHD_INCLUDE_PCI_ALL: u8 = 1 << 0;
const ATSR_ALL_PORTS: u8 = 1 << 0;
/// Device scope: type, length, flags, reserved, enumeration id, start bus.
const SCOPE_PATH: usize = 6;
const PAGE_MASK: u64 = 0xfff;
/// Host address widths a VT-d unit can have (the field holds width - 1).
const DMAR_WIDTHS: core::ops::RangeInclusive<u16> = 32..=64;

/// A list of at most `N` items kept in place (the library has no allocator).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BoundedList<T: Copy + Default, const N: usize> {
    items: [T; N],
    len: usize,
}

impl<T: Copy + Default, const N: usize> BoundedList<T, N> {
    /// How many items it can hold.
    pub const CAPACITY: usize = N;

    fn new() -> Self {
        Self {
            items: [T::default(); N],
            len: 0,
        }
    }

    /// Adds `item`; false (and nothing kept) when full.
    fn push(&mut self, item: T) -> bool {
        let Some(slot) = self.items.get_mut(self.len) else {
            return false;
        };
        *slot = item;
        self.len += 1;
        true
    }
}

impl<T: Copy + Default, const N: usize> Default for BoundedList<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Default, const N: usize> Deref for BoundedList<T, N> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        self.items.get(..self.len).unwrap_or_default()
    }
}

impl<T: Copy + Default + fmt::Debug, const N: usize> fmt::Debug for BoundedList<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A table's 4-byte signature, printed with anything unprintable as `?`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Signature(pub [u8; 4]);

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_printable(f, &self.0)
    }
}

/// The firmware vendor's 6-byte OEM id, printed without its space padding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OemId(pub [u8; 6]);

impl fmt::Display for OemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = self
            .0
            .iter()
            .rposition(|&c| c != b' ' && c != 0)
            .map_or(0, |last| last + 1);
        write_printable(f, self.0.get(..end).unwrap_or_default())
    }
}

/// Firmware bytes go to the console: nothing but printable ASCII.
fn write_printable(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for &c in bytes {
        let shown = if (0x20..0x7f).contains(&c) { c } else { b'?' };
        fmt::Write::write_char(f, char::from(shown))?;
    }
    Ok(())
}

/// Why the tables, or one of them, were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// The BIOS areas hold no "RSD PTR " signature.
    NoRsdp,
    /// Fewer bytes than the RSDP's revision needs.
    RsdpTruncated {
        /// Bytes there were.
        len: usize,
        /// Bytes the revision needs.
        needed: usize,
    },
    /// The RSDP does not start with "RSD PTR ".
    RsdpSignature,
    /// The ACPI 1.0 checksum (first 20 bytes) does not sum to zero.
    RsdpChecksum,
    /// The ACPI 2.0 `length` is below 36, above [`MAX_RSDP_LEN`] or past
    /// the bytes there are.
    RsdpLength(u32),
    /// The ACPI 2.0 extended checksum (over `length` bytes) is wrong.
    RsdpExtendedChecksum,
    /// The RSDP names no root table (address 0).
    NoRootTable,
    /// A table lies (partly) outside readable memory.
    Unreadable {
        /// Where it was said to be.
        addr: u64,
        /// How many bytes were needed.
        len: u64,
    },
    /// A table's `length` is below its 36-byte header or above [`MAX_TABLE`].
    TableLength {
        /// Its signature.
        signature: Signature,
        /// Its address.
        addr: u64,
        /// The length it claims.
        len: u32,
    },
    /// A table's bytes do not sum to zero.
    TableChecksum {
        /// Its signature.
        signature: Signature,
        /// Its address.
        addr: u64,
    },
    /// The root table is not the one the RSDP promised.
    WrongSignature {
        /// Its address.
        addr: u64,
        /// "RSDT" or "XSDT".
        expected: Signature,
        /// What is there.
        found: Signature,
    },
    /// The root table's entries are not a whole number of pointers.
    RootEntries {
        /// "RSDT" (4-byte pointers) or "XSDT" (8-byte pointers).
        signature: Signature,
        /// The root table's length.
        len: u32,
    },
    /// A root entry is 0.
    NullEntry,
    /// A root entry points back at the root table.
    SelfReference(u64),
    /// A root entry repeats an earlier one.
    RepeatedEntry(u64),
    /// A second MADT or DMAR: the first listed wins.
    DuplicateTable {
        /// Its signature.
        signature: Signature,
        /// Its address.
        addr: u64,
    },
    /// The MADT is too short for its local APIC address and flags.
    MadtShort(usize),
    /// The MADT's local APIC address is 0 or not 4 KiB aligned.
    MadtLocalApic(u64),
    /// A MADT entry's length is below 2 or runs past the table.
    MadtEntry {
        /// Offset of the entry in the table.
        offset: usize,
        /// Its type.
        kind: u8,
        /// Its length.
        len: u8,
    },
    /// The DMAR is too short for its fixed fields.
    DmarShort(usize),
    /// The DMAR's host address width is outside 32..=64 bits.
    DmarWidth(u16),
    /// A DMAR remapping structure's length is wrong.
    DmarStructure {
        /// Offset of the structure in the table.
        offset: usize,
        /// Its type.
        kind: u16,
        /// Its length.
        len: u16,
        /// What is wrong.
        why: &'static str,
    },
    /// A device scope is malformed.
    DmarScope {
        /// Offset of the scope in the table.
        offset: usize,
        /// What is wrong.
        why: &'static str,
    },
    /// A DRHD's register base is 0 or not 4 KiB aligned.
    DrhdBase(u64),
    /// Two DRHDs claim every remaining device of the same PCI segment.
    DrhdIncludeAll(u16),
    /// An RMRR's range is empty, inverted or not whole 4 KiB pages.
    RmrrRange {
        /// Its first byte.
        base: u64,
        /// Its last byte.
        limit: u64,
    },
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoRsdp => f.write_str("no RSDP in the EBDA or the BIOS area"),
            Self::RsdpTruncated { len, needed } => {
                write!(f, "RSDP has {len} bytes, its revision needs {needed}")
            }
            Self::RsdpSignature => f.write_str("RSDP does not start with \"RSD PTR \""),
            Self::RsdpChecksum => f.write_str("RSDP checksum is wrong"),
            Self::RsdpLength(len) => write!(
                f,
                "RSDP length {len} is outside {RSDP_V2_LEN}..={MAX_RSDP_LEN} or past its bytes"
            ),
            Self::RsdpExtendedChecksum => f.write_str("RSDP extended checksum is wrong"),
            Self::NoRootTable => f.write_str("RSDP names no RSDT or XSDT"),
            Self::Unreadable { addr, len } => {
                write!(f, "{len} bytes at {addr:#x} are outside readable memory")
            }
            Self::TableLength {
                signature,
                addr,
                len,
            } => write!(
                f,
                "{signature} at {addr:#x} has length {len}, outside {SDT_HEADER_LEN}..={MAX_TABLE}"
            ),
            Self::TableChecksum { signature, addr } => {
                write!(f, "{signature} at {addr:#x} has a wrong checksum")
            }
            Self::WrongSignature {
                addr,
                expected,
                found,
            } => write!(f, "expected {expected} at {addr:#x}, found {found}"),
            Self::RootEntries { signature, len } => write!(
                f,
                "{signature} length {len} is not a whole number of pointers"
            ),
            Self::NullEntry => f.write_str("root table entry is 0"),
            Self::SelfReference(addr) => {
                write!(f, "root table entry {addr:#x} points at the root table")
            }
            Self::RepeatedEntry(addr) => write!(f, "root table lists {addr:#x} twice"),
            Self::DuplicateTable { signature, addr } => write!(
                f,
                "second {signature} at {addr:#x} ignored (the first listed wins)"
            ),
            Self::MadtShort(len) => write!(f, "MADT of {len} bytes has no room for its fields"),
            Self::MadtLocalApic(addr) => {
                write!(f, "MADT local APIC address {addr:#x} is 0 or unaligned")
            }
            Self::MadtEntry { offset, kind, len } => write!(
                f,
                "MADT entry type {kind} at offset {offset} has length {len}, outside the table"
            ),
            Self::DmarShort(len) => write!(f, "DMAR of {len} bytes has no room for its fields"),
            Self::DmarWidth(width) => {
                write!(f, "DMAR host address width {width} is outside 32..=64")
            }
            Self::DmarStructure {
                offset,
                kind,
                len,
                why,
            } => write!(
                f,
                "DMAR structure type {kind} at offset {offset} (length {len}): {why}"
            ),
            Self::DmarScope { offset, why } => {
                write!(f, "DMAR device scope at offset {offset}: {why}")
            }
            Self::DrhdBase(base) => {
                write!(f, "DRHD register base {base:#x} is 0 or unaligned")
            }
            Self::DrhdIncludeAll(segment) => {
                write!(f, "two DRHDs include all PCI devices of segment {segment}")
            }
            Self::RmrrRange { base, limit } => write!(
                f,
                "RMRR {base:#x}..={limit:#x} is not a range of whole 4 KiB pages"
            ),
        }
    }
}

fn byte(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}

fn le16(b: &[u8], off: usize) -> Option<u16> {
    let bytes = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes(bytes.try_into().ok()?))
}

fn le32(b: &[u8], off: usize) -> Option<u32> {
    let bytes = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn le64(b: &[u8], off: usize) -> Option<u64> {
    let bytes = b.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

fn array<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}

/// ACPI checksums: all bytes sum to zero modulo 256.
fn sums_to_zero(b: &[u8]) -> bool {
    b.iter().fold(0u8, |sum, &c| sum.wrapping_add(c)) == 0
}

/// Exactly `len` bytes at `addr`, or why not.
fn read_exact<M: Memory + ?Sized>(mem: &M, addr: u64, len: usize) -> Result<&[u8], AcpiError> {
    let unreadable = AcpiError::Unreadable {
        addr,
        len: len as u64,
    };
    addr.checked_add(len as u64).ok_or(unreadable)?;
    mem.read(addr, len)
        .and_then(|b| b.get(..len))
        .ok_or(unreadable)
}

/// The Root System Description Pointer: where the root table is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rsdp {
    /// 0 for ACPI 1.0, 2 for ACPI 2.0 and later.
    pub revision: u8,
    /// The RSDT's address (4-byte table pointers).
    pub rsdt: u32,
    /// The XSDT's address (8-byte table pointers), when revision >= 2 and
    /// it is not 0.
    pub xsdt: Option<u64>,
    /// The firmware vendor.
    pub oem_id: OemId,
    /// Where the search found it; `None` for a copy handed over by the
    /// loader.
    pub found_at: Option<u64>,
}

/// Reads an RSDP copy (a Multiboot2 ACPI tag's body, or bytes at a
/// candidate address): the signature, the 20-byte checksum, and for
/// revision 2 and later the length and the extended checksum. A revision 2
/// RSDP cut to its 20 ACPI 1.0 bytes is refused: its XSDT cannot be checked.
pub fn rsdp_from_bytes(b: &[u8]) -> Result<Rsdp, AcpiError> {
    let v1 = b.get(..RSDP_V1_LEN).ok_or(AcpiError::RsdpTruncated {
        len: b.len(),
        needed: RSDP_V1_LEN,
    })?;
    if v1.get(..RSDP_SIGNATURE.len()) != Some(RSDP_SIGNATURE.as_slice()) {
        return Err(AcpiError::RsdpSignature);
    }
    if !sums_to_zero(v1) {
        return Err(AcpiError::RsdpChecksum);
    }
    let revision = byte(v1, 15).unwrap_or(0);
    let mut rsdp = Rsdp {
        revision,
        rsdt: le32(v1, 16).unwrap_or(0),
        xsdt: None,
        oem_id: OemId(array(v1, 9).unwrap_or_default()),
        found_at: None,
    };
    if revision >= 2 {
        let truncated = AcpiError::RsdpTruncated {
            len: b.len(),
            needed: RSDP_V2_LEN,
        };
        let length = le32(b, 20).ok_or(truncated)?;
        b.get(..RSDP_V2_LEN).ok_or(truncated)?;
        let extended = usize::try_from(length)
            .ok()
            .filter(|len| (RSDP_V2_LEN..=MAX_RSDP_LEN).contains(len))
            .and_then(|len| b.get(..len))
            .ok_or(AcpiError::RsdpLength(length))?;
        if !sums_to_zero(extended) {
            return Err(AcpiError::RsdpExtendedChecksum);
        }
        rsdp.xsdt = le64(b, 24).filter(|&addr| addr != 0);
    }
    Ok(rsdp)
}

/// The legacy BIOS search: the first KiB of the EBDA (its segment is the
/// u16 at 0x40e; skipped when 0 or unreadable), then 0xe0000..0x100000, at
/// 16-byte steps. The first candidate that passes every check wins; a
/// signature whose checks fail is passed over, and its error is returned
/// when no candidate passes (more telling than "not found").
pub fn find_rsdp<M: Memory + ?Sized>(mem: &M) -> Result<Rsdp, AcpiError> {
    let ebda = mem
        .read(EBDA_SEGMENT_PTR, 2)
        .and_then(|b| le16(b, 0))
        .filter(|&segment| segment != 0)
        .map(|segment| u64::from(segment) << 4);
    let areas = ebda
        .map(|start| start..start + EBDA_SEARCH_LEN)
        .into_iter()
        .chain(core::iter::once(BIOS_AREA));
    let mut first_error = None;
    for area in areas {
        let mut addr = area.start;
        while addr < area.end {
            // One read per readable stretch of the area; holes are stepped
            // over 16 bytes at a time.
            let want = usize::try_from(area.end - addr).unwrap_or(0);
            let Some(window) = mem.read(addr, want).filter(|w| !w.is_empty()) else {
                addr += RSDP_ALIGN;
                continue;
            };
            let candidates = (addr..).step_by(RSDP_ALIGN as usize);
            for (at, chunk) in candidates.zip(window.chunks(RSDP_ALIGN as usize)) {
                // One 8-byte compare per candidate: the search is 8 K of them.
                if le64(chunk, 0) != Some(u64::from_le_bytes(*RSDP_SIGNATURE)) {
                    continue;
                }
                let b = mem.read(at, MAX_RSDP_LEN).unwrap_or_default();
                match rsdp_from_bytes(b) {
                    Ok(rsdp) => {
                        return Ok(Rsdp {
                            found_at: Some(at),
                            ..rsdp
                        });
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            addr += (window.len() as u64).next_multiple_of(RSDP_ALIGN);
        }
    }
    Err(first_error.unwrap_or(AcpiError::NoRsdp))
}

/// A table whose header, length and checksum were checked.
struct Table<'m> {
    signature: Signature,
    /// All `length` bytes, header included.
    bytes: &'m [u8],
}

fn read_table<M: Memory + ?Sized>(mem: &M, addr: u64) -> Result<Table<'_>, AcpiError> {
    let header = read_exact(mem, addr, SDT_HEADER_LEN)?;
    let signature = Signature(array(header, 0).unwrap_or_default());
    let len = le32(header, 4).unwrap_or(0);
    if !(SDT_HEADER_LEN as u32..=MAX_TABLE).contains(&len) {
        return Err(AcpiError::TableLength {
            signature,
            addr,
            len,
        });
    }
    let bytes = read_exact(mem, addr, len as usize)?;
    if !sums_to_zero(bytes) {
        return Err(AcpiError::TableChecksum { signature, addr });
    }
    Ok(Table { signature, bytes })
}

/// What the tables say, as far as the hypervisor needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acpi {
    /// "RSDT" or "XSDT": the root table read.
    pub root: Signature,
    /// The root table's revision.
    pub root_revision: u8,
    /// The firmware vendor, from the RSDP.
    pub oem_id: OemId,
    /// The first MADT listed, if one was usable.
    pub madt: Option<Madt>,
    /// The first DMAR listed, if one was usable.
    pub dmar: Option<Dmar>,
    /// Signatures of the tables whose header and checksum were sound, in
    /// root order (for the boot log).
    pub tables: BoundedList<Signature, MAX_TABLES>,
    /// Root entries past [`MAX_TABLES`], not looked at.
    pub tables_ignored: u32,
    /// Tables refused (see the module comment).
    pub rejected: u32,
    /// Why the first refused table was refused.
    pub first_rejection: Option<AcpiError>,
}

impl Acpi {
    fn reject(&mut self, why: AcpiError) {
        self.rejected = self.rejected.saturating_add(1);
        self.first_rejection.get_or_insert(why);
    }
}

/// Reads the root table `rsdp` names (the XSDT when there is one, else the
/// RSDT) and the tables it lists: the MADT and DMAR are parsed, the others
/// only checked and named. Errors only when the root table itself is
/// unusable; a bad table is counted in [`Acpi::rejected`].
pub fn parse<M: Memory + ?Sized>(mem: &M, rsdp: &Rsdp) -> Result<Acpi, AcpiError> {
    let (root_addr, expected, pointer_len) = match rsdp.xsdt {
        Some(addr) => (addr, XSDT, 8),
        None => (u64::from(rsdp.rsdt), RSDT, 4),
    };
    if root_addr == 0 {
        return Err(AcpiError::NoRootTable);
    }
    let root = read_table(mem, root_addr)?;
    if root.signature != expected {
        return Err(AcpiError::WrongSignature {
            addr: root_addr,
            expected,
            found: root.signature,
        });
    }
    let entries = root.bytes.get(SDT_HEADER_LEN..).unwrap_or_default();
    if !entries.len().is_multiple_of(pointer_len) {
        return Err(AcpiError::RootEntries {
            signature: expected,
            len: root.bytes.len() as u32,
        });
    }
    let mut acpi = Acpi {
        root: expected,
        root_revision: byte(root.bytes, 8).unwrap_or(0),
        oem_id: rsdp.oem_id,
        madt: None,
        dmar: None,
        tables: BoundedList::new(),
        tables_ignored: 0,
        rejected: 0,
        first_rejection: None,
    };
    let mut visited = BoundedList::<u64, MAX_TABLES>::new();
    for (index, entry) in entries.chunks_exact(pointer_len).enumerate() {
        if index >= MAX_TABLES {
            acpi.tables_ignored = acpi.tables_ignored.saturating_add(1);
            continue;
        }
        let addr = match *entry {
            [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
            _ => le64(entry, 0).unwrap_or(0),
        };
        let seen_before = visited.contains(&addr);
        visited.push(addr);
        let outcome = if addr == 0 {
            Err(AcpiError::NullEntry)
        } else if addr == root_addr {
            Err(AcpiError::SelfReference(addr))
        } else if seen_before {
            Err(AcpiError::RepeatedEntry(addr))
        } else {
            read_listed_table(mem, addr, &mut acpi)
        };
        if let Err(why) = outcome {
            acpi.reject(why);
        }
    }
    Ok(acpi)
}

/// Reads the table at `addr` into `acpi`.
fn read_listed_table<M: Memory + ?Sized>(
    mem: &M,
    addr: u64,
    acpi: &mut Acpi,
) -> Result<(), AcpiError> {
    let table = read_table(mem, addr)?;
    acpi.tables.push(table.signature);
    let duplicate = AcpiError::DuplicateTable {
        signature: table.signature,
        addr,
    };
    match table.signature {
        MADT if acpi.madt.is_some() => return Err(duplicate),
        MADT => acpi.madt = Some(parse_madt(table.bytes)?),
        DMAR if acpi.dmar.is_some() => return Err(duplicate),
        DMAR => acpi.dmar = Some(parse_dmar(table.bytes)?),
        _ => {}
    }
    Ok(())
}

/// A CPU's local APIC, from a MADT type 0 (xAPIC) or type 9 (x2APIC) entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cpu {
    /// The ACPI processor UID (matches the namespace's processor objects).
    pub uid: u32,
    /// Its local APIC id.
    pub apic_id: u32,
    /// Usable now.
    pub enabled: bool,
    /// Not enabled but may be brought online later (ACPI 6.3).
    pub online_capable: bool,
    /// From an x2APIC entry.
    pub x2apic: bool,
}

/// An I/O APIC, from a MADT type 1 entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoApic {
    /// Its I/O APIC id.
    pub id: u8,
    /// Its register window.
    pub address: u32,
    /// The global system interrupt of its first pin.
    pub gsi_base: u32,
}

/// An interrupt input's polarity (MPS INTI flags, bits 1:0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Polarity {
    /// As the bus defines it (ISA: active high).
    #[default]
    BusDefault,
    /// Active high.
    High,
    /// Active low.
    Low,
}

/// An interrupt input's trigger mode (MPS INTI flags, bits 3:2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Trigger {
    /// As the bus defines it (ISA: edge).
    #[default]
    BusDefault,
    /// Edge triggered.
    Edge,
    /// Level triggered.
    Level,
}

/// Polarity and trigger from MPS INTI flags; `None` for the reserved
/// encodings.
fn inti_flags(flags: u16) -> Option<(Polarity, Trigger)> {
    let polarity = match flags & 3 {
        0 => Polarity::BusDefault,
        1 => Polarity::High,
        3 => Polarity::Low,
        _ => return None,
    };
    let trigger = match (flags >> 2) & 3 {
        0 => Trigger::BusDefault,
        1 => Trigger::Edge,
        3 => Trigger::Level,
        _ => return None,
    };
    Some((polarity, trigger))
}

/// An ISA IRQ wired to another GSI or with other signalling, from a MADT
/// type 2 entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceOverride {
    /// The ISA IRQ (0..16).
    pub irq: u8,
    /// The global system interrupt it arrives on.
    pub gsi: u32,
    /// Its polarity.
    pub polarity: Polarity,
    /// Its trigger mode.
    pub trigger: Trigger,
}

/// Which local APIC input carries NMI, from a MADT type 4 or 10 entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalNmi {
    /// The CPU's ACPI processor UID; `None` for every CPU.
    pub uid: Option<u32>,
    /// LINT0 or LINT1.
    pub lint: u8,
    /// Its polarity.
    pub polarity: Polarity,
    /// Its trigger mode.
    pub trigger: Trigger,
}

/// The Multiple APIC Description Table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Madt {
    /// The local APICs' physical address (type 5 overrides the 32-bit
    /// field).
    pub local_apic_address: u64,
    /// The machine also has dual 8259 PICs (which must be masked).
    pub pc_at_compat: bool,
    /// CPUs in table order.
    pub cpus: BoundedList<Cpu, MAX_CPUS>,
    /// I/O APICs.
    pub io_apics: BoundedList<IoApic, MAX_IO_APICS>,
    /// Interrupt source overrides, at most one per IRQ.
    pub overrides: BoundedList<SourceOverride, MAX_OVERRIDES>,
    /// Local APIC NMI inputs.
    pub local_nmis: BoundedList<LocalNmi, MAX_LOCAL_NMIS>,
    /// CPUs past [`MAX_CPUS`].
    pub cpus_dropped: u32,
    /// I/O APICs past [`MAX_IO_APICS`].
    pub io_apics_dropped: u32,
    /// Overrides past [`MAX_OVERRIDES`] (kept for symmetry: one per ISA IRQ
    /// always fits).
    pub overrides_dropped: u32,
    /// NMI entries past [`MAX_LOCAL_NMIS`].
    pub local_nmis_dropped: u32,
    /// Known entries skipped because their fields cannot be right.
    pub rejected: u32,
    /// Entries of types not read here, skipped by their length.
    pub skipped: u32,
}

impl Madt {
    fn new(local_apic_address: u64, pc_at_compat: bool) -> Self {
        Self {
            local_apic_address,
            pc_at_compat,
            cpus: BoundedList::new(),
            io_apics: BoundedList::new(),
            overrides: BoundedList::new(),
            local_nmis: BoundedList::new(),
            cpus_dropped: 0,
            io_apics_dropped: 0,
            overrides_dropped: 0,
            local_nmis_dropped: 0,
            rejected: 0,
            skipped: 0,
        }
    }
}

/// Counts one more, without overflow.
fn bump(count: &mut u32) {
    *count = count.saturating_add(1);
}

/// Walks the MADT's entries. A length that cannot be followed refuses the
/// table; an entry of sound length whose fields are wrong is skipped and
/// counted.
fn parse_madt(table: &[u8]) -> Result<Madt, AcpiError> {
    let (Some(lapic), Some(flags)) = (le32(table, 36), le32(table, 40)) else {
        return Err(AcpiError::MadtShort(table.len()));
    };
    if lapic == 0 || u64::from(lapic) & PAGE_MASK != 0 {
        return Err(AcpiError::MadtLocalApic(lapic.into()));
    }
    let mut madt = Madt::new(lapic.into(), flags & MADT_PCAT_COMPAT != 0);
    let mut address_overridden = false;
    let mut offset = MADT_ENTRIES;
    while offset < table.len() {
        let kind = byte(table, offset).unwrap_or(0);
        let len = byte(table, offset + 1).unwrap_or(0);
        let entry = offset
            .checked_add(usize::from(len))
            .filter(|_| len >= 2)
            .and_then(|end| table.get(offset..end))
            .ok_or(AcpiError::MadtEntry { offset, kind, len })?;
        let kept = match kind {
            MADT_LOCAL_APIC => local_apic(entry).map(|cpu| add_cpu(&mut madt, cpu)),
            MADT_LOCAL_X2APIC => local_x2apic(entry).map(|cpu| add_cpu(&mut madt, cpu)),
            MADT_IO_APIC => io_apic(entry).map(|io| {
                if !madt.io_apics.push(io) {
                    bump(&mut madt.io_apics_dropped);
                }
                true
            }),
            MADT_SOURCE_OVERRIDE => source_override(entry).map(|o| add_override(&mut madt, o)),
            MADT_LOCAL_APIC_NMI | MADT_LOCAL_X2APIC_NMI => local_nmi(entry).map(|nmi| {
                if !madt.local_nmis.push(nmi) {
                    bump(&mut madt.local_nmis_dropped);
                }
                true
            }),
            MADT_LOCAL_APIC_ADDRESS => {
                let address = le64(entry, 4).filter(|&a| a != 0 && a & PAGE_MASK == 0);
                // Only one override may exist; the first wins.
                Some(match address {
                    Some(a) if !address_overridden => {
                        madt.local_apic_address = a;
                        address_overridden = true;
                        true
                    }
                    _ => false,
                })
            }
            _ => {
                bump(&mut madt.skipped);
                Some(true)
            }
        };
        if kept != Some(true) {
            bump(&mut madt.rejected);
        }
        offset += usize::from(len);
    }
    Ok(madt)
}

/// Type 0: UID, APIC id, flags.
fn local_apic(entry: &[u8]) -> Option<Cpu> {
    let flags = le32(entry, 4)?;
    Some(Cpu {
        uid: byte(entry, 2)?.into(),
        apic_id: u32::from(byte(entry, 3)?),
        enabled: flags & CPU_ENABLED != 0,
        online_capable: flags & CPU_ONLINE_CAPABLE != 0,
        x2apic: false,
    })
    .filter(|cpu| cpu.apic_id != XAPIC_BROADCAST)
}

/// Type 9: reserved, x2APIC id, flags, UID.
fn local_x2apic(entry: &[u8]) -> Option<Cpu> {
    let flags = le32(entry, 8)?;
    Some(Cpu {
        uid: le32(entry, 12)?,
        apic_id: le32(entry, 4)?,
        enabled: flags & CPU_ENABLED != 0,
        online_capable: flags & CPU_ONLINE_CAPABLE != 0,
        x2apic: true,
    })
    .filter(|cpu| cpu.apic_id != X2APIC_BROADCAST)
}

/// Keeps `cpu` unless its APIC id is already taken (false: rejected).
fn add_cpu(madt: &mut Madt, cpu: Cpu) -> bool {
    if madt.cpus.iter().any(|c| c.apic_id == cpu.apic_id) {
        return false;
    }
    if !madt.cpus.push(cpu) {
        bump(&mut madt.cpus_dropped);
    }
    true
}

/// Type 1: id, reserved, address, GSI base.
fn io_apic(entry: &[u8]) -> Option<IoApic> {
    Some(IoApic {
        id: byte(entry, 2)?,
        address: le32(entry, 4)?,
        gsi_base: le32(entry, 8)?,
    })
    .filter(|io| io.address != 0)
}

/// Type 2: bus (ISA), IRQ, GSI, INTI flags.
fn source_override(entry: &[u8]) -> Option<SourceOverride> {
    let bus = byte(entry, 2)?;
    let irq = byte(entry, 3)?;
    let gsi = le32(entry, 4)?;
    let (polarity, trigger) = inti_flags(le16(entry, 8)?)?;
    (bus == ISA_BUS && irq < ISA_IRQS).then_some(SourceOverride {
        irq,
        gsi,
        polarity,
        trigger,
    })
}

/// Keeps `o` unless its IRQ already has one (false: rejected).
fn add_override(madt: &mut Madt, o: SourceOverride) -> bool {
    if madt.overrides.iter().any(|k| k.irq == o.irq) {
        return false;
    }
    if !madt.overrides.push(o) {
        bump(&mut madt.overrides_dropped);
    }
    true
}

/// Type 4 (UID u8, flags, LINT) or type 10 (flags, UID u32, LINT).
fn local_nmi(entry: &[u8]) -> Option<LocalNmi> {
    let (uid, flags, lint) = if byte(entry, 0)? == MADT_LOCAL_APIC_NMI {
        let uid = byte(entry, 2)?;
        (
            (uid != 0xff).then_some(u32::from(uid)),
            le16(entry, 3)?,
            byte(entry, 5)?,
        )
    } else {
        let uid = le32(entry, 4)?;
        (
            (uid != u32::MAX).then_some(uid),
            le16(entry, 2)?,
            byte(entry, 8)?,
        )
    };
    let (polarity, trigger) = inti_flags(flags)?;
    (lint <= 1).then_some(LocalNmi {
        uid,
        lint,
        polarity,
        trigger,
    })
}

/// What a device scope names (VT-d device scope types 1 to 5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScopeKind {
    /// A PCI endpoint.
    #[default]
    Endpoint,
    /// A PCI bridge and everything below it.
    Bridge,
    /// An I/O APIC (enumeration id: its APIC id).
    IoApic,
    /// An MSI-capable HPET (enumeration id: its number).
    Hpet,
    /// An ACPI namespace device (enumeration id: its ANDD number).
    AcpiDevice,
    /// A type this module does not know.
    Other(u8),
}

impl ScopeKind {
    fn from_type(kind: u8) -> Self {
        match kind {
            1 => Self::Endpoint,
            2 => Self::Bridge,
            3 => Self::IoApic,
            4 => Self::Hpet,
            5 => Self::AcpiDevice,
            other => Self::Other(other),
        }
    }
}

/// One hop of a device scope path: a device and function on the bus the
/// previous hop's bridge leads to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PciHop {
    /// 0..32.
    pub device: u8,
    /// 0..8.
    pub function: u8,
}

/// A device a remapping structure applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceScope {
    /// What it is.
    pub kind: ScopeKind,
    /// The I/O APIC id, HPET number or ANDD number, by kind.
    pub enumeration_id: u8,
    /// The bus the path starts on.
    pub start_bus: u8,
    /// Device and function at each bridge down to the device (at least one
    /// hop).
    pub path: BoundedList<PciHop, MAX_PATH>,
}

/// A DMA remapping hardware unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drhd {
    /// It covers every device of its segment not listed under another
    /// unit.
    pub include_pci_all: bool,
    /// The PCI segment.
    pub segment: u16,
    /// Its register set's physical address (4 KiB aligned).
    pub register_base: u64,
    /// Its register set's size in 4 KiB pages (2 ^ the size field).
    pub register_pages: u32,
    /// The devices it covers, when not `include_pci_all` (for it: the
    /// I/O APICs and HPETs on the segment).
    pub scopes: BoundedList<DeviceScope, MAX_DRHD_SCOPES>,
    /// Scopes past [`MAX_DRHD_SCOPES`] or with paths past [`MAX_PATH`].
    pub scopes_dropped: u32,
}

/// Memory some devices' firmware uses for DMA and must stay identity mapped
/// for them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rmrr {
    /// The PCI segment.
    pub segment: u16,
    /// First byte (4 KiB aligned).
    pub base: u64,
    /// Last byte (inclusive; the byte before a 4 KiB boundary).
    pub limit: u64,
    /// The devices that use it.
    pub scopes: BoundedList<DeviceScope, MAX_SCOPES>,
    /// Scopes past [`MAX_SCOPES`] or with paths past [`MAX_PATH`].
    pub scopes_dropped: u32,
}

/// Root ports whose devices may use Address Translation Services.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Atsr {
    /// Every root port of the segment.
    pub all_ports: bool,
    /// The PCI segment.
    pub segment: u16,
    /// The root ports, when not `all_ports`.
    pub scopes: BoundedList<DeviceScope, MAX_SCOPES>,
    /// Scopes past [`MAX_SCOPES`] or with paths past [`MAX_PATH`].
    pub scopes_dropped: u32,
}

/// The DMA Remapping Reporting table (Intel VT-d).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dmar {
    /// Bits of DMA address the units handle.
    pub host_address_width: u8,
    /// The platform supports interrupt remapping.
    pub interrupt_remapping: bool,
    /// Firmware asks that x2APIC mode not be used.
    pub x2apic_opt_out: bool,
    /// Firmware asks that DMA protection be set up before devices run.
    pub dma_ctrl_opt_in: bool,
    /// Hardware units in table order.
    pub drhds: BoundedList<Drhd, MAX_DRHDS>,
    /// Reserved memory regions.
    pub rmrrs: BoundedList<Rmrr, MAX_RMRRS>,
    /// ATS root port entries.
    pub atsrs: BoundedList<Atsr, MAX_ATSRS>,
    /// Units past [`MAX_DRHDS`].
    pub drhds_dropped: u32,
    /// Regions past [`MAX_RMRRS`].
    pub rmrrs_dropped: u32,
    /// Entries past [`MAX_ATSRS`].
    pub atsrs_dropped: u32,
    /// Structures of types not read here (RHSA, ANDD, SATC, ...), skipped
    /// by their length.
    pub skipped: u32,
}

impl Dmar {
    /// Everything the table lists was kept. DMA remapping must not be
    /// enabled from an incomplete picture: an unkept unit's devices would
    /// go unprotected, an unkept region's devices would fault.
    pub fn complete(&self) -> bool {
        self.drhds_dropped == 0
            && self.rmrrs_dropped == 0
            && self.atsrs_dropped == 0
            && self.drhds.iter().all(|d| d.scopes_dropped == 0)
            && self.rmrrs.iter().all(|r| r.scopes_dropped == 0)
            && self.atsrs.iter().all(|a| a.scopes_dropped == 0)
    }
}

/// Walks the DMAR's remapping structures; anything malformed refuses it.
fn parse_dmar(table: &[u8]) -> Result<Dmar, AcpiError> {
    if table.len() < DMAR_STRUCTURES {
        return Err(AcpiError::DmarShort(table.len()));
    }
    let width = u16::from(byte(table, 36).unwrap_or(0)) + 1;
    if !DMAR_WIDTHS.contains(&width) {
        return Err(AcpiError::DmarWidth(width));
    }
    let flags = byte(table, 37).unwrap_or(0);
    let mut dmar = Dmar {
        host_address_width: width as u8,
        interrupt_remapping: flags & DMAR_INTR_REMAP != 0,
        x2apic_opt_out: flags & DMAR_X2APIC_OPT_OUT != 0,
        dma_ctrl_opt_in: flags & DMAR_DMA_CTRL_OPT_IN != 0,
        drhds: BoundedList::new(),
        rmrrs: BoundedList::new(),
        atsrs: BoundedList::new(),
        drhds_dropped: 0,
        rmrrs_dropped: 0,
        atsrs_dropped: 0,
        skipped: 0,
    };
    let mut offset = DMAR_STRUCTURES;
    while offset < table.len() {
        let kind = le16(table, offset).unwrap_or(0);
        let len = le16(table, offset + 2).unwrap_or(0);
        let bad = |why| AcpiError::DmarStructure {
            offset,
            kind,
            len,
            why,
        };
        let s = offset
            .checked_add(usize::from(len))
            .filter(|_| len >= 4)
            .and_then(|end| table.get(offset..end))
            .ok_or(bad("below 4 bytes or past the table"))?;
        let short = bad("too short for its fields");
        match kind {
            DMAR_DRHD => {
                let scopes = s.get(DRHD_SCOPES..).ok_or(short)?;
                let drhd = drhd(s, scopes, offset)?;
                if drhd.include_pci_all
                    && dmar
                        .drhds
                        .iter()
                        .any(|d| d.include_pci_all && d.segment == drhd.segment)
                {
                    return Err(AcpiError::DrhdIncludeAll(drhd.segment));
                }
                if !dmar.drhds.push(drhd) {
                    bump(&mut dmar.drhds_dropped);
                }
            }
            DMAR_RMRR => {
                let scopes = s.get(RMRR_SCOPES..).ok_or(short)?;
                if !dmar.rmrrs.push(rmrr(s, scopes, offset)?) {
                    bump(&mut dmar.rmrrs_dropped);
                }
            }
            DMAR_ATSR => {
                let scopes = s.get(ATSR_SCOPES..).ok_or(short)?;
                let mut atsr = Atsr {
                    all_ports: byte(s, 4).unwrap_or(0) & ATSR_ALL_PORTS != 0,
                    segment: le16(s, 6).unwrap_or(0),
                    ..Atsr::default()
                };
                device_scopes(
                    scopes,
                    offset + ATSR_SCOPES,
                    &mut atsr.scopes,
                    &mut atsr.scopes_dropped,
                )?;
                if !dmar.atsrs.push(atsr) {
                    bump(&mut dmar.atsrs_dropped);
                }
            }
            _ => bump(&mut dmar.skipped),
        }
        offset += usize::from(len);
    }
    Ok(dmar)
}

/// A DRHD `s` at `offset`: flags, size, segment, register base, scopes.
fn drhd(s: &[u8], scopes: &[u8], offset: usize) -> Result<Drhd, AcpiError> {
    let register_base = le64(s, 8).unwrap_or(0);
    if register_base == 0 || register_base & PAGE_MASK != 0 {
        return Err(AcpiError::DrhdBase(register_base));
    }
    let mut drhd = Drhd {
        include_pci_all: byte(s, 4).unwrap_or(0) & DRHD_INCLUDE_PCI_ALL != 0,
        segment: le16(s, 6).unwrap_or(0),
        register_base,
        register_pages: 1 << (byte(s, 5).unwrap_or(0) & 0xf),
        ..Drhd::default()
    };
    device_scopes(
        scopes,
        offset + DRHD_SCOPES,
        &mut drhd.scopes,
        &mut drhd.scopes_dropped,
    )?;
    Ok(drhd)
}

/// An RMRR `s` at `offset`: reserved, segment, base, limit, scopes.
fn rmrr(s: &[u8], scopes: &[u8], offset: usize) -> Result<Rmrr, AcpiError> {
    let base = le64(s, 8).unwrap_or(0);
    let limit = le64(s, 16).unwrap_or(0);
    if base > limit || base & PAGE_MASK != 0 || limit & PAGE_MASK != PAGE_MASK {
        return Err(AcpiError::RmrrRange { base, limit });
    }
    let mut rmrr = Rmrr {
        segment: le16(s, 6).unwrap_or(0),
        base,
        limit,
        ..Rmrr::default()
    };
    device_scopes(
        scopes,
        offset + RMRR_SCOPES,
        &mut rmrr.scopes,
        &mut rmrr.scopes_dropped,
    )?;
    Ok(rmrr)
}

/// The device scopes filling `b` (at table offset `offset`) exactly. Scopes
/// past `N`, or with paths past [`MAX_PATH`], are counted in `dropped`.
fn device_scopes<const N: usize>(
    b: &[u8],
    offset: usize,
    into: &mut BoundedList<DeviceScope, N>,
    dropped: &mut u32,
) -> Result<(), AcpiError> {
    let mut at = 0;
    while at < b.len() {
        let bad = |why| AcpiError::DmarScope {
            offset: offset + at,
            why,
        };
        let len = usize::from(byte(b, at + 1).ok_or(bad("header past its structure"))?);
        let scope = at
            .checked_add(len)
            .and_then(|end| b.get(at..end))
            .ok_or(bad("runs past its structure"))?;
        let path = scope.get(SCOPE_PATH..).ok_or(bad("shorter than 6 bytes"))?;
        if path.is_empty() || !path.len().is_multiple_of(2) {
            return Err(bad("path is not a whole number of hops"));
        }
        let mut kept = DeviceScope {
            kind: ScopeKind::from_type(byte(scope, 0).unwrap_or(0)),
            enumeration_id: byte(scope, 4).unwrap_or(0),
            start_bus: byte(scope, 5).unwrap_or(0),
            path: BoundedList::new(),
        };
        let mut fits = true;
        for &[device, function] in path.as_chunks::<2>().0 {
            if device >= 32 || function >= 8 {
                return Err(bad("device or function out of range"));
            }
            fits &= kept.path.push(PciHop { device, function });
        }
        if !(fits && into.push(kept)) {
            bump(dropped);
        }
        at += len;
    }
    Ok(())
}

/// At most this many APIC ids go into the log line.
const LOGGED_APIC_IDS: usize = 8;

impl fmt::Display for Madt {
    /// One line: CPUs, I/O APICs, overrides, local APIC address.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpus = self.cpus.len();
        let enabled = self.cpus.iter().filter(|c| c.enabled).count();
        write!(f, "{cpus} CPU{} ({enabled} enabled; APIC ids", plural(cpus))?;
        for cpu in self.cpus.iter().take(LOGGED_APIC_IDS) {
            write!(f, " {}", cpu.apic_id)?;
        }
        if cpus > LOGGED_APIC_IDS {
            f.write_str(" ...")?;
        }
        f.write_str(")")?;
        let ios = self.io_apics.len();
        write!(f, ", {ios} I/O APIC{}", plural(ios))?;
        for io in self.io_apics.iter() {
            write!(f, " at {:#x} GSI base {}", io.address, io.gsi_base)?;
        }
        let overrides = self.overrides.len();
        write!(
            f,
            ", {overrides} override{}, local APIC at {:#x}",
            plural(overrides),
            self.local_apic_address
        )?;
        let dropped = u64::from(self.cpus_dropped)
            + u64::from(self.io_apics_dropped)
            + u64::from(self.overrides_dropped)
            + u64::from(self.local_nmis_dropped);
        if dropped > 0 {
            write!(f, "; {dropped} entries not kept (capacity)")?;
        }
        if self.rejected > 0 {
            write!(f, "; {} entries rejected", self.rejected)?;
        }
        Ok(())
    }
}

impl fmt::Display for Dmar {
    /// One line: width, flags, units, regions.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host address width {}", self.host_address_width)?;
        if self.interrupt_remapping {
            f.write_str(", interrupt remapping")?;
        }
        if self.x2apic_opt_out {
            f.write_str(", x2APIC opt-out")?;
        }
        let units = self.drhds.len();
        write!(f, ", {units} DRHD{}", plural(units))?;
        for d in self.drhds.iter() {
            write!(f, " {:#x}", d.register_base)?;
            if d.include_pci_all {
                f.write_str(" (all PCI)")?;
            }
        }
        let regions = self.rmrrs.len();
        write!(f, ", {regions} RMRR{}", plural(regions))?;
        for r in self.rmrrs.iter() {
            write!(f, " {:#x}..={:#x}", r.base, r.limit)?;
        }
        if !self.complete() {
            f.write_str("; INCOMPLETE (capacity)")?;
        }
        Ok(())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl fmt::Display for Acpi {
    /// Three log lines (separated by '\n', none after the last): the
    /// tables, the MADT, the DMAR.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acpi: {} rev {} ({}), tables",
            self.root, self.root_revision, self.oem_id
        )?;
        for signature in self.tables.iter() {
            write!(f, " {signature}")?;
        }
        if self.tables_ignored > 0 {
            write!(f, " (+{} not looked at)", self.tables_ignored)?;
        }
        if let Some(why) = self.first_rejection {
            write!(f, "; {} rejected, first: {why}", self.rejected)?;
        }
        match &self.madt {
            Some(madt) => write!(f, "\nacpi: {madt}")?,
            None => f.write_str("\nacpi: no MADT")?,
        }
        match &self.dmar {
            Some(dmar) => write!(f, "\ndmar: {dmar}"),
            None => f.write_str("\ndmar: none"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Physical memory made of separate regions; anything else unreadable.
    struct FakeMemory {
        regions: Vec<(u64, Vec<u8>)>,
    }

    impl FakeMemory {
        fn poke(&mut self, addr: u64, bytes: &[u8]) {
            let (base, region) = self
                .regions
                .iter_mut()
                .find(|(base, r)| addr >= *base && addr - *base < r.len() as u64)
                .expect("poke inside a region");
            let off = (addr - *base) as usize;
            region[off..off + bytes.len()].copy_from_slice(bytes);
        }
    }

    impl Memory for FakeMemory {
        fn read(&self, addr: u64, max: usize) -> Option<&[u8]> {
            self.regions.iter().find_map(|(base, r)| {
                let off = usize::try_from(addr.checked_sub(*base)?).ok()?;
                let rest = r.get(off..).filter(|rest| !rest.is_empty())?;
                Some(&rest[..rest.len().min(max)])
            })
        }
    }

    const EBDA_SEGMENT: u16 = 0x9fc0;
    const EBDA: u64 = 0x9_fc00;
    const TABLES: u64 = 0x7fe_0000;
    const FACP_AT: u64 = TABLES + 0x1000;
    const MADT_AT: u64 = TABLES + 0x2000;
    const HPET_AT: u64 = TABLES + 0x3000;
    const MCFG_AT: u64 = TABLES + 0x4000;
    const DMAR_AT: u64 = TABLES + 0x5000;
    const RSDT_AT: u64 = TABLES + 0xf000;
    /// Index of the MADT in both layouts' `tables`.
    const MADT_INDEX: usize = 1;
    /// Index of the DMAR in the q35 layout's `tables`.
    const DMAR_INDEX: usize = 4;

    /// Makes a table's bytes sum to zero by setting the byte at `at`.
    fn fix_checksum(t: &mut [u8], at: usize, len: usize) {
        t[at] = 0;
        let sum = t[..len].iter().fold(0u8, |s, &c| s.wrapping_add(c));
        t[at] = sum.wrapping_neg();
    }

    fn fix_table(t: &mut [u8]) {
        let len = t.len();
        fix_checksum(t, 9, len);
    }

    fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
        let mut t = signature.to_vec();
        t.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
        t.extend_from_slice(&[revision, 0]);
        t.extend_from_slice(b"BOCHS BXPC    ");
        t.extend_from_slice(&1u32.to_le_bytes());
        t.extend_from_slice(b"BXPC");
        t.extend_from_slice(&1u32.to_le_bytes());
        t.extend_from_slice(body);
        let len = t.len();
        fix_checksum(&mut t, 9, len);
        t
    }

    fn rsdt(addrs: &[u64]) -> Vec<u8> {
        let body: Vec<u8> = addrs
            .iter()
            .flat_map(|&a| (a as u32).to_le_bytes())
            .collect();
        sdt(b"RSDT", 1, &body)
    }

    fn xsdt(addrs: &[u64]) -> Vec<u8> {
        let body: Vec<u8> = addrs.iter().flat_map(|&a| a.to_le_bytes()).collect();
        sdt(b"XSDT", 1, &body)
    }

    fn rsdp_v1(rsdt: u64) -> Vec<u8> {
        let mut r = b"RSD PTR ".to_vec();
        r.push(0);
        r.extend_from_slice(b"BOCHS ");
        r.push(0);
        r.extend_from_slice(&(rsdt as u32).to_le_bytes());
        fix_checksum(&mut r, 8, 20);
        r
    }

    fn rsdp_v2(rsdt: u64, xsdt: u64) -> Vec<u8> {
        let mut r = rsdp_v1(rsdt);
        r[15] = 2;
        r.extend_from_slice(&36u32.to_le_bytes());
        r.extend_from_slice(&xsdt.to_le_bytes());
        r.extend_from_slice(&[0; 4]);
        fix_checksum(&mut r, 8, 20);
        fix_checksum(&mut r, 32, 36);
        r
    }

    fn lapic(uid: u8, id: u8, flags: u32) -> Vec<u8> {
        let mut e = vec![MADT_LOCAL_APIC, 8, uid, id];
        e.extend_from_slice(&flags.to_le_bytes());
        e
    }

    fn x2apic(id: u32, flags: u32, uid: u32) -> Vec<u8> {
        let mut e = vec![MADT_LOCAL_X2APIC, 16, 0, 0];
        e.extend_from_slice(&id.to_le_bytes());
        e.extend_from_slice(&flags.to_le_bytes());
        e.extend_from_slice(&uid.to_le_bytes());
        e
    }

    fn ioapic(id: u8, address: u32, gsi_base: u32) -> Vec<u8> {
        let mut e = vec![MADT_IO_APIC, 12, id, 0];
        e.extend_from_slice(&address.to_le_bytes());
        e.extend_from_slice(&gsi_base.to_le_bytes());
        e
    }

    fn iso(bus: u8, irq: u8, gsi: u32, flags: u16) -> Vec<u8> {
        let mut e = vec![MADT_SOURCE_OVERRIDE, 10, bus, irq];
        e.extend_from_slice(&gsi.to_le_bytes());
        e.extend_from_slice(&flags.to_le_bytes());
        e
    }

    fn nmi(uid: u8, flags: u16, lint: u8) -> Vec<u8> {
        let mut e = vec![MADT_LOCAL_APIC_NMI, 6, uid];
        e.extend_from_slice(&flags.to_le_bytes());
        e.push(lint);
        e
    }

    fn x2nmi(flags: u16, uid: u32, lint: u8) -> Vec<u8> {
        let mut e = vec![MADT_LOCAL_X2APIC_NMI, 12];
        e.extend_from_slice(&flags.to_le_bytes());
        e.extend_from_slice(&uid.to_le_bytes());
        e.extend_from_slice(&[lint, 0, 0, 0]);
        e
    }

    fn lapic_address(addr: u64) -> Vec<u8> {
        let mut e = vec![MADT_LOCAL_APIC_ADDRESS, 12, 0, 0];
        e.extend_from_slice(&addr.to_le_bytes());
        e
    }

    fn madt(lapic: u32, flags: u32, entries: &[Vec<u8>]) -> Vec<u8> {
        let mut body = lapic.to_le_bytes().to_vec();
        body.extend_from_slice(&flags.to_le_bytes());
        for e in entries {
            body.extend_from_slice(e);
        }
        sdt(b"APIC", 3, &body)
    }

    fn scope(kind: u8, enumeration_id: u8, bus: u8, path: &[(u8, u8)]) -> Vec<u8> {
        let mut s = vec![kind, (6 + 2 * path.len()) as u8, 0, 0, enumeration_id, bus];
        for &(d, f) in path {
            s.extend_from_slice(&[d, f]);
        }
        s
    }

    fn structure(kind: u16, fixed: &[u8], scopes: &[Vec<u8>]) -> Vec<u8> {
        let mut s = kind.to_le_bytes().to_vec();
        let len = 4 + fixed.len() + scopes.iter().map(Vec::len).sum::<usize>();
        s.extend_from_slice(&(len as u16).to_le_bytes());
        s.extend_from_slice(fixed);
        for sc in scopes {
            s.extend_from_slice(sc);
        }
        s
    }

    fn drhd(flags: u8, segment: u16, base: u64, scopes: &[Vec<u8>]) -> Vec<u8> {
        let mut fixed = vec![flags, 0];
        fixed.extend_from_slice(&segment.to_le_bytes());
        fixed.extend_from_slice(&base.to_le_bytes());
        structure(DMAR_DRHD, &fixed, scopes)
    }

    fn rmrr(segment: u16, base: u64, limit: u64, scopes: &[Vec<u8>]) -> Vec<u8> {
        let mut fixed = vec![0, 0];
        fixed.extend_from_slice(&segment.to_le_bytes());
        fixed.extend_from_slice(&base.to_le_bytes());
        fixed.extend_from_slice(&limit.to_le_bytes());
        structure(DMAR_RMRR, &fixed, scopes)
    }

    fn atsr(flags: u8, segment: u16, scopes: &[Vec<u8>]) -> Vec<u8> {
        let mut fixed = vec![flags, 0];
        fixed.extend_from_slice(&segment.to_le_bytes());
        structure(DMAR_ATSR, &fixed, scopes)
    }

    fn dmar(width_field: u8, flags: u8, structures: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![width_field, flags];
        body.extend_from_slice(&[0; 10]);
        for s in structures {
            body.extend_from_slice(s);
        }
        sdt(b"DMAR", 1, &body)
    }

    /// Where everything goes: the EBDA segment word, the RSDP, the root
    /// table, the other tables.
    #[derive(Clone)]
    struct Layout {
        ebda_segment: u16,
        rsdp_at: u64,
        rsdp: Vec<u8>,
        root_at: u64,
        root: Vec<u8>,
        tables: Vec<(u64, Vec<u8>)>,
    }

    impl Layout {
        /// Low RAM below 640 KiB, the BIOS area, and 64 KiB of tables.
        fn memory(&self) -> FakeMemory {
            let mut mem = FakeMemory {
                regions: vec![
                    (0, vec![0; 0xa_0000]),
                    (BIOS_AREA.start, vec![0; 0x2_0000]),
                    (TABLES, vec![0; 0x1_0000]),
                ],
            };
            mem.poke(EBDA_SEGMENT_PTR, &self.ebda_segment.to_le_bytes());
            mem.poke(self.rsdp_at, &self.rsdp);
            mem.poke(self.root_at, &self.root);
            for (at, t) in &self.tables {
                mem.poke(*at, t);
            }
            mem
        }

        fn run(&self) -> Result<Acpi, AcpiError> {
            let mem = self.memory();
            let rsdp = find_rsdp(&mem)?;
            parse(&mem, &rsdp)
        }

        fn with_table(mut self, index: usize, table: Vec<u8>) -> Self {
            self.tables[index].1 = table;
            self
        }
    }

    fn bochs_madt() -> Vec<u8> {
        madt(
            0xfee0_0000,
            MADT_PCAT_COMPAT,
            &[
                lapic(0, 0, CPU_ENABLED),
                ioapic(0, 0xfec0_0000, 0),
                iso(0, 0, 2, 0),
                iso(0, 9, 9, 0xd),
                nmi(0xff, 0, 1),
            ],
        )
    }

    /// What SeaBIOS gives Bochs or QEMU i440fx: an ACPI 1.0 RSDP in the
    /// BIOS area, an RSDT, one CPU, one I/O APIC, two overrides.
    fn bochs() -> Layout {
        Layout {
            ebda_segment: EBDA_SEGMENT,
            rsdp_at: 0xf_5a10,
            rsdp: rsdp_v1(RSDT_AT),
            root_at: RSDT_AT,
            root: rsdt(&[FACP_AT, MADT_AT, HPET_AT]),
            tables: vec![
                (FACP_AT, sdt(b"FACP", 1, &[0; 80])),
                (MADT_AT, bochs_madt()),
                (HPET_AT, sdt(b"HPET", 1, &[0; 20])),
            ],
        }
    }

    const Q35_DRHD_BASE: u64 = 0xfed9_0000;

    fn q35_dmar() -> Vec<u8> {
        dmar(
            38,
            DMAR_INTR_REMAP | DMAR_X2APIC_OPT_OUT,
            &[
                drhd(
                    DRHD_INCLUDE_PCI_ALL,
                    0,
                    Q35_DRHD_BASE,
                    &[scope(3, 0, 0xff, &[(0, 0)])],
                ),
                rmrr(0, 0x7f00_0000, 0x7f0f_ffff, &[scope(1, 0, 0, &[(0x1d, 0)])]),
                atsr(ATSR_ALL_PORTS, 0, &[]),
            ],
        )
    }

    /// A QEMU q35 with intel-iommu: an ACPI 2.0 RSDP in the EBDA, an XSDT
    /// (the RSDT lists only the FADT, so reading it would show), two CPUs
    /// (one x2APIC), a DMAR with one catch-all unit and one RMRR.
    fn q35() -> Layout {
        Layout {
            ebda_segment: EBDA_SEGMENT,
            rsdp_at: EBDA + 0x40,
            rsdp: rsdp_v2(RSDT_AT, TABLES),
            root_at: TABLES,
            root: xsdt(&[FACP_AT, MADT_AT, HPET_AT, MCFG_AT, DMAR_AT]),
            tables: vec![
                (FACP_AT, sdt(b"FACP", 3, &[0; 208])),
                (
                    MADT_AT,
                    madt(
                        0xfee0_0000,
                        MADT_PCAT_COMPAT,
                        &[
                            lapic(0, 0, CPU_ENABLED),
                            x2apic(0x100, CPU_ENABLED, 1),
                            ioapic(0, 0xfec0_0000, 0),
                            iso(0, 0, 2, 0),
                            x2nmi(0, u32::MAX, 1),
                        ],
                    ),
                ),
                (HPET_AT, sdt(b"HPET", 1, &[0; 20])),
                (MCFG_AT, sdt(b"MCFG", 1, &[0; 24])),
                (DMAR_AT, q35_dmar()),
                (RSDT_AT, rsdt(&[FACP_AT])),
            ],
        }
    }

    fn signatures(acpi: &Acpi) -> Vec<String> {
        acpi.tables.iter().map(|s| s.to_string()).collect()
    }

    /// The MADT parsed from `table` in the Bochs layout, or why not.
    fn madt_of(table: Vec<u8>) -> Result<Madt, AcpiError> {
        let acpi = bochs().with_table(MADT_INDEX, table).run().unwrap();
        acpi.madt.ok_or_else(|| acpi.first_rejection.unwrap())
    }

    /// The DMAR parsed from `structures` in the q35 layout, or why not.
    fn dmar_of(structures: &[Vec<u8>]) -> Result<Dmar, AcpiError> {
        let table = dmar(38, 0, structures);
        let acpi = q35().with_table(DMAR_INDEX, table).run().unwrap();
        assert!(acpi.madt.is_some(), "a bad DMAR leaves the MADT usable");
        acpi.dmar.ok_or_else(|| acpi.first_rejection.unwrap())
    }

    #[test]
    fn bochs_rsdt_and_madt() {
        let acpi = bochs().run().unwrap();
        assert_eq!(acpi.root, RSDT);
        assert_eq!(acpi.oem_id.to_string(), "BOCHS");
        assert_eq!(signatures(&acpi), ["FACP", "APIC", "HPET"]);
        assert_eq!((acpi.rejected, acpi.first_rejection), (0, None));
        assert_eq!(acpi.dmar, None);
        let madt = acpi.madt.unwrap();
        assert_eq!(madt.local_apic_address, 0xfee0_0000);
        assert!(madt.pc_at_compat);
        assert_eq!(
            *madt.cpus,
            [Cpu {
                uid: 0,
                apic_id: 0,
                enabled: true,
                online_capable: false,
                x2apic: false
            }]
        );
        assert_eq!(
            *madt.io_apics,
            [IoApic {
                id: 0,
                address: 0xfec0_0000,
                gsi_base: 0
            }]
        );
        assert_eq!(
            *madt.overrides,
            [
                SourceOverride {
                    irq: 0,
                    gsi: 2,
                    polarity: Polarity::BusDefault,
                    trigger: Trigger::BusDefault
                },
                SourceOverride {
                    irq: 9,
                    gsi: 9,
                    polarity: Polarity::High,
                    trigger: Trigger::Level
                }
            ]
        );
        assert_eq!(
            *madt.local_nmis,
            [LocalNmi {
                uid: None,
                lint: 1,
                polarity: Polarity::BusDefault,
                trigger: Trigger::BusDefault
            }]
        );
        assert_eq!((madt.rejected, madt.skipped), (0, 0));
        assert_eq!(
            acpi.to_string(),
            "acpi: RSDT rev 1 (BOCHS), tables FACP APIC HPET\n\
             acpi: 1 CPU (1 enabled; APIC ids 0), 1 I/O APIC at 0xfec00000 GSI base 0, \
             2 overrides, local APIC at 0xfee00000\n\
             dmar: none"
        );
    }

    #[test]
    fn q35_xsdt_madt_and_dmar() {
        let acpi = q35().run().unwrap();
        assert_eq!(acpi.root, XSDT);
        assert_eq!(signatures(&acpi), ["FACP", "APIC", "HPET", "MCFG", "DMAR"]);
        assert_eq!(acpi.rejected, 0);
        let madt = acpi.madt.unwrap();
        let ids: Vec<(u32, bool)> = madt.cpus.iter().map(|c| (c.apic_id, c.x2apic)).collect();
        assert_eq!(ids, [(0, false), (0x100, true)]);
        assert_eq!(madt.cpus[1].uid, 1);
        assert_eq!(madt.local_nmis[0].uid, None);
        let dmar = acpi.dmar.unwrap();
        assert_eq!(dmar.host_address_width, 39);
        assert!(dmar.interrupt_remapping && dmar.x2apic_opt_out && !dmar.dma_ctrl_opt_in);
        assert!(dmar.complete());
        let unit = dmar.drhds[0];
        assert_eq!(dmar.drhds.len(), 1);
        assert!(unit.include_pci_all);
        assert_eq!((unit.segment, unit.register_base), (0, Q35_DRHD_BASE));
        assert_eq!(unit.register_pages, 1);
        assert_eq!(
            *unit.scopes,
            [DeviceScope {
                kind: ScopeKind::IoApic,
                enumeration_id: 0,
                start_bus: 0xff,
                path: {
                    let mut p = BoundedList::new();
                    p.push(PciHop {
                        device: 0,
                        function: 0,
                    });
                    p
                },
            }]
        );
        assert_eq!(dmar.rmrrs.len(), 1);
        let region = dmar.rmrrs[0];
        assert_eq!((region.base, region.limit), (0x7f00_0000, 0x7f0f_ffff));
        assert_eq!(region.scopes[0].kind, ScopeKind::Endpoint);
        assert_eq!(region.scopes[0].path[0].device, 0x1d);
        assert_eq!(dmar.atsrs.len(), 1);
        assert!(dmar.atsrs[0].all_ports && dmar.atsrs[0].scopes.is_empty());
        let text = acpi.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            "acpi: XSDT rev 1 (BOCHS), tables FACP APIC HPET MCFG DMAR"
        );
        assert!(lines[1].starts_with("acpi: 2 CPUs (2 enabled; APIC ids 0 256)"));
        assert_eq!(
            lines[2],
            "dmar: host address width 39, interrupt remapping, x2APIC opt-out, \
             1 DRHD 0xfed90000 (all PCI), 1 RMRR 0x7f000000..=0x7f0fffff"
        );
    }

    #[test]
    fn rsdp_copies() {
        let v1 = rsdp_from_bytes(&rsdp_v1(0x1234_5000)).unwrap();
        assert_eq!(
            v1,
            Rsdp {
                revision: 0,
                rsdt: 0x1234_5000,
                xsdt: None,
                oem_id: OemId(*b"BOCHS "),
                found_at: None
            }
        );
        let v2 = rsdp_from_bytes(&rsdp_v2(0x1000, 0x1_0000_2000)).unwrap();
        assert_eq!((v2.revision, v2.xsdt), (2, Some(0x1_0000_2000)));
        // Revision 2 with no XSDT: the RSDT is used.
        assert_eq!(rsdp_from_bytes(&rsdp_v2(0x1000, 0)).unwrap().xsdt, None);
        // A v1 copy with trailing bytes is still v1.
        let mut long = rsdp_v1(0x1000);
        long.extend_from_slice(&[0xff; 16]);
        assert_eq!(rsdp_from_bytes(&long).unwrap().xsdt, None);
    }

    #[test]
    fn rsdp_refusals() {
        assert_eq!(
            rsdp_from_bytes(&rsdp_v1(0x1000)[..19]),
            Err(AcpiError::RsdpTruncated {
                len: 19,
                needed: 20
            })
        );
        let mut b = rsdp_v1(0x1000);
        b[0] = b'r';
        assert_eq!(rsdp_from_bytes(&b), Err(AcpiError::RsdpSignature));
        let mut b = rsdp_v1(0x1000);
        b[16] ^= 1;
        assert_eq!(rsdp_from_bytes(&b), Err(AcpiError::RsdpChecksum));
        // Revision 2 cut to its ACPI 1.0 part.
        let v2 = rsdp_v2(0x1000, 0x2000);
        assert_eq!(
            rsdp_from_bytes(&v2[..20]),
            Err(AcpiError::RsdpTruncated {
                len: 20,
                needed: 36
            })
        );
        assert_eq!(
            rsdp_from_bytes(&v2[..30]),
            Err(AcpiError::RsdpTruncated {
                len: 30,
                needed: 36
            })
        );
        // The extended checksum covers the XSDT address.
        let mut b = v2.clone();
        b[24] ^= 0x10;
        assert_eq!(rsdp_from_bytes(&b), Err(AcpiError::RsdpExtendedChecksum));
        // Lengths below 36, above the cap, or past the bytes given.
        for len in [0u32, 35, 37, MAX_RSDP_LEN as u32 + 1, u32::MAX] {
            let mut b = v2.clone();
            b[20..24].copy_from_slice(&len.to_le_bytes());
            fix_checksum(&mut b, 8, 20);
            assert_eq!(rsdp_from_bytes(&b), Err(AcpiError::RsdpLength(len)));
        }
        // A longer length is fine when the bytes are there and sum to zero.
        let mut b = v2.clone();
        b.extend_from_slice(&[0; 12]);
        b[20..24].copy_from_slice(&48u32.to_le_bytes());
        fix_checksum(&mut b, 8, 20);
        fix_checksum(&mut b, 32, 48);
        assert!(rsdp_from_bytes(&b).is_ok());
    }

    #[test]
    fn search_finds_the_rsdp_in_the_ebda_and_the_bios_area() {
        let q = q35();
        assert_eq!(find_rsdp(&q.memory()).unwrap().found_at, Some(EBDA + 0x40));
        let b = bochs();
        assert_eq!(find_rsdp(&b.memory()).unwrap().found_at, Some(0xf_5a10));
        // The EBDA is searched first.
        let mut mem = q.memory();
        mem.poke(0xe_0000, &rsdp_v1(RSDT_AT));
        assert_eq!(find_rsdp(&mem).unwrap().found_at, Some(EBDA + 0x40));
        // Only at 16-byte steps, and only in the first KiB of the EBDA.
        let mut l = q35();
        l.rsdp_at = EBDA + 0x48;
        assert_eq!(find_rsdp(&l.memory()), Err(AcpiError::NoRsdp));
        let mut l = q35();
        l.ebda_segment = EBDA_SEGMENT - 0x40;
        assert_eq!(l.rsdp_at - (u64::from(l.ebda_segment) << 4), 0x440);
        assert_eq!(find_rsdp(&l.memory()), Err(AcpiError::NoRsdp));
        l.ebda_segment = EBDA_SEGMENT - 0x3b; // offset 0x3f0: the last candidate
        assert_eq!(find_rsdp(&l.memory()).unwrap().found_at, Some(EBDA + 0x40));
        // No EBDA segment: the EBDA is not searched.
        let mut l = q35();
        l.ebda_segment = 0;
        assert_eq!(find_rsdp(&l.memory()), Err(AcpiError::NoRsdp));
        // The last candidate of the BIOS area.
        let mut l = bochs();
        l.rsdp_at = 0xf_fff0 - 16;
        assert_eq!(find_rsdp(&l.memory()).unwrap().found_at, Some(0xf_ffe0));
    }

    #[test]
    fn search_passes_over_bad_candidates() {
        // A bad candidate before a good one.
        let mut mem = bochs().memory();
        let mut bad = rsdp_v1(RSDT_AT);
        bad[8] ^= 1;
        mem.poke(0xe_0000, &bad);
        assert_eq!(find_rsdp(&mem).unwrap().found_at, Some(0xf_5a10));
        // Only bad candidates: the first one's error.
        let mut l = bochs();
        l.rsdp = bad;
        assert_eq!(find_rsdp(&l.memory()), Err(AcpiError::RsdpChecksum));
        let mut l = q35();
        l.rsdp[32] ^= 1;
        assert_eq!(find_rsdp(&l.memory()), Err(AcpiError::RsdpExtendedChecksum));
        // A signature in the last 16 bytes below 1 MiB: the read stops at
        // the end of memory, and so does the RSDP.
        let mut mem = FakeMemory {
            regions: vec![(BIOS_AREA.start, vec![0; 0x2_0000])],
        };
        mem.poke(0xf_fff0, b"RSD PTR ");
        assert_eq!(
            find_rsdp(&mem),
            Err(AcpiError::RsdpTruncated {
                len: 16,
                needed: 20
            })
        );
        // Holes in the area are stepped over, and a stretch may end off a
        // 16-byte boundary.
        let mut mem = FakeMemory {
            regions: vec![
                (0xe_0000, vec![0; 5]),
                (0xe_0010, vec![0; 0x1005]),
                (0xe_4000, vec![0; 0x100]),
            ],
        };
        mem.poke(0xe_4040, &rsdp_v1(RSDT_AT));
        assert_eq!(find_rsdp(&mem).unwrap().found_at, Some(0xe_4040));
        mem.poke(0xe_0010, &rsdp_v1(RSDT_AT));
        assert_eq!(find_rsdp(&mem).unwrap().found_at, Some(0xe_0010));
        // Nothing readable at all.
        let empty = FakeMemory { regions: vec![] };
        assert_eq!(find_rsdp(&empty), Err(AcpiError::NoRsdp));
    }

    #[test]
    fn root_table_refusals() {
        let mut l = bochs();
        l.rsdp = rsdp_v1(0);
        assert_eq!(l.run().unwrap_err(), AcpiError::NoRootTable);
        // The root outside readable memory.
        let mut l = bochs();
        l.rsdp = rsdp_v1(0x9000_0000);
        assert_eq!(
            l.run().unwrap_err(),
            AcpiError::Unreadable {
                addr: 0x9000_0000,
                len: 36
            }
        );
        // An XSDT address where only the RSDT is.
        let mut l = q35();
        l.rsdp = rsdp_v2(TABLES, RSDT_AT);
        assert_eq!(
            l.run().unwrap_err(),
            AcpiError::WrongSignature {
                addr: RSDT_AT,
                expected: XSDT,
                found: RSDT
            }
        );
        // Lengths below the header or above the cap.
        for len in [0u32, 35, MAX_TABLE + 1, u32::MAX] {
            let mut l = bochs();
            l.root[4..8].copy_from_slice(&len.to_le_bytes());
            assert_eq!(
                l.run().unwrap_err(),
                AcpiError::TableLength {
                    signature: RSDT,
                    addr: RSDT_AT,
                    len
                }
            );
        }
        // A length past the end of memory (the root is near the end of the
        // tables region).
        let mut l = bochs();
        l.root[4..8].copy_from_slice(&0x2000u32.to_le_bytes());
        assert_eq!(
            l.run().unwrap_err(),
            AcpiError::Unreadable {
                addr: RSDT_AT,
                len: 0x2000
            }
        );
        let mut l = bochs();
        l.root[9] ^= 1;
        assert_eq!(
            l.run().unwrap_err(),
            AcpiError::TableChecksum {
                signature: RSDT,
                addr: RSDT_AT
            }
        );
        // Entries that are not whole pointers.
        let mut l = q35();
        let mut root = l.root.clone();
        root.extend_from_slice(&[0; 4]);
        let len = root.len() as u32;
        root[4..8].copy_from_slice(&len.to_le_bytes());
        fix_table(&mut root);
        l.root = root;
        assert_eq!(
            l.run().unwrap_err(),
            AcpiError::RootEntries {
                signature: XSDT,
                len: 36 + 5 * 8 + 4
            }
        );
        let mut l = bochs();
        let mut root = l.root.clone();
        root.extend_from_slice(&[0; 2]);
        let len = root.len() as u32;
        root[4..8].copy_from_slice(&len.to_le_bytes());
        fix_table(&mut root);
        l.root = root;
        assert!(matches!(
            l.run(),
            Err(AcpiError::RootEntries {
                signature: RSDT,
                ..
            })
        ));
        // An empty root is fine: no tables.
        let mut l = bochs();
        l.root = rsdt(&[]);
        let acpi = l.run().unwrap();
        assert!(acpi.tables.is_empty() && acpi.madt.is_none());
    }

    #[test]
    fn bad_tables_are_rejected_and_the_rest_read() {
        let with_root = |addrs: &[u64]| {
            let mut l = bochs();
            l.root = rsdt(addrs);
            l.run().unwrap()
        };
        let cases = [
            (
                0x9000_0000,
                AcpiError::Unreadable {
                    addr: 0x9000_0000,
                    len: 36,
                },
            ),
            (0, AcpiError::NullEntry),
            (RSDT_AT, AcpiError::SelfReference(RSDT_AT)),
            (FACP_AT, AcpiError::RepeatedEntry(FACP_AT)),
        ];
        for (bad, why) in cases {
            let acpi = with_root(&[FACP_AT, bad, MADT_AT, HPET_AT]);
            assert_eq!(signatures(&acpi), ["FACP", "APIC", "HPET"], "{why}");
            assert_eq!((acpi.rejected, acpi.first_rejection), (1, Some(why)));
            assert!(acpi.madt.is_some());
        }
        // A table running past readable memory (the last bytes of the
        // tables region).
        let mut l = bochs();
        let end = TABLES + 0x1_0000 - 36;
        let mut hpet = sdt(b"HPET", 1, &[]);
        hpet[4..8].copy_from_slice(&56u32.to_le_bytes());
        l.tables[2] = (end, hpet);
        l.root = rsdt(&[FACP_AT, MADT_AT, end]);
        let acpi = l.run().unwrap();
        assert_eq!(
            acpi.first_rejection,
            Some(AcpiError::Unreadable { addr: end, len: 56 })
        );
        assert_eq!(signatures(&acpi), ["FACP", "APIC"]);
        // Bad checksum, bad lengths.
        let mut l = bochs();
        l.tables[0].1[40] ^= 1;
        let acpi = l.run().unwrap();
        assert_eq!(
            acpi.first_rejection,
            Some(AcpiError::TableChecksum {
                signature: Signature(*b"FACP"),
                addr: FACP_AT
            })
        );
        assert_eq!(signatures(&acpi), ["APIC", "HPET"]);
        for len in [0u32, 35, MAX_TABLE + 1] {
            let mut l = bochs();
            l.tables[MADT_INDEX].1[4..8].copy_from_slice(&len.to_le_bytes());
            let acpi = l.run().unwrap();
            assert_eq!(
                acpi.first_rejection,
                Some(AcpiError::TableLength {
                    signature: MADT,
                    addr: MADT_AT,
                    len
                })
            );
            assert!(acpi.madt.is_none());
        }
    }

    #[test]
    fn the_first_madt_and_dmar_win() {
        let other_at = TABLES + 0x8000;
        let mut l = bochs();
        let second = madt(0xfee0_0000, 0, &[lapic(0, 7, CPU_ENABLED)]);
        l.tables.push((other_at, second));
        l.root = rsdt(&[MADT_AT, other_at]);
        let acpi = l.run().unwrap();
        assert_eq!(acpi.madt.unwrap().cpus[0].apic_id, 0);
        assert_eq!(
            acpi.first_rejection,
            Some(AcpiError::DuplicateTable {
                signature: MADT,
                addr: other_at
            })
        );
        assert_eq!(signatures(&acpi), ["APIC", "APIC"]);
        let mut l = q35();
        l.tables
            .push((other_at, dmar(47, 0, &[drhd(1, 0, 0xfee0_0000, &[])])));
        l.root = xsdt(&[DMAR_AT, other_at]);
        let acpi = l.run().unwrap();
        assert_eq!(acpi.dmar.unwrap().host_address_width, 39);
        assert_eq!(acpi.rejected, 1);
        // A first MADT that is refused does not block a later good one.
        let mut l = bochs();
        l.tables.push((other_at, bochs_madt()));
        l.tables[MADT_INDEX].1 = madt(0, 0, &[]);
        l.root = rsdt(&[MADT_AT, other_at]);
        let acpi = l.run().unwrap();
        assert!(acpi.madt.is_some());
        assert_eq!(acpi.first_rejection, Some(AcpiError::MadtLocalApic(0)));
    }

    #[test]
    fn at_most_max_tables_entries_are_looked_at() {
        let mut l = bochs();
        let mut addrs: Vec<u64> = (0..MAX_TABLES as u64).map(|i| 0x1000 + i * 64).collect();
        addrs.extend([MADT_AT, FACP_AT, HPET_AT]);
        l.root = rsdt(&addrs);
        let acpi = l.run().unwrap();
        assert_eq!(acpi.tables_ignored, 3);
        assert!(acpi.madt.is_none(), "the MADT is entry 65");
        assert_eq!(acpi.rejected, MAX_TABLES as u32);
        assert!(acpi.to_string().contains("(+3 not looked at)"));
        // Exactly MAX_TABLES entries: none ignored.
        let mut l = bochs();
        let mut addrs: Vec<u64> = (0..MAX_TABLES as u64 - 1)
            .map(|i| 0x1000 + i * 64)
            .collect();
        addrs.push(MADT_AT);
        l.root = rsdt(&addrs);
        let acpi = l.run().unwrap();
        assert_eq!(acpi.tables_ignored, 0);
        assert!(acpi.madt.is_some());
    }

    #[test]
    fn madt_entry_lengths_that_cannot_be_walked() {
        let good = bochs_madt();
        for len in [0u8, 1, 200] {
            let mut entries = vec![lapic(0, 0, CPU_ENABLED)];
            let mut bad = ioapic(0, 0xfec0_0000, 0);
            bad[1] = len;
            entries.push(bad);
            assert_eq!(
                madt_of(madt(0xfee0_0000, 0, &entries)),
                Err(AcpiError::MadtEntry {
                    offset: 52,
                    kind: MADT_IO_APIC,
                    len
                }),
                "length {len}"
            );
        }
        // One byte left after the last entry: no room for its length.
        let mut t = good.clone();
        t.push(MADT_LOCAL_APIC);
        let len = t.len();
        t[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        fix_checksum(&mut t, 9, len);
        assert_eq!(
            madt_of(t),
            Err(AcpiError::MadtEntry {
                offset: len - 1,
                kind: 0,
                len: 0
            })
        );
        // The last entry's length one past the table.
        let mut t = good.clone();
        let last = t.len() - 6;
        t[last + 1] = 7;
        fix_table(&mut t);
        assert!(matches!(
            madt_of(t),
            Err(AcpiError::MadtEntry { len: 7, .. })
        ));
        // Too short for the local APIC address and flags.
        let t = sdt(b"APIC", 3, &[0; 7]);
        assert_eq!(madt_of(t), Err(AcpiError::MadtShort(43)));
        for addr in [0u32, 0xfee0_0800] {
            assert_eq!(
                madt_of(madt(addr, 0, &[])),
                Err(AcpiError::MadtLocalApic(addr.into()))
            );
        }
        // No entries at all is a valid (if useless) MADT.
        let m = madt_of(madt(0xfee0_0000, 0, &[])).unwrap();
        assert!(m.cpus.is_empty() && !m.pc_at_compat);
    }

    #[test]
    fn madt_entries_with_wrong_fields_are_skipped_and_counted() {
        let mut short_cpu = lapic(1, 1, CPU_ENABLED);
        short_cpu[1] = 4;
        short_cpu.truncate(4);
        let mut short_x2 = x2apic(5, CPU_ENABLED, 5);
        short_x2[1] = 12;
        short_x2.truncate(12);
        let mut long_cpu = lapic(2, 2, CPU_ENABLED);
        long_cpu[1] = 10;
        long_cpu.extend_from_slice(&[0xee, 0xee]);
        let entries = [
            lapic(0, 0, CPU_ENABLED),
            short_cpu,
            short_x2,
            long_cpu,
            lapic(3, 0xff, CPU_ENABLED),
            x2apic(u32::MAX, CPU_ENABLED, 4),
            lapic(9, 0, CPU_ENABLED),
            x2apic(0x200, CPU_ONLINE_CAPABLE, 6),
            lapic(7, 3, 0),
            ioapic(1, 0, 0),
            ioapic(2, 0xfec0_1000, 24),
            iso(1, 5, 5, 0),
            iso(0, 16, 16, 0),
            iso(0, 4, 4, 2),
            iso(0, 4, 4, 8),
            iso(0, 10, 10, 0xf),
            iso(0, 10, 11, 0),
            nmi(0, 0, 2),
            nmi(0, 5, 1),
            x2nmi(0, 6, 0),
            vec![0x7f, 3, 0],
            lapic_address(0xfee0_0010),
        ];
        let m = madt_of(madt(0xfee0_0000, 0, &entries)).unwrap();
        let cpus: Vec<(u32, u32, bool, bool, bool)> = m
            .cpus
            .iter()
            .map(|c| (c.uid, c.apic_id, c.enabled, c.online_capable, c.x2apic))
            .collect();
        assert_eq!(
            cpus,
            [
                (0, 0, true, false, false),
                (2, 2, true, false, false),
                (6, 0x200, false, true, true),
                (7, 3, false, false, false),
            ]
        );
        assert_eq!(m.io_apics.len(), 1);
        assert_eq!(m.io_apics[0].gsi_base, 24);
        assert_eq!(m.overrides.len(), 1);
        assert_eq!(
            (
                m.overrides[0].gsi,
                m.overrides[0].polarity,
                m.overrides[0].trigger
            ),
            (10, Polarity::Low, Trigger::Level)
        );
        assert_eq!(m.local_nmis.len(), 2);
        assert_eq!(m.local_nmis[0].uid, Some(0));
        assert_eq!(m.local_nmis[0].polarity, Polarity::High);
        assert_eq!(m.local_nmis[0].trigger, Trigger::Edge);
        assert_eq!((m.local_nmis[1].uid, m.local_nmis[1].lint), (Some(6), 0));
        assert_eq!(m.local_apic_address, 0xfee0_0000, "unaligned override");
        // short cpu, short x2, id 0xff, x2 id all-ones, duplicate id 0,
        // I/O APIC at 0, bus 1, IRQ 16, reserved polarity, reserved
        // trigger, second IRQ 10, LINT2, the unaligned address override.
        assert_eq!(m.rejected, 13);
        assert_eq!(m.skipped, 1);
        assert!(m.to_string().ends_with("; 13 entries rejected"));
    }

    #[test]
    fn madt_local_apic_address_override() {
        let m = madt_of(madt(
            0xfee0_0000,
            0,
            &[lapic_address(0x1_fee0_0000), lapic_address(0x2_0000_0000)],
        ))
        .unwrap();
        assert_eq!(m.local_apic_address, 0x1_fee0_0000);
        assert_eq!(m.rejected, 1, "only one override may exist");
        let m = madt_of(madt(0xfee0_0000, 0, &[lapic_address(0)])).unwrap();
        assert_eq!((m.local_apic_address, m.rejected), (0xfee0_0000, 1));
    }

    #[test]
    fn madt_capacities_are_counted() {
        let mut entries: Vec<Vec<u8>> = (0..MAX_CPUS as u32 + 6)
            .map(|i| x2apic(i, CPU_ENABLED, i))
            .collect();
        entries.extend(
            (0..MAX_IO_APICS as u8 + 2)
                .map(|i| ioapic(i, 0xfec0_0000 + u32::from(i) * 0x1000, u32::from(i) * 24)),
        );
        entries.extend((0..16).map(|irq| iso(0, irq, u32::from(irq), 0)));
        entries.extend((0..MAX_LOCAL_NMIS as u8 + 1).map(|uid| nmi(uid, 0, 1)));
        let m = madt_of(madt(0xfee0_0000, 0, &entries)).unwrap();
        assert_eq!((m.cpus.len(), m.cpus_dropped), (MAX_CPUS, 6));
        assert_eq!(m.cpus[MAX_CPUS - 1].apic_id, MAX_CPUS as u32 - 1);
        assert_eq!((m.io_apics.len(), m.io_apics_dropped), (MAX_IO_APICS, 2));
        assert_eq!((m.overrides.len(), m.overrides_dropped), (16, 0));
        assert_eq!(
            (m.local_nmis.len(), m.local_nmis_dropped),
            (MAX_LOCAL_NMIS, 1)
        );
        assert_eq!(m.rejected, 0);
        let line = m.to_string();
        assert!(line.starts_with("64 CPUs (64 enabled; APIC ids 0 1 2 3 4 5 6 7 ...)"));
        assert!(line.ends_with("; 9 entries not kept (capacity)"));
    }

    #[test]
    fn dmar_fields() {
        let table = dmar(38, 0, &[]);
        let short = sdt(b"DMAR", 1, &table[36..47]);
        let acpi = q35().with_table(DMAR_INDEX, short).run().unwrap();
        assert_eq!(acpi.first_rejection, Some(AcpiError::DmarShort(47)));
        for (field, width) in [(30u8, 31u16), (64, 65), (255, 256)] {
            let acpi = q35()
                .with_table(DMAR_INDEX, dmar(field, 0, &[]))
                .run()
                .unwrap();
            assert_eq!(acpi.first_rejection, Some(AcpiError::DmarWidth(width)));
        }
        for (field, width) in [(31u8, 32u8), (63, 64)] {
            let acpi = q35()
                .with_table(DMAR_INDEX, dmar(field, DMAR_DMA_CTRL_OPT_IN, &[]))
                .run()
                .unwrap();
            let d = acpi.dmar.unwrap();
            assert_eq!(d.host_address_width, width);
            assert!(d.dma_ctrl_opt_in && !d.interrupt_remapping);
        }
    }

    #[test]
    fn dmar_structure_lengths() {
        for len in [0u16, 3, 200] {
            let mut s = drhd(1, 0, Q35_DRHD_BASE, &[]);
            s[2..4].copy_from_slice(&len.to_le_bytes());
            assert_eq!(
                dmar_of(&[s]),
                Err(AcpiError::DmarStructure {
                    offset: 48,
                    kind: 0,
                    len,
                    why: "below 4 bytes or past the table"
                })
            );
        }
        // Two bytes after the last structure: no room for its length.
        assert!(matches!(
            dmar_of(&[drhd(1, 0, Q35_DRHD_BASE, &[]), vec![0, 0]]),
            Err(AcpiError::DmarStructure { offset: 64, .. })
        ));
        // Fixed fields cut short: DRHD, RMRR, ATSR.
        let cases = [
            drhd(1, 0, Q35_DRHD_BASE, &[])[..12].to_vec(),
            rmrr(0, 0, 0xfff, &[])[..20].to_vec(),
            atsr(0, 0, &[])[..6].to_vec(),
        ];
        for mut s in cases {
            let len = s.len() as u16;
            s[2..4].copy_from_slice(&len.to_le_bytes());
            let kind = u16::from(s[0]);
            assert_eq!(
                dmar_of(&[s]),
                Err(AcpiError::DmarStructure {
                    offset: 48,
                    kind,
                    len,
                    why: "too short for its fields"
                })
            );
        }
        // Unknown types (an RHSA) are skipped by their length.
        let rhsa = structure(3, &[0; 16], &[]);
        let d = dmar_of(&[rhsa, drhd(1, 0, Q35_DRHD_BASE, &[])]).unwrap();
        assert_eq!((d.skipped, d.drhds.len()), (1, 1));
    }

    #[test]
    fn dmar_units_and_regions() {
        for base in [0u64, Q35_DRHD_BASE + 8] {
            assert_eq!(
                dmar_of(&[drhd(1, 0, base, &[])]),
                Err(AcpiError::DrhdBase(base))
            );
        }
        let d = dmar_of(&[
            drhd(0, 0, 0xfed9_1000, &[]),
            drhd(1, 1, 0xfed9_2000, &[]),
            drhd(1, 0, Q35_DRHD_BASE, &[]),
        ])
        .unwrap();
        assert_eq!(d.drhds.len(), 3);
        assert_eq!(
            dmar_of(&[drhd(1, 0, 0xfed9_1000, &[]), drhd(1, 0, Q35_DRHD_BASE, &[])]),
            Err(AcpiError::DrhdIncludeAll(0))
        );
        let mut s = drhd(0, 0, Q35_DRHD_BASE, &[]);
        s[5] = 2;
        assert_eq!(dmar_of(&[s]).unwrap().drhds[0].register_pages, 4);
        for (base, limit) in [
            (0x8000_0000u64, 0x7fff_ffffu64),
            (0x8000_1000, 0x8000_0fff),
            (0x8000_0800, 0x8000_ffff),
            (0x8000_0000, 0x8000_fffe),
            (0x8000_0000, 0x8000_0000),
        ] {
            assert_eq!(
                dmar_of(&[rmrr(0, base, limit, &[])]),
                Err(AcpiError::RmrrRange { base, limit })
            );
        }
        let d = dmar_of(&[rmrr(0, 0x8000_0000, 0x8000_0fff, &[])]).unwrap();
        assert_eq!(
            (d.rmrrs[0].base, d.rmrrs[0].limit),
            (0x8000_0000, 0x8000_0fff)
        );
    }

    #[test]
    fn dmar_device_scopes() {
        let with_scope = |s: Vec<u8>| dmar_of(&[drhd(0, 0, Q35_DRHD_BASE, &[s])]);
        let at = 48 + DRHD_SCOPES;
        // Running past the structure (the length byte claims more).
        let mut s = scope(1, 0, 0, &[(2, 0)]);
        s[1] = 10;
        assert_eq!(
            with_scope(s),
            Err(AcpiError::DmarScope {
                offset: at,
                why: "runs past its structure"
            })
        );
        let mut s = scope(1, 0, 0, &[(2, 0)]);
        s[1] = 4;
        assert_eq!(
            with_scope(s),
            Err(AcpiError::DmarScope {
                offset: at,
                why: "shorter than 6 bytes"
            })
        );
        for len in [6u8, 7] {
            let mut s = scope(1, 0, 0, &[(2, 0)]);
            s[1] = len;
            s.truncate(len.into());
            assert_eq!(
                with_scope(s),
                Err(AcpiError::DmarScope {
                    offset: at,
                    why: "path is not a whole number of hops"
                })
            );
        }
        // A lone byte after a good scope: no room for the next's length.
        let mut s = scope(1, 0, 0, &[(2, 0)]);
        s.push(1);
        assert_eq!(
            with_scope(s),
            Err(AcpiError::DmarScope {
                offset: at + 8,
                why: "header past its structure"
            })
        );
        for hop in [(32u8, 0u8), (0, 8)] {
            assert_eq!(
                with_scope(scope(1, 0, 0, &[(1, 0), hop])),
                Err(AcpiError::DmarScope {
                    offset: at,
                    why: "device or function out of range"
                })
            );
        }
        // The same rules inside RMRRs and ATSRs.
        let mut bad = scope(2, 0, 0, &[(1, 0)]);
        bad[1] = 9;
        assert!(matches!(
            dmar_of(&[rmrr(0, 0, 0xfff, &[bad.clone()])]),
            Err(AcpiError::DmarScope { offset: 72, .. })
        ));
        assert!(matches!(
            dmar_of(&[atsr(0, 0, &[bad])]),
            Err(AcpiError::DmarScope { offset: 56, .. })
        ));
        // Kinds, including one this module does not know.
        let d = dmar_of(&[drhd(
            0,
            0,
            Q35_DRHD_BASE,
            &[
                scope(2, 0, 0, &[(1, 0)]),
                scope(4, 0, 0, &[(0x1f, 0)]),
                scope(5, 3, 0, &[(0x1f, 7)]),
                scope(9, 0, 0, &[(31, 7)]),
            ],
        )])
        .unwrap();
        let kinds: Vec<ScopeKind> = d.drhds[0].scopes.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                ScopeKind::Bridge,
                ScopeKind::Hpet,
                ScopeKind::AcpiDevice,
                ScopeKind::Other(9)
            ]
        );
        assert_eq!(d.drhds[0].scopes[2].enumeration_id, 3);
    }

    #[test]
    fn dmar_capacities_make_it_incomplete() {
        let units: Vec<Vec<u8>> = (0..MAX_DRHDS as u64 + 1)
            .map(|i| drhd(0, 0, Q35_DRHD_BASE + i * 0x1000, &[]))
            .collect();
        let d = dmar_of(&units).unwrap();
        assert_eq!((d.drhds.len(), d.drhds_dropped), (MAX_DRHDS, 1));
        assert!(!d.complete());
        assert!(d.to_string().ends_with("; INCOMPLETE (capacity)"));
        let regions: Vec<Vec<u8>> = (0..MAX_RMRRS as u64 + 2)
            .map(|i| rmrr(0, i << 12, (i << 12) | 0xfff, &[]))
            .collect();
        let d = dmar_of(&regions).unwrap();
        assert_eq!((d.rmrrs.len(), d.rmrrs_dropped), (MAX_RMRRS, 2));
        assert!(!d.complete());
        let ports: Vec<Vec<u8>> = (0..MAX_ATSRS as u16 + 1)
            .map(|seg| atsr(0, seg, &[]))
            .collect();
        let d = dmar_of(&ports).unwrap();
        assert_eq!((d.atsrs.len(), d.atsrs_dropped), (MAX_ATSRS, 1));
        // Too many scopes, or a path too deep: those scopes are dropped.
        let scopes: Vec<Vec<u8>> = (0..MAX_DRHD_SCOPES as u8 + 1)
            .map(|dev| scope(1, 0, 0, &[(dev, 0)]))
            .collect();
        let d = dmar_of(&[drhd(0, 0, Q35_DRHD_BASE, &scopes)]).unwrap();
        assert_eq!(d.drhds[0].scopes.len(), MAX_DRHD_SCOPES);
        assert_eq!(d.drhds[0].scopes_dropped, 1);
        assert!(!d.complete());
        let deep = scope(1, 0, 0, &[(1, 0); MAX_PATH + 1]);
        let fits = scope(1, 0, 0, &[(1, 0); MAX_PATH]);
        let d = dmar_of(&[rmrr(0, 0, 0xfff, &[deep, fits])]).unwrap();
        assert_eq!(d.rmrrs[0].scopes.len(), 1);
        assert_eq!(d.rmrrs[0].scopes[0].path.len(), MAX_PATH);
        assert_eq!(d.rmrrs[0].scopes_dropped, 1);
        assert!(!d.complete());
        let d = dmar_of(&[atsr(0, 0, &vec![scope(2, 0, 0, &[(1, 0)]); MAX_SCOPES + 1])]).unwrap();
        assert_eq!(d.atsrs[0].scopes_dropped, 1);
        assert!(!d.complete());
    }

    #[test]
    fn names_and_messages_print_as_one_clean_line() {
        assert_eq!(Signature(*b"A\0\x1b~").to_string(), "A??~");
        assert_eq!(OemId(*b"  \0\0\0\0").to_string(), "");
        assert_eq!(OemId(*b"A\nB   ").to_string(), "A?B");
        let errors = [
            AcpiError::NoRsdp,
            AcpiError::RsdpTruncated { len: 3, needed: 20 },
            AcpiError::RsdpSignature,
            AcpiError::RsdpChecksum,
            AcpiError::RsdpLength(7),
            AcpiError::RsdpExtendedChecksum,
            AcpiError::NoRootTable,
            AcpiError::Unreadable { addr: 1, len: 2 },
            AcpiError::TableLength {
                signature: Signature(*b"\n\n\n\n"),
                addr: 1,
                len: 2,
            },
            AcpiError::TableChecksum {
                signature: MADT,
                addr: 1,
            },
            AcpiError::WrongSignature {
                addr: 1,
                expected: XSDT,
                found: RSDT,
            },
            AcpiError::RootEntries {
                signature: XSDT,
                len: 37,
            },
            AcpiError::NullEntry,
            AcpiError::SelfReference(1),
            AcpiError::RepeatedEntry(1),
            AcpiError::DuplicateTable {
                signature: DMAR,
                addr: 1,
            },
            AcpiError::MadtShort(40),
            AcpiError::MadtLocalApic(0),
            AcpiError::MadtEntry {
                offset: 44,
                kind: 0,
                len: 0,
            },
            AcpiError::DmarShort(40),
            AcpiError::DmarWidth(2),
            AcpiError::DmarStructure {
                offset: 48,
                kind: 0,
                len: 2,
                why: "x",
            },
            AcpiError::DmarScope {
                offset: 64,
                why: "x",
            },
            AcpiError::DrhdBase(0),
            AcpiError::DrhdIncludeAll(0),
            AcpiError::RmrrRange { base: 1, limit: 0 },
        ];
        for e in errors {
            let text = e.to_string();
            assert!(!text.is_empty() && !text.contains('\n'), "{e:?}: {text}");
        }
        // A rejection shows on the first log line.
        let mut l = bochs();
        l.root = rsdt(&[0, MADT_AT]);
        let text = l.run().unwrap().to_string();
        assert!(
            text.lines()
                .next()
                .unwrap()
                .ends_with("tables APIC; 1 rejected, first: root table entry is 0")
        );
    }

    /// Every single-byte change of the MADT, DMAR and XSDT, with the
    /// checksum made right again so the change reaches the parser, ends in
    /// a value that keeps the invariants, never a panic.
    #[test]
    fn corrupted_tables_never_panic() {
        let base = q35();
        let mem = base.memory();
        let rsdp = find_rsdp(&mem).unwrap();
        let mut outcomes = std::collections::BTreeSet::new();
        for (index, table) in [(MADT_INDEX, true), (DMAR_INDEX, true), (0, false)] {
            let good = if table {
                base.tables[index].1.clone()
            } else {
                base.root.clone()
            };
            for at in (0..good.len()).filter(|&at| at != 9) {
                for v in [0u8, 1, 2, 3, 4, 6, 8, 0x10, 0x7f, 0x80, 0xff] {
                    let mut t = good.clone();
                    t[at] = v;
                    fix_table(&mut t);
                    let mut mem = mem_clone(&mem);
                    let addr = if table {
                        base.tables[index].0
                    } else {
                        base.root_at
                    };
                    mem.poke(addr, &t);
                    let outcome = parse(&mem, &rsdp);
                    if let Ok(acpi) = &outcome {
                        check_invariants(acpi);
                    }
                    outcomes.insert(format!("{:?}", outcome.map(|a| a.rejected)));
                }
            }
        }
        assert!(outcomes.len() > 3, "the corruptions reached the checks");
    }

    fn mem_clone(mem: &FakeMemory) -> FakeMemory {
        FakeMemory {
            regions: mem.regions.clone(),
        }
    }

    fn check_invariants(acpi: &Acpi) {
        if let Some(m) = &acpi.madt {
            assert!(m.local_apic_address != 0 && m.local_apic_address & PAGE_MASK == 0);
            for (i, c) in m.cpus.iter().enumerate() {
                assert!(m.cpus[..i].iter().all(|d| d.apic_id != c.apic_id));
            }
            assert!(m.overrides.iter().all(|o| o.irq < 16));
            assert!(m.local_nmis.iter().all(|n| n.lint <= 1));
        }
        if let Some(d) = &acpi.dmar {
            assert!((32..=64).contains(&d.host_address_width));
            assert!(d.drhds.iter().all(|u| u.register_base & PAGE_MASK == 0));
            assert!(d.rmrrs.iter().all(|r| r.base <= r.limit));
        }
        assert_eq!(acpi.to_string().lines().count(), 3);
    }
}
