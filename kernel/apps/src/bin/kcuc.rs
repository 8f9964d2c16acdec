//! The matrix benchmark server, model KCUC (paper §4): kernel coroutines carry out the user
//! coroutines' asynchronous socket calls. Listens on TCP port 5555; see `ss_apps::server`.
//!
//! `ARG` (`run kcuc PRIO ARG`) is the number of harts polling the process's Executor (at least
//! 1).
#![no_std]
#![no_main]

use ss_apps::server::{run, Model, SERVER_HEAP};

async fn main(arg: usize) -> i32 {
    run(Model::Kcuc, arg).await
}

ss_ulib::main!(main, heap = SERVER_HEAP);
