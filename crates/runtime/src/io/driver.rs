//! The io_uring driver: one ring per worker thread, each with its table of
//! in-flight operations; the worker that owns a ring is the only thread that
//! submits to it and reaps it.
//!
//! ```text
//!   worker W (owner of ring W)                          kernel
//!   ──────────────────────────                          ──────
//!   op future polled on W ──register──► W.slots
//!                         ──push SQE──► W's SQ ──io_uring_enter(GETEVENTS)──► (runs deferred
//!   W runs its ring: park / spin / every 32 polls / batch full                task work)
//!                         ◄──────────── W's CQ ◄─────────────────────────────── CQEs
//!   reap: store result in W.slots, then exec.wake(cid) ──► the coroutine runs on any worker
//!
//!   op dropped on thread X ≠ W ──► W.slots: Abandoned(buffers)
//!                              ──► W.remote (cancel key) + write(W's eventfd)
//!   W, next time it runs its ring ──► ASYNC_CANCEL ──► CQE ──► buffers freed by W
//! ```
//!
//! # Who touches what
//!
//! - A ring's **submission and completion queues** ([`Local`], kept in a
//!   thread-local of the owning worker) are touched only by the owner, so need no
//!   lock. Rings are set up with `IORING_SETUP_SINGLE_ISSUER |
//!   IORING_SETUP_DEFER_TASKRUN` (the kernel then runs completion work only when
//!   the owner enters with `GETEVENTS`, never by interrupting it), falling back to
//!   `COOP_TASKRUN | TASKRUN_FLAG`, then to no flags, if the kernel refuses
//!   ([`Mode`]; `Debug` of the driver shows which).
//! - A ring's **slot table** ([`Ring`], shared: `slots` lock) maps an operation's
//!   key (the SQE's `user_data`) to its state. The owner writes results into it;
//!   the op future, polled on whichever worker runs its coroutine, takes them; a
//!   dropped op leaves its memory in it. Held for a few field writes, never across
//!   a syscall or a wake-up.
//! - A ring's **remote queue** (`remote` lock) holds cancellations asked by other
//!   threads; the owner submits them the next time it runs its ring, and the
//!   asker writes the owner's eventfd so that a parked owner wakes for it.
//! - **Submitted?** `flushed` (an atomic written by the owner) tells an op polled
//!   elsewhere whether its SQE reached the kernel; an op cannot flush another
//!   worker's ring, so it waits: the owner submits at the latest when it next
//!   parks, spins or runs its ring (every few polls).
//!
//! # Lifetime of a slot
//!
//! ```text
//!   register ──► InFlight(waiter) ──CQE──► Done(result) ──op polled──► Free
//!                    │                        │
//!               op dropped                op dropped
//!                    ▼                        ▼
//!              Abandoned(buffers) ──CQE──► Free (buffers dropped)
//! ```
//!
//! A result nobody takes — the op dropped on either side of its `CQE` — goes
//! to the operation's `release` ([`Orphan`]) before its memory is dropped: an
//! accept's new descriptor is closed there (so its peer sees the end, not a
//! socket nobody reads), and a pooled receive's buffer goes back to the pool.
//!
//! A multishot operation (a [`RecvStream`](super::RecvStream)) posts many
//! completions for one key; its slot queues them until the last (a CQE
//! without `IORING_CQE_F_MORE`):
//!
//! ```text
//!   register_stream ──► Stream { queue, armed } ──CQE (MORE)──► queue += (res, flags)
//!                          │                    ──last CQE──► armed = false
//!                          │  poll_stream takes the oldest; taking the last ──► Free
//!                     stream dropped (queued buffers go back)
//!                          ▼
//!                     armed: AbandonedStream ──CQEs give their buffers back;
//!                                              the last ──► Free
//!                     not armed: Free
//! ```
//!
//! The kernel may write into an operation's memory from submission until its
//! completion is posted, so that memory is freed only on the right of a `CQE`
//! arrow: by the op future that takes a `Done` result, or by the owning worker
//! for an abandoned one.
//!
//! # Shutdown order
//!
//! 1. The executor shuts down: every coroutine's future is dropped, so every op is
//!    abandoned (cancellations from other threads go to the owners' remote queues).
//! 2. Each worker, once its poller returns and before its thread exits
//!    ([`stop_local`]): cancels everything its ring still holds (re-cancelling
//!    every 100 ms), reaps until nothing is left (bounded by 2 s), frees the
//!    buffers, marks the ring closed (later registrations fail) and closes it.
//! 3. [`Driver::shutdown`], after the runtime joined the workers: refuses new
//!    operations and checks that no ring holds anything.
//!
//! If the kernel never completes an operation (it should not: every operation we
//! issue is cancellable), its buffers are deliberately leaked rather than freed
//! under the kernel's feet, and stderr says so.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};
use ss_core::{CoroutineId, Executor};

use super::multishot::STREAM_CAP;
use super::pool::{self, BufPool};
use super::Config;
use crate::park::Parker;
use crate::WorkerPlatform;

/// `user_data` of the worker's eventfd `READ` (its doorbell).
const EVENTFD_TOKEN: u64 = u64::MAX;
/// `user_data` of `ASYNC_CANCEL` requests (their own completions are ignored).
const CANCEL_TOKEN: u64 = u64::MAX - 1;
/// `user_data` of the `FUTEX_WAIT` on the coordinator's global page that a
/// deferring worker keeps armed (see `crate::coordinate`).
const FUTEX_TOKEN: u64 = u64::MAX - 2;
/// Generations use 31 bits, so an operation's key never has the top bit set and
/// cannot collide with the tokens above.
const GEN_MASK: u32 = 0x7fff_ffff;

/// How long a worker's ring teardown waits for cancelled operations.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Locks a mutex, ignoring poisoning: every critical section here leaves the
/// data consistent before anything in it can panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whom a completion wakes.
#[derive(Clone)]
pub(crate) enum Waiter {
    /// A coroutine of the runtime's executor, by id (the paper's wake-by-cid).
    Cid(CoroutineId),
    /// A foreign waker (the op is polled inside a combinator with its own waker).
    Waker(Waker),
    /// Nobody yet: the op's first poll is submitting it at once, on this ring's
    /// owner, and takes a completion that comes back during that submission
    /// itself (a send into a socket with room), so its coroutine is not woken
    /// for a result it already holds. Only the owner reaps, so nothing can
    /// complete the op unseen before that poll names its waiter (it does,
    /// before it returns `Pending`).
    Unset,
}

impl Waiter {
    /// The waiter a poll with this waker asks for: the coroutine's id if the
    /// waker is a coroutine of `exec` (ids mean nothing to another executor, so a
    /// coroutine of some other SharedScheduler executor is woken through its
    /// waker instead).
    pub(crate) fn of(waker: &Waker, exec: &Executor<WorkerPlatform>) -> Waiter {
        match exec.own_cid(waker) {
            Some(cid) => Waiter::Cid(cid),
            None => Waiter::Waker(waker.clone()),
        }
    }

    /// Records a re-poll's waker, if it differs from the one recorded;
    /// returns the one it replaced, for the caller to drop once it has let go
    /// of the slot lock (a foreign waker may be the last reference to a task
    /// whose future, dropped with it, abandons an operation of this ring).
    #[must_use = "drop the replaced waiter after the slot lock"]
    fn update(&mut self, waker: &Waker, exec: &Executor<WorkerPlatform>) -> Option<Waiter> {
        match (exec.own_cid(waker), &*self) {
            (Some(cid), Waiter::Cid(old)) if *old == cid => None,
            (None, Waiter::Waker(old)) if old.will_wake(waker) => None,
            _ => Some(std::mem::replace(self, Waiter::of(waker, exec))),
        }
    }

    fn wake(self, exec: &Executor<WorkerPlatform>) {
        match self {
            // `NoSuchCoroutine`: it was cancelled meanwhile; nobody to tell.
            Waiter::Cid(cid) => drop(exec.wake(cid)),
            Waiter::Waker(w) => w.wake(),
            // Its first poll takes the result itself.
            Waiter::Unset => {}
        }
    }
}

/// An operation whose future is gone before it took its completion: the
/// driver keeps it (the memory the kernel may still write) until the
/// completion, then hands it the result nobody will take.
pub(crate) trait Orphan: Send {
    /// The completion's `result` (≥ 0, or `-errno`) will never be taken:
    /// releases what it handed over (an accepted connection's descriptor),
    /// and the operation's memory with it.
    fn release(self: Box<Self>, result: i32);
}

/// Memory an abandoned operation leaves with the driver until its completion.
pub(crate) type Keep = Box<dyn Orphan>;

enum SlotState {
    Free,
    InFlight(Waiter),
    /// The completion's result and flags (a provided buffer's id is in them).
    Done(i32, u32),
    Abandoned(Keep),
    /// A multishot operation (one SQE, many CQEs): its completions queue here,
    /// oldest first, until its future takes them; `armed` until the kernel
    /// posted the last one (without `IORING_CQE_F_MORE`).
    Stream {
        waiter: Waiter,
        queue: VecDeque<(i32, u32)>,
        armed: bool,
        /// Its cancellation was asked (too many completions queued).
        stopping: bool,
    },
    /// A multishot operation dropped while armed: each completion gives its
    /// buffer back; the last one frees the slot.
    AbandonedStream,
}

struct Slot {
    generation: u32,
    /// Its operation takes a buffer of the ring's pool (`BUFFER_SELECT`):
    /// only then does `ENOBUFS` say the pool ran dry.
    pooled: bool,
    state: SlotState,
}

/// The table of operations, by key = `generation << 32 | index`.
struct Slots {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Slots the kernel may still write through (`InFlight` or `Abandoned`).
    in_kernel: usize,
}

impl Slots {
    fn key(index: u32, generation: u32) -> u64 {
        (u64::from(generation) << 32) | u64::from(index)
    }

    fn get(&mut self, key: u64) -> Option<&mut Slot> {
        let index = (key & 0xffff_ffff) as usize;
        let generation = (key >> 32) as u32;
        self.slots
            .get_mut(index)
            .filter(|s| s.generation == generation && !matches!(s.state, SlotState::Free))
    }

    fn insert(&mut self, state: SlotState, pooled: bool) -> u64 {
        self.in_kernel += 1;
        match self.free.pop() {
            Some(index) => {
                let slot = &mut self.slots[index as usize];
                slot.state = state;
                slot.pooled = pooled;
                Self::key(index, slot.generation)
            }
            None => {
                let index = u32::try_from(self.slots.len()).expect("2^32 operations in flight");
                self.slots.push(Slot {
                    generation: 0,
                    pooled,
                    state,
                });
                Self::key(index, 0)
            }
        }
    }

    /// Frees the slot of `key` (which must be live), returning its state.
    fn remove(&mut self, key: u64) -> SlotState {
        let index = (key & 0xffff_ffff) as u32;
        let slot = &mut self.slots[index as usize];
        slot.generation = (slot.generation + 1) & GEN_MASK;
        self.free.push(index);
        std::mem::replace(&mut slot.state, SlotState::Free)
    }
}

/// Counters, for tests and measurements (summed over the rings).
#[derive(Default)]
pub(crate) struct Stats {
    /// `io_uring_enter` calls that submitted something.
    pub(crate) submit_calls: AtomicU64,
    /// SQEs submitted by those calls.
    pub(crate) submitted: AtomicU64,
    /// Operations whose flush was deferred to let others join the batch.
    pub(crate) deferred: AtomicU64,
    /// Operations whose first poll submitted them and found their completion
    /// already there (no wake-up, no second poll).
    pub(crate) inline: AtomicU64,
    /// Completions reaped.
    pub(crate) completions: AtomicU64,
    /// `io_uring_enter` calls of any kind.
    pub(crate) enters: AtomicU64,
    /// Multishot operations armed.
    pub(crate) streams: AtomicU64,
    /// Multishot operations the driver stopped for holding too many
    /// completions (`multishot::STREAM_CAP`).
    pub(crate) throttled: AtomicU64,
    /// Multishot receives stopped so that they follow their reader off a
    /// worker held in reserve (`multishot`'s module docs).
    pub(crate) followed: AtomicU64,
}

/// How the rings are set up: the best the kernel accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG`: completion work runs only
    /// when the owner enters with `GETEVENTS`; the flag says when there is some.
    Defer,
    /// `COOP_TASKRUN | TASKRUN_FLAG`: completion work runs at the owner's next
    /// syscall (no interrupt); the flag says when there is some.
    Coop,
    /// No flags (kernels before 5.19): completion work interrupts the submitter.
    Plain,
}

impl Mode {
    fn build(self, entries: u32) -> io::Result<IoUring> {
        let mut b = IoUring::builder();
        b.setup_cqsize(entries.saturating_mul(4));
        match self {
            Mode::Defer => {
                b.setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_taskrun_flag();
            }
            Mode::Coop => {
                b.setup_coop_taskrun().setup_taskrun_flag();
            }
            Mode::Plain => {}
        }
        b.build(entries)
    }

    /// Sets up a ring with the best mode from `self` down.
    fn build_best(self, entries: u32) -> (io::Result<IoUring>, Mode) {
        let mut mode = self;
        loop {
            match mode.build(entries) {
                Ok(r) => return (Ok(r), mode),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && mode != Mode::Plain => {
                    mode = if mode == Mode::Defer {
                        Mode::Coop
                    } else {
                        Mode::Plain
                    };
                }
                Err(e) => return (Err(e), mode),
            }
        }
    }

    /// Whether the kernel flags pending completion work in the SQ flags.
    fn flags_taskrun(self) -> bool {
        self != Mode::Plain
    }
}

/// The shared half of one worker's ring: what other threads may touch.
pub(crate) struct Ring {
    exec: Arc<Executor<WorkerPlatform>>,
    slots: Mutex<Slots>,
    /// Every SQE with a sequence number below this has been submitted. Written
    /// by the owner, read by op futures anywhere.
    flushed: AtomicU64,
    /// Keys to cancel, asked by threads other than the owner.
    remote: super::remote::RemoteQueue,
    /// The owner's doorbell.
    parker: Arc<Parker>,
    /// Set (under the `slots` lock) by the owner's teardown: the ring takes no
    /// more operations, and one still `InFlight` then is stuck in the kernel.
    closed: AtomicBool,
    batch: u64,
    stats: Arc<Stats>,
    /// The receive buffers the kernel picks from (buffer group
    /// [`pool::GROUP`](super::pool::GROUP)), if the ring has them.
    pool: Option<Arc<BufPool>>,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("in_kernel", &lock(&self.slots).in_kernel)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn closed_error() -> io::Error {
    io::Error::other(
        "the io_uring driver is shut down (its runtime was dropped); \
         start I/O only while the runtime runs",
    )
}

/// What pushing an SQE found.
pub(crate) enum Push {
    /// Queued with this sequence number.
    Queued(u64),
    /// The submission queue is full even after a flush; retry later.
    Full,
}

impl Ring {
    /// The executor whose coroutines the completions wake.
    pub(crate) fn exec(&self) -> &Executor<WorkerPlatform> {
        &self.exec
    }

    /// The driver's counters.
    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Registers a new operation, to be woken through `waiter`; `pooled` if
    /// it takes a buffer of the ring's pool.
    pub(crate) fn register(&self, waiter: Waiter, pooled: bool) -> io::Result<u64> {
        let mut slots = lock(&self.slots);
        if self.closed.load(Ordering::Acquire) {
            return Err(closed_error());
        }
        Ok(slots.insert(SlotState::InFlight(waiter), pooled))
    }

    /// Registers a new multishot operation, each of whose completions wakes
    /// `waiter` (updated by [`Ring::poll_stream`]) when none were waiting.
    pub(crate) fn register_stream(&self, waiter: Waiter) -> io::Result<u64> {
        let mut slots = lock(&self.slots);
        if self.closed.load(Ordering::Acquire) {
            return Err(closed_error());
        }
        Ok(slots.insert(
            SlotState::Stream {
                waiter,
                queue: VecDeque::new(),
                armed: true,
                stopping: false,
            },
            true,
        ))
    }

    /// The oldest completion of multishot operation `key` not yet taken, and
    /// whether it was its last (the slot is then freed: the key is dead);
    /// `None` records whom to wake for the next one.
    pub(crate) fn poll_stream(&self, key: u64, waker: &Waker) -> Option<((i32, u32), bool)> {
        let mut slots = lock(&self.slots);
        let slot = slots
            .get(key)
            .expect("a multishot operation polled after its slot was freed");
        let SlotState::Stream { waiter, queue, .. } = &mut slot.state else {
            unreachable!("a multishot operation's slot holds another state");
        };
        // What the slot lets go of is dropped after the lock (see
        // `Waiter::update`).
        match queue.pop_front() {
            Some(item) => {
                let last = !cqueue::more(item.1);
                let gone = last.then(|| slots.remove(key));
                drop(slots);
                drop(gone);
                Some((item, last))
            }
            None => {
                let replaced = waiter.update(waker, &self.exec);
                drop(slots);
                drop(replaced);
                None
            }
        }
    }

    /// The future of multishot operation `key` is gone: the buffers of its
    /// untaken completions go back; if it is still armed, the kernel is asked
    /// to cancel it and later completions give theirs back as they come.
    pub(crate) fn abandon_stream(self: &Arc<Self>, key: u64) {
        // Declared before the lock, so dropped after it (see `Waiter::update`).
        let _waiter: Waiter;
        let mut slots = lock(&self.slots);
        let Some(slot) = slots.get(key) else {
            return;
        };
        let SlotState::Stream {
            queue,
            armed,
            waiter,
            ..
        } = std::mem::replace(&mut slot.state, SlotState::AbandonedStream)
        else {
            unreachable!("a multishot operation's slot holds another state");
        };
        _waiter = waiter;
        if let Some(pool) = &self.pool {
            for (_, flags) in &queue {
                pool.give_back_selected(*flags);
            }
        }
        if !armed {
            slots.remove(key);
            return;
        }
        if self.closed.load(Ordering::Acquire) {
            // The owner gave up on it at teardown (and leaked the pool).
            return;
        }
        drop(slots);
        self.cancel(key);
    }

    /// Whether the worker that owns this ring is held in reserve now (see
    /// `park`'s module docs; advisory).
    pub(crate) fn owner_reserved(&self) -> bool {
        self.parker.reserved()
    }

    /// Marks this ring's owner as held in reserve, or not (tests only).
    #[cfg(test)]
    pub(crate) fn set_owner_reserved(&self, on: bool) {
        self.parker.set_reserved(on);
    }

    /// Stops multishot operation `key` (still armed, not yet stopping) so that
    /// its reader arms the next one on its own ring: as the driver stops a
    /// stream whose reader is behind, its last completion is an `ECANCELED`
    /// after every completion the kernel posted before. Does nothing for a
    /// stream already stopping or ended.
    pub(crate) fn stop_stream(self: &Arc<Self>, key: u64) {
        let mut slots = lock(&self.slots);
        let Some(SlotState::Stream {
            armed: true,
            stopping,
            ..
        }) = slots.get(key).map(|s| &mut s.state)
        else {
            return;
        };
        if *stopping || self.closed.load(Ordering::Acquire) {
            return;
        }
        *stopping = true;
        drop(slots);
        self.stats.followed.fetch_add(1, Ordering::Relaxed);
        self.cancel(key);
    }

    /// Forgets a registered operation that was never pushed.
    pub(crate) fn unregister(&self, key: u64) {
        let mut slots = lock(&self.slots);
        if slots.get(key).is_some() {
            let gone = slots.remove(key);
            slots.in_kernel -= 1;
            drop(slots);
            drop(gone);
        }
    }

    /// Whether the SQE with sequence number `seq` still waits to be submitted.
    pub(crate) fn unsubmitted(&self, seq: u64) -> bool {
        seq >= self.flushed.load(Ordering::Acquire)
    }

    /// The ring's pool of receive buffers, if it has one.
    pub(crate) fn pool(&self) -> Option<&Arc<BufPool>> {
        self.pool.as_ref()
    }

    /// The result and flags of operation `key`, if it completed; otherwise
    /// records whom to wake. A taken result frees the slot.
    pub(crate) fn poll_result(&self, key: u64, waker: &Waker) -> Option<(i32, u32)> {
        let mut slots = lock(&self.slots);
        let slot = slots
            .get(key)
            .expect("an operation polled after its slot was freed");
        match &mut slot.state {
            SlotState::InFlight(waiter) => {
                let replaced = waiter.update(waker, &self.exec);
                drop(slots);
                drop(replaced);
                None
            }
            SlotState::Done(res, flags) => {
                let done = (*res, *flags);
                slots.remove(key);
                Some(done)
            }
            _ => {
                unreachable!("an operation polled after it was abandoned, or as a stream")
            }
        }
    }

    /// The op future of `key` is gone. If the kernel still holds the operation, its
    /// memory (`keep`) passes to the ring, which asks the kernel to cancel it (at
    /// once on the owner; through the remote queue from another thread) and frees
    /// `keep` when the completion is reaped; otherwise `keep` is dropped now.
    pub(crate) fn abandon(self: &Arc<Self>, key: u64, keep: Keep) {
        let mut slots = lock(&self.slots);
        let Some(slot) = slots.get(key) else {
            drop(slots);
            drop(keep);
            return;
        };
        if let SlotState::InFlight(_) = slot.state {
            if self.closed.load(Ordering::Acquire) {
                // The owner gave up on this one at teardown: never free memory the
                // kernel may still write.
                std::mem::forget(keep);
                return;
            }
            let waiter = std::mem::replace(&mut slot.state, SlotState::Abandoned(keep));
            drop(slots);
            drop(waiter);
            self.cancel(key);
        } else {
            let state = slots.remove(key);
            drop(slots);
            let SlotState::Done(res, flags) = state else {
                drop(keep);
                return;
            };
            // Completed, never taken: what it was handed goes back — a
            // descriptor to be closed, a buffer to the pool.
            keep.release(res);
            if let Some(pool) = &self.pool {
                pool.give_back_selected(flags);
            }
        }
    }

    /// Asks the kernel to cancel operation `key`: at once on the ring's owner,
    /// through its remote queue from any other thread.
    fn cancel(self: &Arc<Self>, key: u64) {
        match local_of(self) {
            Some(local) => local.cancel(key),
            None => self.cancel_remote(key),
        }
    }

    /// Asks the owner to cancel `key` the next time it runs its ring, waking it.
    fn cancel_remote(&self, key: u64) {
        self.remote.push(key);
        self.parker.notify();
    }

    /// Slots the kernel may still write through.
    pub(crate) fn in_kernel(&self) -> usize {
        lock(&self.slots).in_kernel
    }

    /// Handles one completion (called with the slot lock held).
    fn complete(
        &self,
        slots: &mut Slots,
        (key, res, flags): (u64, i32, u32),
        wake: &mut Vec<Waiter>,
        free: &mut Vec<(Keep, i32)>,
        stop: &mut Vec<u64>,
    ) {
        if let Some(pool) = &self.pool {
            pool.note_selected(flags);
        }
        let Some(slot) = slots.get(key) else {
            // Not ours to keep (never happens: every op's key is live until
            // its completion); a buffer it names goes back.
            if let Some(pool) = &self.pool {
                pool.give_back_selected(flags);
            }
            return;
        };
        if let Some(pool) = self
            .pool
            .as_ref()
            .filter(|_| slot.pooled && res == -libc::ENOBUFS)
        {
            // A receive that selects a buffer met the pool dry (a send or a
            // connect may fail with ENOBUFS too: the network's, not the
            // pool's). Judged now, while the buffers the reaped completions
            // name are still lent (their readers may run much later).
            pool.ran_dry();
        }
        let last = !cqueue::more(flags);
        match &mut slot.state {
            SlotState::Stream {
                waiter,
                queue,
                armed,
                stopping,
            } => {
                if queue.is_empty() {
                    // Its future took every earlier one: tell it of this one.
                    wake.push(waiter.clone());
                }
                queue.push_back((res, flags));
                if last {
                    *armed = false;
                    slots.in_kernel -= 1;
                } else if queue.len() >= STREAM_CAP && !*stopping {
                    // Its reader is behind: stop taking the socket's bytes
                    // into the pool (it re-arms once it has caught up).
                    *stopping = true;
                    stop.push(key);
                }
                return;
            }
            SlotState::AbandonedStream => {
                if let Some(pool) = &self.pool {
                    pool.give_back_selected(flags);
                }
                if last {
                    slots.remove(key);
                    slots.in_kernel -= 1;
                }
                return;
            }
            _ => {}
        }
        match std::mem::replace(&mut slot.state, SlotState::Done(res, flags)) {
            SlotState::InFlight(waiter) => {
                slots.in_kernel -= 1;
                wake.push(waiter);
            }
            SlotState::Abandoned(keep) => {
                slots.remove(key);
                slots.in_kernel -= 1;
                free.push((keep, res));
                if let Some(pool) = &self.pool {
                    // Nobody waits for the bytes: the buffer goes back.
                    pool.give_back_selected(flags);
                }
            }
            // A second completion for a single-shot key cannot happen.
            other => slot.state = other,
        }
    }
}

/// The owner's half of a ring: the queues themselves. Lives in a thread-local of
/// the owning worker (it is neither `Send` nor `Sync`), so every use of the queues
/// is on the owner's thread.
pub(crate) struct Local {
    ring: Arc<Ring>,
    uring: IoUring,
    mode: Mode,
    /// SQEs pushed so far (the next push gets this sequence number).
    pushed: Cell<u64>,
    /// The eventfd `READ`'s 8-byte buffer (from `Box::into_raw`); freed at
    /// teardown once the read is not in the kernel.
    efd_buf: *mut u64,
    efd_armed: Cell<bool>,
    /// A `FUTEX_WAIT` on the global page is in the kernel (completes when the
    /// coordinator publishes, or is cancelled at teardown).
    futex_armed: Cell<bool>,
    /// The registration it was armed for (`defer_local`'s `registration`).
    futex_registration: Cell<u64>,
    /// Its cancellation is asked for (it was armed for an earlier
    /// registration).
    futex_cancelling: Cell<bool>,
    /// Whether this kernel has `IORING_OP_FUTEX_WAIT` (Linux 6.7).
    futex_ok: bool,
    /// Reused between reaps.
    wake: RefCell<Vec<Waiter>>,
}

enum LocalState {
    None,
    Ring(Rc<Local>),
    Failed(String),
}

thread_local! {
    static LOCAL: RefCell<LocalState> = const { RefCell::new(LocalState::None) };
}

/// The calling worker's ring, if it has one.
fn local() -> Option<Rc<Local>> {
    LOCAL.with(|l| match &*l.borrow() {
        LocalState::Ring(r) => Some(r.clone()),
        _ => None,
    })
}

/// The calling thread's `Local` if it owns `ring`.
pub(crate) fn local_of(ring: &Arc<Ring>) -> Option<Rc<Local>> {
    local().filter(|l| Arc::ptr_eq(&l.ring, ring))
}

/// The calling worker's ring, or why an operation cannot start here.
pub(crate) fn current_local() -> io::Result<Rc<Local>> {
    let why = LOCAL.with(|l| match &*l.borrow() {
        LocalState::Ring(r) => Ok(r.clone()),
        LocalState::Failed(why) => Err(Some(why.clone())),
        LocalState::None => Err(None),
    });
    match why {
        Ok(r) => Ok(r),
        Err(Some(why)) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("asynchronous I/O is unavailable on this worker: {why}"),
        )),
        Err(None) => Err(
            match crate::context::current().map(|inner| inner.io().err()) {
                None => io::Error::other(
                    "no SharedScheduler runtime on this thread: start I/O from inside \
                 `Runtime::block_on` or a coroutine spawned on a runtime",
                ),
                Some(io) => match io {
                    Some(e) => e,
                    None => io::Error::other(
                        "this thread is not a worker of the runtime, and each I/O operation \
                     runs on the io_uring ring of the worker that polls it: await it inside \
                     a coroutine (`Runtime::block_on`, `ss_runtime::spawn`), not on a thread \
                     of your own",
                    ),
                },
            },
        ),
    }
}

/// A receive pool of `shape`, registered with `uring` as buffer group
/// [`pool::GROUP`]; `None` if none is configured, or the kernel refuses (before
/// Linux 5.19): pooled receives then use buffers of their own.
fn register_pool(uring: &IoUring, shape: pool::Shape) -> Option<Arc<BufPool>> {
    if shape.count == 0 {
        return None;
    }
    let pool = BufPool::new(shape).ok()?;
    let (addr, entries) = pool.ring_addr();
    // SAFETY: the ring memory is page aligned, `entries` long, initialised
    // (the starting buffers' entries written, the rest zeroed: the kernel
    // reads only between its head and our tail), and outlives the
    // registration: the pool is held by the ring's `Ring` (and so by every
    // operation on it) and the teardown unregisters the group before the last
    // `Arc` can go.
    unsafe {
        uring
            .submitter()
            .register_buf_ring_with_flags(addr, entries, pool::GROUP, 0)
    }
    .ok()?;
    Some(pool)
}

/// The buffer size of the calling worker's receive pool, if it has one.
pub(crate) fn current_pool_size() -> Option<usize> {
    local().and_then(|l| l.ring.pool.as_ref().map(|p| p.size() as usize))
}

/// Records why the calling worker has no ring (its operations fail with it).
pub(crate) fn set_local_error(why: String) {
    LOCAL.with(|l| *l.borrow_mut() = LocalState::Failed(why));
}

/// Runs the calling worker's ring without waiting (submit, take completions),
/// if it has one. Cheap when there is nothing to do.
pub(crate) fn run_local() {
    if let Some(l) = local() {
        l.run();
    }
}

/// For tests: has the kernel post the calling worker's completions without
/// reaping them (they wait in the completion queue); returns how many wait.
#[cfg(test)]
pub(crate) fn post_without_reaping_local() -> usize {
    let l = local().expect("a worker with a ring");
    l.enter(0, None);
    // SAFETY: owner thread; the queue handle is dropped at once.
    let waiting = unsafe { l.uring.completion_shared() }.len();
    waiting
}

/// Submits the calling worker's queued SQEs (a batch deferred by `Op`) if it
/// has any, and takes the completions its ring has; without queued SQEs it
/// enters the kernel only if the kernel flags completion work.
pub(crate) fn flush_or_reap_local() {
    if let Some(l) = local() {
        if l.pending() > 0 {
            l.flush();
        } else {
            l.reap_only();
        }
    }
}

/// For `park`: if the calling worker has a ring, submits, sleeps in the kernel
/// until a completion of the ring (or the doorbell), calls `woke`, then reaps.
/// Returns whether it had a ring (else the caller must sleep some other way).
pub(crate) fn park_local(at_most: Option<Duration>, woke: impl FnOnce()) -> bool {
    let Some(l) = local() else {
        return false;
    };
    l.take_remote();
    l.arm_doorbell();
    // Without an armed doorbell (SQ full) an unpark could not wake us: nap.
    let nap = (!l.efd_armed.get()).then_some(Duration::from_millis(1));
    let timeout = at_most.into_iter().chain(nap).min();
    l.enter(1, timeout);
    woke();
    l.reap();
    true
}

/// For a worker deferring to more important work in another process: sleeps
/// until a completion of its ring, its doorbell, a change of the coordinator's
/// global page (an armed `FUTEX_WAIT` on `word` while it still holds `seen`),
/// or `timeout`; then reaps. Returns `false` (having done nothing) if the worker
/// has no ring or the kernel lacks `FUTEX_WAIT`, for the caller to wait on the
/// futex itself.
///
/// `registration` counts the client's registrations: a wait armed for an
/// earlier one (the coordinator restarted, and the page mapped at `word` is
/// another file now) waits on the old file's futex key, which nobody wakes
/// any more; it is cancelled, and the next call arms one on the new page.
/// (The client wakes such waiters once at the swap, but a wait that read
/// the old key just before it and slept just after is missed; found in
/// review, 2026-11-30.)
///
/// # Safety
/// `word` must stay mapped until the wait completes: until this worker's ring
/// is torn down at the latest (the runtime's coordinator client, which owns
/// the mapping, outlives its workers' rings).
pub(crate) unsafe fn defer_local(
    word: &AtomicU32,
    seen: u32,
    registration: u64,
    timeout: Duration,
) -> bool {
    let Some(l) = local() else {
        return false;
    };
    if !l.futex_ok {
        return false;
    }
    l.take_remote();
    l.arm_doorbell();
    if l.futex_armed.get() && l.futex_registration.get() != registration {
        // Armed on the page of an earlier registration: its completion
        // (`ECANCELED`) ends this wait, and the next call arms anew.
        if !l.futex_cancelling.get() && l.push_cancel(FUTEX_TOKEN) {
            l.futex_cancelling.set(true);
        }
    } else if !l.futex_armed.get() {
        // FUTEX2_SIZE_U32 without FUTEX2_PRIVATE: the page is shared between
        // processes, and the coordinator wakes it with a shared FUTEX_WAKE.
        let sqe = opcode::FutexWait::new(
            word.as_ptr().cast_const(),
            u64::from(seen),
            u64::from(u32::MAX),
            FUTEX2_SIZE_U32,
        )
        .build()
        .user_data(FUTEX_TOKEN);
        // SAFETY: the word outlives the wait (this function's contract); the
        // kernel only reads it.
        if let Push::Queued(_) = unsafe { l.push(&sqe) } {
            l.futex_armed.set(true);
            l.futex_registration.set(registration);
        }
    }
    l.enter(1, Some(timeout));
    l.reap();
    true
}

/// `FUTEX2_SIZE_U32` (linux/futex.h): a 32-bit futex word.
const FUTEX2_SIZE_U32: u32 = 0x02;

/// The calling worker is exiting: tears its ring down (see the module docs).
pub(crate) fn stop_local() {
    let state = LOCAL.with(|l| std::mem::replace(&mut *l.borrow_mut(), LocalState::None));
    if let LocalState::Ring(l) = state {
        l.shutdown();
    }
}

impl Local {
    /// The shared half.
    pub(crate) fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// SQEs pushed and not yet submitted.
    fn pending(&self) -> u64 {
        self.pushed.get() - self.ring.flushed.load(Ordering::Relaxed)
    }

    /// Queues `sqe` (submitted when the batch fills, or at the next flush/run).
    ///
    /// # Safety
    /// Every pointer in `sqe` must stay valid, and the memory it points to must not
    /// be otherwise accessed while the kernel may use it, until the completion for
    /// its `user_data` has been handled (an op's memory lives in the op future, or,
    /// once the future is dropped, in its `Abandoned` slot).
    pub(crate) unsafe fn push(&self, sqe: &squeue::Entry) -> Push {
        for attempt in 0..2 {
            // SAFETY: `Local` lives on the owner's thread only, and no other
            // `SubmissionQueue` of this ring is alive (none is held across a call).
            let mut queue = unsafe { self.uring.submission_shared() };
            // SAFETY: the caller guarantees the entry's memory outlives its use.
            let pushed = unsafe { queue.push(sqe) }.is_ok();
            drop(queue); // publishes the tail
            if pushed {
                let seq = self.pushed.get();
                self.pushed.set(seq + 1);
                if self.pending() >= self.ring.batch {
                    self.flush();
                }
                return Push::Queued(seq);
            }
            if attempt == 0 {
                self.flush();
            }
        }
        Push::Full
    }

    /// One `io_uring_enter`: submits what is queued and, with `GETEVENTS`, lets
    /// the kernel post the completions it has (waiting for `min` of them, for at
    /// most `timeout`). Does not reap.
    fn enter(&self, min: u32, timeout: Option<Duration>) {
        // SAFETY: owner thread; the queue handle is dropped at once.
        let to_submit = unsafe { self.uring.submission_shared() }.len();
        let r = match timeout {
            // SAFETY: no argument pointer is passed.
            None => unsafe {
                self.uring.submitter().enter::<libc::sigset_t>(
                    to_submit as u32,
                    min,
                    io_uring::EnterFlags::GETEVENTS.bits(),
                    None,
                )
            },
            Some(t) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.uring.submitter().submit_with_args(min as usize, &args)
            }
        };
        self.ring.stats.enters.fetch_add(1, Ordering::Relaxed);
        if to_submit > 0 {
            if let Ok(n) = r {
                self.ring.stats.submit_calls.fetch_add(1, Ordering::Relaxed);
                self.ring
                    .stats
                    .submitted
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        // Errors: EINTR, ETIME (the timeout), EBUSY/EAGAIN (completion backlog,
        // no memory): what was not submitted stays queued for the next enter, and
        // an op polling us retries (see `op`).
        // SAFETY: owner thread.
        let left = unsafe { self.uring.submission_shared() }.len() as u64;
        self.ring
            .flushed
            .store(self.pushed.get() - left, Ordering::Release);
    }

    /// Submits every queued SQE and takes the completions the kernel has, waking
    /// their coroutines.
    pub(crate) fn flush(&self) {
        if self.pending() > 0 {
            self.enter(0, None);
            self.reap();
        }
    }

    /// Runs the ring without waiting: remote cancellations, the doorbell, queued
    /// SQEs, and completions. Enters the kernel only if there is something to
    /// submit or (as the kernel flags it) completion work to run.
    pub(crate) fn run(&self) {
        self.take_remote();
        self.arm_doorbell();
        let (to_submit, taskrun) = {
            // SAFETY: owner thread; the queue handle is dropped at once.
            let sq = unsafe { self.uring.submission_shared() };
            (sq.len(), sq.taskrun() || sq.cq_overflow())
        };
        if to_submit > 0 || taskrun || !self.mode.flags_taskrun() {
            self.enter(0, None);
        }
        self.reap();
    }

    /// Takes the completions the kernel has, submitting nothing.
    fn reap_only(&self) {
        let taskrun = {
            // SAFETY: owner thread; the queue handle is dropped at once.
            let sq = unsafe { self.uring.submission_shared() };
            sq.taskrun() || sq.cq_overflow()
        };
        if taskrun || !self.mode.flags_taskrun() {
            // SAFETY: no argument pointer; to_submit = 0 leaves the SQ alone.
            let _ = unsafe {
                self.uring.submitter().enter::<libc::sigset_t>(
                    0,
                    0,
                    io_uring::EnterFlags::GETEVENTS.bits(),
                    None,
                )
            };
            self.ring.stats.enters.fetch_add(1, Ordering::Relaxed);
        }
        self.reap();
    }

    /// Submits the cancellations other threads asked for.
    fn take_remote(&self) {
        let keys = self.ring.remote.take();
        for (i, &key) in keys.iter().enumerate() {
            if !self.push_cancel(key) {
                // SQ full: keep the rest for the next run.
                self.ring.remote.put_back(&keys[i..]);
                break;
            }
        }
    }

    fn push_cancel(&self, key: u64) -> bool {
        let sqe = opcode::AsyncCancel::new(key)
            .build()
            .user_data(CANCEL_TOKEN);
        // SAFETY: ASYNC_CANCEL carries no pointer (the key is a plain value).
        matches!(unsafe { self.push(&sqe) }, Push::Queued(_))
    }

    /// Asks the kernel to cancel operation `key`, submitting at once (a cancelled
    /// receive must stop taking data now, not at the next batch).
    fn cancel(&self, key: u64) {
        if self.push_cancel(key) {
            self.flush();
        } else {
            // Full: retried at the next run (or by the teardown sweep).
            self.ring.remote.put_back(&[key]);
        }
    }

    /// Keeps the doorbell's `READ` armed.
    fn arm_doorbell(&self) {
        if self.efd_armed.get() {
            return;
        }
        let sqe = opcode::Read::new(types::Fd(self.ring.parker.fd()), self.efd_buf.cast(), 8)
            .offset(u64::MAX)
            .build()
            .user_data(EVENTFD_TOKEN);
        // SAFETY: `efd_buf` is an 8-byte heap buffer that only the kernel writes
        // and that is freed only once this read is no longer in the kernel
        // (`shutdown`); the eventfd lives as long as the worker's `Parker`, which
        // the ring holds.
        if let Push::Queued(_) = unsafe { self.push(&sqe) } {
            self.efd_armed.set(true);
        }
    }

    /// Drains the completion queue: stores results, then (every lock released)
    /// wakes whom they name and frees abandoned memory.
    fn reap(&self) {
        // SAFETY: owner thread; the handle is dropped at once.
        if unsafe { self.uring.completion_shared() }.is_empty() {
            return;
        }
        let mut wake = std::mem::take(&mut *self.wake.borrow_mut());
        let mut free = Vec::new();
        let mut stop = Vec::new();
        {
            let mut slots = lock(&self.ring.slots);
            loop {
                // SAFETY: owner thread, and no other `CompletionQueue` is alive.
                let cq = unsafe { self.uring.completion_shared() };
                if cq.is_empty() {
                    break;
                }
                for cqe in cq {
                    self.ring.stats.completions.fetch_add(1, Ordering::Relaxed);
                    match cqe.user_data() {
                        EVENTFD_TOKEN => self.efd_armed.set(false),
                        FUTEX_TOKEN => {
                            self.futex_armed.set(false);
                            self.futex_cancelling.set(false);
                        }
                        CANCEL_TOKEN => {}
                        key => self.ring.complete(
                            &mut slots,
                            (key, cqe.result(), cqe.flags()),
                            &mut wake,
                            &mut free,
                            &mut stop,
                        ),
                    }
                }
            }
        }
        for key in stop {
            self.ring.stats.throttled.fetch_add(1, Ordering::Relaxed);
            if !self.push_cancel(key) {
                // Full: submitted at the next run.
                self.ring.remote.put_back(&[key]);
            }
        }
        for w in wake.drain(..) {
            w.wake(&self.ring.exec);
        }
        // Outside the slot lock: a release may close a descriptor.
        for (keep, res) in free {
            keep.release(res);
        }
        *self.wake.borrow_mut() = wake;
    }

    /// The teardown of a worker's ring: see the module docs.
    fn shutdown(&self) {
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut last_sweep: Option<Instant> = None;
        loop {
            self.ring.remote.clear(); // covered by the sweep below
            if last_sweep.is_none_or(|t| t.elapsed() >= Duration::from_millis(100)) {
                let keys: Vec<u64> = {
                    let slots = lock(&self.ring.slots);
                    slots
                        .slots
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| {
                            matches!(
                                s.state,
                                SlotState::InFlight(_)
                                    | SlotState::Abandoned(_)
                                    | SlotState::Stream { armed: true, .. }
                                    | SlotState::AbandonedStream
                            )
                        })
                        .map(|(i, s)| Slots::key(i as u32, s.generation))
                        .collect()
                };
                for key in keys {
                    if !self.push_cancel(key) {
                        break; // the next sweep
                    }
                }
                if self.efd_armed.get() {
                    self.ring.parker.notify(); // completes the doorbell's read
                }
                if self.futex_armed.get() {
                    self.push_cancel(FUTEX_TOKEN); // a full SQ: the next sweep
                }
                last_sweep = Some(Instant::now());
            }
            {
                let slots = lock(&self.ring.slots);
                if slots.in_kernel == 0 && !self.efd_armed.get() && !self.futex_armed.get() {
                    self.ring.closed.store(true, Ordering::Release);
                    if self.ring.pool.is_some() {
                        // Nothing in the kernel can pick a buffer any more.
                        let _ = self.uring.submitter().unregister_buf_ring(pool::GROUP);
                    }
                    break;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                self.give_up();
                return;
            }
            self.enter(1, Some((deadline - now).min(Duration::from_millis(100))));
            self.reap();
        }
        // SAFETY: the doorbell's read is not in the kernel (checked above), and
        // `efd_buf` came from `Box::into_raw`; it is freed once, here.
        drop(unsafe { Box::from_raw(self.efd_buf) });
    }

    /// Operations the kernel did not complete after being cancelled: leak their
    /// memory rather than free it under the kernel's feet.
    fn give_up(&self) {
        let mut slots = lock(&self.ring.slots);
        self.ring.closed.store(true, Ordering::Release);
        for slot in &mut slots.slots {
            match std::mem::replace(&mut slot.state, SlotState::Free) {
                SlotState::Abandoned(keep) => std::mem::forget(keep),
                // Nothing of ours but the pool's buffers (the pool is leaked below).
                SlotState::AbandonedStream => {}
                // Stays: `abandon` or `abandon_stream` leaks it when its op drops.
                other => slot.state = other,
            }
        }
        let stuck = slots.in_kernel;
        drop(slots);
        if let Some(pool) = &self.ring.pool {
            // A stuck receive may still be handed one of its buffers.
            std::mem::forget(pool.clone());
        }
        // The doorbell buffer (`efd_buf`) is leaked too if its read is stuck.
        eprintln!(
            "ss-runtime io: {stuck} operation(s) did not complete within {SHUTDOWN_GRACE:?} \
             of being cancelled; their buffers are leaked rather than freed under the kernel"
        );
    }
}

/// The state the driver shares with the runtime: the rings and the counters.
pub(crate) struct Shared {
    rings: Mutex<Vec<Arc<Ring>>>,
    closing: AtomicBool,
    entries: u32,
    pub(crate) batch: u64,
    mode: Mode,
    /// The kernel has `IORING_OP_FUTEX_WAIT` (deferring workers wait on the
    /// global page through their rings).
    futex_ok: bool,
    /// Each ring's receive pool (0 buffers: none).
    recv_buffers: pool::Shape,
    pub(crate) stats: Arc<Stats>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("entries", &self.entries)
            .field("mode", &self.mode)
            .field("rings", &*lock(&self.rings))
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Every ring set up so far (one per worker that has started).
    pub(crate) fn rings(&self) -> Vec<Arc<Ring>> {
        lock(&self.rings).clone()
    }

    /// A snapshot of the counters, the pools summed over the rings.
    pub(crate) fn metrics(&self) -> super::IoMetrics {
        let s = &*self.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut m = super::IoMetrics {
            enters: get(&s.enters),
            submit_calls: get(&s.submit_calls),
            submitted: get(&s.submitted),
            deferred: get(&s.deferred),
            completions: get(&s.completions),
            inline: get(&s.inline),
            streams: get(&s.streams),
            throttled: get(&s.throttled),
            followed: get(&s.followed),
            ..Default::default()
        };
        for ring in self.rings() {
            if let Some(pool) = ring.pool() {
                let (count, lent, dry) = pool.counts();
                m.recv_buffers += u64::from(count);
                m.recv_buffers_lent += lent as u64;
                m.recv_pool_dry += dry;
            }
        }
        m
    }
}

/// The io_uring driver of a runtime. See the module docs of [`crate::io`].
pub(crate) struct Driver {
    shared: Arc<Shared>,
    done: AtomicBool,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

/// The opcodes the operations use, with the kernel that brought them.
const NEEDED: [(u8, &str, &str); 9] = [
    (opcode::Nop::CODE, "NOP", "5.1"),
    (opcode::Read::CODE, "READ", "5.6"),
    (opcode::Write::CODE, "WRITE", "5.6"),
    (opcode::Recv::CODE, "RECV", "5.6"),
    (opcode::Send::CODE, "SEND", "5.6"),
    (opcode::Accept::CODE, "ACCEPT", "5.5"),
    (opcode::Connect::CODE, "CONNECT", "5.5"),
    (opcode::Close::CODE, "CLOSE", "5.6"),
    (opcode::Timeout::CODE, "TIMEOUT", "5.4"),
];

/// Why `io_uring_setup` failed, in words that name the fix.
fn explain_setup_error(e: &io::Error) -> io::Error {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let why = match (e.raw_os_error(), disabled) {
        (Some(libc::ENOSYS), _) => "the kernel has no io_uring (ENOSYS): it is older than 5.1 \
             or built without CONFIG_IO_URING; run on Linux 5.11 or newer"
            .to_owned(),
        (Some(libc::EPERM), Some(d)) if d > 0 => format!(
            "io_uring is disabled by the sysctl kernel.io_uring_disabled = {d} (EPERM); \
             set it to 0, or (for 1) run as a member of kernel.io_uring_group"
        ),
        (Some(libc::EPERM), _) => "io_uring_setup is not permitted (EPERM): a seccomp profile \
             (e.g. a container runtime's default) blocks it; allow io_uring_setup, \
             io_uring_enter and io_uring_register"
            .to_owned(),
        (Some(libc::ENOMEM), _) => "io_uring_setup could not lock memory for the rings (ENOMEM); \
             raise RLIMIT_MEMLOCK (ulimit -l) or use fewer entries (io::Config::entries)"
            .to_owned(),
        (Some(libc::EINVAL), _) => "io_uring_setup rejected the parameters (EINVAL); \
             use a power of two between 1 and 32768 for io::Config::entries"
            .to_owned(),
        _ => format!("io_uring_setup failed: {e}"),
    };
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("io_uring is unavailable: {why}"),
    )
}

impl Driver {
    /// Checks that io_uring works here (a probe ring: setup flags, opcodes); the
    /// rings themselves are set up by the workers ([`Driver::start_local`]).
    ///
    /// # Errors
    /// `Unsupported` with a message saying why io_uring is unavailable and what to
    /// change.
    pub(crate) fn new(config: &Config) -> io::Result<Driver> {
        let (ring, mode) = Mode::Defer.build_best(config.entries);
        let ring = ring.map_err(|e| explain_setup_error(&e))?;
        let mut probe = Probe::new();
        if ring.submitter().register_probe(&mut probe).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring is unavailable: the kernel cannot report its opcodes \
                 (IORING_REGISTER_PROBE needs Linux 5.6); run on Linux 5.11 or newer",
            ));
        }
        if let Some((_, name, since)) = NEEDED.iter().find(|(op, ..)| !probe.is_supported(*op)) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "io_uring is unavailable: the kernel lacks IORING_OP_{name} \
                     (Linux {since}); run on Linux 5.11 or newer"
                ),
            ));
        }
        Ok(Driver {
            shared: Arc::new(Shared {
                rings: Mutex::new(Vec::new()),
                closing: AtomicBool::new(false),
                entries: config.entries,
                batch: u64::from(config.submit_batch.max(1)),
                mode,
                futex_ok: probe.is_supported(opcode::FutexWait::CODE),
                recv_buffers: config.pool_shape(),
                stats: Arc::new(Stats::default()),
            }),
            done: AtomicBool::new(false),
        })
    }

    /// A snapshot of the driver's counters.
    pub(crate) fn metrics(&self) -> super::IoMetrics {
        self.shared.metrics()
    }

    /// The state operations share (for tests).
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Sets up the calling worker's ring (it becomes the ring's only issuer), with
    /// `parker` as its doorbell. On failure the worker's operations fail saying
    /// why (and it parks on its eventfd).
    pub(crate) fn start_local(&self, exec: Arc<Executor<WorkerPlatform>>, parker: Arc<Parker>) {
        let shared = &*self.shared;
        if shared.closing.load(Ordering::Acquire) {
            return set_local_error(closed_error().to_string());
        }
        let (uring, mode) = shared.mode.build_best(shared.entries);
        let uring = match uring {
            Ok(u) => u,
            Err(e) => return set_local_error(explain_setup_error(&e).to_string()),
        };
        let pool = register_pool(&uring, shared.recv_buffers);
        let ring = Arc::new(Ring {
            exec,
            slots: Mutex::new(Slots {
                slots: Vec::new(),
                free: Vec::new(),
                in_kernel: 0,
            }),
            flushed: AtomicU64::new(0),
            remote: super::remote::RemoteQueue::default(),
            parker,
            closed: AtomicBool::new(false),
            batch: shared.batch,
            stats: shared.stats.clone(),
            pool,
        });
        lock(&shared.rings).push(ring.clone());
        let local = Rc::new(Local {
            ring,
            uring,
            mode,
            pushed: Cell::new(0),
            efd_buf: Box::into_raw(Box::new(0u64)),
            efd_armed: Cell::new(false),
            futex_armed: Cell::new(false),
            futex_registration: Cell::new(0),
            futex_cancelling: Cell::new(false),
            futex_ok: shared.futex_ok,
            wake: RefCell::new(Vec::new()),
        });
        local.arm_doorbell();
        local.flush();
        LOCAL.with(|l| *l.borrow_mut() = LocalState::Ring(local));
    }

    /// Called after the runtime joined its workers (each tore its ring down):
    /// refuses new rings and checks that no ring holds anything. Idempotent.
    pub(crate) fn shutdown(&self) {
        if self.done.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.closing.store(true, Ordering::Release);
        let rings = self.shared.rings();
        let open = rings
            .iter()
            .filter(|r| !r.closed.load(Ordering::Acquire))
            .count();
        let stuck: usize = rings.iter().map(|r| r.in_kernel()).sum();
        if stuck > 0 && open == 0 {
            eprintln!(
                "ss-runtime io: at shutdown {stuck} operation(s) are still in the kernel; \
                 their buffers are leaked rather than freed under the kernel"
            );
        }
        // An open ring belongs to a worker that was not joined (the runtime was
        // dropped from one of its own coroutines): it tears its ring down when
        // its poll ends and its thread exits.
    }

    /// Whether every ring has been torn down (for tests).
    #[cfg(test)]
    pub(crate) fn rings_closed(&self) -> bool {
        self.shared
            .rings()
            .iter()
            .all(|r| r.closed.load(Ordering::Acquire))
    }

    /// Slots the kernel may still write through, over every ring (for tests).
    #[cfg(test)]
    pub(crate) fn in_kernel(&self) -> usize {
        self.shared.rings().iter().map(|r| r.in_kernel()).sum()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.shutdown();
    }
}
