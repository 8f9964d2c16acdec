//! The measuring loop: a fixed workload, run a few times to warm up, then a
//! fixed number of repetitions; the result is the median and the minimum time
//! per operation.
//!
//! A repetition is a closure that sets up its own state, times only the part
//! that is the workload (with [`time`]) and returns that duration, so set-up and
//! tear-down (building a runtime, spawning a thread, dropping an executor) never
//! count.
//!
//! Why median *and* min: the median is the typical cost on this machine, the
//! minimum is the cost with the least interference (the closest to the code's
//! own cost). A wide gap between them says the machine was noisy.

use std::time::{Duration, Instant};

/// How many times to run each workload.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Untimed repetitions first (caches, allocator, branch predictors).
    pub warmup: usize,
    /// Timed repetitions; odd, so the median is one of them.
    pub reps: usize,
}

impl Plan {
    /// The plan of the benchmark programs: 2 warm-up and 11 timed repetitions, or
    /// 1 and 3 with `--quick`; `reps` overrides the timed count.
    pub fn for_run(quick: bool, reps: Option<usize>) -> Plan {
        Plan {
            warmup: if quick { 1 } else { 2 },
            reps: reps.unwrap_or(if quick { 3 } else { 11 }).max(1),
        }
    }
}

/// The command-line options every benchmark program of this package shares.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Small workloads and few repetitions: a smoke run of a few seconds (CI).
    #[arg(long)]
    pub quick: bool,
    /// Run only the workload named NAME, or those whose name contains NAME
    /// (see --list).
    #[arg(long, value_name = "NAME")]
    pub filter: Option<String>,
    /// Timed repetitions per measurement (default 11, or 3 with --quick).
    #[arg(long, value_name = "N")]
    pub reps: Option<usize>,
    /// List the workloads and exit.
    #[arg(long)]
    pub list: bool,
}

impl Options {
    /// With `--list`, prints `workloads` and returns `None`; otherwise the
    /// selected workload names and the repetition plan.
    ///
    /// # Errors
    /// When `--filter` names no workload.
    pub fn start(
        &self,
        workloads: &[(&'static str, &str)],
    ) -> anyhow::Result<Option<(Vec<&'static str>, Plan)>> {
        if self.list {
            for (name, what) in workloads {
                println!("{name:<10} {what}");
            }
            return Ok(None);
        }
        let selected = select(workloads, self.filter.as_deref())?;
        Ok(Some((selected, Plan::for_run(self.quick, self.reps))))
    }
}

/// The workloads a `--filter` selects from `(name, description)` pairs: the one
/// named exactly, else every one whose name contains the filter; all without one.
///
/// # Errors
/// When the filter names no workload.
pub fn select(
    workloads: &[(&'static str, &str)],
    filter: Option<&str>,
) -> anyhow::Result<Vec<&'static str>> {
    let names = workloads.iter().map(|w| w.0);
    let selected: Vec<&str> = match filter {
        None => names.collect(),
        Some(f) if workloads.iter().any(|w| w.0 == f) => names.filter(|n| *n == f).collect(),
        Some(f) => names.filter(|n| n.contains(f)).collect(),
    };
    if selected.is_empty() {
        anyhow::bail!(
            "--filter {:?} names no workload; see --list",
            filter.unwrap_or_default()
        );
    }
    Ok(selected)
}

/// Nanoseconds per operation over the timed repetitions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// The median repetition's ns per operation.
    pub median: f64,
    /// The fastest repetition's ns per operation.
    pub min: f64,
}

impl Sample {
    /// The ratio of medians `self / other` (how many times `other`'s cost).
    pub fn ratio_to(&self, other: &Sample) -> f64 {
        self.median / other.median
    }
}

/// Runs `rep` `plan.warmup` times untimed, then `plan.reps` times, and divides
/// each returned duration by `ops`.
///
/// # Panics
/// If `ops` or `plan.reps` is zero.
pub fn measure(plan: Plan, ops: u64, mut rep: impl FnMut() -> Duration) -> Sample {
    assert!(ops > 0 && plan.reps > 0, "a workload must do some work");
    for _ in 0..plan.warmup {
        let _ = rep();
    }
    let mut per_op: Vec<f64> = (0..plan.reps)
        .map(|_| rep().as_nanos() as f64 / ops as f64)
        .collect();
    per_op.sort_by(f64::total_cmp);
    Sample {
        median: per_op[per_op.len() / 2],
        min: per_op[0],
    }
}

/// Times `f`.
#[inline]
pub fn time(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// `Ok(())` if `ok`, else an error saying `what` (a workload's self-check).
///
/// # Errors
/// `what`, when `ok` is false.
pub fn check(ok: bool, what: &str) -> anyhow::Result<()> {
    if ok {
        Ok(())
    } else {
        anyhow::bail!("{what}")
    }
}

/// Like [`measure`], for repetitions that can fail: the first error wins.
///
/// # Errors
/// The first error a repetition returned.
pub fn try_measure(
    plan: Plan,
    ops: u64,
    mut rep: impl FnMut() -> anyhow::Result<Duration>,
) -> anyhow::Result<Sample> {
    let mut err = None;
    let s = measure(plan, ops, || match rep() {
        Ok(d) => d,
        Err(e) => {
            err.get_or_insert(e);
            Duration::ZERO
        }
    });
    err.map_or(Ok(s), Err)
}

/// The order in which `n` alternatives (servers, scenarios) run in round
/// `round` (from 0) of a comparison: as given in even rounds, reversed in odd
/// ones, so that a drift of the host over the rounds falls on each alike.
pub fn round_order(n: usize, round: usize) -> Vec<usize> {
    if round % 2 == 0 {
        (0..n).collect()
    } else {
        (0..n).rev().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_alternate_the_order() {
        assert_eq!(round_order(3, 0), [0, 1, 2]);
        assert_eq!(round_order(3, 1), [2, 1, 0]);
        assert_eq!(round_order(2, 4), [0, 1]);
        assert!(round_order(0, 1).is_empty());
    }

    #[test]
    fn median_and_min_per_op() {
        let mut durations = [50u64, 10, 40, 20, 30].into_iter();
        let s = measure(Plan { warmup: 0, reps: 5 }, 10, || {
            Duration::from_nanos(durations.next().unwrap())
        });
        assert_eq!(
            s,
            Sample {
                median: 3.0,
                min: 1.0
            }
        );
    }

    #[test]
    fn warmup_is_not_counted() {
        let mut n = 0u64;
        let s = measure(Plan { warmup: 2, reps: 1 }, 1, || {
            n += 1;
            Duration::from_nanos(n * 100)
        });
        assert_eq!(s.median, 300.0);
    }
}
