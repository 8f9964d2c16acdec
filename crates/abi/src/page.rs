//! Layouts of the pages shared between processes and the kernel (or, on Linux,
//! the coordinator process that plays the kernel's part).
//!
//! Two kinds of page carry the global cooperative scheduling of paper §2.4:
//!
//! - a [`ProcessPage`] per process, written **only** by that process: its
//!   executor's ready bitmap. The kernel or coordinator reads it and must treat
//!   every field as untrusted (another process may be buggy or hostile). The
//!   one exception: the RISC-V kernel writes back, in three appended words,
//!   which bitmap of the process it folded in (never reading them: a process
//!   that overwrites them misleads only itself);
//! - one [`GlobalPage`], written **only** by the kernel or coordinator and mapped
//!   read-only into every process: the global bitmap, folded from every process
//!   page and the kernel's own executor.
//!
//! Fields are plain little-endian integers at fixed offsets (`#[repr(C)]`), read
//! and written with atomic loads and stores of the same width on the mapped memory.
//! Writers bump `seq` after each update so readers can tell a change, and the
//! `magic`/`version` pair lets a reader refuse a page it does not understand.

/// `magic` of a [`ProcessPage`]: `b"SSPP"` little-endian.
pub const PROCESS_PAGE_MAGIC: u32 = u32::from_le_bytes(*b"SSPP");
/// `magic` of a [`GlobalPage`]: `b"SSGP"` little-endian.
pub const GLOBAL_PAGE_MAGIC: u32 = u32::from_le_bytes(*b"SSGP");
/// Layout version of both pages.
///
/// Within a version, fields are only ever **appended**, and a page is zero-filled
/// when created, so a field a writer does not know reads as 0: every appended
/// field gives 0 the meaning "not reported". [`ProcessPage::yields`] and the
/// three `folded*` words were appended this way; [`PROCESS_PAGE_MIN_LEN`] is the length of the first
/// version-1 layout, the least a reader may accept.
pub const PAGE_VERSION: u32 = 1;

/// Bytes of a version-1 [`ProcessPage`] before `yields` was appended (magic,
/// version, seq, ready). A reader maps whole pages, so the appended fields of a
/// page this short read as 0.
pub const PROCESS_PAGE_MIN_LEN: usize = 24;

/// One process's published scheduling state; written by that process alone,
/// but for the three `folded*` words, which the RISC-V kernel writes (the
/// Linux coordinator leaves them 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ProcessPage {
    /// [`PROCESS_PAGE_MAGIC`].
    pub magic: u32,
    /// [`PAGE_VERSION`].
    pub version: u32,
    /// Incremented by the process after every change of `ready`.
    pub seq: u64,
    /// Bit *p* set: the process has a coroutine ready at priority *p*. Untrusted:
    /// readers mask it to the levels their policy allows.
    pub ready: u64,
    /// How many times the process's workers gave up the CPU because something
    /// more important was ready elsewhere; a free-running counter (it wraps), 0
    /// when not reported. Appended to version 1: readers take differences
    /// between two reads and treat a decrease as a restart, never as data.
    pub yields: u64,
    /// Written by the kernel alone: a sequence lock over `folded` and
    /// `folded_at` (odd while the kernel folds this process in and writes
    /// them; 0: never written). Appended to version 1.
    pub folded_seq: u64,
    /// Written by the kernel alone: the bitmap of this process that the
    /// kernel folded into the global page (`ready` as the kernel last read
    /// it, masked to the levels). With it a process knows exactly which of
    /// the global bits are its own; `ready` may have moved on since.
    pub folded: u64,
    /// Written by the kernel alone: the global page's `seq` from which
    /// `folded` is part of the global bitmaps. A reader of the global page at
    /// sequence `s` may use `folded` if `folded_at <= s` (and the sequence
    /// lock held still); with a later `folded_at` it read the page too early.
    pub folded_at: u64,
}

/// Byte offset of [`ProcessPage::folded_seq`].
pub const PROCESS_PAGE_FOLDED_SEQ_OFFSET: usize = core::mem::offset_of!(ProcessPage, folded_seq);
/// Byte offset of [`ProcessPage::folded`].
pub const PROCESS_PAGE_FOLDED_OFFSET: usize = core::mem::offset_of!(ProcessPage, folded);
/// Byte offset of [`ProcessPage::folded_at`].
pub const PROCESS_PAGE_FOLDED_AT_OFFSET: usize = core::mem::offset_of!(ProcessPage, folded_at);

/// The global priority state; written by the kernel or coordinator alone and
/// mapped read-only into every process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct GlobalPage {
    /// [`GLOBAL_PAGE_MAGIC`].
    pub magic: u32,
    /// [`PAGE_VERSION`].
    pub version: u32,
    /// Incremented after every change of the bitmaps below; a futex word for
    /// processes that park until the global state changes. The Linux
    /// coordinator increments it twice per change — odd while it writes the
    /// words below, even after — so a reader can detect a torn read (a
    /// sequence lock); a futex waiter compares its low 32 bits.
    pub seq: u64,
    /// Bit *p* set: some registered process has a coroutine ready at *p*. (The
    /// RISC-V kernel's own coroutines are not a source; `docs/kernel.md`,
    /// "Scheduling", says why.)
    pub global: u64,
    /// Bit *p* set: at least two processes have a coroutine ready at *p*. With
    /// `global` this answers "is something more important ready *elsewhere*?" in
    /// O(1) for any process that knows its own bitmap.
    pub multi: u64,
}

/// Byte offset of [`GlobalPage::seq`], the futex word.
pub const GLOBAL_PAGE_SEQ_OFFSET: usize = core::mem::offset_of!(GlobalPage, seq);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn layouts_are_fixed() {
        assert_eq!(size_of::<ProcessPage>(), 56);
        assert_eq!(offset_of!(ProcessPage, ready), 16);
        assert_eq!(offset_of!(ProcessPage, yields), PROCESS_PAGE_MIN_LEN);
        assert_eq!(PROCESS_PAGE_FOLDED_SEQ_OFFSET, 32);
        assert_eq!(PROCESS_PAGE_FOLDED_OFFSET, 40);
        assert_eq!(PROCESS_PAGE_FOLDED_AT_OFFSET, 48);
        assert_eq!(size_of::<GlobalPage>(), 32);
        assert_eq!(GLOBAL_PAGE_SEQ_OFFSET, 8);
        assert_eq!(offset_of!(GlobalPage, global), 16);
        assert_eq!(offset_of!(GlobalPage, multi), 24);
        assert_eq!(align_of::<GlobalPage>(), 8);
        assert_eq!(&PROCESS_PAGE_MAGIC.to_le_bytes(), b"SSPP");
        assert_eq!(&GLOBAL_PAGE_MAGIC.to_le_bytes(), b"SSGP");
    }
}
