//! Stage-2 translation: one table per domain, its VMID, and the TLB
//! maintenance that goes with every change.
//!
//! Format: 4 KiB granule, 40-bit IPA (VTCR_EL2.T0SZ = 24) starting at level
//! 1 with two concatenated level-1 tables as the root (8 KiB, 8 KiB
//! aligned), as the architecture requires for that size. RAM is mapped with
//! 2 MiB blocks where both addresses allow it and 4 KiB pages elsewhere;
//! nothing else is mapped, so every MMIO access traps.
//!
//! Written here rather than with aarch64-paging: that crate builds stage-1
//! tables for the EL1&0/EL2/EL3 regimes and has no stage-2 descriptors
//! (S2AP, MemAttr), concatenated roots, VMIDs or IPA invalidation; the
//! subset a static partitioning hypervisor needs is small.

use alloc::alloc::{Layout, alloc_zeroed};
use core::arch::asm;

use crate::sysregs::{isb, read, write};

/// Bits of IPA translated.
pub const IPA_BITS: u32 = armvm::layout::IPA_BITS;
const PAGE: u64 = 4096;
const BLOCK_2M: u64 = 2 << 20;

/// Descriptor bits: valid, table/page.
const VALID: u64 = 1;
const TABLE: u64 = 1 << 1;
/// MemAttr[5:2] = 0b1111: Normal, outer and inner write-back cacheable.
const MEMATTR_NORMAL_WB: u64 = 0b1111 << 2;
/// S2AP[7:6].
const S2AP_READ: u64 = 1 << 6;
const S2AP_WRITE: u64 = 1 << 7;
/// SH[9:8] = inner shareable.
const SH_INNER: u64 = 0b11 << 8;
/// Access flag.
const AF: u64 = 1 << 10;
/// XN[54:53] = 0b10: no execution at EL1 or EL0.
const XN: u64 = 0b10 << 53;
/// Output address bits of a descriptor.
const OA_MASK: u64 = 0x0000_ffff_ffff_f000;

/// Access a mapping grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read, write and execute.
    ReadWrite,
    /// Read and write, never execute (pages shared through the Xen ABI).
    DataReadWrite,
    /// Read only, never execute (read-only grants).
    DataReadOnly,
}

impl Access {
    fn attrs(self) -> u64 {
        let base = AF | SH_INNER | MEMATTR_NORMAL_WB | S2AP_READ;
        match self {
            Access::ReadWrite => base | S2AP_WRITE,
            Access::DataReadWrite => base | S2AP_WRITE | XN,
            Access::DataReadOnly => base | XN,
        }
    }
}

/// Why a mapping failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Addresses or size not page aligned, or beyond the IPA space.
    BadRange,
    /// No memory for a table.
    NoMemory,
    /// Something is already mapped there.
    Busy,
}

/// A domain's stage-2 translation.
pub struct Stage2 {
    root: *mut u64,
    vmid: u16,
    /// Held while tables change after the domain is built (page-level
    /// changes may come from any CPU).
    lock: crate::arch::Lock<()>,
}

// SAFETY: the tables are owned by this value and only changed through
// `&mut self`; other CPUs only walk them in hardware.
unsafe impl Send for Stage2 {}
// SAFETY: as above; `&self` methods only read.
unsafe impl Sync for Stage2 {}

fn alloc_table(bytes: usize) -> Result<*mut u64, MapError> {
    let layout = Layout::from_size_align(bytes, bytes).map_err(|_| MapError::NoMemory)?;
    // SAFETY: the layout is non-zero-sized.
    let p = unsafe { alloc_zeroed(layout) }.cast::<u64>();
    if p.is_null() {
        Err(MapError::NoMemory)
    } else {
        Ok(p)
    }
}

impl Stage2 {
    /// An empty translation for `vmid`.
    pub fn new(vmid: u16) -> Result<Self, MapError> {
        Ok(Self {
            root: alloc_table(2 * PAGE as usize)?,
            vmid,
            lock: crate::arch::Lock::new(()),
        })
    }

    /// VTTBR_EL2 for this translation.
    pub fn vttbr(&self) -> u64 {
        (self.root as u64 & OA_MASK) | (u64::from(self.vmid & 0xff) << 48)
    }

    /// Maps `ipa..ipa+size` to `pa..pa+size`.
    pub fn map(&mut self, ipa: u64, pa: u64, size: u64, access: Access) -> Result<(), MapError> {
        let end = ipa.checked_add(size).ok_or(MapError::BadRange)?;
        if !ipa.is_multiple_of(PAGE)
            || !pa.is_multiple_of(PAGE)
            || !size.is_multiple_of(PAGE)
            || end > 1 << IPA_BITS
        {
            return Err(MapError::BadRange);
        }
        let attrs = access.attrs();
        let (mut ipa, mut pa) = (ipa, pa);
        while ipa < end {
            let block = ipa % BLOCK_2M == 0 && pa % BLOCK_2M == 0 && end - ipa >= BLOCK_2M;
            let (level, step) = if block { (2, BLOCK_2M) } else { (3, PAGE) };
            let slot = self.walk(ipa, level)?;
            // SAFETY: `walk` returns a pointer into a table this value owns.
            unsafe {
                if *slot & VALID != 0 {
                    return Err(MapError::Busy);
                }
                let kind = if level == 3 { TABLE | VALID } else { VALID };
                *slot = (pa & OA_MASK) | attrs | kind;
            }
            ipa += step;
            pa += step;
        }
        self.flush();
        Ok(())
    }

    /// Maps one 4 KiB page `ipa` to `pa`, replacing what is there (a block
    /// around it is split first).
    pub fn map_page(&self, ipa: u64, pa: u64, access: Access) -> Result<(), MapError> {
        if !ipa.is_multiple_of(PAGE) || !pa.is_multiple_of(PAGE) || ipa >= 1 << IPA_BITS {
            return Err(MapError::BadRange);
        }
        let _held = self.lock.lock();
        let slot = self.page_slot(ipa)?;
        // SAFETY: a slot of a table this translation owns, changed under
        // its lock; a valid entry is invalidated and its TLB entries
        // dropped before the new one is written (break-before-make).
        unsafe {
            if *slot & VALID != 0 {
                *slot = 0;
                self.flush();
            }
            *slot = (pa & OA_MASK) | access.attrs() | TABLE | VALID;
        }
        self.flush();
        Ok(())
    }

    /// Unmaps the 4 KiB page `ipa` (a block around it is split first).
    pub fn unmap_page(&self, ipa: u64) -> Result<(), MapError> {
        if !ipa.is_multiple_of(PAGE) || ipa >= 1 << IPA_BITS {
            return Err(MapError::BadRange);
        }
        let _held = self.lock.lock();
        let slot = self.page_slot(ipa)?;
        // SAFETY: as in `map_page`.
        unsafe { *slot = 0 };
        self.flush();
        Ok(())
    }

    /// Whether `ipa` translates now. Taking the lock waits out a split in
    /// progress, so a vCPU that faulted inside one can tell the fault was
    /// transient and retry.
    pub fn is_mapped(&self, ipa: u64) -> bool {
        if ipa >= 1 << IPA_BITS {
            return false;
        }
        let _held = self.lock.lock();
        let i1 = ((ipa >> 30) & 0x3ff) as usize;
        // SAFETY: i1 < 1024 = the two root tables' entries; the walk only
        // reads entries of tables this translation owns, under its lock.
        unsafe {
            let e1 = *self.root.add(i1);
            if e1 & VALID == 0 {
                return false;
            }
            let e2 = *((e1 & OA_MASK) as *const u64).add(((ipa >> 21) & 0x1ff) as usize);
            if e2 & VALID == 0 {
                return false;
            }
            if e2 & TABLE == 0 {
                return true;
            }
            let e3 = *((e2 & OA_MASK) as *const u64).add(((ipa >> 12) & 0x1ff) as usize);
            e3 & VALID != 0
        }
    }

    /// The level-3 slot for `ipa`, splitting a 2 MiB block that covers it
    /// into 512 pages with the same output and attributes. Called with the
    /// lock held.
    fn page_slot(&self, ipa: u64) -> Result<*mut u64, MapError> {
        let i1 = ((ipa >> 30) & 0x3ff) as usize;
        // SAFETY: i1 < 1024 = the two root tables' entries.
        let l1 = unsafe { self.root.add(i1) };
        let l2 = Self::next(l1)?;
        // SAFETY: index < 512 within a 4 KiB table.
        let s2 = unsafe { l2.add(((ipa >> 21) & 0x1ff) as usize) };
        // SAFETY: `s2` points into a table this translation owns.
        let e2 = unsafe { *s2 };
        if e2 & VALID != 0 && e2 & TABLE == 0 {
            let t = alloc_table(PAGE as usize)?;
            let attrs = e2 & !OA_MASK & !(TABLE | VALID);
            for i in 0..512u64 {
                // SAFETY: `t` is a fresh 4 KiB table of 512 entries.
                unsafe { *t.add(i as usize) = ((e2 & OA_MASK) + i * PAGE) | attrs | TABLE | VALID };
            }
            // SAFETY: break-before-make on a slot this translation owns:
            // the block goes, its TLB entries are dropped, then the table
            // (same translations) is installed.
            unsafe {
                *s2 = 0;
                self.flush();
                *s2 = (t as u64 & OA_MASK) | TABLE | VALID;
            }
        }
        let l3 = Self::next(s2)?;
        // SAFETY: index < 512 within a 4 KiB table.
        Ok(unsafe { l3.add(((ipa >> 12) & 0x1ff) as usize) })
    }

    /// The descriptor slot for `ipa` at `level` (2 or 3), creating the
    /// tables above it.
    fn walk(&mut self, ipa: u64, level: u32) -> Result<*mut u64, MapError> {
        // Level 1 index spans both concatenated root tables.
        let i1 = ((ipa >> 30) & 0x3ff) as usize;
        // SAFETY: i1 < 1024 = the two root tables' entries.
        let l1 = unsafe { self.root.add(i1) };
        let l2 = Self::next(l1)?;
        // SAFETY: index < 512 within a 4 KiB table.
        let s2 = unsafe { l2.add(((ipa >> 21) & 0x1ff) as usize) };
        if level == 2 {
            return Ok(s2);
        }
        let l3 = Self::next(s2)?;
        // SAFETY: as above.
        Ok(unsafe { l3.add(((ipa >> 12) & 0x1ff) as usize) })
    }

    /// The table an entry points to, allocated when the entry is empty.
    fn next(entry: *mut u64) -> Result<*mut u64, MapError> {
        // SAFETY: `entry` points into a table owned by this translation.
        let e = unsafe { *entry };
        if e & VALID != 0 {
            if e & TABLE == 0 {
                return Err(MapError::Busy);
            }
            return Ok((e & OA_MASK) as *mut u64);
        }
        let t = alloc_table(PAGE as usize)?;
        // SAFETY: as above; the new table is zeroed (all invalid).
        unsafe { *entry = (t as u64 & OA_MASK) | TABLE | VALID };
        Ok(t)
    }

    /// Makes table updates visible to the walker and drops every cached
    /// translation of this VMID.
    pub fn flush(&self) {
        let saved = read!("vttbr_el2");
        write!("vttbr_el2", self.vttbr());
        isb();
        // SAFETY: TLB maintenance for the current VMID only, with the
        // barriers that order it after the table writes.
        unsafe {
            asm!(
                "dsb ishst",
                "tlbi vmalls12e1is",
                "dsb ish",
                "isb",
                options(nostack, preserves_flags)
            );
        }
        write!("vttbr_el2", saved);
        isb();
    }
}

/// VTCR_EL2 for these tables, with PS from the CPU's physical address
/// range; None when the CPU cannot output 40-bit addresses.
pub fn vtcr() -> Option<u64> {
    let parange = read!("id_aa64mmfr0_el1") & 0xf;
    // PARange 2 = 40 bits; the IPA space may not exceed it.
    if parange < 2 {
        return None;
    }
    let ps = parange.min(5);
    let t0sz = u64::from(64 - IPA_BITS);
    let sl0 = 1; // start at level 1
    let irgn0 = 1; // write-back
    let orgn0 = 1;
    let sh0 = 3; // inner shareable
    Some((1 << 31) | (ps << 16) | (sh0 << 12) | (orgn0 << 10) | (irgn0 << 8) | (sl0 << 6) | t0sz)
}
