//! The ELF64 loader over hostile images, in two modes chosen by the first
//! byte's low bit.
//!
//! Raw: the next 16 bytes are the RAM's base and length, the rest is the
//! image, so every header check meets arbitrary bytes. Generated: the input
//! drives a writer of an ELF64 x86-64 executable whose header fields and
//! program headers are mostly right (PT_LOAD segments laid out one after
//! another inside RAM, file bytes where p_offset says, an entry inside an
//! executable segment by its virtual or physical address) and at times are
//! not (a spoiled header byte, a count, offset or size that lies, segments
//! outside RAM or on top of each other, an entry anywhere), so the fuzzer
//! gets past the header checks to the segment rules.
//!
//! Either way `load` must return (never panic or overflow), its `write`
//! must only ever be asked for bytes inside [ram_base, ram_base + ram_len),
//! and what it says must hold:
//! - Ok: the writes are exactly each loaded segment's file bytes (the
//!   image's own, at p_offset) then zeros in pieces of at most 4 KiB up to
//!   p_memsz, in program-header order, summing to the segments' p_memsz;
//!   `LoadInfo` has 1..=MAX_SEGMENTS segments, low < high inside RAM, and
//!   an entry inside an executable loaded segment, found the way the module
//!   documents (e_entry by virtual address, else by physical address);
//! - WriteFailed: it names the write this harness refused;
//! - any other error: `write` was never called (every check runs before
//!   the first write).
//!
//! Every error is one non-empty line. A generated image left well formed
//! must load.
#![no_main]

use hv_x86::elf::{self, ElfError, LoadInfo, MAX_SEGMENTS};
use libfuzzer_sys::fuzz_target;

const EHDR_LEN: usize = 64;
const PHDR_LEN: usize = 56;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
/// The loader's largest zero write.
const ZERO_CHUNK: u64 = 4096;
/// Bytes the writer takes before refusing: a huge bss in huge RAM would
/// otherwise take minutes of zero writes.
const WRITE_BUDGET: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut g = Input(rest);
    if mode & 1 == 0 {
        let ram_base = g.u64();
        let ram_len = g.u64();
        let fail_at = fail_at(mode);
        let _ = check(g.0, ram_base, ram_len, fail_at);
    } else {
        let (image, ram_base, ram_len, well_formed) = generate(&mut g);
        let fail_at = fail_at(mode);
        let outcome = check(&image, ram_base, ram_len, fail_at);
        if well_formed && fail_at.is_none() {
            match outcome {
                Ok(_) | Err(ElfError::WriteFailed { .. }) => {}
                Err(e) => panic!("a well-formed image was refused: {e}"),
            }
        }
    }
});

/// The write the harness refuses (counting from 1), from the mode byte's
/// high bits: none most of the time.
fn fail_at(mode: u8) -> Option<usize> {
    match mode >> 1 {
        n @ 1..=8 => Some(usize::from(n)),
        _ => None,
    }
}

/// The input, consumed from the front; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }

    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
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

/// One call of the loader's `write`.
#[derive(Debug, PartialEq, Eq)]
struct Write {
    gpa: u64,
    len: u64,
    /// Where the bytes lie in the image, when they are the image's.
    image_offset: Option<usize>,
}

/// Loads `image` into RAM `[ram_base, ram_base + ram_len)` through a
/// checking writer and checks the outcome.
fn check(
    image: &[u8],
    ram_base: u64,
    ram_len: u64,
    fail_at: Option<usize>,
) -> Result<LoadInfo, ElfError> {
    let ram_end = ram_base.checked_add(ram_len);
    let image_range = image.as_ptr_range();
    let mut writes: Vec<Write> = Vec::new();
    let mut calls = 0usize;
    let mut written = 0u64;
    let mut refused = None;
    let result = elf::load(image, ram_base, ram_len, &mut |gpa, bytes| {
        calls += 1;
        let len = bytes.len() as u64;
        assert!(len > 0, "empty write at {gpa:#x}");
        let end = gpa.checked_add(len).expect("a write that wraps");
        let ram_end = ram_end.expect("a write into RAM that wraps");
        assert!(
            ram_base <= gpa && end <= ram_end,
            "write [{gpa:#x}, {end:#x}) outside RAM [{ram_base:#x}, {ram_end:#x})"
        );
        assert!(refused.is_none(), "a write after a refused one");
        if fail_at == Some(calls) || written + len > WRITE_BUDGET {
            refused = Some((gpa, bytes.len()));
            return Err(());
        }
        written += len;
        let image_offset = image_range
            .contains(&bytes.as_ptr())
            .then(|| bytes.as_ptr() as usize - image.as_ptr() as usize);
        if image_offset.is_none() {
            assert!(bytes.len() as u64 <= ZERO_CHUNK, "zero write of {len:#x}");
            assert!(bytes.iter().all(|&b| b == 0), "bss write not zeros");
        }
        writes.push(Write {
            gpa,
            len,
            image_offset,
        });
        Ok(())
    });
    match &result {
        Ok(info) => {
            assert!(refused.is_none(), "Ok after a refused write");
            let ram_end = ram_end.expect("Ok with RAM that wraps");
            check_loaded(image, ram_base, ram_end, info, &writes);
            assert_eq!(written, writes.iter().map(|w| w.len).sum::<u64>());
        }
        Err(ElfError::WriteFailed { gpa, len }) => {
            assert_eq!(
                refused,
                Some((*gpa, *len)),
                "WriteFailed names another write"
            );
        }
        Err(e) => {
            assert_eq!(calls, 0, "{e}: refused after {calls} writes");
        }
    }
    if let Err(e) = &result {
        let text = e.to_string();
        assert!(!text.is_empty() && !text.contains('\n'), "{text}");
    }
    result
}

/// A loaded segment as the harness reads it from an accepted image.
struct Segment {
    offset: usize,
    filesz: u64,
    paddr: u64,
    vaddr: u64,
    memsz: u64,
    end: u64,
    executable: bool,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The PT_LOAD headers with memory, read independently of the loader
/// (the loader accepted the image, so the table is inside it).
fn loaded_segments(image: &[u8]) -> Vec<Segment> {
    let phoff = usize::try_from(u64_at(image, 32)).expect("e_phoff fits");
    let phnum = usize::from(u16_at(image, 56));
    assert_eq!(u16_at(image, 54), PHDR_LEN as u16, "e_phentsize");
    assert!((1..=MAX_SEGMENTS).contains(&phnum), "e_phnum {phnum}");
    let mut out = Vec::new();
    for i in 0..phnum {
        let at = phoff + i * PHDR_LEN;
        let memsz = u64_at(image, at + 40);
        if u32_at(image, at) != PT_LOAD || memsz == 0 {
            continue;
        }
        let paddr = u64_at(image, at + 24);
        let filesz = u64_at(image, at + 32);
        let offset = usize::try_from(u64_at(image, at + 8)).expect("p_offset fits");
        assert!(filesz <= memsz, "header {i}: filesz over memsz");
        assert!(
            offset as u64 + filesz <= image.len() as u64,
            "header {i}: past the file"
        );
        out.push(Segment {
            offset,
            filesz,
            paddr,
            vaddr: u64_at(image, at + 16),
            memsz,
            end: paddr.checked_add(memsz).expect("segment wraps"),
            executable: u32_at(image, at + 4) & PF_X != 0,
        });
    }
    out
}

/// What an accepted image must satisfy.
fn check_loaded(image: &[u8], ram_base: u64, ram_end: u64, info: &LoadInfo, writes: &[Write]) {
    let segments = loaded_segments(image);
    assert!((1..=MAX_SEGMENTS).contains(&info.segments));
    assert_eq!(info.segments, segments.len());
    let mut expected = Vec::new();
    for s in &segments {
        assert!(
            ram_base <= s.paddr && s.end <= ram_end,
            "segment outside RAM"
        );
        if s.filesz > 0 {
            expected.push(Write {
                gpa: s.paddr,
                len: s.filesz,
                image_offset: Some(s.offset),
            });
        }
        let mut gpa = s.paddr + s.filesz;
        while gpa < s.end {
            let len = (s.end - gpa).min(ZERO_CHUNK);
            expected.push(Write {
                gpa,
                len,
                image_offset: None,
            });
            gpa += len;
        }
    }
    assert_eq!(writes, expected, "writes differ from the segments");
    for (i, a) in segments.iter().enumerate() {
        for b in &segments[i + 1..] {
            assert!(a.end <= b.paddr || b.end <= a.paddr, "segments overlap");
        }
    }
    let low = segments.iter().map(|s| s.paddr).min().expect("a segment");
    let high = segments.iter().map(|s| s.end).max().expect("a segment");
    assert_eq!((info.low, info.high), (low, high));
    assert!(ram_base <= info.low && info.low < info.high && info.high <= ram_end);
    assert!(
        segments
            .iter()
            .any(|s| s.executable && s.paddr <= info.entry && info.entry < s.end),
        "entry {:#x} in no executable segment",
        info.entry
    );
    let e_entry = u64_at(image, 24);
    let found = segments.iter().filter(|s| s.executable).find_map(|s| {
        if e_entry.checked_sub(s.vaddr).is_some_and(|o| o < s.memsz) {
            Some(s.paddr + (e_entry - s.vaddr))
        } else {
            (s.paddr <= e_entry && e_entry < s.end).then_some(e_entry)
        }
    });
    assert_eq!(
        Some(info.entry),
        found,
        "entry {e_entry:#x} resolved otherwise"
    );
}

/// A program header being written.
struct Header {
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

/// An image, its RAM base and length, and whether it was left well formed
/// (then it must load).
fn generate(g: &mut Input<'_>) -> (Vec<u8>, u64, u64, bool) {
    let mut well_formed = true;
    let ram_base = match g.u8() % 5 {
        0 => 0,
        1 | 2 => 0x10_0000,
        3 => u64::from(g.u32()) << 12,
        _ => {
            well_formed = false;
            g.u64()
        }
    };
    let ram_len = match g.u8() % 5 {
        0 | 1 => 0x10_0000,
        2 => 0x4000_0000,
        3 => u64::from(g.u32()),
        _ => {
            well_formed = false;
            g.u64()
        }
    };
    let Some(ram_end) = ram_base.checked_add(ram_len) else {
        return (Vec::new(), ram_base, ram_len, false);
    };
    // A high-half link address for the virtual side, at times.
    let virt_offset = if g.rarely(2) {
        0xffff_ffff_8000_0000u64.wrapping_sub(ram_base & !0xfff)
    } else {
        0
    };

    let count = if g.rarely(16) {
        usize::from(g.u8() % 24)
    } else {
        1 + usize::from(g.u8()) % MAX_SEGMENTS
    };
    let mut headers = Vec::new();
    let mut bodies: Vec<&[u8]> = Vec::new();
    let mut cursor = ram_base.saturating_add(u64::from(g.u16() & 0x3fff));
    let mut loads_exec = false;
    for _ in 0..count {
        let p_type = match g.u8() % 8 {
            0 => 4, // PT_NOTE
            1 if g.rarely(2) => 0,
            1 => g.u32(),
            _ => PT_LOAD,
        };
        let flags = g.u8() as u32 & 7;
        let file_len = if g.rarely(8) {
            usize::from(g.u16() % 6000)
        } else {
            usize::from(g.u8() % 96)
        };
        let body = g.take(file_len);
        let bss = match g.u8() % 4 {
            0 => 0,
            1 | 2 => u64::from(g.u8()),
            _ => u64::from(g.u16()) << (g.u8() % 4),
        };
        let filesz = body.len() as u64;
        let mut memsz = filesz + bss;
        if g.rarely(32) {
            well_formed = false;
            memsz = if g.rarely(2) { g.u64() } else { filesz / 2 };
        }
        let gap = match g.u8() % 4 {
            0 => 0,
            1 => u64::from(g.u8()),
            _ => u64::from(g.u16()),
        };
        let mut paddr = cursor.saturating_add(gap);
        if g.rarely(32) {
            // Onto an earlier segment, or anywhere.
            well_formed = false;
            paddr = if g.rarely(2) {
                cursor.saturating_sub(u64::from(g.u16()))
            } else {
                g.u64()
            };
        }
        if p_type == PT_LOAD && memsz > 0 {
            match paddr.checked_add(memsz) {
                Some(end) if end <= ram_end && paddr >= ram_base => {}
                _ => well_formed = false,
            }
            cursor = paddr.saturating_add(memsz);
            loads_exec |= flags & PF_X != 0;
        }
        if p_type == PT_LOAD && filesz > memsz {
            well_formed = false;
        }
        let vaddr = if g.rarely(32) {
            g.u64()
        } else {
            paddr.wrapping_add(virt_offset)
        };
        // A virtual range past the top of the address space holds no entry.
        if p_type == PT_LOAD && vaddr.checked_add(memsz).is_none() {
            well_formed = false;
        }
        headers.push(Header {
            p_type,
            flags,
            offset: 0,
            vaddr,
            paddr,
            filesz,
            memsz,
        });
        bodies.push(body);
    }
    if !loads_exec {
        well_formed = false;
    }

    // The entry: in a loaded executable segment by its virtual or its
    // physical address, or (rarely) anything.
    let executable: Vec<&Header> = headers
        .iter()
        .filter(|h| h.p_type == PT_LOAD && h.flags & PF_X != 0 && h.memsz > 0)
        .collect();
    let pick = usize::from(g.u8());
    let entry = match executable.get(pick % executable.len().max(1)) {
        Some(h) if !g.rarely(32) => {
            let off = g.u64() % h.memsz;
            if g.rarely(4) {
                h.paddr.wrapping_add(off)
            } else {
                h.vaddr.wrapping_add(off)
            }
        }
        _ => {
            well_formed = false;
            g.u64()
        }
    };

    let phoff = EHDR_LEN;
    let mut image = vec![0u8; phoff + PHDR_LEN * headers.len()];
    for (h, body) in headers.iter_mut().zip(&bodies) {
        h.offset = image.len() as u64;
        image.extend_from_slice(body);
        if g.rarely(32) {
            well_formed = false;
            h.offset = if g.rarely(2) {
                g.u64()
            } else {
                h.offset.wrapping_add(u64::from(g.u8()))
            };
        }
    }
    image[..4].copy_from_slice(b"\x7fELF");
    image[4] = 2; // ELFCLASS64
    image[5] = 1; // ELFDATA2LSB
    image[6] = 1; // EI_VERSION
    put(&mut image, 16, &2u16.to_le_bytes()); // ET_EXEC
    put(&mut image, 18, &62u16.to_le_bytes()); // EM_X86_64
    put(&mut image, 20, &1u32.to_le_bytes());
    put(&mut image, 24, &entry.to_le_bytes());
    put(&mut image, 32, &(phoff as u64).to_le_bytes());
    put(&mut image, 52, &(EHDR_LEN as u16).to_le_bytes());
    put(&mut image, 54, &(PHDR_LEN as u16).to_le_bytes());
    put(&mut image, 56, &(headers.len() as u16).to_le_bytes());
    if headers.is_empty() || headers.len() > MAX_SEGMENTS {
        well_formed = false;
    }
    for (i, h) in headers.iter().enumerate() {
        let at = phoff + i * PHDR_LEN;
        put(&mut image, at, &h.p_type.to_le_bytes());
        put(&mut image, at + 4, &h.flags.to_le_bytes());
        put(&mut image, at + 8, &h.offset.to_le_bytes());
        put(&mut image, at + 16, &h.vaddr.to_le_bytes());
        put(&mut image, at + 24, &h.paddr.to_le_bytes());
        put(&mut image, at + 32, &h.filesz.to_le_bytes());
        put(&mut image, at + 40, &h.memsz.to_le_bytes());
        put(&mut image, at + 48, &0x1000u64.to_le_bytes());
    }

    // Header fields that lie, at times.
    if g.rarely(8) {
        well_formed = false;
        match g.u8() % 6 {
            0 => put(&mut image, 56, &g.u16().to_le_bytes()),
            1 => put(&mut image, 54, &g.u16().to_le_bytes()),
            2 => put(&mut image, 32, &g.u64().to_le_bytes()),
            3 => image.truncate(usize::from(g.u16()) % (image.len() + 1)),
            _ => {
                // Any byte of the headers.
                let at = usize::from(g.u16()) % (EHDR_LEN + PHDR_LEN * headers.len());
                let value = g.u8();
                if let Some(b) = image.get_mut(at) {
                    *b = value;
                }
            }
        }
    }
    (image, ram_base, ram_len, well_formed)
}

fn put(image: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = image.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}
