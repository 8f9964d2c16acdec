//! `rtbench`: the SharedScheduler runtime (`ss-runtime`) against tokio's
//! multi-thread runtime, each with 2 worker threads, in the same run.
//!
//! Workloads (names for `--filter`):
//!
//! | name | measures |
//! |---|---|
//! | `spawn` | the main coroutine spawns N trivial coroutines and waits for all; ns per coroutine |
//! | `yield` | 100 coroutines yielding M times each; ns per yield (wall time / yields) |
//! | `wake` | a plain thread wakes a blocked coroutine and waits for its answer; round-trip p50/p99 in µs, with idle workers that park at once and that spin 20 µs first, rounds 100 µs and 10 µs apart |
//! | `flood` | wake → run latency of a priority-0 coroutine woken every 200 µs, unloaded and beside 4 CPU-bound priority-7 coroutines |
//!
//! (A TCP `echo` workload joins these once `ss_runtime::net` exists.)
//!
//! Then a summary with the target judged met or missed from this run's numbers.
//! See `bench/README.md` for what each workload measures and why it is fair.

use std::future::{poll_fn, Future};
use std::hint::{black_box, spin_loop};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser;
use ss_bench::futs::{leak, own_waker, Countdown};
use ss_bench::harness::{check, try_measure, Sample};
use ss_bench::latency::{us, Latencies, Summary};
use ss_bench::machine::Machine;
use ss_bench::report::{ns, Table};
use ss_bench::stalls::HostStalls;
use ss_runtime::{prio, CoroutineId, Runtime};

/// The tokio version linked, from `Cargo.lock` (see `build.rs`).
const TOKIO: &str = env!("SS_BENCH_TOKIO_VERSION");

/// Worker threads of every runtime under test.
const WORKERS: usize = 2;

/// Target: under the low-priority flood, ss-runtime's high-priority p99 wake →
/// run latency is at most this many times its unloaded p99.
const FLOOD_TARGET: f64 = 2.0;

/// Coroutines in `yield`.
const YIELDERS: usize = 100;
/// The level of the coroutines of `spawn` and `yield` (the main coroutine that
/// spawns them is at 0, the runtime's default).
const WORK_LEVEL: u8 = 3;
/// The level of the responder of `wake`.
const RESPONDER_LEVEL: u8 = 2;
/// `flood`: the woken coroutine's level (most important) and the flood's.
const HIGH_LEVEL: u8 = 0;
const LOW_LEVEL: u8 = 7;
/// `flood`: CPU-bound coroutines beside the high-priority one (twice the workers).
const FLOODERS: usize = 4;
/// `flood`: the external thread wakes the high-priority coroutine this often.
const FLOOD_PERIOD: Duration = Duration::from_micros(200);
/// `flood`: iterations of the arithmetic loop between two `consume_budget`
/// calls. Fixed (not calibrated per machine); the report prints what one chunk
/// took on this machine, ~1 µs on the 2-vCPU machines the project runs on.
const CHUNK_ITERS: u32 = 640;
/// `flood`: a flooding coroutine stops after this many chunks even if never told
/// to (a bound on the loop; a measurement ends long before).
const MAX_CHUNKS: u64 = 200_000_000;
/// `wake`: the gaps between rounds. 100 µs: longer than the 20 µs idle spin, so
/// every worker has parked in the OS before the wake-up, spin or not. 10 µs:
/// inside the spin, where the spin should catch the wake-up.
const WAKE_GAPS: [Duration; 2] = [Duration::from_micros(100), Duration::from_micros(10)];
/// `wake`: the idle spins measured: none (park at once) and the runtime's default.
const SPINS: [Duration; 2] = [Duration::ZERO, ss_runtime::WorkerPlatform::DEFAULT_SPIN];

/// How long to wait for a coroutine to start or answer before calling the run
/// broken (a lost wake-up would otherwise hang the benchmark).
const PATIENCE: Duration = Duration::from_secs(10);
/// `ping` value that tells a responder to return.
const STOP: u64 = u64::MAX;

/// The SharedScheduler runtime against tokio's multi-thread runtime, 2 workers each.
#[derive(Parser, Debug)]
#[command(name = "rtbench", version)]
struct Args {
    #[command(flatten)]
    opts: ss_bench::harness::Options,
}

/// The fixed amounts of work. Chosen per mode, never adapted to the machine.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    /// Coroutines spawned per repetition of `spawn`.
    spawn: usize,
    /// Yields per coroutine per repetition of `yield`.
    yields: u64,
    /// Timed round trips per measurement of `wake`.
    wakes: u64,
    /// Timed wake-ups per measurement of `flood` (× 200 µs: its length).
    floods: u64,
}

const FULL: Sizes = Sizes {
    spawn: 100_000,
    yields: 10_000,
    wakes: 10_000,
    floods: 10_000,
};

const QUICK: Sizes = Sizes {
    spawn: 10_000,
    yields: 1_000,
    wakes: 1_000,
    floods: 1_000,
};

const WORKLOADS: [(&str, &str); 4] = [
    (
        "spawn",
        "the main coroutine spawns N trivial coroutines, waits for all (ns per coroutine)",
    ),
    ("yield", "100 coroutines x M yields (ns per yield)"),
    (
        "wake",
        "plain thread wakes a blocked coroutine, waits for its answer (round trip, us)",
    ),
    (
        "flood",
        "priority-0 wake -> run latency, unloaded and beside a priority-7 CPU flood (us)",
    ),
    // `echo` (TCP round trips) joins here once `ss_runtime::net` exists.
];

// ---------------------------------------------------------------- runtimes

/// An ss-runtime with `WORKERS` workers; `spin` is the idle spin (`None`: the
/// runtime's default).
fn ss_rt(spin: Option<Duration>) -> Result<Runtime> {
    let mut b = Runtime::builder().workers(WORKERS);
    if let Some(spin) = spin {
        b = b.idle_spin(spin);
    }
    b.build().context("building the ss-runtime")
}

/// tokio's multi-thread runtime with `WORKERS` workers and no I/O or time
/// driver (no workload needs one; without them an idle worker parks on a
/// condition variable, as ss-runtime's do).
fn tokio_rt() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .build()
        .context("building tokio's multi-thread runtime")
}

// ---------------------------------------------------------------- 1. spawn

/// The main coroutine spawns `n` coroutines that each count themselves (their
/// handles dropped: detached), then waits on the latch the last one opens.
/// Timed inside the main coroutine, so starting it is not counted.
fn spawn_ss(rt: &Runtime, n: usize) -> Result<Duration> {
    let done = leak(Countdown::new(n));
    let d = rt.block_on(async move {
        let start = Instant::now();
        for _ in 0..n {
            drop(ss_runtime::spawn(
                async move { done.hit() },
                prio(WORK_LEVEL),
            ));
        }
        done.latch.wait().await;
        start.elapsed()
    });
    check(
        done.count() == n,
        "ss-runtime spawn: not every coroutine ran",
    )?;
    Ok(d)
}

/// The same in tokio, from a task on a worker (as ss-runtime's main coroutine
/// is): tokio's `block_on` would run the loop on the calling thread instead,
/// and every spawn would go through the shared inject queue.
fn spawn_tokio(rt: &tokio::runtime::Runtime, n: usize) -> Result<Duration> {
    let done = leak(Countdown::new(n));
    let d = rt
        .block_on(rt.spawn(async move {
            let start = Instant::now();
            for _ in 0..n {
                drop(tokio::spawn(async move { done.hit() }));
            }
            done.latch.wait().await;
            start.elapsed()
        }))
        .context("tokio spawn: the driving task failed")?;
    check(done.count() == n, "tokio spawn: not every task ran")?;
    Ok(d)
}

// ---------------------------------------------------------------- 2. yield

async fn ss_yielder(times: u64, done: &'static Countdown) {
    for _ in 0..times {
        ss_runtime::yield_now().await;
    }
    done.hit();
}

async fn tokio_yielder(times: u64, done: &'static Countdown) {
    for _ in 0..times {
        tokio::task::yield_now().await;
    }
    done.hit();
}

/// `tasks` coroutines at one level, each yielding `per_task` times; wall time
/// from the first spawn to the last coroutine's end, on both workers.
fn yield_ss(rt: &Runtime, tasks: usize, per_task: u64) -> Result<Duration> {
    let done = leak(Countdown::new(tasks));
    let d = rt.block_on(async move {
        let start = Instant::now();
        for _ in 0..tasks {
            drop(ss_runtime::spawn(
                ss_yielder(per_task, done),
                prio(WORK_LEVEL),
            ));
        }
        done.latch.wait().await;
        start.elapsed()
    });
    check(
        done.count() == tasks,
        "ss-runtime yield: not every coroutine finished",
    )?;
    Ok(d)
}

fn yield_tokio(rt: &tokio::runtime::Runtime, tasks: usize, per_task: u64) -> Result<Duration> {
    let done = leak(Countdown::new(tasks));
    let d = rt
        .block_on(rt.spawn(async move {
            let start = Instant::now();
            for _ in 0..tasks {
                drop(tokio::spawn(tokio_yielder(per_task, done)));
            }
            done.latch.wait().await;
            start.elapsed()
        }))
        .context("tokio yield: the driving task failed")?;
    check(
        done.count() == tasks,
        "tokio yield: not every task finished",
    )?;
    Ok(d)
}

// ---------------------------------------------------------------- 3. wake

/// A coroutine's identity for an outside thread to wake it by: its id
/// (ss-runtime) or its `Waker` (tokio), published on its first poll.
#[derive(Default)]
struct Target {
    cid: OnceLock<CoroutineId>,
    waker: Mutex<Option<Waker>>,
}

impl Target {
    /// ss-runtime: publishes the calling coroutine's id.
    async fn publish_cid(&self) {
        if let Some(cid) = ss_runtime::current().await {
            let _ = self.cid.set(cid);
        }
    }

    /// tokio: publishes the calling task's waker.
    async fn publish_waker(&self) {
        let w = own_waker().await;
        *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(w);
    }

    fn wait_cid(&self) -> Result<CoroutineId> {
        wait_until("the coroutine never started", || self.cid.get().copied())
    }

    fn wait_waker(&self) -> Result<Waker> {
        wait_until("the task never started", || {
            self.waker.lock().unwrap_or_else(|e| e.into_inner()).clone()
        })
    }
}

/// The ping-pong between the outside thread and a coroutine. Round `i`: the
/// thread stores `ping = i` and wakes the coroutine; the coroutine, once polled,
/// sees `ping >= i`, stores `pong = i` and blocks again; the thread waits for
/// `pong == i`.
#[derive(Default)]
struct PingPong {
    ping: AtomicU64,
    pong: AtomicU64,
    target: Target,
}

/// Blocks until `ping >= i` and returns it. Its `Pending` arranges no wake-up:
/// the coroutine is woken from outside, by id (ss-runtime) or through the
/// `Waker` it published once (tokio), so neither pays for storing a waker per
/// round.
async fn until_ping(ping: &AtomicU64, i: u64) -> u64 {
    poll_fn(|_| {
        let p = ping.load(Ordering::Acquire);
        if p >= i {
            Poll::Ready(p)
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Answers pings until `STOP`.
async fn responder(pp: &'static PingPong) {
    let mut i = 1;
    while until_ping(&pp.ping, i).await != STOP {
        pp.pong.store(i, Ordering::Release);
        i += 1;
    }
}

/// The outside thread's side: `warmup + rounds` round trips, each `gap` after
/// the previous answer (busy-waiting, so this thread keeps its CPU and the
/// worker is woken on the other); times the last `rounds`. Then `STOP`.
fn ping_rounds(
    pp: &PingPong,
    rounds: u64,
    gap: Duration,
    mut wake: impl FnMut() -> bool,
) -> Result<Latencies> {
    let warmup = rounds / 10;
    let mut lat = Latencies::new();
    let mut last = Instant::now();
    let mut result = Ok(());
    for i in 1..=warmup + rounds {
        while last.elapsed() < gap {
            spin_loop();
        }
        let t0 = Instant::now();
        pp.ping.store(i, Ordering::Release);
        if !wake() {
            result = Err(anyhow!("wake: round {i}: the wake-up call failed"));
            break;
        }
        if let Err(e) = spin_until(&pp.pong, i, false) {
            result = Err(e.context(format!("wake: round {i}: no answer (lost wake-up?)")));
            break;
        }
        last = Instant::now();
        if i > warmup {
            lat.record(last.duration_since(t0).as_nanos() as u64);
        }
    }
    pp.ping.store(STOP, Ordering::Release);
    let _ = wake();
    result.map(|()| lat)
}

/// ss-runtime: the responder is woken by id (`rt.wake(cid)`).
fn wake_ss(spin: Duration, gap: Duration, rounds: u64) -> Result<Summary> {
    let rt = ss_rt(Some(spin))?;
    let pp = leak(PingPong::default());
    let handle = rt
        .spawn(
            async move {
                pp.target.publish_cid().await;
                responder(pp).await;
            },
            prio(RESPONDER_LEVEL),
        )
        .context("spawning the responder")?;
    let cid = pp.target.wait_cid()?;
    let lat = ping_rounds(pp, rounds, gap, || rt.wake(cid).is_ok())?;
    rt.block_on(handle)
        .map_err(|e| anyhow!("the responder failed: {e}"))?;
    Ok(lat.summary())
}

/// tokio: the responder is woken through the `Waker` it published.
fn wake_tokio(gap: Duration, rounds: u64) -> Result<Summary> {
    let rt = tokio_rt()?;
    let pp = leak(PingPong::default());
    let handle = rt.spawn(async move {
        pp.target.publish_waker().await;
        responder(pp).await;
    });
    let waker = pp.target.wait_waker()?;
    let lat = ping_rounds(pp, rounds, gap, || {
        waker.wake_by_ref();
        true
    })?;
    rt.block_on(handle).context("the responder failed")?;
    Ok(lat.summary())
}

// ---------------------------------------------------------------- 4. flood

/// Shared state of one `flood` measurement.
struct Flood {
    /// The clock both sides read.
    origin: Instant,
    /// When the latest wake-up was sent, in ns since `origin`; written before
    /// `ping` is released.
    stamp: AtomicU64,
    ping: AtomicU64,
    pong: AtomicU64,
    target: Target,
    /// Tells the flooding coroutines to return.
    stop: AtomicBool,
    /// Chunks of arithmetic the flood did (for the report: the flood really ran).
    chunks: AtomicU64,
}

impl Flood {
    fn new() -> Self {
        Flood {
            origin: Instant::now(),
            stamp: AtomicU64::new(0),
            ping: AtomicU64::new(0),
            pong: AtomicU64::new(0),
            target: Target::default(),
            stop: AtomicBool::new(false),
            chunks: AtomicU64::new(0),
        }
    }

    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

/// The high-priority coroutine: on each wake-up, records now − stamp (the wake
/// → run latency) and blocks again, until `STOP`. The first `warmup` are not
/// recorded.
async fn high(f: &'static Flood, warmup: u64) -> Latencies {
    let mut lat = Latencies::new();
    let mut i = 1;
    while until_ping(&f.ping, i).await != STOP {
        let now = f.now_ns();
        if i > warmup {
            lat.record(now.saturating_sub(f.stamp.load(Ordering::Relaxed)));
        }
        f.pong.store(i, Ordering::Release);
        i += 1;
    }
    lat
}

/// About a microsecond of dependent integer arithmetic (an LCG step and an
/// xor-shift per iteration), opaque to the optimiser.
#[inline(never)]
fn chunk(x: u64) -> u64 {
    let mut x = black_box(x);
    for _ in 0..CHUNK_ITERS {
        x = x
            .wrapping_mul(0x5851_F42D_4C95_7F2D)
            .wrapping_add(0x1405_7B7E_F767_814F);
        x ^= x >> 29;
    }
    black_box(x)
}

/// Nanoseconds one [`chunk`] takes on this machine (for the report only).
fn chunk_ns() -> f64 {
    const N: u32 = 20_000;
    let mut x = 1;
    let start = Instant::now();
    for _ in 0..N {
        x = chunk(x);
    }
    black_box(x);
    start.elapsed().as_nanos() as f64 / f64::from(N)
}

/// A CPU-bound coroutine: chunks of arithmetic, each followed by one unit of the
/// runtime's cooperative budget (`budget()`), until told to stop.
async fn flood<F: Future<Output = ()>>(f: &'static Flood, seed: u64, budget: impl Fn() -> F) {
    let mut x = seed;
    let mut n = 0;
    while n < MAX_CHUNKS && !f.stop.load(Ordering::Relaxed) {
        x = chunk(x);
        n += 1;
        budget().await;
    }
    black_box(x);
    f.chunks.fetch_add(n, Ordering::Relaxed);
}

/// The outside thread's side: wake-up `i` is sent at `start + i × period`
/// (sleeping in between, so this thread takes no CPU from the workers), and not
/// before the previous one was answered. Then waits for the last answer.
fn flood_rounds(f: &Flood, rounds: u64, mut wake: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    for i in 1..=rounds {
        let deadline = start + FLOOD_PERIOD * u32::try_from(i).unwrap_or(u32::MAX);
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        }
        spin_until(&f.pong, i - 1, true)
            .with_context(|| format!("flood: round {}: no answer (lost wake-up?)", i - 1))?;
        f.stamp.store(f.now_ns(), Ordering::Relaxed);
        f.ping.store(i, Ordering::Release);
        check(wake(), "flood: the wake-up call failed")?;
    }
    spin_until(&f.pong, rounds, true).context("flood: the last round got no answer")?;
    Ok(start.elapsed())
}

/// One flood measurement's result.
#[derive(Clone, Copy, Debug)]
struct FloodResult {
    lat: Summary,
    /// Chunks of low-priority arithmetic per second (0 unloaded).
    chunks_per_s: f64,
}

/// Stops the flood and the high-priority coroutine (also after a failure).
fn stop_flood(f: &Flood, mut wake: impl FnMut() -> bool) {
    f.stop.store(true, Ordering::Relaxed);
    f.ping.store(STOP, Ordering::Release);
    let _ = wake();
}

fn flood_ss(loaded: bool, rounds: u64) -> Result<FloodResult> {
    let rt = ss_rt(None)?;
    let f = leak(Flood::new());
    let warmup = rounds / 10;
    let high = rt
        .spawn(
            async move {
                f.target.publish_cid().await;
                high(f, warmup).await
            },
            prio(HIGH_LEVEL),
        )
        .context("spawning the high-priority coroutine")?;
    let cid = f.target.wait_cid()?;
    let wake = || rt.wake(cid).is_ok();
    let mut lows = Vec::new();
    for seed in 0..if loaded { FLOODERS } else { 0 } {
        let low = rt.spawn(
            flood(f, seed as u64, ss_runtime::budget::consume_budget),
            prio(LOW_LEVEL),
        );
        match low {
            Ok(h) => lows.push(h),
            Err(e) => {
                stop_flood(f, wake);
                return Err(e).context("spawning the flood");
            }
        }
    }
    let run = flood_rounds(f, warmup + rounds, wake);
    stop_flood(f, wake);
    let lat = rt
        .block_on(async move {
            for low in lows {
                let _ = low.await;
            }
            high.await
        })
        .map_err(|e| anyhow!("the high-priority coroutine failed: {e}"))?;
    let took = run?;
    Ok(FloodResult {
        lat: lat.summary(),
        chunks_per_s: f.chunks.load(Ordering::Relaxed) as f64 / took.as_secs_f64(),
    })
}

/// tokio has no priorities: the same coroutines, all equal; the woken task is
/// spawned first.
fn flood_tokio(loaded: bool, rounds: u64) -> Result<FloodResult> {
    let rt = tokio_rt()?;
    let f = leak(Flood::new());
    let warmup = rounds / 10;
    let high = rt.spawn(async move {
        f.target.publish_waker().await;
        high(f, warmup).await
    });
    let waker = f.target.wait_waker()?;
    let wake = || {
        waker.wake_by_ref();
        true
    };
    let lows: Vec<_> = (0..if loaded { FLOODERS } else { 0 })
        .map(|seed| rt.spawn(flood(f, seed as u64, tokio::task::coop::consume_budget)))
        .collect();
    let run = flood_rounds(f, warmup + rounds, wake);
    stop_flood(f, wake);
    let lat = rt
        .block_on(async move {
            for low in lows {
                let _ = low.await;
            }
            high.await
        })
        .context("the high-priority task failed")?;
    let took = run?;
    Ok(FloodResult {
        lat: lat.summary(),
        chunks_per_s: f.chunks.load(Ordering::Relaxed) as f64 / took.as_secs_f64(),
    })
}

// ---------------------------------------------------------------- waiting

/// Waits until `a >= at_least`: spinning (`polite == false`; this thread owns a
/// CPU) or sleeping 10 µs between looks (`polite`; the workers need both CPUs —
/// a `thread::yield_now` loop here took half the flood's CPU time and
/// doubled the latencies it measured).
/// Fails after [`PATIENCE`].
fn spin_until(a: &AtomicU64, at_least: u64, polite: bool) -> Result<()> {
    let mut spins = 0u32;
    let mut slow_since = None;
    while a.load(Ordering::Acquire) < at_least {
        if polite {
            std::thread::sleep(Duration::from_micros(10));
        } else {
            spin_loop();
        }
        spins = spins.wrapping_add(1);
        // A slow answer (preempted, or broken): read the clock, rarely.
        if spins % 1024 == 0 {
            let t = *slow_since.get_or_insert_with(Instant::now);
            if t.elapsed() > PATIENCE {
                bail!("no answer within {PATIENCE:?}");
            }
        }
    }
    Ok(())
}

/// Waits until `f` returns something, yielding the CPU between looks.
fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let since = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if since.elapsed() > PATIENCE {
            bail!("{what} (waited {PATIENCE:?})");
        }
        std::thread::yield_now();
    }
}

// ---------------------------------------------------------------- report

/// One line of the summary.
struct Row {
    workload: String,
    ss: String,
    tokio: String,
    /// ss / tokio.
    ratio: Option<f64>,
    /// `(text, met)`.
    target: Option<(String, bool)>,
}

impl Row {
    fn new(workload: impl Into<String>, ss: String, tokio: String, ratio: Option<f64>) -> Self {
        Row {
            workload: workload.into(),
            ss,
            tokio,
            ratio,
            target: None,
        }
    }
}

fn section(name: &str, what: &str) {
    println!();
    println!("== {name}: {what}");
}

fn tokio_name() -> String {
    format!("tokio {TOKIO} multi_thread")
}

/// `p50 / p99` of a latency summary, in µs.
fn p50_p99(s: &Summary) -> String {
    format!("{} / {}", us(s.p50), us(s.p99))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let Some((selected, plan)) = args.opts.start(&WORKLOADS)? else {
        return Ok(());
    };
    let run = |name: &str| selected.contains(&name);
    let sizes = if args.opts.quick { QUICK } else { FULL };

    // First lines: the machine, and how much time it takes from busy threads.
    println!("{}", Machine::detect());
    println!("{}", HostStalls::probe(HostStalls::span(args.opts.quick)));
    println!(
        "runtimes: ss-runtime ({WORKERS} workers, 8 levels, idle spin {:?} unless said) vs \
         tokio {TOKIO} multi_thread ({WORKERS} workers, no I/O or time driver)",
        ss_runtime::WorkerPlatform::DEFAULT_SPIN
    );
    println!(
        "mode: {}; spawn/yield: {} timed repetitions after {} warm-up, median and min ns per \
         operation; wake/flood: every round recorded (after 10 % warm-up), percentiles in us",
        if args.opts.quick {
            "quick (smoke run, small workloads)"
        } else {
            "full"
        },
        plan.reps,
        plan.warmup
    );
    if cfg!(debug_assertions) {
        println!("WARNING: debug build; the numbers mean nothing (build with --release)");
    }
    let mut rows: Vec<Row> = Vec::new();
    let started = Instant::now();

    if run("spawn") {
        let n = sizes.spawn;
        section(
            "spawn",
            &format!(
                "the main coroutine spawns {n} trivial coroutines (detached) and waits on a \
                 latch the last opens; ns per coroutine"
            ),
        );
        let s = {
            let rt = ss_rt(None)?;
            try_measure(plan, n as u64, || spawn_ss(&rt, n))?
        };
        let t = {
            let rt = tokio_rt()?;
            try_measure(plan, n as u64, || spawn_tokio(&rt, n))?
        };
        print_versus(&[("ss-runtime".to_owned(), s), (tokio_name(), t)], &t);
        rows.push(Row::new(
            "spawn, ns per coroutine",
            ns(s.median),
            ns(t.median),
            Some(s.ratio_to(&t)),
        ));
    }

    if run("yield") {
        let per = sizes.yields;
        let m = per * YIELDERS as u64;
        section(
            "yield",
            &format!(
                "{YIELDERS} coroutines at one level, {per} yields each, on {WORKERS} workers; \
                 ns per yield (wall time / yields)"
            ),
        );
        let s = {
            let rt = ss_rt(None)?;
            try_measure(plan, m, || yield_ss(&rt, YIELDERS, per))?
        };
        let t = {
            let rt = tokio_rt()?;
            try_measure(plan, m, || yield_tokio(&rt, YIELDERS, per))?
        };
        print_versus(
            &[
                ("ss-runtime, ss_runtime::yield_now()".to_owned(), s),
                (format!("{}, task::yield_now()", tokio_name()), t),
            ],
            &t,
        );
        rows.push(Row::new(
            "yield, 100 coroutines, ns per yield",
            ns(s.median),
            ns(t.median),
            Some(s.ratio_to(&t)),
        ));
    }

    if run("wake") {
        let r = sizes.wakes;
        section(
            "wake",
            &format!(
                "a plain thread wakes a blocked coroutine and spins until it answered; \
                 {r} round trips per row; us"
            ),
        );
        println!(
            "  ss-runtime wakes by id (rt.wake(cid)), tokio through the stored Waker; the waking \
             thread busy-waits the gap after each answer, so the worker is woken on the other \
             CPU.\n  gap 100 us > the 20 us spin: every idle worker has parked, spin or not; \
             gap 10 us < the spin: a spinning worker is still watching."
        );
        let table = Table::new(&[
            ("runtime, idle policy, gap between rounds", 50),
            ("p50 us", 8),
            ("p99 us", 8),
            ("max us", 8),
        ]);
        for gap in WAKE_GAPS {
            let t = wake_tokio(gap, r)?;
            for spin in SPINS {
                let s = wake_ss(spin, gap, r)?;
                let policy = if spin.is_zero() {
                    "spin 0".to_owned()
                } else {
                    format!("spin {} us", spin.as_micros())
                };
                table.row(&[
                    format!("ss-runtime, idle {policy}, gap {} us", gap.as_micros()),
                    us(s.p50),
                    us(s.p99),
                    us(s.max),
                ]);
                rows.push(Row::new(
                    format!("wake p50/p99 us, {policy}, gap {} us", gap.as_micros()),
                    p50_p99(&s),
                    p50_p99(&t),
                    Some(s.p99 / t.p99),
                ));
            }
            table.row(&[
                format!("{}, gap {} us", tokio_name(), gap.as_micros()),
                us(t.p50),
                us(t.p99),
                us(t.max),
            ]);
        }
    }

    if run("flood") {
        let r = sizes.floods;
        let c = chunk_ns();
        section(
            "flood",
            &format!(
                "a plain thread wakes a priority-{HIGH_LEVEL} coroutine every {} us ({r} times, \
                 {:.1} s); wake -> run latency in us",
                FLOOD_PERIOD.as_micros(),
                (r + r / 10) as f64 * FLOOD_PERIOD.as_secs_f64()
            ),
        );
        println!(
            "  flooded: {FLOODERS} priority-{LOW_LEVEL} coroutines loop {{ {CHUNK_ITERS} iterations \
             of arithmetic (~{:.2} us here); consume_budget().await }}; budget 128 per poll in \
             both runtimes\n  ss-runtime: ss_runtime::budget::consume_budget, wake by id, \
             default idle spin; tokio (no priorities, all tasks equal): \
             tokio::task::coop::consume_budget, stored Waker",
            c / 1_000.0
        );
        let table = Table::new(&[
            ("runtime, load", 40),
            ("p50 us", 8),
            ("p99 us", 8),
            ("max us", 8),
            ("low Mchunk/s", 12),
        ]);
        let mut results = Vec::new();
        for is_ss in [true, false] {
            let name = if is_ss {
                format!("ss-runtime, high at {HIGH_LEVEL}")
            } else {
                tokio_name()
            };
            for loaded in [false, true] {
                let x = if is_ss {
                    flood_ss(loaded, r)?
                } else {
                    flood_tokio(loaded, r)?
                };
                table.row(&[
                    format!("{name}, {}", if loaded { "flooded" } else { "unloaded" }),
                    us(x.lat.p50),
                    us(x.lat.p99),
                    us(x.lat.max),
                    format!("{:.2}", x.chunks_per_s / 1e6),
                ]);
                results.push(x);
            }
        }
        let [su, sf, tu, tf] = [results[0], results[1], results[2], results[3]];
        let limit = FLOOD_TARGET * su.lat.p99;
        let met = sf.lat.p99 <= limit;
        println!(
            "  target: ss-runtime flooded p99 {} us <= {FLOOD_TARGET} x its unloaded p99 {} us = \
             {} us: {} ({:.2}x unloaded)",
            us(sf.lat.p99),
            us(su.lat.p99),
            us(limit),
            if met { "met" } else { "MISSED" },
            sf.lat.p99 / su.lat.p99
        );
        for (load, s, t) in [("unloaded", su, tu), ("flooded", sf, tf)] {
            rows.push(Row::new(
                format!("flood, high p50/p99 us, {load}"),
                p50_p99(&s.lat),
                p50_p99(&t.lat),
                Some(s.lat.p99 / t.lat.p99),
            ));
        }
        if let Some(last) = rows.last_mut() {
            last.target = Some((
                format!("p99 <= {FLOOD_TARGET}x unloaded ({})", us(limit)),
                met,
            ));
        }
    }

    // `echo` (TCP round trips through `ss_runtime::net`, against tokio's net)
    // goes here once `ss_runtime::net` exists; see bench/README.md.

    println!();
    println!(
        "== summary: ns rows are medians; us rows are p50 / p99; ss/tokio is the ratio of \
         medians (ns) or of p99s (us)"
    );
    let table = Table::new(&[
        ("workload", 44),
        ("ss-runtime", 13),
        ("tokio", 13),
        ("ss/tokio", 8),
        ("target", 26),
        ("", 6),
    ]);
    for r in &rows {
        let (target, verdict) = match &r.target {
            Some((text, met)) => (text.clone(), if *met { "met" } else { "MISSED" }),
            None => ("-".to_owned(), ""),
        };
        table.row(&[
            r.workload.clone(),
            r.ss.clone(),
            r.tokio.clone(),
            r.ratio
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}x")),
            target,
            verdict.to_owned(),
        ]);
    }
    let judged: Vec<bool> = rows
        .iter()
        .filter_map(|r| r.target.as_ref().map(|t| t.1))
        .collect();
    println!(
        "targets met: {} of {} judged; wall time {:.1} s",
        judged.iter().filter(|m| **m).count(),
        judged.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Prints measurements with their ratio to `base` (the tokio measurement).
fn print_versus(rows: &[(String, Sample)], base: &Sample) {
    let table = Table::new(&[
        ("runtime", 50),
        ("median ns", 10),
        ("min ns", 10),
        ("vs tokio", 9),
    ]);
    for (name, x) in rows {
        table.row(&[
            name.clone(),
            ns(x.median),
            ns(x.min),
            format!("{:.2}x", x.ratio_to(base)),
        ]);
    }
}
