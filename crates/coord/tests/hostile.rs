//! Hostile processes: garbage pages, garbage on the socket, bad descriptors.
//! The coordinator survives, and only the offender loses its registration.

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use common::{start, wait_view, WAIT};
use ss_coord::page::ProcessPageWriter;
use ss_coord::sys;
use ss_coord::wire::{Hello, Refusal, Reply, Welcome, MSG_LEN, NOTIFY};
use ss_coord::Client;

/// A tiny deterministic generator for "random" bytes.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Sends `bytes` with `fds` on a fresh connection, after the coordinator's
/// welcome; returns the socket and the reply, if one came.
fn raw(
    path: &std::path::Path,
    bytes: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> (OwnedFd, Option<Reply>) {
    let sock = sys::connect(path).unwrap();
    sys::set_recv_timeout(sock.as_fd(), Duration::from_secs(5)).unwrap();
    let mut buf = [0u8; MSG_LEN + 1];
    let m = sys::recv_msg(sock.as_fd(), &mut buf, false).unwrap();
    assert!(Welcome::decode(&buf[..m.len]).is_some(), "no welcome");
    sys::send_msg(sock.as_fd(), bytes, fds, false).unwrap();
    let reply = sys::recv_msg(sock.as_fd(), &mut buf, false)
        .ok()
        .and_then(|m| Reply::decode(&buf[..m.len]));
    (sock, reply)
}

fn hello() -> [u8; MSG_LEN] {
    Hello {
        pid: std::process::id(),
    }
    .encode()
}

#[test]
fn garbage_pages_are_sanitised() {
    let (coord, path) = start("pages", |c| c.policy.hold = None);
    let good = Client::connect(&path).unwrap();
    good.publish(1 << 4).unwrap();
    let evil = Client::connect(&path).unwrap();
    evil.page().store_header(0xdead_beef, 77);
    evil.publish(u64::MAX).unwrap();
    let (s, ok) = coord.wait_until(WAIT, |s| {
        s.clients.iter().any(|c| !c.header_ok && c.raw == u64::MAX)
    });
    assert!(ok, "{s:?}");
    assert_eq!(
        s.view.global.bits(),
        1 << 4,
        "a page we do not understand counts as idle"
    );

    // A valid header with every bit set is masked to the levels.
    evil.page()
        .store_header(ss_abi::page::PROCESS_PAGE_MAGIC, ss_abi::page::PAGE_VERSION);
    evil.publish(u64::MAX - 1).unwrap();
    assert!(wait_view(&good, |g, m| g == 0xfe && m == 1 << 4));
    // Flip random values fast; the coordinator keeps up and stays sane.
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..10_000 {
        evil.publish(rng.next()).unwrap();
    }
    evil.publish(0).unwrap();
    assert!(wait_view(&good, |g, m| g == 1 << 4 && m == 0));
    good.publish(1 << 2).unwrap();
    assert!(
        wait_view(&good, |g, _| g == 1 << 2),
        "the coordinator still publishes"
    );
}

#[test]
fn bad_registrations_are_refused_and_harm_nobody() {
    let (coord, path) = start("refuse", |c| {
        c.policy.hold = None;
        c.handshake_timeout = Duration::from_millis(100);
    });
    let good = Client::connect(&path).unwrap();
    good.publish(1 << 3).unwrap();

    let page = ProcessPageWriter::create().unwrap();
    let mut rng = XorShift(42);
    // Random bytes instead of a hello.
    let (_s, r) = raw(&path, &rng.bytes(16), &[page.fd()]);
    assert_eq!(r.map(|r| r.result), Some(Err(Refusal::BadHello)));
    let (_s, r) = raw(&path, &rng.bytes(3000), &[]);
    assert_eq!(r.map(|r| r.result), Some(Err(Refusal::BadHello)));
    // A hello without a page, or with two descriptors.
    let (_s, r) = raw(&path, &hello(), &[]);
    assert_eq!(r.map(|r| r.result), Some(Err(Refusal::BadPage)));
    let (_s, r) = raw(&path, &hello(), &[page.fd(), page.fd()]);
    assert_eq!(r.map(|r| r.result), Some(Err(Refusal::BadPage)));
    // A page that is not a memfd (an eventfd), or a memfd its owner could shrink.
    let not_memfd = sys::eventfd().unwrap();
    let (_s, r) = raw(&path, &hello(), &[not_memfd.as_fd()]);
    assert_eq!(r.map(|r| r.result), Some(Err(Refusal::BadPage)));
    let unsealed = sys::memfd(c"unsealed", 4096).unwrap();
    let (_s, r) = raw(&path, &hello(), &[unsealed.as_fd()]);
    assert_eq!(r.map(|r| r.result), Some(Err(Refusal::BadPage)));
    // Somebody else's pid.
    let (_s, r) = raw(&path, &Hello { pid: 1 }.encode(), &[page.fd()]);
    assert_eq!(r.map(|r| r.result), Some(Err(Refusal::PidMismatch)));
    // A connection that never says hello is closed after the handshake timeout.
    let silent = sys::connect(&path).unwrap();
    let (s, ok) = coord.wait_until(WAIT, |s| s.refused >= 8);
    assert!(ok, "{s:?}");
    drop(silent);

    assert_eq!(s.clients.len(), 1, "{s:?}");
    good.publish(1 << 2).unwrap();
    assert!(
        wait_view(&good, |g, _| g == 1 << 2),
        "the coordinator still publishes"
    );
}

#[test]
fn garbage_after_registering_ends_only_that_registration() {
    let (coord, path) = start("violate", |c| c.policy.hold = None);
    let good = Client::connect(&path).unwrap();
    good.publish(1 << 3).unwrap();

    let mut rng = XorShift(7);
    let mut socks = Vec::new();
    let mut pages = Vec::new();
    for round in 0..3 {
        let page = ProcessPageWriter::create().unwrap();
        let (sock, r) = raw(&path, &hello(), &[page.fd()]);
        assert!(matches!(r.map(|r| r.result), Some(Ok(_))));
        page.publish(1 << 1);
        // A flood of valid pokes is served, not fatal.
        for _ in 0..1000 {
            let _ = sys::send_msg(sock.as_fd(), &[NOTIFY], &[], true);
        }
        let garbage = match round {
            0 => {
                let n = 2 + (rng.next() % 200) as usize;
                rng.bytes(n)
            }
            1 => vec![NOTIFY, NOTIFY],
            _ => vec![NOTIFY],
        };
        // Round 2 sends a valid poke but with a descriptor attached.
        let fds = if round == 2 { vec![page.fd()] } else { vec![] };
        sys::send_msg(sock.as_fd(), &garbage, &fds, false).unwrap();
        socks.push(sock);
        pages.push(page);
    }
    let (s, ok) = coord.wait_until(WAIT, |s| s.violations == 3 && s.clients.len() == 1);
    assert!(ok, "{s:?}");
    assert!(
        wait_view(&good, |g, m| g == 1 << 3 && m == 0),
        "their bits are withdrawn"
    );
    good.publish(1 << 5).unwrap();
    assert!(wait_view(&good, |g, _| g == 1 << 5));
}
