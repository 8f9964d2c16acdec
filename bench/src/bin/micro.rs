//! `micro`: micro-benchmarks of the SharedScheduler core (`ss-core`) against
//! tokio's `current_thread` runtime and async-executor, in the same run.
//!
//! Workloads (names for `--filter`):
//!
//! | name | measures |
//! |---|---|
//! | `spawn` | spawn N trivial coroutines, run them all to completion; ns per coroutine |
//! | `yield-1` | one coroutine yielding M times; ns per yield |
//! | `yield-100` | 100 coroutines yielding M times in all; ns per yield |
//! | `yield-2cpu` | 100 coroutines yielding on 1 and on 2 pollers of one executor; ns per yield |
//! | `wake` | cross-thread wake → poll → the waker sees it; ns per round trip |
//! | `reprio` | `reprio` of a ready and of a blocked coroutine; ns per call |
//! | `pick` | ns per poll of the most important coroutine with R ready, R = 2 … 100 000 |
//!
//! Then a summary with this run's ratios and the targets, each judged met or
//! missed from this run's numbers. See `bench/README.md`.

use std::future::poll_fn;
use std::hint::spin_loop;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser;
use ss_bench::futs::{leak, own_waker, BlockForever, Countdown, Yield};
use ss_bench::harness::{check, time, try_measure, Sample};
use ss_bench::machine::Machine;
use ss_bench::report::{median_or, ns, Table};
use ss_core::{Executor, Priority};

/// The tokio version linked, from `Cargo.lock` (see `build.rs`).
const TOKIO: &str = env!("SS_BENCH_TOKIO_VERSION");
/// The async-executor version linked.
const ASYNC_EXECUTOR: &str = env!("SS_BENCH_ASYNC_EXECUTOR_VERSION");

/// Target: ss-core's yield costs at most this fraction of tokio's.
const YIELD_TARGET: f64 = 0.4;
/// Target: ss-core's spawn-to-completion costs at most this fraction of tokio's.
const SPAWN_TARGET: f64 = 0.5;
/// Target: picking is "flat" when the slowest R costs at most this many times
/// the fastest. Picking itself is one bit scan whatever R; the slack is for the
/// cache misses of cycling through more coroutine control blocks, which no
/// scheduler avoids.
const FLAT_TARGET: f64 = 1.5;

/// Micro-benchmarks of the SharedScheduler core against tokio and async-executor.
#[derive(Parser, Debug)]
#[command(name = "micro", version)]
struct Args {
    #[command(flatten)]
    opts: ss_bench::harness::Options,
}

/// The fixed amounts of work. Chosen per mode, never adapted to the machine.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    /// Coroutines spawned per repetition of `spawn`.
    spawn: usize,
    /// Yields per repetition of `yield-1` and `yield-100`.
    yields: u64,
    /// Round trips per repetition of `wake`.
    wakes: u64,
    /// Calls per repetition of `reprio`.
    reprios: u64,
    /// Coroutines `reprio` cycles through.
    reprio_population: usize,
    /// Timed polls per R of `pick`.
    pick_polls: u64,
}

const FULL: Sizes = Sizes {
    spawn: 100_000,
    yields: 1_000_000,
    wakes: 100_000,
    reprios: 1_000_000,
    reprio_population: 1_000,
    pick_polls: 200_000,
};

const QUICK: Sizes = Sizes {
    spawn: 10_000,
    yields: 100_000,
    wakes: 10_000,
    reprios: 100_000,
    reprio_population: 1_000,
    pick_polls: 20_000,
};

/// Coroutines in `yield-100`.
const YIELDERS: usize = 100;
/// Ready-queue sizes of `pick`.
const PICK_RS: [usize; 6] = [2, 10, 100, 1_000, 10_000, 100_000];
/// The coroutines of `pick` at the most important level; the other R − 2 wait
/// ready at the least important level.
const PICK_TOP: usize = 2;

const WORKLOADS: [(&str, &str); 7] = [
    (
        "spawn",
        "spawn N trivial coroutines, run all to completion (ns per coroutine)",
    ),
    ("yield-1", "one coroutine yielding M times (ns per yield)"),
    (
        "yield-100",
        "100 coroutines at one level, M yields in all (ns per yield)",
    ),
    (
        "yield-2cpu",
        "100 coroutines yielding, driven by 1 and by 2 pollers sharing one executor (ns per yield)",
    ),
    (
        "wake",
        "cross-thread wake -> poll -> waker sees it (ns per round trip)",
    ),
    (
        "reprio",
        "reprio of a ready / a blocked coroutine (ns per call)",
    ),
    (
        "pick",
        "ns per poll of the most important coroutine with R ready",
    ),
];

fn prio(level: u8) -> Priority {
    Priority::new(level).expect("levels 0..8 exist in every executor")
}

/// `ss_core::Error` does not implement `std::error::Error`; carry its message.
fn ss<T>(r: Result<T, ss_core::Error>) -> Result<T> {
    r.map_err(|e| anyhow!("ss-core: {e}"))
}

fn tokio_rt() -> Result<tokio::runtime::Runtime> {
    // No I/O or time driver: none of the workloads needs one, and with neither
    // enabled an idle current_thread runtime parks on a plain condvar.
    tokio::runtime::Builder::new_current_thread()
        .build()
        .context("building the tokio runtime")
}

// ---------------------------------------------------------------- 1. spawn

/// Spawns `n` coroutines that each count themselves, then runs them all.
fn spawn_ss(n: usize) -> Result<Duration> {
    let exec = Executor::new();
    let mut cpu = exec.poller();
    let done = leak(Countdown::new(n));
    let mut result = Ok(());
    let d = time(|| {
        for _ in 0..n {
            if let Err(e) = exec.spawn(async move { done.hit() }, prio(3)) {
                result = Err(e);
                return;
            }
        }
        cpu.run_until_idle();
    });
    ss(result)?;
    check(done.count() == n, "ss-core spawn: not every coroutine ran")?;
    Ok(d)
}

/// The same in tokio. The fairest cheap form: tasks are detached (the
/// `JoinHandle` dropped at once, as ss-core's spawn returns no handle), and the
/// driving future waits on one latch that the last task opens, instead of
/// awaiting N handles (N extra wake-ups) or polling a counter.
fn spawn_tokio(rt: &tokio::runtime::Runtime, n: usize) -> Result<Duration> {
    let done = leak(Countdown::new(n));
    let d = time(|| {
        rt.block_on(async move {
            for _ in 0..n {
                drop(tokio::spawn(async move { done.hit() }));
            }
            done.latch.wait().await;
        })
    });
    check(done.count() == n, "tokio spawn: not every task ran")?;
    Ok(d)
}

/// The same in async-executor: detached tasks, then `try_tick` until idle
/// (its equivalent of `run_until_idle`).
fn spawn_ae(n: usize) -> Result<Duration> {
    let ex = async_executor::Executor::new();
    let done = leak(Countdown::new(n));
    let d = time(|| {
        for _ in 0..n {
            ex.spawn(async move { done.hit() }).detach();
        }
        while ex.try_tick() {}
    });
    check(
        done.count() == n,
        "async-executor spawn: not every task ran",
    )?;
    Ok(d)
}

// ---------------------------------------------------------------- 2. yield

/// `tasks` coroutines at one level, each yielding `per_task` times.
fn yield_ss(tasks: usize, per_task: u64) -> Result<Duration> {
    let exec = Executor::new();
    let mut cpu = exec.poller();
    let done = leak(Countdown::new(tasks));
    let mut result = Ok(());
    let d = time(|| {
        for _ in 0..tasks {
            let r = exec.spawn(ss_yielder(per_task, done), prio(0));
            if let Err(e) = r {
                result = Err(e);
                return;
            }
        }
        cpu.run_until_idle();
    });
    ss(result)?;
    check(
        done.count() == tasks,
        "ss-core yield: not every coroutine finished",
    )?;
    Ok(d)
}

/// The yielding coroutine of the baselines (the same `wake_by_ref` + `Pending`
/// yield as `ss_core::yield_now`, which the ss-core run uses).
async fn yielder(times: u64, done: &'static Countdown) {
    for _ in 0..times {
        Yield::new().await;
    }
    done.hit();
}

/// ss-core's yielding coroutine: the crate's own `yield_now`.
async fn ss_yielder(times: u64, done: &'static Countdown) {
    for _ in 0..times {
        ss_core::yield_now().await;
    }
    done.hit();
}

/// Which yield a tokio task performs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TokioYield {
    /// The same [`Yield`] future every executor runs (`wake_by_ref` + `Pending`).
    Same,
    /// `tokio::task::yield_now()`, what a tokio user writes: it defers the
    /// wake-up until the scheduler next checks its driver, so a yielding task
    /// cannot starve I/O and timers.
    YieldNow,
}

async fn tokio_yielder(times: u64, done: &'static Countdown) {
    for _ in 0..times {
        tokio::task::yield_now().await;
    }
    done.hit();
}

fn yield_tokio(
    rt: &tokio::runtime::Runtime,
    tasks: usize,
    per_task: u64,
    how: TokioYield,
) -> Result<Duration> {
    let done = leak(Countdown::new(tasks));
    let d = time(|| {
        rt.block_on(async move {
            for _ in 0..tasks {
                drop(match how {
                    TokioYield::Same => tokio::spawn(yielder(per_task, done)),
                    TokioYield::YieldNow => tokio::spawn(tokio_yielder(per_task, done)),
                });
            }
            done.latch.wait().await;
        })
    });
    check(
        done.count() == tasks,
        "tokio yield: not every task finished",
    )?;
    Ok(d)
}

fn yield_ae(tasks: usize, per_task: u64) -> Result<Duration> {
    let ex = async_executor::Executor::new();
    let done = leak(Countdown::new(tasks));
    let d = time(|| {
        for _ in 0..tasks {
            ex.spawn(yielder(per_task, done)).detach();
        }
        while ex.try_tick() {}
    });
    check(
        done.count() == tasks,
        "async-executor yield: not every task finished",
    )?;
    Ok(d)
}

// ---------------------------------------------------------------- 2b. yield on 2 CPUs

/// `tasks` coroutines yielding `per_task` times each, driven by `pollers` threads
/// that share one executor (idle pollers spin, then park: `ThreadPlatform`).
/// Wall time from the pollers' start to the last coroutine's end.
fn yield_ss_pollers(pollers: usize, tasks: usize, per_task: u64) -> Result<Duration> {
    use ss_core::platform::ThreadPlatform;
    let exec = std::sync::Arc::new(Executor::with_platform(
        ss_core::Levels::DEFAULT,
        ThreadPlatform::default(),
    ));
    let done = leak(Countdown::new(tasks));
    for _ in 0..tasks {
        ss(exec.spawn(ss_yielder(per_task, done), prio(0)))?;
    }
    let start = Instant::now();
    let threads: Vec<_> = (0..pollers)
        .map(|_| {
            let mut cpu = exec.poller();
            std::thread::spawn(move || cpu.run_while(|| done.count() < tasks))
        })
        .collect();
    while done.count() < tasks {
        std::thread::yield_now();
    }
    let elapsed = start.elapsed();
    exec.unpark_all();
    for t in threads {
        t.join().map_err(|_| anyhow!("a poller thread panicked"))?;
    }
    Ok(elapsed)
}

/// The same on tokio's multi-thread runtime with `workers` workers, each task
/// using `tokio::task::yield_now`.
fn yield_tokio_mt(workers: usize, tasks: usize, per_task: u64) -> Result<Duration> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .build()
        .context("building tokio's multi-thread runtime")?;
    let done = leak(Countdown::new(tasks));
    let d = time(|| {
        rt.block_on(async move {
            for _ in 0..tasks {
                drop(tokio::spawn(tokio_yielder(per_task, done)));
            }
            done.latch.wait().await;
        })
    });
    check(
        done.count() == tasks,
        "tokio multi-thread yield: not every task finished",
    )?;
    Ok(d)
}

// ---------------------------------------------------------------- 3. wake

/// The ping-pong between thread A (the waker) and the coroutine on thread B.
///
/// Round `i`: A stores `ping = i` and wakes the coroutine; the coroutine, once
/// polled, sees `ping >= i`, stores `pong = i` and blocks again (`Pending`
/// without touching its waker); A spins until it sees `pong == i`. A wake that
/// lands while the coroutine is still running is not lost (every executor here
/// polls it again), so each round is exactly one wake and one useful poll.
#[derive(Default)]
struct PingPong {
    ping: AtomicU64,
    pong: AtomicU64,
    /// The coroutine's own waker, published on its first poll.
    waker: Mutex<Option<Waker>>,
    /// Tells thread B's driving loop to return.
    stop: AtomicBool,
}

async fn responder(pp: &'static PingPong, rounds: u64) {
    let w = own_waker().await;
    *pp.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(w);
    for i in 1..=rounds {
        poll_fn(|_| {
            if pp.ping.load(Ordering::Acquire) >= i {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        pp.pong.store(i, Ordering::Release);
    }
}

/// How long thread A waits for the coroutine to start or to answer before
/// calling the run broken (a lost wake-up would otherwise hang the benchmark).
const PATIENCE: Duration = Duration::from_secs(10);

/// Thread A: waits for the coroutine to start, then times `rounds` round trips.
fn ping(pp: &PingPong, rounds: u64, mut wake: impl FnMut(&Waker) -> bool) -> Result<Duration> {
    let since = Instant::now();
    let waker = loop {
        if let Some(w) = pp.waker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            break w;
        }
        check(
            since.elapsed() < PATIENCE,
            "wake: the coroutine never started",
        )?;
        std::thread::yield_now();
    };
    let mut failure = None;
    let d = time(|| {
        for i in 1..=rounds {
            pp.ping.store(i, Ordering::Release);
            if !wake(&waker) {
                failure = Some(format!("wake: round {i}: the wake-up call failed"));
                return;
            }
            let mut spins = 0u32;
            let mut slow_since = None;
            while pp.pong.load(Ordering::Acquire) < i {
                spin_loop();
                spins = spins.wrapping_add(1);
                // A slow round (preempted, or broken): read the clock, rarely.
                if spins % 4096 == 0 {
                    let t = *slow_since.get_or_insert_with(Instant::now);
                    if t.elapsed() > PATIENCE {
                        failure = Some(format!("wake: round {i}: no answer (lost wake-up?)"));
                        return;
                    }
                }
            }
        }
    });
    pp.stop.store(true, Ordering::Release);
    match failure {
        Some(f) => bail!("{f}"),
        None => Ok(d),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum WakeBy {
    Cid,
    Waker,
}

/// How thread B drives ss-core's poller.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Drive {
    /// `Poller::run_while` on `SpinPlatform`: the API's own loop; when idle it
    /// registers as a sleeper and "parks" (a short spin), then looks again.
    RunWhile,
    /// `run_once` in a bare loop with one spin hint when idle: no park step at
    /// all, to show what the idle path of `run_while` adds.
    RunOnce,
}

/// ss-core: B drives the poller per `drive` (never sleeping in the OS), A wakes
/// by id or through the stored `Waker`.
fn wake_ss(rounds: u64, by: WakeBy, drive: Drive) -> Result<Duration> {
    let exec = Executor::new();
    let pp = leak(PingPong::default());
    std::thread::scope(|s| {
        let exec = &exec;
        s.spawn(move || {
            let mut cpu = exec.poller();
            let go = || !pp.stop.load(Ordering::Acquire);
            match drive {
                Drive::RunWhile => {
                    cpu.run_while(go);
                }
                Drive::RunOnce => {
                    while go() {
                        if !cpu.run_once() {
                            spin_loop();
                        }
                    }
                }
            }
        });
        let started = ss(exec.spawn(responder(pp, rounds), prio(2)));
        let d = started.and_then(|cid| {
            ping(pp, rounds, |w| match by {
                WakeBy::Cid => exec.wake(cid).is_ok(),
                WakeBy::Waker => {
                    w.wake_by_ref();
                    true
                }
            })
        });
        pp.stop.store(true, Ordering::Release);
        exec.unpark_all();
        d
    })
}

/// tokio: B runs a current_thread runtime whose `block_on` future yields in a
/// loop (so the runtime never sleeps in the OS either); the responder is a
/// spawned task, woken from A through its stored `Waker` (tokio's remote
/// schedule: the inject queue).
fn wake_tokio(rounds: u64) -> Result<Duration> {
    let pp = leak(PingPong::default());
    std::thread::scope(|s| {
        let b = s.spawn(move || -> Result<()> {
            let rt = tokio_rt()?;
            rt.block_on(async move {
                drop(tokio::spawn(responder(pp, rounds)));
                while !pp.stop.load(Ordering::Acquire) {
                    Yield::new().await;
                }
            });
            Ok(())
        });
        let d = ping(pp, rounds, |w| {
            w.wake_by_ref();
            true
        });
        pp.stop.store(true, Ordering::Release);
        b.join().map_err(|_| anyhow!("tokio thread panicked"))??;
        d
    })
}

/// async-executor: B calls `try_tick` in a loop, spinning when idle.
fn wake_ae(rounds: u64) -> Result<Duration> {
    let pp = leak(PingPong::default());
    let ex = async_executor::Executor::new();
    ex.spawn(responder(pp, rounds)).detach();
    std::thread::scope(|s| {
        let ex = &ex;
        s.spawn(move || {
            while !pp.stop.load(Ordering::Acquire) {
                if !ex.try_tick() {
                    spin_loop();
                }
            }
        });
        let d = ping(pp, rounds, |w| {
            w.wake_by_ref();
            true
        });
        pp.stop.store(true, Ordering::Release);
        d
    })
}

// ---------------------------------------------------------------- 4. reprio

/// `ops` calls of `reprio`, cycling through `population` coroutines that are
/// all ready (queued, never polled) or all blocked. Every call changes the
/// coroutine's level: coroutine `j` is at `(j + round) % 8` and moves to
/// `(j + round + 1) % 8`, so a ready one really moves between queues.
fn reprio_ss(population: usize, ops: u64, blocked: bool) -> Result<Duration> {
    let exec = Executor::new();
    let mut cids = Vec::with_capacity(population);
    for j in 0..population {
        cids.push(ss(exec.spawn(BlockForever, prio((j % 8) as u8)))?);
    }
    if blocked {
        exec.poller().run_until_idle();
        check(exec.ready_len() == 0, "reprio: not all blocked")?;
    } else {
        check(exec.ready_len() == population, "reprio: not all ready")?;
    }
    let levels: Vec<Priority> = (0..8).map(prio).collect();
    let mut result = Ok(());
    let d = time(|| {
        let (mut j, mut round) = (0usize, 0usize);
        for _ in 0..ops {
            let to = levels[(j + round + 1) % 8];
            if let Err(e) = exec.reprio(cids[j], to) {
                result = Err(e);
                return;
            }
            j += 1;
            if j == population {
                j = 0;
                round += 1;
            }
        }
    });
    ss(result)?;
    Ok(d)
}

// ---------------------------------------------------------------- 5. pick

/// Shared state of one `pick` repetition. Every task counts its polls in
/// `polls`; the poll numbered `start_at` and the one numbered `end_at` read the
/// clock; every poll from `end_at` on finishes its task. Until then each task
/// yields, so exactly R tasks stay ready while the timed polls run.
struct Pick {
    polls: AtomicU64,
    start_at: u64,
    end_at: u64,
    t0: OnceLock<Instant>,
    t1: OnceLock<Instant>,
    done: Countdown,
}

impl Pick {
    /// Every one of the `r` tasks is polled during warm-up (FIFO baselines).
    fn new(r: usize, timed: u64) -> Self {
        Self::with_warm_up(r, r as u64 + timed / 10, timed)
    }

    /// Warm up with `warm_up` polls, then time `timed` polls.
    fn with_warm_up(r: usize, warm_up: u64, timed: u64) -> Self {
        let start_at = warm_up;
        Pick {
            polls: AtomicU64::new(0),
            start_at,
            end_at: start_at + timed,
            t0: OnceLock::new(),
            t1: OnceLock::new(),
            done: Countdown::new(r),
        }
    }

    fn elapsed(&self) -> Result<Duration> {
        match (self.t0.get(), self.t1.get()) {
            (Some(a), Some(b)) => Ok(b.duration_since(*a)),
            _ => bail!("pick: the timed polls did not all happen"),
        }
    }
}

async fn picked(ctx: &'static Pick) {
    loop {
        let n = ctx.polls.fetch_add(1, Ordering::Relaxed);
        if n == ctx.start_at {
            let _ = ctx.t0.set(Instant::now());
        } else if n == ctx.end_at {
            let _ = ctx.t1.set(Instant::now());
        }
        if n >= ctx.end_at {
            break;
        }
        Yield::new().await;
    }
    ctx.done.hit();
}

/// ss-core: `PICK_TOP` coroutines at level 0 take turns (each yield puts one
/// behind the other, so every poll is a real pick from the queue), while the
/// other R − 2 wait ready at level 7. Every pick must find level 0 among R ready
/// coroutines; the less important ones run (once, to finish) only afterwards.
fn pick_ss(r: usize, timed: u64) -> Result<Duration> {
    let exec = Executor::new();
    let ctx = leak(Pick::with_warm_up(r, timed / 10, timed));
    for i in 0..r {
        let level = if i < PICK_TOP { 0 } else { 7 };
        ss(exec.spawn(picked(ctx), prio(level)))?;
    }
    exec.poller().run_until_idle();
    check(ctx.done.count() == r, "pick ss-core: not all finished")?;
    ctx.elapsed()
}

fn pick_tokio(rt: &tokio::runtime::Runtime, r: usize, timed: u64) -> Result<Duration> {
    let ctx = leak(Pick::new(r, timed));
    rt.block_on(async move {
        for _ in 0..r {
            drop(tokio::spawn(picked(ctx)));
        }
        ctx.done.latch.wait().await;
    });
    ctx.elapsed()
}

fn pick_ae(r: usize, timed: u64) -> Result<Duration> {
    let ex = async_executor::Executor::new();
    let ctx = leak(Pick::new(r, timed));
    for _ in 0..r {
        ex.spawn(picked(ctx)).detach();
    }
    while ex.try_tick() {}
    check(
        ctx.done.count() == r,
        "pick async-executor: not all finished",
    )?;
    ctx.elapsed()
}

// ---------------------------------------------------------------- driver

/// One line of the summary.
struct Row {
    workload: String,
    ss: Option<Sample>,
    tokio: Option<Sample>,
    ae: Option<Sample>,
    /// The workload has no baseline (tokio and async-executor have no priorities).
    no_baseline: bool,
    /// `(text, met)`.
    target: Option<(String, bool)>,
}

impl Row {
    fn new(workload: &str, ss: Sample, tokio: Sample, ae: Option<Sample>) -> Self {
        Row {
            workload: workload.to_owned(),
            ss: Some(ss),
            tokio: Some(tokio),
            ae,
            no_baseline: false,
            target: None,
        }
    }

    fn ss_only(workload: &str, ss: Sample) -> Self {
        Row {
            workload: workload.to_owned(),
            ss: Some(ss),
            tokio: None,
            ae: None,
            no_baseline: true,
            target: None,
        }
    }

    /// Judges `ss <= max × tokio` on this run's medians.
    fn versus_tokio(mut self, max: f64) -> Self {
        if let (Some(s), Some(t)) = (&self.ss, &self.tokio) {
            let r = s.ratio_to(t);
            self.target = Some((format!("<= {max:.2}x tokio"), r <= max));
        }
        self
    }
}

fn section(name: &str, what: &str) {
    println!();
    println!("== {name}: {what}");
}

/// Prints measurements with their ratio to `base` (the tokio measurement).
fn print_versus(rows: &[(String, Sample)], base: &Sample) {
    let table = Table::new(&[
        ("executor", 46),
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

fn tokio_name() -> String {
    format!("tokio {TOKIO} current_thread")
}

fn ae_name() -> String {
    format!("async-executor {ASYNC_EXECUTOR}")
}

fn main() -> Result<()> {
    let args = Args::parse();
    let Some((selected, plan)) = args.opts.start(&WORKLOADS)? else {
        return Ok(());
    };
    let run = |name: &str| selected.contains(&name);
    let sizes = if args.opts.quick { QUICK } else { FULL };

    // First line: the machine.
    println!("{}", Machine::detect());
    println!(
        "baselines: tokio {TOKIO} current_thread runtime (feature rt, no drivers); \
         async-executor {ASYNC_EXECUTOR} Executor driven by try_tick; same futures everywhere"
    );
    println!(
        "mode: {}; {} timed repetitions after {} warm-up; median and min ns per operation",
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
    let rt = tokio_rt()?;
    let mut rows: Vec<Row> = Vec::new();
    let started = Instant::now();

    if run("spawn") {
        let n = sizes.spawn;
        section(
            "spawn",
            &format!("spawn {n} trivial coroutines, then run all to completion; ns per coroutine"),
        );
        let s = try_measure(plan, n as u64, || spawn_ss(n))?;
        let t = try_measure(plan, n as u64, || spawn_tokio(&rt, n))?;
        let a = try_measure(plan, n as u64, || spawn_ae(n))?;
        print_versus(
            &[("ss-core".to_owned(), s), (tokio_name(), t), (ae_name(), a)],
            &t,
        );
        rows.push(Row::new("spawn-to-completion", s, t, Some(a)).versus_tokio(SPAWN_TARGET));
    }

    for (name, tasks, label) in [
        ("yield-1", 1, "1 coroutine"),
        ("yield-100", YIELDERS, "100 coroutines"),
    ] {
        if !run(name) {
            continue;
        }
        let per = sizes.yields / tasks as u64;
        let m = per * tasks as u64;
        section(
            name,
            &format!("{tasks} coroutine(s) at one level, {per} yields each; ns per yield"),
        );
        let s = try_measure(plan, m, || yield_ss(tasks, per))?;
        let t = try_measure(plan, m, || yield_tokio(&rt, tasks, per, TokioYield::Same))?;
        let tn = try_measure(plan, m, || {
            yield_tokio(&rt, tasks, per, TokioYield::YieldNow)
        })?;
        let a = try_measure(plan, m, || yield_ae(tasks, per))?;
        print_versus(
            &[
                ("ss-core, ss_core::yield_now()".to_owned(), s),
                (format!("{}, same waker-yield future", tokio_name()), t),
                (format!("{}, task::yield_now()", tokio_name()), tn),
                (ae_name(), a),
            ],
            &t,
        );
        // The target compares each runtime's own yield primitive (ss-core's
        // `yield_now` against `tokio::task::yield_now`, what users of each write);
        // the same-future row is shown beside it for information.
        rows.push(Row::new(&format!("yield_now, {label}"), s, tn, None).versus_tokio(YIELD_TARGET));
        rows.push(Row::new(
            &format!("yield, {label}, same waker-yield future everywhere"),
            s,
            t,
            Some(a),
        ));
    }

    if run("yield-2cpu") {
        let tasks = YIELDERS;
        let per = sizes.yields / tasks as u64;
        let m = per * tasks as u64;
        section(
            "yield-2cpu",
            &format!(
                "{tasks} coroutines at one level, {per} yields each, on 1 and on 2 pollers \
                 sharing one executor; ns per yield (wall time / yields)"
            ),
        );
        println!(
            "  does the ready lock cost when two CPUs take turns on it? 2 pollers at ~the 1-poller \
             cost or better means no; tokio multi_thread (2 workers, task::yield_now) beside"
        );
        let one = try_measure(plan, m, || yield_ss_pollers(1, tasks, per))?;
        let two = try_measure(plan, m, || yield_ss_pollers(2, tasks, per))?;
        let t2 = try_measure(plan, m, || yield_tokio_mt(2, tasks, per))?;
        print_versus(
            &[
                ("ss-core, 1 poller".to_owned(), one),
                ("ss-core, 2 pollers, one executor".to_owned(), two),
                (format!("tokio {TOKIO} multi_thread, 2 workers"), t2),
            ],
            &t2,
        );
        rows.push(Row::new(
            "yield_now, 2 pollers vs tokio 2 workers",
            two,
            t2,
            None,
        ));
    }

    if run("wake") {
        let m = sizes.wakes;
        section(
            "wake",
            &format!(
                "{m} cross-thread round trips: A wakes, B polls, A sees it; ns per round trip"
            ),
        );
        println!(
            "  thread B never sleeps in the OS, so parking costs are excluded: ss-core's poller \
             spins (SpinPlatform), tokio's block_on future yields in a loop, async-executor \
             spins on try_tick"
        );
        let by_cid = try_measure(plan, m, || wake_ss(m, WakeBy::Cid, Drive::RunWhile))?;
        let by_waker = try_measure(plan, m, || wake_ss(m, WakeBy::Waker, Drive::RunWhile))?;
        let by_cid_once = try_measure(plan, m, || wake_ss(m, WakeBy::Cid, Drive::RunOnce))?;
        let t = try_measure(plan, m, || wake_tokio(m))?;
        let a = try_measure(plan, m, || wake_ae(m))?;
        print_versus(
            &[
                ("ss-core, exec.wake(cid), B: run_while".to_owned(), by_cid),
                ("ss-core, stored Waker, B: run_while".to_owned(), by_waker),
                (
                    "ss-core, exec.wake(cid), B: run_once loop".to_owned(),
                    by_cid_once,
                ),
                (format!("{}, stored Waker", tokio_name()), t),
                (format!("{}, stored Waker", ae_name()), a),
            ],
            &t,
        );
        rows.push(Row::new("cross-thread wake, by cid", by_cid, t, Some(a)));
        rows.push(Row::new(
            "cross-thread wake, by Waker",
            by_waker,
            t,
            Some(a),
        ));
    }

    if run("reprio") {
        let (m, pop) = (sizes.reprios, sizes.reprio_population);
        section(
            "reprio",
            &format!("{m} reprio calls over {pop} coroutines, each to a new level; ns per call"),
        );
        let ready = try_measure(plan, m, || reprio_ss(pop, m, false))?;
        let blocked = try_measure(plan, m, || reprio_ss(pop, m, true))?;
        let table = Table::new(&[("coroutine state", 46), ("median ns", 10), ("min ns", 10)]);
        for (what, x) in [
            ("ready (moves between queues)", ready),
            ("blocked (kept for its next queueing)", blocked),
        ] {
            table.row(&[what.to_owned(), ns(x.median), ns(x.min)]);
        }
        println!("  tokio, async-executor: no equivalent (no priorities)");
        rows.push(Row::ss_only("reprio, ready", ready));
        rows.push(Row::ss_only("reprio, blocked", blocked));
    }

    if run("pick") {
        let p = sizes.pick_polls;
        section(
            "pick",
            &format!("R ready coroutines; {p} timed polls per R; ns per poll"),
        );
        println!(
            "  ss-core: 2 coroutines at level 0 take turns while R - 2 wait ready at level 7; \
             each poll is a pick of the most important among R\n  \
             baselines (no priorities, FIFO): cycle through all R, shown for information"
        );
        let table = Table::new(&[
            ("R", 9),
            ("ss median", 10),
            ("ss min", 10),
            ("tokio", 10),
            ("async-exec", 10),
        ]);
        let mut medians = [Vec::new(), Vec::new(), Vec::new()];
        for r in PICK_RS {
            let s = try_measure(plan, p, || pick_ss(r, p))?;
            let t = try_measure(plan, p, || pick_tokio(&rt, r, p))?;
            let a = try_measure(plan, p, || pick_ae(r, p))?;
            table.row(&[
                r.to_string(),
                ns(s.median),
                ns(s.min),
                ns(t.median),
                ns(a.median),
            ]);
            for (v, x) in medians.iter_mut().zip([s, t, a]) {
                v.push(x.median);
            }
        }
        let [s, t, a] = medians.map(|v| {
            let max = v.iter().copied().fold(f64::MIN, f64::max);
            let min = v.iter().copied().fold(f64::MAX, f64::min);
            max / min
        });
        table.row(&[
            "max/min".to_owned(),
            format!("{s:.2}x"),
            String::new(),
            format!("{t:.2}x"),
            format!("{a:.2}x"),
        ]);
        rows.push(Row {
            workload: format!(
                "pick, R = {}..{}: max/min",
                PICK_RS[0],
                PICK_RS[PICK_RS.len() - 1]
            ),
            ss: None,
            tokio: None,
            ae: None,
            no_baseline: false,
            target: Some((
                format!("flat: {s:.2}x <= {FLAT_TARGET:.2}x"),
                s <= FLAT_TARGET,
            )),
        });
    }

    println!();
    println!("== summary: ns per operation (medians); targets judged on this run's numbers");
    let table = Table::new(&[
        ("workload", 42),
        ("ss-core", 8),
        ("tokio", 8),
        ("async-ex", 8),
        ("ss/tokio", 8),
        ("target", 22),
        ("", 6),
    ]);
    for r in &rows {
        let none = if r.no_baseline { "n/a" } else { "-" };
        let ratio = match (&r.ss, &r.tokio) {
            // Three decimals, so that a ratio just over a target shows it.
            (Some(s), Some(t)) => format!("{:.3}x", s.ratio_to(t)),
            _ => none.to_owned(),
        };
        let (target, verdict) = match &r.target {
            Some((text, met)) => (text.clone(), if *met { "met" } else { "MISSED" }),
            None if r.no_baseline => ("no equivalent".to_owned(), ""),
            None => ("-".to_owned(), ""),
        };
        table.row(&[
            r.workload.clone(),
            median_or(r.ss.as_ref(), "-"),
            median_or(r.tokio.as_ref(), none),
            median_or(r.ae.as_ref(), none),
            ratio,
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
