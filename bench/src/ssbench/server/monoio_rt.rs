//! `monoio`: the io_uring peer — monoio's thread-per-core runtime, one per
//! worker thread, each accepting on the same listening socket; three local
//! tasks per connection; socket I/O through monoio's io_uring driver. monoio
//! has no priorities: Hello is answered by the policy and has no other effect.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use monoio::buf::IoBufMut as _;
use monoio::io::{AsyncReadRent as _, AsyncWriteRentExt as _, Splitable as _};
use monoio::net::tcp::{TcpOwnedReadHalf, TcpOwnedWriteHalf};
use monoio::net::{TcpListener, TcpStream};

use super::accept;
use super::framing::Framer;
use super::pipeline::{self, PolicyHooks, Queues, RecvIo, SendIo};
use super::{probe_io_uring, Running, Setup};

/// io_uring entries of each worker's runtime.
const ENTRIES: u32 = 1024;

struct Reader(TcpOwnedReadHalf);

impl RecvIo for Reader {
    async fn recv(&mut self, framer: &mut Framer) -> io::Result<usize> {
        let buf = framer.take();
        let end = buf.len();
        // Read into the spare capacity, after the bytes already there.
        let (r, slice) = self.0.read(buf.slice_mut(end..)).await;
        framer.give(slice.into_inner());
        r
    }

    /// The linger's receive, cut short by monoio's timer (a read dropped in
    /// flight is cancelled in the kernel and keeps its buffer until then; the
    /// framer starts a new one).
    async fn recv_until(
        &mut self,
        framer: &mut Framer,
        deadline: Instant,
    ) -> io::Result<Option<usize>> {
        let deadline = monoio::time::Instant::from_std(deadline);
        match monoio::time::timeout_at(deadline, self.recv(framer)).await {
            Ok(r) => r.map(Some),
            Err(_elapsed) => Ok(None),
        }
    }
}

/// The write half and the socket's descriptor, for a synchronous shutdown.
struct Writer {
    half: TcpOwnedWriteHalf,
    fd: RawFd,
}

impl Writer {
    fn shutdown(&self, how: libc::c_int) {
        // SAFETY: `half` keeps the socket (`fd`) open for the whole call;
        // shutdown(2) changes no memory of ours.
        unsafe { libc::shutdown(self.fd, how) };
    }
}

impl SendIo for Writer {
    async fn send_all(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        let (r, b) = self.half.write_all(std::mem::take(buf)).await;
        *buf = b;
        r.map(drop)
    }

    fn finish(&mut self) {
        self.shutdown(libc::SHUT_WR);
    }

    fn abort(&mut self) {
        self.shutdown(libc::SHUT_RDWR);
    }
}

pub(crate) fn start(setup: Setup) -> anyhow::Result<Running> {
    probe_io_uring()?;
    let hooks = Arc::new(PolicyHooks(Arc::new(setup.policy)));
    for i in 0..setup.workers {
        let listener = setup.listener.try_clone()?;
        let hooks = hooks.clone();
        // Each worker builds its runtime on its own thread; a failure there is
        // reported through the channel before `start` returns.
        let (ready, started) = std::sync::mpsc::channel::<io::Result<()>>();
        std::thread::Builder::new()
            .name(format!("monoio-{i}"))
            .spawn(move || worker(listener, hooks, ready))?;
        started.recv()??;
    }
    Ok(Box::new(()))
}

fn worker(
    listener: std::net::TcpListener,
    hooks: Arc<PolicyHooks>,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
) {
    let rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(ENTRIES)
        .enable_timer()
        .build();
    let mut rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        accept::serve("monoio", listener, |stream| {
            let _ = hooks.0.on_accept();
            let fd = stream.as_raw_fd();
            let (rd, wr) = stream.into_split();
            let queues: Arc<Queues<Waker>> = Queues::new();
            monoio::spawn(pipeline::handle(queues.clone(), hooks.clone()));
            monoio::spawn(pipeline::send(Writer { half: wr, fd }, queues.clone()));
            monoio::spawn(pipeline::receive(Reader(rd), queues, hooks.clone()));
        })
        .await;
    });
}

accept::tcp_listener!(TcpListener, TcpStream, monoio::time::sleep);
