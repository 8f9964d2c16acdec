//! Faults on purpose; `arg` picks how: null load, store to the read-only
//! global page, illegal instruction, jump into the kernel, store into the
//! kernel, store into the shared vDSO code, stack overflow. The kernel must kill this process (its
//! parent sees `KILLED`) and go on.
#![no_std]
#![no_main]

use ss_abi::uspace::{GLOBAL_PAGE_VA, VDSO_BASE};

const KERNEL: usize = 0x8020_0000;

#[allow(unconditional_recursion)]
fn recurse(depth: usize) -> usize {
    let pad = [depth; 64];
    recurse(core::hint::black_box(pad)[depth % 64] + 1) + 1
}

async fn main(mode: usize) -> i32 {
    // SAFETY: none of this is safe: each branch faults on purpose, which is the
    // point of the program (the kernel must kill it and go on).
    unsafe {
        match mode {
            0 => {
                core::hint::black_box(core::ptr::read_volatile(
                    core::hint::black_box(0usize) as *const u64
                ));
            }
            1 => core::ptr::write_volatile(GLOBAL_PAGE_VA as *mut u64, 1),
            2 => core::arch::asm!("unimp"),
            3 => {
                let f: extern "C" fn() = core::mem::transmute(core::hint::black_box(KERNEL));
                f();
            }
            4 => core::ptr::write_volatile(core::hint::black_box(KERNEL) as *mut u64, 0),
            5 => core::ptr::write_volatile(core::hint::black_box(VDSO_BASE) as *mut u64, 0),
            _ => {
                core::hint::black_box(recurse(0));
            }
        }
    }
    // Reaching here means the fault did not happen.
    0
}

ss_ulib::main!(main);
