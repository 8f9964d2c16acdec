//! Typed access to the shared pages of [`ss_abi::page`], as mapped memory.
//!
//! | page | created by | mapped writable by | mapped read-only by |
//! |---|---|---|---|
//! | [`ProcessPage`] | each client | that client ([`ProcessPageWriter`]) | the coordinator ([`ProcessPageReader`]) |
//! | [`GlobalPage`] | the coordinator | the coordinator ([`GlobalPageWriter`]) | every client ([`GlobalPageReader`]) |
//!
//! Every field is read and written with an atomic operation of its own width on
//! the mapping; no Rust reference to a page struct ever exists, because another
//! process may change the memory at any time.
//!
//! ## The global page's `seq`: a sequence lock and a futex word
//!
//! The coordinator is the only writer. To publish it makes `seq` odd, stores
//! `global` and `multi`, then makes `seq` even again (two increments per
//! publish, `seq` last) and `FUTEX_WAKE`s the low 32 bits of `seq`. A reader
//! loads `seq`, both words, then `seq` again and retries if they differ or were
//! odd, so it never sees `global` of one publish beside `multi` of another. A
//! reader never blocks on the writer: after a bounded number of retries (the
//! coordinator was preempted mid-publish) it takes the words as they are —
//! every view is a scheduling hint, and the next check sees the settled state.

use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ss_abi::page::{
    GlobalPage, ProcessPage, GLOBAL_PAGE_MAGIC, GLOBAL_PAGE_SEQ_OFFSET, PAGE_VERSION,
    PROCESS_PAGE_MAGIC, PROCESS_PAGE_MIN_LEN,
};
use ss_core::global::GlobalView;
use ss_core::PrioBitmap;

use crate::sys::{self, Mapping};

/// The atomic `u32` at `offset` bytes into `map`.
///
/// # Safety
/// - `offset + 4 <= ` the mapping's length and `offset` is a multiple of 4;
/// - the memory is only ever accessed atomically by this process.
unsafe fn u32_at(map: &Mapping, offset: usize) -> &AtomicU32 {
    // SAFETY: the caller guarantees the word is inside the live mapping and
    // aligned (mappings are page-aligned); the mapping outlives the borrow.
    unsafe { AtomicU32::from_ptr(map.as_ptr().add(offset).cast()) }
}

/// The atomic `u64` at `offset` bytes into `map`.
///
/// # Safety
/// As [`u32_at`], with 8 bytes and 8-byte alignment.
unsafe fn u64_at(map: &Mapping, offset: usize) -> &AtomicU64 {
    // SAFETY: as in `u32_at`.
    unsafe { AtomicU64::from_ptr(map.as_ptr().add(offset).cast()) }
}

// Every page struct fits in one page and is 8-byte aligned at offset 0 of a
// page-aligned mapping, so every field offset below is in bounds and aligned.
const _: () = assert!(size_of::<ProcessPage>() <= 4096 && size_of::<GlobalPage>() <= 4096);

/// A process page as read at one moment; every field is an allegation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessPageSnapshot {
    /// Should be [`PROCESS_PAGE_MAGIC`].
    pub magic: u32,
    /// Should be [`PAGE_VERSION`].
    pub version: u32,
    /// The writer's change counter.
    pub seq: u64,
    /// The alleged ready bitmap.
    pub ready: u64,
    /// The alleged yield counter (0 from a writer that does not report it).
    pub yields: u64,
}

impl ProcessPageSnapshot {
    /// The ready bitmap if the header is one we understand, else nothing ready.
    pub fn ready_if_valid(&self) -> Option<u64> {
        (self.magic == PROCESS_PAGE_MAGIC && self.version == PAGE_VERSION).then_some(self.ready)
    }
}

/// A page's `yields` counter may grow at most this much between two scans;
/// any other step (a decrease, a reset, garbage) is not counted.
pub const MAX_YIELD_STEP: u64 = 1 << 32;

/// The coordinator's count of one process's yields, from the untrusted
/// `yields` word of its page: only ever differenced, a step above
/// [`MAX_YIELD_STEP`] is dropped and counting resumes from the new value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct YieldCount {
    /// The page's counter at the last reading.
    seen: u64,
    /// The yields counted (wraps).
    total: u64,
}

impl YieldCount {
    /// Counting starts from the page's counter `first`.
    pub fn new(first: u64) -> YieldCount {
        YieldCount {
            seen: first,
            total: 0,
        }
    }

    /// Takes the page's counter as read now.
    pub fn note(&mut self, reading: u64) {
        let step = reading.wrapping_sub(self.seen);
        if step <= MAX_YIELD_STEP {
            self.total = self.total.wrapping_add(step);
        }
        self.seen = reading;
    }

    /// The yields counted since [`new`](YieldCount::new) (wraps).
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// A client's own process page, mapped writable (only by that client).
pub struct ProcessPageWriter {
    fd: OwnedFd,
    map: Mapping,
}

impl ProcessPageWriter {
    /// Creates the page: a one-page memfd, sealed against shrinking and growing
    /// (so the coordinator's read-only mapping can never fault), with a valid
    /// header and nothing ready.
    pub fn create() -> io::Result<ProcessPageWriter> {
        let len = sys::page_size();
        let fd = sys::memfd(c"ss-process-page", len)?;
        let map = Mapping::new(fd.as_fd(), len, true)?;
        sys::add_seals(
            fd.as_fd(),
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
        )?;
        let page = ProcessPageWriter { fd, map };
        page.store_header(PROCESS_PAGE_MAGIC, PAGE_VERSION);
        Ok(page)
    }

    fn magic(&self) -> &AtomicU32 {
        // SAFETY: in bounds and aligned (see the const assertion above).
        unsafe { u32_at(&self.map, offset_of!(ProcessPage, magic)) }
    }
    fn version(&self) -> &AtomicU32 {
        // SAFETY: in bounds and aligned.
        unsafe { u32_at(&self.map, offset_of!(ProcessPage, version)) }
    }
    fn seq(&self) -> &AtomicU64 {
        // SAFETY: in bounds and aligned.
        unsafe { u64_at(&self.map, offset_of!(ProcessPage, seq)) }
    }
    fn ready(&self) -> &AtomicU64 {
        // SAFETY: in bounds and aligned.
        unsafe { u64_at(&self.map, offset_of!(ProcessPage, ready)) }
    }
    fn yields_word(&self) -> &AtomicU64 {
        // SAFETY: in bounds and aligned.
        unsafe { u64_at(&self.map, offset_of!(ProcessPage, yields)) }
    }

    /// The descriptor to hand to the coordinator.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Stores `ready`, then bumps `seq`; returns the previous `ready`.
    pub fn publish(&self, ready: u64) -> u64 {
        let old = self.ready().swap(ready, Ordering::Release);
        if old != ready {
            self.seq().fetch_add(1, Ordering::Release);
        }
        old
    }

    /// The `ready` last stored.
    pub fn published(&self) -> u64 {
        self.ready().load(Ordering::Relaxed)
    }

    /// Adds `n` to the page's yield counter: one relaxed atomic add, no
    /// syscall. The counter wraps; the coordinator only takes differences.
    #[inline]
    pub fn add_yields(&self, n: u64) {
        self.yields_word().fetch_add(n, Ordering::Relaxed);
    }

    /// The yield counter's current value.
    pub fn yields(&self) -> u64 {
        self.yields_word().load(Ordering::Relaxed)
    }

    /// Overwrites the header. For tools and tests that check how the
    /// coordinator treats a page it does not understand.
    pub fn store_header(&self, magic: u32, version: u32) {
        self.magic().store(magic, Ordering::Relaxed);
        self.version().store(version, Ordering::Relaxed);
        self.seq().fetch_add(1, Ordering::Release);
    }
}

/// Why a process page descriptor was refused.
#[derive(Debug)]
pub enum PageError {
    /// The descriptor is not a memfd (seals unsupported).
    NotMemfd(io::Error),
    /// The memfd is not sealed against shrinking, so the owner could truncate it
    /// under the coordinator's mapping and make its reads fault.
    NotSealed,
    /// The memfd is backed by huge pages (`MFD_HUGETLB`): a mapping of it
    /// spans a whole huge page, not the one page the reader maps and unmaps.
    HugePages(u64),
    /// The file is smaller than the first version-1 [`ProcessPage`]
    /// ([`PROCESS_PAGE_MIN_LEN`] bytes).
    TooSmall(u64),
    /// Mapping it failed.
    Map(io::Error),
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PageError::NotMemfd(e) => write!(
                f,
                "a shared page must be a memfd created with MFD_ALLOW_SEALING ({e}); use ss_coord::Client"
            ),
            PageError::NotSealed => f.write_str(
                "a shared page memfd must be sealed with F_SEAL_SHRINK before it is sent",
            ),
            PageError::HugePages(n) => write!(
                f,
                "a shared page memfd must be of ordinary pages, not MFD_HUGETLB ({n}-byte pages)"
            ),
            PageError::TooSmall(n) => write!(
                f,
                "the process page memfd has {n} bytes; it must hold a ProcessPage (at least {PROCESS_PAGE_MIN_LEN} bytes): ftruncate it to a page"
            ),
            PageError::Map(e) => write!(f, "mapping the process page failed: {e}"),
        }
    }
}

impl std::error::Error for PageError {}

/// Whether a page another process sent is one whose mapping can never fault
/// and is exactly what [`Mapping`] maps: a memfd (`F_GET_SEALS` succeeds)
/// sealed against shrinking, of ordinary pages.
fn check_sealed_memfd(fd: BorrowedFd<'_>) -> Result<(), PageError> {
    let seals = sys::seals(fd).map_err(PageError::NotMemfd)?;
    if seals & libc::F_SEAL_SHRINK == 0 {
        return Err(PageError::NotSealed);
    }
    // A hugetlbfs memfd reports its huge page size as the block size; its
    // mapping would be a whole huge page, which `Mapping` (one page) would
    // fail to unmap and leak.
    let block = sys::block_size(fd).map_err(PageError::Map)?;
    if block > sys::page_size() as u64 {
        return Err(PageError::HugePages(block));
    }
    Ok(())
}

/// A client's process page as the coordinator sees it: read-only, untrusted.
pub struct ProcessPageReader {
    map: Mapping,
}

impl ProcessPageReader {
    /// Checks and maps a descriptor a client sent. Only a memfd sealed against
    /// shrinking and at least [`PROCESS_PAGE_MIN_LEN`] bytes long is accepted:
    /// such a mapping can never raise SIGBUS or block on I/O, whatever its owner
    /// does. A whole page is mapped, so fields appended after that length read
    /// as 0 from a shorter file (the rest of its last page is zero-filled).
    pub fn open(fd: &OwnedFd) -> Result<ProcessPageReader, PageError> {
        check_sealed_memfd(fd.as_fd())?;
        let size = sys::file_size(fd.as_fd()).map_err(PageError::Map)?;
        if size < PROCESS_PAGE_MIN_LEN as u64 {
            return Err(PageError::TooSmall(size));
        }
        let map = Mapping::new(fd.as_fd(), sys::page_size(), false).map_err(PageError::Map)?;
        Ok(ProcessPageReader { map })
    }

    /// Loads every field, each with one atomic load.
    pub fn snapshot(&self) -> ProcessPageSnapshot {
        // SAFETY: for all five loads: in bounds and aligned (const assertion above);
        // the mapping is read-only and we only load. Plain loads on the targets
        // we build for (64-bit Linux), so a read-only mapping is fine.
        let (magic, version, seq, ready, yields) = unsafe {
            (
                u32_at(&self.map, offset_of!(ProcessPage, magic)).load(Ordering::Relaxed),
                u32_at(&self.map, offset_of!(ProcessPage, version)).load(Ordering::Relaxed),
                u64_at(&self.map, offset_of!(ProcessPage, seq)).load(Ordering::Acquire),
                u64_at(&self.map, offset_of!(ProcessPage, ready)).load(Ordering::Acquire),
                u64_at(&self.map, offset_of!(ProcessPage, yields)).load(Ordering::Relaxed),
            )
        };
        ProcessPageSnapshot {
            magic,
            version,
            seq,
            ready,
            yields,
        }
    }
}

/// Offset of the 32-bit futex word: the low half of `seq`.
const FUTEX_OFFSET: usize =
    GLOBAL_PAGE_SEQ_OFFSET + if cfg!(target_endian = "big") { 4 } else { 0 };

/// The coordinator's writable mapping of the global page.
pub struct GlobalPageWriter {
    _fd: OwnedFd,
    client_fd: OwnedFd,
    map: Mapping,
}

impl GlobalPageWriter {
    /// Creates the global page: a one-page memfd mapped writable here, then sealed
    /// with `F_SEAL_FUTURE_WRITE` (no new writable mapping, no `write(2)`),
    /// against resizing and against new seals; clients get a descriptor reopened
    /// `O_RDONLY` besides.
    pub fn create() -> io::Result<GlobalPageWriter> {
        let len = sys::page_size();
        let fd = sys::memfd(c"ss-global-page", len)?;
        let map = Mapping::new(fd.as_fd(), len, true)?;
        sys::add_seals(
            fd.as_fd(),
            libc::F_SEAL_FUTURE_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
        )?;
        let client_fd = match sys::reopen_read_only(fd.as_fd()) {
            Ok(ro) => ro,
            // No /proc: the sealed descriptor alone still refuses writable maps.
            Err(_) => fd.try_clone()?,
        };
        let page = GlobalPageWriter {
            _fd: fd,
            client_fd,
            map,
        };
        page.u32(offset_of!(GlobalPage, magic))
            .store(GLOBAL_PAGE_MAGIC, Ordering::Relaxed);
        page.u32(offset_of!(GlobalPage, version))
            .store(PAGE_VERSION, Ordering::Relaxed);
        page.u64(offset_of!(GlobalPage, seq))
            .store(0, Ordering::Release);
        Ok(page)
    }

    fn u32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: only called with field offsets of GlobalPage: in bounds, aligned.
        unsafe { u32_at(&self.map, off) }
    }
    fn u64(&self, off: usize) -> &AtomicU64 {
        // SAFETY: only called with field offsets of GlobalPage: in bounds, aligned.
        unsafe { u64_at(&self.map, off) }
    }

    /// The read-only descriptor handed to clients.
    pub fn client_fd(&self) -> BorrowedFd<'_> {
        self.client_fd.as_fd()
    }

    /// The current sequence number (even between publishes).
    pub fn seq(&self) -> u64 {
        self.u64(GLOBAL_PAGE_SEQ_OFFSET).load(Ordering::Relaxed)
    }

    /// Publishes `view` (the sequence-lock write described in the module docs)
    /// and wakes every process waiting for a change.
    pub fn publish(&self, view: GlobalView) {
        let seq = self.u64(GLOBAL_PAGE_SEQ_OFFSET);
        let s = seq.load(Ordering::Relaxed);
        seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.u64(offset_of!(GlobalPage, global))
            .store(view.global.bits(), Ordering::Relaxed);
        self.u64(offset_of!(GlobalPage, multi))
            .store(view.multi.bits(), Ordering::Relaxed);
        seq.store(s.wrapping_add(2), Ordering::Release);
        // SAFETY: FUTEX_OFFSET is inside the mapping.
        sys::futex_wake_all(unsafe { self.map.as_ptr().add(FUTEX_OFFSET) }.cast());
    }
}

/// A client's read-only mapping of the global page.
pub struct GlobalPageReader {
    map: Mapping,
}

/// Retries of a sequence-lock read before taking the words as they are.
const SEQLOCK_SPINS: u32 = 128;

impl GlobalPageReader {
    /// Maps the descriptor the coordinator sent and checks its header. Only
    /// a memfd sealed against shrinking is accepted: a coordinator (or an
    /// impostor) that sent a file it could truncate would make every later
    /// read of the mapping die of SIGBUS.
    pub fn open(fd: &OwnedFd) -> io::Result<GlobalPageReader> {
        check_sealed_memfd(fd.as_fd()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the coordinator's global page is refused: {e}"),
            )
        })?;
        let size = sys::file_size(fd.as_fd())?;
        if size < size_of::<GlobalPage>() as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the coordinator sent a global page smaller than a GlobalPage",
            ));
        }
        let map = Mapping::new(fd.as_fd(), sys::page_size(), false)?;
        let page = GlobalPageReader { map };
        let magic = page
            .u32(offset_of!(GlobalPage, magic))
            .load(Ordering::Relaxed);
        let version = page
            .u32(offset_of!(GlobalPage, version))
            .load(Ordering::Relaxed);
        if magic != GLOBAL_PAGE_MAGIC || version != PAGE_VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                ss_core::global::BadGlobalPage { magic, version },
            ));
        }
        Ok(page)
    }

    /// Checks `fd` as [`open`](GlobalPageReader::open) does, then maps it over
    /// this reader's mapping, at the same address and in one step: readers
    /// and [`futex_word`](GlobalPageReader::futex_word) borrowers go on with
    /// the new page. `old` is the file mapped until now: once the new page is
    /// in place, every futex waiter still asleep on the old one (its futex key
    /// is the old file's, which nobody may ever wake again — a crashed
    /// coordinator's) is woken through a second mapping of it, and finds the
    /// new page when it looks again. (Without that, an io_uring `FUTEX_WAIT`
    /// armed on the old page stayed in flight for good, and its worker never
    /// armed one on the new page; found in review, 2026-11-30.) Not woken: a
    /// wait that resolved its key before the swap and goes to sleep only
    /// after this wake-up (a window of a few instructions in the kernel,
    /// and only if the new page's word equals the one it expected) — a
    /// `futex(2)` wait then ends by its timeout; an io_uring one would stay
    /// armed until its ring is torn down, so ss-runtime re-arms a wait armed
    /// under an earlier [`Client::registrations`](crate::Client::registrations)
    /// count.
    ///
    /// # Errors
    /// As [`open`](GlobalPageReader::open), or the `mmap` failed (this reader
    /// then still maps the old page).
    pub fn replace_with(&self, old: BorrowedFd<'_>, fd: &OwnedFd) -> io::Result<()> {
        drop(GlobalPageReader::open(fd)?);
        // Mapped before the swap, so that a shortage cannot leave the
        // waiters asleep after it (nothing changes then).
        let alias = Mapping::new(old, sys::page_size(), false)?;
        self.map.replace_read_only(fd.as_fd())?;
        // SAFETY: FUTEX_OFFSET is in bounds and aligned for a u32 (as in
        // `futex_word`); the wake-up does not access the memory.
        sys::futex_wake_all(unsafe { alias.as_ptr().add(FUTEX_OFFSET) }.cast::<u32>());
        Ok(())
    }

    fn u32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: only called with field offsets of GlobalPage: in bounds,
        // aligned; we only load from this read-only mapping.
        unsafe { u32_at(&self.map, off) }
    }
    fn u64(&self, off: usize) -> &AtomicU64 {
        // SAFETY: as `u32`.
        unsafe { u64_at(&self.map, off) }
    }

    /// The current sequence number.
    #[inline]
    pub fn seq(&self) -> u64 {
        self.u64(GLOBAL_PAGE_SEQ_OFFSET).load(Ordering::Acquire)
    }

    /// The published view and the `seq` it was read at: four loads, no syscall,
    /// never blocks (see the module docs).
    #[inline]
    pub fn read(&self) -> (u64, GlobalView) {
        let seq = self.u64(GLOBAL_PAGE_SEQ_OFFSET);
        let global = self.u64(offset_of!(GlobalPage, global));
        let multi = self.u64(offset_of!(GlobalPage, multi));
        let mut last = (0, 0, 0);
        for _ in 0..SEQLOCK_SPINS {
            let s1 = seq.load(Ordering::Acquire);
            let g = global.load(Ordering::Relaxed);
            let m = multi.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            let s2 = seq.load(Ordering::Relaxed);
            last = (s2, g, m);
            if s1 == s2 && s1 & 1 == 0 {
                break;
            }
            std::hint::spin_loop();
        }
        let (s, g, m) = last;
        let view = GlobalView {
            global: PrioBitmap::from_bits(g),
            // `multi` is a subset of `global` by construction; keep it so.
            multi: PrioBitmap::from_bits(m & g),
        };
        (s, view)
    }

    /// The futex word (the low 32 bits of `seq`), for a caller that waits on it
    /// some other way than [`wait_for_change`](Self::wait_for_change), e.g. an
    /// io_uring `FUTEX_WAIT` (a shared futex: no `FUTEX2_PRIVATE`). Read-only.
    pub fn futex_word(&self) -> &AtomicU32 {
        self.u32(FUTEX_OFFSET)
    }

    /// Sleeps until `seq` differs from `seen` or `timeout` passes (`None`: no
    /// limit); returns the `seq` then current (equal to `seen` on timeout).
    ///
    /// A futex wait on the low 32 bits of `seq`, which works on a read-only
    /// shared mapping.
    pub fn wait_for_change(&self, seen: u64, timeout: Option<Duration>) -> u64 {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let now = self.seq();
            if now != seen {
                return now;
            }
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return now,
                },
            };
            // SAFETY: FUTEX_OFFSET is inside the mapping.
            let word = unsafe { self.map.as_ptr().add(FUTEX_OFFSET) };
            sys::futex_wait(word.cast(), seen as u32, left);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd};

    #[test]
    fn a_hugetlb_page_is_refused() {
        // SAFETY: the name is NUL-terminated.
        let fd = unsafe {
            libc::memfd_create(
                c"huge".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | libc::MFD_HUGETLB,
            )
        };
        if fd < 0 {
            eprintln!(
                "skipped: no MFD_HUGETLB here ({})",
                io::Error::last_os_error()
            );
            return;
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: plain call on a descriptor we own (one 2 MiB huge page).
        let r = unsafe { libc::ftruncate(fd.as_raw_fd(), 2 << 20) };
        assert_eq!(r, 0, "{}", io::Error::last_os_error());
        sys::add_seals(fd.as_fd(), libc::F_SEAL_SHRINK | libc::F_SEAL_GROW).unwrap();
        match ProcessPageReader::open(&fd) {
            Err(PageError::HugePages(n)) => assert!(n > 4096, "{n}"),
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => panic!("a hugetlb page was accepted"),
        }
        let err = GlobalPageReader::open(&fd).err().expect("accepted");
        assert!(err.to_string().contains("MFD_HUGETLB"), "{err}");
    }
}
