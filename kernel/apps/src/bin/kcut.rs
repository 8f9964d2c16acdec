//! The matrix benchmark server, model KCUT (paper §4): a kernel coroutine carries out each user
//! thread's blocking socket call. Listens on TCP port 5555; see `ss_apps::server`.
//!
//! `ARG` (`run kcut PRIO ARG`) is ignored: three threads are made per connection.
#![no_std]
#![no_main]

use ss_apps::server::{run, Model, SERVER_HEAP};

async fn main(arg: usize) -> i32 {
    run(Model::Kcut, arg).await
}

ss_ulib::main!(main, heap = SERVER_HEAP);
