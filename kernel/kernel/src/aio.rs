//! Asynchronous system calls (paper §3.2, Listing 2) and the emulated
//! user-level interrupt that delivers their results.
//!
//! # The call
//!
//! `read`, `write`, `sleep` and `accept` with a coroutine id other than
//! `ASYNC_ARG_NONE` check every argument exactly as the synchronous form does
//! (a refused argument is the call's return value, nothing starts), copy a
//! `write`'s bytes in, reserve one of the process's [`MAX_INFLIGHT`] slots
//! and charge the process ([`crate::kmem`]) for the call's kernel memory,
//! spawn an [`OpTask`] — a kernel coroutine in the kernel Executor, one level
//! more important than the process — and return the call's operation id
//! (per process, rising from 1). The calling thread never blocks; only the
//! user coroutine that awaits the result does.
//!
//! The kernel coroutine waits on the pipe, the console or the clock like any
//! kernel coroutine (a waker in the object's `Waiters`), does the transfer,
//! and finishes with a [`Completion`] `(cid, result, op)`: a byte count or
//! `-(SysError)`, never a bare wake; `op` tells a coroutine's calls apart.
//!
//! `cancel(op)` ([`cancel_op`]) marks an asynchronous call in flight as
//! cancelled and wakes its coroutine, which ends at its next poll without a
//! completion and gives its slot back; a poll in progress on another hart is
//! waited for, so that after the cancel the call never writes the caller's
//! memory (a cancelled `read`'s buffer may be reused at once).
//!
//! # Buffers
//!
//! A `write`'s bytes are copied in when the call is made. A `read`'s buffer
//! is checked (mapped, user, writable) when the call is made and written when
//! it completes, through the process's page table. This kernel has no
//! `munmap`: a process cannot unmap anything while it lives, so a checked
//! buffer stays mapped for the life of the operation, and the address space
//! (with the buffer) is freed only at teardown, after which the copy finds no
//! space and the result is dropped with the process.
//!
//! # Completion queue and upcall (the emulated N extension)
//!
//! Finished calls wait in the process's [`Aio::done`] (kernel memory, bounded
//! by the in-flight slots) until one of the process's threads is about to
//! return to user mode on some hart ([`deliver`], from `sched::run`): then as
//! many as fit go into the ring of the process's completion page
//! (`ss_abi::completion`), and if the process registered a handler the
//! thread is sent into it — its registers are saved in the kernel, `sepc`
//! becomes the handler, `sp` moves below the interrupted frame — unless it is
//! already in it, or its `pc` is inside the shared scheduler code (the vDSO),
//! which counts as "user interrupts disabled": the vDSO drains the queue
//! itself at its next safe point, between two polls. The handler ends with
//! `upcall_return`, which restores every register (the N extension's
//! `uret`). When a call completes, the kernel sends an IPI to every other
//! hart running a thread of the process (so the upcall happens at once) and
//! gives the process one wake-up permit (so a parked thread comes back for
//! it).
//!
//! The page is writable by the process, so nothing read from it is trusted:
//! an impossible `head` resets the ring (counted in `resets`), and the kernel
//! keeps its own `tail`, writes only whole entries at in-range offsets, and
//! touches the page only while one of the process's threads runs (so its
//! frame is mapped).
//!
//! # Exit with calls in flight
//!
//! `Process::kill` wakes every in-flight call's coroutine ([`cancel`]); it
//! sees the process dying, drops its waker from whatever it waited on, and
//! ends. [`LIVE`] counts the coroutines alive, for the kernel's leak test.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use core::task::{Context, Poll, Waker};

use alloc::task::Wake;

use ss_abi::completion::{
    entry_offset, free_slots, Completion, CompletionHeader, CQ_HEAD_OFFSET, CQ_IPIS_OFFSET,
    CQ_MAGIC, CQ_RESETS_OFFSET, CQ_TAIL_OFFSET, CQ_UPCALLS_OFFSET, CQ_VERSION,
};
use ss_abi::syscall::SysError;
use ss_abi::uspace::{IMAGE_BASE, USER_BASE, USER_END, VDSO_BASE};
use ss_abi::{Levels, Priority};
use ss_kernel_logic::user::UserRange;

use crate::arch::{self, reg, TrapFrame};
use crate::fd::Fd;
use crate::kmem::{self, Charge};
use crate::proc::{Process, Thread};
use crate::sync::IrqMutex;
use crate::syscall::{
    check_out, copy_in, copy_out_prefix, fd_of, install_in, io_mode, FdRef, MAX_IO,
};
use crate::{kexec, net, sbi, sched};
use ss_abi::syscall::IoMode;

/// Asynchronous calls a process may have started and not yet seen delivered
/// into its completion queue.
pub const MAX_INFLIGHT: usize = 4096;

/// What a call in flight is charged to its process ([`crate::kmem`]) besides
/// a `write`'s bytes: its kernel coroutine (the task, ss-core's block, the
/// wakers it leaves).
pub const OP_CHARGE: usize = core::mem::size_of::<OpTask>() + 256;

/// Kernel coroutines of asynchronous calls now alive (all processes).
pub static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Upcalls delivered (all processes).
pub static UPCALLS: AtomicU64 = AtomicU64::new(0);

type Result<T> = core::result::Result<T, SysError>;

/// A process's asynchronous calls.
#[derive(Default)]
pub struct Aio {
    /// Calls started and not yet in the ring.
    inflight: usize,
    /// Finished calls not yet in the ring.
    done: VecDeque<Completion>,
    /// Entries the kernel has put in the ring (its own copy of `tail`).
    tail: u64,
    /// `tail` when the last upcall was delivered.
    upcalled: u64,
    /// The registered handler (0: none).
    handler: usize,
    /// In-flight calls' wakers, by operation id (woken when the process dies).
    cancel: BTreeMap<u64, Waker>,
    /// Asynchronous calls whose kernel coroutine is alive and has not
    /// finished (the ones `cancel(op)` can end).
    queued: BTreeSet<u64>,
    /// Of those, the ones the process cancelled (the coroutine ends at its
    /// next poll).
    cancelled: BTreeSet<u64>,
    /// Of those, the ones a hart is polling now (trying the transfer: a
    /// `read` may be writing its buffer); `cancel` waits for them.
    polling: BTreeSet<u64>,
    /// Finished `accept`s still in `done`, by operation id: the connection
    /// each installed (closed if the call is cancelled before delivery).
    accepted: BTreeMap<u64, Arc<net::Conn>>,
    next_op: u64,
    upcalls: u64,
    ipis: u64,
    resets: u64,
}

/// Writes the header of a new process's (zeroed) completion page at `pa`.
pub fn init_queue(pa: usize) {
    // SAFETY: the frame was just allocated for the page and is zeroed; no
    // process maps it yet.
    unsafe {
        (pa as *mut CompletionHeader).write(CompletionHeader {
            magic: CQ_MAGIC,
            version: CQ_VERSION,
            ..CompletionHeader::default()
        })
    };
}

/// The word at `off` in `p`'s completion page.
///
/// Only while a thread of `p` is on a hart (its address space, which owns the
/// frame, lives until the last hart leaves it).
fn word(p: &Process, off: usize) -> &AtomicU64 {
    // SAFETY: `cq_pa` is the page's frame, alive per the rule above; `off` is
    // a multiple of 8 inside the page; the process writes the page at the
    // same time, so every access is atomic.
    unsafe { &*((p.cq_pa + off) as *const AtomicU64) }
}

/// What an asynchronous call does.
enum Op {
    Read { f: FdRef, range: UserRange },
    Write { f: FdRef, data: Vec<u8> },
    Sleep { deadline: u64 },
    Accept { l: Arc<net::Listener> },
}

/// Where an operation's result goes.
enum Target {
    /// `(cid, result)` into the process's completion queue (an asynchronous
    /// call).
    Queue { cid: u64 },
    /// Into the blocked thread's `a0`, then the thread is woken (a
    /// synchronous call carried by a kernel coroutine, `IoMode::KernelCoroutine`).
    Thread(Option<Arc<Thread>>),
}

/// `read` or `write(fd, buf, len, cid, prio)`, asynchronous: the synchronous
/// form's checks, in its order (a write's bytes are copied in now), then a
/// kernel coroutine.
pub fn submit_io(
    t: &Arc<Thread>,
    cid: u64,
    prio: Option<Priority>,
    write: bool,
    [fd, buf, len]: [usize; 3],
) -> Result<usize> {
    let op = if write {
        write_op(t, fd, buf, len)?
    } else {
        read_op(t, fd, buf, len)?
    };
    submit(t, cid, prio, op)
}

/// `accept(fd, cid)`, asynchronous: completes with the new descriptor.
pub fn submit_accept(
    t: &Arc<Thread>,
    cid: u64,
    prio: Option<Priority>,
    fd: usize,
) -> Result<usize> {
    match fd_of(t, fd)? {
        FdRef::Listener(l) => submit(t, cid, prio, Op::Accept { l }),
        _ => Err(SysError::BadFd),
    }
}

/// The checks of a read; the operation.
fn read_op(t: &Arc<Thread>, fd: usize, buf: usize, len: usize) -> Result<Op> {
    let f = fd_of(t, fd)?;
    let range = check_out(t, buf, len.min(MAX_IO))?;
    match f {
        FdRef::Stdin | FdRef::PipeRead(_) | FdRef::Tcp(_) => Ok(Op::Read { f, range }),
        FdRef::Stdout | FdRef::PipeWrite(_) | FdRef::Listener(_) => Err(SysError::BadFd),
    }
}

/// The checks of a write (its bytes copied in); the operation.
fn write_op(t: &Arc<Thread>, fd: usize, buf: usize, len: usize) -> Result<Op> {
    let f = fd_of(t, fd)?;
    let data = copy_in(t, buf, len)?;
    match f {
        FdRef::Stdout | FdRef::PipeWrite(_) | FdRef::Tcp(_) => Ok(Op::Write { f, data }),
        FdRef::Stdin | FdRef::PipeRead(_) | FdRef::Listener(_) => Err(SysError::BadFd),
    }
}

/// A synchronous `read` (`write`: a `write`) carried out by a kernel
/// coroutine (`IoMode::KernelCoroutine`, the paper's KCUT): `Ok` when the
/// thread is blocked until the coroutine wakes it with the result.
pub fn carry_io(
    t: &Arc<Thread>,
    frame: &mut TrapFrame,
    write: bool,
    [fd, buf, len]: [usize; 3],
) -> Result<()> {
    let op = if write {
        write_op(t, fd, buf, len)?
    } else {
        read_op(t, fd, buf, len)?
    };
    carry(t, frame, op)
}

/// A synchronous `accept` carried out by a kernel coroutine (see [`carry_io`]).
pub fn carry_accept(t: &Arc<Thread>, frame: &mut TrapFrame, fd: usize) -> Result<()> {
    match fd_of(t, fd)? {
        FdRef::Listener(l) => carry(t, frame, Op::Accept { l }),
        _ => Err(SysError::BadFd),
    }
}

fn carry(t: &Arc<Thread>, frame: &mut TrapFrame, op: Op) -> Result<()> {
    let p = &t.proc;
    let (id, charge) = reserve(p, &op)?;
    // The result if the coroutine never delivers one (it could not start).
    frame.regs[reg::A0] = SysError::OutOfMemory.to_ret() as usize;
    let mut task = OpTask {
        p: p.clone(),
        id,
        target: Target::Thread(None),
        op,
        own: own_waker(),
        waker: None,
        finished: false,
        accepted: None,
        _charge: charge,
    };
    t.block_with(|th| task.target = Target::Thread(Some(th)));
    // A refused spawn drops the task, which wakes the thread.
    let _ = kexec().spawn(task, op_priority(p));
    Ok(())
}

/// `sleep(ns, cid)`, asynchronous: completes `(cid, 0)` at the first tick
/// `ns` or more from now.
pub fn submit_sleep(t: &Arc<Thread>, cid: u64, prio: Option<Priority>, ns: u64) -> Result<usize> {
    submit(
        t,
        cid,
        prio,
        Op::Sleep {
            deadline: sched::deadline_after(ns),
        },
    )
}

/// Takes one of `p`'s in-flight slots and charges `p` for `op`'s kernel
/// memory; an operation id and the charge (held by the call's coroutine).
fn reserve(p: &Process, op: &Op) -> Result<(u64, Charge)> {
    let bytes = match op {
        Op::Write { data, .. } => data.capacity(),
        _ => 0,
    };
    let charge = kmem::charge(&p.kmem, OP_CHARGE + bytes)?;
    let mut a = p.aio.lock();
    if a.inflight >= MAX_INFLIGHT {
        return Err(SysError::Limit);
    }
    a.inflight += 1;
    a.next_op += 1;
    LIVE.fetch_add(1, Ordering::SeqCst);
    Ok((a.next_op, charge))
}

/// A fresh [`OpWake`] and its waker.
fn own_waker() -> (Waker, Arc<OpWake>) {
    let wake = Arc::new(OpWake {
        poller: IrqMutex::new(None),
    });
    (Waker::from(wake.clone()), wake)
}

/// One level above the process an operation works for: on a hart where the
/// process spins, the tick then lets the call finish (`Tick::YieldToKernel`).
fn op_priority(p: &Process) -> Priority {
    let level = p.level.load(Ordering::SeqCst).saturating_sub(1);
    Priority::new(level).unwrap_or(Levels::DEFAULT.least_important())
}

/// Starts the kernel coroutine of an asynchronous call: at the issuing
/// coroutine's level `prio` when the call names one (so the call waits behind
/// more important work, kernel or user, as its issuer would), else one level
/// above the process.
fn submit(t: &Arc<Thread>, cid: u64, prio: Option<Priority>, op: Op) -> Result<usize> {
    let p = &t.proc;
    let (id, charge) = reserve(p, &op)?;
    p.aio.lock().queued.insert(id);
    let prio = prio.unwrap_or_else(|| op_priority(p));
    let task = OpTask {
        p: p.clone(),
        id,
        target: Target::Queue { cid },
        op,
        own: own_waker(),
        waker: None,
        finished: false,
        accepted: None,
        _charge: charge,
    };
    if io_mode(t) == IoMode::KernelThread {
        poller_add(task, op_priority(p));
        return Ok(id as usize);
    }
    // A refused spawn drops the task, which gives its slot back.
    kexec()
        .spawn(task, prio)
        .map(|_| id as usize)
        .map_err(|_| SysError::OutOfMemory)
}

/// The kernel's polling thread (`IoMode::KernelThread`, the paper's KTUC):
/// the operations handed to it, and its waker.
struct PollerState {
    ops: Vec<OpTask>,
    waker: Option<Waker>,
    /// Operations were added since the last scan began.
    added: bool,
    started: bool,
}

static POLLER: IrqMutex<PollerState> = IrqMutex::new(PollerState {
    ops: Vec::new(),
    waker: None,
    added: false,
    started: false,
});

/// Operations the polling thread holds now (all processes).
pub fn poller_len() -> usize {
    POLLER.lock().ops.len()
}

fn poller_add(task: OpTask, prio: Priority) {
    let start = {
        let mut st = POLLER.lock();
        st.ops.push(task);
        st.added = true;
        let start = !st.started;
        st.started = true;
        if let Some(w) = st.waker.take() {
            w.wake();
        }
        start
    };
    if start && kexec().spawn(poller(), prio).is_err() {
        POLLER.lock().started = false;
    }
}

/// The polling thread: each round tries every operation it holds, in order
/// (the cost the paper measures: a round grows with the operations
/// outstanding); after a round that finished something it goes round again
/// (behind other ready work at its level); after one that did not, it sleeps
/// until an event on any of its operations' objects or a new operation. It
/// ends when it holds none, so no idle kernel thread outlives its work.
async fn poller() {
    core::future::poll_fn(|cx| {
        let mut ops = {
            let mut st = POLLER.lock();
            st.added = false;
            core::mem::take(&mut st.ops)
        };
        let before = ops.len();
        ops.retain_mut(|op| match Pin::new(&mut *op).poll(cx) {
            // Its drop takes its own waker from where it waited; the other
            // operations' registrations stay.
            Poll::Ready(()) => false,
            Poll::Pending => true,
        });
        let progressed = ops.len() != before;
        let mut st = POLLER.lock();
        ops.append(&mut st.ops);
        st.ops = ops;
        if st.ops.is_empty() {
            // Nothing held: the thread ends (the next operation starts one,
            // at its process's level).
            st.started = false;
            st.waker = None;
            return Poll::Ready(());
        }
        if progressed || st.added {
            cx.waker().wake_by_ref();
        } else {
            st.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    })
    .await
}

/// The waker an operation leaves where it waits: its own, one per call, so
/// that each call is registered once wherever it waits and its end removes
/// exactly its own registrations. It wakes whatever polls the call now (the
/// call's own kernel coroutine, or the polling thread).
struct OpWake {
    poller: IrqMutex<Option<Waker>>,
}

impl Wake for OpWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let w = self.poller.lock().clone();
        if let Some(w) = w {
            w.wake();
        }
    }
}

/// The kernel coroutine of one asynchronous call.
struct OpTask {
    p: Arc<Process>,
    id: u64,
    target: Target,
    op: Op,
    /// Its own waker (see [`OpWake`]) and what it wakes.
    own: (Waker, Arc<OpWake>),
    /// The waker it left with the object it waits on (its own).
    waker: Option<Waker>,
    finished: bool,
    /// The connection an `accept` installed (its result's descriptor).
    accepted: Option<Arc<net::Conn>>,
    /// Its kernel memory, charged to its process until it ends.
    _charge: Charge,
}

impl OpTask {
    /// Tries the operation once: `Some(result)`, or `None` after leaving
    /// `w` where the event will wake it.
    fn attempt(&mut self, w: &Waker) -> Option<isize> {
        let ret = |r: Result<usize>| r.map_or_else(|e| e.to_ret(), |n| n as isize);
        match &self.op {
            // An empty read is 0 at once, as in the synchronous form.
            Op::Read { range, .. } if range.is_empty() => Some(0),
            Op::Read { f, range } => Some(ret(f
                .read(range.len(), |q| q.add_task(w))?
                .and_then(|data| copy_out_prefix(&self.p, *range, &data).map(|_| data.len())))),
            Op::Write { f, data } => Some(ret(f.write(data, |q| q.add_task(w))?)),
            Op::Accept { l } => Some(ret(net::accept(l, |q| q.add_task(w))?.and_then(|c| {
                let c = Arc::new(c);
                let fd = install_in(&self.p, Fd::Tcp(c.clone()))?;
                self.accepted = Some(c);
                Ok(fd)
            }))),
            Op::Sleep { deadline } => {
                if arch::time() >= *deadline {
                    Some(0)
                } else {
                    sched::wake_at(*deadline, w);
                    None
                }
            }
        }
    }
}

impl Future for OpTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        // Registered before the dying check: a kill after it wakes us (and
        // before the cancelled check: a cancel after it wakes us).
        let queued = matches!(this.target, Target::Queue { .. });
        {
            let mut a = this.p.aio.lock();
            a.cancel.insert(this.id, cx.waker().clone());
            if a.cancelled.remove(&this.id) {
                // Ends unfinished: the drop gives the slot back.
                return Poll::Ready(());
            }
            if queued {
                a.polling.insert(this.id);
            }
        }
        // Until this poll ends, a `cancel` of this call waits: once it
        // returns, the call never touches the process's memory again.
        let p = this.p.clone();
        let _polling = queued.then(|| Polling(&p, this.id));
        if this.p.is_dying() {
            return Poll::Ready(());
        }
        {
            let mut poller = this.own.1.poller.lock();
            if !poller
                .as_ref()
                .is_some_and(|w| sched::same_waiter(w, cx.waker()))
            {
                *poller = Some(cx.waker().clone());
            }
        }
        let own = this.own.0.clone();
        match this.attempt(&own) {
            None => {
                if this.waker.is_none() {
                    this.waker = Some(this.own.0.clone());
                }
                Poll::Pending
            }
            Some(result) => {
                this.finished = true;
                match &mut this.target {
                    Target::Queue { cid } => {
                        let accepted = this.accepted.take();
                        complete(&this.p, this.id, *cid, result, accepted)
                    }
                    Target::Thread(th) => {
                        this.p.aio.lock().cancel.remove(&this.id);
                        if let Some(th) = th.take() {
                            // SAFETY: the thread is blocked and parked in
                            // this task, so the task holds it (proc's rules).
                            unsafe { th.frame() }.regs[reg::A0] = result as usize;
                            th.wake();
                        }
                    }
                }
                Poll::Ready(())
            }
        }
    }
}

/// A poll of an asynchronous call in progress (see [`Aio::polling`]).
struct Polling<'a>(&'a Process, u64);

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        self.0.aio.lock().polling.remove(&self.1);
    }
}

impl Drop for OpTask {
    fn drop(&mut self) {
        if let Some(w) = self.waker.take() {
            match &self.op {
                Op::Read { f, .. } => f.forget(&w, false),
                Op::Write { f, .. } => f.forget(&w, true),
                Op::Sleep { .. } => sched::forget_wake(&w),
                Op::Accept { l } => l.forget(&w),
            }
        }
        let mut a = self.p.aio.lock();
        a.cancel.remove(&self.id);
        a.queued.remove(&self.id);
        a.cancelled.remove(&self.id);
        // A synchronous call's slot is not held until delivery.
        let thread = matches!(self.target, Target::Thread(_));
        if !self.finished || thread {
            a.inflight -= 1;
        }
        drop(a);
        if let Target::Thread(Some(th)) = &mut self.target {
            // Never finished (the process dies, or the task never started):
            // the thread resumes with the error its frame already holds, or
            // is reaped as dying.
            th.wake();
        }
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Records `(cid, result)` for `p` and makes sure it is delivered soon: an
/// IPI to the other harts running `p`, a wake-up permit for a parked thread.
fn complete(p: &Arc<Process>, id: u64, cid: u64, result: isize, accepted: Option<Arc<net::Conn>>) {
    let others = p.on_harts() & !(1u64 << (arch::hart_id() % 64));
    {
        let mut a = p.aio.lock();
        if let Some(c) = accepted {
            a.accepted.insert(id, c);
        }
        a.cancel.remove(&id);
        a.queued.remove(&id);
        a.cancelled.remove(&id);
        a.done.push_back(Completion {
            cid,
            result: result as i64,
            stamp: arch::time(),
            op: id,
        });
        a.ipis += u64::from(others.count_ones());
    }
    for h in 0..64 {
        if others & (1 << h) != 0 {
            sbi::send_ipi(h);
        }
    }
    let parked = {
        let mut inner = p.inner.lock();
        inner.permits = inner.permits.saturating_add(1);
        inner.parked.pop_front()
    };
    if let Some(t) = parked {
        t.wake();
    }
}

/// `cancel(op)`: ends `p`'s asynchronous call `op` if it is in flight (its
/// coroutine, woken, sees it cancelled and ends without a result); whether it
/// was. If a hart is polling the call at that moment, this waits for that
/// poll to end (a few microseconds: one attempt at the transfer), so that
/// once it returns the call never touches the process's memory again — it
/// either finished in that poll (`false`: its result is on its way) or will
/// end unfinished at its next one (`true`).
///
/// A call that finished but whose completion has not reached the process's
/// ring yet is cancelled too (`true`): its completion is dropped, and what it
/// carries is released — an `accept`'s new descriptor is closed — since
/// nobody will take it.
pub fn cancel_op(p: &Process, op: u64) -> bool {
    let waker = loop {
        let mut a = p.aio.lock();
        if !a.queued.contains(&op) {
            let Some(at) = a.done.iter().position(|c| c.op == op) else {
                return false;
            };
            let done = a.done.remove(at);
            a.inflight -= 1;
            let accepted = a.accepted.remove(&op);
            drop(a);
            if let (Some(c), Some(fd)) =
                (accepted, done.and_then(|d| usize::try_from(d.result).ok()))
            {
                close_if(p, fd, &c);
            }
            return true;
        }
        if a.polling.contains(&op) {
            drop(a);
            core::hint::spin_loop();
            continue;
        }
        a.cancelled.insert(op);
        // Not there before its first poll, which then sees the cancel.
        break a.cancel.get(&op).cloned();
    };
    if let Some(w) = waker {
        w.wake();
    }
    true
}

/// Closes `p`'s descriptor `fd` if it is still connection `c` (the program,
/// which never saw the number, may have closed whatever held it since).
fn close_if(p: &Process, fd: usize, c: &Arc<net::Conn>) {
    let taken = {
        let mut inner = p.inner.lock();
        match inner.fds.get_mut(fd) {
            Some(slot @ Some(Fd::Tcp(_))) => match slot {
                Some(Fd::Tcp(x)) if Arc::ptr_eq(x, c) => slot.take(),
                _ => None,
            },
            _ => None,
        }
    };
    // Outside the lock: closing may wake other threads.
    drop(taken);
}

/// `p` is dying: wakes every in-flight call so it ends.
pub fn cancel(p: &Process) {
    let wakers = core::mem::take(&mut p.aio.lock().cancel);
    for w in wakers.into_values() {
        w.wake();
    }
}

/// `upcall_register(handler)`.
pub fn register(t: &Thread, handler: usize) -> Result<usize> {
    if handler != 0 && (!(USER_BASE..USER_END).contains(&handler) || handler % 2 != 0) {
        return Err(SysError::BadAddress);
    }
    t.proc.aio.lock().handler = handler;
    Ok(0)
}

/// Before thread `t` (held by this hart, its space active) returns to user
/// mode: completions into the queue, and the upcall if one is due.
pub fn deliver(t: &Arc<Thread>, frame: &mut TrapFrame) {
    let p = &t.proc;
    let mut a = p.aio.lock();
    if a.done.is_empty() && (a.handler == 0 || a.tail == a.upcalled) {
        return;
    }
    let head = word(p, CQ_HEAD_OFFSET).load(Ordering::Acquire);
    let free = free_slots(a.tail, head).unwrap_or_else(|free| {
        word(p, CQ_HEAD_OFFSET).store(a.tail, Ordering::Release);
        a.resets += 1;
        free
    });
    for _ in 0..free.min(a.done.len()) {
        let Some(c) = a.done.pop_front() else { break };
        let at = entry_offset(a.tail);
        for (i, v) in [c.cid, c.result as u64, c.stamp, c.op]
            .into_iter()
            .enumerate()
        {
            word(p, at + 8 * i).store(v, Ordering::Relaxed);
        }
        a.tail = a.tail.wrapping_add(1);
        a.inflight -= 1;
        // In the process's hands now: the program takes it or closes it.
        a.accepted.remove(&c.op);
    }
    word(p, CQ_TAIL_OFFSET).store(a.tail, Ordering::Release);
    word(p, CQ_IPIS_OFFSET).store(a.ipis, Ordering::Relaxed);
    word(p, CQ_RESETS_OFFSET).store(a.resets, Ordering::Relaxed);
    if a.handler == 0 || a.tail == a.upcalled {
        return;
    }
    if word(p, CQ_HEAD_OFFSET).load(Ordering::Acquire) == a.tail {
        // Consumed already (by the vDSO's own drain).
        a.upcalled = a.tail;
        return;
    }
    if (VDSO_BASE..IMAGE_BASE).contains(&frame.sepc) {
        // Inside the scheduler code: user interrupts are off there.
        return;
    }
    // SAFETY: this hart holds `t` (see `sched::run`).
    let saved = unsafe { t.upcall_saved() };
    if saved.is_some() {
        return;
    }
    a.upcalled = a.tail;
    a.upcalls += 1;
    word(p, CQ_UPCALLS_OFFSET).store(a.upcalls, Ordering::Relaxed);
    UPCALLS.fetch_add(1, Ordering::Relaxed);
    *saved = Some(Box::new(frame.clone()));
    frame.sepc = a.handler;
    frame.regs[reg::SP] = frame.regs[reg::SP].wrapping_sub(128) & !15;
    frame.regs[reg::RA] = 0;
}

/// `upcall_return()`: back to where the upcall interrupted the thread.
pub fn upcall_return(t: &Thread, frame: &mut TrapFrame) -> Result<()> {
    // SAFETY: this hart holds `t` (it is making a system call).
    let saved = unsafe { t.upcall_saved() }
        .take()
        .ok_or(SysError::BadArgument)?;
    frame.regs = saved.regs;
    frame.fregs = saved.fregs;
    frame.fcsr = saved.fcsr;
    frame.sepc = saved.sepc;
    Ok(())
}
