//! A watch over ready work that no worker picks up.
//!
//! # Why
//!
//! A push from inside a poll — a spawn, a wake, a completion reaped in the
//! poll — does not wake a parked worker at once: it leaves that to the worker
//! polling, which looks at the queues as soon as the poll ends and wakes a
//! parked worker only for work it leaves over (`Park::defer_unpark`, the
//! `park` module; it saves an eventfd write and a ~40 µs wake-up per hop of a
//! request from coroutine to coroutine). A poll that runs on long after such a
//! push — a coroutine that spawns another and then computes — kept the parked
//! worker asleep beside the new work for as long as it ran: a 200 ms
//! computation delayed the coroutine it spawned by 200 ms on an idle CPU.
//!
//! # What
//!
//! Once a runtime has a second worker (a coordinated one: its first) it
//! starts one more thread, the watch,
//! which now and then takes one look ([`Executor::unpark_if_stalled`]): if
//! coroutines were ready at this look and the last and no worker popped one
//! in between, every worker is stuck in a poll (or the OS keeps it off its
//! CPU) or asleep, and it wakes a parked worker for them.
//!
//! How often: the period doubles at every look, from [`Builder::stall_watch`]
//! (1 ms by default) up to [`MAX_PERIOD`] (16 ms: at most ~62 looks a
//! second), except that work first seen ready after a look that found none
//! is looked at again one base period later, and so is the work after a
//! wake-up the watch made. So a spawn before a long computation on a quiet
//! runtime waits at most ~17 ms (the next look, then one base period), and a
//! stall in the middle of steady work at most ~32 ms (two looks at the
//! longest period). At a look every millisecond under steady work, the
//! thread's wake-ups cost a loaded echo server a few per cent of its
//! throughput (`rtecho`, four alternating pairs at 64 connections: ss ÷ tokio
//! 1.12–1.15 × with it, 1.18–1.38 × without); backing off while work moves
//! left 1.06–1.22 × against 1.12–1.25 ×.
//!
//! ```text
//!   worker 0: poll X { spawn(Y) ─ unpark left to worker 0 ─ compute 200 ms … }
//!   worker 1: parked
//!   watch:    look: Y ready (first sight)   look: Y ready, no pop since ── unpark ──► worker 1 runs Y
//!             |◄──── 1 ms (after a look that found nothing ready) ────►|
//! ```
//!
//! It costs nothing on the workers' paths but two stores, a fence and a load
//! per park; the watch itself takes the ready lock once per look. After about
//! a second in which every worker was parked and nothing was ready it sleeps
//! until a worker wakes (the first wake-up after such a pause costs that
//! worker a futex wake).
//!
//! The deep sleep's handshake is Dekker's: the watch raises `asleep` and then
//! reads every worker's `parked`; a worker lowers its `parked` and then reads
//! `asleep`, each with a sequentially consistent fence between its store and
//! its load, so one of the two always sees the other, and the watch never
//! sleeps while a worker runs unseen (fences rather than `SeqCst` accesses:
//! loom checks the fences, and treats such accesses as merely acquire/release).
//!
//! [`Builder::stall_watch`]: crate::Builder::stall_watch
//! [`Executor::unpark_if_stalled`]: ss_core::Executor::unpark_if_stalled

#[cfg(loom)]
use loom::sync::{
    atomic::{fence, AtomicBool},
    Condvar, Mutex, MutexGuard,
};
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::{
    atomic::{fence, AtomicBool},
    Condvar, Mutex, MutexGuard,
};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use ss_core::{Executor, Stall};

use crate::park::WorkerPlatform;

/// The longest period between two looks (while nothing is ready).
pub const MAX_PERIOD: Duration = Duration::from_millis(16);

/// How long every worker must have been parked with nothing ready before
/// the watch sleeps until one wakes.
const DEEP_AFTER: Duration = Duration::from_secs(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One runtime's watch: the workers' side (their parked flags) and the
/// thread's handle.
pub(crate) struct Watch {
    /// The base period between looks (zero: no watch).
    period: Duration,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("period", &self.period)
            .field("unparks", &self.unparks())
            .finish()
    }
}

/// What the watch thread and the workers share.
#[derive(Default)]
struct Shared {
    /// One flag per worker: parked (`true`), or it may poll before it next
    /// parks.
    workers: Mutex<Vec<Arc<AtomicBool>>>,
    /// The watch sleeps until a worker wakes (see the module docs).
    asleep: AtomicBool,
    /// Under it: stop. The watch waits on `cv` between looks and in its deep
    /// sleep.
    stop: Mutex<bool>,
    cv: Condvar,
    /// Parked workers woken for stalled work.
    unparks: AtomicU64,
    /// Called after every look ([`Watch::set_periodic`]).
    periodic: std::sync::Mutex<Option<Periodic>>,
}

/// Work the watch thread does after each look.
type Periodic = Box<dyn FnMut() + Send>;

thread_local! {
    /// The calling worker's parked flag, and the watch it belongs to.
    static MINE: std::cell::RefCell<Option<(Arc<AtomicBool>, Arc<Shared>)>> =
        const { std::cell::RefCell::new(None) };
}

impl Watch {
    /// A watch that looks every `period` (zero: never; no thread is started).
    pub(crate) fn new(period: Duration) -> Watch {
        Watch {
            period,
            shared: Arc::default(),
            thread: Mutex::new(None),
        }
    }

    /// Parked workers the watch has woken for stalled work so far.
    pub(crate) fn unparks(&self) -> u64 {
        self.shared.unparks.load(Ordering::Relaxed)
    }

    /// Has the thread call `f` after each of its looks — every 1–16 ms while
    /// the runtime has work, not while it sleeps deeply; `f` limits its own
    /// rate. (The coordinated runtime checks its coordinator there.)
    pub(crate) fn set_periodic(&self, f: impl FnMut() + Send + 'static) {
        *self
            .shared
            .periodic
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Box::new(f));
    }

    /// Starts the thread, unless it runs or the watch is off. A thread that
    /// cannot be started leaves the runtime as it was without a watch.
    pub(crate) fn start(&self, exec: Weak<Executor<WorkerPlatform>>, name: &str) {
        if self.period.is_zero() {
            return;
        }
        let mut thread = lock(&self.thread);
        if thread.is_some() || *lock(&self.shared.stop) {
            return;
        }
        let (shared, period) = (self.shared.clone(), self.period);
        *thread = std::thread::Builder::new()
            // Not named like the workers (`{name}-{index}`): a coordinator
            // counts the CPU time of the threads with their prefix as the
            // process's progress (`ss_coord::stall`), and the watch runs
            // while every worker is blocked.
            .name(format!("watch-{name}"))
            .spawn(move || shared.run(&exec, period))
            .ok();
    }

    /// Stops the thread and waits for it (called by the runtime's shutdown,
    /// never from the watch thread itself).
    pub(crate) fn stop(&self) {
        *lock(&self.shared.stop) = true;
        self.shared.cv.notify_all();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        // What it holds (a coordinator registration) goes with the runtime.
        drop(
            self.shared
                .periodic
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
    }

    /// The calling worker takes part (as it starts): it counts as running.
    pub(crate) fn join(&self) {
        let flag = Arc::new(AtomicBool::new(false));
        lock(&self.shared.workers).push(flag.clone());
        MINE.with(|m| *m.borrow_mut() = Some((flag, self.shared.clone())));
        // A watch asleep since before this worker existed must see it.
        self.shared.wake_if_asleep();
    }

    /// The calling worker is exiting.
    pub(crate) fn leave(&self) {
        let Some((flag, _)) = MINE.with(|m| m.borrow_mut().take()) else {
            return;
        };
        lock(&self.shared.workers).retain(|f| !Arc::ptr_eq(f, &flag));
    }
}

/// The calling worker is about to park.
#[inline]
pub(crate) fn parking() {
    MINE.with(|m| {
        if let Some((flag, _)) = &*m.borrow() {
            flag.store(true, Ordering::Relaxed);
        }
    });
}

/// The calling worker is back from a park: it may poll before it parks again.
#[inline]
pub(crate) fn running() {
    MINE.with(|m| {
        if let Some((flag, shared)) = &*m.borrow() {
            shared.running(flag);
        }
    });
}

impl Shared {
    /// A worker (its `parked` flag) may poll from now on: Dekker's handshake
    /// with [`Shared::sleep_deeply`] (module docs).
    fn running(&self, parked: &AtomicBool) {
        parked.store(false, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.wake_if_asleep();
    }

    fn wake_if_asleep(&self) {
        if self.asleep.load(Ordering::Relaxed) {
            let _stop = lock(&self.stop);
            self.asleep.store(false, Ordering::SeqCst);
            self.cv.notify_all();
        }
    }

    /// The watch thread: the period doubles at every look up to
    /// [`MAX_PERIOD`], except that work first seen ready (after a look that
    /// found none) is looked at again after `base`, and so is what follows a
    /// wake-up it made; sleeps deeply after [`DEEP_AFTER`] of idle looks with
    /// every worker parked. Returns when stopped or when the executor is gone.
    fn run(&self, exec: &Weak<Executor<WorkerPlatform>>, base: Duration) {
        let mut seen = None;
        let mut wait = base;
        let mut quiet = Duration::ZERO;
        let longer = |wait: Duration| wait.saturating_mul(2).min(MAX_PERIOD.max(base));
        loop {
            let idle_before = seen.is_none();
            {
                let stop = lock(&self.stop);
                if *stop {
                    return;
                }
                let (stop, _) = self
                    .cv
                    .wait_timeout(stop, wait)
                    .unwrap_or_else(|e| e.into_inner());
                if *stop {
                    return;
                }
            }
            let Some(exec) = exec.upgrade() else {
                return;
            };
            match exec.unpark_if_stalled(&mut seen) {
                Stall::Idle => {
                    quiet = quiet.saturating_add(wait);
                    wait = longer(wait);
                }
                // Work just appeared (a spawn before a long computation, say):
                // the next look decides, soon.
                Stall::Moving if idle_before => {
                    quiet = Duration::ZERO;
                    wait = base;
                }
                // Work moving: the workers are polling; a stall shows at the
                // next looks however far apart, so look less often — each
                // look wakes this thread beside busy workers, and at 1 ms
                // that cost a loaded echo server a few per cent.
                Stall::Moving => {
                    quiet = Duration::ZERO;
                    wait = longer(wait);
                }
                Stall::Stalled { unparked: true } => {
                    quiet = Duration::ZERO;
                    wait = base;
                    self.unparks.fetch_add(1, Ordering::Relaxed);
                }
                // Nobody asleep to wake: every worker is in a poll, or holds
                // back on purpose (a coordinated process deferring to a more
                // important one). Looking often would only cost this thread's
                // wake-ups — beside a process it defers to — so back off.
                Stall::Stalled { unparked: false } => {
                    quiet = Duration::ZERO;
                    wait = longer(wait);
                }
            }
            drop(exec);
            if let Some(f) = self
                .periodic
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
            {
                f();
            }
            if quiet >= DEEP_AFTER {
                quiet = Duration::ZERO;
                if self.sleep_deeply() {
                    wait = base;
                    seen = None;
                }
            }
        }
    }

    /// Sleeps until a worker wakes, if every worker is parked now; returns
    /// whether it slept.
    fn sleep_deeply(&self) -> bool {
        let mut stop = lock(&self.stop);
        if *stop {
            return false;
        }
        self.asleep.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let all_parked = lock(&self.workers)
            .iter()
            .all(|f| f.load(Ordering::Relaxed));
        if !all_parked {
            self.asleep.store(false, Ordering::SeqCst);
            return false;
        }
        while self.asleep.load(Ordering::SeqCst) && !*stop {
            stop = self.cv.wait(stop).unwrap_or_else(|e| e.into_inner());
        }
        self.asleep.store(false, Ordering::SeqCst);
        true
    }
}

#[cfg(all(test, loom))]
mod loom_model {
    use super::{lock, AtomicBool, Shared};
    use loom::thread;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    /// A parked worker wakes while the watch decides to sleep: either the
    /// watch sees it running and stays up, or the worker sees the watch
    /// asleep and wakes it. (Loom reports a watch asleep for good as a
    /// deadlock: with the worker's check of `asleep` or its fence taken out,
    /// it does.)
    #[test]
    fn the_watch_never_sleeps_through_a_waking_worker() {
        loom::model(|| {
            let shared = Arc::new(Shared::default());
            let parked = Arc::new(AtomicBool::new(true));
            lock(&shared.workers).push(parked.clone());
            let (s, p) = (shared.clone(), parked.clone());
            let worker = thread::spawn(move || s.running(&p));
            shared.sleep_deeply();
            worker.join().unwrap();
            assert!(!parked.load(Ordering::SeqCst));
            assert!(!shared.asleep.load(Ordering::SeqCst));
        });
    }

    /// A stop while the watch goes to sleep ends the sleep.
    #[test]
    fn a_stop_ends_the_deep_sleep() {
        loom::model(|| {
            let shared = Arc::new(Shared::default());
            lock(&shared.workers).push(Arc::new(AtomicBool::new(true)));
            let s = shared.clone();
            let stopper = thread::spawn(move || {
                *lock(&s.stop) = true;
                s.cv.notify_all();
            });
            shared.sleep_deeply();
            stopper.join().unwrap();
        });
    }
}
