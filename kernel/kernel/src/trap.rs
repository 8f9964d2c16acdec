//! Traps taken in the kernel (traps from user mode return to the switching
//! coroutine that ran the thread: see `arch` and `sched::run`).
//!
//! A kernel-mode trap is an interrupt: the tick, an IPI, or the UART. An
//! exception in kernel mode is a kernel bug: it is reported and QEMU exits with
//! a failure code, so a test run cannot pass over it.
//!
//! When the tick interrupts a kernel coroutine in the middle of its poll, that
//! coroutine is Running-suspended (paper §2.3, edge ⑥) while the handler runs,
//! and Running again (⑦) when it returns: `Executor::suspend`/`resume`.

use crate::arch::{self, TrapFrame};
use crate::{console, kexec, platform, sbi, sched};

/// The Rust half of a kernel-mode trap (called from `trap_entry`).
pub extern "C" fn kernel_trap(frame: &mut TrapFrame) {
    let cause = arch::scause();
    if cause & arch::CAUSE_INTERRUPT == 0 {
        crate::println!(
            "[kernel] PANIC: exception {} in kernel mode at pc {:#x}, stval {:#x}",
            cause,
            frame.sepc,
            arch::stval()
        );
        sbi::shutdown(false, 2);
    }
    match cause & !arch::CAUSE_INTERRUPT {
        arch::IRQ_TIMER => {
            let interrupted = platform::current();
            let suspended = interrupted.is_some_and(|cid| kexec().suspend(cid).is_ok());
            sched::tick();
            sched::unload_dead();
            if let (true, Some(cid)) = (suspended, interrupted) {
                let _ = kexec().resume(cid);
            }
        }
        arch::IRQ_SOFT => {
            arch::clear_soft_pending();
            // Perhaps a dead process's table to let go of.
            sched::unload_dead();
        }
        arch::IRQ_EXTERNAL => console::handle_external(arch::hart_id()),
        _ => {}
    }
}
