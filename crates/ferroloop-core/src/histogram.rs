//! A small log-linear histogram of durations, for the loop's lag.
//!
//! Values (nanoseconds) fall into buckets four per power of two, so a percentile is
//! known to within about 19%; the maximum, the count and the sum are exact. Recording is
//! a few integer operations and no allocation.
//!
//! ```
//! use ferroloop_core::histogram::Histogram;
//! let mut h = Histogram::new();
//! for ns in 1..=1000 {
//!     h.record(ns * 1000);
//! }
//! assert_eq!(h.count(), 1000);
//! assert_eq!(h.max(), 1_000_000);
//! let p50 = h.percentile(50.0);
//! assert!((400_000..=600_000).contains(&p50), "{p50}");
//! ```

/// Sub-buckets per power of two.
const SUB_BITS: u32 = 2;
const SUBS: usize = 1 << SUB_BITS;
/// Buckets for every `u64`: values below `SUBS` get one each, then `SUBS` per octave.
const BUCKETS: usize = 64 * SUBS;

/// Counts of durations in log-linear buckets, with exact count, sum and maximum.
#[derive(Clone, Debug)]
pub struct Histogram {
    buckets: Box<[u64; BUCKETS]>,
    count: u64,
    sum: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn bucket_of(value: u64) -> usize {
    if value < SUBS as u64 {
        return value as usize;
    }
    let octave = 63 - value.leading_zeros(); // >= SUB_BITS
    let sub = (value >> (octave - SUB_BITS)) as usize & (SUBS - 1);
    (octave - SUB_BITS + 1) as usize * SUBS + sub
}

/// The largest value that falls into `bucket`.
fn bucket_top(bucket: usize) -> u64 {
    if bucket < SUBS {
        return bucket as u64;
    }
    let octave = (bucket / SUBS) as u32 + SUB_BITS - 1;
    let sub = (bucket % SUBS) as u64;
    let low = (1u64 << octave) | (sub << (octave - SUB_BITS));
    low.saturating_add((1u64 << (octave - SUB_BITS)) - 1)
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            buckets: Box::new([0; BUCKETS]),
            count: 0,
            sum: 0,
            max: 0,
        }
    }

    /// Adds one value.
    #[inline]
    pub fn record(&mut self, value: u64) {
        self.buckets[bucket_of(value)] += 1;
        self.count += 1;
        self.sum = self.sum.saturating_add(value);
        self.max = self.max.max(value);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sum of the values (saturating).
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// The largest value recorded (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value below which `percent`% of the values fall: the top of the bucket that
    /// holds that rank, never more than the maximum. 0 when empty.
    pub fn percentile(&self, percent: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((percent.clamp(0.0, 100.0) / 100.0) * self.count as f64).ceil() as u64;
        let rank = rank.max(1);
        let mut seen = 0;
        for (bucket, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_top(bucket).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_cover_their_values() {
        let mut last = 0;
        for value in (0..20_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let b = bucket_of(value);
            assert!(b >= last, "{value}");
            assert!(b < BUCKETS);
            assert!(value <= bucket_top(b), "{value} above top of {b}");
            if b > 0 {
                assert!(
                    value > bucket_top(b - 1),
                    "{value} in too high a bucket {b}"
                );
            }
            last = b;
        }
    }

    #[test]
    fn percentiles_are_within_a_bucket() {
        let mut h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        let p50 = h.percentile(50.0);
        assert!((5_000..=6_200).contains(&p50), "{p50}");
        let p99 = h.percentile(99.0);
        assert!((9_900..=10_000).contains(&p99), "{p99}");
        assert_eq!(h.percentile(100.0), 10_000);
        assert_eq!(h.max(), 10_000);
        assert_eq!(h.sum(), 10_000 * 10_001 / 2);
    }

    #[test]
    fn empty_is_zero() {
        let h = Histogram::new();
        assert_eq!((h.count(), h.max(), h.percentile(99.0)), (0, 0, 0));
    }
}
