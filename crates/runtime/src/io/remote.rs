//! The one lock-free handshake of the I/O driver: requests other threads leave
//! for a ring's owner (cancellations of operations on that ring).
//!
//! Producers push under a mutex, then raise `pending`; the owner, on each run of
//! its ring, looks at `pending` first (one load, no lock on the fast path) and
//! only then takes the queue. The invariant the loom model below checks: once a
//! `push` has returned, its key is either already taken or `pending` is set, so
//! the owner's next `take` finds it — no request is stranded, none is taken twice.
//! (The producer then rings the owner's doorbell, so a parked owner runs soon.)

#[cfg(loom)]
use loom::sync::{atomic::AtomicBool, Mutex};
use std::sync::atomic::Ordering;
#[cfg(not(loom))]
use std::sync::{atomic::AtomicBool, Mutex};

/// Requests for a ring's owner. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct RemoteQueue {
    keys: Mutex<Vec<u64>>,
    pending: AtomicBool,
}

impl RemoteQueue {
    /// Leaves `key` for the owner (any thread).
    pub(crate) fn push(&self, key: u64) {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key);
        self.pending.store(true, Ordering::Release);
    }

    /// Puts back keys the owner could not handle yet (the owner only).
    pub(crate) fn put_back(&self, keys: &[u64]) {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(keys);
        self.pending.store(true, Ordering::Release);
    }

    /// Takes every request left so far (the owner only). Cheap when there is none.
    pub(crate) fn take(&self) -> Vec<u64> {
        // `compare_exchange(true, false)` rather than the equivalent
        // `swap(false)`: loom mis-models `swap` against a concurrent store (it can
        // read a stale value; tokio-rs/loom issues 254 and 389), and the model
        // below is only worth something if loom checks the code we run.
        let was = self
            .pending
            .compare_exchange(true, false, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        if !was {
            return Vec::new();
        }
        std::mem::take(&mut *self.keys.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Forgets every request (ring teardown, which sweeps all operations anyway).
    pub(crate) fn clear(&self) {
        self.pending.store(false, Ordering::Relaxed);
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(all(test, loom))]
mod loom_model {
    use super::RemoteQueue;
    use loom::sync::Arc;
    use loom::thread;

    /// Two threads cancel remotely while the owner runs its ring twice; after
    /// they are done, one more run must find whatever is left. Every key is taken
    /// exactly once.
    #[test]
    fn no_remote_request_is_stranded_or_taken_twice() {
        loom::model(|| {
            let q = Arc::new(RemoteQueue::default());
            let producers: Vec<_> = [1u64, 2]
                .into_iter()
                .map(|k| {
                    let q = q.clone();
                    thread::spawn(move || q.push(k))
                })
                .collect();
            let mut taken = q.take();
            taken.extend(q.take());
            for p in producers {
                p.join().unwrap();
            }
            // Both pushes have returned: the next run must see the rest.
            taken.extend(q.take());
            taken.sort_unstable();
            assert_eq!(taken, [1, 2]);
            assert!(q.take().is_empty());
        });
    }

    /// A put-back by the owner racing a remote push loses neither.
    #[test]
    fn a_put_back_races_a_push() {
        loom::model(|| {
            let q = Arc::new(RemoteQueue::default());
            let q2 = q.clone();
            let p = thread::spawn(move || q2.push(7));
            q.put_back(&[3]);
            let mut taken = q.take();
            p.join().unwrap();
            taken.extend(q.take());
            taken.sort_unstable();
            assert_eq!(taken, [3, 7]);
        });
    }
}
