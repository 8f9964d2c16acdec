//! # The SharedScheduler user library (RISC-V kernel)
//!
//! Every user program links this library. The scheduler itself is not in it:
//! ss-core's Executor is linked once, as the kernel's **vDSO** (`kernel/vdso`),
//! mapped read+execute into every process, and reached through its table
//! (`ss_abi::vdso::VdsoTable`); the process's Executor lives in the process's
//! own memory (a heap it hands the vDSO at start). This library wraps the
//! program's `main` into the **main coroutine** (paper §3.1) and offers the
//! paper's interface (Table 1):
//!
//! | paper | here |
//! |---|---|
//! | `spawn(future, prio)` | [`spawn`] |
//! | `getcid()` | [`getcid`]`().await` |
//! | `wake(cid)` | [`wake`] |
//! | `reprio(cid, prio)` | [`reprio`] |
//! | `alloc_cpu()` | [`alloc_cpu`]: one more thread polling the same Executor |
//!
//! ## Global cooperation (paper §2.4)
//!
//! Before each poll the shared scheduler publishes the Executor's ready bitmap in the
//! process page (`ss_abi::page::ProcessPage`, at `uspace::PROCESS_PAGE_VA`) and
//! reads the global page (read-only, at `uspace::GLOBAL_PAGE_VA`): if a
//! coroutine more important than the next one here is ready in another process,
//! the thread yields the hart to the kernel and counts the yield in the process
//! page's `yields`. A long-running coroutine asks the same between steps of its
//! work with [`cooperate`].
//!
//! ## Writing a program
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! async fn main(arg: usize) -> i32 { ss_ulib::println!("hello {arg}"); 0 }
//! ss_ulib::main!(main);
//! ```
//!
//! `ss_ulib::main!(main, heap = 16 * 1024 * 1024);` gives the program a
//! larger heap than the default (see [`main!`]).
//!
//! When the main coroutine returns, the process exits with its value (other
//! coroutines and threads end with it).
#![no_std]

extern crate alloc;

pub mod aio;
mod rt;
pub use ss_usys as sys;

pub use rt::{
    alloc_cpu, cooperate, getcid, global_yields, main_priority, publish, ready_bitmap, reprio,
    spawn, wake, yield_now, Done, Error, DEFAULT_HEAP_SIZE, EXECUTOR_HEAP_MAX, MIN_HEAP_SIZE,
};
pub use ss_abi::syscall::SysError;
pub use ss_abi::{CoroutineId, Priority};

#[doc(hidden)]
pub mod __private {
    pub use crate::rt::HeapSpace;
    pub use alloc::boxed::Box;
}

#[doc(hidden)]
pub mod __rt {
    pub use crate::rt::print;
}

/// Declares `async fn main(arg: usize) -> i32` as the program's main coroutine.
///
/// `main!(main)` gives the program a heap of [`DEFAULT_HEAP_SIZE`] bytes;
/// `main!(main, heap = BYTES)` one of `BYTES` (at least [`MIN_HEAP_SIZE`]).
/// The heap is in the image's `.bss`, so the kernel backs all of it with
/// frames when it loads the program. Half of it, but no more than
/// [`EXECUTOR_HEAP_MAX`], goes to the vDSO for the process's Executor; the
/// rest is the program's (`alloc`).
#[macro_export]
macro_rules! main {
    ($main:path) => {
        $crate::main!($main, heap = $crate::DEFAULT_HEAP_SIZE);
    };
    ($main:path, heap = $size:expr) => {
        /// The program's main, boxed for the user library's start code.
        #[no_mangle]
        pub fn __ss_main(
            arg: usize,
        ) -> core::pin::Pin<$crate::__private::Box<dyn core::future::Future<Output = i32> + Send>> {
            $crate::__private::Box::pin($main(arg))
        }

        /// The program's heap memory, for the user library's start code.
        #[no_mangle]
        pub fn __ss_heap() -> (*mut u8, usize) {
            const SIZE: usize = $size;
            const _: () = assert!(SIZE >= $crate::MIN_HEAP_SIZE, "the heap is too small");
            static SPACE: $crate::__private::HeapSpace<SIZE> = $crate::__private::HeapSpace::new();
            SPACE.region()
        }
    };
}

/// Prints to the console (fd 1).
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::__rt::print(format_args!($($arg)*)) };
}

/// Prints a line to the console (fd 1).
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::__rt::print(format_args!("{}\n", format_args!($($arg)*))) };
}
