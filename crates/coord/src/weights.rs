//! OS weights: the paper's switching coroutine on stock Linux.
//!
//! Paper §2.4 has the kernel schedule processes by the most important
//! coroutine each has ready. Linux does not read our bitmaps, but it honours
//! per-thread nice values and the `SCHED_BATCH`/`SCHED_IDLE` policies, so the
//! coordinator translates: it maps each registered process's most important
//! *recent* effective level onto the OS weight of its worker threads, and
//! Linux's own scheduler then favours the process with the more important work
//! even when nobody yields.
//!
//! ## The mapping ([`target`])
//!
//! Let *t* be a process's most important effective level seen at any scan in
//! the last `window` (after its ceiling and its budget; see
//! [`policy`](crate::policy)), and *g* the most important such level over all
//! registered processes.
//!
//! | the process | its worker threads get |
//! |---|---|
//! | nothing ready in the window | what they had ([`Weight::Original`]) |
//! | *t* = *g* (it holds the globally most important level) | what they had |
//! | *t* = the least important level (and levels > 1) | [`least`](WeightConfig::least): `SCHED_IDLE` by default |
//! | otherwise, rank *r* = *t* − *g* > 0 | nice `min(r × nice_step, nice_max)` (5 per level, at most 19) |
//!
//! The window is the hysteresis: a level counts as soon as it is seen and
//! stops counting only `window` after it was last seen, so a server whose
//! bitmap empties between requests keeps its rank, and a process's weight
//! changes at most a few times per window rather than at every scan.
//!
//! ## A CPU kept free ([`reserved_cpus`])
//!
//! While a process is lowered (any row but the first two), its worker threads
//! are also kept off the last [`reserve_cpus`](WeightConfig::reserve_cpus) of
//! the coordinator's CPUs (1 by default, never all of them): their affinity
//! loses those CPUs, and gets them back with the rest of the settings. A
//! lowered thread yields a CPU to a more important one that wakes on it, but
//! only once that CPU runs — under a hypervisor a vCPU kept busy by a flood
//! is descheduled by the host far more often than an idle one, and whoever
//! wakes on it waits too. With a CPU no lowered worker uses, the more important
//! process finds one as it would alone (measured with `coordbench`:
//! `docs/coordinator.md`). This holds for threads already at or below the
//! weight by their owner's choice too, but not for real-time or deadline
//! ones; a thread whose affinity holds no other CPU keeps it. A lowered
//! thread's affinity found widened at a refresh (its runtime moving it, say)
//! is narrowed again.
//!
//! ## Rules for the threads
//!
//! - **Only lower, then restore.** The coordinator records each thread's policy
//!   and nice value the first time it touches it, never sets a weight above
//!   that ([`lowered`]), and writes the recorded values back when the process
//!   returns to [`Weight::Original`], deregisters, or the coordinator stops.
//!   Threads under a real-time or deadline policy, and threads already at
//!   `SCHED_IDLE`, are left alone.
//! - **Which threads.** Those whose name (`/proc/<pid>/task/<tid>/comm`) starts
//!   with [`thread_prefix`](WeightConfig::thread_prefix) (`ss-worker`, the
//!   runtime's default worker name; empty: every thread). Threads started later
//!   are picked up at the next change or every [`refresh`](WeightConfig::refresh).
//! - **Only on change.** Weights are written when a process's target changes
//!   (and for new threads at a refresh), never per scan. A target becomes
//!   less important only `window` after the level behind it was last seen, so
//!   a process flipping its claims moves its own weight, or everybody's if it
//!   flips the global top, at most about twice per window; a listing examines
//!   at most [`MAX_TASKS_LISTED`] tasks and weights at most
//!   [`MAX_WEIGHTED_THREADS`] threads per process.
//! - **Privilege.** Restoring a weight is raising it, which needs
//!   `CAP_SYS_NICE` (and touching another user's threads needs it too). Without
//!   it the coordinator does not lower anything it could not restore: OS
//!   weights stay off and [`WeightsState`] says why. A thread that refuses
//!   (`EPERM`) is recorded in the process's status and skipped.
//!
//! ## What is and is not guaranteed
//!
//! Guaranteed: a registered process whose recent top level is less important
//! than another's has its worker threads at a lower OS weight, and off the
//! reserved CPUs, within one tick of the coordinator seeing it; they get back
//! exactly the settings they had when the process returns to the top,
//! deregisters or the coordinator stops cleanly; the coordinator never raises
//! a thread above what its owner set.
//!
//! Not guaranteed:
//! - *Latency.* Nice values are weights, not priorities: Linux (EEVDF) still
//!   gives a nice-19 thread about 1.5 % of a contended CPU, and `SCHED_IDLE`
//!   threads a sliver; a lowered thread holding a lock still delays others.
//! - *Unregistered processes* compete as Linux decides; a lowered process
//!   also loses to them.
//! - *Threads not named with the prefix* escape (a process can name its threads
//!   anything); use an empty prefix to cover every thread.
//! - *Changes the owner makes* to a thread's weight while the coordinator has
//!   lowered it are overwritten at the restore.
//! - *A coordinator killed with SIGKILL* restores nothing: lowered threads stay
//!   lowered until their process changes them.
//! - *Thread id reuse*: a tid listed in `/proc` could exit and be reused by a
//!   new thread before the coordinator writes its weight (pid allocation is
//!   cyclic, so this needs the whole pid space to wrap in between). The
//!   coordinator skips processes whose pidfd says they have exited.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use ss_abi::{Levels, Priority};

use crate::sys::{self, CpuMask, ThreadSched};

/// What a process whose most important level is the least important one gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeastClass {
    /// `SCHED_IDLE`: runs only when nothing else wants the CPU (the default).
    Idle,
    /// `SCHED_BATCH` at nice [`nice_max`](WeightConfig::nice_max).
    Batch,
    /// Nice [`nice_max`](WeightConfig::nice_max), policy unchanged.
    Nice,
}

/// How the coordinator maps levels onto OS weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightConfig {
    /// Whether to touch OS weights at all (default on; it still needs
    /// `CAP_SYS_NICE`, see [`WeightsState`]).
    pub enabled: bool,
    /// Worker threads are those whose name starts with this (default
    /// `ss-worker`; empty: every thread of the process).
    pub thread_prefix: String,
    /// Nice added per level of distance from the top (default 5).
    pub nice_step: u8,
    /// The highest nice value given (default 19, Linux's maximum).
    pub nice_max: u8,
    /// For processes at the least important level (default [`LeastClass::Idle`]).
    pub least: LeastClass,
    /// How long a level seen at a scan keeps counting (default 100 ms).
    pub window: Duration,
    /// How often lowered processes are checked for new threads (default 1 s).
    pub refresh: Duration,
    /// CPUs kept free of lowered processes' worker threads while they are
    /// lowered (default 1; never all of the coordinator's CPUs): see
    /// [`reserved_cpus`].
    pub reserve_cpus: usize,
}

impl Default for WeightConfig {
    fn default() -> Self {
        WeightConfig {
            enabled: true,
            thread_prefix: "ss-worker".into(),
            nice_step: 5,
            nice_max: 19,
            least: LeastClass::Idle,
            window: Duration::from_millis(100),
            refresh: Duration::from_secs(1),
            reserve_cpus: 1,
        }
    }
}

/// Whether OS weights are being applied, and if not, why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsState {
    /// Weights are applied.
    pub enabled: bool,
    /// Why not, when they are not.
    pub note: String,
    /// The CPUs lowered worker threads are kept off ([`reserved_cpus`]).
    #[serde(default)]
    pub reserved: Vec<usize>,
}

impl WeightsState {
    /// The state for `cfg` given this process's capabilities.
    pub fn for_config(cfg: &WeightConfig) -> WeightsState {
        if !cfg.enabled {
            return WeightsState {
                enabled: false,
                note: "OS weights are off (--no-os-weights)".into(),
                reserved: Vec::new(),
            };
        }
        if !has_cap_sys_nice() {
            return WeightsState {
                enabled: false,
                note: "OS weights are off: the coordinator lacks CAP_SYS_NICE, so it could lower \
                       threads' weights but never restore them; run it as root or grant \
                       CAP_SYS_NICE (setcap cap_sys_nice+ep ss-coord)"
                    .into(),
                reserved: Vec::new(),
            };
        }
        let reserved = sys::affinity_get(0)
            .map(|allowed| reserved_cpus(allowed, cfg.reserve_cpus).cpus().collect())
            .unwrap_or_default();
        WeightsState {
            enabled: true,
            note: String::new(),
            reserved,
        }
    }
}

impl fmt::Display for WeightsState {
    /// `OS weights on, CPU 1 kept free of lowered workers`, or why they are off.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.enabled {
            return f.write_str(&self.note);
        }
        f.write_str("OS weights on")?;
        match self.reserved.as_slice() {
            [] => Ok(()),
            [one] => write!(f, ", CPU {one} kept free of lowered workers"),
            many => write!(f, ", CPUs {many:?} kept free of lowered workers"),
        }
    }
}

/// Whether this process has `CAP_SYS_NICE` in its effective set
/// (`CapEff` in `/proc/self/status`).
pub fn has_cap_sys_nice() -> bool {
    const CAP_SYS_NICE: u32 = 23;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_NICE) != 0)
}

/// The OS weight the coordinator wants for a process's worker threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Weight {
    /// What the threads had before the coordinator touched them.
    Original,
    /// At least this nice value, policy unchanged.
    Nice(u8),
    /// `SCHED_BATCH` at least at this nice value.
    Batch(u8),
    /// `SCHED_IDLE`.
    Idle,
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Weight::Original => f.write_str("normal"),
            Weight::Nice(n) => write!(f, "nice {n}"),
            Weight::Batch(n) => write!(f, "batch {n}"),
            Weight::Idle => f.write_str("idle"),
        }
    }
}

/// The weight of a process whose recent top level is `top`, when the most
/// important recent level of all processes is `global_top` (see the module
/// docs for the table).
pub fn target(
    top: Option<Priority>,
    global_top: Option<Priority>,
    levels: Levels,
    cfg: &WeightConfig,
) -> Weight {
    let Some(top) = top else {
        return Weight::Original;
    };
    let nice_max = cfg.nice_max.min(19);
    if levels.count() > 1 && top == levels.least_important() {
        return match cfg.least {
            LeastClass::Idle => Weight::Idle,
            LeastClass::Batch => Weight::Batch(nice_max),
            LeastClass::Nice => Weight::Nice(nice_max),
        };
    }
    let g = global_top.map_or(top.level(), |g| g.level());
    let rank = top.level().saturating_sub(g);
    if rank == 0 {
        return Weight::Original;
    }
    let nice = u32::from(rank) * u32::from(cfg.nice_step);
    match u8::try_from(nice).unwrap_or(u8::MAX).min(nice_max) {
        0 => Weight::Original,
        n => Weight::Nice(n),
    }
}

/// The settings a thread whose owner set `orig` should get under `w`, or
/// `None` to leave it alone. Never more important than `orig`.
pub fn lowered(orig: ThreadSched, w: Weight) -> Option<ThreadSched> {
    let ordinary = [libc::SCHED_OTHER, libc::SCHED_BATCH];
    if !ordinary.contains(&orig.policy) {
        // Real time, deadline: not ours to touch. SCHED_IDLE: already lowest.
        return None;
    }
    let want = match w {
        Weight::Original => return Some(orig),
        Weight::Nice(n) => ThreadSched {
            nice: orig.nice.max(i32::from(n)),
            ..orig
        },
        Weight::Batch(n) => ThreadSched {
            policy: libc::SCHED_BATCH,
            nice: orig.nice.max(i32::from(n)),
            ..orig
        },
        Weight::Idle => ThreadSched {
            policy: libc::SCHED_IDLE,
            ..orig
        },
    };
    (want != orig).then_some(want)
}

/// The CPUs a lowered process's worker threads are kept off: the last
/// `reserve` of `allowed` (the coordinator's own CPUs), leaving at least one —
/// none on a machine with one CPU.
///
/// Why: a `SCHED_IDLE` or high-nice thread yields a CPU to a more important
/// thread that wakes on it, but only once that CPU runs at all — under a
/// hypervisor a vCPU kept busy by a flood is descheduled by the host far
/// more than an idle one, and the more important thread waits with it. With
/// one CPU kept free of lowered work, the more important process finds a CPU
/// as it would alone (measured: `coordbench`, `docs/coordinator.md`).
pub fn reserved_cpus(allowed: CpuMask, reserve: usize) -> CpuMask {
    let n = allowed.count();
    let keep = reserve.min(n.saturating_sub(1));
    CpuMask::of(allowed.cpus().skip(n - keep))
}

/// The affinity a lowered worker thread whose owner set `orig` gets: `orig`
/// without the reserved CPUs, or `None` to leave it as it is (nothing
/// reserved, nothing to take away, or nothing left).
pub fn narrowed(orig: CpuMask, reserved: CpuMask) -> Option<CpuMask> {
    let want = orig.without(&reserved);
    (want.count() > 0 && want != orig).then_some(want)
}

/// Takes the `reserved` CPUs out of thread `tid`'s affinity, if [`narrowed`]
/// says so: the affinity it had then, or `None` if it was left as it was.
fn narrow(tid: libc::pid_t, reserved: CpuMask) -> io::Result<Option<CpuMask>> {
    let mask = sys::affinity_get(tid)?;
    match narrowed(mask, reserved) {
        Some(narrow) => sys::affinity_set(tid, narrow).map(|()| Some(mask)),
        None => Ok(None),
    }
}

/// When each level was last seen: the window behind [`target`]'s *t*.
#[derive(Clone, Debug, Default)]
pub struct Recent {
    seen: Vec<(u8, Instant)>,
}

impl Recent {
    /// Notes the levels of `bits` as seen at `now`.
    pub fn note(&mut self, bits: u64, now: Instant) {
        let mut rest = bits;
        while rest != 0 {
            let level = rest.trailing_zeros() as u8;
            rest &= rest - 1;
            match self.seen.iter_mut().find(|(l, _)| *l == level) {
                Some(entry) => entry.1 = now,
                None => self.seen.push((level, now)),
            }
        }
    }

    /// The most important level seen within `window` before `now`.
    pub fn top(&mut self, now: Instant, window: Duration, levels: Levels) -> Option<Priority> {
        self.seen
            .retain(|(_, at)| now.saturating_duration_since(*at) <= window);
        let level = self.seen.iter().map(|(l, _)| *l).min()?;
        levels.priority(level.into()).ok()
    }
}

/// What a thread's owner had set, recorded when the coordinator first
/// touched it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Original {
    sched: ThreadSched,
    /// Its affinity, when the coordinator narrowed it.
    mask: Option<CpuMask>,
}

/// One process's worker threads under the coordinator's weight.
#[derive(Debug)]
pub struct ProcessWeights {
    pid: u32,
    applied: Weight,
    /// Threads touched: tid → the settings their owner had.
    originals: HashMap<libc::pid_t, Original>,
    last_refresh: Option<Instant>,
    error: Option<String>,
}

impl ProcessWeights {
    /// The threads of `pid`, untouched.
    pub fn new(pid: u32) -> ProcessWeights {
        ProcessWeights {
            pid,
            applied: Weight::Original,
            originals: HashMap::new(),
            last_refresh: None,
            error: None,
        }
    }

    /// The weight last applied.
    pub fn applied(&self) -> Weight {
        self.applied
    }

    /// Threads whose weight the coordinator changed and will restore.
    pub fn threads(&self) -> usize {
        self.originals.len()
    }

    /// The last failure to read or write a thread's weight, if any.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Whether [`update`](Self::update) with `w` would do anything: `w`
    /// differs from what is applied, or a lowered process is due a refresh.
    /// No syscall.
    pub fn due(&self, w: Weight, cfg: &WeightConfig, now: Instant) -> bool {
        w != self.applied
            || (w != Weight::Original
                && self
                    .last_refresh
                    .is_none_or(|t| now.saturating_duration_since(t) >= cfg.refresh))
    }

    /// Moves the process to `w` (if it differs from what is applied) or, at a
    /// refresh, applies the current weight to threads started since; lowered
    /// threads are also kept off the `reserved` CPUs. Returns whether
    /// anything observable changed.
    pub fn update(
        &mut self,
        w: Weight,
        cfg: &WeightConfig,
        reserved: CpuMask,
        now: Instant,
    ) -> bool {
        if !self.due(w, cfg, now) {
            return false;
        }
        if w == self.applied {
            self.last_refresh = Some(now);
            let before = self.originals.len();
            self.apply(w, &cfg.thread_prefix, reserved, true);
            return self.originals.len() != before;
        }
        self.last_refresh = Some(now);
        if w == Weight::Original {
            self.restore();
        } else {
            self.apply(w, &cfg.thread_prefix, reserved, false);
        }
        self.applied = w;
        true
    }

    fn apply(&mut self, w: Weight, prefix: &str, reserved: CpuMask, only_new: bool) {
        let tids = match worker_threads(self.pid, prefix) {
            Ok(t) => t,
            Err(e) => {
                self.error = Some(format!("listing /proc/{}/task: {e}", self.pid));
                return;
            }
        };
        // Forget threads that have exited (their tid may be reused).
        self.originals.retain(|tid, _| tids.contains(tid));
        for tid in tids {
            if let (true, Some(orig)) = (only_new, self.originals.get(&tid)) {
                // Narrowed before: narrowed again if something widened it
                // since (e.g. its own runtime moving it back).
                if orig.mask.is_some() {
                    let _ = narrow(tid, reserved);
                }
                continue;
            }
            let mut orig = match self.originals.get(&tid) {
                Some(o) => *o,
                None => match sys::sched_get(tid) {
                    Ok(sched) => Original { sched, mask: None },
                    Err(_) => continue, // exited meanwhile
                },
            };
            let want = lowered(orig.sched, w);
            if let Some(want) = want {
                if let Err(e) = sys::sched_set(tid, want) {
                    if e.raw_os_error() != Some(libc::ESRCH) {
                        self.error = Some(format!("thread {tid}: {e}"));
                    }
                    continue;
                }
            }
            // Off the reserved CPUs too — also a thread already at (or below)
            // the weight by its owner's choice; real time and deadline are not
            // ours to touch.
            let ours = [libc::SCHED_OTHER, libc::SCHED_BATCH, libc::SCHED_IDLE];
            if orig.mask.is_none() && ours.contains(&orig.sched.policy) {
                match narrow(tid, reserved) {
                    Ok(was) => orig.mask = was,
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => self.error = Some(format!("thread {tid}: affinity: {e}")),
                }
            }
            if want.is_some() || orig.mask.is_some() {
                self.originals.insert(tid, orig);
            }
        }
    }

    /// Writes back every touched thread's original settings.
    pub fn restore(&mut self) {
        for (tid, orig) in self.originals.drain() {
            let mut r = sys::sched_set(tid, orig.sched);
            if let Some(mask) = orig.mask {
                r = r.and(sys::affinity_set(tid, mask));
            }
            match r {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => self.error = Some(format!("restoring thread {tid}: {e}")),
            }
        }
        self.applied = Weight::Original;
    }

    /// Forgets the threads without restoring them (the process has exited).
    pub fn forget(&mut self) {
        self.originals.clear();
        self.applied = Weight::Original;
    }
}

/// `/proc/<pid>/task` entries examined per listing, at most: a process with
/// more threads cannot make one listing cost the coordinator more.
pub const MAX_TASKS_LISTED: usize = 4096;
/// Worker threads weighted per process, at most.
pub const MAX_WEIGHTED_THREADS: usize = 1024;

/// The threads of `pid` whose name starts with `prefix` (at most
/// [`MAX_WEIGHTED_THREADS`], among the first [`MAX_TASKS_LISTED`] tasks).
///
/// # Errors
/// `/proc/<pid>/task` cannot be read (the process has gone, or no `/proc`).
pub fn worker_threads(pid: u32, prefix: &str) -> io::Result<Vec<libc::pid_t>> {
    let dir = format!("/proc/{pid}/task");
    let mut tids = Vec::new();
    for entry in std::fs::read_dir(&dir)?.take(MAX_TASKS_LISTED) {
        if tids.len() == MAX_WEIGHTED_THREADS {
            break;
        }
        let Ok(entry) = entry else { continue };
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if !prefix.is_empty() {
            let Ok(comm) = std::fs::read(format!("{dir}/{tid}/comm")) else {
                continue;
            };
            if !comm.starts_with(prefix.as_bytes()) {
                continue;
            }
        }
        tids.push(tid);
    }
    Ok(tids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(l: u8) -> Priority {
        Priority::new(l).unwrap()
    }

    #[test]
    fn the_mapping_ranks_by_distance_from_the_top() {
        let cfg = WeightConfig::default();
        let l = Levels::DEFAULT;
        assert_eq!(target(None, Some(p(0)), l, &cfg), Weight::Original);
        assert_eq!(target(Some(p(0)), Some(p(0)), l, &cfg), Weight::Original);
        assert_eq!(target(Some(p(3)), Some(p(3)), l, &cfg), Weight::Original);
        assert_eq!(target(Some(p(1)), Some(p(0)), l, &cfg), Weight::Nice(5));
        assert_eq!(target(Some(p(3)), Some(p(1)), l, &cfg), Weight::Nice(10));
        assert_eq!(target(Some(p(6)), Some(p(0)), l, &cfg), Weight::Nice(19));
        // The least important level is background work, even when alone.
        assert_eq!(target(Some(p(7)), Some(p(7)), l, &cfg), Weight::Idle);
        let batch = WeightConfig {
            least: LeastClass::Batch,
            nice_max: 15,
            ..cfg.clone()
        };
        assert_eq!(target(Some(p(7)), Some(p(0)), l, &batch), Weight::Batch(15));
        assert_eq!(target(Some(p(6)), Some(p(0)), l, &batch), Weight::Nice(15));
        // One level: nobody is background.
        let one = Levels::new(1).unwrap();
        assert_eq!(target(Some(p(0)), Some(p(0)), one, &cfg), Weight::Original);
    }

    #[test]
    fn threads_are_only_lowered_never_raised() {
        let normal = ThreadSched {
            policy: libc::SCHED_OTHER,
            reset_on_fork: false,
            nice: 0,
        };
        let niced = ThreadSched { nice: 12, ..normal };
        assert_eq!(lowered(normal, Weight::Nice(5)).unwrap().nice, 5);
        assert_eq!(lowered(niced, Weight::Nice(5)), None, "already lower");
        assert_eq!(lowered(niced, Weight::Original), Some(niced));
        let idle = lowered(niced, Weight::Idle).unwrap();
        assert_eq!((idle.policy, idle.nice), (libc::SCHED_IDLE, 12));
        let batch = lowered(normal, Weight::Batch(19)).unwrap();
        assert_eq!((batch.policy, batch.nice), (libc::SCHED_BATCH, 19));
        let rt = ThreadSched {
            policy: libc::SCHED_FIFO,
            ..normal
        };
        assert_eq!(lowered(rt, Weight::Idle), None, "real time is left alone");
        let already_idle = ThreadSched {
            policy: libc::SCHED_IDLE,
            ..normal
        };
        assert_eq!(lowered(already_idle, Weight::Nice(5)), None);
    }

    #[test]
    fn the_last_cpus_are_reserved_but_never_all_of_them() {
        let four = CpuMask::of([0, 1, 2, 3]);
        assert_eq!(reserved_cpus(four, 1), CpuMask::of([3]));
        assert_eq!(reserved_cpus(four, 2), CpuMask::of([2, 3]));
        assert_eq!(reserved_cpus(four, 9), CpuMask::of([1, 2, 3]));
        assert_eq!(reserved_cpus(four, 0), CpuMask::empty());
        // The coordinator's own CPUs, whatever their numbers.
        assert_eq!(reserved_cpus(CpuMask::of([2, 5]), 1), CpuMask::of([5]));
        // One CPU: nothing to keep free.
        assert_eq!(reserved_cpus(CpuMask::of([0]), 1), CpuMask::empty());
    }

    #[test]
    fn a_lowered_thread_loses_only_reserved_cpus_and_never_its_last() {
        let reserved = CpuMask::of([3]);
        assert_eq!(
            narrowed(CpuMask::of([0, 1, 2, 3]), reserved),
            Some(CpuMask::of([0, 1, 2]))
        );
        // Nothing reserved among its CPUs, or nothing reserved at all.
        assert_eq!(narrowed(CpuMask::of([0, 1]), reserved), None);
        assert_eq!(narrowed(CpuMask::of([0, 1]), CpuMask::empty()), None);
        // Pinned to the reserved CPU by its owner: left there.
        assert_eq!(narrowed(CpuMask::of([3]), reserved), None);
    }

    #[test]
    fn recent_levels_expire_after_the_window() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let w = Duration::from_millis(10);
        let l = Levels::DEFAULT;
        let mut r = Recent::default();
        assert_eq!(r.top(ms(0), w, l), None);
        r.note(0b1001, ms(0));
        assert_eq!(r.top(ms(5), w, l), Some(p(0)));
        r.note(0b1000, ms(8));
        assert_eq!(r.top(ms(10), w, l), Some(p(0)));
        assert_eq!(r.top(ms(11), w, l), Some(p(3)));
        assert_eq!(r.top(ms(19), w, l), None);
    }
}
