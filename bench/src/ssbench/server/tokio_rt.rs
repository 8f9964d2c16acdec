//! `tokio`: the peer — tokio's multi-thread runtime, three tasks per
//! connection, socket I/O through tokio (epoll readiness). tokio has no
//! priorities: Hello is answered by the policy and has no other effect.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use super::accept;
use super::framing::Framer;
use super::pipeline::{self, PolicyHooks, Queues, RecvIo, SendIo};
use super::{Running, Setup};

impl RecvIo for OwnedReadHalf {
    async fn recv(&mut self, framer: &mut Framer) -> io::Result<usize> {
        let mut buf = framer.take();
        let r = self.read_buf(&mut buf).await;
        framer.give(buf);
        r
    }

    /// The linger's receive, cut short by tokio's timer (a receive dropped
    /// in flight loses its buffer, and the framer starts a new one).
    async fn recv_until(
        &mut self,
        framer: &mut Framer,
        deadline: Instant,
    ) -> io::Result<Option<usize>> {
        let deadline = tokio::time::Instant::from_std(deadline);
        match tokio::time::timeout_at(deadline, self.recv(framer)).await {
            Ok(r) => r.map(Some),
            Err(_elapsed) => Ok(None),
        }
    }
}

impl SendIo for OwnedWriteHalf {
    async fn send_all(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        self.write_all(buf).await
    }

    fn finish(&mut self) {
        shutdown(self, libc::SHUT_WR);
    }

    fn abort(&mut self) {
        shutdown(self, libc::SHUT_RDWR);
    }
}

/// `shutdown(2)` of the socket under a write half (tokio's own `shutdown` is
/// asynchronous and only shuts writing).
fn shutdown(half: &OwnedWriteHalf, how: libc::c_int) {
    let stream: &TcpStream = half.as_ref();
    // SAFETY: the half keeps the socket open for the whole call; shutdown(2)
    // changes no memory of ours.
    unsafe { libc::shutdown(stream.as_raw_fd(), how) };
}

pub(crate) fn start(setup: Setup) -> anyhow::Result<Running> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(setup.workers)
        .thread_name("tokio-worker")
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    setup.listener.set_nonblocking(true)?;
    let listener = {
        let _guard = rt.enter();
        TcpListener::from_std(setup.listener)?
    };
    let hooks = Arc::new(PolicyHooks(Arc::new(setup.policy)));
    rt.spawn(accept_loop(listener, hooks));
    Ok(Box::new(rt))
}

async fn accept_loop(listener: TcpListener, hooks: Arc<PolicyHooks>) {
    accept::serve("tokio", listener, |stream| {
        let _ = hooks.0.on_accept();
        let (rd, wr) = stream.into_split();
        let queues: Arc<Queues<Waker>> = Queues::new();
        tokio::spawn(pipeline::handle(queues.clone(), hooks.clone()));
        tokio::spawn(pipeline::send(wr, queues.clone()));
        tokio::spawn(pipeline::receive(rd, queues, hooks.clone()));
    })
    .await;
}

accept::tcp_listener!(TcpListener, TcpStream, tokio::time::sleep);
