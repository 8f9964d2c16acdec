//! A worker that stops polling while another parks is moved onto the parking
//! worker's CPU, and gets its own affinity back as it runs again.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ss_runtime::{prio, Runtime};

const MASK_SIZE: usize = std::mem::size_of::<libc::cpu_set_t>();

fn affinity(tid: libc::pid_t) -> libc::cpu_set_t {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the call writes at most
    // MASK_SIZE bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(tid, MASK_SIZE, &mut set), 0);
        set
    }
}

fn cpus(set: &libc::cpu_set_t) -> usize {
    // SAFETY: CPU_COUNT reads the set it is given.
    unsafe { libc::CPU_COUNT(set) as usize }
}

fn same(a: &libc::cpu_set_t, b: &libc::cpu_set_t) -> bool {
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: indices below CPU_SETSIZE are in bounds.
        .all(|i| unsafe { libc::CPU_ISSET(i, a) == libc::CPU_ISSET(i, b) })
}

/// This process's affinity, if it holds more than one CPU (else the test is
/// skipped, and says so).
fn several_cpus() -> Option<libc::cpu_set_t> {
    let start = affinity(0);
    if cpus(&start) < 2 {
        eprintln!("skipped: this process may use only one CPU");
        return None;
    }
    Some(start)
}

/// Runs a coroutine that computes for up to `stall` without polling, beside a
/// coroutine that sleeps 1 ms at a time (its worker parks again and again).
/// With `pinned`, the computing coroutine first sets its worker's affinity to
/// that set itself (as a coordinator or an administrator would). Returns
/// (whether the stalled worker saw its affinity differ from what it started
/// with — or was pinned to — during the computation, its tid, the nudges
/// done from the computation's spawn on, the runtime).
fn stall(
    nudge_after: Duration,
    stall: Duration,
    pinned: Option<libc::cpu_set_t>,
) -> (bool, libc::pid_t, u64, Runtime) {
    let rt = Runtime::builder()
        .workers(2)
        .idle_spin(Duration::from_micros(5))
        .nudge_after(nudge_after)
        .build()
        .unwrap();
    // Let the workers start and sleep first: a worker still setting up its
    // ring can be nudged at start-up (and restores its affinity as it parks),
    // which is not what the tests look at.
    rt.block_on(async { ss_runtime::time::sleep(Duration::from_millis(20)).await });
    let nudges_before = rt.nudges();
    let started_with = affinity(0);
    let done = Arc::new(AtomicBool::new(false));
    let tid = Arc::new(AtomicI32::new(0));
    let (done2, tid2) = (done.clone(), tid.clone());
    let spinner = rt
        .spawn(
            async move {
                // SAFETY: gettid(2) cannot fail.
                tid2.store(unsafe { libc::gettid() }, Ordering::SeqCst);
                if let Some(set) = pinned {
                    // SAFETY: `set` is a live set of MASK_SIZE bytes.
                    assert_eq!(unsafe { libc::sched_setaffinity(0, MASK_SIZE, &set) }, 0);
                }
                // What the worker started with (it inherits the test
                // thread's), not what it has now: a worker nudged just
                // before this poll began has not beaten since, and keeps
                // the nudge's one CPU through the whole computation.
                let before = pinned.unwrap_or(started_with);
                let start = Instant::now();
                let mut narrowed = false;
                while start.elapsed() < stall && !narrowed {
                    narrowed = !same(&affinity(0), &before);
                    std::hint::spin_loop();
                }
                done2.store(true, Ordering::SeqCst);
                narrowed
            },
            prio(1),
        )
        .unwrap();
    let ticker = rt
        .spawn(
            async move {
                while !done.load(Ordering::SeqCst) {
                    ss_runtime::time::sleep(Duration::from_millis(1)).await;
                }
            },
            prio(1),
        )
        .unwrap();
    let narrowed = rt.block_on(async move {
        let narrowed = spinner.await.unwrap();
        ticker.await.unwrap();
        narrowed
    });
    let nudges = rt.nudges() - nudges_before;
    (narrowed, tid.load(Ordering::SeqCst), nudges, rt)
}

#[test]
fn a_silent_worker_is_moved_and_gets_its_affinity_back() {
    let Some(start) = several_cpus() else {
        return;
    };
    let (narrowed, tid, nudges, rt) =
        stall(Duration::from_micros(100), Duration::from_secs(5), None);
    assert!(narrowed, "the silent worker was never moved");
    assert!(nudges >= 1);
    // It runs again (the block_on above polled on it or parked it): its own
    // affinity is back once it beats or parks.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        rt.block_on(async { ss_runtime::yield_now().await });
        if same(&affinity(tid), &start) {
            break;
        }
        assert!(Instant::now() < deadline, "the affinity was never restored");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn nudging_off_moves_nobody() {
    let start = affinity(0);
    let (narrowed, tid, nudges, _rt) = stall(Duration::ZERO, Duration::from_millis(50), None);
    assert!(!narrowed);
    assert_eq!(nudges, 0);
    assert!(same(&affinity(tid), &start));
}

#[test]
fn a_worker_whose_affinity_someone_else_set_is_left_alone() {
    let Some(start) = several_cpus() else {
        return;
    };
    // Every CPU of the process but the last: a coordinator's narrowing.
    let mut pinned = start;
    let last = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: indices below CPU_SETSIZE are in bounds.
        .rfind(|&i| unsafe { libc::CPU_ISSET(i, &start) })
        .unwrap();
    // SAFETY: `last` is below CPU_SETSIZE.
    unsafe { libc::CPU_CLR(last, &mut pinned) };
    let (moved, tid, nudges, _rt) = stall(
        Duration::from_micros(100),
        Duration::from_millis(500),
        Some(pinned),
    );
    assert!(!moved, "the pinned worker was moved");
    assert_eq!(nudges, 0);
    // Not widened back to what it started with, either.
    assert!(same(&affinity(tid), &pinned));
}
