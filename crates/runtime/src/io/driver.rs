//! The io_uring driver: one ring, a table of in-flight operations, and the
//! completion thread that turns completions into wake-ups by coroutine id.
//!
//! ```text
//!  worker threads ──push SQE──► sq lock ─► submission queue ──io_uring_enter──► kernel
//!      ▲  (op futures)           (flush: one syscall per batch)                    │
//!      │                                                                            ▼
//!      └──── exec.wake(cid) ◄── completion thread ◄── completion queue ◄──── CQEs
//!                                 (stores the result in the op's slot first)
//! ```
//!
//! # Who touches what
//!
//! - The **submission queue** is pushed to and flushed (`io_uring_enter` with
//!   `to_submit`) only under the `sq` lock, by whichever thread polls or drops an
//!   operation (workers, or the thread running [`Driver::shutdown`]).
//! - The **completion queue** is read only by the completion thread.
//! - The **slot table** (`slots` lock) maps an operation's key (the SQE's
//!   `user_data`) to its state: in flight with a waiter, done with a result, or
//!   abandoned with the buffers the kernel may still write. Both sides take it; it
//!   is held for a few field writes, never across a syscall.
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
//! The kernel may write into an operation's memory from submission until its
//! completion is posted, so that memory is freed only on the right of a `CQE`
//! arrow: by the op future that takes a `Done` result, or by the completion thread
//! for an abandoned one.
//!
//! # Shutdown order
//!
//! [`Driver::shutdown`] (idempotent; the runtime calls it after the executor is
//! shut down, so every coroutine's operations are already abandoned):
//! 1. mark the driver closing: new operations fail with an error naming why;
//! 2. submit `IORING_OP_ASYNC_CANCEL` for every slot the kernel still holds;
//! 3. wait (bounded, re-cancelling) until every one of them has completed, so their
//!    buffers are freed by the completion thread;
//! 4. stop the completion thread (a `NOP` wakes it) and join it.
//!
//! If the kernel never completes an operation (it should not: every operation we
//! issue is cancellable), its buffers are deliberately leaked rather than freed
//! under the kernel's feet, and `shutdown` says so on stderr.

use std::any::Any;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, IoUring, Probe};
use ss_core::{CoroutineId, Executor};

use super::Config;
use crate::WorkerPlatform;

/// `user_data` of the `NOP` that wakes the completion thread to stop.
const WAKE_TOKEN: u64 = u64::MAX;
/// `user_data` of `ASYNC_CANCEL` requests (their own completions are ignored).
const CANCEL_TOKEN: u64 = u64::MAX - 1;
/// Generations use 31 bits, so an operation's key never has the top bit set and
/// cannot collide with the tokens above.
const GEN_MASK: u32 = 0x7fff_ffff;

/// How long [`Driver::shutdown`] waits for cancelled operations to complete.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Locks a mutex, ignoring poisoning: every critical section here leaves the
/// data consistent before anything in it can panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whom a completion wakes.
pub(crate) enum Waiter {
    /// A coroutine of the runtime's executor, by id (the paper's wake-by-cid).
    Cid(CoroutineId),
    /// A foreign waker (the op is polled inside a combinator with its own waker).
    Waker(Waker),
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

    /// Records a re-poll's waker, if it differs from the one recorded.
    fn update(&mut self, waker: &Waker, exec: &Executor<WorkerPlatform>) {
        match (exec.own_cid(waker), &*self) {
            (Some(cid), Waiter::Cid(old)) if *old == cid => {}
            (None, Waiter::Waker(old)) if old.will_wake(waker) => {}
            _ => *self = Waiter::of(waker, exec),
        }
    }

    fn wake(self, exec: &Executor<WorkerPlatform>) {
        match self {
            // `NoSuchCoroutine`: it was cancelled meanwhile; nobody to tell.
            Waiter::Cid(cid) => drop(exec.wake(cid)),
            Waiter::Waker(w) => w.wake(),
        }
    }
}

/// Memory an abandoned operation leaves with the driver until its completion.
pub(crate) type Keep = Box<dyn Any + Send>;

enum SlotState {
    Free,
    InFlight(Waiter),
    Done(i32),
    Abandoned(Keep),
}

struct Slot {
    generation: u32,
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

    fn insert(&mut self, waiter: Waiter) -> u64 {
        self.in_kernel += 1;
        match self.free.pop() {
            Some(index) => {
                let slot = &mut self.slots[index as usize];
                slot.state = SlotState::InFlight(waiter);
                Self::key(index, slot.generation)
            }
            None => {
                let index = u32::try_from(self.slots.len()).expect("2^32 operations in flight");
                self.slots.push(Slot {
                    generation: 0,
                    state: SlotState::InFlight(waiter),
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

/// Submission bookkeeping, guarded with the submission queue by one lock.
struct Sq {
    /// SQEs pushed so far (the next push gets this sequence number).
    pushed: u64,
}

/// Counters, for tests and measurements.
#[derive(Default)]
pub(crate) struct Stats {
    /// `io_uring_enter` calls that submitted something.
    pub(crate) submit_calls: AtomicU64,
    /// SQEs submitted by those calls.
    pub(crate) submitted: AtomicU64,
    /// Operations whose flush was deferred to let others join the batch.
    pub(crate) deferred: AtomicU64,
    /// Completions handled by the completion thread.
    pub(crate) completions: AtomicU64,
}

/// The state the driver shares with its operations and its completion thread.
pub(crate) struct Shared {
    ring: IoUring,
    exec: Arc<Executor<WorkerPlatform>>,
    sq: Mutex<Sq>,
    /// Every SQE with a sequence number below this has been submitted. Written
    /// under the `sq` lock, read without it.
    flushed: AtomicU64,
    slots: Mutex<Slots>,
    /// Held while the completion queue is drained: by the completion thread after
    /// each wait, or by an idle worker that finds completions while it spins
    /// (`try_reap`). Whoever holds it is the only one with a `CompletionQueue`.
    cq: Mutex<()>,
    /// Signalled when `in_kernel` drops to 0.
    drained: Condvar,
    closing: AtomicBool,
    stop: AtomicBool,
    pub(crate) batch: u64,
    pub(crate) stats: Stats,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("entries", &self.ring.params().sq_entries())
            .field("in_kernel", &lock(&self.slots).in_kernel)
            .finish_non_exhaustive()
    }
}

/// What pushing an SQE found.
pub(crate) enum Push {
    /// Queued with this sequence number.
    Queued(u64),
    /// The submission queue is full even after a flush; retry later.
    Full,
}

impl Shared {
    /// The executor whose coroutines the completions wake.
    pub(crate) fn exec(&self) -> &Executor<WorkerPlatform> {
        &self.exec
    }

    fn closed_error() -> io::Error {
        io::Error::other(
            "the io_uring driver is shut down (its runtime was dropped); \
             start I/O only while the runtime runs",
        )
    }

    /// Registers a new operation, to be woken through `waiter`.
    pub(crate) fn register(&self, waiter: Waiter) -> io::Result<u64> {
        let mut slots = lock(&self.slots);
        // Checked under the lock shutdown takes to collect the slots, so no
        // operation can register after shutdown looked.
        if self.closing.load(Ordering::Acquire) {
            return Err(Self::closed_error());
        }
        Ok(slots.insert(waiter))
    }

    /// Forgets a registered operation that was never pushed.
    pub(crate) fn unregister(&self, key: u64) {
        let mut slots = lock(&self.slots);
        if slots.get(key).is_some() {
            slots.remove(key);
            slots.in_kernel -= 1;
        }
    }

    /// Queues `sqe` (not yet submitted: see [`flush`](Self::flush)).
    ///
    /// # Safety
    /// Every pointer in `sqe` must stay valid, and the memory it points to must not
    /// be otherwise accessed while the kernel may use it, until the completion for
    /// its `user_data` has been handled (an op's memory lives in the op future, or,
    /// once the future is dropped, in its `Abandoned` slot).
    pub(crate) unsafe fn push(&self, sqe: &squeue::Entry) -> Push {
        let mut sq = lock(&self.sq);
        for attempt in 0..2 {
            // SAFETY: the `sq` lock is held, so no other `SubmissionQueue` of this
            // ring exists (the completion thread never touches the SQ).
            let mut queue = unsafe { self.ring.submission_shared() };
            // SAFETY: the caller guarantees the entry's memory outlives its use.
            let pushed = unsafe { queue.push(sqe) }.is_ok();
            drop(queue); // publishes the tail
            if pushed {
                let seq = sq.pushed;
                sq.pushed += 1;
                if sq.pushed - self.flushed.load(Ordering::Relaxed) >= self.batch {
                    self.flush_locked(&mut sq);
                }
                return Push::Queued(seq);
            }
            if attempt == 0 {
                self.flush_locked(&mut sq);
            }
        }
        Push::Full
    }

    /// Whether the SQE with sequence number `seq` still waits to be submitted.
    pub(crate) fn unsubmitted(&self, seq: u64) -> bool {
        seq >= self.flushed.load(Ordering::Acquire)
    }

    /// Submits every queued SQE (one `io_uring_enter`), if any.
    pub(crate) fn flush(&self) {
        let mut sq = lock(&self.sq);
        self.flush_locked(&mut sq);
    }

    fn flush_locked(&self, sq: &mut Sq) {
        let pending = sq.pushed - self.flushed.load(Ordering::Relaxed);
        if pending == 0 {
            return;
        }
        // EBUSY/EAGAIN (completion backlog, no memory): the entries stay queued and
        // the next flush retries them; the op polling us retries (see `op`).
        if let Ok(n) = self.ring.submit() {
            self.stats.submit_calls.fetch_add(1, Ordering::Relaxed);
            self.stats.submitted.fetch_add(n as u64, Ordering::Relaxed);
        }
        // SAFETY: the `sq` lock is held (see `push`).
        let left = unsafe { self.ring.submission_shared() }.len() as u64;
        self.flushed.store(sq.pushed - left, Ordering::Release);
    }

    /// The result of operation `key`, if it completed; otherwise records whom to
    /// wake. A taken result frees the slot.
    pub(crate) fn poll_result(&self, key: u64, waker: &Waker) -> Option<i32> {
        let mut slots = lock(&self.slots);
        let slot = slots
            .get(key)
            .expect("an operation polled after its slot was freed");
        match &mut slot.state {
            SlotState::InFlight(waiter) => {
                waiter.update(waker, &self.exec);
                None
            }
            SlotState::Done(res) => {
                let res = *res;
                slots.remove(key);
                Some(res)
            }
            SlotState::Free | SlotState::Abandoned(_) => {
                unreachable!("an operation polled after it was abandoned")
            }
        }
    }

    /// The op future of `key` is gone. If the kernel still holds the operation, its
    /// memory (`keep`) passes to the driver, which asks the kernel to cancel it and
    /// frees `keep` when the completion arrives; otherwise `keep` is dropped now.
    pub(crate) fn abandon(&self, key: u64, keep: Keep) {
        let mut slots = lock(&self.slots);
        let Some(slot) = slots.get(key) else {
            drop(slots);
            drop(keep);
            return;
        };
        if let SlotState::InFlight(_) = slot.state {
            slot.state = SlotState::Abandoned(keep);
            drop(slots);
            self.cancel(key);
        } else {
            slots.remove(key);
            drop(slots);
            drop(keep);
        }
    }

    /// Asks the kernel to cancel operation `key`, submitting at once (a cancelled
    /// receive must stop taking data now, not at the next batch).
    fn cancel(&self, key: u64) {
        let sqe = opcode::AsyncCancel::new(key)
            .build()
            .user_data(CANCEL_TOKEN);
        // SAFETY: ASYNC_CANCEL carries no pointer (the key is a plain value).
        if let Push::Queued(_) = unsafe { self.push(&sqe) } {
            self.flush();
        }
        // Full: the operation is cancelled by the shutdown sweep at the latest; its
        // memory stays with the driver meanwhile, so nothing is unsafe.
    }

    /// Handles one completion (called with the slot lock held). Returns whom to
    /// wake and what to free once the lock is released.
    fn complete(
        slots: &mut Slots,
        key: u64,
        res: i32,
        wake: &mut Vec<Waiter>,
        free: &mut Vec<Keep>,
    ) {
        let Some(slot) = slots.get(key) else {
            return;
        };
        match std::mem::replace(&mut slot.state, SlotState::Done(res)) {
            SlotState::InFlight(waiter) => {
                slots.in_kernel -= 1;
                wake.push(waiter);
            }
            SlotState::Abandoned(keep) => {
                slots.remove(key);
                slots.in_kernel -= 1;
                free.push(keep);
            }
            // A second completion for one key cannot happen (no multishot ops).
            other @ (SlotState::Done(_) | SlotState::Free) => slot.state = other,
        }
    }

    /// Drains the completion queue (the caller holds the `cq` lock, passed in),
    /// then wakes whom the completions name and frees abandoned memory, after
    /// releasing every lock. Returns whether there was any completion.
    fn reap(
        &self,
        cq_guard: MutexGuard<'_, ()>,
        wake: &mut Vec<Waiter>,
        free: &mut Vec<Keep>,
    ) -> bool {
        let mut any = false;
        let mut slots = lock(&self.slots);
        loop {
            // SAFETY: the `cq` lock is held, so this is the only `CompletionQueue`
            // of the ring.
            let cq = unsafe { self.ring.completion_shared() };
            if cq.is_empty() {
                break;
            }
            for cqe in cq {
                any = true;
                self.stats.completions.fetch_add(1, Ordering::Relaxed);
                let key = cqe.user_data();
                if key != WAKE_TOKEN && key != CANCEL_TOKEN {
                    Self::complete(&mut slots, key, cqe.result(), wake, free);
                }
            }
        }
        drop(cq_guard);
        let drained = slots.in_kernel == 0;
        drop(slots);
        if drained {
            self.drained.notify_all();
        }
        for w in wake.drain(..) {
            w.wake(&self.exec);
        }
        free.clear();
        any
    }

    /// For an idle worker: if no one else is draining the completion queue and it
    /// holds completions, drain it here, waking their coroutines — which this
    /// worker, being idle, then picks up without a hop through the completion
    /// thread. Returns whether it woke anything. Never blocks.
    pub(crate) fn try_reap(&self) -> bool {
        let Ok(guard) = self.cq.try_lock() else {
            return false;
        };
        // SAFETY: the `cq` lock is held.
        if unsafe { self.ring.completion_shared() }.is_empty() {
            return false;
        }
        let (mut wake, mut free) = (Vec::new(), Vec::new());
        self.reap(guard, &mut wake, &mut free)
    }

    /// The completion thread's loop.
    fn run_completions(&self) {
        let mut wake = Vec::new();
        let mut free = Vec::new();
        loop {
            // SAFETY: no argument pointer is passed; to_submit = 0 so the SQ (owned
            // by the `sq` lock holders) is not touched.
            let r = unsafe {
                self.ring.submitter().enter::<libc::sigset_t>(
                    0,
                    1,
                    io_uring::EnterFlags::GETEVENTS.bits(),
                    None,
                )
            };
            if let Err(e) = r {
                match e.raw_os_error() {
                    // Interrupted, or completions backed up: drain and go on.
                    Some(libc::EINTR | libc::EBUSY | libc::EAGAIN) => {}
                    _ => {
                        // Should not happen on a valid ring; do not spin.
                        eprintln!("ss-runtime io: io_uring_enter failed while waiting: {e}");
                        thread::sleep(Duration::from_millis(10));
                    }
                }
            }
            self.reap(lock(&self.cq), &mut wake, &mut free);
            if self.stop.load(Ordering::Acquire) {
                return;
            }
        }
    }
}

/// The io_uring driver of a runtime. See the module docs of [`crate::io`].
pub(crate) struct Driver {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
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
    /// Sets up the ring, checks the kernel supports every operation, and starts
    /// the completion thread.
    ///
    /// # Errors
    /// `Unsupported` with a message saying why io_uring is unavailable and what to
    /// change; or the error of spawning the thread.
    pub(crate) fn new(exec: Arc<Executor<WorkerPlatform>>, config: &Config) -> io::Result<Driver> {
        let ring = IoUring::builder()
            .setup_cqsize(config.entries.saturating_mul(4))
            .build(config.entries)
            .map_err(|e| explain_setup_error(&e))?;
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
        let shared = Arc::new(Shared {
            ring,
            exec,
            sq: Mutex::new(Sq { pushed: 0 }),
            flushed: AtomicU64::new(0),
            slots: Mutex::new(Slots {
                slots: Vec::new(),
                free: Vec::new(),
                in_kernel: 0,
            }),
            cq: Mutex::new(()),
            drained: Condvar::new(),
            closing: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            batch: u64::from(config.submit_batch.max(1)),
            stats: Stats::default(),
        });
        let for_thread = shared.clone();
        let thread = thread::Builder::new()
            .name("ss-io-completions".to_owned())
            .spawn(move || for_thread.run_completions())?;
        Ok(Driver {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The state operations share.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Cancels every in-flight operation, waits for their completions (freeing
    /// their buffers) and joins the completion thread. Idempotent. See the module
    /// docs for the order.
    pub(crate) fn shutdown(&self) {
        let Some(thread) = lock(&self.thread).take() else {
            return;
        };
        let shared = &*self.shared;
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut slots = lock(&shared.slots);
        shared.closing.store(true, Ordering::Release);
        loop {
            if slots.in_kernel == 0 {
                break;
            }
            let keys: Vec<u64> = slots
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    matches!(s.state, SlotState::InFlight(_) | SlotState::Abandoned(_))
                })
                .map(|(i, s)| Slots::key(i as u32, s.generation))
                .collect();
            drop(slots);
            for key in keys {
                shared.cancel(key);
            }
            shared.flush();
            slots = lock(&shared.slots);
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            // Re-cancel now and then: a cancel can lose a race with submission.
            let wait = (deadline - now).min(Duration::from_millis(100));
            slots = shared
                .drained
                .wait_timeout(slots, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let stuck = slots.in_kernel;
        if stuck > 0 {
            // Never free memory the kernel may still write: leak it instead.
            for slot in &mut slots.slots {
                if let SlotState::Abandoned(keep) =
                    std::mem::replace(&mut slot.state, SlotState::Free)
                {
                    std::mem::forget(keep);
                }
            }
            eprintln!(
                "ss-runtime io: {stuck} operation(s) did not complete within {SHUTDOWN_GRACE:?} \
                 of being cancelled; their buffers are leaked rather than freed under the kernel"
            );
        }
        drop(slots);
        shared.stop.store(true, Ordering::Release);
        let nop = opcode::Nop::new().build().user_data(WAKE_TOKEN);
        // SAFETY: NOP carries no pointer.
        while let Push::Full = unsafe { shared.push(&nop) } {
            thread::yield_now();
        }
        shared.flush();
        let _ = thread.join();
    }

    /// Whether the completion thread has been joined (for tests).
    #[cfg(test)]
    pub(crate) fn thread_joined(&self) -> bool {
        lock(&self.thread).is_none()
    }

    /// Slots the kernel may still write through (for tests).
    #[cfg(test)]
    pub(crate) fn in_kernel(&self) -> usize {
        lock(&self.shared.slots).in_kernel
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.shutdown();
    }
}
