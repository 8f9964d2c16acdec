//! `ssbench load`: the load generator.
//!
//! It opens C connections to a server of PROTOCOL.md (optionally greeting each
//! with a Hello that asks for priority `i % levels`), waits until every one is
//! established, and then sends 15 × 15 matrices on a fixed schedule:
//!
//! - **closed loop** (the paper's): connection *i* means to send request *k* at
//!   `phase_i + k · interval` (phases spread evenly over one interval) and never
//!   has more than one request outstanding. A request whose time comes while the
//!   previous one is still unanswered goes out as soon as that answer arrives.
//! - **open loop**: Poisson arrivals at a total target rate, split evenly over
//!   the connections; a request goes out at its time whatever is outstanding
//!   (requests pipeline on a connection, answers come back in order).
//!
//! In both, **latency runs from the request's intended send time**, not from the
//! moment it was written, so a server that stalls is charged for every request it
//! delayed (no coordinated omission). How late the client itself was in writing
//! each request is measured separately (`send_lag`: from the moment the request
//! could first go — its intended time, or later if the server held it back, by
//! a closed-loop answer still out or an open-loop socket that took no more bytes —
//! to its write), so a reader can see that the client's own delays are small
//! beside the latencies it reports.
//!
//! **Every answer is checked**: its id, its dimension and every element of
//! C = M × M against the product computed beforehand with
//! [`ss_proto::matrix::square_into`]. A wrong answer, an error Response, a bad
//! frame, an I/O error, an early close and a request unanswered for `--timeout`
//! each end that connection and are counted by kind.
//!
//! ## Why one thread and a hand-written epoll loop
//!
//! The client must hold thousands of connections without being the bottleneck on
//! a 2-CPU machine it shares with the server, and its clock must be finer than the
//! latencies it measures. So it runs on **one thread** (leaving the other CPU to
//! the server, and no locks or cross-thread wake-ups of its own), on `mio`
//! (edge-triggered epoll) with **one `timerfd`** armed to the next send time with
//! nanosecond resolution (timer slack lowered to 1 µs): tokio's timer wheel ticks
//! in milliseconds, which would add up to a millisecond of the client's own delay
//! to latencies of tens of microseconds. Per connection it keeps only a small
//! state; reads go through one shared 64 KiB buffer (a partial frame is carried
//! over per connection), so 16 000 connections cost megabytes, not gigabytes. All
//! requests due on a connection are written with one `write`, all answers that
//! arrived are read with one `read`. The matrices come from a pool of 64 made (and
//! squared) before the clock starts, so checking an answer is one comparison of
//! bytes rather than a second matrix product.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use crate::latency::Latencies;
use ss_proto::{encode, matrix, ClientDecoder, ClientFrame, Dim, Parsed};

/// How requests are timed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One request per connection every `--interval`, at most one outstanding.
    Closed,
    /// Poisson arrivals at `--rate` requests/s over all connections, pipelined.
    Open,
}

/// Arguments of `ssbench load`.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// The server's address.
    #[arg(long)]
    pub addr: SocketAddr,
    /// Connections to open.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Closed loop (the paper's) or open loop (Poisson).
    #[arg(long, value_enum, default_value = "closed")]
    pub mode: Mode,
    /// Closed loop: time between one connection's requests (e.g. `100ms`; `0`:
    /// the next request goes out as soon as the answer is in).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// Open loop: the target rate, requests per second over all connections.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// The measured window (requests are scheduled inside it).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Matrix dimension n (1 to 64; the paper's is 15).
    #[arg(long, default_value_t = 15)]
    pub dim: u16,
    /// Send a Hello asking for priority `i % levels` on connection `i`
    /// (without it, or with 0, no Hello: the server's policy decides, and a
    /// warm-up round precedes the window).
    #[arg(long)]
    pub levels: Option<u8>,
    /// A request unanswered this long ends its connection (counted as a timeout);
    /// also the time allowed to connect and to get every HelloAck.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// A pause before each connection after the first. QEMU's user networking
    /// listens on a forwarded port with a backlog of one, so a connection
    /// made before it accepted the last waits out a 1 s SYN retransmission;
    /// `ssbench qemu` sets 2 ms.
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub connect_pause: Duration,
}

impl LoadArgs {
    /// The paper's closed loop against `addr`: `connections` connections, one
    /// 15 × 15 request each every 100 ms for 5 s, no Hello.
    pub fn paper(addr: SocketAddr, connections: usize) -> Self {
        LoadArgs {
            addr,
            connections,
            mode: Mode::Closed,
            interval: Duration::from_millis(100),
            rate: 1000.0,
            duration: Duration::from_secs(5),
            dim: 15,
            levels: None,
            timeout: Duration::from_secs(5),
            json: false,
            connect_pause: Duration::ZERO,
        }
    }
}

/// Parses `250ms`, `5s`, `1.5s`, `800us`, `0`; a bare number is seconds.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(v) = s.strip_suffix("ms") {
        (v, 1e-3)
    } else if let Some(v) = s.strip_suffix("us").or_else(|| s.strip_suffix("µs")) {
        (v, 1e-6)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; write e.g. 100ms, 5s, 1.5s or 800us"))?;
    if !v.is_finite() || v < 0.0 || v * scale > 86_400.0 {
        return Err(format!("`{s}` is out of range: 0 to one day"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// `ssbench load`: runs the load and prints its report (text or `--json`).
///
/// # Errors
/// Bad arguments, or the client's own setup failed (not the server's answers:
/// those are counted in the report).
pub fn main(args: &LoadArgs) -> Result<()> {
    raise_nofile(args.connections as u64 + 64)?;
    let report = run(args)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", crate::machine::Machine::detect());
        print!("{}", report.text());
    }
    Ok(())
}

/// Counts of what happened to requests and connections in one run.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Connections established (and greeted, with `--levels`).
    pub connected: u64,
    /// Connections that could not be established (or got no HelloAck).
    pub connect_errors: u64,
    /// Requests made and queued to be written (one whose connection ended
    /// before its bytes went out counts too).
    pub sent: u64,
    /// Answers checked and right.
    pub verified: u64,
    /// Of those, the ones that arrived inside the measured window.
    pub in_window: u64,
    /// Answers with a wrong id, dimension or element.
    pub wrong_answers: u64,
    /// Error Responses (the server refused a request).
    pub refused: u64,
    /// Frames the protocol does not allow.
    pub protocol_errors: u64,
    /// Read or write errors (e.g. a reset).
    pub io_errors: u64,
    /// Connections the server closed during the run (servers are stopped only
    /// after the load, so any close is early).
    pub closed: u64,
    /// Requests unanswered when their connection's oldest one had waited
    /// `--timeout` past its intended time (all of that connection's
    /// outstanding requests: it ends), or when the run ended.
    pub timeouts: u64,
    /// Requests due inside the window that never went out (a closed-loop
    /// connection still waiting for an earlier answer when the run ended, or a
    /// connection already dead).
    pub unsent: u64,
    /// Requests outstanding on a connection that ended for another reason
    /// than a timeout (a wrong answer, a refusal, a protocol or I/O error, a
    /// close): never answered. Counted apart, not as errors: the failure
    /// that ended the connection is the error, counted once above. With it,
    /// every request sent is accounted for: `sent` = `verified` +
    /// `wrong_answers` + `timeouts` + `lost` + the refused requests (a
    /// refusal or a wrong answer answers one request; a protocol error's frame
    /// answered none, so they are all lost; `refused` also counts refused
    /// Hellos, which are no requests).
    pub lost: u64,
}

impl Counts {
    /// Every failure, of any kind (not `unsent`, which follows from the others
    /// or from a slow server).
    pub fn errors(&self) -> u64 {
        self.connect_errors
            + self.wrong_answers
            + self.refused
            + self.protocol_errors
            + self.io_errors
            + self.closed
            + self.timeouts
    }

    /// Whether nothing failed and every answer was right.
    pub fn clean(&self) -> bool {
        self.errors() == 0
    }

    /// The failures by kind: `N errors (wrong …, refused …, …)`.
    pub fn breakdown(&self) -> String {
        format!(
            "{} errors (wrong {}, refused {}, protocol {}, io {}, closed {}, timeouts {}, connect {})",
            self.errors(),
            self.wrong_answers,
            self.refused,
            self.protocol_errors,
            self.io_errors,
            self.closed,
            self.timeouts,
            self.connect_errors
        )
    }

    /// What happened since `before` (field by field).
    fn since(&self, before: &Counts) -> Counts {
        Counts {
            connected: self.connected - before.connected,
            connect_errors: self.connect_errors - before.connect_errors,
            sent: self.sent - before.sent,
            verified: self.verified - before.verified,
            in_window: self.in_window - before.in_window,
            wrong_answers: self.wrong_answers - before.wrong_answers,
            refused: self.refused - before.refused,
            protocol_errors: self.protocol_errors - before.protocol_errors,
            io_errors: self.io_errors - before.io_errors,
            closed: self.closed - before.closed,
            timeouts: self.timeouts - before.timeouts,
            unsent: self.unsent - before.unsent,
            lost: self.lost - before.lost,
        }
    }
}

/// A latency distribution, in microseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LatencyStats {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// The slowest.
    pub max_us: f64,
    /// The distribution as (latency µs, fraction of samples at or below),
    /// at fixed quantiles; empty where not wanted.
    pub cdf: Vec<(f64, f64)>,
}

impl LatencyStats {
    /// The median, µs.
    pub fn p50(&self) -> f64 {
        self.p50_us
    }

    /// The 99th percentile, µs.
    pub fn p99(&self) -> f64 {
        self.p99_us
    }
}

/// The quantiles the CDF is sampled at: dense in the tail.
const CDF_QUANTILES: [f64; 24] = [
    0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99,
    0.995, 0.998, 0.999, 0.9995, 0.9999, 0.99999, 1.0,
];

/// Summarises `h` as the report needs it (with its CDF if `cdf`).
fn stats(h: &Latencies, cdf: bool) -> LatencyStats {
    if h.is_empty() {
        return LatencyStats::default();
    }
    LatencyStats {
        count: h.len(),
        mean_us: h.mean_us(),
        p50_us: h.quantile_us(0.5),
        p99_us: h.quantile_us(0.99),
        p999_us: h.quantile_us(0.999),
        max_us: h.max_us(),
        cdf: if cdf {
            CDF_QUANTILES
                .iter()
                .map(|&q| (h.quantile_us(q), q))
                .collect()
        } else {
            Vec::new()
        },
    }
}

/// The answers of the connections at one granted priority.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GroupReport {
    /// The priority the server granted (`None`: no Hello was sent).
    pub priority: Option<u8>,
    /// Connections in the group.
    pub connections: u64,
    /// Verified answers per second inside the window.
    pub throughput: f64,
    /// Latency from intended send time to the verified answer.
    pub latency: LatencyStats,
}

/// What one run measured.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LoadReport {
    /// Closed or open loop.
    pub mode: Mode,
    /// Connections asked for.
    pub connections: usize,
    /// The measured window, seconds.
    pub duration_s: f64,
    /// Closed loop: the interval, ms.
    pub interval_ms: Option<f64>,
    /// Open loop: the target rate, requests/s.
    pub rate: Option<f64>,
    /// Matrix dimension.
    pub dim: u16,
    /// What happened.
    pub counts: Counts,
    /// Verified answers per second inside the window, all connections.
    pub throughput: f64,
    /// Latency of every verified answer.
    pub latency: LatencyStats,
    /// Per granted priority, most important first.
    pub groups: Vec<GroupReport>,
    /// How late the client queued each request after the moment it could
    /// first go (its intended time, or the arrival of the answer a closed-loop
    /// connection awaited, or the socket taking bytes held back): not latency,
    /// the client's own delay, which must stay small beside it.
    pub send_lag: LatencyStats,
    /// CPUs the client kept busy during the run (user + system time / wall).
    pub client_cpus: f64,
    /// Without Hello: how long the warm-up round took — one verified answer on
    /// every connection, before the clock starts — in ms (`None` with Hello,
    /// whose HelloAck is that round trip). It shows how fast the server took on
    /// a burst of new connections, which the window then leaves out.
    pub warmup_ms: Option<f64>,
}

impl LoadReport {
    /// The report as aligned text lines.
    pub fn text(&self) -> String {
        use crate::latency::us;
        let c = &self.counts;
        let mut s = String::new();
        let schedule = match self.mode {
            Mode::Closed => format!(
                "closed loop, every {} ms",
                self.interval_ms.unwrap_or_default()
            ),
            Mode::Open => format!("open loop, {} req/s", self.rate.unwrap_or_default()),
        };
        s += &format!(
            "load: {} connections, {schedule}, {} s, {n}x{n}\n",
            self.connections,
            self.duration_s,
            n = self.dim
        );
        s += &format!(
            "  connected {} | sent {} | verified {} ({} in window) | {} | unsent {} | lost {}\n",
            c.connected,
            c.sent,
            c.verified,
            c.in_window,
            c.breakdown(),
            c.unsent,
            c.lost
        );
        if let Some(ms) = self.warmup_ms {
            s += &format!(
                "  warm-up: every connection's first answer within {ms:.1} ms (before the window)\n"
            );
        }
        let line = |name: &str, tput: f64, l: &LatencyStats| {
            format!(
                "  {name:<8} {tput:>10.1} resp/s  mean {:>8} µs  p50 {:>8}  p99 {:>8}  p99.9 {:>8}  max {:>8}  ({} samples)\n",
                us(l.mean_us),
                us(l.p50_us),
                us(l.p99_us),
                us(l.p999_us),
                us(l.max_us),
                l.count
            )
        };
        s += &line("all", self.throughput, &self.latency);
        for g in &self.groups {
            let name = g
                .priority
                .map_or_else(|| "-".to_owned(), |p| format!("prio {p}"));
            s += &line(&name, g.throughput, &g.latency);
        }
        s += &format!(
            "  client: send lag p99 {} µs, max {} µs; {:.2} CPUs busy\n",
            us(self.send_lag.p99_us),
            us(self.send_lag.max_us),
            self.client_cpus
        );
        s
    }
}

/// Runs one load as `args` says and returns what it measured.
///
/// # Errors
/// Bad arguments or a failure of the client's own machinery (epoll, timerfd);
/// everything the server does is counted in the report instead.
pub fn run(args: &LoadArgs) -> Result<LoadReport> {
    run_with(args, || {})
}

/// [`run`], calling `started` once every connection is up and greeted, just
/// before the measured window opens (e.g. to start measuring the server's CPU).
///
/// # Errors
/// As [`run`].
pub fn run_with(args: &LoadArgs, started: impl FnOnce()) -> Result<LoadReport> {
    let dim = Dim::new(args.dim).map_err(|e| anyhow::anyhow!("--dim {}: {e}", args.dim))?;
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if args.mode == Mode::Open && !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be a positive number of requests per second");
    }
    if args.mode == Mode::Open && args.rate > MAX_RATE {
        bail!(
            "--rate {}: at most {MAX_RATE} requests per second (one client thread sends \
             ~300 000 here)",
            args.rate
        );
    }
    let mut engine = Engine::new(dim)?;
    engine.connect(
        args.addr,
        args.connections,
        args.levels,
        args.timeout,
        args.connect_pause,
    );
    engine.greet(args.timeout)?;
    // Without Hello nothing has yet shown that the server took the connections
    // on (they may still wait in its accept backlog): one answer on each first.
    // `--levels 0` sends no Hello either (see `connect`), so it warms up too.
    let warmup_ms = match args.levels {
        Some(l) if l > 0 => None,
        _ => Some(engine.warm_up(args.timeout)?),
    };
    // CPU time from here: the run, not the connecting.
    started();
    let cpu0 = cpu_time();
    let wall0 = Instant::now();
    let schedule = match args.mode {
        Mode::Closed => Schedule::Closed {
            interval: args.interval,
        },
        Mode::Open => Schedule::Open {
            per_conn_rate: args.rate / engine.live().max(1) as f64,
        },
    };
    engine.run(schedule, args.duration, args.timeout)?;
    let cpus = (cpu_time() - cpu0) / wall0.elapsed().as_secs_f64().max(1e-9);
    Ok(engine.report(args, cpus, warmup_ms))
}

/// Result of [`hold`]: how many connections a server held, each answering.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct HoldReport {
    /// The most connections open at once with every one answering right.
    pub held: u64,
    /// The count at which something failed (`None`: stopped at the cap).
    pub failed_at: Option<u64>,
    /// What failed.
    pub reason: String,
    /// Requests verified over the whole ramp.
    pub verified: u64,
    /// Wrong answers over the whole ramp (never expected, whatever the limit).
    pub wrong_answers: u64,
}

/// Ramps the number of open connections to `addr` up to `cap`, growing by an
/// eighth (at least `min_step`) per step; after each step every open connection
/// sends one request and must get the right answer within `timeout`.
/// `alive` is asked after each step (e.g. whether the server process still
/// runs). Stops at the first failure.
///
/// # Errors
/// Only the client's own machinery failing.
pub fn hold(
    addr: SocketAddr,
    cap: u64,
    min_step: u64,
    timeout: Duration,
    connect_pause: Duration,
    mut alive: impl FnMut() -> bool,
) -> Result<HoldReport> {
    raise_nofile(cap + 64)?;
    let mut engine = Engine::new(Dim::PAPER)?;
    let mut out = HoldReport::default();
    loop {
        let have = engine.conns.len() as u64;
        if have >= cap {
            out.reason = format!("reached the cap of {cap} connections");
            break;
        }
        let want = (have + (have / 8).max(min_step)).min(cap);
        engine.connect(addr, (want - have) as usize, None, timeout, connect_pause);
        let failure = if engine.counts.connect_errors > 0 {
            Some("a connection could not be established".to_owned())
        } else {
            engine.round(timeout)?
        };
        let failure = failure.or_else(|| (!alive()).then(|| "the server exited".to_owned()));
        out.verified = engine.counts.verified;
        out.wrong_answers = engine.counts.wrong_answers;
        if let Some(reason) = failure {
            let reason = if alive() {
                reason
            } else {
                format!("{reason} (the server exited)")
            };
            out.failed_at = Some(want);
            out.reason = reason;
            break;
        }
        out.held = want;
    }
    Ok(out)
}

/// When requests are due.
#[derive(Clone, Copy, Debug)]
enum Schedule {
    Closed { interval: Duration },
    Open { per_conn_rate: f64 },
}

/// A request written and not yet answered.
#[derive(Clone, Copy, Debug)]
struct Pending {
    id: u64,
    /// Pool index of its matrix.
    matrix: usize,
    /// Intended send time, ns since the window opened (or since the round began).
    intended: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hello sent, HelloAck awaited.
    Greeting,
    Running,
    Dead,
}

/// One connection's state.
struct Conn {
    stream: TcpStream,
    state: State,
    /// Priority granted.
    granted: Option<u8>,
    decoder: ClientDecoder,
    /// Bytes not yet written.
    out: Vec<u8>,
    /// A partial frame carried over between reads.
    carry: Vec<u8>,
    inflight: VecDeque<Pending>,
    /// Requests sent so far (also the next request's index).
    seq: u64,
    /// The next request's intended time (ns), if one is scheduled.
    next_due: Option<u64>,
    /// When the last verified answer was read (ns): a closed-loop request
    /// whose time came while it was awaited could go no earlier.
    answered_at: u64,
    /// When the socket last took enough of the bytes queued beyond `OUT_CAP`
    /// for requests to be queued again (ns): an open-loop request held back
    /// could go no earlier.
    drained_at: u64,
    /// Pseudo-random state for Poisson gaps.
    rng: u64,
    /// Index into the per-group histograms.
    group: usize,
}

/// The matrices requests carry, made and squared before the clock starts.
struct Pool {
    dim: Dim,
    matrices: Vec<Vec<u32>>,
    /// C = M × M of each, little-endian, as the wire carries it.
    squares: Vec<Vec<u8>>,
}

/// Distinct matrices in the pool.
const POOL: usize = 64;

impl Pool {
    fn new(dim: Dim) -> Result<Self> {
        let mut rng = 0x5353_6265_6e63_6821u64;
        let mut matrices = Vec::with_capacity(POOL);
        let mut squares = Vec::with_capacity(POOL);
        for _ in 0..POOL {
            let m: Vec<u32> = (0..dim.elements())
                .map(|_| next_u64(&mut rng) as u32)
                .collect();
            let mut c = vec![0u32; dim.elements()];
            matrix::square_into(dim, m.as_slice(), &mut c)?;
            squares.push(c.iter().flat_map(|v| v.to_le_bytes()).collect());
            matrices.push(m);
        }
        Ok(Pool {
            dim,
            matrices,
            squares,
        })
    }
}

/// splitmix64: a small, good enough generator for matrices and Poisson gaps.
fn next_u64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An exponential gap with mean `1 / rate` seconds, in ns.
fn exp_gap_ns(state: &mut u64, rate: f64) -> u64 {
    // A uniform in (0, 1]: never 0, so the logarithm is finite.
    let u = ((next_u64(state) >> 11) + 1) as f64 / (1u64 << 53) as f64;
    // The cast saturates (a tiny rate: no next request); at least 1 ns, so
    // a schedule always moves on.
    ((-u.ln() / rate * 1e9) as u64).max(1)
}

/// The highest `--rate` taken: 30 × what the client sends here, and low
/// enough that walking a window's schedule (the unsent count) stays short.
const MAX_RATE: f64 = 10_000_000.0;

/// Bytes a connection may queue in the client beyond what its socket took; an
/// open-loop connection whose server stops reading holds its due requests back
/// (still timed from their intended send times) instead of growing without bound.
const OUT_CAP: usize = 256 * 1024;

/// The token of the timerfd; connections use their index.
const TIMER: Token = Token(usize::MAX);

/// The client: connections, their poller, the timer and the tallies.
struct Engine {
    poll: Poll,
    events: Events,
    timer: OwnedFd,
    conns: Vec<Conn>,
    pool: Pool,
    scratch: Vec<u8>,
    counts: Counts,
    /// Group key (granted priority) → index into `hists`.
    groups: BTreeMap<Option<u8>, usize>,
    hists: Vec<Latencies>,
    group_conns: Vec<u64>,
    group_in_window: Vec<u64>,
    lag: Latencies,
    /// The window's origin, and its length in ns.
    origin: Instant,
    window_ns: u64,
    timers: BinaryHeap<Reverse<(u64, usize)>>,
}

impl Engine {
    fn new(dim: Dim) -> Result<Self> {
        // SAFETY: timerfd_create takes two integer flags and returns a new
        // descriptor or -1; no memory is passed.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("timerfd_create");
        }
        // SAFETY: `fd` was just returned by timerfd_create and is owned by no one else.
        let timer = unsafe { OwnedFd::from_raw_fd(fd) };
        // 1 µs of timer slack instead of the default 50 µs: send times are what
        // latencies are measured from. PR_SET_TIMERSLACK takes a value, no memory.
        // SAFETY: prctl with PR_SET_TIMERSLACK reads only its integer argument.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong) };
        let poll = Poll::new().context("creating the epoll instance")?;
        poll.registry()
            .register(&mut SourceFd(&timer.as_raw_fd()), TIMER, Interest::READABLE)
            .context("registering the timerfd")?;
        Ok(Engine {
            poll,
            events: Events::with_capacity(1024),
            timer,
            conns: Vec::new(),
            pool: Pool::new(dim)?,
            scratch: vec![0; 64 * 1024],
            counts: Counts::default(),
            groups: BTreeMap::new(),
            hists: Vec::new(),
            group_conns: Vec::new(),
            group_in_window: Vec::new(),
            lag: Latencies::new(),
            origin: Instant::now(),
            window_ns: 0,
            timers: BinaryHeap::new(),
        })
    }

    fn live(&self) -> usize {
        self.conns.iter().filter(|c| c.state != State::Dead).count()
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Arms the timerfd to fire `at` ns after the origin (at once if past).
    fn arm(&self, at: u64) -> Result<()> {
        let delta = at.saturating_sub(self.now()).max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (delta / 1_000_000_000) as libc::time_t,
                tv_nsec: (delta % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: `self.timer` is a timerfd we own; `spec` is a valid itimerspec
        // read during the call; the old value pointer may be null.
        let rc = unsafe {
            libc::timerfd_settime(self.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).context("timerfd_settime");
        }
        Ok(())
    }

    /// Consumes the timer's expiry count so that its next expiry is a new edge.
    fn drain_timer(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into `buf`, which is 8 bytes long; the
        // timerfd is non-blocking, so an unexpired timer returns EAGAIN.
        unsafe { libc::read(self.timer.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }

    /// Opens `n` more connections, one after another (a burst of connects
    /// overflows a server's accept backlog and costs 1 s SYN retransmissions).
    fn connect(
        &mut self,
        addr: SocketAddr,
        n: usize,
        levels: Option<u8>,
        timeout: Duration,
        pause: Duration,
    ) {
        for _ in 0..n {
            let i = self.conns.len();
            if i > 0 && !pause.is_zero() {
                std::thread::sleep(pause);
            }
            let stream = match StdTcpStream::connect_timeout(&addr, timeout)
                .and_then(|s| s.set_nodelay(true).map(|()| s))
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
            {
                Ok(s) => s,
                Err(_) => {
                    self.counts.connect_errors += 1;
                    continue;
                }
            };
            let mut stream = TcpStream::from_std(stream);
            if self
                .poll
                .registry()
                .register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                self.counts.connect_errors += 1;
                continue;
            }
            let asked = levels
                .filter(|&l| l > 0)
                .map(|l| (i % usize::from(l)) as u8);
            let mut out = Vec::new();
            let decoder = match asked {
                Some(p) => {
                    out.resize(encode::hello_len(), 0);
                    // The buffer is exactly hello_len() long.
                    let _ = encode::encode_hello(p, &mut out);
                    ClientDecoder::after_hello()
                }
                None => ClientDecoder::new(),
            };
            self.conns.push(Conn {
                stream,
                state: if asked.is_some() {
                    State::Greeting
                } else {
                    State::Running
                },
                granted: None,
                decoder,
                out,
                carry: Vec::new(),
                inflight: VecDeque::new(),
                seq: 0,
                next_due: None,
                answered_at: 0,
                drained_at: 0,
                rng: 0x853c_49e6_748f_ea9b ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                group: 0,
            });
            self.flush(i);
        }
    }

    /// Waits until every greeting connection has its HelloAck (or `timeout`),
    /// then counts the live connections into their groups.
    fn greet(&mut self, timeout: Duration) -> Result<()> {
        let deadline = self.now() + timeout.as_nanos() as u64;
        while self.conns.iter().any(|c| c.state == State::Greeting) && self.now() < deadline {
            self.arm(deadline)?;
            self.wait()?;
        }
        for i in 0..self.conns.len() {
            if self.conns[i].state == State::Greeting {
                // Deregistered and shut, not only marked: a ramp of many
                // connections must not keep the sockets of the unanswered.
                self.kill(i);
                self.counts.connect_errors += 1;
            }
            let c = &mut self.conns[i];
            if c.state == State::Running {
                let key = c.granted;
                let next = self.hists.len();
                let g = *self.groups.entry(key).or_insert(next);
                if g == next {
                    self.hists.push(Latencies::new());
                    self.group_conns.push(0);
                    self.group_in_window.push(0);
                }
                self.group_conns[g] += 1;
                self.conns[i].group = g;
                self.counts.connected += 1;
            }
        }
        Ok(())
    }

    /// One epoll wait and the handling of every event it returned.
    fn wait(&mut self) -> Result<()> {
        match self.poll.poll(&mut self.events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e).context("epoll_wait"),
        }
        let ready: Vec<(Token, bool, bool)> = self
            .events
            .iter()
            .map(|e| {
                (
                    e.token(),
                    e.is_readable() || e.is_read_closed() || e.is_error(),
                    e.is_writable(),
                )
            })
            .collect();
        for (token, readable, writable) in ready {
            if token == TIMER {
                self.drain_timer();
                continue;
            }
            let i = token.0;
            if writable {
                self.flush(i);
            }
            if readable {
                self.receive(i);
            }
        }
        Ok(())
    }

    /// Writes what connection `i` has pending, until done or the socket is full.
    fn flush(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.state == State::Dead {
            return;
        }
        let capped = c.out.len() >= OUT_CAP;
        let mut done = 0;
        while done < c.out.len() {
            match c.stream.write(&c.out[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.counts.io_errors += 1;
                    self.kill(i);
                    return;
                }
            }
        }
        c.out.drain(..done);
        if capped && c.out.len() < OUT_CAP {
            // Requests held back by the cap may be queued from now on.
            c.drained_at = self.origin.elapsed().as_nanos() as u64;
        }
    }

    /// Ends connection `i`: its outstanding requests count as lost with it
    /// (a caller that counted them otherwise, as timeouts, clears them first).
    fn kill(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.state == State::Dead {
            return;
        }
        // `next_due` stays: what was still due is counted as unsent at the end.
        c.state = State::Dead;
        self.counts.lost += c.inflight.len() as u64;
        c.inflight.clear();
        c.out = Vec::new();
        c.carry = Vec::new();
        let _ = self.poll.registry().deregister(&mut c.stream);
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Reads everything that arrived on connection `i` and checks each frame.
    fn receive(&mut self, i: usize) {
        loop {
            if self.conns[i].state == State::Dead {
                return;
            }
            let n = match self.conns[i].stream.read(&mut self.scratch) {
                Ok(0) => {
                    // Servers are stopped only after the load: any close is early.
                    self.counts.closed += 1;
                    self.kill(i);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.counts.io_errors += 1;
                    self.kill(i);
                    return;
                }
            };
            let now = self.now();
            // Decode from the carried-over partial frame plus what came, or
            // straight from the scratch buffer when nothing was carried.
            let mut carry = std::mem::take(&mut self.conns[i].carry);
            let mut scratch = std::mem::take(&mut self.scratch);
            let buf: &[u8] = if carry.is_empty() {
                &scratch[..n]
            } else {
                carry.extend_from_slice(&scratch[..n]);
                &carry
            };
            let used = self.frames(i, buf, now);
            let rest = buf.get(used..).unwrap_or_default().to_vec();
            carry.clear();
            carry.extend_from_slice(&rest);
            scratch.resize(64 * 1024, 0);
            self.scratch = scratch;
            if self.conns[i].state != State::Dead {
                self.conns[i].carry = carry;
            }
        }
    }

    /// Handles the complete frames at the start of `buf`; returns the bytes used.
    fn frames(&mut self, i: usize, mut buf: &[u8], now: u64) -> usize {
        let mut used = 0;
        loop {
            let c = &mut self.conns[i];
            let parsed = c.decoder.decode(buf);
            let (frame, consumed) = match parsed {
                Ok(Parsed::Complete { frame, consumed }) => (frame, consumed),
                Ok(Parsed::Incomplete { .. }) => return used,
                Err(_) => {
                    self.counts.protocol_errors += 1;
                    self.kill(i);
                    return used;
                }
            };
            match frame {
                ClientFrame::HelloAck(ack) => {
                    c.granted = Some(ack.priority);
                    c.state = State::Running;
                }
                ClientFrame::Response(resp) if c.state == State::Greeting => {
                    // The server refused the Hello (an error Response in
                    // place of the HelloAck): refused, not a broken protocol.
                    if resp.result.is_err() {
                        self.counts.refused += 1;
                    } else {
                        self.counts.protocol_errors += 1;
                    }
                    self.kill(i);
                    return used;
                }
                ClientFrame::Response(resp) => {
                    let Some(p) = c.inflight.pop_front() else {
                        // An answer to nothing: the protocol's order is broken.
                        self.counts.protocol_errors += 1;
                        self.kill(i);
                        return used;
                    };
                    let right = match resp.result {
                        Ok(view) => {
                            resp.id == p.id
                                && view.dim() == self.pool.dim
                                && view.as_le_bytes() == self.pool.squares[p.matrix].as_slice()
                        }
                        Err(_) => {
                            self.counts.refused += 1;
                            self.kill(i);
                            return used;
                        }
                    };
                    if !right {
                        self.counts.wrong_answers += 1;
                        self.kill(i);
                        return used;
                    }
                    self.counts.verified += 1;
                    c.answered_at = now;
                    let g = c.group;
                    if now <= self.window_ns {
                        self.counts.in_window += 1;
                        if let Some(w) = self.group_in_window.get_mut(g) {
                            *w += 1;
                        }
                    }
                    if let Some(h) = self.hists.get_mut(g) {
                        h.record(now.saturating_sub(p.intended));
                    }
                }
            }
            used += consumed;
            buf = buf.get(consumed..).unwrap_or_default();
        }
    }

    /// Appends request number `seq` of connection `i`, intended at `intended`.
    fn enqueue(&mut self, i: usize, intended: u64) {
        let c = &mut self.conns[i];
        let id = ((i as u64) << 40) | c.seq;
        let m = (i + c.seq as usize) % POOL;
        c.seq += 1;
        let dim = self.pool.dim;
        let start = c.out.len();
        c.out.resize(start + encode::request_len(dim), 0);
        // The slice is exactly request_len(dim) long and the matrix has dim² elements.
        let _ = encode::encode_request(
            id,
            dim,
            self.pool.matrices[m].as_slice(),
            &mut c.out[start..],
        );
        c.inflight.push_back(Pending {
            id,
            matrix: m,
            intended,
        });
        self.counts.sent += 1;
    }

    /// Sends what is due on connection `i` at `now` (the clock read just
    /// before, not earlier: it is also the send time of the client's lag) and
    /// schedules what is next.
    ///
    /// Every request sent records the client's **send lag**: how long after it
    /// could first go it was queued. It could go at its intended time, unless
    /// the server held it back: a closed-loop connection still awaiting an
    /// answer (then from that answer's arrival), an open-loop one whose socket
    /// stopped taking bytes (then from the socket taking them again).
    fn service(&mut self, i: usize, now: u64, schedule: Schedule) {
        let mut wrote = false;
        loop {
            let c = &self.conns[i];
            let Some(due) = c.next_due else { break };
            if c.state != State::Running || due > now {
                break;
            }
            if c.out.len() >= OUT_CAP {
                // The server is not reading: write what is queued first. If the
                // socket takes it all, go on; if not, its next writable edge
                // brings us back. Latency still runs from each intended time.
                self.flush(i);
                wrote = false;
                if self.conns[i].out.len() >= OUT_CAP || self.conns[i].state != State::Running {
                    break;
                }
                continue;
            }
            if matches!(schedule, Schedule::Closed { .. }) && !c.inflight.is_empty() {
                break;
            }
            // The earliest moment this request could have gone out.
            let free = match schedule {
                Schedule::Closed { .. } => c.answered_at,
                Schedule::Open { .. } => c.drained_at,
            };
            let could = due.max(free);
            self.lag.record(now.saturating_sub(could));
            // Back to back (interval 0): each request is meant for the moment
            // the previous answer arrived.
            let back_to_back =
                matches!(schedule, Schedule::Closed { interval } if interval.is_zero());
            let intended = if back_to_back { could } else { due };
            self.enqueue(i, intended);
            wrote = true;
            let c = &mut self.conns[i];
            let next = match schedule {
                Schedule::Closed { interval } => intended + interval.as_nanos() as u64,
                Schedule::Open { per_conn_rate } => {
                    due.saturating_add(exp_gap_ns(&mut c.rng, per_conn_rate))
                }
            };
            c.next_due = (next < self.window_ns).then_some(next);
        }
        if wrote {
            self.flush(i);
        }
        let c = &self.conns[i];
        if let Some(due) = c.next_due {
            let blocked = matches!(schedule, Schedule::Closed { .. }) && !c.inflight.is_empty();
            if c.state == State::Running && !blocked && due > now {
                self.timers.push(Reverse((due, i)));
            }
        }
    }

    /// Runs the schedule for `window`, then waits up to `timeout` for the
    /// answers still outstanding.
    fn run(&mut self, schedule: Schedule, window: Duration, timeout: Duration) -> Result<()> {
        self.origin = Instant::now();
        self.window_ns = window.as_nanos() as u64;
        let timeout_ns = timeout.as_nanos() as u64;
        let n = self.conns.len().max(1) as u64;
        let live: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].state == State::Running)
            .collect();
        for &i in &live {
            let c = &mut self.conns[i];
            let first = match schedule {
                // Phases spread evenly over one interval.
                Schedule::Closed { interval } => interval.as_nanos() as u64 * i as u64 / n,
                Schedule::Open { per_conn_rate } => exp_gap_ns(&mut c.rng, per_conn_rate),
            };
            c.next_due = (first < self.window_ns).then_some(first);
            // Times of the warm-up's clock mean nothing on the window's.
            c.answered_at = 0;
            c.drained_at = 0;
            let now = self.now();
            self.service(i, now, schedule);
        }
        let end = self.window_ns + timeout_ns;
        let mut next_sweep = 0u64;
        loop {
            let now = self.now();
            // Timer-driven sends.
            while let Some(&Reverse((at, i))) = self.timers.peek() {
                if at > now {
                    break;
                }
                self.timers.pop();
                if self.conns[i].next_due == Some(at) {
                    let now = self.now();
                    self.service(i, now, schedule);
                }
            }
            if now >= next_sweep {
                self.sweep(now, timeout_ns);
                next_sweep = now + 5_000_000;
            }
            let busy = self.conns.iter().any(|c| {
                c.state == State::Running && (!c.inflight.is_empty() || c.next_due.is_some())
            });
            if !busy || now >= end {
                break;
            }
            let wake = self
                .timers
                .peek()
                .map_or(next_sweep, |r| r.0 .0)
                .min(next_sweep)
                .min(end);
            self.arm(wake)?;
            self.wait_and_service(schedule)?;
        }
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if c.state == State::Running {
                self.counts.timeouts += c.inflight.len() as u64;
            }
        }
        self.count_unsent(schedule);
        Ok(())
    }

    /// One wait; then every connection that got answers may owe its next request.
    fn wait_and_service(&mut self, schedule: Schedule) -> Result<()> {
        self.wait()?;
        let touched: Vec<usize> = self
            .events
            .iter()
            .map(|e| e.token().0)
            .filter(|&t| t != TIMER.0)
            .collect();
        for i in touched {
            // Read per connection: servicing those before took time too.
            let now = self.now();
            let c = &self.conns[i];
            let owed = match schedule {
                Schedule::Closed { .. } => c.inflight.is_empty(),
                // Requests held back by OUT_CAP.
                Schedule::Open { .. } => c.next_due.is_some_and(|d| d <= now),
            };
            if owed {
                self.service(i, now, schedule);
            }
        }
        Ok(())
    }

    /// Ends connections whose oldest request has waited more than `timeout_ns`.
    fn sweep(&mut self, now: u64, timeout_ns: u64) {
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if c.state != State::Running {
                continue;
            }
            if let Some(p) = c.inflight.front() {
                if now.saturating_sub(p.intended) > timeout_ns {
                    self.counts.timeouts += c.inflight.len() as u64;
                    self.conns[i].inflight.clear();
                    self.kill(i);
                }
            }
        }
    }

    /// Counts the requests due inside the window that never went out.
    fn count_unsent(&mut self, schedule: Schedule) {
        for c in &mut self.conns {
            let Some(mut due) = c.next_due.take() else {
                continue;
            };
            match schedule {
                Schedule::Closed { interval } => {
                    let step = interval.as_nanos() as u64;
                    if step == 0 {
                        continue;
                    }
                    self.counts.unsent += (self.window_ns.saturating_sub(due)).div_ceil(step);
                }
                Schedule::Open { per_conn_rate } => {
                    while due < self.window_ns {
                        self.counts.unsent += 1;
                        due = due.saturating_add(exp_gap_ns(&mut c.rng, per_conn_rate));
                    }
                }
            }
        }
    }

    /// The warm-up before the window: one request on every live connection,
    /// each answer verified (a failure counts as in any round) but kept out of
    /// the latencies and the window's counts. A connection whose answer did not
    /// come within `timeout` (counted as a timeout) ends here, so that no late
    /// warm-up answer is timed against the window's clock. Returns how long the
    /// round took, in ms.
    fn warm_up(&mut self, timeout: Duration) -> Result<f64> {
        let started = Instant::now();
        self.round(timeout)?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        for i in 0..self.conns.len() {
            if !self.conns[i].inflight.is_empty() {
                // Counted as timeouts by `round`.
                self.conns[i].inflight.clear();
                self.kill(i);
            }
        }
        for h in &mut self.hists {
            *h = Latencies::new();
        }
        for w in &mut self.group_in_window {
            *w = 0;
        }
        self.counts.in_window = 0;
        Ok(ms)
    }

    /// One request on every live connection; `Some(reason)` unless every one
    /// came back right within `timeout`.
    fn round(&mut self, timeout: Duration) -> Result<Option<String>> {
        let before = self.counts.clone();
        self.origin = Instant::now();
        self.window_ns = u64::MAX;
        for i in 0..self.conns.len() {
            if self.conns[i].state == State::Running {
                self.enqueue(i, 0);
                self.flush(i);
            }
        }
        let deadline = timeout.as_nanos() as u64;
        while self.now() < deadline
            && self
                .conns
                .iter()
                .any(|c| c.state == State::Running && !c.inflight.is_empty())
        {
            self.arm(deadline)?;
            self.wait()?;
        }
        let late: u64 = self
            .conns
            .iter()
            .filter(|c| c.state == State::Running)
            .map(|c| c.inflight.len() as u64)
            .sum();
        self.counts.timeouts += late;
        let dead = self.conns.len() - self.live();
        let delta = self.counts.since(&before);
        Ok(if delta.errors() > 0 {
            Some(delta.breakdown())
        } else if dead > 0 {
            Some(format!("{dead} connections were lost earlier"))
        } else {
            None
        })
    }

    fn report(&self, args: &LoadArgs, client_cpus: f64, warmup_ms: Option<f64>) -> LoadReport {
        let secs = args.duration.as_secs_f64().max(1e-9);
        let mut all = Latencies::new();
        for h in &self.hists {
            all.merge(h);
        }
        let groups = self
            .groups
            .iter()
            .map(|(&key, &g)| GroupReport {
                priority: key,
                connections: self.group_conns[g],
                throughput: self.group_in_window[g] as f64 / secs,
                latency: stats(&self.hists[g], true),
            })
            .collect();
        LoadReport {
            mode: args.mode,
            connections: args.connections,
            duration_s: args.duration.as_secs_f64(),
            interval_ms: (args.mode == Mode::Closed).then_some(args.interval.as_secs_f64() * 1e3),
            rate: (args.mode == Mode::Open).then_some(args.rate),
            dim: args.dim,
            counts: self.counts.clone(),
            throughput: self.counts.in_window as f64 / secs,
            latency: stats(&all, true),
            groups,
            send_lag: stats(&self.lag, false),
            client_cpus,
            warmup_ms,
        }
    }
}

/// User + system CPU seconds of this process so far.
pub fn cpu_time() -> f64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage into the valid `ru`.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raises the soft RLIMIT_NOFILE to at least `need` if the hard limit allows
/// (children started afterwards inherit it).
///
/// # Errors
/// The hard limit is below `need`, or the limit cannot be read or set.
pub fn raise_nofile(need: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if lim.rlim_cur >= need {
        return Ok(lim.rlim_cur);
    }
    if lim.rlim_max < need {
        bail!(
            "{need} descriptors are needed but RLIMIT_NOFILE's hard limit is {}; \
             raise it (ulimit -Hn) or ask for fewer connections",
            lim.rlim_max
        );
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit reads one valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("800us"), Ok(Duration::from_micros(800)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn poisson_gaps_move_on_and_never_overflow() {
        let mut rng = 7;
        for _ in 0..1000 {
            // A rate far beyond any window: at least 1 ns, so a schedule moves.
            assert!(exp_gap_ns(&mut rng, 1e300) >= 1);
            // A rate so low the gap exceeds u64: saturated, and its sum with a
            // due time saturates too (no request again in any window).
            let gap = exp_gap_ns(&mut rng, 1e-300);
            assert_eq!(gap, u64::MAX);
            assert_eq!(5_000_000_000u64.saturating_add(gap), u64::MAX);
        }
    }

    #[test]
    fn poisson_gaps_have_the_asked_mean() {
        let mut rng = 1;
        let rate = 1000.0;
        let n = 100_000;
        let total: u64 = (0..n).map(|_| exp_gap_ns(&mut rng, rate)).sum();
        let mean_ms = total as f64 / n as f64 / 1e6;
        // The mean of 100 000 exponential samples is within 2 % of 1 ms with
        // overwhelming probability (its standard error is 0.3 %).
        assert!((mean_ms - 1.0).abs() < 0.02, "{mean_ms}");
    }

    #[test]
    fn pool_squares_are_the_reference_product() {
        let pool = Pool::new(Dim::new(3).unwrap()).unwrap();
        for (m, sq) in pool.matrices.iter().zip(&pool.squares) {
            let view = ss_proto::MatrixView::from_le_bytes(pool.dim, sq).unwrap();
            assert_eq!(matrix::verify_square(pool.dim, m.as_slice(), &view), Ok(()));
        }
    }

    /// An engine with one connection to a listener that accepts and never
    /// reads (the test drives `service` by hand with made-up clock values).
    fn one_connection() -> (Engine, std::net::TcpListener) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut e = Engine::new(Dim::new(2).unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        e.connect(addr, 1, None, Duration::from_secs(5), Duration::ZERO);
        assert_eq!(e.live(), 1);
        e.window_ns = u64::MAX;
        (e, listener)
    }

    /// Queues connection 0's request due at `due`, `free` being the time the
    /// server last released it, at `now`; returns (intended ns, lag in whole
    /// µs: the histogram keeps 3 significant digits).
    fn send_once(e: &mut Engine, schedule: Schedule, due: u64, free: u64, now: u64) -> (u64, u64) {
        let c = &mut e.conns[0];
        c.inflight.clear();
        c.answered_at = free;
        c.drained_at = free;
        c.next_due = Some(due);
        e.lag = Latencies::new();
        e.service(0, now, schedule);
        let sent = e.conns[0].inflight.back().copied().unwrap();
        assert_eq!(e.lag.len(), 1, "one lag sample per request");
        (sent.intended, e.lag.max_us().round() as u64)
    }

    #[test]
    fn send_lag_runs_from_when_a_request_could_first_go() {
        let (mut e, _listener) = one_connection();
        let every = Schedule::Closed {
            interval: Duration::from_micros(100),
        };
        // The awaited answer came before the request's time: late from its time.
        assert_eq!(send_once(&mut e, every, 2_000, 1_000, 5_000), (2_000, 3));
        // It came after: the server held the request back, the client's lag
        // runs from the answer; latency still from the intended time.
        assert_eq!(send_once(&mut e, every, 2_000, 4_000, 5_000), (2_000, 1));
        // Back to back: meant for the moment the previous answer arrived.
        let b2b = Schedule::Closed {
            interval: Duration::ZERO,
        };
        assert_eq!(send_once(&mut e, b2b, 2_000, 4_000, 5_000), (4_000, 1));
        // Open loop: from its time, or from the socket taking held-back bytes.
        let open = Schedule::Open { per_conn_rate: 1.0 };
        assert_eq!(send_once(&mut e, open, 6_000, 0, 9_000), (6_000, 3));
        assert_eq!(send_once(&mut e, open, 6_000, 7_000, 9_000), (6_000, 2));
    }

    #[test]
    fn requests_held_back_by_the_cap_keep_their_intended_time() {
        let (mut e, _listener) = one_connection();
        let open = Schedule::Open { per_conn_rate: 1.0 };
        // Fill the socket (nobody reads it), then the client's queue to the cap.
        let junk = vec![0u8; 64 * 1024];
        while e.conns[0].stream.write(&junk).is_ok() {}
        e.conns[0].out = vec![0; OUT_CAP];
        e.conns[0].next_due = Some(1_000);
        e.service(0, 2_000, open);
        let c = &e.conns[0];
        assert_eq!(c.state, State::Running);
        assert!(c.inflight.is_empty(), "held back, not queued");
        assert_eq!(c.next_due, Some(1_000), "still due, at its own time");
        assert!(e.lag.is_empty(), "not sent, so no lag yet");
        // The socket takes the bytes at 50 µs; the request goes at 80 µs,
        // timed from its own time and lagging from the drain.
        e.conns[0].out.clear();
        e.conns[0].drained_at = 50_000;
        e.service(0, 80_000, open);
        let sent = e.conns[0].inflight.back().copied().unwrap();
        assert_eq!(sent.intended, 1_000);
        assert_eq!(e.lag.len(), 1);
        assert_eq!(e.lag.max_us().round(), 30.0);
    }

    #[test]
    fn counts_errors_sum_every_kind() {
        let c = Counts {
            wrong_answers: 1,
            timeouts: 2,
            closed: 3,
            unsent: 10,
            ..Counts::default()
        };
        assert_eq!(c.errors(), 6);
        assert!(!c.clean());
        assert!(Counts::default().clean());
    }
}
