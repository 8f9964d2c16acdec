//! Sv39 page-table entries and addresses.
//!
//! A virtual address has three 9-bit page-number fields (level 2 indexes the
//! root table) above a 12-bit offset; bits 63..39 must copy bit 38. An entry
//! holds a 44-bit physical page number and ten flag bits; an entry with any of
//! R, W, X set is a leaf, otherwise it points at the next level's table.

/// Bytes in a page.
pub const PAGE_SIZE: usize = 4096;
/// Entries in one page table.
pub const ENTRIES: usize = 512;

/// Entry flag: valid.
pub const V: u64 = 1 << 0;
/// Entry flag: readable.
pub const R: u64 = 1 << 1;
/// Entry flag: writable.
pub const W: u64 = 1 << 2;
/// Entry flag: executable.
pub const X: u64 = 1 << 3;
/// Entry flag: accessible from user mode.
pub const U: u64 = 1 << 4;
/// Entry flag: global (present in every address space).
pub const G: u64 = 1 << 5;
/// Entry flag: accessed. Set up front: QEMU would otherwise fault on first use.
pub const A: u64 = 1 << 6;
/// Entry flag: dirty. Set up front, as `A`.
pub const D: u64 = 1 << 7;

const FLAG_MASK: u64 = 0x3ff;
const PPN_MASK: u64 = (1 << 44) - 1;

/// One page-table entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[repr(transparent)]
pub struct Pte(pub u64);

impl Pte {
    /// An entry pointing at physical page `ppn` with `flags` (V is added).
    pub const fn new(ppn: usize, flags: u64) -> Pte {
        Pte((((ppn as u64) & PPN_MASK) << 10) | (flags & FLAG_MASK) | V)
    }

    /// A leaf entry with `A` and `D` preset.
    pub const fn leaf(ppn: usize, flags: u64) -> Pte {
        Pte::new(ppn, flags | A | D)
    }

    /// The physical page number.
    pub const fn ppn(self) -> usize {
        ((self.0 >> 10) & PPN_MASK) as usize
    }

    /// The flag bits.
    pub const fn flags(self) -> u64 {
        self.0 & FLAG_MASK
    }

    /// Whether the entry is valid.
    pub const fn is_valid(self) -> bool {
        self.0 & V != 0
    }

    /// Whether the entry is a leaf (maps memory) rather than a pointer.
    pub const fn is_leaf(self) -> bool {
        self.is_valid() && self.0 & (R | W | X) != 0
    }

    /// Whether a user-mode access (or a kernel access on the user's behalf) of
    /// this kind may go through this leaf.
    pub const fn allows_user(self, write: bool) -> bool {
        let need = if write { V | U | W } else { V | U | R };
        self.is_leaf() && self.0 & need == need
    }
}

/// The three table indexes of a virtual address, root level first.
pub const fn indexes(va: usize) -> [usize; 3] {
    [(va >> 30) & 0x1ff, (va >> 21) & 0x1ff, (va >> 12) & 0x1ff]
}

/// Whether `va` is canonical for Sv39 (bits 63..39 equal bit 38).
pub const fn is_canonical(va: usize) -> bool {
    let top = (va as isize) >> 38;
    top == 0 || top == -1
}

/// The `satp` value selecting Sv39 with root table `root_ppn`.
pub const fn satp(root_ppn: usize) -> usize {
    (8 << 60) | (root_ppn & PPN_MASK as usize)
}

/// `addr` rounded down to a page boundary.
pub const fn page_floor(addr: usize) -> usize {
    addr & !(PAGE_SIZE - 1)
}

/// `addr` rounded up to a page boundary, or `None` on overflow.
pub const fn page_ceil(addr: usize) -> Option<usize> {
    match addr.checked_add(PAGE_SIZE - 1) {
        Some(a) => Some(page_floor(a)),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trip() {
        let e = Pte::leaf(0x8_0123, R | W | U);
        assert_eq!(e.ppn(), 0x8_0123);
        assert!(e.is_valid() && e.is_leaf());
        assert_eq!(e.flags(), V | R | W | U | A | D);
        assert!(e.allows_user(true) && e.allows_user(false));
        let ro = Pte::leaf(1, R | U);
        assert!(ro.allows_user(false) && !ro.allows_user(true));
        let kernel = Pte::leaf(1, R | W | X);
        assert!(!kernel.allows_user(false));
        let table = Pte::new(7, 0);
        assert!(table.is_valid() && !table.is_leaf() && !table.allows_user(false));
        assert!(!Pte::default().is_valid());
        // A physical page number wider than 44 bits cannot leak into the flags.
        assert_eq!(Pte::new(usize::MAX, 0).flags(), V);
    }

    #[test]
    fn address_split() {
        assert_eq!(indexes(0x4000_1000), [1, 0, 1]);
        assert_eq!(indexes(0x8020_0000), [2, 1, 0]);
        assert_eq!(indexes(0x7fff_ffff), [1, 511, 511]);
        assert!(is_canonical(0x3f_ffff_ffff) && is_canonical(usize::MAX));
        assert!(!is_canonical(0x7f_ffff_ffff));
        assert!(!is_canonical(0x80_0000_0000));
        assert_eq!(satp(0x80200) >> 60, 8);
        assert_eq!(page_ceil(1), Some(PAGE_SIZE));
        assert_eq!(page_ceil(usize::MAX), None);
        assert_eq!(page_floor(0x1fff), 0x1000);
    }
}
