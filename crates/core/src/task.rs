//! The coroutine control block (paper §2.1, Listing 1) and its `Waker`.
//!
//! ```text
//!  Arc<Task<P, F>> ─┬─ header   { vtable, cid, kind }   immutable; first, so a Waker's
//!   (one allocation)│                                    data pointer is a header pointer
//!                   ├─ state    AtomicU32                the state word (see `state`)
//!                   ├─ priority AtomicU8                 written under the ready lock
//!                   ├─ links    prev/next/level          ready-queue links, ready lock only
//!                   ├─ shared   Arc<Shared<P>>           the executor it belongs to
//!                   └─ future   F, inline                owned per the state word
//! ```
//!
//! The executor handles every coroutine as `Arc<DynTask<P>>` (the future type
//! erased to `dyn Future`), so spawning costs one allocation, with the future
//! inline in the control block.
//!
//! The paper's control block holds `future` and `waker: Arc<Waker>` side by side.
//! Here the `Waker` *is* a counted reference to the block itself (one atomic
//! increment to clone, no allocation), so every `Waker` handed to the ecosystem's
//! futures wakes through exactly the same state transition as
//! [`Executor::wake`](crate::Executor::wake) does by cid.
//!
//! During a poll the coroutine sees a **poll-scoped waker** instead: it points at a
//! flag on the poller's stack, so a coroutine that wakes itself (a yield, or a
//! future that finds it can make progress) costs one plain store instead of a
//! compare-and-swap on the shared state word. Cloning it yields an ordinary
//! counted `Waker`. The borrow of a poll-scoped waker cannot outlive the poll, so
//! whoever uses it — even a scoped thread — does so before the poll returns and
//! the poller reads the flag.
//!
//! References: the registry (blocking set) holds one for every live coroutine, a
//! ready queue holds one while the coroutine is queued, a poller holds one while it
//! polls, and every `Waker` holds one.

use alloc::sync::Arc;
use core::future::Future;
use core::mem::ManuallyDrop;
use core::pin::Pin;
use core::ptr::{self, NonNull};
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use ss_abi::{CoroutineId, CoroutineKind, Priority};

use crate::executor::Shared;
use crate::platform::Platform;
use crate::sync::{AtomicBool, AtomicU32, AtomicU8, Ordering, UnsafeCell};

/// A coroutine's control block with its future type erased.
pub(crate) type DynTask<P> = Task<P, dyn Future<Output = ()> + Send + 'static>;

/// The part of the control block that does not depend on the platform or the
/// future: what a `Waker` needs to find its way back, and the id.
#[repr(C)]
pub(crate) struct Header {
    vtable: &'static TaskVTable,
    pub(crate) cid: CoroutineId,
    pub(crate) kind: CoroutineKind,
    /// The address of the owning executor's shared state: tells whose coroutine
    /// a waker belongs to (ids are only unique within one executor).
    pub(crate) owner: usize,
}

/// Per-(platform, future type) operations behind the one, type-independent
/// [`RawWakerVTable`]. Each takes the thin data pointer of an `Arc<Task<P, F>>`.
struct TaskVTable {
    clone: unsafe fn(*const ()),
    wake: unsafe fn(*const ()),
    wake_by_ref: unsafe fn(*const ()),
    drop: unsafe fn(*const ()),
    more_important_ready: unsafe fn(*const ()) -> bool,
}

/// Ready-queue links; read and written only with the executor's ready lock held.
pub(crate) struct Links<P: Platform> {
    pub(crate) prev: Option<NonNull<DynTask<P>>>,
    pub(crate) next: Option<NonNull<DynTask<P>>>,
    /// The level whose queue holds this coroutine, or [`NOT_QUEUED`].
    pub(crate) level: u8,
}

/// `Links::level` of a coroutine in no queue.
pub(crate) const NOT_QUEUED: u8 = u8::MAX;

/// The coroutine control block.
#[repr(C)]
pub(crate) struct Task<P: Platform, F: ?Sized> {
    pub(crate) header: Header,
    pub(crate) state: AtomicU32,
    pub(crate) priority: AtomicU8,
    /// Whether `future` still needs dropping; changed only by the future's owner.
    ///
    /// This cell and `future` are `core`'s, not loom's, even under loom: the last
    /// reference's `Drop` reads them after `std::sync::Arc`'s final decrement, an
    /// ordering loom cannot see. The loom models check exclusive polling through a
    /// tracked cell inside their test futures instead.
    future_live: core::cell::UnsafeCell<bool>,
    pub(crate) links: UnsafeCell<Links<P>>,
    pub(crate) shared: Arc<Shared<P>>,
    future: core::cell::UnsafeCell<ManuallyDrop<F>>,
}

// SAFETY: `Task` is shared between CPUs through `Arc`. Its plain fields are
// immutable after publication (`header`, `shared`) or atomic. The cells are
// guarded: `links` is touched only with the executor's ready lock held (see
// `queue`), and `future`/`future_live` only by the party the state word names as
// owner (see `state`), which is unique at any time and hands over with
// Acquire/Release (or through the ready lock). The future is `Send`, so moving its
// use between CPUs is allowed; it is never used from two at once, which is why
// `Sync` is sound although the future need not be `Sync`.
unsafe impl<P: Platform, F: ?Sized + Send> Sync for Task<P, F> {}
// SAFETY: as above; every field may move to another thread (the raw pointers in
// `links` are owned queue references, managed under the ready lock).
unsafe impl<P: Platform, F: ?Sized + Send> Send for Task<P, F> {}

impl<P: Platform, F: Future<Output = ()> + Send + 'static> Task<P, F> {
    const VTABLE: &'static TaskVTable = &TaskVTable {
        clone: Self::raw_clone,
        wake: Self::raw_wake,
        wake_by_ref: Self::raw_wake_by_ref,
        drop: Self::raw_drop,
        more_important_ready: Self::raw_more_important_ready,
    };

    /// A new control block, in one allocation, with the id still unset (the
    /// registry writes it before anyone else sees the block).
    pub(crate) fn new_arc(
        future: F,
        kind: CoroutineKind,
        priority: Priority,
        state: u32,
        shared: Arc<Shared<P>>,
    ) -> Arc<DynTask<P>> {
        Arc::new(Task {
            header: Header {
                vtable: Self::VTABLE,
                cid: CoroutineId::from_raw(0),
                kind,
                owner: Arc::as_ptr(&shared) as usize,
            },
            state: AtomicU32::new(state),
            priority: AtomicU8::new(priority.level()),
            future_live: core::cell::UnsafeCell::new(true),
            links: UnsafeCell::new(Links {
                prev: None,
                next: None,
                level: NOT_QUEUED,
            }),
            shared,
            future: core::cell::UnsafeCell::new(ManuallyDrop::new(future)),
        })
    }

    /// # Safety
    /// `p` is the data pointer of a live `Arc<Task<P, F>>`.
    unsafe fn raw_clone(p: *const ()) {
        // SAFETY: per the contract.
        unsafe { Arc::increment_strong_count(p.cast::<Self>()) }
    }

    /// # Safety
    /// `p` is a counted reference (from a clone), consumed here.
    unsafe fn raw_wake(p: *const ()) {
        // SAFETY: per the contract, we own one count, which `from_raw` takes back;
        // the allocation was made as `Arc<Task<P, F>>`.
        let task: Arc<DynTask<P>> = unsafe { Arc::from_raw(p.cast::<Self>()) };
        Shared::wake_task(task);
    }

    /// # Safety
    /// As `raw_clone`.
    unsafe fn raw_wake_by_ref(p: *const ()) {
        // SAFETY: the caller's reference keeps the task alive; `ManuallyDrop` stops
        // us from giving back a count we do not own.
        let task = ManuallyDrop::<Arc<DynTask<P>>>::new(unsafe { Arc::from_raw(p.cast::<Self>()) });
        Shared::wake_task_ref(&task);
    }

    /// # Safety
    /// As `raw_clone`.
    unsafe fn raw_more_important_ready(p: *const ()) -> bool {
        // SAFETY: per the contract, `p` points at a live `Task<P, F>`.
        let task = unsafe { &*p.cast::<Self>() };
        task.shared.more_important_ready(task.priority())
    }

    /// # Safety
    /// As `raw_wake`.
    unsafe fn raw_drop(p: *const ()) {
        // SAFETY: per the contract, we own one count, given back here.
        unsafe { Arc::decrement_strong_count(p.cast::<Self>()) }
    }
}

impl<P: Platform, F: ?Sized + Future<Output = ()>> Task<P, F> {
    #[inline]
    pub(crate) fn cid(&self) -> CoroutineId {
        self.header.cid
    }

    #[inline]
    pub(crate) fn priority(&self) -> Priority {
        // Only ever stored from a checked `Priority`.
        Priority::new(self.priority.load(Ordering::Relaxed)).unwrap_or(Priority::MOST_IMPORTANT)
    }

    /// Polls the future with `cx`.
    ///
    /// # Safety
    /// The caller owns the future per the state word (it holds `RUNNING`), and the
    /// future has not been dropped.
    #[inline]
    pub(crate) unsafe fn poll_future(&self, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: the caller owns the live future, so this is the only access; it
        // lives inside an `Arc` allocation and never moves, so pinning it is sound.
        let fut = unsafe { Pin::new_unchecked(&mut **self.future.get()) };
        fut.poll(cx)
    }

    /// Drops the future, once (on exit). Call it outside every lock: the future's
    /// destructor may wake or spawn.
    ///
    /// # Safety
    /// The caller owns the future per the state word (it is `RUNNING` by the
    /// caller, or the caller moved the word to `DONE` from a state where no one
    /// else owned it).
    #[inline]
    pub(crate) unsafe fn drop_future(&self) {
        // SAFETY: the caller owns the future and its flag.
        let live = unsafe { core::mem::replace(&mut *self.future_live.get(), false) };
        if live {
            // Cleared first: should the destructor panic, the future is leaked
            // rather than dropped twice.
            // SAFETY: live, owned by us, never touched again.
            unsafe { ManuallyDrop::drop(&mut *self.future.get()) };
        }
    }
}

impl<P: Platform, F: ?Sized> Drop for Task<P, F> {
    fn drop(&mut self) {
        // The last reference is gone, so nobody else can own the future. It is
        // normally dropped on exit already; this is the net for a coroutine whose
        // exit never ran (a waker pushing into a shut-down executor).
        if *self.future_live.get_mut() {
            // SAFETY: exclusive access (`&mut self`), and the future was not
            // dropped yet.
            unsafe { ManuallyDrop::drop(self.future.get_mut()) };
        }
    }
}

/// The poll-scoped waker's target: lives on the poller's stack for one poll.
#[repr(C)]
pub(crate) struct PollScope {
    /// The thin data pointer of the task being polled.
    task: *const (),
    /// Set when the coroutine woke itself during this poll.
    woken: AtomicBool,
}

impl PollScope {
    #[inline]
    pub(crate) fn new<P: Platform>(task: &Arc<DynTask<P>>) -> Self {
        PollScope {
            task: Arc::as_ptr(task).cast::<()>(),
            woken: AtomicBool::new(false),
        }
    }

    /// A waker for the poll, borrowing this scope (see the module docs).
    #[inline]
    pub(crate) fn waker(&self) -> ManuallyDrop<Waker> {
        let data = (self as *const PollScope).cast::<()>();
        // SAFETY: `data` points at this `PollScope`, as `POLL_WAKER_VTABLE`
        // requires; the returned waker is used only by the poll, which borrows the
        // scope and ends before it; `ManuallyDrop` means its drop never runs.
        ManuallyDrop::new(unsafe { Waker::from_raw(RawWaker::new(data, &POLL_WAKER_VTABLE)) })
    }

    /// Whether the coroutine woke itself during the poll.
    #[inline]
    pub(crate) fn woken(&self) -> bool {
        self.woken.load(Ordering::Relaxed)
    }
}

static WAKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(waker_clone, waker_wake, waker_wake_by_ref, waker_drop);

static POLL_WAKER_VTABLE: RawWakerVTable = RawWakerVTable::new(
    poll_waker_clone,
    poll_waker_wake_by_ref,
    poll_waker_wake_by_ref,
    poll_waker_drop,
);

/// # Safety
/// `p` is a task data pointer paired with `WAKER_VTABLE`: a live `Task<P, F>`
/// with a `Header` at offset 0.
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

/// # Safety
/// `p` points at a live `PollScope` (only ever paired with `POLL_WAKER_VTABLE`).
unsafe fn scope<'a>(p: *const ()) -> &'a PollScope {
    // SAFETY: see above.
    unsafe { &*p.cast::<PollScope>() }
}

unsafe fn poll_waker_clone(p: *const ()) -> RawWaker {
    // SAFETY: `p` is a live scope whose task the poller keeps alive; a clone is an
    // ordinary counted waker of that task.
    let task = unsafe { scope(p) }.task;
    // SAFETY: `task` is a live task data pointer.
    unsafe { (header(task).vtable.clone)(task) };
    RawWaker::new(task, &WAKER_VTABLE)
}

unsafe fn poll_waker_wake_by_ref(p: *const ()) {
    // SAFETY: `p` is a live scope. A poll-scoped waker is never owned (it is
    // handed out as `&Waker` only), so `wake` by value can only come through
    // `wake_by_ref`'s path as well.
    unsafe { scope(p) }.woken.store(true, Ordering::Relaxed);
}

unsafe fn poll_waker_drop(_: *const ()) {}

/// The header behind a waker of ours, of either kind.
pub(crate) fn header_of(waker: &Waker) -> Option<&Header> {
    if ptr::eq(waker.vtable(), &WAKER_VTABLE) {
        // SAFETY: only `Task` code pairs `WAKER_VTABLE` with a data pointer,
        // always a live task with its header at offset 0, kept alive by the waker.
        Some(unsafe { header(waker.data()) })
    } else if ptr::eq(waker.vtable(), &POLL_WAKER_VTABLE) {
        // SAFETY: as above for a scope, whose task the poller keeps alive for as
        // long as the borrowed waker can be used.
        Some(unsafe { header(scope(waker.data()).task) })
    } else {
        None
    }
}

/// The id of the coroutine a `Waker` belongs to, if it is a SharedScheduler
/// coroutine's waker (of any executor, on any platform).
///
/// Inside a coroutine, `cid_of(cx.waker())` is the paper's `getcid()` with no
/// thread-local state: the answer comes from the context the executor passed in.
/// A combinator that polls its children with a waker of its own hides the id;
/// [`Poller::current`](crate::Poller::current) still knows it then.
pub fn cid_of(waker: &Waker) -> Option<CoroutineId> {
    header_of(waker).map(|h| h.cid)
}

/// Whether a coroutine more important than the one `waker` belongs to is ready
/// in that coroutine's executor — the question a long-running coroutine asks to
/// give way early (a cooperative budget that yields as soon as it matters). One
/// indirect call and two loads; `None` for a waker that is not a SharedScheduler
/// coroutine's.
pub fn more_important_ready(waker: &Waker) -> Option<bool> {
    let task = if ptr::eq(waker.vtable(), &WAKER_VTABLE) {
        waker.data()
    } else if ptr::eq(waker.vtable(), &POLL_WAKER_VTABLE) {
        // SAFETY: a poll-scoped waker's data is a live scope (see `header_of`).
        unsafe { scope(waker.data()) }.task
    } else {
        return None;
    };
    // SAFETY: `task` is a live task data pointer with its header at offset 0 (as
    // in `header_of`), and the vtable function is the one made for its type.
    Some(unsafe { (header(task).vtable.more_important_ready)(task) })
}

/// The kind of the coroutine a `Waker` belongs to, as [`cid_of`].
pub fn kind_of(waker: &Waker) -> Option<CoroutineKind> {
    header_of(waker).map(|h| h.kind)
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
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(cid_of(cx.waker()))
    }
}

/// Gives way: the coroutine goes back to its ready queue, behind every ready
/// coroutine of its priority and ahead of every less important one, and resumes
/// when picked again.
///
/// Works in any executor (it wakes itself through its context's `Waker`); in a
/// SharedScheduler executor the self-wake costs one plain store.
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// The future returned by [`yield_now`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
