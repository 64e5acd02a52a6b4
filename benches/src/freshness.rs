//! Freshness: how long after a CDR is produced its call is visible to the dashboards.
//!
//! The bench produces a steady feed and records when it hands each CDR to the producer;
//! meanwhile it samples, every 100 ms on a thread per store, how many calls each store shows. Stores count calls,
//! not CDR ids, so CDRs are matched to calls by order: the k-th CDR produced is visible at
//! the first sample showing at least k calls. Every CDR of the feed is valid and counts one
//! offered call, so the count reaches the number produced exactly. Within one flush the
//! order does not matter (the whole flush becomes visible at once); across partitions a
//! later CDR may land before an earlier one, which this matching spreads evenly over both.
//! The sampling period bounds the error (each latency is late by at most one period).

use std::time::Instant;

/// One look at a store: when, and how many calls it showed.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// When the query's answer arrived.
    pub at: Instant,
    /// Calls visible.
    pub calls: u64,
}

/// Seconds from produce to visible of CDRs `from..` of `produced` (in produce order),
/// given samples in time order; `None` if the samples never show them all.
pub fn latencies(produced: &[Instant], samples: &[Sample], from: usize) -> Option<Vec<f64>> {
    let mut out = Vec::with_capacity(produced.len().saturating_sub(from));
    let mut j = 0;
    for (k, p) in produced.iter().enumerate().skip(from) {
        while samples.get(j)?.calls < k as u64 + 1 {
            j += 1;
        }
        out.push(samples[j].at.saturating_duration_since(*p).as_secs_f64());
    }
    Some(out)
}

/// The `q` quantile (0..=1) of sorted values, nearest rank; NaN when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// p50, p99 and the maximum of some latencies, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Summary {
    /// Of unsorted latencies.
    pub fn of(mut latencies: Vec<f64>) -> Summary {
        latencies.sort_by(f64::total_cmp);
        Summary {
            p50: quantile(&latencies, 0.5),
            p99: quantile(&latencies, 0.99),
            max: latencies.last().copied().unwrap_or(f64::NAN),
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p50 {:.2} s   p99 {:.2} s   max {:.2} s", self.p50, self.p99, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_cdr_is_visible_at_the_first_sample_that_counts_it() {
        let t0 = Instant::now();
        let s = |ms: u64| t0 + Duration::from_millis(ms);
        // Four CDRs produced at 0, 100, 200, 300 ms; the store shows 0, then 2, then 4 calls.
        let produced = [s(0), s(100), s(200), s(300)];
        let samples =
            [Sample { at: s(150), calls: 0 }, Sample { at: s(1_000), calls: 2 }, Sample { at: s(2_500), calls: 4 }];
        let l = latencies(&produced, &samples, 0).unwrap();
        assert_eq!(l, vec![1.0, 0.9, 2.3, 2.2]);
        assert_eq!(latencies(&produced, &samples, 2).unwrap(), vec![2.3, 2.2], "warm-up skipped");
        let short = [Sample { at: s(1_000), calls: 3 }];
        assert_eq!(latencies(&produced, &short, 0), None, "the fourth never became visible");
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
        let s = Summary::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((s.p50, s.p99, s.max), (2.0, 3.0, 3.0));
    }
}
