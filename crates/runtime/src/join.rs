//! Join handles: awaiting a coroutine's output, and aborting it.
//!
//! Every coroutine the runtime spawns runs inside a [`Harness`]: it catches a
//! panic of the coroutine's future (so one coroutine's panic costs nothing but that
//! coroutine), stores the output or the panic in the coroutine's [`JoinHandle`]
//! slot, and — if the future is dropped before it finished (the coroutine was
//! aborted, or the runtime shut down) — records the cancellation there. It also
//! refills the coroutine's cooperative budget at the start of every poll.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use ss_core::{Cancel, CoroutineId, Executor};

use crate::budget;
use crate::WorkerPlatform;

/// Why a coroutine has no output for its [`JoinHandle`].
pub enum JoinError {
    /// It was aborted ([`JoinHandle::abort`], `ss_core::Executor::cancel`) or its
    /// runtime shut down before it finished.
    Cancelled,
    /// Its future panicked; the payload is the panic's.
    Panic(Box<dyn Any + Send + 'static>),
}

impl JoinError {
    /// Whether the coroutine was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, JoinError::Cancelled)
    }

    /// Whether the coroutine panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, JoinError::Panic(_))
    }

    /// The panic payload, to resume the panic with `std::panic::resume_unwind`.
    ///
    /// # Errors
    /// `Err(self)` if the coroutine did not panic.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, JoinError> {
        match self {
            JoinError::Panic(p) => Ok(p),
            other => Err(other),
        }
    }
}

fn panic_message(p: &(dyn Any + Send)) -> &str {
    if let Some(s) = p.downcast_ref::<&str>() {
        s
    } else if let Some(s) = p.downcast_ref::<String>() {
        s
    } else {
        "a non-string payload"
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Cancelled => f.write_str("JoinError::Cancelled"),
            JoinError::Panic(p) => write!(f, "JoinError::Panic({:?})", panic_message(&**p)),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Cancelled => f.write_str(
                "the coroutine was cancelled (aborted, or its runtime shut down) before it finished",
            ),
            JoinError::Panic(p) => write!(f, "the coroutine panicked: {}", panic_message(&**p)),
        }
    }
}

impl std::error::Error for JoinError {}

struct SlotState<T> {
    result: Option<Result<T, JoinError>>,
    finished: bool,
    waiter: Option<Waker>,
}

/// Where a coroutine's result waits for its `JoinHandle`.
pub(crate) struct Slot<T> {
    state: Mutex<SlotState<T>>,
}

impl<T> Slot<T> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Slot {
            state: Mutex::new(SlotState {
                result: None,
                finished: false,
                waiter: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState<T>> {
        // A panic while holding this lock cannot leave it inconsistent: every
        // critical section is a few field assignments.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the result, once, and wakes the waiter.
    fn complete(&self, result: Result<T, JoinError>) {
        let waiter = {
            let mut s = self.lock();
            if s.finished {
                return;
            }
            s.finished = true;
            s.result = Some(result);
            s.waiter.take()
        };
        if let Some(w) = waiter {
            w.wake();
        }
    }

    fn is_finished(&self) -> bool {
        self.lock().finished
    }
}

/// The future the executor runs for a spawned coroutine: see the module docs.
pub(crate) struct Harness<F: Future> {
    /// Dropped by hand in `Drop`, before the slot is completed.
    future: ManuallyDrop<F>,
    slot: Arc<Slot<F::Output>>,
}

impl<F: Future> Harness<F> {
    pub(crate) fn new(future: F, slot: Arc<Slot<F::Output>>) -> Self {
        Harness {
            future: ManuallyDrop::new(future),
            slot,
        }
    }
}

impl<F: Future> Future for Harness<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: structural pinning of `future`: it is never moved out of the
        // pinned `Harness` (not in `Drop` either), and `slot` is not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above.
        let future = unsafe { Pin::new_unchecked(&mut *this.future) };
        budget::refill();
        crate::io::reap_now_and_then();
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => {
                this.slot.complete(Ok(value));
                Poll::Ready(())
            }
            Err(panic) => {
                this.slot.complete(Err(JoinError::Panic(panic)));
                Poll::Ready(())
            }
        }
    }
}

impl<F: Future> Drop for Harness<F> {
    fn drop(&mut self) {
        // The future first, so that a handle told `Cancelled` finds what the
        // coroutine held released (until 2026-11-29 the slot was completed
        // first, and an awaiter on another worker could run while the
        // destructor still held a port, a lock, a file). A destructor that
        // panics is that coroutine's panic, told to its handle, not the
        // worker's (it unwound through the executor and ended the thread).
        let future = &mut self.future;
        // SAFETY: dropped once, here, in place (which pinning allows); the
        // field is not used again, whether or not the drop unwinds.
        let dropped = catch_unwind(AssertUnwindSafe(|| unsafe { ManuallyDrop::drop(future) }));
        // Dropped before finishing: cancelled (after finishing, a no-op).
        self.slot.complete(Err(match dropped {
            Ok(()) => JoinError::Cancelled,
            Err(panic) => JoinError::Panic(panic),
        }));
    }
}

/// An owned permission to await a spawned coroutine's output, or to abort it.
///
/// Dropping the handle detaches the coroutine: it runs on.
pub struct JoinHandle<T> {
    slot: Arc<Slot<T>>,
    cid: CoroutineId,
    exec: Arc<Executor<WorkerPlatform>>,
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(
        slot: Arc<Slot<T>>,
        cid: CoroutineId,
        exec: Arc<Executor<WorkerPlatform>>,
    ) -> Self {
        JoinHandle { slot, cid, exec }
    }

    /// The coroutine's id (for `wake`, `reprio`, `state`).
    pub fn cid(&self) -> CoroutineId {
        self.cid
    }

    /// Whether the coroutine has finished (returned, panicked or been cancelled).
    pub fn is_finished(&self) -> bool {
        self.slot.is_finished()
    }

    /// Cancels the coroutine: its future is dropped (at once, or when its current
    /// poll ends), and awaiting this handle gives [`JoinError::Cancelled`] unless
    /// it had finished already.
    pub fn abort(&self) {
        match self.exec.cancel(self.cid) {
            Ok(Cancel::Dropped | Cancel::Deferred | Cancel::AlreadyExited) => {}
            // Already exited and retired: its result is in the slot.
            Err(_) => {}
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("cid", &self.cid)
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.slot.lock();
        if let Some(result) = s.result.take() {
            return Poll::Ready(result);
        }
        if s.finished {
            // Taken by an earlier poll that returned Ready.
            panic!("a JoinHandle was polled after it returned its result");
        }
        match &mut s.waiter {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}
