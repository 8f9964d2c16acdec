//! The user-space test suite, started by the kernel's test build with the
//! number of harts as its argument. Prints one line per test and a final
//! `user: N passed, N failed`; exits with the number of failures.
//!
//! Tests of strict order between processes need a single hart (with several,
//! the processes simply run side by side); `cargo xtask test-kernel` boots
//! QEMU once with `-smp 1` and once with `-smp 4`.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use ss_abi::page::{ProcessPage, GLOBAL_PAGE_SEQ_OFFSET};
use ss_abi::uspace::{GLOBAL_PAGE_VA, PROCESS_PAGE_VA};
use ss_kernel_logic::folded::FoldedWords;

use ss_abi::syscall::{SysError, KILLED};
use ss_ulib::{println, sys, Done};

type Outcome = Result<(), alloc::string::String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            return Err(alloc::format!($($msg)*));
        }
    };
}

fn worker_arg(mode: usize, param: usize) -> usize {
    (mode << 32) | param
}

fn wait_all(n: usize) -> Result<Vec<(usize, i32)>, alloc::string::String> {
    (0..n)
        .map(|_| sys::wait().map_err(|e| alloc::format!("wait: {e}")))
        .collect()
}

/// Every system call survives hostile arguments with the right error codes.
fn hostile() -> Outcome {
    let pid = sys::spawn("hostile", 1, 0).map_err(|e| alloc::format!("spawn: {e}"))?;
    let exits = wait_all(1)?;
    ensure!(exits == [(pid, 0)], "hostile exited {exits:?}");
    Ok(())
}

/// Processes that fault (seven ways, see `crash`) are killed; one running
/// beside them is not.
fn crashes() -> Outcome {
    let mut crashers = Vec::new();
    for mode in 0..7 {
        crashers
            .push(sys::spawn("crash", 2, mode).map_err(|e| alloc::format!("spawn crash: {e}"))?);
    }
    let survivor = sys::spawn("worker", 2, worker_arg(2, 7))
        .map_err(|e| alloc::format!("spawn worker: {e}"))?;
    let exits = wait_all(8)?;
    for (pid, code) in &exits {
        if *pid == survivor {
            ensure!(*code == 7, "the survivor exited {code}");
        } else {
            ensure!(
                crashers.contains(pid) && *code == KILLED,
                "crasher {pid} exited {code}"
            );
        }
    }
    ensure!(sys::wait() == Err(SysError::NoChild), "no child left");
    Ok(())
}

/// Spawn refuses what does not exist or does not fit.
fn spawn_errors() -> Outcome {
    ensure!(
        sys::spawn("nope", 1, 0) == Err(SysError::NoSuchProgram),
        "unknown program"
    );
    ensure!(
        sys::spawn("worker", 8, 0) == Err(SysError::BadArgument),
        "priority 8"
    );
    Ok(())
}

static LOG: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];
static LOG_LEN: AtomicUsize = AtomicUsize::new(0);

fn log(v: usize) {
    let i = LOG_LEN.fetch_add(1, Ordering::SeqCst);
    if let Some(s) = LOG.get(i) {
        s.store(v, Ordering::SeqCst);
    }
}

/// `reprio` moves a ready coroutine ahead, and the kernel sees the new level in
/// this process's published bitmap.
async fn reprio() -> Outcome {
    static DONE: Done = Done::new(2);
    let x = ss_ulib::spawn(
        async {
            log(7);
            DONE.arrive()
        },
        7,
    )
    .map_err(|e| alloc::format!("{e}"))?;
    ss_ulib::spawn(
        async {
            log(5);
            DONE.arrive()
        },
        5,
    )
    .map_err(|e| alloc::format!("{e}"))?;
    ss_ulib::reprio(x, 1).map_err(|e| alloc::format!("{e}"))?;
    ss_ulib::publish(ss_ulib::ready_bitmap() | 1);
    sys::yield_now(); // the kernel re-reads this process's page on yield
    let seen = sys::sched_info();
    DONE.wait().await;
    let order = [LOG[0].load(Ordering::SeqCst), LOG[1].load(Ordering::SeqCst)];
    ensure!(
        seen & 0b10 != 0,
        "the kernel's view of this process {seen:#b} has level 1"
    );
    ensure!(
        order == [7, 5],
        "the reprioritised coroutine ran first: {order:?}"
    );
    Ok(())
}

/// Console input arrives through the PLIC and the UART's receive interrupt and
/// wakes a thread blocked in `read(0, …)`. `cargo xtask test-kernel` types
/// `hello kernel` and a newline.
fn console_input() -> Outcome {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 64 {
        match sys::read(0, &mut b) {
            Ok(1) if b[0] == b'\n' || b[0] == b'\r' => break,
            Ok(1) => line.push(b[0]),
            other => return Err(alloc::format!("read: {other:?}")),
        }
    }
    ensure!(
        line == b"hello kernel",
        "read {:?}",
        core::str::from_utf8(&line)
    );
    Ok(())
}

/// A pipe between processes: the child writes more than the pipe holds (so
/// it blocks until the parent reads), the parent reads to end of file, which
/// comes when the child's exit closes its end.
fn pipe_between_processes() -> Outcome {
    const N: usize = 10_000;
    let (r, w) = sys::pipe().map_err(|e| alloc::format!("pipe: {e}"))?;
    let child = sys::spawn_with_fd("worker", 2, worker_arg(3, N), w)
        .map_err(|e| alloc::format!("spawn: {e}"))?;
    sys::close(w).map_err(|e| alloc::format!("close: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match sys::read(r, &mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(alloc::format!("read: {e}")),
        }
    }
    sys::close(r).map_err(|e| alloc::format!("close: {e}"))?;
    let exits = wait_all(1)?;
    ensure!(exits == [(child, 0)], "the writer exited {exits:?}");
    ensure!(got.len() == N, "read {} bytes", got.len());
    ensure!(
        got.iter()
            .enumerate()
            .all(|(i, b)| *b == b'a' + (i % 26) as u8),
        "bytes in order"
    );
    ensure!(
        sys::spawn_with_fd("worker", 2, 0, 77) == Err(SysError::BadFd),
        "a closed fd is refused"
    );
    Ok(())
}

/// On one hart, children run strictly by priority, whatever the spawn order.
fn priority_order() -> Outcome {
    let mut pids = Vec::new();
    for prio in [6u8, 3, 1] {
        pids.push(
            sys::spawn("worker", prio, worker_arg(0, 50)).map_err(|e| alloc::format!("{e}"))?,
        );
    }
    let exits = wait_all(3)?;
    let codes: Vec<i32> = exits.iter().map(|e| e.1).collect();
    ensure!(codes == [1, 3, 6], "exit order by priority: {codes:?}");
    Ok(())
}

/// On one hart, a running process that sees a more important one ready
/// elsewhere yields to it on its own, before the kernel would preempt it.
fn yields_to_more_important() -> Outcome {
    let low = sys::spawn("worker", 5, worker_arg(1, 0)).map_err(|e| alloc::format!("{e}"))?;
    sys::sleep_ns(30_000_000); // the low one runs meanwhile
    let high = sys::spawn("worker", 2, worker_arg(2, 42)).map_err(|e| alloc::format!("{e}"))?;
    let exits = wait_all(2)?;
    ensure!(
        exits[0] == (high, 42),
        "the more important child finished first: {exits:?}"
    );
    ensure!(
        exits[1].0 == low && exits[1].1 >= 1,
        "the low child yielded on its own: {exits:?}"
    );
    Ok(())
}

/// The kernel tells this process which of its bitmaps the global page holds
/// (the folded words of its process page, `ss_kernel_logic::folded`): after
/// this thread sleeps and is woken, the kernel has folded in the bitmap the
/// process last published (no poll, so no publish, comes between) and says so,
/// counted from a global page no later than the current one.
fn the_kernel_tells_what_it_folded() -> Outcome {
    let word = |va: usize| {
        // SAFETY: the process page (read-write) and the global page
        // (read-only) are mapped at these addresses for the process's life;
        // the offsets are aligned words inside them. Loads only.
        unsafe { &*(va as *const AtomicU64) }
    };
    // SAFETY: as above (loads only).
    let words = unsafe { FoldedWords::in_page(PROCESS_PAGE_VA) };
    sys::sleep_ns(5_000_000);
    let ready = word(PROCESS_PAGE_VA + offset_of!(ProcessPage, ready)).load(Ordering::SeqCst);
    let gseq = word(GLOBAL_PAGE_VA + GLOBAL_PAGE_SEQ_OFFSET).load(Ordering::SeqCst);
    let seq = words.seq.load(Ordering::SeqCst);
    let at = words.at.load(Ordering::SeqCst);
    ensure!(
        seq != 0 && seq % 2 == 0,
        "folded_seq {seq}: never written, or left odd"
    );
    ensure!(
        at % 2 == 0 && at <= gseq,
        "folded_at {at} against the global page's seq {gseq}"
    );
    match words.read(gseq) {
        Some(folded) => ensure!(
            folded == ready,
            "folded {folded:#b}, but the process published {ready:#b}"
        ),
        None => {
            return Err(alloc::format!(
                "the folded words did not answer (seq {seq}, at {at}, global {gseq})"
            ))
        }
    }
    Ok(())
}

/// `alloc_cpu` lends this process's Executor more harts: `harts` coroutines
/// that each spin inside one poll until all have started can only all start if
/// `harts` threads poll at once; they run on several harts. (Which hart each
/// one ends on is not fixed: the kernel may move a thread between ticks.)
async fn alloc_cpu(harts: usize) -> Outcome {
    static ARRIVED: AtomicUsize = AtomicUsize::new(0);
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    static TOGETHER: AtomicUsize = AtomicUsize::new(0);
    static DONE: Done = Done::new(4);
    ensure!(harts == 4, "this test expects 4 harts, got {harts}");
    for _ in 1..harts {
        ss_ulib::alloc_cpu().map_err(|e| alloc::format!("alloc_cpu: {e}"))?;
    }
    for _ in 0..harts {
        ss_ulib::spawn(
            async move {
                SEEN.fetch_or(1 << sys::gethart(), Ordering::SeqCst);
                ARRIVED.fetch_add(1, Ordering::SeqCst);
                let end = sys::time() + 10 * sys::TIME_HZ;
                while ARRIVED.load(Ordering::SeqCst) < harts && sys::time() < end {
                    core::hint::spin_loop();
                }
                if ARRIVED.load(Ordering::SeqCst) == harts {
                    TOGETHER.fetch_add(1, Ordering::SeqCst);
                }
                SEEN.fetch_or(1 << sys::gethart(), Ordering::SeqCst);
                DONE.arrive();
            },
            3,
        )
        .map_err(|e| alloc::format!("{e}"))?;
    }
    DONE.wait().await;
    let seen = SEEN.load(Ordering::SeqCst);
    let together = TOGETHER.load(Ordering::SeqCst);
    ensure!(
        together == harts,
        "{together} of {harts} coroutines saw all the others start while they spun"
    );
    ensure!(
        seen.count_ones() >= 2,
        "they ran on several harts: {seen:#b}"
    );
    Ok(())
}

/// Runs mode `mode` of the `aio` program in a child at `priority`; it exits 0
/// when its checks passed.
fn aio_mode(mode: usize, priority: u8) -> Outcome {
    let pid = sys::spawn("aio", priority, mode).map_err(|e| alloc::format!("spawn: {e}"))?;
    let exits = wait_all(1)?;
    ensure!(
        exits == [(pid, 0)],
        "aio mode {} exited {exits:?}",
        mode & 0xff
    );
    Ok(())
}

/// Rounds of mode 6 of `aio` (16 completions each).
const BURST_ROUNDS: usize = 300;

/// Calls in the fuzzer (mode 5 of `aio`).
const FUZZ_CALLS: usize = 100_000;

async fn main(harts: usize) -> i32 {
    let mut results: Vec<(&str, Outcome)> = Vec::new();
    results.push(("hostile_syscalls", hostile()));
    results.push(("crashing_processes", crashes()));
    results.push(("spawn_errors", spawn_errors()));
    results.push(("console_input", console_input()));
    results.push(("pipe_between_processes", pipe_between_processes()));
    results.push((
        "the_kernel_tells_what_it_folded",
        the_kernel_tells_what_it_folded(),
    ));
    results.push(("reprio", reprio().await));
    results.push(("async_same_results", aio_mode(0, 2)));
    results.push(("async_many_concurrent", aio_mode(1, 2)));
    results.push(("async_exit_in_flight", aio_mode(2, 2)));
    results.push(("async_garbage_queue", aio_mode(3, 2)));
    results.push(("async_upcall", aio_mode(4, 2)));
    results.push(("async_abandoned_call", aio_mode(8, 2)));
    results.push(("async_dropped_calls_cancelled", aio_mode(9, 2)));
    results.push(("sync_sleeper_at_exit", aio_mode(10, 2)));
    results.push(("poller_sleep_pending", aio_mode(11, 2)));
    results.push(("many_pending_writes", aio_mode(12, 2)));
    results.push(("many_full_pipes", aio_mode(13, 2)));
    results.push(("dropped_accept_closes", aio_mode(15, 2)));
    results.push((
        "async_burst_loses_no_completion",
        aio_mode(6 | BURST_ROUNDS << 8, 2),
    ));
    let t0 = sys::time();
    results.push(("syscall_fuzzer", aio_mode(5 | FUZZ_CALLS << 8, 2)));
    println!(
        "[utest] fuzzer: {FUZZ_CALLS} calls in {} ms",
        (sys::time() - t0) / (sys::TIME_HZ / 1000)
    );
    if harts == 1 {
        results.push(("priority_order", priority_order()));
        results.push(("yields_to_more_important", yields_to_more_important()));
        results.push(("async_calls_in_priority_order", aio_mode(7, 2)));
    } else {
        results.push(("alloc_cpu", alloc_cpu(harts).await));
    }
    let mut failed = 0;
    for (name, r) in &results {
        match r {
            Ok(()) => println!("[utest] {name} ... ok"),
            Err(e) => {
                failed += 1;
                println!("[utest] {name} ... FAILED: {e}");
            }
        }
    }
    println!("user: {} passed, {} failed", results.len() - failed, failed);
    failed as i32
}

ss_ulib::main!(main);
