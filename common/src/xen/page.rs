//! A 4 KiB page shared with a guest, seen through atomics.
//!
//! Shared-info pages, grant-table frames, a guest's vcpu_info and FIFO
//! event arrays are written by the guest while the hypervisor reads and
//! updates them, on other CPUs. Every access here is an atomic on an
//! aligned 64-bit word, so a racing guest can only make the hypervisor see
//! one of the values it wrote, never tear a word the hypervisor updates.
//! Narrower fields are read from their word and changed with a
//! compare-and-swap of the whole word (a guest changing a neighbouring
//! field makes the swap retry, never lose either write).
//!
//! Offsets out of the page are ignored (reads give 0, updates fail): the
//! callers validate guest offsets first, and a mistake must not panic.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicU64, Ordering};

/// Bytes in a page (the ABI's granule: Xen's XEN_PAGE_SIZE).
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
const WORDS: usize = PAGE_SIZE / 8;

/// Compare-and-swap attempts before giving up on a word a guest keeps
/// changing (the caller reports EBUSY/EAGAIN rather than spinning forever).
pub const CAS_TRIES: u32 = 64;

/// Host address of a page the hypervisor can map into a domain's
/// translation (the architecture turns it into a physical address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostFrame(pub u64);

/// One page of memory shared with guests.
#[repr(C, align(4096))]
pub struct Page(pub [AtomicU64; WORDS]);

impl Page {
    /// A zeroed page on the heap.
    pub fn new_zeroed() -> Box<Page> {
        Box::new(Page([const { AtomicU64::new(0) }; WORDS]))
    }

    /// Its host address.
    pub fn frame(&self) -> HostFrame {
        HostFrame(core::ptr::from_ref(self) as usize as u64)
    }

    fn word(&self, off: usize) -> Option<&AtomicU64> {
        self.0.get(off / 8)
    }

    /// The 64-bit word at `off` (8-byte aligned; 0 outside the page).
    pub fn load64(&self, off: usize) -> u64 {
        self.word(off).map_or(0, |w| w.load(Ordering::Acquire))
    }

    /// Stores the 64-bit word at `off`.
    pub fn store64(&self, off: usize, v: u64) {
        if let Some(w) = self.word(off) {
            w.store(v, Ordering::Release);
        }
    }

    /// Atomically ORs `bits` into the word at `off`; returns the old value.
    pub fn fetch_or64(&self, off: usize, bits: u64) -> u64 {
        self.word(off)
            .map_or(0, |w| w.fetch_or(bits, Ordering::AcqRel))
    }

    /// Atomically ANDs `bits` into the word at `off`; returns the old value.
    pub fn fetch_and64(&self, off: usize, bits: u64) -> u64 {
        self.word(off)
            .map_or(0, |w| w.fetch_and(bits, Ordering::AcqRel))
    }

    /// Compare-and-swap of the word at `off`: Ok(old) when it held `old`.
    pub fn cas64(&self, off: usize, old: u64, new: u64) -> Result<u64, u64> {
        match self.word(off) {
            Some(w) => w.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire),
            None => Err(0),
        }
    }

    /// The 32-bit value at `off` (4-byte aligned).
    pub fn load32(&self, off: usize) -> u32 {
        (self.load64(off & !7) >> ((off & 4) * 8)) as u32
    }

    /// Compare-and-swap of the 32-bit value at `off` (4-byte aligned),
    /// retrying while only the other half of its word changes. Ok(old)
    /// when it held `old`, Err(current) when it did not.
    pub fn cas32(&self, off: usize, old: u32, new: u32) -> Result<u32, u32> {
        let shift = (off & 4) * 8;
        let mask = 0xffff_ffffu64 << shift;
        let Some(w) = self.word(off & !7) else {
            return Err(0);
        };
        let mut cur = w.load(Ordering::Acquire);
        for _ in 0..CAS_TRIES {
            let have = ((cur & mask) >> shift) as u32;
            if have != old {
                return Err(have);
            }
            let next = (cur & !mask) | (u64::from(new) << shift);
            match w.compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(old),
                Err(now) => cur = now,
            }
        }
        Err(((cur & mask) >> shift) as u32)
    }

    /// Atomically ORs `bits` into the 32-bit value at `off`; returns the
    /// old 32-bit value.
    pub fn fetch_or32(&self, off: usize, bits: u32) -> u32 {
        let shift = (off & 4) * 8;
        (self.fetch_or64(off & !7, u64::from(bits) << shift) >> shift) as u32
    }

    /// Atomically clears `bits` in the 32-bit value at `off`; returns the
    /// old 32-bit value.
    pub fn fetch_clear32(&self, off: usize, bits: u32) -> u32 {
        let shift = (off & 4) * 8;
        (self.fetch_and64(off & !7, !(u64::from(bits) << shift)) >> shift) as u32
    }

    /// Stores the byte at `off`.
    pub fn store8(&self, off: usize, v: u8) {
        let shift = (off & 7) * 8;
        let Some(w) = self.word(off) else { return };
        let mask = 0xffu64 << shift;
        let mut cur = w.load(Ordering::Acquire);
        loop {
            let next = (cur & !mask) | (u64::from(v) << shift);
            match w.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// The byte at `off`.
    pub fn load8(&self, off: usize) -> u8 {
        (self.load64(off & !7) >> ((off & 7) * 8)) as u8
    }

    /// Copies `out.len()` bytes from `off`; false (nothing copied) when
    /// the range leaves the page.
    pub fn read(&self, off: usize, out: &mut [u8]) -> bool {
        if off.checked_add(out.len()).is_none_or(|end| end > PAGE_SIZE) {
            return false;
        }
        let mut i = 0;
        while i < out.len() {
            let at = off + i;
            let word = self.load64(at & !7).to_le_bytes();
            let from = at & 7;
            let n = (8 - from).min(out.len() - i);
            out[i..i + n].copy_from_slice(&word[from..from + n]);
            i += n;
        }
        true
    }

    /// Copies `data` to `off`; false (nothing written) when the range
    /// leaves the page. Whole words are stored; partial words are merged
    /// with a compare-and-swap so neighbouring bytes a guest writes at the
    /// same time survive.
    pub fn write(&self, off: usize, data: &[u8]) -> bool {
        if off
            .checked_add(data.len())
            .is_none_or(|end| end > PAGE_SIZE)
        {
            return false;
        }
        let mut i = 0;
        while i < data.len() {
            let at = off + i;
            let from = at & 7;
            let n = (8 - from).min(data.len() - i);
            if n == 8 {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[i..i + 8]);
                self.store64(at, u64::from_le_bytes(b));
            } else {
                for (k, &byte) in data[i..i + n].iter().enumerate() {
                    self.store8(at + k, byte);
                }
            }
            i += n;
        }
        true
    }

    /// Copies `len` bytes from `src` at `src_off` to this page at
    /// `dst_off`, as memmove does when both are the same page. When both
    /// offsets have the same alignment the middle goes a word at a time
    /// (relaxed loads and stores, plain `ldr`/`str`): a grant copy of a
    /// page is 512 of them instead of a byte shuffle per word. False, with
    /// nothing copied, when a range leaves its page.
    pub fn copy_range(&self, dst_off: usize, src: &Page, src_off: usize, len: usize) -> bool {
        let fits = |off: usize| off.checked_add(len).is_some_and(|end| end <= PAGE_SIZE);
        if !fits(dst_off) || !fits(src_off) {
            return false;
        }
        let same = core::ptr::eq(self, src);
        let backwards = same && dst_off > src_off;
        if dst_off % 8 != src_off % 8 {
            // Different alignments: through a small buffer, in the order
            // that keeps an overlapping copy within one page correct.
            let mut buf = [0u8; 64];
            let chunks = len.div_ceil(buf.len());
            for k in 0..chunks {
                let k = if backwards { chunks - 1 - k } else { k };
                let at = k * buf.len();
                let n = buf.len().min(len - at);
                let tmp = &mut buf[..n];
                if !src.read(src_off + at, tmp) || !self.write(dst_off + at, tmp) {
                    return false;
                }
            }
            return true;
        }
        // Head up to the first word boundary, whole words, tail.
        let head = ((8 - dst_off % 8) % 8).min(len);
        let words = (len - head) / 8;
        let tail = len - head - words * 8;
        let small = |this: &Page, d: usize, s: usize, n: usize| {
            let mut b = [0u8; 8];
            let b = &mut b[..n];
            src.read(s, b) && this.write(d, b)
        };
        let (wd, ws) = ((dst_off + head) / 8, (src_off + head) / 8);
        let word = |i: usize| {
            if let (Some(d), Some(s)) = (self.0.get(wd + i), src.0.get(ws + i)) {
                d.store(s.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        };
        let tail_at = head + words * 8;
        if backwards {
            if !small(self, dst_off + tail_at, src_off + tail_at, tail) {
                return false;
            }
            (0..words).rev().for_each(word);
            small(self, dst_off, src_off, head)
        } else {
            if !small(self, dst_off, src_off, head) {
                return false;
            }
            (0..words).for_each(word);
            small(self, dst_off + tail_at, src_off + tail_at, tail)
        }
    }

    /// Zeroes the page.
    pub fn zero(&self) {
        for w in &self.0 {
            w.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(seed: u8) -> Box<Page> {
        let p = Page::new_zeroed();
        let bytes: alloc::vec::Vec<u8> = (0..PAGE_SIZE)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect();
        assert!(p.write(0, &bytes));
        p
    }

    fn bytes(p: &Page) -> alloc::vec::Vec<u8> {
        let mut v = alloc::vec![0u8; PAGE_SIZE];
        assert!(p.read(0, &mut v));
        v
    }

    #[test]
    fn copy_range_is_memmove_for_every_alignment() {
        let offsets = [0usize, 1, 7, 8, 9, 15, 64, 4000, 4095];
        let lens = [0usize, 1, 7, 8, 9, 17, 64, 95, 4096];
        for &so in &offsets {
            for &dof in &offsets {
                for &len in &lens {
                    let ok = so + len <= PAGE_SIZE && dof + len <= PAGE_SIZE;
                    // Two pages.
                    let (src, dst) = (filled(1), filled(2));
                    let mut want = bytes(&dst);
                    if ok {
                        want[dof..dof + len].copy_from_slice(&bytes(&src)[so..so + len]);
                    }
                    assert_eq!(dst.copy_range(dof, &src, so, len), ok, "{so} {dof} {len}");
                    assert_eq!(bytes(&dst), want, "two pages {so}->{dof} len {len}");
                    // One page, overlapping either way.
                    let one = filled(3);
                    let mut want = bytes(&one);
                    if ok {
                        want.copy_within(so..so + len, dof);
                    }
                    assert_eq!(one.copy_range(dof, &one, so, len), ok);
                    assert_eq!(bytes(&one), want, "one page {so}->{dof} len {len}");
                }
            }
        }
    }

    #[test]
    fn narrow_fields_share_words() {
        let p = Page::new_zeroed();
        p.store8(9, 0xab);
        assert_eq!(p.load64(8), 0xab00);
        assert_eq!(p.cas32(12, 0, 7), Ok(0));
        assert_eq!(p.load32(12), 7);
        assert_eq!(p.load32(8), 0xab00);
        assert_eq!(p.cas32(12, 1, 9), Err(7));
        assert_eq!(p.fetch_or32(8, 1), 0xab00);
        assert_eq!(p.fetch_clear32(8, 0xab01), 0xab01);
        assert_eq!(p.load64(8), 7 << 32);
    }

    #[test]
    fn byte_copies_are_bounded() {
        let p = Page::new_zeroed();
        assert!(p.write(4093, &[1, 2, 3]));
        assert!(!p.write(4094, &[1, 2, 3]));
        let mut b = [0u8; 5];
        assert!(p.read(4091, &mut b));
        assert_eq!(b, [0, 0, 1, 2, 3]);
        assert!(!p.read(usize::MAX, &mut b));
        assert_eq!(p.load64(5000), 0);
        p.store64(5000, 1);
        assert!(p.cas64(5000, 0, 1).is_err());
        let data: [u8; 20] = core::array::from_fn(|i| i as u8);
        assert!(p.write(3, &data));
        let mut back = [0u8; 20];
        assert!(p.read(3, &mut back));
        assert_eq!(back, data);
    }

    #[test]
    fn pages_are_page_aligned() {
        let p = Page::new_zeroed();
        assert_eq!(p.frame().0 % 4096, 0);
        assert_eq!(core::mem::size_of::<Page>(), 4096);
    }
}
