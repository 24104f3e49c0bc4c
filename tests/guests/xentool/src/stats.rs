//! Median and percentiles of timing samples.

/// Nearest-rank percentile `p` (0..=100) of `sorted` (ascending): the
/// smallest sample with at least p% of the samples at or below it. 0 for
/// no samples.
pub fn percentile(sorted: &[u64], p: u32) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len();
    let rank = (n * p.min(100) as usize).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// Summary of a set of samples (nanoseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Samples.
    pub n: usize,
    /// 50th percentile (nearest rank).
    pub median: u64,
    /// 90th percentile.
    pub p90: u64,
    /// Smallest.
    pub min: u64,
    /// Largest.
    pub max: u64,
    /// Sum of all samples.
    pub total: u64,
}

/// Sorts `samples` and summarises them.
pub fn summarize(samples: &mut [u64]) -> Summary {
    samples.sort_unstable();
    Summary {
        n: samples.len(),
        median: percentile(samples, 50),
        p90: percentile(samples, 90),
        min: samples.first().copied().unwrap_or(0),
        max: samples.last().copied().unwrap_or(0),
        total: samples.iter().fold(0u64, |a, &s| a.saturating_add(s)),
    }
}

/// Throughput in MB/s (10^6 bytes per second) of `bytes` moved in `ns`,
/// with one decimal, as text.
pub fn mbps(bytes: u64, ns: u64) -> String {
    if ns == 0 {
        return "0.0".into();
    }
    // Tenths of MB/s: bytes * 10^9 / ns / 10^5, in 128 bits.
    let tenths = (u128::from(bytes) * 10_000) / u128::from(ns);
    format!("{}.{}", tenths / 10, tenths % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentile(&[], 50), 0);
        assert_eq!(percentile(&[7], 50), 7);
        assert_eq!(percentile(&[7], 0), 7);
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&v, 50), 5);
        assert_eq!(percentile(&v, 90), 9);
        assert_eq!(percentile(&v, 91), 10);
        assert_eq!(percentile(&v, 100), 10);
        assert_eq!(percentile(&v, 0), 1);
        let v: Vec<u64> = (1..=10_000).collect();
        assert_eq!(percentile(&v, 50), 5_000);
        assert_eq!(percentile(&v, 90), 9_000);
        assert_eq!(percentile(&[1, 2, 3], 50), 2);
    }

    #[test]
    fn summary_sorts_first() {
        let mut v = vec![30, 10, 20, 50, 40];
        let s = summarize(&mut v);
        assert_eq!(v, [10, 20, 30, 40, 50]);
        assert_eq!(
            s,
            Summary {
                n: 5,
                median: 30,
                p90: 50,
                min: 10,
                max: 50,
                total: 150
            }
        );
        assert_eq!(summarize(&mut []).median, 0);
    }

    #[test]
    fn throughput() {
        // 4096 bytes in 1 us = 4096 MB/s.
        assert_eq!(mbps(4096, 1_000), "4096.0");
        assert_eq!(mbps(4_096_000, 1_000_000_000), "4.0");
        assert_eq!(mbps(1_500_000, 1_000_000_000), "1.5");
        assert_eq!(mbps(1, 0), "0.0");
    }
}
