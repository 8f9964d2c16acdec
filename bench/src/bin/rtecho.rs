//! `rtecho`: TCP echo throughput and latency of the SharedScheduler runtime
//! (`ss-runtime`) beside tokio's multi-thread runtime, in the same run.
//!
//! Two echo servers run in this process, each in its own runtime with 2 worker
//! threads and the same logic: an accept loop that spawns one coroutine (task)
//! per connection, which loops receive → send all of what it got, with a 4 KiB
//! buffer. ss-runtime uses its owned-buffer `recv`/`send_all` over io_uring;
//! tokio uses `tokio::net` with `read`/`write_all` over epoll.
//!
//! The load comes from a **separate process** (this binary, hidden `client`
//! subcommand), so the client's CPU time is never inside a server's runtime,
//! and the client is the same program for both servers. For each connection
//! count C it opens C connections to one server and runs a closed loop on each:
//! send a 64-byte message, wait for the whole echo, check every byte, record the
//! round trip in an HDR histogram, repeat, for a fixed time after a warm-up.
//!
//! The report: the machine first, then per C and server the throughput,
//! p50/p99/p99.9/max round trip, errors and CPU use; then a summary judging the
//! targets (throughput ≥ tokio's, p99 ≤ tokio's at every C) from this run's
//! numbers. See `bench/README.md` (section `rtecho`) for fairness and reading.

use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use ss_bench::harness::round_order;
use ss_bench::machine::Machine;
use ss_bench::report::Table;
use ss_bench::stalls::HostStalls;
use ss_runtime::prio;

/// The tokio version linked, from `Cargo.lock` (see `build.rs`).
const TOKIO: &str = env!("SS_BENCH_TOKIO_VERSION");

/// Worker threads of each server's runtime.
const WORKERS: usize = 2;
/// The servers' receive buffer, the same for both.
const BUF: usize = 4096;
/// The client's message size.
const MSG: usize = 64;
/// ss-runtime: the level of the accept loop and of every connection's
/// coroutine. One level for all: tokio has no priorities, so the comparison is
/// of the machinery, not of scheduling policy.
const SERVER_LEVEL: u8 = 1;

/// Up to this many connections the client uses one blocking std thread per
/// connection (the cheapest client: one `write` and one sleeping `read` per
/// message); above it, one tokio `current_thread` runtime (1 024 threads would
/// measure the OS scheduler instead).
const THREAD_CLIENT_MAX: usize = 8;
/// The most connections a point may ask for (a bound on the client's loops).
const MAX_CONNECTIONS: usize = 16_384;
/// Descriptors beyond one per connection either process needs (listeners,
/// io_uring, epoll, eventfds, stdio, the loader).
const FD_MARGIN: usize = 64;
/// A connect, or one message's round trip, taking longer than this is an
/// error: the connection is abandoned (its byte stream is out of step).
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// The client stops opening connections after this long; the rest count as
/// errors.
const CONNECT_BUDGET: Duration = Duration::from_secs(10);
/// A connection's closed loop stops after this many round trips even if its
/// time is not up (a bound; at ~10 µs per round trip 600 s would not reach it).
const MAX_ROUND_TRIPS: u64 = 100_000_000;
/// How long after a point the servers may take to see every connection close.
const DRAIN: Duration = Duration::from_secs(5);
/// The listeners' backlog (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: libc::c_int = 4096;
/// Upper bound on `--rounds`.
const MAX_ROUNDS: u32 = 101;
/// Upper bound on `--duration` and `--warmup`.
const MAX_SECS: f64 = 600.0;
/// Histograms hold round trips of 1 ns ..= 60 s exactly (3 significant digits).
const HIGHEST_NS: u64 = 60_000_000_000;

/// TCP echo throughput and latency: ss-runtime against tokio's multi-thread
/// runtime (2 workers each), one client process, loopback only.
#[derive(Parser, Debug)]
#[command(name = "rtecho", version)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// One short round per point (0.5 s after a 0.25 s warm-up): a smoke run of
    /// a few seconds (CI).
    #[arg(long)]
    quick: bool,
    /// Connection counts to measure, comma-separated.
    #[arg(long, value_name = "C,C,..", value_delimiter = ',', default_values_t = [1, 64, 1024])]
    connections: Vec<usize>,
    /// Seconds measured per point, split evenly over the rounds (default 3, or
    /// 0.5 with --quick).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Seconds of warm-up before each round (default 0.5, or 0.25 with --quick).
    #[arg(long, value_name = "SECS")]
    warmup: Option<f64>,
    /// Rounds per point, each a fresh client process, the servers' order
    /// alternating; the report gives the median round (default 3, or 1 with
    /// --quick).
    #[arg(long, value_name = "N")]
    rounds: Option<u32>,
    /// The ss-runtime server's idle spin in µs (default: the runtime's, 20 µs).
    #[arg(long, value_name = "US")]
    idle_spin_us: Option<u64>,
    /// The ss-runtime server's `Builder::os_yield_after` in µs (default: off);
    /// 20 is the value the runtime's docs measure.
    #[arg(long, value_name = "US")]
    os_yield_us: Option<u64>,
    /// The ss-runtime server's `Builder::nudge_after` in µs (default: the
    /// runtime's, 100 µs; 0 turns nudging off).
    #[arg(long, value_name = "US")]
    nudge_us: Option<u64>,
    /// The ss-runtime server's `Builder::reserve_after` in µs (default: the
    /// runtime's, 10 000 µs; 0 holds no worker in reserve).
    #[arg(long, value_name = "US")]
    reserve_us: Option<u64>,
    /// The ss-runtime server's `Builder::stall_watch` in µs (default: the
    /// runtime's, 1 000 µs; 0 starts no watch).
    #[arg(long, value_name = "US")]
    stall_watch_us: Option<u64>,
    /// The ss-runtime server spins every time a worker idles
    /// (`Builder::adaptive_spin(false)`; default: only while spins pay).
    #[arg(long)]
    spin_always: bool,
    /// The ss-runtime server reads with one receive submitted per read
    /// (`TcpStream::recv`) instead of one multishot receive that stays armed
    /// (`TcpStream::recv_stream`): an ablation knob.
    #[arg(long)]
    single_shot_recv: bool,
    /// Worker threads of the ss-runtime server only (default: 2, as tokio's).
    /// An experiment knob: with 1 the summary no longer compares like with
    /// like, and the header says so.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    ss_workers: Option<u16>,
}

/// The ss-runtime server's settings that differ from the runtime's defaults.
#[derive(Clone, Copy, Debug, Default)]
struct SsTuning {
    idle_spin: Option<Duration>,
    os_yield: Option<Duration>,
    nudge: Option<Duration>,
    reserve: Option<Duration>,
    stall_watch: Option<Duration>,
    spin_always: bool,
    single_shot_recv: bool,
    workers: Option<usize>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The load generator, run by the benchmark as a child process.
    #[command(hide = true)]
    Client {
        /// The echo server.
        #[arg(long)]
        addr: SocketAddr,
        /// Connections to open.
        #[arg(long)]
        connections: usize,
        /// Warm-up, in milliseconds.
        #[arg(long)]
        warmup_ms: u64,
        /// Measured time, in milliseconds.
        #[arg(long)]
        duration_ms: u64,
        /// The benchmark's pid: the client exits if it is not its parent.
        #[arg(long)]
        parent: u32,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.cmd {
        Some(Cmd::Client {
            addr,
            connections,
            warmup_ms,
            duration_ms,
            parent,
        }) => client_main(
            addr,
            connections,
            Duration::from_millis(warmup_ms),
            Duration::from_millis(duration_ms),
            parent,
        ),
        None => {
            let secs = |v: Option<f64>, full: f64, quick: f64, what: &str| -> Result<Duration> {
                let s = v.unwrap_or(if args.quick { quick } else { full });
                if !(s > 0.0 && s <= MAX_SECS) {
                    bail!("--{what} must be more than 0 and at most {MAX_SECS} seconds");
                }
                Ok(Duration::from_secs_f64(s))
            };
            let duration = secs(args.duration, 3.0, 0.5, "duration")?;
            let warmup = secs(args.warmup, 0.5, 0.25, "warmup")?;
            let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 3 });
            if !(1..=MAX_ROUNDS).contains(&rounds) {
                bail!("--rounds takes 1 to {MAX_ROUNDS}");
            }
            let plan = Plan {
                warmup,
                round: duration / rounds,
                rounds,
                quick: args.quick,
            };
            if args.connections.is_empty()
                || args
                    .connections
                    .iter()
                    .any(|&c| c == 0 || c > MAX_CONNECTIONS)
            {
                bail!("--connections takes counts from 1 to {MAX_CONNECTIONS}, e.g. 1,64,1024");
            }
            bench(
                &args.connections,
                plan,
                SsTuning {
                    idle_spin: args.idle_spin_us.map(Duration::from_micros),
                    os_yield: args.os_yield_us.map(Duration::from_micros),
                    nudge: args.nudge_us.map(Duration::from_micros),
                    reserve: args.reserve_us.map(Duration::from_micros),
                    stall_watch: args.stall_watch_us.map(Duration::from_micros),
                    spin_always: args.spin_always,
                    single_shot_recv: args.single_shot_recv,
                    workers: args.ss_workers.map(usize::from),
                },
            )
        }
    }
}

// ---------------------------------------------------------------------------
// The servers
// ---------------------------------------------------------------------------

/// What a server saw, updated by its connections.
#[derive(Debug, Default)]
struct ServerStats {
    /// Connections open now.
    live: AtomicUsize,
    /// Accept, receive or send failures (a peer's orderly close is not one).
    errors: AtomicU64,
}

/// Counts a connection as live until dropped (also when the runtime cancels it).
struct Live(Arc<ServerStats>);

impl Live {
    fn new(stats: &Arc<ServerStats>) -> Self {
        stats.live.fetch_add(1, Ordering::Relaxed);
        Live(stats.clone())
    }

    /// Counts a failed receive or send of this connection.
    fn error(&self) {
        self.0.errors.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// ss-runtime: one connection, receive → send all, until the peer closes.
/// Receives through one multishot receive that stays armed (`recv_stream`):
/// the bytes arrive in buffers of the worker's pool and are copied into the
/// buffer the send owns.
async fn ss_serve(stream: ss_runtime::net::TcpStream, live: Live) {
    let mut incoming = stream.recv_stream();
    let mut buf = Vec::with_capacity(BUF);
    loop {
        match incoming.next().await {
            Ok(got) if got.is_empty() => break,
            Ok(got) => {
                buf.clear();
                buf.extend_from_slice(&got);
            }
            Err(_) => return live.error(),
        }
        match stream.send_all(buf).await {
            (Ok(()), b) => buf = b,
            (Err(_), _) => return live.error(),
        }
    }
}

/// ss-runtime, `--single-shot-recv`: one connection, one receive submitted
/// per read into the buffer the send then owns.
async fn ss_serve_single_shot(stream: ss_runtime::net::TcpStream, live: Live) {
    let mut buf = Vec::with_capacity(BUF);
    loop {
        buf.clear();
        buf = match stream.recv(buf).await {
            (Ok(0), _) => break,
            (Ok(_), b) => b,
            (Err(_), _) => return live.error(),
        };
        match stream.send_all(buf).await {
            (Ok(()), b) => buf = b,
            (Err(_), _) => return live.error(),
        }
    }
}

/// ss-runtime: accepts up to `max_accepts` connections, a coroutine for each.
async fn ss_accept(
    listener: ss_runtime::net::TcpListener,
    stats: Arc<ServerStats>,
    max_accepts: u64,
    single_shot: bool,
) {
    for _ in 0..max_accepts {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let live = Live::new(&stats);
                let spawned = if single_shot {
                    ss_runtime::try_spawn(ss_serve_single_shot(stream, live), prio(SERVER_LEVEL))
                        .map(drop)
                } else {
                    ss_runtime::try_spawn(ss_serve(stream, live), prio(SERVER_LEVEL)).map(drop)
                };
                if spawned.is_err() {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// tokio: one connection, read → write all, until the peer closes.
async fn tokio_serve(mut stream: tokio::net::TcpStream, live: Live) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(_) => return live.error(),
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return live.error();
        }
    }
}

/// tokio: accepts up to `max_accepts` connections, a task for each.
async fn tokio_accept(
    listener: tokio::net::TcpListener,
    stats: Arc<ServerStats>,
    max_accepts: u64,
) {
    for _ in 0..max_accepts {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let live = Live::new(&stats);
                tokio::spawn(tokio_serve(stream, live));
            }
            Err(_) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A running server: its runtime (dropping it stops the server), address and
/// counters.
struct Server {
    name: &'static str,
    addr: SocketAddr,
    stats: Arc<ServerStats>,
    runtime: ServerRuntime,
}

enum ServerRuntime {
    Ss(ss_runtime::Runtime),
    Tokio(tokio::runtime::Runtime),
}

/// Both listeners are made the same way, on an ephemeral loopback port: std's
/// `bind`, then the backlog raised to [`BACKLOG`] (std listens with 128; 1 024
/// connections arriving at once would overflow it, and a dropped handshake
/// costs the client a 1 s retransmission).
fn listener() -> Result<std::net::TcpListener> {
    use std::os::fd::AsRawFd;
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").context("binding a listener on 127.0.0.1:0")?;
    // SAFETY: `l` owns this listening socket for the whole call; listen(2) on a
    // listening socket only changes its backlog.
    if unsafe { libc::listen(l.as_raw_fd(), BACKLOG) } != 0 {
        return Err(std::io::Error::last_os_error()).context("listen(2) with a larger backlog");
    }
    Ok(l)
}

fn start_ss(max_accepts: u64, tuning: SsTuning) -> Result<Server> {
    let std_listener = listener()?;
    let addr = std_listener.local_addr()?;
    let mut builder = ss_runtime::Runtime::builder();
    if let Some(after) = tuning.os_yield {
        builder = builder.os_yield_after(after);
    }
    if let Some(spin) = tuning.idle_spin {
        builder = builder.idle_spin(spin);
    }
    if let Some(after) = tuning.nudge {
        builder = builder.nudge_after(after);
    }
    if let Some(after) = tuning.reserve {
        builder = builder.reserve_after(after);
    }
    if let Some(period) = tuning.stall_watch {
        builder = builder.stall_watch(period);
    }
    if tuning.spin_always {
        builder = builder.adaptive_spin(false);
    }
    let rt = builder
        .workers(tuning.workers.unwrap_or(WORKERS))
        .thread_name("echo-ss")
        .build()
        .context("building the ss-runtime server runtime")?;
    let stats = Arc::new(ServerStats::default());
    let listener = ss_runtime::net::TcpListener::from_std(std_listener);
    rt.spawn(
        ss_accept(
            listener,
            stats.clone(),
            max_accepts,
            tuning.single_shot_recv,
        ),
        prio(SERVER_LEVEL),
    )
    .map_err(|e| anyhow!("spawning the ss-runtime accept loop: {e}"))?;
    Ok(Server {
        name: "ss-runtime",
        addr,
        stats,
        runtime: ServerRuntime::Ss(rt),
    })
}

fn start_tokio(max_accepts: u64) -> Result<Server> {
    let std_listener = listener()?;
    let addr = std_listener.local_addr()?;
    std_listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .thread_name("echo-tokio")
        .enable_all()
        .build()
        .context("building the tokio server runtime")?;
    let listener = {
        let _enter = rt.enter();
        tokio::net::TcpListener::from_std(std_listener)?
    };
    let stats = Arc::new(ServerStats::default());
    rt.spawn(tokio_accept(listener, stats.clone(), max_accepts));
    Ok(Server {
        name: "tokio",
        addr,
        stats,
        runtime: ServerRuntime::Tokio(rt),
    })
}

impl Server {
    /// Stops the server: its runtime cancels every task and joins its threads.
    fn stop(self) {
        match self.runtime {
            ServerRuntime::Ss(rt) => rt.shutdown(),
            ServerRuntime::Tokio(rt) => rt.shutdown_timeout(Duration::from_secs(1)),
        }
    }
}

// ---------------------------------------------------------------------------
// The benchmark (parent process)
// ---------------------------------------------------------------------------

/// What the client measured at one point, as it prints it on its stdout.
#[derive(Clone, Debug, Default, PartialEq)]
struct ClientReport {
    /// `threads` or `tokio-ct`.
    client: String,
    /// Connections open when the clock started.
    connected: u64,
    /// Round trips completed inside the measured window.
    msgs: u64,
    /// Round trips completed in all, warm-up included.
    all_msgs: u64,
    p50_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    max_ns: u64,
    /// Failed connects, timeouts, early closes, wrong bytes.
    errors: u64,
    /// The client's CPU time (user + system) inside the measured window.
    cpu_ns: u64,
    /// How long opening the connections took.
    connect_ns: u64,
}

impl ClientReport {
    const PREFIX: &'static str = "RESULT";
    /// The client's first line, once its connections are open: the warm-up
    /// starts now.
    const READY: &'static str = "READY";

    fn line(&self) -> String {
        format!(
            "{} client={} connected={} msgs={} all_msgs={} p50_ns={} p99_ns={} p999_ns={} \
             max_ns={} errors={} cpu_ns={} connect_ns={}",
            Self::PREFIX,
            self.client,
            self.connected,
            self.msgs,
            self.all_msgs,
            self.p50_ns,
            self.p99_ns,
            self.p999_ns,
            self.max_ns,
            self.errors,
            self.cpu_ns,
            self.connect_ns
        )
    }

    fn parse(out: &str) -> Result<Self> {
        let line = out
            .lines()
            .find(|l| l.starts_with(Self::PREFIX))
            .ok_or_else(|| anyhow!("the client printed no {} line", Self::PREFIX))?;
        let mut r = ClientReport::default();
        for field in line.split_whitespace().skip(1) {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| anyhow!("bad field {field:?} in the client's report"))?;
            let num = || {
                v.parse::<u64>()
                    .with_context(|| format!("bad number in {field:?}"))
            };
            match k {
                "client" => r.client = v.to_owned(),
                "connected" => r.connected = num()?,
                "msgs" => r.msgs = num()?,
                "all_msgs" => r.all_msgs = num()?,
                "p50_ns" => r.p50_ns = num()?,
                "p99_ns" => r.p99_ns = num()?,
                "p999_ns" => r.p999_ns = num()?,
                "max_ns" => r.max_ns = num()?,
                "errors" => r.errors = num()?,
                "cpu_ns" => r.cpu_ns = num()?,
                "connect_ns" => r.connect_ns = num()?,
                _ => bail!("unknown field {k:?} in the client's report"),
            }
        }
        Ok(r)
    }
}

/// One server at one connection count.
#[derive(Debug)]
struct Point {
    client: ClientReport,
    /// Messages per second in the measured window.
    rate: f64,
    /// Server errors during the point.
    server_errors: u64,
    /// CPUs the server process kept busy, on average, in the measured window.
    server_cpus: f64,
    /// CPUs the client process kept busy, on average, in the measured window.
    client_cpus: f64,
}

impl Point {
    fn errors(&self) -> u64 {
        self.client.errors + self.server_errors
    }
}

/// Kills and reaps the client if the benchmark leaves early (error or panic).
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs one client process against `server` and collects the point.
///
/// The client prints `READY` once its connections are open and starts its
/// warm-up; the server's CPU time is sampled from then on at the window's
/// edges (off by the pipe's latency, microseconds). The client samples its own.
fn run_point(server: &Server, c: usize, warmup: Duration, duration: Duration) -> Result<Point> {
    let exe = std::env::current_exe().context("locating this binary to start the client")?;
    let errors0 = server.stats.errors.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut child = Command::new(exe)
        .arg("client")
        .args(["--addr", &server.addr.to_string()])
        .args(["--connections", &c.to_string()])
        .args(["--warmup-ms", &warmup.as_millis().to_string()])
        .args(["--duration-ms", &duration.as_millis().to_string()])
        .args(["--parent", &std::process::id().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the client process")?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut guard = ChildGuard(Some(child));
    // The client's stdout, line by line, through a thread: the waits below
    // then have deadlines. The thread ends at the client's exit (EOF).
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The client's own bounds (connect budget, I/O timeouts, the window) end
    // it well before this; past it, the client is stuck and is killed.
    let deadline = started + CONNECT_BUDGET + warmup + duration + 2 * IO_TIMEOUT + DRAIN;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l == ClientReport::READY => break,
            Ok(l) => out.push(l),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                bail!("the client opened no connections in {left:?}; killed")
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break, // exited early
        }
    }
    std::thread::sleep(warmup);
    let (cpu0, t0) = (cpu_secs(), Instant::now());
    std::thread::sleep(duration);
    let server_cpus = (cpu_secs() - cpu0) / t0.elapsed().as_secs_f64();

    let status = loop {
        let child = guard.0.as_mut().expect("the child is held until reaped");
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            bail!(
                "the client did not finish in {:?}; killed",
                deadline - started
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    guard.0 = None; // reaped
    let _ = reader.join();
    out.extend(lines.try_iter());
    if !status.success() {
        bail!("the client failed ({status})");
    }
    let client = ClientReport::parse(&out.join("\n"))?;

    // Let the server see every connection close before the next point.
    let drain_end = Instant::now() + DRAIN;
    while server.stats.live.load(Ordering::Relaxed) > 0 && Instant::now() < drain_end {
        std::thread::sleep(Duration::from_millis(5));
    }
    let left = server.stats.live.load(Ordering::Relaxed);
    if left > 0 {
        eprintln!(
            "warning: {}: {left} connections still open {DRAIN:?} after the client exited",
            server.name
        );
    }
    Ok(Point {
        rate: client.msgs as f64 / duration.as_secs_f64(),
        server_errors: server.stats.errors.load(Ordering::Relaxed) - errors0,
        server_cpus,
        client_cpus: client.cpu_ns as f64 / duration.as_nanos() as f64,
        client,
    })
}

/// Microseconds, with a precision that suits the size.
fn us(ns: u64) -> String {
    let us = ns as f64 / 1_000.0;
    if us >= 1_000.0 {
        format!("{us:.0}")
    } else {
        format!("{us:.1}")
    }
}

/// How long and how often each point runs.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Before each round's window.
    warmup: Duration,
    /// Each round's measured window.
    round: Duration,
    /// Rounds per point.
    rounds: u32,
    quick: bool,
}

/// One server at one connection count, over its rounds: the median round's
/// numbers (each column's median on its own), the spread of the rates, the
/// worst maximum and the sum of the errors.
#[derive(Debug)]
struct Agg {
    rate: f64,
    rate_min: f64,
    rate_max: f64,
    p50_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    max_ns: u64,
    errors: u64,
    client_errors: u64,
    server_errors: u64,
    server_cpus: f64,
    client_cpus: f64,
    /// The fewest connections any round opened, and the longest it took.
    connected: u64,
    connect_ns: u64,
    rounds: usize,
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

impl Agg {
    /// `None` without a successful round.
    fn of(points: &[Point]) -> Option<Agg> {
        if points.is_empty() {
            return None;
        }
        let col = |f: &dyn Fn(&Point) -> u64| median(points.iter().map(f).collect());
        let colf = |f: &dyn Fn(&Point) -> f64| median(points.iter().map(f).collect());
        let rates = points.iter().map(|p| p.rate);
        Some(Agg {
            rate: colf(&|p| p.rate),
            rate_min: rates.clone().fold(f64::INFINITY, f64::min),
            rate_max: rates.fold(0.0, f64::max),
            p50_ns: col(&|p| p.client.p50_ns),
            p99_ns: col(&|p| p.client.p99_ns),
            p999_ns: col(&|p| p.client.p999_ns),
            max_ns: points.iter().map(|p| p.client.max_ns).max().unwrap_or(0),
            errors: points.iter().map(Point::errors).sum(),
            client_errors: points.iter().map(|p| p.client.errors).sum(),
            server_errors: points.iter().map(|p| p.server_errors).sum(),
            server_cpus: colf(&|p| p.server_cpus),
            client_cpus: colf(&|p| p.client_cpus),
            connected: points.iter().map(|p| p.client.connected).min().unwrap_or(0),
            connect_ns: points
                .iter()
                .map(|p| p.client.connect_ns)
                .max()
                .unwrap_or(0),
            rounds: points.len(),
        })
    }
}

fn bench(connections: &[usize], plan: Plan, tuning: SsTuning) -> Result<()> {
    // First lines: the machine, and how much time it takes from busy threads.
    println!("{}", Machine::detect());
    println!("{}", HostStalls::probe(HostStalls::span(plan.quick)));
    if let Some(after) = tuning.os_yield {
        println!("ss-runtime: os_yield_after({after:?}) (a sched_yield after that long without sleeping)");
    }
    if let Some(after) = tuning.nudge {
        println!("ss-runtime: nudge_after({after:?}) (zero: off)");
    }
    if let Some(after) = tuning.reserve {
        println!("ss-runtime: reserve_after({after:?}) (zero: no worker held in reserve)");
    }
    if let Some(period) = tuning.stall_watch {
        println!("ss-runtime: stall_watch({period:?}) (zero: no watch)");
    }
    if tuning.single_shot_recv {
        println!(
            "ss-runtime: one receive submitted per read (TcpStream::recv), not one \
             multishot receive per connection (recv_stream)"
        );
    }
    let workers = match tuning.workers.filter(|&n| n != WORKERS) {
        Some(n) => {
            println!(
                "ss-runtime: {n} worker(s), tokio {WORKERS}: an experiment, not the \
                 like-for-like comparison the targets below are meant for"
            );
            format!("{n} worker(s) for ss-runtime, {WORKERS} for tokio")
        }
        None => format!("{WORKERS} workers each"),
    };
    println!(
        "servers: ss-runtime (io_uring, owned-buffer recv/send_all, one coroutine per \
         connection at level {SERVER_LEVEL}) and tokio {TOKIO} multi_thread (epoll, \
         read/write_all, one task per connection); {workers}, defaults otherwise; \
         {BUF}-byte buffers; 127.0.0.1, backlog {BACKLOG}"
    );
    println!(
        "client: a separate process; closed loop, {MSG}-byte messages, every echoed byte \
         checked; one blocking thread per connection up to {THREAD_CLIENT_MAX} connections, \
         else one tokio current_thread runtime"
    );
    println!(
        "mode: {}; per point {} round(s) of {:.2} s warm-up + {:.2} s measured, servers \
         alternating; rate = round trips completed in the window / s; median round shown",
        if plan.quick {
            "quick (smoke run)"
        } else {
            "full"
        },
        plan.rounds,
        plan.warmup.as_secs_f64(),
        plan.round.as_secs_f64()
    );
    if cfg!(debug_assertions) {
        println!("WARNING: debug build; the numbers mean nothing (build with --release)");
    }

    let need = connections.iter().max().copied().unwrap_or(1) + FD_MARGIN;
    let nofile = raise_nofile(need as u64).context("reading RLIMIT_NOFILE")?;
    let max_accepts: u64 =
        connections.iter().map(|&c| c as u64).sum::<u64>() * u64::from(plan.rounds);
    let servers = [start_ss(max_accepts, tuning)?, start_tokio(max_accepts)?];

    println!();
    let table = Table::new(&[
        ("conns / server", 17),
        ("msgs/s", 7),
        ("range", 13),
        ("p50 µs", 7),
        ("p99 µs", 7),
        ("p99.9 µs", 8),
        ("max µs", 7),
        ("errors", 6),
        ("srv CPUs", 8),
        ("cli CPUs", 8),
    ]);
    let mut results: Vec<(usize, [Option<Agg>; 2])> = Vec::new();
    for &c in connections {
        if (c + FD_MARGIN) as u64 > nofile {
            println!(
                "  {c:<5} skipped: needs {} descriptors per process, RLIMIT_NOFILE allows {nofile} \
                 (raise the hard limit: ulimit -Hn)",
                c + FD_MARGIN
            );
            continue;
        }
        let mut points: [Vec<Point>; 2] = [Vec::new(), Vec::new()];
        for round in 0..plan.rounds {
            // Alternate which server goes first, so that neither always follows
            // the other's teardown.
            for i in round_order(servers.len(), round as usize) {
                match run_point(&servers[i], c, plan.warmup, plan.round) {
                    Ok(p) => points[i].push(p),
                    Err(e) => println!(
                        "  {c:<5} {:<11}  round {}: FAILED: {e:#}",
                        servers[i].name,
                        round + 1
                    ),
                }
            }
        }
        let k = |v: f64| format!("{:.0}k", v / 1e3);
        let aggs = points.map(|p| Agg::of(&p));
        for (agg, server) in aggs.iter().zip(&servers) {
            let Some(a) = agg else { continue };
            table.row(&[
                format!("{c:<5} {}", server.name),
                format!("{:.0}", a.rate),
                format!("{}-{}", k(a.rate_min), k(a.rate_max)),
                us(a.p50_ns),
                us(a.p99_ns),
                us(a.p999_ns),
                us(a.max_ns),
                a.errors.to_string(),
                format!("{:.2}", a.server_cpus),
                format!("{:.2}", a.client_cpus),
            ]);
            if a.connected < c as u64 || a.errors > 0 || a.connect_ns > 1_000_000_000 {
                println!(
                    "  {:17}  ^ {} of {c} connections opened (slowest {:.2} s); {} client \
                     errors, {} server errors over {} round(s)",
                    "",
                    a.connected,
                    a.connect_ns as f64 / 1e9,
                    a.client_errors,
                    a.server_errors,
                    a.rounds
                );
            }
        }
        results.push((c, aggs));
    }
    for s in servers {
        s.stop();
    }

    println!();
    println!(
        "summary (targets: ss-runtime throughput >= tokio's and p99 <= tokio's at every point)"
    );
    let table = Table::new(&[
        ("conns", 5),
        ("msgs/s ss/tokio", 15),
        ("p99 ss/tokio", 12),
        ("throughput", 10),
        ("p99", 6),
    ]);
    let (mut met, mut judged) = (0, 0);
    for (c, pair) in &results {
        match pair {
            [Some(ss), Some(tk)] if ss.rate > 0.0 && tk.rate > 0.0 => {
                let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
                let (rate_ok, p99_ok) = (ss.rate >= tk.rate, ss.p99_ns <= tk.p99_ns);
                judged += 2;
                met += usize::from(rate_ok) + usize::from(p99_ok);
                let flag = if ss.errors + tk.errors > 0 { "!" } else { "" };
                table.row(&[
                    format!("{c}{flag}"),
                    format!("{:.2}", ss.rate / tk.rate),
                    format!("{:.2}", ss.p99_ns as f64 / tk.p99_ns as f64),
                    verdict(rate_ok).to_owned(),
                    verdict(p99_ok).to_owned(),
                ]);
            }
            _ => table.row(&[
                c.to_string(),
                "-".into(),
                "-".into(),
                "n/a".into(),
                "n/a".into(),
            ]),
        }
    }
    println!(
        "  {met} of {judged} targets met (! = errors at that point: read its numbers with care)"
    );
    // A wrong or missing answer makes the run invalid, not just slow: fail it, so
    // a smoke run in CI catches a server that corrupts or drops echoes.
    let errors: u64 = results
        .iter()
        .flat_map(|(_, pair)| pair.iter().flatten())
        .map(|a| a.errors)
        .sum();
    if errors > 0 {
        bail!("{errors} echo errors (wrong bytes, resets or timeouts): see the table above");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The client (child process)
// ---------------------------------------------------------------------------

/// One connection's (or the whole client's) measurements.
struct Tally {
    hist: Histogram<u64>,
    msgs: u64,
    all_msgs: u64,
    errors: u64,
}

impl Tally {
    fn new() -> Self {
        Tally {
            hist: Histogram::new_with_bounds(1, HIGHEST_NS, 3)
                .expect("1 ns ..= 60 s at 3 significant digits is a valid histogram"),
            msgs: 0,
            all_msgs: 0,
            errors: 0,
        }
    }

    /// Counts a round trip that took `t0 .. t1`; it is measured if it completed
    /// inside the window `warm_end .. end`.
    #[inline]
    fn round_trip(&mut self, t0: Instant, t1: Instant, warm_end: Instant, end: Instant) {
        self.all_msgs += 1;
        if t1 >= warm_end && t1 < end {
            self.msgs += 1;
            let ns = u64::try_from((t1 - t0).as_nanos()).unwrap_or(u64::MAX);
            self.hist.saturating_record(ns.max(1));
        }
    }

    fn merge(&mut self, other: &Tally) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.msgs += other.msgs;
        self.all_msgs += other.all_msgs;
        self.errors += other.errors;
    }

    fn report(&self, client: &str, connected: u64, times: Times) -> ClientReport {
        let q = |q: f64| {
            if self.hist.is_empty() {
                0
            } else {
                self.hist.value_at_quantile(q)
            }
        };
        ClientReport {
            client: client.to_owned(),
            connected,
            msgs: self.msgs,
            all_msgs: self.all_msgs,
            p50_ns: q(0.50),
            p99_ns: q(0.99),
            p999_ns: q(0.999),
            max_ns: self.hist.max(),
            errors: self.errors,
            cpu_ns: times.cpu_ns,
            connect_ns: times.connect_ns,
        }
    }
}

/// The client's own costs.
#[derive(Clone, Copy, Debug, Default)]
struct Times {
    /// CPU time inside the measured window.
    cpu_ns: u64,
    /// Time to open the connections.
    connect_ns: u64,
}

/// Starts the window: announces `READY` (the warm-up starts now), and starts a
/// thread that samples this process's CPU time at the window's edges. Returns
/// the window's edges and the sampler.
fn start_window(
    warmup: Duration,
    duration: Duration,
) -> (Instant, Instant, std::thread::JoinHandle<u64>) {
    let warm_end = Instant::now() + warmup;
    let end = warm_end + duration;
    println!("{}", ClientReport::READY);
    let sampler = std::thread::spawn(move || {
        std::thread::sleep(warm_end.saturating_duration_since(Instant::now()));
        let cpu0 = cpu_secs();
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        ((cpu_secs() - cpu0).max(0.0) * 1e9) as u64
    });
    (warm_end, end, sampler)
}

/// Message `seq` of connection `conn`: different from the one before it and
/// from other connections' messages, so a stale, reordered or crossed echo fails
/// the check.
#[inline]
fn fill(msg: &mut [u8; MSG], conn: usize, seq: u64) {
    let x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((conn as u64) << 40);
    for (i, chunk) in msg.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&(x.wrapping_add(i as u64)).to_le_bytes());
    }
}

fn client_main(
    addr: SocketAddr,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    parent: u32,
) -> Result<()> {
    die_with_parent(parent);
    if !addr.ip().is_loopback() {
        bail!("the client only talks to loopback addresses, not {addr}");
    }
    if connections == 0 || connections > MAX_CONNECTIONS {
        bail!("--connections must be 1 to {MAX_CONNECTIONS}");
    }
    let nofile = raise_nofile((connections + FD_MARGIN) as u64)?;
    if ((connections + FD_MARGIN) as u64) > nofile {
        bail!("{connections} connections need more descriptors than RLIMIT_NOFILE ({nofile})");
    }
    let report = if connections <= THREAD_CLIENT_MAX {
        let (tally, connected, times) = client_threads(addr, connections, warmup, duration);
        tally.report("threads", connected, times)
    } else {
        let (tally, connected, times) = client_tokio(addr, connections, warmup, duration)?;
        tally.report("tokio-ct", connected, times)
    };
    println!("{}", report.line());
    Ok(())
}

/// One blocking thread per connection.
fn client_threads(
    addr: SocketAddr,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> (Tally, u64, Times) {
    let mut total = Tally::new();
    let connect_start = Instant::now();
    let connect_end = connect_start + CONNECT_BUDGET;
    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        if Instant::now() >= connect_end {
            total.errors += 1;
            continue;
        }
        let s = std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT).and_then(|s| {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.set_write_timeout(Some(IO_TIMEOUT))?;
            Ok(s)
        });
        match s {
            Ok(s) => streams.push(s),
            Err(e) => {
                eprintln!("client: connect to {addr}: {e}");
                total.errors += 1;
            }
        }
    }
    let connected = streams.len() as u64;
    let connect_ns = connect_start.elapsed().as_nanos() as u64;
    let (warm_end, end, sampler) = start_window(warmup, duration);
    std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(conn, mut s)| {
                scope.spawn(move || {
                    let mut t = Tally::new();
                    let (mut msg, mut back) = ([0u8; MSG], [0u8; MSG]);
                    for seq in 0..MAX_ROUND_TRIPS {
                        let t0 = Instant::now();
                        if t0 >= end {
                            break;
                        }
                        fill(&mut msg, conn, seq);
                        if let Err(e) = s.write_all(&msg).and_then(|()| s.read_exact(&mut back)) {
                            eprintln!("client: connection {conn}: {e}");
                            t.errors += 1;
                            break;
                        }
                        let t1 = Instant::now();
                        if back != msg {
                            eprintln!("client: connection {conn}: echo differs from message {seq}");
                            t.errors += 1;
                            break;
                        }
                        t.round_trip(t0, t1, warm_end, end);
                    }
                    t
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(t) => total.merge(&t),
                Err(_) => total.errors += 1,
            }
        }
    });
    let cpu_ns = sampler.join().unwrap_or(0);
    (total, connected, Times { cpu_ns, connect_ns })
}

/// All connections on one tokio `current_thread` runtime, a task each.
fn client_tokio(
    addr: SocketAddr,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<(Tally, u64, Times)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the client's runtime")?;
    let out = rt.block_on(async move {
        let mut total = Tally::new();
        let connect_start = Instant::now();
        let connect_end = connect_start + CONNECT_BUDGET;
        let mut streams = Vec::with_capacity(connections);
        for _ in 0..connections {
            if Instant::now() >= connect_end {
                total.errors += 1;
                continue;
            }
            match tokio::time::timeout(IO_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    streams.push(s);
                }
                Ok(Err(e)) => {
                    eprintln!("client: connect to {addr}: {e}");
                    total.errors += 1;
                }
                Err(_) => {
                    eprintln!("client: connect to {addr}: timed out after {IO_TIMEOUT:?}");
                    total.errors += 1;
                }
            }
        }
        let connected = streams.len() as u64;
        let connect_ns = connect_start.elapsed().as_nanos() as u64;
        let (warm_end, end, sampler) = start_window(warmup, duration);
        let tasks: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(conn, mut s)| {
                tokio::spawn(async move {
                    let mut t = Tally::new();
                    let (mut msg, mut back) = ([0u8; MSG], [0u8; MSG]);
                    for seq in 0..MAX_ROUND_TRIPS {
                        let t0 = Instant::now();
                        if t0 >= end {
                            break;
                        }
                        fill(&mut msg, conn, seq);
                        let trip = async {
                            s.write_all(&msg).await?;
                            s.read_exact(&mut back).await.map(|_| ())
                        };
                        match tokio::time::timeout(IO_TIMEOUT, trip).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => {
                                eprintln!("client: connection {conn}: {e}");
                                t.errors += 1;
                                break;
                            }
                            Err(_) => {
                                eprintln!("client: connection {conn}: no echo in {IO_TIMEOUT:?}");
                                t.errors += 1;
                                break;
                            }
                        }
                        let t1 = Instant::now();
                        if back != msg {
                            eprintln!("client: connection {conn}: echo differs from message {seq}");
                            t.errors += 1;
                            break;
                        }
                        t.round_trip(t0, t1, warm_end, end);
                    }
                    t
                })
            })
            .collect();
        for task in tasks {
            match task.await {
                Ok(t) => total.merge(&t),
                Err(_) => total.errors += 1,
            }
        }
        let cpu_ns = sampler.join().unwrap_or(0);
        (total, connected, Times { cpu_ns, connect_ns })
    });
    Ok(out)
}

// ---------------------------------------------------------------------------
// Process plumbing (Linux)
// ---------------------------------------------------------------------------

/// Raises the soft RLIMIT_NOFILE towards `need` (never above the hard limit,
/// never lowering it); returns the soft limit now in force.
fn raise_nofile(need: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into `lim`, which we own and which
    // lives across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    let cur: u64 = lim.rlim_cur;
    if cur >= need {
        return Ok(cur);
    }
    let new = need.min(lim.rlim_max);
    if new <= cur {
        return Ok(cur);
    }
    lim.rlim_cur = new;
    // SAFETY: setrlimit only reads `lim`, a valid `rlimit` we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
    }
    Ok(new)
}

/// The client is killed when the benchmark dies (Ctrl-C, panic, kill), and
/// exits at once if the benchmark is already gone.
fn die_with_parent(parent: u32) {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number by value and touches no
    // memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    }
    if std::os::unix::process::parent_id() != parent {
        eprintln!("client: the benchmark (pid {parent}) is gone; exiting");
        std::process::exit(2);
    }
}

/// User + system CPU seconds of this process, all its threads.
fn cpu_secs() -> f64 {
    // SAFETY: `rusage` is plain integers, for which all-zero bytes are a valid
    // value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one `rusage` into `ru`, which we own.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_report_round_trips_through_its_line() {
        let r = ClientReport {
            client: "tokio-ct".into(),
            connected: 64,
            msgs: 1_000,
            all_msgs: 1_200,
            p50_ns: 10_000,
            p99_ns: 20_000,
            p999_ns: 30_000,
            max_ns: 40_000,
            errors: 1,
            cpu_ns: 500_000_000,
            connect_ns: 3_000_000,
        };
        let out = format!("noise\n{}\n", r.line());
        assert_eq!(ClientReport::parse(&out).unwrap(), r);
    }

    #[test]
    fn messages_differ_between_sequence_numbers_and_connections() {
        let (mut a, mut b, mut c) = ([0; MSG], [0; MSG], [0; MSG]);
        fill(&mut a, 0, 1);
        fill(&mut b, 0, 2);
        fill(&mut c, 1, 1);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn only_round_trips_completing_in_the_window_count() {
        let t = Instant::now();
        let (warm_end, end) = (t + Duration::from_millis(10), t + Duration::from_millis(20));
        let mut tally = Tally::new();
        tally.round_trip(t, t + Duration::from_millis(5), warm_end, end);
        tally.round_trip(t, t + Duration::from_millis(15), warm_end, end);
        tally.round_trip(t, t + Duration::from_millis(25), warm_end, end);
        assert_eq!((tally.msgs, tally.all_msgs), (1, 3));
    }
}
