//! The request and response queues between a connection's components: bounded,
//! one producer and one consumer, closable from either end, with a free list
//! of buffers so that a connection in its steady state allocates nothing.
//!
//! A component that must wait (nothing to take, no room to put) registers
//! itself and returns `Pending`; the other end wakes it when that changes. How
//! a waiting component is remembered and woken is the model's ([`Wakeup`]): by
//! coroutine id in ss-runtime (the paper's `wake(cid)`), by `Waker` in tokio
//! and monoio, by unparking the thread in the thread models.
//!
//! Closing: the producer closes when its input ends (no more items: the
//! consumer takes what is left, then sees the end); the consumer closes when it
//! gives up (the producer's next put fails, and it stops). Either close wakes
//! both ends.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Items a queue holds before its producer waits. Enough for a client that
/// pipelines a few dozen requests; small enough that a peer that sends and
/// never reads holds at most this many answers (of at most 16 KiB) per queue.
pub(crate) const QUEUE_CAP: usize = 32;

/// Buffers a queue's free list keeps for its producer: a closed-loop
/// connection has one request (and one answer) in flight, so two spare ones
/// cover it; more would only hold what a burst of pipelined requests left.
pub(crate) const FREE_KEEP: usize = 2;

/// The largest buffer worth keeping for reuse: a frame of the paper's 15 × 15
/// and a little more (an answer of 15 × 15 is 1 816 bytes). A bigger one —
/// a burst of 64 × 64 frames — goes back to the allocator: an idle
/// connection keeps only small buffers. (Until 2026-11-29 the free list kept
/// up to 32 buffers of any size: after one burst an idle connection held
/// 0.4–1.4 MiB, found in review.)
pub(crate) const KEEP_BYTES: usize = 4096;

/// The largest batch buffer the sender keeps between sends (what one send of
/// a few queued small answers needs; a burst's is dropped).
pub(crate) const BATCH_KEEP_BYTES: usize = 4 * KEEP_BYTES;

/// How a model remembers a waiting component and wakes it.
pub(crate) trait Wakeup: Send + 'static {
    /// The component polled with `cx`.
    fn register(cx: &Context<'_>) -> Self;
    /// Makes that component runnable again.
    fn wake(self);
}

impl Wakeup for Waker {
    fn register(cx: &Context<'_>) -> Self {
        cx.waker().clone()
    }

    fn wake(self) {
        Waker::wake(self);
    }
}

/// The other end is gone: nothing more can be put.
#[derive(Debug)]
pub(crate) struct Closed;

/// A bounded single-producer single-consumer queue (see the module docs).
pub(crate) struct Queue<T, W> {
    state: Mutex<State<T, W>>,
}

struct State<T, W> {
    items: VecDeque<T>,
    closed: bool,
    /// Buffers the consumer is done with, for the producer to reuse.
    free: Vec<Vec<u8>>,
    /// The consumer, waiting for an item.
    consumer: Option<W>,
    /// The producer, waiting for room.
    producer: Option<W>,
}

impl<T, W: Wakeup> Queue<T, W> {
    pub(crate) fn new() -> Queue<T, W> {
        Queue {
            state: Mutex::new(State {
                // Grows on first use (an idle connection holds no room).
                items: VecDeque::new(),
                closed: false,
                free: Vec::new(),
                consumer: None,
                producer: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T, W>> {
        // A panic while holding the lock leaves nothing half-done: every
        // critical section is a few field updates.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `item` at the back, waiting for room.
    ///
    /// # Errors
    /// [`Closed`] once either end has closed the queue.
    pub(crate) async fn put(&self, item: T) -> Result<(), Closed> {
        let mut item = Some(item);
        poll_fn(|cx| {
            let mut s = self.lock();
            if s.closed {
                return Poll::Ready(Err(Closed));
            }
            if s.items.len() >= QUEUE_CAP {
                s.producer = Some(W::register(cx));
                return Poll::Pending;
            }
            if let Some(item) = item.take() {
                s.items.push_back(item);
            }
            let consumer = s.consumer.take();
            drop(s);
            if let Some(w) = consumer {
                w.wake();
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Takes the front item, waiting for one; `None` once the queue is closed
    /// and empty.
    pub(crate) async fn take(&self) -> Option<T> {
        poll_fn(|cx| self.poll_with(cx, |items| items.pop_front())).await
    }

    /// Waits for at least one item (or the end) and passes the items to `f`,
    /// under the lock; `None` once closed and empty.
    async fn take_with<R>(&self, mut f: impl FnMut(&mut VecDeque<T>) -> R) -> Option<R> {
        poll_fn(|cx| self.poll_with(cx, |items| Some(f(items)))).await
    }

    fn poll_with<R>(
        &self,
        cx: &Context<'_>,
        f: impl FnOnce(&mut VecDeque<T>) -> Option<R>,
    ) -> Poll<Option<R>> {
        let mut s = self.lock();
        if s.items.is_empty() {
            if s.closed {
                return Poll::Ready(None);
            }
            s.consumer = Some(W::register(cx));
            return Poll::Pending;
        }
        let answer = f(&mut s.items);
        let producer = s.producer.take();
        drop(s);
        if let Some(w) = producer {
            w.wake();
        }
        Poll::Ready(answer)
    }

    /// Closes the queue from either end and wakes both.
    pub(crate) fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        let (a, b) = (s.consumer.take(), s.producer.take());
        drop(s);
        for w in [a, b].into_iter().flatten() {
            w.wake();
        }
    }

    /// A cleared buffer from the free list (or a new one).
    pub(crate) fn recycled(&self) -> Vec<u8> {
        let mut b = self.lock().free.pop().unwrap_or_default();
        b.clear();
        b
    }

    /// Gives a buffer back for the producer to reuse (kept if the free list
    /// is short and the buffer small: [`FREE_KEEP`], [`KEEP_BYTES`]).
    pub(crate) fn recycle(&self, buf: Vec<u8>) {
        if buf.capacity() > KEEP_BYTES {
            return;
        }
        let mut s = self.lock();
        if s.free.len() < FREE_KEEP {
            s.free.push(buf);
        }
    }
}

impl<W: Wakeup> Queue<Vec<u8>, W> {
    /// Waits for at least one buffer (or the end), then appends every queued
    /// buffer to `out` and recycles them: the sender's batch. `false` once the
    /// queue is closed and empty.
    pub(crate) async fn take_all_into(&self, out: &mut Vec<u8>) -> bool {
        let mut spent = Vec::new();
        let got = self
            .take_with(|items| {
                for b in items.drain(..) {
                    out.extend_from_slice(&b);
                    spent.push(b);
                }
            })
            .await
            .is_some();
        for b in spent {
            self.recycle(b);
        }
        got
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Drives a future on this thread, parking while it is pending.
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        super::super::threads::block_on(f)
    }

    #[test]
    fn items_pass_in_order_and_the_end_is_seen_after_them() {
        let q: Arc<Queue<u32, Waker>> = Arc::new(Queue::new());
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    block_on(q.put(i)).unwrap();
                }
                q.close();
            })
        };
        let mut got = Vec::new();
        while let Some(i) = block_on(q.take()) {
            got.push(i);
        }
        producer.join().unwrap();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn a_consumer_that_closes_stops_the_producer() {
        let q: Arc<Queue<u32, Waker>> = Arc::new(Queue::new());
        let producer = {
            let q = q.clone();
            // Fills the queue, then waits for room until the close.
            std::thread::spawn(move || {
                (0..)
                    .map(|i| block_on(q.put(i)))
                    .take_while(Result::is_ok)
                    .count()
            })
        };
        while block_on(q.take()) != Some(5) {}
        q.close();
        let put = producer.join().unwrap();
        assert!((6..=6 + QUEUE_CAP).contains(&put), "{put}");
    }

    #[test]
    fn the_sender_takes_everything_queued_at_once() {
        let q: Queue<Vec<u8>, Waker> = Queue::new();
        block_on(async {
            q.put(b"ab".to_vec()).await.unwrap();
            q.put(b"cd".to_vec()).await.unwrap();
        });
        let mut out = Vec::new();
        assert!(block_on(q.take_all_into(&mut out)));
        assert_eq!(out, b"abcd");
        assert_eq!(q.recycled().capacity(), 2);
        q.close();
        assert!(!block_on(q.take_all_into(&mut out)));
    }

    #[test]
    fn the_free_list_keeps_a_few_small_buffers_only() {
        let q: Queue<Vec<u8>, Waker> = Queue::new();
        for _ in 0..10 {
            q.recycle(Vec::with_capacity(KEEP_BYTES));
            q.recycle(Vec::with_capacity(KEEP_BYTES + 1));
        }
        let kept: Vec<usize> = (0..FREE_KEEP + 1)
            .map(|_| q.recycled().capacity())
            .collect();
        // FREE_KEEP small ones, then a fresh (empty) one: nothing big kept.
        let mut want = vec![KEEP_BYTES; FREE_KEEP];
        want.push(0);
        assert_eq!(kept, want);
    }
}
