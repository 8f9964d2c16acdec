//! # SharedScheduler's Linux runtime
//!
//! The user-level half of SharedScheduler (paper §2.2, §3) on the kernel most
//! people run: priority coroutines polled by worker threads through the shared
//! scheduler core (`ss-core`), and asynchronous system calls over io_uring whose
//! completions wake the issuing coroutine by its id — the paper's kernel coroutine
//! completing and waking.
//!
//! ```
//! use ss_runtime::{prio, Runtime};
//!
//! let rt = Runtime::builder().workers(2).build()?;
//! let answer = rt.block_on(async {
//!     // The main coroutine spawns two others; the more important runs first
//!     // whenever both are ready.
//!     let low = ss_runtime::spawn(async { 40 }, prio(7));
//!     let high = ss_runtime::spawn(async { 2 }, prio(0));
//!     low.await.unwrap() + high.await.unwrap()
//! });
//! assert_eq!(answer, 42);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! | paper (Table 1) | here |
//! |---|---|
//! | `spawn(future, prio)` | [`spawn`], [`Runtime::spawn`] → [`JoinHandle`] |
//! | `getcid()` | [`current`] |
//! | `wake(cid)` | [`wake`] |
//! | `reprio(cid, prio)` | [`reprio`] |
//! | `alloc_cpu()` | [`alloc_cpu`] |
//! | main wrapped into the main coroutine | [`Runtime::block_on`] |

pub mod budget;
mod context;
pub mod coordinate;
pub mod io;
mod join;
pub mod net;
mod nudge;
mod park;
mod runtime;
pub mod time;
mod watch;

pub use coordinate::Coordination;
pub use join::{JoinError, JoinHandle};
pub use runtime::{
    alloc_cpu, current, priority, reprio, spawn, try_spawn, wake, Builder, Runtime, SpawnError,
};
pub use ss_core::{yield_now, CoroutineId, CoroutineState, Levels, Priority};
/// Runs an `async fn` as the main coroutine of a new runtime (paper §3.1):
/// `#[ss_runtime::main(workers = 2, priority = 0)] async fn main() { … }`.
pub use ss_runtime_macros::main;

pub use park::WorkerPlatform;

/// Priority `level` (0 = most important), checked at compile time in a `const`
/// context and at run time otherwise.
///
/// # Panics
/// If `level` is 64 or more (no executor has that many levels).
pub const fn prio(level: u8) -> Priority {
    match Priority::new(level) {
        Ok(p) => p,
        Err(_) => panic!("priority levels are 0 (most important) to 63"),
    }
}
