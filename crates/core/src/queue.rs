//! The ready queues: one FIFO per priority level, plus the bitmap of non-empty
//! levels.
//!
//! Each queue is an intrusive doubly-linked list threaded through the coroutine
//! control blocks (`Task::links`), so every operation is O(1) and none allocates:
//!
//! - push at the tail of the coroutine's level;
//! - pop the head of the most important non-empty level (lowest set bit);
//! - unlink any queued coroutine (cancel) or move it to the tail of another level
//!   (`reprio` of a ready coroutine).
//!
//! Everything here runs with the executor's ready lock held; that lock is what
//! makes `&mut ReadyQueues` exclusive, and the links of every task are touched
//! only through it. A queued task is owned by its queue: pushing turns an
//! `Arc<DynTask>` into a raw pointer (`Arc::into_raw`), and popping or unlinking
//! turns it back, so a queued task can never be freed under the queue.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ptr::NonNull;

use ss_abi::{Levels, Priority};

use crate::platform::Platform;
use crate::task::{DynTask, NOT_QUEUED};

type Link<P> = Option<NonNull<DynTask<P>>>;

struct List<P: Platform> {
    head: Link<P>,
    tail: Link<P>,
}

/// The per-level FIFOs. See the module docs.
pub(crate) struct ReadyQueues<P: Platform> {
    lists: Box<[List<P>]>,
    bits: u64,
    len: usize,
}

// SAFETY: the raw pointers are counted references to `DynTask<P>`, which is `Send`
// and `Sync`; the queues move between threads only inside the ready lock.
unsafe impl<P: Platform> Send for ReadyQueues<P> {}

/// The pointer a queue keeps for a task, with the provenance of the whole `Arc`
/// allocation (which `Arc::from_raw` needs later; a pointer made from `&DynTask`
/// would not do, as Miri's Stacked Borrows check showed).
#[inline]
fn raw<P: Platform>(task: &Arc<DynTask<P>>) -> NonNull<DynTask<P>> {
    // SAFETY: `Arc::as_ptr` is never null.
    unsafe { NonNull::new_unchecked(Arc::as_ptr(task).cast_mut()) }
}

impl<P: Platform> ReadyQueues<P> {
    pub(crate) fn new(levels: Levels) -> Self {
        let lists = (0..levels.count())
            .map(|_| List {
                head: None,
                tail: None,
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        ReadyQueues {
            lists,
            bits: 0,
            len: 0,
        }
    }

    /// The bitmap of non-empty levels.
    #[inline]
    pub(crate) fn bits(&self) -> u64 {
        self.bits
    }

    /// How many coroutines are queued.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends `task` to the queue of its current priority.
    ///
    /// The task must not be queued already (its state word makes the caller the
    /// one and only pusher).
    #[inline]
    pub(crate) fn push(&mut self, task: Arc<DynTask<P>>) {
        let level = task.priority().level();
        // SAFETY: `into_raw` never returns null.
        let raw = unsafe { NonNull::new_unchecked(Arc::into_raw(task).cast_mut()) };
        // SAFETY: `raw` is a live task we now own a count of; `link_tail` needs the
        // ready lock, which `&mut self` stands for.
        unsafe { self.link_tail(raw, level) };
        self.len += 1;
    }

    /// Removes and returns the head of the most important non-empty level.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<Arc<DynTask<P>>> {
        if self.bits == 0 {
            return None;
        }
        let level = self.bits.trailing_zeros() as usize;
        let head = self.lists[level].head?;
        // SAFETY: `head` is queued at `level` (bitmap and lists agree under the lock).
        unsafe { self.unlink(head) };
        self.len -= 1;
        // SAFETY: the queue owned one count of `head`, taken back here.
        Some(unsafe { Arc::from_raw(head.as_ptr().cast_const()) })
    }

    /// Whether `task` is in a queue.
    #[inline]
    pub(crate) fn contains(&self, task: &DynTask<P>) -> bool {
        // SAFETY: we hold the ready lock (`&self` of the locked value), so the
        // links are not being written.
        task.links.with(|l| unsafe { (*l).level }) != NOT_QUEUED
    }

    /// Removes `task` if it is queued, returning the queue's reference to it.
    pub(crate) fn remove(&mut self, task: &Arc<DynTask<P>>) -> Option<Arc<DynTask<P>>> {
        if !self.contains(task) {
            return None;
        }
        let raw = raw(task);
        // SAFETY: queued (checked above), under the lock.
        unsafe { self.unlink(raw) };
        self.len -= 1;
        // SAFETY: the queue owned one count of `task`, taken back here.
        Some(unsafe { Arc::from_raw(raw.as_ptr().cast_const()) })
    }

    /// Moves `task`, if queued, to the tail of the queue of `task.priority()`.
    ///
    /// Returns whether it was queued.
    pub(crate) fn requeue_at_priority(&mut self, task: &Arc<DynTask<P>>) -> bool {
        // SAFETY: under the lock.
        let old = task.links.with(|l| unsafe { (*l).level });
        if old == NOT_QUEUED {
            return false;
        }
        let new = task.priority().level();
        if new != old {
            let raw = raw(task);
            // SAFETY: queued at `old`, under the lock; relinking keeps the count.
            unsafe {
                self.unlink(raw);
                self.link_tail(raw, new);
            }
        }
        true
    }

    /// Takes every queued task out (executor shutdown).
    pub(crate) fn drain(&mut self) -> Vec<Arc<DynTask<P>>> {
        let mut out = Vec::with_capacity(self.len);
        while let Some(t) = self.pop() {
            out.push(t);
        }
        out
    }

    /// # Safety
    /// Ready lock held; `raw` is live, not queued, and carries a count for the queue.
    #[inline]
    unsafe fn link_tail(&mut self, raw: NonNull<DynTask<P>>, level: u8) {
        let list = &mut self.lists[usize::from(level)];
        let old_tail = list.tail;
        // SAFETY: `raw` is live and its links are ours under the lock.
        unsafe {
            raw.as_ref().links.with_mut(|l| {
                (*l).prev = old_tail;
                (*l).next = None;
                (*l).level = level;
            });
        }
        match old_tail {
            None => list.head = Some(raw),
            // SAFETY: `t` is queued at this level, hence live; under the lock.
            Some(t) => unsafe { t.as_ref().links.with_mut(|l| (*l).next = Some(raw)) },
        }
        list.tail = Some(raw);
        self.bits |= Priority::new(level).map_or(0, Priority::bit);
    }

    /// # Safety
    /// Ready lock held; `raw` is queued (so live).
    #[inline]
    unsafe fn unlink(&mut self, raw: NonNull<DynTask<P>>) {
        // SAFETY: `raw` is queued, hence live; its links are ours under the lock.
        let (prev, next, level) = unsafe {
            raw.as_ref().links.with_mut(|l| {
                let out = ((*l).prev, (*l).next, (*l).level);
                (*l).prev = None;
                (*l).next = None;
                (*l).level = NOT_QUEUED;
                out
            })
        };
        let list = &mut self.lists[usize::from(level)];
        match prev {
            None => list.head = next,
            // SAFETY: a queued neighbour is live; under the lock.
            Some(p) => unsafe { p.as_ref().links.with_mut(|l| (*l).next = next) },
        }
        match next {
            None => list.tail = prev,
            // SAFETY: a queued neighbour is live; under the lock.
            Some(n) => unsafe { n.as_ref().links.with_mut(|l| (*l).prev = prev) },
        }
        if list.head.is_none() {
            self.bits &= !(1u64 << level);
        }
    }
}

impl<P: Platform> Drop for ReadyQueues<P> {
    fn drop(&mut self) {
        // Give back the queue's counts; shutdown normally drained it already.
        while self.pop().is_some() {}
    }
}
