//! Small measurement helpers: a log-linear histogram and percentile summaries.

use serde::Serialize;

/// Sub-buckets per power of two: 32 keeps the relative error under ~3 %.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;

/// A histogram of non-negative integers (µs here) with ~3 % relative precision.
///
/// Memory grows with the largest value recorded (about 1 KiB per 8× range), so each
/// viewer can keep its own and the swarm merges them.
///
/// ```
/// use skylark_loadgen::stats::Histogram;
/// let mut h = Histogram::default();
/// for v in 1..=1000 { h.record(v); }
/// let p50 = h.quantile(0.5).unwrap();
/// assert!((485..=515).contains(&p50), "{p50}");
/// assert_eq!(h.count(), 1000);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u64,
    max: u64,
}

fn bucket(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    (((shift as u64 + 1) << SUB_BITS) + ((v >> shift) & (SUB - 1))) as usize
}

/// The middle of bucket `i`.
fn bucket_value(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = (i >> SUB_BITS) - 1;
    let low = (SUB + (i & (SUB - 1))) << shift;
    low + ((1u64 << shift) >> 1)
}

impl Histogram {
    /// Adds one value.
    pub fn record(&mut self, v: u64) {
        let b = bucket(v);
        if b >= self.counts.len() {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
        self.count += 1;
        self.sum = self.sum.saturating_add(v);
        self.max = self.max.max(v);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Largest value recorded (exact).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Mean of the values, if any.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// The value at quantile `q` (0..=1), within the bucket precision; `None` if empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_value(i).min(self.max));
            }
        }
        Some(self.max)
    }

    /// p50/p95/p99/max in milliseconds, reading the values as microseconds.
    pub fn percentiles_ms(&self) -> Option<Percentiles> {
        let ms = |v: u64| v as f64 / 1000.0;
        Some(Percentiles {
            count: self.count,
            p50: ms(self.quantile(0.50)?),
            p95: ms(self.quantile(0.95)?),
            p99: ms(self.quantile(0.99)?),
            max: ms(self.max),
        })
    }
}

/// A distribution summary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
}

/// Exact percentiles of a small sample set (one value per viewer).
///
/// ```
/// let p = skylark_loadgen::stats::percentiles(&[3.0, 1.0, 2.0]).unwrap();
/// assert_eq!((p.p50, p.max), (2.0, 3.0));
/// ```
pub fn percentiles(samples: &[f64]) -> Option<Percentiles> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    };
    Some(Percentiles {
        count: v.len() as u64,
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
        max: v[v.len() - 1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_precise() {
        let mut last = 0;
        for v in (0..2_000_000u64).step_by(7) {
            let b = bucket(v);
            assert!(b >= last);
            last = b;
            let mid = bucket_value(b);
            let err = (mid as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err <= 0.032, "v={v} mid={mid}");
        }
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        a.record(10);
        b.record(100_000);
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert_eq!(a.max(), 100_000);
        assert_eq!(a.quantile(0.5), Some(10));
        assert!(a.quantile(1.0).unwrap() > 95_000);
        assert_eq!(Histogram::default().percentiles_ms(), None);
    }
}
