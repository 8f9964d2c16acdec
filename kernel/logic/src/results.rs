//! The store of asynchronous-call results a process keeps (in its shared
//! scheduler code, the vDSO) between the completion queue and the coroutines
//! that take them.
//!
//! A coroutine has one call at a time, so it has at most one result here,
//! kept with the call's operation id (what the submission returned; ids rise
//! with every call of the process). A coroutine that abandoned a call and
//! made another asks for the newer call's id: the older call's result is
//! never handed out for it — it is dropped when asked for, or replaced when
//! the newer one arrives — and an older result arriving late never replaces a
//! newer one. (Before ids, a completion named only the coroutine, and an
//! abandoned call's result answered the next call.)
//!
//! **Nothing a coroutine still waits for is ever dropped.** An earlier store
//! kept 1 024 results and dropped the oldest; when a flood of 1 500
//! connections closed at once, more than that many waited between two polls,
//! and every coroutine whose result was dropped waited for good — the
//! connection kept open beside the flood among them (its 64×64 request
//! stalled with 4 KiB unread in the kernel and no read in flight).
//!
//! What nothing bounds otherwise — results of coroutines that exited without
//! taking them — is swept out once the store holds more than
//! [`Results::SWEEP`] results and more than twice as many as there are
//! coroutines alive.
//!
//! **A result nobody will take is handed back, never dropped, once it is
//! released.** An `accept`'s result is a new descriptor: dropped, its
//! connection stays open for the life of the process. A coroutine that drops
//! a finished `accept` untaken releases it ([`Results::release`]): the store
//! hands the result back at once if it holds it, or when it arrives
//! ([`Put::Released`]), for the caller to close. (The user library used to
//! take it itself, draining the queue in a bounded loop; while another
//! thread was draining, the loop could end first, and the result then waited
//! here until the coroutine's next call replaced it or its exit swept it:
//! dropped, the connection open.)

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

/// A result not yet taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Taken {
    /// The call's result (a byte count or `-(SysError)`).
    pub result: i64,
    /// The kernel's time when the call finished.
    pub stamp: u64,
}

/// What [`Results::put`] did with a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// Stored for its coroutine to take; the store now holds this many.
    Stored(usize),
    /// Not stored: its call was released ([`Results::release`]); the caller
    /// disposes of it (closes the descriptor).
    Released(Taken),
}

/// Results not yet taken, by coroutine id: `(op, result)`.
#[derive(Debug, Default)]
pub struct Results {
    by_cid: BTreeMap<u64, (u64, Taken)>,
    /// Calls `(cid, op)` released before their result arrived.
    released: BTreeSet<(u64, u64)>,
}

impl Results {
    /// Results beyond which a sweep is worth looking at.
    pub const SWEEP: usize = 1024;

    /// An empty store.
    pub const fn new() -> Results {
        Results {
            by_cid: BTreeMap::new(),
            released: BTreeSet::new(),
        }
    }

    /// Stores the result of `cid`'s call `op`, replacing one of an earlier
    /// call (which it abandoned) but never one of a later call — unless the
    /// call was released, when the result is handed back instead.
    pub fn put(&mut self, cid: u64, op: u64, result: i64, stamp: u64) -> Put {
        if self.released.remove(&(cid, op)) {
            return Put::Released(Taken { result, stamp });
        }
        let new = (op, Taken { result, stamp });
        self.by_cid
            .entry(cid)
            .and_modify(|held| {
                if held.0 <= op {
                    *held = new;
                }
            })
            .or_insert(new);
        Put::Stored(self.by_cid.len())
    }

    /// `cid` will never take the result of its finished call `op` (it
    /// dropped the call's future after the kernel said the result was on its
    /// way): the result if it is here (taken out), else `None`, and the
    /// result is handed back by [`Results::put`] when it arrives.
    pub fn release(&mut self, cid: u64, op: u64) -> Option<Taken> {
        if self.by_cid.get(&cid).is_some_and(|r| r.0 == op) {
            return self.by_cid.remove(&cid).map(|(_, t)| t);
        }
        self.released.insert((cid, op));
        None
    }

    /// Calls released whose result has not arrived yet.
    pub fn released(&self) -> usize {
        self.released.len()
    }

    /// Takes the result of `cid`'s call `op`, if it arrived. A result held
    /// for an earlier call of `cid` is dropped (nobody will ask for it).
    pub fn take(&mut self, cid: u64, op: u64) -> Option<Taken> {
        let held = self.by_cid.get(&cid)?.0;
        if held > op {
            // A later call's: not this one's to take.
            return None;
        }
        let (_, taken) = self.by_cid.remove(&cid)?;
        (held == op).then_some(taken)
    }

    /// Drops the result of `cid`'s call `op` (its coroutine is gone), unless
    /// a later call's replaced it meanwhile.
    pub fn forget(&mut self, cid: u64, op: u64) {
        if self.by_cid.get(&cid).is_some_and(|r| r.0 == op) {
            self.by_cid.remove(&cid);
        }
    }

    /// Results held.
    pub fn len(&self) -> usize {
        self.by_cid.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.by_cid.is_empty()
    }

    /// The coroutines to check for a sweep, with `live` coroutines alive: none
    /// unless the store outgrew both [`Results::SWEEP`] and `2 × live`. (The
    /// caller checks them with the store unlocked, then calls
    /// [`Results::sweep`].)
    pub fn to_check(&self, live: usize) -> Vec<u64> {
        if self.by_cid.len() <= Self::SWEEP.max(2 * live) {
            return Vec::new();
        }
        self.by_cid.keys().copied().collect()
    }

    /// Drops the results of the coroutines in `gone`.
    pub fn sweep(&mut self, gone: &[u64]) {
        for c in gone {
            self.by_cid.remove(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(result: i64, stamp: u64) -> Option<Taken> {
        Some(Taken { result, stamp })
    }

    #[test]
    fn no_waiting_coroutine_loses_its_result_however_many_wait() {
        // More than the old store's 1 024, all for coroutines still alive.
        let mut r = Results::new();
        for cid in 0..5_000u64 {
            r.put(cid, cid + 1, cid as i64, 7);
        }
        assert!(
            r.to_check(5_000).is_empty(),
            "nothing to sweep while all live"
        );
        for cid in 0..5_000u64 {
            assert_eq!(r.take(cid, cid + 1), taken(cid as i64, 7), "cid {cid}");
        }
        assert!(r.is_empty());
        assert_eq!(r.take(1, 2), None);
    }

    #[test]
    fn an_abandoned_calls_result_never_answers_the_next_call() {
        // Coroutine 3 abandoned call 10 and waits for call 11.
        let mut r = Results::new();
        r.put(3, 10, 4, 1);
        assert_eq!(r.take(3, 11), None, "call 10's result is not call 11's");
        assert!(r.is_empty(), "and it is dropped once asked past");
        r.put(3, 11, 916, 2);
        assert_eq!(r.take(3, 11), taken(916, 2));
        // The abandoned call completes after the newer one: it replaces
        // nothing, and the newer result is still there to take.
        r.put(3, 13, 64, 5);
        r.put(3, 12, -11, 6);
        assert_eq!(r.take(3, 13), taken(64, 5));
        // The other way round: the newer result replaces the older.
        r.put(3, 14, 1, 7);
        r.put(3, 15, 2, 8);
        assert_eq!(r.take(3, 15), taken(2, 8));
        assert!(r.is_empty());
    }

    #[test]
    fn a_later_calls_result_waits_for_its_own_take() {
        let mut r = Results::new();
        r.put(8, 21, 5, 1);
        // Asked for with an older id (nothing well-behaved does): kept.
        assert_eq!(r.take(8, 20), None);
        assert_eq!(r.take(8, 21), taken(5, 1));
    }

    #[test]
    fn forget_drops_only_the_call_it_names() {
        let mut r = Results::new();
        r.put(3, 1, -11, 1);
        assert_eq!(r.put(3, 2, 916, 2), Put::Stored(1));
        // The drop of the older result (its wake failed) leaves the newer.
        r.forget(3, 1);
        assert_eq!(r.take(3, 2), taken(916, 2));
        r.put(4, 5, 0, 5);
        r.forget(4, 5);
        assert!(r.is_empty());
    }

    #[test]
    fn a_released_result_is_handed_back_whether_it_came_before_or_after() {
        let mut r = Results::new();
        // Arrived first: handed back by the release, not left to be dropped.
        r.put(5, 30, 7, 1);
        assert_eq!(r.release(5, 30), taken(7, 1));
        assert!(r.is_empty());
        // Released first: handed back by the put, never stored.
        assert_eq!(r.release(6, 31), None);
        assert_eq!(r.released(), 1);
        assert_eq!(
            r.put(6, 31, 9, 2),
            Put::Released(Taken {
                result: 9,
                stamp: 2
            })
        );
        assert!(r.is_empty());
        assert_eq!(r.released(), 0);
        // The coroutine's next call is not affected either way.
        r.put(6, 32, 4, 3);
        assert_eq!(r.take(6, 32), taken(4, 3));
    }

    #[test]
    fn a_release_never_takes_another_calls_result() {
        let mut r = Results::new();
        // Coroutine 2 released call 40; the result held is call 41's.
        r.put(2, 41, 12, 1);
        assert_eq!(r.release(2, 40), None);
        assert_eq!(r.take(2, 41), taken(12, 1));
        // Call 40's result arrives late: handed back, and it replaces
        // nothing.
        r.put(2, 42, 13, 2);
        assert_eq!(
            r.put(2, 40, 5, 3),
            Put::Released(Taken {
                result: 5,
                stamp: 3
            })
        );
        assert_eq!(r.take(2, 42), taken(13, 2));
    }

    #[test]
    fn results_of_exited_coroutines_are_swept_once_the_store_outgrows_the_live() {
        let mut r = Results::new();
        for cid in 0..(Results::SWEEP as u64 + 10) {
            r.put(cid, 1, 0, 0);
        }
        // 1 034 results and 600 coroutines alive: not yet (under 2 × 600).
        assert!(r.to_check(600).is_empty());
        // With 300 alive: check them all.
        let check = r.to_check(300);
        assert_eq!(check.len(), Results::SWEEP + 10);
        // Those below 300 are alive; the rest exited.
        let gone: Vec<u64> = check.into_iter().filter(|&c| c >= 300).collect();
        r.sweep(&gone);
        assert_eq!(r.len(), 300);
        assert!(r.to_check(300).is_empty());
        assert_eq!(r.take(299, 1), taken(0, 0));
    }
}
