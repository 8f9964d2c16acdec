//! Platform hooks: how the kernel and the Linux runtime plug into the core.
//!
//! The core has no `cfg(target_arch)` and makes no OS call. What it needs from
//! the machine it asks through these small traits:
//!
//! | trait | question | kernel | Linux runtime |
//! |---|---|---|---|
//! | [`Park`] | sleep this CPU until there is work; wake one | `wfi` + IPI | futex / condvar, after a short spin |
//! | [`Critical`] | keep interrupts away while a lock is held | `sstatus.SIE` off | nothing |
//! | [`Clock`] | what time is it (monotonic), for [`Poller::run_for`](crate::Poller::run_for) time slices | `time` CSR | `Instant` |
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
    /// Called by a poller that has just found nothing to run, before it registers
    /// as a sleeper and parks: spin while `idle()` returns true, for as long as the
    /// platform thinks a wake-up is worth waiting for awake. `idle` reads the
    /// executor's bitmap without a lock, so spinning on it costs other CPUs nothing.
    ///
    /// Waking a parked CPU can cost far more than a short spin (tens of µs for a
    /// parked vCPU); a platform that sleeps should spin for about that long. The
    /// default does not spin.
    fn spin_idle(&self, idle: &mut dyn FnMut() -> bool) {
        let _ = idle;
    }

    /// A poller of this executor on the calling CPU starts (`true`) or ends
    /// (`false`) polling a coroutine. With [`Park::defer_unpark`], lets the
    /// platform tell a wake issued by the coroutine being polled here from any
    /// other. The default does nothing.
    #[inline(always)]
    fn polling(&self, on: bool) {
        let _ = on;
    }

    /// Asked by a push that found a parked CPU to wake: may the unpark wait for
    /// the end of the poll running on the calling CPU? Return `true` only if the
    /// calling CPU is inside a poll of *this* executor (between
    /// `polling(true)` and `polling(false)`), and then remember one owed unpark
    /// for [`Park::take_deferred_unpark`]. The poller settles it as the poll
    /// ends: it wakes a parked CPU if, after it has taken its own next
    /// coroutine, work is still waiting — so a coroutine woken by the one it
    /// polls, which it runs next itself, costs no parked CPU a wake-up (tokio's
    /// "LIFO slot"). The default (`false`) unparks at once.
    #[inline(always)]
    fn defer_unpark(&self) -> bool {
        false
    }

    /// Asked by every wake-up that readies a coroutine: is the calling CPU
    /// inside a poll of *this* executor (between `polling(true)` and
    /// `polling(false)`)? If so the coroutine is queued **hot**, at the head
    /// of its level instead of the tail, so that this CPU — which looks at the
    /// queues as soon as the poll ends — runs it next, while what the two
    /// coroutines share (a channel, a buffer, an I/O completion just taken) is
    /// still in its cache: tokio's "LIFO slot", without tokio's one-slot
    /// limit. Strict priority still holds (a hot coroutine goes first only
    /// among its equals). The wait of the others is bounded: once a level has
    /// served [`HOT_RUN`](crate::HOT_RUN) hot coroutines in a row, its hot
    /// ones join the tail behind those that waited, and the oldest of those
    /// goes next. Must not lock or call into the executor. The default
    /// (`false`) keeps the paper's FIFO order among equals.
    #[inline(always)]
    fn hot_wake(&self) -> bool {
        false
    }

    /// Asked by a poller that found nothing to do, before it registers as a
    /// sleeper: whether the platform holds this CPU **in reserve** instead.
    /// A CPU in reserve parks without registering, so no push wakes it; it
    /// parks through [`park_reserved`](Park::park_reserved), delivers its own
    /// events on the way out (their wake-ups go to the registered sleepers, as
    /// any push's would), and polls again only once the platform calls it out
    /// ([`in_reserve`](Park::in_reserve) turns false) or it finds the ready
    /// work stalled: waiting at two looks a platform-chosen while apart with no
    /// coroutine popped in between. So a platform can keep a lightly loaded
    /// executor on fewer CPUs than it has pollers. Return `true` only from a
    /// platform that implements the other three. Default: never.
    #[inline(always)]
    fn enter_reserve(&self) -> bool {
        false
    }

    /// Whether the calling CPU is still held in reserve.
    #[inline(always)]
    fn in_reserve(&self) -> bool {
        false
    }

    /// The calling CPU leaves the reserve (it found work, or stalled work, or
    /// its poller stops).
    #[inline(always)]
    fn leave_reserve(&self) {}

    /// Parks a CPU held in reserve until its own events arrive, the platform
    /// calls it out, or a while of the platform's choosing passes; returns
    /// whether that while ran out. `nothing_waited`: the last look found no
    /// ready work (a platform may then look less often). Default:
    /// [`park`](Park::park), as if the while ran out.
    #[inline(always)]
    fn park_reserved(&self, nothing_waited: bool) -> bool {
        let _ = nothing_waited;
        self.park();
        true
    }

    /// Whether a push during the poll that just ended on this CPU deferred its
    /// unpark ([`Park::defer_unpark`]); clears the note. The default: never.
    #[inline(always)]
    fn take_deferred_unpark(&self) -> bool {
        false
    }
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

    /// Called by a CPU spinning on one of the executor's locks, every so many
    /// spins (`spins` so far; tens of µs apart). A critical section is a few
    /// pointer writes, so a wait this long means the holder is not running:
    /// in user space the OS preempted it (a thread of the same machine took its
    /// CPU) and the waiter would spin until it runs again, a scheduler tick or
    /// more. A platform may leave its CPU to others — e.g. sleep briefly. Called
    /// inside the waiter's critical section ([`Critical::enter`]). The default
    /// keeps spinning (right for a kernel, whose lock holders cannot be
    /// preempted).
    #[inline(always)]
    fn lock_wait(&self, spins: u32) {
        let _ = spins;
    }
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

/// A platform for bare `no_std` use: locks need no interrupt guard, and an idle
/// CPU never sleeps: it spins watching the executor's bitmap, and `park` returns
/// at once (the executor then looks for work again).
#[derive(Clone, Copy, Debug, Default)]
pub struct SpinPlatform;

impl Park for SpinPlatform {
    #[inline]
    fn park(&self) {}

    #[inline]
    fn unpark_one(&self) {}

    #[inline]
    fn spin_idle(&self, idle: &mut dyn FnMut() -> bool) {
        // Bounded, so that the caller's loop re-checks its stop condition now and
        // then even if `idle` only watches the bitmap.
        for _ in 0..4096 {
            if !idle() {
                return;
            }
            crate::sync::spin_hint();
        }
    }
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
    /// variable, after spinning for a while watching for work; the clock is
    /// `std::time::Instant`.
    ///
    /// Waking a thread parked on an idle vCPU costs ~40 µs on the machines this
    /// project is measured on, against ~0.3 µs if it was still spinning, so the
    /// default spin is [`ThreadPlatform::DEFAULT_SPIN`].
    #[derive(Debug)]
    pub struct ThreadPlatform {
        permits: Mutex<usize>,
        cond: Condvar,
        // Under loom the platform does not spin (see `spin_idle`).
        #[cfg_attr(loom, allow(dead_code))]
        spin: core::time::Duration,
        #[cfg(not(loom))]
        origin: std::time::Instant,
    }

    impl ThreadPlatform {
        /// How long an idle poller spins before it sleeps, by default.
        pub const DEFAULT_SPIN: core::time::Duration = core::time::Duration::from_micros(20);

        /// How long a thread waiting for one of the executor's locks sleeps once
        /// it has seen one holder keep it for [`Critical::lock_wait`]'s spins.
        pub const LOCK_WAIT_SLEEP: core::time::Duration = core::time::Duration::from_micros(20);

        /// A platform whose idle pollers spin for `spin` before sleeping
        /// (`Duration::ZERO`: sleep at once).
        pub fn with_spin(spin: core::time::Duration) -> Self {
            ThreadPlatform {
                permits: Mutex::new(0),
                cond: Condvar::new(),
                spin,
                #[cfg(not(loom))]
                origin: std::time::Instant::now(),
            }
        }
    }

    impl Default for ThreadPlatform {
        fn default() -> Self {
            Self::with_spin(Self::DEFAULT_SPIN)
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

        // Under loom a timed spin would only multiply the interleavings.
        #[cfg(not(loom))]
        fn spin_idle(&self, idle: &mut dyn FnMut() -> bool) {
            if self.spin.is_zero() {
                return;
            }
            let start = std::time::Instant::now();
            loop {
                // Check the clock every 64 rounds; reading it costs ~20 ns.
                for _ in 0..64 {
                    if !idle() {
                        return;
                    }
                    core::hint::spin_loop();
                }
                if start.elapsed() >= self.spin {
                    return;
                }
            }
        }
    }

    impl Critical for ThreadPlatform {
        type Guard = ();
        #[inline]
        fn enter(&self) {}

        /// The holder is not running: sleep briefly
        /// ([`ThreadPlatform::LOCK_WAIT_SLEEP`]) rather than hold this CPU until
        /// it runs again; the holder itself may be queued here.
        #[cfg(not(loom))]
        fn lock_wait(&self, _spins: u32) {
            std::thread::sleep(Self::LOCK_WAIT_SLEEP);
        }
    }

    #[cfg(not(loom))]
    impl super::Clock for ThreadPlatform {
        fn now(&self) -> core::time::Duration {
            self.origin.elapsed()
        }
    }

    impl Platform for ThreadPlatform {}
}
