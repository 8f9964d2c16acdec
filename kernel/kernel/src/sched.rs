//! Global scheduling (paper §2.4): the run queue of user threads, the folding of
//! every process's bitmap into the global bitmap, the switching coroutines, and
//! the timer tick.
//!
//! # The switching coroutine
//!
//! At boot the kernel spawns one switching coroutine per hart into the kernel
//! Executor, at the most important level (the paper's static start). Each one
//! loops: take the runnable thread whose process is most important, set its own
//! priority to that process's level (so kernel coroutines and processes compete
//! in one priority order), and run the thread until it blocks, exits, yields, or
//! a tick says otherwise. With no runnable thread it blocks in the kernel
//! Executor; making a thread runnable wakes the idle switching coroutines.
//!
//! # The global bitmap
//!
//! Each process publishes its executor's ready bitmap in its process page. The
//! kernel folds it into ss-core's [`GlobalBitmap`] on every tick, and at once
//! whenever one of the process's threads starts or stops being runnable; a
//! process with no runnable or running thread contributes nothing (its ready
//! coroutines cannot run anyway). The result goes to the global page, mapped
//! read-only into every process, under a sequence lock (odd `seq` while being
//! written). The published bitmap is untrusted: `GlobalBitmap::update` masks it
//! to the levels.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use core::task::{Context, Poll, Waker};

use ss_abi::page::{GlobalPage, GLOBAL_PAGE_MAGIC, GLOBAL_PAGE_SEQ_OFFSET, PAGE_VERSION};
use ss_abi::{Levels, Priority};
use ss_core::global::{GlobalBitmap, SourceId};
use ss_kernel_logic::folded::FoldedWords;
use ss_kernel_logic::sched::{level_of, on_tick, RunQueue, Running, Tick};
use ss_kernel_logic::sv39::PAGE_SIZE;

use crate::arch::{self, reg, TIME_HZ};
use crate::proc::{Process, Thread, ThreadState, PROCS};
use crate::sync::{IrqMutex, NoIrq};
use crate::{console, kexec, mm, sbi, syscall};

/// Timer tick: 10 ms.
pub const TICK: u64 = TIME_HZ / 100;
const LEVELS: Levels = Levels::DEFAULT;
const LOWEST: u8 = LEVELS.count() - 1;

struct Sched {
    runq: RunQueue<Arc<Thread>>,
    idle: Vec<Waker>,
    global: GlobalBitmap,
}

static SCHED: IrqMutex<Option<Sched>> = IrqMutex::new(None);
static GLOBAL_PPN: AtomicUsize = AtomicUsize::new(0);
static SCAN: IrqMutex<()> = IrqMutex::new(());
static SLEEPERS: IrqMutex<Vec<(u64, Arc<Thread>)>> = IrqMutex::new(Vec::new());
static KERNEL_SLEEPERS: IrqMutex<Vec<(u64, Waker)>> = IrqMutex::new(Vec::new());
/// Ticks seen, on all harts.
pub static TICKS: AtomicU64 = AtomicU64::new(0);

/// Allocates the global page and the scheduler state. Boot hart, once.
pub fn init() {
    let ppn = mm::alloc_frame().expect("a frame for the global page");
    GLOBAL_PPN.store(ppn, Ordering::SeqCst);
    let page = (ppn * PAGE_SIZE) as *mut GlobalPage;
    // SAFETY: the frame is ours and zeroed; no process maps it yet.
    unsafe {
        page.write(GlobalPage {
            magic: GLOBAL_PAGE_MAGIC,
            version: PAGE_VERSION,
            ..GlobalPage::default()
        })
    };
    *SCHED.lock() = Some(Sched {
        runq: RunQueue::new(),
        idle: Vec::new(),
        global: GlobalBitmap::new(LEVELS),
    });
}

fn with<R>(f: impl FnOnce(&mut Sched) -> R) -> R {
    let mut g = SCHED.lock();
    f(g.as_mut().expect("sched::init ran at boot"))
}

/// The global page's frame (mapped read-only into every process).
pub fn global_page_ppn() -> usize {
    GLOBAL_PPN.load(Ordering::SeqCst)
}

/// A new source in the global bitmap, for a new process.
pub fn add_source() -> SourceId {
    with(|s| s.global.add_source())
}

/// Withdraws a dead process's source.
pub fn remove_source(id: SourceId) {
    with(|s| {
        if s.global.remove_source(id) {
            publish(s);
        }
    });
}

/// The bitmap process `p` published in its page (untrusted).
fn published(p: &Process) -> u64 {
    // SAFETY: `page_pa` is the process page's frame, owned by the process
    // until teardown, which removes the source first (under SCHED). The
    // process writes it concurrently: an atomic load of an aligned word.
    unsafe { (*((p.page_pa + 16) as *const AtomicU64)).load(Ordering::Acquire) }
}

/// Process `p`'s level as of now (its page, not the last fold): what a
/// thread of it running on this hart is worth against kernel coroutines.
fn level_now(p: &Process) -> u8 {
    level_of(published(p) & LEVELS.mask(), LOWEST)
}

/// Whether the kernel Executor has a coroutine ready that is more important
/// than what process `p` runs now.
fn kernel_first(p: &Process) -> bool {
    kexec()
        .most_important_ready()
        .is_some_and(|k| k.level() < level_now(p))
}

/// The words of process `p`'s page that tell it what the kernel folded in
/// (`ss_kernel_logic::folded`).
fn folded_words(p: &Process) -> FoldedWords<'_> {
    // SAFETY: as in `published`: the process page's frame lives while the
    // process is registered (teardown removes it under SCHED, which every
    // caller holds), mapped in the kernel's direct map. The process may
    // write the words too; the kernel only stores to them.
    unsafe { FoldedWords::in_page(p.page_pa) }
}

/// Tells process `p` which bitmap of its the global page holds now (after
/// `fold` and, if the view changed, `publish`).
fn tell(p: &Process) {
    let seq = global_word(GLOBAL_PAGE_SEQ_OFFSET).load(Ordering::Acquire);
    folded_words(p).finish(p.bits.load(Ordering::SeqCst), seq);
}

/// Folds process `p` in, publishes the global page if that changed it, and
/// tells `p` what was folded.
fn fold_and_tell(s: &mut Sched, p: &Process) {
    if fold(s, p) {
        publish(s);
    }
    tell(p);
}

/// Reads process `p`'s page and folds it in; returns whether the view changed.
/// Marks `p`'s folded words as being rewritten first: `tell` must follow.
fn fold(s: &mut Sched, p: &Process) -> bool {
    folded_words(p).begin();
    let raw = if p.active.load(Ordering::SeqCst) > 0 {
        published(p)
    } else {
        0
    };
    let changed = s.global.update(p.source, raw).unwrap_or(false);
    let bits = s.global.source_bits(p.source).map_or(0, |b| b.bits());
    p.bits.store(bits, Ordering::SeqCst);
    p.level.store(level_of(bits, LOWEST), Ordering::SeqCst);
    changed
}

/// A word of the global page.
fn global_word(off: usize) -> &'static AtomicU64 {
    let pa = global_page_ppn() * PAGE_SIZE;
    // SAFETY: the global page's frame lives for the kernel's lifetime; its
    // words are aligned; the kernel writes it only in `publish`, under SCHED.
    unsafe { &*((pa + off) as *const AtomicU64) }
}

/// Writes the view to the global page (sequence lock: odd while writing).
fn publish(s: &Sched) {
    let view = s.global.view();
    let word = global_word;
    let seq = word(8).load(Ordering::Relaxed);
    word(8).store(seq.wrapping_add(1) | 1, Ordering::Release);
    word(16).store(view.global.bits(), Ordering::Release);
    word(24).store(view.multi.bits(), Ordering::Release);
    word(8).store((seq | 1).wrapping_add(1), Ordering::Release);
}

/// Folds every process in (the timer scan).
fn scan() {
    with(|s| {
        let procs: Vec<_> = PROCS.lock().values().cloned().collect();
        let mut changed = false;
        for p in &procs {
            changed |= fold(s, p);
        }
        if changed {
            publish(s);
        }
        for p in &procs {
            tell(p);
        }
    });
}

/// Re-reads one process's page now (on `yield`).
pub fn refresh(p: &Process) {
    with(|s| fold_and_tell(s, p));
}

/// A thread of `p` stopped being runnable (blocked or dead).
pub fn thread_stopped(p: &Process) {
    with(|s| {
        p.active.fetch_sub(1, Ordering::SeqCst);
        fold_and_tell(s, p);
    });
}

fn thread_level(t: &Arc<Thread>) -> u8 {
    t.proc.level.load(Ordering::SeqCst)
}

/// Puts a Runnable thread in the run queue and wakes the idle switching
/// coroutines. `became_active`: it was not runnable or running before.
pub fn enqueue(t: Arc<Thread>, became_active: bool) {
    let (wakers, best) = with(|s| {
        if became_active {
            t.proc.active.fetch_add(1, Ordering::SeqCst);
            fold_and_tell(s, &t.proc);
        }
        s.runq.push(t);
        (
            core::mem::take(&mut s.idle),
            s.runq.best_level(thread_level),
        )
    });
    let prio = Priority::new(best.unwrap_or(LOWEST)).unwrap_or(LEVELS.least_important());
    for w in wakers {
        if let Some(cid) = ss_core::cid_of(&w) {
            // Its priority follows the process it is woken for.
            let _ = kexec().reprio(cid, prio);
        }
        w.wake();
    }
}

/// The next thread for a switching coroutine, or Pending until there is one.
struct NextThread;

impl Future for NextThread {
    type Output = Arc<Thread>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Arc<Thread>> {
        with(|s| match s.runq.pop_best(thread_level, |_| true) {
            Some((t, _)) => Poll::Ready(t),
            None => {
                s.idle.push(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// Why `run` gave the hart back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    /// The thread blocked, exited, or went back to the run queue.
    Done,
    /// A more important kernel coroutine is ready; the thread given back was
    /// worth this level.
    YieldToKernel(u8),
}

/// A switching coroutine (one per hart; see the module docs).
pub async fn switcher() {
    loop {
        let t = NextThread.await;
        let level = t.proc.level.load(Ordering::SeqCst);
        let me = ss_core::current_cid().await;
        if let (Some(cid), Ok(p)) = (me, Priority::new(level)) {
            let _ = kexec().reprio(cid, p);
        }
        if let Outcome::YieldToKernel(level) = run(t) {
            // Behind the kernel work that outranks the thread, not behind
            // what it outranks.
            if let (Some(cid), Ok(p)) = (me, Priority::new(level)) {
                let _ = kexec().reprio(cid, p);
            }
            ss_core::yield_now().await;
        }
    }
}

enum Stop {
    Finish,
    Requeue,
    YieldToKernel,
    Blocked,
    ThreadExit,
}

#[allow(clippy::declare_interior_mutable_const)]
const NOT_LOADED: IrqMutex<Option<Arc<Process>>> = IrqMutex::new(None);
/// The process whose page table each hart has loaded, counted in that
/// process's `enter_space`, and kept after its thread stops: the next thread
/// of the same process (another of its threads, or the same one back from a
/// block) then runs without a `satp` write, whose TLB flush — under TCG also
/// the flush of every translated block's jump cache — is the dearest part of
/// a switch. Let go when a thread of another process runs on the hart, when
/// a thread ends ([`unload`], so an exiting process's frames are freed as its
/// last thread stops), and at a tick on a hart in the kernel once the process
/// is dying ([`unload_dead`]: a process killed from another hart).
static LOADED: [IrqMutex<Option<Arc<Process>>>; arch::MAX_HARTS] = [NOT_LOADED; arch::MAX_HARTS];

/// Makes `p`'s page table this hart's; false if `p` has none any more.
fn load_space(p: &Arc<Process>, hart: usize) -> bool {
    let mut slot = LOADED[hart].lock();
    if slot.as_ref().is_some_and(|q| Arc::ptr_eq(q, p)) {
        return true;
    }
    let Some(satp) = p.enter_space() else {
        return false;
    };
    // SAFETY: every address space maps the kernel as the kernel table does.
    unsafe { arch::set_satp(satp) };
    if let Some(old) = slot.replace(p.clone()) {
        old.leave_space();
    }
    true
}

/// Switches this hart back to the kernel's table and lets go of the process
/// it had loaded, if any (and `which` says so).
fn unload(which: impl FnOnce(&Process) -> bool) {
    let mut slot = LOADED[arch::hart_id()].lock();
    if slot.as_deref().is_some_and(which) {
        // SAFETY: the kernel table maps the kernel as every address space does.
        unsafe { arch::set_satp(mm::kernel_satp()) };
        if let Some(old) = slot.take() {
            old.leave_space();
        }
    }
}

/// Asks every other hart that keeps dead process `p`'s page table loaded to
/// let go of it (an IPI: see [`unload_dead`]), and lets go of it here.
pub fn unload_elsewhere(p: &Process) {
    let me = arch::hart_id();
    let is_p = |q: &Process| core::ptr::eq(q, p);
    for (hart, slot) in LOADED.iter().enumerate() {
        if hart != me && slot.lock().as_deref().is_some_and(is_p) {
            sbi::send_ipi(hart);
        }
    }
    unload(is_p);
}

/// Lets go of this hart's loaded page table if its process is dying, so a
/// process killed while another hart held its table is freed within a tick.
pub fn unload_dead() {
    unload(Process::is_dying);
}

/// Runs thread `t` on this hart until it stops (see `Stop`).
fn run(t: Arc<Thread>) -> Outcome {
    let hart = arch::hart_id();
    let _irq = NoIrq::now();
    if !load_space(&t.proc, hart) {
        t.proc.thread_exited(&t);
        return Outcome::Done;
    }
    t.set_state(ThreadState::Running);
    let mut running = Running::default();
    t.proc.set_on_hart(hart, true);
    let stop = loop {
        if t.proc.is_dying() {
            break Stop::Finish;
        }
        // SAFETY: we popped `t` from the run queue: its frame is ours until we
        // hand it on (requeue, block, finish) below.
        let frame = unsafe { t.frame() };
        // Completions waiting: into the queue, and maybe the upcall.
        crate::aio::deliver(&t, frame);
        // SAFETY: the thread's address space is active; its frame holds a user
        // context (built by `TrapFrame::new_user`, saved by the trap entry).
        unsafe { arch::run_user(frame) };
        let (cause, stval) = (arch::scause(), arch::stval());
        if cause & arch::CAUSE_INTERRUPT != 0 {
            match cause & !arch::CAUSE_INTERRUPT {
                arch::IRQ_TIMER => {
                    tick();
                    let level = t.proc.level.load(Ordering::SeqCst);
                    let waiting = with(|s| s.runq.best_level(thread_level));
                    let kernel = kexec().most_important_ready().map(|p| p.level());
                    match on_tick(&mut running, level, waiting, kernel) {
                        Tick::Continue => {}
                        Tick::Preempt => break Stop::Requeue,
                        Tick::YieldToKernel => break Stop::YieldToKernel,
                    }
                }
                arch::IRQ_SOFT => arch::clear_soft_pending(),
                arch::IRQ_EXTERNAL => console::handle_external(hart),
                _ => {}
            }
        } else if cause == arch::EXC_USER_ECALL {
            frame.sepc += 4;
            match syscall::dispatch(&t, frame) {
                syscall::Outcome::Return(v) => frame.regs[reg::A0] = v as usize,
                syscall::Outcome::Resume => {}
                syscall::Outcome::Blocked => break Stop::Blocked,
                // A thread that yields while kernel work outranks its
                // process lets the kernel Executor run that work first.
                syscall::Outcome::Yield if kernel_first(&t.proc) => break Stop::YieldToKernel,
                syscall::Outcome::Yield => break Stop::Requeue,
                syscall::Outcome::Exit => break Stop::Finish,
                syscall::Outcome::ThreadExit => break Stop::ThreadExit,
            }
        } else {
            crate::println!(
                "[kernel] pid {} ({}) thread {} killed: exception {} at pc {:#x}, stval {:#x}",
                t.proc.pid,
                t.proc.name,
                t.tid,
                cause,
                frame.sepc,
                stval
            );
            t.proc.kill(ss_abi::syscall::KILLED);
            break Stop::Finish;
        }
    };
    t.proc.set_on_hart(hart, false);
    if matches!(stop, Stop::Finish | Stop::ThreadExit) {
        // Its process may end with it: its frames go now, not at a tick.
        unload(|_| true);
    }
    match stop {
        Stop::Finish => t.proc.thread_exited(&t),
        Stop::ThreadExit => t.proc.thread_left(&t),
        Stop::Requeue => {
            t.set_state(ThreadState::Runnable);
            enqueue(t, false);
        }
        Stop::YieldToKernel => {
            let level = level_now(&t.proc);
            t.set_state(ThreadState::Runnable);
            // Its level as of now, for the switching coroutine that takes it.
            refresh(&t.proc);
            enqueue(t, false);
            return Outcome::YieldToKernel(level);
        }
        Stop::Blocked => t.reap_if_dying(),
    }
    Outcome::Done
}

/// The `time` value `ns` nanoseconds from now (saturating).
pub fn deadline_after(ns: u64) -> u64 {
    arch::time().saturating_add(ns / (1_000_000_000 / TIME_HZ))
}

/// Blocks the running thread `t` until `ns` nanoseconds from now (the system
/// call returns 0 then) and returns true; returns false at once for a sleep
/// shorter than one `time` tick.
pub fn sleep(t: &Arc<Thread>, frame: &mut arch::TrapFrame, ns: u64) -> bool {
    if ns < 1_000_000_000 / TIME_HZ {
        return false;
    }
    let deadline = deadline_after(ns);
    frame.regs[reg::A0] = 0;
    let mut list = SLEEPERS.lock();
    t.block_with(|t| list.push((deadline, t)));
    true
}

/// Whether wakers `a` and `b` stand for the same waiting party: the same
/// waker, or two wakers of the same kernel coroutine. (ss-core hands a
/// coroutine a waker of its own for each poll, which `Waker::will_wake`
/// never matches with a clone kept from an earlier poll: registrations
/// deduplicated by `will_wake` alone piled up one per poll.)
pub fn same_waiter(a: &Waker, b: &Waker) -> bool {
    a.will_wake(b)
        || matches!((ss_core::cid_of(a), ss_core::cid_of(b)), (Some(x), Some(y)) if x == y)
}

/// Has `w` woken at the first tick at or after `deadline`: one entry per
/// waiting party ([`same_waiter`]), at the earliest deadline it asked for.
pub fn wake_at(deadline: u64, w: &Waker) {
    let mut list = KERNEL_SLEEPERS.lock();
    match list.iter_mut().find(|(_, k)| same_waiter(k, w)) {
        Some(entry) => entry.0 = entry.0.min(deadline),
        None => list.push((deadline, w.clone())),
    }
}

/// Takes threads that were killed while they slept (synchronous `sleep`)
/// out of the sleeper list, for the caller to drop: the list would hold each
/// (and its process) until its deadline, which may be centuries away.
pub fn take_dead_sleepers() -> Vec<Arc<Thread>> {
    let mut dead = Vec::new();
    SLEEPERS.lock().retain(|(_, t)| {
        let gone = t.state() == crate::proc::ThreadState::Dead;
        if gone {
            dead.push(t.clone());
        }
        !gone
    });
    dead
}

/// Threads asleep in a synchronous `sleep` now.
pub fn sleepers() -> usize {
    SLEEPERS.lock().len()
}

/// Kernel coroutines registered with [`wake_at`] and [`sleep_kernel`] now.
pub fn kernel_sleepers() -> usize {
    KERNEL_SLEEPERS.lock().len()
}

/// Forgets `w` (registered with [`wake_at`]).
pub fn forget_wake(w: &Waker) {
    KERNEL_SLEEPERS.lock().retain(|(_, k)| !same_waiter(k, w));
}

/// Takes the entries of `list` whose deadline is `now` or earlier.
fn take_due<T>(list: &mut Vec<(u64, T)>, now: u64) -> Vec<T> {
    let mut due = Vec::new();
    let mut i = 0;
    while i < list.len() {
        if list[i].0 <= now {
            due.push(list.swap_remove(i).1);
        } else {
            i += 1;
        }
    }
    due
}

/// A kernel coroutine's sleep: blocks it (in the kernel Executor) for at least
/// `ms` milliseconds, to the next tick after that.
pub async fn sleep_kernel(ms: u64) {
    let deadline = arch::time().saturating_add(ms * TIME_HZ / 1000);
    core::future::poll_fn(|cx| {
        if arch::time() >= deadline {
            return Poll::Ready(());
        }
        KERNEL_SLEEPERS.lock().push((deadline, cx.waker().clone()));
        Poll::Pending
    })
    .await
}

/// The timer tick, on whichever hart it fires: re-arm, fold the process pages
/// (one hart at a time), wake sleepers whose time has come.
pub fn tick() {
    sbi::set_timer(arch::time() + TICK);
    TICKS.fetch_add(1, Ordering::Relaxed);
    let Some(_scan) = SCAN.try_lock() else {
        return;
    };
    scan();
    let now = arch::time();
    let due = take_due(&mut SLEEPERS.lock(), now);
    let wakers = take_due(&mut KERNEL_SLEEPERS.lock(), now);
    for w in wakers {
        w.wake();
    }
    for t in due {
        // Sleep does not re-issue its call: the thread resumes after `ecall`.
        if t.proc.is_dying() {
            continue;
        }
        t.wake();
    }
}
