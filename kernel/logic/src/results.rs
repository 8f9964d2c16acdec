//! The store of asynchronous-call results a process keeps (in its shared
//! scheduler code, the vDSO) between the completion queue and the coroutines
//! that take them.
//!
//! A coroutine has one call at a time — its id names the call — so it has at
//! most one result here: a newer one replaces an older one, which belonged to
//! a call it abandoned. **Nothing a coroutine still waits for is ever
//! dropped.** An earlier store kept 1 024 results and dropped the oldest; when
//! a flood of 1 500 connections closed at once, more than that many waited
//! between two polls, and every coroutine whose result was dropped waited for
//! good — the connection kept open beside the flood among them (its 64×64
//! request stalled with 4 KiB unread in the kernel and no read in flight).
//!
//! What nothing bounds otherwise — results of coroutines that exited without
//! taking them — is swept out once the store holds more than
//! [`Results::SWEEP`] results and more than twice as many as there are
//! coroutines alive.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// Results not yet taken, by coroutine id: `(result, stamp)`.
#[derive(Debug, Default)]
pub struct Results {
    by_cid: BTreeMap<u64, (i64, u64)>,
}

impl Results {
    /// Results beyond which a sweep is worth looking at.
    pub const SWEEP: usize = 1024;

    /// An empty store.
    pub const fn new() -> Results {
        Results {
            by_cid: BTreeMap::new(),
        }
    }

    /// Stores `cid`'s result (replacing one of a call it abandoned); returns
    /// how many results the store holds.
    pub fn put(&mut self, cid: u64, result: i64, stamp: u64) -> usize {
        self.by_cid.insert(cid, (result, stamp));
        self.by_cid.len()
    }

    /// Takes `cid`'s result, if it has one.
    pub fn take(&mut self, cid: u64) -> Option<(i64, u64)> {
        self.by_cid.remove(&cid)
    }

    /// Drops `cid`'s result of `stamp` (its coroutine is gone), unless a newer
    /// one replaced it meanwhile.
    pub fn forget(&mut self, cid: u64, stamp: u64) {
        if self.by_cid.get(&cid).is_some_and(|r| r.1 == stamp) {
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

    #[test]
    fn no_waiting_coroutine_loses_its_result_however_many_wait() {
        // More than the old store's 1 024, all for coroutines still alive.
        let mut r = Results::new();
        for cid in 0..5_000u64 {
            r.put(cid, cid as i64, 7);
        }
        assert!(
            r.to_check(5_000).is_empty(),
            "nothing to sweep while all live"
        );
        for cid in 0..5_000u64 {
            assert_eq!(r.take(cid), Some((cid as i64, 7)), "cid {cid}");
        }
        assert!(r.is_empty());
        assert_eq!(r.take(1), None);
    }

    #[test]
    fn a_newer_result_replaces_an_abandoned_one_and_forget_spares_it() {
        let mut r = Results::new();
        r.put(3, -11, 1);
        assert_eq!(r.put(3, 916, 2), 1);
        // The drop of the older result (its wake failed) leaves the newer.
        r.forget(3, 1);
        assert_eq!(r.take(3), Some((916, 2)));
        r.put(4, 0, 5);
        r.forget(4, 5);
        assert!(r.is_empty());
    }

    #[test]
    fn results_of_exited_coroutines_are_swept_once_the_store_outgrows_the_live() {
        let mut r = Results::new();
        for cid in 0..(Results::SWEEP as u64 + 10) {
            r.put(cid, 0, 0);
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
        assert_eq!(r.take(299), Some((0, 0)));
    }
}
