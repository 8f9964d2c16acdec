//! Time: [`sleep`], [`sleep_until`], [`timeout`] and [`interval`], on
//! `IORING_OP_TIMEOUT` through the runtime's io_uring driver.
//!
//! A sleep is one timeout operation in the kernel; its completion wakes the
//! sleeping coroutine by id, like any other operation (see [`crate::io`]).
//! Where io_uring is unavailable (the runtime has none, or this worker's ring
//! could not be set up), sleeps fall back to a timer thread of the runtime
//! (started on first use, joined at shutdown), so timers work everywhere.
//! Dropping a sleep early (a [`timeout`] whose future finished first, a
//! `select`) cancels the kernel timer. Deadlines are `std::time::Instant`s
//! (`CLOCK_MONOTONIC`), converted to a relative timeout when the timer starts;
//! a sleep never ends before its deadline.
//!
//! ```
//! use ss_runtime::{time, Runtime};
//! use std::time::{Duration, Instant};
//!
//! let rt = Runtime::builder().workers(1).build()?;
//! rt.block_on(async {
//!     let start = Instant::now();
//!     time::sleep(Duration::from_millis(5)).await;
//!     assert!(start.elapsed() >= Duration::from_millis(5));
//!
//!     let slow = time::sleep(Duration::from_secs(10));
//!     assert!(time::timeout(Duration::from_millis(5), slow).await.is_err());
//! });
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::io::{Op, Timeout as TimerOp};
use crate::runtime::Inner;

mod fallback;
pub(crate) use fallback::Timers;

/// Sleeps for `duration` (at least).
///
/// # Panics
/// When polled outside a runtime, or if neither an io_uring timer nor the
/// fallback timer thread can be set up (the message says why): a timer that
/// cannot be set must not return early.
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(after(Instant::now(), duration))
}

/// How far off "never" is: a deadline past what `Instant` can hold (a sleep
/// or a timeout of `Duration::MAX`, the usual way to say "no timeout") is
/// this far from now instead.
const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `t + d`, or [`FAR`] after `t` where that sum does not fit an `Instant`
/// (it panicked until 2026-11-29).
fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).or_else(|| t.checked_add(FAR)).unwrap_or(t)
}

/// Sleeps until `deadline` (at least).
///
/// # Panics
/// As [`sleep`].
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        op: None,
        fallback: None,
    }
}

/// The future of [`sleep`] and [`sleep_until`].
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
    op: Option<Op<TimerOp>>,
    /// Registration with the runtime's fallback timer thread, once io_uring
    /// could not set the timer.
    fallback: Option<(Arc<Inner>, u64)>,
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .field("started", &(self.op.is_some() || self.fallback.is_some()))
            .finish()
    }
}

impl Sleep {
    /// When it ends.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline (cancelling a started timer; the next poll starts a new
    /// one).
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        self.op = None;
        self.cancel_fallback();
    }

    fn cancel_fallback(&mut self) {
        if let Some((inner, id)) = self.fallback.take() {
            inner.timers().cancel(id);
        }
    }

    /// Waits on the runtime's timer thread instead of io_uring.
    fn poll_fallback(&mut self, cx: &mut Context<'_>, why: &std::io::Error) -> Poll<()> {
        let inner = match &self.fallback {
            Some((inner, _)) => inner.clone(),
            None => crate::context::current().unwrap_or_else(|| {
                panic!("sleep: cannot set a timer ({why}) and there is no runtime on this thread")
            }),
        };
        let id = self.fallback.as_ref().map(|(_, id)| *id);
        match inner.timers().register(id, self.deadline, cx.waker(), inner.thread_name()) {
            Ok(Some(id)) => {
                self.fallback = Some((inner, id));
                Poll::Pending
            }
            // The runtime shut down: nothing polls this sleep again.
            Ok(None) => Poll::Pending,
            Err(e) => panic!(
                "sleep: cannot set an io_uring timer ({why}) nor start the fallback timer thread ({e})"
            ),
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.cancel_fallback();
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let now = Instant::now();
            if now >= this.deadline {
                this.op = None;
                this.cancel_fallback();
                return Poll::Ready(());
            }
            if this.fallback.is_some() {
                let why = std::io::Error::other("io_uring timer unavailable");
                return this.poll_fallback(cx, &why);
            }
            let op = this
                .op
                .get_or_insert_with(|| Op::new(TimerOp::new(this.deadline - now)));
            match Pin::new(op).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => this.op = None, // re-checks the clock
                Poll::Ready(Err(e)) => {
                    this.op = None;
                    return this.poll_fallback(cx, &e);
                }
            }
        }
    }
}

/// The error of [`timeout`]: the deadline passed first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "deadline has elapsed before the operation completed; allow a longer timeout or retry",
        )
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(e: Elapsed) -> Self {
        std::io::Error::new(std::io::ErrorKind::TimedOut, e)
    }
}

/// Runs `future` for at most `duration`: its output, or [`Elapsed`] (and the
/// future is dropped, cancelling what it had in flight).
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout {
        future,
        sleep: sleep(duration),
    }
}

/// The future of [`timeout`].
#[must_use = "futures do nothing unless awaited"]
pub struct Timeout<F> {
    future: F,
    sleep: Sleep,
}

impl<F> fmt::Debug for Timeout<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("deadline", &self.sleep.deadline)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning of `future`: it is never moved out of the
        // pinned `Timeout` nor exposed unpinned; `sleep` is `Unpin` and is
        // handled by `&mut`.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above; `this.future` stays where it is until `this` drops.
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        if let Poll::Ready(v) = future.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(&mut this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed(()))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Ticks every `period`: the first [`Interval::tick`] completes at once, then one
/// per period, on a fixed schedule (`start + k·period`). When the ticker falls
/// behind (the coroutine did not call `tick` for a while), the overdue tick fires
/// at once and the ones missed meanwhile are skipped rather than fired in a burst.
///
/// # Panics
/// If `period` is zero.
pub fn interval(period: Duration) -> Interval {
    assert!(
        !period.is_zero(),
        "interval: the period must be longer than zero"
    );
    Interval {
        next: Instant::now(),
        period,
    }
}

/// The ticker of [`interval`].
#[derive(Debug)]
pub struct Interval {
    next: Instant,
    period: Duration,
}

impl Interval {
    /// Waits for the next tick; returns its scheduled time.
    pub async fn tick(&mut self) -> Instant {
        let at = self.next;
        sleep_until(at).await;
        let now = Instant::now();
        self.next = after(at, self.period);
        if self.next <= now {
            // Late by more than a period: skip to the next tick in the future.
            let behind = (now - self.next).as_nanos() / self.period.as_nanos() + 1;
            let behind = u32::try_from(behind).unwrap_or(u32::MAX);
            self.next = after(self.next, self.period.saturating_mul(behind));
        }
        at
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }
}
