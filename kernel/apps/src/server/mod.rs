//! The matrix benchmark server (`shared/PROTOCOL.md`) in the paper's four
//! models (§4): **K**ernel/**U**ser, **C**oroutines/**T**hreads.
//!
//! | program | user side | `IoMode` | the kernel carries out socket I/O with |
//! |---|---|---|---|
//! | `kcuc` | coroutines, asynchronous calls | `Direct` | a kernel coroutine per call |
//! | `ktuc` | coroutines, asynchronous calls | `KernelThread` | the kernel's polling thread |
//! | `kcut` | threads, blocking calls | `KernelCoroutine` | a kernel coroutine the thread waits for |
//! | `ktut` | threads, blocking calls | `Direct` | the calling thread, blocked in the kernel |
//!
//! Every connection has the paper's three components: **receive** (socket →
//! request queue), **handle** (request queue → square the matrix → response
//! queue) and **send** (response queue → socket). With coroutines they are
//! three coroutines at the connection's priority and the queues are
//! in-process channels ([`chan`]); with threads they are three user threads
//! and the queues are kernel pipes ([`pipe`]), the blocking channel threads
//! have here.
//!
//! Priorities: a connection that opens with a Hello gets the priority it asks
//! for, capped to the levels (0..8); one without gets its accept order modulo
//! the levels. Coroutine models spawn (and `reprio`) the connection's three
//! coroutines at it; threads have no priority of their own in this kernel, so
//! the thread models grant and report it only.
//!
//! A frame the server cannot accept gets one error Response, then that
//! connection is closed; a peer that closes or resets costs only its
//! connection. Nothing a peer sends can make the server panic, and what a
//! connection holds is bounded: the frame being received and one read, plus
//! a few queued jobs and replies (8 per queue with coroutines; a pipe's
//! capacity in the kernel with threads). A peer that sends without reading
//! the answers stalls only its own connection.
//!
//! The programs listen on TCP port [`PORT`], print one line
//! `ssserver: MODEL listening on port 5555 (W workers)` once listening, and
//! run until killed. Their argument (`run NAME PRIO ARG`) is the number of
//! harts polling the coroutine models' Executor (at least 1: the main thread
//! and `ARG - 1` more from `alloc_cpu`); the thread models ignore it (they make
//! three threads per connection) and print `0 workers`.

pub mod chan;
pub mod conn;
pub mod coro;
pub mod pipe;
pub mod thread;

use ss_abi::syscall::{IoMode, SysError};
use ss_abi::Levels;
use ss_ulib::{println, sys};

/// The TCP port every model listens on.
pub const PORT: u16 = 5555;

/// The priority levels connections are spread over (the process's levels).
pub const LEVELS: u8 = Levels::DEFAULT.count();

/// Heap for a server program (`ss_ulib::main!(main, heap = SERVER_HEAP)`):
/// enough for 1024 connections' coroutines, queues and buffers.
pub const SERVER_HEAP: usize = 16 * 1024 * 1024;

/// One of the paper's four server models.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Model {
    /// Kernel coroutines, user coroutines.
    Kcuc,
    /// Kernel coroutines, user threads.
    Kcut,
    /// Kernel threads, user threads.
    Ktut,
    /// Kernel thread, user coroutines.
    Ktuc,
}

impl Model {
    /// The model's name, as the program is called.
    pub const fn name(self) -> &'static str {
        match self {
            Model::Kcuc => "kcuc",
            Model::Kcut => "kcut",
            Model::Ktut => "ktut",
            Model::Ktuc => "ktuc",
        }
    }

    /// Who carries out the process's system calls in this model.
    pub const fn io_mode(self) -> IoMode {
        match self {
            Model::Kcuc | Model::Ktut => IoMode::Direct,
            Model::Kcut => IoMode::KernelCoroutine,
            Model::Ktuc => IoMode::KernelThread,
        }
    }

    /// Whether the user side runs coroutines (else threads).
    pub const fn coroutines(self) -> bool {
        matches!(self, Model::Kcuc | Model::Ktuc)
    }
}

/// The program's main coroutine for `model`: sets the I/O mode, listens and
/// serves until killed. Returns 1 (the exit code) if it cannot start.
pub async fn run(model: Model, arg: usize) -> i32 {
    let name = model.name();
    if let Err(e) = sys::set_io_mode(model.io_mode()) {
        println!(
            "ssserver: {name}: cannot set I/O mode {:?}: {e}",
            model.io_mode()
        );
        return 1;
    }
    let listener = match sys::listen(PORT) {
        Ok(fd) => fd,
        Err(e) => {
            println!("ssserver: {name}: cannot listen on port {PORT}: {e}");
            return 1;
        }
    };
    if model.coroutines() {
        coro::serve(name, listener, arg).await
    } else {
        thread::serve(name, listener)
    }
}

/// Prints the line the host harness waits for.
fn announce(name: &str, workers: usize) {
    println!("ssserver: {name} listening on port {PORT} ({workers} workers)");
}

/// Whether an `accept` error means the listener is gone (stop serving)
/// rather than a passing shortage (try again).
fn listener_gone(e: SysError) -> bool {
    matches!(
        e,
        SysError::BadFd | SysError::NoDevice | SysError::NoSuchSyscall
    )
}

/// Prints an accept loop's passing failures, each once in a row (a full
/// descriptor table would otherwise print a hundred lines a second).
#[derive(Default)]
struct AcceptErrors {
    last: Option<SysError>,
}

impl AcceptErrors {
    /// `accept` failed with `e`.
    fn failed(&mut self, name: &str, e: SysError) {
        if self.last != Some(e) {
            println!("ssserver: {name}: accept: {e}; retrying");
            self.last = Some(e);
        }
    }

    /// `accept` succeeded.
    fn succeeded(&mut self) {
        self.last = None;
    }
}

/// Whether a failed socket call may succeed if tried again later: the kernel
/// was short of something (asynchronous calls in flight, memory) rather than
/// the connection being bad. The components wait and retry these.
fn transient(e: SysError) -> bool {
    matches!(e, SysError::Limit | SysError::OutOfMemory)
}

/// How long a component waits before retrying a [`transient`] failure (1 ms).
const BACKOFF_NS: u64 = 1_000_000;

/// How long the accept loop waits after a passing failure (10 ms).
const RETRY_NS: u64 = 10_000_000;

/// An open descriptor, closed when dropped (a connection's socket, shared by
/// its receive and send components: the last one closes it).
#[derive(Debug)]
pub struct Fd(pub usize);

impl Drop for Fd {
    fn drop(&mut self) {
        let _ = sys::close(self.0);
    }
}
