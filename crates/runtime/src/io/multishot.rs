//! A multishot receive: one SQE that stays armed in the kernel and posts a
//! completion each time bytes arrive, into a buffer of the worker's pool
//! (`IORING_OP_RECV` with `IORING_RECV_MULTISHOT`, Linux 6.0).
//!
//! A [`recv_pooled`] per message costs an SQE, its preparation, a lookup of the
//! socket's file and — when no bytes wait — the arming and disarming of a poll
//! on the socket, every time. A [`RecvStream`] pays that once and then only
//! the completions:
//!
//! ```text
//!   first next() ──register_stream, push SQE (RECV, MULTISHOT, group 0)──► kernel
//!   bytes arrive ──CQE (n, F_BUFFER | F_MORE)──► slot's queue ──wake cid (queue was empty)
//!   next() ──takes the oldest queued completion──► RecvBuf
//!   the kernel ends it (end of file, an error, the pool ran dry: a CQE without F_MORE)
//!        ──► that completion is the last; the next next() arms a new one
//!   dropped ──► queued buffers go back, ASYNC_CANCEL; later CQEs give theirs back
//! ```
//!
//! **Bounded.** A stream whose reader falls behind would move its socket's
//! bytes into the pool (where the single-shot receive leaves them in the
//! socket, under TCP's flow control) and starve the worker's other
//! connections of buffers: with [`STREAM_CAP`] completions queued, the driver
//! cancels the stream, and the reader re-arms it once it has caught up.
//!
//! **Follows its reader.** Only the worker that owns a ring delivers its
//! completions. A stream armed on a worker that is then held in reserve
//! (`park`'s module docs: one worker while the machine is crowded) would wake
//! that worker for every message, to hand the reader to the worker that polls
//! it — where single-shot operations move to the poller's ring by themselves.
//! A reader that finds nothing queued on a ring whose owner is in reserve
//! stops the stream (as the cap does); its `ECANCELED` comes after every
//! completion posted before, and the reader arms the next on its own ring.
//!
//! **Fallbacks.** With no pool on the ring, or none of its buffers free
//! (`ENOBUFS` ends the stream), one receive goes into a buffer of its own, as
//! [`recv_pooled`] does; a kernel without multishot receive (`EINVAL` on the
//! first completion) turns the stream into single-shot pooled receives.
//!
//! [`recv_pooled`]: super::recv_pooled

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use io_uring::{opcode, types};

use super::driver::{current_local, Push, Ring, Waiter};
use super::op::flush_unsubmitted;
use super::pool::{self, RecvBuf, GROUP};

/// Completions a stream may hold before the driver stops it (see the module
/// docs); its reader re-arms it when it has taken them.
pub(crate) const STREAM_CAP: usize = 8;

/// The stream's operation in the kernel.
struct Armed {
    ring: Arc<Ring>,
    key: u64,
    seq: u64,
}

/// What one completion (or its absence) means to [`RecvStream::next`].
enum Item {
    Got(io::Result<RecvBuf>),
    /// No pool on this ring, or none of its buffers free: receive otherwise.
    NoBuffer,
    /// The kernel does not know multishot receive.
    Unsupported,
}

/// Received bytes from one socket, one multishot receive at a time: see the
/// module docs. Made by [`TcpStream::recv_stream`](crate::net::TcpStream::recv_stream)
/// or [`RecvStream::new`].
///
/// ```
/// use ss_runtime::net::{TcpListener, TcpStream};
/// use ss_runtime::Runtime;
///
/// let rt = Runtime::builder().workers(1).build()?;
/// rt.block_on(async {
///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
///     let addr = listener.local_addr().unwrap();
///     let client = TcpStream::connect(addr).await.unwrap();
///     let (server, _) = listener.accept().await.unwrap();
///     let mut incoming = server.recv_stream();
///     for word in [&b"one"[..], b"two", b"three"] {
///         client.send_all(word.to_vec()).await.0.unwrap();
///         let mut got = Vec::new();
///         while got.len() < word.len() {
///             got.extend_from_slice(&incoming.next().await.unwrap());
///         }
///         assert_eq!(got, word);
///     }
///     drop(client);
///     // End of file: an empty buffer.
///     assert!(incoming.next().await.unwrap().is_empty());
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct RecvStream {
    fd: RawFd,
    armed: Option<Armed>,
    /// Some completion has come back (an `EINVAL` after one is the socket's,
    /// not a kernel without multishot receive).
    got_any: bool,
    /// The kernel has no multishot receive: single-shot pooled receives.
    single: bool,
}

impl std::fmt::Debug for RecvStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvStream")
            .field("fd", &self.fd)
            .field("armed", &self.armed.is_some())
            .field("single", &self.single)
            .finish()
    }
}

impl RecvStream {
    /// A stream of the bytes socket `fd` receives; nothing is armed before the
    /// first [`next`](RecvStream::next).
    ///
    /// The kernel holds the socket for as long as the stream is armed: drop
    /// the stream before (or when) you close the socket.
    pub fn new(fd: impl AsFd) -> RecvStream {
        RecvStream {
            fd: fd.as_fd().as_raw_fd(),
            armed: None,
            got_any: false,
            single: false,
        }
    }

    /// The next bytes received, in order: a buffer of the worker's pool (or,
    /// when it had none free, one of its own: see [`RecvBuf`]). An empty
    /// buffer means the peer closed its side.
    ///
    /// Cancel-safe while the stream is armed: dropping this future loses
    /// nothing (the bytes stay queued for the next call). Only the fallback's
    /// one receive into a buffer of its own, if dropped in flight, loses what
    /// it had taken, as [`recv`](super::recv) does.
    ///
    /// # Errors
    /// The errno of the receive (`ECONNRESET`, …); the next call arms a new
    /// receive.
    pub async fn next(&mut self) -> io::Result<RecvBuf> {
        if !self.single {
            match poll_fn(|cx| self.poll_item(cx)).await {
                Item::Got(r) => return r,
                Item::NoBuffer => return pool::recv_owned(self.fd).await,
                Item::Unsupported => self.single = true,
            }
        }
        pool::recv_pooled_fd(self.fd).await
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Item> {
        loop {
            if self.armed.is_none() {
                match self.arm(cx) {
                    Poll::Ready(None) => {}
                    Poll::Ready(Some(item)) => return Poll::Ready(item),
                    // Left for the batch (its waiter is recorded), or the SQ
                    // was full (woken to retry).
                    Poll::Pending => return Poll::Pending,
                }
            }
            let Some(Armed { ring, key, seq }) = &self.armed else {
                unreachable!("armed just above")
            };
            if !flush_unsubmitted(ring, *seq, cx) {
                return Poll::Pending;
            }
            let Some(((res, flags), last)) = ring.poll_stream(*key, cx.waker()) else {
                if ring.owner_reserved() {
                    // Follow the reader off a worker held in reserve; the
                    // stop's `ECANCELED` wakes it to arm on its own ring.
                    ring.stop_stream(*key);
                }
                return Poll::Pending;
            };
            let first = !self.got_any;
            let item = if last && res == -libc::ECANCELED {
                // The driver stopped it (too many queued, or to follow its
                // reader): arm again.
                if let Some(pool) = ring.pool() {
                    pool.give_back_selected(flags); // none expected
                }
                None
            } else {
                Some(match (res, ring.pool()) {
                    (r, _) if r == -libc::EINVAL && first => Item::Unsupported,
                    (r, Some(pool)) => match pool::completed(pool, r, flags) {
                        pool::Pooled::Got(got) => Item::Got(got),
                        pool::Pooled::NoBuffer => Item::NoBuffer,
                    },
                    // Armed only on a ring with a pool.
                    (_, None) => Item::NoBuffer,
                })
            };
            self.got_any = true;
            if last {
                self.armed = None;
            }
            match item {
                Some(item) => return Poll::Ready(item),
                None => continue,
            }
        }
    }

    /// Arms the multishot receive on the calling worker's ring: `Ready(None)`
    /// when armed and submitted, `Pending` when armed but left for the batch
    /// (the completion wakes the waiter) or when the SQ is full (woken to
    /// retry), `Ready(Some(item))` when it cannot be armed.
    fn arm(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let local = match current_local() {
            Ok(l) => l,
            Err(e) => return Poll::Ready(Some(Item::Got(Err(e)))),
        };
        let ring = local.ring();
        if ring.pool().is_none() {
            return Poll::Ready(Some(Item::NoBuffer));
        }
        let key = match ring.register_stream(Waiter::of(cx.waker(), ring.exec())) {
            Ok(key) => key,
            Err(e) => return Poll::Ready(Some(Item::Got(Err(e)))),
        };
        // No length: each receive fills up to one whole buffer (the first
        // kernels with multishot receive refuse a length on it).
        let sqe = opcode::RecvMulti::new(types::Fd(self.fd), GROUP)
            .build()
            .user_data(key);
        // SAFETY: the SQE points at no memory of ours; the buffers it fills are
        // the pool's, which outlives every operation of its ring (`pool`'s
        // module docs, "Lifetime").
        match unsafe { local.push(&sqe) } {
            Push::Queued(seq) => {
                ring.stats().streams.fetch_add(1, Ordering::Relaxed);
                self.armed = Some(Armed {
                    ring: ring.clone(),
                    key,
                    seq,
                });
                // Batching as `Op::start`: submit now only if this CPU would
                // otherwise go idle; else the worker submits the batch within
                // a few polls and the completion wakes the waiter.
                if ring.exec().ready_bitmap().is_empty() {
                    local.flush();
                    Poll::Ready(None)
                } else {
                    ring.stats().deferred.fetch_add(1, Ordering::Relaxed);
                    Poll::Pending
                }
            }
            Push::Full => {
                ring.unregister(key);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        if let Some(Armed { ring, key, .. }) = self.armed.take() {
            ring.abandon_stream(key);
        }
    }
}
