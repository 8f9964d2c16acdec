//! The read-only query socket and the live view: snapshots carry the
//! registered processes, bitmaps and yields; `ss-top --once` prints them; a
//! hostile query peer harms nobody.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{start, wait_view, WAIT};
use ss_coord::query::{self, fetch, Snapshot};
use ss_coord::Client;

/// Fetches snapshots until `cond` holds (bounded by [`WAIT`]).
fn snapshot_until(path: &std::path::Path, cond: impl Fn(&Snapshot) -> bool) -> (Snapshot, bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = fetch(path).unwrap();
        if cond(&s) || Instant::now() >= deadline {
            let ok = cond(&s);
            return (s, ok);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_snapshot_shows_processes_bitmaps_and_yields() {
    let (_coord, path) = start("query", |c| c.policy.hold = None);
    let qpath = query::query_path(&path);
    let a = Client::connect(&path).unwrap();
    let b = Client::connect(&path).unwrap();
    a.publish(1 << 1 | 1 << 4).unwrap();
    b.publish(1 << 4).unwrap();
    assert!(wait_view(&a, |g, m| g == 0b1_0010 && m == 1 << 4));

    let (s, ok) = snapshot_until(&qpath, |s| view(s) == (0b1_0010, 1 << 4));
    assert!(ok, "{s:?}");
    assert_eq!(s.format, query::SNAPSHOT_FORMAT);
    assert_eq!(s.status.levels.count(), 8);
    assert_eq!(s.status.clients.len(), 2);
    let me = std::process::id();
    assert!(s.status.clients.iter().all(|p| p.pid == me && p.header_ok));
    let pa = row(&s, a.source_id()).unwrap();
    assert_eq!((pa.raw, pa.effective), (0b1_0010, 0b1_0010));
    assert_eq!(pa.exe, Some(std::env::current_exe().unwrap()));

    // Yields are counted from registration on and turned into a rate.
    a.add_yields(1000);
    let (s, ok) = snapshot_until(&qpath, |s| {
        row(s, a.source_id()).is_some_and(|p| p.yields == 1000 && p.yields_per_sec > 0)
    });
    assert!(ok, "{s:?}");
    assert_eq!(row(&s, b.source_id()).unwrap().yields, 0);

    let text = s.render_text();
    assert!(text.contains(".1..4..."), "{text}");
    assert!(text.contains(&me.to_string()), "{text}");
}

fn first_yields(s: &Snapshot) -> Option<u64> {
    s.status.clients.first().map(|p| p.yields)
}

/// The row of source `source`.
fn row(s: &Snapshot, source: u32) -> Option<&ss_coord::coordinator::ClientStatus> {
    s.status.clients.iter().find(|p| p.source == source)
}

fn view(s: &Snapshot) -> (u64, u64) {
    (s.status.view.global.bits(), s.status.view.multi.bits())
}

#[test]
fn a_page_whose_yield_counter_jumps_back_counts_a_restart() {
    let (_coord, path) = start("query-yields", |c| c.policy.hold = None);
    let qpath = query::query_path(&path);
    let a = Client::connect(&path).unwrap();
    a.add_yields(5);
    let (s, ok) = snapshot_until(&qpath, |s| first_yields(s) == Some(5));
    assert!(ok, "{s:?}");
    // A huge or backward step (garbage, or a counter reset) is not a yield
    // count; counting resumes from the new value.
    a.add_yields(u64::MAX - 10);
    a.publish(1).unwrap();
    let (s, ok) = snapshot_until(&qpath, |s| {
        s.status.clients.first().is_some_and(|p| p.raw == 1)
    });
    assert!(ok, "{s:?}");
    a.add_yields(3);
    let (s, ok) = snapshot_until(&qpath, |s| first_yields(s) == Some(8));
    assert!(ok, "{s:?}");
}

#[test]
fn ss_top_once_prints_a_snapshot() {
    let (_coord, path) = start("top", |c| c.policy.hold = None);
    let a = Client::connect(&path).unwrap();
    a.publish(1 << 2).unwrap();
    assert!(wait_view(&a, |g, _| g == 1 << 2));
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ss-top"))
            .arg("--socket")
            .arg(&path)
            .arg("--once")
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // The query socket serves the status of the last scan, which may lag the
    // page the client waited on by a scan: ask again (bounded) until it shows.
    let deadline = Instant::now() + WAIT;
    let mut text = run(&[]);
    while !text.starts_with("global ..2.....") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        text = run(&[]);
    }
    assert!(text.starts_with("global ..2....."), "{text}");
    assert!(text.contains(&std::process::id().to_string()), "{text}");
    let json: Snapshot = serde_json::from_str(&run(&["--json"])).unwrap();
    assert_eq!(view(&json), (1 << 2, 0));

    // Without a coordinator it says so and fails.
    let out = Command::new(env!("CARGO_BIN_EXE_ss-top"))
        .args(["--socket", "/nonexistent/ss.sock", "--once"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no coordinator query socket"));
}

#[test]
fn a_hostile_query_peer_harms_nobody() {
    let (coord, path) = start("query-hostile", |c| c.policy.hold = None);
    let qpath = query::query_path(&path);
    let a = Client::connect(&path).unwrap();
    // Peers that write garbage, or connect and never read.
    let mut idle = Vec::new();
    for i in 0..20u8 {
        let mut s = UnixStream::connect(&qpath).unwrap();
        let _ = s.write_all(&[i; 4096]);
        idle.push(s);
    }
    // Registration and publishing go on, and so do other queries.
    a.publish(1 << 6).unwrap();
    assert!(wait_view(&a, |g, _| g == 1 << 6));
    let b = Client::connect(&path).unwrap();
    b.publish(1 << 5).unwrap();
    assert!(wait_view(&a, |g, _| g == 1 << 6 | 1 << 5));
    let (s, ok) = snapshot_until(&qpath, |s| view(s).0 == 1 << 6 | 1 << 5);
    assert!(ok, "{s:?}");
    drop(idle);
    assert_eq!(coord.status().clients.len(), 2);

    // Registering on the query socket, or querying the registration socket,
    // is refused rather than misunderstood.
    assert!(Client::connect(&qpath).is_err());
    assert!(fetch(&path).is_err());
}
