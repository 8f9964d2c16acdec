//! # User-side system calls of the SharedScheduler kernel
//!
//! The synchronous forms of the kernel's system calls (`ss_abi::syscall` has
//! the numbers and error codes), with no allocator and no runtime, so that both
//! the user library and the shared scheduler code (the vDSO) use the same ones.
//! The asynchronous forms (paper §3.2) are here as *submissions*: they return
//! once the kernel has accepted the call; its result arrives later in the
//! completion queue (`ss_abi::completion`), and the user library
//! (`ss_ulib::aio`) turns that into an `await`.
#![no_std]

use core::arch::asm;

use ss_abi::syscall::{async_prio_arg, SysError, Syscall, ASYNC_ARG_NONE, NO_FD};
use ss_abi::Priority;

/// A raw system call: number `n`, six arguments, the raw `a0` result. For
/// tests that must pass values the typed wrappers would not.
#[inline]
pub fn raw(n: usize, args: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: `ecall` traps to the kernel, which reads a7 and a0..a5, writes a0
    // and touches no other register or user memory beyond what the arguments
    // name (and checks that first).
    unsafe {
        asm!(
            "ecall",
            inlateout("a0") args[0] => ret,
            in("a1") args[1],
            in("a2") args[2],
            in("a3") args[3],
            in("a4") args[4],
            in("a5") args[5],
            in("a7") n,
            options(nostack)
        );
    }
    ret
}

fn call(s: Syscall, args: [usize; 6]) -> Result<usize, SysError> {
    SysError::from_ret(raw(s.number(), args))
}

/// Ends the process with `code`.
pub fn exit(code: i32) -> ! {
    raw(Syscall::Exit.number(), [code as usize, 0, 0, 0, 0, 0]);
    unreachable!("exit returned")
}

/// Gives up the hart; the kernel runs the most important runnable thread.
pub fn yield_now() {
    let _ = call(Syscall::Yield, [0; 6]);
}

/// Reads up to `buf.len()` bytes from `fd`; 0 at end of file.
///
/// # Errors
/// The kernel's [`SysError`].
pub fn read(fd: usize, buf: &mut [u8]) -> Result<usize, SysError> {
    call(
        Syscall::Read,
        [
            fd,
            buf.as_mut_ptr() as usize,
            buf.len(),
            ASYNC_ARG_NONE as usize,
            0,
            0,
        ],
    )
}

/// Writes up to `buf.len()` bytes to `fd`; returns how many went.
///
/// # Errors
/// The kernel's [`SysError`].
pub fn write(fd: usize, buf: &[u8]) -> Result<usize, SysError> {
    call(
        Syscall::Write,
        [
            fd,
            buf.as_ptr() as usize,
            buf.len(),
            ASYNC_ARG_NONE as usize,
            0,
            0,
        ],
    )
}

/// Writes all of `buf` to `fd`.
///
/// # Errors
/// The kernel's [`SysError`].
pub fn write_all(fd: usize, mut buf: &[u8]) -> Result<(), SysError> {
    while !buf.is_empty() {
        let n = write(fd, buf)?;
        buf = &buf[n..];
    }
    Ok(())
}

/// Starts a new thread of this process at `entry(arg)`; returns its id.
///
/// # Errors
/// The kernel's [`SysError`].
pub fn alloc_cpu_raw(entry: usize, arg: usize) -> Result<usize, SysError> {
    call(Syscall::AllocCpu, [entry, arg, 0, 0, 0, 0])
}

/// Starts program `name` with its main coroutine at `priority`, passing `arg`;
/// returns the child's pid.
///
/// # Errors
/// The kernel's [`SysError`].
pub fn spawn(name: &str, priority: u8, arg: usize) -> Result<usize, SysError> {
    spawn_with_fd(name, priority, arg, NO_FD)
}

/// As [`spawn`], and the child gets a copy of `fd` as its descriptor 3.
///
/// # Errors
/// The kernel's [`SysError`] (`BadFd` for a descriptor that is not open).
pub fn spawn_with_fd(name: &str, priority: u8, arg: usize, fd: usize) -> Result<usize, SysError> {
    let args = [
        name.as_ptr() as usize,
        name.len(),
        usize::from(priority),
        arg,
        fd,
        0,
    ];
    call(Syscall::Spawn, args)
}

/// Waits for a child to exit: `(pid, exit code)`.
///
/// # Errors
/// [`SysError::NoChild`] when there is none.
pub fn wait() -> Result<(usize, i32), SysError> {
    let mut code = 0i32;
    let pid = call(
        Syscall::Wait,
        [&mut code as *mut i32 as usize, 0, 0, 0, 0, 0],
    )?;
    Ok((pid, code))
}

/// This process's id.
pub fn getpid() -> usize {
    call(Syscall::GetPid, [0; 6]).unwrap_or(0)
}

/// Blocks this thread for at least `ns` nanoseconds.
pub fn sleep_ns(ns: u64) {
    let _ = call(
        Syscall::Sleep,
        [ns as usize, ASYNC_ARG_NONE as usize, 0, 0, 0, 0],
    );
}

/// Submits the asynchronous `read(fd, buf, len, cid, prio)`: the kernel will
/// write up to `len` bytes at `buf` and complete `(cid, count or -error, op)`;
/// returns the operation id `op` (what the completion names). The kernel
/// coroutine that does it runs at `prio` (the issuing coroutine's level;
/// `None`: one level above the process, `ss_abi::syscall::ASYNC_PRIO_DEFAULT`).
///
/// # Errors
/// The kernel's [`SysError`] for an argument it refused (then nothing started).
pub fn read_submit(
    fd: usize,
    buf: *mut u8,
    len: usize,
    cid: u64,
    prio: Option<Priority>,
) -> Result<u64, SysError> {
    call(
        Syscall::Read,
        [fd, buf as usize, len, cid as usize, async_prio_arg(prio), 0],
    )
    .map(|op| op as u64)
}

/// Submits the asynchronous `write(fd, buf, len, cid, prio)` (the kernel
/// copies the bytes in before it returns; `prio` and `op` as in
/// [`read_submit`]).
///
/// # Errors
/// As [`read_submit`].
pub fn write_submit(
    fd: usize,
    buf: &[u8],
    cid: u64,
    prio: Option<Priority>,
) -> Result<u64, SysError> {
    call(
        Syscall::Write,
        [
            fd,
            buf.as_ptr() as usize,
            buf.len(),
            cid as usize,
            async_prio_arg(prio),
            0,
        ],
    )
    .map(|op| op as u64)
}

/// Submits the asynchronous `sleep(ns, cid, prio)`: completes `(cid, 0, op)`
/// after at least `ns` nanoseconds (`prio` and `op` as in [`read_submit`]).
///
/// # Errors
/// As [`read_submit`].
pub fn sleep_submit(ns: u64, cid: u64, prio: Option<Priority>) -> Result<u64, SysError> {
    call(
        Syscall::Sleep,
        [ns as usize, cid as usize, async_prio_arg(prio), 0, 0, 0],
    )
    .map(|op| op as u64)
}

/// Cancels asynchronous call `op` (what its submission returned) if it is
/// still in flight: `true` if it was (it then completes nothing), `false` if
/// it had finished or never was. Either way, once this returns the kernel
/// never writes the call's memory again.
pub fn cancel(op: u64) -> bool {
    call(Syscall::Cancel, [op as usize, 0, 0, 0, 0, 0]) == Ok(1)
}

/// Registers `handler` as this process's upcall handler (0: none).
///
/// # Errors
/// [`SysError::BadAddress`] for an address outside user memory.
pub fn upcall_register(handler: usize) -> Result<(), SysError> {
    call(Syscall::UpcallRegister, [handler, 0, 0, 0, 0, 0]).map(|_| ())
}

/// Ends the upcall handler: the thread resumes where the upcall interrupted
/// it. Returns only with an error (not in a handler).
pub fn upcall_return() -> SysError {
    match call(Syscall::UpcallReturn, [0; 6]) {
        Err(e) => e,
        Ok(_) => SysError::BadArgument,
    }
}

/// Blocks this thread until a permit is available, then takes it.
pub fn park() {
    let _ = call(Syscall::Park, [0; 6]);
}

/// Adds a permit, waking one parked thread of this process.
pub fn unpark() {
    let _ = call(Syscall::Unpark, [0; 6]);
}

/// A pipe: `(read end, write end)`.
///
/// # Errors
/// The kernel's [`SysError`].
pub fn pipe() -> Result<(usize, usize), SysError> {
    let mut fds = [0u32; 2];
    call(Syscall::Pipe, [fds.as_mut_ptr() as usize, 0, 0, 0, 0, 0])?;
    Ok((fds[0] as usize, fds[1] as usize))
}

/// Closes `fd`.
///
/// # Errors
/// [`SysError::BadFd`].
pub fn close(fd: usize) -> Result<(), SysError> {
    call(Syscall::Close, [fd, 0, 0, 0, 0, 0]).map(|_| ())
}

/// The hart this thread runs on now.
pub fn gethart() -> usize {
    call(Syscall::GetHart, [0; 6]).unwrap_or(usize::MAX)
}

/// The priority bitmap the kernel last folded for this process.
pub fn sched_info() -> u64 {
    call(Syscall::SchedInfo, [0; 6]).unwrap_or(0) as u64
}

/// The `time` CSR (10 MHz on QEMU virt).
pub fn time() -> u64 {
    let t: u64;
    // SAFETY: the kernel sets `scounteren.TM`, so reading `time` is allowed.
    unsafe { asm!("rdtime {0}", out(reg) t, options(nomem, nostack)) };
    t
}

/// Ticks of [`time`] per second.
pub const TIME_HZ: u64 = 10_000_000;

/// A TCP listener on `port`; returns its descriptor.
///
/// # Errors
/// [`SysError::NoDevice`] without a network device, [`SysError::AddrInUse`],
/// [`SysError::BadArgument`] for port 0, [`SysError::Limit`].
pub fn listen(port: u16) -> Result<usize, SysError> {
    call(Syscall::Listen, [usize::from(port), 0, 0, 0, 0, 0])
}

/// Blocks this thread until listener `fd` has a connection; returns the
/// connection's descriptor.
///
/// # Errors
/// The kernel's [`SysError`] (`BadFd` when `fd` is not a listener).
pub fn accept(fd: usize) -> Result<usize, SysError> {
    call(Syscall::Accept, [fd, ASYNC_ARG_NONE as usize, 0, 0, 0, 0])
}

/// Submits the asynchronous `accept(fd, cid, prio)`: completes `(cid,
/// descriptor or -error, op)` (`prio` and `op` as in [`read_submit`]).
///
/// # Errors
/// As [`read_submit`].
pub fn accept_submit(fd: usize, cid: u64, prio: Option<Priority>) -> Result<u64, SysError> {
    call(
        Syscall::Accept,
        [fd, cid as usize, async_prio_arg(prio), 0, 0, 0],
    )
    .map(|op| op as u64)
}

/// Ends the calling thread (the process, when it is the last one).
pub fn thread_exit() -> ! {
    raw(Syscall::ThreadExit.number(), [0; 6]);
    unreachable!("thread_exit returned")
}

/// Chooses who carries out this process's I/O (`ss_abi::syscall::IoMode`).
///
/// # Errors
/// [`SysError::BadArgument`] for an unknown mode.
pub fn set_io_mode(mode: ss_abi::syscall::IoMode) -> Result<(), SysError> {
    call(Syscall::SetIoMode, [mode as usize, 0, 0, 0, 0, 0]).map(|_| ())
}
