//! System call numbers, shared by the kernel and its user library.
//!
//! A system call number arrives from user space in a register and is untrusted:
//! [`Syscall::try_from`] is the only way in, and an unknown number becomes
//! [`UnknownSyscall`], which the kernel answers with an error code rather than a
//! fault. The kernel issue grows this table; numbers, once given, are never reused.
//!
//! The asynchronous form of a call (paper Listing 2, `read!(fd, buf, cid)`) is the
//! same number with the issuing coroutine's id as an extra argument; see
//! [`ASYNC_ARG_NONE`].

use core::fmt;

/// The value of the coroutine-id argument that selects the synchronous form.
pub const ASYNC_ARG_NONE: u64 = u64::MAX;

/// The priority argument of an asynchronous call that names no priority: the
/// kernel coroutine then runs one level above the issuing process, as every
/// call did before calls named one (a program that leaves the register zero
/// gets that).
///
/// An asynchronous call takes, after its coroutine id, the priority of the
/// issuing coroutine as `level + 1` ([`async_prio_arg`]); the kernel coroutine
/// that carries the call out runs at that level, so a less important
/// coroutine's I/O waits behind more important work, kernel or user (paper
/// §2.4: one priority order for kernel and user coroutines). A value beyond
/// the levels is refused with `BadArgument`.
pub const ASYNC_PRIO_DEFAULT: usize = 0;

/// The priority argument naming `priority` (see [`ASYNC_PRIO_DEFAULT`]).
#[inline]
pub const fn async_prio_arg(priority: Option<crate::Priority>) -> usize {
    match priority {
        Some(p) => p.level() as usize + 1,
        None => ASYNC_PRIO_DEFAULT,
    }
}

/// Reads a priority argument: `Ok(None)` for [`ASYNC_PRIO_DEFAULT`],
/// `Ok(Some(level))` for a level within `levels`.
///
/// # Errors
/// [`SysError::BadArgument`] for anything else (the argument is untrusted).
#[inline]
pub fn async_prio_from_arg(
    arg: usize,
    levels: crate::Levels,
) -> Result<Option<crate::Priority>, SysError> {
    if arg == ASYNC_PRIO_DEFAULT {
        return Ok(None);
    }
    u8::try_from(arg - 1)
        .ok()
        .and_then(|l| crate::Priority::new(l).ok())
        .and_then(|p| levels.check(p).ok())
        .map(Some)
        .ok_or(SysError::BadArgument)
}

/// The system calls of SharedScheduler.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(usize)]
#[non_exhaustive]
pub enum Syscall {
    /// `exit(code)`: end the calling process.
    Exit = 1,
    /// `yield()`: give up the CPU; the kernel's switching coroutine picks the most
    /// important ready process next (paper §2.4).
    Yield = 2,
    /// `read(fd, buf, len, cid, prio)`: synchronous when `cid == ASYNC_ARG_NONE`,
    /// else asynchronous (paper §3.2): the call checks its arguments, starts a
    /// kernel coroutine at `prio` ([`ASYNC_PRIO_DEFAULT`]) and returns at once
    /// with the call's operation id (≥ 1, rising with every call); the result
    /// (byte count or `-(SysError)`) arrives later as a `(cid, result, op)`
    /// entry in the process's completion queue (`crate::completion`).
    Read = 3,
    /// `write(fd, buf, len, cid, prio)`: as [`Syscall::Read`].
    Write = 4,
    /// `alloc_cpu(entry, arg)`: lend the calling process one more CPU (paper
    /// Table 1): a new thread of the process starts at `entry(arg)` on a stack the
    /// kernel maps. Returns the thread id.
    AllocCpu = 5,
    /// `spawn(name, name_len, priority, arg, fd)`: start the embedded program
    /// `name` as a child process whose main coroutine has `priority`; its `main`
    /// gets `arg`, and its descriptor 3 is a copy of the caller's `fd` (or none,
    /// with [`NO_FD`]). Returns the child's pid.
    Spawn = 6,
    /// `wait(status)`: wait for any child to exit; writes its exit code (an
    /// `i32`; [`KILLED`] for a process the kernel killed) to `status` and
    /// returns its pid.
    Wait = 7,
    /// `getpid()`.
    GetPid = 8,
    /// `sleep(ns, cid, prio)`: block the calling thread for at least `ns`
    /// nanoseconds (`cid == ASYNC_ARG_NONE`), or, asynchronously (returning
    /// the operation id, as [`Syscall::Read`]), complete `(cid, 0, op)` after
    /// that long.
    Sleep = 9,
    /// `park()`: block the calling thread until a permit is available (the
    /// process's executor has no ready coroutine), then take it.
    Park = 10,
    /// `unpark()`: add one permit to the process, waking one parked thread.
    Unpark = 11,
    /// `pipe(fds)`: create a pipe; writes the read and write ends (two `u32`
    /// descriptors) to `fds`.
    Pipe = 12,
    /// `close(fd)`.
    Close = 13,
    /// `gethart()`: the hart the calling thread runs on now (for tests and
    /// tools; it may change at any moment).
    GetHart = 14,
    /// `sched_info()`: the kernel's current reading of the calling process:
    /// the priority bitmap it last folded into the global bitmap (for tests).
    SchedInfo = 15,
    /// `upcall_register(handler)`: the user-level interrupt handler (emulated
    /// N extension, `crate::completion`): the kernel enters it at `handler`
    /// when completions are waiting; 0 unregisters.
    UpcallRegister = 16,
    /// `upcall_return()`: the handler's end (the N extension's `uret`):
    /// resumes the thread where the upcall interrupted it, every register as
    /// it was. Outside a handler: `BadArgument`.
    UpcallReturn = 17,
    /// `listen(port)`: a TCP listener on `port` (1..=65535) of the guest's
    /// address; returns its descriptor. Connections that arrive are held in
    /// a bounded backlog ([`LISTEN_BACKLOG`]) until accepted.
    Listen = 18,
    /// `accept(fd, cid, prio)`: the next connection of listener `fd`, as a new
    /// descriptor (readable and writable). Synchronous when
    /// `cid == ASYNC_ARG_NONE` (blocks the thread), else asynchronous (returning
    /// the operation id, as [`Syscall::Read`]): the result is `(cid, descriptor
    /// or -(SysError), op)` in the completion queue.
    Accept = 19,
    /// `thread_exit()`: end the calling thread (the process ends with code 0
    /// when its last thread does). Its stack slot is reused by a later
    /// `alloc_cpu`.
    ThreadExit = 20,
    /// `io_mode(mode)`: who carries out this process's I/O from now on (the
    /// paper's four server models, chosen at run time); see [`IoMode`].
    SetIoMode = 21,
    /// `cancel(op)`: ends the calling process's asynchronous call `op` (what
    /// its submission returned) if it is still in flight: its kernel
    /// coroutine stops waiting at its next step, gives back its in-flight slot
    /// and completes nothing. Returns 1 if the call was in flight, 0 if not
    /// (finished already — its result names `op`, and the process's shared
    /// scheduler drops it —, or no such call). A call another hart is trying
    /// at that moment is waited for: once `cancel` returns, the call never
    /// writes the process's memory again (a `read`'s buffer may be reused).
    /// What a `read` that finished took from its source is in its result.
    Cancel = 22,
}

/// Connections a listener holds that the program has not accepted yet; more
/// are refused (reset) until it accepts.
pub const LISTEN_BACKLOG: usize = 128;

/// Who carries out a process's system calls (paper §4's models; set with
/// [`Syscall::SetIoMode`]). The user program chooses how it runs its
/// components (coroutines or threads); this chooses what the kernel does with
/// its calls.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(usize)]
pub enum IoMode {
    /// The default. A synchronous call is carried out by the calling thread in
    /// the kernel, which blocks and retries until the transfer is done (KTUT);
    /// an asynchronous call by a kernel coroutine that completes `(cid,
    /// result)` (KCUC).
    Direct = 0,
    /// A synchronous call is carried out by a kernel coroutine while the
    /// calling thread blocks; the coroutine wakes it with the result (KCUT).
    /// Asynchronous calls as in `Direct`.
    KernelCoroutine = 1,
    /// An asynchronous call is handed to the kernel's polling thread, which
    /// keeps trying every operation handed to it and completes `(cid,
    /// result)` (KTUC). Synchronous calls as in `Direct`.
    KernelThread = 2,
}

impl IoMode {
    /// Every mode, in number order.
    pub const ALL: [IoMode; 3] = [
        IoMode::Direct,
        IoMode::KernelCoroutine,
        IoMode::KernelThread,
    ];

    /// The mode numbered `n` (an untrusted system call argument).
    pub fn from_raw(n: usize) -> Option<IoMode> {
        IoMode::ALL.into_iter().find(|m| *m as usize == n)
    }
}

/// The `fd` argument of [`Syscall::Spawn`] that passes no descriptor.
pub const NO_FD: usize = usize::MAX;

/// The exit code [`Syscall::Wait`] reports for a process the kernel killed (a
/// fault in user mode).
pub const KILLED: i32 = -1000;

/// Why a system call failed. A call returns `-(code)` in `a0` on failure and a
/// non-negative value on success.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(isize)]
#[non_exhaustive]
pub enum SysError {
    /// A pointer argument names memory the process may not access that way
    /// (unmapped, kernel, read-only for a write, or a range that wraps).
    BadAddress = 1,
    /// An argument is out of range (a priority beyond the levels, a length
    /// too large, a name that is not UTF-8).
    BadArgument = 2,
    /// The system call number names no system call.
    NoSuchSyscall = 3,
    /// The descriptor is not open, or not open for this direction.
    BadFd = 4,
    /// `wait` with no child left.
    NoChild = 5,
    /// `spawn` of a program that is not in the image.
    NoSuchProgram = 6,
    /// The kernel ran out of memory (frames or heap) for this request.
    OutOfMemory = 7,
    /// A per-process limit (threads, descriptors) is reached.
    Limit = 8,
    /// Writing to a pipe whose read end is closed.
    BrokenPipe = 9,
    /// The asynchronous form of a call that has none (no longer returned by
    /// `read`, `write` or `sleep`).
    Unsupported = 10,
    /// The peer reset the connection, or it was refused or timed out.
    ConnectionReset = 11,
    /// The port is taken by another listener.
    AddrInUse = 12,
    /// The kernel has no network device (QEMU started without
    /// `-device virtio-net-device`).
    NoDevice = 13,
}

impl SysError {
    /// Every error, in code order.
    pub const ALL: [SysError; 13] = [
        SysError::BadAddress,
        SysError::BadArgument,
        SysError::NoSuchSyscall,
        SysError::BadFd,
        SysError::NoChild,
        SysError::NoSuchProgram,
        SysError::OutOfMemory,
        SysError::Limit,
        SysError::BrokenPipe,
        SysError::Unsupported,
        SysError::ConnectionReset,
        SysError::AddrInUse,
        SysError::NoDevice,
    ];

    /// The value returned in `a0`: `-(code)`.
    #[inline]
    pub const fn to_ret(self) -> isize {
        -(self as isize)
    }

    /// Decodes a system call's return value: `Ok` for non-negative values.
    /// An unknown negative value (a newer kernel) reads as `BadArgument`.
    pub fn from_ret(ret: isize) -> Result<usize, SysError> {
        if ret >= 0 {
            return Ok(ret as usize);
        }
        let code = ret.unsigned_abs() as isize;
        Err(SysError::ALL
            .iter()
            .copied()
            .find(|e| *e as isize == code)
            .unwrap_or(SysError::BadArgument))
    }
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SysError::BadAddress => "bad address: pass a pointer into memory this process has mapped with the needed access",
            SysError::BadArgument => "bad argument: check the value against the system call's documented range",
            SysError::NoSuchSyscall => "no such system call: rebuild the program and kernel from the same ss-abi",
            SysError::BadFd => "bad descriptor: use a descriptor this process opened for this direction",
            SysError::NoChild => "no child to wait for",
            SysError::NoSuchProgram => "no program of that name is embedded in the kernel image",
            SysError::OutOfMemory => "the kernel is out of memory; free something or ask for less",
            SysError::Limit => "a per-process limit is reached; close or finish something first",
            SysError::BrokenPipe => "the pipe's read end is closed",
            SysError::Unsupported => "this call has no asynchronous form; pass ASYNC_ARG_NONE",
            SysError::ConnectionReset => "the connection was reset, refused or timed out",
            SysError::AddrInUse => "another listener has this port",
            SysError::NoDevice => "no network device: start QEMU with -device virtio-net-device",
        })
    }
}

impl core::error::Error for SysError {}

impl Syscall {
    /// Every system call, in number order.
    pub const ALL: [Syscall; 22] = [
        Syscall::Exit,
        Syscall::Yield,
        Syscall::Read,
        Syscall::Write,
        Syscall::AllocCpu,
        Syscall::Spawn,
        Syscall::Wait,
        Syscall::GetPid,
        Syscall::Sleep,
        Syscall::Park,
        Syscall::Unpark,
        Syscall::Pipe,
        Syscall::Close,
        Syscall::GetHart,
        Syscall::SchedInfo,
        Syscall::UpcallRegister,
        Syscall::UpcallReturn,
        Syscall::Listen,
        Syscall::Accept,
        Syscall::ThreadExit,
        Syscall::SetIoMode,
        Syscall::Cancel,
    ];

    /// The number passed in the system call register.
    #[inline]
    pub const fn number(self) -> usize {
        self as usize
    }
}

/// A system call number that names no system call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UnknownSyscall(pub usize);

impl core::error::Error for UnknownSyscall {}

impl fmt::Display for UnknownSyscall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "system call {} does not exist; the user library and kernel disagree — rebuild both from the same ss-abi",
            self.0
        )
    }
}

impl TryFrom<usize> for Syscall {
    type Error = UnknownSyscall;

    fn try_from(n: usize) -> Result<Syscall, UnknownSyscall> {
        Syscall::ALL
            .iter()
            .copied()
            .find(|s| s.number() == n)
            .ok_or(UnknownSyscall(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_unknown_is_an_error() {
        for s in Syscall::ALL {
            assert_eq!(Syscall::try_from(s.number()), Ok(s));
        }
        for n in [0, 23, usize::MAX] {
            assert_eq!(Syscall::try_from(n), Err(UnknownSyscall(n)));
        }
    }

    #[test]
    fn priority_arguments_round_trip_and_the_rest_is_refused() {
        let levels = crate::Levels::DEFAULT;
        assert_eq!(async_prio_arg(None), ASYNC_PRIO_DEFAULT);
        assert_eq!(async_prio_from_arg(ASYNC_PRIO_DEFAULT, levels), Ok(None));
        for l in 0..levels.count() {
            let p = crate::Priority::new(l).ok();
            assert_eq!(async_prio_from_arg(async_prio_arg(p), levels), Ok(p));
        }
        let past = usize::from(levels.count()) + 1;
        for arg in [past, 64, 65, 257, usize::MAX] {
            assert_eq!(
                async_prio_from_arg(arg, levels),
                Err(SysError::BadArgument),
                "{arg}"
            );
        }
    }

    #[test]
    fn errors_round_trip_through_the_return_register() {
        for e in SysError::ALL {
            assert_eq!(SysError::from_ret(e.to_ret()), Err(e));
        }
        assert_eq!(SysError::from_ret(0), Ok(0));
        assert_eq!(SysError::from_ret(42), Ok(42));
        assert_eq!(SysError::from_ret(-999), Err(SysError::BadArgument));
        assert_eq!(SysError::from_ret(isize::MIN), Err(SysError::BadArgument));
    }

    #[test]
    fn io_modes_round_trip_and_others_are_refused() {
        for m in IoMode::ALL {
            assert_eq!(IoMode::from_raw(m as usize), Some(m));
        }
        assert_eq!(IoMode::from_raw(3), None);
        assert_eq!(IoMode::from_raw(usize::MAX), None);
    }
}
