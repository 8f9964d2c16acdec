//! Priority demo: a high-priority coroutine keeps its timing while low-priority
//! coroutines flood both workers with CPU-bound work.
//!
//! ```sh
//! cargo run --release -p ss-runtime --example priority
//! ```
//!
//! A coroutine at priority 0 wakes every millisecond (`sleep`) and records how
//! late it runs. Four coroutines at priority 7 crunch numbers on the two workers,
//! spending their cooperative budget as they go (so they give way at the next
//! budget boundary). The demo prints the high-priority lateness without and with
//! the flood; with strict priority the two stay close.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ss_runtime::{budget, prio, time, Runtime};

const TICKS: usize = 500;

/// Sleeps 1 ms `TICKS` times; returns each wake-up's lateness in µs, sorted.
async fn ticker() -> Vec<u64> {
    let mut late = Vec::with_capacity(TICKS);
    for _ in 0..TICKS {
        let due = Instant::now() + Duration::from_millis(1);
        time::sleep_until(due).await;
        late.push(due.elapsed().as_micros() as u64);
    }
    late.sort_unstable();
    late
}

/// Burns CPU until `stop`, a little arithmetic per budget unit.
async fn crunch(stop: Arc<AtomicBool>, work: Arc<AtomicU64>) {
    let mut x = 1u64;
    while !stop.load(Ordering::Relaxed) {
        for i in 0..200u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        work.fetch_add(1, Ordering::Relaxed);
        budget::consume_budget().await;
    }
    std::hint::black_box(x);
}

fn report(label: &str, late: &[u64]) {
    let q = |p: f64| late[((late.len() as f64 * p) as usize).min(late.len() - 1)];
    println!(
        "{label:<28} lateness p50 {:>5} µs   p99 {:>5} µs   max {:>6} µs",
        q(0.50),
        q(0.99),
        late[late.len() - 1]
    );
}

fn main() -> std::io::Result<()> {
    let rt = Runtime::builder().workers(2).build()?;
    let quiet = rt.block_on(async { ss_runtime::spawn(ticker(), prio(0)).await });
    let (loud, units) = rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let work = Arc::new(AtomicU64::new(0));
        let flood: Vec<_> = (0..4)
            .map(|_| ss_runtime::spawn(crunch(stop.clone(), work.clone()), prio(7)))
            .collect();
        let late = ss_runtime::spawn(ticker(), prio(0)).await;
        stop.store(true, Ordering::Relaxed);
        for f in flood {
            let _ = f.await;
        }
        (late, work.load(Ordering::Relaxed))
    });
    let (quiet, loud) = match (quiet, loud) {
        (Ok(q), Ok(l)) => (q, l),
        _ => return Err(std::io::Error::other("a ticker did not finish")),
    };
    println!("priority 0 ticker, 1 ms sleeps, 2 workers:");
    report("  alone", &quiet);
    report("  under a priority-7 flood", &loud);
    println!("  (the flood did {units} budget units of work meanwhile)");
    Ok(())
}
