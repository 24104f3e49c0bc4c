//! The hypervisor heap: every byte of RAM the device tree describes, less
//! the image, the DTB and every reservation, handed to a buddy allocator.
//!
//! Later issues carve domain memory out of it with page-aligned layouts.

use buddy_system_allocator::LockedHeap;
use common::memory::{PhysRange, RangeSet};

/// Allocator orders up to 2^32 bytes per block.
#[global_allocator]
static HEAP: LockedHeap<33> = LockedHeap::empty();

/// Smallest piece worth adding (smaller leftovers are ignored).
const MIN_PIECE: u64 = 4096;

/// Adds every range of `free` to the heap; returns the bytes added.
pub fn init<const N: usize>(free: &RangeSet<N>) -> u64 {
    let mut added = 0;
    let mut heap = HEAP.lock();
    for r in free.iter() {
        let r: PhysRange = r.align_inwards(MIN_PIECE);
        if r.size() < MIN_PIECE {
            continue;
        }
        // SAFETY: `free` holds RAM the DT describes, inside the boot page
        // table's normal windows, minus the image, the DTB and every
        // reservation, so nothing else owns it; each range is added once.
        unsafe { heap.add_to_heap(r.start as usize, r.end as usize) };
        added += r.size();
    }
    added
}

/// Bytes the heap holds in all (allocated or not).
pub fn total() -> usize {
    HEAP.lock().stats_total_bytes()
}

/// Bytes currently allocated.
pub fn allocated() -> usize {
    HEAP.lock().stats_alloc_actual()
}

/// Bytes not allocated.
pub fn free() -> usize {
    let h = HEAP.lock();
    h.stats_total_bytes() - h.stats_alloc_actual()
}
