//! `kcuc`: kernel coroutines, user coroutines (paper §4.1, model 1) — three
//! ss-runtime coroutines per connection at its priority; their socket I/O goes
//! through io_uring, and each completion wakes the issuing coroutine by id
//! (the kernel's io_uring plays the paper's kernel coroutine). The queues wake
//! by id too. Each connection's receiving coroutine reads through one
//! multishot receive that stays armed (`TcpStream::recv_stream`), unless
//! `--single-shot-recv` asks for a pooled receive per read.

use std::io;
use std::net::Shutdown;
use std::sync::Arc;
use std::time::Instant;

use ss_runtime::io::RecvStream;
use ss_runtime::net::{TcpListener, TcpStream};
use ss_runtime::prio;

use super::accept;
use super::framing::Framer;
use super::pipeline::{self, RecvIo, SendIo};
use super::ss::{self, ACCEPT_PRIORITY};
use super::{probe_io_uring, Policy, Running, Setup};

/// A connection's socket, shared by its receiving and sending coroutines.
struct Uring(Arc<TcpStream>);

/// The receiving side: a multishot receive that stays armed (one SQE per
/// connection, not one per read), or — with `--single-shot-recv` — a pooled
/// receive submitted per read.
struct UringRecv {
    /// Declared first, so dropped before the socket's last reference.
    stream: Option<RecvStream>,
    socket: Arc<TcpStream>,
}

impl RecvIo for UringRecv {
    /// A connection waiting for its next request holds no receive buffer (the
    /// kernel picks one of the worker's when bytes come); the bytes are copied
    /// into the framer, which keeps memory only for a frame still incomplete.
    async fn recv(&mut self, framer: &mut Framer) -> io::Result<usize> {
        framer.release_if_empty();
        let buf = match &mut self.stream {
            Some(stream) => stream.next().await?,
            None => self.socket.recv_pooled().await?,
        };
        framer.extend(&buf);
        Ok(buf.len())
    }

    async fn recv_until(
        &mut self,
        framer: &mut Framer,
        deadline: Instant,
    ) -> io::Result<Option<usize>> {
        pipeline::recv_until_ss(self.recv(framer), deadline).await
    }
}

impl SendIo for Uring {
    async fn send_all(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        let (r, b) = self.0.send_all(std::mem::take(buf)).await;
        *buf = b;
        r
    }

    fn finish(&mut self) {
        let _ = self.0.shutdown(Shutdown::Write);
    }

    fn abort(&mut self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

pub(crate) fn start(setup: Setup) -> anyhow::Result<Running> {
    probe_io_uring()?;
    let rt = ss::runtime("kcuc", &setup)?;
    let listener = TcpListener::from_std(setup.listener);
    let policy = Arc::new(setup.policy);
    let multishot = !setup.single_shot_recv;
    rt.spawn(
        accept_loop(listener, policy, multishot),
        prio(ACCEPT_PRIORITY),
    )?;
    Ok(Box::new(ss::Serving {
        model: "kcuc",
        rt: Arc::new(rt),
    }))
}

async fn accept_loop(listener: TcpListener, policy: Arc<Policy>, multishot: bool) {
    accept::serve("kcuc", listener, |stream| {
        start_connection(stream, &policy, multishot)
    })
    .await;
}

accept::tcp_listener!(TcpListener, TcpStream, ss_runtime::time::sleep);

fn start_connection(stream: TcpStream, policy: &Arc<Policy>, multishot: bool) {
    let priority = policy.on_accept();
    let stream = Arc::new(stream);
    let (queues, hooks) = ss::connection(policy);
    let futures = (
        pipeline::receive(
            UringRecv {
                stream: multishot.then(|| stream.recv_stream()),
                socket: stream.clone(),
            },
            queues.clone(),
            hooks.clone(),
        ),
        pipeline::handle(queues.clone(), hooks.clone()),
        pipeline::send(Uring(stream), queues.clone()),
    );
    ss::spawn_connection(None, "kcuc", priority, &queues, &hooks, futures);
}
