//! `ssbench server`: the matrix service of PROTOCOL.md in every model.
//!
//! Contract with the experiment driver: [`run`] binds `--listen` (port 0 picks
//! one), prints exactly one line `listening <addr>` to stdout and flushes it,
//! then serves until its stdin reaches end of file or it gets SIGTERM/SIGINT,
//! and exits 0.
//!
//! # One connection, three components (paper §4)
//!
//! ```text
//!  socket ──► receive ──► request queue ──► handle (C = M × M) ──► response queue ──► send ──► socket
//! ```
//!
//! Every model runs the same three components, written once (`pipeline`) over
//! the same framing and answering code (`framing`) and the same bounded queues
//! (`queue`). A model contributes only what the paper varies: what runs the
//! components (coroutines, tasks, threads), how a blocked component is woken,
//! and how the socket I/O is done:
//!
//! | model | components run as | socket I/O | a blocked component is woken by |
//! |---|---|---|---|
//! | `kcuc` | ss-runtime coroutines, at the connection's priority | io_uring (ss-runtime's ring per worker) | the completion, by cid; queues by cid |
//! | `kcut` | three OS threads | io_uring, one small ring per I/O thread | the kernel, in `io_uring_enter` |
//! | `ktut` | three OS threads | blocking `recv`/`send` | the kernel, in the system call |
//! | `ktuc` | ss-runtime coroutines, at the connection's priority | non-blocking `recv`/`send` | a poller thread (epoll, edge-triggered) waking the cid |
//! | `tokio` | tokio tasks, multi-thread runtime | tokio (epoll) | `Waker` |
//! | `monoio` | monoio tasks, one runtime per worker thread | io_uring (monoio) | `Waker` |
//! | `ceiling` | nothing: one thread, one loop | io_uring, batched | — (the no-scheduler baseline) |
//!
//! # Priority
//!
//! A connection's priority is its accept order modulo `--levels` (as the
//! paper), or what its Hello asks, capped at `levels - 1` and answered with the
//! grant (`Policy`). Models with priorities (`kcuc`, `ktuc`) run all three
//! components at it; the others answer Hello the same way and ignore it.
//!
//! # Bad input
//!
//! A bad frame gets one error Response, after every earlier answer, then the
//! server shuts its side (FIN) and lingers: it reads and discards what the peer
//! still sends (so the peer's unread bytes do not turn the close into a reset
//! that could destroy the error Response in flight) until the peer closes,
//! `pipeline::DISCARD_LIMIT` (1 MiB) was discarded or `pipeline::LINGER` (2 s)
//! has passed since its side was shut, and then closes the connection, whatever
//! the peer sends (each model with its own timer: `poll(2)` in `ktut`, a
//! linked io_uring timeout in `kcut`, the runtime's in `kcuc`, `ktuc`, `tokio`
//! and `monoio`, a deadline list in `ceiling`'s loop). Its side is shut once
//! every answer is written: a peer that reads none of them keeps the
//! connection waiting before the linger, as it would without a bad frame. A
//! reset or end of file in mid-frame ends that connection. Nothing a peer
//! sends costs more than its connection: buffers are bounded by the largest
//! frame, queues by `queue::QUEUE_CAP` (32 items).

mod accept;
mod ceiling;
mod framing;
mod kcuc;
mod kcut;
mod ktuc;
mod ktut;
mod monoio_rt;
mod pipeline;
mod queue;
mod ss;
mod threads;
mod tokio_rt;

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context as _};

/// The server models.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Model {
    /// Our coroutines + io_uring (kernel completes, wakes the cid).
    Kcuc,
    /// User threads, three per connection, I/O through io_uring.
    Kcut,
    /// User threads, three per connection, blocking system calls.
    Ktut,
    /// Our coroutines + a poller thread doing epoll readiness I/O.
    Ktuc,
    /// tokio multi-thread, three tasks per connection.
    Tokio,
    /// monoio (io_uring, thread per core), three tasks per connection.
    Monoio,
    /// No scheduler: one thread, one io_uring loop with batching, no queues.
    Ceiling,
}

/// Arguments of `ssbench server`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// The model to serve in.
    #[arg(long, value_enum)]
    pub model: Model,
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Worker threads (models with workers; default: the number of CPUs).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Priority levels; without Hello a connection gets accept order modulo this.
    #[arg(long, default_value_t = 8)]
    pub levels: u8,
    /// kcuc, ktuc: how long an idle ss-runtime worker spins before it sleeps,
    /// in µs (default: the runtime's, 20 µs). Spinning answers sooner but burns
    /// a CPU the load generator may need.
    #[arg(long, value_name = "US")]
    pub idle_spin_us: Option<u64>,
    /// kcuc, ktuc: spin every time a worker idles, not only while recent
    /// spins found work (ss-runtime's `Builder::adaptive_spin(false)`).
    #[arg(long)]
    pub spin_always: bool,
    /// kcuc, ktuc: ss-runtime's `Builder::reserve_after` in µs (default: the
    /// runtime's, 10 000 µs; 0 holds no worker in reserve).
    #[arg(long, value_name = "US")]
    pub reserve_us: Option<u64>,
    /// kcuc, ktuc: hold the reserve however busy the rest of the machine is
    /// (ss-runtime's `Builder::reserve_always`; default: only while the other
    /// processes take half or more of the CPUs beyond one).
    #[arg(long)]
    pub reserve_always: bool,
    /// kcuc, ktuc: what a poll wakes runs next on that worker, ahead of its
    /// equals that waited (ss-runtime's `Builder::hot_wakes(true)`; default:
    /// the paper's FIFO order among connections of one priority).
    #[arg(long)]
    pub hot_wakes: bool,
    /// kcuc: one pooled receive submitted per read of a connection, instead
    /// of one multishot receive that stays armed (ss-runtime's
    /// `TcpStream::recv_stream`; an ablation knob).
    #[arg(long)]
    pub single_shot_recv: bool,
    /// kcuc, ktuc: each worker's receive pool, COUNT buffers of SIZE bytes
    /// at first, growing to MAX when it runs dry (ss-runtime's
    /// `io::Config::recv_buffers` and `recv_buffers_max`; the runtime's
    /// default is 256,4096,4096; MAX omitted: the runtime's, 4096; MAX at or
    /// below COUNT: a pool that does not grow). This server's requests are
    /// ~1 KiB (912 bytes at the paper's n = 15) and every connection may have
    /// one in flight: a pool with fewer buffers than such connections runs
    /// dry, and each receive that finds it so costs three operations
    /// (`docs/runtime.md`, "Sizing the pool"); so the default starts at 256
    /// buffers of 1 KiB and grows to 4 096 as the connections ask.
    #[arg(long, value_name = "COUNT,SIZE[,MAX]", value_parser = parse_recv_buffers, default_value = "256,1024")]
    pub recv_buffers: RecvBuffers,
    /// kcuc, ktuc: print the runtime's I/O counters (ss-runtime's
    /// `Runtime::io_metrics`: submissions, completions, multishot receives,
    /// the receive pools and how often they ran dry) to stderr as the server
    /// stops.
    #[arg(long)]
    pub io_stats: bool,
    /// kcuc, ktuc: ss-runtime's `Builder::stall_watch` in µs (default: the
    /// runtime's, 1 000 µs; 0 starts no watch).
    #[arg(long, value_name = "US")]
    pub stall_watch_us: Option<u64>,
    /// kcuc, ktuc: ss-runtime's `Builder::nudge_after` in µs (default: the
    /// runtime's, 100 µs; 0 nudges no worker).
    #[arg(long, value_name = "US")]
    pub nudge_us: Option<u64>,
}

/// `--recv-buffers`: a receive pool's starting count, buffer size and
/// ceiling (`None`: the runtime's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvBuffers {
    /// Buffers at first.
    pub count: u16,
    /// Bytes per buffer.
    pub size: u32,
    /// The most it grows to (`None`: the runtime's ceiling).
    pub max: Option<u16>,
}

/// `--recv-buffers COUNT,SIZE[,MAX]` (the runtime checks the shape when it
/// starts).
fn parse_recv_buffers(s: &str) -> Result<RecvBuffers, String> {
    let bad = || format!("{s:?}: give COUNT,SIZE[,MAX], e.g. 4096,1024 or 256,1024,4096");
    let mut parts = s.split(',').map(str::trim);
    let (Some(count), Some(size), max, None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    Ok(RecvBuffers {
        count: count.parse().map_err(|_| bad())?,
        size: size.parse().map_err(|_| bad())?,
        max: max.map(|m| m.parse().map_err(|_| bad())).transpose()?,
    })
}

/// The most priority levels (ss-runtime's executor has 64).
const MAX_LEVELS: u8 = 64;
/// The listen backlog (the kernel caps it at `net.core.somaxconn`); std's 128
/// would drop SYNs when a client opens a thousand connections at once.
const BACKLOG: libc::c_int = 4096;

/// Serves until stdin closes or a termination signal arrives.
///
/// # Errors
/// The address cannot be bound, or the model cannot start (e.g. io_uring unavailable).
pub fn run(args: &ServerArgs) -> anyhow::Result<()> {
    if args.levels == 0 || args.levels > MAX_LEVELS {
        bail!(
            "--levels {} is out of range; give 1 to {MAX_LEVELS}",
            args.levels
        );
    }
    let workers = match args.workers {
        Some(0) => bail!("--workers 0: a model needs at least one worker"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    // Before any thread starts, so that every thread inherits the mask and the
    // signals wait for `sigwait` in `wait_for_stop`.
    let signals = block_stop_signals().context("blocking SIGTERM and SIGINT")?;
    let listener = bind(args.listen)?;
    let addr = listener.local_addr()?;
    let setup = Setup {
        listener,
        workers,
        policy: Policy::new(args.levels),
        idle_spin: args.idle_spin_us.map(Duration::from_micros),
        spin_always: args.spin_always,
        reserve: args.reserve_us.map(Duration::from_micros),
        reserve_always: args.reserve_always,
        hot_wakes: args.hot_wakes,
        single_shot_recv: args.single_shot_recv,
        recv_buffers: args.recv_buffers,
        stall_watch: args.stall_watch_us.map(Duration::from_micros),
        nudge: args.nudge_us.map(Duration::from_micros),
    };
    // Kept until the process exits: the model's runtime and threads.
    let server = match args.model {
        Model::Kcuc => kcuc::start(setup),
        Model::Kcut => kcut::start(setup),
        Model::Ktut => ktut::start(setup),
        Model::Ktuc => ktuc::start(setup),
        Model::Tokio => tokio_rt::start(setup),
        Model::Monoio => monoio_rt::start(setup),
        Model::Ceiling => ceiling::start(setup),
    }
    .with_context(|| format!("starting the {:?} server", args.model))?;
    let mut out = io::stdout().lock();
    writeln!(out, "listening {addr}")?;
    out.flush()?;
    drop(out);
    wait_for_stop(signals);
    if args.io_stats {
        match server.downcast_ref::<ss::Serving>() {
            Some(serving) => serving.report(),
            None => eprintln!(
                "ssbench server: --io-stats: {:?} has no ss-runtime",
                args.model
            ),
        }
    }
    // Exit without tearing the model down: threads blocked in system calls and
    // runtimes holding thousands of connections need not be unwound to stop.
    std::process::exit(0)
}

/// What every model starts from.
pub(crate) struct Setup {
    /// Bound and listening, with a large backlog.
    listener: TcpListener,
    /// `--workers`, for the models that have workers.
    workers: usize,
    /// Who gets which priority.
    policy: Policy,
    /// `--idle-spin-us`, for the ss-runtime models.
    idle_spin: Option<Duration>,
    /// `--spin-always`, for the ss-runtime models.
    spin_always: bool,
    /// `--reserve-us`, for the ss-runtime models.
    reserve: Option<Duration>,
    /// `--reserve-always`, for the ss-runtime models.
    reserve_always: bool,
    /// `--hot-wakes`, for the ss-runtime models.
    hot_wakes: bool,
    /// `--single-shot-recv`, for kcuc.
    single_shot_recv: bool,
    /// `--recv-buffers`, for the ss-runtime models.
    recv_buffers: RecvBuffers,
    /// `--stall-watch-us`, for the ss-runtime models.
    stall_watch: Option<Duration>,
    /// `--nudge-us`, for the ss-runtime models.
    nudge: Option<Duration>,
}

/// What a started model keeps alive until the process exits.
pub(crate) type Running = Box<dyn std::any::Any>;

/// Binds `addr` and listens with [`BACKLOG`].
fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    // SAFETY: `listener` owns this listening socket for the whole call; a second
    // listen(2) only raises its backlog.
    if unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) } != 0 {
        return Err(io::Error::last_os_error()).context("listen(2) with a larger backlog");
    }
    Ok(listener)
}

/// The priority policy (paper §4.2): accept order modulo the levels, or what a
/// Hello asks for, capped.
#[derive(Debug)]
pub(crate) struct Policy {
    levels: u8,
    accepted: AtomicU64,
}

impl Policy {
    fn new(levels: u8) -> Policy {
        Policy {
            levels,
            accepted: AtomicU64::new(0),
        }
    }

    /// The default priority of the next accepted connection.
    pub(crate) fn on_accept(&self) -> u8 {
        let n = self.accepted.fetch_add(1, Ordering::Relaxed);
        // `levels` is at most 64, so the remainder fits a u8.
        (n % u64::from(self.levels)) as u8
    }

    /// The priority granted to a Hello asking for `requested`.
    pub(crate) fn grant(&self, requested: u8) -> u8 {
        requested.min(self.levels - 1)
    }
}

/// Blocks SIGTERM and SIGINT in the calling thread (and so in every thread it
/// starts later), returning the set for `sigwait`.
fn block_stop_signals() -> io::Result<libc::sigset_t> {
    // SAFETY: `set` is a local sigset_t that sigemptyset initialises before
    // sigaddset and pthread_sigmask read it; a null old-set pointer is allowed.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(set)
    }
}

/// Returns when stdin reaches end of file (or fails) or SIGTERM/SIGINT arrives.
fn wait_for_stop(signals: libc::sigset_t) {
    let (tx, rx) = mpsc::channel::<()>();
    let on_signal = tx.clone();
    let spawned = std::thread::Builder::new()
        .name("stop-signal".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: `signals` is an initialised set blocked in every thread;
            // `sig` is a valid place for the signal number.
            unsafe { libc::sigwait(&signals, &mut sig) };
            let _ = on_signal.send(());
        });
    if let Err(e) = spawned {
        eprintln!(
            "ssbench server: cannot watch for signals ({e}); stdin end of file still stops it"
        );
    }
    let spawned = std::thread::Builder::new()
        .name("stop-stdin".into())
        .spawn(move || {
            let mut sink = [0u8; 256];
            let mut stdin = io::stdin().lock();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            let _ = tx.send(());
        });
    if let Err(e) = spawned {
        eprintln!("ssbench server: cannot watch stdin ({e}); only a signal stops it");
    }
    let _ = rx.recv();
}

/// Fails with a clear message if this kernel (or its settings) refuses
/// io_uring, before a model that needs it starts.
fn probe_io_uring() -> anyhow::Result<()> {
    io_uring::IoUring::new(2).map(drop).context(
        "io_uring is unavailable here (kernel too old, or disabled by \
         kernel.io_uring_disabled / a seccomp filter); use --model ktut, ktuc or tokio",
    )
}

#[cfg(test)]
mod tests {
    use super::{parse_recv_buffers, RecvBuffers};

    #[test]
    fn recv_buffers_take_a_count_a_size_and_a_ceiling() {
        let rb = |count, size, max| RecvBuffers { count, size, max };
        assert_eq!(parse_recv_buffers("4096,1024"), Ok(rb(4096, 1024, None)));
        assert_eq!(parse_recv_buffers(" 256 , 4096 "), Ok(rb(256, 4096, None)));
        assert_eq!(
            parse_recv_buffers("256,1024,4096"),
            Ok(rb(256, 1024, Some(4096)))
        );
        for bad in [
            "4096",
            "4096,",
            ",1024",
            "a,b",
            "70000,1024",
            "-1,1024",
            "256,1024,",
            "256,1024,x",
            "256,1024,4096,1",
        ] {
            let e = parse_recv_buffers(bad).unwrap_err();
            assert!(e.contains("COUNT,SIZE[,MAX]"), "{bad}: {e}");
        }
    }
}
