//! A worker for the scheduling tests. `arg >> 32` picks the mode, the low half
//! is its parameter:
//!
//! - 0: spin `param` thousand rounds, cooperating between rounds, then exit
//!   with the main coroutine's priority (so a parent can tell the order);
//! - 1: spin, cooperating, until this process has yielded to a more important
//!   one at least once (or 10 s pass), then exit with the number of such yields;
//! - 2: exit with `param` at once;
//! - 3: write `param` bytes (`a`..`z` repeating) to descriptor 3, then exit 0.
#![no_std]
#![no_main]

extern crate alloc;

use ss_ulib::sys;

fn work(rounds: usize) -> usize {
    let mut x = 0usize;
    for i in 0..rounds {
        x = core::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
    }
    x
}

async fn main(arg: usize) -> i32 {
    let (mode, param) = (arg >> 32, arg & 0xffff_ffff);
    match mode {
        0 => {
            for _ in 0..param {
                work(1000);
                ss_ulib::cooperate().await;
            }
            i32::from(ss_ulib::main_priority())
        }
        1 => {
            let end = sys::time() + 10 * sys::TIME_HZ;
            while ss_ulib::global_yields() == 0 && sys::time() < end {
                work(1000);
                ss_ulib::cooperate().await;
            }
            ss_ulib::global_yields().min(100) as i32
        }
        3 => {
            let data: alloc::vec::Vec<u8> = (0..param).map(|i| b'a' + (i % 26) as u8).collect();
            match sys::write_all(3, &data) {
                Ok(()) => 0,
                Err(_) => 1,
            }
        }
        _ => param as i32,
    }
}

ss_ulib::main!(main);
