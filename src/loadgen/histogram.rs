//! Latency histograms with a fixed footprint: log-linear buckets (64 per power of two, so
//! any percentile is within 1/64 ≈ 1.6 % of the true value) over microseconds, merged
//! across workers at the end. Memory does not grow with the number of requests.

/// Sub-buckets per power of two; 64 gives about 1.6 % worst-case relative error.
const SUB_BUCKET_BITS: u32 = 6;
const SUB_BUCKETS: usize = 1 << SUB_BUCKET_BITS;
/// Powers of two covered above the linear range: 2^(6+32) µs is far beyond any timeout.
const OCTAVES: usize = 32;
const BUCKETS: usize = SUB_BUCKETS * (OCTAVES + 1);

#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            max_us: 0,
        }
    }
}

fn bucket_of(value_us: u64) -> usize {
    if value_us < SUB_BUCKETS as u64 {
        return value_us as usize;
    }
    let magnitude = 63 - value_us.leading_zeros(); // >= SUB_BUCKET_BITS
    let octave = (magnitude - SUB_BUCKET_BITS + 1) as usize;
    let sub = (value_us >> (magnitude - SUB_BUCKET_BITS)) as usize & (SUB_BUCKETS - 1);
    (octave * SUB_BUCKETS + sub).min(BUCKETS - 1)
}

/// The largest value that falls in `bucket` (reported percentiles never flatter).
fn bucket_high(bucket: usize) -> u64 {
    let octave = bucket / SUB_BUCKETS;
    let sub = (bucket % SUB_BUCKETS) as u64;
    if octave == 0 {
        return sub;
    }
    let shift = octave as u32 - 1;
    ((SUB_BUCKETS as u64 + sub) << shift) + (1u64 << shift) - 1
}

impl Histogram {
    pub fn record(&mut self, value_us: u64) {
        self.counts[bucket_of(value_us)] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(value_us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// The value at `percentile` (0..=100), in µs; 0 when empty.
    pub fn percentile_us(&self, percentile: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((percentile / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_high(bucket).min(self.max_us);
            }
        }
        self.max_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (values recorded, percentile, expected within 1.6 %)
    fn check(values: &[u64], percentile: f64, expected: u64) {
        let mut h = Histogram::default();
        for &v in values {
            h.record(v);
        }
        let got = h.percentile_us(percentile);
        let tolerance = (expected as f64 / SUB_BUCKETS as f64).ceil() as u64;
        assert!(
            got.abs_diff(expected) <= tolerance,
            "p{percentile} of {} values: got {got}, want {expected} ± {tolerance}",
            values.len()
        );
    }

    #[test]
    fn percentiles() {
        let one_to_10k: Vec<u64> = (1..=10_000).collect();
        check(&[], 50.0, 0);
        check(&[5], 50.0, 5);
        check(&[5], 99.0, 5);
        check(&[1, 2, 3, 4], 50.0, 2);
        check(&one_to_10k, 50.0, 5_000);
        check(&one_to_10k, 99.0, 9_900);
        check(&one_to_10k, 100.0, 10_000);
        check(&[7_000_000_000], 50.0, 7_000_000_000);
    }

    #[test]
    fn buckets_are_monotonic_and_cover_their_values() {
        let mut last = 0;
        for v in (0..1_000_000u64)
            .step_by(37)
            .chain([u64::MAX / 2, u64::MAX])
        {
            let b = bucket_of(v);
            assert!(b >= last, "bucket of {v} went backwards");
            last = b;
            if b < BUCKETS - 1 {
                assert!(
                    bucket_high(b) >= v,
                    "bucket {b} high {} < {v}",
                    bucket_high(b)
                );
            }
        }
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        a.record(10);
        b.record(1000);
        b.record(2000);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.max_us(), 2000);
        assert_eq!(a.percentile_us(100.0), 2000);
    }
}
