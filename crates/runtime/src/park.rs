//! The platform the workers run the executor on: `ss_core`'s hooks, Linux side.
//!
//! Parking is [`ThreadPlatform`]'s (spin for `idle_spin` watching the executor's
//! bitmap, then sleep on a condition variable until a push wakes the worker). What
//! this adds: while a worker spins idle, it also reaps the io_uring completion
//! queue. A completion then wakes its coroutine *on this idle worker*, which picks
//! it up at once — instead of the completion thread waking, waking the coroutine,
//! and waking a sleeping worker (two thread wake-ups, tens of µs each on a VM).

use std::sync::{OnceLock, Weak};
use std::time::Duration;

use ss_core::platform::{Clock, Critical, Park, Platform, ThreadPlatform};

use crate::io::driver::Shared as DriverShared;

/// How many spin rounds pass between two looks at the completion queue (a look
/// is a `try_lock` and two loads).
const REAP_EVERY: u32 = 8;

/// The workers' platform. See the module docs.
#[derive(Debug)]
pub struct WorkerPlatform {
    threads: ThreadPlatform,
    driver: OnceLock<Weak<DriverShared>>,
}

impl WorkerPlatform {
    /// How long an idle worker spins before it sleeps, by default.
    pub const DEFAULT_SPIN: Duration = ThreadPlatform::DEFAULT_SPIN;

    /// A platform whose idle workers spin for `spin` before sleeping.
    pub fn with_spin(spin: Duration) -> Self {
        WorkerPlatform {
            threads: ThreadPlatform::with_spin(spin),
            driver: OnceLock::new(),
        }
    }

    /// Lets idle workers reap this driver's completions (set once, after the
    /// driver is built: the driver needs the executor, which needs the platform).
    pub(crate) fn set_driver(&self, driver: Weak<DriverShared>) {
        let _ = self.driver.set(driver);
    }
}

impl Park for WorkerPlatform {
    fn park(&self) {
        self.threads.park();
    }

    fn unpark_one(&self) {
        self.threads.unpark_one();
    }

    fn spin_idle(&self, idle: &mut dyn FnMut() -> bool) {
        let driver = self.driver.get().and_then(Weak::upgrade);
        let mut round = 0u32;
        self.threads.spin_idle(&mut || {
            round = round.wrapping_add(1);
            if round % REAP_EVERY == 0 {
                if let Some(d) = &driver {
                    // Wakes coroutines, so `idle()` below turns false.
                    d.try_reap();
                }
            }
            idle()
        });
    }
}

impl Critical for WorkerPlatform {
    type Guard = ();
    fn enter(&self) {}
}

impl Clock for WorkerPlatform {
    fn now(&self) -> Duration {
        self.threads.now()
    }
}

impl Platform for WorkerPlatform {}
