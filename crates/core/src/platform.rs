//! Platform hooks: how the kernel and the Linux runtime plug into the core.
//!
//! The core has no `cfg(target_arch)` and makes no OS call. What it needs from
//! the machine it asks through these small traits:
//!
//! | trait | question | kernel | Linux runtime |
//! |---|---|---|---|
//! | [`Park`] | sleep this CPU until there is work; wake one | `wfi` + IPI | futex / condvar, after a short spin |
//! | [`Critical`] | keep interrupts away while a lock is held | `sstatus.SIE` off | nothing |
//! | [`Clock`] | what time is it (monotonic) | `time` CSR | `Instant` |
//!
//! [`Platform`] bundles `Park` and `Critical` with an optional tracing hook that
//! sees every state transition (tests record it and assert the exact trace).
//!
//! Two platforms come with the core: [`SpinPlatform`] for `no_std` users who have
//! nothing better (parking is a spin), and, with the `std` feature,
//! `ThreadPlatform`, which parks OS threads.

use core::time::Duration;

use ss_abi::CoroutineId;

use crate::state::CoroutineState;

/// Sleeping and waking the CPUs that poll an executor.
///
/// Contract — a counting semaphore of wake-up permits:
/// - [`unpark_one`](Park::unpark_one) adds one permit, waking one parked CPU if any;
/// - [`park`](Park::park) consumes a permit, sleeping until one exists.
///
/// `park` may also return spuriously (the executor re-checks its queues), so a
/// platform that cannot sleep may simply return. `unpark_one` may be called from
/// any context, including an interrupt handler and a waker on a foreign thread,
/// and must not poll or lock the executor.
pub trait Park: Send + Sync + 'static {
    /// Sleeps the calling CPU until a permit is available, then consumes it.
    fn park(&self);
    /// Makes one permit available, waking a parked CPU if there is one.
    fn unpark_one(&self);
}

/// Keeping interrupts (or anything else that could re-enter the executor on this
/// CPU) away while the executor holds one of its spin locks.
///
/// The guard is taken before the lock and dropped after it. Nested guards must
/// work (a lock may be taken inside another's critical section).
pub trait Critical: Send + Sync + 'static {
    /// The guard; the critical section lasts while it lives.
    type Guard;
    /// Enters a critical section on the calling CPU.
    fn enter(&self) -> Self::Guard;
}

/// A monotonic clock.
pub trait Clock {
    /// Time since an arbitrary fixed origin; never decreases.
    fn now(&self) -> Duration;
}

/// Everything an [`Executor`](crate::Executor) needs from its platform.
pub trait Platform: Park + Critical {
    /// Called on every state transition of every coroutine, in the order the
    /// transitions take effect for that coroutine. Must not call into the executor.
    /// The default does nothing and compiles away.
    #[inline(always)]
    fn on_transition(&self, cid: CoroutineId, from: CoroutineState, to: CoroutineState) {
        let _ = (cid, from, to);
    }
}

/// A platform for bare `no_std` use: locks need no interrupt guard and a parked
/// CPU spins briefly and returns (the executor then looks for work again).
#[derive(Clone, Copy, Debug, Default)]
pub struct SpinPlatform;

impl Park for SpinPlatform {
    #[inline]
    fn park(&self) {
        for _ in 0..64 {
            crate::sync::spin_hint();
        }
    }

    #[inline]
    fn unpark_one(&self) {}
}

impl Critical for SpinPlatform {
    type Guard = ();
    #[inline]
    fn enter(&self) {}
}

impl Platform for SpinPlatform {}

#[cfg(feature = "std")]
pub use self::thread::ThreadPlatform;

#[cfg(feature = "std")]
mod thread {
    extern crate std;

    #[cfg(loom)]
    use loom::sync::{Condvar, Mutex};
    #[cfg(not(loom))]
    use std::sync::{Condvar, Mutex};

    use super::{Critical, Park, Platform};

    /// A hosted platform: parked CPUs are OS threads blocked on a condition
    /// variable; the clock is `std::time::Instant`.
    ///
    /// A good default for tests and tools. The Linux runtime uses its own, which
    /// spins briefly before sleeping (waking a sleeping vCPU costs tens of µs).
    #[derive(Debug)]
    pub struct ThreadPlatform {
        permits: Mutex<usize>,
        cond: Condvar,
        #[cfg(not(loom))]
        origin: std::time::Instant,
    }

    impl Default for ThreadPlatform {
        fn default() -> Self {
            ThreadPlatform {
                permits: Mutex::new(0),
                cond: Condvar::new(),
                #[cfg(not(loom))]
                origin: std::time::Instant::now(),
            }
        }
    }

    impl Park for ThreadPlatform {
        fn park(&self) {
            let mut permits = self.permits.lock().unwrap_or_else(|e| e.into_inner());
            while *permits == 0 {
                permits = self.cond.wait(permits).unwrap_or_else(|e| e.into_inner());
            }
            *permits -= 1;
        }

        fn unpark_one(&self) {
            let mut permits = self.permits.lock().unwrap_or_else(|e| e.into_inner());
            *permits = permits.saturating_add(1);
            drop(permits);
            self.cond.notify_one();
        }
    }

    impl Critical for ThreadPlatform {
        type Guard = ();
        #[inline]
        fn enter(&self) {}
    }

    #[cfg(not(loom))]
    impl super::Clock for ThreadPlatform {
        fn now(&self) -> core::time::Duration {
            self.origin.elapsed()
        }
    }

    impl Platform for ThreadPlatform {}
}
