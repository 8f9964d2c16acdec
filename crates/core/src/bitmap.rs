//! The priority bitmap: bit *p* set means "something is ready at priority *p*".
//!
//! The bitmap is what makes SharedScheduler's scheduling O(1): the most important
//! non-empty ready queue is the lowest set bit (one `trailing_zeros`), and "is
//! anything more important than *p* ready?" is one mask and compare. The original
//! implementation scanned 4096 entries linearly instead.
//!
//! [`PrioBitmap`] is a plain value (a snapshot); the executor keeps the live one in
//! an atomic that only the holder of the ready-queue lock writes and that anyone —
//! another CPU, the kernel's scan, a shared page — may read without a lock.

use core::fmt;

use ss_abi::{Priority, MAX_LEVELS};

/// A set of priority levels, one bit each (bit 0 = priority 0 = most important).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct PrioBitmap(u64);

impl PrioBitmap {
    /// No level set.
    pub const EMPTY: PrioBitmap = PrioBitmap(0);

    /// The bitmap with exactly these raw bits.
    #[inline]
    pub const fn from_bits(bits: u64) -> Self {
        PrioBitmap(bits)
    }

    /// The raw bits.
    #[inline]
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether no level is set.
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether `p` is set.
    #[inline]
    pub const fn contains(self, p: Priority) -> bool {
        self.0 & p.bit() != 0
    }

    /// This bitmap with `p` set.
    #[inline]
    #[must_use]
    pub const fn with(self, p: Priority) -> Self {
        PrioBitmap(self.0 | p.bit())
    }

    /// This bitmap with `p` cleared.
    #[inline]
    #[must_use]
    pub const fn without(self, p: Priority) -> Self {
        PrioBitmap(self.0 & !p.bit())
    }

    /// The most important level set, in O(1).
    #[inline]
    pub fn most_important(self) -> Option<Priority> {
        if self.0 == 0 {
            None
        } else {
            // `trailing_zeros` of a non-zero u64 is < 64 = MAX_LEVELS.
            Priority::new(self.0.trailing_zeros() as u8).ok()
        }
    }

    /// Whether some level strictly more important than `p` is set, in O(1).
    #[inline]
    pub const fn has_more_important_than(self, p: Priority) -> bool {
        self.0 & p.more_important_mask() != 0
    }

    /// The levels set, most important first.
    pub fn iter(self) -> impl Iterator<Item = Priority> {
        (0..MAX_LEVELS).filter_map(move |l| {
            let p = Priority::new(l).ok()?;
            self.contains(p).then_some(p)
        })
    }
}

impl fmt::Debug for PrioBitmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Binary for PrioBitmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Binary::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn p(l: u8) -> Priority {
        Priority::new(l).unwrap()
    }

    #[test]
    fn most_important_is_lowest_bit() {
        assert_eq!(PrioBitmap::EMPTY.most_important(), None);
        let b = PrioBitmap::EMPTY.with(p(5)).with(p(2)).with(p(63));
        assert_eq!(b.most_important(), Some(p(2)));
        assert_eq!(b.without(p(2)).most_important(), Some(p(5)));
        assert!(b.has_more_important_than(p(3)));
        assert!(!b.has_more_important_than(p(2)));
        assert!(!b.has_more_important_than(p(0)));
        let levels: Vec<u8> = b.iter().map(|p| p.level()).collect();
        assert_eq!(levels, [2, 5, 63]);
        assert_eq!(format!("{b:?}"), "{P2, P5, P63}");
    }
}
