//! # The SharedScheduler kernel (RISC-V, QEMU virt)
//!
//! The paper's system lives in an OS kernel; this is that kernel, with the
//! ss-core scheduler, unchanged, as its scheduler. See `docs/kernel.md` for the
//! whole picture and every point where it differs from the paper.
//!
//! ## Design principles
//!
//! 1. **Simple and clear over fast and clever.** One trap entry, one kind of
//!    lock ([`sync::IrqMutex`]), no kernel stack per thread: user mode is a
//!    function call ([`arch::run_user`]) that a switching coroutine makes and
//!    that returns at the next trap.
//! 2. **User input is an allegation.** System call numbers, pointers, lengths,
//!    priorities, descriptors and published bitmaps are checked before use
//!    ([`syscall`], `ss_kernel_logic::user`, `GlobalBitmap::update`); a bad
//!    value gets an error code. A faulting process is killed; the kernel goes on.
//! 3. **One scheduler.** Kernel coroutines and processes are ordered by one
//!    priority scale in one ss-core Executor shared by all harts: the
//!    per-hart switching coroutines carry the priority of the process they run
//!    ([`sched`]).
//! 4. **Decisions are pure and host-tested.** Page-table entries, frame
//!    allocation, user ranges, ELF plans and the tick policy live in
//!    `ss-kernel-logic`; this crate wires them to the machine.
//! 5. **A failing test fails QEMU.** The kernel ends the machine through the
//!    SiFive test device with an exit code; a kernel-mode exception or a panic
//!    exits non-zero.
//!
//! ## Map
//!
//! | module | what |
//! |---|---|
//! | [`arch`] | CSRs, boot and trap assembly, `run_user` |
//! | [`mm`] | heap, frames, Sv39 address spaces, checked user copies |
//! | [`platform`] | the kernel Executor's park/critical/clock/trace hooks |
//! | [`trap`] | kernel-mode interrupts; Running-suspended |
//! | [`sched`] | run queue, global bitmap, switching coroutines, ticks |
//! | [`loader`] | program images, and the vDSO shared by every process |
//! | [`proc`] | processes, threads, their states and teardown |
//! | [`syscall`] | the system calls and their argument checks |
//! | [`fd`] | console and pipe descriptors |
//! | [`console`] | UART output, PLIC-driven input |
//! | [`net`] | virtio-net, smoltcp TCP, listeners and connections |
#![no_std]
#![no_main]

extern crate alloc;

pub mod aio;
pub mod arch;
pub mod console;
pub mod fd;
pub mod kmem;
#[cfg(feature = "ktest")]
mod ktest;
pub mod loader;
pub mod mm;
pub mod net;
pub mod platform;
pub mod proc;
pub mod sbi;
pub mod sched;
pub mod sync;
pub mod syscall;
pub mod trap;

/// The user programs embedded by `build.rs`.
pub mod apps {
    include!(concat!(env!("OUT_DIR"), "/apps.rs"));
}

use core::sync::atomic::{AtomicUsize, Ordering};

use ss_abi::{CoroutineKind, Levels, Priority};
use ss_core::Executor;

use crate::platform::KernelPlatform;

static KEXEC: spin::Once<Executor<KernelPlatform>> = spin::Once::new();
/// Harts that reached the scheduler loop (a bit each).
pub static ONLINE: AtomicUsize = AtomicUsize::new(0);

/// The kernel Executor, shared by every hart.
pub fn kexec() -> &'static Executor<KernelPlatform> {
    KEXEC.get().expect("the kernel Executor is created at boot")
}

/// The boot hart's Rust entry (from `_start`).
pub extern "C" fn boot_main(hart: usize, _dtb: usize) -> ! {
    arch::sstatus_set(arch::SSTATUS_FS_INITIAL);
    arch::install_trap_vector();
    mm::init();
    // SAFETY: the kernel table identity-maps RAM and devices, which is where
    // everything the kernel uses lives.
    unsafe { arch::set_satp(mm::kernel_satp()) };
    sched::init();
    loader::init();
    KEXEC.call_once(|| Executor::with_platform(Levels::DEFAULT, KernelPlatform));
    let (_, frames) = mm::frame_stats();
    println!(
        "[kernel] SharedScheduler kernel: boot hart {hart}, Sv39, {} MiB for frames, {} programs embedded",
        (frames * 4096) >> 20,
        apps::APPS.len()
    );
    extern "C" {
        fn _start_secondary();
    }
    let mut harts = 1;
    for h in (0..arch::MAX_HARTS).filter(|&h| h != hart) {
        if sbi::hart_start(h, _start_secondary as *const () as usize, 0) {
            harts += 1;
        }
    }
    for _ in 0..harts {
        // Statically the most important at first (paper §2.4); each then
        // follows the process it runs.
        kexec()
            .spawn_kind(
                sched::switcher(),
                Priority::MOST_IMPORTANT,
                CoroutineKind::Switching,
            )
            .expect("spawning a switching coroutine");
    }
    // The devices before the first program runs (so their lines come before
    // the shell's prompt).
    console::init_input(hart);
    net::init();
    kexec()
        .spawn(init(harts), Priority::MOST_IMPORTANT)
        .expect("spawning the init coroutine");
    net::spawn_task();
    hart_loop(hart)
}

/// A secondary hart's Rust entry (from `_start_secondary`).
pub extern "C" fn secondary_main(hart: usize, _opaque: usize) -> ! {
    arch::sstatus_set(arch::SSTATUS_FS_INITIAL);
    arch::install_trap_vector();
    // SAFETY: as on the boot hart; the table is complete before any hart starts.
    unsafe { arch::set_satp(mm::kernel_satp()) };
    hart_loop(hart)
}

/// Every hart: timer on, interrupts on, then poll the kernel Executor forever.
fn hart_loop(hart: usize) -> ! {
    arch::allow_user_time();
    arch::sie_set(arch::SIE_SSIE | arch::SIE_STIE | arch::SIE_SEIE);
    sbi::set_timer(arch::time() + sched::TICK);
    ONLINE.fetch_or(1 << hart, Ordering::SeqCst);
    arch::irq_enable();
    kexec().poller().run();
    println!("[kernel] the kernel Executor shut down");
    sbi::shutdown(false, 3)
}

/// The first kernel coroutine: the test suite (feature `ktest`) or the shell.
async fn init(harts: usize) {
    #[cfg(feature = "ktest")]
    {
        let failed = ktest::run(harts).await;
        sbi::shutdown(failed == 0, failed as u16);
    }
    #[cfg(not(feature = "ktest"))]
    {
        let _ = harts;
        let Ok(p) = proc::spawn(
            "shell",
            Priority::new(2).unwrap_or(Priority::MOST_IMPORTANT),
            0,
            None,
            None,
        ) else {
            println!("[kernel] no shell in the image; build with `cargo xtask qemu`");
            sbi::shutdown(false, 4);
        };
        let code = proc::wait_kernel_child(p.pid).await;
        println!("[kernel] shell exited with {code}; shutting down");
        sbi::shutdown(code == 0, code as u16);
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("[kernel] PANIC on hart {}: {info}", arch::hart_id());
    sbi::shutdown(false, 1)
}
