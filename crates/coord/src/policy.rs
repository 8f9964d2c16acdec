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
//! 2. **Top-level hold bound.** Once a scan finds the process holding its
//!    ceiling level *c* (level 0 for an uncapped process) and every later scan
//!    finds it still there for `hold` in total, the process is **demoted**: its
//!    level-*c* bit is reported at *c* + 1 (dropped if *c* is the least important
//!    level). The demotion lasts until a scan finds level *c* clear in its page;
//!    then the clock starts afresh the next time it claims *c*. Scans happen on
//!    every notification and every tick, so "continuously" means "at every scan".
//!
//! What this does not stop (next steps, `docs/coordinator.md`): a process that
//! clears level *c* exactly at some scans restarts its clock each time; a
//! leaky-bucket budget would bound its share instead.
//!
//! [`GlobalBitmap::add_source_capped`]: ss_core::global::GlobalBitmap::add_source_capped

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ss_abi::{Levels, Priority};

/// Ceiling rules and the hold bound.
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
    /// How long a process may hold its ceiling level before it is demoted;
    /// `None`: forever (default 100 ms).
    pub hold: Option<Duration>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            levels: Levels::DEFAULT,
            default_ceiling: Priority::MOST_IMPORTANT,
            uids: Vec::new(),
            programs: Vec::new(),
            hold: Some(Duration::from_millis(100)),
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

/// One source's hold-bound state.
#[derive(Clone, Debug)]
pub struct Hold {
    ceiling: Priority,
    since: Option<Instant>,
    demoted: bool,
}

impl Hold {
    /// The state of a source with this ceiling, holding nothing.
    pub fn new(ceiling: Priority) -> Hold {
        Hold {
            ceiling,
            since: None,
            demoted: false,
        }
    }

    /// Whether the source is demoted now.
    pub fn demoted(&self) -> bool {
        self.demoted
    }

    /// Takes one scan's clamped bitmap at `now`; returns the bitmap to fold.
    pub fn observe(&mut self, clamped: u64, now: Instant, policy: &Policy) -> u64 {
        let c = self.ceiling;
        if clamped & c.bit() == 0 {
            self.since = None;
            self.demoted = false;
            return clamped;
        }
        let since = *self.since.get_or_insert(now);
        if let Some(hold) = policy.hold {
            if now.saturating_duration_since(since) >= hold {
                self.demoted = true;
            }
        }
        if !self.demoted {
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
    /// hold-ms 100         # top-level hold bound; 0 = unbounded
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
                     `uid UID LEVEL` or `program NAME|PATH LEVEL`",
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

    #[test]
    fn holding_the_top_level_demotes_until_dropped() {
        let pol = Policy {
            hold: Some(Duration::from_millis(10)),
            ..Policy::default()
        };
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut h = Hold::new(p(0));
        assert_eq!(h.observe(0b101, ms(0), &pol), 0b101);
        assert_eq!(h.observe(0b101, ms(9), &pol), 0b101);
        assert_eq!(h.observe(0b101, ms(10), &pol), 0b110);
        assert!(h.demoted());
        assert_eq!(h.observe(0b001, ms(500), &pol), 0b010);
        // Dropping level 0 lifts the demotion and resets the clock.
        assert_eq!(h.observe(0b100, ms(501), &pol), 0b100);
        assert!(!h.demoted());
        assert_eq!(h.observe(0b1, ms(502), &pol), 0b1);
        assert_eq!(h.observe(0b1, ms(511), &pol), 0b1);
        assert_eq!(h.observe(0b1, ms(512), &pol), 0b10);
        // At the least important level the demoted bit is dropped.
        let mut last = Hold::new(p(7));
        assert_eq!(last.observe(0x80, ms(0), &pol), 0x80);
        assert_eq!(last.observe(0x80, ms(10), &pol), 0);
    }
}
