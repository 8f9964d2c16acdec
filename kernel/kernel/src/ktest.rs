//! The in-kernel test suite (feature `ktest`), then the user test suite.
//!
//! `cargo xtask test-kernel` boots the kernel with this feature. Each test
//! prints its name and verdict; the suite ends with a `N passed, N failed`
//! line and QEMU exits 0 only if nothing failed. Waits are bounded by the
//! `time` CSR; tests assert behaviour, never durations.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::task::{Poll, Waker};

use ss_abi::syscall::SysError;
use ss_abi::uspace::{IMAGE_BASE, USER_BASE, VDSO_BASE, VDSO_END};
use ss_abi::Priority;
use ss_core::CoroutineState;
use ss_kernel_logic::sv39;
use ss_kernel_logic::user::UserRange;

use crate::mm::{self, AddressSpace};
use crate::sync::IrqMutex;
use crate::{apps, arch, kexec, platform, println, proc, sched, ONLINE};

type Outcome = Result<(), &'static str>;

fn check(cond: bool, what: &'static str) -> Outcome {
    if cond {
        Ok(())
    } else {
        Err(what)
    }
}

fn deadline(ms: u64) -> u64 {
    arch::time() + ms * arch::TIME_HZ / 1000
}

/// Counts arrivals and wakes one waiting coroutine when all have arrived.
struct Latch {
    left: AtomicUsize,
    waker: IrqMutex<Option<Waker>>,
}

impl Latch {
    fn new(n: usize) -> Arc<Latch> {
        Arc::new(Latch {
            left: AtomicUsize::new(n),
            waker: IrqMutex::new(None),
        })
    }

    fn arrive(&self) {
        if self.left.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Some(w) = self.waker.lock().take() {
                w.wake();
            }
        }
    }

    async fn wait(&self) {
        core::future::poll_fn(|cx| {
            let mut g = self.waker.lock();
            if self.left.load(Ordering::SeqCst) == 0 {
                return Poll::Ready(());
            }
            *g = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

fn frames() -> Outcome {
    let before = mm::frame_stats().0;
    let got: Vec<_> = (0..16).filter_map(|_| mm::alloc_frame()).collect();
    check(got.len() == 16, "16 frames available")?;
    check(mm::frame_stats().0 == before + 16, "frames counted in use")?;
    for f in got {
        mm::free_frame(f);
    }
    check(mm::frame_stats().0 == before, "frames returned")
}

fn user_copies() -> Outcome {
    let before = mm::frame_stats().0;
    {
        let mut s = AddressSpace::new().map_err(|_| "address space")?;
        s.map_new(IMAGE_BASE, sv39::R | sv39::W)
            .map_err(|_| "map rw")?;
        s.map_new(IMAGE_BASE + 0x1000, sv39::R)
            .map_err(|_| "map ro")?;
        let rw = UserRange::new(IMAGE_BASE + 0xff0, 0x10).map_err(|_| "range")?;
        s.copy_out(rw, &[7; 16]).map_err(|_| "write rw page")?;
        let mut back = [0u8; 16];
        s.copy_in(rw, &mut back).map_err(|_| "read rw page")?;
        check(back == [7; 16], "round trip")?;
        // Crossing into the read-only page: refused, and nothing written.
        let cross = UserRange::new(IMAGE_BASE + 0xff8, 0x10).map_err(|_| "range")?;
        check(
            s.copy_out(cross, &[9; 16]) == Err(SysError::BadAddress),
            "write to read-only refused",
        )?;
        s.copy_in(rw, &mut back).map_err(|_| "read rw page")?;
        check(back == [7; 16], "refused write left memory unchanged")?;
        let unmapped = UserRange::new(IMAGE_BASE + 0x5000, 1).map_err(|_| "range")?;
        check(
            s.copy_in(unmapped, &mut [0]) == Err(SysError::BadAddress),
            "unmapped read refused",
        )?;
        check(
            s.map(0x8020_0000, 1, sv39::R, false) == Err(SysError::BadAddress),
            "kernel va refused",
        )?;
        check(
            s.map_new(IMAGE_BASE, sv39::R) == Err(SysError::BadAddress),
            "double map refused",
        )?;
        check(
            s.translate(USER_BASE + 0x1000).is_none(),
            "nothing mapped by default",
        )?;
    }
    check(
        mm::frame_stats().0 == before,
        "an address space frees every frame it owned",
    )
}

/// The vDSO's code is the same frames in every address space (read+execute,
/// never writable, never freed with a space); its data is each space's own.
fn vdso_shared() -> Outcome {
    let before = mm::frame_stats().0;
    {
        let mut a = AddressSpace::new().map_err(|_| "address space")?;
        let mut b = AddressSpace::new().map_err(|_| "address space")?;
        crate::loader::map_vdso(&mut a).map_err(|_| "the vDSO maps")?;
        crate::loader::map_vdso(&mut b).map_err(|_| "the vDSO maps")?;
        let (ca, cb) = (a.translate(VDSO_BASE), b.translate(VDSO_BASE));
        let (ca, cb) = ca.zip(cb).ok_or("the vDSO's table page is mapped")?;
        check(ca.ppn() == cb.ppn(), "both spaces map the same code frame")?;
        check(
            ca.flags() & (sv39::X | sv39::U) == sv39::X | sv39::U,
            "code is user-executable",
        )?;
        check(ca.flags() & sv39::W == 0, "code is not writable")?;
        let data = (VDSO_BASE..VDSO_END)
            .step_by(4096)
            .find(|&va| a.translate(va).is_some_and(|e| e.flags() & sv39::W != 0))
            .ok_or("the vDSO has a writable data page")?;
        let (da, db) = a
            .translate(data)
            .zip(b.translate(data))
            .ok_or("data mapped in both")?;
        check(da.ppn() != db.ppn(), "each space has its own vDSO data")?;
    }
    check(
        mm::frame_stats().0 == before,
        "a space frees its vDSO data but not the shared code",
    )
}

fn programs_plan() -> Outcome {
    check(!apps::APPS.is_empty(), "programs embedded")?;
    for (_, image) in apps::APPS {
        ss_kernel_logic::elf::plan(image).map_err(|_| "every embedded program is a valid image")?;
    }
    Ok(())
}

/// A kernel coroutine's sleep ends through the tick (the tick wakes it), so
/// ticks arrived meanwhile.
async fn ticks_advance() -> Outcome {
    let start = sched::TICKS.load(Ordering::SeqCst);
    sched::sleep_kernel(30).await;
    check(
        sched::TICKS.load(Ordering::SeqCst) > start,
        "timer ticks arrive while a kernel coroutine sleeps",
    )
}

/// Every started hart reaches the scheduler loop (bounded wait: a loaded host
/// may run a vCPU late).
async fn harts_online(harts: usize) -> Outcome {
    let end = deadline(10_000);
    while (ONLINE.load(Ordering::SeqCst).count_ones() as usize) < harts && arch::time() < end {
        sched::sleep_kernel(10).await;
    }
    check(
        ONLINE.load(Ordering::SeqCst).count_ones() as usize == harts,
        "every started hart polls the kernel Executor",
    )
}

/// `harts` coroutines of the shared kernel Executor run at the same time, each
/// on its own hart.
async fn executor_on_all_harts(harts: usize) -> Outcome {
    let arrived = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let latch = Latch::new(harts);
    for _ in 0..harts {
        let (arrived, seen, latch) = (arrived.clone(), seen.clone(), latch.clone());
        kexec()
            .spawn(
                async move {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    let end = deadline(10_000);
                    while arrived.load(Ordering::SeqCst) < harts && arch::time() < end {
                        core::hint::spin_loop();
                    }
                    seen.fetch_or(1 << arch::hart_id(), Ordering::SeqCst);
                    latch.arrive();
                },
                Priority::new(1).map_err(|_| "prio")?,
            )
            .map_err(|_| "spawn")?;
    }
    latch.wait().await;
    check(
        arrived.load(Ordering::SeqCst) == harts,
        "all coroutines ran",
    )?;
    check(
        seen.load(Ordering::SeqCst).count_ones() as usize == harts,
        "they ran on every hart at once",
    )
}

/// A tick that interrupts a kernel coroutine's poll makes it Running-suspended
/// (⑥) and then Running again (⑦).
async fn running_suspended() -> Outcome {
    let done = Latch::new(1);
    let saw = Arc::new(AtomicBool::new(false));
    let (d, s) = (done.clone(), saw.clone());
    let cid = kexec()
        .spawn(
            async move {
                let me = ss_core::current_cid().await;
                if let Some(me) = me {
                    platform::watch(me);
                }
                let end = deadline(10_000);
                while !platform::watched_entered(CoroutineState::RunningSuspended)
                    && arch::time() < end
                {
                    core::hint::spin_loop();
                }
                s.store(
                    platform::watched_entered(CoroutineState::RunningSuspended),
                    Ordering::SeqCst,
                );
                d.arrive();
            },
            Priority::new(1).map_err(|_| "prio")?,
        )
        .map_err(|_| "spawn")?;
    done.wait().await;
    // It exits just after it arrives at the latch: wait for that (bounded).
    let end = deadline(10_000);
    while !platform::watched_entered(CoroutineState::Exit) && arch::time() < end {
        sched::sleep_kernel(10).await;
    }
    let _ = cid;
    check(
        saw.load(Ordering::SeqCst),
        "the interrupted coroutine was Running-suspended",
    )?;
    check(
        platform::watched_entered(CoroutineState::Exit),
        "and then ran to its end",
    )
}

async fn idle_harts_sleep() -> Outcome {
    // Nothing else runs now: while this coroutine sleeps, every hart is idle.
    sched::sleep_kernel(30).await;
    check(
        platform::PARKED_EVER.load(Ordering::SeqCst) != 0,
        "idle harts slept in wfi",
    )
}

/// A thread blocked on a pipe whose descriptor another thread of its process
/// closed, when the process exits (`aio` mode 14): the kernel keeps the
/// pipe's write end, so the pipe outlives the process and nothing wakes its
/// readers. The process — its thread, its `Process`, everything charged to
/// its account — must be freed all the same, and the pipe left with no
/// waiting thread. (The killed thread stayed in the pipe's wait list,
/// holding its process, until the pipe's next wake-up: teardown looked only
/// in the objects still in the process's descriptor table.)
///
/// The guest cannot see its reader block: it waits 50 ms after the reader
/// started, then closes. A round in which the reader had not blocked by then
/// (the host kept its hart from running that long) tests nothing. The kernel
/// watches the pipe's wait list while the program runs: a round counts only
/// if the reader was seen in it (once blocked it stays there until teardown;
/// a read after the close finds the descriptor gone and never blocks). The
/// guest's own flag (exit code [`AIO_NOT_BLOCKED`]: its reader returned)
/// could not tell a reader that blocked from one whose hart had not reached
/// the `read` yet. Another round runs, at most [`PIPE_ROUNDS`] in all.
async fn blocked_on_closed_pipe() -> Outcome {
    for round in 1..=PIPE_ROUNDS {
        match blocked_on_closed_pipe_round().await? {
            true => return Ok(()),
            false => println!("[ktest] aio mode 14: round {round} tested nothing"),
        }
    }
    Err("aio mode 14's reader was never blocked when its descriptor closed")
}

/// `aio` mode 14's exit code for a round that tested nothing.
const AIO_NOT_BLOCKED: i32 = 3;

/// Rounds of `blocked_on_closed_pipe` before it gives up.
const PIPE_ROUNDS: usize = 3;

/// One round; `Ok(false)`: the guest's reader was not blocked in time.
async fn blocked_on_closed_pipe_round() -> Result<bool, &'static str> {
    let account = Arc::new(crate::kmem::Account::default());
    let (r, w) = crate::fd::Pipe::open(&account).map_err(|_| "a pipe")?;
    let crate::fd::Fd::PipeWrite(pipe) = &w else {
        return Err("the pipe's write end");
    };
    let pipe = pipe.clone();
    let prio = Priority::new(2).map_err(|_| "prio")?;
    let p = proc::spawn("aio", prio, 14, None, Some(r)).map_err(|_| "aio starts")?;
    let (pid, gone, kmem) = (p.pid, Arc::downgrade(&p), p.kmem.clone());
    drop(p);
    let mut seen_blocked = false;
    let code = loop {
        seen_blocked = seen_blocked || !pipe.state.lock().read_wait.threads.is_empty();
        if let Some(code) = proc::try_kernel_child(pid) {
            break code;
        }
        sched::sleep_kernel(1).await;
    };
    if code != 0 && code != AIO_NOT_BLOCKED {
        println!("[ktest] aio mode 14 exited with {code}");
        return Err("aio mode 14 passed its own checks");
    }
    // Bounded wait: the last hart to run it may hold it a moment longer.
    let end = deadline(10_000);
    while gone.strong_count() != 0 && arch::time() < end {
        sched::sleep_kernel(10).await;
    }
    let waiting = pipe.state.lock().read_wait.threads.len();
    check(waiting == 0, "no thread left in the pipe's wait list")?;
    check(
        gone.strong_count() == 0,
        "the process freed while the pipe it waited on lives",
    )?;
    check(
        Arc::strong_count(&kmem) == 1 && kmem.used() == 0,
        "nothing charged to the process left",
    )?;
    drop(w);
    Ok(code == 0 && seen_blocked)
}

/// Runs everything; returns the number of failures.
pub async fn run(harts: usize) -> usize {
    println!("[ktest] {harts} harts");
    let mut results: Vec<(&str, Outcome)> = Vec::new();
    results.push(("frames", frames()));
    results.push(("user_copies", user_copies()));
    results.push(("programs_plan", programs_plan()));
    results.push(("vdso_shared", vdso_shared()));
    results.push(("ticks_advance", ticks_advance().await));
    results.push(("harts_online", harts_online(harts).await));
    results.push(("executor_on_all_harts", executor_on_all_harts(harts).await));
    results.push(("running_suspended", running_suspended().await));
    results.push(("idle_harts_sleep", idle_harts_sleep().await));
    let frames_before = mm::frame_stats().0;
    let procs_before = proc::ALIVE.load(core::sync::atomic::Ordering::SeqCst);
    let user = match proc::spawn("utest", Priority::MOST_IMPORTANT, harts, None, None) {
        Ok(p) => {
            let code = proc::wait_kernel_child(p.pid).await;
            if code == 0 {
                Ok(())
            } else {
                println!("[ktest] utest exited with {code}");
                Err("the user test suite passed")
            }
        }
        Err(_) => Err("utest is embedded"),
    };
    results.push(("user_suite", user));
    // Every process's frames came back, and before its parent heard of its
    // exit: harts keep the last process's page table loaded, and the exit is
    // reported only once the last of them let go (no wait here).
    let frames_after = mm::frame_stats().0;
    results.push((
        "processes_free_their_frames",
        check(
            frames_after == frames_before,
            "as many frames in use as soon as the user suite is reaped as before",
        ),
    ));
    // Asynchronous calls left in flight by exiting processes (`aio` mode 2,
    // the fuzzer) end, and nothing keeps a dead process alive.
    use core::sync::atomic::Ordering::SeqCst;
    let end = deadline(10_000);
    while (crate::aio::LIVE.load(SeqCst) != 0 || proc::ALIVE.load(SeqCst) != procs_before)
        && arch::time() < end
    {
        sched::sleep_kernel(10).await;
    }
    println!(
        "[ktest] upcalls delivered during the user suite: {}",
        crate::aio::UPCALLS.load(SeqCst)
    );
    results.push((
        "async_calls_leak_nothing",
        check(
            crate::aio::LIVE.load(SeqCst) == 0 && proc::ALIVE.load(SeqCst) == procs_before,
            "no asynchronous call's coroutine and no process left after the user suite",
        ),
    ));
    results.push(("blocked_on_closed_pipe", blocked_on_closed_pipe().await));
    // Kernel coroutines wait in the sleeper list once each, and a call that
    // ends takes its entry with it: after the user suite (the polling thread
    // with an hour-long sleep pending beside 4 000 calls, `aio` mode 11; the
    // fuzzer's sleeps) only the kernel's own few are left. (Registrations that
    // never matched piled up one per poll: 7 914 entries after mode 11.)
    let sleepers = sched::kernel_sleepers();
    println!("[ktest] kernel sleepers after the user suite: {sleepers}");
    results.push((
        "kernel_sleepers_bounded",
        check(
            sleepers <= 16,
            "at most 16 kernel sleepers left after the user suite",
        ),
    ));
    let mut failed = 0;
    for (name, r) in &results {
        match r {
            Ok(()) => println!("[ktest] {name} ... ok"),
            Err(what) => {
                failed += 1;
                println!("[ktest] {name} ... FAILED: expected {what}");
            }
        }
    }
    println!(
        "kernel: {} passed, {} failed",
        results.len() - failed,
        failed
    );
    failed
}
