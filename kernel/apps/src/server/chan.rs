//! A bounded queue between two coroutines of one process (one sends, one
//! receives), possibly polled on different harts. Waiting is blocking, not
//! spinning: a coroutine that finds the queue full (or empty) leaves its
//! waker and returns `Pending`; the other side wakes it.
//!
//! Dropping the [`Sender`] ends the stream: the receiver takes what is left,
//! then `None`. Dropping the [`Receiver`] drops what is queued and makes every
//! later `send` fail, handing the item back.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::future::poll_fn;
use core::task::{Poll, Waker};

use spin::Mutex;

struct State<T> {
    items: VecDeque<T>,
    capacity: usize,
    /// The receiver waits for an item (or the end).
    receiver: Option<Waker>,
    /// The sender waits for room (or the end).
    sender: Option<Waker>,
    sender_alive: bool,
    receiver_alive: bool,
}

/// The sending end (one per queue).
pub struct Sender<T>(Arc<Mutex<State<T>>>);

/// The receiving end (one per queue).
pub struct Receiver<T>(Arc<Mutex<State<T>>>);

/// A queue holding at most `capacity` items (at least 1).
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let capacity = capacity.max(1);
    let state = Arc::new(Mutex::new(State {
        items: VecDeque::with_capacity(capacity),
        capacity,
        receiver: None,
        sender: None,
        sender_alive: true,
        receiver_alive: true,
    }));
    (Sender(state.clone()), Receiver(state))
}

/// Wakes `w`, if any (called with no lock held).
fn wake(w: Option<Waker>) {
    if let Some(w) = w {
        w.wake();
    }
}

impl<T> Sender<T> {
    /// Queues `item`, waiting while the queue is full.
    ///
    /// # Errors
    /// The item back, when the receiver is gone.
    pub async fn send(&self, item: T) -> Result<(), T> {
        let mut item = Some(item);
        poll_fn(|cx| {
            let mut s = self.0.lock();
            let Some(it) = item.take() else {
                return Poll::Ready(Ok(()));
            };
            if !s.receiver_alive {
                return Poll::Ready(Err(it));
            }
            if s.items.len() >= s.capacity {
                item = Some(it);
                s.sender = Some(cx.waker().clone());
                return Poll::Pending;
            }
            s.items.push_back(it);
            let w = s.receiver.take();
            drop(s);
            wake(w);
            Poll::Ready(Ok(()))
        })
        .await
    }
}

impl<T> Receiver<T> {
    /// The next item, waiting while the queue is empty; `None` once the
    /// sender is gone and the queue is empty.
    pub async fn recv(&self) -> Option<T> {
        poll_fn(|cx| {
            let mut s = self.0.lock();
            match s.items.pop_front() {
                Some(it) => {
                    let w = s.sender.take();
                    drop(s);
                    wake(w);
                    Poll::Ready(Some(it))
                }
                None if !s.sender_alive => Poll::Ready(None),
                None => {
                    s.receiver = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.sender_alive = false;
        s.sender = None;
        let w = s.receiver.take();
        drop(s);
        wake(w);
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.receiver_alive = false;
        s.receiver = None;
        let left = core::mem::take(&mut s.items);
        let w = s.sender.take();
        drop(s);
        drop(left);
        wake(w);
    }
}
