//! Loom models of the Executor's races: every interleaving (up to the preemption
//! bound) of wake, poll, reprio, cancel, park and shutdown on two and three CPUs.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" cargo test -p ss-core --features std --test loom --release`
#![cfg(loom)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize as StdCount;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::task::{Context, Poll};

use loom::sync::atomic::AtomicBool;
use loom::thread;
use ss_core::platform::{SpinPlatform, ThreadPlatform};
use ss_core::{Executor, Levels, Priority};

fn p(l: u8) -> Priority {
    Priority::new(l).unwrap()
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

/// Completes once `event` is set; otherwise blocks without arranging a wake-up,
/// as a coroutine waiting for an asynchronous system call that will wake it by id.
/// Counts its polls and its drop.
/// A loom-tracked cell every test future writes while being polled: loom then
/// reports any two polls of one coroutine that are not ordered (polled on two CPUs
/// at once, or handed between CPUs without synchronisation).
#[derive(Default)]
struct PollMark(loom::cell::UnsafeCell<usize>);

impl PollMark {
    fn touch(&self) {
        // SAFETY: the point of the test: loom checks that no two of these
        // accesses race.
        self.0.with_mut(|p| unsafe { *p += 1 });
    }
}

struct WaitEvent {
    mark: PollMark,
    event: Arc<AtomicBool>,
    polls: Arc<StdCount>,
    drops: Arc<StdCount>,
}

impl Future for WaitEvent {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        self.mark.touch();
        self.polls.fetch_add(1, SeqCst);
        if self.event.load(SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for WaitEvent {
    fn drop(&mut self) {
        self.drops.fetch_add(1, SeqCst);
    }
}

struct Setup<P: ss_core::platform::Platform> {
    exec: Arc<Executor<P>>,
    cid: ss_core::CoroutineId,
    event: Arc<AtomicBool>,
    polls: Arc<StdCount>,
    drops: Arc<StdCount>,
}

fn setup<P: ss_core::platform::Platform>(platform: P, prio: u8) -> Setup<P> {
    let exec = Arc::new(Executor::with_platform(Levels::DEFAULT, platform));
    let event = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(StdCount::new(0));
    let drops = Arc::new(StdCount::new(0));
    let cid = exec
        .spawn(
            WaitEvent {
                mark: PollMark::default(),
                event: event.clone(),
                polls: polls.clone(),
                drops: drops.clone(),
            },
            p(prio),
        )
        .unwrap();
    Setup {
        exec,
        cid,
        event,
        polls,
        drops,
    }
}

/// The completion side of an asynchronous call: publish, then wake by id.
fn complete<P: ss_core::platform::Platform>(s: &Setup<P>) -> impl FnOnce() + Send + 'static {
    let (exec, cid, event) = (s.exec.clone(), s.cid, s.event.clone());
    move || {
        event.store(true, SeqCst);
        let _ = exec.wake(cid);
    }
}

/// After the race, the coroutine must be able to finish: no wake-up was lost.
fn assert_finishes<P: ss_core::platform::Platform>(s: &Setup<P>) {
    s.exec.poller().run_until_idle();
    assert!(
        s.exec.is_empty(),
        "a wake-up was lost: the coroutine is stuck blocked"
    );
    assert_eq!(s.drops.load(SeqCst), 1, "future dropped exactly once");
    assert!(s.exec.ready_bitmap().is_empty());
    assert_eq!(s.exec.ready_len(), 0);
}

#[test]
fn wake_races_poll_one_poller() {
    model(|| {
        let s = setup(SpinPlatform, 3);
        let mut cpu = s.exec.poller();
        let t = thread::spawn(move || {
            cpu.run_once();
        });
        complete(&s)();
        t.join().unwrap();
        assert_finishes(&s);
        // Polled at most twice: once blocked, once done (never queued twice).
        assert!(s.polls.load(SeqCst) <= 2);
    });
}

#[test]
fn wake_races_two_pollers() {
    model(|| {
        let s = setup(SpinPlatform, 0);
        let pollers: Vec<_> = (0..2)
            .map(|_| {
                let mut cpu = s.exec.poller();
                thread::spawn(move || {
                    cpu.run_once();
                })
            })
            .collect();
        complete(&s)();
        for t in pollers {
            t.join().unwrap();
        }
        assert_finishes(&s);
        assert!(s.polls.load(SeqCst) <= 2);
    });
}

#[test]
fn wake_and_waker_race_three_pollers() {
    // Three CPUs, two wakers (by id and by a Waker clone) racing a poll.
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| {
        let s = setup(SpinPlatform, 1);
        let pollers: Vec<_> = (0..3)
            .map(|_| {
                let mut cpu = s.exec.poller();
                thread::spawn(move || {
                    cpu.run_once();
                })
            })
            .collect();
        complete(&s)();
        let _ = s.exec.wake(s.cid);
        for t in pollers {
            t.join().unwrap();
        }
        assert_finishes(&s);
    });
}

#[test]
fn reprio_races_wake_and_poll() {
    model(|| {
        let s = setup(SpinPlatform, 5);
        let mut cpu = s.exec.poller();
        let poller = thread::spawn(move || {
            cpu.run_once();
        });
        let (exec, cid) = (s.exec.clone(), s.cid);
        let reprio = thread::spawn(move || {
            let _ = exec.reprio(cid, p(1));
        });
        complete(&s)();
        poller.join().unwrap();
        reprio.join().unwrap();
        // If it is still queued, it must be at its current priority's level.
        if let Ok(prio) = s.exec.priority(s.cid) {
            let bits = s.exec.ready_bitmap();
            assert!(bits.is_empty() || bits == ss_core::PrioBitmap::EMPTY.with(prio));
        }
        assert_finishes(&s);
    });
}

#[test]
fn cancel_races_wake_and_poll() {
    model(|| {
        let s = setup(SpinPlatform, 2);
        let mut cpu = s.exec.poller();
        let poller = thread::spawn(move || {
            cpu.run_once();
        });
        let (exec, cid) = (s.exec.clone(), s.cid);
        let cancel = thread::spawn(move || {
            let _ = exec.cancel(cid);
        });
        complete(&s)();
        poller.join().unwrap();
        cancel.join().unwrap();
        assert_finishes(&s);
    });
}

#[test]
fn shutdown_races_wake_and_poll() {
    model(|| {
        let s = setup(SpinPlatform, 2);
        let mut cpu = s.exec.poller();
        let poller = thread::spawn(move || {
            cpu.run_once();
        });
        let exec = s.exec.clone();
        let shut = thread::spawn(move || {
            exec.shutdown();
        });
        complete(&s)();
        poller.join().unwrap();
        shut.join().unwrap();
        assert!(s.exec.is_empty());
        assert_eq!(s.drops.load(SeqCst), 1, "future dropped exactly once");
        assert_eq!(s.exec.ready_len(), 0);
    });
}

#[test]
fn a_parking_poller_never_misses_a_wake() {
    // The poller may be about to park exactly when the wake-up arrives; loom
    // reports a deadlock if it ever sleeps through it.
    model(|| {
        let s = setup(ThreadPlatform::default(), 0);
        let stop = Arc::new(AtomicBool::new(false));
        let mut cpu = s.exec.poller();
        let (exec, st) = (s.exec.clone(), stop.clone());
        let poller = thread::spawn(move || {
            // Runs until the coroutine has exited.
            cpu.run_while(|| !exec.is_empty());
        });
        complete(&s)();
        poller.join().unwrap();
        assert!(s.exec.is_empty());
        assert_eq!(s.drops.load(SeqCst), 1);
        drop(st);
    });
}

/// Yields (wakes itself) `yields` times while its event is unset, then blocks;
/// completes once the event is set.
struct YieldThenWait {
    mark: PollMark,
    event: Arc<AtomicBool>,
    yields: usize,
    drops: Arc<StdCount>,
}

impl Future for YieldThenWait {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.mark.touch();
        if self.event.load(SeqCst) {
            return Poll::Ready(());
        }
        if self.yields > 0 {
            self.yields -= 1;
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

impl Drop for YieldThenWait {
    fn drop(&mut self) {
        self.drops.fetch_add(1, SeqCst);
    }
}

fn setup_yielding(yields: usize) -> Setup<SpinPlatform> {
    let exec = Arc::new(Executor::new());
    let event = Arc::new(AtomicBool::new(false));
    let drops = Arc::new(StdCount::new(0));
    let cid = exec
        .spawn(
            YieldThenWait {
                mark: PollMark::default(),
                event: event.clone(),
                yields,
                drops: drops.clone(),
            },
            p(2),
        )
        .unwrap();
    Setup {
        exec,
        cid,
        event,
        polls: Arc::new(StdCount::new(0)),
        drops,
    }
}

#[test]
fn a_yielded_coroutine_travels_between_pollers_and_still_sees_its_wake() {
    // The coroutine yields (staying RUNNING in its queue) and may be picked up
    // by the other poller while the completion wakes it by id.
    model(|| {
        let s = setup_yielding(1);
        let pollers: Vec<_> = (0..2)
            .map(|_| {
                let mut cpu = s.exec.poller();
                thread::spawn(move || {
                    cpu.run_once();
                })
            })
            .collect();
        complete(&s)();
        for t in pollers {
            t.join().unwrap();
        }
        assert_finishes(&s);
    });
}

#[test]
fn cancel_races_a_yield() {
    model(|| {
        let s = setup_yielding(2);
        let mut cpu = s.exec.poller();
        let poller = thread::spawn(move || {
            cpu.run_once();
            cpu.run_once();
        });
        let (exec, cid) = (s.exec.clone(), s.cid);
        let cancel = thread::spawn(move || {
            let _ = exec.cancel(cid);
        });
        poller.join().unwrap();
        cancel.join().unwrap();
        s.exec.poller().run_until_idle();
        assert!(s.exec.is_empty(), "cancelled coroutine must be gone");
        assert_eq!(s.drops.load(SeqCst), 1, "future dropped exactly once");
        assert_eq!(s.exec.ready_len(), 0);
    });
}

/// A queue the "kernel" appends to (`tail`) and a drainer empties (`head`,
/// which only the drainer may touch: loom reports two drainers at once).
struct Ring {
    tail: loom::sync::atomic::AtomicU64,
    head: loom::cell::UnsafeCell<u64>,
    gate: ss_core::DrainGate,
}

// SAFETY: `head` is read and written only inside `gate.drain`, which lets one
// drainer in at a time (what the model checks); the rest is atomic.
unsafe impl Sync for Ring {}

impl Ring {
    /// One pass of a drainer: takes every entry it sees.
    fn pass(&self) -> u64 {
        // Relaxed: what orders the entry before its drain is the gate.
        let tail = self.tail.load(std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the gate lets one drainer in at a time; loom checks it.
        self.head.with_mut(|h| unsafe {
            let n = tail - *h;
            *h = tail;
            n
        })
    }
}

#[test]
fn a_drain_asked_for_while_another_runs_is_never_lost() {
    // Each thread posts an entry, then asks for a drain (an upcall that finds
    // another thread draining). Once both are done, every entry is taken,
    // whichever thread took it.
    model(|| {
        let ring = Arc::new(Ring {
            tail: loom::sync::atomic::AtomicU64::new(0),
            head: loom::cell::UnsafeCell::new(0),
            gate: ss_core::DrainGate::new(),
        });
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let r = ring.clone();
                thread::spawn(move || {
                    r.tail.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    r.gate.drain(|| r.pass())
                })
            })
            .collect();
        let taken: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(taken, 2, "an entry was left in the queue");
        // SAFETY: both threads have been joined.
        ring.head.with(|h| assert_eq!(unsafe { *h }, 2));
    });
}

/// A platform that lets a push from inside a poll on this CPU leave its unpark
/// to the poller (`Park::defer_unpark`) and queues it hot (`Park::hot_wake`),
/// as the Linux runtime's does.
struct DeferPlatform {
    inner: ThreadPlatform,
}

loom::thread_local! {
    static IN_POLL: std::cell::Cell<bool> = std::cell::Cell::new(false);
    static OWED: std::cell::Cell<bool> = std::cell::Cell::new(false);
}

impl ss_core::platform::Park for DeferPlatform {
    fn park(&self) {
        self.inner.park();
    }
    fn unpark_one(&self) {
        self.inner.unpark_one();
    }
    fn polling(&self, on: bool) {
        IN_POLL.with(|c| c.set(on));
    }
    fn hot_wake(&self) -> bool {
        IN_POLL.with(|c| c.get())
    }
    fn defer_unpark(&self) -> bool {
        let inside = IN_POLL.with(|c| c.get());
        if inside {
            OWED.with(|o| o.set(true));
        }
        inside
    }
    fn take_deferred_unpark(&self) -> bool {
        OWED.with(|o| o.replace(false))
    }
}

impl ss_core::platform::Critical for DeferPlatform {
    type Guard = ();
    fn enter(&self) {}
}

impl ss_core::platform::Platform for DeferPlatform {}

/// Stops its CPU's run (`stop`), wakes coroutine `other` by id (after setting
/// its event), then finishes.
struct StopAndWake {
    exec: Arc<Executor<DeferPlatform>>,
    other: ss_core::CoroutineId,
    event: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Future for StopAndWake {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        self.stop.store(true, SeqCst);
        self.event.store(true, SeqCst);
        let _ = self.exec.wake(self.other);
        Poll::Ready(())
    }
}

/// Two parking CPUs of `exec`: A runs until `stop`, B until the executor is
/// empty. A tells the others only if it may have ended their runs (the
/// executor is empty): a CPU that stops with work left (a runtime worker
/// deferring to another process) tells nobody, so then an unpark deferred on
/// A is all B has.
fn stoppable_and_steady<P: ss_core::platform::Platform>(
    exec: &Arc<Executor<P>>,
    stop: &Arc<AtomicBool>,
) -> [thread::JoinHandle<()>; 2] {
    let mut a = exec.poller();
    let (exec_a, stop_a) = (exec.clone(), stop.clone());
    let cpu_a = thread::spawn(move || {
        a.run_while(|| !stop_a.load(SeqCst));
        if exec_a.is_empty() {
            exec_a.unpark_all();
        }
    });
    let mut b = exec.poller();
    let exec_b = exec.clone();
    let cpu_b = thread::spawn(move || {
        b.run_while(|| !exec_b.is_empty());
        exec_b.unpark_all();
    });
    [cpu_a, cpu_b]
}

#[test]
fn a_wake_deferred_to_the_end_of_the_poll_is_never_lost() {
    // Two parking CPUs. Y blocks. X, polled on either CPU, wakes Y from inside
    // its poll, which leaves the unpark to that CPU's poller, and makes CPU A
    // stop. If A polled X it stops right after, so it must hand the deferred
    // unpark on (to B, maybe asleep) rather than drop it; if B polled X, B runs
    // Y itself. Either way Y runs and both CPUs get out (loom reports a CPU
    // asleep for good as a deadlock).
    model(|| {
        let s = setup(
            DeferPlatform {
                inner: ThreadPlatform::default(),
            },
            1,
        );
        let stop = Arc::new(AtomicBool::new(false));
        // Y is polled (and blocks) before X exists.
        s.exec.poller().run_once();
        let x = StopAndWake {
            exec: s.exec.clone(),
            other: s.cid,
            event: s.event.clone(),
            stop: stop.clone(),
        };
        s.exec.spawn(x, p(2)).unwrap();
        let cpus = stoppable_and_steady(&s.exec, &stop);
        for c in cpus {
            c.join().unwrap();
        }
        assert!(s.exec.is_empty(), "the deferred wake-up was lost");
        assert_eq!(s.drops.load(SeqCst), 1);
    });
}

/// Raised once, waited for by blocking (a loom condition variable).
#[derive(Default)]
struct Flag {
    up: loom::sync::Mutex<bool>,
    cv: loom::sync::Condvar,
}

impl Flag {
    fn raise(&self) {
        *self.up.lock().unwrap() = true;
        self.cv.notify_all();
    }
    fn is_up(&self) -> bool {
        *self.up.lock().unwrap()
    }
    fn wait(&self) {
        let mut up = self.up.lock().unwrap();
        while !*up {
            up = self.cv.wait(up).unwrap();
        }
    }
}

/// Spawns a coroutine that raises `ran` from inside its poll (on a platform
/// that leaves the unpark to this poller), then computes — blocks its CPU —
/// until that coroutine has run: a poll that runs on long after a deferred
/// push.
struct SpawnAndCompute {
    exec: Arc<Executor<DeferPlatform>>,
    ran: Arc<Flag>,
}

impl Future for SpawnAndCompute {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        let ran = self.ran.clone();
        self.exec
            .spawn(
                std::future::poll_fn(move |_| {
                    ran.raise();
                    Poll::Ready(())
                }),
                p(1),
            )
            .unwrap();
        self.ran.wait();
        Poll::Ready(())
    }
}

#[test]
fn a_push_left_behind_a_long_poll_is_rescued_by_the_watch() {
    // Two parking CPUs and a watch. X spawns Y from inside its poll (the
    // unpark left to X's poller) and does not return until Y has run. If the
    // other CPU parked before the push, nobody but the watch's looks
    // (`unpark_if_stalled`) wakes it, and X's CPU would wait for good (loom
    // reports the watch's endless looks: checked with the look taken out).
    model(|| {
        let exec = Arc::new(Executor::with_platform(
            Levels::DEFAULT,
            DeferPlatform {
                inner: ThreadPlatform::default(),
            },
        ));
        let ran = Arc::new(Flag::default());
        let x = SpawnAndCompute {
            exec: exec.clone(),
            ran: ran.clone(),
        };
        exec.spawn(x, p(0)).unwrap();
        let cpus: Vec<_> = (0..2)
            .map(|_| {
                let mut poller = exec.poller();
                let exec = exec.clone();
                thread::spawn(move || {
                    poller.run_while(|| !exec.is_empty());
                    exec.unpark_all();
                })
            })
            .collect();
        let (exec_w, ran_w) = (exec.clone(), ran.clone());
        let watch = thread::spawn(move || {
            let mut seen = None;
            while !ran_w.is_up() {
                exec_w.unpark_if_stalled(&mut seen);
                thread::yield_now();
            }
        });
        for c in cpus {
            c.join().unwrap();
        }
        watch.join().unwrap();
        assert!(ran.is_up());
        assert!(exec.is_empty());
    });
}

/// A platform whose `park` delivers the completions posted to a ring on its
/// way out, inside a `polling` bracket, so that the wakes they cause leave
/// their unparks to this CPU's poller — as the Linux runtime's workers reap
/// their io_uring rings when they leave `park` (and while they spin).
struct RingPlatform {
    defer: DeferPlatform,
    /// Coroutines whose completions wait to be delivered.
    ring: loom::sync::Mutex<Vec<ss_core::CoroutineId>>,
    /// The executor the completions wake coroutines of (set once, before the
    /// CPUs start).
    exec: std::sync::OnceLock<std::sync::Weak<Executor<RingPlatform>>>,
    /// With a doorbell of its own, the platform holds the CPU marked
    /// `RESERVE_CPU` in reserve (as the Linux runtime holds workers beyond the
    /// first while the first keeps up): it parks on this doorbell, never as a
    /// sleeper, and delivers the ring's completions on the way out.
    own: Option<ThreadPlatform>,
}

impl RingPlatform {
    /// Posts a completion for `cid` and rings the doorbell: one permit that
    /// ends a park (or the next), as a completion ends an `io_uring_enter`
    /// wait. It claims no sleeper of the executor's.
    fn post(&self, cid: ss_core::CoroutineId) {
        self.ring.lock().unwrap().push(cid);
        ss_core::platform::Park::unpark_one(&self.defer.inner);
    }
}

impl RingPlatform {
    /// Delivers the completions posted so far, inside a `polling` bracket.
    fn deliver(&self) {
        ss_core::platform::Park::polling(self, true);
        let due = std::mem::take(&mut *self.ring.lock().unwrap());
        if let Some(exec) = self.exec.get().and_then(std::sync::Weak::upgrade) {
            for cid in due {
                let _ = exec.wake(cid);
            }
        }
        ss_core::platform::Park::polling(self, false);
    }

    fn reserve_cpu(&self) -> bool {
        self.own.is_some() && RESERVE_CPU.with(|c| c.get())
    }
}

impl ss_core::platform::Park for RingPlatform {
    fn park(&self) {
        self.defer.park();
        self.deliver();
    }
    fn enter_reserve(&self) -> bool {
        self.reserve_cpu()
    }
    fn in_reserve(&self) -> bool {
        self.reserve_cpu()
    }
    fn park_reserved(&self, _nothing_waited: bool) -> bool {
        if let Some(own) = &self.own {
            ss_core::platform::Park::park(own);
        }
        self.deliver();
        false
    }
    fn unpark_one(&self) {
        self.defer.unpark_one();
    }
    fn polling(&self, on: bool) {
        self.defer.polling(on);
    }
    fn hot_wake(&self) -> bool {
        self.defer.hot_wake()
    }
    fn defer_unpark(&self) -> bool {
        self.defer.defer_unpark()
    }
    fn take_deferred_unpark(&self) -> bool {
        self.defer.take_deferred_unpark()
    }
}

impl ss_core::platform::Critical for RingPlatform {
    type Guard = ();
    fn enter(&self) {}
}

impl ss_core::platform::Platform for RingPlatform {}

/// [`setup`] on a [`RingPlatform`] (with a reserve doorbell if `reserve`),
/// the platform knowing its executor.
fn ring_setup(reserve: bool) -> Setup<RingPlatform> {
    let s = setup(
        RingPlatform {
            defer: DeferPlatform {
                inner: ThreadPlatform::default(),
            },
            ring: loom::sync::Mutex::new(Vec::new()),
            exec: std::sync::OnceLock::new(),
            own: reserve.then(ThreadPlatform::default),
        },
        1,
    );
    let _ = s.exec.platform().exec.set(Arc::downgrade(&s.exec));
    s
}

#[test]
fn a_wake_deferred_while_leaving_park_is_never_lost() {
    // Two parking CPUs; Y blocks. A device completes Y's call: it publishes
    // the event, posts the completion and rings the doorbell, after telling
    // CPU A to stop. Whichever CPU leaves `park` delivers the completion, and
    // the wake leaves its unpark to that CPU's poller. If A delivered it and
    // then stops, it must hand the unpark on (to B, maybe asleep) rather than
    // drop it. Either way Y runs and both CPUs get out (loom reports a CPU
    // asleep for good as a deadlock).
    model(|| {
        let s = ring_setup(false);
        // Y is polled (and blocks) before the CPUs start.
        s.exec.poller().run_once();
        let stop = Arc::new(AtomicBool::new(false));
        let cpus = stoppable_and_steady(&s.exec, &stop);
        stop.store(true, SeqCst);
        s.event.store(true, SeqCst);
        s.exec.platform().post(s.cid);
        for c in cpus {
            c.join().unwrap();
        }
        assert!(s.exec.is_empty(), "the deferred wake-up was lost");
        assert_eq!(s.drops.load(SeqCst), 1);
    });
}

loom::thread_local! {
    /// The CPU a [`RingPlatform`] with a doorbell of its own holds in reserve.
    static RESERVE_CPU: std::cell::Cell<bool> = std::cell::Cell::new(false);
}

#[test]
fn what_a_cpu_in_reserve_delivers_reaches_a_sleeper() {
    // Y blocks on a call whose completion goes to the ring of the CPU held in
    // reserve (R). R is no sleeper, so the wake its delivery causes must reach
    // the other CPU (A) — parked as a sleeper, or about to look at the queues —
    // through the unpark the push left to R's poller. Else A sleeps with Y
    // ready, and R, in reserve, never polls it: loom reports the deadlock.
    model(|| {
        let s = ring_setup(true);
        s.exec.poller().run_once();
        let (mut a, mut r) = (s.exec.poller(), s.exec.poller());
        let (exec_a, exec_r) = (s.exec.clone(), s.exec.clone());
        let cpu_r = thread::spawn(move || {
            RESERVE_CPU.with(|c| c.set(true));
            r.run_while(|| !exec_r.is_empty());
        });
        let cpu_a = thread::spawn(move || {
            a.run_while(|| !exec_a.is_empty());
            // Done: R looks at its condition once more.
            if let Some(own) = &exec_a.platform().own {
                ss_core::platform::Park::unpark_one(own);
            }
        });
        s.event.store(true, SeqCst);
        s.exec.platform().ring.lock().unwrap().push(s.cid);
        if let Some(own) = &s.exec.platform().own {
            ss_core::platform::Park::unpark_one(own);
        }
        cpu_a.join().unwrap();
        cpu_r.join().unwrap();
        assert!(s.exec.is_empty(), "the completion R delivered was lost");
        assert_eq!(s.drops.load(SeqCst), 1);
    });
}

/// A platform that checks every transition it is told of is one the paper's
/// state model allows (an exit after an exit is not).
struct Checked;

impl ss_core::platform::Park for Checked {
    fn park(&self) {}
    fn unpark_one(&self) {}
}

impl ss_core::platform::Critical for Checked {
    type Guard = ();
    fn enter(&self) {}
}

impl ss_core::platform::Platform for Checked {
    fn on_transition(
        &self,
        cid: ss_core::CoroutineId,
        from: ss_core::CoroutineState,
        to: ss_core::CoroutineState,
    ) {
        assert!(
            from.can_become(to),
            "coroutine {cid}: illegal transition {from} -> {to}"
        );
    }
}

/// Pending for ever; counts its drops.
struct Forever(Arc<StdCount>);

impl Future for Forever {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

impl Drop for Forever {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

#[test]
fn spawn_races_cancel_and_shutdown() {
    // A cancel by id (ids are predictable: the first coroutine is slot 0,
    // generation 1) lands while the spawn still holds its coroutine in
    // Create, and a shutdown runs meanwhile: exactly one of them exits it and
    // drops its future. (Before 2026-11-29 the spawn, seeing the cancel, took
    // the word to DONE with a swap even when the shutdown had got there
    // first: two exits, the future dropped from two threads at once.)
    model(|| {
        let exec = Arc::new(Executor::with_platform(Levels::DEFAULT, Checked));
        let first = ss_core::CoroutineId::from_raw(1 << 32);
        let drops = Arc::new(StdCount::new(0));
        let e1 = exec.clone();
        let canceller = thread::spawn(move || {
            let _ = e1.cancel(first);
        });
        let e2 = exec.clone();
        let shutter = thread::spawn(move || {
            e2.shutdown();
        });
        if let Ok(cid) = exec.spawn(Forever(drops.clone()), p(1)) {
            assert_eq!(cid, first);
        }
        canceller.join().unwrap();
        shutter.join().unwrap();
        assert_eq!(drops.load(SeqCst), 1, "the future dropped once");
    });
}
