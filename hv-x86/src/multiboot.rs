//! What the boot loader told us, read with every size and pointer checked.
//!
//! Multiboot1 hands over a fixed structure with flag-guarded fields;
//! Multiboot2 a list of 8-byte-aligned tags. Both are loader input: a size
//! out of range or a string without its terminator is an error, never a
//! read past the structure.

use crate::boot::{MB1_BOOT_MAGIC, MB2_BOOT_MAGIC};

/// The facts the banner shows.
pub struct BootInfo {
    /// "Multiboot1" or "Multiboot2".
    pub protocol: &'static str,
    /// The loader's name, when given.
    pub loader_name: &'static str,
    /// Upper plus lower memory in KiB, when given.
    pub memory_kib: Option<u64>,
}

/// Largest Multiboot2 information structure accepted.
const MAX_INFO: usize = 64 * 1024;
/// Longest string read.
const MAX_STR: usize = 256;
/// Highest address the boot page tables map.
const MAPPED: usize = 4 << 30;

fn bytes(addr: usize, len: usize) -> Result<&'static [u8], &'static str> {
    if addr == 0 || addr.checked_add(len).is_none_or(|end| end > MAPPED) {
        return Err("pointer outside the identity-mapped 4 GiB");
    }
    // SAFETY: the range lies in the identity-mapped first 4 GiB, which the
    // loader left readable, and it is only read.
    Ok(unsafe { core::slice::from_raw_parts(addr as *const u8, len) })
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn c_string(b: &'static [u8]) -> &'static str {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    core::str::from_utf8(&b[..end]).unwrap_or("(not UTF-8)")
}

/// Reads the loader's information.
pub fn describe(magic: u32, info: u32) -> Result<BootInfo, &'static str> {
    match magic {
        MB1_BOOT_MAGIC => multiboot1(info as usize),
        MB2_BOOT_MAGIC => multiboot2(info as usize),
        _ => Err("not entered by a Multiboot loader (bad magic in eax)"),
    }
}

fn multiboot1(info: usize) -> Result<BootInfo, &'static str> {
    let b = bytes(info, 88)?;
    let flags = u32_at(b, 0).unwrap_or(0);
    let memory_kib = if flags & 1 != 0 {
        let lower = u64::from(u32_at(b, 4).unwrap_or(0));
        let upper = u64::from(u32_at(b, 8).unwrap_or(0));
        Some(lower + upper)
    } else {
        None
    };
    let loader_name = if flags & (1 << 9) != 0 {
        let ptr = u32_at(b, 64).unwrap_or(0) as usize;
        c_string(bytes(ptr, MAX_STR.min(MAPPED.saturating_sub(ptr)))?)
    } else {
        "unnamed loader"
    };
    Ok(BootInfo {
        protocol: "Multiboot1",
        loader_name,
        memory_kib,
    })
}

fn multiboot2(info: usize) -> Result<BootInfo, &'static str> {
    let head = bytes(info, 8)?;
    let total = u32_at(head, 0).unwrap_or(0) as usize;
    if !(16..=MAX_INFO).contains(&total) || !info.is_multiple_of(8) {
        return Err("Multiboot2 information has an implausible size or alignment");
    }
    let b = bytes(info, total)?;
    let mut out = BootInfo {
        protocol: "Multiboot2",
        loader_name: "unnamed loader",
        memory_kib: None,
    };
    let mut off = 8;
    while off + 8 <= total {
        let kind = u32_at(b, off).unwrap_or(0);
        let size = u32_at(b, off + 4).unwrap_or(0) as usize;
        if size < 8 || off + size > total {
            return Err("Multiboot2 tag runs past the information structure");
        }
        let body = &b[off + 8..off + size];
        match kind {
            0 => return Ok(out),
            2 => out.loader_name = c_string(body),
            4 => {
                let lower = u64::from(u32_at(body, 0).ok_or("short memory tag")?);
                let upper = u64::from(u32_at(body, 4).ok_or("short memory tag")?);
                out.memory_kib = Some(lower + upper);
            }
            _ => {}
        }
        off = (off + size + 7) & !7;
    }
    Err("Multiboot2 information has no end tag")
}
