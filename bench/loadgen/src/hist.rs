//! A log-linear latency histogram in nanoseconds.
//!
//! Values below 128 ns get one bucket each; above, every power of two is split into 64
//! equal buckets, so a bucket is at most 1/64 of its lower bound wide. Percentiles report
//! the bucket's midpoint, which is within 0.8% of any value in it. Recording is an index
//! computation and an increment; merging two histograms adds their counts.

/// Sub-bucket bits: values with this many significant bits are exact.
const SUB_BITS: u32 = 7;
const HALF: u64 = 1 << (SUB_BITS - 1);
/// Buckets needed for every `u64`: the top exponent is `64 - SUB_BITS`.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * HALF as usize + HALF as usize;

/// Counts of latencies, in nanoseconds.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

fn index_of(value: u64) -> usize {
    if value < (1 << SUB_BITS) {
        return value as usize;
    }
    let msb = 63 - value.leading_zeros();
    let shift = msb + 1 - SUB_BITS;
    let mantissa = value >> shift; // in [HALF, 2 * HALF)
    (shift as u64 * HALF + mantissa) as usize
}

/// The lowest value and the width of bucket `index`.
fn bucket_range(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < (1 << SUB_BITS) {
        return (index, 1);
    }
    let shift = index / HALF - 1;
    let mantissa = index - shift * HALF;
    (mantissa << shift, 1 << shift)
}

impl Histogram {
    /// Adds one value (nanoseconds).
    pub fn record(&mut self, value: u64) {
        self.counts[index_of(value)] += 1;
        self.total += 1;
        self.sum += value as u128;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Number of values recorded.
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Mean of the values (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// Largest value recorded, exact (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value below or at which `fraction` (0..=1) of the values lie, to within 0.8%
    /// (0 when empty). Clamped to the exact minimum and maximum.
    pub fn percentile(&self, fraction: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((fraction.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = bucket_range(index);
                let mid = low as f64 + (width as f64 - 1.0) / 2.0;
                return mid.clamp(self.min as f64, self.max as f64);
            }
        }
        self.max as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        let mut expected_low = 0;
        for index in 0..BUCKETS {
            let (low, width) = bucket_range(index);
            assert_eq!(low, expected_low, "bucket {index}");
            assert_eq!(index_of(low), index);
            assert_eq!(index_of(low + (width - 1)), index);
            assert!(width == 1 || (width as f64) / (low as f64) <= 1.0 / 64.0);
            expected_low = low.wrapping_add(width);
        }
        assert_eq!(expected_low, 0, "the last bucket ends at u64::MAX");
        assert_eq!(index_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_of_a_uniform_range() {
        let mut hist = Histogram::default();
        // 1 µs .. 10 ms in 1 µs steps, in nanoseconds.
        for us in 1..=10_000u64 {
            hist.record(us * 1000);
        }
        assert_eq!(hist.count(), 10_000);
        for (fraction, exact) in [(0.5, 5_000_000.0), (0.9, 9_000_000.0), (0.99, 9_900_000.0)] {
            let got = hist.percentile(fraction);
            let error = (got - exact).abs() / exact;
            assert!(error < 0.008, "p{fraction}: {got} vs {exact}");
        }
        assert!((hist.percentile(0.0) - 1000.0).abs() <= 8.0);
        assert!((hist.percentile(1.0) - 10_000_000.0).abs() <= 80_000.0);
        assert_eq!(hist.max(), 10_000_000);
        assert!((hist.mean() - 5_000_500.0).abs() < 1.0);
    }

    #[test]
    fn small_values_are_exact_and_merge_adds() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        for v in [3, 3, 3, 7] {
            a.record(v);
        }
        b.record(100);
        a.merge(&b);
        assert_eq!(a.count(), 5);
        assert_eq!(a.percentile(0.5), 3.0);
        assert_eq!(a.percentile(0.8), 7.0);
        assert_eq!(a.percentile(0.99), 100.0);
        assert_eq!(a.max(), 100);
        assert_eq!(Histogram::default().percentile(0.5), 0.0);
    }
}
