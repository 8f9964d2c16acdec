//! The cooperative budget gives way as soon as something more important is ready.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ss_runtime::{budget, prio, Runtime};

#[test]
fn a_low_priority_loop_gives_way_within_a_unit_of_a_more_important_arrival() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let units = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (u, st) = (units.clone(), stop.clone());
    // The hog never awaits anything that could return Pending by itself.
    let hog = rt
        .spawn(
            async move {
                while !st.load(SeqCst) {
                    u.fetch_add(1, SeqCst);
                    for _ in 0..2_000 {
                        std::hint::black_box(());
                    }
                    budget::consume_budget().await;
                }
            },
            prio(7),
        )
        .unwrap();
    // From another thread, once the hog is well under way:
    let deadline = Instant::now() + Duration::from_secs(10);
    while units.load(SeqCst) < 1_000 {
        assert!(Instant::now() < deadline, "the hog never ran");
        std::thread::yield_now();
    }
    let at_spawn = units.load(SeqCst);
    let u = units.clone();
    let high = rt.spawn(async move { u.load(SeqCst) }, prio(2)).unwrap();
    while !high.is_finished() {
        assert!(Instant::now() < deadline, "the high coroutine never ran");
        std::thread::yield_now();
    }
    let ran_at = rt.block_on(high).unwrap();
    stop.store(true, SeqCst);
    rt.block_on(hog).unwrap();
    let extra = ran_at - at_spawn;
    assert!(
        extra < budget::LIMIT as u64 / 4,
        "the hog ran {extra} more units after a more important coroutine became ready \
         (a whole budget is {})",
        budget::LIMIT
    );
}
