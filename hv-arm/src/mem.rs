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
    let line = dcache_line();
    match zva_block() {
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
    // SAFETY: the caller's contract.
    unsafe {
        core::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len());
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
