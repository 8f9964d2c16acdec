//! # SharedScheduler coordinator (Linux)
//!
//! Paper §2.4 has the kernel scan every process's priority bitmap on timer
//! interrupts, fold them into a **global bitmap**, and share it read-only with
//! every process, so that a process yields when something more important is
//! ready elsewhere. Stock Linux has no such kernel, so a **coordinator** process
//! plays its part. This crate is that daemon (`ss-coord`), its library, the
//! [`Client`] a process uses to take part, and the live view (`ss-top`).
//!
//! ## Design principles
//!
//! - **Every byte a process writes is an allegation.** The coordinator reads
//!   process pages read-only, checks their header, masks their bits to the
//!   levels, clamps them to a policy ceiling and budgets how much of the time
//!   the top level may be held. No value can crash the coordinator or make it
//!   wait.
//! - **Make the OS see it.** Yielding is cooperative; the coordinator also
//!   lowers the OS weight (nice, `SCHED_IDLE`) of the worker threads of
//!   processes whose work is less important, so Linux's own scheduler honours
//!   coroutine priorities across processes — and restores what it lowered.
//! - **Reading the global state costs loads, not syscalls.** A process reads the
//!   global page with a few atomic loads; only waiting for a change (a futex)
//!   and poking the coordinator (one byte) are syscalls.
//! - **Each page has one writer.** The memory protection, not a convention,
//!   enforces it: no process can map the global page writable.
//!
//! ## Who writes what
//!
//! | memory | writer | readers |
//! |---|---|---|
//! | process page ([`ss_abi::page::ProcessPage`], a memfd per process) | that process | the coordinator (read-only mapping) |
//! | global page ([`ss_abi::page::GlobalPage`], one memfd) | the coordinator | every client (read-only fd and mapping) |
//!
//! The global page is sealed with `F_SEAL_FUTURE_WRITE` after the coordinator
//! maps it, and clients get a descriptor reopened `O_RDONLY`: `mmap` with
//! `PROT_WRITE` and `mprotect(PROT_WRITE)` both fail, and a store through the
//! mapping raises SIGSEGV (the `global_page_is_read_only` test checks all three).
//! Process pages must be sealed against shrinking (checked at registration), so
//! their owner cannot make the coordinator's reads fault.
//!
//! ## Protocol
//!
//! 1. **Register.** The process creates its page and connects to the
//!    `SOCK_SEQPACKET` socket ([`default_socket_path`]); it sends a hello with its
//!    pid and the page's descriptor (`SCM_RIGHTS`); the coordinator checks the pid
//!    against the socket's peer credentials, maps the page, looks up the ceiling
//!    (by program, uid, default), takes a pidfd of the process and answers with
//!    the source id, the ceiling, the level count and the global page's
//!    descriptor. See [`wire`].
//! 2. **Publish.** The process stores its ready bitmap and bumps its page's
//!    `seq` ([`Client::publish`]); if the value changed it sends a one-byte poke
//!    on the socket. The coordinator drains pokes, scans that page at once, and
//!    scans **every** page on each tick (1 ms by default), so a process that
//!    never pokes ([`Client::publish_quiet`]) is still seen within a tick.
//! 3. **Fold and publish.** Each scan applies the [`policy`] and updates a
//!    [`GlobalBitmap`](ss_core::global::GlobalBitmap) (per-level counts, so the
//!    view has `global` and `multi`). When the view changes the coordinator
//!    writes it under a sequence lock (see [`page`]) and `FUTEX_WAKE`s the page.
//! 4. **Decide.** [`Client::more_important_elsewhere`] answers, in O(1), whether
//!    another process has work more important than the one about to run;
//!    [`Client::wait_for_change`] parks on the page's `seq` until the view changes.
//! 5. **Weigh.** On each tick the coordinator maps every process's most
//!    important recent level onto its worker threads' OS weight ([`weights`]),
//!    only where that changed.
//! 6. **Leave.** Closing the socket deregisters. If the process dies, its pidfd
//!    becomes readable and the coordinator removes it in that turn of its loop —
//!    even if the socket lives on in a child that inherited it.
//!
//! ## Guarantees
//!
//! - A process's bits appear in the global view only at or below its ceiling,
//!   and at its ceiling level only within its top-level budget (a burst, then
//!   a bounded share of the time, as seen by the scans).
//! - A process that holds the global top and makes no progress (neither its
//!   workers' CPU time nor its page's `seq` moves) for the stall window — the
//!   budget's burst, 200 ms by default — is left out of the view until it
//!   moves ([`stall`]); one held back by more important work, or running,
//!   never is.
//! - A page that is not ours (bad magic or version) counts as nothing ready; any
//!   other content is masked and clamped. A connection that sends anything but
//!   the protocol loses its own registration and nothing else.
//! - A client that has registered sees every change of the view within one
//!   futex wake; a view read is never torn between two publishes.
//! - With `CAP_SYS_NICE`: the worker threads of a process whose recent top
//!   level is below another's run at a lower OS weight, and get back exactly
//!   what they had when it returns to the top, leaves, or the coordinator stops
//!   cleanly. What that does and does not buy is in [`weights`].
//! - Not guaranteed: that a process honours the view. Yielding is cooperative;
//!   OS weights bound a process that ignores it only as far as Linux's
//!   weights do (see `docs/coordinator.md`).
//!
//! ## Modules
//!
//! - [`coordinator`] — the daemon's loop, [`Config`], [`Status`];
//! - [`client`] — [`Client`];
//! - [`page`] — typed atomic access to the mapped pages;
//! - [`policy`] — ceilings, clamping and the top-level budget;
//! - [`weights`] — levels onto the worker threads' OS weights;
//! - [`stall`] — a process that holds the top without progress stops holding
//!   others back;
//! - [`query`] — the read-only query socket and its snapshots (for `ss-top`);
//! - [`wire`] — the registration messages;
//! - [`sys`] — the system calls behind all of it, as small safe wrappers (for
//!   tools and tests that speak the protocol by hand).
#![cfg(target_os = "linux")]

#[cfg(not(target_pointer_width = "64"))]
compile_error!("ss-coord needs 64-bit atomic loads that are plain loads (read-only mappings)");

pub mod client;
pub mod coordinator;
pub mod page;
pub mod policy;
pub mod query;
pub mod stall;
pub mod sys;
pub mod weights;
pub mod wire;

pub use client::Client;
pub use coordinator::{default_socket_path, Config, Coordinator, Running, Status, StopHandle};
pub use policy::Policy;
