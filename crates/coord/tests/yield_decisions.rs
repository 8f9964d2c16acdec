//! Yield decisions across processes: `more_important_elsewhere` answers from the
//! global page what another process has ready.

mod common;

use common::{start, wait_view};
use ss_abi::Priority;
use ss_coord::Client;
use ss_core::PrioBitmap;

fn p(l: u8) -> Priority {
    Priority::new(l).unwrap()
}

fn b(bits: u64) -> PrioBitmap {
    PrioBitmap::from_bits(bits)
}

#[test]
fn two_processes_yield_to_each_other_by_priority() {
    let (_coord, path) = start("yield", |c| c.policy.hold = None);
    let a = Client::connect(&path).unwrap();
    let bb = Client::connect(&path).unwrap();

    a.publish(1 << 3).unwrap();
    bb.publish(1 << 5).unwrap();
    assert!(wait_view(&a, |g, m| g == (1 << 3 | 1 << 5) && m == 0));
    // B is about to run level 5 while A has level 3 ready: B yields.
    assert!(bb.more_important_elsewhere(b(1 << 5), p(5)));
    // A runs its level 3; nothing more important anywhere else.
    assert!(!a.more_important_elsewhere(b(1 << 3), p(3)));
    // A's own bits never count as "elsewhere".
    assert!(!a.more_important_elsewhere(b(1 << 3), p(4)));

    // Both at level 3: equal work elsewhere is not more important.
    bb.publish(1 << 3 | 1 << 5).unwrap();
    assert!(wait_view(&a, |_, m| m == 1 << 3));
    assert!(!a.more_important_elsewhere(b(1 << 3), p(3)));
    // But A running a level-4 coroutine would yield to B's level 3.
    assert!(a.more_important_elsewhere(b(1 << 3), p(4)));

    // B goes idle: A has nothing to yield to, B would yield to A's 3.
    bb.publish(0).unwrap();
    assert!(wait_view(&a, |g, m| g == 1 << 3 && m == 0));
    assert!(!a.more_important_elsewhere(b(1 << 3), p(7)));
    assert!(bb.more_important_elsewhere(b(0), p(7)));
}

#[test]
fn a_quiet_publish_is_seen_at_the_next_tick() {
    let (_coord, path) = start("quiet", |c| c.policy.hold = None);
    let a = Client::connect(&path).unwrap();
    let obs = Client::connect(&path).unwrap();
    a.publish_quiet(1 << 2);
    assert!(wait_view(&obs, |g, _| g == 1 << 2));
    assert!(obs.more_important_elsewhere(b(0), p(3)));
}
