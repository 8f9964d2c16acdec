//! Priorities and the number of priority levels.

use core::fmt;

/// The most priority levels any executor supports: one bit each in a `u64` bitmap.
pub const MAX_LEVELS: u8 = 64;

/// A coroutine's priority: **0 is the most important**.
///
/// `Priority` deliberately has no `Ord`: "greater" is ambiguous when smaller
/// numbers win. Compare with [`Priority::is_more_important_than`], whose name says
/// which end wins.
///
/// A `Priority` only ever holds a value below [`MAX_LEVELS`]; whether it fits a
/// particular executor (which may have fewer levels) is checked with
/// [`Levels::check`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct Priority(u8);

impl Priority {
    /// Priority 0, the most important there is.
    pub const MOST_IMPORTANT: Priority = Priority(0);

    /// The priority at `level` (0 = most important).
    ///
    /// # Errors
    /// [`InvalidPriority`] when `level >= MAX_LEVELS`.
    #[inline]
    pub const fn new(level: u8) -> Result<Priority, InvalidPriority> {
        if level < MAX_LEVELS {
            Ok(Priority(level))
        } else {
            Err(InvalidPriority {
                level: level as u64,
                levels: MAX_LEVELS,
            })
        }
    }

    /// The level number, 0 = most important.
    #[inline]
    pub const fn level(self) -> u8 {
        self.0
    }

    /// Whether `self` should run before `other`.
    #[inline]
    pub const fn is_more_important_than(self, other: Priority) -> bool {
        self.0 < other.0
    }

    /// This priority's bit in a priority bitmap.
    #[inline]
    pub const fn bit(self) -> u64 {
        1u64 << self.0
    }

    /// The bits of every priority strictly more important than `self`.
    #[inline]
    pub const fn more_important_mask(self) -> u64 {
        self.bit() - 1
    }
}

impl fmt::Debug for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P{}", self.0)
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A priority level number that does not fit the executor it was meant for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct InvalidPriority {
    /// The level that was asked for.
    pub level: u64,
    /// How many levels the executor has (valid levels are `0..levels`).
    pub levels: u8,
}

impl core::error::Error for InvalidPriority {}

impl fmt::Display for InvalidPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "priority {} is out of range: this executor has {} levels, so use 0 (most important) to {}",
            self.level,
            self.levels,
            self.levels - 1
        )
    }
}

impl TryFrom<u64> for Priority {
    type Error = InvalidPriority;

    /// Converts a raw number (a system call argument, a wire field) to a priority.
    fn try_from(raw: u64) -> Result<Priority, InvalidPriority> {
        match u8::try_from(raw) {
            Ok(level) => Priority::new(level),
            Err(_) => Err(InvalidPriority {
                level: raw,
                levels: MAX_LEVELS,
            }),
        }
    }
}

/// How many priority levels an executor has: 1 to [`MAX_LEVELS`], 8 by default.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(transparent)]
pub struct Levels(u8);

impl Levels {
    /// The paper's eight levels.
    pub const DEFAULT: Levels = Levels(8);
    /// The most levels supported.
    pub const MAX: Levels = Levels(MAX_LEVELS);

    /// `count` levels.
    ///
    /// # Errors
    /// [`InvalidLevels`] unless `1 <= count <= MAX_LEVELS`.
    pub const fn new(count: u8) -> Result<Levels, InvalidLevels> {
        if count >= 1 && count <= MAX_LEVELS {
            Ok(Levels(count))
        } else {
            Err(InvalidLevels(count))
        }
    }

    /// The number of levels.
    #[inline]
    pub const fn count(self) -> u8 {
        self.0
    }

    /// The least important priority these levels have.
    #[inline]
    pub const fn least_important(self) -> Priority {
        Priority(self.0 - 1)
    }

    /// The bitmap bits these levels may set.
    #[inline]
    pub const fn mask(self) -> u64 {
        if self.0 == MAX_LEVELS {
            u64::MAX
        } else {
            (1u64 << self.0) - 1
        }
    }

    /// Checks that `priority` is one of these levels.
    ///
    /// # Errors
    /// [`InvalidPriority`] naming the valid range.
    #[inline]
    pub const fn check(self, priority: Priority) -> Result<Priority, InvalidPriority> {
        if priority.0 < self.0 {
            Ok(priority)
        } else {
            Err(InvalidPriority {
                level: priority.0 as u64,
                levels: self.0,
            })
        }
    }

    /// The priority at `level`, checked against these levels.
    ///
    /// # Errors
    /// [`InvalidPriority`] naming the valid range.
    pub fn priority(self, level: u64) -> Result<Priority, InvalidPriority> {
        match u8::try_from(level) {
            Ok(l) if l < self.0 => Ok(Priority(l)),
            _ => Err(InvalidPriority {
                level,
                levels: self.0,
            }),
        }
    }
}

impl Default for Levels {
    fn default() -> Self {
        Levels::DEFAULT
    }
}

/// A level count outside `1..=MAX_LEVELS`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct InvalidLevels(pub u8);

impl core::error::Error for InvalidLevels {}

impl fmt::Display for InvalidLevels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} priority levels is not supported; choose 1 to {MAX_LEVELS}",
            self.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_most_important() {
        let hi = Priority::new(0).unwrap();
        let lo = Priority::new(7).unwrap();
        assert!(hi.is_more_important_than(lo));
        assert!(!lo.is_more_important_than(hi));
        assert!(!hi.is_more_important_than(hi));
        assert_eq!(lo.more_important_mask(), 0x7f);
        assert_eq!(hi.more_important_mask(), 0);
    }

    #[test]
    fn ranges_are_checked() {
        assert!(Priority::new(63).is_ok());
        assert!(Priority::new(64).is_err());
        assert!(Priority::try_from(1u64 << 40).is_err());
        let l = Levels::DEFAULT;
        assert_eq!(l.count(), 8);
        assert!(l.check(Priority::new(7).unwrap()).is_ok());
        assert_eq!(
            l.check(Priority::new(8).unwrap()),
            Err(InvalidPriority {
                level: 8,
                levels: 8
            })
        );
        assert!(l.priority(u64::MAX).is_err());
        assert!(Levels::new(0).is_err());
        assert!(Levels::new(65).is_err());
        assert_eq!(Levels::MAX.mask(), u64::MAX);
        assert_eq!(Levels::new(1).unwrap().mask(), 1);
        assert_eq!(Levels::DEFAULT.least_important().level(), 7);
    }

    #[test]
    fn error_names_the_fix() {
        extern crate alloc;
        use alloc::string::ToString;
        let e = Levels::DEFAULT.priority(9).unwrap_err().to_string();
        assert!(e.contains("0 (most important) to 7"), "{e}");
    }
}
