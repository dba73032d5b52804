//! Statistics over collected samples: nearest-rank percentiles and the
//! min/median/max of small series. Every latency is kept (a `Vec<u64>` of
//! nanoseconds, sorted once), which is exact and cheap at this scale: a
//! few hundred thousand samples per scenario.

/// The nearest-rank percentile `p` (0 < p ≤ 100) of `sorted`, which must be
/// in ascending order: the smallest sample such that at least `p`% of the
/// samples are ≤ it. `p` ≤ 0 gives the minimum. `None` when empty.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    debug_assert!(sorted.windows(2).all(|w| w[0] <= w[1]), "not sorted");
    let n = sorted.len();
    let p = p.clamp(0.0, 100.0);
    // Rank in 1..=n; computed in integers when p is a whole number so that
    // 90% of 10 samples is exactly rank 9 (no 9.000000001 rounding up).
    let rank = if p.fract() == 0.0 {
        (p as usize * n).div_ceil(100)
    } else {
        (p / 100.0 * n as f64).ceil() as usize
    };
    Some(sorted[rank.clamp(1, n) - 1])
}

/// A latency distribution, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub count: usize,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: u64,
}

impl Summary {
    /// Sorts `samples` in place and summarises them; `None` when empty.
    pub fn of(samples: &mut [u64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let sum: u128 = samples.iter().map(|&x| x as u128).sum();
        Some(Summary {
            count: samples.len(),
            min: samples[0],
            p50: percentile(samples, 50.0)?,
            p90: percentile(samples, 90.0)?,
            p99: percentile(samples, 99.0)?,
            max: samples[samples.len() - 1],
            mean: (sum / samples.len() as u128) as u64,
        })
    }
}

/// Min, median and max of a small series (start-up times).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinMedMax {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl MinMedMax {
    /// `None` when empty. The median of an even count is the mean of the two
    /// middle values.
    pub fn of(values: &[f64]) -> Option<MinMedMax> {
        if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(MinMedMax {
            min: v[0],
            median,
            max: v[n - 1],
        })
    }
}

/// Nanoseconds as microseconds (keeps sub-µs precision for the JSON).
pub fn ns_to_us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_of_empty_is_none() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(Summary::of(&mut []), None);
        assert_eq!(MinMedMax::of(&[]), None);
    }

    #[test]
    fn percentile_of_one_sample_is_that_sample() {
        for p in [0.0, 1.0, 50.0, 99.0, 99.9, 100.0] {
            assert_eq!(percentile(&[42], p), Some(42), "p{p}");
        }
    }

    #[test]
    fn nearest_rank_on_one_to_hundred() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&v, 1.0), Some(1));
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 90.0), Some(90));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 99.5), Some(100));
        assert_eq!(percentile(&v, 100.0), Some(100));
    }

    #[test]
    fn nearest_rank_on_ten_has_no_float_rounding_up() {
        let v: Vec<u64> = (1..=10).map(|x| x * 10).collect();
        assert_eq!(percentile(&v, 90.0), Some(90));
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(100));
        assert_eq!(percentile(&v, 10.0), Some(10));
        assert_eq!(percentile(&v, 11.0), Some(20));
    }

    #[test]
    fn percentile_clamps_out_of_range() {
        let v = [1, 2, 3];
        assert_eq!(percentile(&v, -5.0), Some(1));
        assert_eq!(percentile(&v, 150.0), Some(3));
    }

    #[test]
    fn summary_sorts_and_summarises() {
        // 1000 samples in reverse order: 1000, 999, ..., 1.
        let mut v: Vec<u64> = (1..=1000).rev().collect();
        let s = Summary::of(&mut v).unwrap();
        assert_eq!(s.count, 1000);
        assert_eq!(s.min, 1);
        assert_eq!(s.p50, 500);
        assert_eq!(s.p90, 900);
        assert_eq!(s.p99, 990);
        assert_eq!(s.max, 1000);
        assert_eq!(s.mean, 500); // 500.5 truncated
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn summary_with_an_outlier() {
        let mut v = vec![100u64; 999];
        v.push(1_000_000);
        let s = Summary::of(&mut v).unwrap();
        assert_eq!((s.p50, s.p90, s.p99), (100, 100, 100));
        assert_eq!(s.max, 1_000_000);
        assert_eq!(s.mean, (999 * 100 + 1_000_000) / 1000);
    }

    #[test]
    fn summary_mean_does_not_overflow() {
        let mut v = vec![u64::MAX / 2; 8];
        assert_eq!(Summary::of(&mut v).unwrap().mean, u64::MAX / 2);
    }

    #[test]
    fn min_median_max_odd_and_even() {
        let m = MinMedMax::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((m.min, m.median, m.max), (1.0, 3.0, 5.0));
        let m = MinMedMax::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((m.min, m.median, m.max), (1.0, 2.5, 4.0));
        let m = MinMedMax::of(&[7.0]).unwrap();
        assert_eq!((m.min, m.median, m.max), (7.0, 7.0, 7.0));
        assert_eq!(MinMedMax::of(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn ns_to_us_keeps_fractions() {
        assert_eq!(ns_to_us(1_500), 1.5);
        assert_eq!(ns_to_us(0), 0.0);
    }
}
