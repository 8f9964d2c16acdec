//! Moving a worker that the OS left waiting for a CPU onto the CPU of a
//! worker that is about to go idle.
//!
//! # Why
//!
//! An io_uring operation's completion is delivered only when the worker that
//! owns its ring enters the kernel (`DEFER_TASKRUN`; see [`crate::io`]). The
//! coroutines themselves are in the shared ready queue, so any worker runs them,
//! but the *completions* of a worker's ring wait for that worker. When the OS
//! has more runnable threads than CPUs — the process's own client, a neighbour —
//! it may leave a worker runnable but not running for a whole time slice
//! (3–4 ms here), and every connection whose receive sits in that worker's ring
//! waits with it, even while another worker goes idle on the other CPU: Linux
//! does not pull a task that ran within the last 0.5 ms
//! (`sched_migration_cost`) to a CPU that goes idle often.
//!
//! # What
//!
//! Each worker records a *beat* (a clock reading) every 16 coroutine polls and
//! whenever it parks or wakes. A worker about to park looks at the others: one
//! that claims to be running but has not beaten for [`Builder::nudge_after`]
//! (100 µs by default) is, nearly always, runnable and waiting for a CPU. The
//! parking worker sets that worker's CPU affinity to its own CPU, which Linux
//! honours at once by migrating it there — where it runs, since this CPU is
//! about to go idle. The nudged worker restores its own affinity (the mask it
//! had when it started) at its next beat, or as it parks — checked then under
//! the lock the nudger holds from the move to raising the flag, so a worker
//! that ran on before the flag went up and then parks for good is restored too.
//!
//! ```text
//!   W1 runnable behind another thread on CPU 0      W2 on CPU 1, about to park
//!   (its ring holds completions)                    W1's beat is 100 µs old, W1 "running"
//!                                   ◄── sched_setaffinity(W1, {CPU 1}) ──
//!   W1 migrated to CPU 1, runs, reaps its ring      W2 sleeps
//!   W1's next beat: sched_setaffinity(self, saved mask)
//! ```
//!
//! A worker is nudged at most once per stale stretch (until it beats again).
//! A worker whose affinity is no longer the one it started with is not
//! nudged: somebody else set it (a coordinator keeping lowered work off a CPU,
//! an administrator), and the restore would undo that. For the same reason a
//! nudged worker restores its affinity only if it is still the nudge's one
//! CPU.
//! Cost: a clock read per 16 polls, a scan of the workers' beats per park, and
//! two system calls per nudge. A worker that really is running — a coroutine
//! computing for long without polling — is merely moved to a CPU that was
//! going idle anyway.
//!
//! A worker that spins idle does not beat: a spinner the OS descheduled
//! mid-spin is as stuck as any other (and beating from the spin loop measured
//! worse: 0.71 × tokio's echo throughput against 0.87–0.90 ×).
//!
//! Measured (`rtecho --connections 64 --rounds 3 --nudge-us 0|100`, 2
//! workers, the client process beside them on the 2 CPUs, 2026-11-27; ss ÷
//! tokio throughput in the same run): 0.54–0.59 × without nudging, 0.73–0.77 ×
//! with it; with `--idle-spin-us 0` as well, 0.78 × → 0.93 × and p99 5.5 ms →
//! 1.9 ms. The p99 with the default spin stays ~4–5 ms (see docs/runtime.md).
//!
//! [`Builder::nudge_after`]: crate::Builder::nudge_after

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// One worker's beat, as the others see it.
pub(crate) struct Beat {
    tid: AtomicI32,
    /// Nanoseconds since [`origin`] at the last beat.
    at: AtomicU64,
    /// Parked (sleeping on purpose): its beat may be as old as it likes.
    parked: AtomicBool,
    /// Another worker changed its affinity; it restores it at its next beat or
    /// as it parks.
    nudged: AtomicBool,
    /// The CPU it was nudged onto (set before `nudged` is raised).
    nudged_to: AtomicI32,
    /// The affinity it had when it started.
    mask: libc::cpu_set_t,
}

/// The beats of one runtime's workers.
pub(crate) struct Beats {
    /// How old a running worker's beat must be to nudge it, in nanoseconds
    /// (zero: never).
    after: u64,
    workers: Mutex<Vec<Arc<Beat>>>,
    /// Nudges done.
    nudges: AtomicU64,
}

impl std::fmt::Debug for Beats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Beats")
            .field("after_ns", &self.after)
            .field("workers", &lock(&self.workers).len())
            .finish()
    }
}

thread_local! {
    /// The calling worker's beat, if it takes part.
    static MINE: std::cell::RefCell<Option<Arc<Beat>>> = const { std::cell::RefCell::new(None) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The clock's origin (process-wide, so beats of different runtimes compare).
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    u64::try_from(origin().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The size of a `cpu_set_t`, for the affinity calls.
const MASK_SIZE: usize = std::mem::size_of::<libc::cpu_set_t>();

impl Beats {
    /// Beats that nudge a running worker silent for `after` (zero: never).
    pub(crate) fn new(after: Duration) -> Beats {
        Beats {
            after: u64::try_from(after.as_nanos()).unwrap_or(u64::MAX),
            workers: Mutex::new(Vec::new()),
            nudges: AtomicU64::new(0),
        }
    }

    /// Nudges so far.
    pub(crate) fn nudges(&self) -> u64 {
        self.nudges.load(Ordering::Relaxed)
    }

    /// The calling worker thread takes part (called as it starts). A thread
    /// whose affinity cannot be read does not (it could not be restored).
    pub(crate) fn join(&self) {
        if self.after == 0 {
            return;
        }
        let Some(mask) = affinity(0) else {
            return;
        };
        let beat = Arc::new(Beat {
            // SAFETY: gettid(2) has no arguments and cannot fail.
            tid: AtomicI32::new(unsafe { libc::gettid() }),
            at: AtomicU64::new(now_ns()),
            parked: AtomicBool::new(false),
            nudged: AtomicBool::new(false),
            nudged_to: AtomicI32::new(-1),
            mask,
        });
        lock(&self.workers).push(beat.clone());
        MINE.with(|m| *m.borrow_mut() = Some(beat));
    }

    /// The calling worker is exiting.
    pub(crate) fn leave(&self) {
        let Some(mine) = MINE.with(|m| m.borrow_mut().take()) else {
            return;
        };
        lock(&self.workers).retain(|b| !Arc::ptr_eq(b, &mine));
    }

    /// The calling worker is about to park: nudges the workers that seem to
    /// wait for a CPU onto this one (see the module docs).
    pub(crate) fn parking(&self) {
        let Some(mine) = MINE.with(|m| m.borrow().clone()) else {
            return;
        };
        let now = now_ns();
        mine.at.store(now, Ordering::Relaxed);
        mine.parked.store(true, Ordering::Relaxed);
        let workers = lock(&self.workers);
        // Under the registry's lock, which a nudger holds from its
        // `sched_setaffinity` to raising the flag: a nudge that moved this
        // worker is seen here even if the worker ran (on the nudger's CPU)
        // before the nudger raised the flag. Checked at a beat only, it could
        // be missed, and a worker that then parks for good stays narrowed.
        restore_if_nudged(&mine);
        let mut cpu = None;
        for other in workers.iter() {
            if Arc::ptr_eq(other, &mine)
                || other.parked.load(Ordering::Relaxed)
                || other.nudged.load(Ordering::Relaxed)
                || now.saturating_sub(other.at.load(Ordering::Relaxed)) < self.after
            {
                continue;
            }
            // SAFETY: sched_getcpu(3) has no arguments.
            let here = *cpu.get_or_insert_with(|| unsafe { libc::sched_getcpu() });
            let Ok(here) = usize::try_from(here) else {
                return;
            };
            // SAFETY: `other.mask` is a valid set; CPU_ISSET reads it in bounds
            // (it checks the index against the set's size).
            if here >= libc::CPU_SETSIZE as usize || !unsafe { libc::CPU_ISSET(here, &other.mask) }
            {
                continue; // its owner keeps it off this CPU
            }
            let tid = other.tid.load(Ordering::Relaxed);
            // Only a worker whose affinity is still the one it started with:
            // one that somebody else narrowed (a coordinator keeping lowered
            // work off a CPU, an administrator) is not ours to move, and its
            // restore would undo theirs.
            if !affinity(tid).is_some_and(|now| same(&now, &other.mask)) {
                continue;
            }
            let only_here = one_cpu(here);
            other.nudged_to.store(here as i32, Ordering::Relaxed);
            // SAFETY: `only_here` is a live set of `MASK_SIZE` bytes; the tid is
            // a thread of this process that is still registered, so alive (a
            // worker leaves the registry before its thread exits). An error
            // (the thread exited meanwhile) changes nothing.
            if unsafe { libc::sched_setaffinity(tid, MASK_SIZE, &only_here) } == 0 {
                // Raised after the move, so the restore (which looks at the flag)
                // cannot come before it. The registry's lock keeps other parkers
                // out meanwhile, and makes the target's check as it parks exact.
                other.nudged.store(true, Ordering::Release);
                self.nudges.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Thread `tid`'s affinity (0: the calling thread), if it can be read.
fn affinity(tid: libc::pid_t) -> Option<libc::cpu_set_t> {
    // SAFETY: a zeroed `cpu_set_t` is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live `cpu_set_t` of `MASK_SIZE` bytes; a `tid`
    // that is not (or no longer) a thread makes the call fail, nothing else.
    (unsafe { libc::sched_getaffinity(tid, MASK_SIZE, &mut set) } == 0).then_some(set)
}

/// The set of CPU `cpu` alone (`cpu < CPU_SETSIZE`).
fn one_cpu(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: a zeroed `cpu_set_t` is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: callers pass `cpu < CPU_SETSIZE` (checked where it comes from
    // `sched_getcpu`), in bounds of the set.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set
}

/// Whether two CPU sets are equal.
fn same(a: &libc::cpu_set_t, b: &libc::cpu_set_t) -> bool {
    // SAFETY: both are valid sets; CPU_EQUAL only reads them.
    unsafe { libc::CPU_EQUAL(a, b) }
}

/// The calling worker is running (polls, woke from a park): records the beat,
/// and restores its affinity if another worker nudged it.
#[inline]
pub(crate) fn beat() {
    MINE.with(|m| {
        if let Some(mine) = &*m.borrow() {
            mine.at.store(now_ns(), Ordering::Relaxed);
            if mine.parked.load(Ordering::Relaxed) {
                mine.parked.store(false, Ordering::Relaxed);
            }
            restore_if_nudged(mine);
        }
    });
}

/// Gives the calling worker back the affinity it started with, if another
/// worker changed it — and nobody has changed it since (the nudge's one CPU
/// is still all it has).
fn restore_if_nudged(mine: &Beat) {
    // A load first: the swap (a locked instruction) only when nudged.
    if mine.nudged.load(Ordering::Relaxed) && mine.nudged.swap(false, Ordering::Acquire) {
        let Ok(to) = usize::try_from(mine.nudged_to.load(Ordering::Relaxed)) else {
            return;
        };
        // `to` came from `sched_getcpu`, checked below CPU_SETSIZE by the
        // nudger.
        if affinity(0).is_some_and(|now| same(&now, &one_cpu(to))) {
            // SAFETY: `mine.mask` is a live set of `MASK_SIZE` bytes; 0 is the
            // calling thread. On failure the thread stays on the CPU it was
            // moved to, which is still a CPU it may use.
            unsafe { libc::sched_setaffinity(0, MASK_SIZE, &mine.mask) };
        }
    }
}
