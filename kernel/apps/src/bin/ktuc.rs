//! The matrix benchmark server, model KTUC (paper §4): the kernel's polling thread carries out
//! the user coroutines' asynchronous socket calls. Listens on TCP port 5555; see
//! `ss_apps::server`.
//!
//! `ARG` (`run ktuc PRIO ARG`) is the number of harts polling the process's Executor (at least
//! 1).
#![no_std]
#![no_main]

use ss_apps::server::{run, Model, SERVER_HEAP};

async fn main(arg: usize) -> i32 {
    run(Model::Ktuc, arg).await
}

ss_ulib::main!(main, heap = SERVER_HEAP);
