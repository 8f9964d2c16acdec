//! Processes and threads.
//!
//! A **process** is an address space, descriptors, a published priority page and
//! its threads. A **thread** only lends its process's coroutines a stack and a
//! hart (paper §2.2–2.3): it has registers ([`TrapFrame`]) and a user stack, no
//! kernel stack — the hart's switching coroutine runs it (`sched`).
//!
//! # Thread states and who owns the registers
//!
//! ```text
//!   Runnable ──pick──► Running ──block (under the wait list's lock)──► Blocked
//!      ▲                 │ │                                             │
//!      └──preempt/yield──┘ └──exit, kill, fault──► Dead ◄──kill (CAS)────┤
//!      └──────────────────────────wake (CAS)─────────────────────────────┘
//! ```
//!
//! Exactly one party holds a thread's registers at a time: the run queue while
//! Runnable, the hart that popped it while Running, the wait list that holds it
//! while Blocked. A waker takes it out of the list and moves it to the run queue
//! with a compare-and-swap `Blocked → Runnable`; a killer's `Blocked → Dead`
//! competes for the same swap, so a thread is woken or killed, never both.
//!
//! Blocking system calls are **restartable**: a thread that must wait backs its
//! `sepc` up to the `ecall` before it is put in the wait list, and a wake-up
//! just makes it runnable, so it re-issues the call and finds what it waited for
//! (or waits again). Wakers therefore never touch another thread's registers or
//! memory.
//!
//! # Process lifetime
//!
//! `exit`, a fault or a kill marks the process dying (first exit code wins),
//! wakes its in-flight asynchronous calls so they end (`aio::cancel`) and
//! kills its blocked threads; running and runnable ones stop at their next trap
//! or pick. The last thread to stop tears the process down: its global-bitmap
//! source goes, its descriptors close, its frames are freed, and its exit code
//! goes to its parent's zombie list (waking a `wait`).

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
use core::task::Waker;

use ss_abi::page::{ProcessPage, PAGE_VERSION, PROCESS_PAGE_MAGIC};
use ss_abi::syscall::{SysError, KILLED};
use ss_abi::uspace::{self, COMPLETION_PAGE_VA, GLOBAL_PAGE_VA, PROCESS_PAGE_VA, STACK_SIZE};
use ss_abi::Priority;
use ss_core::global::SourceId;
use ss_kernel_logic::elf;
use ss_kernel_logic::sv39::{self, PAGE_SIZE};

use crate::arch::TrapFrame;
use crate::fd::{Fd, WaitSite};
use crate::mm::AddressSpace;
use crate::sched;
use crate::sync::IrqMutex;

/// A process id.
pub type Pid = u32;

/// Thread states (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum ThreadState {
    /// In the run queue.
    Runnable = 0,
    /// On a hart.
    Running = 1,
    /// In a wait list.
    Blocked = 2,
    /// Stopped for good.
    Dead = 3,
}

/// A user thread.
pub struct Thread {
    /// Its id in the process: its stack slot.
    pub tid: usize,
    /// Its process.
    pub proc: Arc<Process>,
    state: AtomicU8,
    frame: UnsafeCell<TrapFrame>,
    /// The registers an upcall interrupted, while the thread is in the
    /// process's upcall handler (`aio`); held like `frame`.
    upcall: UnsafeCell<Option<alloc::boxed::Box<TrapFrame>>>,
    /// The descriptor's object it last blocked in ([`Thread::record_site`]),
    /// for teardown to take it out of the object's wait list if it was
    /// killed there.
    site: IrqMutex<Option<Weak<dyn WaitSite>>>,
}

// SAFETY: `frame` is only accessed by the one party holding the thread in the
// sense of the module docs (run queue → picking hart → wait list → waker), and
// each hand-over goes through a lock or a compare-and-swap on `state`, which
// orders the accesses. Everything else in `Thread` is atomic or immutable.
unsafe impl Sync for Thread {}
// SAFETY: as above; a `TrapFrame` is plain data.
unsafe impl Send for Thread {}

impl Thread {
    /// The thread's registers.
    ///
    /// # Safety
    /// The caller holds the thread (it popped it from the run queue and has
    /// not handed it on), so nobody else touches the frame.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn frame(&self) -> &mut TrapFrame {
        // SAFETY: per the contract.
        unsafe { &mut *self.frame.get() }
    }

    /// The registers saved by an upcall in progress.
    ///
    /// # Safety
    /// As [`Thread::frame`]: the caller holds the thread.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn upcall_saved(&self) -> &mut Option<alloc::boxed::Box<TrapFrame>> {
        // SAFETY: per the contract.
        unsafe { &mut *self.upcall.get() }
    }

    /// The current state.
    pub fn state(&self) -> ThreadState {
        match self.state.load(Ordering::SeqCst) {
            0 => ThreadState::Runnable,
            1 => ThreadState::Running,
            2 => ThreadState::Blocked,
            _ => ThreadState::Dead,
        }
    }

    pub(crate) fn set_state(&self, s: ThreadState) {
        self.state.store(s as u8, Ordering::SeqCst);
    }

    fn cas(&self, from: ThreadState, to: ThreadState) -> bool {
        self.state
            .compare_exchange(from as u8, to as u8, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Makes a blocked thread runnable (it re-issues its system call). Does
    /// nothing to a thread that was killed meanwhile.
    pub fn wake(self: &Arc<Self>) {
        if self.cas(ThreadState::Blocked, ThreadState::Runnable) {
            sched::enqueue(self.clone(), true);
        }
    }

    /// Blocks the running thread in `list` (whose lock the caller holds), to
    /// re-issue its system call when woken. After this the caller must not
    /// touch the thread's frame: a waker may take it at once.
    pub fn block_in(self: &Arc<Self>, list: &mut VecDeque<Arc<Thread>>, frame: &mut TrapFrame) {
        frame.sepc -= 4;
        self.block_with(|t| list.push_back(t));
    }

    /// Records the descriptor's object the running thread is about to block
    /// in (`None`: it blocks elsewhere). Teardown looks there for it: the
    /// object may no longer be in the process's descriptor table — another
    /// thread closed the descriptor while this one waited — and yet live on
    /// (another process holds it, or its other end), with this thread, killed,
    /// in its wait list holding the whole process until the object's next
    /// wake-up, maybe never.
    pub fn record_site(&self, site: Option<Weak<dyn WaitSite>>) {
        *self.site.lock() = site;
    }

    /// Blocks the running thread; `park` stores it where its waker will find
    /// it (under the lock that waker takes). The system call is not re-issued:
    /// the caller has set the return value.
    pub fn block_with(self: &Arc<Self>, park: impl FnOnce(Arc<Thread>)) {
        self.set_state(ThreadState::Blocked);
        sched::thread_stopped(&self.proc);
        park(self.clone());
    }

    /// After the thread blocked: a kill that swept the threads before this one
    /// was Blocked missed it, so finish the job.
    pub fn reap_if_dying(&self) {
        if self.proc.is_dying() && self.cas(ThreadState::Blocked, ThreadState::Dead) {
            self.proc.thread_gone();
        }
    }
}

/// A process's address space, and how many harts have its page table loaded:
/// the frames are freed when the process is dead *and* no hart uses them any
/// more (a hart keeps the table of the last thread it ran loaded until it
/// runs another process's thread: `sched::load_space`).
struct SpaceSlot {
    space: Option<AddressSpace>,
    harts: usize,
    dead: bool,
}

/// A process.
pub struct Process {
    /// Its id.
    pub pid: Pid,
    /// The program's name.
    pub name: &'static str,
    /// The parent; `None` for processes the kernel started.
    pub parent: Option<Pid>,
    /// Its memory, and which harts have it as their page table.
    space: IrqMutex<SpaceSlot>,
    /// Physical address of its process page (`ss_abi::page::ProcessPage`).
    pub page_pa: usize,
    /// Physical address of its completion queue (`ss_abi::completion`).
    pub cq_pa: usize,
    /// Its asynchronous calls and their completions.
    pub aio: IrqMutex<crate::aio::Aio>,
    /// Bit *h*: a thread of the process is on hart *h* now.
    on_harts: AtomicU64,
    /// Its source in the global bitmap.
    pub source: SourceId,
    /// Its effective level at the last fold (lower is more important).
    pub level: AtomicU8,
    /// Its sanitised bitmap at the last fold.
    pub bits: AtomicU64,
    /// Threads Runnable or Running (a process with none claims no priority).
    pub active: AtomicUsize,
    /// The next never-used stack slot (slot 0 is the first thread's).
    next_slot: AtomicUsize,
    /// Who carries out its I/O (`ss_abi::syscall::IoMode` as a number).
    pub io_mode: AtomicUsize,
    /// Kernel memory held on its behalf (`crate::kmem`).
    pub kmem: Arc<crate::kmem::Account>,
    dying: AtomicBool,
    exit_code: AtomicI32,
    /// Everything else, under one lock.
    pub inner: IrqMutex<Inner>,
}

/// A process's lock-protected state.
pub struct Inner {
    /// Every thread; emptied at teardown.
    pub threads: Vec<Arc<Thread>>,
    /// Threads not yet Dead.
    pub live: usize,
    /// Children that have not been reaped… or are still running.
    pub children: usize,
    /// Exited children not yet waited for: (pid, code).
    pub zombies: VecDeque<(Pid, i32)>,
    /// Threads blocked in `wait`.
    pub waiters: VecDeque<Arc<Thread>>,
    /// Descriptors.
    pub fds: Vec<Option<Fd>>,
    /// Wake-up permits for the process's idle threads (`park`/`unpark`).
    pub permits: usize,
    /// Threads blocked in `park`.
    pub parked: VecDeque<Arc<Thread>>,
    /// Stack slots of ended threads (still mapped), for the next threads.
    pub free_slots: Vec<usize>,
    /// Threads between `thread_exit` and their end.
    pub leaving: usize,
}

/// `Process` structures in memory (live or not yet dropped), for the
/// kernel's leak test.
pub static ALIVE: AtomicUsize = AtomicUsize::new(0);

impl Drop for Process {
    fn drop(&mut self) {
        ALIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Every live process, by pid.
pub static PROCS: IrqMutex<BTreeMap<Pid, Arc<Process>>> = IrqMutex::new(BTreeMap::new());
static NEXT_PID: AtomicU32 = AtomicU32::new(1);

/// Exit codes of processes the kernel itself started, and who waits for them.
static KERNEL_CHILDREN: IrqMutex<(BTreeMap<Pid, i32>, Vec<Waker>)> =
    IrqMutex::new((BTreeMap::new(), Vec::new()));

/// Waits (as a kernel coroutine) for the kernel-started process `pid` to exit.
pub async fn wait_kernel_child(pid: Pid) -> i32 {
    core::future::poll_fn(|cx| {
        let mut g = KERNEL_CHILDREN.lock();
        if let Some(code) = g.0.remove(&pid) {
            return core::task::Poll::Ready(code);
        }
        g.1.push(cx.waker().clone());
        core::task::Poll::Pending
    })
    .await
}

/// The exit code of the kernel-started process `pid` if it has exited (taken:
/// a second call, or [`wait_kernel_child`], no longer finds it).
pub fn try_kernel_child(pid: Pid) -> Option<i32> {
    KERNEL_CHILDREN.lock().0.remove(&pid)
}

/// The embedded program called `name`.
pub fn program(name: &str) -> Option<&'static [u8]> {
    crate::apps::APPS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
}

/// Starts program `name` as a new process whose main coroutine has
/// `priority`; its `main` receives `arg`, its descriptor 3 is `fd3`.
///
/// # Errors
/// [`SysError::NoSuchProgram`], [`SysError::OutOfMemory`].
pub fn spawn(
    name: &str,
    priority: Priority,
    arg: usize,
    parent: Option<Pid>,
    fd3: Option<Fd>,
) -> Result<Arc<Process>, SysError> {
    let (name, image) = crate::apps::APPS
        .iter()
        .find(|(n, _)| *n == name)
        .copied()
        .ok_or(SysError::NoSuchProgram)?;
    let plan = elf::plan(image).map_err(|e| {
        crate::println!("[kernel] program {name} is not loadable: {e}");
        SysError::NoSuchProgram
    })?;
    let mut space = AddressSpace::new()?;
    crate::loader::load_program(&mut space, image, &plan)?;
    crate::loader::map_vdso(&mut space)?;
    space.map(GLOBAL_PAGE_VA, sched::global_page_ppn(), sv39::R, false)?;
    let page_ppn = space.map_new(PROCESS_PAGE_VA, sv39::R | sv39::W)?;
    let page_pa = page_ppn * PAGE_SIZE;
    // SAFETY: the process page's frame is ours and zeroed; nothing runs in the
    // process yet.
    unsafe {
        (page_pa as *mut ProcessPage).write(ProcessPage {
            magic: PROCESS_PAGE_MAGIC,
            version: PAGE_VERSION,
            seq: 0,
            ready: priority.bit(),
            ..ProcessPage::default()
        })
    };
    let cq_pa = space.map_new(COMPLETION_PAGE_VA, sv39::R | sv39::W)? * PAGE_SIZE;
    crate::aio::init_queue(cq_pa);
    let stack_top = map_stack(&mut space, 0)?;
    let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
    let proc = Arc::new(Process {
        pid,
        name,
        parent,
        space: IrqMutex::new(SpaceSlot {
            space: Some(space),
            harts: 0,
            dead: false,
        }),
        page_pa,
        cq_pa,
        aio: IrqMutex::new(crate::aio::Aio::default()),
        on_harts: AtomicU64::new(0),
        source: sched::add_source(),
        level: AtomicU8::new(priority.level()),
        bits: AtomicU64::new(priority.bit()),
        active: AtomicUsize::new(0),
        next_slot: AtomicUsize::new(1),
        io_mode: AtomicUsize::new(0),
        kmem: Arc::new(crate::kmem::Account::default()),
        dying: AtomicBool::new(false),
        exit_code: AtomicI32::new(0),
        inner: IrqMutex::new(Inner {
            threads: Vec::new(),
            live: 0,
            children: 0,
            zombies: VecDeque::new(),
            waiters: VecDeque::new(),
            fds: alloc::vec![Some(Fd::Stdin), Some(Fd::Stdout), Some(Fd::Stdout), fd3],
            permits: 0,
            parked: VecDeque::new(),
            free_slots: Vec::new(),
            leaving: 0,
        }),
    });
    ALIVE.fetch_add(1, Ordering::SeqCst);
    PROCS.lock().insert(pid, proc.clone());
    let frame = TrapFrame::new_user(plan.entry, stack_top, arg, usize::from(priority.level()));
    proc.add_thread(0, frame);
    Ok(proc)
}

/// Maps thread `tid`'s stack; returns its top.
fn map_stack(space: &mut AddressSpace, tid: usize) -> Result<usize, SysError> {
    let top = uspace::stack_top(tid).ok_or(SysError::Limit)?;
    for page in (top - STACK_SIZE..top).step_by(PAGE_SIZE) {
        space.map_new(page, sv39::R | sv39::W)?;
    }
    Ok(top)
}

impl Process {
    /// Runs `f` on the process's address space.
    ///
    /// # Errors
    /// `f`'s, or [`SysError::BadAddress`] once the space is gone.
    pub fn with_space<R>(
        &self,
        f: impl FnOnce(&mut AddressSpace) -> Result<R, SysError>,
    ) -> Result<R, SysError> {
        f(self
            .space
            .lock()
            .space
            .as_mut()
            .ok_or(SysError::BadAddress)?)
    }

    /// A hart is about to switch to this process's page table: its `satp`, or
    /// `None` once the space is gone.
    pub fn enter_space(&self) -> Option<usize> {
        let mut slot = self.space.lock();
        let satp = slot.space.as_ref()?.satp();
        slot.harts += 1;
        Some(satp)
    }

    /// A hart has switched away from this process's page table; the last one
    /// out of a dead process frees it, and then reports the exit (a dead
    /// process's space still there is one whose exit teardown left to it).
    pub fn leave_space(&self) {
        let freed = {
            let mut slot = self.space.lock();
            slot.harts -= 1;
            if slot.dead && slot.harts == 0 {
                slot.space.take()
            } else {
                None
            }
        };
        if let Some(space) = freed {
            drop(space);
            self.report_exit();
        }
    }

    /// Records that a thread of the process is (or is no longer) on `hart`.
    pub fn set_on_hart(&self, hart: usize, on: bool) {
        let bit = 1u64 << (hart % 64);
        if on {
            self.on_harts.fetch_or(bit, Ordering::SeqCst);
        } else {
            self.on_harts.fetch_and(!bit, Ordering::SeqCst);
        }
    }

    /// The harts a thread of the process is on now.
    pub fn on_harts(&self) -> u64 {
        self.on_harts.load(Ordering::SeqCst)
    }

    /// Whether the process is being torn down.
    pub fn is_dying(&self) -> bool {
        self.dying.load(Ordering::SeqCst)
    }

    /// Adds a thread with registers `frame` and makes it runnable.
    fn add_thread(self: &Arc<Self>, tid: usize, frame: TrapFrame) -> usize {
        let mut inner = self.inner.lock();
        let t = Arc::new(Thread {
            tid,
            proc: self.clone(),
            state: AtomicU8::new(ThreadState::Runnable as u8),
            frame: UnsafeCell::new(frame),
            upcall: UnsafeCell::new(None),
            site: IrqMutex::new(None),
        });
        inner.threads.push(t.clone());
        inner.live += 1;
        drop(inner);
        sched::enqueue(t, true);
        tid
    }

    /// `alloc_cpu`: a new thread at `entry(arg)` on a fresh stack.
    ///
    /// # Errors
    /// [`SysError::Limit`] past `MAX_THREADS`, [`SysError::OutOfMemory`].
    pub fn new_thread(self: &Arc<Self>, entry: usize, arg: usize) -> Result<usize, SysError> {
        // Each thread's stack slot is its own, even when threads of the
        // process call this at once. An ended thread's slot is still mapped.
        let reused = self.inner.lock().free_slots.pop();
        let top = match reused {
            Some(tid) => uspace::stack_top(tid).ok_or(SysError::Limit)?,
            None => {
                let tid = self.next_slot.fetch_add(1, Ordering::SeqCst);
                let mut slot = self.space.lock();
                let mapped = map_stack(slot.space.as_mut().ok_or(SysError::Limit)?, tid);
                mapped?
            }
        };
        let tid = (uspace::USER_END - top) / uspace::STACK_STRIDE;
        if self.is_dying() {
            return Err(SysError::Limit);
        }
        let frame = TrapFrame::new_user(entry, top, arg, 0);
        Ok(self.add_thread(tid, frame))
    }

    /// `thread_exit` from thread `t`: `false` when it is the process's last
    /// thread (the caller ends the process instead); else `t` leaves the
    /// thread list, its stack slot is free for the next thread, and the caller
    /// must end it with [`Process::thread_left`].
    pub fn thread_leaving(self: &Arc<Self>, t: &Thread) -> bool {
        let mut inner = self.inner.lock();
        if inner.live <= inner.leaving + 1 {
            return false;
        }
        inner.leaving += 1;
        inner.threads.retain(|x| x.tid != t.tid);
        inner.free_slots.push(t.tid);
        true
    }

    /// Thread `t`, which [`Process::thread_leaving`] let go, has stopped (the
    /// caller no longer uses the process's page table).
    pub fn thread_left(self: &Arc<Self>, t: &Thread) {
        t.set_state(ThreadState::Dead);
        sched::thread_stopped(self);
        let last = {
            let mut inner = self.inner.lock();
            inner.leaving -= 1;
            inner.live -= 1;
            inner.live == 0
        };
        if last {
            self.teardown();
        }
    }

    /// Marks the process dying with `code` (the first code wins) and kills its
    /// blocked threads. Running and runnable ones stop at their next trap.
    pub fn kill(self: &Arc<Self>, code: i32) {
        if self.dying.swap(true, Ordering::SeqCst) {
            return;
        }
        self.exit_code.store(code, Ordering::SeqCst);
        crate::aio::cancel(self);
        let threads: Vec<_> = self.inner.lock().threads.clone();
        for t in threads {
            if t.cas(ThreadState::Blocked, ThreadState::Dead) {
                self.thread_gone();
            }
        }
    }

    /// A running thread of this (dying) process stops. The caller's hart has
    /// let go of the process's page table (`sched::run` unloads it first).
    pub fn thread_exited(self: &Arc<Self>, t: &Thread) {
        t.set_state(ThreadState::Dead);
        sched::thread_stopped(self);
        self.thread_gone();
    }

    /// One thread fewer; the last one tears the process down. A hart that
    /// still has the process's table loaded holds its frames until it lets
    /// go (`leave_space`), which teardown asks of it at once.
    fn thread_gone(self: &Arc<Self>) {
        let last = {
            let mut inner = self.inner.lock();
            inner.live -= 1;
            inner.live == 0
        };
        if last {
            self.teardown();
        }
    }

    fn teardown(self: &Arc<Self>) {
        PROCS.lock().remove(&self.pid);
        sched::remove_source(self.source);
        let (fds, threads, parked, waiters) = {
            let mut inner = self.inner.lock();
            (
                core::mem::take(&mut inner.fds),
                core::mem::take(&mut inner.threads),
                core::mem::take(&mut inner.parked),
                core::mem::take(&mut inner.waiters),
            )
        };
        // Every thread is dead by now. The ones that were blocked may still be
        // in the list they waited in (the kill only marked them): a sleep
        // (due centuries ahead, perhaps), console input, a pipe or socket —
        // one another process shares, or one whose descriptor another thread
        // closed meanwhile, so that the table no longer names it. Each holds
        // this process in memory; they are taken out now and dropped below.
        // A thread blocked on a descriptor's object recorded it.
        let mut dead = sched::take_dead_sleepers();
        dead.append(&mut crate::console::INPUT.lock().readers.take_dead());
        let sites: Vec<Arc<dyn WaitSite>> = threads
            .iter()
            .filter_map(|t| t.site.lock().take()?.upgrade())
            .collect();
        for site in &sites {
            dead.append(&mut site.take_dead_waiters());
        }
        // Outside our lock: closing a pipe end wakes other processes' threads.
        drop((fds, threads, parked, waiters, dead, sites));
        // Freed and reported now, or by the last hart to leave its page table
        // (each is asked to at once). The exit is reported only once the
        // frames are free, so that a parent that spawns again once its child
        // is reaped finds the child's memory free.
        let freed = {
            let mut slot = self.space.lock();
            slot.dead = true;
            if slot.harts == 0 {
                slot.space.take()
            } else {
                None
            }
        };
        match freed {
            Some(space) => {
                drop(space);
                self.report_exit();
            }
            None => sched::unload_elsewhere(self),
        }
    }

    /// Tells the parent (or the kernel) that the process has exited, with its
    /// code: what `wait` returns.
    fn report_exit(&self) {
        let code = self.exit_code.load(Ordering::SeqCst);
        match self.parent {
            Some(ppid) => {
                let parent = PROCS.lock().get(&ppid).cloned();
                if let Some(parent) = parent {
                    let waiters = {
                        let mut inner = parent.inner.lock();
                        inner.zombies.push_back((self.pid, code));
                        core::mem::take(&mut inner.waiters)
                    };
                    for t in waiters {
                        t.wake();
                    }
                }
            }
            None => {
                let wakers = {
                    let mut g = KERNEL_CHILDREN.lock();
                    g.0.insert(self.pid, code);
                    core::mem::take(&mut g.1)
                };
                for w in wakers {
                    w.wake();
                }
            }
        }
    }
}

/// The exit code `wait` reports for a killed process.
pub const KILLED_CODE: i32 = KILLED;
