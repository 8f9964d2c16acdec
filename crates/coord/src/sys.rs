//! The Linux system calls the coordinator and its clients use, each behind a
//! small safe wrapper. All `unsafe` that talks to the kernel lives here.

use std::ffi::CStr;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::time::Duration;

/// Turns a `-1`-on-error return into an `io::Result`.
fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Takes ownership of a freshly returned descriptor.
fn owned(r: libc::c_int) -> io::Result<OwnedFd> {
    let fd = cvt(r)?;
    // SAFETY: the kernel just returned `fd` to us and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The size of a memory page.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// A new sealable memfd of `len` bytes.
pub fn memfd(name: &CStr, len: usize) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string for the call's duration.
    let fd = owned(unsafe {
        libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
    })?;
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::other("page too large"))?;
    // SAFETY: plain call on a descriptor we own.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })?;
    Ok(fd)
}

/// Adds `seals` (`F_SEAL_*`) to a memfd.
pub fn add_seals(fd: BorrowedFd<'_>, seals: libc::c_int) -> io::Result<()> {
    // SAFETY: plain fcntl on a valid descriptor.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) }).map(drop)
}

/// The seals of a memfd; fails (EINVAL) for any file that is not a memfd.
pub fn seals(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: plain fcntl on a valid descriptor.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) })
}

/// The size in bytes of the file behind `fd`.
pub fn file_size(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is valid for writes of one `stat`.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    Ok(u64::try_from(st.st_size).unwrap_or(0))
}

/// The preferred I/O block size of the file behind `fd` (`st_blksize`): the
/// huge page size for a hugetlbfs file.
pub fn block_size(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is valid for writes of one `stat`.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    Ok(u64::try_from(st.st_blksize).unwrap_or(0))
}

/// Reopens `fd` read-only through `/proc/self/fd`: a descriptor whose file can
/// never be mapped writable (`mmap(PROT_WRITE, MAP_SHARED)` and a later
/// `mprotect(PROT_WRITE)` both fail with `EACCES`).
pub fn reopen_read_only(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}\0", fd.as_raw_fd());
    // SAFETY: `path` is NUL-terminated and outlives the call.
    owned(unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) })
}

/// A shared mapping of the first `len` bytes of a file, unmapped on drop.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Mapping` is only an address range; every access to its memory goes
// through atomics (see `crate::page`), so sharing or moving it between threads
// cannot race.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `fd` shared, read-only or read-write.
    pub fn new(fd: BorrowedFd<'_>, len: usize, writable: bool) -> io::Result<Mapping> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh mapping at an address the kernel chooses cannot alias
        // any Rust object.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Mapping { ptr, len })
    }

    /// The first byte; page-aligned.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Maps `fd` read-only over this mapping's range, in one step
    /// (`MAP_FIXED`): another thread reading the range meanwhile sees the old
    /// file or the new one, never a hole.
    pub fn replace_read_only(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        // SAFETY: the range is exactly this mapping's, which nobody else
        // owns; every access to it goes through atomics (see `crate::page`),
        // so the contents changing under a reader is what it is built for.
        let p = unsafe {
            libc::mmap(
                self.ptr.as_ptr().cast(),
                self.len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        debug_assert_eq!(p.cast::<u8>(), self.ptr.as_ptr());
        Ok(())
    }
}

/// Makes descriptor `dst` refer to what `src` refers to (`dup3`, close on
/// exec), closing what `dst` referred to, in one step: a thread using the
/// number meanwhile gets the old file or the new one.
pub fn dup_onto(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: both are open descriptors; `dst` stays owned by its owner,
    // which now owns the duplicate.
    cvt(unsafe { libc::dup3(src.as_raw_fd(), dst.as_raw_fd(), libc::O_CLOEXEC) }).map(drop)
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range and nobody can use it after drop
        // (every accessor borrows the `Mapping`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Sleeps while the 32-bit word at `word` equals `expected`, at most `timeout`.
/// A shared (not `FUTEX_PRIVATE`) futex: the word lives in memory other
/// processes map. Spurious returns are possible; callers re-check.
pub(crate) fn futex_wait(word: *const u32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: d.subsec_nanos().into(),
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: FUTEX_WAIT only reads the word (the kernel checks the address is
    // mapped and fails with EFAULT otherwise); `tsp` is null or points to a live
    // timespec. Every outcome (woken, EAGAIN, EINTR, ETIMEDOUT) is fine for a
    // caller that re-checks.
    unsafe {
        libc::syscall(libc::SYS_futex, word, libc::FUTEX_WAIT, expected, tsp);
    }
}

/// Wakes every process sleeping in [`futex_wait`] on `word`.
pub(crate) fn futex_wake_all(word: *const u32) {
    // SAFETY: FUTEX_WAKE does not access the word's memory beyond resolving its
    // address to a futex key.
    unsafe {
        libc::syscall(libc::SYS_futex, word, libc::FUTEX_WAKE, libc::c_int::MAX);
    }
}

/// A new `AF_UNIX` socket of `kind` (`SOCK_SEQPACKET`, `SOCK_STREAM`).
fn unix_socket(kind: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket call.
    owned(unsafe { libc::socket(libc::AF_UNIX, kind | libc::SOCK_CLOEXEC, 0) })
}

fn sockaddr(path: &std::path::Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "socket path {} is too long or contains NUL: Unix socket paths have at most {} bytes",
                path.display(),
                addr.sun_path.len() - 1
            ),
        ));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

/// Connects a seqpacket socket to `path`.
pub fn connect(path: &std::path::Path) -> io::Result<OwnedFd> {
    connect_kind(path, libc::SOCK_SEQPACKET, None)
}

/// Connects a seqpacket socket to `path`, waiting at most `timeout` for room
/// in a full backlog; the socket keeps `timeout` as its send timeout.
pub fn connect_timeout(path: &std::path::Path, timeout: Duration) -> io::Result<OwnedFd> {
    connect_kind(path, libc::SOCK_SEQPACKET, Some(timeout))
}

/// Connects a stream socket to `path` (the query socket).
pub fn connect_stream(path: &std::path::Path) -> io::Result<OwnedFd> {
    connect_kind(path, libc::SOCK_STREAM, None)
}

/// Connects a socket of `kind` to `path`; with a `timeout`, the socket keeps
/// it as its send timeout, which also bounds the connect.
fn connect_kind(
    path: &std::path::Path,
    kind: libc::c_int,
    timeout: Option<Duration>,
) -> io::Result<OwnedFd> {
    let fd = unix_socket(kind)?;
    if let Some(t) = timeout {
        set_timeout(fd.as_fd(), libc::SO_SNDTIMEO, t)?;
    }
    let (addr, len) = sockaddr(path)?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    cvt(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    })?;
    Ok(fd)
}

/// A listening, non-blocking seqpacket socket bound at `path`.
pub fn listen(path: &std::path::Path, backlog: i32) -> io::Result<OwnedFd> {
    listen_with(path, backlog, false, None)
}

/// A listening, non-blocking socket bound at `path`: seqpacket, or a stream
/// socket if `stream`. With `mode`, the file gets those permission bits
/// between `bind` and `listen`, so nobody can connect while it has others
/// (connecting needs the listen).
pub fn listen_with(
    path: &std::path::Path,
    backlog: i32,
    stream: bool,
    mode: Option<u32>,
) -> io::Result<OwnedFd> {
    let kind = if stream {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_SEQPACKET
    };
    let fd = unix_socket(kind)?;
    let (addr, len) = sockaddr(path)?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    })?;
    if let Some(mode) = mode {
        if let Err(e) = chmod(path, mode) {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
    }
    // SAFETY: plain calls on a socket we own.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    set_nonblocking(fd.as_raw_fd())?;
    Ok(fd)
}

/// Makes a socket blocking again (an accepted query connection, which then
/// writes under a send timeout).
pub fn set_blocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain fcntl calls on a valid descriptor.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) }).map(drop)
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain fcntl calls on a valid descriptor.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

/// Accepts one connection as a non-blocking socket; `Ok(None)` when none waits.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    // SAFETY: null address arguments are allowed.
    let r = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    };
    match owned(r) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets a receive timeout on a socket.
pub fn set_recv_timeout(fd: BorrowedFd<'_>, d: Duration) -> io::Result<()> {
    set_timeout(fd, libc::SO_RCVTIMEO, d)
}

fn set_timeout(fd: BorrowedFd<'_>, which: libc::c_int, d: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: d.subsec_micros().into(),
    };
    // SAFETY: `tv` is a valid timeval of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            which,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// At most this many descriptors are accepted with one message; more are closed.
const MAX_FDS: usize = 4;

/// Sends one message with `fds` attached (`SCM_RIGHTS`). Never raises SIGPIPE.
pub fn send_msg(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    nonblocking: bool,
) -> io::Result<usize> {
    assert!(fds.len() <= MAX_FDS);
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // Control buffer as u64s so it is aligned for cmsghdr.
    let mut cbuf = [0u64; 8];
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = (fds.len() * size_of::<RawFd>()) as libc::c_uint;
        // SAFETY: CMSG_SPACE is pure arithmetic.
        let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
        debug_assert!(space <= size_of::<[u64; 8]>());
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `msg` points at `cbuf`, which has room for one cmsghdr with
        // `payload` bytes of data (checked above), so CMSG_FIRSTHDR is non-null
        // and CMSG_DATA points inside `cbuf`.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(payload) as _;
            let data = libc::CMSG_DATA(c).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    let mut flags = libc::MSG_NOSIGNAL;
    if nonblocking {
        flags |= libc::MSG_DONTWAIT;
    }
    // SAFETY: `msg` describes live buffers (`bytes`, `cbuf`) for the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One received message.
pub struct Received {
    /// Bytes of payload received (at most the buffer's length).
    pub len: usize,
    /// Descriptors that came with it (owned: closed when dropped).
    pub fds: Vec<OwnedFd>,
    /// The payload or the descriptors did not fit (`MSG_TRUNC`/`MSG_CTRUNC`).
    pub truncated: bool,
    /// The ancillary data did not fit or a descriptor could not be installed
    /// (`MSG_CTRUNC`: e.g. the receiver is at its descriptor limit).
    pub ctrunc: bool,
    /// The sender's credentials as the kernel checked them at `sendmsg`
    /// (`SCM_CREDENTIALS`; only when the receiving socket has
    /// [`set_passcred`]): pid, uid, gid.
    pub cred: Option<libc::ucred>,
}

/// Receives one message and any descriptors attached to it (close-on-exec).
/// `len == 0` with no descriptors means the peer closed the connection.
pub fn recv_msg(sock: BorrowedFd<'_>, buf: &mut [u8], nonblocking: bool) -> io::Result<Received> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for MAX_FDS descriptors and one SCM_CREDENTIALS.
    let mut cbuf = [0u64; 16];
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 16]>() as _;
    let mut flags = libc::MSG_CMSG_CLOEXEC;
    if nonblocking {
        flags |= libc::MSG_DONTWAIT;
    }
    // SAFETY: `msg` describes live buffers (`buf`, `cbuf`) for the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    let mut cred = None;
    // SAFETY: the kernel filled `msg.msg_control`/`msg_controllen` with well-formed
    // cmsg headers inside `cbuf`; the CMSG_* macros walk exactly those. Every
    // SCM_RIGHTS descriptor is a new descriptor we now own.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let bytes = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..bytes / size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            } else if (*c).cmsg_level == libc::SOL_SOCKET
                && (*c).cmsg_type == libc::SCM_CREDENTIALS
                && (*c).cmsg_len as usize
                    >= libc::CMSG_LEN(size_of::<libc::ucred>() as libc::c_uint) as usize
            {
                cred = Some(libc::CMSG_DATA(c).cast::<libc::ucred>().read_unaligned());
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(Received {
        len: n as usize,
        fds,
        truncated: msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0,
        ctrunc: msg.msg_flags & libc::MSG_CTRUNC != 0,
        cred,
    })
}

/// Makes the kernel attach the sender's checked credentials
/// (`SCM_CREDENTIALS`) to every message received on, or sent from, `sock`
/// (`SO_PASSCRED`): a sender cannot name a pid other than its own.
pub fn set_passcred(sock: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid c_int of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// What waits to be read on a non-blocking socket, without reading it:
/// `None` if nothing, `Some(0)` for end of stream (or an empty message),
/// `Some(n)` for a message of at least `n` bytes.
pub fn peek_input(sock: BorrowedFd<'_>) -> Option<usize> {
    let mut b = [0u8; 1];
    // SAFETY: `b` is valid for one byte of writes.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        // EAGAIN: nothing; anything else is an error the next read reports.
        return (io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock).then_some(0);
    }
    Some(n as usize)
}

/// The peer's credentials as the kernel recorded them at `connect`.
pub fn peer_cred(sock: BorrowedFd<'_>) -> io::Result<libc::ucred> {
    // SAFETY: all-zero is a valid ucred.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is valid for `len` bytes of writes.
    cvt(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(cred)
}

/// A pidfd for the peer process: `SO_PEERPIDFD` (Linux 6.5, race-free) or else
/// `pidfd_open(pid)` (Linux 5.3; the pid could in theory have been recycled
/// between `connect` and this call).
pub fn peer_pidfd(sock: BorrowedFd<'_>, pid: libc::pid_t) -> io::Result<OwnedFd> {
    const SO_PEERPIDFD: libc::c_int = 77;
    let mut fd: libc::c_int = -1;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is valid for `len` bytes of writes.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r == 0 && fd >= 0 {
        // SAFETY: the kernel returned a new descriptor that we own.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    // SAFETY: plain syscall; returns a new descriptor or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    owned(r as libc::c_int)
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (every
/// client costs the coordinator two descriptors); returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<libc::rlim_t> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `l` is a valid rlimit for writes.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) })?;
    if l.rlim_cur < l.rlim_max {
        l.rlim_cur = l.rlim_max;
        // SAFETY: `l` is a valid rlimit.
        cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) })?;
    }
    Ok(l.rlim_cur)
}

/// Whether this process can open one more descriptor now (it is not at its
/// `RLIMIT_NOFILE`): duplicates `fd` and closes the copy.
pub fn can_open_descriptor(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: plain fcntl; a new descriptor is owned (and closed) at once.
    owned(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) }).is_ok()
}

/// An epoll instance.
pub struct Epoll(OwnedFd);

impl Epoll {
    /// A new epoll instance.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain call.
        owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }).map(Epoll)
    }

    /// Watches `fd` for readability, reporting `token`.
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the call.
        cvt(unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut ev,
            )
        })
        .map(drop)
    }

    /// Stops watching `fd` (closing it does the same; this is for clarity).
    pub fn remove(&self, fd: BorrowedFd<'_>) {
        // SAFETY: a null event is allowed for EPOLL_CTL_DEL.
        unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
    }

    /// Waits for events; returns the tokens of ready descriptors.
    pub fn wait(&self, out: &mut Vec<u64>, timeout_ms: i32) -> io::Result<()> {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 64];
        // SAFETY: `evs` is valid for 64 events.
        let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), evs.as_mut_ptr(), 64, timeout_ms) };
        out.clear();
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        out.extend(evs[..n as usize].iter().map(|e| e.u64));
        Ok(())
    }
}

/// A periodic, non-blocking timerfd on the monotonic clock.
pub fn timerfd(interval: Duration) -> io::Result<OwnedFd> {
    // SAFETY: plain call.
    let fd = owned(unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
        )
    })?;
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(interval.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: interval.subsec_nanos().into(),
    };
    let spec = libc::itimerspec {
        it_interval: ts,
        it_value: ts,
    };
    // SAFETY: `spec` is a valid itimerspec; a null old-value pointer is allowed.
    cvt(unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) })?;
    Ok(fd)
}

/// A non-blocking eventfd.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain call.
    owned(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })
}

/// Reads (and so resets) a timerfd or eventfd counter; 0 if nothing was pending.
pub fn read_counter(fd: BorrowedFd<'_>) -> u64 {
    let mut v = 0u64;
    // SAFETY: `v` is valid for 8 bytes of writes.
    let n = unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    if n == 8 {
        v
    } else {
        0
    }
}

/// Adds 1 to an eventfd counter.
pub fn signal_counter(fd: BorrowedFd<'_>) {
    let v = 1u64;
    // SAFETY: `v` is valid for 8 bytes of reads; write(2) is async-signal-safe.
    unsafe { libc::write(fd.as_raw_fd(), (&v as *const u64).cast(), 8) };
}

/// The CPU time process `pid` has consumed, all its threads together, in
/// nanoseconds: `clock_gettime` on `clock_getcpuclockid(pid)`. Any process's
/// clock can be read; no permission is needed. Pid 0 would name the caller
/// and is refused (`InvalidInput`).
pub fn process_cpu_time(pid: u32) -> io::Result<u64> {
    let pid = match libc::pid_t::try_from(pid) {
        Ok(p) if p > 0 => p,
        _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
    };
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid out-pointer for the call.
    let r = unsafe { libc::clock_getcpuclockid(pid, &mut clock) };
    if r != 0 {
        // It returns the error number rather than setting errno.
        return Err(io::Error::from_raw_os_error(r));
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the call.
    cvt(unsafe { libc::clock_gettime(clock, &mut ts) })?;
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// The CPU time thread `tid` of process `pid` has consumed, in nanoseconds:
/// the first field of `/proc/<pid>/task/<tid>/schedstat` (a thread's CPU
/// clock cannot be read from another process). `NotFound` once the thread
/// has exited; an error also where the kernel lacks the file.
pub fn thread_cpu_time(pid: u32, tid: libc::pid_t) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))?;
    text.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable schedstat"))
}

/// Whether thread `tid` of process `pid` is runnable now (state `R` in
/// `/proc/<pid>/task/<tid>/stat`: on a CPU or waiting for one); `false` if
/// it cannot be read.
pub fn thread_runnable(pid: u32, tid: libc::pid_t) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) else {
        return false;
    };
    // The state follows the command, whose parentheses may nest.
    stat.rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('R'))
}

/// Whether `fd` is readable now: one `poll(2)` with no timeout. For a pidfd,
/// readable means the process has exited.
pub fn is_readable(fd: BorrowedFd<'_>) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd that lives across the call; no timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents != 0
}

/// Waits until `a` or `b` is readable (no timeout); returns which: `(a, b)`.
pub fn wait_readable(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> io::Result<(bool, bool)> {
    let mut pfds = [a, b].map(|fd| libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    loop {
        // SAFETY: two valid pollfds that live across the call.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), 2, -1) };
        if n >= 0 {
            return Ok((pfds[0].revents != 0, pfds[1].revents != 0));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A set of CPUs (up to `CPU_SETSIZE`, 1024): a thread's affinity.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CpuMask {
    bits: [u64; 16],
}

impl std::fmt::Debug for CpuMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.cpus()).finish()
    }
}

impl CpuMask {
    /// The largest CPU number a mask holds, plus one.
    pub const CAPACITY: usize = 16 * 64;

    /// No CPU.
    pub const fn empty() -> CpuMask {
        CpuMask { bits: [0; 16] }
    }

    /// The CPUs of `cpus` (numbers past [`CAPACITY`](Self::CAPACITY) are
    /// ignored).
    pub fn of(cpus: impl IntoIterator<Item = usize>) -> CpuMask {
        let mut m = CpuMask::empty();
        for c in cpus {
            m.insert(c);
        }
        m
    }

    /// Adds CPU `cpu` (ignored past [`CAPACITY`](Self::CAPACITY)).
    pub fn insert(&mut self, cpu: usize) {
        if let Some(w) = self.bits.get_mut(cpu / 64) {
            *w |= 1 << (cpu % 64);
        }
    }

    /// Whether CPU `cpu` is in the set.
    pub fn contains(&self, cpu: usize) -> bool {
        self.bits
            .get(cpu / 64)
            .is_some_and(|w| w & (1 << (cpu % 64)) != 0)
    }

    /// The CPUs in the set, in increasing order.
    pub fn cpus(&self) -> impl Iterator<Item = usize> + '_ {
        (0..Self::CAPACITY).filter(|&c| self.contains(c))
    }

    /// How many CPUs the set holds.
    pub fn count(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The CPUs of `self` that are not in `other`.
    pub fn without(&self, other: &CpuMask) -> CpuMask {
        let mut m = *self;
        for (w, o) in m.bits.iter_mut().zip(other.bits) {
            *w &= !o;
        }
        m
    }

    fn to_libc(self) -> libc::cpu_set_t {
        // SAFETY: a zeroed `cpu_set_t` is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for c in self.cpus() {
            // SAFETY: `c < CAPACITY == CPU_SETSIZE`, in bounds of the set.
            unsafe { libc::CPU_SET(c, &mut set) };
        }
        set
    }

    fn from_libc(set: &libc::cpu_set_t) -> CpuMask {
        // SAFETY: CPU_ISSET reads the set in bounds (`c < CPU_SETSIZE`).
        CpuMask::of((0..Self::CAPACITY).filter(|&c| unsafe { libc::CPU_ISSET(c, set) }))
    }
}

/// Thread `tid`'s CPU affinity (`0`: the calling thread).
///
/// # Errors
/// `ESRCH` when the thread has gone.
pub fn affinity_get(tid: libc::pid_t) -> io::Result<CpuMask> {
    // SAFETY: a zeroed `cpu_set_t` is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live `cpu_set_t` of the size passed.
    cvt(unsafe { libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) })?;
    Ok(CpuMask::from_libc(&set))
}

/// Sets thread `tid`'s CPU affinity.
///
/// # Errors
/// `EINVAL` for a set with no usable CPU, `EPERM` for another user's thread
/// without `CAP_SYS_NICE`, `ESRCH` when the thread has gone.
pub fn affinity_set(tid: libc::pid_t, mask: CpuMask) -> io::Result<()> {
    let set = mask.to_libc();
    // SAFETY: `set` is a live `cpu_set_t` of the size passed.
    cvt(unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) })
        .map(drop)
}

/// `SCHED_RESET_ON_FORK`, a flag `sched_getscheduler` may OR into the policy.
pub const SCHED_RESET_ON_FORK: libc::c_int = 0x4000_0000;

/// A thread's CPU scheduling as far as the coordinator touches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadSched {
    /// `SCHED_OTHER`, `SCHED_BATCH`, `SCHED_IDLE`, or another policy (real
    /// time, deadline) the coordinator leaves alone; without
    /// [`SCHED_RESET_ON_FORK`].
    pub policy: libc::c_int,
    /// Whether `SCHED_RESET_ON_FORK` was set.
    pub reset_on_fork: bool,
    /// The nice value, -20..=19.
    pub nice: i32,
}

/// The scheduling policy and nice value of thread `tid` (any process's).
pub fn sched_get(tid: libc::pid_t) -> io::Result<ThreadSched> {
    // SAFETY: plain syscall on a thread id; no memory is passed.
    let policy = cvt(unsafe { libc::sched_getscheduler(tid) })?;
    // The raw getpriority syscall returns 20 - nice (1..=40), so no value is
    // ambiguous with an error, unlike the libc wrapper.
    // SAFETY: plain syscall; no memory is passed.
    let r = unsafe { libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, tid) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ThreadSched {
        policy: policy & !SCHED_RESET_ON_FORK,
        reset_on_fork: policy & SCHED_RESET_ON_FORK != 0,
        nice: 20 - r as i32,
    })
}

/// Sets thread `tid`'s policy (priority 0: only for `SCHED_OTHER`,
/// `SCHED_BATCH` and `SCHED_IDLE`) and then its nice value.
///
/// # Errors
/// `EPERM` when raising a weight without `CAP_SYS_NICE` (or touching another
/// user's thread), `ESRCH` when the thread has gone.
pub fn sched_set(tid: libc::pid_t, s: ThreadSched) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    let policy = s.policy
        | if s.reset_on_fork {
            SCHED_RESET_ON_FORK
        } else {
            0
        };
    // SAFETY: `param` is a valid sched_param that lives across the call.
    cvt(unsafe { libc::sched_setscheduler(tid, policy, &param) })?;
    // SAFETY: plain call; `tid` is a thread id (per-thread on Linux).
    cvt(unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, s.nice) }).map(drop)
}

/// Closes a connection after a last message so that the peer can still read
/// it: stops the peer from sending more (`shutdown(SHUT_RD)`), then discards
/// what it had sent (and any descriptors). Closing a Unix socket with unread
/// data would instead make the peer's next `recv` fail with `ECONNRESET`
/// before it sees the last message.
pub fn close_gracefully(sock: OwnedFd) {
    // SAFETY: plain call on a socket we own.
    unsafe { libc::shutdown(sock.as_raw_fd(), libc::SHUT_RD) };
    let mut buf = [0u8; 64];
    for _ in 0..64 {
        match recv_msg(sock.as_fd(), &mut buf, true) {
            Ok(m) if m.len > 0 || !m.fds.is_empty() => {}
            _ => break,
        }
    }
}

/// Sets `path`'s permission bits (the socket files' `--socket-mode`).
pub fn chmod(path: &std::path::Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}
