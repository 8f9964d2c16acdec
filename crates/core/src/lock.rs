//! A spin lock for the executor's short critical sections.
//!
//! The executor holds a lock only to link or unlink a coroutine in a ready queue
//! or in the registry: a handful of pointer writes, never a poll, never an
//! allocation of unbounded size, never a call into user code. Blocking in the OS
//! there would cost far more (a futex round trip) than the section itself, and the
//! kernel cannot sleep at all, so a spin lock is the right tool.
//!
//! The platform's critical-section guard ([`crate::platform::Critical`]) is taken
//! *before* spinning and released *after* unlocking, so on the kernel a timer
//! interrupt can never arrive on a hart that holds the lock (and then spin on it
//! forever from the interrupt handler).
//!
//! In user space the OS can preempt a thread while it holds the lock; the
//! others then spin until it runs again — a whole scheduler tick or more. The
//! lock word counts acquisitions (odd: held), so a waiter can tell a holder
//! that has not let go for [`LOCK_WAIT_EVERY`] spins from a lock that merely
//! changed hands meanwhile; for the former it calls the platform's
//! [`Critical::lock_wait`](crate::platform::Critical::lock_wait), which may get
//! the holder running (the Linux runtime's sleeps 20 µs, leaving its CPU to
//! whatever can run — the holder may be queued on it); the kernel's does
//! nothing. A waiter that only lost races keeps spinning: sleeping then would
//! let the winners take the lock again and again while it sleeps.

#[cfg(loom)]
pub(crate) use self::model::{SpinGuard, SpinLock};

#[cfg(not(loom))]
use crate::sync::{spin_hint, AtomicU32, Ordering, UnsafeCell};

/// How many spins on a lock held by the same holder throughout pass before
/// the waiter calls `wait` (tens of µs: far longer than any critical section,
/// which is a few pointer writes, so the holder is not running).
#[cfg(not(loom))]
pub(crate) const LOCK_WAIT_EVERY: u32 = 1024;

/// A test-and-test-and-set spin lock whose word counts acquisitions.
#[cfg(not(loom))]
pub(crate) struct SpinLock<T> {
    /// Even: free; odd: held. Each acquisition adds one and its release one
    /// more, so the word names the current holding.
    state: AtomicU32,
    value: UnsafeCell<T>,
}

#[cfg(not(loom))]
// SAFETY: the lock hands out at most one `SpinGuard` at a time (the odd `state`,
// acquired with `Acquire` and released with `Release`), and only through the guard
// can `value` be reached; so `T` is only ever accessed by one thread at a time, and
// sending `T` between threads is all that sharing the lock implies.
unsafe impl<T: Send> Sync for SpinLock<T> {}
#[cfg(not(loom))]
// SAFETY: owning the lock is owning `T`.
unsafe impl<T: Send> Send for SpinLock<T> {}

#[cfg(not(loom))]
impl<T> SpinLock<T> {
    pub(crate) fn new(value: T) -> Self {
        SpinLock {
            state: AtomicU32::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// Spins until the lock is ours. After every [`LOCK_WAIT_EVERY`] spins
    /// during which one holder kept it, calls `wait` with the spins so far.
    /// `critical` is held for as long as the guard.
    #[inline]
    pub(crate) fn lock<C>(&self, critical: C, mut wait: impl FnMut(u32)) -> SpinGuard<'_, T, C> {
        let mut s = self.state.load(Ordering::Relaxed);
        let mut spins = 0u32;
        // The holding seen at the start of the current window of spins.
        let mut window = s;
        loop {
            if s & 1 == 0 {
                let held = s.wrapping_add(1);
                match self.state.compare_exchange_weak(
                    s,
                    held,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        return SpinGuard {
                            lock: self,
                            held,
                            _critical: critical,
                        }
                    }
                    Err(now) => {
                        s = now;
                        continue;
                    }
                }
            }
            spin_hint();
            spins = spins.wrapping_add(1);
            s = self.state.load(Ordering::Relaxed);
            if spins % LOCK_WAIT_EVERY == 0 {
                if s == window && s & 1 == 1 {
                    wait(spins);
                    s = self.state.load(Ordering::Relaxed);
                }
                window = s;
            }
        }
    }
}

/// Exclusive access to the value of a [`SpinLock`]; unlocks on drop, then drops
/// the critical-section guard `C`.
#[cfg(not(loom))]
pub(crate) struct SpinGuard<'a, T, C> {
    lock: &'a SpinLock<T>,
    /// The (odd) state this holding set.
    held: u32,
    // Declared after `lock` and dropped after `Drop::drop` has released the lock.
    _critical: C,
}

#[cfg(not(loom))]
impl<T, C> SpinGuard<'_, T, C> {
    /// Runs `f` with exclusive access to the value.
    #[inline]
    pub(crate) fn with<R>(&mut self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: this guard is the only one (see `SpinLock`'s `Sync` argument), and
        // `&mut self` means no other borrow through it is live.
        self.lock.value.with_mut(|p| f(unsafe { &mut *p }))
    }
}

#[cfg(not(loom))]
impl<T, C> Drop for SpinGuard<'_, T, C> {
    #[inline]
    fn drop(&mut self) {
        self.lock
            .state
            .store(self.held.wrapping_add(1), Ordering::Release);
    }
}

/// Under loom a spinning thread makes the model explode (every spin is a branch),
/// and the lock itself is not what the models check; so the same API is backed by
/// loom's blocking mutex, which loom explores as one acquire and one release.
#[cfg(loom)]
mod model {
    pub(crate) struct SpinLock<T> {
        inner: loom::sync::Mutex<T>,
    }

    pub(crate) struct SpinGuard<'a, T, C> {
        guard: loom::sync::MutexGuard<'a, T>,
        _critical: C,
    }

    impl<T> SpinLock<T> {
        pub(crate) fn new(value: T) -> Self {
            SpinLock {
                inner: loom::sync::Mutex::new(value),
            }
        }

        pub(crate) fn lock<C>(&self, critical: C, _wait: impl FnMut(u32)) -> SpinGuard<'_, T, C> {
            SpinGuard {
                guard: self.inner.lock().unwrap(),
                _critical: critical,
            }
        }
    }

    impl<T, C> SpinGuard<'_, T, C> {
        pub(crate) fn with<R>(&mut self, f: impl FnOnce(&mut T) -> R) -> R {
            f(&mut self.guard)
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn the_state_counts_holdings_and_the_value_is_kept() {
        let lock = SpinLock::new(0u32);
        for i in 0..3 {
            let mut g = lock.lock((), |_| unreachable!("nobody holds it"));
            assert_eq!(lock.state.load(Ordering::Relaxed), 2 * i + 1, "held: odd");
            g.with(|v| *v += 1);
            drop(g);
            assert_eq!(lock.state.load(Ordering::Relaxed), 2 * i + 2, "free: even");
        }
        assert_eq!(lock.lock((), |_| {}).with(|v| *v), 3);
    }

    #[test]
    fn a_waiter_behind_a_holder_that_does_not_let_go_is_told() {
        // The holder keeps the lock until the waiter's `wait` has run (or 10 s
        // have passed, which fails the test), then lets go; the waiter then
        // gets the lock and sees the holder's write.
        let lock = Arc::new(SpinLock::new(0u32));
        let waits = Arc::new(AtomicUsize::new(0));
        let mut g = lock.lock((), |_| {});
        let (l, w) = (lock.clone(), waits.clone());
        let waiter = std::thread::spawn(move || {
            let mut g = l.lock((), |spins| {
                assert_eq!(spins % LOCK_WAIT_EVERY, 0);
                w.fetch_add(1, Ordering::SeqCst);
            });
            g.with(|v| *v)
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while waits.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        g.with(|v| *v = 7);
        drop(g);
        assert_eq!(waiter.join().unwrap(), 7);
        assert!(
            waits.load(Ordering::SeqCst) >= 1,
            "the waiter was never told"
        );
    }
}
