//! Latency distributions: every sample recorded (an HDR histogram of
//! nanoseconds, 3 significant digits), summarised as the percentiles a report
//! prints, in microseconds.
//!
//! Why a histogram and not a mean: a scheduler's latency is a tail story. A
//! coroutine that waits for a CPU-bound neighbour's poll to end waits 0 µs most
//! of the time and the neighbour's whole time slice now and then; the mean hides
//! that, p99 and max show it.

use std::fmt;

use hdrhistogram::Histogram;

/// The largest latency a histogram holds exactly: 60 s. Larger ones are
/// recorded as 60 s (a benchmark whose samples reach that is broken anyway).
const HIGHEST_NS: u64 = 60_000_000_000;

/// Latency samples, in nanoseconds.
#[derive(Clone, Debug)]
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// No samples yet.
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, HIGHEST_NS, 3)
            .expect("1 ns ..= 60 s at 3 significant digits is a valid histogram");
        Latencies { hist }
    }

    /// Records one sample of `ns` nanoseconds (0 counts as 1 ns; beyond 60 s as
    /// 60 s).
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.hist.saturating_record(ns.max(1));
    }

    /// How many samples.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// The `q` quantile (0.0 ..= 1.0) in microseconds (0 if there are no samples).
    pub fn quantile_us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1_000.0
    }

    /// The mean in microseconds (0 if there are no samples).
    pub fn mean_us(&self) -> f64 {
        self.hist.mean() / 1_000.0
    }

    /// The slowest sample in microseconds (0 if there are none).
    pub fn max_us(&self) -> f64 {
        self.hist.max() as f64 / 1_000.0
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        for v in other.hist.iter_recorded() {
            self.hist
                .saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }

    /// The percentiles of the samples (all zero if there are none).
    pub fn summary(&self) -> Summary {
        let us = |ns: u64| ns as f64 / 1_000.0;
        if self.is_empty() {
            return Summary::default();
        }
        Summary {
            count: self.len(),
            p50: us(self.hist.value_at_quantile(0.50)),
            p99: us(self.hist.value_at_quantile(0.99)),
            max: us(self.hist.max()),
        }
    }
}

/// Percentiles of a latency distribution, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    /// How many samples.
    pub count: u64,
    /// The median.
    pub p50: f64,
    /// The 99th percentile: one sample in a hundred waits longer.
    pub p99: f64,
    /// The slowest sample.
    pub max: f64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {} µs, p99 {} µs, max {} µs ({} samples)",
            us(self.p50),
            us(self.p99),
            us(self.max),
            self.count
        )
    }
}

/// Formats microseconds with a precision that suits the size.
pub fn us(v: f64) -> String {
    if v >= 1_000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_every_sample() {
        let (mut a, mut b) = (Latencies::new(), Latencies::new());
        for i in 1..=50u64 {
            a.record(i * 1_000);
            b.record((50 + i) * 1_000);
        }
        a.merge(&b);
        assert_eq!(a.len(), 100);
        assert!((a.max_us() - 100.0).abs() < 0.1, "{}", a.max_us());
        assert!(
            (a.quantile_us(0.5) - 50.0).abs() < 0.1,
            "{}",
            a.quantile_us(0.5)
        );
        assert!((a.mean_us() - 50.5).abs() < 0.1, "{}", a.mean_us());
    }

    #[test]
    fn percentiles_in_microseconds() {
        let mut l = Latencies::new();
        // 1..=100 µs, one sample each.
        for i in 1..=100u64 {
            l.record(i * 1_000);
        }
        let s = l.summary();
        assert_eq!(s.count, 100);
        // Three significant digits: within 0.1 % of the exact value.
        assert!((s.p50 - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99 - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max - 100.0).abs() < 0.1, "{s:?}");
    }

    #[test]
    fn empty_and_extremes() {
        let mut l = Latencies::new();
        assert_eq!(l.summary(), Summary::default());
        l.record(0);
        l.record(u64::MAX);
        assert_eq!(l.len(), 2);
        assert!(l.summary().max >= 59_000_000.0);
    }

    #[test]
    fn formatting() {
        assert_eq!(us(3.456), "3.46");
        assert_eq!(us(42.04), "42.0");
        assert_eq!(us(1234.4), "1234");
    }
}
