//! How much time the machine itself took from busy threads: a probe printed
//! beside every report's machine line, so that a tail latency can be read
//! against the stalls no scheduler in the guest could have avoided.
//!
//! Each probe thread spins reading the clock; a gap between two readings
//! longer than [`GAP`] is time the thread did not run — the hypervisor
//! descheduling the vCPU, or the guest kernel's own work (interrupts, kernel
//! threads). The probe runs once with one busy thread and once with one busy
//! thread per CPU: on the 2-vCPU VMs this project is measured on, the second
//! usually loses far more (2026-11-27, 21:13–21:40 UTC, the probe lines of
//! seven `coordbench --quick` and `rtecho` runs: one busy thread 0–2.3 %, one
//! per vCPU 0.13–6.8 %, in 5 of the 7 runs at least ten times the first; gaps
//! up to 16.7 ms), so a benchmark that keeps both CPUs busy (a CPU flood beside
//! a server) meets stalls that one that leaves a CPU idle mostly does not.

use std::fmt;
use std::time::{Duration, Instant};

/// The shortest gap between two clock readings counted as a stall.
pub const GAP: Duration = Duration::from_micros(500);

/// What one spinning thread saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadStalls {
    /// Gaps longer than [`GAP`].
    pub gaps: u32,
    /// Their total length.
    pub lost: Duration,
    /// The longest.
    pub max: Duration,
}

/// One probe: `threads` threads spinning for `span`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stalls {
    /// How long each thread spun.
    pub span: Duration,
    /// Each thread's stalls.
    pub threads: Vec<ThreadStalls>,
}

impl Stalls {
    /// Runs `threads` threads (at least one) that spin for `span` each,
    /// together, and records their stalls.
    pub fn probe(threads: usize, span: Duration) -> Stalls {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| std::thread::spawn(move || spin(span)))
            .collect();
        Stalls {
            span,
            threads: handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect(),
        }
    }

    /// The share of the threads' time lost to stalls, in percent.
    pub fn lost_percent(&self) -> f64 {
        let total = self.span.as_secs_f64() * self.threads.len() as f64;
        if total <= 0.0 {
            return 0.0;
        }
        let lost: f64 = self.threads.iter().map(|t| t.lost.as_secs_f64()).sum();
        100.0 * lost / total
    }

    /// Gaps over every thread.
    pub fn gaps(&self) -> u32 {
        self.threads.iter().map(|t| t.gaps).sum()
    }

    /// The longest gap any thread saw.
    pub fn max(&self) -> Duration {
        self.threads.iter().map(|t| t.max).max().unwrap_or_default()
    }
}

impl fmt::Display for Stalls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} busy thread(s) × {:.1} s lost {:.2} % in {} gaps > {} µs (longest {:.1} ms)",
            self.threads.len(),
            self.span.as_secs_f64(),
            self.lost_percent(),
            self.gaps(),
            GAP.as_micros(),
            self.max().as_secs_f64() * 1e3,
        )
    }
}

/// Spins for `span`, recording the gaps between clock readings.
fn spin(span: Duration) -> ThreadStalls {
    let start = Instant::now();
    let mut last = start;
    let mut s = ThreadStalls::default();
    loop {
        let now = Instant::now();
        let gap = now.saturating_duration_since(last);
        if gap > GAP {
            s.gaps += 1;
            s.lost += gap;
            s.max = s.max.max(gap);
        }
        last = now;
        if now.saturating_duration_since(start) >= span {
            return s;
        }
    }
}

/// The two probes a report prints: one busy thread, then one per CPU this
/// process may use.
#[derive(Clone, Debug)]
pub struct HostStalls {
    /// One thread.
    pub one: Stalls,
    /// One thread per CPU.
    pub all: Stalls,
}

impl HostStalls {
    /// Probes for `span` each (the report's lines take `2 × span`).
    pub fn probe(span: Duration) -> HostStalls {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        HostStalls {
            one: Stalls::probe(1, span),
            all: Stalls::probe(cpus, span),
        }
    }

    /// The probe length for a full run (1 s) or a `--quick` one (0.2 s).
    pub fn span(quick: bool) -> Duration {
        if quick {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(1)
        }
    }
}

impl fmt::Display for HostStalls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stalls (time a spinning thread did not run: hypervisor or guest kernel): {}; {}",
            self.one, self.all
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_reports_every_thread_and_consistent_totals() {
        let s = Stalls::probe(2, Duration::from_millis(20));
        assert_eq!(s.threads.len(), 2);
        assert!(s.threads.iter().all(|t| t.lost >= t.max));
        assert!(s.threads.iter().all(|t| t.gaps > 0 || t.lost.is_zero()));
        assert!((0.0..=100.0).contains(&s.lost_percent()));
        let text = s.to_string();
        assert!(text.starts_with("2 busy thread(s)"), "{text}");
    }

    #[test]
    fn totals_are_computed_from_the_threads() {
        let t = |gaps, lost_ms, max_ms| ThreadStalls {
            gaps,
            lost: Duration::from_millis(lost_ms),
            max: Duration::from_millis(max_ms),
        };
        let s = Stalls {
            span: Duration::from_secs(1),
            threads: vec![t(2, 30, 20), t(1, 10, 10)],
        };
        assert_eq!(s.gaps(), 3);
        assert_eq!(s.max(), Duration::from_millis(20));
        assert!((s.lost_percent() - 2.0).abs() < 1e-9);
        assert!(s
            .to_string()
            .contains("lost 2.00 % in 3 gaps > 500 µs (longest 20.0 ms)"));
        let none = Stalls {
            span: Duration::ZERO,
            threads: vec![],
        };
        assert_eq!(none.lost_percent(), 0.0);
        assert_eq!(none.max(), Duration::ZERO);
    }
}
