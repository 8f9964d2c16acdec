//! # The shared scheduler code (the paper's vDSO)
//!
//! ss-core's Executor for user processes, linked once at
//! `ss_abi::uspace::VDSO_BASE` and mapped read+execute from the same frames into
//! every process; its writable data (the Executor handle, the heap's state) is a
//! private copy per process, and its heap is memory the process hands it, so
//! each process's Executor lives in that process's own memory. Processes call
//! it through the `ss_abi::vdso::VdsoTable` at the start of the image.
//!
//! Between polls each thread publishes the Executor's ready bitmap in the
//! process page and, if the global page shows a more important coroutine ready
//! in another process, yields the hart (paper §2.4).
#![no_std]
#![no_main]

extern crate alloc;

use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::{Context, Poll, Waker};

use alloc::vec::Vec;

use ss_abi::completion::{entry_offset, ready_entries, CQ_HEAD_OFFSET, CQ_TAIL_OFFSET};
use ss_abi::uspace::{COMPLETION_PAGE_VA, GLOBAL_PAGE_VA, PROCESS_PAGE_VA};
use ss_abi::vdso::{RawTask, VdsoTable, NO_RESULT, VDSO_MAGIC, VDSO_VERSION};
use ss_abi::{CoroutineId, CoroutineKind, Levels, Priority};
use ss_core::global::GlobalView;
use ss_core::platform::{Clock, Critical, Park, Platform};
use ss_core::{DrainGate, Executor, PrioBitmap};
use ss_kernel_logic::folded::FoldedWords;
use ss_kernel_logic::heap::BuddyHeap;
use ss_kernel_logic::results::{Put, Results};
use ss_usys as sys;

#[global_allocator]
static HEAP: BuddyHeap = BuddyHeap::empty();

/// The user Executor's platform: idle threads park in the kernel (`park` /
/// `unpark`, a per-process permit count); no interrupt reaches user code, so
/// critical sections need nothing; the clock is the `time` CSR.
///
/// A thread preempted while it holds one of the Executor's spin locks makes
/// the process's other threads spin until it runs again; the locks are held
/// for a few pointer writes, so this is rare and short.
#[derive(Debug, Default)]
struct UserPlatform;

impl Park for UserPlatform {
    fn park(&self) {
        sys::park();
    }
    fn unpark_one(&self) {
        sys::unpark();
    }
}

impl Critical for UserPlatform {
    type Guard = ();
    fn enter(&self) {}
}

impl Clock for UserPlatform {
    fn now(&self) -> core::time::Duration {
        core::time::Duration::from_nanos(sys::time() * (1_000_000_000 / sys::TIME_HZ))
    }
}

impl Platform for UserPlatform {}

static EXEC: spin::Once<Executor<UserPlatform>> = spin::Once::new();

fn exec() -> &'static Executor<UserPlatform> {
    EXEC.call_once(|| Executor::with_platform(Levels::DEFAULT, UserPlatform))
}

/// A program's future, driven through its own poll and drop functions.
struct AppTask(RawTask);

// SAFETY: the user library only builds a `RawTask` from a `Send` future
// (`ss_ulib::spawn` requires `F: Send`), so its data may move between threads.
unsafe impl Send for AppTask {}

impl Future for AppTask {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: `data` is the live boxed future (dropped only in `Drop`),
        // polled by one poller at a time (the core's state word), and `poll`
        // is the function made for its type; the context outlives the call.
        let done = unsafe { (self.0.poll)(self.0.data, (cx as *mut Context<'_>).cast()) };
        if done == 1 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for AppTask {
    fn drop(&mut self) {
        // SAFETY: dropped once, here, with the function made for its type.
        unsafe { (self.0.drop)(self.0.data) }
    }
}

unsafe extern "C" fn init(heap: *mut u8, len: usize) {
    // SAFETY: per the table's contract, the process hands over `len` bytes at
    // `heap` for good, once.
    unsafe { HEAP.init(heap as usize, len) };
    let _ = exec();
    let _ = sys::upcall_register(upcall_entry as *const () as usize);
}

unsafe extern "C" fn spawn(task: RawTask, priority: u8, kind: u8) -> i64 {
    let task = AppTask(task);
    let (Ok(p), Ok(kind)) = (Priority::new(priority), CoroutineKind::try_from(kind)) else {
        return -1;
    };
    match exec().spawn_kind(task, p, kind) {
        Ok(cid) => cid.into_raw() as i64,
        Err(ss_core::Error::Priority(_)) => -1,
        Err(ss_core::Error::Closed) => -2,
        Err(_) => -3,
    }
}

extern "C" fn run() -> ! {
    let exec = exec();
    let mut poller = exec.poller();
    poller.run_while(|| {
        // A safe point: no scheduler lock is held here.
        drain_if_pending();
        publish(exec.ready_bitmap().bits());
        if let Some(next) = exec.most_important_ready() {
            yield_if_elsewhere(next);
        }
        true
    });
    sys::exit(-3)
}

extern "C" fn wake(cid: u64) -> i64 {
    exec().wake(CoroutineId::from_raw(cid)).map_or(-1, |_| 0)
}

extern "C" fn reprio(cid: u64, priority: u8) -> i64 {
    let Ok(p) = Priority::new(priority) else {
        return -2;
    };
    match exec().reprio(CoroutineId::from_raw(cid), p) {
        Ok(()) => 0,
        Err(ss_core::Error::Priority(_)) => -2,
        Err(_) => -1,
    }
}

unsafe extern "C" fn cid_of(waker: *const ()) -> u64 {
    // SAFETY: the caller passes a live `&Waker` as a pointer.
    let waker = unsafe { &*waker.cast::<Waker>() };
    ss_core::cid_of(waker).map_or(u64::MAX, CoroutineId::into_raw)
}

unsafe extern "C" fn cooperate(waker: *const ()) -> u8 {
    // SAFETY: as in `cid_of`.
    let waker = unsafe { &*waker.cast::<Waker>() };
    let me = ss_core::cid_of(waker).and_then(|cid| exec().priority(cid).ok());
    if let Some(me) = me {
        publish(exec().ready_bitmap().bits() | me.bit());
        yield_if_elsewhere(me);
    }
    u8::from(ss_core::more_important_ready(waker).unwrap_or(false))
}

extern "C" fn priority_of(cid: u64) -> i64 {
    exec()
        .priority(CoroutineId::from_raw(cid))
        .map_or(-1, |p| i64::from(p.level()))
}

extern "C" fn ready_bitmap() -> u64 {
    exec().ready_bitmap().bits()
}

extern "C" fn global_yields() -> u64 {
    page_word(PROCESS_PAGE_VA, 24).load(Ordering::Relaxed)
}

/// The table, first in the image (`vdso.ld`).
#[no_mangle]
#[used]
#[link_section = ".vdso_table"]
pub static ss_vdso_table: VdsoTable = VdsoTable {
    magic: VDSO_MAGIC,
    version: VDSO_VERSION,
    init,
    spawn,
    run,
    wake,
    reprio,
    cid_of,
    cooperate,
    ready_bitmap,
    publish,
    global_yields,
    take_result,
    drain,
    priority_of,
    release_descriptor,
};

/// Delivered results not yet taken (see [`Results`]: nothing a coroutine
/// still waits for is dropped).
static RESULTS: spin::Mutex<Results> = spin::Mutex::new(Results::new());
/// One drainer at a time: a thread that finds another draining (an upcall
/// while a poller drains) leaves its entries to that one, which looks again
/// before it leaves ([`DrainGate`]; a bare `try_lock` here lost completions
/// that arrived during a drain, once every thread then parked).
static DRAIN: DrainGate = DrainGate::new();

unsafe extern "C" fn take_result(cid: u64, op: u64, stamp: *mut u64) -> i64 {
    let Some(taken) = RESULTS.lock().take(cid, op) else {
        return NO_RESULT;
    };
    if !stamp.is_null() {
        // SAFETY: the caller passes null or a live, aligned `*mut u64`.
        unsafe { stamp.write(taken.stamp) };
    }
    taken.result
}

/// [`VdsoTable::release_descriptor`]: the result of a dropped `accept` that
/// had finished is closed here, now or when [`drain`] delivers it
/// ([`Results::release`]).
extern "C" fn release_descriptor(cid: u64, op: u64) {
    let held = RESULTS.lock().release(cid, op);
    if let Some(taken) = held {
        close_result(taken.result);
    }
}

/// Closes the descriptor an `accept` result names (an error names none).
fn close_result(result: i64) {
    if let Ok(fd) = usize::try_from(result) {
        let _ = sys::close(fd);
    }
}

fn drain_if_pending() {
    let head = page_word(COMPLETION_PAGE_VA, CQ_HEAD_OFFSET).load(Ordering::Acquire);
    if page_word(COMPLETION_PAGE_VA, CQ_TAIL_OFFSET).load(Ordering::Acquire) != head {
        drain();
    }
}

/// Takes every entry of the completion queue, here or in the thread already
/// draining: stores its result and wakes its coroutine (a result for a
/// coroutine that is gone is dropped; a released `accept`'s descriptor is
/// closed: [`release_descriptor`]). The page is the process's own memory,
/// so a corrupt `head`/`tail` pair only skips entries. Returns the entries
/// taken here.
extern "C" fn drain() -> u64 {
    DRAIN.drain(drain_pass)
}

/// One pass of [`drain`] (the gate lets one thread at a time in).
fn drain_pass() -> u64 {
    let head_word = page_word(COMPLETION_PAGE_VA, CQ_HEAD_OFFSET);
    let tail = page_word(COMPLETION_PAGE_VA, CQ_TAIL_OFFSET).load(Ordering::Acquire);
    let head = head_word.load(Ordering::Acquire);
    let Some(n) = ready_entries(head, tail) else {
        head_word.store(tail, Ordering::Release);
        return 0;
    };
    let mut taken = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let at = entry_offset(head.wrapping_add(i));
        let w = |k: usize| page_word(COMPLETION_PAGE_VA, at + 8 * k).load(Ordering::Acquire);
        taken.push((w(0), w(1) as i64, w(2), w(3)));
    }
    head_word.store(tail, Ordering::Release);
    let mut stored = 0;
    for (cid, result, stamp, op) in taken {
        let put = RESULTS.lock().put(cid, op, result, stamp);
        match put {
            Put::Stored(n) => stored = n,
            Put::Released(taken) => {
                // Its future was dropped: nobody will take it.
                close_result(taken.result);
                continue;
            }
        }
        if exec().wake(CoroutineId::from_raw(cid)).is_err() {
            // Its coroutine is gone: nobody will take it.
            RESULTS.lock().forget(cid, op);
        }
    }
    if stored > Results::SWEEP {
        sweep_results();
    }
    n as u64
}

/// Drops the results of coroutines that no longer exist, if the store
/// outgrew the coroutines alive (nothing else bounds what exited coroutines
/// leave behind). The executor's lock is taken with the store's released.
fn sweep_results() {
    let check = RESULTS.lock().to_check(exec().len());
    let gone: Vec<u64> = check
        .into_iter()
        .filter(|&c| exec().state(CoroutineId::from_raw(c)).is_err())
        .collect();
    RESULTS.lock().sweep(&gone);
}

/// The upcall handler: the kernel enters it (on this thread's stack, below
/// the interrupted frame) when completions wait; it drains the queue and
/// returns to the interrupted code through the kernel.
extern "C" fn upcall_entry() -> ! {
    drain();
    let _ = sys::upcall_return();
    // Only reached if the kernel did not enter us as an upcall.
    sys::exit(-5)
}

fn page_word(base: usize, offset: usize) -> &'static AtomicU64 {
    // SAFETY: the kernel maps the global page (read-only), the process page
    // and the completion page (read-write) at these addresses in every process
    // before it starts; callers pass 8-byte aligned offsets inside the page.
    unsafe { &*((base + offset) as *const AtomicU64) }
}

/// The global view, read under the kernel's sequence lock (bounded retries).
fn global_view() -> (u64, GlobalView) {
    let seq = page_word(GLOBAL_PAGE_VA, 8);
    let mut view = GlobalView::default();
    let mut s = 0;
    for _ in 0..16 {
        s = seq.load(Ordering::Acquire);
        view = GlobalView {
            global: PrioBitmap::from_bits(page_word(GLOBAL_PAGE_VA, 16).load(Ordering::Acquire)),
            multi: PrioBitmap::from_bits(page_word(GLOBAL_PAGE_VA, 24).load(Ordering::Acquire)),
        };
        if s & 1 == 0 && seq.load(Ordering::Acquire) == s {
            break;
        }
    }
    (s, view)
}

/// What this process published since the global page last changed: the
/// kernel's view of us is one of these values, so `elsewhere` excludes them
/// all. Only the fallback for when the kernel's folded words in the process
/// page do not answer (`ss_kernel_logic::folded`).
static MINE: AtomicU64 = AtomicU64::new(0);
static MINE_SEQ: AtomicU64 = AtomicU64::new(u64::MAX);

/// Publishes `ready` as this process's bitmap (the kernel folds it into the
/// global bitmap).
extern "C" fn publish(ready: u64) {
    let page_ready = page_word(PROCESS_PAGE_VA, 16);
    if page_ready.load(Ordering::Relaxed) != ready {
        page_ready.store(ready, Ordering::Release);
        page_word(PROCESS_PAGE_VA, 8).fetch_add(1, Ordering::Release);
    }
    let (seq, _) = global_view();
    if MINE_SEQ.swap(seq, Ordering::AcqRel) == seq {
        MINE.fetch_or(ready, Ordering::AcqRel);
    } else {
        MINE.store(ready, Ordering::Release);
    }
}

/// Yields the hart if something more important than `than` is ready in another
/// process, counting it in the process page's `yields`.
fn yield_if_elsewhere(than: Priority) {
    let (seq, view) = global_view();
    // Exactly what the kernel folded in for us, if its words tell (they do
    // but while a fold of ours is in progress); else everything we published
    // since the page last changed.
    // SAFETY: the kernel maps the process page read-write at
    // PROCESS_PAGE_VA in every process before it starts.
    let folded = unsafe { FoldedWords::in_page(PROCESS_PAGE_VA) };
    let mine = PrioBitmap::from_bits(
        folded
            .read(seq)
            .unwrap_or_else(|| MINE.load(Ordering::Acquire)),
    );
    if view.more_important_elsewhere(mine, than) {
        page_word(PROCESS_PAGE_VA, 24).fetch_add(1, Ordering::Relaxed);
        sys::yield_now();
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    let _ = sys::write_all(2, b"[vdso] panic\n");
    sys::exit(102)
}
