//! Asynchronous system calls over io_uring (paper §3.2), completing by waking the
//! issuing coroutine by its id.
//!
//! In the paper, a coroutine's system call creates a kernel coroutine and returns
//! at once; the calling coroutine blocks; when the kernel coroutine finishes, it
//! wakes the caller *by cid*. Here the kernel's io_uring plays the kernel
//! coroutine: an operation future pushes a submission queue entry (SQE) and the
//! coroutine blocks; the worker that owns the ring the SQE went to reads the
//! completion (CQE), stores the result in the operation's slot, and calls
//! [`Executor::wake`](ss_core::Executor::wake)`(cid)`. Each worker thread owns
//! one ring (see [The rings](#the-rings-one-per-worker)).
//!
//! ```
//! use ss_runtime::{io, Runtime};
//! use std::os::fd::{FromRawFd, OwnedFd};
//!
//! let rt = Runtime::builder().workers(1).build()?;
//! rt.block_on(async {
//!     let mut fds = [0; 2];
//!     // SAFETY (of the example): pipe2 gives two fresh descriptors we own.
//!     assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
//!     let (rx, tx) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
//!     let (n, _) = io::write(&tx, b"hello".to_vec()).await;
//!     assert_eq!(n.unwrap(), 5);
//!     // Reads append into the buffer's spare capacity.
//!     let (n, buf) = io::read(&rx, Vec::with_capacity(64)).await;
//!     assert_eq!((n.unwrap(), &buf[..]), (5, &b"hello"[..]));
//! });
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Operations own their buffers
//!
//! Every operation takes its buffer by value and gives it back with the result:
//! `read(fd, Vec<u8>) -> (io::Result<usize>, Vec<u8>)`. That is what makes
//! dropping an operation in flight sound. When an operation future is dropped
//! before its completion (the coroutine was cancelled, a `timeout` fired, a
//! `select` took another branch), its buffer — and any socket address or
//! timespec the kernel points at — moves into the driver, which submits
//! `IORING_OP_ASYNC_CANCEL` at once and frees the memory only when the kernel
//! posts the completion. The kernel never writes into freed memory. Bytes a
//! cancelled receive had already taken are lost with its buffer.
//!
//! Reads (`read`, `recv`) append into the buffer's spare capacity
//! (`len()..capacity()`) and grow `len()` by the count: start with
//! `Vec::with_capacity(n)`, or `clear()` a buffer to reuse it. A buffer with no
//! spare capacity is an `InvalidInput` error (rather than a read of 0 bytes that
//! would look like end of file).
//!
//! # Wake-up by cid
//!
//! On its first poll an operation records who waits for it: the coroutine's id
//! (`Executor::own_cid(cx.waker())`), or — when it is polled under a foreign waker,
//! e.g. inside a combinator with a waker of its own — a clone of that waker.
//! Re-polls update it. The owning worker stores the result (the byte count
//! or errno; never a wake-up without a result) *before* waking, so the woken
//! coroutine finds it on its next poll. A coroutine that was cancelled meanwhile
//! is simply not found (`NoSuchCoroutine`, ignored).
//!
//! # Submission batching
//!
//! One `io_uring_enter` can submit many SQEs (the ring costs ~233 ns per
//! submission alone, ~60 ns each in batches of 32, on the project's machine).
//! An operation's first poll pushes its SQE and then:
//!
//! 1. if [`Config::submit_batch`] SQEs are waiting, or the queue is full, it
//!    submits them all (one syscall);
//! 2. else, if no coroutine is ready (the executor's bitmap is empty: this CPU
//!    would go idle), it submits at once — nobody else could join the batch —
//!    and takes a completion that came back during that submission itself (a
//!    NOP, a send into a socket with room, a read of a pipe that has bytes):
//!    such an operation is done on its first poll, with no wake-up and no
//!    second poll of its coroutine (until its first poll names a waiter, a
//!    completion wakes nobody: only this thread reaps this ring);
//! 3. else it **defers**: the SQE waits in the ring while the other ready
//!    coroutines run and push their own, and the completion wakes the
//!    coroutine by cid. A burst of *n* ready coroutines that each start an
//!    operation costs one syscall, not *n*.
//!
//! Measured on the project's 2-vCPU machine (`measure_nop_batching`, release,
//! one worker, 64 coroutines × 200 NOPs; three runs): `submit_batch = 1` costs
//! 0.95–2.3 µs per operation end to end, `submit_batch = 32` 0.25–0.8 µs, with
//! ~30 SQEs per `io_uring_enter`.
//!
//! The deferral never strands an SQE: the worker that pushed it submits it
//! when it next runs its ring — every 32 coroutine polls, while it spins
//! idle, or when it parks — and an op polled on another worker meanwhile
//! waits for that (it cannot submit to the owner's ring). A dropped
//! operation's cancellation is submitted at once by the owner, or through the
//! owner's remote queue from another thread.
//!
//! # The rings: one per worker
//!
//! ```text
//!   worker 0: ring 0 (SQ, CQ, slots, remote queue, eventfd READ armed)
//!   worker 1: ring 1 (…)                    — each submitted to and reaped only by its worker
//!   op polled first on worker i ──► lives on ring i; its completion wakes the
//!                                   coroutine by cid, which may then run on any worker
//! ```
//!
//! Every worker sets up its own ring as it starts, with `SINGLE_ISSUER |
//! DEFER_TASKRUN` (falling back to `COOP_TASKRUN | TASKRUN_FLAG`, then none):
//! the kernel never interrupts a worker to run completion work, and never wakes
//! a third thread; the owner runs it when it enters with `GETEVENTS`:
//! - **parked**: an idle worker sleeps in `io_uring_enter(min_complete = 1)` on
//!   its ring, so a completion (I/O or timer) of its ring wakes it directly, and
//!   an unpark writes the eventfd whose `READ` is armed there (see
//!   [`WorkerPlatform`](crate::WorkerPlatform));
//! - **spinning idle**: it runs its ring every 8 spin rounds, without waiting;
//! - **busy**: it takes its ring's completions every 4 coroutine polls and runs
//!   its ring (submitting too) every 32 (one `io_uring_enter` when the kernel
//!   flags completion work or SQEs wait; two loads otherwise). The priority demo
//!   under a flood: p99 lateness ~90 µs with the 4-poll reap, ~470 µs without.
//!   `rtecho --connections 64,1024 --rounds 3` with the run every 16 polls and
//!   every 32 (two runs each, 2026-11-27): the same within the noise (1 024
//!   connections: 1.07 × and 1.07 × tokio's throughput against 1.08 × and
//!   1.05 ×); an earlier note that 32 was worse (136 k against 203–209 k
//!   msgs/s) predates the per-worker rings and did not reproduce. Every poll
//!   gives up the batching.
//!
//! The cost: a busy worker's completions wait for its next ring run — a
//! coroutine that computes for long without yielding delays the completions of
//! every op on its worker's ring (not only its own).
//!
//! Measured (`measure_pipe_ping_pong`, release, 2 vCPUs): two coroutines
//! ping-ponging a byte over two pipes take ~4 µs per round trip with one or two
//! workers (with the former shared ring and completion thread: 4 µs and 17.5 µs).
//! An operation polled on a thread that is not a worker (none, in normal use)
//! fails with an error saying so.
//!
//! # The paper's macros
//!
//! [`read!`](crate::read!) and [`write!`](crate::write!) give Listing 2's two
//! forms over the same operations: `read!(fd, buf)` awaits the result in the
//! calling coroutine; `read!(fd, buf, cid)` submits now and returns a
//! [`Submitted`] handle at once, and the completion wakes coroutine `cid`.
//!
//! # Shutdown
//!
//! 1. The runtime shuts its executor down: every coroutine's future is dropped,
//!    so its operations are abandoned (their buffers pass to their rings).
//! 2. Each worker, after its poller returns and before its thread exits, cancels
//!    everything its ring still holds, reaps until nothing is left (at most 2 s),
//!    frees the buffers, and closes the ring.
//! 3. After joining the workers, the driver refuses new operations and checks no
//!    ring holds anything; memory the kernel never let go of is leaked, with a
//!    note on stderr, never freed under the kernel.

mod addr;
pub(crate) mod driver;
mod multishot;
mod op;
mod ops;
pub mod pool;
mod remote;

pub(crate) use driver::Driver;
pub use multishot::RecvStream;
pub use op::Submitted;
#[allow(unused_imports)] // the ring's raw plumbing, for `net` and `time`
pub(crate) use op::{Op, Operation};
pub use ops::{accept, close, connect, read, recv, send, submit_read, submit_write, write};
pub(crate) use ops::{ReadInto, Timeout, WriteFrom};
pub use pool::{recv_pooled, RecvBuf};

/// A snapshot of the io_uring driver's counters since the runtime started,
/// summed over the workers' rings ([`Runtime::io_metrics`](crate::Runtime::io_metrics)).
/// Each is read on its own (relaxed): a snapshot taken while the runtime
/// works is a close, not an exact, picture.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoMetrics {
    /// `io_uring_enter` calls of any kind.
    pub enters: u64,
    /// Of those, calls that submitted something.
    pub submit_calls: u64,
    /// SQEs submitted by them (`submitted / submit_calls`: the batch).
    pub submitted: u64,
    /// Operations whose submission waited for others to join the batch
    /// ([`Config::submit_batch`]).
    pub deferred: u64,
    /// Completions reaped.
    pub completions: u64,
    /// Operations whose first poll submitted them and found the completion
    /// already there (no wake-up, no second poll).
    pub inline: u64,
    /// Multishot receives armed ([`RecvStream`]).
    pub streams: u64,
    /// Multishot receives stopped for holding too many completions while
    /// their reader was behind.
    pub throttled: u64,
    /// Multishot receives stopped so that they follow their reader off a
    /// worker held in reserve.
    pub followed: u64,
    /// Receive buffers in the workers' pools now (they grow when they run
    /// dry: [`Config::recv_buffers_max`]).
    pub recv_buffers: u64,
    /// Of those, lent now: named by a completion, not yet given back.
    pub recv_buffers_lent: u64,
    /// Receives that met a pool dry (each then went into a buffer of its own).
    pub recv_pool_dry: u64,
}

/// The io_uring driver's configuration ([`Builder::io`](crate::Builder::io)).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Submission queue entries (a power of two, at most 32 768). The completion
    /// queue gets four times as many; more operations than that may be in flight
    /// (the kernel buffers overflowing completions).
    pub entries: u32,
    /// Submit as soon as this many SQEs wait, even if other coroutines are ready
    /// (see the module docs on batching). 1 submits every operation at once.
    pub submit_batch: u32,
    /// Each worker's pool for [`recv_pooled`] and [`RecvStream`]: how many
    /// buffers it starts with (a power of two up to [`pool::MAX_BUFFERS`]; 0:
    /// no pool) of how many bytes. It grows when it runs dry, up to
    /// [`recv_buffers_max`](Config::recv_buffers_max). See [`pool`].
    ///
    /// A buffer is lent from the moment bytes arrive until the reader takes
    /// them: a pool needs about as many buffers as connections that may have
    /// bytes waiting at once (for a server that falls behind, every
    /// connection). With fewer it runs dry, and each receive that finds it so
    /// costs three operations instead of one (`ENOBUFS`, a receive into a
    /// buffer of its own, a re-arm) just when the worker is behind — which is
    /// why it grows. Measured with `ssbench` at 1 024 and 4 096 busy
    /// connections (`docs/runtime.md`, "Sizing the pool").
    pub recv_buffers: (u16, u32),
    /// The most buffers each worker's pool grows to when it runs dry (a power
    /// of two up to [`pool::MAX_BUFFERS`]; at or below the starting count, the
    /// pool does not grow). A receive that meets the pool dry while at least
    /// half of its buffers are lent doubles it. The address space for the
    /// ceiling is reserved as the worker starts (`max × size` bytes, no memory
    /// until written); the buffers added are touched only as the kernel fills
    /// them, and the pool never shrinks.
    pub recv_buffers_max: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            entries: 1024,
            submit_batch: 32,
            recv_buffers: (256, 4096),
            recv_buffers_max: 4096,
        }
    }
}

impl Config {
    /// The default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`entries`](Config::entries).
    pub fn entries(mut self, entries: u32) -> Self {
        self.entries = entries;
        self
    }

    /// Sets [`submit_batch`](Config::submit_batch).
    pub fn submit_batch(mut self, n: u32) -> Self {
        self.submit_batch = n;
        self
    }

    /// Sets [`recv_buffers`](Config::recv_buffers): `count` buffers of `size`
    /// bytes per worker; 0 buffers: no pool (pooled receives then allocate a
    /// buffer each). The runtime's build fails with `InvalidInput` for a count
    /// that is not a power of two up to [`pool::MAX_BUFFERS`] or a size outside
    /// 1 ..= [`pool::MAX_BUFFER_SIZE`].
    pub fn recv_buffers(mut self, count: u16, size: u32) -> Self {
        self.recv_buffers = (count, size);
        self
    }

    /// Sets [`recv_buffers_max`](Config::recv_buffers_max): the most buffers
    /// each worker's pool grows to (at or below the starting count: a pool
    /// that does not grow). The runtime's build fails with `InvalidInput` for
    /// a ceiling that is not 0 or a power of two up to [`pool::MAX_BUFFERS`].
    pub fn recv_buffers_max(mut self, max: u16) -> Self {
        self.recv_buffers_max = max;
        self
    }

    /// The pool's shape, for the driver.
    pub(crate) fn pool_shape(&self) -> pool::Shape {
        pool::Shape {
            count: self.recv_buffers.0,
            max: self.recv_buffers_max,
            size: self.recv_buffers.1,
        }
    }
}

/// Paper Listing 2's `read` system call, in both forms, over [`io::read`](crate::io::read).
///
/// - `read!(fd, buf)` — the synchronous form: awaits the read in the calling
///   coroutine (only this coroutine blocks; the CPU runs others meanwhile) and
///   evaluates to `(io::Result<usize>, Vec<u8>)`. Use it inside `async` code.
/// - `read!(fd, buf, cid)` — the asynchronous form: submits the read to the
///   kernel **now** and evaluates at once to a [`Submitted`] handle; the calling
///   coroutine keeps running. When the read completes, coroutine `cid` (of type
///   [`CoroutineId`](crate::CoroutineId)) is woken; awaiting the handle gives the
///   result (and from then on the awaiting coroutine is the one woken). Dropping
///   the handle cancels the read.
///
/// ```
/// use ss_runtime::{io, read, write, Runtime};
/// use std::os::fd::{FromRawFd, OwnedFd};
///
/// let rt = Runtime::builder().workers(1).build()?;
/// rt.block_on(async {
///     let mut fds = [0; 2];
///     assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
///     let (rx, tx) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
///     let me = ss_runtime::current().await.unwrap();
///     let pending = read!(&rx, Vec::with_capacity(16), me); // returns at once
///     let (n, _) = write!(&tx, b"ping".to_vec());            // awaited here
///     assert_eq!(n.unwrap(), 4);
///     let (n, buf) = pending.await;                           // woken by cid
///     assert_eq!((n.unwrap(), &buf[..]), (4, &b"ping"[..]));
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
#[macro_export]
macro_rules! read {
    ($fd:expr, $buf:expr $(,)?) => {
        $crate::io::read($fd, $buf).await
    };
    ($fd:expr, $buf:expr, $cid:expr $(,)?) => {
        $crate::io::submit_read($fd, $buf, $cid)
    };
}

/// Paper Listing 2's form for `write`, over [`io::write`](crate::io::write):
/// `write!(fd, buf)` awaits; `write!(fd, buf, cid)` submits now and returns a
/// [`Submitted`] handle whose completion wakes `cid`. See [`read!`](crate::read!).
///
/// Importing it (`use ss_runtime::write;`) shadows `std::write!` in that scope;
/// call it as `ss_runtime::write!` to keep both.
#[macro_export]
macro_rules! write {
    ($fd:expr, $buf:expr $(,)?) => {
        $crate::io::write($fd, $buf).await
    };
    ($fd:expr, $buf:expr, $cid:expr $(,)?) => {
        $crate::io::submit_write($fd, $buf, $cid)
    };
}

#[cfg(test)]
mod tests;

/// Called at the start of every coroutine poll on a worker: every
/// [`RUN_RING_EVERY_POLLS`] polls, runs the worker's ring without waiting
/// (submits what is queued, takes the completions the kernel has). With
/// `DEFER_TASKRUN` a busy worker's completions are delivered only this way, so
/// this bounds their delay to a few polls; it costs two loads when the ring has
/// nothing, one `io_uring_enter` when it has.
pub(crate) fn reap_now_and_then() {
    thread_local! {
        static POLLS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    let n = POLLS.with(|p| {
        let n = p.get().wrapping_add(1);
        p.set(n);
        n
    });
    if n % BEAT_EVERY_POLLS == 0 {
        crate::nudge::beat();
        crate::park::check_backlog();
    }
    if n % RUN_RING_EVERY_POLLS == 0 {
        driver::run_local();
    } else if n % REAP_EVERY_POLLS == 0 {
        driver::flush_or_reap_local();
    }
}

/// Every this many polls, a busy worker submits the operations whose flush
/// was deferred for batching (`Op`'s first poll), if any, and takes the
/// completions its ring has; see [`reap_now_and_then`].
const REAP_EVERY_POLLS: u32 = 4;

/// See [`reap_now_and_then`].
const RUN_RING_EVERY_POLLS: u32 = 32;

/// Every this many polls a worker records that it runs (a clock read; see
/// [`crate::nudge`]).
const BEAT_EVERY_POLLS: u32 = 16;
