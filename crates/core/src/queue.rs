//! The ready queues: one queue per priority level, plus the bitmap of non-empty
//! levels.
//!
//! Each queue is an intrusive doubly-linked list threaded through the coroutine
//! control blocks (`Task::links`), so every operation is O(1) and none allocates:
//!
//! - push *cold* at the tail of the coroutine's level (spawn, a yield, a
//!   wake-up from anywhere but a poll on a CPU of this executor), or push
//!   *hot* at its head (a wake-up from inside a poll: the CPU that issued it
//!   looks at the queues as soon as the poll ends and runs it next, while
//!   what it touches is still in that CPU's cache);
//! - pop the head of the most important non-empty level (lowest set bit) —
//!   unless that level has popped [`HOT_RUN`] hot coroutines in a row: then
//!   its hot coroutines, in their order, join the tail as cold ones, and the
//!   oldest cold coroutine goes;
//! - unlink any queued coroutine (cancel) or move it to the tail of another level
//!   (`reprio` of a ready coroutine).
//!
//! A level's list is always its hot coroutines (newest first) followed by its
//! cold ones (oldest first): hot pushes only prepend, cold pushes only append,
//! and the demotion moves the hot run behind the cold ones in one splice.
//! `cold` marks the first cold coroutine, so every operation stays O(1).
//!
//! Bounded waits: a hot coroutine is popped, or demoted, within [`HOT_RUN`] + 1
//! pops at its level; a cold one waits for those ahead of it, each served
//! within [`HOT_RUN`] + 1 pops. No pattern of wake-ups starves a coroutine;
//! without hot pushes (a platform whose `hot_wake` says no) the order is the
//! paper's FIFO among equals.
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
    /// The first cold coroutine (everything from it to the tail is cold).
    cold: Link<P>,
    /// Hot coroutines popped in a row here since a cold one was, or since the
    /// list was last empty.
    hot_run: u32,
}

/// How many hot coroutines in a row one level serves before its hot ones are
/// demoted behind the coroutines that waited there (see
/// [`Park::hot_wake`](crate::platform::Park::hot_wake)).
///
/// Chosen by measurement (`docs/runtime.md`): one worker serving 1 024
/// back-to-back connections answered 33–36 k requests/s in FIFO order,
/// 39–53 k with a run of 15 (p99 53–74 ms), 40–52 k with 63 (p99 122–163
/// ms); tokio 39–46 k with p99 166–182 ms. Three, tokio's bound on its LIFO
/// slot, kept too little of the gain (35–46 k).
pub const HOT_RUN: u32 = 15;

impl<P: Platform> List<P> {
    /// Moves the hot coroutines, in their order, behind the cold ones: all
    /// are cold now. Returns the new head (the oldest formerly cold one, or
    /// the first formerly hot one if there was no cold one).
    ///
    /// # Safety
    /// Ready lock held; the list is not empty.
    unsafe fn demote_hot(&mut self) -> NonNull<DynTask<P>> {
        let (Some(head), Some(tail)) = (self.head, self.tail) else {
            unreachable!("demote_hot on an empty list")
        };
        let Some(cold) = self.cold else {
            self.cold = Some(head);
            return head;
        };
        if same(cold, head) {
            return head;
        }
        // SAFETY: `cold`, `head` and `tail` are queued here, hence live, and
        // their links are ours under the lock; `cold` is not the head, so it
        // has a predecessor (the last hot one).
        unsafe {
            let last_hot = cold.as_ref().links.with(|l| (*l).prev).unwrap_unchecked();
            cold.as_ref().links.with_mut(|l| (*l).prev = None);
            last_hot.as_ref().links.with_mut(|l| (*l).next = None);
            tail.as_ref().links.with_mut(|l| (*l).next = Some(head));
            head.as_ref().links.with_mut(|l| (*l).prev = Some(tail));
            self.head = Some(cold);
            self.tail = Some(last_hot);
        }
        cold
    }
}

/// The per-level queues. See the module docs.
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

/// Whether two queue entries are the same task (by address: the metadata of
/// a `dyn` pointer may differ between copies of one vtable).
#[inline]
fn same<P: Platform>(a: NonNull<DynTask<P>>, b: NonNull<DynTask<P>>) -> bool {
    core::ptr::addr_eq(a.as_ptr(), b.as_ptr())
}

impl<P: Platform> ReadyQueues<P> {
    pub(crate) fn new(levels: Levels) -> Self {
        let lists = (0..levels.count())
            .map(|_| List {
                head: None,
                tail: None,
                cold: None,
                hot_run: 0,
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

    /// Queues `task` at its current priority: cold (at the tail) or hot (at
    /// the head); see the module docs.
    ///
    /// The task must not be queued already (its state word makes the caller the
    /// one and only pusher).
    #[inline]
    pub(crate) fn push(&mut self, task: Arc<DynTask<P>>, hot: bool) {
        let level = task.priority().level();
        // SAFETY: `into_raw` never returns null.
        let raw = unsafe { NonNull::new_unchecked(Arc::into_raw(task).cast_mut()) };
        // SAFETY: `raw` is a live task we now own a count of; linking needs the
        // ready lock, which `&mut self` stands for.
        unsafe { self.link(raw, level, hot) };
        self.len += 1;
    }

    /// Removes and returns the next coroutine of the most important non-empty
    /// level: its head, or its oldest cold coroutine once [`HOT_RUN`] hot ones
    /// in a row have gone first.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<Arc<DynTask<P>>> {
        if self.bits == 0 {
            return None;
        }
        let level = self.bits.trailing_zeros() as usize;
        let list = &mut self.lists[level];
        let head = list.head?;
        let take = match list.cold {
            // No hot coroutine here: the oldest cold one.
            Some(cold) if same(cold, head) => {
                list.hot_run = 0;
                cold
            }
            _ if list.hot_run < HOT_RUN => {
                list.hot_run += 1;
                head
            }
            // The hot ones have had their run: they join the cold ones, at
            // the tail, and the oldest cold one goes.
            _ => {
                list.hot_run = 0;
                // SAFETY: under the lock, on the list of a non-empty level.
                unsafe { list.demote_hot() }
            }
        };
        // SAFETY: `take` is queued at `level` (bitmap and lists agree under the lock).
        unsafe { self.unlink(take) };
        self.len -= 1;
        // SAFETY: the queue owned one count of `take`, taken back here.
        Some(unsafe { Arc::from_raw(take.as_ptr().cast_const()) })
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
                self.link(raw, new, false);
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

    /// Links `raw` at the head (`hot`) or the tail (cold) of `level`.
    ///
    /// # Safety
    /// Ready lock held; `raw` is live, not queued, and carries a count for the queue.
    #[inline]
    unsafe fn link(&mut self, raw: NonNull<DynTask<P>>, level: u8, hot: bool) {
        let list = &mut self.lists[usize::from(level)];
        let (prev, next) = if hot {
            (None, list.head)
        } else {
            (list.tail, None)
        };
        // SAFETY: `raw` is live and its links are ours under the lock.
        unsafe {
            raw.as_ref().links.with_mut(|l| {
                (*l).prev = prev;
                (*l).next = next;
                (*l).level = level;
            });
        }
        match prev {
            None => list.head = Some(raw),
            // SAFETY: a queued neighbour is live; under the lock.
            Some(p) => unsafe { p.as_ref().links.with_mut(|l| (*l).next = Some(raw)) },
        }
        match next {
            None => list.tail = Some(raw),
            // SAFETY: a queued neighbour is live; under the lock.
            Some(n) => unsafe { n.as_ref().links.with_mut(|l| (*l).prev = Some(raw)) },
        }
        if !hot && list.cold.is_none() {
            list.cold = Some(raw);
        }
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
        if list.cold.is_some_and(|c| same(c, raw)) {
            list.cold = next;
        }
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
            list.hot_run = 0;
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
