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
    /// `read(fd, buf, len, cid)`: synchronous when `cid == ASYNC_ARG_NONE`, else
    /// asynchronous, completing by waking `cid` (paper §3.2).
    Read = 3,
    /// `write(fd, buf, len, cid)`: as [`Syscall::Read`].
    Write = 4,
    /// `alloc_cpu()`: lend the calling process one more CPU (paper Table 1).
    AllocCpu = 5,
}

impl Syscall {
    /// Every system call, in number order.
    pub const ALL: [Syscall; 5] = [
        Syscall::Exit,
        Syscall::Yield,
        Syscall::Read,
        Syscall::Write,
        Syscall::AllocCpu,
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
        for n in [0, 6, usize::MAX] {
            assert_eq!(Syscall::try_from(n), Err(UnknownSyscall(n)));
        }
    }
}
