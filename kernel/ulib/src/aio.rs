//! Asynchronous system calls (paper §3.2, Listing 2): the same calls as the
//! synchronous ones in [`crate::sys`], but only the calling coroutine waits.
//!
//! Each call submits the asynchronous form with the coroutine's id, gets the
//! call's operation id back and returns `Pending`; the kernel runs the call
//! as a kernel coroutine and puts `(cid, result, op)` in the process's
//! completion queue; the shared scheduler (the vDSO) takes it — in the upcall
//! handler the kernel enters, or between two polls — stores the result and
//! wakes the coroutine, which takes the result of its call `op`.
//!
//! One call per coroutine at a time. Dropping a call's future before its
//! result came cancels the call (`sys::cancel`: the kernel coroutine ends and
//! gives back its in-flight slot; once `cancel` returns, the kernel never
//! writes the call's memory, so a `read`'s buffer is freed then), and a
//! coroutine that then makes another call is never handed the first call's
//! result, should it still arrive: the operation id tells them apart. Each
//! call also names the coroutine's level, and the kernel coroutine that
//! carries it out runs at that level: a less important coroutine's I/O waits
//! behind more important work, in the kernel as in the process.
//! `read` owns its buffer until the result arrives (the kernel writes it
//! then) or the call is cancelled.

use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::{Context, Poll};

use ss_abi::completion::{CQ_IPIS_OFFSET, CQ_RESETS_OFFSET, CQ_TAIL_OFFSET, CQ_UPCALLS_OFFSET};
use ss_abi::syscall::SysError;
use ss_abi::uspace::COMPLETION_PAGE_VA;
use ss_abi::vdso::NO_RESULT;
use ss_abi::Priority;

use crate::rt::{getcid, vdso};
use crate::sys;

/// The result of call `op` this coroutine (`cid`) issued, to come: the raw
/// result and the kernel's completion time. Dropped before it came, it
/// cancels the call (the kernel coroutine ends and gives back its in-flight
/// slot).
fn result_of(cid: u64, op: u64) -> Outcome {
    Outcome {
        cid,
        op,
        taken: false,
        buf: None,
        descriptor: false,
    }
}

struct Outcome {
    cid: u64,
    op: u64,
    taken: bool,
    /// A `read`'s buffer, which the kernel writes until the call completes:
    /// freed (as a field, after `drop`) only once the call is done or
    /// cancelled — after `cancel` returns, the kernel never writes it.
    buf: Option<Vec<u8>>,
    /// The result is a new descriptor (`accept`): dropped untaken, it is
    /// closed.
    descriptor: bool,
}

impl Future for Outcome {
    type Output = (i64, u64);

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<(i64, u64)> {
        let mut stamp = 0u64;
        // SAFETY: `stamp` is a live `u64`.
        let r = unsafe { (vdso().take_result)(self.cid, self.op, &mut stamp) };
        if r == NO_RESULT {
            Poll::Pending
        } else {
            self.taken = true;
            Poll::Ready((r, stamp))
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if self.taken || sys::cancel(self.op) {
            // Taken, or ended without a result (the kernel also drops a
            // finished call's result that had not reached the queue yet,
            // closing an accepted descriptor).
            return;
        }
        if self.descriptor {
            // Finished, its result in the completion queue or the vDSO's
            // results: a descriptor the program never saw, which the vDSO
            // closes (now, or when it drains the result).
            (vdso().release_descriptor)(self.cid, self.op);
        }
    }
}

/// The calling coroutine's id and level: the call names both to the kernel,
/// whose coroutine for it then runs at the caller's priority.
async fn me() -> Result<(u64, Option<Priority>), SysError> {
    let cid = getcid()
        .await
        .map(|c| c.into_raw())
        .ok_or(SysError::BadArgument)?;
    let level = (vdso().priority_of)(cid);
    let prio = u8::try_from(level).ok().and_then(|l| Priority::new(l).ok());
    Ok((cid, prio))
}

fn decode(raw: i64) -> Result<usize, SysError> {
    SysError::from_ret(raw as isize)
}

/// `read(fd, buf)` asynchronously: up to `buf.len()` bytes (at most 4096);
/// returns the count (0 at end of file) and the buffer.
pub async fn read(fd: usize, buf: Vec<u8>) -> (Result<usize, SysError>, Vec<u8>) {
    let (r, buf, _) = read_stamped(fd, buf).await;
    (r, buf)
}

/// As [`read`], with the kernel's `time` when the call completed (when its
/// kernel coroutine finished, before the result reached this coroutine).
pub async fn read_stamped(fd: usize, mut buf: Vec<u8>) -> (Result<usize, SysError>, Vec<u8>, u64) {
    let (cid, prio) = match me().await {
        Ok(c) => c,
        Err(e) => return (Err(e), buf, 0),
    };
    let op = match sys::read_submit(fd, buf.as_mut_ptr(), buf.len(), cid, prio) {
        Ok(op) => op,
        Err(e) => return (Err(e), buf, 0),
    };
    let mut call = result_of(cid, op);
    call.buf = Some(buf);
    let (r, stamp) = (&mut call).await;
    (decode(r), call.buf.take().unwrap_or_default(), stamp)
}

/// `write(fd, buf)` asynchronously (the kernel copies the bytes when the call
/// is made); returns how many went (a short count when a pipe is nearly full).
pub async fn write(fd: usize, buf: &[u8]) -> Result<usize, SysError> {
    let (cid, prio) = me().await?;
    let op = sys::write_submit(fd, buf, cid, prio)?;
    decode(result_of(cid, op).await.0)
}

/// `accept(fd)` asynchronously: the next connection of listener `fd`, as a
/// new descriptor (only this coroutine waits for it).
pub async fn accept(fd: usize) -> Result<usize, SysError> {
    let (cid, prio) = me().await?;
    let op = sys::accept_submit(fd, cid, prio)?;
    let mut call = result_of(cid, op);
    call.descriptor = true;
    decode(call.await.0)
}

/// `sleep(ns)` asynchronously: this coroutine resumes after at least `ns`
/// nanoseconds (at a timer tick); the process's threads go on meanwhile.
pub async fn sleep(ns: u64) -> Result<(), SysError> {
    sleep_stamped(ns).await.map(|_| ())
}

/// As [`sleep`], returning the kernel's `time` when the call completed (to
/// measure how long the result took to reach this coroutine).
pub async fn sleep_stamped(ns: u64) -> Result<u64, SysError> {
    let (cid, prio) = me().await?;
    let op = sys::sleep_submit(ns, cid, prio)?;
    let (r, stamp) = result_of(cid, op).await;
    decode(r).map(|_| stamp)
}

fn cq_word(offset: usize) -> &'static AtomicU64 {
    // SAFETY: the kernel maps the completion page read-write at
    // COMPLETION_PAGE_VA in every process; the offsets are aligned words.
    unsafe { &*((COMPLETION_PAGE_VA + offset) as *const AtomicU64) }
}

/// Upcalls the kernel delivered to this process.
pub fn upcalls() -> u64 {
    cq_word(CQ_UPCALLS_OFFSET).load(Ordering::Relaxed)
}

/// IPIs the kernel sent to deliver this process's completions at once.
pub fn ipis() -> u64 {
    cq_word(CQ_IPIS_OFFSET).load(Ordering::Relaxed)
}

/// Completions the kernel has put in the queue (the ring's free-running
/// tail).
pub fn cq_tail() -> u64 {
    cq_word(CQ_TAIL_OFFSET).load(Ordering::Acquire)
}

/// Times the kernel found the queue's `head` corrupt and reset it.
pub fn resets() -> u64 {
    cq_word(CQ_RESETS_OFFSET).load(Ordering::Relaxed)
}

/// Drains the completion queue now (what the upcall handler does).
pub fn drain() -> u64 {
    (vdso().drain)()
}
