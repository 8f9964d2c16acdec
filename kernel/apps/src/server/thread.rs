//! The thread models (KTUT, KCUT): the main thread accepts with the blocking
//! `accept`; each connection is three user threads (`alloc_cpu_raw`, not
//! polling the Executor) joined by two [`pipe`](super::pipe) queues, doing
//! socket I/O with the blocking `read` and `write`. When a connection ends,
//! its threads close their descriptors, free their buffers and end with
//! `thread_exit` (the kernel reuses their stack slots).
//!
//! Each connection uses five descriptors (the socket and two pipes) and three
//! 32 KiB stacks; a connection the kernel has no room for is closed at once.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use ss_ulib::{println, sys, SysError};

use super::conn::{Handler, Inbox, Job, READ_SIZE};
use super::pipe::{pipe_channel, PipeReceiver, PipeSender};
use super::{announce, listener_gone, transient, AcceptErrors, Fd, BACKOFF_NS, RETRY_NS};

/// Announces and accepts until the listener fails (this thread blocks in
/// `accept`). Returns the exit code.
pub fn serve(name: &'static str, listener: usize) -> i32 {
    announce(name, 0);
    let mut errors = AcceptErrors::default();
    loop {
        match sys::accept(listener) {
            Ok(fd) => {
                errors.succeeded();
                if let Err(e) = start(name, Fd(fd)) {
                    println!("ssserver: {name}: cannot start a connection: {e}");
                }
            }
            Err(e) if listener_gone(e) => {
                println!("ssserver: {name}: accept: {e}; stopping");
                return 1;
            }
            Err(e) => {
                errors.failed(name, e);
                sys::sleep_ns(RETRY_NS);
            }
        }
    }
}

/// What a new thread runs.
type Body = Box<dyn FnOnce() + Send>;

/// Where every server thread starts: runs its body (dropping everything the
/// body owned), then ends the thread.
extern "C" fn thread_entry(arg: usize) -> ! {
    // SAFETY: `arg` is the `Box<Body>` that `spawn_thread` gave up with
    // `Box::into_raw` for this thread alone; the kernel passes it once.
    let body = unsafe { Box::from_raw(arg as *mut Body) };
    (*body)();
    sys::thread_exit()
}

/// Starts a thread running `body`. If the kernel refuses, `body` is dropped
/// here (closing what it owned).
fn spawn_thread(body: impl FnOnce() + Send + 'static) -> Result<(), SysError> {
    let boxed: Box<Body> = Box::new(Box::new(body));
    let raw = Box::into_raw(boxed);
    match sys::alloc_cpu_raw(thread_entry as *const () as usize, raw as usize) {
        Ok(_) => Ok(()),
        Err(e) => {
            // SAFETY: no thread was made, so nobody else has `raw`.
            drop(unsafe { Box::from_raw(raw) });
            Err(e)
        }
    }
}

/// Starts a connection's three threads: send first, then handle, then
/// receive, so that if one cannot start, those already running see their
/// queue end and exit, and the socket closes with the last of them.
fn start(name: &'static str, sock: Fd) -> Result<(), SysError> {
    let sock = Arc::new(sock);
    let (job_tx, job_rx) = pipe_channel()?;
    let (reply_tx, reply_rx) = pipe_channel()?;
    let out = sock.clone();
    spawn_thread(move || send(out, reply_rx))?;
    spawn_thread(move || handle(job_rx, reply_tx))?;
    spawn_thread(move || receive(name, sock, job_tx))
}

/// The receive thread: socket → jobs, until the peer closes, a read fails,
/// a frame is bad or the handler is gone.
fn receive(name: &'static str, sock: Arc<Fd>, jobs: PipeSender) {
    let mut inbox = Inbox::new();
    let mut buf = vec![0u8; READ_SIZE];
    let mut msg = Vec::new();
    loop {
        while let Some(job) = inbox.next_job() {
            // A Hello is granted and acknowledged; threads have no priority
            // of their own here, so it changes nothing else.
            let last = matches!(job, Job::Bad { .. });
            if let Some(e) = inbox.error() {
                println!("ssserver: {name}: fd {}: bad frame: {e}", sock.0);
            }
            job.encode(&mut msg);
            if jobs.send(&[&msg]).is_err() || last {
                return;
            }
        }
        match sys::read(sock.0, &mut buf) {
            Ok(0) | Err(SysError::ConnectionReset) => return,
            Ok(n) => inbox.push(buf.get(..n).unwrap_or(&[])),
            Err(e) if transient(e) => sys::sleep_ns(BACKOFF_NS),
            Err(e) => {
                println!("ssserver: {name}: fd {}: read: {e}", sock.0);
                return;
            }
        }
    }
}

/// The handle thread: jobs → replies (a reply's message is its `last` flag,
/// then its bytes), until the jobs end or the sender is gone.
fn handle(jobs: PipeReceiver, replies: PipeSender) {
    let mut handler = Handler::new();
    let mut msg = Vec::new();
    while jobs.recv(&mut msg) {
        let Some(reply) = Job::decode(&msg).and_then(|job| handler.handle(job)) else {
            return;
        };
        if replies
            .send(&[&[u8::from(reply.last)], &reply.bytes])
            .is_err()
            || reply.last
        {
            return;
        }
    }
}

/// The send thread: replies → socket, until the replies end, the last one
/// is sent or a write fails.
fn send(sock: Arc<Fd>, replies: PipeReceiver) {
    let mut msg = Vec::new();
    while replies.recv(&mut msg) {
        let Some((&last, bytes)) = msg.split_first() else {
            return;
        };
        if write_all(sock.0, bytes).is_err() || last != 0 {
            return;
        }
    }
}

/// Writes all of `bytes` (a write may be short).
fn write_all(fd: usize, mut bytes: &[u8]) -> Result<(), SysError> {
    while !bytes.is_empty() {
        match sys::write(fd, bytes) {
            Ok(0) => return Err(SysError::ConnectionReset),
            Ok(n) => bytes = bytes.get(n..).unwrap_or(&[]),
            Err(e) if transient(e) => sys::sleep_ns(BACKOFF_NS),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
