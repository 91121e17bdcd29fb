//! Latency statistics: percentiles over a bounded window of recent calls.

use std::collections::VecDeque;
use std::time::Duration;

use crate::json::Json;

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    /// Nearest-rank percentiles; `None` for an empty set.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let rank =
            |p: f64| ms[(((p / 100.0) * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Some(Summary {
            count: ms.len(),
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
            min_ms: ms[0],
            p50_ms: rank(50.0),
            p90_ms: rank(90.0),
            p99_ms: rank(99.0),
            max_ms: ms[ms.len() - 1],
        })
    }

    pub fn to_json(&self) -> Json {
        Json::object()
            .with("samples", self.count)
            .with("mean_ms", round3(self.mean_ms))
            .with("min_ms", round3(self.min_ms))
            .with("p50_ms", round3(self.p50_ms))
            .with("p90_ms", round3(self.p90_ms))
            .with("p99_ms", round3(self.p99_ms))
            .with("max_ms", round3(self.max_ms))
    }
}

/// Milliseconds to the microsecond, so reports stay readable.
pub fn round3(ms: f64) -> f64 {
    (ms * 1e3).round() / 1e3
}

pub fn millis(d: Duration) -> f64 {
    round3(d.as_secs_f64() * 1e3)
}

/// Every call counted, the latest `capacity` kept for percentiles.
#[derive(Debug)]
pub struct LatencyWindow {
    calls: u64,
    failures: u64,
    recent: VecDeque<Duration>,
    capacity: usize,
}

impl LatencyWindow {
    pub fn new(capacity: usize) -> Self {
        LatencyWindow {
            calls: 0,
            failures: 0,
            recent: VecDeque::with_capacity(capacity.min(4096)),
            capacity: capacity.max(1),
        }
    }

    pub fn record(&mut self, latency: Duration) {
        self.calls += 1;
        if self.recent.len() == self.capacity {
            self.recent.pop_front();
        }
        self.recent.push_back(latency);
    }

    pub fn record_failure(&mut self) {
        self.failures += 1;
    }

    pub fn calls(&self) -> u64 {
        self.calls
    }

    pub fn failures(&self) -> u64 {
        self.failures
    }

    pub fn summary(&self) -> Option<Summary> {
        let samples: Vec<Duration> = self.recent.iter().copied().collect();
        Summary::of(&samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples = ms(&(1..=100).collect::<Vec<_>>());
        let s = Summary::of(&samples).unwrap();
        assert_eq!((s.p50_ms, s.p90_ms, s.p99_ms), (50.0, 90.0, 99.0));
        assert_eq!((s.min_ms, s.max_ms), (1.0, 100.0));
        assert_eq!(s.mean_ms, 50.5);
        let one = Summary::of(&ms(&[7])).unwrap();
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn window_keeps_the_latest_and_counts_all() {
        let mut window = LatencyWindow::new(3);
        for v in [100, 1, 2, 3] {
            window.record(Duration::from_millis(v));
        }
        assert_eq!(window.calls(), 4);
        assert_eq!(window.summary().unwrap().max_ms, 3.0);
    }
}
