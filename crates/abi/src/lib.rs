//! # SharedScheduler ABI
//!
//! The vocabulary that every part of SharedScheduler shares, kept in one `no_std`
//! crate so that the scheduler core, the Linux runtime, the RISC-V kernel, its user
//! library and the host tools can never disagree about it:
//!
//! - [`CoroutineId`]: the id by which a coroutine is woken (paper §2.1, `cid`);
//! - [`Priority`] and [`Levels`]: 0 is the most important priority; 8 levels by
//!   default as in the paper, up to [`MAX_LEVELS`] (64) supported;
//! - [`CoroutineKind`]: what a coroutine is for (paper §2.1, `kind`);
//! - [`syscall`]: system call numbers, checked on entry;
//! - [`page`]: the layouts of the pages shared between processes and the kernel
//!   (or the Linux coordinator), such as the global priority bitmap;
//! - [`uspace`]: the RISC-V kernel's user address-space layout;
//! - [`vdso`]: the interface of the shared scheduler code (the paper's vDSO).
//!
//! Design rule: nothing here trusts a raw number. Every conversion from an integer
//! that may come from another process or from the wire is a `TryFrom` that fails
//! with an error naming the fix.
#![no_std]

pub mod completion;
mod id;
mod kind;
pub mod page;
mod priority;
pub mod syscall;
pub mod uspace;
pub mod vdso;

pub use id::CoroutineId;
pub use kind::{CoroutineKind, InvalidKind};
pub use priority::{InvalidLevels, InvalidPriority, Levels, Priority, MAX_LEVELS};
