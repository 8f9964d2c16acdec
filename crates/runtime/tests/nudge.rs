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

/// Runs a coroutine that computes for up to `stall` without polling, beside a
/// coroutine that sleeps 1 ms at a time (its worker parks again and again).
/// Returns (whether the stalled worker saw its affinity narrowed to one CPU,
/// its tid, the runtime).
fn stall(nudge_after: Duration, stall: Duration) -> (bool, libc::pid_t, Runtime) {
    let rt = Runtime::builder()
        .workers(2)
        .idle_spin(Duration::from_micros(5))
        .nudge_after(nudge_after)
        .build()
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let tid = Arc::new(AtomicI32::new(0));
    let (done2, tid2) = (done.clone(), tid.clone());
    let spinner = rt
        .spawn(
            async move {
                // SAFETY: gettid(2) cannot fail.
                tid2.store(unsafe { libc::gettid() }, Ordering::SeqCst);
                let start = Instant::now();
                let mut narrowed = false;
                while start.elapsed() < stall && !narrowed {
                    narrowed = cpus(&affinity(0)) == 1;
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
    (narrowed, tid.load(Ordering::SeqCst), rt)
}

#[test]
fn a_silent_worker_is_moved_and_gets_its_affinity_back() {
    let start = affinity(0);
    if cpus(&start) < 2 {
        eprintln!("skipped: this process may use only one CPU");
        return;
    }
    let (narrowed, tid, rt) = stall(Duration::from_micros(100), Duration::from_secs(5));
    assert!(narrowed, "the silent worker was never moved");
    assert!(rt.nudges() >= 1);
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
    let (narrowed, tid, rt) = stall(Duration::ZERO, Duration::from_millis(50));
    assert!(!narrowed);
    assert_eq!(rt.nudges(), 0);
    assert!(same(&affinity(tid), &start));
}
