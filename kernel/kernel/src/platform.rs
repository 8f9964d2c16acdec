//! The kernel Executor's platform: how ss-core parks and wakes harts, keeps
//! interrupts out of its locks, reads the clock, and reports transitions.
//!
//! - **Park**: an idle hart sleeps in `wfi` with interrupts enabled (the
//!   original busy-spun with interrupts off). Wake-up permits are a counter; a
//!   hart marks itself idle before checking it one last time, and `unpark_one`
//!   sends an IPI to an idle hart after adding a permit, so a wake-up can never
//!   fall between the check and the `wfi` (a pending IPI ends `wfi` at once).
//! - **Critical**: interrupts off on this hart while the executor holds a lock.
//! - **Clock**: the `time` CSR.
//! - **Transitions**: each hart remembers the kernel coroutine it is polling, so
//!   a timer interrupt can mark it Running-suspended (§2.3); a test can watch
//!   one coroutine's transitions.

use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use core::time::Duration;

use ss_core::platform::{Clock, Critical, Park, Platform};
use ss_core::{CoroutineId, CoroutineState};

use crate::arch::{self, MAX_HARTS};
use crate::sync::NoIrq;

/// The kernel Executor's platform (a unit: its state is per hart, in statics).
#[derive(Debug, Default)]
pub struct KernelPlatform;

static PERMITS: AtomicUsize = AtomicUsize::new(0);
static IDLE: AtomicUsize = AtomicUsize::new(0);

const NONE: u64 = u64::MAX;
#[allow(clippy::declare_interior_mutable_const)]
const NO_CID: AtomicU64 = AtomicU64::new(NONE);
static CURRENT: [AtomicU64; MAX_HARTS] = [NO_CID; MAX_HARTS];

/// Harts that have ever slept in `wfi` through `park` (a bit each), for tests.
pub static PARKED_EVER: AtomicUsize = AtomicUsize::new(0);

fn take_permit() -> bool {
    PERMITS
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| p.checked_sub(1))
        .is_ok()
}

impl Park for KernelPlatform {
    fn park(&self) {
        if take_permit() {
            return;
        }
        let me = 1 << arch::hart_id();
        IDLE.fetch_or(me, Ordering::SeqCst);
        if !take_permit() {
            PARKED_EVER.fetch_or(me, Ordering::Relaxed);
            // Interrupts are on here (the poller loop runs with them on), so
            // the tick, an IPI or the UART ends the wait.
            arch::wfi();
            let _ = take_permit();
        }
        IDLE.fetch_and(!me, Ordering::SeqCst);
    }

    fn unpark_one(&self) {
        PERMITS.fetch_add(1, Ordering::SeqCst);
        let idle = IDLE.load(Ordering::SeqCst);
        if idle != 0 {
            let hart = idle.trailing_zeros() as usize;
            crate::sbi::send_ipi(hart);
        }
    }
}

impl Critical for KernelPlatform {
    type Guard = NoIrq;
    fn enter(&self) -> NoIrq {
        NoIrq::now()
    }
}

impl Clock for KernelPlatform {
    fn now(&self) -> Duration {
        let t = arch::time();
        Duration::new(
            t / arch::TIME_HZ,
            ((t % arch::TIME_HZ) * 1_000_000_000 / arch::TIME_HZ) as u32,
        )
    }
}

/// The coroutine a test watches, and the log of its states (one byte each).
static WATCH: AtomicU64 = AtomicU64::new(NONE);
#[allow(clippy::declare_interior_mutable_const)]
const NO_STATE: AtomicU8 = AtomicU8::new(0);
static WATCH_LOG: [AtomicU8; 64] = [NO_STATE; 64];
static WATCH_LEN: AtomicUsize = AtomicUsize::new(0);

/// Starts recording `cid`'s transitions (their target states) for a test.
pub fn watch(cid: CoroutineId) {
    WATCH_LEN.store(0, Ordering::SeqCst);
    WATCH.store(cid.into_raw(), Ordering::SeqCst);
}

/// Whether the watched coroutine has entered `state`.
pub fn watched_entered(state: CoroutineState) -> bool {
    let n = WATCH_LEN.load(Ordering::SeqCst).min(WATCH_LOG.len());
    WATCH_LOG[..n]
        .iter()
        .any(|s| s.load(Ordering::SeqCst) == state as u8 + 1)
}

impl Platform for KernelPlatform {
    fn on_transition(&self, cid: CoroutineId, from: CoroutineState, to: CoroutineState) {
        let hart = arch::hart_id();
        let raw = cid.into_raw();
        match (from, to) {
            (CoroutineState::Ready, CoroutineState::Running) => {
                CURRENT[hart].store(raw, Ordering::Relaxed)
            }
            (CoroutineState::Running | CoroutineState::RunningSuspended, to)
                if to != CoroutineState::RunningSuspended && to != CoroutineState::Running =>
            {
                let _ =
                    CURRENT[hart].compare_exchange(raw, NONE, Ordering::Relaxed, Ordering::Relaxed);
            }
            _ => {}
        }
        if WATCH.load(Ordering::Relaxed) == raw {
            let i = WATCH_LEN.fetch_add(1, Ordering::SeqCst);
            if let Some(slot) = WATCH_LOG.get(i) {
                slot.store(to as u8 + 1, Ordering::SeqCst);
            }
        }
    }
}

/// The kernel coroutine this hart is polling, if any.
pub fn current() -> Option<CoroutineId> {
    let raw = CURRENT[arch::hart_id()].load(Ordering::Relaxed);
    (raw != NONE).then_some(CoroutineId::from_raw(raw))
}
