//! Just enough of a flattened device tree reader to check what the
//! hypervisor handed over in x0: the header, and `/chosen/bootargs` (the
//! `bootargs` the boot module carried). Reads RAM byte by byte or in
//! aligned words, as Device memory requires.

use crate::{Msg, msg};

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
/// Larger trees are refused (the guest's is a few KiB).
const MAX_SIZE: u32 = 2 << 20;

fn byte(addr: u64) -> u8 {
    // SAFETY: callers stay inside the tree, whose start was checked to be
    // in guest RAM; a read past the end of RAM takes an abort that the
    // vector records and skips (the caller then reports it).
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn be32(addr: u64) -> u32 {
    // SAFETY: as in `byte`; `addr` is 4-byte aligned (the tree is 8-byte
    // aligned and every offset read here is a multiple of 4).
    u32::from_be(unsafe { core::ptr::read_volatile(addr as *const u32) })
}

/// Is the NUL-terminated string at `addr` equal to `s`?
fn str_eq(addr: u64, s: &str) -> bool {
    s.bytes()
        .enumerate()
        .all(|(i, b)| byte(addr + i as u64) == b)
        && byte(addr + s.len() as u64) == 0
}

/// Length of the NUL-terminated string at `addr`, if it ends before `end`.
fn str_len(addr: u64, end: u64) -> Option<u64> {
    (addr..end).position(|a| byte(a) == 0).map(|n| n as u64)
}

const fn align4(v: u64) -> u64 {
    (v + 3) & !3
}

/// Checks the tree at `dtb` and that `/chosen/bootargs` is `want`.
pub fn check_bootargs(dtb: u64, want: &str) -> Result<(), Msg> {
    let got = bootargs(dtb)?;
    if got.as_str() == want {
        Ok(())
    } else {
        Err(msg!(
            "/chosen/bootargs is {:?}, want {want:?}",
            got.as_str()
        ))
    }
}

/// `/chosen/bootargs` of the tree at `dtb` (its header checked), cut at
/// what a [`Msg`] holds.
pub fn bootargs(dtb: u64) -> Result<Msg, Msg> {
    let magic = be32(dtb);
    if magic != FDT_MAGIC {
        return Err(msg!("no FDT magic at {dtb:#x} (read {magic:#x})"));
    }
    let total = be32(dtb + 4);
    let (off_struct, off_strings) = (be32(dtb + 8), be32(dtb + 12));
    let (version, size_struct) = (be32(dtb + 20), be32(dtb + 0x24));
    if total > MAX_SIZE || version < 17 || off_struct as u64 + size_struct as u64 > total as u64 {
        return Err(msg!(
            "bad FDT header: totalsize {total:#x}, version {version}, struct {off_struct:#x}+{size_struct:#x}"
        ));
    }
    let strings = dtb + off_strings as u64;
    let end = dtb + off_struct as u64 + size_struct as u64;
    let mut p = dtb + off_struct as u64;
    let mut depth = 0u32;
    let mut in_chosen = false;
    while p + 4 <= end {
        let token = be32(p);
        p += 4;
        match token {
            FDT_BEGIN_NODE => {
                let Some(len) = str_len(p, end) else {
                    return Err(msg!("unterminated node name at {p:#x}"));
                };
                depth += 1;
                // The root is depth 1; /chosen is its child.
                if depth == 2 && str_eq(p, "chosen") {
                    in_chosen = true;
                }
                p = align4(p + len + 1);
            }
            FDT_END_NODE => {
                if depth == 2 {
                    in_chosen = false;
                }
                depth = depth.saturating_sub(1);
            }
            FDT_PROP => {
                let len = be32(p) as u64;
                let name = strings + be32(p + 4) as u64;
                let value = p + 8;
                p = align4(value + len);
                if in_chosen && depth == 2 && str_eq(name, "bootargs") {
                    let mut got = Msg::new();
                    for a in value..value + len.min(crate::MSG_MAX as u64) {
                        match byte(a) {
                            0 => break,
                            b => got.push(b),
                        }
                    }
                    return Ok(got);
                }
            }
            FDT_NOP => {}
            FDT_END => break,
            other => return Err(msg!("bad FDT token {other:#x} at {:#x}", p - 4)),
        }
    }
    Err(msg!("no /chosen/bootargs in the tree at {dtb:#x}"))
}
