//! The cooperative budget.
//!
//! Priority is strict at every pick, but a coroutine is only picked again when it
//! gives the CPU back. One whose I/O is always ready (a socket with data waiting
//! every time) would never return `Pending` and so never give way. The budget
//! bounds that: every poll of a coroutine starts with [`LIMIT`] units; each
//! resource operation (I/O, timers, [`consume_budget`]) spends one, and once the
//! budget is spent the operation returns `Pending` after waking its coroutine —
//! a yield. The coroutine goes back to its ready queue, the poller picks the most
//! important ready coroutine (which may be the same one, at once and without a
//! lock, if nothing as important is waiting), and the budget starts afresh.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Units a coroutine may spend in one poll.
pub const LIMIT: u32 = 128;

thread_local! {
    static REMAINING: Cell<u32> = const { Cell::new(LIMIT) };
}

/// Refills the budget: called at the start of every coroutine poll.
pub(crate) fn refill() {
    REMAINING.with(|r| r.set(LIMIT));
}

/// Spends one unit, or — when the budget is spent — wakes the task and returns
/// `Pending` (the caller returns `Pending` too, which yields).
pub fn poll_proceed(cx: &mut Context<'_>) -> Poll<()> {
    REMAINING.with(|r| match r.get() {
        0 => {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        n => {
            r.set(n - 1);
            Poll::Ready(())
        }
    })
}

/// Spends one unit of the budget, yielding first if it is spent. Put it in loops
/// that may run long without awaiting anything that could return `Pending`.
pub fn consume_budget() -> ConsumeBudget {
    ConsumeBudget(())
}

/// The future returned by [`consume_budget`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct ConsumeBudget(());

impl Future for ConsumeBudget {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        poll_proceed(cx)
    }
}
