//! `ss_runtime::Coordination::Start`: a runtime that needs a coordinator starts
//! one on demand (detached) when none listens, and a second runtime joins it.
//! Here rather than in ss-runtime's tests because this package builds the
//! `ss-coord` binary.

use std::path::Path;
use std::time::{Duration, Instant};

use ss_runtime::{Builder, Coordination};

#[test]
fn a_runtime_starts_a_coordinator_on_demand() {
    let path = std::env::temp_dir().join(format!("ss-coord-start-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    // No other test in this binary reads the variable.
    std::env::set_var(
        ss_runtime::coordinate::ENV_BIN,
        env!("CARGO_BIN_EXE_ss-coord"),
    );
    let rt = Builder::new()
        .workers(1)
        .coordination(Coordination::Start(path.clone()))
        .build()
        .unwrap();
    assert!(rt.coordinated());
    // A second runtime joins the same coordinator rather than starting another.
    let rt2 = Builder::new()
        .workers(1)
        .coordination(Coordination::Start(path.clone()))
        .build()
        .unwrap();
    assert!(rt2.coordinated());
    assert_eq!(rt.block_on(async { 2 + 2 }), 4);
    rt.shutdown();
    rt2.shutdown();
    // Stop the detached coordinator: find it by its socket argument.
    let pid = find_process_with_arg(&path).expect("the started coordinator runs");
    // SAFETY: plain kill(2) of the coordinator this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while path.exists() {
        assert!(Instant::now() < deadline, "the coordinator did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn find_process_with_arg(arg: &Path) -> Option<i32> {
    let want = arg.as_os_str().as_encoded_bytes();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|&b| b == 0).any(|a| a == want) {
            return Some(pid);
        }
    }
    None
}
