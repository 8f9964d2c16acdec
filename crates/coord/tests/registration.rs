//! Registration, clean deregistration, publishing, and waiting for changes.

mod common;

use std::time::Duration;

use common::{start, wait_view, WAIT};
use ss_coord::Client;

#[test]
fn registers_publishes_and_deregisters_cleanly() {
    let (coord, path) = start("reg", |c| c.policy.hold = None);
    let a = Client::connect(&path).unwrap();
    assert_eq!(a.ceiling().level(), 0);
    assert_eq!(a.levels().count(), 8);
    let (s, ok) = coord.wait_until(WAIT, |s| s.clients.len() == 1);
    assert!(ok, "{s:?}");
    assert_eq!(s.clients[0].pid, std::process::id());
    assert_eq!(s.clients[0].source, a.source_id());

    let seq0 = a.seq();
    a.publish(0b100).unwrap();
    assert!(wait_view(&a, |g, m| g == 0b100 && m == 0));
    assert!(a.seq() > seq0);
    assert_eq!(a.seq() % 2, 0, "seq is even between publishes");

    drop(a);
    let (s, ok) = coord.wait_until(WAIT, |s| s.clients.is_empty());
    assert!(ok, "{s:?}");
    assert_eq!(s.disconnected, 1);
    assert_eq!(s.exited, 0);
    assert!(s.view.global.is_empty(), "a leaver's bits are withdrawn");
    coord.stop().unwrap();
    assert!(!path.exists(), "the socket file is removed on stop");
}

#[test]
fn a_waiter_wakes_when_another_process_publishes() {
    let (_coord, path) = start("wake", |c| c.policy.hold = None);
    let waiter = Client::connect(&path).unwrap();
    let publisher = Client::connect(&path).unwrap();
    let seen = waiter.seq();
    let t = std::thread::spawn(move || {
        let now = waiter.wait_for_change(seen, Some(WAIT));
        (now, waiter)
    });
    std::thread::sleep(Duration::from_millis(20));
    publisher.publish(0b1000).unwrap();
    let (now, waiter) = t.join().unwrap();
    assert_ne!(now, seen, "woken by the change, not by the timeout");
    assert!(wait_view(&waiter, |g, _| g == 0b1000));
}

#[test]
fn wait_for_change_times_out_when_nothing_changes() {
    let (_coord, path) = start("timeout", |_| {});
    let c = Client::connect(&path).unwrap();
    let seen = c.seq();
    assert_eq!(
        c.wait_for_change(seen, Some(Duration::from_millis(10))),
        seen
    );
}

#[test]
fn connecting_without_a_coordinator_says_what_to_do() {
    let path = common::socket_path("none");
    let err = Client::connect(&path).err().expect("no coordinator there");
    assert!(err.to_string().contains("start `ss-coord"), "{err}");
}

#[test]
fn a_second_coordinator_on_the_same_socket_is_refused() {
    let (_coord, path) = start("twice", |_| {});
    let err = ss_coord::Coordinator::bind(ss_coord::Config::new(&path))
        .err()
        .expect("the socket is taken");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
}

#[test]
fn a_client_registers_again_with_a_restarted_coordinator() {
    let (first, path) = start("restart", |c| c.policy.hold = None);
    let c = Client::connect(&path).unwrap();
    c.publish(1 << 4).unwrap();
    assert!(wait_view(&c, |g, _| g == 1 << 4));
    let word = c.futex_word() as *const _;
    first.stop().unwrap();
    assert!(!c.coordinator_alive());
    // Nobody listens yet: an error, and nothing changes.
    assert!(c.reconnect(&path, Duration::from_millis(100)).is_err());
    assert!(!c.coordinator_alive());

    // A new coordinator on the same socket, with different ceilings.
    let second = ss_coord::Coordinator::spawn({
        let mut cfg = ss_coord::Config::new(&path);
        cfg.policy.hold = None;
        cfg.policy.default_ceiling = ss_abi::Priority::new(2).unwrap();
        cfg
    })
    .unwrap();
    let other = Client::connect(&path).unwrap();
    other.publish(1 << 6).unwrap();
    c.reconnect(&path, WAIT).unwrap();
    assert!(c.coordinator_alive());
    assert_eq!(c.ceiling().level(), 2);
    // The same address: a futex waiter or armed wait keeps a valid word.
    assert_eq!(c.futex_word() as *const _, word);
    // What it had published counts at once, and
    // it sees the new coordinator's view.
    assert!(wait_view(&c, |g, _| g == 1 << 4 | 1 << 6));
    let (s, ok) = second.wait_until(WAIT, |s| s.clients.len() == 2);
    assert!(ok, "{s:?}");
    // Its pokes reach the new coordinator.
    c.publish(1 << 3).unwrap();
    assert!(wait_view(&other, |g, _| g == 1 << 3 | 1 << 6));
    // Dropping it deregisters from the new one.
    drop(c);
    let (s, ok) = second.wait_until(WAIT, |s| s.clients.len() == 1 && s.disconnected == 1);
    assert!(ok, "{s:?}");
}

/// Whether thread `tid` of this process sleeps in `futex(2)` now.
fn in_futex_wait(tid: i32) -> bool {
    let dir = format!("/proc/self/task/{tid}");
    let syscall = std::fs::read_to_string(format!("{dir}/syscall")).unwrap_or_default();
    let state = std::fs::read_to_string(format!("{dir}/stat")).unwrap_or_default();
    // The state follows the command's closing parenthesis.
    let sleeping = state
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('S'));
    sleeping && syscall.split_whitespace().next() == Some(&libc::SYS_futex.to_string())
}

#[test]
fn a_waiter_on_the_old_page_follows_a_reconnect() {
    // The first coordinator stays up (its page, which the waiter sleeps on,
    // never changes again), as a hung or crashed one would leave it.
    let (_first, path) = start("follow-a", |c| c.policy.hold = None);
    let (second, path2) = start("follow-b", |c| c.policy.hold = None);
    let c = Client::connect(&path).unwrap();
    let other = Client::connect(&path2).unwrap();
    let seen = c.seq();
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        let c = &c;
        s.spawn(move || {
            // SAFETY: gettid cannot fail.
            tx.send(unsafe { libc::gettid() }).unwrap();
            // Far longer than the test's deadline: only a wake-up ends it.
            let now = c.wait_for_change(seen, Some(Duration::from_secs(60)));
            let _ = tx.send(now as i32);
        });
        let tid = rx.recv().unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        while !in_futex_wait(tid) {
            assert!(
                std::time::Instant::now() < deadline,
                "the waiter never slept"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        c.reconnect(&path2, WAIT).unwrap();
        // The new coordinator's view changes: a waiter on its page wakes.
        other.publish(1 << 2).unwrap();
        let (s2, ok) = second.wait_until(WAIT, |s| s.clients.len() == 2);
        assert!(ok, "{s2:?}");
        assert!(
            rx.recv_timeout(WAIT).is_ok(),
            "the waiter still sleeps on the old coordinator's page"
        );
    });
}

extern "C" fn ignore_signal(_: libc::c_int) {}

#[test]
fn a_signal_during_registration_does_not_fail_it() {
    // A handler with SA_RESTART, as a profiler's: a socket call with a
    // timeout (SO_RCVTIMEO) is not restarted after a handler all the same.
    // SAFETY: a plain sigaction with a handler that does nothing.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut()), 0);
    }
    // A listener that never answers: the registration waits out its timeout.
    let path = common::socket_path("interrupted");
    let _silent = ss_coord::sys::listen_with(&path, 4, false, None).unwrap();
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        let path = &path;
        let t = s.spawn(move || {
            // SAFETY: gettid cannot fail.
            tx.send(unsafe { libc::gettid() }).unwrap();
            Client::connect(path).err().expect("nobody answers")
        });
        let tid = rx.recv().unwrap();
        let in_recv = || {
            std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
                .unwrap_or_default()
                .split_whitespace()
                .next()
                == Some(&libc::SYS_recvmsg.to_string())
        };
        // Interrupts it a few times while it waits for the welcome.
        let mut sent = 0;
        while sent < 3 && !t.is_finished() {
            if in_recv() {
                // SAFETY: tgkill to a live thread of this process, whose
                // handler for the signal does nothing.
                unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR2) };
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let err = t.join().unwrap();
        assert!(sent > 0, "never saw it wait");
        assert_ne!(
            err.kind(),
            std::io::ErrorKind::Interrupted,
            "a signal failed the registration: {err}"
        );
    });
}
