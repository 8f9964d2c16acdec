//! `ktut`: kernel threads, user threads — three OS threads per connection,
//! blocking `recv(2)`/`send(2)` (paper §4.1, model 3). The linger after a
//! bad frame blocks in `poll(2)` with the time left as its timeout.

use std::io::{self, Write as _};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Instant;

use super::framing::Framer;
use super::pipeline::{RecvIo, SendIo};
use super::threads::{accept_loop, spawn_connection};
use super::{Running, Setup};

/// A connection's socket, as one of its two I/O threads holds it.
pub(crate) struct Blocking(pub(crate) TcpStream);

impl RecvIo for Blocking {
    async fn recv(&mut self, framer: &mut Framer) -> io::Result<usize> {
        loop {
            match framer.recv_fd(self.0.as_raw_fd(), 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    async fn recv_until(
        &mut self,
        framer: &mut Framer,
        deadline: Instant,
    ) -> io::Result<Option<usize>> {
        let fd = self.0.as_raw_fd();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // Whole milliseconds, rounded up: never woken before the deadline
            // only to wait again for nothing.
            let ms =
                libc::c_int::try_from(left.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX);
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is one valid pollfd for the call; `fd` is the
            // connection's socket, open for as long as `self`.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                continue;
            }
            // Readable, closed or failed: the receive does not block (and if
            // it would after all, poll again).
            match framer.recv_fd(fd, libc::MSG_DONTWAIT) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                r => return r.map(Some),
            }
        }
    }
}

impl SendIo for Blocking {
    async fn send_all(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn finish(&mut self) {
        let _ = self.0.shutdown(Shutdown::Write);
    }

    fn abort(&mut self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

pub(crate) fn start(setup: Setup) -> anyhow::Result<Running> {
    let Setup {
        listener, policy, ..
    } = setup;
    let policy = std::sync::Arc::new(policy);
    std::thread::Builder::new()
        .name("ktut-accept".into())
        .spawn(move || {
            accept_loop("ktut", listener, policy, |stream, hooks| {
                let second = stream.try_clone()?;
                spawn_connection("ktut", Blocking(stream), Blocking(second), hooks)
            })
        })?;
    Ok(Box::new(()))
}
