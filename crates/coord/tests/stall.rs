//! A hung process stops holding others back: a registered child that holds
//! the global top and whose CPU clock and page `seq` stop moving (`SIGSTOP`)
//! is left out of the view within the stall window, and counts again once
//! it moves; one that is held back by more important work, or runs one long
//! computation without publishing, is never left out.
//!
//! The test re-runs itself as the child (`CHILD` in the environment, the
//! bitmap and how to live in `BITS` and `MODE`): it registers, publishes once
//! (so its page's `seq` never moves again), prints `READY` and then either
//! sleeps 2 ms at a time (`sleep`: a little CPU time at every wake-up) or
//! spins (`spin`: one long computation). The observer is a client of the
//! test process itself, whose CPU clock always moves (the coordinator's own
//! thread runs in it).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{start, wait_view, WAIT};
use ss_coord::coordinator::ClientStatus;
use ss_coord::{Client, Running};

const CHILD: &str = "SS_COORD_STALL_CHILD";
const BITS: &str = "SS_COORD_STALL_BITS";
const MODE: &str = "SS_COORD_STALL_MODE";

/// The registered child; killed (and reaped) on drop, stopped or not.
struct Hung(Child);

impl Hung {
    fn spawn(test: &str, path: &Path, bits: u64, mode: &str) -> Hung {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(CHILD, path)
            .env(BITS, bits.to_string())
            .env(MODE, mode)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // libtest's "test NAME ... " may precede it on the same line.
        while !lines
            .next()
            .expect("the child answers")
            .unwrap()
            .contains("READY")
        {}
        Hung(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain kill(2) of the child this test made, still unreaped.
        assert_eq!(unsafe { libc::kill(self.0.id() as i32, sig) }, 0);
    }

    /// Its row in the coordinator's status once `cond` holds for it
    /// (bounded; the status is published just after the page, so a change
    /// seen in the view may take a moment to show there).
    fn row_when(&self, coord: &Running, cond: impl Fn(&ClientStatus) -> bool) -> ClientStatus {
        let mine = |s: &ss_coord::Status| s.clients.iter().find(|c| c.pid == self.pid()).cloned();
        let (s, ok) = coord.wait_until(WAIT, |s| mine(s).is_some_and(|c| cond(&c)));
        assert!(ok, "{s:?}");
        mine(&s).unwrap()
    }

    /// Its row in the coordinator's status, once registered (bounded).
    fn row(&self, coord: &Running) -> ClientStatus {
        self.row_when(coord, |_| true)
    }
}

impl Drop for Hung {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// In the child: registers, publishes `BITS` once and lives as `MODE` says
/// until killed. Returns `false` in the test process.
fn child() -> bool {
    let Some(path) = std::env::var_os(CHILD) else {
        return false;
    };
    let bits: u64 = std::env::var(BITS).unwrap().parse().unwrap();
    let spin = std::env::var(MODE).unwrap() == "spin";
    let c = Client::connect(Path::new(&path)).unwrap();
    c.publish(bits).unwrap();
    // Straight to fd 1: the test harness may capture `println!`.
    let mut out = std::io::stdout();
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
    let mut x = 0u64;
    loop {
        if spin {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        } else {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Lets `d` pass (a chance for a wrong rule to drop someone; nothing is
/// asserted about how fast anything happens).
fn pass(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_stopped_process_stops_holding_others_back_until_it_moves() {
    const NAME: &str = "a_stopped_process_stops_holding_others_back_until_it_moves";
    if child() {
        return;
    }
    let (coord, path) = start("stall-stopped", |c| c.policy.weights.enabled = false);
    let observer = Client::connect(&path).unwrap();
    observer.publish(1 << 3).unwrap();
    // Levels 0 and 1, above the observer's 3 (the budget may move its level
    // 0 to 1; either way it holds the top).
    let hung = Hung::spawn(NAME, &path, 0b11, "sleep");
    assert!(wait_view(&observer, |g, _| g & 0b11 != 0 && g & 1 << 3 != 0));
    assert_eq!(hung.row(&coord).stalls, 0);

    hung.signal(libc::SIGSTOP);
    assert!(
        wait_view(&observer, |g, _| g == 1 << 3),
        "the stopped process still holds others back: {:?}",
        coord.status()
    );
    let row = hung.row_when(&coord, |c| c.stalled);
    assert_eq!(row.stalls, 1, "{row:?}");
    assert_ne!(row.raw & 0b11, 0, "its page still claims the levels");

    // Running again (its sleeps wake it): it counts again.
    hung.signal(libc::SIGCONT);
    assert!(
        wait_view(&observer, |g, _| g & 0b11 != 0),
        "{:?}",
        coord.status()
    );
    hung.row_when(&coord, |c| !c.stalled);
}

#[test]
fn a_process_held_back_by_more_important_work_is_not_dropped() {
    const NAME: &str = "a_process_held_back_by_more_important_work_is_not_dropped";
    if child() {
        return;
    }
    let (coord, path) = start("stall-held-back", |c| c.policy.weights.enabled = false);
    let window = coord_window();
    let observer = Client::connect(&path).unwrap();
    observer.publish(1 << 0).unwrap();
    let held = Hung::spawn(NAME, &path, 1 << 2, "sleep");
    assert!(wait_view(&observer, |g, _| g & 1 << 2 != 0));
    // Stopped while something more important is ready elsewhere, for five
    // windows: it is never left out.
    held.signal(libc::SIGSTOP);
    pass(window * 5);
    let row = held.row(&coord);
    assert_eq!((row.stalls, row.effective), (0, 1 << 2), "{row:?}");

    // The important work is done: now it holds the top, and being stopped,
    // it is left out.
    observer.publish(0).unwrap();
    assert!(wait_view(&observer, |g, _| g == 0), "{:?}", coord.status());
    assert_eq!(held.row_when(&coord, |c| c.stalled).stalls, 1);
    held.signal(libc::SIGCONT);
    assert!(wait_view(&observer, |g, _| g == 1 << 2));
}

#[test]
fn a_process_running_one_long_computation_is_not_dropped() {
    const NAME: &str = "a_process_running_one_long_computation_is_not_dropped";
    if child() {
        return;
    }
    let (coord, path) = start("stall-running", |c| c.policy.weights.enabled = false);
    let window = coord_window();
    let observer = Client::connect(&path).unwrap();
    observer.publish(1 << 3).unwrap();
    // Claims level 0 once and computes; its page never changes again.
    let busy = Hung::spawn(NAME, &path, 1 << 0, "spin");
    assert!(wait_view(&observer, |g, _| g & 0b11 != 0));
    pass(window * 5);
    let row = busy.row(&coord);
    assert_eq!(row.stalls, 0, "a running process was left out: {row:?}");
    assert_ne!(row.effective & 0b11, 0, "{row:?}");
}

/// The stall window of the default policy these tests run with.
fn coord_window() -> Duration {
    ss_coord::Policy::default().stall_window()
}
