//! OS weights: a registered child's worker threads get the nice value or
//! policy its published levels call for, and get their own settings back when
//! it returns to the top, deregisters, or the coordinator stops.
//!
//! The test re-runs itself as the child (`CHILD` in the environment): it names
//! two threads `ss-worker-0` and `ss-worker-1` (the second lowers itself to
//! nice 2 first, so restoring must give back 2, not 0), registers, prints the
//! thread ids and then obeys commands on stdin. The parent reads each thread's
//! policy and nice value from `/proc/<pid>/task/<tid>/stat`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::{start, WAIT};
use ss_coord::weights::has_cap_sys_nice;
use ss_coord::{Client, Config, Running};

const CHILD: &str = "SS_COORD_WEIGHTS_CHILD";

/// A worker thread's settings as `/proc` reports them: `(policy, nice)`.
fn sched_of(pid: u32, tid: i32) -> (i32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap();
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[38].parse().unwrap(), f[16].parse().unwrap())
}

const OTHER: i32 = libc::SCHED_OTHER;
const IDLE: i32 = libc::SCHED_IDLE;

struct Registered {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    /// Main thread, ss-worker-0, ss-worker-1.
    tids: [i32; 3],
}

impl Registered {
    fn spawn(test: &str, path: &std::path::Path) -> Registered {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(CHILD, path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut r = Registered {
            child,
            stdin,
            lines,
            tids: [0; 3],
        };
        let line = r.expect("TIDS ");
        let tids: Vec<i32> = line
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect();
        r.tids = [tids[0], tids[1], tids[2]];
        r
    }

    /// The rest of the next line containing `tag` (libtest's own output may
    /// precede it on the same line).
    fn expect(&self, tag: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).expect("the child answers");
            if let Some((_, rest)) = line.split_once(tag) {
                return rest.to_string();
            }
        }
    }

    fn cmd(&mut self, c: &str) {
        writeln!(self.stdin, "{c}").unwrap();
        self.stdin.flush().unwrap();
        self.expect("DONE");
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until both workers have `want` (bounded); returns what they had.
    fn workers_reach(&self, want: [(i32, i32); 2]) -> ([(i32, i32); 2], bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = [
                sched_of(self.pid(), self.tids[1]),
                sched_of(self.pid(), self.tids[2]),
            ];
            if now == want || Instant::now() >= deadline {
                return (now, now == want);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn main_thread(&self) -> (i32, i32) {
        sched_of(self.pid(), self.tids[0])
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn child(path: std::path::PathBuf) {
    let worker = |name: &str, nice: i32| {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // SAFETY: plain syscalls on this thread's own id.
                let tid = unsafe { libc::gettid() };
                if nice != 0 {
                    // SAFETY: as above; lowering one's own weight needs no privilege.
                    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
                }
                tx.send(tid).unwrap();
                // Wakes now and then, so the process's CPU clock moves: one
                // that holds the top and never runs is left out of the view
                // (`stall`), and the test checks the weights of one that
                // holds it.
                loop {
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
            .unwrap();
        rx.recv().unwrap()
    };
    let w0 = worker("ss-worker-0", 0);
    let w1 = worker("ss-worker-1", 2);
    // SAFETY: gettid has no preconditions.
    let main = unsafe { libc::gettid() };
    let mut client = Some(Client::connect(&path).unwrap());
    let mut out = std::io::stdout();
    writeln!(out, "TIDS {main} {w0} {w1}").unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lines() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["publish", bits] => {
                let bits = u64::from_str_radix(bits, 2).unwrap();
                client.as_ref().unwrap().publish(bits).unwrap();
            }
            ["leave"] => client = None,
            _ => return,
        }
        writeln!(out, "DONE").unwrap();
        out.flush().unwrap();
    }
}

/// Whether this test can check weights; if not, checks that the coordinator
/// says why it leaves them alone, and that it does.
fn weights_unavailable(coord: &ss_coord::Running, r: &mut Registered) -> bool {
    if has_cap_sys_nice() {
        return false;
    }
    let s = coord.status();
    assert!(!s.weights.enabled);
    assert!(
        s.weights.note.contains("CAP_SYS_NICE"),
        "{}",
        s.weights.note
    );
    r.cmd("publish 10000000");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        [sched_of(r.pid(), r.tids[1]), sched_of(r.pid(), r.tids[2])],
        [(OTHER, 0), (OTHER, 2)]
    );
    true
}

/// In the child process: runs the child and gives `None`. In the test: a
/// coordinator configured by `f`, a client of the test process itself
/// publishing level 0 (the "server"), and the registered child — or `None`
/// when the coordinator cannot apply weights (after checking that it says so
/// and leaves the threads alone).
fn setup(test: &str, f: impl FnOnce(&mut Config)) -> Option<(Running, Client, Registered)> {
    if let Some(path) = std::env::var_os(CHILD) {
        child(path.into());
        return None;
    }
    let (coord, path) = start(test, |c| {
        c.policy.hold = None;
        f(c);
    });
    let server = Client::connect(&path).unwrap();
    server.publish(1 << 0).unwrap();
    let mut r = Registered::spawn(test, &path);
    if weights_unavailable(&coord, &mut r) {
        return None;
    }
    Some((coord, server, r))
}

#[test]
fn worker_threads_follow_the_published_levels_and_are_restored() {
    let Some((coord, server, mut r)) = setup(
        "worker_threads_follow_the_published_levels_and_are_restored",
        |c| c.policy.apply(&["weight-window-ms", "30"]).unwrap(),
    ) else {
        return;
    };
    assert_eq!(
        r.workers_reach([(OTHER, 0), (OTHER, 2)]).0,
        [(OTHER, 0), (OTHER, 2)]
    );

    // Three levels below the server's: nice 3 × 5, never less than the
    // thread's own 2; the main thread (not a worker by name) is left alone.
    r.cmd("publish 1000");
    let (got, ok) = r.workers_reach([(OTHER, 15), (OTHER, 15)]);
    assert!(ok, "{got:?} {:?}", coord.status());
    assert_eq!(r.main_thread(), (OTHER, 0));
    let (s, ok) = coord.wait_until(WAIT, |s| {
        s.clients
            .iter()
            .any(|c| c.pid == r.pid() && c.weighted_threads == 2)
    });
    assert!(ok, "{s:?}");

    // Only the least important level: SCHED_IDLE.
    r.cmd("publish 10000000");
    let (got, ok) = r.workers_reach([(IDLE, 0), (IDLE, 2)]);
    assert!(ok, "{got:?}");

    // The server goes quiet and the child claims level 2: it holds the
    // globally most important level now, so it gets its own settings back.
    server.publish(0).unwrap();
    r.cmd("publish 100");
    let (got, ok) = r.workers_reach([(OTHER, 0), (OTHER, 2)]);
    assert!(ok, "{got:?}");

    // The server is back at level 0: two levels below it, nice 10.
    server.publish(1).unwrap();
    let (got, ok) = r.workers_reach([(OTHER, 10), (OTHER, 10)]);
    assert!(ok, "{got:?}");

    // Deregistering restores exactly what the threads had.
    r.cmd("leave");
    let (got, ok) = r.workers_reach([(OTHER, 0), (OTHER, 2)]);
    assert!(ok, "{got:?}");
    let (s, ok) = coord.wait_until(WAIT, |s| s.clients.len() == 1);
    assert!(ok, "{s:?}");
}

#[test]
fn stopping_the_coordinator_restores_every_thread() {
    let Some((coord, _server, mut r)) =
        setup("stopping_the_coordinator_restores_every_thread", |_| {})
    else {
        return;
    };
    // Five levels below: 25, capped at nice 19.
    r.cmd("publish 100000");
    let (got, ok) = r.workers_reach([(OTHER, 19), (OTHER, 19)]);
    assert!(ok, "{got:?}");
    coord.stop().unwrap();
    let (got, ok) = r.workers_reach([(OTHER, 0), (OTHER, 2)]);
    assert!(ok, "{got:?}");
}

/// The CPUs thread `tid` may run on.
fn cpus_of(tid: i32) -> Vec<usize> {
    ss_coord::sys::affinity_get(tid).unwrap().cpus().collect()
}

/// Waits until both workers may run on exactly `want` (bounded).
fn workers_on(r: &Registered, want: &[usize]) -> (Vec<Vec<usize>>, bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = vec![cpus_of(r.tids[1]), cpus_of(r.tids[2])];
        if now.iter().all(|c| c == want) || Instant::now() >= deadline {
            let ok = now.iter().all(|c| c == want);
            return (now, ok);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn lowered_workers_keep_off_the_reserved_cpu_and_get_their_affinity_back() {
    let Some((coord, server, mut r)) = setup(
        "lowered_workers_keep_off_the_reserved_cpu_and_get_their_affinity_back",
        |c| {
            c.policy.apply(&["weight-window-ms", "30"]).unwrap();
            c.policy.weights.refresh = Duration::from_millis(20);
        },
    ) else {
        return;
    };
    let all = cpus_of(0);
    let reserved = coord.status().weights.reserved;
    if all.len() < 2 {
        // One CPU: nothing can be kept free.
        assert!(reserved.is_empty(), "{reserved:?}");
        return;
    }
    // The last of the coordinator's CPUs (it runs with this test's affinity).
    assert_eq!(reserved, [*all.last().unwrap()]);
    let rest: Vec<usize> = all[..all.len() - 1].to_vec();
    assert_eq!(workers_on(&r, &all).0, [all.clone(), all.clone()]);

    // Lowered below the server: off the reserved CPU; the main thread (not a
    // worker) keeps every CPU.
    r.cmd("publish 1000");
    let (got, ok) = workers_on(&r, &rest);
    assert!(ok, "{got:?} {:?}", coord.status());
    assert_eq!(cpus_of(r.tids[0]), all);

    // Something widens a lowered worker again (its runtime, say): the next
    // refresh narrows it back.
    ss_coord::sys::affinity_set(r.tids[1], ss_coord::sys::CpuMask::of(all.iter().copied()))
        .unwrap();
    let (got, ok) = workers_on(&r, &rest);
    assert!(ok, "{got:?}");

    // At the top again: every CPU back.
    server.publish(0).unwrap();
    r.cmd("publish 100");
    let (got, ok) = workers_on(&r, &all);
    assert!(ok, "{got:?}");

    // Lowered again, then the coordinator stops: every CPU back.
    server.publish(1).unwrap();
    let (got, ok) = workers_on(&r, &rest);
    assert!(ok, "{got:?}");
    coord.stop().unwrap();
    let (got, ok) = workers_on(&r, &all);
    assert!(ok, "{got:?}");
}
