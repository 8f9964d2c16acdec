//! What the two thread models (`ktut`, `kcut`) share: three OS threads per
//! connection, each running one component of [`pipeline`] under [`block_on`],
//! and a blocking accept loop.
//!
//! Under `block_on` a component's I/O blocks in its system call (it never
//! returns `Pending`) and a queue that must wait parks the thread until the
//! other end unparks it — the condition-variable hand-off of a classic
//! thread-per-component server.

use std::future::Future;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use super::pipeline::{self, PolicyHooks, Queues, RecvIo, SendIo};
use super::{accept, Policy};

/// Stack of each component thread. The components keep their buffers on the
/// heap; a small stack is what a server with thousands of threads would choose
/// (the default 2 MiB would reserve 6 GiB of address space at 1 024
/// connections).
const STACK: usize = 256 * 1024;

/// Unparks a thread waiting in [`block_on`].
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` on this thread, parking while it is pending.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => thread::park(),
        }
    }
}

/// Accepts forever on this thread, starting each connection with `start`.
pub(crate) fn accept_loop(
    model: &'static str,
    listener: TcpListener,
    policy: Arc<Policy>,
    start: impl Fn(TcpStream, &Arc<PolicyHooks>) -> io::Result<()>,
) {
    let hooks = Arc::new(PolicyHooks(policy));
    accept::serve_blocking(model, &listener, |stream| {
        // Priorities mean nothing to threads, but the accept order is counted
        // all the same.
        let _ = hooks.0.on_accept();
        start(stream, &hooks)
    });
}

/// Starts a connection's three component threads.
///
/// # Errors
/// A thread could not be started; the others, if any, stop at once.
pub(crate) fn spawn_connection<R, S>(
    model: &str,
    recv: R,
    send: S,
    hooks: &Arc<PolicyHooks>,
) -> io::Result<()>
where
    R: RecvIo + Send + 'static,
    S: SendIo + Send + 'static,
{
    let queues: Arc<Queues<Waker>> = Queues::new();
    let spawned = (|| {
        let (q, h) = (queues.clone(), hooks.clone());
        spawn(model, "handle", move || block_on(pipeline::handle(q, h)))?;
        let q = queues.clone();
        spawn(model, "send", move || block_on(pipeline::send(send, q)))?;
        let (q, h) = (queues.clone(), hooks.clone());
        spawn(model, "recv", move || {
            block_on(pipeline::receive(recv, q, h))
        })
    })();
    if spawned.is_err() {
        queues.close();
    }
    spawned
}

fn spawn(model: &str, part: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    thread::Builder::new()
        .name(format!("{model}-{part}"))
        .stack_size(STACK)
        .spawn(f)
        .map(drop)
}
