//! The matrix benchmark server, model KTUT (paper §4): each user thread carries out its
//! blocking socket calls itself, in the kernel. Listens on TCP port 5555; see
//! `ss_apps::server`.
//!
//! `ARG` (`run ktut PRIO ARG`) is ignored: three threads are made per connection.
#![no_std]
#![no_main]

use ss_apps::server::{run, Model, SERVER_HEAP};

async fn main(arg: usize) -> i32 {
    run(Model::Ktut, arg).await
}

ss_ulib::main!(main, heap = SERVER_HEAP);
