//! Receive buffers the kernel picks: one io_uring *provided-buffer ring* per
//! worker ring (`IORING_REGISTER_PBUF_RING`, Linux 5.19).
//!
//! A receive that owns its buffer ([`recv`](super::recv)) holds that buffer for as
//! long as it waits — for a server with many idle connections, one buffer per
//! connection, most of them empty. A **pooled** receive ([`recv_pooled`]) names
//! a buffer *group* instead of a buffer: the kernel takes a buffer from the
//! group's ring only when data arrives, and the completion says which. An idle
//! connection then holds no receive buffer at all; the memory is a fixed pool
//! per worker, however many connections wait.
//!
//! ```text
//!   worker W's pool: `count` buffers of `size` bytes + a ring of `count` entries
//!   (addr, len, bid) that W's io_uring ring knows as buffer group 0
//!
//!   recv_pooled ──SQE: RECV, BUFFER_SELECT, group 0──► kernel
//!                                         data arrives: takes the entry at the head
//!   CQE (bytes, F_BUFFER | bid << 16) ──► RecvBuf { bid, len } (derefs to the bytes)
//!   RecvBuf dropped (any thread) ──lock: entry at the tail = bid; tail += 1 (release)──► kernel
//! ```
//!
//! Only the kernel consumes (it advances the head, which lives in the kernel);
//! we produce, under the pool's lock, so a buffer may be given back from any
//! thread. At most `count` buffers exist, so the entry written at the tail is
//! never one the kernel has yet to read.
//!
//! **Exhaustion is not an error.** When every buffer is out (held by
//! [`RecvBuf`]s not yet dropped), the kernel fails the receive with `ENOBUFS`
//! and [`recv_pooled`] receives into a buffer of its own instead (allocated for
//! that one receive; the result is a [`RecvBuf`] all the same).
//!
//! **A dry pool grows.** The ring has room for `max` buffers
//! ([`Config::recv_buffers_max`](super::Config::recv_buffers_max)) and the
//! memory for all of them is reserved (an anonymous mapping, `MAP_NORESERVE`:
//! address space, no memory until a page is written), but only `count` are
//! put in the ring at first. A receive that meets the pool dry while at least
//! half of its buffers are lent (real demand, not a dry report from an
//! episode already over; judged as its completion is reaped, since a reader
//! may run milliseconds later) doubles the buffers in the ring, up to `max`: the
//! new buffers' memory is touched only once the kernel fills them. A program
//! with few connections keeps the small pool; a server whose connections all
//! have bytes waiting at once grows to what it needs after a few dry
//! receives. The pool never shrinks: the kernel takes buffers in ring order,
//! so every buffer in the ring is soon written (resident) anyway.
//!
//! **Lifetime.** The pool's memory is freed when the last of its worker ring,
//! its in-flight operations and its `RecvBuf`s lets go of it. A completion for
//! an operation abandoned in flight (its future dropped) gives its buffer back
//! (see `Ring::complete`); if the ring's teardown gives up on operations the
//! kernel never completed, the pool is leaked with them, never freed under the
//! kernel.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fmt;
use std::io;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use io_uring::{cqueue, opcode, squeue, types};

use super::driver::Ring;
use super::op::{Op, Operation};

/// The buffer group of every worker's pool (each ring has its own groups).
pub(crate) const GROUP: u16 = 0;

/// The most buffers a pool may have (the kernel's limit for a buffer ring).
pub const MAX_BUFFERS: u16 = 1 << 15;

/// The largest buffer a pool may have (a receive's length is an `i32`; bigger
/// buffers than this only waste memory for receives).
pub const MAX_BUFFER_SIZE: u32 = 1 << 20;

/// A pool's shape: `count` buffers of `size` bytes at first, growing to `max`
/// when it runs dry (`max ≤ count`: a pool that does not grow).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) count: u16,
    pub(crate) max: u16,
    pub(crate) size: u32,
}

impl Shape {
    /// The most buffers the pool holds (its ring's entries).
    pub(crate) fn ceiling(self) -> u16 {
        self.max.max(self.count)
    }
}

/// Checks a pool's shape: `count` a power of two up to [`MAX_BUFFERS`],
/// `max` 0 or a power of two up to [`MAX_BUFFERS`], `size` 1 ..=
/// [`MAX_BUFFER_SIZE`].
///
/// # Errors
/// `InvalidInput`, saying which and what would do.
pub(crate) fn validate(shape: Shape) -> io::Result<()> {
    let Shape { count, max, size } = shape;
    if !count.is_power_of_two() || count > MAX_BUFFERS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "io::Config::recv_buffers: {count} buffers; use a power of two \
                 up to {MAX_BUFFERS} (or 0 for no pool)"
            ),
        ));
    }
    if max != 0 && (!max.is_power_of_two() || max > MAX_BUFFERS) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "io::Config::recv_buffers_max: {max} buffers; use a power of two \
                 up to {MAX_BUFFERS} (at or below the starting count: a pool \
                 that does not grow)"
            ),
        ));
    }
    if size == 0 || size > MAX_BUFFER_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "io::Config::recv_buffers: buffers of {size} bytes; use 1 to \
                 {MAX_BUFFER_SIZE}"
            ),
        ));
    }
    Ok(())
}

/// A worker's pool of receive buffers (see the module docs).
pub(crate) struct BufPool {
    /// `max * size` bytes mapped (`MAP_NORESERVE`): buffer `bid` is at
    /// `bid * size`; only the first `count` buffers were ever in the ring.
    mem: NonNull<u8>,
    mem_len: usize,
    /// `max` ring entries (16 bytes each, page aligned); the tail is the last
    /// two bytes of entry 0 (`BufRingEntry::tail`).
    ring: NonNull<types::BufRingEntry>,
    ring_layout: Layout,
    size: u32,
    /// The ring's entries: the most buffers the pool may grow to.
    max: u16,
    /// The producer side, serialised here.
    producer: Mutex<Producer>,
    /// Buffers out of the kernel's hands: named by a reaped completion, not yet
    /// given back.
    out: AtomicUsize,
    /// Receives that met the pool dry (`ENOBUFS`).
    dry: AtomicU64,
}

/// What only the producer touches (under `BufPool::producer`).
struct Producer {
    /// Our tail: the next entry we write.
    tail: u16,
    /// Buffers in the pool: `0..count` are the bids ever put in the ring.
    count: u16,
}

// SAFETY: the memory the pointers name is owned by the pool and shared only
// with the kernel. Buffer `bid` is read (through `RecvBuf`) only between the
// completion that handed it out and its `give_back`, while neither the kernel
// nor anyone else writes it; the ring entries are written only under
// `producer`.
unsafe impl Send for BufPool {}
// SAFETY: see `Send`; every shared mutation goes through `producer` or atomics.
unsafe impl Sync for BufPool {}

impl fmt::Debug for BufPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufPool")
            .field("count", &self.producer().count)
            .field("max", &self.max)
            .field("size", &self.size)
            .field("out", &self.out.load(Ordering::Relaxed))
            .field("dry", &self.dry.load(Ordering::Relaxed))
            .finish()
    }
}

impl BufPool {
    /// A pool of `shape.count` buffers of `shape.size` bytes, every one in
    /// the ring, with room (ring entries and reserved memory) for
    /// [`Shape::ceiling`].
    ///
    /// # Errors
    /// `InvalidInput` for a bad shape; `OutOfMemory`.
    pub(crate) fn new(shape: Shape) -> io::Result<Arc<BufPool>> {
        validate(shape)?;
        let oom = || io::Error::new(io::ErrorKind::OutOfMemory, "no memory for the receive pool");
        let max = shape.ceiling();
        let mem_len = usize::from(max)
            .checked_mul(shape.size as usize)
            .ok_or_else(oom)?;
        let ring_layout = Layout::from_size_align(
            usize::from(max) * std::mem::size_of::<types::BufRingEntry>(),
            4096,
        )
        .map_err(|_| oom())?;
        // SAFETY: an anonymous private mapping of `mem_len` (> 0) bytes at an
        // address of the kernel's choosing; no file, no fixed address.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mem_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            return Err(oom());
        }
        // SAFETY: the layout has a non-zero size (max ≥ count ≥ 1).
        let ring = unsafe { alloc_zeroed(ring_layout) };
        let (Some(mem), Some(ring)) = (NonNull::new(mem.cast::<u8>()), NonNull::new(ring.cast()))
        else {
            // SAFETY: `mem` is the mapping made above, `mem_len` long (a
            // successful mmap never returns null).
            unsafe { libc::munmap(mem, mem_len) };
            return Err(oom());
        };
        let pool = Arc::new(BufPool {
            mem,
            mem_len,
            ring,
            ring_layout,
            size: shape.size,
            max,
            producer: Mutex::new(Producer { tail: 0, count: 0 }),
            out: AtomicUsize::new(0),
            dry: AtomicU64::new(0),
        });
        pool.add_buffers(&mut pool.producer(), shape.count);
        Ok(pool)
    }

    /// The ring's address and entry count, for `IORING_REGISTER_PBUF_RING`.
    pub(crate) fn ring_addr(&self) -> (u64, u16) {
        (self.ring.as_ptr() as u64, self.max)
    }

    /// The size of each buffer.
    pub(crate) fn size(&self) -> u32 {
        self.size
    }

    /// Buffers in the pool now, those lent (named by a reaped completion, not
    /// yet given back), and the receives that met it dry.
    pub(crate) fn counts(&self) -> (u16, usize, u64) {
        (
            self.producer().count,
            self.out.load(Ordering::Relaxed),
            self.dry.load(Ordering::Relaxed),
        )
    }

    /// Buffers not in the ring (handed out by completions, not yet returned).
    #[cfg(test)]
    pub(crate) fn out(&self) -> usize {
        self.out.load(Ordering::Relaxed)
    }

    /// Buffers in the pool now (it grows when it runs dry, up to its ceiling).
    #[cfg(test)]
    pub(crate) fn count(&self) -> u16 {
        self.producer().count
    }

    /// The producer side, locked.
    fn producer(&self) -> MutexGuard<'_, Producer> {
        self.producer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Receives that met the pool dry.
    #[cfg(test)]
    pub(crate) fn dry(&self) -> u64 {
        self.dry.load(Ordering::Relaxed)
    }

    /// Writes the ring entry at the producer's tail for buffer `bid` (`<
    /// max`) and advances the tail; [`publish`](Self::publish) makes it the
    /// kernel's.
    fn push(&self, p: &mut Producer, bid: u16) {
        let index = usize::from(p.tail & (self.max - 1));
        // SAFETY: `index < max`, inside the ring allocation. The kernel reads
        // entries between its head and our tail only; at most `count ≤ max`
        // buffers exist and `bid` is out of its hands, so it has already read
        // this entry (or never will before the tail passes it).
        let entry = unsafe { &mut *self.ring.as_ptr().add(index) };
        // SAFETY: `bid < max`: the offset is inside `mem`.
        let addr = unsafe { self.mem.as_ptr().add(usize::from(bid) * self.size as usize) };
        // Field by field: entry 0's last field is the tail, not to be clobbered.
        entry.set_addr(addr as u64);
        entry.set_len(self.size);
        entry.set_bid(bid);
        p.tail = p.tail.wrapping_add(1);
    }

    /// Hands the entries pushed so far to the kernel.
    fn publish(&self, p: &Producer) {
        // SAFETY: the tail field lies in entry 0, inside the ring allocation, is
        // 2-aligned, and is written only here (under the producer's lock) and
        // read by the kernel; the release store publishes the entries written
        // before it.
        let tail_word = unsafe {
            AtomicU16::from_ptr(types::BufRingEntry::tail(self.ring.as_ptr()).cast_mut())
        };
        tail_word.store(p.tail, Ordering::Release);
    }

    /// Puts buffers `count..count + n` (clamped to the ceiling) in the ring.
    fn add_buffers(&self, p: &mut Producer, n: u16) {
        let new = p.count.saturating_add(n).min(self.max);
        for bid in p.count..new {
            self.push(p, bid);
        }
        p.count = new;
        self.publish(p);
    }

    /// A receive met the pool dry (called as its completion is reaped, when
    /// the buffers of the completions reaped before it are still lent even if
    /// their readers run much later): if at least half of its buffers are
    /// lent (the demand is real, not a dry report from an episode already
    /// over) and it is below its ceiling, doubles the buffers in the ring.
    pub(crate) fn ran_dry(&self) {
        self.dry.fetch_add(1, Ordering::Relaxed);
        let mut p = self.producer();
        let count = p.count;
        if count < self.max && self.out.load(Ordering::Relaxed) * 2 >= usize::from(count) {
            // Two dry receives reaped together may both double it: a pool
            // still half lent after the first doubling had earned both.
            self.add_buffers(&mut p, count);
        }
    }

    /// Puts buffer `bid` back in the ring, for the kernel to pick again.
    pub(crate) fn give_back(&self, bid: u16) {
        if bid >= self.max {
            return; // not ours (the kernel never hands out one it was not given)
        }
        let mut p = self.producer();
        self.push(&mut p, bid);
        self.publish(&p);
        drop(p);
        self.out.fetch_sub(1, Ordering::Relaxed);
    }

    /// A completion handed buffer `bid` out with `len` bytes in it.
    fn took(self: &Arc<Self>, bid: u16, len: usize) -> Option<RecvBuf> {
        if bid >= self.max {
            return None;
        }
        Some(RecvBuf(Inner::Pooled {
            pool: self.clone(),
            bid,
            len: len.min(self.size as usize),
        }))
    }

    /// A completion's `flags` say the kernel handed a buffer out (called as
    /// the completion is reaped, whoever takes it).
    pub(crate) fn note_selected(&self, flags: u32) {
        if cqueue::buffer_select(flags).is_some() {
            self.out.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Gives back the buffer a completion's `flags` name, if any (the completion
    /// of an operation nobody waits for any more).
    pub(crate) fn give_back_selected(&self, flags: u32) {
        if let Some(bid) = cqueue::buffer_select(flags) {
            self.give_back(bid);
        }
    }
}

impl Drop for BufPool {
    fn drop(&mut self) {
        // SAFETY: the mapping and the ring came from `mmap` and `alloc_zeroed`
        // with these lengths; the last reference is gone, so neither the kernel
        // (the ring unregistered its group before letting go: `Local` drops its
        // ring first) nor a `RecvBuf` uses them.
        unsafe {
            libc::munmap(self.mem.as_ptr().cast(), self.mem_len);
            dealloc(self.ring.as_ptr().cast(), self.ring_layout);
        }
    }
}

/// Bytes a [`recv_pooled`] received: a buffer of the worker's pool, given back
/// to the kernel when this is dropped (on any thread), or — when the pool was
/// exhausted or the ring has none — a buffer of its own.
///
/// Derefs to the received bytes. Holding many `RecvBuf`s for long starves the
/// pool (later receives then allocate); copy out what must be kept.
pub struct RecvBuf(Inner);

enum Inner {
    Pooled {
        pool: Arc<BufPool>,
        bid: u16,
        len: usize,
    },
    Owned(Vec<u8>),
}

impl RecvBuf {
    /// Whether the bytes are in a pool buffer (not in a buffer allocated for
    /// this receive because the pool had none free).
    pub fn is_pooled(&self) -> bool {
        matches!(self.0, Inner::Pooled { .. })
    }
}

impl Deref for RecvBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Inner::Pooled { pool, bid, len } => {
                // SAFETY: buffer `bid` (< count) lies inside the pool's memory,
                // `len ≤ size`; the kernel wrote those bytes before posting the
                // completion and will not touch the buffer until `drop` gives
                // it back.
                unsafe {
                    std::slice::from_raw_parts(
                        pool.mem
                            .as_ptr()
                            .add(usize::from(*bid) * pool.size as usize),
                        *len,
                    )
                }
            }
            Inner::Owned(v) => v,
        }
    }
}

impl Drop for RecvBuf {
    fn drop(&mut self) {
        if let Inner::Pooled { pool, bid, .. } = &self.0 {
            pool.give_back(*bid);
        }
    }
}

impl fmt::Debug for RecvBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvBuf")
            .field("len", &self.len())
            .field("pooled", &self.is_pooled())
            .finish()
    }
}

/// A receive into a buffer the kernel picks from the ring's pool.
pub(crate) struct RecvPooled {
    fd: RawFd,
    /// The pool of the ring the operation went to (set when submitted).
    pool: Option<Arc<BufPool>>,
}

impl RecvPooled {
    /// A pooled receive from socket `fd`.
    pub(crate) fn new(fd: RawFd) -> RecvPooled {
        RecvPooled { fd, pool: None }
    }
}

/// What a pooled receive's completion means.
pub(crate) enum Pooled {
    Got(io::Result<RecvBuf>),
    /// No pool on this ring, or none of its buffers free: receive otherwise.
    NoBuffer,
}

impl Operation for RecvPooled {
    type Output = Pooled;

    fn attach(&mut self, ring: &Ring) -> bool {
        self.pool = ring.pool().cloned();
        self.pool.is_some()
    }

    fn selects_buffer(&self) -> bool {
        true
    }

    fn sqe(&mut self) -> squeue::Entry {
        let size = self.pool.as_ref().map_or(0, |p| p.size());
        opcode::Recv::new(types::Fd(self.fd), std::ptr::null_mut(), size)
            .buf_group(GROUP)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
    }

    fn complete(self, res: i32) -> Pooled {
        self.complete_with(res, 0)
    }

    fn complete_with(self, res: i32, flags: u32) -> Pooled {
        match &self.pool {
            Some(pool) => completed(pool, res, flags),
            None => Pooled::NoBuffer,
        }
    }

    fn fail(self, e: io::Error) -> Pooled {
        if e.raw_os_error() == Some(libc::ENOBUFS) {
            // `attach` found no pool on this ring.
            return Pooled::NoBuffer;
        }
        Pooled::Got(Err(e))
    }
}

/// What a receive's completion (`res`, `flags`) from `pool`'s ring means; a
/// buffer it names becomes the caller's [`RecvBuf`] (or goes back).
pub(crate) fn completed(pool: &Arc<BufPool>, res: i32, flags: u32) -> Pooled {
    let selected = cqueue::buffer_select(flags);
    if res < 0 {
        if let Some(bid) = selected {
            // Not expected with an error, but never lose a buffer.
            pool.give_back(bid);
        }
        if res == -libc::ENOBUFS {
            return Pooled::NoBuffer; // judged as it was reaped (`BufPool::ran_dry`)
        }
        return Pooled::Got(Err(io::Error::from_raw_os_error(-res)));
    }
    match selected {
        Some(bid) => match pool.took(bid, res as usize) {
            Some(buf) => Pooled::Got(Ok(buf)),
            None => Pooled::Got(Err(io::Error::other(
                "io_uring named a receive buffer the pool does not have",
            ))),
        },
        // End of file (0 bytes) takes no buffer.
        None => Pooled::Got(Ok(RecvBuf(Inner::Owned(Vec::new())))),
    }
}

/// Receives from socket `fd` into a buffer of the worker's pool (see the module
/// docs): while it waits, the operation holds no buffer. An empty [`RecvBuf`]
/// means the peer closed its side.
///
/// When the worker's ring has no pool ([`Config::recv_buffers`] set to 0, or a
/// kernel before 5.19) or all its buffers are out, it receives into a buffer
/// allocated for this receive (of the pool's buffer size, 4 KiB without a
/// pool) instead; the caller sees no difference but [`RecvBuf::is_pooled`].
///
/// Cancel-safe as every operation: dropped in flight, it is cancelled, and a
/// buffer the kernel had already filled goes back to the pool (its bytes are
/// lost, as with [`recv`](super::recv)).
///
/// # Errors
/// The errno of the receive (`ECONNRESET`, …).
///
/// [`Config::recv_buffers`]: super::Config::recv_buffers
pub async fn recv_pooled(fd: impl AsFd) -> io::Result<RecvBuf> {
    recv_pooled_fd(fd.as_fd().as_raw_fd()).await
}

/// [`recv_pooled`] on a raw descriptor.
pub(crate) async fn recv_pooled_fd(fd: RawFd) -> io::Result<RecvBuf> {
    match Op::new(RecvPooled::new(fd)).await {
        Pooled::Got(r) => r,
        Pooled::NoBuffer => recv_owned(fd).await,
    }
}

/// One receive into a buffer of its own (the pool's buffer size; 4 KiB on a
/// ring without a pool), as a [`RecvBuf`].
pub(crate) async fn recv_owned(fd: RawFd) -> io::Result<RecvBuf> {
    let size = super::driver::current_pool_size().unwrap_or(4096);
    let (r, buf) = Op::new(super::ops::ReadInto::recv(fd, Vec::with_capacity(size))).await;
    r.map(|_| RecvBuf(Inner::Owned(buf)))
}
