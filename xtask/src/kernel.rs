//! `cargo xtask qemu`, `cargo xtask test-kernel` and `cargo xtask qemu-bench`:
//! build the RISC-V kernel workspace (`kernel/`) and boot it in QEMU.
//!
//! Both install what they need on a fresh machine: the rustup target, and QEMU
//! through `apt-get` when run as root (otherwise they name the command). Every
//! QEMU run has a hard timeout, so a hung kernel fails instead of stalling.
//!
//! The kernel reports its verdict through the SiFive test device: QEMU exits 0
//! when every test passed, and with the kernel's failure code (≥ 1) otherwise.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TARGET: &str = "riscv64gc-unknown-none-elf";
const MANIFEST: &str = "kernel/Cargo.toml";
/// The user programs embedded in the kernel image.
const APPS: [&str; 10] = [
    "utest", "hostile", "crash", "worker", "aio", "shell", "kcuc", "kcut", "ktut", "ktuc",
];
/// Hard limit for one test boot of QEMU.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the kernel workspace builds: `$CARGO_TARGET_DIR` if set, else
/// `target/kernel` (so nothing lands under `kernel/`).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/kernel"))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("$ {}", describe(cmd));
    let status = cmd
        .status()
        .map_err(|e| format!("could not start `{}`: {e}", describe(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` exited with {status}", describe(cmd)))
    }
}

fn describe(cmd: &Command) -> String {
    let env: String = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={} ", k.to_str()?, v?.to_str()?)))
        .collect();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
    format!(
        "{env}{} {}",
        cmd.get_program().to_string_lossy(),
        args.join(" ")
    )
}

fn cargo() -> Command {
    let mut c = Command::new("cargo");
    c.env("CARGO_TARGET_DIR", target_dir());
    c
}

/// Installs the rustup target and QEMU if they are missing.
pub fn ensure_tools() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == TARGET)
        })
        .unwrap_or(false);
    if !installed {
        run(Command::new("rustup").args(["target", "add", TARGET]))?;
    }
    if Command::new("qemu-system-riscv64")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !root {
        return Err(
            "qemu-system-riscv64 is missing; install it with `sudo apt-get install -y qemu-system-misc`"
                .into(),
        );
    }
    let install = || {
        run(Command::new("apt-get")
            .args(["install", "-y", "qemu-system-misc"])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    if install().is_err() {
        run(Command::new("apt-get").arg("update"))?;
        install()?;
    }
    Ok(())
}

/// `cargo build --release` of one package of the kernel workspace.
fn build_package(package: &str) -> Command {
    let mut c = cargo();
    c.args([
        "build",
        "--manifest-path",
        MANIFEST,
        "--release",
        "--target",
        TARGET,
        "-p",
        package,
    ]);
    c
}

/// Builds the user programs and the vDSO, then the kernel embedding them;
/// returns the kernel's ELF.
pub fn build(test: bool) -> Result<PathBuf, String> {
    run(build_package("ss-apps").args(["-p", "ss-vdso"]))?;
    let out = target_dir().join(TARGET).join("release");
    let apps_dir = std::fs::canonicalize(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut kernel = build_package("ss-kernel");
    kernel
        .env("SS_APPS_DIR", &apps_dir)
        .env("SS_APPS", APPS.join(","))
        .env("SS_VDSO", apps_dir.join("vdso"));
    if test {
        kernel.args(["--features", "ktest"]);
    }
    run(&mut kernel)?;
    Ok(out.join("ss-kernel"))
}

/// QEMU for `kernel` on `harts` harts, with a virtio-net device on QEMU's user
/// network (the test boots' `listen` checks need one), and host port
/// `forward` forwarded to the guest's [`DROPPED_ACCEPT_PORT`] if given.
fn qemu(kernel: &Path, harts: usize, forward: Option<u16>) -> Command {
    let mut netdev = String::from("user,id=n0");
    if let Some(port) = forward {
        netdev += &format!(",hostfwd=tcp:127.0.0.1:{port}-:{DROPPED_ACCEPT_PORT}");
    }
    let mut c = Command::new("qemu-system-riscv64");
    c.args(["-machine", "virt", "-smp", &harts.to_string(), "-m", "128M"])
        .args(["-bios", "default", "-nographic", "-no-reboot", "-kernel"])
        .arg(kernel)
        .args(["-netdev", &netdev, "-device", "virtio-net-device,netdev=n0"]);
    c
}

/// The guest port of the user suite's `dropped_accept_closes` (`aio` mode 15:
/// `DROPPED_ACCEPT_PORT` in `kernel/apps/src/bin/aio.rs`).
const DROPPED_ACCEPT_PORT: u16 = 7001;

/// The host's side of `aio` mode 15, for one boot on host port `port`:
/// connects (A) until the guest answers `R`; then for each `G` on A (the
/// guest's `accept` is submitted) connects (B) and, once the guest has
/// dropped that `accept`'s future untaken, expects end of file on B within
/// 20 s: writes `E` on A if it came, `L` if not. Gives up at `deadline` (the
/// boot's), or once `stop` is set (the boot ended: its port may be another
/// process's by then, even the next boot's, which has a peer of its own).
fn dropped_accept_peer(port: u16, deadline: Instant, stop: &AtomicBool) {
    use std::io::Write;
    use std::net::{SocketAddr, TcpStream};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let read1 = |s: &mut TcpStream| {
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(1) => Some(b[0]),
            _ => None,
        }
    };
    // Until the guest listens, QEMU takes the connection and closes it (or,
    // with the guest's network not up yet, holds it while it tries): a
    // connection that stays open is waited on until the guest says `R`.
    let over = || Instant::now() > deadline || stop.load(Ordering::Relaxed);
    let mut a = 'connect: loop {
        if over() {
            return;
        }
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut b = [0u8; 1];
            loop {
                match s.read(&mut b) {
                    Ok(1) if b[0] == b'R' => break 'connect s,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) && !over() => {}
                    _ => break,
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let _ = a.set_read_timeout(Some(Duration::from_secs(30)));
    // A round per `G`, until the guest closes A.
    while read1(&mut a) == Some(b'G') {
        let verdict = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(mut b) => {
                let _ = b.set_read_timeout(Some(Duration::from_secs(20)));
                let mut buf = [0u8; 16];
                match b.read(&mut buf) {
                    Ok(0) => b"E",
                    _ => b"L",
                }
            }
            Err(_) => b"L",
        };
        if a.write_all(verdict).is_err() {
            return;
        }
    }
}

/// What the test boot types on the console (the user suite reads it back
/// through the UART's receive interrupt).
pub const CONSOLE_INPUT: &str = "hello kernel\n";
/// The start of the kernel's first line.
const KERNEL_BANNER: &str = "[kernel] SharedScheduler kernel";

/// Boots `kernel` on `harts` harts, typing [`CONSOLE_INPUT`]; fails on a
/// non-zero exit or after `timeout`. A QEMU that could not set up its port
/// forwarding (the host port picked for it, probed free, was taken by
/// another process before QEMU bound it: [`HOSTFWD_FAILED`] on its stderr)
/// is started again, on another port, at most [`BOOT_ATTEMPTS`] times. Any
/// other early exit — a kernel that panics before its banner, firmware or
/// image trouble — fails at once: retried, an intermittent early-boot
/// failure would pass unseen.
fn boot_test(kernel: &Path, harts: usize, timeout: Duration) -> Result<(), String> {
    let mut attempt = 1;
    loop {
        match boot_once(kernel, harts, timeout) {
            Err(Boot::PortTaken(e)) if attempt < BOOT_ATTEMPTS => {
                eprintln!("{e}; starting QEMU again");
                attempt += 1;
            }
            Err(Boot::PortTaken(e) | Boot::Failed(e)) => return Err(e),
            Ok(()) => return Ok(()),
        }
    }
}

/// Starts of QEMU [`boot_test`] makes before it gives up on one whose port
/// forwarding fails.
const BOOT_ATTEMPTS: usize = 3;

/// What QEMU says on stderr (and then exits 1) when it cannot bind a
/// `hostfwd` port: `-netdev user,…: Could not set up host forwarding rule
/// 'tcp:127.0.0.1:PORT-:7001'` (QEMU's `net/slirp.c`).
const HOSTFWD_FAILED: &str = "Could not set up host forwarding rule";

/// How a test boot failed.
#[derive(Debug, PartialEq, Eq)]
enum Boot {
    /// QEMU exited before the kernel ran because its forwarded host port was
    /// taken: worth another start, on another port.
    PortTaken(String),
    /// Anything else: QEMU or the kernel failed, hung or printed no summary.
    Failed(String),
}

/// Kills and reaps QEMU when a boot ends, however it ends (an early return
/// leaves no QEMU running), and tells the boot's port peer to stop.
struct BootGuard {
    child: std::process::Child,
    stop: Arc<AtomicBool>,
}

impl Drop for BootGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn boot_once(kernel: &Path, harts: usize, timeout: Duration) -> Result<(), Boot> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| Boot::Failed(format!("no free host port: {e}")))?
        .port();
    let mut cmd = qemu(kernel, harts, Some(port));
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("$ {}   (timeout {}s)", describe(&cmd), timeout.as_secs());
    let started = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| Boot::Failed(format!("could not start QEMU: {e}")))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut boot = BootGuard {
        child,
        stop: stop.clone(),
    };
    let deadline = started + timeout;
    std::thread::spawn(move || dropped_accept_peer(port, deadline, &stop));
    let mut stdout = boot
        .child
        .stdout
        .take()
        .ok_or_else(|| Boot::Failed("no QEMU stdout".into()))?;
    let mut stderr = boot
        .child
        .stderr
        .take()
        .ok_or_else(|| Boot::Failed("no QEMU stderr".into()))?;
    let mut stdin = boot.child.stdin.take();
    // QEMU's own messages: passed on as they come, and kept to tell why it
    // exited.
    let errors = std::thread::spawn(move || {
        use std::io::Write;
        let mut all = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = std::io::stderr().write_all(&buf[..n]);
            all.extend_from_slice(&buf[..n]);
        }
        all
    });
    // Forward QEMU's output as it comes; type the input once the kernel has
    // printed its banner (earlier, OpenSBI's UART set-up would drop it).
    let reader = std::thread::spawn(move || {
        use std::io::Write;
        let mut buf = [0u8; 4096];
        let mut all = Vec::new();
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = std::io::stdout().write_all(&buf[..n]);
            all.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&all).contains(KERNEL_BANNER) {
                if let Some(mut input) = stdin.take() {
                    let _ = input.write_all(CONSOLE_INPUT.as_bytes());
                }
            }
        }
        all
    });
    let status = loop {
        if let Some(s) = boot
            .child
            .try_wait()
            .map_err(|e| Boot::Failed(e.to_string()))?
        {
            break Some(s);
        }
        if started.elapsed() > timeout {
            let _ = boot.child.kill();
            let _ = boot.child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    let errors = String::from_utf8_lossy(&errors.join().unwrap_or_default()).into_owned();
    let secs = started.elapsed().as_secs_f64();
    let verdict = boot_verdict(harts, timeout, status, &output, &errors);
    if verdict.is_ok() {
        eprintln!("QEMU ({harts} harts): all tests passed in {secs:.1}s");
    }
    verdict
}

/// What a test boot came to: QEMU's exit `status` (`None`: killed at
/// `timeout`), its console `output` and its own messages on stderr
/// (`errors`).
fn boot_verdict(
    harts: usize,
    timeout: Duration,
    status: Option<std::process::ExitStatus>,
    output: &str,
    errors: &str,
) -> Result<(), Boot> {
    match status {
        None => Err(Boot::Failed(format!(
            "QEMU ({harts} harts) did not finish within {}s: the kernel hung",
            timeout.as_secs()
        ))),
        Some(s) if s.success() => {
            if output.contains("kernel:") && output.contains(" 0 failed") {
                Ok(())
            } else {
                Err(Boot::Failed(format!(
                    "QEMU ({harts} harts) exited 0 without a test summary"
                )))
            }
        }
        Some(s) if !output.contains(KERNEL_BANNER) && errors.contains(HOSTFWD_FAILED) => {
            Err(Boot::PortTaken(format!(
                "QEMU ({harts} harts) exited with {s}: its forwarded host port was taken"
            )))
        }
        Some(s) if !output.contains(KERNEL_BANNER) => Err(Boot::Failed(format!(
            "QEMU ({harts} harts) exited with {s} before the kernel's banner (see the output above)"
        ))),
        Some(s) => Err(Boot::Failed(format!(
            "QEMU ({harts} harts) exited with {s}: the kernel's failure code (see the output above)"
        ))),
    }
}

/// `cargo xtask test-kernel`: fmt, clippy (kernel target; host for the logic
/// crate's tests), the logic crate's host tests, docs, then the test build
/// booted on 4 harts and on 1, then the servers' protocol and fault checks
/// against guests.
pub fn test_kernel() -> Result<(), String> {
    ensure_tools()?;
    run(Command::new("cargo").args(["fmt", "--manifest-path", MANIFEST, "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--manifest-path",
        MANIFEST,
        "--target",
        TARGET,
        "--workspace",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args([
        "clippy",
        "--manifest-path",
        MANIFEST,
        "-p",
        "ss-kernel-logic",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args(["test", "--manifest-path", MANIFEST, "-p", "ss-kernel-logic"]))?;
    run(cargo()
        .args([
            "doc",
            "--manifest-path",
            MANIFEST,
            "--target",
            TARGET,
            "--workspace",
            "--no-deps",
        ])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    let kernel = build(true)?;
    for harts in [4, 1] {
        boot_test(&kernel, harts, TEST_TIMEOUT)?;
    }
    guest_servers()
}

/// The protocol and fault checks of `bench/tests/ssbench_server.rs` against
/// the kernel's four servers, each in a QEMU reached through `hostfwd`
/// (`SS_GUEST_KERNEL`): correct answers in order, Hello, every bad frame,
/// oversize dims, resets and closes in mid-frame, a slow sender, churn — each
/// beside a connection that must stay served. The checks of a Linux server's
/// memory and signals are left out (`--skip`).
fn guest_servers() -> Result<(), String> {
    let kernel = build(false)?;
    let kernel =
        std::fs::canonicalize(&kernel).map_err(|e| format!("{}: {e}", kernel.display()))?;
    let mut test = Command::new("cargo");
    test.args([
        "test",
        "--release",
        "-p",
        "ss-bench",
        "--test",
        "ssbench_server",
    ])
    .args([
        "--",
        "--test-threads",
        "1",
        "--skip",
        "soak",
        "--skip",
        "sigterm",
    ])
    .env("SS_GUEST_KERNEL", &kernel);
    run(&mut test)
}

/// `cargo xtask qemu`: boots the kernel to its shell on `harts` harts, with the
/// terminal attached; ends after `timeout` at the latest.
pub fn qemu_interactive(harts: usize, timeout: Duration) -> Result<(), String> {
    ensure_tools()?;
    let kernel = build(false)?;
    let mut cmd = qemu(&kernel, harts, None);
    eprintln!(
        "$ {}   (Ctrl-A X quits QEMU; `exit` ends the shell)",
        describe(&cmd)
    );
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start QEMU: {e}"))?;
    let started = Instant::now();
    loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            return if s.success() {
                Ok(())
            } else {
                Err(format!("QEMU exited with {s}"))
            };
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "QEMU ran longer than {}s and was stopped",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `cargo xtask qemu-bench`: builds the kernel with the server programs, then
/// runs `ssbench qemu --kernel ELF [--quick] EXTRA…` (release build), which
/// boots it in QEMU once per configuration and writes the emulated figures.
pub fn qemu_bench(quick: bool, extra: &[String]) -> Result<(), String> {
    ensure_tools()?;
    let kernel = build(false)?;
    let kernel =
        std::fs::canonicalize(&kernel).map_err(|e| format!("{}: {e}", kernel.display()))?;
    let kernel = kernel.to_string_lossy();
    let mut args = vec!["qemu", "--kernel", &kernel];
    if quick {
        args.push("--quick");
    }
    args.extend(extra.iter().map(String::as_str));
    crate::bench_bin("ssbench", &args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;

    /// QEMU's exit status with exit code `code`.
    fn exited(code: i32) -> Option<std::process::ExitStatus> {
        Some(std::process::ExitStatus::from_raw(code << 8))
    }

    #[test]
    fn an_early_exit_is_started_again_only_when_the_forwarded_port_was_taken() {
        let t = Duration::from_secs(60);
        // What QEMU 7.2 prints when the port is taken (seen on this machine).
        let taken = "qemu-system-riscv64: -netdev user,id=n0,hostfwd=tcp:127.0.0.1:51783-:7001: \
                     Could not set up host forwarding rule 'tcp:127.0.0.1:51783-:7001'\n";
        assert!(matches!(
            boot_verdict(4, t, exited(1), "", taken),
            Err(Boot::PortTaken(_))
        ));
        // A kernel that panics before its banner is a failure, not a port
        // taken: started again, a panic one boot in three would pass.
        let panicked = "OpenSBI v1.2\n[kernel] PANIC on hart 0: frame allocator empty\n";
        assert!(matches!(
            boot_verdict(4, t, exited(1), panicked, ""),
            Err(Boot::Failed(_))
        ));
        // QEMU failing for another reason (no such kernel image) too.
        let no_image = "qemu-system-riscv64: could not load kernel '/nonexistent'\n";
        assert!(matches!(
            boot_verdict(4, t, exited(1), "", no_image),
            Err(Boot::Failed(_))
        ));
        // The kernel's own failure code, and a hang.
        let ran = format!("{KERNEL_BANNER}: boot hart 0\nkernel: 40 passed, 1 failed\n");
        assert!(matches!(
            boot_verdict(4, t, exited(1), &ran, ""),
            Err(Boot::Failed(_))
        ));
        assert!(matches!(
            boot_verdict(4, t, None, "", ""),
            Err(Boot::Failed(_))
        ));
        let passed = format!("{KERNEL_BANNER}: boot hart 0\nkernel: 41 passed, 0 failed\n");
        assert_eq!(boot_verdict(4, t, exited(0), &passed, ""), Ok(()));
    }

    #[test]
    fn the_port_peer_of_a_boot_that_ended_stops() {
        // Stands in for the process that took a failed boot's port: it
        // takes connections (into its backlog) and never answers.
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = other.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let (done, ended) = std::sync::mpsc::channel();
        let s = stop.clone();
        std::thread::spawn(move || {
            dropped_accept_peer(port, Instant::now() + Duration::from_secs(600), &s);
            let _ = done.send(());
        });
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        ended
            .recv_timeout(Duration::from_secs(20))
            .expect("the peer kept connecting to a port its boot no longer has");
        drop(other);
    }
}
