//! A runtime coordinated with other processes (paper §2.4, `ss_runtime::coordinate`):
//! it defers to more important work elsewhere, resumes when that is done, keeps
//! running its own more important work, and stops deferring when the coordinator
//! goes away. "Another process" is a raw `ss_coord::Client` registered with the
//! same coordinator, publishing a bitmap by hand. A runtime whose coordinator
//! restarted registers with the new one. Every wait is bounded; nothing
//! asserts how fast anything happens.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ss_coord::{Client, Config, Coordinator, Running};
use ss_runtime::{prio, Builder, Coordination, Runtime};

const WAIT: Duration = Duration::from_secs(10);

fn socket(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ss-rt-coord-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn coordinator(name: &str) -> (Running, PathBuf) {
    let path = socket(name);
    (Coordinator::spawn(Config::new(&path)).unwrap(), path)
}

fn runtime(path: &Path) -> Runtime {
    Builder::new()
        .workers(2)
        .coordination(Coordination::Connect(path.to_owned()))
        .build()
        .unwrap()
}

/// Waits (bounded) until `cond` holds.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A coroutine at `level` that counts its polls and yields until told to stop.
fn spinner(rt: &Runtime, level: u8) -> (Arc<AtomicU64>, Arc<AtomicBool>) {
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (c, s) = (count.clone(), stop.clone());
    rt.spawn(
        async move {
            while !s.load(Ordering::Relaxed) {
                c.fetch_add(1, Ordering::Relaxed);
                ss_runtime::yield_now().await;
            }
        },
        prio(level),
    )
    .unwrap();
    (count, stop)
}

#[test]
fn defers_to_more_important_work_elsewhere_then_resumes() {
    let (coord, path) = coordinator("defer");
    let other = Client::connect(&path).unwrap();
    let rt = runtime(&path);
    assert!(rt.coordinated());

    // The other process has level-0 work ready; once the runtime sees it ...
    other.publish(0b1).unwrap();
    let client = rt.coordinator().unwrap();
    eventually("the runtime sees level 0 ready elsewhere", || {
        client.view().global.bits() & 1 != 0
    });

    // ... its level-7 work does not run at all: its workers defer instead.
    let (count, stop) = spinner(&rt, 7);
    eventually("a worker defers", || rt.deferrals() > 0);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        count.load(Ordering::Relaxed),
        0,
        "level-7 work ran while level 0 waited elsewhere"
    );

    // Its own level-0 work is not less important than the other's: it runs.
    assert_eq!(rt.block_on(async { 6 * 7 }), 42);

    // The runtime publishes its level-7 work where the coordinator sees it.
    eventually("the coordinator sees the runtime's level 7", || {
        coord
            .status()
            .clients
            .iter()
            .any(|c| c.source == client.source_id() && c.raw & (1 << 7) != 0)
    });

    // The other process's work is done: the deferred work runs.
    other.publish(0).unwrap();
    eventually("the level-7 work runs", || {
        count.load(Ordering::Relaxed) > 0
    });
    stop.store(true, Ordering::Relaxed);
    rt.shutdown();
    drop(other);
    coord.stop().unwrap();
}

/// A coroutine that keeps yielding, alone in its runtime, is held back by its
/// poller rather than queued; it must still count, and still defer.
#[test]
fn a_running_yielder_defers_when_more_important_work_appears_elsewhere() {
    let (coord, path) = coordinator("yielder");
    let other = Client::connect(&path).unwrap();
    let rt = runtime(&path);
    let (count, stop) = spinner(&rt, 6);
    eventually("the level-6 work runs", || {
        count.load(Ordering::Relaxed) > 100
    });
    eventually("the coordinator sees the runtime's level 6", || {
        let me = rt.coordinator().unwrap().source_id();
        coord
            .status()
            .clients
            .iter()
            .any(|c| c.source == me && c.raw & (1 << 6) != 0)
    });
    other.publish(0b10).unwrap(); // level 1 elsewhere
    eventually("a worker defers", || rt.deferrals() > 0);
    let before = count.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        count.load(Ordering::Relaxed),
        before,
        "level-6 work ran while level 1 waited elsewhere"
    );
    other.publish(0).unwrap();
    eventually("the level-6 work runs again", || {
        count.load(Ordering::Relaxed) > before
    });
    stop.store(true, Ordering::Relaxed);
    rt.shutdown();
    drop(other);
    coord.stop().unwrap();
}

#[test]
fn equal_or_less_important_work_elsewhere_does_not_defer() {
    let (coord, path) = coordinator("equal");
    let other = Client::connect(&path).unwrap();
    let rt = runtime(&path);
    let client = rt.coordinator().unwrap();
    // The other has level 3 and level 7 ready.
    other.publish((1 << 3) | (1 << 7)).unwrap();
    eventually("the runtime sees level 3 elsewhere", || {
        client.view().global.bits() & (1 << 3) != 0
    });
    let (count, stop) = spinner(&rt, 3);
    eventually("level-3 work runs beside level 3 elsewhere", || {
        count.load(Ordering::Relaxed) > 100
    });
    stop.store(true, Ordering::Relaxed);
    let (count, stop) = spinner(&rt, 2);
    eventually("level-2 work runs", || count.load(Ordering::Relaxed) > 100);
    stop.store(true, Ordering::Relaxed);
    assert_eq!(rt.deferrals(), 0);
    rt.shutdown();
    drop(other);
    coord.stop().unwrap();
}

#[test]
fn a_dead_coordinator_stops_the_deferring() {
    let (coord, path) = coordinator("gone");
    let other = Client::connect(&path).unwrap();
    let rt = runtime(&path);
    let client = rt.coordinator().unwrap();
    other.publish(0b1).unwrap();
    eventually("the runtime sees level 0 elsewhere", || {
        client.view().global.bits() & 1 != 0
    });
    let (count, stop) = spinner(&rt, 5);
    eventually("a worker defers", || rt.deferrals() > 0);
    // The coordinator stops (it publishes an empty view first): work resumes,
    // and the runtime notices that nobody coordinates any more.
    coord.stop().unwrap();
    eventually("the deferred work runs", || {
        count.load(Ordering::Relaxed) > 0
    });
    stop.store(true, Ordering::Relaxed);
    eventually("the runtime stops following the coordinator", || {
        !rt.coordinated()
    });
    rt.shutdown();
    drop(other);
}

#[test]
fn a_restarted_coordinator_is_joined_again() {
    let (first, path) = coordinator("restart");
    let rt = runtime(&path);
    // Level-5 work keeps the runtime (and its watch thread) busy throughout.
    let (count, stop) = spinner(&rt, 5);
    first.stop().unwrap();
    eventually("the runtime notices that the coordinator has gone", || {
        !rt.coordinated()
    });
    // A new coordinator on the same socket: the runtime registers with it,
    // with what it publishes.
    let second = Coordinator::spawn(Config::new(&path)).unwrap();
    let pid = std::process::id();
    eventually("the runtime registers with the new coordinator", || {
        rt.coordinated()
            && second
                .status()
                .clients
                .iter()
                .any(|c| c.pid == pid && c.raw & (1 << 5) != 0)
    });
    // And follows its view: level-0 work elsewhere makes the level-5 work
    // defer.
    let other = Client::connect(&path).unwrap();
    let before = rt.deferrals();
    other.publish(0b1).unwrap();
    eventually("a worker defers to work the new coordinator shows", || {
        rt.deferrals() > before
    });
    assert!(count.load(Ordering::Relaxed) > 0);
    stop.store(true, Ordering::Relaxed);
    other.publish(0).unwrap();
    rt.shutdown();
    drop(other);
    second.stop().unwrap();
}

#[test]
fn no_coordinator_is_a_clear_error() {
    let path = socket("absent");
    let err = Builder::new()
        .workers(1)
        .coordination(Coordination::Connect(path))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("ss-coord"), "{err}");
}

#[test]
fn not_coordinated_unless_asked() {
    let rt = Builder::new()
        .workers(1)
        .coordination(Coordination::Off)
        .build()
        .unwrap();
    assert!(!rt.coordinated());
    assert!(rt.coordinator().is_none());
    assert_eq!(rt.block_on(async { 1 }), 1);
}

/// In a child process (`STALL_CHILD` names the socket): a runtime whose
/// only worker runs a level-0 coroutine that blocks in a system call.
const STALL_CHILD: &str = "SS_RT_COORD_STALL_CHILD";

/// A runtime whose every worker is blocked while its page claims the top is
/// left out of the view like any hung process (`ss_coord::stall`), although
/// its watch thread keeps looking — and using a little CPU — meanwhile. The
/// runtime runs in a child process (the coordinator's thread in this one
/// would keep any clock of it moving).
#[test]
fn a_runtime_whose_workers_are_all_blocked_is_left_out() {
    use std::io::{BufRead, Write};
    const NAME: &str = "a_runtime_whose_workers_are_all_blocked_is_left_out";
    if let Some(p) = std::env::var_os(STALL_CHILD) {
        let rt = Builder::new()
            .workers(1)
            .coordination(Coordination::Connect(PathBuf::from(p)))
            .build()
            .unwrap();
        rt.spawn(
            async move {
                // Straight to fd 1: the harness may capture `println!`.
                let mut out = std::io::stdout();
                writeln!(out, "READY").unwrap();
                out.flush().unwrap();
                // Its worker blocks (as in a deadlock or a blocking read)
                // until the parent kills the process.
                std::thread::sleep(Duration::from_secs(600));
            },
            prio(0),
        )
        .unwrap();
        std::thread::sleep(Duration::from_secs(600));
        return;
    }
    let path = socket("blocked");
    let mut cfg = Config::new(&path);
    // At their own OS weight throughout: watched from the start.
    cfg.policy.weights.enabled = false;
    let coord = Coordinator::spawn(cfg).unwrap();
    let other = Client::connect(&path).unwrap();
    other.publish(1 << 3).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env(STALL_CHILD, &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    /// Kills (and reaps) the child however the test ends.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let child = Reap(child);
    // libtest's "test NAME ... " may precede it on the same line.
    while !lines
        .next()
        .expect("the child answers")
        .unwrap()
        .contains("READY")
    {}
    let pid = child.0.id();
    let (s, ok) = coord.wait_until(WAIT, |s| {
        s.clients.iter().any(|c| c.pid == pid && c.stalled)
    });
    let row: Vec<_> = s.clients.iter().filter(|c| c.pid == pid).collect();
    assert!(ok, "its blocked level 0 still holds others back: {row:?}");
    // And the other's level 3 is the top now.
    eventually("the other's level is the top", || {
        other.view().global.bits() == 1 << 3
    });
    drop(child);
    drop(other);
    coord.stop().unwrap();
}
