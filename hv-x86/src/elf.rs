//! Loading an ELF64 x86-64 executable into a guest's RAM.
//!
//! This module owns the reading of ELF headers and program headers and the
//! rules a guest image must meet before any byte of it lands in guest
//! memory. The image comes from outside (a boot module, a toolstack): every
//! offset, size and address in it is checked with checked arithmetic, all
//! of them before the first write, so a refused image writes nothing.
//!
//! It must never write outside the RAM range it is given, never allocate
//! (bss is zeroed from a static buffer in bounded chunks) and never touch
//! memory itself: every byte goes through the caller's `write`.

use core::fmt;

/// Most program headers accepted; kernels and test guests use a handful.
pub const MAX_SEGMENTS: usize = 16;

const ELF_MAGIC: [u8; 4] = [0x7F, b'E', b'L', b'F'];
const EHDR_LEN: usize = 64;
const PHDR_LEN: usize = 56;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;

// ELF64 header field offsets.
const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;
const E_TYPE: usize = 16;
const E_MACHINE: usize = 18;
const E_ENTRY: usize = 24;
const E_PHOFF: usize = 32;
const E_PHENTSIZE: usize = 54;
const E_PHNUM: usize = 56;

// Program header field offsets.
const P_TYPE: usize = 0;
const P_FLAGS: usize = 4;
const P_OFFSET: usize = 8;
const P_VADDR: usize = 16;
const P_PADDR: usize = 24;
const P_FILESZ: usize = 32;
const P_MEMSZ: usize = 40;

/// Largest single write of zeros for bss.
const ZERO_CHUNK: usize = 4096;
static ZEROS: [u8; ZERO_CHUNK] = [0; ZERO_CHUNK];

/// The caller's guest-RAM writer: `write(gpa, bytes)`, `Err(())` when it
/// cannot write there.
pub type GuestWrite<'w> = dyn FnMut(u64, &[u8]) -> Result<(), ()> + 'w;

/// What [`load`] put where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadInfo {
    /// Guest-physical entry point (see [`load`]).
    pub entry: u64,
    /// Lowest guest-physical address loaded.
    pub low: u64,
    /// End (exclusive) of the highest segment loaded, bss included.
    pub high: u64,
    /// Number of PT_LOAD segments loaded.
    pub segments: usize,
}

/// Why an image was refused. `index` is a program header's position in
/// the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// e_ident does not start with 0x7F 'E' 'L' 'F'.
    BadMagic,
    /// Shorter than the 64-byte ELF64 header.
    TooShort { len: usize },
    /// EI_CLASS is not ELFCLASS64.
    NotElf64 { class: u8 },
    /// EI_DATA is not ELFDATA2LSB.
    NotLittleEndian { data: u8 },
    /// e_machine is not EM_X86_64.
    NotX86_64 { machine: u16 },
    /// e_type is not ET_EXEC.
    NotExecutable { e_type: u16 },
    /// e_phentsize is not 56.
    BadPhentsize { phentsize: u16 },
    /// e_phnum is 0 or above [`MAX_SEGMENTS`].
    BadPhnum { phnum: u16 },
    /// The program header table runs past the end of the image.
    PhdrsPastFile { phoff: u64, phnum: u16 },
    /// A segment's file bytes run past the end of the image.
    SegmentPastFile {
        index: usize,
        offset: u64,
        filesz: u64,
    },
    /// A segment has more file bytes than memory bytes.
    FileszOverMemsz {
        index: usize,
        filesz: u64,
        memsz: u64,
    },
    /// The RAM range itself wraps past the top of the address space.
    RamWraps { base: u64, len: u64 },
    /// A segment's [p_paddr, p_paddr + p_memsz) is not inside RAM.
    SegmentOutsideRam {
        index: usize,
        paddr: u64,
        memsz: u64,
    },
    /// Two loaded segments share guest-physical bytes.
    Overlap { first: usize, second: usize },
    /// e_entry is in no executable PT_LOAD segment.
    EntryNotExecutable { entry: u64 },
    /// No PT_LOAD segment with memory to load.
    NoLoadSegment,
    /// The caller's `write` refused `len` bytes at `gpa`.
    WriteFailed { gpa: u64, len: usize },
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadMagic => f.write_str("e_ident: not an ELF image (bad magic)"),
            Self::TooShort { len } => {
                write!(f, "image of {len} bytes is shorter than the ELF64 header")
            }
            Self::NotElf64 { class } => write!(f, "e_ident[EI_CLASS] {class}, expected 2 (ELF64)"),
            Self::NotLittleEndian { data } => {
                write!(f, "e_ident[EI_DATA] {data}, expected 1 (little-endian)")
            }
            Self::NotX86_64 { machine } => {
                write!(f, "e_machine {machine}, expected {EM_X86_64} (x86-64)")
            }
            Self::NotExecutable { e_type } => {
                write!(f, "e_type {e_type}, expected {ET_EXEC} (ET_EXEC)")
            }
            Self::BadPhentsize { phentsize } => {
                write!(f, "e_phentsize {phentsize}, expected {PHDR_LEN}")
            }
            Self::BadPhnum { phnum } => {
                write!(f, "e_phnum {phnum}, expected 1..={MAX_SEGMENTS}")
            }
            Self::PhdrsPastFile { phoff, phnum } => write!(
                f,
                "e_phoff {phoff:#x} with e_phnum {phnum}: program headers run past the image"
            ),
            Self::SegmentPastFile {
                index,
                offset,
                filesz,
            } => write!(
                f,
                "program header {index}: p_offset {offset:#x} + p_filesz {filesz:#x} runs past the image"
            ),
            Self::FileszOverMemsz {
                index,
                filesz,
                memsz,
            } => write!(
                f,
                "program header {index}: p_filesz {filesz:#x} exceeds p_memsz {memsz:#x}"
            ),
            Self::RamWraps { base, len } => write!(
                f,
                "RAM at {base:#x} of length {len:#x} wraps past the address space"
            ),
            Self::SegmentOutsideRam {
                index,
                paddr,
                memsz,
            } => write!(
                f,
                "program header {index}: p_paddr {paddr:#x} + p_memsz {memsz:#x} is outside guest RAM"
            ),
            Self::Overlap { first, second } => {
                write!(f, "program headers {first} and {second} overlap in memory")
            }
            Self::EntryNotExecutable { entry } => {
                write!(f, "e_entry {entry:#x} is in no executable PT_LOAD segment")
            }
            Self::NoLoadSegment => f.write_str("no PT_LOAD segment with p_memsz > 0"),
            Self::WriteFailed { gpa, len } => {
                write!(
                    f,
                    "writing {len:#x} bytes at guest-physical {gpa:#x} failed"
                )
            }
        }
    }
}

/// Whether `b` starts with the ELF magic; says nothing about validity.
pub fn looks_like_elf(b: &[u8]) -> bool {
    b.get(..ELF_MAGIC.len()) == Some(&ELF_MAGIC[..])
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let end = at.checked_add(2)?;
    Some(u16::from_le_bytes(b.get(at..end)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    Some(u32::from_le_bytes(b.get(at..end)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let end = at.checked_add(8)?;
    Some(u64::from_le_bytes(b.get(at..end)?.try_into().ok()?))
}

/// A PT_LOAD segment that passed every check.
#[derive(Clone, Copy, Default)]
struct Segment<'a> {
    index: usize,
    paddr: u64,
    vaddr: u64,
    memsz: u64,
    /// End of the memory image, paddr + memsz (checked).
    end: u64,
    executable: bool,
    file: &'a [u8],
}

impl Segment<'_> {
    fn holds(start: u64, memsz: u64, addr: u64) -> bool {
        addr.checked_sub(start).is_some_and(|off| off < memsz)
    }

    /// Guest-physical address of `entry`: e_entry is virtual by the ELF
    /// specification, but images linked to run with paging off (vmlinux)
    /// store the physical one, so a physical match is taken too.
    fn entry_gpa(&self, entry: u64) -> Option<u64> {
        if !self.executable {
            return None;
        }
        if Self::holds(self.vaddr, self.memsz, entry) {
            return self.paddr.checked_add(entry - self.vaddr);
        }
        Self::holds(self.paddr, self.memsz, entry).then_some(entry)
    }
}

/// The program header table, after the header checks.
struct Phdrs<'a> {
    table: &'a [u8],
    phoff: u64,
    phnum: u16,
}

fn check_header(image: &[u8]) -> Result<(u64, Phdrs<'_>), ElfError> {
    if !looks_like_elf(image) {
        return Err(ElfError::BadMagic);
    }
    if image.len() < EHDR_LEN {
        return Err(ElfError::TooShort { len: image.len() });
    }
    let too_short = ElfError::TooShort { len: image.len() };
    let byte = |at: usize| image.get(at).copied().ok_or(too_short);
    let class = byte(EI_CLASS)?;
    if class != ELFCLASS64 {
        return Err(ElfError::NotElf64 { class });
    }
    let data = byte(EI_DATA)?;
    if data != ELFDATA2LSB {
        return Err(ElfError::NotLittleEndian { data });
    }
    let field16 = |at| u16_at(image, at).ok_or(too_short);
    let machine = field16(E_MACHINE)?;
    if machine != EM_X86_64 {
        return Err(ElfError::NotX86_64 { machine });
    }
    let e_type = field16(E_TYPE)?;
    if e_type != ET_EXEC {
        return Err(ElfError::NotExecutable { e_type });
    }
    let phentsize = field16(E_PHENTSIZE)?;
    if usize::from(phentsize) != PHDR_LEN {
        return Err(ElfError::BadPhentsize { phentsize });
    }
    let phnum = field16(E_PHNUM)?;
    if phnum == 0 || usize::from(phnum) > MAX_SEGMENTS {
        return Err(ElfError::BadPhnum { phnum });
    }
    let entry = u64_at(image, E_ENTRY).ok_or(too_short)?;
    let phoff = u64_at(image, E_PHOFF).ok_or(too_short)?;
    let past_file = ElfError::PhdrsPastFile { phoff, phnum };
    let count = usize::from(phnum);
    let start = usize::try_from(phoff).map_err(|_| past_file)?;
    let end = PHDR_LEN
        .checked_mul(count)
        .and_then(|len| start.checked_add(len))
        .ok_or(past_file)?;
    let table = image.get(start..end).ok_or(past_file)?;
    Ok((
        entry,
        Phdrs {
            table,
            phoff,
            phnum,
        },
    ))
}

/// Checks program header `index`: None for one that loads nothing.
fn check_segment<'a>(
    image: &'a [u8],
    phdrs: &Phdrs<'_>,
    index: usize,
    ram_base: u64,
    ram_end: u64,
) -> Result<Option<Segment<'a>>, ElfError> {
    // The table was checked to hold phnum headers; get() re-checks anyway.
    let past_table = ElfError::PhdrsPastFile {
        phoff: phdrs.phoff,
        phnum: phdrs.phnum,
    };
    let at = index.checked_mul(PHDR_LEN).ok_or(past_table)?;
    let field = |off: usize| at.checked_add(off).ok_or(past_table);
    let field32 = |off| u32_at(phdrs.table, field(off)?).ok_or(past_table);
    let field64 = |off| u64_at(phdrs.table, field(off)?).ok_or(past_table);
    if field32(P_TYPE)? != PT_LOAD {
        return Ok(None);
    }
    let offset = field64(P_OFFSET)?;
    let filesz = field64(P_FILESZ)?;
    let memsz = field64(P_MEMSZ)?;
    let paddr = field64(P_PADDR)?;
    let past_file = ElfError::SegmentPastFile {
        index,
        offset,
        filesz,
    };
    let file_start = usize::try_from(offset).map_err(|_| past_file)?;
    let file_len = usize::try_from(filesz).map_err(|_| past_file)?;
    let file_end = file_start.checked_add(file_len).ok_or(past_file)?;
    let file = image.get(file_start..file_end).ok_or(past_file)?;
    if filesz > memsz {
        return Err(ElfError::FileszOverMemsz {
            index,
            filesz,
            memsz,
        });
    }
    if memsz == 0 {
        return Ok(None);
    }
    let outside = ElfError::SegmentOutsideRam {
        index,
        paddr,
        memsz,
    };
    let end = paddr.checked_add(memsz).ok_or(outside)?;
    if paddr < ram_base || end > ram_end {
        return Err(outside);
    }
    Ok(Some(Segment {
        index,
        paddr,
        vaddr: field64(P_VADDR)?,
        memsz,
        end,
        executable: field32(P_FLAGS)? & PF_X != 0,
        file,
    }))
}

/// Loads `image`'s PT_LOAD segments at their physical addresses (p_paddr)
/// into guest RAM `[ram_base, ram_base + ram_len)` through `write(gpa,
/// bytes)`: each segment's file bytes, then zeros up to p_memsz in writes
/// of at most 4 KiB.
///
/// The returned entry is guest-physical: e_entry translated through the
/// executable segment whose virtual range holds it, or e_entry itself when
/// it lies in an executable segment's physical range (images that store a
/// physical entry). p_align and non-PT_LOAD headers are ignored; PT_LOAD
/// headers with p_memsz 0 load nothing and are not counted.
///
/// Every check runs before the first write, so a refused image writes
/// nothing; a failing `write` stops the load part-way and is returned.
pub fn load(
    image: &[u8],
    ram_base: u64,
    ram_len: u64,
    write: &mut GuestWrite<'_>,
) -> Result<LoadInfo, ElfError> {
    let (entry, phdrs) = check_header(image)?;
    let ram_end = ram_base.checked_add(ram_len).ok_or(ElfError::RamWraps {
        base: ram_base,
        len: ram_len,
    })?;

    let mut segments = [Segment::default(); MAX_SEGMENTS];
    let mut loaded = 0;
    for index in 0..usize::from(phdrs.phnum) {
        let Some(segment) = check_segment(image, &phdrs, index, ram_base, ram_end)? else {
            continue;
        };
        let slot = segments
            .get_mut(loaded)
            .ok_or(ElfError::BadPhnum { phnum: phdrs.phnum })?;
        *slot = segment;
        loaded += 1;
    }
    let segments = segments.get(..loaded).unwrap_or_default();
    if segments.is_empty() {
        return Err(ElfError::NoLoadSegment);
    }

    for (i, a) in segments.iter().enumerate() {
        for b in segments.get(i + 1..).unwrap_or_default() {
            if a.paddr < b.end && b.paddr < a.end {
                return Err(ElfError::Overlap {
                    first: a.index,
                    second: b.index,
                });
            }
        }
    }

    let entry_gpa = segments
        .iter()
        .find_map(|s| s.entry_gpa(entry))
        .ok_or(ElfError::EntryNotExecutable { entry })?;

    let mut low = u64::MAX;
    let mut high = 0;
    for s in segments {
        write_segment(s, write)?;
        low = low.min(s.paddr);
        high = high.max(s.end);
    }
    Ok(LoadInfo {
        entry: entry_gpa,
        low,
        high,
        segments: segments.len(),
    })
}

fn write_segment(s: &Segment<'_>, write: &mut GuestWrite<'_>) -> Result<(), ElfError> {
    if !s.file.is_empty() {
        write(s.paddr, s.file).map_err(|()| ElfError::WriteFailed {
            gpa: s.paddr,
            len: s.file.len(),
        })?;
    }
    // file.len() <= memsz and paddr + memsz were checked, so these hold.
    let mut gpa = s.paddr + s.file.len() as u64;
    while gpa < s.end {
        let len = (s.end - gpa).min(ZERO_CHUNK as u64) as usize;
        let failed = ElfError::WriteFailed { gpa, len };
        let zeros = ZEROS.get(..len).ok_or(failed)?;
        write(gpa, zeros).map_err(|()| failed)?;
        gpa += len as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    const PF_W: u32 = 2;
    const PF_R: u32 = 4;
    const PT_NOTE: u32 = 4;
    const RAM_BASE: u64 = 0x10_0000;
    const RAM_LEN: u64 = 0x10_0000;
    /// What RAM holds before loading, so zeroing is visible.
    const FILL: u8 = 0xAA;

    /// One program header and the file bytes behind it.
    #[derive(Clone, Copy)]
    struct Seg<'a> {
        p_type: u32,
        flags: u32,
        vaddr: u64,
        paddr: u64,
        data: &'a [u8],
        memsz: u64,
    }

    fn load_seg(paddr: u64, flags: u32, data: &[u8], memsz: u64) -> Seg<'_> {
        Seg {
            p_type: PT_LOAD,
            flags,
            vaddr: paddr,
            paddr,
            data,
            memsz,
        }
    }

    fn put16(img: &mut [u8], at: usize, v: u16) {
        img[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn put32(img: &mut [u8], at: usize, v: u32) {
        img[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put64(img: &mut [u8], at: usize, v: u64) {
        img[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Offset of program header `i` in images from `build`.
    fn ph(i: usize) -> usize {
        EHDR_LEN + i * PHDR_LEN
    }

    /// An ELF64 x86-64 ET_EXEC image: header, program headers, then each
    /// segment's bytes in order.
    fn build(entry: u64, segs: &[Seg<'_>]) -> Vec<u8> {
        let mut img = vec![0u8; ph(segs.len())];
        img[..4].copy_from_slice(&ELF_MAGIC);
        img[EI_CLASS] = ELFCLASS64;
        img[EI_DATA] = ELFDATA2LSB;
        img[6] = 1; // EI_VERSION
        put16(&mut img, E_TYPE, ET_EXEC);
        put16(&mut img, E_MACHINE, EM_X86_64);
        put32(&mut img, 20, 1); // e_version
        put64(&mut img, E_ENTRY, entry);
        put64(&mut img, E_PHOFF, EHDR_LEN as u64);
        put16(&mut img, 52, EHDR_LEN as u16); // e_ehsize
        put16(&mut img, E_PHENTSIZE, PHDR_LEN as u16);
        put16(&mut img, E_PHNUM, segs.len() as u16);
        for (i, s) in segs.iter().enumerate() {
            let offset = img.len() as u64;
            img.extend_from_slice(s.data);
            let at = ph(i);
            put32(&mut img, at + P_TYPE, s.p_type);
            put32(&mut img, at + P_FLAGS, s.flags);
            put64(&mut img, at + P_OFFSET, offset);
            put64(&mut img, at + P_VADDR, s.vaddr);
            put64(&mut img, at + P_PADDR, s.paddr);
            put64(&mut img, at + P_FILESZ, s.data.len() as u64);
            put64(&mut img, at + P_MEMSZ, s.memsz);
            put64(&mut img, at + 48, 0x1000); // p_align
        }
        img
    }

    /// Guest RAM [RAM_BASE, RAM_BASE + RAM_LEN) recording every write.
    struct Ram {
        bytes: Vec<u8>,
        writes: Vec<(u64, usize)>,
    }

    impl Ram {
        fn new() -> Self {
            Self {
                bytes: vec![FILL; RAM_LEN as usize],
                writes: Vec::new(),
            }
        }
        fn at(&self, gpa: u64, len: usize) -> &[u8] {
            let off = (gpa - RAM_BASE) as usize;
            &self.bytes[off..off + len]
        }
        fn load(&mut self, image: &[u8]) -> Result<LoadInfo, ElfError> {
            load(image, RAM_BASE, RAM_LEN, &mut |gpa, data| {
                let off = (gpa - RAM_BASE) as usize;
                self.bytes[off..off + data.len()].copy_from_slice(data);
                self.writes.push((gpa, data.len()));
                Ok(())
            })
        }
    }

    /// Loads expecting a refusal, and checks nothing was written.
    fn refused(image: &[u8]) -> ElfError {
        let mut ram = Ram::new();
        let err = ram.load(image).expect_err("image should be refused");
        assert!(ram.writes.is_empty(), "{err}: wrote {:?}", ram.writes);
        err
    }

    const TEXT: &[u8] = b"\x90\x90\x90\xf4 one-segment guest text.........";

    fn one_segment() -> Vec<u8> {
        build(
            0x10_1004,
            &[load_seg(0x10_1000, PF_R | PF_X, TEXT, TEXT.len() as u64)],
        )
    }

    #[test]
    fn looks_like_elf_checks_the_magic_only() {
        assert!(looks_like_elf(&one_segment()));
        assert!(looks_like_elf(b"\x7fELF"));
        assert!(!looks_like_elf(b"\x7fEL"));
        assert!(!looks_like_elf(b""));
        assert!(!looks_like_elf(b"MZ\x90\x00"));
    }

    #[test]
    fn loads_one_segment() {
        let mut ram = Ram::new();
        let info = ram.load(&one_segment()).expect("loads");
        assert_eq!(
            info,
            LoadInfo {
                entry: 0x10_1004,
                low: 0x10_1000,
                high: 0x10_1000 + TEXT.len() as u64,
                segments: 1,
            }
        );
        assert_eq!(ram.at(0x10_1000, TEXT.len()), TEXT);
        assert_eq!(ram.at(0x10_0FFF, 1), [FILL]);
        assert_eq!(ram.at(0x10_1000 + TEXT.len() as u64, 1), [FILL]);
        assert_eq!(ram.writes, [(0x10_1000, TEXT.len())]);
    }

    #[test]
    fn loads_two_segments_with_bss_in_bounded_zero_writes() {
        let data = [0x5Au8; 0x10];
        let bss_end = 0x10_4000 + 0x2345;
        let note = Seg {
            p_type: PT_NOTE,
            flags: PF_R,
            vaddr: 0,
            paddr: 0,
            data: b"note",
            memsz: 4,
        };
        let image = build(
            0x10_1000,
            &[
                load_seg(0x10_1000, PF_R | PF_X, TEXT, TEXT.len() as u64),
                note,
                load_seg(0x10_4000, PF_R | PF_W, &data, 0x2345),
            ],
        );
        let mut ram = Ram::new();
        let info = ram.load(&image).expect("loads");
        assert_eq!(
            info,
            LoadInfo {
                entry: 0x10_1000,
                low: 0x10_1000,
                high: bss_end,
                segments: 2,
            }
        );
        assert_eq!(ram.at(0x10_1000, TEXT.len()), TEXT);
        assert_eq!(ram.at(0x10_4000, 0x10), data);
        assert!(ram.at(0x10_4010, 0x2335).iter().all(|&b| b == 0));
        assert_eq!(ram.at(bss_end, 1), [FILL]);
        // The note is not loaded anywhere; bss comes in 4 KiB pieces.
        assert_eq!(
            ram.writes,
            [
                (0x10_1000, TEXT.len()),
                (0x10_4000, 0x10),
                (0x10_4010, 0x1000),
                (0x10_5010, 0x1000),
                (0x10_6010, 0x335),
            ]
        );
    }

    #[test]
    fn segments_may_touch_and_fill_ram_exactly() {
        let a = [1u8; 0x10];
        let image = build(
            RAM_BASE,
            &[
                load_seg(RAM_BASE, PF_R | PF_X, &a, 0x8_0000),
                load_seg(RAM_BASE + 0x8_0000, PF_R | PF_W, &[], 0x8_0000),
            ],
        );
        let info = Ram::new().load(&image).expect("loads");
        assert_eq!((info.low, info.high), (RAM_BASE, RAM_BASE + RAM_LEN));
    }

    #[test]
    fn virtual_entry_is_translated_to_physical() {
        let text = Seg {
            vaddr: 0xFFFF_FFFF_8000_0000,
            ..load_seg(0x10_2000, PF_R | PF_X, TEXT, 0x100)
        };
        let info = Ram::new()
            .load(&build(0xFFFF_FFFF_8000_0040, &[text]))
            .expect("loads");
        assert_eq!(info.entry, 0x10_2040);
        // An image storing the physical entry (vmlinux) gets it back.
        let info = Ram::new().load(&build(0x10_2040, &[text])).expect("loads");
        assert_eq!(info.entry, 0x10_2040);
    }

    #[test]
    fn refuses_what_is_not_an_x86_64_elf64_executable() {
        assert_eq!(
            refused(b"MZ this is no ELF at all, but it is long enough......................."),
            ElfError::BadMagic
        );
        assert_eq!(refused(b"\x7fEL"), ElfError::BadMagic);
        assert_eq!(
            refused(&one_segment()[..63]),
            ElfError::TooShort { len: 63 }
        );
        let patched = |at: usize, v: u8| {
            let mut img = one_segment();
            img[at] = v;
            img
        };
        assert_eq!(
            refused(&patched(EI_CLASS, 1)),
            ElfError::NotElf64 { class: 1 }
        );
        assert_eq!(
            refused(&patched(EI_DATA, 2)),
            ElfError::NotLittleEndian { data: 2 }
        );
        assert_eq!(
            refused(&patched(E_MACHINE, 3)),
            ElfError::NotX86_64 { machine: 3 }
        );
        assert_eq!(
            refused(&patched(E_TYPE, 3)),
            ElfError::NotExecutable { e_type: 3 }
        );
        assert_eq!(
            refused(&patched(E_TYPE, 1)),
            ElfError::NotExecutable { e_type: 1 }
        );
    }

    #[test]
    fn refuses_bad_program_header_tables() {
        let mut img = one_segment();
        put16(&mut img, E_PHENTSIZE, 64);
        assert_eq!(refused(&img), ElfError::BadPhentsize { phentsize: 64 });
        for phnum in [0, 17, u16::MAX] {
            let mut img = one_segment();
            put16(&mut img, E_PHNUM, phnum);
            assert_eq!(refused(&img), ElfError::BadPhnum { phnum });
        }
        // Two headers claimed, one header and a few bytes present.
        let mut img = one_segment();
        put16(&mut img, E_PHNUM, 2);
        assert_eq!(
            refused(&img),
            ElfError::PhdrsPastFile {
                phoff: 64,
                phnum: 2
            }
        );
        for phoff in [img.len() as u64 - 10, u64::MAX, u64::MAX - 20] {
            let mut img = one_segment();
            put64(&mut img, E_PHOFF, phoff);
            assert_eq!(refused(&img), ElfError::PhdrsPastFile { phoff, phnum: 1 });
        }
    }

    #[test]
    fn refuses_segment_bytes_past_the_file() {
        let len = one_segment().len() as u64;
        let filesz = TEXT.len() as u64;
        for (offset, filesz) in [
            (len - filesz + 1, filesz),
            (u64::MAX, filesz),
            (8, u64::MAX - 4),
        ] {
            let mut img = one_segment();
            put64(&mut img, ph(0) + P_OFFSET, offset);
            put64(&mut img, ph(0) + P_FILESZ, filesz);
            put64(&mut img, ph(0) + P_MEMSZ, u64::MAX);
            assert_eq!(
                refused(&img),
                ElfError::SegmentPastFile {
                    index: 0,
                    offset,
                    filesz
                }
            );
        }
    }

    #[test]
    fn refuses_filesz_over_memsz() {
        let img = build(0x10_1000, &[load_seg(0x10_1000, PF_X, TEXT, 4)]);
        assert_eq!(
            refused(&img),
            ElfError::FileszOverMemsz {
                index: 0,
                filesz: TEXT.len() as u64,
                memsz: 4
            }
        );
    }

    #[test]
    fn refuses_segments_outside_ram() {
        let end = RAM_BASE + RAM_LEN;
        for (paddr, memsz) in [
            (RAM_BASE - 1, 0x100),
            (end - 0xFF, 0x100),
            (end, 1),
            (0, 0x100),
            (u64::MAX - 0x10, 0x100),
            (RAM_BASE, u64::MAX),
        ] {
            let img = build(paddr, &[load_seg(paddr, PF_X, &[], memsz)]);
            assert_eq!(
                refused(&img),
                ElfError::SegmentOutsideRam {
                    index: 0,
                    paddr,
                    memsz
                }
            );
        }
        // RAM that wraps is refused before any segment is looked at.
        let err = load(&one_segment(), u64::MAX - 0x1000, 0x2000, &mut |_, _| {
            Err(())
        });
        assert_eq!(
            err,
            Err(ElfError::RamWraps {
                base: u64::MAX - 0x1000,
                len: 0x2000
            })
        );
        // No RAM at all.
        let err = load(&one_segment(), RAM_BASE, 0, &mut |_, _| Err(()));
        assert!(matches!(
            err,
            Err(ElfError::SegmentOutsideRam { index: 0, .. })
        ));
    }

    #[test]
    fn refuses_overlapping_segments() {
        let img = build(
            0x10_1000,
            &[
                load_seg(0x10_1000, PF_X, TEXT, 0x1000),
                load_seg(0x10_3000, PF_W, &[], 0x100),
                load_seg(0x10_1FFF, PF_W, &[], 0x100),
            ],
        );
        assert_eq!(
            refused(&img),
            ElfError::Overlap {
                first: 0,
                second: 2
            }
        );
        // A later header lower in memory, running into an earlier one.
        let img = build(
            0x10_1000,
            &[
                load_seg(0x10_1800, PF_W, &[], 0x100),
                load_seg(0x10_1000, PF_X, TEXT, 0x801),
            ],
        );
        assert_eq!(
            refused(&img),
            ElfError::Overlap {
                first: 0,
                second: 1
            }
        );
        // One segment inside another.
        let img = build(
            0x10_1000,
            &[
                load_seg(0x10_1000, PF_X, TEXT, 0x1000),
                load_seg(0x10_1800, PF_W, &[], 0x10),
            ],
        );
        assert_eq!(
            refused(&img),
            ElfError::Overlap {
                first: 0,
                second: 1
            }
        );
    }

    #[test]
    fn refuses_an_entry_outside_executable_segments() {
        let segs = [
            load_seg(0x10_1000, PF_R | PF_X, TEXT, 0x100),
            load_seg(0x10_2000, PF_R | PF_W, &[], 0x100),
        ];
        // In a data segment, past the text's end, before RAM.
        for entry in [0x10_2000, 0x10_1100, 0x1000, 0] {
            assert_eq!(
                refused(&build(entry, &segs)),
                ElfError::EntryNotExecutable { entry }
            );
        }
        // The text's last byte is still inside it.
        assert_eq!(
            Ram::new().load(&build(0x10_10FF, &segs)).map(|i| i.entry),
            Ok(0x10_10FF)
        );
    }

    #[test]
    fn refuses_images_without_loadable_segments() {
        let note = Seg {
            p_type: PT_NOTE,
            ..load_seg(0x10_1000, PF_R | PF_X, TEXT, TEXT.len() as u64)
        };
        assert_eq!(refused(&build(0x10_1000, &[note])), ElfError::NoLoadSegment);
        // A PT_LOAD with nothing to load does not count.
        let empty = load_seg(0x10_1000, PF_R | PF_X, &[], 0);
        assert_eq!(
            refused(&build(0x10_1000, &[empty])),
            ElfError::NoLoadSegment
        );
    }

    #[test]
    fn write_errors_propagate() {
        let data = [7u8; 8];
        let img = build(
            0x10_1000,
            &[
                load_seg(0x10_1000, PF_X, TEXT, TEXT.len() as u64),
                load_seg(0x10_4000, PF_W, &data, 0x3000),
            ],
        );
        let mut calls = 0;
        let err = load(&img, RAM_BASE, RAM_LEN, &mut |_, _| {
            calls += 1;
            Err(())
        });
        assert_eq!(
            err,
            Err(ElfError::WriteFailed {
                gpa: 0x10_1000,
                len: TEXT.len()
            })
        );
        assert_eq!(calls, 1);
        // A failure while zeroing bss names the zero chunk.
        let err = load(&img, RAM_BASE, RAM_LEN, &mut |gpa, _| {
            if gpa == 0x10_5008 { Err(()) } else { Ok(()) }
        });
        assert_eq!(
            err,
            Err(ElfError::WriteFailed {
                gpa: 0x10_5008,
                len: 0x1000
            })
        );
    }

    #[test]
    fn errors_name_the_field() {
        use std::string::ToString;
        let cases = [
            (ElfError::NotX86_64 { machine: 3 }, "e_machine 3"),
            (ElfError::NotExecutable { e_type: 3 }, "e_type 3"),
            (ElfError::BadPhentsize { phentsize: 64 }, "e_phentsize 64"),
            (ElfError::BadPhnum { phnum: 17 }, "e_phnum 17"),
            (
                ElfError::PhdrsPastFile {
                    phoff: 0x40,
                    phnum: 2,
                },
                "e_phoff 0x40",
            ),
            (
                ElfError::SegmentPastFile {
                    index: 1,
                    offset: 0x80,
                    filesz: 0x10,
                },
                "p_offset 0x80",
            ),
            (
                ElfError::FileszOverMemsz {
                    index: 1,
                    filesz: 0x10,
                    memsz: 4,
                },
                "p_filesz 0x10",
            ),
            (
                ElfError::SegmentOutsideRam {
                    index: 2,
                    paddr: 0x1000,
                    memsz: 1,
                },
                "p_paddr 0x1000",
            ),
            (ElfError::EntryNotExecutable { entry: 0x42 }, "e_entry 0x42"),
            (
                ElfError::Overlap {
                    first: 0,
                    second: 2,
                },
                "headers 0 and 2",
            ),
            (ElfError::NotElf64 { class: 1 }, "EI_CLASS"),
            (ElfError::NotLittleEndian { data: 2 }, "EI_DATA"),
            (
                ElfError::WriteFailed {
                    gpa: 0x5000,
                    len: 8,
                },
                "0x5000",
            ),
        ];
        for (err, needle) in cases {
            let text = err.to_string();
            assert!(text.contains(needle), "{text:?} lacks {needle:?}");
        }
    }

    /// The test binary itself is a real linker-made ELF: a PIE (ET_DYN) is
    /// refused as such, and with e_type patched its PT_LOADs load.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn real_rustc_elf() {
        let mut img =
            std::fs::read(std::env::current_exe().expect("own path")).expect("own binary");
        let e_type = u16::from_le_bytes([img[E_TYPE], img[E_TYPE + 1]]);
        if e_type != ET_EXEC {
            assert_eq!(
                load(&img, 0, 1 << 47, &mut |_, _| Ok(())),
                Err(ElfError::NotExecutable { e_type })
            );
            put16(&mut img, E_TYPE, ET_EXEC);
        }
        let entry = u64_at(&img, E_ENTRY).expect("e_entry");
        let mut written = 0u64;
        let mut highest = 0u64;
        let info = load(&img, 0, 1 << 47, &mut |gpa, bytes| {
            assert!(bytes.len() <= img.len());
            written += bytes.len() as u64;
            highest = highest.max(gpa + bytes.len() as u64);
            Ok(())
        })
        .expect("the test binary loads");
        assert!(info.segments >= 2);
        assert!(info.low <= entry && entry < info.high);
        assert_eq!(info.entry, entry);
        assert_eq!(info.high, highest);
        // Every byte of every non-empty PT_LOAD, file and bss, was written once.
        let phnum = usize::from(u16_at(&img, E_PHNUM).expect("e_phnum"));
        let phoff = u64_at(&img, E_PHOFF).expect("e_phoff") as usize;
        let (mut memsz_sum, mut loads) = (0, 0);
        for i in 0..phnum {
            let at = phoff + i * PHDR_LEN;
            let memsz = u64_at(&img, at + P_MEMSZ).expect("p_memsz");
            if u32_at(&img, at + P_TYPE) == Some(PT_LOAD) && memsz > 0 {
                memsz_sum += memsz;
                loads += 1;
            }
        }
        assert_eq!(written, memsz_sum);
        assert_eq!(info.segments, loads);
    }
}
