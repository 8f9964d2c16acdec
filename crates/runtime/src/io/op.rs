//! The future of one io_uring operation: submission with batching, wake-up by
//! cid, and hand-over of its memory to the driver when dropped in flight.
//!
//! ```text
//!   Init(data) ──first poll: register slot, push SQE──► Submitted { key, seq, data }
//!                                                           │ poll: flush if still queued,
//!                                                           │       then take the result
//!                                                           ▼
//!                                     Ready(data.complete(result)) ──► Done
//!   drop while Submitted: data ──► its ring (Abandoned slot) + ASYNC_CANCEL
//!                         (submitted at once on the ring's owner; from another
//!                         thread, through the ring's remote queue)
//!
//! An op lives on the ring of the worker that polls it first: that worker
//! registers it, pushes its SQE, and later reaps its completion, wherever the
//! coroutine runs meanwhile.
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use io_uring::squeue;

use super::driver::{current_local, local_of, Local, Orphan, Push, Ring, Waiter};

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

    /// The ring the operation is about to go to (before [`Operation::sqe`]):
    /// an operation that needs something of the ring (its receive pool) takes
    /// it here; `false` means it cannot go to this ring, and it is failed with
    /// `ENOBUFS` instead (never submitted).
    fn attach(&mut self, _ring: &Ring) -> bool {
        true
    }

    /// Whether the SQE takes a buffer of the ring's pool (`BUFFER_SELECT`).
    fn selects_buffer(&self) -> bool {
        false
    }

    /// The kernel's result: a value ≥ 0, or `-errno`.
    fn complete(self, result: i32) -> Self::Output;

    /// The kernel's result, which nobody will take (the future was dropped
    /// after the completion, or while the kernel held the operation and the
    /// cancellation came too late): releases whatever the result hands over.
    /// By default there is nothing but the operation's memory.
    fn release(self, _result: i32)
    where
        Self: Sized,
    {
    }

    /// The kernel's result and the completion's flags (a provided buffer's id);
    /// by default, [`Operation::complete`].
    fn complete_with(self, result: i32, _flags: u32) -> Self::Output
    where
        Self: Sized,
    {
        self.complete(result)
    }

    /// The operation could not be submitted at all.
    fn fail(self, error: io::Error) -> Self::Output;
}

enum State<T> {
    Init(T),
    Submitted {
        /// The ring of the worker that first polled the op (it stays there).
        ring: Arc<Ring>,
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

/// Submits on the calling worker's ring: `Ok(state)` when pushed, `Err(data)`
/// when the SQ is full.
fn submit<T: Operation>(
    local: &Local,
    mut data: T,
    waiter: Waiter,
) -> Result<State<T>, (io::Result<()>, T)> {
    let ring = local.ring();
    if !data.attach(ring) {
        return Err((Err(io::Error::from_raw_os_error(libc::ENOBUFS)), data));
    }
    let key = match ring.register(waiter, data.selects_buffer()) {
        Ok(key) => key,
        Err(e) => return Err((Err(e), data)),
    };
    let sqe = data.sqe().user_data(key);
    // SAFETY: the SQE points into heap memory owned by `data` (the `Operation`
    // contract). From here `data` lives in `State::Submitted` until the result is
    // taken (after the completion), or moves into the ring's abandoned slot when
    // the future is dropped, which frees it only after the completion.
    match unsafe { local.push(&sqe) } {
        Push::Queued(seq) => Ok(State::Submitted {
            data: {
                data.submitted();
                data
            },
            ring: ring.clone(),
            key,
            seq,
        }),
        Push::Full => {
            ring.unregister(key);
            Err((Ok(()), data))
        }
    }
}

/// For a re-poll of an operation whose SQE (number `seq`) may still wait in
/// `ring`'s queue: submits it if this thread owns the ring. `false` means the
/// kernel refused the batch for now (EBUSY/EAGAIN): the caller returns
/// `Pending`, woken to retry. On another thread it cannot submit; the owner
/// does at its next run (it pushed the SQE and runs its ring within a few
/// polls or when it idles), and the completion wakes the caller.
pub(crate) fn flush_unsubmitted(ring: &Arc<Ring>, seq: u64, cx: &Context<'_>) -> bool {
    if ring.unsubmitted(seq) {
        if let Some(local) = local_of(ring) {
            local.flush();
            if ring.unsubmitted(seq) {
                cx.waker().wake_by_ref();
                return false;
            }
        }
    }
    true
}

impl<T: Operation> Op<T> {
    /// An operation submitted on its first poll.
    pub(crate) fn new(data: T) -> Self {
        Op {
            state: State::Init(data),
        }
    }

    /// An operation submitted now, on the calling worker's ring, whose completion
    /// wakes `waiter` until the future is polled (the paper's asynchronous form).
    /// Returns the output at once if it cannot be submitted.
    pub(crate) fn submit_now(data: T, waiter: Waiter) -> Result<Self, T::Output> {
        let local = match current_local() {
            Ok(l) => l,
            Err(e) => return Err(data.fail(e)),
        };
        match submit(&local, data, waiter) {
            Ok(state) => {
                local.flush();
                Ok(Op { state })
            }
            Err((Err(e), data)) => Err(data.fail(e)),
            Err((Ok(()), data)) => Err(data.fail(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the io_uring submission queue is full; retry, or raise io::Config::entries",
            ))),
        }
    }

    /// Submits the operation's SQE now if it is still queued (for a caller that
    /// will not poll the op again soon, so cannot take part in batching). On
    /// another thread than the ring's owner this cannot submit; the owner does at
    /// its next run.
    pub(crate) fn submit_queued(&self) {
        if let State::Submitted { ring, seq, .. } = &self.state {
            if ring.unsubmitted(*seq) {
                if let Some(local) = local_of(ring) {
                    local.flush();
                }
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
        // Submitted: the data stays in place (and so with the ring on a panic)
        // until the result is taken.
        let State::Submitted { ring, key, seq, .. } = &this.state else {
            panic!("an io operation polled after it completed");
        };
        if !flush_unsubmitted(ring, *seq, cx) {
            return Poll::Pending;
        }
        match ring.poll_result(*key, cx.waker()) {
            None => Poll::Pending,
            Some((res, flags)) => {
                let State::Submitted { data, .. } = std::mem::replace(&mut this.state, State::Done)
                else {
                    unreachable!()
                };
                Poll::Ready(data.complete_with(res, flags))
            }
        }
    }
}

impl<T: Operation> Op<T> {
    /// The first poll: register, push, and apply the batching policy.
    fn start(&mut self, data: T, cx: &mut Context<'_>) -> Poll<T::Output> {
        let local = match current_local() {
            Ok(l) => l,
            Err(e) => return Poll::Ready(data.fail(e)),
        };
        // Batching: if another coroutine is ready, let it run first (it may add
        // its own SQE): this worker submits the batch within a few polls
        // (`reap_now_and_then`) or as it idles, whichever comes first, and the
        // completion wakes us. If nobody is ready, this CPU would go idle:
        // submit now. (An earlier version woke itself to flush when polled
        // again: a ready coroutine that only its own worker could serve, for
        // which another worker was unparked in vain — one eventfd write per
        // request in the kcuc server.)
        let at_once = local.ring().exec().ready_bitmap().is_empty();
        // Submitting now, this poll takes a completion that comes back during
        // the submission itself (a send into a socket with room): nobody is
        // woken for it (`Waiter::Unset`), and the coroutine goes on without a
        // second poll.
        let waiter = if at_once {
            Waiter::Unset
        } else {
            Waiter::of(cx.waker(), local.ring().exec())
        };
        match submit(&local, data, waiter) {
            Ok(state) => {
                self.state = state;
                let State::Submitted { ring, key, seq, .. } = &self.state else {
                    unreachable!()
                };
                if !at_once {
                    if ring.unsubmitted(*seq) {
                        ring.stats().deferred.fetch_add(1, Ordering::Relaxed);
                    }
                    return Poll::Pending;
                }
                if ring.unsubmitted(*seq) {
                    local.flush();
                }
                // The result if it came back already; else the waiter is named
                // now, before `Pending` (only this thread reaps this ring).
                match ring.poll_result(*key, cx.waker()) {
                    None => Poll::Pending,
                    Some((res, flags)) => {
                        ring.stats().inline.fetch_add(1, Ordering::Relaxed);
                        let State::Submitted { data, .. } =
                            std::mem::replace(&mut self.state, State::Done)
                        else {
                            unreachable!()
                        };
                        Poll::Ready(data.complete_with(res, flags))
                    }
                }
            }
            Err((Err(e), data)) => Poll::Ready(data.fail(e)),
            Err((Ok(()), data)) => {
                // SQ full even after a flush: try again after others ran.
                self.state = State::Init(data);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

impl<T: Operation> Orphan for T {
    fn release(self: Box<Self>, result: i32) {
        Operation::release(*self, result);
    }
}

impl<T: Operation> Drop for Op<T> {
    fn drop(&mut self) {
        if let State::Submitted {
            ring, key, data, ..
        } = std::mem::replace(&mut self.state, State::Done)
        {
            ring.abandon(key, Box::new(data));
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
