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

use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use io_uring::{opcode, squeue, types, IoUring};

use super::framing::Framer;
use super::pipeline::{RecvIo, SendIo};
use super::threads::{accept_loop, spawn_connection};
use super::{probe_io_uring, Running, Setup};

/// Entries of each thread's ring (it has one operation in flight at a time).
const RING_ENTRIES: u32 = 4;

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
    ///
    /// # Safety
    /// The memory `sqe` points at stays valid until this returns `Ok` or
    /// `Err(Failed::Op)`, and forever after `Err(Failed::Lost)`.
    unsafe fn run(&mut self, sqe: squeue::Entry) -> Result<usize, Failed> {
        // SAFETY: the caller keeps the memory `sqe` points at valid (above); the
        // queue is empty, as every earlier operation completed before its call
        // returned.
        if unsafe { self.ring.submission().push(&sqe) }.is_err() {
            return Err(Failed::Op(io::Error::other(
                "the thread's io_uring queue is full",
            )));
        }
        loop {
            if let Err(e) = self.ring.submit_and_wait(1) {
                match e.raw_os_error() {
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY) => continue,
                    _ => return Err(Failed::Lost(e)),
                }
            }
            if let Some(cqe) = self.ring.completion().next() {
                let r = cqe.result();
                return if r < 0 {
                    Err(Failed::Op(io::Error::from_raw_os_error(-r)))
                } else {
                    // Non-negative: a byte count.
                    Ok(r as usize)
                };
            }
        }
    }

    fn fd(&self) -> types::Fd {
        types::Fd(self.stream.as_raw_fd())
    }
}

impl RecvIo for UringThread {
    async fn recv(&mut self, framer: &mut Framer) -> io::Result<usize> {
        let (ptr, len) = framer.spare();
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let sqe = opcode::Recv::new(self.fd(), ptr, len).build();
        // SAFETY: the spare room stays allocated and untouched until `run`
        // returns (this thread does nothing else meanwhile); after `Lost` the
        // buffer is leaked below.
        match unsafe { self.run(sqe) } {
            Ok(n) => {
                // SAFETY: the kernel wrote `n` (at most `len`) bytes at `ptr`.
                unsafe { framer.filled(n) };
                Ok(n)
            }
            Err(Failed::Op(e)) => Err(e),
            Err(Failed::Lost(e)) => {
                std::mem::forget(framer.take());
                Err(e)
            }
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
            match unsafe { self.run(sqe) } {
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
