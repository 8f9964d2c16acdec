//! `ktut`: kernel threads, user threads — three OS threads per connection,
//! blocking `recv(2)`/`send(2)` (paper §4.1, model 3).

use std::io::{self, Write as _};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;

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
