//! Process-level scheduling decisions (paper §2.4), as pure functions.
//!
//! A hart's switching coroutine runs the runnable user thread whose process has
//! the most important ready coroutine (the process's published bitmap, as the
//! kernel last read it), first come first served among equals. On each timer
//! tick it asks [`on_tick`] what to do with the thread it is running:
//!
//! - a kernel coroutine more important than the thread's process is ready →
//!   give the hart back to the kernel Executor ([`Tick::YieldToKernel`]);
//! - a more important thread waits → the process is expected to see that in the
//!   global bitmap and yield on its own (the paper's cooperation); only if it has
//!   not done so after [`GRACE_TICKS`] does the kernel preempt it — the guard
//!   against a process that never cooperates, which the paper leaves open;
//! - an equally important thread waits → round robin every [`SLICE_TICKS`];
//! - otherwise the thread goes on.

use alloc::collections::VecDeque;

/// Ticks a process may ignore a more important waiting thread before it is
/// preempted.
pub const GRACE_TICKS: u32 = 3;
/// Ticks a thread runs before an equally important waiting thread gets the hart.
pub const SLICE_TICKS: u32 = 5;

/// The effective level of a process whose sanitised published bitmap is
/// `bits`: its most important ready level, or `lowest` when nothing is
/// published (a thread runs, but the process claims no priority).
pub const fn level_of(bits: u64, lowest: u8) -> u8 {
    if bits == 0 {
        lowest
    } else {
        let l = bits.trailing_zeros() as u8;
        if l < lowest {
            l
        } else {
            lowest
        }
    }
}

/// Runnable threads waiting for a hart.
#[derive(Debug)]
pub struct RunQueue<T> {
    queue: VecDeque<T>,
}

impl<T> Default for RunQueue<T> {
    fn default() -> Self {
        RunQueue {
            queue: VecDeque::new(),
        }
    }
}

impl<T> RunQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a thread at the back.
    pub fn push(&mut self, t: T) {
        self.queue.push_back(t);
    }

    /// The most important waiting level under `level_of` (0 is most important).
    pub fn best_level(&self, mut level_of: impl FnMut(&T) -> u8) -> Option<u8> {
        self.queue.iter().map(&mut level_of).min()
    }

    /// Takes the first thread of the most important level, if any, among those
    /// `eligible` accepts. O(n) in waiting threads (a handful per hart here).
    pub fn pop_best(
        &mut self,
        mut level_of: impl FnMut(&T) -> u8,
        mut eligible: impl FnMut(&T) -> bool,
    ) -> Option<(T, u8)> {
        let mut best: Option<(usize, u8)> = None;
        for (i, t) in self.queue.iter().enumerate() {
            if !eligible(t) {
                continue;
            }
            let l = level_of(t);
            if best.is_none_or(|(_, b)| l < b) {
                best = Some((i, l));
            }
        }
        let (i, l) = best?;
        self.queue.remove(i).map(|t| (t, l))
    }

    /// Removes every thread `drop_it` selects (a dying process's).
    pub fn remove_where(&mut self, mut drop_it: impl FnMut(&T) -> bool) -> usize {
        let before = self.queue.len();
        self.queue.retain(|t| !drop_it(t));
        before - self.queue.len()
    }

    /// Waiting threads.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no thread waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// What a timer tick does to the running thread.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tick {
    /// Keep running it.
    Continue,
    /// Put it back in the run queue and let the kernel Executor run its more
    /// important coroutine.
    YieldToKernel,
    /// Put it back in the run queue and switch to the waiting thread.
    Preempt,
}

/// The running thread's bookkeeping between ticks.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Running {
    /// Ticks since it got the hart.
    pub ticks: u32,
    /// Consecutive ticks a more important thread has waited meanwhile.
    pub overdue: u32,
}

/// Decides a tick. `level` is the running thread's process level, `waiting`
/// the best waiting thread's, `kernel` the kernel Executor's most important
/// ready level (all: lower is more important).
pub fn on_tick(run: &mut Running, level: u8, waiting: Option<u8>, kernel: Option<u8>) -> Tick {
    run.ticks = run.ticks.saturating_add(1);
    if kernel.is_some_and(|k| k < level) {
        return Tick::YieldToKernel;
    }
    match waiting {
        Some(w) if w < level => {
            run.overdue += 1;
            if run.overdue > GRACE_TICKS {
                return Tick::Preempt;
            }
            Tick::Continue
        }
        Some(w) if w == level && run.ticks >= SLICE_TICKS => Tick::Preempt,
        _ => {
            run.overdue = 0;
            Tick::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn most_important_first_fifo_within_a_level() {
        let mut q = RunQueue::new();
        for (name, level) in [("a", 5), ("b", 1), ("c", 5), ("d", 1), ("e", 7)] {
            q.push((name, level));
        }
        assert_eq!(q.best_level(|t| t.1), Some(1));
        let order: Vec<_> =
            core::iter::from_fn(|| q.pop_best(|t| t.1, |_| true).map(|(t, _)| t.0)).collect();
        assert_eq!(order, ["b", "d", "a", "c", "e"]);
        assert!(q.is_empty());
    }

    #[test]
    fn eligibility_and_removal() {
        let mut q = RunQueue::new();
        for t in [(1, 3), (2, 0), (3, 3)] {
            q.push(t);
        }
        assert_eq!(q.pop_best(|t| t.1, |t| t.0 != 2), Some(((1, 3), 3)));
        assert_eq!(q.remove_where(|t| t.0 == 2), 1);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_best(|t| t.1, |_| false), None);
    }

    #[test]
    fn level_of_bitmaps() {
        assert_eq!(level_of(0, 7), 7);
        assert_eq!(level_of(0b1010_0000, 7), 5);
        assert_eq!(level_of(1 << 63, 7), 7);
        assert_eq!(level_of(1, 7), 0);
    }

    #[test]
    fn ticks_grace_then_preempt() {
        let mut r = Running::default();
        // A more important kernel coroutine wins at once.
        assert_eq!(on_tick(&mut r, 3, None, Some(2)), Tick::YieldToKernel);
        assert_eq!(on_tick(&mut r, 3, None, Some(3)), Tick::Continue);
        // A more important thread waits: the process gets GRACE_TICKS to yield.
        let mut r = Running::default();
        for _ in 0..GRACE_TICKS {
            assert_eq!(on_tick(&mut r, 4, Some(1), None), Tick::Continue);
        }
        assert_eq!(on_tick(&mut r, 4, Some(1), None), Tick::Preempt);
        // Less important waiters never preempt; equals share by slices.
        let mut r = Running::default();
        for _ in 0..SLICE_TICKS * 3 {
            assert_eq!(on_tick(&mut r, 4, Some(6), None), Tick::Continue);
        }
        let mut r = Running::default();
        let ticks: Vec<_> = (0..SLICE_TICKS)
            .map(|_| on_tick(&mut r, 4, Some(4), None))
            .collect();
        assert_eq!(ticks.last(), Some(&Tick::Preempt));
        assert!(ticks[..ticks.len() - 1]
            .iter()
            .all(|t| *t == Tick::Continue));
    }
}
