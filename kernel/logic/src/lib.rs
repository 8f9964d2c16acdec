//! # The RISC-V kernel's pure logic
//!
//! Everything in the kernel that is a decision rather than a machine access lives
//! here, in safe `no_std` + `alloc` code that is tested on the host
//! (`cargo test -p ss-kernel-logic` in `kernel/`). The kernel crate wires these
//! pieces to real page tables, traps and harts.
//!
//! | module | what it decides |
//! |---|---|
//! | [`sv39`] | page-table entry encoding, virtual-address splitting, `satp` |
//! | [`frames`] | which physical frame to hand out next; refuses double frees |
//! | [`heap`] | the buddy heap behind every `#[global_allocator]` here |
//! | [`user`] | whether a user pointer and length name a user range at all |
//! | [`elf`] | which pages a program image needs, with which permissions; refuses images that do not fit the user layout |
//! | [`sched`] | which runnable thread a hart switches to, and what a timer tick does to the running one |
//! | [`results`] | which asynchronous-call results a process keeps until their coroutines take them |
//! | [`folded`] | which bitmap of a process the global page holds, as the process reads it (the kernel's words in its page) |
#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod elf;
pub mod folded;
pub mod frames;
pub mod heap;
pub mod results;
pub mod sched;
pub mod sv39;
pub mod user;
