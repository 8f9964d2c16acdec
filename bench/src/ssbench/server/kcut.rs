//! `kcut`: kernel coroutines, user threads (paper §4.1, model 2) — three OS
//! threads per connection; the receiving and sending threads do their socket
//! I/O through io_uring and sleep until the completion wakes them.
//!
//! # One small ring per I/O thread
//!
//! Each of the two I/O threads owns a 4-entry ring: it submits its operation
//! and waits in `io_uring_enter(GETEVENTS, min_complete = 1)`, and the kernel
//! wakes exactly that thread when the operation completes — the paper's
//! kernel coroutine finishing the copy and waking the blocked thread. One
//! shared ring would instead need a lock around its submission queue and a
//! completion thread that reaps and unparks the submitter: a second wake-up per
//! operation, which would measure that plumbing rather than the model. The cost
//! of the choice is two rings (a few pages each) per connection.
//!
//! The linger after a bad frame is io_uring's too: each receive of it is
//! linked to a timeout (`IORING_OP_LINK_TIMEOUT`) that cancels it at the
//! deadline.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use io_uring::{opcode, squeue, types, IoUring};

use super::framing::Framer;
use super::pipeline::{RecvIo, SendIo};
use super::threads::{accept_loop, spawn_connection};
use super::{probe_io_uring, Running, Setup};

/// Entries of each thread's ring (it has one operation in flight at a time,
/// and maybe a timeout linked to it).
const RING_ENTRIES: u32 = 4;

/// `user_data` of the operation, and of the timeout linked to it.
const OP: u64 = 0;
const LINKED_TIMEOUT: u64 = 1;

/// One I/O thread's ring and the connection's socket.
struct UringThread {
    ring: IoUring,
    stream: Arc<TcpStream>,
}

/// Why [`UringThread::run`] gave up.
enum Failed {
    /// The operation completed with this error.
    Op(io::Error),
    /// Waiting for the completion failed: the operation may still be in
    /// flight, so the memory it points at must never be freed or reused.
    Lost(io::Error),
}

impl UringThread {
    fn new(stream: Arc<TcpStream>) -> io::Result<UringThread> {
        Ok(UringThread {
            ring: IoUring::new(RING_ENTRIES)?,
            stream,
        })
    }

    /// Submits `sqe` and sleeps until its completion; returns its result.
    /// With `timeout`, `sqe` is linked to it: an operation still in flight
    /// when it expires is cancelled (`ECANCELED`), and this returns when both
    /// have completed.
    ///
    /// # Safety
    /// The memory `sqe` and `timeout` point at stays valid until this returns
    /// `Ok` or `Err(Failed::Op)`, and forever after `Err(Failed::Lost)`.
    unsafe fn run(
        &mut self,
        sqe: squeue::Entry,
        timeout: Option<&types::Timespec>,
    ) -> Result<usize, Failed> {
        let sqe = sqe.user_data(OP);
        let mut sq = self.ring.submission();
        // The caller keeps the memory the entries point at valid (above);
        // the queue is empty, as every earlier operation completed before its
        // call returned.
        let pushed = match timeout {
            // SAFETY: as above.
            None => unsafe { sq.push(&sqe) },
            // SAFETY: as above; `ts` is the caller's too.
            Some(ts) => unsafe {
                sq.push_multiple(&[
                    sqe.flags(squeue::Flags::IO_LINK),
                    opcode::LinkTimeout::new(ts)
                        .build()
                        .user_data(LINKED_TIMEOUT),
                ])
            },
        };
        drop(sq);
        if pushed.is_err() {
            return Err(Failed::Op(io::Error::other(
                "the thread's io_uring queue is full",
            )));
        }
        let mut pending = if timeout.is_some() { 2 } else { 1 };
        let mut result = None;
        while pending > 0 {
            if let Err(e) = self.ring.submit_and_wait(1) {
                match e.raw_os_error() {
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY) => continue,
                    _ => return Err(Failed::Lost(e)),
                }
            }
            for cqe in self.ring.completion() {
                pending -= 1;
                if cqe.user_data() == OP {
                    result = Some(cqe.result());
                }
            }
        }
        match result {
            Some(r) if r < 0 => Err(Failed::Op(io::Error::from_raw_os_error(-r))),
            // Non-negative: a byte count.
            Some(r) => Ok(r as usize),
            None => Err(Failed::Lost(io::Error::other(
                "the operation's completion never came",
            ))),
        }
    }

    /// Receives into `framer`'s spare room; with `timeout`, cancelled when
    /// it expires.
    fn recv_into(
        &mut self,
        framer: &mut Framer,
        timeout: Option<types::Timespec>,
    ) -> io::Result<usize> {
        let (ptr, len) = framer.spare();
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let sqe = opcode::Recv::new(self.fd(), ptr, len).build();
        // Boxed, so that it can be leaked with the buffer after `Lost`.
        let timeout = timeout.map(Box::new);
        // SAFETY: the spare room and the timespec stay allocated and
        // untouched until `run` returns (this thread does nothing else
        // meanwhile); after `Lost` both are leaked below.
        match unsafe { self.run(sqe, timeout.as_deref()) } {
            Ok(n) => {
                // SAFETY: the kernel wrote `n` (at most `len`) bytes at `ptr`.
                unsafe { framer.filled(n) };
                Ok(n)
            }
            Err(Failed::Op(e)) => Err(e),
            Err(Failed::Lost(e)) => {
                std::mem::forget(framer.take());
                std::mem::forget(timeout);
                Err(e)
            }
        }
    }

    fn fd(&self) -> types::Fd {
        types::Fd(self.stream.as_raw_fd())
    }
}

impl RecvIo for UringThread {
    async fn recv(&mut self, framer: &mut Framer) -> io::Result<usize> {
        self.recv_into(framer, None)
    }

    async fn recv_until(
        &mut self,
        framer: &mut Framer,
        deadline: Instant,
    ) -> io::Result<Option<usize>> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        match self.recv_into(framer, Some(types::Timespec::from(left))) {
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => Ok(None),
            r => r.map(Some),
        }
    }
}

impl SendIo for UringThread {
    async fn send_all(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        let mut sent = 0;
        while sent < buf.len() {
            let rest = &buf[sent..];
            let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
            let sqe = opcode::Send::new(self.fd(), rest.as_ptr(), len)
                .flags(libc::MSG_NOSIGNAL)
                .build();
            // SAFETY: `buf` is borrowed for the whole call, so the bytes stay put
            // until `run` returns; after `Lost` it is leaked below.
            match unsafe { self.run(sqe, None) } {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(Failed::Op(e)) => return Err(e),
                Err(Failed::Lost(e)) => {
                    std::mem::forget(std::mem::take(buf));
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    fn abort(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

pub(crate) fn start(setup: Setup) -> anyhow::Result<Running> {
    probe_io_uring()?;
    let Setup {
        listener, policy, ..
    } = setup;
    let policy = Arc::new(policy);
    std::thread::Builder::new()
        .name("kcut-accept".into())
        .spawn(move || {
            accept_loop("kcut", listener, policy, |stream, hooks| {
                let stream = Arc::new(stream);
                let recv = UringThread::new(stream.clone())?;
                let send = UringThread::new(stream)?;
                spawn_connection("kcut", recv, send, hooks)
            })
        })?;
    Ok(Box::new(()))
}
