//! The platform the workers run the executor on: `ss_core`'s hooks, Linux side.
//!
//! # With io_uring: every worker sleeps on its own ring
//!
//! Each worker owns an io_uring ring (see [`crate::io`]) and an eventfd whose
//! `READ` is kept armed on that ring. [`Park::park`] submits the worker's pending
//! SQEs and blocks in `io_uring_enter(GETEVENTS, min_complete = 1)`: the worker
//! sleeps until a completion of *its* ring (an I/O result, a timer) or an unpark
//! (a write to its eventfd completes the armed read). Completions reaped on the way
//! out wake their coroutines, which this worker, being awake, runs itself.
//! Pushes from inside a poll leave waking a parked worker to the poller, which
//! does it as the poll ends if work is left over (`Park::defer_unpark`); a
//! poll that runs on long is answered by the watch ([`crate::watch`]), which
//! wakes a parked worker for ready work nobody popped between two of its looks.
//!
//! ```text
//!   unpark_one (any thread) ──lock──► permits / parked set ──pick one──► write(eventfd)
//!                                                                          │
//!   park (worker W) ──lock: take a permit, or join the parked set──►  io_uring_enter(W's ring,
//!                                                                       GETEVENTS, min 1)
//! ```
//!
//! The `Park` contract (a counting semaphore) is kept by one lock around a permit
//! count and the set of parked workers: `unpark_one` either hands its permit to a
//! parked worker (removing it from the set, then writing its eventfd) or, with
//! nobody parked, banks it, and the next `park` takes it and returns at once. A
//! worker woken by its own ring rather than picked leaves the set itself (a
//! spurious return, which the contract allows). Every `unpark_one` is honoured as
//! such: an earlier version let a ring-woken worker absorb the first unpark its
//! own completions caused, but that breaks the one-to-one match between the
//! executor's sleeper claims and real wake-ups (the claim may have meant another
//! parked worker, which would then sleep uncounted), and it measured no gain.
//!
//! **At most half the workers spin at a time** (at least one; the rest park at
//! once, as tokio lets at most half its workers search for work). Every
//! spinner holds a CPU that a thread of the same machine — the process's own
//! client, the worker whose ring holds a completion — may be waiting for.
//! Measured with `rtecho --connections 64 --rounds 3` (2 workers, nudging on,
//! ss ÷ tokio throughput in the same run): both workers free to spin 0.79 –
//! 0.82 ×, one spinner at a time 0.91 – 0.98 ×.
//!
//! **A worker spins only while its spins pay** ([`SpinOdds`]; opt out with
//! [`Builder::adaptive_spin`](crate::Builder::adaptive_spin)): with events
//! further apart than the spin, every spin times out, burns its CPU, and makes
//! the next wake-up of another thread on that CPU a reschedule IPI. Measured
//! with `ssbench server --model kcuc` at 1 024 connections every 100 ms: server
//! CPU 0.46 → 0.17, p99 0.6–0.8 ms → 0.22–0.28 ms (`docs/runtime.md`).
//!
//! **No worker spins while the rest of the machine wants the CPU**
//! ([`Contention::crowded`], from the first worker's quarter-second reading of
//! `/proc/stat`, the same verdict that holds the reserve below; with
//! [`Builder::reserve_after`](crate::Builder::reserve_after) zero there is no
//! reading, and workers spin as before): once the other
//! processes take half of the CPUs beyond one (back on at a third), a spin
//! that pays by its own measure still takes the CPU a load generator beside
//! the server needs. Measured with `ssbench server --model kcuc` and `ssbench
//! load --connections 64 --interval 0` (the client takes ~0.65 CPU), four
//! alternating pairs on 2026-11-28: 137.6–143.3 k responses/s against
//! 126.7–134.4 k with the spin on; at 1 024 connections every 100 ms (the
//! client ~0.2 CPU, spins stay on) p50 52–58 µs either way, and `rtecho`'s
//! single connection (client 0.3 CPU) kept 2.7–2.8 × tokio's throughput. The
//! reading is taken at the first worker's beats (every 16 polls), so once the
//! process falls nearly idle the last verdict stands until work comes back.
//!
//! While a worker spins idle (`spin_idle`) it runs its ring every
//! [`RUN_RING_EVERY`] spin rounds (no wait), so completions are delivered without
//! sleeping; busy workers run it every few coroutine polls
//! (`crate::io::reap_now_and_then`).
//!
//! # Sharing the CPUs with other threads (opt-in)
//!
//! A worker that always has work never sleeps, and a thread woken beside it
//! (the process's own client, or the other worker whose io_uring ring holds a
//! connection's completion) can then wait for the kernel's next tick (4 ms at
//! HZ = 250, as here). [`Builder::os_yield_after`](crate::Builder::os_yield_after)
//! makes a worker that has run that long without sleeping call `sched_yield`
//! between two polls ([`OsYield`]). It is off by default because it cuts both
//! ways — measured on this 2-vCPU machine (release builds, quiet machine):
//!
//! | workload | off | `os_yield_after(20 µs)` |
//! |---|---|---|
//! | `rtecho --connections 64` (client in another process): ss p99 ÷ tokio p99 | 4–9 × | 0.8–2.1 × (two runs), throughput 1.01–1.03 × |
//! | `coordbench`, server beside an uncoordinated CPU flood of equal weight: server p50 | 0.12 ms | 6.3 ms |
//!
//! A yield hands the CPU to whatever else is runnable, and a CPU-bound
//! neighbour keeps it for a whole time slice. Turn it on for a process that
//! shares its CPUs with threads that mostly sleep (its own clients, other
//! servers), not beside batch jobs of the same weight. An idle worker's spin
//! does not yield, for the same reason: a spin that called `sched_yield` every
//! ~2 µs, together with the busy yield, met every `rtecho` target (p99
//! 0.43–0.74 × tokio's at 64 connections, two runs) but made the coordbench
//! server's p50 beside the equal-weight flood 280 ms.
//!
//! # A worker left waiting for a CPU (on by default)
//!
//! A worker about to park moves another worker that has not polled for
//! [`Builder::nudge_after`](crate::Builder::nudge_after) (100 µs) onto its own
//! CPU: that one is nearly always runnable but waiting behind another thread,
//! and the completions of its ring wait with it. See [`crate::nudge`].
//!
//! # One worker while the machine is crowded (on by default)
//!
//! [`Builder::reserve_after`](crate::Builder::reserve_after) (10 ms by
//! default): while the other processes take half or more of the CPUs beyond
//! one (the verdict that also stops the idle spin), a worker
//! other than the first that finds nothing to do is held **in reserve**
//! (`Park::enter_reserve`): it parks on its ring without registering as a
//! sleeper, so no push wakes it, and it skips the idle spin (which runs its
//! ring). It still delivers its own ring's completions, leaving the coroutines
//! they wake to the others (the unparks those pushes deferred go to a
//! registered sleeper). It comes out when the first worker, at its beats, has
//! had work waiting without sleeping for `reserve_after` (a call-out: its
//! doorbell), when it finds the ready work stalled — waiting at two of its
//! timed looks (1 ms apart, backing off to 8 ms while nothing waits) with
//! nothing popped between them: the first worker is stuck in a poll or off its
//! CPU — or when the machine frees up. It goes back when it next finds nothing
//! to do. Its doorbell says whether it is in reserve (`Parker::reserved`):
//! a multishot receive armed on its ring follows its reader to the worker
//! that polls it (`io::multishot`), where single-shot operations move by
//! themselves.
//!
//! ```text
//!   W0 (first): polls everything      W1 (in reserve): io_uring_enter(min 1, ≤ 1–8 ms)
//!   at each beat: work waiting since     ├─ own completions: wake their coroutines, hand
//!   ≥ reserve_after without a park? ──►  │   the unparks to W0, park again
//!       call out: write(W1's eventfd)    ├─ called out: poll until idle, then back
//!   every 250 ms: others' CPU time       └─ timed look: work waiting, no pop since last look?
//!   from /proc/stat − getrusage(self)        come out
//! ```
//!
//! *When*: the first worker measures, over quarter-second windows, the CPU the
//! rest of the machine takes (`/proc/stat`'s busy ticks, steal included, less
//! this process's `getrusage`); from 0.5 × (CPUs − 1) the reserve holds, from
//! a third down it is called out and stays out
//! ([`Builder::reserve_always`](crate::Builder::reserve_always) skips the
//! test). *Why*: a connection's operations go to the ring of whichever worker
//! polled it last, and only that worker can deliver their completions. With
//! two workers and less than two CPUs to spare, the workers and the neighbour take turns
//! on the CPUs, and whenever the OS keeps a worker waiting its connections wait
//! with it; on one worker they gather on one ring and the three threads become
//! two. With CPUs to spare, two workers are better: held in reserve at the
//! paper's closed loop (`ssbench`, 1 024 connections every 100 ms, a client
//! taking a quarter of a CPU) one worker off its CPU stalled every connection
//! (p50 132–136 µs, p99 1.3–3.5 ms against 63–133 µs, 0.5–2.4 ms without) —
//! hence the test of the machine, which leaves that case alone.
//!
//! The reserve held from 0.8 × (CPUs − 1) until 2026-11-29 (and ended at
//! 0.6 ×). A back-to-back client at 64 connections takes 0.65–0.7 CPU here,
//! inside that band, so whether the reserve held depended on whether one
//! quarter second had reached 0.8 — runs were bimodal: p99 1.5 ms in some,
//! 4.2–4.9 ms in most, the two workers then time-sharing one CPU. Measured
//! with `ssbench server --model kcuc --levels 1` against `ssbench load
//! --connections 64 --interval 0`, four alternations: the old band 81–97 k
//! responses/s, p99 2.1–4.3 ms; from half the spare CPUs 94–101 k, p99
//! 1.3–1.6 ms (tokio 92–105 k, 1.3–1.6 ms). At 1 024 connections every
//! 100 ms (the client ~0.25 CPU, below a third) nothing changed.
//!
//! Measured (2026-11-28, `rtecho --connections 64`, 2 workers each, ss ÷ tokio
//! in the same run; the client process takes ~0.95 CPU): without the reserve
//! (`--reserve-us 0`) 0.95–0.98× throughput, p99 3.5–3.6×; held regardless of
//! the machine, 3 ms 1.02–1.03×, p99 0.95–1.04×, 10 ms 1.04×, p99 0.59–0.63×;
//! the default 1.00–1.06×, p99 0.54–0.80× (`docs/runtime.md`). Tried and
//! dropped: letting the worker in reserve run what its own ring woke while the
//! first worker sleeps (no change); testing the machine by `/proc/loadavg`'s
//! runnable threads sampled at the first worker's beats (they see the client
//! running whenever the first worker runs, and called the light load
//! contended).
//!
//! # Without io_uring
//!
//! If the runtime has no io_uring at all, parking is
//! [`ThreadPlatform`]'s: spin for `idle_spin`, then a condition variable. A worker
//! that has no ring of its own in a runtime that has io_uring (its ring could not
//! be set up) blocks in `read(2)` on its eventfd instead, through the same
//! permit/parked-set logic.
//!
//! # Checked with loom
//!
//! The permits and the reserve are [`Sleepers`] and [`Reserve`]; under
//! `--cfg loom` their locks and flags are loom's and a worker's eventfd and
//! ring wait stand in as `Doorbell` (its writes coalesce as an eventfd's do,
//! and another completion on the ring ends the wait too), so the models at
//! the end of this file (`cargo xtask test --only loom`) check the code the
//! workers run:
//!
//! - `every_unpark_wakes_a_parked_worker_or_is_banked_for_the_next_park`: two
//!   workers park while two unparks race them (up to four preemptions); both
//!   return, no permit is left banked, nobody is left in the set, no doorbell
//!   is left rung, and no worker is parked while a permit is banked. Splitting
//!   the permit check and the join into two lock sections deadlocks it.
//! - `an_unpark_racing_a_ring_wake_up_is_not_absorbed`: a worker parks until it
//!   sees a push, its own ring wakes it meanwhile, and the push's unpark
//!   races both: it always sees the push, and never stays in the set once
//!   back (with the ring-woken worker's leaving taken out it does).
//! - `a_call_out_reaches_a_worker_entering_reserve`: a worker goes into
//!   reserve between two call-outs and waits on its doorbell alone (no timed
//!   looks); one of the two calls it out. With `held` written outside the
//!   list's lock (the code before 2026-11-29's review) loom finds the worker
//!   waiting for good.
//! - `a_call_out_leaves_the_reserved_mark_to_a_worker_back_in`: a worker called
//!   out while its own ring wakes it goes back into reserve before the
//!   call-out has finished; its reserved mark must still say so. With the
//!   marks cleared after the call-out's lock (as until 2026-11-30) it ended
//!   listed but unmarked, and the multishot receives armed on its ring no
//!   longer followed their readers off it.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
// The parking and reserve handshakes' primitives are loom's under `--cfg
// loom`, so that the models at the end of this file check the code we run.
#[cfg(loom)]
use loom::sync::{atomic::AtomicBool, Mutex, MutexGuard};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
#[cfg(not(loom))]
use std::sync::{atomic::AtomicBool, Mutex, MutexGuard};
use std::time::Duration;

use ss_core::platform::{Clock, Critical, Park, Platform, ThreadPlatform};

/// How long a worker waiting for an executor lock whose holder the OS
/// preempted sleeps before it looks again (`Critical::lock_wait`). Spinning
/// instead would hold this CPU until the holder runs again — a scheduler tick
/// or more, and the holder may be queued on this very CPU; a sleeping waiter
/// leaves it to whatever can run, and comes back as a woken thread. Measured
/// with `rtbench --filter yield` (100 coroutines yielding on 2 workers):
/// beside a CPU hog of the same weight, 23–25 ns per yield against 37–42 ns
/// spinning (2026-11-27, four runs each); alone no different (228–295 ns
/// either way); `ssbench` `kcuc` at 1 024 saturating connections and `rtecho
/// --connections 64` no different either.
const LOCK_WAIT_SLEEP: Duration = ThreadPlatform::LOCK_WAIT_SLEEP;

/// How long a worker in reserve sleeps before it looks whether the ready work
/// stalled, at first; doubled (up to [`RESERVE_LOOK_MAX`]) while it finds
/// nothing waiting at its looks, so an idle process's reserve wakes rarely.
const RESERVE_LOOK: Duration = Duration::from_millis(1);

/// See [`RESERVE_LOOK`].
const RESERVE_LOOK_MAX: Duration = Duration::from_millis(8);

/// The workers held in reserve and the first worker's backlog (see the module
/// docs, "One worker while the machine leaves this process one CPU").
#[derive(Debug, Default)]
struct Reserve {
    /// Workers beyond the first stay in reserve when idle (cleared by a
    /// call-out, set again by a worker that goes idle). Written only under
    /// `parked`'s lock, so that a call-out either finds a worker entering
    /// reserve listed (and rings it) or comes after that worker set it —
    /// never between, which left `held` set with the worker neither listed
    /// nor marked reserved, out of the next call-out's reach (found in
    /// review, 2026-11-29; the loom model
    /// `a_call_out_reaches_a_worker_entering_reserve` fails without it).
    held: AtomicBool,
    /// The doorbells of the workers in reserve now.
    parked: Mutex<Vec<Arc<Parker>>>,
    /// The rest of the machine takes half or more of the CPUs beyond one
    /// (see [`Contention::crowded`]): only then are workers held in reserve,
    /// and then no worker spins when idle.
    crowded: std::sync::atomic::AtomicBool,
    /// Since when (ns since the platform's origin, + 1) the first worker has
    /// had work waiting at each of its beats without sleeping in between; 0:
    /// it has not.
    backlog_since: std::sync::atomic::AtomicU64,
}

/// How much CPU the rest of the machine takes: over windows of
/// [`Contention::WINDOW`], the busy time of all CPUs (`/proc/stat`'s first
/// line, steal included) less this process's own (`getrusage`). Sampled by the
/// first worker at its beats; a read of `/proc/stat` costs ~10 µs, four times
/// a second.
struct Contention {
    stat: Option<std::fs::File>,
    /// When (ns since the platform's origin) the window started.
    since_ns: u64,
    /// All CPUs' busy and total ticks, and this process's CPU time (µs), at
    /// the window's start.
    start: Option<Times>,
    cpus: u64,
}

/// One reading for [`Contention`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Times {
    /// Busy ticks of all CPUs (USER_HZ), steal included.
    busy: u64,
    /// All ticks of all CPUs.
    total: u64,
    /// This process's CPU time, µs.
    own_us: u64,
}

impl Contention {
    const WINDOW: Duration = Duration::from_millis(250);

    fn new() -> Self {
        Contention {
            stat: std::fs::File::open("/proc/stat").ok(),
            since_ns: 0,
            start: None,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
        }
    }

    /// (busy, total) ticks from `/proc/stat`'s first line ("cpu user nice
    /// system idle iowait irq softirq steal ...").
    fn parse_ticks(text: &str) -> Option<(u64, u64)> {
        let line = text.lines().next()?;
        let mut fields = line.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let v: Vec<u64> = fields
            .take(8)
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        let total: u64 = v.iter().sum();
        let idle = v.get(3)? + v.get(4)?;
        Some((total.checked_sub(idle)?, total))
    }

    fn read(&self) -> Option<Times> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 256];
        let n = self.stat.as_ref()?.read_at(&mut buf, 0).ok()?;
        let (busy, total) = Self::parse_ticks(std::str::from_utf8(buf.get(..n)?).ok()?)?;
        // SAFETY: `rusage` is plain integers and timevals: all zeroes is a
        // valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage(2) writes only into the live `rusage` we own;
        // RUSAGE_SELF with a valid pointer cannot fail.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        let us = |t: libc::timeval| {
            u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec).unwrap_or(0)
        };
        Some(Times {
            busy,
            total,
            own_us: us(ru.ru_utime) + us(ru.ru_stime),
        })
    }

    /// CPUs (× 1 000) the rest of the machine took between two readings.
    fn others_milli(a: Times, b: Times, cpus: u64) -> Option<u64> {
        let dt = b.total.checked_sub(a.total).filter(|&d| d > 0)?;
        let cpus = cpus.max(1);
        // Ticks are per CPU at USER_HZ (100 a second).
        let span_us = dt * 10_000 / cpus;
        let busy = b.busy.checked_sub(a.busy)? * 1000 * cpus / dt;
        let own = b.own_us.checked_sub(a.own_us)? * 1000 / span_us.max(1);
        Some(busy.saturating_sub(own))
    }

    /// `Some(true)` once the others' `others_milli` reach the fraction `on`
    /// of the CPUs beyond one, `Some(false)` at or below the fraction `off`,
    /// `None` between (no change): a switch with hysteresis.
    fn share_of_spare(
        others_milli: u64,
        cpus: u64,
        on: (u64, u64),
        off: (u64, u64),
    ) -> Option<bool> {
        let spare = cpus.saturating_sub(1) * 1000;
        if others_milli * on.1 >= spare * on.0 {
            Some(true)
        } else if others_milli * off.1 <= spare * off.0 {
            Some(false)
        } else {
            None
        }
    }

    /// Whether an idle worker's spin would take a CPU the rest of the machine
    /// wants: `Some(true)` once the others take half of the CPUs beyond one,
    /// `Some(false)` up to a third, `None` between (no change). A spin pays
    /// for itself only on a CPU nobody else would use: with a load generator
    /// beside the server it delays the requests it waits for.
    fn crowded(others_milli: u64, cpus: u64) -> Option<bool> {
        Self::share_of_spare(others_milli, cpus, (1, 2), (1, 3))
    }

    /// At a window's end, the others' CPU (× 1 000) over it; else `None`.
    fn sample(&mut self, now_ns: u64) -> Option<u64> {
        let window = u64::try_from(Self::WINDOW.as_nanos()).unwrap_or(u64::MAX);
        if now_ns.saturating_sub(self.since_ns) < window {
            return None;
        }
        self.since_ns = now_ns;
        let now = self.read()?;
        let start = self.start.replace(now)?;
        Self::others_milli(start, now, self.cpus)
    }
}

/// At the first worker's beat (every 16 polls): tests the machine (see
/// [`Contention`]; the reserve is called out when the rest of the machine
/// frees up), and calls the workers in reserve out once it has had work
/// waiting at every beat, without sleeping, for
/// [`Builder::reserve_after`](crate::Builder::reserve_after).
pub(crate) fn check_backlog() {
    thread_local! {
        /// The first worker's parks at its last beat.
        static SEEN_PARKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
        /// The first worker's test of the machine.
        static CONTENTION: std::cell::RefCell<Option<Contention>> = const { std::cell::RefCell::new(None) };
    }
    if WORKER_INDEX.with(|w| w.get()) != 0 {
        return;
    }
    crate::context::try_with_current(|inner| {
        let p = inner.exec.platform();
        let r = &p.reserve;
        if p.reserve_after.is_zero() {
            return;
        }
        let now = u64::try_from(p.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let (others, cpus) = CONTENTION.with(|c| {
            let mut c = c.borrow_mut();
            let c = c.get_or_insert_with(Contention::new);
            (c.sample(now), c.cpus)
        });
        if let Some(crowded) = others.and_then(|o| Contention::crowded(o, cpus)) {
            // No longer short of CPUs: the reserve comes out and stays out.
            if r.crowded.swap(crowded, Ordering::Relaxed) && !crowded {
                p.call_out();
            }
        }
        if !r.held.load(Ordering::Relaxed) {
            return;
        }
        let parks = PARKS.with(|x| x.get());
        let slept = SEEN_PARKS.with(|x| x.replace(parks)) != parks;
        if slept || inner.exec.ready_bitmap().is_empty() {
            r.backlog_since.store(0, Ordering::Relaxed);
            return;
        }
        // + 1: 0 means "no backlog".
        let now = now.saturating_add(1);
        let since = r.backlog_since.load(Ordering::Relaxed);
        if since == 0 {
            r.backlog_since.store(now, Ordering::Relaxed);
        } else if now.saturating_sub(since) >= p.reserve_after_ns() {
            r.backlog_since.store(0, Ordering::Relaxed);
            p.call_out();
        }
    });
}

/// How many idle spin rounds pass between two runs of the worker's ring (a run
/// with nothing to do is two loads; with work, one `io_uring_enter`).
const RUN_RING_EVERY: u32 = 8;

thread_local! {
    /// The platform whose executor this thread is polling a coroutine of, if
    /// any (for `defer_unpark`).
    static POLLING: std::cell::Cell<*const WorkerPlatform> = const { std::cell::Cell::new(std::ptr::null()) };
    /// This worker's index in start order (0: the first).
    static WORKER_INDEX: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// How long this worker's next park in reserve lasts at most.
    static RESERVE_WAIT: std::cell::Cell<Duration> = const { std::cell::Cell::new(RESERVE_LOOK) };
    /// A push during the current poll left its unpark to this poller.
    static OWED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// How many times this thread has slept in `park`.
    static PARKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Whether this worker's next idle period may spin (see [`set_spin_allowed`]).
    static SPIN_ALLOWED: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
    /// How this worker's recent idle spins ended (see [`SpinOdds`]).
    static SPIN_ODDS: std::cell::Cell<SpinOdds> = const { std::cell::Cell::new(SpinOdds::new()) };
}

/// Whether an idle spin is likely to pay, from how this worker's recent spins
/// ended (an adaptive spin, as adaptive mutexes do). A spin that found work
/// saved a ~40 µs wake-up; one that timed out burnt its CPU for nothing — and
/// on a VM it also costs the thread woken next to the spinner's CPU a
/// reschedule IPI, which an idle (polling) CPU would not have needed. A
/// success adds 2 to a score (at most 16), a time-out takes 1 away: the worker
/// spins while the score is above 0, i.e. while at least about one spin in
/// three finds work; at 0 it parks at once, and spins once every 8 idle
/// periods to notice the gaps shortening again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpinOdds {
    score: u8,
    skipped: u8,
}

impl SpinOdds {
    const MAX: u8 = 16;
    const PROBE_EVERY: u8 = 8;

    /// Hopeful: a new worker spins.
    pub(crate) const fn new() -> Self {
        SpinOdds {
            score: Self::MAX,
            skipped: 0,
        }
    }

    /// Whether this idle period should spin.
    pub(crate) fn should_spin(&mut self) -> bool {
        if self.score > 0 {
            return true;
        }
        self.skipped += 1;
        if self.skipped >= Self::PROBE_EVERY {
            self.skipped = 0;
            return true;
        }
        false
    }

    /// How a spin ended: it found work, or it timed out.
    pub(crate) fn record(&mut self, found_work: bool) {
        self.score = if found_work {
            (self.score + 2).min(Self::MAX)
        } else {
            self.score.saturating_sub(1)
        };
    }
}

/// Lets the calling worker's next idle period spin, or makes it park at once.
/// A coordinated runtime forbids the spin while other processes have work
/// ready: a spinning worker holds a CPU the OS could give them, and a thread
/// woken meanwhile may queue behind the spinner for a scheduler tick.
pub(crate) fn set_spin_allowed(allowed: bool) {
    SPIN_ALLOWED.with(|s| s.set(allowed));
}

/// Gives the CPU to other runnable threads when a worker has run for `after`
/// without sleeping (see the module docs). Checked every 16 scheduling
/// decisions, so it costs a counter increment per poll and a clock read per 16.
#[derive(Debug)]
pub(crate) struct OsYield {
    after: Duration,
    decisions: u32,
    parks: u64,
    since: std::time::Instant,
}

impl OsYield {
    /// `Duration::ZERO`: never yields.
    pub(crate) fn new(after: Duration) -> OsYield {
        OsYield {
            after,
            decisions: 0,
            parks: PARKS.with(|p| p.get()),
            since: std::time::Instant::now(),
        }
    }

    /// Called before each poll.
    #[inline]
    pub(crate) fn tick(&mut self) {
        if self.after.is_zero() {
            return;
        }
        self.decisions = self.decisions.wrapping_add(1);
        if self.decisions % 16 != 0 {
            return;
        }
        let parks = PARKS.with(|p| p.get());
        let now = std::time::Instant::now();
        if parks != self.parks {
            // It slept since the last check: the run starts afresh.
            self.parks = parks;
            self.since = now;
        } else if now.duration_since(self.since) >= self.after {
            // SAFETY: sched_yield(2) takes no arguments and cannot fail.
            unsafe { libc::sched_yield() };
            self.since = std::time::Instant::now();
        }
    }
}

/// Locks a mutex, ignoring poisoning (every critical section here is a few
/// field writes).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A worker's doorbell: an eventfd. Writing it completes the `READ` armed on the
/// worker's ring (or a blocking `read(2)` of a worker without a ring).
#[derive(Debug)]
pub(crate) struct Parker {
    efd: OwnedFd,
    /// Its worker is held in reserve (see the module docs): set when it goes
    /// in, cleared when it is called out or leaves. Read by multishot
    /// receives armed on the worker's ring, which then follow their readers
    /// to the worker that polls them (`io::multishot`).
    reserved: AtomicBool,
    /// Under loom, the eventfd and the ring's wait (see `Doorbell`).
    #[cfg(loom)]
    bell: Mutex<Doorbell>,
    #[cfg(loom)]
    rung: loom::sync::Condvar,
}

/// Under loom, what a worker's eventfd and its ring's wait come to: the
/// doorbell was written and not yet read (an eventfd's counter coalesces
/// writes: one read takes them all), or another completion arrived on its
/// ring (which ends the wait as well: a spurious return).
#[cfg(loom)]
#[derive(Debug, Default)]
struct Doorbell {
    rung: bool,
    completion: bool,
}

impl Parker {
    fn new() -> io::Result<Arc<Parker>> {
        // SAFETY: plain eventfd(2); the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nobody else owns.
        let efd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Arc::new(Parker {
            efd,
            reserved: AtomicBool::new(false),
            #[cfg(loom)]
            bell: Mutex::new(Doorbell::default()),
            #[cfg(loom)]
            rung: loom::sync::Condvar::new(),
        }))
    }

    /// Whether its worker is held in reserve now (advisory: it may be called
    /// out at any moment).
    pub(crate) fn reserved(&self) -> bool {
        self.reserved.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn set_reserved(&self, on: bool) {
        self.reserved.store(on, Ordering::Relaxed);
    }

    /// The eventfd (blocking: io_uring arms a poll for a read that would block).
    pub(crate) fn fd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }

    /// Rings the doorbell.
    #[cfg(not(loom))]
    pub(crate) fn notify(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live `u64` to our own eventfd. It cannot
        // block (the counter would have to reach 2^64 - 2).
        let _ = unsafe { libc::write(self.fd(), (&one as *const u64).cast(), 8) };
    }

    /// Blocks until the doorbell rings (for a worker without a ring).
    #[cfg(not(loom))]
    fn wait_blocking(&self) {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a live `u64`. An error (EINTR) is a spurious
        // wake-up, which `park` may have.
        let _ = unsafe { libc::read(self.fd(), (&mut v as *mut u64).cast(), 8) };
    }

    /// Rings the doorbell (under loom: see [`Doorbell`]).
    #[cfg(loom)]
    pub(crate) fn notify(&self) {
        lock(&self.bell).rung = true;
        self.rung.notify_all();
    }

    /// Under loom, the wait on the worker's ring with its doorbell's read
    /// armed: until the doorbell rings or another completion arrives; takes
    /// whichever did (see [`Doorbell`]).
    #[cfg(loom)]
    fn wait_blocking(&self) {
        let mut bell = lock(&self.bell);
        while !bell.rung && !bell.completion {
            bell = self.rung.wait(bell).unwrap_or_else(|e| e.into_inner());
        }
        *bell = Doorbell::default();
    }

    /// Under loom: a completion of another operation arrives on the worker's
    /// ring.
    #[cfg(all(test, loom))]
    fn complete(&self) {
        lock(&self.bell).completion = true;
        self.rung.notify_all();
    }

    /// Under loom: the doorbell was rung and not yet read.
    #[cfg(all(test, loom))]
    fn rung(&self) -> bool {
        lock(&self.bell).rung
    }
}

thread_local! {
    /// This thread's doorbell (workers get one at start; another thread that
    /// parks gets one on first use).
    static PARKER: RefCell<Option<Arc<Parker>>> = const { RefCell::new(None) };
}

fn current_parker() -> Option<Arc<Parker>> {
    PARKER.with(|p| {
        let mut p = p.borrow_mut();
        if p.is_none() {
            *p = Parker::new().ok();
        }
        p.clone()
    })
}

/// The `Park` contract's counting semaphore in ring mode: one lock around
/// the banked permits and the parked workers (see the module docs).
#[derive(Debug, Default)]
struct Sleepers(Mutex<Permits>);

/// What [`Sleepers`] guards.
#[derive(Debug, Default)]
struct Permits {
    permits: usize,
    parked: Vec<Arc<Parker>>,
}

impl Sleepers {
    /// Parks the worker whose doorbell is `me`: takes a banked permit, or
    /// joins the parked set and waits. `ring` waits on the worker's ring,
    /// calling the `leave` it is given on the way out, and returns `false`
    /// (having done nothing) on a thread without a ring, which then blocks on
    /// its eventfd. Either way the worker leaves the set itself if it is
    /// still in it (woken by its ring, not picked: a spurious return).
    fn park(&self, me: &Arc<Parker>, ring: impl FnOnce(&dyn Fn()) -> bool) {
        {
            let mut s = lock(&self.0);
            if s.permits > 0 {
                s.permits -= 1;
                return;
            }
            s.parked.push(me.clone());
        }
        let leave = || self.leave(me);
        if !ring(&leave) {
            me.wait_blocking();
            leave();
        }
    }

    /// Leaves the parked set if still in it.
    fn leave(&self, me: &Arc<Parker>) {
        let mut s = lock(&self.0);
        if let Some(i) = s.parked.iter().position(|p| Arc::ptr_eq(p, me)) {
            s.parked.swap_remove(i);
        }
    }

    /// Hands a permit to a parked worker (out of the set, then its doorbell),
    /// or banks it.
    fn unpark_one(&self) {
        let target = {
            let mut s = lock(&self.0);
            match s.parked.pop() {
                Some(p) => p,
                None => {
                    s.permits = s.permits.saturating_add(1);
                    return;
                }
            }
        };
        target.notify();
    }
}

impl Reserve {
    /// The worker whose doorbell is `me` (none: it could not get one) goes
    /// into reserve.
    fn enter(&self, me: Option<Arc<Parker>>) {
        let mut parked = lock(&self.parked);
        if let Some(me) = me {
            me.reserved.store(true, Ordering::Relaxed);
            if !parked.iter().any(|p| Arc::ptr_eq(p, &me)) {
                parked.push(me);
            }
        }
        self.held.store(true, Ordering::SeqCst);
        drop(parked);
    }

    /// Whether the reserve still holds the worker whose doorbell is `me`
    /// (asked at its wake-ups); if not, it is no longer marked reserved.
    fn still_holds(&self, me: Option<&Parker>) -> bool {
        let held = self.held.load(Ordering::SeqCst);
        if !held {
            // Called out (a third worker's leaving ends everyone's reserve).
            if let Some(me) = me {
                me.reserved.store(false, Ordering::Relaxed);
            }
        }
        held
    }

    /// The worker whose doorbell is `me` leaves the reserve on its own; the
    /// others in reserve (more than two workers) come out at their next look
    /// and go back in when they find nothing.
    fn leave(&self, me: Option<&Arc<Parker>>) {
        let mut parked = lock(&self.parked);
        if let Some(me) = me {
            me.reserved.store(false, Ordering::Relaxed);
            parked.retain(|p| !Arc::ptr_eq(p, me));
        }
        self.held.store(false, Ordering::SeqCst);
    }

    /// Calls every worker in reserve out: they run until they go idle again.
    /// Their marks are cleared under the lock, before a worker called out
    /// can come back in (woken by its own ring meanwhile) and be marked
    /// again (found by the loom model
    /// `a_call_out_leaves_the_reserved_mark_to_a_worker_back_in`).
    fn call_out(&self) {
        let parked = {
            let mut list = lock(&self.parked);
            self.held.store(false, Ordering::SeqCst);
            let parked = std::mem::take(&mut *list);
            for p in &parked {
                p.reserved.store(false, Ordering::Relaxed);
            }
            parked
        };
        for p in parked {
            p.notify();
        }
    }
}

/// The workers' platform. See the module docs.
#[derive(Debug)]
pub struct WorkerPlatform {
    threads: ThreadPlatform,
    /// Whether workers park on their rings (the runtime has io_uring).
    rings: bool,
    sleepers: Sleepers,
    /// The clock's origin.
    origin: std::time::Instant,
    /// How long an idle worker spins before it sleeps.
    spin: Duration,
    /// The workers' beats, for nudging one the OS left waiting (see
    /// [`crate::nudge`]).
    pub(crate) beats: crate::nudge::Beats,
    /// The watch over ready work no worker picks up (see [`crate::watch`]).
    pub(crate) watch: crate::watch::Watch,
    /// Workers spinning idle now.
    spinners: AtomicUsize,
    /// Workers started (for the spinners' bound).
    workers: AtomicUsize,
    /// Whether idle workers spin only while spinning pays ([`SpinOdds`]).
    adaptive: bool,
    /// Workers held in reserve (see the module docs).
    reserve: Reserve,
    /// How long the first worker's backlog lasts before it calls the reserve
    /// out (zero: no worker is held in reserve).
    reserve_after: Duration,
    /// Hold the reserve whether or not the rest of the machine is busy.
    reserve_always: bool,
    /// Queue what a poll wakes hot (`Park::hot_wake`).
    hot_wakes: bool,
    /// Workers started so far (their indices; 0 is the first).
    started: AtomicUsize,
}

impl WorkerPlatform {
    /// How long an idle worker spins before it sleeps, by default.
    pub const DEFAULT_SPIN: Duration = ThreadPlatform::DEFAULT_SPIN;

    /// A platform whose idle workers spin for `spin` before sleeping (on a
    /// condition variable: this platform knows no rings).
    pub fn with_spin(spin: Duration) -> Self {
        WorkerPlatform {
            threads: ThreadPlatform::with_spin(spin),
            rings: false,
            sleepers: Sleepers::default(),
            origin: std::time::Instant::now(),
            spin,
            beats: crate::nudge::Beats::new(Self::DEFAULT_NUDGE),
            watch: crate::watch::Watch::new(Self::DEFAULT_STALL_WATCH),
            spinners: AtomicUsize::new(0),
            workers: AtomicUsize::new(0),
            adaptive: true,
            reserve: Reserve::default(),
            reserve_after: Duration::ZERO,
            reserve_always: false,
            hot_wakes: false,
            started: AtomicUsize::new(0),
        }
    }

    /// Makes idle workers spin every time (`false`) or only while recent spins
    /// found work (`true`, the default; see [`SpinOdds`]).
    pub(crate) fn with_adaptive_spin(mut self, adaptive: bool) -> Self {
        self.adaptive = adaptive;
        self
    }

    /// How long a running worker may go without a beat before a worker that
    /// parks moves it to its own CPU, by default (see
    /// [`Builder::nudge_after`](crate::Builder::nudge_after)).
    pub const DEFAULT_NUDGE: Duration = Duration::from_micros(100);

    /// Nudges a worker silent for `after` (zero: never; see [`crate::nudge`]);
    /// set before any worker starts.
    pub(crate) fn with_nudge(mut self, after: Duration) -> Self {
        self.beats = crate::nudge::Beats::new(after);
        self
    }

    /// How often the watch looks for ready work that no worker picks up, by
    /// default (see [`Builder::stall_watch`](crate::Builder::stall_watch)).
    pub const DEFAULT_STALL_WATCH: Duration = Duration::from_millis(1);

    /// Looks for stalled ready work every `period` (zero: never; see
    /// [`crate::watch`]); set before any worker starts.
    pub(crate) fn with_stall_watch(mut self, period: Duration) -> Self {
        self.watch = crate::watch::Watch::new(period);
        self
    }

    /// How long the first worker's backlog lasts before it calls the workers
    /// in reserve out, by default (see
    /// [`Builder::reserve_after`](crate::Builder::reserve_after)).
    pub const DEFAULT_RESERVE_AFTER: Duration = Duration::from_millis(10);

    /// Holds idle workers beyond the first in reserve until the first has had
    /// work waiting for `after` (zero: never); set before any worker starts.
    pub(crate) fn with_reserve_after(mut self, after: Duration) -> Self {
        self.reserve_after = after;
        self
    }

    /// Holds the reserve whether or not the rest of the machine is busy (set
    /// before any worker starts).
    pub(crate) fn with_reserve_always(mut self, always: bool) -> Self {
        self.reserve_always = always;
        self
    }

    pub(crate) fn with_hot_wakes(mut self, hot: bool) -> Self {
        self.hot_wakes = hot;
        self
    }

    /// Whether the calling thread is inside a poll of this platform's executor.
    #[inline]
    fn polling_here(&self) -> bool {
        POLLING.with(|p| std::ptr::eq(p.get(), self))
    }

    /// Whether idle workers beyond the first go into reserve now.
    fn reserving(&self) -> bool {
        self.may_reserve() && (self.reserve_always || self.reserve.crowded.load(Ordering::Relaxed))
    }

    fn reserve_after_ns(&self) -> u64 {
        u64::try_from(self.reserve_after.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether the calling worker may be held in reserve: not the first, and
    /// only on rings (a ringless worker has no completions of its own).
    fn may_reserve(&self) -> bool {
        !self.reserve_after.is_zero() && self.rings && WORKER_INDEX.with(|w| w.get()) > 0
    }

    /// Calls every worker in reserve out: they run until they go idle again.
    pub(crate) fn call_out(&self) {
        self.reserve.call_out();
    }

    /// Makes workers park on their io_uring rings (set before any worker starts).
    pub(crate) fn with_rings(mut self, rings: bool) -> Self {
        self.rings = rings;
        self
    }

    fn park_on_ring(&self) {
        let Some(me) = current_parker() else {
            // No eventfd (descriptor limit): nap, and return spuriously.
            std::thread::sleep(Duration::from_millis(1));
            return;
        };
        // It reaps on the way out.
        self.sleepers.park(&me, |leave| {
            self.reaping(|| crate::io::driver::park_local(None, leave))
        });
    }
}

impl Park for WorkerPlatform {
    fn park(&self) {
        self.beats.parking();
        crate::watch::parking();
        if self.rings {
            self.park_on_ring();
        } else {
            self.threads.park();
        }
        crate::watch::running();
        crate::nudge::beat();
        PARKS.with(|p| p.set(p.get().wrapping_add(1)));
    }

    fn unpark_one(&self) {
        if !self.rings {
            return self.threads.unpark_one();
        }
        self.sleepers.unpark_one();
    }

    fn polling(&self, on: bool) {
        let me = if on {
            self as *const WorkerPlatform
        } else {
            std::ptr::null()
        };
        POLLING.with(|p| p.set(me));
    }

    fn hot_wake(&self) -> bool {
        self.hot_wakes && self.polling_here()
    }

    fn defer_unpark(&self) -> bool {
        let mine = self.polling_here();
        if mine {
            OWED.with(|o| o.set(true));
        }
        mine
    }

    fn take_deferred_unpark(&self) -> bool {
        OWED.with(|o| o.replace(false))
    }

    fn enter_reserve(&self) -> bool {
        if !self.reserving() {
            return false;
        }
        self.reserve.enter(current_parker());
        true
    }

    /// Asked only by a worker that `enter_reserve` held (never the first).
    fn in_reserve(&self) -> bool {
        PARKER.with(|p| self.reserve.still_holds(p.borrow().as_deref()))
    }

    fn leave_reserve(&self) {
        PARKER.with(|p| self.reserve.leave(p.borrow().as_ref()));
    }

    fn park_reserved(&self, nothing_waited: bool) -> bool {
        let wait = RESERVE_WAIT.with(|w| {
            let next = if nothing_waited {
                (w.get() * 2).clamp(RESERVE_LOOK, RESERVE_LOOK_MAX)
            } else {
                RESERVE_LOOK
            };
            w.set(next);
            next
        });
        self.beats.parking();
        crate::watch::parking();
        let start = std::time::Instant::now();
        // It reaps on the way out: the coroutines its completions wake are
        // left to the others (the poller settles the unparks they deferred).
        let on_ring = self.reaping(|| crate::io::driver::park_local(Some(wait), || {}));
        if !on_ring {
            std::thread::sleep(wait);
        }
        crate::watch::running();
        crate::nudge::beat();
        PARKS.with(|p| p.set(p.get().wrapping_add(1)));
        start.elapsed() >= wait
    }

    fn spin_idle(&self, idle: &mut dyn FnMut() -> bool) {
        // A worker that may be held in reserve does not spin: the spin runs
        // its ring, and polling what its completions wake keeps their next
        // operations on its ring (see the module docs).
        if self.reserving() {
            return;
        }
        if self.spin.is_zero() || !SPIN_ALLOWED.with(|s| s.get()) {
            return;
        }
        // Nor while the rest of the machine wants the CPU it would spin on.
        if self.reserve.crowded.load(Ordering::Relaxed) {
            return;
        }
        let mut odds = SPIN_ODDS.with(|o| o.get());
        if self.adaptive && !odds.should_spin() {
            SPIN_ODDS.with(|o| o.set(odds));
            return;
        }
        // At most half the workers (at least one) spin at a time; the others
        // park at once. See the module docs.
        let most = (self.workers.load(Ordering::Relaxed) / 2).max(1);
        if self.spinners.fetch_add(1, Ordering::Relaxed) >= most {
            self.spinners.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        /// Leaves the spinners' count however the spin ends.
        struct Spinning<'a>(&'a AtomicUsize);
        impl Drop for Spinning<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _spinning = Spinning(&self.spinners);
        odds.record(self.spin_until_busy(idle));
        SPIN_ODDS.with(|o| o.set(odds));
    }
}

impl WorkerPlatform {
    /// Spins for at most `spin` while `idle()` holds, running the ring every
    /// [`RUN_RING_EVERY`] rounds; returns whether work came (`idle()` false).
    fn spin_until_busy(&self, idle: &mut dyn FnMut() -> bool) -> bool {
        let start = std::time::Instant::now();
        let mut round = 0u32;
        loop {
            // Check the clock every 64 rounds; reading it costs ~20 ns.
            for _ in 0..64 {
                round = round.wrapping_add(1);
                if self.rings && round % RUN_RING_EVERY == 0 {
                    // Wakes coroutines, so `idle()` below turns false.
                    self.reaping(crate::io::driver::run_local);
                }
                if !idle() {
                    return true;
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= self.spin {
                return false;
            }
        }
    }

    /// Runs `reap`, which delivers this worker's completions: the coroutines
    /// they wake are ones this worker, awake, runs itself, so their unparks
    /// wait for its next look at the queues (`defer_unpark`), which wakes a
    /// parked worker only for work left over.
    fn reaping<R>(&self, reap: impl FnOnce() -> R) -> R {
        self.polling(true);
        let r = reap();
        self.polling(false);
        r
    }
}

impl Critical for WorkerPlatform {
    type Guard = ();
    fn enter(&self) {}

    /// One holder has kept an executor lock for tens of µs: the OS preempted
    /// it. Sleeps briefly rather than spin until the holder runs again (see
    /// `LOCK_WAIT_SLEEP` in this module).
    fn lock_wait(&self, _spins: u32) {
        std::thread::sleep(LOCK_WAIT_SLEEP);
    }
}

impl Clock for WorkerPlatform {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

impl Platform for WorkerPlatform {}

/// A worker thread's per-thread state, from its start to its exit: its doorbell
/// and its ring. Dropping it (after the worker's poller returned, i.e. the
/// executor is shut down) tears the ring down (see [`crate::io`]).
pub(crate) struct Worker(());

impl Worker {
    /// Sets up the calling worker thread (whose runtime is entered): doorbell
    /// and ring.
    pub(crate) fn start() -> Worker {
        crate::context::try_with_current(|inner| {
            inner
                .exec
                .platform()
                .workers
                .fetch_add(1, Ordering::Relaxed);
            let i = inner
                .exec
                .platform()
                .started
                .fetch_add(1, Ordering::Relaxed);
            WORKER_INDEX.with(|w| w.set(i));
            inner.exec.platform().beats.join();
            inner.exec.platform().watch.join();
            if !inner.exec.platform().rings {
                return;
            }
            if let Ok(driver) = inner.io() {
                match current_parker() {
                    Some(parker) => driver.start_local(inner.exec.clone(), parker),
                    None => crate::io::driver::set_local_error(
                        "this worker could not create its eventfd (descriptor limit?); \
                         raise RLIMIT_NOFILE"
                            .to_owned(),
                    ),
                }
            }
        });
        Worker(())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        crate::context::try_with_current(|inner| {
            inner.exec.platform().beats.leave();
            inner.exec.platform().watch.leave();
            inner
                .exec
                .platform()
                .workers
                .fetch_sub(1, Ordering::Relaxed);
        });
        crate::io::driver::stop_local();
        PARKER.with(|p| p.borrow_mut().take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_worker_does_not_spin_while_one_does() {
        use std::sync::atomic::AtomicBool;
        // Two workers known to the platform: at most one spins.
        let p = Arc::new(WorkerPlatform::with_spin(Duration::from_secs(10)));
        p.workers.store(2, Ordering::Relaxed);
        let spinning = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let (p2, spinning2, release2) = (p.clone(), spinning.clone(), release.clone());
        let first = std::thread::spawn(move || {
            let mut rounds = 0u64;
            p2.spin_idle(&mut || {
                rounds += 1;
                spinning2.store(true, Ordering::SeqCst);
                !release2.load(Ordering::SeqCst)
            });
            rounds
        });
        while !spinning.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        // The second is declined: it never looks at its idle condition.
        let mut looked = 0;
        p.spin_idle(&mut || {
            looked += 1;
            true
        });
        assert_eq!(looked, 0, "a second worker spun beside the first");
        release.store(true, Ordering::SeqCst);
        assert!(first.join().unwrap() > 0);
        // With the first done, a spin is allowed again.
        let mut looked = 0;
        p.spin_idle(&mut || {
            looked += 1;
            false
        });
        assert_eq!(looked, 1);
    }

    #[test]
    fn an_unpark_before_the_park_makes_it_return_at_once() {
        let p = WorkerPlatform::with_spin(Duration::ZERO).with_rings(true);
        p.unpark_one();
        // No ring on this thread: parks on its eventfd; the banked permit returns
        // at once (else this test hangs).
        p.park();
        // And a park with a parked-set pick from another thread.
        let p = Arc::new(p);
        let q = p.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            q.unpark_one();
        });
        p.park();
        t.join().unwrap();
    }

    #[test]
    fn spins_that_time_out_stop_the_spinning_but_for_probes() {
        let mut o = SpinOdds::new();
        // Hopeful at first: 16 time-outs in a row before it gives up.
        for _ in 0..16 {
            assert!(o.should_spin());
            o.record(false);
        }
        // Then one spin in 8 idle periods.
        let spins = (0..64).filter(|_| o.should_spin()).count();
        assert_eq!(spins, 8);
    }

    #[test]
    fn a_probe_that_finds_work_brings_the_spinning_back() {
        let mut o = SpinOdds::new();
        for _ in 0..16 {
            o.should_spin();
            o.record(false);
        }
        while !o.should_spin() {}
        o.record(true);
        assert!(o.should_spin() && o.should_spin(), "spins again");
    }

    #[test]
    fn proc_stat_gives_busy_and_total_ticks() {
        let text = "cpu  100 2 30 500 10 0 8 5 0 0\ncpu0 50 1 15 250 5 0 4 2 0 0\n";
        // busy: user + nice + system + irq + softirq + steal; idle + iowait not.
        assert_eq!(Contention::parse_ticks(text), Some((145, 655)));
        assert_eq!(Contention::parse_ticks("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(Contention::parse_ticks("cpu 1 2 x 4 5 6 7 8\n"), None);
        assert_eq!(Contention::parse_ticks(""), None);
    }

    #[test]
    fn the_others_are_the_busy_cpus_less_this_process() {
        let t = |busy, total, own_us| Times {
            busy,
            total,
            own_us,
        };
        // 2 CPUs, 0.25 s (50 ticks): 40 busy ticks = 1.6 CPUs, of which this
        // process took 0.1 s = 0.4 CPU: the others 1.2 CPUs.
        let others = Contention::others_milli(t(0, 0, 0), t(40, 50, 100_000), 2);
        assert_eq!(others, Some(1200));
        // No time passed, or counters that went back: no reading.
        assert_eq!(Contention::others_milli(t(5, 9, 0), t(5, 9, 0), 2), None);
        assert_eq!(Contention::others_milli(t(9, 9, 0), t(5, 20, 0), 2), None);
    }

    #[test]
    fn no_spin_and_a_reserve_while_the_others_take_half_the_spare_cpus() {
        // 2 CPUs: crowded from 0.5 CPU taken by others, free again up to 1/3.
        assert_eq!(Contention::crowded(650, 2), Some(true));
        assert_eq!(Contention::crowded(500, 2), Some(true));
        assert_eq!(Contention::crowded(400, 2), None);
        assert_eq!(Contention::crowded(333, 2), Some(false));
        assert_eq!(Contention::crowded(50, 2), Some(false));
        // 4 CPUs: half of the three beyond one is 1.5 CPUs.
        assert_eq!(Contention::crowded(1500, 4), Some(true));
        assert_eq!(Contention::crowded(1000, 4), Some(false));
        // One CPU: a spin always takes the only CPU from someone.
        assert_eq!(Contention::crowded(0, 1), Some(true));
    }

    #[test]
    fn a_worker_s_doorbell_says_whether_it_is_held_in_reserve() {
        // The flag that multishot receives armed on the worker's ring read.
        let p = WorkerPlatform::with_spin(Duration::ZERO)
            .with_rings(true)
            .with_reserve_after(Duration::from_millis(10))
            .with_reserve_always(true);
        // A worker other than the first (run on its own thread: the index and
        // the doorbell are thread-locals).
        std::thread::spawn(move || {
            WORKER_INDEX.with(|w| w.set(1));
            let me = current_parker().unwrap();
            assert!(!me.reserved());
            assert!(p.enter_reserve());
            assert!(me.reserved() && p.in_reserve());
            // Called out: cleared before its doorbell rings.
            p.call_out();
            assert!(!me.reserved());
            assert!(p.enter_reserve() && me.reserved());
            // Leaving on its own (the work stalled).
            p.leave_reserve();
            assert!(!me.reserved());
            // Another worker's leaving ends the reserve: it sees so at its
            // next look.
            assert!(p.enter_reserve() && me.reserved());
            p.reserve.held.store(false, Ordering::SeqCst);
            assert!(!p.in_reserve());
            assert!(!me.reserved());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn one_success_in_three_keeps_it_spinning() {
        let mut o = SpinOdds::new();
        for i in 0..300 {
            assert!(o.should_spin(), "period {i}");
            o.record(i % 3 == 0);
        }
        // One in four does not.
        let mut o = SpinOdds::new();
        let spun = (0..400)
            .filter(|i| {
                let spin = o.should_spin();
                if spin {
                    o.record(i % 4 == 0);
                }
                spin
            })
            .count();
        assert!(spun < 400, "{spun}");
    }
}

#[cfg(all(test, loom))]
mod loom_model {
    //! The parking and reserve handshakes as the workers run them
    //! ([`Sleepers`], [`Reserve`]), the eventfd and the ring's wait standing
    //! in as [`Doorbell`]. A worker waiting for good is a lost wake-up, which
    //! loom reports as a deadlock.
    use super::{lock, Parker, Reserve, Sleepers};
    use loom::sync::atomic::AtomicBool;
    use loom::thread;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    /// A worker without a ring of its own (the ring is `Doorbell`'s stand-in).
    fn no_ring(_: &dyn Fn()) -> bool {
        false
    }

    fn doorbell() -> Arc<Parker> {
        Parker::new().expect("eventfd")
    }

    /// Four threads explore too many interleavings to check them all: up to
    /// four preemptions (~8 s; `LOOM_MAX_PREEMPTIONS` overrides).
    fn bounded(f: impl Fn() + Sync + Send + 'static) {
        let mut b = loom::model::Builder::new();
        if b.preemption_bound.is_none() {
            b.preemption_bound = Some(4);
        }
        b.check(f);
    }

    /// Two workers park while two unparks race them: both return (a permit
    /// handed to nobody, or banked while a worker sleeps, leaves one parked
    /// for good), and nothing is left over — no banked permit, nobody in the
    /// set, no doorbell rung and unread (a permit both banked and handed
    /// over, or handed to two, would leave one). Whenever the lock is free no
    /// worker is parked while a permit is banked.
    #[test]
    fn every_unpark_wakes_a_parked_worker_or_is_banked_for_the_next_park() {
        bounded(|| {
            let s = Arc::new(Sleepers::default());
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let (s, me) = (s.clone(), doorbell());
                    thread::spawn(move || {
                        s.park(&me, no_ring);
                        me
                    })
                })
                .collect();
            let s2 = s.clone();
            let unparker = thread::spawn(move || s2.unpark_one());
            s.unpark_one();
            {
                let p = lock(&s.0);
                assert!(
                    p.permits == 0 || p.parked.is_empty(),
                    "parked beside a permit"
                );
            }
            unparker.join().unwrap();
            let bells: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
            let p = lock(&s.0);
            assert_eq!(p.permits, 0, "a permit doubled");
            assert!(p.parked.is_empty());
            assert!(
                bells.iter().all(|b| !b.rung()),
                "a doorbell rung for nobody"
            );
        });
    }

    /// A worker parks until it finds the work a push left (as the executor's
    /// loop does: it looks after every return), while its ring delivers a
    /// completion of its own and the push's unpark races both. Whether the
    /// unpark picks it (before or after its ring woke it) or finds it gone
    /// and banks the permit, it is not absorbed: the worker finds the work.
    /// It never stays in the set once returned; at most the one permit is
    /// left banked (a spurious wake-up for the next park).
    #[test]
    fn an_unpark_racing_a_ring_wake_up_is_not_absorbed() {
        loom::model(|| {
            let s = Arc::new(Sleepers::default());
            let me = doorbell();
            let pushed = Arc::new(AtomicBool::new(false));
            let worker = {
                let (s, me, pushed) = (s.clone(), me.clone(), pushed.clone());
                thread::spawn(move || {
                    while !pushed.load(Ordering::SeqCst) {
                        s.park(&me, no_ring);
                    }
                })
            };
            let ring = {
                let me = me.clone();
                thread::spawn(move || me.complete())
            };
            pushed.store(true, Ordering::SeqCst);
            s.unpark_one();
            ring.join().unwrap();
            worker.join().unwrap();
            let p = lock(&s.0);
            assert!(p.parked.is_empty(), "a returned worker left in the set");
            assert!(p.permits <= 1);
        });
    }

    /// The review's finding (2026-11-29): a worker goes into reserve while
    /// the first worker calls the reserve out, and calls it out once more
    /// after. The worker, waiting on its doorbell, must be called out by one
    /// of the two: a call-out that rang it between its listing and its
    /// `held`, written outside the list's lock, left it held, unlisted, out
    /// of the next call-out's reach — loom's deadlock. (Its timed looks are
    /// left out: they bound how long a missed call-out costs, and would hide
    /// it.)
    #[test]
    fn a_call_out_reaches_a_worker_entering_reserve() {
        loom::model(|| {
            let r = Arc::new(Reserve::default());
            let me = doorbell();
            let entered = Arc::new(AtomicBool::new(false));
            let worker = {
                let (r, me, entered) = (r.clone(), me.clone(), entered.clone());
                thread::spawn(move || {
                    r.enter(Some(me.clone()));
                    entered.store(true, Ordering::SeqCst);
                    loop {
                        me.wait_blocking();
                        if !r.still_holds(Some(&me)) {
                            break;
                        }
                    }
                })
            };
            r.call_out();
            while !entered.load(Ordering::SeqCst) {
                thread::yield_now();
            }
            r.call_out();
            worker.join().unwrap();
            assert!(!me.reserved());
            assert!(lock(&r.parked).is_empty());
        });
    }

    /// A worker in reserve is called out while its own ring wakes it; seeing
    /// the reserve gone it runs, finds nothing, and goes back in before the
    /// call-out has finished. It must end marked reserved exactly when it is
    /// listed (the mark sends the multishot receives armed on its ring to the
    /// workers that poll their readers), and listed only while the reserve
    /// holds. A call-out that cleared the marks after its lock cleared the
    /// mark of a worker back in reserve.
    #[test]
    fn a_call_out_leaves_the_reserved_mark_to_a_worker_back_in() {
        loom::model(|| {
            let r = Arc::new(Reserve::default());
            let me = doorbell();
            let worker = {
                let (r, me) = (r.clone(), me.clone());
                thread::spawn(move || {
                    r.enter(Some(me.clone()));
                    me.wait_blocking();
                    if !r.still_holds(Some(&me)) {
                        r.enter(Some(me.clone()));
                    }
                })
            };
            let ring = {
                let me = me.clone();
                thread::spawn(move || me.complete())
            };
            r.call_out();
            ring.join().unwrap();
            worker.join().unwrap();
            let listed = lock(&r.parked).iter().any(|p| Arc::ptr_eq(p, &me));
            assert_eq!(
                me.reserved(),
                listed,
                "the reserved mark disagrees with the list"
            );
            assert!(!listed || r.held.load(Ordering::SeqCst));
        });
    }
}
