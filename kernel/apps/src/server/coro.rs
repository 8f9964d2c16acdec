//! The coroutine models (KCUC, KTUC): the main coroutine accepts with the
//! asynchronous `accept`; each connection is three coroutines at its
//! priority, joined by two bounded [`chan`](super::chan) queues, doing socket
//! I/O with the asynchronous `read` and `write`. `arg` harts poll the
//! process's Executor: this thread and `arg - 1` from `alloc_cpu`.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use ss_ulib::{aio, println, CoroutineId, SysError};

use super::chan::{channel, Receiver, Sender};
use super::conn::{default_priority, Handler, Inbox, Job, Reply};
use super::{announce, listener_gone, transient, AcceptErrors, Fd, BACKOFF_NS, RETRY_NS};

/// Jobs (or replies) a connection's queue holds before its producer waits.
const QUEUE_DEPTH: usize = 8;

/// The most harts a coroutine server asks for (its argument is capped here).
pub const MAX_WORKERS: usize = 64;

/// Starts `workers - 1` more harts (`workers` in `1..=MAX_WORKERS`), announces, and accepts until the listener
/// fails. Returns the exit code.
pub async fn serve(name: &'static str, listener: usize, workers: usize) -> i32 {
    let mut harts = 1;
    for _ in 1..workers.clamp(1, MAX_WORKERS) {
        match ss_ulib::alloc_cpu() {
            Ok(_) => harts += 1,
            Err(e) => {
                println!("ssserver: {name}: alloc_cpu: {e}; going on with {harts} workers");
                break;
            }
        }
    }
    announce(name, harts);
    let mut accepted = 0usize;
    let mut errors = AcceptErrors::default();
    loop {
        match aio::accept(listener).await {
            Ok(fd) => {
                errors.succeeded();
                start(name, Fd(fd), default_priority(accepted));
                accepted = accepted.wrapping_add(1);
            }
            Err(e) if listener_gone(e) => {
                println!("ssserver: {name}: accept: {e}; stopping");
                return 1;
            }
            Err(e) => {
                errors.failed(name, e);
                back_off(RETRY_NS).await;
            }
        }
    }
}

/// Spawns a connection's three coroutines at `priority`. If the Executor
/// refuses one, the others end at once (their queues close) and the socket
/// is closed.
fn start(name: &'static str, sock: Fd, priority: u8) {
    let sock = Arc::new(sock);
    let (job_tx, job_rx) = channel::<Job>(QUEUE_DEPTH);
    let (reply_tx, reply_rx) = channel::<Reply>(QUEUE_DEPTH);
    let spawned = ss_ulib::spawn(send(sock.clone(), reply_rx), priority).and_then(|sender| {
        let handler = ss_ulib::spawn(handle(job_rx, reply_tx), priority)?;
        ss_ulib::spawn(receive(name, sock, job_tx, [sender, handler]), priority)
    });
    if let Err(e) = spawned {
        println!("ssserver: {name}: cannot start a connection: {e}");
    }
}

/// Gives this coroutine and its `peers` priority `priority`.
async fn reprio_all(peers: [CoroutineId; 2], priority: u8) {
    for cid in peers {
        let _ = ss_ulib::reprio(cid, priority);
    }
    if let Some(me) = ss_ulib::getcid().await {
        let _ = ss_ulib::reprio(me, priority);
    }
}

/// The receive component: socket → jobs, until the peer closes, a read
/// fails, a frame is bad or the handler is gone.
async fn receive(name: &'static str, sock: Arc<Fd>, jobs: Sender<Job>, peers: [CoroutineId; 2]) {
    let mut inbox = Inbox::new();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        while let Some(job) = inbox.next_job() {
            let last = match &job {
                Job::Hello { granted } => {
                    reprio_all(peers, *granted).await;
                    false
                }
                Job::Bad { .. } => {
                    if let Some(e) = inbox.error() {
                        println!("ssserver: {name}: fd {}: bad frame: {e}", sock.0);
                    }
                    true
                }
                Job::Request { .. } => false,
            };
            if jobs.send(job).await.is_err() || last {
                return;
            }
        }
        let want = inbox.read_len();
        if buf.len() != want {
            buf = vec![0; want];
        }
        let (r, b) = aio::read(sock.0, buf).await;
        buf = b;
        match r {
            Ok(0) => return,
            Ok(n) => inbox.push(buf.get(..n).unwrap_or(&[])),
            Err(SysError::ConnectionReset) => return,
            Err(e) if transient(e) => back_off(BACKOFF_NS).await,
            Err(e) => {
                println!("ssserver: {name}: fd {}: read: {e}", sock.0);
                return;
            }
        }
    }
}

/// The handle component: jobs → replies, until the jobs end or the sender
/// is gone.
async fn handle(jobs: Receiver<Job>, replies: Sender<Reply>) {
    let mut handler = Handler::new();
    while let Some(job) = jobs.recv().await {
        let Some(reply) = handler.handle(job) else {
            return;
        };
        let last = reply.last;
        if replies.send(reply).await.is_err() || last {
            return;
        }
        // Between two requests: give way to more important work.
        ss_ulib::cooperate().await;
    }
}

/// The send component: replies → socket, until the replies end, the last
/// one is sent or a write fails.
async fn send(sock: Arc<Fd>, replies: Receiver<Reply>) {
    while let Some(reply) = replies.recv().await {
        if write_all(sock.0, &reply.bytes).await.is_err() || reply.last {
            return;
        }
    }
}

/// Writes all of `bytes` (a write may be short).
async fn write_all(fd: usize, mut bytes: &[u8]) -> Result<(), SysError> {
    while !bytes.is_empty() {
        match aio::write(fd, bytes).await {
            Ok(0) => return Err(SysError::ConnectionReset),
            Ok(n) => bytes = bytes.get(n..).unwrap_or(&[]),
            Err(e) if transient(e) => back_off(BACKOFF_NS).await,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Waits about `ns` before a call is retried, without holding up the
/// coroutine's hart: an asynchronous sleep, or, when the kernel refuses that
/// too (no call may be in flight now), a yield to the other coroutines.
async fn back_off(ns: u64) {
    if aio::sleep(ns).await.is_err() {
        ss_ulib::yield_now().await;
    }
}
