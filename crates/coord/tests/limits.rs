//! Hardening: the per-uid connection limit, the socket files' mode, and the
//! top-level budget against a process that keeps dropping its claim briefly.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{start, wait_view, WAIT};
use ss_coord::{query, Client};

#[test]
fn one_uid_may_hold_only_so_many_connections() {
    let (coord, path) = start("per-uid", |c| {
        c.policy.hold = None;
        c.max_per_uid = 2;
    });
    let a = Client::connect(&path).unwrap();
    let b = Client::connect(&path).unwrap();
    let err = Client::connect(&path).err().expect("over the limit");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("--max-per-uid"), "{err}");
    // A connection that has not said hello yet counts too.
    drop(b);
    let (s, ok) = coord.wait_until(WAIT, |s| s.clients.len() == 1);
    assert!(ok, "{s:?}");
    let silent = ss_coord::sys::connect(&path).unwrap();
    let deadline = Instant::now() + WAIT;
    let err = loop {
        // The silent connection is accepted asynchronously; retry until it
        // has been counted.
        match Client::connect(&path) {
            Err(e) => break e,
            Ok(c) => {
                drop(c);
                assert!(
                    Instant::now() < deadline,
                    "the silent connection never counted"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    };
    assert!(err.to_string().contains("--max-per-uid"), "{err}");
    drop(silent);
    // Others are unaffected, and a freed slot can be used again.
    a.publish(1 << 3).unwrap();
    assert!(wait_view(&a, |g, _| g == 1 << 3));
    let deadline = Instant::now() + WAIT;
    let c = loop {
        match Client::connect(&path) {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "{e}");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    };
    c.publish(1 << 2).unwrap();
    assert!(wait_view(&a, |g, _| g == 1 << 3 | 1 << 2));
}

/// Whether a process of uid `uid` may connect to the socket at `path`: a
/// forked child drops to that uid and connects; only raw syscalls after fork.
fn can_connect_as(uid: u32, path: &std::path::Path, stream: bool) -> bool {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
        *d = *s as libc::c_char;
    }
    let kind = if stream {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_SEQPACKET
    };
    // SAFETY: the child only makes async-signal-safe syscalls and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: plain syscalls on stack data; the child never returns.
        unsafe {
            if libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
                libc::_exit(3);
            }
            let fd = libc::socket(libc::AF_UNIX, kind, 0);
            let r = libc::connect(
                fd,
                (&addr as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            );
            libc::_exit(if r == 0 { 0 } else { 1 });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status));
    let code = libc::WEXITSTATUS(status);
    assert_ne!(code, 3, "could not drop privileges in the child");
    code == 0
}

#[test]
fn socket_mode_sets_who_may_connect() {
    // SAFETY: getuid cannot fail.
    let root = unsafe { libc::getuid() } == 0;
    let nobody = 65534;
    for (name, mode) in [("mode-600", 0o600), ("mode-666", 0o666)] {
        let (_coord, path) = start(name, |c| c.socket_mode = Some(mode));
        let qpath = query::query_path(&path);
        for p in [&path, &qpath] {
            let m = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, mode, "{}", p.display());
        }
        // The owner may always connect.
        drop(Client::connect(&path).unwrap());
        if root {
            // Another user only with write permission on the file (root
            // could drop to `nobody` to check; the temp dir is world-readable).
            let open = mode & 0o002 != 0;
            assert_eq!(can_connect_as(nobody, &path, false), open, "{mode:o}");
            assert_eq!(can_connect_as(nobody, &qpath, true), open, "{mode:o}");
        }
    }
}

#[test]
fn brief_gaps_do_not_keep_the_top_level() {
    // A plain hold bound forgives a process that clears its top level at one
    // scan per bound; the budget does not.
    let hold = Duration::from_millis(30);
    let (coord, path) = start("budget", |c| {
        c.policy.hold = Some(hold);
        c.policy.hold_share = 50;
    });
    let hog = Client::connect(&path).unwrap();
    let deadline = Instant::now() + WAIT;
    let demoted = loop {
        hog.publish(1).unwrap();
        std::thread::sleep(hold * 2 / 3);
        let s = coord.status();
        if let Some(c) = s.clients.iter().find(|c| c.demoted) {
            break Some(c.clone());
        }
        // A gap the coordinator sees: the poke makes it scan at once.
        hog.publish(0).unwrap();
        let seen = coord
            .wait_until(WAIT, |s| s.clients.iter().all(|c| c.raw == 0))
            .1;
        assert!(seen);
        if Instant::now() >= deadline {
            break None;
        }
    };
    let c = demoted.unwrap_or_else(|| panic!("never demoted: {:?}", coord.status()));
    // While demoted, its level-0 claim is seen at level 1.
    assert_eq!((c.raw, c.effective), (1, 0b10), "{c:?}");
}

#[test]
fn reconnecting_does_not_reset_the_budget() {
    // A process that registers anew every 40 ms (the new registration before
    // dropping the old) used to start each one with an empty bucket and so
    // kept level 0 all the time; the budget is the uid's, kept across
    // registrations.
    let hold = Duration::from_millis(30);
    let (_coord, path) = start("reconnect", |c| {
        c.policy.hold = Some(hold);
        c.policy.hold_share = 50;
    });
    let observer = Client::connect(&path).unwrap();
    let mut current = Client::connect(&path).unwrap();
    current.publish(1).unwrap();
    let (mut held, mut samples) = (0u32, 0u32);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        let round = Instant::now();
        while round.elapsed() < Duration::from_millis(40) {
            samples += 1;
            if observer.view().global.bits() & 1 != 0 {
                held += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let next = Client::connect(&path).unwrap();
        next.publish(1).unwrap();
        current = next;
    }
    drop(current);
    let fraction = f64::from(held) / f64::from(samples);
    assert!(
        fraction < 0.7,
        "level 0 was held {:.0} % of the time",
        fraction * 100.0
    );
}
