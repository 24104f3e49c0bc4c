//! Filling domain memory: scrubbing and loading with the cache maintenance
//! a guest that starts with its MMU (and so its caches) off needs.
//!
//! The guest's first accesses are non-cacheable, so everything the
//! hypervisor wrote through its cacheable mapping must reach the point of
//! coherency before the guest runs, and no dirty line of ours may be left
//! to be evicted over what the guest writes later. Scrubbing therefore
//! zeroes with DC ZVA and cleans each line as it goes.

use core::arch::asm;

use crate::sysregs::read;

fn dcache_line() -> usize {
    // CTR_EL0.DminLine: log2 of words in the smallest data cache line.
    4 << ((read!("ctr_el0") >> 16) & 0xf)
}

fn zva_block() -> Option<usize> {
    let dczid = read!("dczid_el0");
    if dczid & (1 << 4) != 0 {
        None
    } else {
        Some(4 << (dczid & 0xf))
    }
}

/// Zeroes `base..base+len` and cleans it to the point of coherency.
///
/// # Safety
///
/// The range must be RAM the hypervisor maps and owns exclusively (a
/// domain's memory that no guest runs on), aligned to 4 KiB.
pub unsafe fn scrub(base: usize, len: usize) {
    if len == 0 {
        return;
    }
    let line = dcache_line();
    let aligned = base.is_multiple_of(512) && len.is_multiple_of(512);
    match zva_block() {
        // The common shapes, unrolled: 64-byte lines with 64- or 512-byte
        // zeroing blocks, 512 bytes per iteration.
        Some(64) if line == 64 && aligned => {
            // SAFETY: the caller owns the range; each DC ZVA zeroes one
            // aligned 64-byte block, DC CVAC cleans the same line.
            unsafe {
                asm!(
                    "2:",
                    "dc zva, {p}", "dc cvac, {p}", "add {q}, {p}, #64",
                    "dc zva, {q}", "dc cvac, {q}", "add {q}, {p}, #128",
                    "dc zva, {q}", "dc cvac, {q}", "add {q}, {p}, #192",
                    "dc zva, {q}", "dc cvac, {q}", "add {q}, {p}, #256",
                    "dc zva, {q}", "dc cvac, {q}", "add {q}, {p}, #320",
                    "dc zva, {q}", "dc cvac, {q}", "add {q}, {p}, #384",
                    "dc zva, {q}", "dc cvac, {q}", "add {q}, {p}, #448",
                    "dc zva, {q}", "dc cvac, {q}",
                    "add {p}, {p}, #512",
                    "cmp {p}, {end}",
                    "b.lo 2b",
                    p = inout(reg) base => _,
                    q = out(reg) _,
                    end = in(reg) base + len,
                    options(nostack),
                );
            }
        }
        Some(512) if line == 64 && aligned => {
            // SAFETY: as above, one DC ZVA per 512-byte block.
            unsafe {
                asm!(
                    "2:",
                    "dc zva, {p}",
                    "dc cvac, {p}", "add {q}, {p}, #64",
                    "dc cvac, {q}", "add {q}, {p}, #128",
                    "dc cvac, {q}", "add {q}, {p}, #192",
                    "dc cvac, {q}", "add {q}, {p}, #256",
                    "dc cvac, {q}", "add {q}, {p}, #320",
                    "dc cvac, {q}", "add {q}, {p}, #384",
                    "dc cvac, {q}", "add {q}, {p}, #448",
                    "dc cvac, {q}",
                    "add {p}, {p}, #512",
                    "cmp {p}, {end}",
                    "b.lo 2b",
                    p = inout(reg) base => _,
                    q = out(reg) _,
                    end = in(reg) base + len,
                    options(nostack),
                );
            }
        }
        Some(block) if block >= line && base.is_multiple_of(block) && len.is_multiple_of(block) => {
            let mut p = base;
            let end = base + len;
            while p < end {
                // SAFETY: the caller owns the range; DC ZVA writes zeros to
                // one aligned block, DC CVAC cleans each line of it.
                unsafe { asm!("dc zva, {0}", in(reg) p, options(nostack, preserves_flags)) };
                let mut l = p;
                while l < p + block {
                    // SAFETY: as above.
                    unsafe { asm!("dc cvac, {0}", in(reg) l, options(nostack, preserves_flags)) };
                    l += line;
                }
                p += block;
            }
        }
        _ => {
            // SAFETY: the caller owns the range.
            unsafe { core::ptr::write_bytes(base as *mut u8, 0, len) };
            // SAFETY: as above.
            unsafe { clean(base, len) };
        }
    }
    // SAFETY: a barrier only.
    unsafe { asm!("dsb ish", options(nostack, preserves_flags)) };
}

/// Copies `src` into `dst..dst+src.len()` and cleans the destination.
///
/// # Safety
///
/// The destination must be RAM the hypervisor owns and maps, not
/// overlapping `src`.
pub unsafe fn load(dst: usize, src: &[u8]) {
    let bulk = src.len() & !63;
    if bulk > 0 {
        // SAFETY: the caller's contract; 64 bytes per iteration through
        // four vector registers (declared clobbered), `bulk` a non-zero
        // multiple of 64.
        unsafe {
            asm!(
                "2:",
                "ldp q0, q1, [{s}], #32",
                "ldp q2, q3, [{s}], #32",
                "stp q0, q1, [{d}], #32",
                "stp q2, q3, [{d}], #32",
                "subs {n}, {n}, #64",
                "b.ne 2b",
                s = inout(reg) src.as_ptr() => _,
                d = inout(reg) dst => _,
                n = inout(reg) bulk => _,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                options(nostack),
            );
        }
    }
    // SAFETY: the caller's contract.
    unsafe {
        core::ptr::copy_nonoverlapping(
            src.as_ptr().add(bulk),
            (dst + bulk) as *mut u8,
            src.len() - bulk,
        );
        clean(dst, src.len());
    }
}

/// Cleans `base..base+len` to the point of coherency.
///
/// # Safety
///
/// The range must be mapped.
pub unsafe fn clean(base: usize, len: usize) {
    let line = dcache_line();
    let mut p = base & !(line - 1);
    while p < base + len {
        // SAFETY: cache maintenance on mapped memory.
        unsafe { asm!("dc cvac, {0}", in(reg) p, options(nostack, preserves_flags)) };
        p += line;
    }
    // SAFETY: barrier and instruction-cache invalidation for the code just
    // written (the guest executes it).
    unsafe {
        asm!(
            "dsb ish",
            "ic ialluis",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}
