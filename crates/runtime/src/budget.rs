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
//!
//! The budget also ends early the moment a **more important** coroutine is ready
//! in the same executor (`ss_core::more_important_ready`, one indirect call and
//! two loads per unit): a low-priority coroutine then gives way at its next unit
//! instead of at the end of its budget. Measured with `rtbench flood` (priority-0
//! wake-ups under a priority-7 CPU flood on 2 workers): the high-priority p99
//! otherwise grows to about one full budget of the flood (~120 µs).
//!
//! In a runtime coordinated with other processes ([`crate::coordinate`]) it
//! also ends the moment more important work is ready in **another process**
//! (a few loads of the read-only global page), so a CPU-bound coroutine hands
//! its worker back to the decision that defers to that process.

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

/// Spends one unit, or — when the budget is spent, or a more important coroutine
/// is ready — wakes the task and returns `Pending` (the caller returns `Pending`
/// too, which yields).
pub fn poll_proceed(cx: &mut Context<'_>) -> Poll<()> {
    let give_way = ss_core::more_important_ready(cx.waker()) == Some(true)
        || crate::coordinate::give_way_elsewhere();
    REMAINING.with(|r| match r.get() {
        n if n > 0 && !give_way => {
            r.set(n - 1);
            Poll::Ready(())
        }
        _ => {
            cx.waker().wake_by_ref();
            Poll::Pending
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
