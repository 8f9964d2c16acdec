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
