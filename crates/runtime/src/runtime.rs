//! The runtime: an executor, the worker threads that poll it, and the io_uring
//! driver.
//!
//! # Threads
//!
//! `workers` threads each run one [`Poller`](ss_core::Poller) of the runtime's one
//! [`Executor`]: every pick on every worker takes the most important ready
//! coroutine, so while any worker runs a coroutine of priority *p*, nothing more
//! important is waiting for a CPU (strict priority across workers). An idle worker
//! spins for [`Builder::idle_spin`] watching the executor's bitmap, then sleeps;
//! a push wakes a sleeping worker. [`Runtime::alloc_cpu`] adds a worker while the
//! runtime runs (the paper's `alloc_cpu`).
//!
//! # The main coroutine
//!
//! [`Runtime::block_on`] wraps its future into the **main coroutine** (paper
//! §3.1): a coroutine of kind `Main` at [`Builder::main_priority`], scheduled like
//! every other; the calling thread sleeps until it finishes. That is why the
//! future must be `Send + 'static`.
//!
//! # Shutdown order
//!
//! Dropping the runtime (or [`Runtime::shutdown`]):
//! 1. shuts the executor down: every coroutine is cancelled and its future dropped
//!    (its `JoinHandle` reports `Cancelled`); an in-flight I/O operation's buffer
//!    passes to the driver;
//! 2. joins every worker thread: each returns once the executor is shut down,
//!    and before its thread exits tears its io_uring ring down (in-flight
//!    operations cancelled, their completions awaited, their buffers freed);
//! 3. shuts the driver down: new operations are refused, and it checks that no
//!    ring holds anything.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, JoinHandle as ThreadHandle, Thread};
use std::time::Duration;

use ss_core::{CoroutineId, CoroutineKind, Executor, Levels, Priority};

use crate::context;
use crate::coordinate::Coordination;
use crate::io::{Config as IoConfig, Driver};
use crate::join::{Harness, JoinError, JoinHandle, Slot};
use crate::WorkerPlatform;

/// Why a coroutine could not be spawned.
#[derive(Debug)]
#[non_exhaustive]
pub enum SpawnError {
    /// The priority does not fit the runtime's levels.
    Priority(ss_abi::InvalidPriority),
    /// The runtime is shut down.
    ShutDown,
    /// No room for another coroutine.
    TooMany,
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnError::Priority(e) => e.fmt(f),
            SpawnError::ShutDown => f.write_str(
                "the runtime is shut down; spawn on a running runtime (or build a new one)",
            ),
            SpawnError::TooMany => f.write_str(
                "4 294 967 295 coroutines are alive at once; let some finish before spawning more",
            ),
        }
    }
}

impl std::error::Error for SpawnError {}

impl From<ss_core::Error> for SpawnError {
    fn from(e: ss_core::Error) -> Self {
        match e {
            ss_core::Error::Priority(p) => SpawnError::Priority(p),
            ss_core::Error::TooManyCoroutines => SpawnError::TooMany,
            _ => SpawnError::ShutDown,
        }
    }
}

/// Configures and builds a [`Runtime`].
#[derive(Clone, Debug)]
pub struct Builder {
    workers: usize,
    levels: Levels,
    idle_spin: Duration,
    adaptive_spin: bool,
    main_priority: Priority,
    io: IoConfig,
    thread_name: String,
    coordination: Coordination,
    defer_recheck: Duration,
    os_yield_after: Duration,
    nudge_after: Duration,
    reserve_after: Duration,
    reserve_always: bool,
    hot_wakes: bool,
    stall_watch: Duration,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            workers: thread::available_parallelism().map_or(1, |n| n.get()),
            levels: Levels::DEFAULT,
            idle_spin: WorkerPlatform::DEFAULT_SPIN,
            adaptive_spin: true,
            main_priority: Priority::MOST_IMPORTANT,
            io: IoConfig::default(),
            thread_name: "ss-worker".to_owned(),
            coordination: Coordination::FromEnv,
            defer_recheck: crate::coordinate::DEFAULT_RECHECK,
            os_yield_after: Duration::ZERO,
            nudge_after: WorkerPlatform::DEFAULT_NUDGE,
            reserve_after: WorkerPlatform::DEFAULT_RESERVE_AFTER,
            reserve_always: false,
            hot_wakes: false,
            stall_watch: WorkerPlatform::DEFAULT_STALL_WATCH,
        }
    }
}

impl Builder {
    /// A builder with the defaults: one worker per CPU, 8 priority levels, a 20 µs
    /// idle spin, the main coroutine at priority 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many worker threads poll the executor (at least 1).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// How many priority levels (1 to 64).
    pub fn levels(mut self, levels: Levels) -> Self {
        self.levels = levels;
        self
    }

    /// How long an idle worker spins, watching for work, before it sleeps in the
    /// OS. Waking a sleeping worker costs ~40 µs on a 2-vCPU VM against well under
    /// a microsecond for a spinning one; spinning burns its CPU meanwhile.
    /// `Duration::ZERO` sleeps at once.
    pub fn idle_spin(mut self, spin: Duration) -> Self {
        self.idle_spin = spin;
        self
    }

    /// Whether an idle worker spins only while its recent spins found work
    /// (`true`, the default) or every time it goes idle (`false`). With the
    /// adaptive spin a worker whose spins keep timing out (gaps between
    /// events longer than [`idle_spin`](Self::idle_spin)) parks at once and
    /// spins once in 8 idle periods, to notice the gaps shortening: at
    /// moderate load it saves most of the spin's CPU, which on a small
    /// machine the process's clients need (`docs/runtime.md` has the
    /// measurements).
    pub fn adaptive_spin(mut self, adaptive: bool) -> Self {
        self.adaptive_spin = adaptive;
        self
    }

    /// The priority of the main coroutine of [`Runtime::block_on`].
    pub fn main_priority(mut self, priority: Priority) -> Self {
        self.main_priority = priority;
        self
    }

    /// The io_uring driver's configuration.
    pub fn io(mut self, io: IoConfig) -> Self {
        self.io = io;
        self
    }

    /// Cross-process scheduling (paper §2.4): whether and how this runtime joins
    /// the `ss-coord` coordinator. The default, [`Coordination::FromEnv`], follows
    /// the `SS_COORD` environment variable (not coordinated when unset). See
    /// [`crate::coordinate`] for what a coordinated runtime does.
    pub fn coordination(mut self, c: Coordination) -> Self {
        self.coordination = c;
        self
    }

    /// How long a worker that defers to another process sleeps at most before it
    /// decides again, if neither the global page nor its own ring wakes it first
    /// (default 1 ms; see [`crate::coordinate`]).
    pub fn defer_recheck(mut self, d: Duration) -> Self {
        self.defer_recheck = d;
        self
    }

    /// Opt-in: how long a worker may run coroutines without sleeping before it
    /// lets other runnable threads have its CPU (a `sched_yield` between two
    /// polls; default `Duration::ZERO`: never). It keeps a worker that always
    /// has work from holding a CPU that another thread — a client of this
    /// process, another worker whose io_uring ring holds completions — waits
    /// for until the kernel's next tick; but beside a CPU-bound thread of the
    /// same weight each yield costs a time slice. `docs/runtime.md` has the
    /// measurements of both sides; 20 µs suits a server sharing its CPUs with
    /// its own clients.
    pub fn os_yield_after(mut self, after: Duration) -> Self {
        self.os_yield_after = after;
        self
    }

    /// How long a worker may go without running a coroutine poll, while not
    /// sleeping, before a worker that is about to sleep moves it onto its own
    /// CPU (default 100 µs; `Duration::ZERO`: never). Such a worker is nearly
    /// always runnable and waiting for a CPU the OS gave another thread, and the
    /// completions of its io_uring ring wait with it. The move changes its CPU
    /// affinity to the sleeping worker's CPU; it restores the affinity it
    /// started with as it runs again. `docs/runtime.md` has the design and
    /// the measurements.
    pub fn nudge_after(mut self, after: Duration) -> Self {
        self.nudge_after = after;
        self
    }

    /// While the rest of the machine takes half or more of the CPUs beyond
    /// one, holds idle workers beyond the first in reserve until the first has had
    /// work waiting, without sleeping, for `after`; then they are called out
    /// to help (default 10 ms; `Duration::ZERO`: never — every idle worker is
    /// a sleeper that any push may wake).
    ///
    /// A worker in reserve sleeps without taking part in wake-ups, so a
    /// process whose load fits the one CPU it is left runs on one worker: its
    /// connections' operations gather on that worker's io_uring ring, instead
    /// of following whichever worker polled them last onto a ring whose owner
    /// the OS keeps waiting for a CPU. It still delivers its own ring's
    /// completions (leaving the coroutines they wake to the others), and comes
    /// out by itself if ready work stalls (nothing popped between two of its
    /// looks, 1–8 ms apart). "Half or more": the other processes took at
    /// least 0.5 × (CPUs − 1) over the last quarter second (`/proc/stat` less
    /// this process's own time), and it ends at a third or below — the same
    /// verdict that stops idle workers from spinning. Only with io_uring;
    /// the first worker is never held. The `park` module docs and
    /// `docs/runtime.md` have the design and the measurements.
    pub fn reserve_after(mut self, after: Duration) -> Self {
        self.reserve_after = after;
        self
    }

    /// Holds the reserve of [`reserve_after`](Builder::reserve_after) however
    /// busy the rest of the machine is (default `false`: only while the
    /// others take half or more of the CPUs beyond one) — for a process that knows it shares its
    /// CPUs, and for tests.
    pub fn reserve_always(mut self, always: bool) -> Self {
        self.reserve_always = always;
        self
    }

    /// Whether a coroutine woken from inside a poll runs next on the worker
    /// that woke it, ahead of its equals that waited (see
    /// `ss_core::platform::Park::hot_wake`; default `false`: the paper's FIFO
    /// order among coroutines of one priority). Priority is strict either
    /// way; the hot order only reorders equals, and a level serves at most
    /// [`ss_core::HOT_RUN`] hot coroutines in a row while an older one waits.
    /// It trades tail latency for throughput where a worker's cache is the
    /// limit: one worker serving 1 024 back-to-back connections answered
    /// 1.14–1.57× as many requests with it (four alternations), at a higher
    /// p99; with two workers the throughput did not move and the p99 rose
    /// (`docs/runtime.md`).
    pub fn hot_wakes(mut self, hot: bool) -> Self {
        self.hot_wakes = hot;
        self
    }

    /// The shortest period of a watch thread that looks for ready coroutines
    /// no worker picks up while a worker sleeps (default 1 ms;
    /// `Duration::ZERO`: no watch). A push from inside a poll leaves waking a
    /// sleeping worker to the worker polling, which does it when the poll
    /// ends; the watch bounds that wait when the poll runs long (a coroutine
    /// that spawns another and then computes) or its worker is kept off its
    /// CPU: ~17 ms after a quiet spell, ~32 ms amid steady work (its period
    /// doubles from this one up to 16 ms). Started with the second worker
    /// (with the first in a coordinated runtime, where it also registers
    /// again with a restarted coordinator; `Duration::ZERO` turns that off
    /// too); it sleeps while every worker has slept for a second. `docs/runtime.md`
    /// has the design and what it costs.
    pub fn stall_watch(mut self, period: Duration) -> Self {
        self.stall_watch = period;
        self
    }

    /// The name prefix of the worker threads: they are `{name}-{index}`
    /// (default `ss-worker`).
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self
    }

    /// Builds the runtime and starts its workers.
    ///
    /// io_uring being unavailable is not an error here: the runtime runs, and each
    /// I/O operation then fails with an error that says why.
    ///
    /// # Errors
    /// An invalid configuration (no workers, a main priority beyond the levels,
    /// a receive pool of a shape io_uring cannot have), or a worker thread that
    /// could not be started.
    pub fn build(self) -> io::Result<Runtime> {
        if self.workers == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a runtime needs at least one worker; use Builder::workers(1) or more",
            ));
        }
        self.levels
            .check(self.main_priority)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        if self.io.recv_buffers.0 != 0 {
            crate::io::pool::validate(self.io.pool_shape())?;
        }
        let global = self
            .coordination
            .join()?
            .map(|(client, path)| crate::coordinate::Global::new(client, path, self.defer_recheck));
        let io = Driver::new(&self.io).map_err(|e| e.to_string());
        let exec = Arc::new(Executor::with_platform(
            self.levels,
            WorkerPlatform::with_spin(self.idle_spin)
                .with_rings(io.is_ok())
                .with_nudge(self.nudge_after)
                .with_reserve_after(self.reserve_after)
                .with_reserve_always(self.reserve_always)
                .with_hot_wakes(self.hot_wakes)
                .with_stall_watch(self.stall_watch)
                .with_adaptive_spin(self.adaptive_spin),
        ));
        let inner = Arc::new(Inner {
            exec,
            io,
            workers: Mutex::new(Vec::new()),
            shut_down: AtomicBool::new(false),
            main_priority: self.main_priority,
            thread_name: self.thread_name,
            global,
            timers: crate::time::Timers::default(),
            os_yield_after: self.os_yield_after,
        });
        if let Some(g) = &inner.global {
            inner.exec.platform().watch.set_periodic(g.reconnector());
        }
        let rt = Runtime { inner };
        for _ in 0..self.workers {
            rt.inner.start_worker()?;
        }
        Ok(rt)
    }
}

/// The state shared by a runtime's handle, its workers and its coroutines.
pub(crate) struct Inner {
    pub(crate) exec: Arc<Executor<WorkerPlatform>>,
    io: Result<Driver, String>,
    workers: Mutex<Vec<ThreadHandle<()>>>,
    shut_down: AtomicBool,
    main_priority: Priority,
    thread_name: String,
    /// The cross-process state, when coordinated.
    pub(crate) global: Option<crate::coordinate::Global>,
    /// Timers for where io_uring is unavailable (a thread, started on first use).
    timers: crate::time::Timers,
    /// See [`Builder::os_yield_after`].
    os_yield_after: Duration,
}

impl Inner {
    /// The fallback timers (see [`crate::time`]).
    pub(crate) fn timers(&self) -> &crate::time::Timers {
        &self.timers
    }

    /// The worker threads' name prefix.
    pub(crate) fn thread_name(&self) -> &str {
        &self.thread_name
    }

    /// The io_uring driver, or why there is none.
    pub(crate) fn io(&self) -> io::Result<&Driver> {
        self.io.as_ref().map_err(|why| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("asynchronous I/O is unavailable in this runtime: {why}"),
            )
        })
    }

    fn start_worker(self: &Arc<Self>) -> io::Result<usize> {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if self.shut_down.load(Ordering::Acquire) {
            return Err(io::Error::other(
                "the runtime is shut down; it takes no more workers",
            ));
        }
        let index = workers.len();
        let mut poller = self.exec.poller();
        let inner = self.clone();
        let handle = thread::Builder::new()
            .name(format!("{}-{index}", self.thread_name))
            .spawn(move || {
                let _enter = context::enter(inner.clone());
                // Its doorbell and io_uring ring; dropped (the ring torn down)
                // once the executor is shut down and the poller returns.
                let worker = crate::park::Worker::start();
                let mut os_yield = crate::park::OsYield::new(inner.os_yield_after);
                match &inner.global {
                    None if inner.os_yield_after.is_zero() => {
                        poller.run();
                    }
                    None => {
                        poller.run_while_carrying(|_| {
                            os_yield.tick();
                            true
                        });
                    }
                    Some(g) => g.run_worker(index, &mut poller, &inner.exec, &mut os_yield),
                }
                drop(worker);
            })?;
        workers.push(handle);
        if workers.len() >= 2 || self.global.is_some() {
            // Somebody to wake: the watch has something to do. (Coordinated,
            // it also looks after the registration: `Global::reconnector`.)
            self.exec
                .platform()
                .watch
                .start(Arc::downgrade(&self.exec), &self.thread_name);
        }
        Ok(workers.len())
    }

    pub(crate) fn spawn<F>(
        &self,
        future: F,
        priority: Priority,
        kind: CoroutineKind,
    ) -> Result<JoinHandle<F::Output>, SpawnError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let slot = Slot::new();
        let cid = self
            .exec
            .spawn_kind(Harness::new(future, slot.clone()), priority, kind)?;
        Ok(JoinHandle::new(slot, cid, self.exec.clone()))
    }

    fn shutdown(&self) {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return;
        }
        self.exec.shutdown();
        self.exec.platform().watch.stop();
        // Workers in reserve are no sleepers the shutdown wakes.
        self.exec.platform().call_out();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        let me = thread::current().id();
        for w in workers {
            // A runtime dropped from one of its own coroutines cannot join the
            // thread it runs on; that worker returns on its own once its poll ends.
            if w.thread().id() != me {
                let _ = w.join();
            }
        }
        self.timers.shutdown();
        if let Ok(io) = &self.io {
            io.shutdown();
        }
    }
}

/// A SharedScheduler runtime: priority coroutines on worker threads, with
/// io_uring asynchronous system calls. See the module docs.
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("workers", &self.workers())
            .field("executor", &*self.inner.exec)
            .field("io", &self.inner.io.is_ok())
            .finish()
    }
}

impl Runtime {
    /// A builder.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// A runtime with the default configuration.
    ///
    /// # Errors
    /// As [`Builder::build`].
    pub fn new() -> io::Result<Runtime> {
        Builder::new().build()
    }

    /// Runs `future` as the main coroutine and returns its output (see the module
    /// docs). A panic of the main coroutine resumes on the calling thread.
    ///
    /// # Panics
    /// If the runtime is shut down, or the main coroutine is cancelled; and,
    /// at once, if called on a worker thread of a runtime (from inside a
    /// coroutine): that worker would sleep until the main coroutine ends, and
    /// with one worker nobody would ever run it. Await the future there, or
    /// `spawn` it.
    pub fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        assert!(
            context::try_with_current(|_| ()).is_none(),
            "Runtime::block_on called on a thread that already runs a SharedScheduler \
             runtime (from inside a coroutine?): it would put this worker to sleep until \
             the future ends, and no worker might be left to run it; `.await` the future \
             or `spawn` it instead"
        );
        let _enter = context::enter(self.inner.clone());
        let mut handle =
            match self
                .inner
                .spawn(future, self.inner.main_priority, CoroutineKind::Main)
            {
                Ok(h) => h,
                Err(e) => panic!("block_on: cannot start the main coroutine: {e}"),
            };
        let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            match std::pin::Pin::new(&mut handle).poll(&mut cx) {
                Poll::Ready(Ok(v)) => return v,
                Poll::Ready(Err(JoinError::Panic(p))) => std::panic::resume_unwind(p),
                Poll::Ready(Err(JoinError::Cancelled)) => {
                    panic!("block_on: the main coroutine was cancelled (the runtime shut down?)")
                }
                Poll::Pending => thread::park(),
            }
        }
    }

    /// Spawns a coroutine at `priority` (paper Table 1: `spawn(future, prio)`).
    ///
    /// # Errors
    /// [`SpawnError`] for a priority beyond the levels or a shut-down runtime.
    pub fn spawn<F>(
        &self,
        future: F,
        priority: Priority,
    ) -> Result<JoinHandle<F::Output>, SpawnError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.spawn(future, priority, CoroutineKind::Normal)
    }

    /// Adds a worker thread (paper Table 1: `alloc_cpu`). Returns the number of
    /// workers now.
    ///
    /// # Errors
    /// If the runtime is shut down or the thread cannot be started.
    pub fn alloc_cpu(&self) -> io::Result<usize> {
        self.inner.start_worker()
    }

    /// The number of worker threads.
    pub fn workers(&self) -> usize {
        self.inner
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Whether this runtime follows the cross-process coordinator (it was
    /// built coordinated, and the coordinator has not gone away).
    pub fn coordinated(&self) -> bool {
        self.inner.global.as_ref().is_some_and(|g| g.active())
    }

    /// How many times a worker started deferring to more important work in
    /// another process (0 when not coordinated).
    pub fn deferrals(&self) -> u64 {
        self.inner.global.as_ref().map_or(0, |g| g.deferrals())
    }

    /// How many times a worker about to sleep moved another worker, silent for
    /// [`Builder::nudge_after`], onto its own CPU.
    pub fn nudges(&self) -> u64 {
        self.inner.exec.platform().beats.nudges()
    }

    /// How many times the watch ([`Builder::stall_watch`]) woke a sleeping
    /// worker for ready coroutines that nobody had picked up between two of
    /// its looks.
    pub fn stall_unparks(&self) -> u64 {
        self.inner.exec.platform().watch.unparks()
    }

    /// The io_uring driver's counters (submissions, completions, multishot
    /// receives, the receive pools), or `None` if this runtime has no
    /// io_uring.
    ///
    /// ```
    /// let rt = ss_runtime::Runtime::builder().workers(1).build()?;
    /// let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    /// let (n, _buf) = rt.block_on(ss_runtime::io::write(null, vec![0; 8]));
    /// assert_eq!(n?, 8);
    /// if let Some(m) = rt.io_metrics() {
    ///     // The write went through the ring: submitted, and reaped.
    ///     assert!(m.submitted >= 1 && m.completions >= 1, "{m:?}");
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn io_metrics(&self) -> Option<crate::io::IoMetrics> {
        self.inner.io().ok().map(Driver::metrics)
    }

    /// The coordinator client, when coordinated: its view of the global
    /// bitmap, this process's ceiling, its levels.
    pub fn coordinator(&self) -> Option<&ss_coord::Client> {
        self.inner.global.as_ref().map(|g| g.client())
    }

    /// The executor, for what the runtime does not wrap (state, blocking set,
    /// ready bitmap).
    pub fn executor(&self) -> &Executor<WorkerPlatform> {
        &self.inner.exec
    }

    /// Wakes coroutine `cid` (paper Table 1: `wake(cid)`).
    ///
    /// # Errors
    /// `ss_core::Error::NoSuchCoroutine` if it is not alive.
    pub fn wake(&self, cid: CoroutineId) -> Result<ss_core::Wake, ss_core::Error> {
        self.inner.exec.wake(cid)
    }

    /// Changes coroutine `cid`'s priority (paper Table 1: `reprio(cid, prio)`).
    ///
    /// # Errors
    /// `ss_core::Error::NoSuchCoroutine`, `ss_core::Error::Priority`.
    pub fn reprio(&self, cid: CoroutineId, priority: Priority) -> Result<(), ss_core::Error> {
        self.inner.exec.reprio(cid, priority)
    }

    /// Shuts the runtime down now (see the module docs); also done on drop.
    pub fn shutdown(self) {
        self.inner.shutdown();
    }

    #[cfg(test)]
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.inner.shutdown();
    }
}

/// Wakes a thread parked in `block_on`.
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Spawns a coroutine at `priority` on the calling thread's runtime.
///
/// # Panics
/// Outside a runtime, or if the runtime refuses (shut down, priority beyond its
/// levels); [`try_spawn`] returns the error instead.
pub fn spawn<F>(future: F, priority: Priority) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match try_spawn(future, priority) {
        Ok(h) => h,
        Err(e) => panic!("spawn: {e}"),
    }
}

/// Spawns a coroutine at `priority` on the calling thread's runtime.
///
/// # Errors
/// [`SpawnError`].
///
/// # Panics
/// Outside a runtime.
pub fn try_spawn<F>(future: F, priority: Priority) -> Result<JoinHandle<F::Output>, SpawnError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    context::with_current(|inner| inner.spawn(future, priority, CoroutineKind::Normal))
}

/// Wakes coroutine `cid` of the calling thread's runtime (paper: `wake(cid)`).
///
/// # Errors
/// `ss_core::Error::NoSuchCoroutine`.
///
/// # Panics
/// Outside a runtime.
pub fn wake(cid: CoroutineId) -> Result<ss_core::Wake, ss_core::Error> {
    context::with_current(|inner| inner.exec.wake(cid))
}

/// Changes coroutine `cid`'s priority (paper: `reprio(cid, prio)`).
///
/// # Errors
/// `ss_core::Error::NoSuchCoroutine`, `ss_core::Error::Priority`.
///
/// # Panics
/// Outside a runtime.
pub fn reprio(cid: CoroutineId, priority: Priority) -> Result<(), ss_core::Error> {
    context::with_current(|inner| inner.exec.reprio(cid, priority))
}

/// The current priority of coroutine `cid` of the calling thread's runtime.
///
/// # Errors
/// `ss_core::Error::NoSuchCoroutine`.
///
/// # Panics
/// Outside a runtime.
pub fn priority(cid: CoroutineId) -> Result<Priority, ss_core::Error> {
    context::with_current(|inner| inner.exec.priority(cid))
}

/// Adds a worker thread to the calling thread's runtime (paper: `alloc_cpu()`).
/// Returns the number of workers now.
///
/// # Errors
/// As [`Runtime::alloc_cpu`].
///
/// # Panics
/// Outside a runtime.
pub fn alloc_cpu() -> io::Result<usize> {
    context::with_current(|inner| inner.start_worker())
}

/// The id of the calling coroutine (paper: `getcid()`), or `None` outside one.
pub async fn current() -> Option<CoroutineId> {
    ss_core::current_cid().await
}
