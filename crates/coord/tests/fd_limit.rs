//! At its descriptor limit the coordinator neither spins nor floods its log,
//! and serves again once descriptors are freed.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{socket_path, WAIT};
use ss_coord::{sys, Client};

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may contain spaces) start at state.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after state (3).
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn at_the_descriptor_limit_the_coordinator_waits_quietly() {
    let path = socket_path("fd-limit");
    let log = std::env::temp_dir().join(format!("ss-coord-t{}-fd-limit.log", std::process::id()));
    let log_file = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ss-coord"));
    cmd.arg("--socket")
        .arg(&path)
        .arg("--no-os-weights")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file));
    // SAFETY: setrlimit is async-signal-safe and uses only stack data.
    unsafe {
        cmd.pre_exec(|| {
            let l = libc::rlimit {
                rlim_cur: 40,
                rlim_max: 40,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut coord = cmd.spawn().unwrap();
    let pid = coord.id();
    let deadline = Instant::now() + WAIT;
    let mut clients = Vec::new();
    // Register until the coordinator has no descriptor left.
    loop {
        match Client::connect(&path) {
            Ok(c) => clients.push(c),
            Err(_) if clients.is_empty() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => break,
        }
        assert!(clients.len() < 40, "the limit did not apply");
    }
    assert!(!clients.is_empty(), "the coordinator never served");
    // More connections wait in the backlog.
    let idle: Vec<_> = (0..5).map(|_| sys::connect(&path).unwrap()).collect();
    let lines_before = std::fs::read_to_string(&log).unwrap().lines().count();
    let t0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - t0;
    let lines = std::fs::read_to_string(&log).unwrap().lines().count() - lines_before;
    // A loop spinning on the listener took 67 % of a CPU and logged tens of
    // thousands of lines; waiting takes the ticks' share.
    assert!(used < 30, "{used} of 100 clock ticks in 1 s at the limit");
    assert!(lines < 20, "{lines} log lines in 1 s at the limit");
    // Freeing descriptors lets new processes in again.
    drop(clients);
    drop(idle);
    let deadline = Instant::now() + WAIT;
    let again = loop {
        match Client::connect(&path) {
            Ok(c) => break Some(c),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break None,
        }
    };
    // SAFETY: signalling the child spawned above.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let _ = coord.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(again.is_some(), "not served after descriptors were freed");
    assert!(
        text.contains("not accepting until a descriptor is freed"),
        "the pause is not logged: {text}"
    );
}
