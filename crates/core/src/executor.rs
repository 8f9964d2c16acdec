//! The Executor (paper §2.1.2) and the pollers that lend it CPUs (§2.2).
//!
//! # Structure
//!
//! ```text
//!  Executor ──► Shared ─┬─ ready lock ──► ReadyQueues: level 0 ⇄ ⇄ ⇄
//!  (owner handle)       │                              level 1 ⇄
//!                       │                              …  (intrusive lists: hot, then FIFO)
//!  Poller (a CPU) ──►   │                 sleepers, closed
//!  Poller (a CPU) ──►   ├─ bitmap: AtomicU64   non-empty levels; lock-free to read
//!                       ├─ registry lock ──► Registry: cid → Task (the blocking set)
//!  Waker ──► Task ──►   └─ platform: park/unpark, critical sections, tracing
//! ```
//!
//! Two short spin locks, never held together and never held across a poll:
//!
//! - the **ready lock** covers the per-level queues, the count of parked pollers
//!   and the closed flag. A wake-up takes it once (push); a poller takes it once per
//!   coroutine it runs (push back the coroutine it just yielded *and* pop the next
//!   one, in the same critical section);
//! - the **registry lock** covers the cid table. It is taken on spawn, on exit, and
//!   by the by-id operations (`wake`, `reprio`, `cancel`, `state`) to find the
//!   coroutine; a `Waker` never takes it.
//!
//! The coroutine's own state word (see [`crate::state`]) is changed without either
//! lock, by compare-and-swap. That word decides who may queue a coroutine and who
//! may touch its future, so a wake-up racing with a poll on another CPU can be
//! neither lost nor queued twice (the original implementation's known race).
//!
//! The paper blames its Executor mutex, held for whole scheduling decisions, for
//! its overhead at low concurrency. Here a lock is held for a few pointer writes,
//! idle pollers watch the lock-free bitmap instead of taking it, and a coroutine
//! that yields with nothing as important ready skips it altogether.
//! `cargo run --release -p ss-bench --bin micro` measures the cost against tokio
//! and async-executor, including two pollers contending for one executor.
//!
//! # Parking
//!
//! A poller that finds every queue empty registers as a sleeper (under the ready
//! lock, after checking the queues under that same lock) and calls
//! [`Park::park`](crate::platform::Park::park). A push that finds a registered
//! sleeper claims it and calls `unpark_one`. Because the check and the
//! registration happen under the lock the pusher takes, and the platform's park
//! has permit semantics, a wake-up can never slip between "nothing to do" and
//! "asleep".
//!
//! A platform may instead hold an idle poller **in reserve**
//! ([`Park::enter_reserve`](crate::platform::Park::enter_reserve)): it parks
//! without registering, so pushes wake only the registered sleepers, and it
//! polls again once the platform calls it out or it sees ready work stalled
//! (waiting at two timed looks with no pop in between). What its own events
//! wake on its way out of the park is pushed like any wake-up from a poll, and
//! the unpark such a push leaves to it goes to a registered sleeper: the
//! reserve never sits on work that a sleeper should have been woken for.
//!
//! # Shutdown order
//!
//! [`Executor::shutdown`] (also run when the `Executor` is dropped):
//! 1. under the registry lock: mark closed (spawn now fails) and take every
//!    coroutine out of the registry;
//! 2. under the ready lock: take every queued coroutine (pushes now are refused)
//!    and wake every parked poller, which then returns;
//! 3. outside both locks: drop the futures of coroutines nobody is polling; a
//!    coroutine being polled right now is marked `CANCEL` and its poller drops its
//!    future when the poll returns.
//!
//! Futures are dropped outside every lock, so a future's destructor may wake
//! others or spawn (both are then refused) without deadlock.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::task::{Context, Poll};

use ss_abi::{CoroutineId, CoroutineKind, InvalidPriority, Levels, Priority};

use crate::bitmap::PrioBitmap;
use crate::lock::{SpinGuard, SpinLock};
use crate::platform::{Clock, Critical, Platform, SpinPlatform};
use crate::queue::ReadyQueues;
use crate::registry::Registry;
use crate::state::{CoroutineState, CANCEL, CREATED, DONE, NOTIFIED, QUEUED, RUNNING, SUSPENDED};
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, CachePadded, Ordering};
use crate::task::{DynTask, PollScope, Task};

/// What went wrong with an executor operation; `Display` says what to do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Error {
    /// No live coroutine has this id: it exited, or the id was never issued.
    NoSuchCoroutine(CoroutineId),
    /// The priority does not fit this executor's levels.
    Priority(InvalidPriority),
    /// The executor is shut down.
    Closed,
    /// All 2³² − 1 coroutine slots are in use.
    TooManyCoroutines,
    /// The operation needs the coroutine in another state.
    WrongState {
        /// The coroutine.
        cid: CoroutineId,
        /// Its state when the operation was tried.
        state: CoroutineState,
        /// The state the operation needs.
        needs: CoroutineState,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoSuchCoroutine(cid) => write!(
                f,
                "no coroutine {cid}: it has exited or was never spawned here; \
                 check the id came from this executor's spawn"
            ),
            Error::Priority(e) => e.fmt(f),
            Error::Closed => {
                f.write_str("the executor is shut down; create a new one to run more coroutines")
            }
            Error::TooManyCoroutines => f.write_str(
                "4 294 967 295 coroutines are alive at once; let some finish before spawning more",
            ),
            Error::WrongState { cid, state, needs } => write!(
                f,
                "coroutine {cid} is {state}, but this operation needs it {needs}"
            ),
        }
    }
}

impl core::error::Error for Error {}

impl From<InvalidPriority> for Error {
    fn from(e: InvalidPriority) -> Self {
        Error::Priority(e)
    }
}

/// What a wake-up did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Wake {
    /// It was blocked; it is now in its ready queue.
    Queued,
    /// It was being polled; it will be queued again when that poll returns.
    WhileRunning,
    /// It was already ready (or being created); nothing changed.
    AlreadyReady,
    /// It has exited; nothing changed.
    Exited,
}

/// What a cancellation did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cancel {
    /// Its future has been dropped.
    Dropped,
    /// It is being polled; its poller drops the future when that poll returns.
    Deferred,
    /// It had already exited.
    AlreadyExited,
}

/// What one look of [`Executor::unpark_if_stalled`] found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stall {
    /// No coroutine was ready.
    Idle,
    /// Coroutines were ready, and pollers have popped some since the last look
    /// (or the last look found none ready, or this is the first): the work is
    /// moving.
    Moving,
    /// Coroutines were ready at this look and the last, and nobody popped one
    /// in between: every poller is stuck in a poll (or off its CPU) or parked.
    /// `unparked`: a parked poller was woken for them (there was one).
    Stalled {
        /// Whether a registered sleeper was claimed and woken.
        unparked: bool,
    },
}

/// The ready-lock state.
pub(crate) struct Ready<P: Platform> {
    queues: ReadyQueues<P>,
    /// Pollers registered as parked and not yet claimed by a push.
    sleepers: usize,
    /// Coroutines popped so far (wrapping).
    pops: u64,
    closed: bool,
}

/// The bitmap and the ready lock, kept on one cache line (see [`Shared`]).
pub(crate) struct ReadyLine<P: Platform> {
    /// Mirror of the ready queues' non-empty levels; written under the ready lock,
    /// read by anyone without it.
    bitmap: AtomicU64,
    lock: SpinLock<Ready<P>>,
}

/// The executor's state, shared by the owner handle, pollers and every task.
///
/// Cache lines: the bitmap and the ready lock share one line of their own — a
/// push writes both and a poller reads the one then takes the other, so keeping
/// them together moves one line between CPUs instead of two — and the registry
/// lock, written by by-id operations, has another.
pub(crate) struct Shared<P: Platform> {
    levels: Levels,
    ready_line: CachePadded<ReadyLine<P>>,
    registry: CachePadded<SpinLock<Registry<P>>>,
    pollers: AtomicUsize,
    /// Set (under the registry lock) by shutdown; spawn checks it there.
    close_flag: AtomicBool,
    platform: P,
}

type Guard<'a, T, P> = SpinGuard<'a, T, <P as Critical>::Guard>;

impl<P: Platform> Shared<P> {
    #[inline]
    fn lock_ready(&self) -> Guard<'_, Ready<P>, P> {
        self.ready_line.lock.lock(self.platform.enter(), |spins| {
            self.platform.lock_wait(spins)
        })
    }

    #[inline]
    fn lock_registry(&self) -> Guard<'_, Registry<P>, P> {
        self.registry.lock(self.platform.enter(), |spins| {
            self.platform.lock_wait(spins)
        })
    }

    #[inline]
    fn trace(&self, task: &DynTask<P>, from: CoroutineState, to: CoroutineState) {
        debug_assert!(from.can_become(to), "illegal transition {from} -> {to}");
        self.platform.on_transition(task.cid(), from, to);
    }

    #[inline]
    fn publish_bitmap(&self, ready: &Ready<P>) {
        self.ready_line
            .bitmap
            .store(ready.queues.bits(), Ordering::Release);
    }

    /// Pushes a task whose `QUEUED` bit the caller set: cold (at the tail of
    /// its level) or hot (at the head; see [`crate::queue`]). Refused after
    /// shutdown.
    fn enqueue(&self, task: Arc<DynTask<P>>, hot: bool) {
        let mut g = self.lock_ready();
        let (refused, unpark) = g.with(|r| {
            if r.closed {
                return (Some(task), false);
            }
            r.queues.push(task, hot);
            self.publish_bitmap(r);
            // A push from inside a poll on a CPU that will look at the queues
            // as soon as the poll ends may leave the sleeper to that poller
            // (`Park::defer_unpark`; settled in `push_and_pop`/`settle`). It
            // claims nobody now, so the sleeper stays registered.
            let unpark = r.sleepers > 0 && !self.platform.defer_unpark() && claim_sleeper(r);
            (None, unpark)
        });
        drop(g);
        if unpark {
            self.platform.unpark_one();
        }
        drop(refused);
    }

    /// The wake transition (⑧, or the note that turns ③ into ④).
    ///
    /// Every outcome except `Exited` is decided by a read-modify-write ordered
    /// against the poller, even when nothing changes ("already ready"): the waker
    /// published its event (data, an I/O result) *before* waking, and only such an
    /// operation is ordered against the poller's own transitions. With a plain
    /// load, the waker could see "already queued" while the poller, about to poll,
    /// still read the old event — and block for good (found by the loom model
    /// `wake_races_poll_one_poller`).
    ///
    /// A coroutine that yielded waits in its ready queue still holding `RUNNING`
    /// (see `Poller::poll`), so `RUNNING` alone does not mean "being polled": the
    /// ready lock tells the two apart, and for a queued coroutine the lock itself
    /// orders the wake before its next poll.
    fn wake_transition(task: &DynTask<P>) -> Wake {
        let mut s = task.state.load(Ordering::Acquire);
        loop {
            let (new, outcome) = if s & DONE != 0 {
                return Wake::Exited;
            } else if s & (QUEUED | CREATED) != 0 {
                (s, Wake::AlreadyReady)
            } else if s & RUNNING != 0 {
                match Self::wake_running(task) {
                    Some(outcome) => return outcome,
                    None => {
                        // It stopped running meanwhile: decide again.
                        s = task.state.load(Ordering::Acquire);
                        continue;
                    }
                }
            } else {
                (s | QUEUED, Wake::Queued)
            };
            match task
                .state
                .compare_exchange_weak(s, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if outcome == Wake::Queued {
                        task.shared
                            .trace(task, CoroutineState::Blocked, CoroutineState::Ready);
                    }
                    return outcome;
                }
                Err(actual) => s = actual,
            }
        }
    }

    /// The wake of a coroutine whose word says `RUNNING`: yielded and queued (a
    /// no-op), or being polled (leave `NOTIFIED`). Decided under the ready lock,
    /// under which a poller also queues a yielded coroutine. `None` if the word
    /// left `RUNNING` meanwhile.
    #[cold]
    fn wake_running(task: &DynTask<P>) -> Option<Wake> {
        let shared = &*task.shared;
        let mut g = shared.lock_ready();
        g.with(|r| {
            if r.queues.contains(task) {
                return Some(Wake::AlreadyReady);
            }
            let prev = task
                .state
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                    (s & (RUNNING | DONE) == RUNNING).then_some(s | NOTIFIED)
                });
            match prev {
                Ok(_) => Some(Wake::WhileRunning),
                Err(s) if s & DONE != 0 => Some(Wake::Exited),
                Err(_) => None,
            }
        })
    }

    /// Wakes through an owned reference (a consumed `Waker`).
    pub(crate) fn wake_task(task: Arc<DynTask<P>>) -> Wake {
        let outcome = Self::wake_transition(&task);
        if outcome == Wake::Queued {
            let shared = task.shared.clone();
            shared.enqueue(task, shared.platform.hot_wake());
        }
        outcome
    }

    /// Wakes through a borrowed reference (`wake_by_ref`, `Executor::wake`).
    pub(crate) fn wake_task_ref(task: &Arc<DynTask<P>>) -> Wake {
        let outcome = Self::wake_transition(task);
        if outcome == Wake::Queued {
            let shared = &task.shared;
            shared.enqueue(task.clone(), shared.platform.hot_wake());
        }
        outcome
    }

    fn task(&self, cid: CoroutineId) -> Result<Arc<DynTask<P>>, Error> {
        let mut g = self.lock_registry();
        g.with(|r| r.get(cid).cloned())
            .ok_or(Error::NoSuchCoroutine(cid))
    }

    /// Exit (⑤ ⑨ ⑩ ⑪): the caller has just moved the word to `DONE` from `prev`
    /// and so owns the future. Drops it and retires the id, outside every lock.
    fn finish(&self, task: &DynTask<P>, prev: u32) {
        self.trace(task, CoroutineState::from_bits(prev), CoroutineState::Exit);
        // SAFETY: moving the word to DONE from `prev` made us the owner (callers
        // only do so from RUNNING-by-us, a queue entry we removed, Blocked, or
        // Create), and DONE is final, so nobody else will touch the future.
        unsafe { task.drop_future() };
        let removed = self.lock_registry().with(|r| r.remove(task.cid()));
        drop(removed);
    }

    /// Whether a coroutine more important than `p` is ready (lock-free).
    #[inline]
    pub(crate) fn more_important_ready(&self, p: Priority) -> bool {
        self.ready_line.bitmap.load(Ordering::Acquire) & p.more_important_mask() != 0
    }

    /// The next coroutine for a poller that just yielded `carry` (if any).
    ///
    /// If nothing as important as `carry` or more is ready, pushing it and popping
    /// the head would hand it straight back: skip the queue (and its lock) and poll
    /// it again. The bitmap read is the decision point; work queued after it is
    /// seen at the next step, exactly as if it had been queued a moment later.
    #[inline]
    fn next(&self, carry: Option<Arc<DynTask<P>>>, owed: bool) -> Option<Arc<DynTask<P>>> {
        if let Some(t) = &carry {
            let p = t.priority();
            let bits = self.ready_line.bitmap.load(Ordering::Acquire);
            if bits & (p.bit() | p.more_important_mask()) == 0 && !(owed && bits != 0) {
                return carry;
            }
        }
        self.push_and_pop_owed(carry, owed)
    }

    /// Settles an unpark a push deferred to the end of a poll
    /// (`Park::defer_unpark`), for a poller that will not pop next: wakes a
    /// parked CPU if work is waiting.
    fn settle(&self) {
        let mut g = self.lock_ready();
        let unpark = g.with(|r| r.queues.len() > 0 && claim_sleeper(r));
        drop(g);
        if unpark {
            self.platform.unpark_one();
        }
    }

    /// One poller step: push back `carry` (a coroutine that yielded, or was woken
    /// while polled) and pop the most important ready coroutine, in one critical
    /// section.
    #[inline]
    fn push_and_pop(&self, carry: Option<Arc<DynTask<P>>>) -> Option<Arc<DynTask<P>>> {
        self.push_and_pop_owed(carry, false)
    }

    /// [`push_and_pop`](Self::push_and_pop), also settling an unpark deferred
    /// during the poll that just ended (`owed`).
    #[inline]
    fn push_and_pop_owed(
        &self,
        carry: Option<Arc<DynTask<P>>>,
        owed: bool,
    ) -> Option<Arc<DynTask<P>>> {
        let mut g = self.lock_ready();
        let (next, refused, unpark) = g.with(|r| {
            let mut refused = None;
            let mut pushed = false;
            if let Some(t) = carry {
                if r.closed {
                    refused = Some(t);
                } else {
                    r.queues.push(t, false);
                    pushed = true;
                }
            }
            let next = r.queues.pop();
            if next.is_some() {
                r.pops = r.pops.wrapping_add(1);
            }
            self.publish_bitmap(r);
            // A sleeping CPU is only worth waking if work is left after our pop.
            let unpark = (pushed || owed) && r.queues.len() > 0 && claim_sleeper(r);
            (next, refused, unpark)
        });
        drop(g);
        if unpark {
            self.platform.unpark_one();
        }
        drop(refused);
        next
    }
}

/// Claims one registered sleeper for a push, if any. Under the ready lock.
#[inline]
fn claim_sleeper<P: Platform>(r: &mut Ready<P>) -> bool {
    if r.sleepers > 0 {
        r.sleepers -= 1;
        true
    } else {
        false
    }
}

/// A priority executor: the per-process (or kernel) scheduler of SharedScheduler.
///
/// Owns its coroutines; dropping it [shuts it down](Executor::shutdown). Share it
/// between CPUs by reference (it is `Sync`) and let each CPU drive it through a
/// [`Poller`].
pub struct Executor<P: Platform = SpinPlatform> {
    shared: Arc<Shared<P>>,
}

impl<P: Platform> Executor<P> {
    /// The state its coroutines share (tests of the modules beneath).
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<Shared<P>> {
        &self.shared
    }
}

impl Executor<SpinPlatform> {
    /// An executor with the paper's eight levels on [`SpinPlatform`].
    pub fn new() -> Self {
        Executor::with_platform(Levels::DEFAULT, SpinPlatform)
    }
}

impl Default for Executor<SpinPlatform> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Platform> fmt::Debug for Executor<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("levels", &self.shared.levels.count())
            .field("coroutines", &self.len())
            .field("ready", &self.ready_bitmap())
            .field("pollers", &self.pollers())
            .finish()
    }
}

impl<P: Platform> Executor<P> {
    /// An executor with `levels` priority levels on `platform`.
    pub fn with_platform(levels: Levels, platform: P) -> Self {
        Executor {
            shared: Arc::new(Shared {
                levels,
                ready_line: CachePadded(ReadyLine {
                    bitmap: AtomicU64::new(0),
                    lock: SpinLock::new(Ready {
                        queues: ReadyQueues::new(levels),
                        sleepers: 0,
                        pops: 0,
                        closed: false,
                    }),
                }),
                registry: CachePadded(SpinLock::new(Registry::new())),
                pollers: AtomicUsize::new(0),
                close_flag: AtomicBool::new(false),
                platform,
            }),
        }
    }

    /// The platform this executor runs on.
    pub fn platform(&self) -> &P {
        &self.shared.platform
    }

    /// The number of priority levels.
    pub fn levels(&self) -> Levels {
        self.shared.levels
    }

    /// Spawns a coroutine at `priority` (paper Table 1: `spawn(future, prio)`).
    ///
    /// # Errors
    /// [`Error::Priority`] if `priority` is beyond the levels, [`Error::Closed`]
    /// after shutdown, [`Error::TooManyCoroutines`].
    pub fn spawn<F>(&self, future: F, priority: Priority) -> Result<CoroutineId, Error>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn_kind(future, priority, CoroutineKind::Normal)
    }

    /// Spawns a coroutine of a given [`CoroutineKind`].
    ///
    /// # Errors
    /// As [`spawn`](Executor::spawn).
    pub fn spawn_kind<F>(
        &self,
        future: F,
        priority: Priority,
        kind: CoroutineKind,
    ) -> Result<CoroutineId, Error>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let priority = self.shared.levels.check(priority)?;
        let task = Task::new_arc(future, kind, priority, CREATED, self.shared.clone());
        let mut g = self.shared.lock_registry();
        // A task refused is dropped (with its future) after the lock.
        let inserted = g.with(|r| {
            if self.shared.ready_closed_hint() {
                return Err((task, Error::Closed));
            }
            match r.insert(task) {
                Ok(cid) => Ok(r.get(cid).cloned()),
                Err(full) => Err((full, Error::TooManyCoroutines)),
            }
        });
        drop(g);
        let task = match inserted {
            Ok(Some(t)) => t,
            Ok(None) => unreachable!("a coroutine just registered is in the registry"),
            Err((refused, e)) => {
                drop(refused);
                return Err(e);
            }
        };
        let cid = task.cid();
        // ① Create → Ready, unless cancelled (⑪) or shut down meanwhile.
        match task
            .state
            .compare_exchange(CREATED, QUEUED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                self.shared
                    .trace(&task, CoroutineState::Create, CoroutineState::Ready);
                self.shared.enqueue(task, false);
            }
            Err(_) => {
                // CANCEL was set while Create (⑪): whoever moves the word to
                // DONE owns the future — we, unless a shutdown did first (it
                // takes a cancelled Create to DONE and drops the future
                // itself; a plain swap here exited it twice).
                if let Ok(prev) =
                    task.state
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                            (s & DONE == 0).then_some(DONE)
                        })
                {
                    self.shared.finish(&task, prev);
                }
            }
        }
        Ok(cid)
    }

    /// Wakes the coroutine `cid` (paper Table 1: `wake(cid)`), exactly as its
    /// `Waker` would.
    ///
    /// # Errors
    /// [`Error::NoSuchCoroutine`] for an id that is not live here.
    pub fn wake(&self, cid: CoroutineId) -> Result<Wake, Error> {
        let task = self.shared.task(cid)?;
        let outcome = Shared::wake_transition(&task);
        if outcome == Wake::Queued {
            // `self` keeps the executor alive: no clone of its `Arc` (whose
            // count every CPU's wake-ups would otherwise write).
            self.shared.enqueue(task, self.shared.platform.hot_wake());
        }
        Ok(outcome)
    }

    /// Changes a coroutine's priority (paper Table 1: `reprio(cid, prio)`).
    ///
    /// A ready coroutine moves to the tail of its new level's queue at once; a
    /// blocked or running one keeps the new priority for when it is next queued.
    ///
    /// # Errors
    /// [`Error::NoSuchCoroutine`], [`Error::Priority`].
    pub fn reprio(&self, cid: CoroutineId, priority: Priority) -> Result<(), Error> {
        let priority = self.shared.levels.check(priority)?;
        let task = self.shared.task(cid)?;
        let mut g = self.shared.lock_ready();
        g.with(|r| {
            task.priority.store(priority.level(), Ordering::Relaxed);
            if r.queues.requeue_at_priority(&task) {
                self.shared.publish_bitmap(r);
            }
        });
        Ok(())
    }

    /// The id of the coroutine `waker` belongs to, if it is a coroutine of *this*
    /// executor. ([`cid_of`](crate::cid_of) answers for any executor; an id is
    /// only meaningful to the executor that issued it, so code that will wake by
    /// id — an I/O driver recording whom a completion wakes — asks this.)
    pub fn own_cid(&self, waker: &core::task::Waker) -> Option<CoroutineId> {
        let header = crate::task::header_of(waker)?;
        (header.owner == Arc::as_ptr(&self.shared) as usize).then_some(header.cid)
    }

    /// A coroutine's current priority.
    ///
    /// # Errors
    /// [`Error::NoSuchCoroutine`].
    pub fn priority(&self, cid: CoroutineId) -> Result<Priority, Error> {
        Ok(self.shared.task(cid)?.priority())
    }

    /// A coroutine's kind.
    ///
    /// # Errors
    /// [`Error::NoSuchCoroutine`].
    pub fn kind(&self, cid: CoroutineId) -> Result<CoroutineKind, Error> {
        Ok(self.shared.task(cid)?.header.kind)
    }

    /// A coroutine's state (a snapshot: it may change the moment it is read).
    ///
    /// # Errors
    /// [`Error::NoSuchCoroutine`] — including once it has exited and its id is
    /// retired.
    pub fn state(&self, cid: CoroutineId) -> Result<CoroutineState, Error> {
        let task = self.shared.task(cid)?;
        Ok(self.shared.state_of(&task))
    }

    /// Cancels a coroutine: drops its future (now, or when its current poll ends)
    /// and retires its id.
    ///
    /// # Errors
    /// [`Error::NoSuchCoroutine`].
    pub fn cancel(&self, cid: CoroutineId) -> Result<Cancel, Error> {
        let task = self.shared.task(cid)?;
        Ok(self.cancel_task(&task))
    }

    fn cancel_task(&self, task: &Arc<DynTask<P>>) -> Cancel {
        let shared = &*self.shared;
        let mut s = task.state.load(Ordering::Acquire);
        loop {
            if s & DONE != 0 {
                return Cancel::AlreadyExited;
            }
            if s & (QUEUED | RUNNING) != 0 {
                // Whoever takes it out of its queue owns it (a yielded coroutine
                // waits there still `RUNNING`); try to be that party.
                let mut g = shared.lock_ready();
                let removed = g.with(|r| {
                    let t = r.queues.remove(task);
                    if t.is_some() {
                        shared.publish_bitmap(r);
                    }
                    t
                });
                drop(g);
                if let Some(queued) = removed {
                    let prev = task.state.swap(DONE, Ordering::AcqRel);
                    shared.finish(task, prev);
                    drop(queued);
                    return Cancel::Dropped;
                }
                // Being polled, or not in a queue yet (a waker is pushing it), or
                // just popped: leave a note for whoever owns it.
            }
            let (new, deferred) = if s & (RUNNING | QUEUED | CREATED) != 0 {
                (s | CANCEL, true)
            } else {
                (DONE, false)
            };
            match task
                .state
                .compare_exchange(s, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(prev) if !deferred => {
                    shared.finish(task, prev);
                    return Cancel::Dropped;
                }
                Ok(_) => return Cancel::Deferred,
                Err(actual) => s = actual,
            }
        }
    }

    /// Marks the running coroutine `cid` as interrupted (⑥, Running →
    /// Running-suspended): for a trap handler that preempts a poll.
    ///
    /// # Errors
    /// [`Error::NoSuchCoroutine`], or [`Error::WrongState`] unless it is Running.
    pub fn suspend(&self, cid: CoroutineId) -> Result<(), Error> {
        self.flip_suspended(cid, true)
    }

    /// Ends an interruption (⑦, Running-suspended → Running).
    ///
    /// # Errors
    /// [`Error::NoSuchCoroutine`], or [`Error::WrongState`] unless it is
    /// Running-suspended.
    pub fn resume(&self, cid: CoroutineId) -> Result<(), Error> {
        self.flip_suspended(cid, false)
    }

    fn flip_suspended(&self, cid: CoroutineId, suspend: bool) -> Result<(), Error> {
        let task = self.shared.task(cid)?;
        let (from, to) = if suspend {
            (CoroutineState::Running, CoroutineState::RunningSuspended)
        } else {
            (CoroutineState::RunningSuspended, CoroutineState::Running)
        };
        // Under the ready lock, so that a yielded coroutine (queued, still
        // `RUNNING`) is seen as the Ready one it is.
        let result = self.shared.lock_ready().with(|r| {
            if r.queues.contains(&task) {
                return Err(CoroutineState::Ready);
            }
            task.state
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                    (CoroutineState::from_bits(s) == from).then_some(s ^ SUSPENDED)
                })
                .map_err(CoroutineState::from_bits)
        });
        match result {
            Ok(_) => {
                self.shared.trace(&task, from, to);
                Ok(())
            }
            Err(state) => Err(Error::WrongState {
                cid,
                state,
                needs: from,
            }),
        }
    }

    /// The levels that have a ready coroutine, read without a lock. This is the
    /// bitmap a process publishes for global scheduling (paper §2.4).
    #[inline]
    pub fn ready_bitmap(&self) -> PrioBitmap {
        PrioBitmap::from_bits(self.shared.ready_line.bitmap.load(Ordering::Acquire))
    }

    /// The most important level with a ready coroutine, in O(1) and without a lock.
    #[inline]
    pub fn most_important_ready(&self) -> Option<Priority> {
        self.ready_bitmap().most_important()
    }

    /// The number of live coroutines (not yet exited).
    pub fn len(&self) -> usize {
        self.shared.lock_registry().with(|r| r.len())
    }

    /// Whether no coroutine is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of ready coroutines.
    pub fn ready_len(&self) -> usize {
        self.shared.lock_ready().with(|r| r.queues.len())
    }

    /// One look of a watchdog, from any thread: if coroutines are ready now
    /// and were at the last look (`seen` carries what that look saw from one
    /// look to the next; start with `None`), and no poller has popped one in
    /// between, wakes a parked poller for them.
    ///
    /// Why: a push from inside a poll leaves its unpark to that poller
    /// ([`Park::defer_unpark`](crate::platform::Park::defer_unpark)), which
    /// settles it when the poll ends. A poll that runs long — a coroutine that
    /// spawns another and then computes — would keep a parked CPU asleep
    /// beside the work for as long as it runs. A thread that calls this every
    /// millisecond or so bounds that delay to about two of its periods, and
    /// costs nothing while the work moves. A poller off its CPU (preempted by
    /// the OS) looks the same and is answered the same way.
    pub fn unpark_if_stalled(&self, seen: &mut Option<u64>) -> Stall {
        let (stall, unpark) = self.shared.lock_ready().with(|r| {
            if r.queues.len() == 0 {
                *seen = None;
                return (Stall::Idle, false);
            }
            let last = seen.replace(r.pops);
            if last != Some(r.pops) {
                (Stall::Moving, false)
            } else {
                let unparked = claim_sleeper(r);
                (Stall::Stalled { unparked }, unparked)
            }
        });
        if unpark {
            self.shared.platform.unpark_one();
        }
        stall
    }

    /// The ids of the blocked coroutines: the blocking set (a snapshot).
    pub fn blocked(&self) -> Vec<CoroutineId> {
        let mut out = Vec::new();
        self.shared.lock_registry().with(|r| {
            r.for_each(|t| {
                if CoroutineState::from_bits(t.state.load(Ordering::Acquire))
                    == CoroutineState::Blocked
                {
                    out.push(t.cid());
                }
            })
        });
        out
    }

    /// The number of pollers (CPUs lent to this executor) alive now.
    pub fn pollers(&self) -> usize {
        self.shared.pollers.load(Ordering::Relaxed)
    }

    /// Lends the executor a CPU (the core of paper Table 1's `alloc_cpu`): the
    /// returned poller runs its coroutines on whichever CPU or thread drives it.
    /// Any number of pollers may run at once.
    pub fn poller(&self) -> Poller<P> {
        self.shared.pollers.fetch_add(1, Ordering::Relaxed);
        Poller {
            shared: self.shared.clone(),
            current: None,
            owed: false,
        }
    }

    /// Wakes every parked poller (for example so that a `run_while` loop re-reads
    /// its condition).
    pub fn unpark_all(&self) {
        let n = self
            .shared
            .lock_ready()
            .with(|r| core::mem::take(&mut r.sleepers));
        for _ in 0..n {
            self.shared.platform.unpark_one();
        }
    }

    /// Whether [`shutdown`](Executor::shutdown) has run.
    pub fn is_closed(&self) -> bool {
        self.shared.ready_closed_hint()
    }

    /// Shuts the executor down (see the module docs for the order): every
    /// coroutine is cancelled, parked pollers return, later spawns fail.
    ///
    /// Returns how many coroutines were cancelled. Idempotent.
    pub fn shutdown(&self) -> usize {
        let shared = &*self.shared;
        let all = shared.lock_registry().with(|r| {
            shared.close_flag.store(true, Ordering::Release);
            r.drain()
        });
        let (queued, sleepers) = shared.lock_ready().with(|r| {
            r.closed = true;
            let q = r.queues.drain();
            shared.publish_bitmap(r);
            (q, core::mem::take(&mut r.sleepers))
        });
        for _ in 0..sleepers {
            shared.platform.unpark_one();
        }
        // Outside both locks from here. Coroutines we took out of a queue are ours.
        for t in &queued {
            let prev = t.state.swap(DONE, Ordering::AcqRel);
            shared.trace(t, CoroutineState::from_bits(prev), CoroutineState::Exit);
            // SAFETY: removed from its queue by us and now DONE: we own the future.
            unsafe { t.drop_future() };
        }
        for t in &all {
            let r = t
                .state
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                    if s & DONE != 0 {
                        None
                    } else if s & (RUNNING | QUEUED) != 0 {
                        Some(s | CANCEL)
                    } else {
                        Some(DONE)
                    }
                });
            if let Ok(prev) = r {
                if prev & (RUNNING | QUEUED) == 0 {
                    shared.trace(t, CoroutineState::from_bits(prev), CoroutineState::Exit);
                    // SAFETY: Blocked or Create, moved to DONE by us: we own it.
                    unsafe { t.drop_future() };
                }
            }
        }
        let n = all.len();
        drop(queued);
        drop(all);
        n
    }
}

impl<P: Platform> Shared<P> {
    /// The state of `task`, telling a yielded coroutine (queued, still holding
    /// `RUNNING`) from one being polled.
    fn state_of(&self, task: &DynTask<P>) -> CoroutineState {
        let state = CoroutineState::from_bits(task.state.load(Ordering::Acquire));
        if matches!(
            state,
            CoroutineState::Running | CoroutineState::RunningSuspended
        ) && self.lock_ready().with(|r| r.queues.contains(task))
        {
            CoroutineState::Ready
        } else {
            state
        }
    }

    #[inline]
    fn ready_closed_hint(&self) -> bool {
        self.close_flag.load(Ordering::Acquire)
    }
}

impl<P: Platform> Drop for Executor<P> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A CPU lent to an [`Executor`]: the loop that picks the most important ready
/// coroutine and polls it.
///
/// A poller belongs to one CPU or thread at a time (it is `Send`, not `Sync`).
/// Create one per CPU with [`Executor::poller`].
pub struct Poller<P: Platform = SpinPlatform> {
    shared: Arc<Shared<P>>,
    current: Option<CoroutineId>,
    /// A push during the last poll deferred its unpark to this poller's next
    /// step (`Park::defer_unpark`).
    owed: bool,
}

impl<P: Platform> fmt::Debug for Poller<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller")
            .field("current", &self.current)
            .finish()
    }
}

/// Runs exit on a coroutine whose poll unwound, so a panic cannot leave it
/// `RUNNING` forever or leak its future.
struct ExitOnUnwind<'a, P: Platform> {
    task: &'a DynTask<P>,
}

impl<P: Platform> Drop for ExitOnUnwind<'_, P> {
    fn drop(&mut self) {
        let prev = self.task.state.swap(DONE, Ordering::AcqRel);
        self.task.shared.finish(self.task, prev);
    }
}

/// Ends the platform's `polling` note if a poll unwinds, settling an unpark a
/// push deferred during it (nobody else would).
struct Polling<'a, P: Platform> {
    shared: &'a Shared<P>,
}

impl<P: Platform> Drop for Polling<'_, P> {
    fn drop(&mut self) {
        self.shared.platform.polling(false);
        if self.shared.platform.take_deferred_unpark() {
            self.shared.settle();
        }
    }
}

impl<P: Platform> Poller<P> {
    /// The coroutine this poller is polling right now (paper: `getcid()`), for a
    /// platform that keeps it per CPU. Inside a coroutine,
    /// [`cid_of`](crate::cid_of)`(cx.waker())` gives the same without a platform.
    pub fn current(&self) -> Option<CoroutineId> {
        self.current
    }

    /// The next coroutine to poll, after `carry`; settles an unpark deferred
    /// during the last poll.
    #[inline]
    fn next(&mut self, carry: Option<Arc<DynTask<P>>>) -> Option<Arc<DynTask<P>>> {
        let owed = core::mem::take(&mut self.owed);
        self.shared.next(carry, owed)
    }

    /// Settles an unpark deferred during the last poll, for a poller that
    /// stops without popping again.
    #[inline]
    fn settle(&mut self) {
        if core::mem::take(&mut self.owed) {
            self.shared.settle();
        }
    }

    /// Polls the most important ready coroutine, if any. Returns whether it did.
    pub fn run_once(&mut self) -> bool {
        match self.shared.push_and_pop(None) {
            Some(task) => {
                let carry = self.poll(task);
                if let Some(t) = carry {
                    self.shared.enqueue(t, false);
                }
                self.settle();
                true
            }
            None => false,
        }
    }

    /// Polls ready coroutines until none is ready. Returns how many polls it made.
    pub fn run_until_idle(&mut self) -> usize {
        let mut carry = None;
        let mut polls = 0;
        while let Some(task) = self.next(carry.take()) {
            carry = self.poll(task);
            polls += 1;
        }
        polls
    }

    /// Polls ready coroutines until none is ready or `slice` has passed on the
    /// platform's clock, whichever comes first: a time slice (the kernel gives a
    /// process's executor the CPU for a tick, then decides again). Never parks.
    /// Returns how many polls it made.
    ///
    /// The clock is read between polls; a coroutine that runs long inside one poll
    /// overruns the slice by that much (cooperative scheduling).
    pub fn run_for(&mut self, slice: core::time::Duration) -> usize
    where
        P: Clock,
    {
        let deadline = self.shared.platform.now().saturating_add(slice);
        let mut carry = None;
        let mut polls = 0;
        loop {
            if self.shared.platform.now() >= deadline {
                if let Some(t) = carry.take() {
                    self.shared.enqueue(t, false);
                }
                self.settle();
                return polls;
            }
            match self.next(carry.take()) {
                Some(task) => {
                    carry = self.poll(task);
                    polls += 1;
                }
                None => return polls,
            }
        }
    }

    /// Runs until the executor shuts down, parking while idle.
    pub fn run(&mut self) -> usize {
        self.run_while(|| true)
    }

    /// Runs while `keep_going()` holds and the executor is open, parking while
    /// idle. `keep_going` is checked before each poll and before parking; whoever
    /// makes it false should then call [`Executor::unpark_all`].
    ///
    /// Returns how many polls it made.
    pub fn run_while(&mut self, mut keep_going: impl FnMut() -> bool) -> usize {
        self.run_while_carrying(|_| keep_going())
    }

    /// [`run_while`](Self::run_while), telling `keep_going` the priority of the
    /// coroutine this poller holds back to poll again, if any: one that yielded
    /// while nothing as important was ready, and so went to no ready queue (it
    /// is in no bitmap until `keep_going` says stop, when it is queued). A
    /// platform that publishes what this executor needs a CPU for (the
    /// cross-process bitmap, paper §2.4) must count it.
    pub fn run_while_carrying(
        &mut self,
        mut keep_going: impl FnMut(Option<Priority>) -> bool,
    ) -> usize {
        let mut carry: Option<Arc<DynTask<P>>> = None;
        let mut polls = 0;
        loop {
            if !keep_going(carry.as_ref().map(|t| t.priority())) {
                if let Some(t) = carry.take() {
                    self.shared.enqueue(t, false);
                }
                self.settle();
                return polls;
            }
            if let Some(task) = self.next(carry.take()) {
                carry = self.poll(task);
                polls += 1;
                continue;
            }
            // Idle: spin (as long as the platform likes) watching the bitmap, then
            // register as a sleeper, unless work or shutdown arrived.
            let shared = &*self.shared;
            let mut stop = false;
            let mut round = 0u32;
            shared.platform.spin_idle(&mut || {
                // `keep_going` may cost more than a load: ask it now and then,
                // and whether the executor shut down (a long spin otherwise
                // held a shutdown up for its whole length).
                round = round.wrapping_add(1);
                if round % 64 == 0 {
                    stop = !keep_going(None) || shared.ready_closed_hint();
                }
                !stop && shared.ready_line.bitmap.load(Ordering::Acquire) == 0
            });
            // Completions the platform delivered while spinning may have left
            // their unparks to this poller, which looks at the queues next.
            self.owed |= shared.platform.take_deferred_unpark();
            if stop {
                self.settle();
                return polls;
            }
            if shared.ready_line.bitmap.load(Ordering::Acquire) != 0 {
                continue;
            }
            let reserve = shared.platform.enter_reserve();
            let registered = self.shared.lock_ready().with(|r| {
                if r.closed {
                    None
                } else if r.queues.len() > 0 {
                    Some(false)
                } else {
                    let max = self.shared.pollers.load(Ordering::Relaxed);
                    if !reserve && r.sleepers < max {
                        r.sleepers += 1;
                    }
                    Some(true)
                }
            });
            if reserve && registered != Some(true) {
                shared.platform.leave_reserve();
            }
            match registered {
                None => {
                    self.settle();
                    return polls;
                }
                Some(false) => continue,
                Some(true) if reserve => {
                    // In reserve: not a sleeper, so no push wakes this CPU;
                    // it polls again once called out or the work stalls.
                    let mut seen: Option<u64> = None;
                    let mut nothing_waited = false;
                    loop {
                        if !keep_going(None) {
                            shared.platform.leave_reserve();
                            self.settle();
                            return polls;
                        }
                        let looked = shared.platform.park_reserved(nothing_waited);
                        // What its own events woke is left to the others: a
                        // registered sleeper gets the unpark those pushes
                        // deferred to this poller.
                        if core::mem::take(&mut self.owed) | shared.platform.take_deferred_unpark()
                        {
                            shared.settle();
                        }
                        if !shared.platform.in_reserve() {
                            break;
                        }
                        if !looked {
                            continue;
                        }
                        let (closed, stalled) = shared.lock_ready().with(|r| {
                            let waiting = r.queues.len() > 0;
                            let stalled = waiting && seen == Some(r.pops);
                            seen = Some(r.pops);
                            nothing_waited = !waiting;
                            (r.closed, stalled)
                        });
                        if closed || stalled {
                            shared.platform.leave_reserve();
                            break;
                        }
                    }
                }
                Some(true) => {
                    if !keep_going(None) {
                        // Give the registration back (a claim meanwhile only
                        // costs someone a spurious wake-up).
                        self.shared.lock_ready().with(|r| {
                            r.sleepers = r.sleepers.saturating_sub(1);
                        });
                        return polls;
                    }
                    self.shared.platform.park();
                    // As after the spin: wakes from completions delivered on
                    // the way out of `park`.
                    self.owed |= self.shared.platform.take_deferred_unpark();
                }
            }
        }
    }

    /// Polls one popped coroutine (② then ③, ④ or ⑤). Returns it if it must go
    /// back to its ready queue.
    ///
    /// A coroutine that woke itself during the poll (a yield) goes back without
    /// its word changing: it stays `RUNNING`, and the right to poll it travels with
    /// its queue entry to whichever poller pops it next (handed over by the ready
    /// lock). That makes a yield cost one lock round trip and no read-modify-write
    /// on the word; the wake path tells such a queued coroutine from a running one
    /// under the ready lock.
    #[inline]
    fn poll(&mut self, task: Arc<DynTask<P>>) -> Option<Arc<DynTask<P>>> {
        let shared = &*self.shared;
        let s = task.state.load(Ordering::Acquire);
        if s & RUNNING == 0 {
            // ② Ready → Running, unless cancellation was asked while it was queued.
            let prev = task
                .state
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                    if s & (CANCEL | DONE) != 0 {
                        None
                    } else {
                        Some((s & !QUEUED) | RUNNING)
                    }
                });
            if let Err(s) = prev {
                if s & DONE == 0 {
                    let prev = task.state.swap(DONE, Ordering::AcqRel);
                    shared.finish(&task, prev);
                }
                return None;
            }
        } else if s & (CANCEL | NOTIFIED) != 0 {
            // A yielded coroutine (ours now, through the queue) that was cancelled,
            // or woken, while it waited. This poll answers the wake-up.
            if s & CANCEL != 0 {
                let prev = task.state.swap(DONE, Ordering::AcqRel);
                shared.finish(&task, prev);
                return None;
            }
            task.state.fetch_and(!NOTIFIED, Ordering::AcqRel);
        }
        shared.trace(&task, CoroutineState::Ready, CoroutineState::Running);
        self.current = Some(task.cid());
        let scope = PollScope::new(&task);
        let waker = scope.waker();
        let mut cx = Context::from_waker(&waker);
        let unwind = ExitOnUnwind { task: &task };
        shared.platform.polling(true);
        let polling = Polling { shared };
        // SAFETY: we hold RUNNING (set above, or carried with the queue entry of a
        // yielded coroutine), so we own the live future until we give it up.
        let result = unsafe { task.poll_future(&mut cx) };
        core::mem::forget(polling);
        shared.platform.polling(false);
        self.owed |= shared.platform.take_deferred_unpark();
        core::mem::forget(unwind);
        self.current = None;
        if result == Poll::Ready(()) {
            let prev = task.state.swap(DONE, Ordering::AcqRel);
            shared.finish(&task, prev);
            return None;
        }
        if scope.woken() {
            // ④ by a self-wake: back to the queue, still RUNNING (see above).
            let s = task.state.load(Ordering::Acquire);
            if s & CANCEL != 0 {
                let prev = task.state.swap(DONE, Ordering::AcqRel);
                shared.finish(&task, prev);
                return None;
            }
            shared.trace(&task, CoroutineState::from_bits(s), CoroutineState::Ready);
            return Some(task);
        }
        let mut s = task.state.load(Ordering::Acquire);
        loop {
            let new = if s & CANCEL != 0 {
                DONE
            } else if s & NOTIFIED != 0 {
                QUEUED // ④
            } else {
                0 // ③
            };
            match task
                .state
                .compare_exchange_weak(s, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(prev) => {
                    let from = CoroutineState::from_bits(prev);
                    return match new {
                        DONE => {
                            shared.finish(&task, prev);
                            None
                        }
                        QUEUED => {
                            shared.trace(&task, from, CoroutineState::Ready);
                            Some(task)
                        }
                        _ => {
                            shared.trace(&task, from, CoroutineState::Blocked);
                            None
                        }
                    };
                }
                Err(actual) => s = actual,
            }
        }
    }
}

impl<P: Platform> Drop for Poller<P> {
    fn drop(&mut self) {
        self.shared.pollers.fetch_sub(1, Ordering::Relaxed);
    }
}
