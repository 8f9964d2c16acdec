//! Abuse resistance by policy: ceilings per uid and per program, and the bound
//! on holding the top level.

mod common;

use std::time::{Duration, Instant};

use common::{start, wait_view, WAIT};
use ss_abi::Priority;
use ss_coord::Client;
use ss_core::PrioBitmap;

fn p(l: u8) -> Priority {
    Priority::new(l).unwrap()
}

fn my_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

#[test]
fn a_process_never_claims_above_its_ceiling() {
    let uid = my_uid().to_string();
    let (coord, path) = start("ceiling", |c| {
        c.policy.hold = None;
        c.policy.apply(&["default", "1"]).unwrap();
        c.policy.apply(&["uid", &uid, "3"]).unwrap();
    });
    let capped = Client::connect(&path).unwrap();
    assert_eq!(capped.ceiling(), p(3), "the uid rule beats the default");
    // It claims everything; it is seen at its ceiling and below, nothing above.
    capped.publish(u64::MAX).unwrap();
    assert!(wait_view(&capped, |g, _| g == 0b1111_1000));
    let (s, _) = coord.wait_until(WAIT, |s| {
        s.clients.first().is_some_and(|c| c.raw == u64::MAX)
    });
    assert_eq!(s.clients[0].effective, 0b1111_1000);

    // Work above the ceiling is clamped to it, not hidden.
    capped.publish(0b11).unwrap();
    assert!(wait_view(&capped, |g, _| g == 0b1000));
    // A capped process competes at its ceiling: with only its own work at 3
    // it has nothing to yield to, even asking at level 0.
    assert!(!capped.more_important_elsewhere(PrioBitmap::from_bits(0b11), p(0)));
}

#[test]
fn a_program_rule_beats_the_uid_rule() {
    let exe = std::env::current_exe().unwrap();
    let name = exe.file_name().unwrap().to_str().unwrap().to_string();
    let uid = my_uid().to_string();
    let (_coord, path) = start("program", |c| {
        c.policy.apply(&["uid", &uid, "2"]).unwrap();
        c.policy.apply(&["program", &name, "6"]).unwrap();
    });
    let c = Client::connect(&path).unwrap();
    assert_eq!(c.ceiling(), p(6));
}

#[test]
fn holding_the_top_level_too_long_demotes_until_dropped() {
    let hold = Duration::from_millis(30);
    let (coord, path) = start("hold", |c| c.policy.hold = Some(hold));
    let hog = Client::connect(&path).unwrap();
    let other = Client::connect(&path).unwrap();
    other.publish(1 << 1).unwrap();
    let t0 = Instant::now();
    hog.publish(1 << 0 | 1 << 4).unwrap();
    assert!(wait_view(&other, |g, _| g & 1 != 0));
    // While the hog holds level 0, the other process defers to it.
    assert!(other.more_important_elsewhere(PrioBitmap::from_bits(1 << 1), p(1)));

    // After `hold`, level 0 is reported at level 1 instead.
    assert!(wait_view(&other, |g, m| g == (1 << 1 | 1 << 4) && m == 1 << 1));
    assert!(t0.elapsed() >= hold, "demoted before the bound");
    let (s, ok) = coord.wait_until(WAIT, |s| s.clients.iter().any(|c| c.demoted));
    assert!(ok, "{s:?}");
    assert!(!other.more_important_elsewhere(PrioBitmap::from_bits(1 << 1), p(1)));

    // Dropping level 0 ends the demotion; claiming it again starts a new clock.
    hog.publish(1 << 4).unwrap();
    let (s, ok) = coord.wait_until(WAIT, |s| s.clients.iter().all(|c| !c.demoted));
    assert!(ok, "{s:?}");
    hog.publish(1 << 0).unwrap();
    assert!(
        wait_view(&other, |g, _| g & 1 != 0),
        "level 0 is claimable again"
    );
}
