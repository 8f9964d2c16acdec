//! The coroutine control block (paper §2.1, Listing 1) and its `Waker`.
//!
//! ```text
//!  Arc<Task<P>> ─┬─ header   { vtable, cid, kind }   immutable; first, so a Waker's
//!                │                                    data pointer is a header pointer
//!                ├─ state    AtomicU32                the state word (see `state`)
//!                ├─ priority AtomicU8                 written under the ready lock
//!                ├─ links    prev/next/level          ready-queue links, ready lock only
//!                ├─ future   Option<Pin<Box<dyn Future>>>  owned per the state word
//!                └─ shared   Arc<Shared<P>>           the executor it belongs to
//! ```
//!
//! The paper's control block holds `future` and `waker: Arc<Waker>` side by side.
//! Here the `Waker` *is* a counted reference to the block itself (one atomic
//! increment to clone, no allocation), so every `Waker` handed to the ecosystem's
//! futures wakes through exactly the same state transition as
//! [`Executor::wake`](crate::Executor::wake) does by cid.
//!
//! References: the registry (blocking set) holds one for every live coroutine, a
//! ready queue holds one while the coroutine is queued, a poller holds one while it
//! polls, and every `Waker` holds one.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::future::Future;
use core::mem::ManuallyDrop;
use core::pin::Pin;
use core::ptr;
use core::task::{RawWaker, RawWakerVTable, Waker};

use ss_abi::{CoroutineId, CoroutineKind, Priority};

use crate::executor::Shared;
use crate::platform::Platform;
use crate::sync::{AtomicU32, AtomicU8, Ordering, UnsafeCell};

/// The future a coroutine runs, boxed and type-erased.
pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The part of the control block that does not depend on the platform: what a
/// `Waker` needs to find its way back, and the id.
#[repr(C)]
pub(crate) struct Header {
    vtable: &'static TaskVTable,
    pub(crate) cid: CoroutineId,
    pub(crate) kind: CoroutineKind,
}

/// Per-platform operations behind the one, platform-independent
/// [`RawWakerVTable`]. Each takes a pointer obtained from `Arc::<Task<P>>::into_raw`
/// or `Arc::as_ptr`.
struct TaskVTable {
    clone: unsafe fn(*const ()),
    wake: unsafe fn(*const ()),
    wake_by_ref: unsafe fn(*const ()),
    drop: unsafe fn(*const ()),
}

/// Ready-queue links; read and written only with the executor's ready lock held.
pub(crate) struct Links<P: Platform> {
    pub(crate) prev: *const Task<P>,
    pub(crate) next: *const Task<P>,
    /// The level whose queue holds this coroutine, or [`Links::NOT_QUEUED`].
    pub(crate) level: u8,
}

impl<P: Platform> Links<P> {
    pub(crate) const NOT_QUEUED: u8 = u8::MAX;
}

/// The coroutine control block.
#[repr(C)]
pub(crate) struct Task<P: Platform> {
    pub(crate) header: Header,
    pub(crate) state: AtomicU32,
    pub(crate) priority: AtomicU8,
    pub(crate) links: UnsafeCell<Links<P>>,
    future: UnsafeCell<Option<BoxFuture>>,
    pub(crate) shared: Arc<Shared<P>>,
}

// SAFETY: `Task` is shared between CPUs through `Arc`. Its plain fields are
// immutable after publication (`header`) or atomic. The two cells are guarded:
// `links` is touched only with the executor's ready lock held (see `queue`), and
// `future` only by the party the state word names as owner (see `state`), which
// is unique at any time and hands over with Acquire/Release. The future is `Send`,
// so moving its use between CPUs is allowed; it is never used from two at once,
// which is why `Sync` is sound although the future need not be `Sync`.
unsafe impl<P: Platform> Sync for Task<P> {}
// SAFETY: as above; every field may move to another thread (the raw pointers in
// `links` are owned queue references, managed under the ready lock).
unsafe impl<P: Platform> Send for Task<P> {}

impl<P: Platform> Task<P> {
    const VTABLE: &'static TaskVTable = &TaskVTable {
        clone: Self::raw_clone,
        wake: Self::raw_wake,
        wake_by_ref: Self::raw_wake_by_ref,
        drop: Self::raw_drop,
    };

    pub(crate) fn new(
        future: BoxFuture,
        kind: CoroutineKind,
        priority: Priority,
        state: u32,
        shared: Arc<Shared<P>>,
    ) -> Self {
        Task {
            header: Header {
                vtable: Self::VTABLE,
                cid: CoroutineId::from_raw(0),
                kind,
            },
            state: AtomicU32::new(state),
            priority: AtomicU8::new(priority.level()),
            links: UnsafeCell::new(Links {
                prev: ptr::null(),
                next: ptr::null(),
                level: Links::<P>::NOT_QUEUED,
            }),
            future: UnsafeCell::new(Some(future)),
            shared,
        }
    }

    #[inline]
    pub(crate) fn cid(&self) -> CoroutineId {
        self.header.cid
    }

    #[inline]
    pub(crate) fn priority(&self) -> Priority {
        // Only ever stored from a checked `Priority`.
        Priority::new(self.priority.load(Ordering::Relaxed)).unwrap_or(Priority::MOST_IMPORTANT)
    }

    /// Polls the future.
    ///
    /// # Safety
    /// The caller owns the future per the state word (it set `RUNNING`).
    #[inline]
    pub(crate) unsafe fn poll_future(
        &self,
        cx: &mut core::task::Context<'_>,
    ) -> core::task::Poll<()> {
        self.future.with_mut(|f| {
            // SAFETY: the caller owns the future, so this is the only access.
            match unsafe { &mut *f } {
                Some(fut) => fut.as_mut().poll(cx),
                // Taken only on exit, after which nobody polls.
                None => core::task::Poll::Ready(()),
            }
        })
    }

    /// Takes the future out, to drop it (outside any lock) on exit.
    ///
    /// # Safety
    /// The caller owns the future per the state word (it is `RUNNING`, or it moved
    /// the word to `DONE` from a state where no one else owned it).
    #[inline]
    pub(crate) unsafe fn take_future(&self) -> Option<BoxFuture> {
        // SAFETY: the caller owns the future, so this is the only access.
        self.future.with_mut(|f| unsafe { (*f).take() })
    }

    /// A `Waker` for this coroutine that borrows the caller's reference instead of
    /// counting its own: no atomic operation to make or drop it.
    #[inline]
    pub(crate) fn waker_ref(self: &Arc<Self>) -> ManuallyDrop<Waker> {
        let data = Arc::as_ptr(self).cast::<()>();
        // SAFETY: `data` points at a live `Task<P>` whose header sits at offset 0
        // (`repr(C)`), as `WAKER_VTABLE` requires. The `ManuallyDrop` never runs the
        // vtable's drop, so this borrowed waker gives back no count it did not take;
        // clones of it take their own count through `raw_clone`. It lives no longer
        // than the caller's `&Arc`, which keeps the task alive.
        ManuallyDrop::new(unsafe { Waker::from_raw(RawWaker::new(data, &WAKER_VTABLE)) })
    }

    /// # Safety
    /// `p` came from `Arc::<Task<P>>::into_raw` or `as_ptr` and the task is alive.
    unsafe fn raw_clone(p: *const ()) {
        // SAFETY: per the contract, `p` is a live `Arc<Task<P>>` pointer.
        unsafe { Arc::increment_strong_count(p.cast::<Self>()) }
    }

    /// # Safety
    /// `p` is a counted reference (from `into_raw` or a clone), consumed here.
    unsafe fn raw_wake(p: *const ()) {
        // SAFETY: per the contract, we own one count, which `from_raw` takes back.
        let task = unsafe { Arc::from_raw(p.cast::<Self>()) };
        Shared::wake_task(task);
    }

    /// # Safety
    /// As `raw_clone`.
    unsafe fn raw_wake_by_ref(p: *const ()) {
        // SAFETY: the caller's reference keeps the task alive; `ManuallyDrop` stops
        // us from giving back a count we do not own.
        let task = ManuallyDrop::new(unsafe { Arc::from_raw(p.cast::<Self>()) });
        Shared::wake_task_ref(&task);
    }

    /// # Safety
    /// As `raw_wake`.
    unsafe fn raw_drop(p: *const ()) {
        // SAFETY: per the contract, we own one count, given back here.
        unsafe { Arc::decrement_strong_count(p.cast::<Self>()) }
    }
}

static WAKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(waker_clone, waker_wake, waker_wake_by_ref, waker_drop);

/// # Safety
/// For the four functions below: `p` is a waker data pointer made by
/// `Task::waker`/`waker_ref`, hence a live `Task<P>` with a `Header` at offset 0.
unsafe fn header<'a>(p: *const ()) -> &'a Header {
    // SAFETY: see above; the header is immutable after publication.
    unsafe { &*p.cast::<Header>() }
}

unsafe fn waker_clone(p: *const ()) -> RawWaker {
    // SAFETY: `p` is one of ours (only ever paired with `WAKER_VTABLE`).
    unsafe { (header(p).vtable.clone)(p) };
    RawWaker::new(p, &WAKER_VTABLE)
}

unsafe fn waker_wake(p: *const ()) {
    // SAFETY: as in `waker_clone`; the count the waker held passes to `wake`.
    unsafe { (header(p).vtable.wake)(p) }
}

unsafe fn waker_wake_by_ref(p: *const ()) {
    // SAFETY: as in `waker_clone`.
    unsafe { (header(p).vtable.wake_by_ref)(p) }
}

unsafe fn waker_drop(p: *const ()) {
    // SAFETY: as in `waker_clone`; the count the waker held is given back.
    unsafe { (header(p).vtable.drop)(p) }
}

/// The id of the coroutine a `Waker` belongs to, if it is a SharedScheduler
/// coroutine's waker (of any executor, on any platform).
///
/// Inside a coroutine, `cid_of(cx.waker())` is the paper's `getcid()` with no
/// thread-local state: the answer comes from the context the executor passed in.
/// A combinator that polls its children with a waker of its own hides the id;
/// [`Poller::current`](crate::Poller::current) still knows it then.
pub fn cid_of(waker: &Waker) -> Option<CoroutineId> {
    if ptr::eq(waker.vtable(), &WAKER_VTABLE) {
        // SAFETY: only `Task::waker`/`waker_ref` pair `WAKER_VTABLE` with a data
        // pointer, always a live task with its header at offset 0.
        Some(unsafe { header(waker.data()) }.cid)
    } else {
        None
    }
}

/// The kind of the coroutine a `Waker` belongs to, as [`cid_of`].
pub fn kind_of(waker: &Waker) -> Option<CoroutineKind> {
    if ptr::eq(waker.vtable(), &WAKER_VTABLE) {
        // SAFETY: as in `cid_of`.
        Some(unsafe { header(waker.data()) }.kind)
    } else {
        None
    }
}

/// A future that resolves at once to the current coroutine's id: `getcid()` in
/// `async` form. `None` outside a SharedScheduler coroutine (see [`cid_of`]).
pub fn current_cid() -> CurrentCid {
    CurrentCid(())
}

/// The future returned by [`current_cid`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct CurrentCid(());

impl Future for CurrentCid {
    type Output = Option<CoroutineId>;
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut core::task::Context<'_>,
    ) -> core::task::Poll<Self::Output> {
        core::task::Poll::Ready(cid_of(cx.waker()))
    }
}
