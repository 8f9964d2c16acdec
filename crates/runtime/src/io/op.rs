//! The future of one io_uring operation: submission with batching, wake-up by
//! cid, and hand-over of its memory to the driver when dropped in flight.
//!
//! ```text
//!   Init(data) ──first poll: register slot, push SQE──► Submitted { key, seq, data }
//!                                                           │ poll: flush if still queued,
//!                                                           │       then take the result
//!                                                           ▼
//!                                     Ready(data.complete(result)) ──► Done
//!   drop while Submitted: data ──► driver (Abandoned slot) + ASYNC_CANCEL
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use io_uring::squeue;

use super::driver::{Push, Shared, Waiter};

/// One kind of operation: the memory it needs while in flight, how to describe
/// it to the kernel, and how to turn the completion into the caller's output.
pub(crate) trait Operation: Send + Unpin + 'static {
    /// What awaiting the operation gives.
    type Output;

    /// The SQE (its `user_data` is set by the caller). Pointers in it must point
    /// into heap memory owned by `self` (a `Vec`'s buffer, a `Box`), which stays
    /// put when `self` moves: the op future moves, and on drop `self` moves into
    /// the driver, while the kernel may use that memory.
    fn sqe(&mut self) -> squeue::Entry;

    /// The SQE has been queued: from now on the kernel will act on it.
    fn submitted(&mut self) {}

    /// The kernel's result: a value ≥ 0, or `-errno`.
    fn complete(self, result: i32) -> Self::Output;

    /// The operation could not be submitted at all.
    fn fail(self, error: io::Error) -> Self::Output;
}

enum State<T> {
    Init(T),
    Submitted {
        shared: Arc<Shared>,
        key: u64,
        seq: u64,
        data: T,
    },
    Done,
}

/// The future of an operation. See the module docs.
pub(crate) struct Op<T: Operation> {
    state: State<T>,
}

/// The current runtime's driver, or why there is none.
pub(crate) fn current_driver() -> io::Result<Arc<Shared>> {
    match crate::context::current() {
        Some(inner) => inner.io().map(|d| d.shared().clone()),
        None => Err(io::Error::other(
            "no SharedScheduler runtime on this thread: start I/O from inside \
             `Runtime::block_on` or a coroutine spawned on a runtime",
        )),
    }
}

/// Submits at once: `Ok(state)` when pushed, `Err(data)` when the SQ is full.
fn submit<T: Operation>(
    shared: Arc<Shared>,
    mut data: T,
    waiter: Waiter,
) -> Result<State<T>, (io::Result<Arc<Shared>>, T)> {
    let key = match shared.register(waiter) {
        Ok(key) => key,
        Err(e) => return Err((Err(e), data)),
    };
    let sqe = data.sqe().user_data(key);
    // SAFETY: the SQE points into heap memory owned by `data` (the `Operation`
    // contract). From here `data` lives in `State::Submitted` until the result is
    // taken (after the completion), or moves into the driver's abandoned slot when
    // the future is dropped, which frees it only after the completion.
    match unsafe { shared.push(&sqe) } {
        Push::Queued(seq) => Ok(State::Submitted {
            data: {
                data.submitted();
                data
            },
            shared,
            key,
            seq,
        }),
        Push::Full => {
            shared.unregister(key);
            Err((Ok(shared), data))
        }
    }
}

impl<T: Operation> Op<T> {
    /// An operation submitted on its first poll.
    pub(crate) fn new(data: T) -> Self {
        Op {
            state: State::Init(data),
        }
    }

    /// An operation submitted now, to `shared`, whose completion wakes `waiter`
    /// until the future is polled (the paper's asynchronous form). Returns the
    /// output at once if it cannot be submitted.
    pub(crate) fn submit_now(
        shared: io::Result<Arc<Shared>>,
        data: T,
        waiter: Waiter,
    ) -> Result<Self, T::Output> {
        let shared = match shared {
            Ok(s) => s,
            Err(e) => return Err(data.fail(e)),
        };
        match submit(shared, data, waiter) {
            Ok(state) => {
                if let State::Submitted { shared, .. } = &state {
                    shared.flush();
                }
                Ok(Op { state })
            }
            Err((Err(e), data)) => Err(data.fail(e)),
            Err((Ok(_), data)) => Err(data.fail(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the io_uring submission queue is full; retry, or raise io::Config::entries",
            ))),
        }
    }
}

impl<T: Operation> Op<T> {
    /// Submits the operation's SQE now if it is still queued (for a caller that
    /// will not poll the op again soon, so cannot take part in batching).
    pub(crate) fn submit_queued(&self) {
        if let State::Submitted { shared, seq, .. } = &self.state {
            if shared.unsubmitted(*seq) {
                shared.flush();
            }
        }
    }
}

impl<T: Operation> Future for Op<T> {
    type Output = T::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T::Output> {
        let this = self.get_mut();
        if let State::Init(_) = this.state {
            let State::Init(data) = std::mem::replace(&mut this.state, State::Done) else {
                unreachable!()
            };
            return this.start(data, cx);
        }
        // Submitted: the data stays in place (and so with the driver on a panic)
        // until the result is taken.
        let State::Submitted {
            shared, key, seq, ..
        } = &this.state
        else {
            panic!("an io operation polled after it completed");
        };
        if shared.unsubmitted(*seq) {
            shared.flush();
            if shared.unsubmitted(*seq) {
                // The kernel refused the batch for now (EBUSY/EAGAIN): retry.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        match shared.poll_result(*key, cx.waker()) {
            None => Poll::Pending,
            Some(res) => {
                let State::Submitted { data, .. } = std::mem::replace(&mut this.state, State::Done)
                else {
                    unreachable!()
                };
                Poll::Ready(data.complete(res))
            }
        }
    }
}

impl<T: Operation> Op<T> {
    /// The first poll: register, push, and apply the batching policy.
    fn start(&mut self, data: T, cx: &mut Context<'_>) -> Poll<T::Output> {
        let shared = match current_driver() {
            Ok(s) => s,
            Err(e) => return Poll::Ready(data.fail(e)),
        };
        let waiter = Waiter::of(cx.waker(), shared.exec());
        match submit(shared, data, waiter) {
            Ok(state) => {
                self.state = state;
                let State::Submitted { shared, seq, .. } = &self.state else {
                    unreachable!()
                };
                // Batching: if another coroutine is ready, let it run first (it may
                // add its own SQE) and flush when we are polled again; if nobody
                // is, this CPU would go idle: flush now.
                if shared.unsubmitted(*seq) {
                    if shared.exec().ready_bitmap().is_empty() {
                        shared.flush();
                    } else {
                        shared.stats.deferred.fetch_add(1, Ordering::Relaxed);
                        cx.waker().wake_by_ref();
                    }
                }
                Poll::Pending
            }
            Err((Err(e), data)) => Poll::Ready(data.fail(e)),
            Err((Ok(_), data)) => {
                // SQ full even after a flush: try again after others ran.
                self.state = State::Init(data);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

impl<T: Operation> Drop for Op<T> {
    fn drop(&mut self) {
        if let State::Submitted {
            shared, key, data, ..
        } = std::mem::replace(&mut self.state, State::Done)
        {
            shared.abandon(key, Box::new(data));
        }
    }
}

/// The result of an operation submitted with the paper's asynchronous form
/// (`read!(fd, buf, cid)`): the operation is already with the kernel; its
/// completion wakes the named coroutine; awaiting the handle gives the output
/// (and from then on wakes whoever awaits it).
///
/// Dropping the handle cancels the operation (its buffer passes to the driver
/// until the kernel lets go of it).
#[must_use = "dropping the handle cancels the operation"]
pub struct Submitted<O> {
    inner: Result<Pin<Box<dyn Future<Output = O> + Send>>, Option<O>>,
}

impl<O> std::fmt::Debug for Submitted<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submitted")
            .field("submitted", &self.inner.is_ok())
            .finish()
    }
}

impl<O: Send + 'static> Submitted<O> {
    pub(crate) fn new<T: Operation<Output = O>>(op: Result<Op<T>, O>) -> Self {
        Submitted {
            inner: match op {
                Ok(op) => Ok(Box::pin(op)),
                Err(out) => Err(Some(out)),
            },
        }
    }
}

// The output is only ever moved out, never pinned.
impl<O> Unpin for Submitted<O> {}

impl<O> Future for Submitted<O> {
    type Output = O;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<O> {
        match &mut self.get_mut().inner {
            Ok(fut) => fut.as_mut().poll(cx),
            Err(out) => Poll::Ready(out.take().expect("Submitted polled after it completed")),
        }
    }
}
