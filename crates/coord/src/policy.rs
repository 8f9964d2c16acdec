//! Abuse resistance: who may claim which levels, and for how long the top one.
//!
//! Two rules, both applied by the coordinator to what it reads from a process
//! page before folding it into the global bitmap (a process cannot opt out):
//!
//! 1. **Ceiling.** Each process gets a ceiling level *c* at registration, from the
//!    first matching rule: a `program` rule (its executable), else a `uid` rule
//!    (the socket peer's uid), else the default. Bits more important than *c*
//!    are **clamped** to *c*: a capped process with work at level 1 is seen as
//!    having work at *c* — it never claims more, and its work is not hidden. The
//!    fold itself goes through [`GlobalBitmap::add_source_capped`], so the core
//!    enforces the ceiling a second time.
//! 2. **Top-level budget** ([`Budget`], a leaky bucket). Time a process is seen
//!    holding its ceiling level *c* (level 0 for an uncapped process) fills its
//!    bucket; the bucket leaks at `hold_share` percent of real time; it holds at
//!    most `hold` (the burst). When it is full the process is **demoted**: its
//!    level-*c* bit is reported at *c* + 1 (dropped if *c* is the least
//!    important level), and demoted time is not charged. The demotion ends when
//!    the bucket has drained to half. So a process may hold *c* for a burst of
//!    `hold / (1 - share)` from empty, and for at most `share` of the time in
//!    the long run, however it times its claims. Exactly: over any time *T*
//!    from empty, the holding time charged (summed over the registrations of
//!    a bucket) is at most `hold + share × T`, plus up to one scan interval
//!    per registration at each demotion and at the end (the charge that
//!    overfills the bucket is dropped).
//!
//! The budget **replaces** the earlier hold bound (demote after `hold` of
//! continuous holding, forgiven as soon as a scan finds *c* clear): a process
//! that cleared *c* at one scan per `hold` restarted that clock and kept the top
//! level nearly all the time. A bucket only drains at the leak rate, so brief
//! gaps buy back only what they last. With `hold_share` = 0 a bucket never
//! drains by itself, which is the old bound without its forgiveness; 100 turns
//! the budget off, as does `hold = None`.
//!
//! Scans happen on every notification and every tick, and the budget charges
//! each interval between two scans to what the earlier one saw, so "holding"
//! means "seen holding at the scans".
//!
//! [`GlobalBitmap::add_source_capped`]: ss_core::global::GlobalBitmap::add_source_capped

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ss_abi::{Levels, Priority};

use crate::page::ProcessPageSnapshot;
use crate::weights::{LeastClass, WeightConfig};

/// Ceiling rules and the top-level budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Priority levels in the global bitmap (default 8, as in the paper).
    pub levels: Levels,
    /// The ceiling of a process no rule matches (default level 0: anything).
    pub default_ceiling: Priority,
    /// `(uid, ceiling)` rules.
    pub uids: Vec<(u32, Priority)>,
    /// `(program, ceiling)` rules. A program containing `/` matches the full
    /// path of `/proc/<pid>/exe`; otherwise its file name.
    pub programs: Vec<(String, Priority)>,
    /// The top-level budget's burst: how much holding time a process's bucket
    /// takes before it is demoted; `None` (or zero): no budget (default 100 ms).
    pub hold: Option<Duration>,
    /// The budget's leak rate, in percent of real time (0..=100, default 50):
    /// the long-run share of time a process may hold its ceiling level.
    pub hold_share: u8,
    /// How levels map onto the worker threads' OS weights.
    pub weights: WeightConfig,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            levels: Levels::DEFAULT,
            default_ceiling: Priority::MOST_IMPORTANT,
            uids: Vec::new(),
            programs: Vec::new(),
            hold: Some(Duration::from_millis(100)),
            hold_share: 50,
            weights: WeightConfig::default(),
        }
    }
}

impl Policy {
    /// The ceiling of a process of `uid` running `exe`, within the levels.
    pub fn ceiling(&self, uid: u32, exe: Option<&Path>) -> Priority {
        let by_program = exe.and_then(|exe| {
            self.programs.iter().find_map(|(prog, c)| {
                let hit = if prog.contains('/') {
                    exe == Path::new(prog)
                } else {
                    exe.file_name().is_some_and(|n| n == prog.as_str())
                };
                hit.then_some(*c)
            })
        });
        let by_uid = || self.uids.iter().find_map(|&(u, c)| (u == uid).then_some(c));
        let c = by_program.or_else(by_uid).unwrap_or(self.default_ceiling);
        self.levels
            .check(c)
            .unwrap_or(self.levels.least_important())
    }
}

/// The shortest [`Policy::stall_window`]: below it a process at the top that
/// is merely waiting for a CPU on a loaded machine could be left out.
pub const MIN_STALL_WINDOW: Duration = Duration::from_millis(100);

impl Policy {
    /// How long a registration holding the global top may show no progress
    /// before its bits are left out of the view ([`crate::stall`]): the
    /// budget's burst from empty, `hold / (1 - hold_share)` (200 ms by
    /// default) — a process may hold the top that long anyway, so a hung one
    /// holds others back no longer than a busy one may — and at least
    /// [`MIN_STALL_WINDOW`]. Without a budget that bounds the burst (no
    /// `hold`, or `hold_share` 100) it is the default policy's.
    pub fn stall_window(&self) -> Duration {
        let burst = |hold: Duration, share: u8| -> Option<Duration> {
            let free = 100 - u32::from(share.min(100));
            if hold.is_zero() || free == 0 {
                return None;
            }
            Some(hold.checked_mul(100).map_or(Duration::MAX, |h| h / free))
        };
        let default = Policy::default();
        let fallback = || {
            default
                .hold
                .and_then(|h| burst(h, default.hold_share))
                .unwrap_or(MIN_STALL_WINDOW)
        };
        self.hold
            .and_then(|h| burst(h, self.hold_share))
            .unwrap_or_else(fallback)
            .max(MIN_STALL_WINDOW)
    }
}

/// `raw` masked to `levels`, with every bit more important than `ceiling`
/// moved to `ceiling`.
pub fn clamp(raw: u64, levels: Levels, ceiling: Priority) -> u64 {
    let bits = raw & levels.mask();
    let above = ceiling.more_important_mask();
    if bits & above != 0 {
        (bits & !above) | ceiling.bit()
    } else {
        bits
    }
}

/// What one scan takes from a page: its `ready` bitmap [`clamp`]ed to the
/// levels and the ceiling and `true` if its header is one we understand,
/// else nothing ready and `false`.
pub fn scan_bits(snap: &ProcessPageSnapshot, levels: Levels, ceiling: Priority) -> (u64, bool) {
    match snap.ready_if_valid() {
        Some(raw) => (clamp(raw, levels, ceiling), true),
        None => (0, false),
    }
}

/// A top-level budget: a leaky bucket of holding time (see the module docs).
///
/// The coordinator keeps one per uid and ceiling, across registrations, so a
/// process cannot empty its bucket by registering anew, nor multiply it by
/// registering several times: every registration of that uid at that ceiling
/// charges the same bucket (each its own holding time, so two holding at once
/// fill it twice as fast), and the bucket leaks once, at `hold_share` of real
/// time. Each registration keeps its own [`Holder`] (when it was last scanned
/// and whether it was then claiming).
#[derive(Clone, Debug)]
pub struct Budget {
    ceiling: Priority,
    /// Holding time charged and not yet leaked, at most the burst.
    level: Duration,
    /// Up to when the leak has been applied.
    leaked_at: Option<Instant>,
    demoted: bool,
}

/// One registration's part in a shared [`Budget`].
#[derive(Clone, Debug, Default)]
pub struct Holder {
    /// When this registration was last scanned.
    last: Option<Instant>,
    /// The last scan saw an honoured claim at the ceiling: the interval up to
    /// the next scan is charged.
    charging: bool,
}

impl Budget {
    /// The empty bucket of sources with this ceiling.
    pub fn new(ceiling: Priority) -> Budget {
        Budget {
            ceiling,
            level: Duration::ZERO,
            leaked_at: None,
            demoted: false,
        }
    }

    /// Whether its sources are demoted now.
    pub fn demoted(&self) -> bool {
        self.demoted
    }

    /// How full the bucket is, in percent of the burst (0 without a budget).
    pub fn fill_percent(&self, policy: &Policy) -> u8 {
        match Budget::cap(policy) {
            Some(cap) => (self.level.as_nanos() * 100 / cap.as_nanos()).min(100) as u8,
            None => 0,
        }
    }

    /// The burst, if `policy` has a budget: not without `hold` (or with 0),
    /// nor with a `hold_share` of 100 — the bucket would leak as fast as one
    /// registration fills it, but several of one bucket holding at once
    /// would still fill it, and "100" turns the budget off.
    fn cap(policy: &Policy) -> Option<Duration> {
        policy
            .hold
            .filter(|h| !h.is_zero() && policy.hold_share < 100)
    }

    /// Leaks the bucket up to `now` and updates the demotion.
    fn settle(&mut self, now: Instant, policy: &Policy, cap: Duration) {
        let dt = self
            .leaked_at
            .map_or(Duration::ZERO, |l| now.saturating_duration_since(l));
        self.leaked_at = Some(self.leaked_at.map_or(now, |l| l.max(now)));
        let share = u128::from(policy.hold_share.min(100));
        let leak = dt.as_nanos() * share / 100;
        let leak = Duration::from_nanos(u64::try_from(leak).unwrap_or(u64::MAX));
        self.level = self.level.saturating_sub(leak).min(cap);
        if self.level >= cap {
            self.demoted = true;
        } else if self.demoted && self.level <= cap / 2 {
            self.demoted = false;
        }
    }

    /// Whether the bucket, leaked up to `now`, is empty and not demoted: a
    /// bucket no registration uses any more can then be forgotten.
    pub fn drained(&mut self, now: Instant, policy: &Policy) -> bool {
        match Budget::cap(policy) {
            Some(cap) => {
                self.settle(now, policy, cap);
                self.level.is_zero() && !self.demoted
            }
            None => true,
        }
    }

    /// Takes one scan's clamped bitmap of the registration `holder` at `now`;
    /// returns the bitmap to fold.
    pub fn observe(
        &mut self,
        holder: &mut Holder,
        clamped: u64,
        now: Instant,
        policy: &Policy,
    ) -> u64 {
        let c = self.ceiling;
        let Some(cap) = Budget::cap(policy) else {
            *self = Budget::new(c);
            *holder = Holder::default();
            return clamped;
        };
        let dt = holder
            .last
            .map_or(Duration::ZERO, |l| now.saturating_duration_since(l));
        holder.last = Some(now);
        if holder.charging {
            self.level = self.level.saturating_add(dt);
        }
        self.settle(now, policy, cap);
        let claims = clamped & c.bit() != 0;
        holder.charging = claims && !self.demoted;
        if !(claims && self.demoted) {
            return clamped;
        }
        let lower = policy
            .levels
            .priority(u64::from(c.level()) + 1)
            .map_or(0, |p| p.bit());
        (clamped & !c.bit()) | lower
    }
}

/// A policy file or flag that could not be understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// 1-based line (0 for a command-line flag).
    pub line: usize,
    /// What was wrong and the expected form.
    pub message: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

impl std::error::Error for PolicyError {}

impl Policy {
    /// Parses a policy file: one rule per line, `#` starts a comment.
    ///
    /// ```text
    /// levels 8            # priority levels (1..=64)
    /// default 0           # ceiling when no rule matches
    /// hold-ms 100         # top-level budget: burst; 0 = no budget
    /// hold-share 50       # top-level budget: long-run share in percent
    /// os-weights on       # map levels onto worker threads' OS weights (on|off)
    /// worker-prefix ss-worker  # worker threads' name prefix; `*`: every thread
    /// nice-step 5         # nice added per level below the top
    /// nice-max 19         # highest nice value given
    /// least idle          # the least important level: idle|batch|nice
    /// weight-window-ms 100  # how long a seen level keeps counting
    /// reserve-cpus 1      # CPUs kept free of lowered processes' workers
    /// uid 1000 2          # processes of uid 1000: ceiling 2
    /// program flood 6     # executables named `flood`: ceiling 6
    /// program /opt/srv/bin/server 0
    /// ```
    ///
    /// Rules are checked in file order; the first matching `program` rule wins,
    /// else the first matching `uid` rule, else `default`. `levels` must come
    /// before any level it bounds.
    ///
    /// # Errors
    /// The first line that is not a rule, with the expected form.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let mut p = Policy::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            p.apply(&words).map_err(|message| PolicyError {
                line: i + 1,
                message,
            })?;
        }
        Ok(p)
    }

    /// Applies one rule given as words (`["uid", "1000", "2"]`).
    ///
    /// # Errors
    /// What was wrong and the expected form.
    pub fn apply(&mut self, words: &[&str]) -> Result<(), String> {
        let num = |s: &str| -> Result<u64, String> {
            s.parse::<u64>()
                .map_err(|_| format!("`{s}` is not a non-negative integer"))
        };
        let level = |levels: Levels, s: &str| -> Result<Priority, String> {
            levels.priority(num(s)?).map_err(|e| e.to_string())
        };
        match words {
            ["levels", n] => {
                let n = u8::try_from(num(n)?).map_err(|_| "levels must be 1..=64".to_string())?;
                self.levels = Levels::new(n).map_err(|_| "levels must be 1..=64".to_string())?;
            }
            ["default", l] => self.default_ceiling = level(self.levels, l)?,
            ["hold-ms", ms] => {
                let ms = num(ms)?;
                self.hold = (ms > 0).then(|| Duration::from_millis(ms));
            }
            ["hold-share", pct] => {
                self.hold_share = u8::try_from(num(pct)?)
                    .ok()
                    .filter(|&p| p <= 100)
                    .ok_or_else(|| "hold-share is a percentage, 0..=100".to_string())?;
            }
            ["os-weights", v] => {
                self.weights.enabled = match *v {
                    "on" => true,
                    "off" => false,
                    _ => return Err(format!("os-weights is `on` or `off`, not `{v}`")),
                }
            }
            ["worker-prefix", prefix] => {
                self.weights.thread_prefix = match *prefix {
                    "*" => String::new(),
                    p => p.to_string(),
                }
            }
            ["nice-step", n] => {
                self.weights.nice_step = u8::try_from(num(n)?)
                    .ok()
                    .filter(|&n| n <= 39)
                    .ok_or_else(|| "nice-step is 0..=39".to_string())?;
            }
            ["nice-max", n] => {
                self.weights.nice_max = u8::try_from(num(n)?)
                    .ok()
                    .filter(|&n| n <= 19)
                    .ok_or_else(|| "nice-max is 0..=19".to_string())?;
            }
            ["least", class] => {
                self.weights.least = match *class {
                    "idle" => LeastClass::Idle,
                    "batch" => LeastClass::Batch,
                    "nice" => LeastClass::Nice,
                    _ => return Err(format!("least is idle, batch or nice, not `{class}`")),
                }
            }
            ["weight-window-ms", ms] => {
                self.weights.window = Duration::from_millis(num(ms)?);
            }
            ["reserve-cpus", n] => {
                self.weights.reserve_cpus = usize::try_from(num(n)?)
                    .map_err(|_| "reserve-cpus out of range".to_string())?;
            }
            ["uid", uid, l] => {
                let uid = u32::try_from(num(uid)?).map_err(|_| "uid out of range".to_string())?;
                let l = level(self.levels, l)?;
                self.uids.push((uid, l));
            }
            ["program", prog, l] => {
                let l = level(self.levels, l)?;
                self.programs.push(((*prog).to_string(), l));
            }
            _ => {
                return Err(format!(
                    "`{}` is not a rule; expected `levels N`, `default LEVEL`, `hold-ms MS`, \
                     `hold-share PERCENT`, `uid UID LEVEL`, `program NAME|PATH LEVEL`, \
                     `os-weights on|off`, `worker-prefix PREFIX|*`, `nice-step N`, `nice-max N`, \
                     `least idle|batch|nice`, `weight-window-ms MS` or `reserve-cpus N`",
                    words.join(" ")
                ))
            }
        }
        Ok(())
    }
}

/// Where a process's executable is, if it can be read.
pub fn exe_of(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(l: u8) -> Priority {
        Priority::new(l).unwrap()
    }

    #[test]
    fn the_stall_window_is_the_budgets_burst() {
        let window = |text: &str| Policy::parse(text).unwrap().stall_window();
        let ms = Duration::from_millis;
        assert_eq!(window(""), ms(200));
        assert_eq!(window("hold-ms 300\nhold-share 25\n"), ms(400));
        assert_eq!(window("hold-ms 300\nhold-share 0\n"), ms(300));
        // Never shorter than the minimum, and defined without a budget.
        assert_eq!(window("hold-ms 10\n"), MIN_STALL_WINDOW);
        assert_eq!(window("hold-ms 0\n"), ms(200));
        assert_eq!(window("hold-share 100\n"), ms(200));
        // No overflow on an absurd burst.
        let huge = format!("hold-ms {}\nhold-share 99\n", u64::MAX);
        assert!(window(&huge) >= ms(u64::MAX));
    }

    #[test]
    fn parse_and_match() {
        let pol = Policy::parse(
            "# a policy\nlevels 8\ndefault 1\nhold-ms 0\nuid 1000 2 # users\n\
             program flood 6\nprogram /opt/srv 0\n",
        )
        .unwrap();
        assert_eq!(pol.hold, None);
        assert_eq!(pol.ceiling(0, None), p(1));
        assert_eq!(pol.ceiling(1000, None), p(2));
        assert_eq!(pol.ceiling(1000, Some(Path::new("/usr/bin/flood"))), p(6));
        assert_eq!(pol.ceiling(1000, Some(Path::new("/opt/srv"))), p(0));
        assert_eq!(pol.ceiling(1000, Some(Path::new("/other/opt/srv"))), p(2));
        let err = Policy::parse("levels 8\nuid 5 9\n").unwrap_err();
        assert_eq!(err.line, 2);
        let w = Policy::parse(
            "os-weights off\nworker-prefix *\nnice-step 3\nnice-max 15\nleast batch\n\
             weight-window-ms 20\nreserve-cpus 2\n",
        )
        .unwrap()
        .weights;
        assert!(!w.enabled);
        assert_eq!(w.thread_prefix, "");
        assert_eq!(
            (w.nice_step, w.nice_max, w.least),
            (3, 15, LeastClass::Batch)
        );
        assert_eq!(w.window, Duration::from_millis(20));
        assert_eq!(w.reserve_cpus, 2);
        assert_eq!(Policy::default().weights.reserve_cpus, 1);
        assert!(Policy::parse("nice-max 20").is_err());
        assert!(Policy::parse("least never").is_err());
        assert!(Policy::parse("bogus")
            .unwrap_err()
            .message
            .contains("expected"));
    }

    #[test]
    fn clamp_moves_bits_to_the_ceiling() {
        assert_eq!(clamp(0b1000_0011, Levels::DEFAULT, p(3)), 0b1000_1000);
        assert_eq!(clamp(0b1_0001_0000, Levels::DEFAULT, p(3)), 0b0001_0000);
        assert_eq!(clamp(u64::MAX, Levels::DEFAULT, p(0)), 0xff);
    }

    fn budget(ms: u64, share: u8) -> Policy {
        Policy {
            hold: Some(Duration::from_millis(ms)),
            hold_share: share,
            ..Policy::default()
        }
    }

    #[test]
    fn a_full_bucket_demotes_until_half_drained() {
        let pol = budget(10, 50);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut b = Budget::new(p(0));
        let mut h = Holder::default();
        // Holding fills at 1 - 50 % = half speed: full after 20 ms.
        assert_eq!(b.observe(&mut h, 0b101, ms(0), &pol), 0b101);
        assert_eq!(b.observe(&mut h, 0b101, ms(19), &pol), 0b101);
        assert_eq!(b.fill_percent(&pol), 95);
        assert_eq!(b.observe(&mut h, 0b101, ms(20), &pol), 0b110);
        assert!(b.demoted());
        // Demoted claims are not charged: the bucket drains at 50 %, and the
        // demotion ends at half (5 ms of 10) after 10 ms.
        assert_eq!(b.observe(&mut h, 0b001, ms(29), &pol), 0b010);
        assert_eq!(b.observe(&mut h, 0b001, ms(30), &pol), 0b001);
        assert!(!b.demoted());
        // Dropping the level does not reset the bucket: it drains at the leak
        // rate only, so claiming again soon is demoted soon.
        assert_eq!(b.observe(&mut h, 0b100, ms(31), &pol), 0b100);
        assert_eq!(b.observe(&mut h, 0b001, ms(32), &pol), 0b001);
        assert_eq!(b.observe(&mut h, 0b001, ms(43), &pol), 0b010);
        // At the least important level the demoted bit is dropped.
        let mut last = Budget::new(p(7));
        let mut lh = Holder::default();
        assert_eq!(last.observe(&mut lh, 0x80, ms(0), &pol), 0x80);
        assert_eq!(last.observe(&mut lh, 0x80, ms(20), &pol), 0);
    }

    #[test]
    fn brief_gaps_do_not_buy_back_the_top_level() {
        // The loophole of a plain hold bound: hold 9 ms, clear for 1 ms, repeat.
        // The bucket (50 % share) charges 9 and leaks 5 per cycle: demoted.
        let pol = budget(10, 50);
        let t0 = Instant::now();
        let mut b = Budget::new(p(0));
        let mut h = Holder::default();
        let mut demoted_at = None;
        for cycle in 0..20u64 {
            let start = t0 + Duration::from_millis(cycle * 10);
            b.observe(&mut h, 1, start, &pol);
            if b.observe(&mut h, 1, start + Duration::from_millis(9), &pol) == 0b10 {
                demoted_at = Some(cycle);
                break;
            }
            b.observe(&mut h, 0, start + Duration::from_millis(9), &pol);
        }
        assert!(demoted_at.is_some(), "never demoted: {b:?}");
    }

    #[test]
    fn a_share_of_100_or_no_burst_is_no_budget() {
        let t0 = Instant::now();
        for pol in [
            budget(10, 100),
            Policy {
                hold: None,
                ..Policy::default()
            },
        ] {
            let mut b = Budget::new(p(0));
            let mut h = Holder::default();
            for i in 0..100 {
                assert_eq!(b.observe(&mut h, 1, t0 + Duration::from_millis(i), &pol), 1);
            }
            assert!(!b.demoted());
        }
        let err = Policy::parse("hold-share 101").unwrap_err();
        assert!(err.message.contains("percentage"), "{err}");
        assert_eq!(Policy::parse("hold-share 0").unwrap().hold_share, 0);
    }

    #[test]
    fn a_share_of_100_is_no_budget_for_several_registrations_either() {
        // Found by tests/properties.rs: two registrations of one bucket
        // holding at once charged it twice as fast as it leaked at 100 %,
        // and were demoted after `hold`, though "100" turns the budget off.
        let pol = budget(10, 100);
        let t0 = Instant::now();
        let mut b = Budget::new(p(0));
        let (mut x, mut y) = (Holder::default(), Holder::default());
        for i in 0..100 {
            let now = t0 + Duration::from_millis(i);
            assert_eq!(b.observe(&mut x, 1, now, &pol), 1, "x at {i} ms");
            assert_eq!(b.observe(&mut y, 1, now, &pol), 1, "y at {i} ms");
        }
        assert!(!b.demoted());
        assert_eq!(b.fill_percent(&pol), 0);
    }

    #[test]
    fn registrations_of_one_bucket_share_it() {
        // A new registration does not start from empty: the bucket the old
        // one filled is the one it charges.
        let pol = budget(10, 50);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut b = Budget::new(p(0));
        let (mut old, mut new) = (Holder::default(), Holder::default());
        b.observe(&mut old, 1, ms(0), &pol);
        b.observe(&mut old, 1, ms(15), &pol);
        // The old one leaves; a new one claims at once and is demoted when
        // the shared bucket is full (5 ms later at half speed), not 20 ms later.
        assert_eq!(b.observe(&mut new, 1, ms(15), &pol), 1);
        assert_eq!(b.observe(&mut new, 1, ms(20), &pol), 0b10);
        // Two holding at once fill it three times as fast as one (2 - 0.5
        // per ms): full after 7 ms rather than 20.
        let mut b = Budget::new(p(0));
        let (mut x, mut y) = (Holder::default(), Holder::default());
        b.observe(&mut x, 1, ms(0), &pol);
        b.observe(&mut y, 1, ms(0), &pol);
        assert_eq!(b.observe(&mut x, 1, ms(6), &pol), 1);
        assert_eq!(b.observe(&mut y, 1, ms(6), &pol), 1);
        assert_eq!(b.observe(&mut x, 1, ms(7), &pol), 1);
        assert_eq!(b.observe(&mut y, 1, ms(7), &pol), 0b10);
        // An unused bucket drains and may then be forgotten.
        assert!(!b.drained(ms(20), &pol));
        assert!(b.drained(ms(40), &pol));
    }
}
