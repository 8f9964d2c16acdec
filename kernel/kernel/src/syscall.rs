//! System calls: `a7` is the number, `a0..a5` the arguments, `a0` the result
//! (non-negative) or `-(SysError)`.
//!
//! Every argument is an allegation. Numbers go through `Syscall::try_from`,
//! priorities through `Levels::check`, descriptors through the process's table,
//! pointers through `UserRange::new` and then the process's own page table
//! (`AddressSpace::copy_in`/`copy_out`), lengths are capped. No value makes the
//! kernel fault or panic; the worst a process can do with arguments is get an
//! error code.

use alloc::sync::Arc;

use ss_abi::syscall::{IoMode, SysError, Syscall, ASYNC_ARG_NONE, NO_FD};
use ss_abi::uspace::{USER_BASE, USER_END};
use ss_abi::{Levels, Priority};
use ss_kernel_logic::user::UserRange;

use crate::arch::{self, reg, TrapFrame};
use crate::fd::{Fd, Pipe, Waiters};
use crate::proc::{self, Process, Thread};
use crate::{aio, console, net, sched};

/// Bytes one `read` or `write` moves at most (a short count beyond).
pub const MAX_IO: usize = 4096;
/// Longest program name `spawn` accepts.
pub const MAX_NAME: usize = 64;
/// Descriptors a process may hold (the thread models hold a connection and
/// two pipes' ends per connection).
pub const MAX_FDS: usize = 8192;

/// What the trap loop does after a system call.
pub enum Outcome {
    /// Return this value in `a0` and resume the thread.
    Return(isize),
    /// The thread blocked (and was handed to a wait list).
    Blocked,
    /// The thread gives up the hart.
    Yield,
    /// Resume the thread with the registers as the call left them (no result
    /// in `a0`: `upcall_return` restored them all).
    Resume,
    /// The thread (and its process) ends.
    Exit,
    /// The thread ends (`thread_exit`; the process goes on).
    ThreadExit,
}

type Result<T> = core::result::Result<T, SysError>;

/// An asynchronous call's priority argument, untrusted: none, or a level
/// within the kernel's (`ss_abi::syscall::ASYNC_PRIO_DEFAULT`).
fn async_prio(arg: usize) -> Result<Option<ss_abi::Priority>> {
    ss_abi::syscall::async_prio_from_arg(arg, ss_abi::Levels::DEFAULT)
}

/// Handles the system call in `frame` for the running thread `t`.
pub fn dispatch(t: &Arc<Thread>, frame: &mut TrapFrame) -> Outcome {
    let n = frame.regs[reg::A7];
    let a = |i: usize| frame.arg(i);
    let (a0, a1, a2, a3) = (a(0), a(1), a(2), a(3));
    let call = match Syscall::try_from(n) {
        Ok(c) => c,
        Err(_) => return Outcome::Return(SysError::NoSuchSyscall.to_ret()),
    };
    let r: Result<usize> = match call {
        Syscall::Exit => {
            t.proc.kill(a0 as i32);
            return Outcome::Exit;
        }
        Syscall::Yield => {
            sched::refresh(&t.proc);
            frame.regs[reg::A0] = 0;
            return Outcome::Yield;
        }
        Syscall::Read | Syscall::Write => {
            // a0 = fd, a1 = buf, a2 = len, a3 = cid, a4 = priority (the
            // asynchronous form).
            if a3 as u64 != ASYNC_ARG_NONE {
                let write = call == Syscall::Write;
                let r = async_prio(a(4))
                    .and_then(|prio| aio::submit_io(t, a3 as u64, prio, write, [a0, a1, a2]));
                return Outcome::Return(r.map_or_else(|e| e.to_ret(), |v| v as isize));
            }
            if io_mode(t) == IoMode::KernelCoroutine {
                return carried(aio::carry_io(
                    t,
                    frame,
                    call == Syscall::Write,
                    [a0, a1, a2],
                ));
            }
            let r = if call == Syscall::Read {
                fd_of(t, a0).and_then(|f| read(t, frame, f, a1, a2))
            } else {
                fd_of(t, a0).and_then(|f| write(t, frame, f, a1, a2))
            };
            return match r {
                Ok(Some(v)) => Outcome::Return(v as isize),
                Ok(None) => Outcome::Blocked,
                Err(e) => Outcome::Return(e.to_ret()),
            };
        }
        Syscall::AllocCpu => {
            if !(USER_BASE..USER_END).contains(&a0) {
                Err(SysError::BadAddress)
            } else {
                t.proc.new_thread(a0, a1)
            }
        }
        Syscall::Spawn => spawn(t, a0, a1, a2, a3, a(4)),
        Syscall::Wait => return wait(t, frame, a0),
        Syscall::GetPid => Ok(t.proc.pid as usize),
        Syscall::Sleep if a1 as u64 != ASYNC_ARG_NONE => {
            async_prio(a2).and_then(|prio| aio::submit_sleep(t, a1 as u64, prio, a0 as u64))
        }
        Syscall::Sleep => {
            if sched::sleep(t, frame, a0 as u64) {
                return Outcome::Blocked;
            }
            Ok(0)
        }
        Syscall::UpcallRegister => aio::register(t, a0),
        Syscall::UpcallReturn => {
            return match aio::upcall_return(t, frame) {
                Ok(()) => Outcome::Resume,
                Err(e) => Outcome::Return(e.to_ret()),
            }
        }
        Syscall::Park => {
            let mut inner = t.proc.inner.lock();
            if inner.permits > 0 {
                inner.permits -= 1;
                Ok(0)
            } else {
                t.block_in(&mut inner.parked, frame);
                return Outcome::Blocked;
            }
        }
        Syscall::Unpark => {
            let woken = {
                let mut inner = t.proc.inner.lock();
                inner.permits = inner.permits.saturating_add(1);
                inner.parked.pop_front()
            };
            if let Some(w) = woken {
                w.wake();
            }
            Ok(0)
        }
        Syscall::Pipe => pipe(t, a0),
        Syscall::Close => {
            let fd = t.proc.inner.lock().fds.get_mut(a0).and_then(Option::take);
            // Dropped outside the lock: closing may wake other threads.
            fd.map(|_| 0).ok_or(SysError::BadFd)
        }
        Syscall::Listen => {
            net::listen(a0).and_then(|l| install_in(&t.proc, Fd::Listener(Arc::new(l))))
        }
        Syscall::Accept if a1 as u64 != ASYNC_ARG_NONE => {
            async_prio(a2).and_then(|prio| aio::submit_accept(t, a1 as u64, prio, a0))
        }
        Syscall::Accept if io_mode(t) == IoMode::KernelCoroutine => {
            return carried(aio::carry_accept(t, frame, a0))
        }
        Syscall::Accept => return accept(t, frame, a0),
        Syscall::ThreadExit => {
            if t.proc.thread_leaving(t) {
                return Outcome::ThreadExit;
            }
            // The last thread: the process ends with 0.
            t.proc.kill(0);
            return Outcome::Exit;
        }
        Syscall::Cancel => Ok(usize::from(aio::cancel_op(&t.proc, a0 as u64))),
        Syscall::SetIoMode => IoMode::from_raw(a0)
            .map(|m| {
                t.proc
                    .io_mode
                    .store(m as usize, core::sync::atomic::Ordering::SeqCst)
            })
            .map(|()| 0)
            .ok_or(SysError::BadArgument),
        Syscall::GetHart => Ok(arch::hart_id()),
        Syscall::SchedInfo => {
            Ok(t.proc.bits.load(core::sync::atomic::Ordering::SeqCst) as usize & 0xff)
        }
        _ => Err(SysError::NoSuchSyscall),
    };
    Outcome::Return(match r {
        Ok(v) => v as isize,
        Err(e) => e.to_ret(),
    })
}

/// The process's I/O mode.
pub(crate) fn io_mode(t: &Thread) -> IoMode {
    IoMode::from_raw(t.proc.io_mode.load(core::sync::atomic::Ordering::SeqCst))
        .unwrap_or(IoMode::Direct)
}

/// A call handed to a kernel coroutine (`IoMode::KernelCoroutine`): blocked
/// until it wakes the thread with the result, or refused at once.
fn carried(r: Result<()>) -> Outcome {
    match r {
        Ok(()) => Outcome::Blocked,
        Err(e) => Outcome::Return(e.to_ret()),
    }
}

/// Puts `f` in the lowest free slot of `p`'s table (`Limit` past `MAX_FDS`,
/// and `f` is dropped).
pub(crate) fn install_in(p: &Process, f: Fd) -> Result<usize> {
    let mut inner = p.inner.lock();
    let free = (0..MAX_FDS).find(|&i| inner.fds.get(i).is_none_or(Option::is_none));
    let i = free.ok_or(SysError::Limit)?;
    if inner.fds.len() <= i {
        // Growing the table may fail on a full kernel heap: an error for this
        // call, not a panic.
        let more = i + 1 - inner.fds.len();
        inner
            .fds
            .try_reserve(more)
            .map_err(|_| SysError::OutOfMemory)?;
        inner.fds.resize_with(i + 1, || None);
    }
    inner.fds[i] = Some(f);
    Ok(i)
}

/// `accept(fd)`, synchronous, carried out by the calling thread.
fn accept(t: &Arc<Thread>, frame: &mut TrapFrame, fd: usize) -> Outcome {
    let l = match fd_of(t, fd) {
        Ok(FdRef::Listener(l)) => l,
        Ok(_) => return Outcome::Return(SysError::BadFd.to_ret()),
        Err(e) => return Outcome::Return(e.to_ret()),
    };
    let block = |w: &mut Waiters| {
        t.record_site(Some(crate::fd::site_of(&l)));
        t.block_in(&mut w.threads, frame);
    };
    match net::accept(&l, block) {
        None => Outcome::Blocked,
        Some(r) => Outcome::Return(
            r.and_then(|c| install_in(&t.proc, Fd::Tcp(Arc::new(c))))
                .map_or_else(|e| e.to_ret(), |v| v as isize),
        ),
    }
}

/// Copies `len` bytes (at most `MAX_IO`) in from user memory.
pub(crate) fn copy_in(t: &Thread, buf: usize, len: usize) -> Result<alloc::vec::Vec<u8>> {
    let len = len.min(MAX_IO);
    let range = UserRange::new(buf, len)?;
    // A full kernel heap refuses the call, never panics the kernel.
    let mut data = alloc::vec::Vec::new();
    data.try_reserve_exact(len)
        .map_err(|_| SysError::OutOfMemory)?;
    data.resize(len, 0);
    t.proc.with_space(|s| s.copy_in(range, &mut data))?;
    Ok(data)
}

/// Checks that `buf..buf+len` is writable user memory, before anything is
/// consumed for it.
pub(crate) fn check_out(t: &Thread, buf: usize, len: usize) -> Result<UserRange> {
    let range = UserRange::new(buf, len)?;
    t.proc.with_space(|s| s.check(range, true))?;
    Ok(range)
}

fn copy_out(t: &Thread, range: UserRange, data: &[u8]) -> Result<()> {
    t.proc.with_space(|s| s.copy_out(range, data))
}

/// Looks descriptor `fd` up.
pub(crate) fn fd_of(t: &Thread, fd: usize) -> Result<FdRef> {
    let inner = t.proc.inner.lock();
    match inner.fds.get(fd).and_then(Option::as_ref) {
        Some(Fd::Stdin) => Ok(FdRef::Stdin),
        Some(Fd::Stdout) => Ok(FdRef::Stdout),
        Some(Fd::PipeRead(p)) => Ok(FdRef::PipeRead(p.clone())),
        Some(Fd::PipeWrite(p)) => Ok(FdRef::PipeWrite(p.clone())),
        Some(Fd::Listener(l)) => Ok(FdRef::Listener(l.clone())),
        Some(Fd::Tcp(c)) => Ok(FdRef::Tcp(c.clone())),
        None => Err(SysError::BadFd),
    }
}

/// A descriptor looked up (so the table lock is not held while blocking).
pub(crate) enum FdRef {
    /// Console input.
    Stdin,
    /// Console output.
    Stdout,
    /// A pipe's read end.
    PipeRead(Arc<Pipe>),
    /// A pipe's write end.
    PipeWrite(Arc<Pipe>),
    /// A TCP listener.
    Listener(Arc<net::Listener>),
    /// A TCP connection.
    Tcp(Arc<net::Conn>),
}

impl FdRef {
    /// Takes up to `max` bytes (`max` > 0): `Some(Ok(bytes))` (empty at end
    /// of file), `Some(Err)` for a descriptor not open for reading or a
    /// failed connection, or `None` after `wait` parked the caller with the
    /// object. The one read of both forms of the call.
    pub(crate) fn read(
        &self,
        max: usize,
        wait: impl FnOnce(&mut Waiters),
    ) -> Option<Result<alloc::vec::Vec<u8>>> {
        match self {
            FdRef::Stdin => console::read_input(max, wait).map(Ok),
            FdRef::PipeRead(p) => p.read(max, wait).map(Ok),
            FdRef::Tcp(c) => net::recv(c, max, wait),
            FdRef::Stdout | FdRef::PipeWrite(_) | FdRef::Listener(_) => Some(Err(SysError::BadFd)),
        }
    }

    /// Writes what fits of `data`: `Some(Ok(count))`, `Some(Err)`, or `None`
    /// after `wait` parked the caller. The one write of both forms.
    pub(crate) fn write(
        &self,
        data: &[u8],
        wait: impl FnOnce(&mut Waiters),
    ) -> Option<Result<usize>> {
        match self {
            FdRef::Stdout => {
                console::write_bytes(data);
                Some(Ok(data.len()))
            }
            FdRef::PipeWrite(p) => p.write(data, wait).transpose(),
            FdRef::Tcp(c) => net::send(c, data, wait),
            FdRef::Stdin | FdRef::PipeRead(_) | FdRef::Listener(_) => Some(Err(SysError::BadFd)),
        }
    }

    /// The object, as a thread blocking in its wait list records it
    /// (`Thread::record_site`); `None` for the console, whose readers
    /// teardown finds in the console's own list.
    pub(crate) fn site(&self) -> Option<alloc::sync::Weak<dyn crate::fd::WaitSite>> {
        match self {
            FdRef::Stdin | FdRef::Stdout => None,
            FdRef::PipeRead(p) | FdRef::PipeWrite(p) => Some(crate::fd::site_of(p)),
            FdRef::Listener(l) => Some(crate::fd::site_of(l)),
            FdRef::Tcp(c) => Some(crate::fd::site_of(c)),
        }
    }

    /// Forgets a kernel coroutine's waker that a read (`writing`: a write)
    /// left with the object, when its call ended another way.
    pub(crate) fn forget(&self, w: &core::task::Waker, writing: bool) {
        match self {
            FdRef::Stdin => console::INPUT.lock().readers.remove_task(w),
            FdRef::PipeRead(p) if !writing => p.state.lock().read_wait.remove_task(w),
            FdRef::PipeWrite(p) if writing => p.state.lock().write_wait.remove_task(w),
            FdRef::Tcp(c) => c.forget(w),
            FdRef::Listener(l) => l.forget(w),
            _ => {}
        }
    }
}

/// `read` from `f`: `Ok(None)` when the thread blocked.
fn read(
    t: &Arc<Thread>,
    frame: &mut TrapFrame,
    f: FdRef,
    buf: usize,
    len: usize,
) -> Result<Option<usize>> {
    let range = check_out(t, buf, len.min(MAX_IO))?;
    if range.is_empty() {
        return Ok(Some(0));
    }
    let block = |w: &mut Waiters| {
        t.record_site(f.site());
        t.block_in(&mut w.threads, frame);
    };
    let Some(data) = f.read(range.len(), block).transpose()? else {
        return Ok(None);
    };
    copy_out_prefix(&t.proc, range, &data)?;
    Ok(Some(data.len()))
}

/// Copies `data` to the start of `range` (which is at least that long).
pub(crate) fn copy_out_prefix(p: &Process, range: UserRange, data: &[u8]) -> Result<()> {
    let range = UserRange::new(range.start(), data.len())?;
    p.with_space(|s| s.copy_out(range, data))
}

/// `write` to `f`: `Ok(None)` when the thread blocked.
fn write(
    t: &Arc<Thread>,
    frame: &mut TrapFrame,
    f: FdRef,
    buf: usize,
    len: usize,
) -> Result<Option<usize>> {
    let data = copy_in(t, buf, len)?;
    let block = |w: &mut Waiters| {
        t.record_site(f.site());
        t.block_in(&mut w.threads, frame);
    };
    f.write(&data, block).transpose()
}

fn spawn(
    t: &Thread,
    name: usize,
    name_len: usize,
    prio: usize,
    arg: usize,
    fd: usize,
) -> Result<usize> {
    if name_len > MAX_NAME {
        return Err(SysError::BadArgument);
    }
    let bytes = copy_in(t, name, name_len)?;
    let name = core::str::from_utf8(&bytes).map_err(|_| SysError::BadArgument)?;
    let level = u8::try_from(prio).map_err(|_| SysError::BadArgument)?;
    let prio = Priority::new(level)
        .and_then(|p| Levels::DEFAULT.check(p))
        .map_err(|_| SysError::BadArgument)?;
    if proc::program(name).is_none() {
        return Err(SysError::NoSuchProgram);
    }
    let fd3 = if fd == NO_FD {
        None
    } else {
        let inner = t.proc.inner.lock();
        Some(
            inner
                .fds
                .get(fd)
                .and_then(Option::as_ref)
                .ok_or(SysError::BadFd)?
                .dup(),
        )
    };
    t.proc.inner.lock().children += 1;
    match proc::spawn(name, prio, arg, Some(t.proc.pid), fd3) {
        Ok(child) => Ok(child.pid as usize),
        Err(e) => {
            t.proc.inner.lock().children -= 1;
            Err(e)
        }
    }
}

fn wait(t: &Arc<Thread>, frame: &mut TrapFrame, status: usize) -> Outcome {
    let ret = |r: Result<usize>| Outcome::Return(r.map_or_else(|e| e.to_ret(), |v| v as isize));
    let range = match UserRange::for_value::<i32>(status).and_then(|_| check_out(t, status, 4)) {
        Ok(r) => r,
        Err(e) => return ret(Err(e)),
    };
    let zombie = {
        let mut inner = t.proc.inner.lock();
        match inner.zombies.pop_front() {
            Some(z) => {
                inner.children -= 1;
                z
            }
            None if inner.children == 0 => return ret(Err(SysError::NoChild)),
            None => {
                t.block_in(&mut inner.waiters, frame);
                return Outcome::Blocked;
            }
        }
    };
    let (pid, code) = zombie;
    ret(copy_out(t, range, &code.to_le_bytes()).map(|_| pid as usize))
}

fn pipe(t: &Thread, fds: usize) -> Result<usize> {
    let range = check_out(t, fds, 8)?;
    if fds % 4 != 0 {
        return Err(SysError::BadAddress);
    }
    let (r, w) = Pipe::open(&t.proc.kmem)?;
    let rfd = install_in(&t.proc, r)?;
    let wfd = install_in(&t.proc, w).inspect_err(|_| {
        // No room for the write end: the read end goes too (closed outside
        // the lock, as closing may wake other threads).
        let r = t.proc.inner.lock().fds.get_mut(rfd).and_then(Option::take);
        drop(r);
    })?;
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&(rfd as u32).to_le_bytes());
    bytes[4..].copy_from_slice(&(wfd as u32).to_le_bytes());
    copy_out(t, range, &bytes)?;
    Ok(0)
}
