//! What the boot loader handed over, read with every pointer, length and tag
//! size checked.
//!
//! Multiboot1 passes a fixed structure whose fields are guarded by flags and
//! point elsewhere (memory map, loader name); Multiboot2 passes one block of
//! 8-byte-aligned tags. All of it is loader input: a size out of range, a
//! tag running past the block, a string without its terminator is an
//! [`Error`], never a read outside what [`Memory`] grants and never a panic.
//! This module reads memory only through [`Memory`]; it owns no pointers.

use core::fmt;

/// Multiboot1 header magic (in the image).
pub const MB1_HEADER_MAGIC: u32 = 0x1bad_b002;
/// Multiboot2 header magic (in the image).
pub const MB2_HEADER_MAGIC: u32 = 0xe852_50d6;
/// eax when a Multiboot1 loader enters the image.
pub const MB1_BOOT_MAGIC: u32 = 0x2bad_b002;
/// eax when a Multiboot2 loader enters the image.
pub const MB2_BOOT_MAGIC: u32 = 0x36d7_6289;

/// Multiboot1 info: bytes up to and including `boot_loader_name`.
const MB1_INFO_LEN: usize = 68;
const MB1_FLAG_MEMORY: u32 = 1 << 0;
const MB1_FLAG_CMDLINE: u32 = 1 << 2;
const MB1_FLAG_MODS: u32 = 1 << 3;
const MB1_FLAG_MMAP: u32 = 1 << 6;
const MB1_FLAG_LOADER_NAME: u32 = 1 << 9;
/// Multiboot1 memory map entry after its `size` word: base, length, type.
const MB1_MMAP_ENTRY_MIN: usize = 20;

const MB2_TAG_END: u32 = 0;
const MB2_TAG_CMDLINE: u32 = 1;
const MB2_TAG_MODULE: u32 = 3;
const MB2_TAG_ACPI_OLD: u32 = 14;
const MB2_TAG_ACPI_NEW: u32 = 15;
const MB2_TAG_LOADER_NAME: u32 = 2;
const MB2_TAG_BASIC_MEMINFO: u32 = 4;
const MB2_TAG_MMAP: u32 = 6;
/// Multiboot2 memory map entry: base, length, type, reserved.
const MB2_MMAP_ENTRY_MIN: usize = 24;

/// Memory map type of RAM free for the OS (both protocols).
const MMAP_AVAILABLE: u32 = 1;

/// Largest Multiboot2 information block accepted (GRUB's is a few KiB even
/// with an EFI memory map).
pub const MAX_MB2_INFO: usize = 256 * 1024;
/// Largest Multiboot1 memory map accepted.
pub const MAX_MB1_MMAP: usize = 64 * 1024;
/// Longest loader name accepted, without its terminator.
pub const MAX_NAME: usize = 128;
/// Longest command line (the hypervisor's or a module's) accepted.
pub const MAX_CMDLINE: usize = 1024;
/// Boot modules kept; more are counted in [`BootInfo::dropped`].
pub const MAX_MODULES: usize = 8;
/// Available RAM ranges kept; more are counted in [`BootInfo::dropped`].
pub const MAX_RANGES: usize = 32;
/// Largest RSDP copy a Multiboot2 ACPI tag may carry (ACPI 2.0's is 36).
pub const MAX_RSDP: usize = 64;

/// Which protocol entered the image, from the magic in eax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Multiboot1 (QEMU `-kernel`, GRUB `multiboot`).
    Multiboot1,
    /// Multiboot2 (GRUB `multiboot2`).
    Multiboot2,
}

impl Protocol {
    /// The protocol whose boot magic is `magic`, if any.
    pub fn from_magic(magic: u32) -> Option<Self> {
        match magic {
            MB1_BOOT_MAGIC => Some(Self::Multiboot1),
            MB2_BOOT_MAGIC => Some(Self::Multiboot2),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Multiboot1 => "Multiboot1",
            Self::Multiboot2 => "Multiboot2",
        })
    }
}

/// Read access to the memory the loader's structures live in.
pub trait Memory {
    /// Up to `max` bytes from physical address `addr`: fewer where readable
    /// memory ends, `None` when `addr` itself is not readable.
    fn read(&self, addr: u64, max: usize) -> Option<&[u8]>;
}

/// How much memory the loader reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryTotal {
    /// The available ranges of the loader's memory map.
    Map {
        /// Sum of their lengths.
        usable_bytes: u64,
        /// How many there were.
        ranges: u32,
    },
    /// Only the basic counts (below 640 KiB, and from 1 MiB up to the first
    /// hole: on a PC that misses everything above the PCI hole).
    Basic {
        /// KiB of lower memory.
        lower_kib: u32,
        /// KiB of upper memory.
        upper_kib: u32,
    },
}

impl MemoryTotal {
    /// Whole MiB, rounded down.
    pub fn mib(&self) -> u64 {
        match *self {
            Self::Map { usable_bytes, .. } => usable_bytes >> 20,
            Self::Basic {
                lower_kib,
                upper_kib,
            } => (u64::from(lower_kib) + u64::from(upper_kib)) >> 10,
        }
    }
}

/// A boot module: its bytes at `[start, end)` and its command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module<'a> {
    /// First byte.
    pub start: u64,
    /// One past the last byte (`end >= start`, checked).
    pub end: u64,
    /// Its command line (printable ASCII; empty when none).
    pub cmdline: &'a str,
}

/// A range of available RAM from the memory map, `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// What the loader handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootInfo<'a> {
    /// The protocol that entered the image.
    pub protocol: Protocol,
    /// The loader's name, when it gave one (printable ASCII).
    pub loader_name: Option<&'a str>,
    /// The memory it reported, preferring the memory map.
    pub memory: Option<MemoryTotal>,
    /// The hypervisor's command line.
    pub cmdline: Option<&'a str>,
    /// Boot modules, in the loader's order (the first `module_count`).
    pub modules: [Option<Module<'a>>; MAX_MODULES],
    /// Available RAM ranges of the memory map (the first `range_count`).
    pub ram: [Option<Range>; MAX_RANGES],
    /// Modules and ranges that did not fit.
    pub dropped: u32,
    /// The RSDP copy of a Multiboot2 ACPI tag (the newer one preferred).
    pub rsdp: Option<&'a [u8]>,
    /// The span of every structure read: the information block, and for
    /// Multiboot1 the memory map, module table and strings it points at
    /// (kept out of the heap while their contents are borrowed).
    pub info: Range,
}

impl<'a> BootInfo<'a> {
    fn empty(protocol: Protocol, info: u64, len: usize) -> Self {
        BootInfo {
            protocol,
            loader_name: None,
            memory: None,
            cmdline: None,
            modules: [None; MAX_MODULES],
            ram: [None; MAX_RANGES],
            dropped: 0,
            rsdp: None,
            info: Range {
                start: info,
                end: info.saturating_add(len as u64),
            },
        }
    }

    /// The boot modules.
    pub fn modules(&self) -> impl Iterator<Item = &Module<'a>> {
        self.modules.iter().flatten()
    }

    /// The available RAM ranges.
    pub fn ram(&self) -> impl Iterator<Item = &Range> {
        self.ram.iter().flatten()
    }

    fn add_range(&mut self, kind: u32, start: u64, len: u64) {
        if kind != MMAP_AVAILABLE || len == 0 {
            return;
        }
        let end = start.saturating_add(len);
        match self.ram.iter_mut().find(|r| r.is_none()) {
            Some(slot) => *slot = Some(Range { start, end }),
            None => self.dropped = self.dropped.saturating_add(1),
        }
    }

    /// Widens [`BootInfo::info`] to cover `len` bytes at `addr`.
    fn cover(&mut self, addr: u64, len: usize) {
        self.info.start = self.info.start.min(addr);
        self.info.end = self.info.end.max(addr.saturating_add(len as u64));
    }

    fn add_module(&mut self, m: Module<'a>) {
        match self.modules.iter_mut().find(|r| r.is_none()) {
            Some(slot) => *slot = Some(m),
            None => self.dropped = self.dropped.saturating_add(1),
        }
    }
}

/// Why the loader's information was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A structure lies (partly) outside readable memory.
    Unreadable {
        /// Which structure.
        what: &'static str,
        /// Where the loader said it is.
        addr: u64,
        /// How long it should be.
        len: u64,
    },
    /// The Multiboot2 block is not 8-byte aligned.
    Misaligned(u64),
    /// The Multiboot2 block's total size is out of range.
    InfoSize(u32),
    /// A Multiboot2 tag is shorter than its header or runs past the block.
    TagSize {
        /// Offset of the tag in the block.
        offset: usize,
        /// Its type.
        kind: u32,
        /// Its claimed size.
        size: u32,
    },
    /// The Multiboot2 tags ran out before an end tag.
    NoEndTag,
    /// A fixed-size tag is too short for its fields.
    ShortTag {
        /// Its type.
        kind: u32,
        /// Its size.
        size: u32,
    },
    /// The memory map is malformed.
    MemoryMap(&'static str),
    /// The loader name is malformed.
    LoaderName(&'static str),
    /// A command line (the hypervisor's or a module's) is malformed.
    Cmdline(&'static str),
    /// A module's range is malformed.
    Module(&'static str),
    /// An ACPI RSDP tag is longer than any RSDP ([`MAX_RSDP`]).
    RsdpTag(u32),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Unreadable { what, addr, len } => {
                write!(
                    f,
                    "{what} at {addr:#x} ({len} bytes) is outside readable memory"
                )
            }
            Self::Misaligned(addr) => {
                write!(
                    f,
                    "Multiboot2 information at {addr:#x} is not 8-byte aligned"
                )
            }
            Self::InfoSize(size) => write!(
                f,
                "Multiboot2 information size {size} is outside 16..={MAX_MB2_INFO}"
            ),
            Self::TagSize { offset, kind, size } => write!(
                f,
                "Multiboot2 tag type {kind} at offset {offset} has size {size}, outside its block"
            ),
            Self::NoEndTag => f.write_str("Multiboot2 information has no end tag"),
            Self::ShortTag { kind, size } => {
                write!(f, "Multiboot2 tag type {kind} is too short ({size} bytes)")
            }
            Self::MemoryMap(why) => write!(f, "memory map: {why}"),
            Self::LoaderName(why) => write!(f, "boot loader name: {why}"),
            Self::Cmdline(why) => write!(f, "command line: {why}"),
            Self::Module(why) => write!(f, "boot module: {why}"),
            Self::RsdpTag(size) => write!(
                f,
                "Multiboot2 ACPI tag of {size} bytes is longer than an RSDP ({MAX_RSDP} at most)"
            ),
        }
    }
}

fn le32(b: &[u8], off: usize) -> Option<u32> {
    let bytes = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn le64(b: &[u8], off: usize) -> Option<u64> {
    let bytes = b.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// Exactly `len` bytes at `addr`, or why not.
fn read_exact<'m, M: Memory>(
    mem: &'m M,
    what: &'static str,
    addr: u64,
    len: usize,
) -> Result<&'m [u8], Error> {
    let unreadable = Error::Unreadable {
        what,
        addr,
        len: len as u64,
    };
    let b = mem.read(addr, len).ok_or(unreadable)?;
    b.get(..len).ok_or(unreadable)
}

/// The printable-ASCII string that starts `b` and ends at a NUL within
/// `max` + 1 bytes (it goes to the console as it is); `err` names which
/// string, with why it was refused (`no_nul` when the NUL is missing).
fn c_string<'a>(
    b: &'a [u8],
    max: usize,
    err: fn(&'static str) -> Error,
    no_nul: &'static str,
) -> Result<&'a str, Error> {
    let window = b.get(..b.len().min(max + 1)).unwrap_or(b);
    let end = window.iter().position(|&c| c == 0).ok_or(err(no_nul))?;
    let text = window.get(..end).unwrap_or_default();
    if !text.iter().all(|c| (0x20..0x7f).contains(c)) {
        return Err(err("not printable ASCII"));
    }
    core::str::from_utf8(text).map_err(|_| err("not printable ASCII"))
}

/// A loader name: at most [`MAX_NAME`] characters.
fn loader_name(b: &[u8]) -> Result<&str, Error> {
    c_string(b, MAX_NAME, Error::LoaderName, "no terminating NUL")
}

/// A command line: at most [`MAX_CMDLINE`] characters.
fn cmdline(b: &[u8]) -> Result<&str, Error> {
    c_string(
        b,
        MAX_CMDLINE,
        Error::Cmdline,
        "no terminating NUL within 1024 bytes",
    )
}

/// A command line at `addr` in loader memory.
fn cmdline_at<M: Memory>(mem: &M, addr: u64) -> Result<&str, Error> {
    let b = mem.read(addr, MAX_CMDLINE + 1).ok_or(Error::Unreadable {
        what: "command line",
        addr,
        len: 1,
    })?;
    cmdline(b)
}

/// A module's range, checked.
fn module_range(start: u64, end: u64) -> Result<(u64, u64), Error> {
    if end < start {
        return Err(Error::Module("ends before it starts"));
    }
    if start == 0 {
        return Err(Error::Module("starts at address 0"));
    }
    Ok((start, end))
}

/// Adds one memory map entry to the running total.
fn count_range(total: &mut (u64, u32), kind: u32, len: u64) -> Result<(), Error> {
    if kind == MMAP_AVAILABLE {
        total.0 = total
            .0
            .checked_add(len)
            .ok_or(Error::MemoryMap("lengths overflow 64 bits"))?;
        total.1 = total.1.saturating_add(1);
    }
    Ok(())
}

/// Reads the loader's information at `info` for `protocol`.
pub fn parse<M: Memory>(protocol: Protocol, info: u64, mem: &M) -> Result<BootInfo<'_>, Error> {
    match protocol {
        Protocol::Multiboot1 => multiboot1(info, mem),
        Protocol::Multiboot2 => multiboot2(info, mem),
    }
}

fn multiboot1<M: Memory>(info: u64, mem: &M) -> Result<BootInfo<'_>, Error> {
    let b = read_exact(mem, "Multiboot1 information", info, MB1_INFO_LEN)?;
    let field = |off| le32(b, off).unwrap_or(0);
    let flags = field(0);
    let mut out = BootInfo::empty(Protocol::Multiboot1, info, MB1_INFO_LEN);
    if flags & MB1_FLAG_MEMORY != 0 {
        out.memory = Some(MemoryTotal::Basic {
            lower_kib: field(4),
            upper_kib: field(8),
        });
    }
    // An empty map or module table is not looked for where it would be.
    if flags & MB1_FLAG_MMAP != 0 && field(44) != 0 {
        let len = field(44) as usize;
        if len > MAX_MB1_MMAP {
            return Err(Error::MemoryMap("longer than 64 KiB"));
        }
        let map = read_exact(mem, "Multiboot1 memory map", u64::from(field(48)), len)?;
        out.cover(u64::from(field(48)), len);
        out.memory = Some(mb1_memory_map(map, &mut out)?);
    }
    if flags & MB1_FLAG_CMDLINE != 0 {
        let text = cmdline_at(mem, u64::from(field(16)))?;
        out.cover(u64::from(field(16)), text.len() + 1);
        out.cmdline = Some(text);
    }
    if flags & MB1_FLAG_MODS != 0 && field(20) != 0 {
        // mods_count and mods_addr; each entry: start, end, string, reserved.
        let count = field(20) as usize;
        if count > 64 {
            return Err(Error::Module("more than 64 modules"));
        }
        let table = read_exact(
            mem,
            "Multiboot1 module table",
            u64::from(field(24)),
            count * 16,
        )?;
        out.cover(u64::from(field(24)), count * 16);
        for e in table.chunks_exact(16) {
            let (start, end) = module_range(
                u64::from(le32(e, 0).unwrap_or(0)),
                u64::from(le32(e, 4).unwrap_or(0)),
            )?;
            let string = u64::from(le32(e, 8).unwrap_or(0));
            let text = if string == 0 {
                ""
            } else {
                cmdline_at(mem, string)?
            };
            if string != 0 {
                out.cover(string, text.len() + 1);
            }
            out.add_module(Module {
                start,
                end,
                cmdline: text,
            });
        }
    }
    if flags & MB1_FLAG_LOADER_NAME != 0 {
        let addr = u64::from(field(64));
        let b = mem.read(addr, MAX_NAME + 1).ok_or(Error::Unreadable {
            what: "boot loader name",
            addr,
            len: 1,
        })?;
        let name = loader_name(b)?;
        out.cover(addr, name.len() + 1);
        out.loader_name = Some(name);
    }
    Ok(out)
}

/// Multiboot1 map: entries of `size` (not counting itself) then base,
/// length, type.
fn mb1_memory_map(map: &[u8], out: &mut BootInfo) -> Result<MemoryTotal, Error> {
    let mut total = (0, 0);
    let mut off = 0usize;
    while off < map.len() {
        let size = le32(map, off).ok_or(Error::MemoryMap("truncated entry"))? as usize;
        if size < MB1_MMAP_ENTRY_MIN {
            return Err(Error::MemoryMap("entry smaller than 20 bytes"));
        }
        let entry = off
            .checked_add(4)
            .and_then(|start| map.get(start..start.checked_add(size)?))
            .ok_or(Error::MemoryMap("entry runs past the map"))?;
        let len = le64(entry, 8).unwrap_or(0);
        let kind = le32(entry, 16).unwrap_or(0);
        count_range(&mut total, kind, len)?;
        out.add_range(kind, le64(entry, 0).unwrap_or(0), len);
        off += 4 + size;
    }
    Ok(MemoryTotal::Map {
        usable_bytes: total.0,
        ranges: total.1,
    })
}

fn multiboot2<M: Memory>(info: u64, mem: &M) -> Result<BootInfo<'_>, Error> {
    if !info.is_multiple_of(8) {
        return Err(Error::Misaligned(info));
    }
    let head = read_exact(mem, "Multiboot2 information", info, 8)?;
    let total_size = le32(head, 0).unwrap_or(0);
    let total = total_size as usize;
    if !(16..=MAX_MB2_INFO).contains(&total) {
        return Err(Error::InfoSize(total_size));
    }
    let b = read_exact(mem, "Multiboot2 information", info, total)?;
    let mut out = BootInfo::empty(Protocol::Multiboot2, info, total);
    let mut off = 8usize;
    while off + 8 <= total {
        let kind = le32(b, off).unwrap_or(0);
        let size = le32(b, off + 4).unwrap_or(0);
        let bad_size = Error::TagSize {
            offset: off,
            kind,
            size,
        };
        let body = (size as usize)
            .checked_sub(8)
            .and_then(|len| b.get(off + 8..(off + 8).checked_add(len)?))
            .ok_or(bad_size)?;
        match kind {
            MB2_TAG_END if size == 8 => return Ok(out),
            MB2_TAG_END => return Err(bad_size),
            MB2_TAG_LOADER_NAME => out.loader_name = Some(loader_name(body)?),
            MB2_TAG_BASIC_MEMINFO => {
                let short = Error::ShortTag { kind, size };
                let basic = MemoryTotal::Basic {
                    lower_kib: le32(body, 0).ok_or(short)?,
                    upper_kib: le32(body, 4).ok_or(short)?,
                };
                // The memory map, wherever it comes, says more.
                if !matches!(out.memory, Some(MemoryTotal::Map { .. })) {
                    out.memory = Some(basic);
                }
            }
            MB2_TAG_MMAP => out.memory = Some(mb2_memory_map(body, size, &mut out)?),
            MB2_TAG_CMDLINE => out.cmdline = Some(cmdline(body)?),
            MB2_TAG_MODULE => {
                let short = Error::ShortTag { kind, size };
                let (start, end) = module_range(
                    u64::from(le32(body, 0).ok_or(short)?),
                    u64::from(le32(body, 4).ok_or(short)?),
                )?;
                let text = cmdline(body.get(8..).ok_or(short)?)?;
                out.add_module(Module {
                    start,
                    end,
                    cmdline: text,
                });
            }
            MB2_TAG_ACPI_OLD | MB2_TAG_ACPI_NEW => {
                if body.len() > MAX_RSDP {
                    return Err(Error::RsdpTag(size));
                }
                // The ACPI 2.0 copy wins over the 1.0 one, whatever the order.
                if kind == MB2_TAG_ACPI_NEW || out.rsdp.is_none() {
                    out.rsdp = Some(body);
                }
            }
            _ => {}
        }
        // Tags start 8-byte aligned; the end of the block bounds this.
        off = (off + size as usize + 7) & !7;
    }
    Err(Error::NoEndTag)
}

/// Multiboot2 map tag body: entry_size, entry_version, then whole entries.
fn mb2_memory_map<'a>(
    body: &'a [u8],
    size: u32,
    out: &mut BootInfo<'a>,
) -> Result<MemoryTotal, Error> {
    let short = Error::ShortTag {
        kind: MB2_TAG_MMAP,
        size,
    };
    let entry_size = le32(body, 0).ok_or(short)? as usize;
    let entries = body.get(8..).ok_or(short)?;
    if entry_size < MB2_MMAP_ENTRY_MIN || !entry_size.is_multiple_of(8) {
        return Err(Error::MemoryMap(
            "entry size below 24 or not a multiple of 8",
        ));
    }
    let chunks = entries.chunks_exact(entry_size);
    if !chunks.remainder().is_empty() {
        return Err(Error::MemoryMap("not a whole number of entries"));
    }
    let mut total = (0, 0);
    for e in chunks {
        let (kind, len) = (le32(e, 16).unwrap_or(0), le64(e, 8).unwrap_or(0));
        count_range(&mut total, kind, len)?;
        out.add_range(kind, le64(e, 0).unwrap_or(0), len);
    }
    Ok(MemoryTotal::Map {
        usable_bytes: total.0,
        ranges: total.1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loader memory: `bytes` at physical `base`.
    struct Fake {
        base: u64,
        bytes: Vec<u8>,
    }

    impl Memory for Fake {
        fn read(&self, addr: u64, max: usize) -> Option<&[u8]> {
            let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
            let rest = self.bytes.get(off..)?;
            if rest.is_empty() {
                return None;
            }
            Some(&rest[..rest.len().min(max)])
        }
    }

    const BASE: u64 = 0x9000;

    fn tag(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&(8 + body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
    }

    fn mmap_entry(base: u64, len: u64, kind: u32) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(&base.to_le_bytes());
        e.extend_from_slice(&len.to_le_bytes());
        e.extend_from_slice(&kind.to_le_bytes());
        e.extend_from_slice(&0u32.to_le_bytes());
        e
    }

    /// A block like GRUB's: name, basic meminfo, a 3-entry map, end.
    fn grub_like() -> Vec<u8> {
        let mut b = vec![0; 8];
        tag(&mut b, MB2_TAG_LOADER_NAME, b"GRUB 2.06\0");
        let mut meminfo = Vec::new();
        meminfo.extend_from_slice(&639u32.to_le_bytes());
        meminfo.extend_from_slice(&129_920u32.to_le_bytes());
        tag(&mut b, MB2_TAG_BASIC_MEMINFO, &meminfo);
        let mut map = Vec::new();
        map.extend_from_slice(&24u32.to_le_bytes());
        map.extend_from_slice(&0u32.to_le_bytes());
        map.extend(mmap_entry(0, 0x9fc00, 1));
        map.extend(mmap_entry(0xf0000, 0x10000, 2));
        map.extend(mmap_entry(0x10_0000, 0x7ee_0000, 1));
        tag(&mut b, MB2_TAG_MMAP, &map);
        tag(&mut b, 99, &[1, 2, 3]);
        tag(&mut b, MB2_TAG_END, &[]);
        let len = b.len() as u32;
        b[..4].copy_from_slice(&len.to_le_bytes());
        b
    }

    /// What a parse found, owned: (loader name, memory).
    type Found = (Option<String>, Option<MemoryTotal>);

    fn run(protocol: Protocol, bytes: Vec<u8>) -> Result<Found, Error> {
        let mem = Fake { base: BASE, bytes };
        let info = parse(protocol, BASE, &mem)?;
        assert_eq!(info.protocol, protocol);
        Ok((info.loader_name.map(String::from), info.memory))
    }

    fn mb2(bytes: Vec<u8>) -> Result<Found, Error> {
        run(Protocol::Multiboot2, bytes)
    }

    #[test]
    fn magic_names_the_protocol() {
        assert_eq!(
            Protocol::from_magic(0x2bad_b002),
            Some(Protocol::Multiboot1)
        );
        assert_eq!(
            Protocol::from_magic(0x36d7_6289),
            Some(Protocol::Multiboot2)
        );
        assert_eq!(Protocol::from_magic(0), None);
        assert_eq!(Protocol::from_magic(MB2_HEADER_MAGIC), None);
    }

    #[test]
    fn multiboot2_as_grub_gives_it() {
        let (name, memory) = mb2(grub_like()).unwrap();
        assert_eq!(name.as_deref(), Some("GRUB 2.06"));
        assert_eq!(
            memory,
            Some(MemoryTotal::Map {
                usable_bytes: 0x9fc00 + 0x7ee_0000,
                ranges: 2
            })
        );
        assert_eq!(memory.unwrap().mib(), 127);
    }

    #[test]
    fn multiboot2_block_bounds() {
        assert_eq!(
            parse(
                Protocol::Multiboot2,
                BASE + 4,
                &Fake {
                    base: BASE,
                    bytes: grub_like()
                }
            ),
            Err(Error::Misaligned(BASE + 4))
        );
        let mut b = grub_like();
        b[..4].copy_from_slice(&8u32.to_le_bytes());
        assert_eq!(mb2(b), Err(Error::InfoSize(8)));
        let mut b = grub_like();
        b[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(mb2(b), Err(Error::InfoSize(u32::MAX)));
        // Claims more than memory holds.
        let mut b = grub_like();
        let n = b.len() as u32 + 64;
        b[..4].copy_from_slice(&n.to_le_bytes());
        assert!(matches!(mb2(b), Err(Error::Unreadable { .. })));
        assert!(matches!(
            parse(
                Protocol::Multiboot2,
                0x1000,
                &Fake {
                    base: BASE,
                    bytes: grub_like()
                }
            ),
            Err(Error::Unreadable { .. })
        ));
    }

    #[test]
    fn multiboot2_tag_sizes() {
        // The name tag (offset 8) claiming 4 bytes, or running past the block.
        for size in [0u32, 7, 10_000, u32::MAX] {
            let mut b = grub_like();
            b[12..16].copy_from_slice(&size.to_le_bytes());
            assert!(
                matches!(
                    mb2(b),
                    Err(Error::TagSize {
                        offset: 8,
                        kind: 2,
                        ..
                    })
                ),
                "size {size}"
            );
        }
        // Cut before the end tag.
        let mut b = grub_like();
        let n = b.len() - 8;
        b.truncate(n);
        b[..4].copy_from_slice(&(n as u32).to_le_bytes());
        assert_eq!(mb2(b), Err(Error::NoEndTag));
        // An end tag must be 8 bytes.
        let mut b = vec![24, 0, 0, 0, 0, 0, 0, 0];
        tag(&mut b, MB2_TAG_END, &[0; 8]);
        assert!(matches!(mb2(b), Err(Error::TagSize { kind: 0, .. })));
    }

    #[test]
    fn multiboot2_names_and_maps() {
        let with = |kind, body: &[u8]| {
            let mut b = vec![0; 8];
            tag(&mut b, kind, body);
            tag(&mut b, MB2_TAG_END, &[]);
            let len = b.len() as u32;
            b[..4].copy_from_slice(&len.to_le_bytes());
            mb2(b)
        };
        assert_eq!(
            with(MB2_TAG_LOADER_NAME, b"GRUB"),
            Err(Error::LoaderName("no terminating NUL"))
        );
        assert_eq!(
            with(MB2_TAG_LOADER_NAME, b"\x1b[2J\0"),
            Err(Error::LoaderName("not printable ASCII"))
        );
        assert_eq!(
            with(MB2_TAG_LOADER_NAME, b"\0").unwrap().0.as_deref(),
            Some("")
        );
        assert_eq!(
            with(MB2_TAG_BASIC_MEMINFO, &[1, 0, 0, 0]),
            Err(Error::ShortTag { kind: 4, size: 12 })
        );
        for entry_size in [0u32, 20, 28] {
            let mut body = entry_size.to_le_bytes().to_vec();
            body.extend_from_slice(&[0; 4]);
            body.extend(mmap_entry(0, 1 << 20, 1));
            assert!(matches!(
                with(MB2_TAG_MMAP, &body),
                Err(Error::MemoryMap(_))
            ));
        }
        let mut body = 24u32.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 4]);
        body.extend(mmap_entry(0, u64::MAX, 1));
        body.extend(mmap_entry(0, 1, 1));
        assert_eq!(
            with(MB2_TAG_MMAP, &body),
            Err(Error::MemoryMap("lengths overflow 64 bits"))
        );
        body.truncate(8 + 24 + 12);
        assert!(matches!(
            with(MB2_TAG_MMAP, &body),
            Err(Error::MemoryMap(_))
        ));
    }

    /// Every truncation and every single-byte corruption of a good block
    /// ends in a value, never a panic.
    #[test]
    fn multiboot2_corruptions_never_panic() {
        let good = grub_like();
        for cut in 0..good.len() {
            let _ = mb2(good[..cut].to_vec());
        }
        for at in 0..good.len() {
            for v in [0u8, 1, 7, 8, 0x7f, 0x80, 0xff] {
                let mut b = good.clone();
                b[at] = v;
                let _ = mb2(b);
            }
        }
    }

    /// A Multiboot1 block like QEMU's: info at BASE, name and map after it.
    fn qemu_like() -> Vec<u8> {
        let mut b = vec![0u8; 0x100];
        let flags = MB1_FLAG_MEMORY | MB1_FLAG_MMAP | MB1_FLAG_LOADER_NAME;
        b[0..4].copy_from_slice(&flags.to_le_bytes());
        b[4..8].copy_from_slice(&639u32.to_le_bytes());
        b[8..12].copy_from_slice(&129_920u32.to_le_bytes());
        let map_at = 0x80u32;
        let mut map = Vec::new();
        for (base, len, kind) in [
            (0u64, 0x9fc00u64, 1u32),
            (0x10_0000, 0x7ee_0000, 1),
            (0xfffc_0000, 0x4_0000, 2),
        ] {
            map.extend_from_slice(&20u32.to_le_bytes());
            map.extend_from_slice(&mmap_entry(base, len, kind)[..20]);
        }
        b[44..48].copy_from_slice(&(map.len() as u32).to_le_bytes());
        b[48..52].copy_from_slice(&(BASE as u32 + map_at).to_le_bytes());
        b[map_at as usize..map_at as usize + map.len()].copy_from_slice(&map);
        b[64..68].copy_from_slice(&(BASE as u32 + 0xf0).to_le_bytes());
        b[0xf0..0xf5].copy_from_slice(b"qemu\0");
        b
    }

    fn mb1(bytes: Vec<u8>) -> Result<Found, Error> {
        run(Protocol::Multiboot1, bytes)
    }

    #[test]
    fn multiboot1_as_qemu_gives_it() {
        let (name, memory) = mb1(qemu_like()).unwrap();
        assert_eq!(name.as_deref(), Some("qemu"));
        assert_eq!(
            memory,
            Some(MemoryTotal::Map {
                usable_bytes: 0x9fc00 + 0x7ee_0000,
                ranges: 2
            })
        );
        // Without the map flag, the basic counts.
        let mut b = qemu_like();
        b[0] &= !(MB1_FLAG_MMAP as u8);
        assert_eq!(
            mb1(b).unwrap().1,
            Some(MemoryTotal::Basic {
                lower_kib: 639,
                upper_kib: 129_920
            })
        );
        // Nothing flagged, nothing read.
        let mut b = qemu_like();
        b[..4].fill(0);
        b[48..52].fill(0xff);
        b[64..68].fill(0xff);
        assert_eq!(mb1(b), Ok((None, None)));
    }

    #[test]
    fn multiboot1_pointers_and_sizes() {
        // Name or map outside memory.
        let mut b = qemu_like();
        b[64..68].copy_from_slice(&0x10u32.to_le_bytes());
        assert!(matches!(
            mb1(b),
            Err(Error::Unreadable {
                what: "boot loader name",
                ..
            })
        ));
        let mut b = qemu_like();
        b[44..48].copy_from_slice(&0x1000u32.to_le_bytes());
        assert!(matches!(mb1(b), Err(Error::Unreadable { .. })));
        let mut b = qemu_like();
        b[44..48].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(mb1(b), Err(Error::MemoryMap("longer than 64 KiB")));
        // Entry sizes: too small, running past the map.
        let mut b = qemu_like();
        b[0x80..0x84].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(mb1(b), Err(Error::MemoryMap("entry smaller than 20 bytes")));
        let mut b = qemu_like();
        b[0x80..0x84].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert_eq!(mb1(b), Err(Error::MemoryMap("entry runs past the map")));
        // A name running to the end of memory without a NUL.
        let mut b = qemu_like();
        b[0xf0..].fill(b'q');
        assert_eq!(mb1(b), Err(Error::LoaderName("no terminating NUL")));
        // The info block itself cut short.
        assert!(matches!(
            mb1(qemu_like()[..40].to_vec()),
            Err(Error::Unreadable { .. })
        ));
    }

    #[test]
    fn multiboot1_corruptions_never_panic() {
        let good = qemu_like();
        for at in 0..good.len() {
            for v in [0u8, 1, 0x14, 0x7f, 0xff] {
                let mut b = good.clone();
                b[at] = v;
                let _ = mb1(b);
            }
        }
    }

    /// A Multiboot2 block holding `tags` (type, body), then an end tag.
    fn mb2_block(tags: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut b = vec![0; 8];
        for (kind, body) in tags {
            tag(&mut b, *kind, body);
        }
        tag(&mut b, MB2_TAG_END, &[]);
        let len = b.len() as u32;
        b[..4].copy_from_slice(&len.to_le_bytes());
        b
    }

    /// A Multiboot2 module tag: mod_start, mod_end, then `cmdline` as given
    /// (the caller writes the NUL, or leaves it out).
    fn module_tag(start: u32, end: u32, cmdline: &[u8]) -> (u32, Vec<u8>) {
        let mut body = start.to_le_bytes().to_vec();
        body.extend_from_slice(&end.to_le_bytes());
        body.extend_from_slice(cmdline);
        (MB2_TAG_MODULE, body)
    }

    /// A Multiboot2 memory map tag of `entries` (base, length, type).
    fn mmap_tag(entries: &[(u64, u64, u32)]) -> (u32, Vec<u8>) {
        let mut body = 24u32.to_le_bytes().to_vec();
        body.extend_from_slice(&0u32.to_le_bytes());
        for &(base, len, kind) in entries {
            body.extend(mmap_entry(base, len, kind));
        }
        (MB2_TAG_MMAP, body)
    }

    /// An ACPI 1.0 RSDP (20 bytes).
    fn rsdp_v1() -> Vec<u8> {
        let mut r = b"RSD PTR ".to_vec();
        r.push(0x5a);
        r.extend_from_slice(b"BOCHS ");
        r.push(0);
        r.extend_from_slice(&0x000e_1000u32.to_le_bytes());
        r
    }

    /// An ACPI 2.0 RSDP (36 bytes).
    fn rsdp_v2() -> Vec<u8> {
        let mut r = b"RSD PTR ".to_vec();
        r.push(0xa5);
        r.extend_from_slice(b"BOCHS ");
        r.push(2);
        r.extend_from_slice(&0x000e_1000u32.to_le_bytes());
        r.extend_from_slice(&36u32.to_le_bytes());
        r.extend_from_slice(&0x000e_2000u64.to_le_bytes());
        r.extend_from_slice(&[0x11, 0, 0, 0]);
        r
    }

    fn at_base(bytes: Vec<u8>) -> Fake {
        Fake { base: BASE, bytes }
    }

    /// Why a Multiboot2 block of `tags` is refused.
    fn mb2_refusal(tags: &[(u32, Vec<u8>)]) -> Error {
        let mem = at_base(mb2_block(tags));
        parse(Protocol::Multiboot2, BASE, &mem).unwrap_err()
    }

    #[test]
    fn multiboot2_modules_and_command_line() {
        let block = mb2_block(&[
            (MB2_TAG_CMDLINE, b"loglvl=all console=com1\0".to_vec()),
            module_tag(0x20_0000, 0x20_8000, b"x86guest mode=bench\0"),
            module_tag(0x30_0000, 0x30_0000, b"\0"),
        ]);
        let len = block.len() as u64;
        let mem = at_base(block);
        let info = parse(Protocol::Multiboot2, BASE, &mem).unwrap();
        assert_eq!(info.cmdline, Some("loglvl=all console=com1"));
        let modules: Vec<Module> = info.modules().copied().collect();
        assert_eq!(
            modules,
            [
                Module {
                    start: 0x20_0000,
                    end: 0x20_8000,
                    cmdline: "x86guest mode=bench"
                },
                // Empty, and with an empty command line: both fine.
                Module {
                    start: 0x30_0000,
                    end: 0x30_0000,
                    cmdline: ""
                },
            ]
        );
        assert!(info.modules[2..].iter().all(Option::is_none));
        assert_eq!(info.dropped, 0);
        assert_eq!(
            (info.rsdp, info.loader_name, info.memory),
            (None, None, None)
        );
        // Multiboot2's span is the block itself.
        assert_eq!(
            info.info,
            Range {
                start: BASE,
                end: BASE + len
            }
        );
    }

    #[test]
    fn multiboot2_acpi_tags_prefer_the_new_rsdp_in_either_order() {
        let (old, new) = (rsdp_v1(), rsdp_v2());
        let rsdp_of = |tags: &[(u32, Vec<u8>)]| {
            let mem = at_base(mb2_block(tags));
            let info = parse(Protocol::Multiboot2, BASE, &mem).unwrap();
            info.rsdp.map(<[u8]>::to_vec)
        };
        let both = [
            (MB2_TAG_ACPI_OLD, old.clone()),
            (MB2_TAG_ACPI_NEW, new.clone()),
        ];
        assert_eq!(rsdp_of(&both), Some(new.clone()));
        let reversed = [both[1].clone(), both[0].clone()];
        assert_eq!(rsdp_of(&reversed), Some(new.clone()));
        assert_eq!(rsdp_of(&both[..1]), Some(old.clone()));
        assert_eq!(rsdp_of(&both[1..]), Some(new.clone()));
        assert_eq!(rsdp_of(&[]), None);
        // Two old copies: the first stays.
        let mut other = old.clone();
        other[8] ^= 0xff;
        assert_eq!(
            rsdp_of(&[(MB2_TAG_ACPI_OLD, old.clone()), (MB2_TAG_ACPI_OLD, other)]),
            Some(old)
        );
        // MAX_RSDP bytes is still a copy.
        assert_eq!(
            rsdp_of(&[(MB2_TAG_ACPI_NEW, vec![7; MAX_RSDP])]),
            Some(vec![7; MAX_RSDP])
        );
    }

    #[test]
    fn multiboot2_acpi_tag_longer_than_max_rsdp_is_refused() {
        for kind in [MB2_TAG_ACPI_OLD, MB2_TAG_ACPI_NEW] {
            assert_eq!(
                mb2_refusal(&[(kind, vec![0; MAX_RSDP + 1])]),
                Error::RsdpTag(8 + MAX_RSDP as u32 + 1)
            );
            // Refused even after a good copy was kept.
            let after_good = [(MB2_TAG_ACPI_NEW, rsdp_v2()), (kind, vec![0; 4096])];
            assert!(matches!(mb2_refusal(&after_good), Error::RsdpTag(_)));
        }
    }

    /// The refusal of an oversized ACPI tag does not call it short.
    #[test]
    fn multiboot2_oversized_acpi_tag_is_not_called_short() {
        let text = mb2_refusal(&[(MB2_TAG_ACPI_NEW, vec![0; MAX_RSDP + 1])]).to_string();
        assert!(!text.contains("too short"), "{text}");
    }

    #[test]
    fn multiboot2_module_refusals() {
        assert_eq!(
            mb2_refusal(&[module_tag(0x20_1000, 0x20_0fff, b"\0")]),
            Error::Module("ends before it starts")
        );
        assert_eq!(
            mb2_refusal(&[module_tag(0, 0x1000, b"\0")]),
            Error::Module("starts at address 0")
        );
        // Address 0 is refused even for an empty module.
        assert_eq!(
            mb2_refusal(&[module_tag(0, 0, b"\0")]),
            Error::Module("starts at address 0")
        );
        // Too short for mod_start and mod_end.
        assert_eq!(
            mb2_refusal(&[(MB2_TAG_MODULE, vec![0, 0, 0x20, 0])]),
            Error::ShortTag {
                kind: MB2_TAG_MODULE,
                size: 12
            }
        );
        // The command line must be there, terminated and printable.
        assert_eq!(
            mb2_refusal(&[module_tag(0x20_0000, 0x20_1000, b"")]),
            Error::Cmdline("no terminating NUL within 1024 bytes")
        );
        assert_eq!(
            mb2_refusal(&[module_tag(0x20_0000, 0x20_1000, b"guest\x07\0")]),
            Error::Cmdline("not printable ASCII")
        );
        // A later bad module refuses the whole block.
        assert_eq!(
            mb2_refusal(&[
                module_tag(0x20_0000, 0x20_1000, b"good\0"),
                module_tag(0x30_0000, 0x2f_0000, b"bad\0"),
            ]),
            Error::Module("ends before it starts")
        );
    }

    #[test]
    fn multiboot2_modules_beyond_max_are_counted_as_dropped() {
        let extra = 3;
        let tags: Vec<_> = (0..MAX_MODULES + extra)
            .map(|i| {
                let start = 0x100_0000 * (i as u32 + 1);
                module_tag(start, start + 0x1000, format!("m{i}\0").as_bytes())
            })
            .collect();
        let mem = at_base(mb2_block(&tags));
        let info = parse(Protocol::Multiboot2, BASE, &mem).unwrap();
        assert_eq!(info.dropped, extra as u32);
        let kept: Vec<(u64, String)> = info
            .modules()
            .map(|m| (m.start, m.cmdline.to_string()))
            .collect();
        let first: Vec<(u64, String)> = (0..MAX_MODULES)
            .map(|i| (0x100_0000 * (i as u64 + 1), format!("m{i}")))
            .collect();
        assert_eq!(kept, first, "the loader's first modules are kept");
    }

    #[test]
    fn multiboot2_available_ranges_are_recorded_and_others_skipped() {
        let mem = at_base(grub_like());
        let info = parse(Protocol::Multiboot2, BASE, &mem).unwrap();
        let ram: Vec<Range> = info.ram().copied().collect();
        assert_eq!(
            ram,
            [
                Range {
                    start: 0,
                    end: 0x9fc00
                },
                Range {
                    start: 0x10_0000,
                    end: 0x7fe_0000
                },
            ]
        );
        assert_eq!(info.dropped, 0);

        // Reserved (2), ACPI (3), NVS (4), bad (5) and empty ranges are
        // skipped; a range running past 2^64 ends there.
        let mem = at_base(mb2_block(&[mmap_tag(&[
            (0x1000, 0x1000, 2),
            (0x2000, 0x1000, 3),
            (0x3000, 0x1000, 1),
            (0x4000, 0x1000, 4),
            (0x5000, 0x1000, 5),
            (0x6000, 0, 1),
            (u64::MAX - 0xfff, 0x2000, 1),
        ])]));
        let info = parse(Protocol::Multiboot2, BASE, &mem).unwrap();
        let ram: Vec<Range> = info.ram().copied().collect();
        assert_eq!(
            ram,
            [
                Range {
                    start: 0x3000,
                    end: 0x4000
                },
                Range {
                    start: u64::MAX - 0xfff,
                    end: u64::MAX
                },
            ]
        );
        assert_eq!(info.dropped, 0);
    }

    #[test]
    fn multiboot2_ranges_beyond_max_are_counted_as_dropped() {
        let extra = 5;
        let mut entries = Vec::new();
        for i in 0..(MAX_RANGES + extra) as u64 {
            entries.push((i << 24, 0x1000, MMAP_AVAILABLE));
            // Reserved ones between them take no slot and are not dropped.
            entries.push((i << 24 | 0x10_0000, 0x1000, 2));
        }
        let mut tags = vec![mmap_tag(&entries)];
        // Modules and ranges share the count.
        for i in 0..MAX_MODULES as u32 + 2 {
            tags.push(module_tag(
                0x100_0000 * (i + 1),
                0x100_0000 * (i + 1),
                b"\0",
            ));
        }
        let mem = at_base(mb2_block(&tags));
        let info = parse(Protocol::Multiboot2, BASE, &mem).unwrap();
        assert_eq!(info.dropped, extra as u32 + 2);
        let starts: Vec<u64> = info.ram().map(|r| r.start).collect();
        let first: Vec<u64> = (0..MAX_RANGES as u64).map(|i| i << 24).collect();
        assert_eq!(starts, first);
        // The total still counts every available range.
        assert_eq!(
            info.memory,
            Some(MemoryTotal::Map {
                usable_bytes: (MAX_RANGES + extra) as u64 * 0x1000,
                ranges: (MAX_RANGES + extra) as u32
            })
        );
    }

    #[test]
    fn multiboot2_command_line_refusals() {
        let with_cmdline = |body: &[u8]| {
            let mem = at_base(mb2_block(&[(MB2_TAG_CMDLINE, body.to_vec())]));
            parse(Protocol::Multiboot2, BASE, &mem).map(|i| i.cmdline.map(String::from))
        };
        for bad in [
            &b"console=com1\x1b[2J\0"[..],
            b"tab\there\0",
            b"caf\xc3\xa9\0",
            b"\x7f\0",
        ] {
            assert_eq!(
                with_cmdline(bad),
                Err(Error::Cmdline("not printable ASCII")),
                "{bad:?}"
            );
        }
        assert_eq!(
            with_cmdline(b"loglvl=all"),
            Err(Error::Cmdline("no terminating NUL within 1024 bytes"))
        );
        assert_eq!(
            with_cmdline(b""),
            Err(Error::Cmdline("no terminating NUL within 1024 bytes"))
        );
        // MAX_CMDLINE characters fit; one more does not, NUL or not.
        let mut longest = vec![b'a'; MAX_CMDLINE];
        longest.push(0);
        assert_eq!(with_cmdline(&longest), Ok(Some("a".repeat(MAX_CMDLINE))));
        let mut too_long = vec![b'a'; MAX_CMDLINE + 1];
        too_long.push(0);
        assert_eq!(
            with_cmdline(&too_long),
            Err(Error::Cmdline("no terminating NUL within 1024 bytes"))
        );
        // Bytes after the NUL are not looked at.
        assert_eq!(with_cmdline(b"ok\0\x01\x02"), Ok(Some("ok".into())));
        assert_eq!(with_cmdline(b"\0"), Ok(Some(String::new())));
    }

    // Multiboot1 with a command line and modules. The structures are laid
    // out around the information block so that its span has to widen both
    // ways (offsets from BASE).
    const MB1_MAP: usize = 0x000;
    const MB1_TABLE: usize = 0x060;
    const MB1_INFO: usize = 0x100;
    const MB1_CMDLINE: usize = 0x180;
    const MB1_MOD1_STRING: usize = 0x1a0;
    const MB1_NAME: usize = 0x1c0;
    const MB1_MOD2_STRING: usize = 0x1e0;

    fn put32(b: &mut [u8], off: usize, v: u32) {
        b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn addr32(off: usize) -> u32 {
        BASE as u32 + off as u32
    }

    /// Memory with a Multiboot1 block at BASE + MB1_INFO flagging memory,
    /// map, command line, modules (three: two with strings, one without)
    /// and loader name.
    fn mb1_with_modules() -> Vec<u8> {
        let mut b = vec![0u8; 0x200];
        let flags = MB1_FLAG_MEMORY
            | MB1_FLAG_CMDLINE
            | MB1_FLAG_MODS
            | MB1_FLAG_MMAP
            | MB1_FLAG_LOADER_NAME;
        let info = MB1_INFO;
        put32(&mut b, info, flags);
        put32(&mut b, info + 4, 639);
        put32(&mut b, info + 8, 129_920);
        put32(&mut b, info + 16, addr32(MB1_CMDLINE));
        put32(&mut b, info + 20, 3);
        put32(&mut b, info + 24, addr32(MB1_TABLE));
        let mut map = Vec::new();
        for (base, len, kind) in [
            (0u64, 0x9fc00u64, 1u32),
            (0x10_0000, 0x7ee_0000, 1),
            (0xfffc_0000, 0x4_0000, 2),
        ] {
            map.extend_from_slice(&20u32.to_le_bytes());
            map.extend_from_slice(&mmap_entry(base, len, kind)[..20]);
        }
        put32(&mut b, info + 44, map.len() as u32);
        put32(&mut b, info + 48, addr32(MB1_MAP));
        b[MB1_MAP..MB1_MAP + map.len()].copy_from_slice(&map);
        put32(&mut b, info + 64, addr32(MB1_NAME));
        for (i, (start, end, string)) in [
            (0x20_0000u32, 0x20_8000u32, addr32(MB1_MOD1_STRING)),
            (0x30_0000, 0x30_1000, addr32(MB1_MOD2_STRING)),
            (0x40_0000, 0x40_0000, 0),
        ]
        .into_iter()
        .enumerate()
        {
            let e = MB1_TABLE + 16 * i;
            put32(&mut b, e, start);
            put32(&mut b, e + 4, end);
            put32(&mut b, e + 8, string);
            put32(&mut b, e + 12, 0xdead_beef);
        }
        for (at, text) in [
            (MB1_CMDLINE, &b"hv loglvl=all\0"[..]),
            (MB1_MOD1_STRING, b"guest one\0"),
            (MB1_NAME, b"qemu\0"),
            (MB1_MOD2_STRING, b"guest two a=b\0"),
        ] {
            b[at..at + text.len()].copy_from_slice(text);
        }
        b
    }

    fn mb1_parse(mem: &Fake) -> Result<BootInfo<'_>, Error> {
        parse(Protocol::Multiboot1, BASE + MB1_INFO as u64, mem)
    }

    /// Why `mb1_with_modules` changed by `change` is refused.
    fn mb1_refusal(change: impl FnOnce(&mut Vec<u8>)) -> Error {
        let mut b = mb1_with_modules();
        change(&mut b);
        mb1_parse(&at_base(b)).unwrap_err()
    }

    #[test]
    fn multiboot1_modules_and_command_line() {
        let mem = at_base(mb1_with_modules());
        let info = mb1_parse(&mem).unwrap();
        assert_eq!(info.cmdline, Some("hv loglvl=all"));
        assert_eq!(info.loader_name, Some("qemu"));
        let modules: Vec<Module> = info.modules().copied().collect();
        assert_eq!(
            modules,
            [
                Module {
                    start: 0x20_0000,
                    end: 0x20_8000,
                    cmdline: "guest one"
                },
                Module {
                    start: 0x30_0000,
                    end: 0x30_1000,
                    cmdline: "guest two a=b"
                },
                // String address 0: no command line.
                Module {
                    start: 0x40_0000,
                    end: 0x40_0000,
                    cmdline: ""
                },
            ]
        );
        assert_eq!(info.dropped, 0);
        assert_eq!(info.rsdp, None);
        let ram: Vec<Range> = info.ram().copied().collect();
        assert_eq!(
            ram,
            [
                Range {
                    start: 0,
                    end: 0x9fc00
                },
                Range {
                    start: 0x10_0000,
                    end: 0x7fe_0000
                },
            ]
        );
        // Without the flags, neither is read (the pointers are garbage).
        let mut b = mb1_with_modules();
        b[MB1_INFO] &= !((MB1_FLAG_CMDLINE | MB1_FLAG_MODS) as u8);
        put32(&mut b, MB1_INFO + 16, 0xffff_0000);
        put32(&mut b, MB1_INFO + 24, 0xffff_0000);
        let mem = at_base(b);
        let info = mb1_parse(&mem).unwrap();
        assert_eq!((info.cmdline, info.modules().count()), (None, 0));
    }

    #[test]
    fn multiboot1_info_spans_every_structure_read() {
        let span = |b: Vec<u8>| {
            let mem = at_base(b);
            let info = mb1_parse(&mem).unwrap().info;
            (info.start - BASE, info.end - BASE)
        };
        // From the map (lowest) to the end of module 2's string (highest,
        // 13 characters and its NUL).
        assert_eq!(span(mb1_with_modules()), (MB1_MAP as u64, 0x1ee));
        // Without the map, the module table is lowest.
        let mut b = mb1_with_modules();
        b[MB1_INFO] &= !(MB1_FLAG_MMAP as u8);
        assert_eq!(span(b), (MB1_TABLE as u64, 0x1ee));
        // Without modules, the loader name ("qemu" and NUL) ends it.
        let mut b = mb1_with_modules();
        b[MB1_INFO] &= !(MB1_FLAG_MODS as u8);
        assert_eq!(span(b), (MB1_MAP as u64, MB1_NAME as u64 + 5));
        // Without modules or name, the command line (13 and NUL).
        let mut b = mb1_with_modules();
        b[MB1_INFO] &= !(MB1_FLAG_MODS as u8);
        b[MB1_INFO + 1] &= !((MB1_FLAG_LOADER_NAME >> 8) as u8);
        assert_eq!(span(b), (MB1_MAP as u64, MB1_CMDLINE as u64 + 14));
        // Nothing pointed at: the 68-byte block alone.
        let mut b = mb1_with_modules();
        b[MB1_INFO..MB1_INFO + 4].fill(0);
        assert_eq!(span(b), (MB1_INFO as u64, MB1_INFO as u64 + 68));
    }

    #[test]
    fn multiboot1_up_to_64_modules_are_read_and_more_refused() {
        // 64 entries at 0x400: the first MAX_MODULES kept, the rest dropped.
        let mut b = mb1_with_modules();
        b.resize(0x800, 0);
        let table = 0x400;
        for i in 0..64u32 {
            let e = table + 16 * i as usize;
            put32(&mut b, e, 0x100_0000 * (i + 1));
            put32(&mut b, e + 4, 0x100_0000 * (i + 1) + 0x1000);
        }
        put32(&mut b, MB1_INFO + 20, 64);
        put32(&mut b, MB1_INFO + 24, addr32(table));
        let mem = at_base(b.clone());
        let info = mb1_parse(&mem).unwrap();
        assert_eq!(info.dropped, 64 - MAX_MODULES as u32);
        let starts: Vec<u64> = info.modules().map(|m| m.start).collect();
        let first: Vec<u64> = (1..=MAX_MODULES as u64).map(|i| 0x100_0000 * i).collect();
        assert_eq!(starts, first);
        assert_eq!(info.info.end, BASE + table as u64 + 64 * 16);

        put32(&mut b, MB1_INFO + 20, 65);
        assert_eq!(
            mb1_parse(&at_base(b)).unwrap_err(),
            Error::Module("more than 64 modules")
        );
        assert_eq!(
            mb1_refusal(|b| put32(b, MB1_INFO + 20, u32::MAX)),
            Error::Module("more than 64 modules")
        );
    }

    #[test]
    fn multiboot1_module_and_command_line_refusals() {
        // Module ranges.
        assert_eq!(
            mb1_refusal(|b| put32(b, MB1_TABLE + 4, 0x1f_ffff)),
            Error::Module("ends before it starts")
        );
        assert_eq!(
            mb1_refusal(|b| put32(b, MB1_TABLE + 16, 0)),
            Error::Module("starts at address 0")
        );
        // The table or a string outside memory.
        assert_eq!(
            mb1_refusal(|b| put32(b, MB1_INFO + 24, 0x10)),
            Error::Unreadable {
                what: "Multiboot1 module table",
                addr: 0x10,
                len: 48
            }
        );
        assert_eq!(
            mb1_refusal(|b| put32(b, MB1_INFO + 24, addr32(0x1f0))),
            Error::Unreadable {
                what: "Multiboot1 module table",
                addr: BASE + 0x1f0,
                len: 48
            }
        );
        assert_eq!(
            mb1_refusal(|b| put32(b, MB1_TABLE + 8, 0x10)),
            Error::Unreadable {
                what: "command line",
                addr: 0x10,
                len: 1
            }
        );
        // A module string or the command line malformed.
        assert_eq!(
            mb1_refusal(|b| b[MB1_MOD1_STRING] = 0x07),
            Error::Cmdline("not printable ASCII")
        );
        assert_eq!(
            mb1_refusal(|b| b[MB1_CMDLINE + 2] = 0x80),
            Error::Cmdline("not printable ASCII")
        );
        assert_eq!(
            mb1_refusal(|b| put32(b, MB1_INFO + 16, 0x10)),
            Error::Unreadable {
                what: "command line",
                addr: 0x10,
                len: 1
            }
        );
        // Running to the end of memory without a NUL.
        assert_eq!(
            mb1_refusal(|b| b[MB1_MOD2_STRING..].fill(b'x')),
            Error::Cmdline("no terminating NUL within 1024 bytes")
        );
        assert_eq!(
            mb1_refusal(|b| {
                b.resize(0x1000, b'x');
                b[MB1_CMDLINE..].fill(b'x');
                b[MB1_INFO] &= !(MB1_FLAG_MODS as u8);
            }),
            Error::Cmdline("no terminating NUL within 1024 bytes")
        );
    }

    /// With mods_count 0 (or mmap_length 0) the address means nothing: the
    /// block should be read without looking there or widening `info`.
    #[test]
    fn multiboot1_empty_module_table_and_map_are_not_looked_at() {
        let mut b = mb1_with_modules();
        put32(&mut b, MB1_INFO + 20, 0);
        put32(&mut b, MB1_INFO + 24, 0);
        put32(&mut b, MB1_INFO + 44, 0);
        put32(&mut b, MB1_INFO + 48, 0);
        let mem = at_base(b);
        let info = mb1_parse(&mem).unwrap();
        assert_eq!(info.modules().count(), 0);
        assert_eq!(info.info.start, BASE + MB1_INFO as u64);
    }

    #[test]
    fn multiboot1_with_modules_corruptions_never_panic() {
        let good = mb1_with_modules();
        for at in MB1_INFO..MB1_INFO + MB1_INFO_LEN {
            for v in [0u8, 1, 0x10, 0x7f, 0xff] {
                let mut b = good.clone();
                b[at] = v;
                let _ = mb1_parse(&at_base(b));
            }
        }
        for at in MB1_TABLE..MB1_TABLE + 48 {
            for v in [0u8, 0x7f, 0xff] {
                let mut b = good.clone();
                b[at] = v;
                let _ = mb1_parse(&at_base(b));
            }
        }
    }
}
