//! Timers over IORING_OP_TIMEOUT: sleeps end in deadline order and never early,
//! `timeout` elapses or passes the output through, `interval` ticks on schedule.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ss_runtime::{prio, time, Runtime};

fn rt() -> Runtime {
    Runtime::builder().workers(2).build().unwrap()
}

#[test]
fn sleeps_end_in_deadline_order_and_never_early() {
    let rt = rt();
    let order = Arc::new(Mutex::new(Vec::new()));
    rt.block_on({
        let order = order.clone();
        async move {
            let mut hs = Vec::new();
            // Spawned in an order unlike their deadlines.
            for ms in [40u64, 10, 30, 0, 20] {
                let order = order.clone();
                hs.push(ss_runtime::spawn(
                    async move {
                        let start = Instant::now();
                        time::sleep(Duration::from_millis(ms)).await;
                        assert!(start.elapsed() >= Duration::from_millis(ms));
                        order.lock().unwrap().push(ms);
                    },
                    prio(1),
                ));
            }
            for h in hs {
                h.await.unwrap();
            }
        }
    });
    assert_eq!(*order.lock().unwrap(), [0, 10, 20, 30, 40]);
}

#[test]
fn sleep_until_a_past_instant_is_ready_at_once() {
    let rt = rt();
    rt.block_on(async {
        let past = Instant::now() - Duration::from_millis(5);
        let s = time::sleep_until(past);
        assert_eq!(s.deadline(), past);
        s.await;
    });
}

#[test]
fn timeout_elapses_or_passes_the_output_through() {
    let rt = rt();
    rt.block_on(async {
        let start = Instant::now();
        let r = time::timeout(
            Duration::from_millis(10),
            time::sleep(Duration::from_secs(30)),
        )
        .await;
        let e = r.unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(10));
        assert!(start.elapsed() < Duration::from_secs(30));
        assert!(e.to_string().contains("deadline"));
        let io: std::io::Error = e.into();
        assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);

        let v = time::timeout(Duration::from_secs(30), async { 7 }).await;
        assert_eq!(v, Ok(7));
        let v = time::timeout(Duration::from_secs(30), async {
            time::sleep(Duration::from_millis(1)).await;
            8
        })
        .await;
        assert_eq!(v, Ok(8));
    });
}

#[test]
fn interval_ticks_on_a_fixed_schedule() {
    let rt = rt();
    rt.block_on(async {
        let period = Duration::from_millis(5);
        let mut iv = time::interval(period);
        assert_eq!(iv.period(), period);
        let first = iv.tick().await;
        let mut last = first;
        for k in 1..=4u32 {
            let at = iv.tick().await;
            assert_eq!(at, first + period * k);
            assert!(Instant::now() >= at);
            last = at;
        }
        // Fall behind by several periods: the late tick fires once, at once; the
        // ones missed meanwhile are skipped, not bunched; the schedule holds.
        time::sleep(period * 3 + Duration::from_millis(1)).await;
        let late = iv.tick().await;
        assert_eq!(late, last + period);
        let next = iv.tick().await;
        assert!(
            next >= last + period * 4,
            "missed ticks fired instead of being skipped"
        );
        assert_eq!((next - first).as_nanos() % period.as_nanos(), 0);
    });
}

#[test]
fn a_reset_sleep_uses_its_new_deadline() {
    let rt = rt();
    rt.block_on(async {
        let start = Instant::now();
        let mut s = time::sleep(Duration::from_secs(30));
        // Start the 30 s timer, then move the deadline close.
        assert!(time::timeout(Duration::from_millis(1), &mut s)
            .await
            .is_err());
        s.reset(Instant::now() + Duration::from_millis(5));
        s.await;
        assert!(start.elapsed() < Duration::from_secs(30));
    });
}

#[test]
fn many_concurrent_sleepers_all_wake() {
    let rt = rt();
    let n = rt.block_on(async {
        let hs: Vec<_> = (0..200u64)
            .map(|i| {
                ss_runtime::spawn(
                    async move {
                        time::sleep(Duration::from_micros(100 * (i % 7))).await;
                        1usize
                    },
                    prio((i % 8) as u8),
                )
            })
            .collect();
        let mut n = 0;
        for h in hs {
            n += h.await.unwrap();
        }
        n
    });
    assert_eq!(n, 200);
}

#[test]
fn durations_beyond_what_an_instant_holds_mean_never_not_a_panic() {
    let rt = ss_runtime::Runtime::builder().workers(1).build().unwrap();
    rt.block_on(async {
        // "No timeout": the future's own answer.
        let v = ss_runtime::time::timeout(Duration::MAX, async { 5 }).await;
        assert_eq!(v.unwrap(), 5);
        // A sleep of for ever does not end within 10 ms.
        let s = ss_runtime::time::timeout(
            Duration::from_millis(10),
            ss_runtime::time::sleep(Duration::MAX),
        )
        .await;
        assert!(s.is_err());
        // An interval of for ever: its first tick at once, its second never.
        let mut iv = ss_runtime::time::interval(Duration::MAX);
        iv.tick().await;
        let second = ss_runtime::time::timeout(Duration::from_millis(10), iv.tick()).await;
        assert!(second.is_err());
    });
}
