//! # SharedScheduler core
//!
//! The scheduler that SharedScheduler shares between an operating-system kernel
//! and its user processes (paper §2.1–2.4), as one `no_std` + `alloc` crate with
//! no `cfg(target_arch)` and no OS calls. The Linux runtime and the RISC-V kernel
//! use it unchanged; they plug in through the small traits of [`platform`].
//!
//! ## Design principles
//!
//! 1. **Priority is absolute.** A CPU always takes the most important ready
//!    coroutine (priority 0 first), FIFO within a level — or, on a platform
//!    that asks for it ([`platform::Park::hot_wake`]), what a poll just woke
//!    first within its level, for at most [`HOT_RUN`] in a row. Finding it is
//!    O(1): one bit scan of the [`PrioBitmap`], whatever the number of
//!    coroutines.
//! 2. **No lost and no double wake-up.** Each coroutine has one atomic state word
//!    ([`state`]); every wake-up, poll, cancellation and re-prioritisation is a
//!    compare-and-swap on it that names exactly one party as the one to queue the
//!    coroutine or to touch its future. Loom models check the races.
//! 3. **Locks are short and never held across a poll.** The ready queues and the
//!    cid table each sit behind a spin lock held for a few pointer writes.
//! 4. **Ids are allegations.** A [`CoroutineId`] from outside may be stale or
//!    forged; it finds nothing rather than the wrong coroutine (generations).
//! 5. **Any future works.** Coroutines get a standard [`core::task::Waker`] that
//!    takes the same path as `wake(cid)`.
//!
//! ## A first coroutine
//!
//! ```
//! use ss_core::{Executor, Priority};
//! use std::sync::{Arc, atomic::{AtomicU32, Ordering}};
//!
//! let exec = Executor::new();               // 8 levels, spinning platform
//! let log = Arc::new(std::sync::Mutex::new(Vec::new()));
//! for level in [5u8, 0, 3] {
//!     let log = log.clone();
//!     exec.spawn(async move { log.lock().unwrap().push(level) },
//!                Priority::new(level).unwrap()).unwrap();
//! }
//! exec.poller().run_until_idle();           // one CPU drives the executor
//! assert_eq!(*log.lock().unwrap(), [0, 3, 5]); // most important first
//! ```
//!
//! ## Waking by id
//!
//! The paper's asynchronous system calls complete by waking a coroutine by its id.
//! Any code holding the id can do that; a stale id is an error, not a crash:
//!
//! ```
//! use ss_core::{Executor, Priority, Wake, current_cid};
//! use std::future::poll_fn;
//! use std::task::Poll;
//!
//! let exec = Executor::new();
//! let cid = exec.spawn(async {
//!     let me = current_cid().await.unwrap();   // getcid()
//!     let mut first = true;
//!     // Block once: Pending without arranging a wake-up, as if waiting for I/O.
//!     poll_fn(|_| if std::mem::take(&mut first) { Poll::Pending } else { Poll::Ready(()) }).await;
//!     let _ = me;
//! }, Priority::new(2).unwrap()).unwrap();
//!
//! let mut cpu = exec.poller();
//! cpu.run_until_idle();
//! assert_eq!(exec.blocked(), [cid]);           // in the blocking set
//! assert_eq!(exec.wake(cid), Ok(Wake::Queued)); // the "I/O" completed
//! cpu.run_until_idle();
//! assert!(exec.is_empty());                     // it ran to the end
//! assert!(exec.wake(cid).is_err());             // its id is retired
//! ```
//!
//! ## Map of the crate
//!
//! | module | concept (paper) |
//! |---|---|
//! | [`state`] | the coroutine state model (§2.3), drawn and checked |
//! | `task` | the coroutine control block (§2.1.1) and its `Waker` |
//! | `queue` | per-priority ready queues (§2.1.2) |
//! | `registry` | the blocking set, and cid → coroutine |
//! | [`Executor`], [`Poller`] | the Executor (§2.1.2) and the CPUs it runs on (§2.2) |
//! | [`PrioBitmap`] | the priority bitmap (§2.1.2) |
//! | [`global`] | the global bitmap (§2.4) |
//! | [`drain`] | one drainer at a time for a queue several threads empty, no request lost |
//! | [`platform`] | park/unpark, critical sections, clock, tracing |
#![no_std]

extern crate alloc;
#[cfg(test)]
#[macro_use]
extern crate std;

mod bitmap;
pub mod drain;
mod executor;
pub mod global;
mod lock;
pub mod platform;
mod queue;
mod registry;
pub mod state;
mod sync;
mod task;

pub use bitmap::PrioBitmap;
pub use drain::DrainGate;
pub use executor::{Cancel, Error, Executor, Poller, Stall, Wake};
pub use queue::HOT_RUN;
pub use ss_abi::{CoroutineId, CoroutineKind, Levels, Priority};
pub use state::CoroutineState;
pub use task::{
    cid_of, current_cid, kind_of, more_important_ready, yield_now, CurrentCid, YieldNow,
};
