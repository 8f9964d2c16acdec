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

#[cfg(loom)]
pub(crate) use self::model::{SpinGuard, SpinLock};

#[cfg(not(loom))]
use crate::sync::{spin_hint, AtomicBool, Ordering, UnsafeCell};

/// A test-and-test-and-set spin lock.
#[cfg(not(loom))]
pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

#[cfg(not(loom))]
// SAFETY: the lock hands out at most one `SpinGuard` at a time (the `locked` flag,
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
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Spins until the lock is ours. `critical` is held for as long as the guard.
    #[inline]
    pub(crate) fn lock<C>(&self, critical: C) -> SpinGuard<'_, T, C> {
        loop {
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return SpinGuard {
                    lock: self,
                    _critical: critical,
                };
            }
            while self.locked.load(Ordering::Relaxed) {
                spin_hint();
            }
        }
    }
}

/// Exclusive access to the value of a [`SpinLock`]; unlocks on drop, then drops
/// the critical-section guard `C`.
#[cfg(not(loom))]
pub(crate) struct SpinGuard<'a, T, C> {
    lock: &'a SpinLock<T>,
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
        self.lock.locked.store(false, Ordering::Release);
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

        pub(crate) fn lock<C>(&self, critical: C) -> SpinGuard<'_, T, C> {
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
