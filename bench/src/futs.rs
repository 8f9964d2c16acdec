//! The futures the benchmarks run. Every executor under test runs exactly the
//! same ones, so a difference in time is a difference in the executor.
//!
//! None of them allocates or takes a lock on its hot path. Shared state is
//! reached through `&'static` references made by [`leak`]: a plain pointer
//! copy per task, where an `Arc` would add two atomic operations per task to
//! every executor's numbers.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

/// Moves `value` to the heap for the rest of the process and returns a
/// reference to it (a few bytes per workload repetition; a benchmark process is
/// short-lived).
pub fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

/// Yields once: wakes its own task through the standard `Waker`
/// (`wake_by_ref`) and returns `Pending`; ready on the next poll.
///
/// The same yield for every executor (tokio's own `yield_now` defers the
/// wake-up to the driver, a different and slower path on purpose).
#[derive(Debug, Default)]
#[must_use = "futures do nothing unless awaited"]
pub struct Yield {
    yielded: bool,
}

impl Yield {
    /// A yield that has not happened yet.
    pub fn new() -> Self {
        Yield { yielded: false }
    }
}

impl Future for Yield {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            Poll::Ready(())
        } else {
            self.yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// A one-shot event one task waits for: how a driver learns that a batch of
/// tasks has finished, for executors that need a future to wait on.
#[derive(Debug, Default)]
pub struct Latch {
    open: AtomicBool,
    waiter: Mutex<Option<Waker>>,
}

impl Latch {
    /// A closed latch.
    pub fn new() -> Self {
        Latch::default()
    }

    /// Opens the latch and wakes its waiter, if any.
    pub fn open(&self) {
        self.open.store(true, Ordering::Release);
        let waiter = self.waiter.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = waiter {
            w.wake();
        }
    }

    /// Whether the latch is open.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Waits until the latch is open.
    pub async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.is_open() {
                return Poll::Ready(());
            }
            *self.waiter.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            // Opened between the check and the registration: do not sleep.
            if self.is_open() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// Counts finished tasks and opens a [`Latch`] when the last of `of` finishes.
#[derive(Debug)]
pub struct Countdown {
    done: AtomicUsize,
    of: usize,
    /// Opened by the last task.
    pub latch: Latch,
}

impl Countdown {
    /// A countdown of `of` tasks.
    pub fn new(of: usize) -> Self {
        Countdown {
            done: AtomicUsize::new(0),
            of,
            latch: Latch::new(),
        }
    }

    /// One task finished.
    #[inline]
    pub fn hit(&self) {
        if self.done.fetch_add(1, Ordering::Relaxed) + 1 == self.of {
            self.latch.open();
        }
    }

    /// How many tasks finished.
    pub fn count(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }
}

/// Never ready, and never arranges a wake-up: a coroutine blocked on an event
/// only an id-based `wake` (or nothing) will deliver.
#[derive(Debug, Default)]
#[must_use = "futures do nothing unless awaited"]
pub struct BlockForever;

impl Future for BlockForever {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

/// The waker of the task that polls it.
pub async fn own_waker() -> Waker {
    std::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yield_then_ready_and_countdown() {
        let cd = leak(Countdown::new(2));
        let fut = async move {
            Yield::new().await;
            cd.hit();
            cd.hit();
            cd.latch.wait().await;
        };
        futures_lite::future::block_on(fut);
        assert!(cd.latch.is_open());
        assert_eq!(cd.count(), 2);
    }
}
