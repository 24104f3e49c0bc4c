//! The hypervisor heap: the loader's available RAM below 4 GiB (what the
//! boot page tables map), less the first MiB, this image, the loader's
//! information block and every boot module, handed to a buddy allocator.
//! Domain RAM, page tables, VMCSs and the Xen-ABI state all come from it.

use buddy_system_allocator::LockedHeap;
use common::memory::{PhysRange, RangeSet};
use hv_x86::multiboot::BootInfo;

/// Allocator orders up to 2^32 bytes per block.
#[global_allocator]
static HEAP: LockedHeap<33> = LockedHeap::empty();

/// Smallest piece worth adding.
const MIN_PIECE: u64 = 4096;
/// What the boot page tables map.
const MAPPED: u64 = 4 << 30;

unsafe extern "C" {
    static hv_load_start: u8;
    static hv_bss_end: u8;
}

/// Fills the heap from the loader's memory map; returns the bytes added
/// (0 without a map: nothing is known to be free).
pub fn init(boot: Option<&BootInfo>) -> u64 {
    let Some(boot) = boot else { return 0 };
    let mut free: RangeSet<64> = RangeSet::new();
    for r in boot.ram() {
        let r = PhysRange {
            start: r.start.max(1 << 20),
            end: r.end.min(MAPPED),
        };
        if !r.is_empty() && free.add(r).is_err() {
            break;
        }
    }
    let image = PhysRange {
        start: (&raw const hv_load_start) as u64,
        end: (&raw const hv_bss_end) as u64,
    };
    // A removal that does not fit the set would leave used memory in it:
    // then no heap at all.
    let mut taken = [
        image,
        PhysRange {
            start: boot.info.start,
            end: boot.info.end,
        },
    ]
    .into_iter()
    .chain(boot.modules().map(|m| PhysRange {
        start: m.start,
        end: m.end,
    }));
    if taken.any(|r| free.remove(r).is_err()) {
        return 0;
    }
    let mut added = 0;
    let mut heap = HEAP.lock();
    for r in free.iter() {
        let r = r.align_inwards(MIN_PIECE);
        if r.size() < MIN_PIECE {
            continue;
        }
        // SAFETY: the range is RAM the loader marked available, below 4 GiB
        // (identity mapped), above the first MiB, outside this image, the
        // loader's information and every module; nothing else owns it and
        // each range is added once.
        unsafe { heap.add_to_heap(r.start as usize, r.end as usize) };
        added += r.size();
    }
    added
}

/// Bytes the heap holds in all.
pub fn total() -> usize {
    HEAP.lock().stats_total_bytes()
}

/// Bytes handed out.
pub fn allocated() -> usize {
    HEAP.lock().stats_alloc_actual()
}
