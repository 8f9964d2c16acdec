//! The three components of a connection (paper §4), written once for every
//! model: [`receive`] → request queue → [`handle`] → response queue → [`send`].
//!
//! They are `async fn`s over the model's socket I/O ([`RecvIo`], [`SendIo`])
//! and wake-up ([`Wakeup`]). Coroutine and task models spawn them; the thread
//! models run each on its own thread under a minimal `block_on`, with I/O that
//! blocks in the system call and queues that park the thread — so the only
//! difference between models is the one the paper measures.
//!
//! # Ending
//!
//! - The peer closes (or resets, in mid-frame or not): [`receive`] closes the
//!   request queue; [`handle`] answers what is queued and closes the response
//!   queue; [`send`] sends what is queued, shuts its side (FIN) and ends.
//! - A bad frame: [`receive`] queues it as a [`Job::Bad`] (answered in order,
//!   after every earlier request), closes the request queue as above, and then
//!   lingers: it reads and discards what the peer still sends, so that the
//!   peer's unread bytes do not make our close a reset that could destroy the
//!   error Response in flight, until the peer closes, [`DISCARD_LIMIT`] bytes
//!   were discarded, or [`LINGER`] has passed since [`send`] shut our side,
//!   whichever comes first. Then the connection is closed whatever the peer
//!   sends: a peer that never closes holds it (and its components) no longer.
//!   (The linger starts once [`send`] has written every answer: a peer that
//!   reads none of them keeps [`send`] waiting, and the connection with it, as
//!   it would without a bad frame.)
//! - A send fails (the peer is gone): [`send`] closes the response queue and
//!   shuts the socket down both ways, so [`handle`] stops at its next put and
//!   [`receive`] at its next receive or put.

use std::future::Future;
use std::io;
use std::sync::{Arc, OnceLock};
use std::task::Waker;
use std::time::{Duration, Instant};

use super::framing::{Framer, Handler, Job};
use super::queue::{Queue, Wakeup};
use super::Policy;

/// After a bad frame, the most bytes read and discarded before the connection
/// is dropped without waiting for the peer to close.
pub(crate) const DISCARD_LIMIT: usize = 1 << 20;

/// After a bad frame, how long the server keeps reading and discarding once
/// the error Response is written and its side shut, before it closes the
/// connection even though the peer has not (every model, `ceiling` too).
///
/// Like `SO_LINGER` with a timeout, it bounds how long a closing connection
/// is kept for the sake of data in flight: the error Response, already in the
/// kernel's send queue, reaches a peer that reads within a round trip on a
/// LAN and within a retransmission on a lossy path (the initial
/// retransmission timeout is 1 s, RFC 6298); 2 s covers that, and is all a
/// peer that sends a bad frame and then never closes costs: one connection
/// (three threads in `kcut`/`ktut`) for 2 s. A peer that still sends after
/// it may get a reset, as from any closed socket.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// The receive side of a connection's socket in some model.
pub(crate) trait RecvIo {
    /// Receives into `framer`'s spare room; `Ok(0)` at end of file.
    fn recv(&mut self, framer: &mut Framer) -> impl Future<Output = io::Result<usize>>;
    /// As [`RecvIo::recv`], but gives up at `deadline` with `Ok(None)` (the
    /// linger after a bad frame; with the model's own timer). Bytes a
    /// receive cut short by the deadline may have taken are lost, which is
    /// fine for bytes that are discarded anyway.
    fn recv_until(
        &mut self,
        framer: &mut Framer,
        deadline: Instant,
    ) -> impl Future<Output = io::Result<Option<usize>>>;
}

/// [`RecvIo::recv_until`] for the models whose components are ss-runtime
/// coroutines: `recv` raced against ss-runtime's timer (a timeout in the
/// worker's io_uring; dropping the receive cancels it).
pub(crate) async fn recv_until_ss(
    recv: impl Future<Output = io::Result<usize>>,
    deadline: Instant,
) -> io::Result<Option<usize>> {
    let left = deadline.saturating_duration_since(Instant::now());
    match ss_runtime::time::timeout(left, recv).await {
        Ok(r) => r.map(Some),
        Err(_elapsed) => Ok(None),
    }
}

/// The send side of a connection's socket in some model.
pub(crate) trait SendIo {
    /// Sends all of `buf` (an owned-buffer model may take it and give it back).
    fn send_all(&mut self, buf: &mut Vec<u8>) -> impl Future<Output = io::Result<()>>;
    /// Shuts the sending side (FIN) after the last answer.
    fn finish(&mut self);
    /// Shuts the socket down both ways after a failure, so that the receiver,
    /// maybe waiting in a receive, stops too.
    fn abort(&mut self);
}

/// A model's hooks around the components.
pub(crate) trait Hooks: Send + Sync + 'static {
    /// How a waiting component is woken.
    type Wake: Wakeup;
    /// A Hello asked for `requested`: grant a priority (the [`Policy`]),
    /// apply it to the connection's components if the model has priorities,
    /// and return it for the answer. Called from the receiving component.
    fn hello(&self, requested: u8) -> impl Future<Output = u8>;
    /// Called by the handler between requests: lets a model give way to more
    /// important work (ss-runtime's cooperative budget). Nothing by default.
    fn between_requests(&self) -> impl Future<Output = ()> {
        async {}
    }
}

/// The hooks of the models without priorities (threads, tokio, monoio): a
/// Hello is granted by the policy and answered, and changes nothing else.
pub(crate) struct PolicyHooks(pub(crate) Arc<Policy>);

impl Hooks for PolicyHooks {
    type Wake = Waker;

    async fn hello(&self, requested: u8) -> u8 {
        self.0.grant(requested)
    }
}

/// A connection's two queues, and when its sender ended.
pub(crate) struct Queues<W> {
    requests: Queue<Job, W>,
    responses: Queue<Vec<u8>, W>,
    /// When [`send`] ended (its last answer written and its side shut, or
    /// the socket shut after a failure): where the [`LINGER`] after a bad
    /// frame starts. Read by the receiver whenever a wait of its linger
    /// ends, so it needs no wake-up of its own.
    sent: OnceLock<Instant>,
}

impl<W: Wakeup> Queues<W> {
    pub(crate) fn new() -> Arc<Queues<W>> {
        Arc::new(Queues {
            requests: Queue::new(),
            responses: Queue::new(),
            sent: OnceLock::new(),
        })
    }

    /// Closes both queues: components already running stop at their next step
    /// (a connection whose components could not all be started).
    pub(crate) fn close(&self) {
        self.requests.close();
        self.responses.close();
    }
}

/// The receiving component: socket → frames → request queue.
pub(crate) async fn receive<R: RecvIo, H: Hooks>(
    mut io: R,
    queues: Arc<Queues<H::Wake>>,
    hooks: Arc<H>,
) {
    let requests = &queues.requests;
    let mut framer = Framer::new();
    'conn: loop {
        while let Some(job) = framer.next_job(|| requests.recycled()) {
            let job = match job {
                Job::Hello { priority } => Job::Hello {
                    priority: hooks.hello(priority).await,
                },
                Job::Bad(bad) => {
                    let _ = requests.put(Job::Bad(bad)).await;
                    requests.close();
                    linger(&mut io, &mut framer, &queues.sent).await;
                    return;
                }
                job @ Job::Request(_) => job,
            };
            if requests.put(job).await.is_err() {
                break 'conn;
            }
        }
        match io.recv(&mut framer).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    requests.close();
}

/// Reads and drops what the peer sends after a bad frame, until it closes, or
/// [`DISCARD_LIMIT`] bytes were dropped, or [`LINGER`] has passed since the
/// sender ended (`sent`).
///
/// Until the sender has ended (the error Response may still wait for an
/// earlier answer or for room in the socket), it waits in rounds of
/// [`LINGER`], looking at `sent` after each; so it ends at most [`LINGER`]
/// after the sender, and never before.
async fn linger<R: RecvIo>(io: &mut R, framer: &mut Framer, sent: &OnceLock<Instant>) {
    let mut dropped = 0;
    while dropped < DISCARD_LIMIT {
        framer.clear();
        let end = sent.get().map(|&at| at + LINGER);
        let wait = end.unwrap_or_else(|| Instant::now() + LINGER);
        match io.recv_until(framer, wait).await {
            Ok(Some(0)) | Err(_) => return,
            Ok(Some(n)) => dropped += n,
            // The linger is over.
            Ok(None) if end.is_some() => return,
            // The sender is still at work: the linger has not started.
            Ok(None) => {}
        }
    }
}

/// The handling component: request queue → C = M × M → response queue.
pub(crate) async fn handle<H: Hooks>(queues: Arc<Queues<H::Wake>>, hooks: Arc<H>) {
    let Queues {
        requests,
        responses,
        ..
    } = &*queues;
    let mut handler = Handler::new();
    while let Some(job) = requests.take().await {
        let mut out = responses.recycled();
        let answered = handler.respond(&job, &mut out);
        if let Job::Request(buf) = job {
            requests.recycle(buf);
        }
        if let Err(e) = answered {
            eprintln!("ssbench server: {e}; dropping the connection");
            break;
        }
        if responses.put(out).await.is_err() {
            break;
        }
        hooks.between_requests().await;
    }
    requests.close();
    responses.close();
}

/// The sending component: response queue → socket, everything queued in one
/// send.
pub(crate) async fn send<S: SendIo, W: Wakeup>(mut io: S, queues: Arc<Queues<W>>) {
    let responses = &queues.responses;
    let mut out = Vec::new();
    loop {
        out.clear();
        if !responses.take_all_into(&mut out).await {
            io.finish();
            let _ = queues.sent.set(Instant::now());
            return;
        }
        if io.send_all(&mut out).await.is_err() {
            responses.close();
            io.abort();
            let _ = queues.sent.set(Instant::now());
            return;
        }
        if out.capacity() > super::queue::BATCH_KEEP_BYTES {
            // A burst's batch: not kept for an idle connection to hold.
            out = Vec::new();
        }
    }
}
