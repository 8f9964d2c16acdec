//! The completion queue of asynchronous system calls, and the emulated
//! user-level interrupt that announces it (RISC-V kernel, paper §3.2).
//!
//! Each process has one page at
//! [`COMPLETION_PAGE_VA`](crate::uspace::COMPLETION_PAGE_VA), mapped
//! read-write: a ring of [`CQ_ENTRIES`] [`Completion`]s. The kernel is the only
//! producer (it keeps its own copy of `tail` and writes entries and `tail`);
//! the process is the only consumer (it advances `head`). Everything in the
//! page is writable by the process, so the kernel trusts nothing it reads
//! there: [`free_slots`] turns a `head` that is ahead of the kernel's tail or
//! more than a ring behind it into "the ring is empty" (the kernel then rewrites
//! `head`), and the kernel never reads an entry back.
//!
//! Offsets are fixed (`#[repr(C)]`); fields are accessed with atomic loads and
//! stores of their width on the mapped memory.

/// `magic` of the page: `b"SSCQ"` little-endian.
pub const CQ_MAGIC: u32 = u32::from_le_bytes(*b"SSCQ");
/// Layout version (2: entries name their call, [`Completion::op`]).
pub const CQ_VERSION: u32 = 2;
/// Entries in the ring.
pub const CQ_ENTRIES: usize = 64;

/// One finished asynchronous call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Completion {
    /// The coroutine id the call was issued with.
    pub cid: u64,
    /// The call's result: a byte count (or 0), or `-(SysError)`.
    pub result: i64,
    /// The kernel's `time` (10 MHz) when the call finished, to measure delivery.
    pub stamp: u64,
    /// The call's operation id: what its submission returned (ids rise with
    /// every call a process makes, from 1). A coroutine that abandoned a call
    /// and made another tells the first one's result from the second's by it.
    pub op: u64,
}

/// The page's header, followed by the ring at [`CQ_RING_OFFSET`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CompletionHeader {
    /// [`CQ_MAGIC`].
    pub magic: u32,
    /// [`CQ_VERSION`].
    pub version: u32,
    /// Entries consumed (free-running), written by the process.
    pub head: u64,
    /// Entries produced (free-running), written by the kernel.
    pub tail: u64,
    /// Upcalls the kernel delivered (entries into the handler).
    pub upcalls: u64,
    /// Inter-processor interrupts the kernel sent to deliver one at once.
    pub ipis: u64,
    /// Times the kernel found `head` corrupt and reset it.
    pub resets: u64,
}

/// Byte offset of [`CompletionHeader::head`].
pub const CQ_HEAD_OFFSET: usize = core::mem::offset_of!(CompletionHeader, head);
/// Byte offset of [`CompletionHeader::tail`].
pub const CQ_TAIL_OFFSET: usize = core::mem::offset_of!(CompletionHeader, tail);
/// Byte offset of [`CompletionHeader::upcalls`].
pub const CQ_UPCALLS_OFFSET: usize = core::mem::offset_of!(CompletionHeader, upcalls);
/// Byte offset of [`CompletionHeader::ipis`].
pub const CQ_IPIS_OFFSET: usize = core::mem::offset_of!(CompletionHeader, ipis);
/// Byte offset of [`CompletionHeader::resets`].
pub const CQ_RESETS_OFFSET: usize = core::mem::offset_of!(CompletionHeader, resets);
/// Byte offset of the ring's first [`Completion`].
pub const CQ_RING_OFFSET: usize = 64;

const _: () = assert!(core::mem::size_of::<CompletionHeader>() <= CQ_RING_OFFSET);
const _: () = assert!(CQ_RING_OFFSET + CQ_ENTRIES * core::mem::size_of::<Completion>() <= 4096);

/// Byte offset of the entry for free-running index `index`.
pub const fn entry_offset(index: u64) -> usize {
    CQ_RING_OFFSET + (index % CQ_ENTRIES as u64) as usize * core::mem::size_of::<Completion>()
}

/// The producer's view of the ring: how many entries it may write now, given
/// its own `tail` and the `head` read from the (untrusted) page. `Err` with
/// the whole ring free when `head` is impossible (ahead of `tail` or more than
/// a ring behind): the producer treats the ring as empty and rewrites `head`
/// to `tail`.
pub fn free_slots(tail: u64, head: u64) -> Result<usize, usize> {
    let used = tail.wrapping_sub(head);
    if used > CQ_ENTRIES as u64 {
        Err(CQ_ENTRIES)
    } else {
        Ok(CQ_ENTRIES - used as usize)
    }
}

/// The consumer's view: how many entries from `head` to read, given the
/// (process-writable, so untrusted) `tail`. `None` when the pair is
/// impossible; the consumer then skips to `tail`.
pub fn ready_entries(head: u64, tail: u64) -> Option<usize> {
    let n = tail.wrapping_sub(head);
    (n <= CQ_ENTRIES as u64).then_some(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layout_is_fixed() {
        assert_eq!(size_of::<Completion>(), 32);
        assert_eq!(offset_of!(Completion, result), 8);
        assert_eq!(offset_of!(Completion, op), 24);
        assert_eq!(CQ_HEAD_OFFSET, 8);
        assert_eq!(CQ_TAIL_OFFSET, 16);
        assert_eq!(entry_offset(0), 64);
        assert_eq!(entry_offset(CQ_ENTRIES as u64 + 1), 96);
        assert_eq!(entry_offset(u64::MAX), 64 + 63 * 32);
        assert_eq!(&CQ_MAGIC.to_le_bytes(), b"SSCQ");
    }

    #[test]
    fn producer_never_trusts_head() {
        assert_eq!(free_slots(0, 0), Ok(CQ_ENTRIES));
        assert_eq!(free_slots(10, 4), Ok(CQ_ENTRIES - 6));
        assert_eq!(free_slots(64, 0), Ok(0));
        // Wrapped counters.
        assert_eq!(free_slots(3, u64::MAX - 1), Ok(CQ_ENTRIES - 5));
        // Head ahead of tail, or too far behind: garbage.
        assert_eq!(free_slots(5, 6), Err(CQ_ENTRIES));
        assert_eq!(free_slots(100, 0), Err(CQ_ENTRIES));
        assert_eq!(free_slots(0, 0xdead_beef), Err(CQ_ENTRIES));
    }

    #[test]
    fn consumer_bounds_what_it_reads() {
        assert_eq!(ready_entries(0, 0), Some(0));
        assert_eq!(ready_entries(2, 66), Some(64));
        assert_eq!(ready_entries(2, 67), None);
        assert_eq!(ready_entries(7, 6), None);
        assert_eq!(ready_entries(u64::MAX, 1), Some(2));
    }
}
