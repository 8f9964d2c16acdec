//! The operations: what each one keeps alive while the kernel works, its SQE,
//! and how its completion becomes the caller's result.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::Duration;

use io_uring::{opcode, squeue, types};

use super::addr;
use super::driver::Waiter;
use super::op::{Op, Operation, Submitted};
use ss_core::CoroutineId;

/// A byte count or the errno of a completion.
fn result_of(res: i32) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res as usize)
    }
}

/// The part of an I/O length the kernel takes in one go.
fn clamp(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn no_room() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "the buffer has no spare capacity to read into: reads append after `len()`, \
         so pass `Vec::with_capacity(n)`, or `clear()`/`reserve(n)` it first",
    )
}

/// Reading into a `Vec`'s spare capacity (`read` and `recv`).
pub(crate) struct ReadInto {
    fd: RawFd,
    buf: Vec<u8>,
    /// `recv(2)` on a socket, else `read(2)` at the file position.
    socket: bool,
}

impl ReadInto {
    /// A `recv(2)` into `buf`'s spare capacity.
    pub(crate) fn recv(fd: RawFd, buf: Vec<u8>) -> Self {
        ReadInto {
            fd,
            buf,
            socket: true,
        }
    }
}

impl Operation for ReadInto {
    type Output = (io::Result<usize>, Vec<u8>);

    fn sqe(&mut self) -> squeue::Entry {
        let len = self.buf.len();
        // SAFETY: `len <= capacity`, so the pointer is within (or one past) the
        // allocation.
        let ptr = unsafe { self.buf.as_mut_ptr().add(len) };
        let room = clamp(self.buf.capacity() - len);
        if self.socket {
            opcode::Recv::new(types::Fd(self.fd), ptr, room).build()
        } else {
            opcode::Read::new(types::Fd(self.fd), ptr, room)
                .offset(u64::MAX) // the file position, as read(2)
                .build()
        }
    }

    fn complete(mut self, res: i32) -> Self::Output {
        let r = result_of(res);
        if let Ok(n) = r {
            let len = self.buf.len();
            // The kernel never reports more than it was given room for; trust but
            // check before exposing bytes as initialised.
            let n = n.min(self.buf.capacity() - len);
            // SAFETY: the kernel wrote `n` bytes after `len`, within the capacity.
            unsafe { self.buf.set_len(len + n) };
        }
        (r, self.buf)
    }

    fn fail(self, e: io::Error) -> Self::Output {
        (Err(e), self.buf)
    }
}

/// Writing `buf[start..]` (`write` and `send`).
pub(crate) struct WriteFrom {
    pub(crate) fd: RawFd,
    pub(crate) buf: Vec<u8>,
    pub(crate) start: usize,
    pub(crate) socket: bool,
    /// A socket send that completes only once every byte is sent (or an
    /// error ends it: then the count sent so far): `MSG_WAITALL`, with which
    /// io_uring re-issues a short stream send itself.
    pub(crate) all: bool,
}

impl Operation for WriteFrom {
    type Output = (io::Result<usize>, Vec<u8>);

    fn sqe(&mut self) -> squeue::Entry {
        let start = self.start.min(self.buf.len());
        let ptr = self.buf[start..].as_ptr();
        let len = clamp(self.buf.len() - start);
        if self.socket {
            // MSG_NOSIGNAL: a peer that went away is an EPIPE, not a SIGPIPE.
            let all = if self.all { libc::MSG_WAITALL } else { 0 };
            opcode::Send::new(types::Fd(self.fd), ptr, len)
                .flags(libc::MSG_NOSIGNAL | all)
                .build()
        } else {
            opcode::Write::new(types::Fd(self.fd), ptr, len)
                .offset(u64::MAX)
                .build()
        }
    }

    fn complete(self, res: i32) -> Self::Output {
        (result_of(res), self.buf)
    }

    fn fail(self, e: io::Error) -> Self::Output {
        (Err(e), self.buf)
    }
}

/// `accept4(2)` with `SOCK_CLOEXEC`.
pub(crate) struct Accept {
    fd: RawFd,
    addr: Box<(libc::sockaddr_storage, libc::socklen_t)>,
}

impl Operation for Accept {
    type Output = io::Result<(OwnedFd, SocketAddr)>;

    fn sqe(&mut self) -> squeue::Entry {
        self.addr.1 = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let (storage, len) = &mut *self.addr;
        opcode::Accept::new(
            types::Fd(self.fd),
            (storage as *mut libc::sockaddr_storage).cast(),
            len,
        )
        .flags(libc::SOCK_CLOEXEC)
        .build()
    }

    fn complete(self, res: i32) -> Self::Output {
        let fd = result_of(res)?;
        // SAFETY: a successful accept returns a new descriptor that nobody else
        // owns; we take ownership of it here, exactly once.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let peer = addr::from_raw(&self.addr.0, self.addr.1)?;
        Ok((fd, peer))
    }

    /// A connection accepted for a future that is gone: closed, so its peer
    /// sees the end rather than a socket nobody reads.
    fn release(self, result: i32) {
        if result >= 0 {
            // SAFETY: as in `complete`: the new descriptor is owned by nobody
            // else, and this is the only use of this result.
            drop(unsafe { OwnedFd::from_raw_fd(result) });
        }
    }

    fn fail(self, e: io::Error) -> Self::Output {
        Err(e)
    }
}

/// `connect(2)`.
pub(crate) struct Connect {
    fd: RawFd,
    addr: Box<(libc::sockaddr_storage, libc::socklen_t)>,
}

impl Operation for Connect {
    type Output = io::Result<()>;

    fn sqe(&mut self) -> squeue::Entry {
        let (storage, len) = &*self.addr;
        opcode::Connect::new(
            types::Fd(self.fd),
            (storage as *const libc::sockaddr_storage).cast(),
            *len,
        )
        .build()
    }

    fn complete(self, res: i32) -> Self::Output {
        result_of(res).map(drop)
    }

    fn fail(self, e: io::Error) -> Self::Output {
        Err(e)
    }
}

/// `close(2)` of a descriptor whose ownership passes to the kernel at submission.
pub(crate) struct Close {
    fd: RawFd,
    /// Owned until submitted (an unsubmitted close closes synchronously on drop).
    owned: Option<OwnedFd>,
}

impl Operation for Close {
    type Output = io::Result<()>;

    fn sqe(&mut self) -> squeue::Entry {
        opcode::Close::new(types::Fd(self.fd)).build()
    }

    fn submitted(&mut self) {
        // The kernel closes it now; we must never close it again.
        if let Some(fd) = self.owned.take() {
            let _ = fd.into_raw_fd();
        }
    }

    fn complete(self, res: i32) -> Self::Output {
        result_of(res).map(drop)
    }

    fn fail(self, e: io::Error) -> Self::Output {
        Err(e)
    }
}

/// `IORING_OP_TIMEOUT`: a pure timer (no completion count).
pub(crate) struct Timeout {
    ts: Box<types::Timespec>,
}

impl Timeout {
    pub(crate) fn new(after: Duration) -> Self {
        Timeout {
            ts: Box::new(types::Timespec::from(after)),
        }
    }
}

impl Operation for Timeout {
    type Output = io::Result<()>;

    fn sqe(&mut self) -> squeue::Entry {
        opcode::Timeout::new(&*self.ts).build()
    }

    fn complete(self, res: i32) -> Self::Output {
        match res {
            // Expired (the normal end of a timer), or completed by count.
            r if r == -libc::ETIME || r >= 0 => Ok(()),
            r => Err(io::Error::from_raw_os_error(-r)),
        }
    }

    fn fail(self, e: io::Error) -> Self::Output {
        Err(e)
    }
}

/// `IORING_OP_NOP`: for measuring the driver itself.
#[cfg(test)]
pub(crate) struct Nop;

#[cfg(test)]
impl Operation for Nop {
    type Output = io::Result<()>;

    fn sqe(&mut self) -> squeue::Entry {
        opcode::Nop::new().build()
    }

    fn complete(self, res: i32) -> Self::Output {
        result_of(res).map(drop)
    }

    fn fail(self, e: io::Error) -> Self::Output {
        Err(e)
    }
}

// ---- the public operations ----

/// Reads from `fd` at its file position (`read(2)`) into `buf`'s spare capacity,
/// and gives the buffer back with the bytes read appended: `buf.len()` grows by
/// the count returned. `Ok(0)` is end of file.
///
/// # Errors
/// The errno of the read (`EBADF` for a closed descriptor, …), or `InvalidInput`
/// if `buf` has no spare capacity, or why the runtime has no io_uring.
///
/// # Cancellation
/// Dropping the future before it completes cancels the read; the buffer stays
/// with the runtime until the kernel has let go of it, then is freed. Bytes the
/// kernel had already read into it are lost with it.
pub async fn read(fd: impl AsFd, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
    read_into(fd.as_fd().as_raw_fd(), buf, false).await
}

/// `read` and `recv`: into `buf`'s spare capacity, refusing a full buffer.
async fn read_into(fd: RawFd, buf: Vec<u8>, socket: bool) -> (io::Result<usize>, Vec<u8>) {
    if buf.len() == buf.capacity() {
        return (Err(no_room()), buf);
    }
    Op::new(ReadInto { fd, buf, socket }).await
}

/// `write` and `send`: from the start of `buf`.
async fn write_from(fd: RawFd, buf: Vec<u8>, socket: bool) -> (io::Result<usize>, Vec<u8>) {
    Op::new(WriteFrom {
        fd,
        buf,
        start: 0,
        socket,
        all: false,
    })
    .await
}

/// Writes `buf` to `fd` at its file position (`write(2)`); returns the count
/// written (maybe fewer than `buf.len()`) and the buffer.
///
/// # Errors
/// The errno of the write, or why the runtime has no io_uring.
///
/// # Cancellation
/// As [`read()`]: the buffer stays with the runtime until the kernel lets go.
pub async fn write(fd: impl AsFd, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
    write_from(fd.as_fd().as_raw_fd(), buf, false).await
}

/// Receives from socket `fd` (`recv(2)`) into `buf`'s spare capacity, appending
/// as [`read()`] does. `Ok(0)`: the peer closed its side.
///
/// # Errors
/// As [`read()`].
///
/// # Cancellation
/// As [`read()`].
pub async fn recv(fd: impl AsFd, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
    read_into(fd.as_fd().as_raw_fd(), buf, true).await
}

/// Sends `buf` on socket `fd` (`send(2)` with `MSG_NOSIGNAL`: a vanished peer is
/// `EPIPE`, never a signal); returns the count sent and the buffer.
///
/// # Errors
/// As [`write()`].
pub async fn send(fd: impl AsFd, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
    write_from(fd.as_fd().as_raw_fd(), buf, true).await
}

/// Accepts a connection on listening socket `fd` (`accept4(2)`, close-on-exec).
///
/// # Errors
/// The errno of the accept, or why the runtime has no io_uring.
pub async fn accept(fd: impl AsFd) -> io::Result<(OwnedFd, SocketAddr)> {
    let fd = fd.as_fd().as_raw_fd();
    Op::new(Accept {
        fd,
        // SAFETY: `sockaddr_storage` is plain old data; all-zero is valid.
        addr: Box::new((unsafe { std::mem::zeroed() }, 0)),
    })
    .await
}

/// Connects socket `fd` to `addr` (`connect(2)`).
///
/// # Errors
/// The errno of the connect (`ECONNREFUSED`, …), or why the runtime has no
/// io_uring.
pub async fn connect(fd: impl AsFd, addr: SocketAddr) -> io::Result<()> {
    let fd = fd.as_fd().as_raw_fd();
    Op::new(Connect {
        fd,
        addr: Box::new(addr::to_raw(&addr)),
    })
    .await
}

/// Closes `fd` through the ring (`close(2)`).
///
/// # Errors
/// The errno of the close, or why the runtime has no io_uring (the descriptor is
/// then closed synchronously when the future drops).
pub async fn close(fd: OwnedFd) -> io::Result<()> {
    Op::new(Close {
        fd: fd.as_raw_fd(),
        owned: Some(fd),
    })
    .await
}

/// A `NOP` through the ring, to measure the driver.
#[cfg(test)]
pub(crate) async fn nop() -> io::Result<()> {
    Op::new(Nop).await
}

/// The paper's asynchronous `read` (Listing 2, `read!(fd, buf, cid)`): submits
/// the read now and returns at once; the completion wakes coroutine `cid`; the
/// handle gives the result. See [`crate::read!`].
pub fn submit_read(
    fd: impl AsFd,
    buf: Vec<u8>,
    cid: CoroutineId,
) -> Submitted<(io::Result<usize>, Vec<u8>)> {
    if buf.len() == buf.capacity() {
        return Submitted::new::<ReadInto>(Err((Err(no_room()), buf)));
    }
    let data = ReadInto {
        fd: fd.as_fd().as_raw_fd(),
        buf,
        socket: false,
    };
    Submitted::new(Op::submit_now(data, Waiter::Cid(cid)))
}

/// The paper's asynchronous `write` (`write!(fd, buf, cid)`): as [`submit_read`].
pub fn submit_write(
    fd: impl AsFd,
    buf: Vec<u8>,
    cid: CoroutineId,
) -> Submitted<(io::Result<usize>, Vec<u8>)> {
    let data = WriteFrom {
        fd: fd.as_fd().as_raw_fd(),
        buf,
        start: 0,
        socket: false,
        all: false,
    };
    Submitted::new(Op::submit_now(data, Waiter::Cid(cid)))
}
