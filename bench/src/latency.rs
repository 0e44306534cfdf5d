//! Latency recording: a few mutex-guarded HDR histograms shared by many
//! receiving tasks (one per connection would cost megabytes), merged into a
//! percentile summary at the end.

use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded exactly, in microseconds (an hour); above it
/// values saturate.
const HIGHEST_US: u64 = 3_600_000_000;

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Sharded latency histograms in microseconds.
pub struct Latencies {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Latencies {
    /// `shards` histograms; a recorder picks one by its index, so tasks on
    /// different threads rarely contend.
    pub fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
        }
    }

    /// Records one latency for the recorder numbered `who`.
    pub fn record(&self, who: usize, micros: u64) {
        let shard = &self.shards[who % self.shards.len()];
        shard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .saturating_record(micros.max(1));
    }

    /// All shards merged.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for shard in &self.shards {
            let h = shard.lock().unwrap_or_else(PoisonError::into_inner);
            // Same bounds everywhere, so adding cannot fail.
            let _ = all.add(&*h);
        }
        all
    }
}

/// An empty latency histogram, with the bounds every one here shares.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that satisfy the constructor's rules.
    Histogram::new_with_bounds(1, HIGHEST_US, 3).unwrap_or_else(|_| unreachable!())
}

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// Summarises a histogram of microseconds.
pub fn summarize(h: &Histogram<u64>) -> Summary {
    if h.is_empty() {
        return Summary::default();
    }
    let ms = |us: u64| round3(us as f64 / 1000.0);
    Summary {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        mean_ms: round3(h.mean() / 1000.0),
    }
}

/// Rounds to three decimals, for readable JSON.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_merge_into_one_summary() {
        let l = Latencies::new(4);
        for i in 0..1000u64 {
            l.record(i as usize, (i + 1) * 10);
        }
        let s = summarize(&l.merged());
        assert_eq!(s.count, 1000);
        assert!((4.9..=5.1).contains(&s.p50_ms), "{s:?}");
        assert!((9.8..=10.01).contains(&s.p99_ms), "{s:?}");
        assert!((9.99..=10.01).contains(&s.max_ms), "{s:?}");
    }

    #[test]
    fn empty_and_huge_values_are_safe() {
        assert_eq!(summarize(&new_histogram()), Summary::default());
        let l = Latencies::new(1);
        l.record(0, u64::MAX);
        l.record(0, 0);
        assert_eq!(summarize(&l.merged()).count, 2);
    }
}
