//! The runtime: start code, the program's heap, and Table 1's interface over
//! the shared scheduler code (the vDSO's `VdsoTable` at `VDSO_BASE`).

use alloc::boxed::Box;
use alloc::string::String;
use core::cell::UnsafeCell;
use core::fmt::Write as _;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicU8, Ordering};
use core::task::{Context, Poll};

use ss_abi::syscall::SysError;
use ss_abi::uspace::VDSO_BASE;
use ss_abi::vdso::{RawTask, VdsoTable, VDSO_MAGIC, VDSO_VERSION};
use ss_abi::{CoroutineId, CoroutineKind, Priority};
use ss_kernel_logic::heap::BuddyHeap;

use crate::sys;

/// Bytes of heap a program gets from [`main!`](crate::main) without a size.
pub const DEFAULT_HEAP_SIZE: usize = 512 * 1024;

/// The most of the program's heap handed to the vDSO for the process's
/// Executor (its tasks' records and delivered results): half the heap, but
/// no more than this.
pub const EXECUTOR_HEAP_MAX: usize = 4 * 1024 * 1024;

/// The smallest heap [`main!`](crate::main) accepts.
pub const MIN_HEAP_SIZE: usize = 64 * 1024;

#[global_allocator]
static HEAP: BuddyHeap = BuddyHeap::empty();

/// The memory of a program's heap: `N` bytes in the image's `.bss` (the
/// kernel backs it with frames at load), page-aligned. [`main!`](crate::main)
/// makes the one static of this type a program has.
#[doc(hidden)]
#[repr(C, align(4096))]
pub struct HeapSpace<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: the bytes are never read or written through this type: `_start`
// takes the address once and hands the memory to the two heaps, whose locks
// order every later access.
unsafe impl<const N: usize> Sync for HeapSpace<N> {}

impl<const N: usize> HeapSpace<N> {
    /// Zeroed space (so the static lives in `.bss`).
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        HeapSpace(UnsafeCell::new([0; N]))
    }

    /// Where the space is and how long it is.
    pub fn region(&'static self) -> (*mut u8, usize) {
        (self.0.get().cast(), N)
    }
}

/// How `_start` splits a heap of `size` bytes: `(program, executor)`.
const fn split_heap(size: usize) -> (usize, usize) {
    let half = size / 2;
    let executor = if half < EXECUTOR_HEAP_MAX {
        half
    } else {
        EXECUTOR_HEAP_MAX
    };
    (size - executor, executor)
}

static MAIN_PRIORITY: AtomicU8 = AtomicU8::new(0);

/// The shared scheduler's table (checked at start: magic and version).
pub(crate) fn vdso() -> &'static VdsoTable {
    // SAFETY: the kernel maps the vDSO, table first, at VDSO_BASE in every
    // process before it starts (`_start` checks the magic and version).
    unsafe { &*(VDSO_BASE as *const VdsoTable) }
}

/// The priority the main coroutine was spawned with.
pub fn main_priority() -> u8 {
    MAIN_PRIORITY.load(Ordering::Relaxed)
}

/// How many times this process gave up a hart because something more
/// important was ready elsewhere (the process page's `yields`).
pub fn global_yields() -> usize {
    (vdso().global_yields)() as usize
}

/// The process's Executor's ready bitmap (bit *p*: something ready at *p*).
pub fn ready_bitmap() -> u64 {
    (vdso().ready_bitmap)()
}

/// Publishes `ready` as this process's bitmap now (the shared scheduler does
/// so before every poll by itself).
pub fn publish(ready: u64) {
    (vdso().publish)(ready)
}

extern "Rust" {
    fn __ss_main(arg: usize) -> Pin<Box<dyn Future<Output = i32> + Send>>;
    fn __ss_heap() -> (*mut u8, usize);
}

/// The program's entry: the kernel starts the first thread here with the
/// spawn argument in `a0` and the main coroutine's priority in `a1`.
#[no_mangle]
extern "C" fn _start(arg: usize, priority: usize) -> ! {
    let t = vdso();
    if t.magic != VDSO_MAGIC || t.version != VDSO_VERSION {
        let _ = sys::write_all(
            2,
            b"the kernel's vDSO is not the version this program was built for\n",
        );
        sys::exit(-4);
    }
    // SAFETY: `__ss_heap` is defined by the program through `main!`, with
    // this exact signature.
    let (base, size) = unsafe { __ss_heap() };
    let (program, executor) = split_heap(size);
    // SAFETY: the heap space is used for nothing else; only this first thread
    // runs now, once. The upper part goes to the vDSO for good.
    unsafe {
        HEAP.init(base as usize, program);
        (t.init)(base.add(program), executor);
    }
    let prio = Priority::new(priority as u8).unwrap_or(Priority::MOST_IMPORTANT);
    MAIN_PRIORITY.store(prio.level(), Ordering::Relaxed);
    // SAFETY: `__ss_main` is defined by the program through `main!`, with this
    // exact signature.
    let main = unsafe { __ss_main(arg) };
    let spawned = spawn_kind(
        async move {
            let code = main.await;
            sys::exit(code)
        },
        prio.level(),
        CoroutineKind::Main,
    );
    if spawned.is_err() {
        sys::exit(-2);
    }
    (t.run)()
}

/// Where threads from [`alloc_cpu`] start: they poll the shared Executor.
extern "C" fn thread_start(_arg: usize) -> ! {
    (vdso().run)()
}

/// Polls the boxed `F` at `data` with the context at `cx` (for the vDSO).
unsafe extern "C" fn poll_task<F: Future<Output = ()>>(data: *mut (), cx: *mut ()) -> u8 {
    // SAFETY: `data` is the `Box<F>` made in `spawn_kind`, alive until
    // `drop_task`, pinned (never moved out of its box), polled by one thread at
    // a time (the core's state word); `cx` is the live context the vDSO's
    // poller built (same compiler, same `core`).
    let (f, cx) = unsafe {
        (
            Pin::new_unchecked(&mut *data.cast::<F>()),
            &mut *cx.cast::<Context<'_>>(),
        )
    };
    u8::from(f.poll(cx).is_ready())
}

/// Drops the boxed `F` at `data` (for the vDSO).
unsafe extern "C" fn drop_task<F>(data: *mut ()) {
    // SAFETY: `data` came from `Box::into_raw` in `spawn_kind`; the vDSO drops
    // each task once.
    drop(unsafe { Box::from_raw(data.cast::<F>()) });
}

/// Why a scheduler call failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Error {
    /// The priority is beyond the process's levels.
    Priority,
    /// No live coroutine has this id.
    NoSuchCoroutine,
    /// The Executor is shut down or full.
    Unavailable,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Error::Priority => "priority beyond the levels (0..8)",
            Error::NoSuchCoroutine => "no live coroutine has this id",
            Error::Unavailable => "the Executor is shut down or full",
        })
    }
}

fn spawn_kind<F>(future: F, priority: u8, kind: CoroutineKind) -> Result<CoroutineId, Error>
where
    F: Future<Output = ()> + Send + 'static,
{
    let task = RawTask {
        data: Box::into_raw(Box::new(future)).cast(),
        poll: poll_task::<F>,
        drop: drop_task::<F>,
    };
    // SAFETY: `task` is a `Send` future's box with its own poll and drop.
    match unsafe { (vdso().spawn)(task, priority, kind as u8) } {
        cid if cid >= 0 => Ok(CoroutineId::from_raw(cid as u64)),
        -1 => Err(Error::Priority),
        _ => Err(Error::Unavailable),
    }
}

/// `spawn(future, prio)`: a new coroutine at level `priority`.
///
/// # Errors
/// [`Error::Priority`] beyond the levels; [`Error::Unavailable`].
pub fn spawn<F>(future: F, priority: u8) -> Result<CoroutineId, Error>
where
    F: Future<Output = ()> + Send + 'static,
{
    spawn_kind(future, priority, CoroutineKind::Normal)
}

/// `getcid()`: the current coroutine's id.
pub async fn getcid() -> Option<CoroutineId> {
    core::future::poll_fn(|cx| {
        // SAFETY: a live `&Waker`, passed as a pointer.
        let raw = unsafe { (vdso().cid_of)((cx.waker() as *const core::task::Waker).cast()) };
        Poll::Ready((raw != u64::MAX).then_some(CoroutineId::from_raw(raw)))
    })
    .await
}

/// `wake(cid)`.
///
/// # Errors
/// [`Error::NoSuchCoroutine`].
pub fn wake(cid: CoroutineId) -> Result<(), Error> {
    match (vdso().wake)(cid.into_raw()) {
        0 => Ok(()),
        _ => Err(Error::NoSuchCoroutine),
    }
}

/// `reprio(cid, prio)`.
///
/// # Errors
/// [`Error::NoSuchCoroutine`], [`Error::Priority`].
pub fn reprio(cid: CoroutineId, priority: u8) -> Result<(), Error> {
    match (vdso().reprio)(cid.into_raw(), priority) {
        0 => Ok(()),
        -2 => Err(Error::Priority),
        _ => Err(Error::NoSuchCoroutine),
    }
}

/// `alloc_cpu()`: one more thread polling this process's Executor, on its own
/// stack; returns its thread id.
///
/// # Errors
/// The kernel's [`SysError`] (e.g. `Limit` past the per-process thread cap).
pub fn alloc_cpu() -> Result<usize, SysError> {
    sys::alloc_cpu_raw(thread_start as *const () as usize, 0)
}

/// Gives way: back to the ready queue behind every ready coroutine of this
/// priority.
pub async fn yield_now() {
    let mut yielded = false;
    core::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// For a long-running coroutine, between steps of its work: gives the hart to a
/// more important process (paper §2.4) and the Executor to a more important
/// coroutine of this process.
pub async fn cooperate() {
    let more_here = core::future::poll_fn(|cx| {
        // SAFETY: a live `&Waker`, passed as a pointer.
        Poll::Ready(unsafe { (vdso().cooperate)((cx.waker() as *const core::task::Waker).cast()) })
    })
    .await;
    if more_here == 1 {
        yield_now().await;
    }
}

/// Counts down arrivals and wakes one waiting coroutine (by id) at zero.
#[derive(Debug)]
pub struct Done {
    left: core::sync::atomic::AtomicUsize,
    waiter: core::sync::atomic::AtomicU64,
}

impl Done {
    /// Expecting `n` arrivals.
    pub const fn new(n: usize) -> Done {
        Done {
            left: core::sync::atomic::AtomicUsize::new(n),
            waiter: core::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }

    /// One arrival.
    pub fn arrive(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            let w = self.waiter.load(Ordering::Acquire);
            if w != u64::MAX {
                let _ = wake(CoroutineId::from_raw(w));
            }
        }
    }

    /// Waits (blocked, not spinning) until every arrival happened.
    pub async fn wait(&self) {
        if let Some(cid) = getcid().await {
            self.waiter.store(cid.into_raw(), Ordering::Release);
        }
        core::future::poll_fn(|_| {
            if self.left.load(Ordering::Acquire) == 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

#[doc(hidden)]
pub fn print(args: core::fmt::Arguments<'_>) {
    let mut s = String::new();
    let _ = s.write_fmt(args);
    let _ = sys::write_all(1, s.as_bytes());
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    print(format_args!("[pid {}] panic: {info}\n", sys::getpid()));
    sys::exit(101)
}
