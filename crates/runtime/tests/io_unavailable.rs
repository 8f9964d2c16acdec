//! Where io_uring is unavailable, the runtime still runs coroutines, and every
//! I/O operation fails with an error that says so and why.
//!
//! The test re-runs itself in a child process that forbids `io_uring_setup`
//! (a seccomp filter answering ENOSYS, as a kernel without io_uring would), so the
//! rest of the test suite keeps io_uring.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::process::Command;

const CHILD: &str = "SS_RUNTIME_IO_UNAVAILABLE_CHILD";
const NAME: &str = "without_io_uring_the_runtime_runs_and_io_says_why";

#[test]
fn without_io_uring_the_runtime_runs_and_io_says_why() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("CHILD-OK"),
        "the child did not run the check:\n{stdout}"
    );
}

/// Makes `io_uring_setup` fail with ENOSYS for this thread and every thread it
/// starts afterwards.
fn forbid_io_uring_setup() {
    // BPF_LD | BPF_W | BPF_ABS, BPF_JMP | BPF_JEQ | BPF_K, BPF_RET | BPF_K.
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JMP_JEQ_K: u16 = 0x15;
    const BPF_RET_K: u16 = 0x06;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    let mut filter = [
        // A = seccomp_data.nr
        libc::sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: BPF_JMP_JEQ_K,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain prctl calls; `prog` and `filter` outlive the call (the kernel
    // copies the filter).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog
            ),
            0,
            "installing the seccomp filter failed"
        );
    }
}

fn child() {
    forbid_io_uring_setup();
    let rt = ss_runtime::Runtime::builder()
        .workers(1)
        .build()
        .expect("a runtime without io_uring still builds");
    assert_eq!(rt.block_on(async { 6 * 7 }), 42, "coroutines still run");
    let err = rt.block_on(async {
        let (r, _buf) = ss_runtime::io::read(std::io::stdin(), Vec::with_capacity(8)).await;
        r.unwrap_err()
    });
    assert_eq!(err.kind(), std::io::ErrorKind::Unsupported, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("io_uring is unavailable"), "{msg}");
    assert!(
        msg.contains("ENOSYS") || msg.contains("not supported"),
        "{msg}"
    );
    // Timers fall back to the runtime's timer thread: sleep, timeout and
    // interval still work, and the thread is gone after shutdown.
    let slept = rt.block_on(async {
        let start = std::time::Instant::now();
        ss_runtime::time::sleep(std::time::Duration::from_millis(5)).await;
        let never = ss_runtime::time::sleep(std::time::Duration::from_secs(60));
        let t = ss_runtime::time::timeout(std::time::Duration::from_millis(5), never).await;
        let mut tick = ss_runtime::time::interval(std::time::Duration::from_millis(1));
        for _ in 0..3 {
            tick.tick().await;
        }
        (start.elapsed(), t.is_err())
    });
    assert!(
        slept.0 >= std::time::Duration::from_millis(10),
        "{:?}",
        slept.0
    );
    assert!(slept.1, "the timeout fired");
    rt.shutdown();
    let timer_threads = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.contains("timer"))
            })
            .count()
    };
    // A joined thread leaves /proc/self/task once the kernel has reaped it,
    // a moment after `join` returns (a loaded CI machine caught it there).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while timer_threads() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the fallback timer thread outlived the runtime"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    println!("CHILD-OK: {msg}");
}
