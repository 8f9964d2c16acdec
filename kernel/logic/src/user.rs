//! User pointers are allegations.
//!
//! A system call's pointer and length arrive in registers from a process that
//! may be buggy or hostile. [`UserRange::new`] is the first check: the range must
//! not wrap and must lie inside the user half of the layout
//! ([`ss_abi::uspace`]). The kernel then checks every page of it against the
//! process's own page table (mapped, `U`, readable or writable as needed) before
//! it copies a byte, so no value of a pointer can make the kernel fault.

use ss_abi::syscall::SysError;
use ss_abi::uspace::{USER_BASE, USER_END};

use crate::sv39::{page_floor, PAGE_SIZE};

/// A checked, non-wrapping range of user addresses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UserRange {
    start: usize,
    len: usize,
}

impl UserRange {
    /// Checks `addr..addr + len`. An empty range is always fine (nothing will be
    /// touched); any other must lie within `[USER_BASE, USER_END)`.
    ///
    /// # Errors
    /// [`SysError::BadAddress`].
    pub fn new(addr: usize, len: usize) -> Result<UserRange, SysError> {
        if len == 0 {
            return Ok(UserRange { start: addr, len });
        }
        let end = addr.checked_add(len).ok_or(SysError::BadAddress)?;
        if addr < USER_BASE || end > USER_END {
            return Err(SysError::BadAddress);
        }
        Ok(UserRange { start: addr, len })
    }

    /// Checks a range holding one `T`, which must also be aligned for `T`.
    ///
    /// # Errors
    /// [`SysError::BadAddress`].
    pub fn for_value<T>(addr: usize) -> Result<UserRange, SysError> {
        if addr % core::mem::align_of::<T>() != 0 {
            return Err(SysError::BadAddress);
        }
        UserRange::new(addr, core::mem::size_of::<T>())
    }

    /// The first address.
    pub fn start(self) -> usize {
        self.start
    }

    /// The length in bytes.
    pub fn len(self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(self) -> bool {
        self.len == 0
    }

    /// The pieces of the range, one per page: `(page address, offset in the
    /// page, length)`.
    pub fn pages(self) -> impl Iterator<Item = (usize, usize, usize)> {
        let mut at = self.start;
        let end = self.start + self.len;
        core::iter::from_fn(move || {
            if at >= end {
                return None;
            }
            let page = page_floor(at);
            let offset = at - page;
            let n = (PAGE_SIZE - offset).min(end - at);
            at += n;
            Some((page, offset, n))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn hostile_ranges_are_refused() {
        let bad = [
            (0, 1),
            (USER_BASE - 1, 1),
            (USER_BASE, USER_END - USER_BASE + 1),
            (USER_END, 1),
            (0x8020_0000, 8),
            (usize::MAX, 2),
            (USER_BASE, usize::MAX),
            (usize::MAX - 3, 8),
        ];
        for (a, l) in bad {
            assert_eq!(
                UserRange::new(a, l),
                Err(SysError::BadAddress),
                "{a:#x}+{l}"
            );
        }
        assert!(UserRange::new(0, 0).is_ok());
        assert!(UserRange::new(USER_END - 1, 1).is_ok());
        assert_eq!(
            UserRange::for_value::<u64>(USER_BASE + 4),
            Err(SysError::BadAddress)
        );
        assert!(UserRange::for_value::<u64>(USER_BASE + 8).is_ok());
    }

    #[test]
    fn pages_cover_the_range_exactly() {
        let r = UserRange::new(USER_BASE + 0xff0, 0x2020).unwrap();
        let p: Vec<_> = r.pages().collect();
        assert_eq!(
            p,
            [
                (USER_BASE, 0xff0, 0x10),
                (USER_BASE + 0x1000, 0, 0x1000),
                (USER_BASE + 0x2000, 0, 0x1000),
                (USER_BASE + 0x3000, 0, 0x10),
            ]
        );
        assert_eq!(p.iter().map(|x| x.2).sum::<usize>(), 0x2020);
        assert_eq!(UserRange::new(0, 0).unwrap().pages().count(), 0);
    }
}
