//! The Multiboot1 and Multiboot2 information parsers over loader memory,
//! in two modes chosen by bit 1 of the first byte (bit 0 picks the
//! protocol).
//!
//! Raw: the rest of the first byte says where the information block starts
//! (in 4-byte steps, so Multiboot2's alignment rule is met or not) and the
//! remaining bytes are the memory, at a fixed physical address, so the
//! block's own pointers (Multiboot1's memory map, module table, strings)
//! land inside it, past it or nowhere. Generated:
//! the input drives a writer of a block like a loader's (Multiboot2 tags:
//! command line, loader name, modules, basic memory, memory map, ACPI RSDP
//! copies, unknown tags; Multiboot1: the fixed block with flags and its
//! strings, map and module table after it), mostly well formed and at
//! times with a size, pointer or byte that is not, so the fuzzer reaches
//! the checks behind a valid header.
//!
//! `parse` must return (never panic, overflow or read outside the memory),
//! and what it accepts must hold together: names and command lines
//! printable ASCII within their caps, modules with `start <= end` and not at
//! 0, RAM ranges not inverted, an RSDP copy within its cap (and handed to
//! the ACPI reader, which must return too), every error one line.
#![no_main]

use hv_x86::acpi;
use hv_x86::multiboot::{self, MAX_CMDLINE, MAX_NAME, MAX_RSDP, Memory, Protocol};
use libfuzzer_sys::fuzz_target;

/// Where the loader memory starts (address 0 stays unreadable).
const BASE: u64 = 0x1_0000;

struct LoaderMemory<'a>(&'a [u8]);

impl Memory for LoaderMemory<'_> {
    fn read(&self, addr: u64, max: usize) -> Option<&[u8]> {
        let off = usize::try_from(addr.checked_sub(BASE)?).ok()?;
        let rest = self.0.get(off..).filter(|rest| !rest.is_empty())?;
        Some(&rest[..rest.len().min(max)])
    }
}

fn printable(s: &str) -> bool {
    s.bytes().all(|c| (0x20..0x7f).contains(&c))
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let protocol = if head & 1 == 0 {
        Protocol::Multiboot1
    } else {
        Protocol::Multiboot2
    };
    if head & 2 == 0 {
        check(protocol, BASE + u64::from(head >> 2) * 4, rest);
    } else {
        let mut g = Input(rest);
        let block = match protocol {
            Protocol::Multiboot1 => mb1(&mut g),
            Protocol::Multiboot2 => mb2(&mut g),
        };
        check(protocol, BASE, &block);
    }
});

/// Parses the block at `info` in `memory` (at [`BASE`]) and checks the
/// outcome.
fn check(protocol: Protocol, info: u64, memory: &[u8]) {
    let mem = LoaderMemory(memory);
    let boot = match multiboot::parse(protocol, info, &mem) {
        Ok(boot) => boot,
        Err(e) => {
            let text = e.to_string();
            assert!(!text.is_empty() && !text.contains('\n'), "{text}");
            return;
        }
    };
    assert_eq!(boot.protocol, protocol);
    if let Some(name) = boot.loader_name {
        assert!(name.len() <= MAX_NAME && printable(name));
    }
    if let Some(cmdline) = boot.cmdline {
        assert!(cmdline.len() <= MAX_CMDLINE && printable(cmdline));
    }
    for m in boot.modules() {
        assert!(m.start != 0 && m.start <= m.end);
        assert!(m.cmdline.len() <= MAX_CMDLINE && printable(m.cmdline));
    }
    for r in boot.ram() {
        assert!(r.start <= r.end);
    }
    if let Some(m) = boot.memory {
        let _ = m.mib();
    }
    if let Some(rsdp) = boot.rsdp {
        assert_eq!(protocol, Protocol::Multiboot2);
        assert!(rsdp.len() <= MAX_RSDP);
        match acpi::rsdp_from_bytes(rsdp) {
            Ok(r) => assert!(r.found_at.is_none() && (r.xsdt.is_none() || r.revision >= 2)),
            Err(e) => assert!(!e.to_string().contains('\n')),
        }
    }
}

/// The input, consumed from the front; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head.to_vec()
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

    /// True about once in `n` times.
    fn rarely(&mut self, n: u8) -> bool {
        self.u8() % n == 0
    }
}

/// A NUL-terminated string, mostly printable, at times unterminated,
/// unprintable or long.
fn string(g: &mut Input) -> Vec<u8> {
    let len = if g.rarely(16) {
        usize::from(g.u16() % 1200)
    } else {
        usize::from(g.u8() % 40)
    };
    let raw = g.rarely(8);
    let mut s: Vec<u8> = (0..len)
        .map(|_| if raw { g.u8() } else { 0x20 + g.u8() % 95 })
        .collect();
    if !g.rarely(16) {
        s.push(0);
    }
    s
}

/// An RSDP copy: ACPI 1.0 or 2.0, checksums right unless rarely.
fn rsdp(g: &mut Input, v2: bool) -> Vec<u8> {
    if g.rarely(8) {
        let len = usize::from(g.u8() % 80);
        return g.take(len);
    }
    let sum = |b: &[u8]| b.iter().fold(0u8, |s, &c| s.wrapping_add(c)).wrapping_neg();
    let mut r = b"RSD PTR \0GRUB  ".to_vec();
    r.push(if v2 { 2 } else { 0 });
    r.extend_from_slice(&g.u32().to_le_bytes());
    r[8] = sum(&r);
    if v2 {
        r.extend_from_slice(&36u32.to_le_bytes());
        r.extend_from_slice(&g.u64().to_le_bytes());
        r.extend_from_slice(&[0; 4]);
        r[32] = sum(&r);
    }
    if g.rarely(8) {
        let at = usize::from(g.u8()) % r.len();
        r[at] = g.u8();
    }
    r
}

/// A Multiboot2 block: tags, mostly well formed, then the end tag.
fn mb2(g: &mut Input) -> Vec<u8> {
    let mut b = vec![0u8; 8];
    for _ in 0..g.u8() % 12 {
        let (kind, body): (u32, Vec<u8>) = match g.u8() % 9 {
            0 => (1, string(g)),
            1 => (2, string(g)),
            2 => {
                let start = if g.rarely(16) { 0 } else { g.u32() | 0x1000 };
                let end = if g.rarely(16) {
                    g.u32()
                } else {
                    start.saturating_add(u32::from(g.u16()))
                };
                let mut body = start.to_le_bytes().to_vec();
                body.extend_from_slice(&end.to_le_bytes());
                body.extend(string(g));
                (3, body)
            }
            3 => {
                let mut body = g.u32().to_le_bytes().to_vec();
                body.extend_from_slice(&g.u32().to_le_bytes());
                (4, body)
            }
            4 => {
                let entry_size = if g.rarely(8) { u32::from(g.u8()) } else { 24 };
                let mut body = entry_size.to_le_bytes().to_vec();
                body.extend_from_slice(&[0; 4]);
                for i in 0..u64::from(g.u8() % 40) {
                    let base = if g.rarely(8) { g.u64() } else { i << 24 };
                    let len = u64::from(g.u32()) << (g.u8() % 24);
                    let mut e = base.to_le_bytes().to_vec();
                    e.extend_from_slice(&len.to_le_bytes());
                    e.extend_from_slice(&u32::from(g.u8() % 5).to_le_bytes());
                    e.resize(entry_size as usize, 0);
                    body.extend(e);
                }
                (6, body)
            }
            5 => (14, rsdp(g, false)),
            6 => (15, rsdp(g, true)),
            7 => {
                let len = usize::from(g.u8() % 32);
                (g.u32(), g.take(len))
            }
            _ => (8, vec![0; usize::from(g.u8() % 32)]),
        };
        tag(g, &mut b, kind, &body);
    }
    tag(g, &mut b, 0, &[]);
    let total = if g.rarely(16) {
        g.u32()
    } else {
        b.len() as u32
    };
    b[..4].copy_from_slice(&total.to_le_bytes());
    b
}

/// Appends a tag, its size right unless rarely, padded to 8 bytes.
fn tag(g: &mut Input, b: &mut Vec<u8>, kind: u32, body: &[u8]) {
    let size = if g.rarely(32) {
        u32::from(g.u8())
    } else {
        8 + body.len() as u32
    };
    b.extend_from_slice(&kind.to_le_bytes());
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(body);
    b.resize(b.len().next_multiple_of(8), 0);
}

/// A Multiboot1 block at [`BASE`]: the 68-byte information, then what its
/// flags point at (each pointer right unless rarely).
fn mb1(g: &mut Input) -> Vec<u8> {
    let mut b = vec![0u8; 68];
    let wanted = g.u8();
    let mut flags = 0u32;
    let put = |b: &mut Vec<u8>, field: usize, value: u32| {
        b[field..field + 4].copy_from_slice(&value.to_le_bytes());
    };
    // Appends `blob`, returning its address (or, rarely, anything).
    let place = |g: &mut Input, b: &mut Vec<u8>, blob: &[u8]| -> u32 {
        let at = BASE as u32 + b.len() as u32;
        b.extend_from_slice(blob);
        if g.rarely(16) { g.u32() } else { at }
    };
    if wanted & 1 != 0 {
        flags |= 1;
        put(&mut b, 4, g.u32());
        put(&mut b, 8, g.u32());
    }
    if wanted & 2 != 0 {
        flags |= 1 << 2;
        let s = string(g);
        let at = place(g, &mut b, &s);
        put(&mut b, 16, at);
    }
    if wanted & 4 != 0 {
        flags |= 1 << 3;
        let count = u32::from(g.u8() % 12);
        let mut strings = Vec::new();
        for _ in 0..count {
            let s = string(g);
            strings.push(place(g, &mut b, &s));
        }
        let mut table = Vec::new();
        for s in strings {
            let start = if g.rarely(16) { 0 } else { g.u32() | 0x1000 };
            let end = if g.rarely(16) {
                g.u32()
            } else {
                start.saturating_add(u32::from(g.u16()))
            };
            let string = if g.rarely(8) { 0 } else { s };
            for v in [start, end, string, 0] {
                table.extend_from_slice(&v.to_le_bytes());
            }
        }
        let at = place(g, &mut b, &table);
        put(
            &mut b,
            20,
            if g.rarely(16) {
                u32::from(g.u8())
            } else {
                count
            },
        );
        put(&mut b, 24, at);
    }
    if wanted & 8 != 0 {
        flags |= 1 << 6;
        let mut map = Vec::new();
        for i in 0..u64::from(g.u8() % 40) {
            let size = if g.rarely(16) { u32::from(g.u8()) } else { 20 };
            map.extend_from_slice(&size.to_le_bytes());
            let mut e = (i << 24).to_le_bytes().to_vec();
            e.extend_from_slice(&(u64::from(g.u32()) << (g.u8() % 24)).to_le_bytes());
            e.extend_from_slice(&u32::from(g.u8() % 5).to_le_bytes());
            e.resize(size as usize, 0);
            map.extend(e);
        }
        let len = if g.rarely(16) {
            g.u32()
        } else {
            map.len() as u32
        };
        let at = place(g, &mut b, &map);
        put(&mut b, 44, len);
        put(&mut b, 48, at);
    }
    if wanted & 16 != 0 {
        flags |= 1 << 9;
        let s = string(g);
        let at = place(g, &mut b, &s);
        put(&mut b, 64, at);
    }
    if g.rarely(8) {
        flags = g.u32();
    }
    put(&mut b, 0, flags);
    b
}
