//! One drainer at a time, and no request left behind.
//!
//! A queue that several threads may be asked to empty (a process's completion
//! queue: the kernel's upcall enters one thread, the poll loop of another
//! finds entries) wants one drainer at a time, and a thread that finds the
//! drain busy must not wait for it (an upcall handler that spun on a
//! preempted drainer would stall its thread). But a bare `try_lock` loses
//! work: the busy drainer may have read the queue's end just before the new
//! entry arrived, and the thread that came for that entry leaves it to a
//! drainer that never looks again — a lost wake-up, once every thread parks.
//!
//! [`DrainGate`] closes that window with one counter of requests, changed
//! only by read-modify-writes (so no ordering subtler than acquire/release is
//! relied on): a caller counts its request, and drains only if it found the
//! count at zero; the drainer, after each pass, takes back the requests it
//! has served and makes another pass if more arrived meanwhile. Every caller
//! therefore either drains after its request or leaves it to a drainer that
//! will see it. `tests/loom.rs` checks this, and fails when the drainer skips
//! the requests that arrive during its pass.

use crate::sync::{AtomicUsize, Ordering};

/// Serialises drains of one queue without losing a request (module docs).
#[derive(Debug)]
pub struct DrainGate {
    /// Requests not yet served; non-zero while a thread drains.
    pending: AtomicUsize,
}

impl Default for DrainGate {
    fn default() -> Self {
        DrainGate::new()
    }
}

impl DrainGate {
    /// A gate with no drain under way and none asked for.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        DrainGate {
            pending: AtomicUsize::new(0),
        }
    }

    /// A gate with no drain under way and none asked for.
    #[cfg(loom)]
    pub fn new() -> Self {
        DrainGate {
            pending: AtomicUsize::new(0),
        }
    }

    /// Asks for a drain: runs `pass` (which empties the queue as it finds it
    /// and says how many entries it took) until no request is left, unless
    /// another thread is draining, which then makes a pass for this caller.
    /// Returns what the passes run here took (0 when left to another thread).
    ///
    /// A `pass` that panics leaves the gate open again (the requests counted
    /// meanwhile are dropped with it).
    pub fn drain(&self, mut pass: impl FnMut() -> u64) -> u64 {
        if self.pending.fetch_add(1, Ordering::AcqRel) != 0 {
            // The drainer's next look at the count sees this request.
            return 0;
        }
        let reset = Reset(&self.pending);
        let mut taken = 0u64;
        // Requests the pass about to run serves: every one counted before it.
        let mut serving = 1;
        loop {
            taken = taken.wrapping_add(pass());
            let before = self.pending.fetch_sub(serving, Ordering::AcqRel);
            if before == serving {
                core::mem::forget(reset);
                return taken;
            }
            // Arrived during the pass (which may have missed their entries).
            serving = before - serving;
        }
    }
}

/// Opens the gate if a pass unwinds.
struct Reset<'a>(&'a AtomicUsize);

impl Drop for Reset<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::DrainGate;
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    use std::sync::Arc;

    #[test]
    fn a_request_made_during_a_pass_gets_a_pass_of_its_own() {
        let gate = DrainGate::new();
        let mut passes = 0;
        let taken = gate.drain(|| {
            passes += 1;
            if passes == 1 {
                // Another thread's request while this one drains: left here.
                assert_eq!(gate.drain(|| unreachable!("the gate is busy")), 0);
            }
            10
        });
        assert_eq!((taken, passes), (20, 2));
        assert_eq!(gate.drain(|| 5), 5, "open again afterwards");
    }

    #[test]
    fn a_pass_that_panics_leaves_the_gate_open() {
        let gate = DrainGate::new();
        let unwound =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| gate.drain(|| panic!("x"))));
        assert!(unwound.is_err());
        assert_eq!(gate.drain(|| 3), 3);
    }

    #[test]
    fn threads_posting_and_draining_take_every_entry() {
        // Each thread posts entries and asks for a drain after each; at the
        // end, what the passes took adds up to every entry posted.
        let posted = Arc::new(AtomicU64::new(0));
        let head = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(DrainGate::new());
        let per_thread = if cfg!(miri) { 20 } else { 2000 };
        let threads: std::vec::Vec<_> = (0..3)
            .map(|_| {
                let (posted, head, gate) = (posted.clone(), head.clone(), gate.clone());
                std::thread::spawn(move || {
                    let mut taken = 0;
                    for _ in 0..per_thread {
                        posted.fetch_add(1, SeqCst);
                        taken += gate.drain(|| {
                            let tail = posted.load(SeqCst);
                            tail - head.swap(tail, SeqCst)
                        });
                    }
                    taken
                })
            })
            .collect();
        let taken: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(taken, 3 * per_thread);
        assert_eq!(head.load(SeqCst), 3 * per_thread);
    }
}
