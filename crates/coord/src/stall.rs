//! Hung processes: a registration that holds the global top and makes no
//! progress stops holding others back.
//!
//! The scan folds what a page says, so a process that is stopped (`SIGSTOP`),
//! deadlocked or blocked while its page claims levels would keep everyone
//! with less important work deferring for as long as it stays registered.
//! The rule: on every tick, a registration is *watched* while
//!
//! - the most important level of what it contributes to the view is the
//!   global top (so nothing registered and more important keeps it from
//!   running), and
//! - its worker threads are at their own OS weight (the coordinator has not
//!   lowered them, which it may still do for a weight window after it
//!   reached the top).
//!
//! A watched registration *moves* when the CPU time of its worker threads
//! (those named with the weights' thread prefix, `ss-worker` by default, all
//! together, from `/proc/<pid>/task/<tid>/schedstat`; for a process without
//! such threads its process CPU clock, `clock_getcpuclockid` +
//! `clock_gettime`; the kernel's count either way, not an allegation) or its
//! page's `seq` changes, and whenever one of those threads is runnable (state
//! `R`: waiting for a CPU the loaded machine does not give it is not being
//! hung) ([`progress`]). Only the workers run what the page
//! claims: a runtime's watch thread, which looks every few milliseconds
//! while its workers are busy, must not keep a process whose workers are
//! all blocked counted. If it does not move for the
//! window ([`Policy::stall_window`](crate::policy::Policy::stall_window):
//! the budget's burst, 200 ms by default) its bits are **left out of the
//! view** ("stalled") until either moves again.
//!
//! Why this cannot hurt a process that works:
//!
//! - *Starved:* a process kept from running by more important work elsewhere
//!   is not at the global top, so it is not watched; its window starts anew
//!   only when it reaches the top (however long it waited before).
//! - *One long coroutine:* it consumes CPU, so its clock moves.
//! - *Blocked in a system call while claiming a level:* it is left out, and
//!   that is the point — nobody gains anything by deferring to a process that
//!   does not use the CPU. It counts again at the first tick after it runs.
//! - *The page:* `seq` is only compared for equality; a page cannot make the
//!   coordinator drop another registration, only its own claim can keep
//!   others from the top (as its ceiling and budget allow).
//! - *Unreadable clock* (the process is exiting; its pidfd removes it in the
//!   same loop turn): never dropped on a guess.
//!
//! Cost: while watched (or stalled), one reading per registration (a listing
//! of `/proc/<pid>/task` and each worker thread's `schedstat` and `stat`, or
//! one `clock_gettime`) at most every window / [`SAMPLES_PER_WINDOW`]
//! (12.5 ms by default), plus one right before a drop, so a drop always
//! rests on a fresh reading. Leaving
//! the top and reaching it again does not buy a reading: the window then
//! starts from the last one if it is that recent (a move since is seen at
//! the next reading and restarts the window), and an unreadable clock is not
//! read again before the next is due either.

use std::time::{Duration, Instant};

use crate::sys;
use crate::weights::worker_threads;

/// One reading of a watched registration's progress ([`progress`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// CPU time consumed, in nanoseconds.
    pub cpu: u64,
    /// One of the threads it is read from is runnable now (state `R`):
    /// waiting for a CPU, or on one — not hung, however long the machine
    /// keeps it waiting.
    pub runnable: bool,
}

/// What a watched registration's progress is read from: the CPU time of its
/// worker threads (named with `prefix`, the weights'
/// [`thread_prefix`](crate::weights::WeightConfig::thread_prefix)), all
/// together, if it has any and they can be read; else its process's CPU
/// clock. Either way, whether one of those threads (all of them, at most
/// [`MAX_WEIGHTED_THREADS`](crate::weights::MAX_WEIGHTED_THREADS), for the
/// process clock) is runnable now. `None`: nothing can be read (it is
/// exiting).
///
/// Only the workers run the ready work its page claims: a runtime's other
/// threads — its watch, which looks every few milliseconds while workers are
/// busy — kept a process clock moving while every worker was blocked, and
/// such a process was never left out. And a runnable thread is waiting for a
/// CPU: on a machine loaded enough that it waits a whole window, a process
/// that ran was left out (both found in review, 2026-11-30).
pub fn progress(pid: u32, prefix: &str) -> Option<Reading> {
    if !prefix.is_empty() {
        if let Ok(tids) = worker_threads(pid, prefix) {
            let mut sum: Option<u64> = None;
            let mut runnable = false;
            for tid in tids {
                // A thread that has just exited drops out of the sum: a
                // change, so at worst a "moved" (never a drop on a guess).
                if let Ok(t) = sys::thread_cpu_time(pid, tid) {
                    sum = Some(sum.unwrap_or(0).wrapping_add(t));
                    runnable |= sys::thread_runnable(pid, tid);
                }
            }
            if let Some(cpu) = sum {
                return Some(Reading { cpu, runnable });
            }
        }
    }
    let cpu = sys::process_cpu_time(pid).ok()?;
    let runnable = worker_threads(pid, "")
        .is_ok_and(|tids| tids.into_iter().any(|t| sys::thread_runnable(pid, t)));
    Some(Reading { cpu, runnable })
}

/// The CPU clock of a watched registration is read at most this many times
/// per window (and once more right before dropping it).
pub const SAMPLES_PER_WINDOW: u32 = 16;

/// One registration's watch (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Stall {
    /// While watched or stalled: when it was last seen to move (or became
    /// watched).
    since: Option<Instant>,
    /// Its page's `seq` at the last check.
    seq: u64,
    /// When its CPU clock was last read, and what it said (`None`:
    /// unreadable). Kept while it is not watched, so that leaving and
    /// reaching the top again does not buy a reading before it is due.
    cpu: Option<(Instant, Option<u64>)>,
    stalled: bool,
    stalls: u64,
}

impl Stall {
    /// Whether its bits are left out of the view now.
    pub fn stalled(&self) -> bool {
        self.stalled
    }

    /// How many times its bits were left out since it registered.
    pub fn stalls(&self) -> u64 {
        self.stalls
    }

    /// One check at `now`. `at_top`: it is watched (module docs); `seq`: its
    /// page's `seq` now; `cpu`: reads its progress ([`Reading`]; `None`:
    /// unreadable), called only when a reading is due. Returns whether
    /// [`stalled`](Stall::stalled) changed.
    pub fn check(
        &mut self,
        now: Instant,
        at_top: bool,
        seq: u64,
        cpu: impl FnOnce() -> Option<Reading>,
        window: Duration,
    ) -> bool {
        if !self.stalled && !at_top {
            // Nothing to hold others back with, or something more important
            // holds it back: its window starts when it reaches the top.
            self.since = None;
            return false;
        }
        // window / SAMPLES_PER_WINDOW, rounded up: at most that many
        // readings fit in a window.
        let period = Duration::from_nanos(
            u64::try_from(window.as_nanos().div_ceil(u128::from(SAMPLES_PER_WINDOW)))
                .unwrap_or(u64::MAX),
        );
        let due = self
            .cpu
            .is_none_or(|(at, _)| now.saturating_duration_since(at) >= period);
        let Some(since) = self.since else {
            // It has just reached the top: the window starts now, from a
            // reading (the last one if it is recent: a move since then
            // only restarts the window at the next reading).
            if due {
                self.cpu = Some((now, cpu().map(|r| r.cpu)));
            }
            if self.cpu.is_some_and(|(_, c)| c.is_some()) {
                self.since = Some(now);
                self.seq = seq;
            }
            return false;
        };
        let mut moved = seq != self.seq;
        self.seq = seq;
        let expired = now.saturating_duration_since(since) >= window;
        if due || (expired && !self.stalled) {
            let old = self.cpu.and_then(|(_, c)| c);
            let c = cpu();
            self.cpu = Some((now, c.map(|r| r.cpu)));
            let Some(c) = c else {
                // Never drop on a guess.
                return self.unwatch();
            };
            moved |= c.runnable || old != Some(c.cpu);
        }
        if moved {
            self.since = Some(now);
            let was = self.stalled;
            self.stalled = false;
            return was;
        }
        if expired && !self.stalled {
            self.stalled = true;
            self.stalls += 1;
            return true;
        }
        false
    }

    fn unwatch(&mut self) -> bool {
        let was = self.stalled;
        self.since = None;
        self.stalled = false;
        was
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(200);

    /// A reading of `cpu` with no thread runnable.
    fn idle(cpu: u64) -> Reading {
        Reading {
            cpu,
            runnable: false,
        }
    }
    const TICK: Duration = Duration::from_millis(1);

    /// Runs `ticks` ticks from `t`, with the CPU clock given by `clock` at
    /// each tick; returns the time after the last and how many readings
    /// were taken.
    fn run(
        s: &mut Stall,
        mut t: Instant,
        ticks: u32,
        at_top: bool,
        seq: impl Fn(u32) -> u64,
        clock: impl Fn(u32) -> Option<u64>,
    ) -> (Instant, u32) {
        let mut reads = 0;
        for i in 0..ticks {
            s.check(
                t,
                at_top,
                seq(i),
                || {
                    reads += 1;
                    clock(i).map(idle)
                },
                WINDOW,
            );
            t += TICK;
        }
        (t, reads)
    }

    #[test]
    fn a_process_at_the_top_that_does_not_move_is_left_out_until_it_moves() {
        let mut s = Stall::default();
        let t = Instant::now();
        // Just under the window: still counted.
        let (t, _) = run(&mut s, t, 200, true, |_| 7, |_| Some(1000));
        assert!(!s.stalled());
        let (t, _) = run(&mut s, t, 2, true, |_| 7, |_| Some(1000));
        assert!(s.stalled());
        assert_eq!(s.stalls(), 1);
        // Stays out, however long, while nothing moves.
        let (t, _) = run(&mut s, t, 1000, true, |_| 7, |_| Some(1000));
        assert!(s.stalled());
        // Its CPU clock moves: back within one reading period.
        let (t, _) = run(&mut s, t, 13, true, |_| 7, |_| Some(1001));
        assert!(!s.stalled());
        // Stalls again after a full window, not at once.
        let (t, _) = run(&mut s, t, 150, true, |_| 7, |_| Some(1001));
        assert!(!s.stalled());
        let (t, _) = run(&mut s, t, 60, true, |_| 7, |_| Some(1001));
        assert!(s.stalled());
        // Its seq moves (its clock does not): back at the next check.
        assert!(s.check(t, true, 8, || Some(idle(1001)), WINDOW));
        assert!(!s.stalled());
        assert_eq!(s.stalls(), 2);
    }

    #[test]
    fn a_process_whose_cpu_clock_moves_is_never_left_out() {
        let mut s = Stall::default();
        // One nanosecond per tick is enough; its page never changes.
        run(
            &mut s,
            Instant::now(),
            5000,
            true,
            |_| 0,
            |i| Some(u64::from(i)),
        );
        assert!(!s.stalled());
        assert_eq!(s.stalls(), 0);
    }

    #[test]
    fn a_process_waiting_for_a_cpu_is_never_left_out() {
        // Its clock stands still for many windows (the machine gives it no
        // CPU), but a thread of it is runnable: not hung.
        let mut s = Stall::default();
        let t = Instant::now();
        let mut t2 = t;
        for _ in 0..5000 {
            let runnable = Reading {
                cpu: 77,
                runnable: true,
            };
            s.check(t2, true, 1, || Some(runnable), WINDOW);
            t2 += TICK;
        }
        assert_eq!((s.stalled(), s.stalls()), (false, 0));
        // Once nothing of it is runnable and its clock stands still, it is
        // left out after a window.
        run(&mut s, t2, 205, true, |_| 1, |_| Some(77));
        assert!(s.stalled());
    }

    #[test]
    fn progress_reads_the_workers_and_whether_one_is_runnable() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let pid = std::process::id();
        let stop = Arc::new(AtomicBool::new(false));
        // A sleeping worker: read, not runnable (but for a moment at its
        // wake-ups: looked at until it is seen asleep, bounded).
        let sleeper = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("ss-stalltest-s".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                })
                .unwrap()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = progress(pid, "ss-stalltest-s").expect("readable");
            if !r.runnable {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a sleeping thread reads runnable"
            );
            std::thread::sleep(Duration::from_millis(3));
        }
        // A spinning worker beside it: runnable, and its CPU time counts.
        let spinner = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("ss-stalltest-r".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
                .unwrap()
        };
        let first = progress(pid, "ss-stalltest-").expect("readable");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = progress(pid, "ss-stalltest-").expect("readable");
            if r.runnable && r.cpu > first.cpu {
                break;
            }
            assert!(Instant::now() < deadline, "{first:?} then {r:?}");
            std::thread::sleep(Duration::from_millis(3));
        }
        stop.store(true, Ordering::Relaxed);
        sleeper.join().unwrap();
        spinner.join().unwrap();
    }

    #[test]
    fn a_process_whose_seq_moves_is_never_left_out() {
        let mut s = Stall::default();
        run(
            &mut s,
            Instant::now(),
            5000,
            true,
            |i| u64::from(i / 10),
            |_| Some(5),
        );
        assert_eq!(s.stalls(), 0);
    }

    #[test]
    fn a_starved_process_is_not_watched_and_gets_a_full_window_at_the_top() {
        let mut s = Stall::default();
        let t = Instant::now();
        // Held back (not at the top) for far longer than the window.
        let (t, reads) = run(&mut s, t, 5000, false, |_| 3, |_| Some(9));
        assert_eq!((s.stalls(), reads), (0, 0), "not watched, not even read");
        // At the top now: a whole window before it is left out.
        let (t, _) = run(&mut s, t, 199, true, |_| 3, |_| Some(9));
        assert!(!s.stalled());
        // Held back again in between: the window starts over.
        let (t, _) = run(&mut s, t, 1, false, |_| 3, |_| Some(9));
        let (t, _) = run(&mut s, t, 199, true, |_| 3, |_| Some(9));
        assert!(!s.stalled());
        run(&mut s, t, 5, true, |_| 3, |_| Some(9));
        assert!(s.stalled());
    }

    #[test]
    fn an_unreadable_clock_never_drops() {
        let mut s = Stall::default();
        run(&mut s, Instant::now(), 5000, true, |_| 0, |_| None);
        assert_eq!(s.stalls(), 0);
        // Nor keeps a stalled one out.
        let mut s = Stall::default();
        let (t, _) = run(&mut s, Instant::now(), 300, true, |_| 0, |_| Some(1));
        assert!(s.stalled());
        run(&mut s, t, 20, true, |_| 0, |_| None);
        assert!(!s.stalled());
    }

    #[test]
    fn leaving_the_top_does_not_buy_readings() {
        // Found by tests/properties.rs: the clock of a process whose page
        // leaves the top and reaches it again at alternate ticks was read at
        // every return (100 times in a window), and so was an unreadable
        // clock at every tick.
        let t = Instant::now();
        let mut s = Stall::default();
        let mut reads = 0;
        for i in 0..200u32 {
            let now = t + TICK * i;
            s.check(
                now,
                i % 2 == 0,
                0,
                || {
                    reads += 1;
                    Some(idle(u64::from(i)))
                },
                WINDOW,
            );
        }
        assert!(reads <= SAMPLES_PER_WINDOW + 1, "{reads} readings");
        let mut s = Stall::default();
        let (_, unreadable) = run(&mut s, t, 200, true, |_| 0, |_| None);
        assert!(
            unreadable <= SAMPLES_PER_WINDOW + 1,
            "{unreadable} readings"
        );
    }

    #[test]
    fn the_clock_is_read_a_bounded_number_of_times_per_window() {
        let mut s = Stall::default();
        let (_, reads) = run(
            &mut s,
            Instant::now(),
            2000,
            true,
            |_| 0,
            |i| Some(u64::from(i)),
        );
        // 2000 ticks = 10 windows: about SAMPLES_PER_WINDOW per window.
        assert!(
            reads <= 10 * (SAMPLES_PER_WINDOW + 1) + 1,
            "{reads} readings"
        );
    }
}
