//! Physical memory ranges: what the hypervisor may use once the firmware's
//! banks have had every reservation carved out of them.
//!
//! Owns the arithmetic on half-open `[start, end)` ranges; never touches the
//! memory itself. Every operation saturates instead of overflowing, so a
//! device tree that claims a bank at the top of the address space yields an
//! empty or clipped range, never a wrap-around.

use arrayvec::ArrayVec;

/// A half-open physical address range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PhysRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl PhysRange {
    /// The range `[start, start + size)`, clipped at the top of the address space.
    pub const fn from_base_size(start: u64, size: u64) -> Self {
        Self {
            start,
            end: start.saturating_add(size),
        }
    }

    /// Number of bytes.
    pub const fn size(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// True when the range holds no byte.
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// True when the two ranges share at least one byte.
    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        self.start < other.end && other.start < self.end && !self.is_empty() && !other.is_empty()
    }

    /// True when `other` lies wholly inside `self`.
    pub const fn contains(&self, other: &PhysRange) -> bool {
        other.start >= self.start && other.end <= self.end
    }

    /// The bytes both ranges hold (possibly empty).
    pub fn intersect(&self, other: &PhysRange) -> PhysRange {
        PhysRange {
            start: self.start.max(other.start),
            end: self.end.min(other.end),
        }
    }

    /// Shrinks the range inwards to `align` (a power of two) boundaries.
    pub fn align_inwards(&self, align: u64) -> PhysRange {
        debug_assert!(align.is_power_of_two());
        let start = self
            .start
            .checked_add(align - 1)
            .map_or(u64::MAX, |s| s & !(align - 1));
        let end = self.end & !(align - 1);
        if end <= start {
            PhysRange { start, end: start }
        } else {
            PhysRange { start, end }
        }
    }
}

/// Why a range set could not take another range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// More disjoint pieces than the set's fixed capacity.
    TooManyRanges,
}

/// A sorted set of disjoint, non-empty ranges with a fixed capacity (it is
/// built before any heap exists).
#[derive(Clone, Debug, Default)]
pub struct RangeSet<const N: usize> {
    ranges: ArrayVec<PhysRange, N>,
}

impl<const N: usize> RangeSet<N> {
    /// An empty set.
    pub const fn new() -> Self {
        Self {
            ranges: ArrayVec::new_const(),
        }
    }

    /// The ranges, ascending.
    pub fn iter(&self) -> impl Iterator<Item = &PhysRange> {
        self.ranges.iter()
    }

    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// True when the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Total bytes.
    pub fn total(&self) -> u64 {
        self.ranges
            .iter()
            .map(PhysRange::size)
            .fold(0, u64::saturating_add)
    }

    /// Adds a range, merging it with any range it overlaps or touches.
    pub fn add(&mut self, r: PhysRange) -> Result<(), RangeError> {
        if r.is_empty() {
            return Ok(());
        }
        let mut merged = r;
        let mut out: ArrayVec<PhysRange, N> = ArrayVec::new_const();
        let mut placed = false;
        for &cur in self.ranges.iter() {
            if cur.end < merged.start {
                out.try_push(cur).map_err(|_| RangeError::TooManyRanges)?;
            } else if merged.end < cur.start {
                if !placed {
                    out.try_push(merged)
                        .map_err(|_| RangeError::TooManyRanges)?;
                    placed = true;
                }
                out.try_push(cur).map_err(|_| RangeError::TooManyRanges)?;
            } else {
                merged = PhysRange {
                    start: merged.start.min(cur.start),
                    end: merged.end.max(cur.end),
                };
            }
        }
        if !placed {
            out.try_push(merged)
                .map_err(|_| RangeError::TooManyRanges)?;
        }
        self.ranges = out;
        Ok(())
    }

    /// Removes every byte of `r` from the set (splitting ranges as needed).
    pub fn remove(&mut self, r: PhysRange) -> Result<(), RangeError> {
        if r.is_empty() {
            return Ok(());
        }
        let mut out: ArrayVec<PhysRange, N> = ArrayVec::new_const();
        for &cur in self.ranges.iter() {
            if !cur.overlaps(&r) {
                out.try_push(cur).map_err(|_| RangeError::TooManyRanges)?;
                continue;
            }
            let below = PhysRange {
                start: cur.start,
                end: r.start.min(cur.end),
            };
            let above = PhysRange {
                start: r.end.max(cur.start),
                end: cur.end,
            };
            for piece in [below, above] {
                if !piece.is_empty() {
                    out.try_push(piece).map_err(|_| RangeError::TooManyRanges)?;
                }
            }
        }
        self.ranges = out;
        Ok(())
    }

    /// Keeps only the bytes that also lie in one of `windows`.
    pub fn clip_to<const M: usize>(&mut self, windows: &RangeSet<M>) -> Result<(), RangeError> {
        let mut out: RangeSet<N> = RangeSet::new();
        for cur in self.ranges.iter() {
            for w in windows.iter() {
                out.add(cur.intersect(w))?;
            }
        }
        *self = out;
        Ok(())
    }

    /// True when some range of the set overlaps `r`.
    pub fn overlaps(&self, r: &PhysRange) -> bool {
        self.ranges.iter().any(|cur| cur.overlaps(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> PhysRange {
        PhysRange { start, end }
    }

    #[test]
    fn add_merges_touching_and_overlapping() {
        let mut s: RangeSet<4> = RangeSet::new();
        s.add(r(0x3000, 0x4000)).unwrap();
        s.add(r(0x1000, 0x2000)).unwrap();
        s.add(r(0x2000, 0x3000)).unwrap();
        assert_eq!(
            s.iter().copied().collect::<std::vec::Vec<_>>(),
            [r(0x1000, 0x4000)]
        );
        s.add(r(0x8000, 0x9000)).unwrap();
        s.add(r(0x0, 0x10)).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.total(), 0x3000 + 0x1000 + 0x10);
    }

    #[test]
    fn remove_splits() {
        let mut s: RangeSet<4> = RangeSet::new();
        s.add(r(0x4000_0000, 0x8000_0000)).unwrap();
        s.remove(r(0x4020_0000, 0x4030_0000)).unwrap();
        s.remove(r(0x4800_0000, 0x4810_0000)).unwrap();
        s.remove(r(0x7fff_0000, 0x9000_0000)).unwrap();
        assert_eq!(
            s.iter().copied().collect::<std::vec::Vec<_>>(),
            [
                r(0x4000_0000, 0x4020_0000),
                r(0x4030_0000, 0x4800_0000),
                r(0x4810_0000, 0x7fff_0000)
            ]
        );
    }

    #[test]
    fn capacity_is_an_error_not_a_panic() {
        let mut s: RangeSet<2> = RangeSet::new();
        s.add(r(0, 0x1000)).unwrap();
        s.add(r(0x2000, 0x3000)).unwrap();
        assert_eq!(s.add(r(0x4000, 0x5000)), Err(RangeError::TooManyRanges));
        let mut t: RangeSet<2> = RangeSet::new();
        t.add(r(0, 0x10000)).unwrap();
        t.remove(r(0x1000, 0x2000)).unwrap();
        assert_eq!(t.remove(r(0x3000, 0x4000)), Err(RangeError::TooManyRanges));
    }

    #[test]
    fn saturating_edges() {
        let top = PhysRange::from_base_size(u64::MAX - 10, 100);
        assert_eq!(top.end, u64::MAX);
        assert_eq!(top.align_inwards(0x1000).size(), 0);
        assert_eq!(r(0x1001, 0x3fff).align_inwards(0x1000), r(0x2000, 0x3000));
    }

    #[test]
    fn clip_to_windows() {
        let mut s: RangeSet<4> = RangeSet::new();
        s.add(r(0, 0x1_0000_0000)).unwrap();
        let mut w: RangeSet<4> = RangeSet::new();
        w.add(r(0x4000_0000, 0x8000_0000)).unwrap();
        w.add(r(0xc000_0000, 0x2_0000_0000)).unwrap();
        s.clip_to(&w).unwrap();
        assert_eq!(
            s.iter().copied().collect::<std::vec::Vec<_>>(),
            [r(0x4000_0000, 0x8000_0000), r(0xc000_0000, 0x1_0000_0000)]
        );
    }
}
