//! Helpers shared by the integration tests: a coordinator on a socket in a
//! fresh temporary directory, and bounded waits.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ss_coord::{Client, Config, Coordinator, Running};

/// Upper bound of every wait; tests never assert on how fast something happens.
pub const WAIT: Duration = Duration::from_secs(10);

/// A socket path in the temporary directory, unique to this process and
/// `name`; the coordinator removes the file when it stops.
pub fn socket_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("ss-coord-t{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// A coordinator on its own thread, configured by `f`.
pub fn start(name: &str, f: impl FnOnce(&mut Config)) -> (Running, PathBuf) {
    let path = socket_path(name);
    let mut cfg = Config::new(&path);
    f(&mut cfg);
    (Coordinator::spawn(cfg).unwrap(), path)
}

/// Spins until the client's view satisfies `cond` (bounded by [`WAIT`]).
pub fn wait_view(c: &Client, cond: impl Fn(u64, u64) -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = c.view();
        if cond(v.global.bits(), v.multi.bits()) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        let seen = c.seq();
        c.wait_for_change(seen, Some(Duration::from_millis(5)));
    }
}
