//! A process that dies without deregistering is removed through its pidfd —
//! even when a child it forked still holds its socket open.
//!
//! The test re-runs itself as the registering process (`CHILD` in the
//! environment), which forks a grandchild that inherits the socket and then
//! waits to be killed.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::{start, wait_view, WAIT};
use ss_coord::Client;

const CHILD: &str = "SS_COORD_CRASH_CHILD";
const NAME: &str = "a_killed_process_is_removed_even_if_its_socket_lingers";

#[test]
fn a_killed_process_is_removed_even_if_its_socket_lingers() {
    if let Some(path) = std::env::var_os(CHILD) {
        return child(path.into());
    }
    let (coord, path) = start("crash", |c| c.policy.hold = None);
    let observer = Client::connect(&path).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD, &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let grandchild: i32 = loop {
        let line = lines.next().expect("child output").unwrap();
        // libtest's "test NAME ... " may precede it on the same line.
        if let Some((_, pid)) = line.split_once("GRANDCHILD ") {
            break pid.trim().parse().unwrap();
        }
    };
    let child_pid = child.id();
    let (s, ok) = coord.wait_until(WAIT, |s| s.clients.iter().any(|c| c.pid == child_pid));
    assert!(ok, "{s:?}");
    assert!(wait_view(&observer, |g, _| g == 0b10));

    child.kill().unwrap(); // SIGKILL
    let (s, ok) = coord.wait_until(WAIT, |s| s.clients.len() == 1);
    // SAFETY: plain kill of the grandchild this test made (by its pid).
    unsafe { libc::kill(grandchild, libc::SIGKILL) };
    let _ = child.wait();
    assert!(ok, "the dead process was not removed: {s:?}");
    assert_eq!(s.exited, 1, "removed through the pidfd: {s:?}");
    assert_eq!(
        s.disconnected, 0,
        "the socket was still open in the grandchild"
    );
    assert!(wait_view(&observer, |g, _| g == 0));
}

fn child(path: std::path::PathBuf) {
    let c = Client::connect(&path).unwrap();
    c.publish(0b10).unwrap();
    // SAFETY: fork in a test process; the grandchild only calls pause(2), which
    // is async-signal-safe, until it is killed.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        }
    }
    // Straight to fd 1: the test harness may capture `println!`.
    let mut out = std::io::stdout();
    writeln!(out, "GRANDCHILD {pid}").unwrap();
    out.flush().unwrap();
    // Keeps its CPU clock moving: a process that holds the top and never
    // runs would be left out of the view (`stall`), and the test checks its
    // bit is in it.
    loop {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}
