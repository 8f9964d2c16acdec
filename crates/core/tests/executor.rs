//! Behaviour of the Executor through its public API.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use ss_core::platform::ThreadPlatform;
use ss_core::{
    cid_of, current_cid, kind_of, Cancel, CoroutineId, CoroutineKind, CoroutineState, Error,
    Executor, Levels, Stall, Wake,
};

type Log = Arc<Mutex<Vec<u32>>>;

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

#[test]
fn strict_priority_then_fifo_within_a_level() {
    let exec = Executor::new();
    let out = log();
    let order = [(3, 30), (1, 10), (3, 31), (0, 0), (1, 11), (7, 70), (0, 1)];
    for (level, tag) in order {
        let out = out.clone();
        exec.spawn(async move { out.lock().unwrap().push(tag) }, p(level))
            .unwrap();
    }
    assert_eq!(exec.ready_len(), order.len());
    assert_eq!(exec.most_important_ready(), Some(p(0)));
    assert_eq!(exec.ready_bitmap().bits(), 0b1000_1011);
    exec.poller().run_until_idle();
    assert_eq!(*out.lock().unwrap(), [0, 1, 10, 11, 30, 31, 70]);
    assert!(exec.is_empty());
    assert!(exec.ready_bitmap().is_empty());
}

#[test]
fn a_yield_goes_behind_its_equals_but_before_less_important_work() {
    let exec = Executor::new();
    let out = log();
    for tag in [1, 2] {
        let out = out.clone();
        exec.spawn(
            async move {
                out.lock().unwrap().push(tag);
                yield_now().await;
                out.lock().unwrap().push(tag + 10);
            },
            p(2),
        )
        .unwrap();
    }
    let o = out.clone();
    exec.spawn(async move { o.lock().unwrap().push(99) }, p(5))
        .unwrap();
    exec.poller().run_until_idle();
    assert_eq!(*out.lock().unwrap(), [1, 2, 11, 12, 99]);
}

#[test]
fn wake_by_id_and_by_waker_take_the_same_path() {
    let exec = Executor::new();
    let slot = WakerSlot::default();
    let hits = Arc::new(AtomicUsize::new(0));
    let (s, h) = (slot.clone(), hits.clone());
    let by_waker = exec
        .spawn(
            async move {
                s.wait().await;
                h.fetch_add(1, Ordering::SeqCst);
            },
            p(1),
        )
        .unwrap();
    let h = hits.clone();
    let by_id = exec
        .spawn(
            async move {
                block_once().await;
                h.fetch_add(1, Ordering::SeqCst);
            },
            p(1),
        )
        .unwrap();
    let mut cpu = exec.poller();
    cpu.run_until_idle();
    let mut blocked = exec.blocked();
    blocked.sort();
    let mut want = vec![by_waker, by_id];
    want.sort();
    assert_eq!(blocked, want);
    assert_eq!(exec.state(by_id), Ok(CoroutineState::Blocked));

    assert_eq!(exec.wake(by_id), Ok(Wake::Queued));
    assert_eq!(
        exec.wake(by_id),
        Ok(Wake::AlreadyReady),
        "no double queueing"
    );
    assert_eq!(exec.state(by_id), Ok(CoroutineState::Ready));
    let waker = slot.take().unwrap();
    assert_eq!(cid_of(&waker), Some(by_waker));
    assert_eq!(kind_of(&waker), Some(CoroutineKind::Normal));
    waker.wake_by_ref();
    waker.wake(); // a second wake of a ready coroutine changes nothing
    assert_eq!(exec.ready_len(), 2);
    assert_eq!(
        cpu.run_until_idle(),
        2,
        "each coroutine polled exactly once"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(exec.wake(by_id), Err(Error::NoSuchCoroutine(by_id)));
}

#[test]
fn forged_and_stale_ids_find_nothing() {
    let exec = Executor::new();
    let cid = exec.spawn(async {}, p(0)).unwrap();
    exec.poller().run_until_idle();
    // The slot is reused with a new generation; the old id stays dead.
    let next = exec.spawn(Forever, p(0)).unwrap();
    assert_ne!(cid, next);
    for bad in [
        cid,
        CoroutineId::from_raw(0),
        CoroutineId::from_raw(u64::MAX),
        CoroutineId::from_raw(next.into_raw() ^ (1 << 32)),
        CoroutineId::from_raw(next.into_raw() + 1),
    ] {
        assert_eq!(exec.wake(bad), Err(Error::NoSuchCoroutine(bad)));
        assert_eq!(exec.reprio(bad, p(1)), Err(Error::NoSuchCoroutine(bad)));
        assert_eq!(exec.cancel(bad), Err(Error::NoSuchCoroutine(bad)));
        assert!(exec.state(bad).is_err());
    }
    assert_eq!(exec.state(next), Ok(CoroutineState::Ready));
}

#[test]
fn priorities_are_checked_against_the_levels() {
    let exec = Executor::with_platform(Levels::new(4).unwrap(), ss_core::platform::SpinPlatform);
    assert!(matches!(
        exec.spawn(async {}, p(4)),
        Err(Error::Priority(_))
    ));
    let cid = exec.spawn(async {}, p(3)).unwrap();
    let e = exec.reprio(cid, p(9)).unwrap_err();
    assert!(e.to_string().contains("0 (most important) to 3"), "{e}");
    let max = Executor::with_platform(Levels::MAX, ss_core::platform::SpinPlatform);
    let out = log();
    for level in [63u8, 0, 40] {
        let out = out.clone();
        max.spawn(
            async move { out.lock().unwrap().push(level.into()) },
            p(level),
        )
        .unwrap();
    }
    max.poller().run_until_idle();
    assert_eq!(*out.lock().unwrap(), [0, 40, 63]);
}

#[test]
fn reprio_moves_a_ready_coroutine_and_applies_to_a_blocked_one_when_woken() {
    let exec = Executor::new();
    let out = log();
    let mut cids = Vec::new();
    for tag in 0..3 {
        let out = out.clone();
        cids.push(
            exec.spawn(
                async move {
                    out.lock().unwrap().push(tag);
                    block_once().await;
                    out.lock().unwrap().push(tag + 10);
                },
                p(4),
            )
            .unwrap(),
        );
    }
    // Ready: move the last one ahead of the others.
    exec.reprio(cids[2], p(1)).unwrap();
    assert_eq!(exec.ready_bitmap().bits(), 0b1_0010);
    let mut cpu = exec.poller();
    cpu.run_until_idle();
    assert_eq!(*out.lock().unwrap(), [2, 0, 1]);
    // Blocked: the new priority applies when it is woken.
    exec.reprio(cids[1], p(0)).unwrap();
    assert_eq!(exec.priority(cids[1]), Ok(p(0)));
    for &c in &cids {
        exec.wake(c).unwrap();
    }
    assert_eq!(exec.ready_bitmap().bits(), 0b1_0011);
    cpu.run_until_idle();
    assert_eq!(*out.lock().unwrap(), [2, 0, 1, 11, 12, 10]);
}

#[test]
fn reprio_from_inside_the_running_coroutine_applies_to_its_next_queueing() {
    let exec = Arc::new(Executor::new());
    let out = log();
    let (e, o) = (exec.clone(), out.clone());
    exec.spawn(
        async move {
            let me = current_cid().await.unwrap();
            e.reprio(me, p(7)).unwrap();
            yield_now().await; // now queued at 7, behind the level-3 one
            o.lock().unwrap().push(2);
        },
        p(0),
    )
    .unwrap();
    let o = out.clone();
    exec.spawn(async move { o.lock().unwrap().push(1) }, p(3))
        .unwrap();
    exec.poller().run_until_idle();
    assert_eq!(*out.lock().unwrap(), [1, 2]);
}

#[test]
fn cancel_in_every_state_drops_the_future_once() {
    let exec = Arc::new(Executor::new());
    let drops = DropCount::default();
    let mut cpu = exec.poller();

    // Ready.
    let t = drops.token();
    let ready = exec
        .spawn(
            async move {
                let _t = t;
                Forever.await
            },
            p(2),
        )
        .unwrap();
    assert_eq!(exec.cancel(ready), Ok(Cancel::Dropped));
    assert_eq!(drops.get(), 1);
    assert!(exec.ready_bitmap().is_empty());

    // Blocked.
    let t = drops.token();
    let blocked = exec
        .spawn(
            async move {
                let _t = t;
                Forever.await
            },
            p(2),
        )
        .unwrap();
    cpu.run_until_idle();
    assert_eq!(exec.state(blocked), Ok(CoroutineState::Blocked));
    assert_eq!(exec.cancel(blocked), Ok(Cancel::Dropped));
    assert_eq!(drops.get(), 2);
    assert_eq!(exec.cancel(blocked), Err(Error::NoSuchCoroutine(blocked)));

    // Running: cancelling itself is deferred to the end of the poll.
    let t = drops.token();
    let e = exec.clone();
    let outcome = Arc::new(Mutex::new(None));
    let o = outcome.clone();
    exec.spawn(
        async move {
            let _t = t;
            let me = current_cid().await.unwrap();
            *o.lock().unwrap() = Some(e.cancel(me));
            yield_now().await;
            unreachable!("cancelled coroutines are not polled again");
        },
        p(2),
    )
    .unwrap();
    cpu.run_until_idle();
    assert_eq!(*outcome.lock().unwrap(), Some(Ok(Cancel::Deferred)));
    assert_eq!(drops.get(), 3);
    assert!(exec.is_empty());
}

#[test]
fn suspend_and_resume_follow_the_state_model() {
    let exec = Arc::new(Executor::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (e, s) = (exec.clone(), seen.clone());
    let cid = exec
        .spawn(
            async move {
                let me = current_cid().await.unwrap();
                // A trap arrives: the handler marks the coroutine suspended...
                e.suspend(me).unwrap();
                s.lock().unwrap().push(e.state(me).unwrap());
                assert!(matches!(e.suspend(me), Err(Error::WrongState { .. })));
                // ...and returns to it.
                e.resume(me).unwrap();
                s.lock().unwrap().push(e.state(me).unwrap());
            },
            p(0),
        )
        .unwrap();
    assert!(matches!(
        exec.suspend(cid),
        Err(Error::WrongState {
            state: CoroutineState::Ready,
            needs: CoroutineState::Running,
            ..
        })
    ));
    exec.poller().run_until_idle();
    assert_eq!(
        *seen.lock().unwrap(),
        [CoroutineState::RunningSuspended, CoroutineState::Running]
    );
}

#[test]
fn the_recorded_trace_walks_the_documented_edges() {
    use CoroutineState::*;
    let exec = Arc::new(Executor::with_platform(
        Levels::DEFAULT,
        Recorder::default(),
    ));
    let e = exec.clone();
    let cid = exec
        .spawn(
            async move {
                let me = current_cid().await.unwrap();
                yield_now().await; // ④
                e.suspend(me).unwrap(); // ⑥
                e.resume(me).unwrap(); // ⑦
                block_once().await; // ③
            },
            p(1),
        )
        .unwrap();
    let mut cpu = exec.poller();
    cpu.run_until_idle();
    exec.wake(cid).unwrap(); // ⑧
    cpu.run_until_idle(); // ⑤
    assert_eq!(
        exec.platform().trace_of(cid),
        [
            (Create, Ready),
            (Ready, Running),
            (Running, Ready),
            (Ready, Running),
            (Running, RunningSuspended),
            (RunningSuspended, Running),
            (Running, Blocked),
            (Blocked, Ready),
            (Ready, Running),
            (Running, Exit),
        ]
    );
}

#[test]
fn kinds_and_current_id() {
    let exec = Executor::new();
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    let cid = exec
        .spawn_kind(
            async move {
                let me = current_cid().await;
                let kind =
                    std::future::poll_fn(|cx| std::task::Poll::Ready(kind_of(cx.waker()))).await;
                *s.lock().unwrap() = Some((me, kind));
            },
            p(0),
            CoroutineKind::Main,
        )
        .unwrap();
    assert_eq!(exec.kind(cid), Ok(CoroutineKind::Main));
    exec.poller().run_until_idle();
    assert_eq!(
        *seen.lock().unwrap(),
        Some((Some(cid), Some(CoroutineKind::Main)))
    );
    // Outside a coroutine there is no id.
    let noop = std::task::Waker::noop();
    assert_eq!(cid_of(noop), None);
}

#[test]
fn a_panicking_coroutine_exits_and_the_executor_goes_on() {
    let exec = Executor::new();
    let drops = DropCount::default();
    let t = drops.token();
    let bad = exec
        .spawn(
            async move {
                let _t = t;
                panic!("boom");
            },
            p(0),
        )
        .unwrap();
    let ok = Arc::new(AtomicUsize::new(0));
    let o = ok.clone();
    exec.spawn(
        async move {
            o.fetch_add(1, Ordering::SeqCst);
        },
        p(1),
    )
    .unwrap();
    let mut cpu = exec.poller();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cpu.run_until_idle()));
    assert!(r.is_err(), "the panic reaches the poller's caller");
    assert_eq!(drops.get(), 1, "the panicked future was dropped");
    assert!(exec.state(bad).is_err(), "and its id retired");
    cpu.run_until_idle();
    assert_eq!(ok.load(Ordering::SeqCst), 1);
    assert!(exec.is_empty());
}

#[test]
fn shutdown_drops_every_future_and_refuses_new_work() {
    let drops = DropCount::default();
    let exec = Executor::new();
    let slot = WakerSlot::default();
    for level in 0..8 {
        let t = drops.token();
        exec.spawn(
            async move {
                let _t = t;
                Forever.await
            },
            p(level),
        )
        .unwrap();
    }
    let (t, s) = (drops.token(), slot.clone());
    exec.spawn(
        async move {
            let _t = t;
            s.wait().await;
            Forever.await
        },
        p(0),
    )
    .unwrap();
    exec.poller().run_until_idle(); // all 9 now blocked
    for level in 0..3 {
        let t = drops.token();
        exec.spawn(
            async move {
                let _t = t;
            },
            p(level),
        )
        .unwrap(); // 3 ready
    }
    assert_eq!(exec.shutdown(), 12);
    assert_eq!(drops.get(), 12);
    assert!(exec.is_closed());
    assert_eq!(exec.spawn(async {}, p(0)), Err(Error::Closed));
    // A waker that outlives the executor wakes nothing and frees its task.
    slot.take().unwrap().wake();
    assert_eq!(exec.shutdown(), 0, "idempotent");
}

#[test]
fn dropping_the_executor_frees_coroutines_that_hold_wakers_of_each_other() {
    // A cycle: each coroutine's future holds the other's waker.
    let drops = DropCount::default();
    {
        let exec = Executor::new();
        let a = WakerSlot::default();
        let b = WakerSlot::default();
        let (t, a1, b1) = (drops.token(), a.clone(), b.clone());
        exec.spawn(
            async move {
                let _t = t;
                let _b = b1;
                a1.wait().await;
                Forever.await
            },
            p(0),
        )
        .unwrap();
        let (t, a2, b2) = (drops.token(), a.clone(), b.clone());
        exec.spawn(
            async move {
                let _t = t;
                let _a = a2;
                b2.wait().await;
                Forever.await
            },
            p(0),
        )
        .unwrap();
        exec.poller().run_until_idle();
    }
    assert_eq!(drops.get(), 2);
}

#[test]
fn a_future_that_wakes_and_spawns_in_its_destructor_does_not_deadlock() {
    struct Noisy(Arc<Executor>, Option<CoroutineId>);
    impl Drop for Noisy {
        fn drop(&mut self) {
            if let Some(c) = self.1 {
                let _ = self.0.wake(c);
            }
            let _ = self.0.spawn(async {}, p(0));
        }
    }
    let exec = Arc::new(Executor::new());
    let other = exec.spawn(Forever, p(1)).unwrap();
    let n = Noisy(exec.clone(), Some(other));
    let me = exec
        .spawn(
            async move {
                let _n = n;
                Forever.await
            },
            p(0),
        )
        .unwrap();
    exec.poller().run_until_idle();
    assert_eq!(exec.cancel(me), Ok(Cancel::Dropped));
    exec.poller().run_until_idle();
    exec.shutdown();
}

#[test]
fn several_threads_poll_one_executor_without_losing_or_repeating_work() {
    const WORKERS: usize = 3;
    const COROUTINES: usize = if cfg!(miri) { 12 } else { 2_000 };
    const ROUNDS: usize = if cfg!(miri) { 4 } else { 20 };
    let exec = Arc::new(Executor::with_platform(
        Levels::DEFAULT,
        ThreadPlatform::default(),
    ));
    let polls = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut cids = Vec::new();
    for i in 0..COROUTINES {
        let (polls, done) = (polls.clone(), done.clone());
        cids.push(
            exec.spawn(
                exclusive(async move {
                    for r in 0..ROUNDS {
                        polls.fetch_add(1, Ordering::SeqCst);
                        if r % 2 == 0 {
                            yield_now().await;
                        } else {
                            block_once().await;
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }),
                p((i % 8) as u8),
            )
            .unwrap(),
        );
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let mut cpu = exec.poller();
            let stop = stop.clone();
            std::thread::spawn(move || cpu.run_while(|| !stop.load(Ordering::SeqCst)))
        })
        .collect();
    // Wakers hammer every coroutine by id from two more threads meanwhile.
    let wakers: Vec<_> = (0..2)
        .map(|k| {
            let (exec, cids, done) = (exec.clone(), cids.clone(), done.clone());
            std::thread::spawn(move || {
                while done.load(Ordering::SeqCst) < COROUTINES {
                    for c in cids.iter().skip(k).step_by(2) {
                        let _ = exec.wake(*c);
                    }
                }
            })
        })
        .collect();
    for w in wakers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    exec.unpark_all();
    let total: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(done.load(Ordering::SeqCst), COROUTINES);
    assert_eq!(polls.load(Ordering::SeqCst), COROUTINES * ROUNDS);
    // Every poll is the first poll, or follows exactly one queueing.
    assert!(total >= COROUTINES * (ROUNDS + 1));
    assert!(exec.is_empty());
}

#[test]
fn a_parked_poller_wakes_for_work_from_another_thread() {
    let exec = Arc::new(Executor::with_platform(
        Levels::DEFAULT,
        ThreadPlatform::default(),
    ));
    let mut cpu = exec.poller();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let worker = std::thread::spawn(move || cpu.run_while(|| !s.load(Ordering::SeqCst)));
    let hits = Arc::new(AtomicUsize::new(0));
    let rounds = if cfg!(miri) { 5 } else { 200 };
    for _ in 0..rounds {
        let h = hits.clone();
        let before = hits.load(Ordering::SeqCst);
        exec.spawn(
            async move {
                h.fetch_add(1, Ordering::SeqCst);
            },
            p(3),
        )
        .unwrap();
        // The worker must wake and run it; if it were lost, this would hang.
        while hits.load(Ordering::SeqCst) == before {
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::SeqCst);
    exec.unpark_all();
    worker.join().unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), rounds);
}

#[test]
fn shutdown_while_pollers_run_returns_them_and_drops_everything() {
    let exec = Arc::new(Executor::with_platform(
        Levels::DEFAULT,
        ThreadPlatform::default(),
    ));
    let drops = DropCount::default();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let mut cpu = exec.poller();
            std::thread::spawn(move || cpu.run())
        })
        .collect();
    let n = if cfg!(miri) { 16 } else { 500 };
    for i in 0..n {
        let t = drops.token();
        exec.spawn(
            async move {
                let _t = t;
                loop {
                    yield_now().await;
                }
            },
            p((i % 8) as u8),
        )
        .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    exec.shutdown();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(drops.get(), n);
    assert_eq!(exec.pollers(), 0);
}

#[test]
fn run_for_stops_at_the_end_of_its_slice_and_leaves_the_rest_ready() {
    use ss_core::platform::{Clock, Critical, Park, Platform};
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    /// A clock that advances 1 ms each time it is read.
    #[derive(Default)]
    struct Ticking(AtomicU64);
    impl Clock for Ticking {
        fn now(&self) -> Duration {
            Duration::from_millis(self.0.fetch_add(1, Ordering::SeqCst))
        }
    }
    impl Park for Ticking {
        fn park(&self) {}
        fn unpark_one(&self) {}
    }
    impl Critical for Ticking {
        type Guard = ();
        fn enter(&self) {}
    }
    impl Platform for Ticking {}

    let exec = Executor::with_platform(Levels::DEFAULT, Ticking::default());
    let polls = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        let n = polls.clone();
        exec.spawn(
            async move {
                loop {
                    n.fetch_add(1, Ordering::SeqCst);
                    yield_now().await;
                }
            },
            p(1),
        )
        .unwrap();
    }
    let mut cpu = exec.poller();
    // One clock read to start, one before each poll: a 5 ms slice allows 4 polls.
    assert_eq!(cpu.run_for(Duration::from_millis(5)), 4);
    assert_eq!(polls.load(Ordering::SeqCst), 4);
    assert_eq!(
        exec.ready_len(),
        2,
        "the yielded coroutine went back to its queue"
    );
    // Nothing ready: returns at once.
    let idle = Executor::with_platform(Levels::DEFAULT, Ticking::default());
    assert_eq!(idle.poller().run_for(Duration::from_secs(1)), 0);
}

#[test]
fn own_cid_tells_this_executors_coroutines_from_anothers() {
    let a = Arc::new(Executor::new());
    let b = Executor::new();
    let seen = Arc::new(Mutex::new(None));
    let (ea, sn) = (a.clone(), seen.clone());
    let cid = a
        .spawn(
            async move {
                let w = std::future::poll_fn(|cx| std::task::Poll::Ready(cx.waker().clone())).await;
                *sn.lock().unwrap() = Some((ea.own_cid(&w), cid_of(&w)));
                // The poll-scoped waker too.
                let own =
                    std::future::poll_fn(|cx| std::task::Poll::Ready(ea.own_cid(cx.waker()))).await;
                assert_eq!(own, cid_of(&w));
            },
            p(0),
        )
        .unwrap();
    a.poller().run_until_idle();
    let (own, any) = seen.lock().unwrap().unwrap();
    assert_eq!(own, Some(cid));
    assert_eq!(any, Some(cid));
    // Another executor does not claim it, and nobody claims a foreign waker.
    let b_seen = Arc::new(Mutex::new(None));
    let bs = b_seen.clone();
    let a2 = a.clone();
    b.spawn(
        async move {
            let own_b =
                std::future::poll_fn(|cx| std::task::Poll::Ready(a2.own_cid(cx.waker()))).await;
            *bs.lock().unwrap() = Some(own_b);
        },
        p(0),
    )
    .unwrap();
    b.poller().run_until_idle();
    assert_eq!(*b_seen.lock().unwrap(), Some(None));
    assert_eq!(a.own_cid(std::task::Waker::noop()), None);
}

#[test]
fn a_coroutine_can_ask_whether_something_more_important_is_ready() {
    let exec = Arc::new(Executor::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (e, s) = (exec.clone(), seen.clone());
    exec.spawn(
        async move {
            let ask = || {
                std::future::poll_fn(|cx| {
                    std::task::Poll::Ready(ss_core::more_important_ready(cx.waker()))
                })
            };
            let alone = ask().await;
            s.lock().unwrap().push(alone);
            // Something more important becomes ready (and something less).
            e.spawn(async {}, p(1)).unwrap();
            e.spawn(async {}, p(6)).unwrap();
            let now = ask().await;
            s.lock().unwrap().push(now);
            // A stored (cloned) waker answers the same.
            let w = std::future::poll_fn(|cx| std::task::Poll::Ready(cx.waker().clone())).await;
            s.lock().unwrap().push(ss_core::more_important_ready(&w));
        },
        p(4),
    )
    .unwrap();
    exec.poller().run_until_idle();
    assert_eq!(*seen.lock().unwrap(), [Some(false), Some(true), Some(true)]);
    assert_eq!(
        ss_core::more_important_ready(std::task::Waker::noop()),
        None
    );
}

#[test]
fn a_watch_calls_ready_work_stalled_only_after_two_looks_without_a_pop() {
    let exec = Executor::new();
    let mut seen = None;
    assert_eq!(exec.unpark_if_stalled(&mut seen), Stall::Idle);
    exec.spawn(async {}, p(1)).unwrap();
    exec.spawn(async {}, p(1)).unwrap();
    // First sight of ready work: it may be about to be popped.
    assert_eq!(exec.unpark_if_stalled(&mut seen), Stall::Moving);
    // Nobody popped, and nobody sleeps to be woken.
    assert_eq!(
        exec.unpark_if_stalled(&mut seen),
        Stall::Stalled { unparked: false }
    );
    let mut poller = exec.poller();
    assert!(poller.run_once());
    assert_eq!(exec.unpark_if_stalled(&mut seen), Stall::Moving);
    assert!(poller.run_once());
    assert_eq!(exec.unpark_if_stalled(&mut seen), Stall::Idle);
    // Ready work after an idle look is first sight again.
    exec.spawn(async {}, p(1)).unwrap();
    assert_eq!(exec.unpark_if_stalled(&mut seen), Stall::Moving);
}
