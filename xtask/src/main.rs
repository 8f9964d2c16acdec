//! `cargo xtask` — the project's task runner.
//!
//! `cargo xtask test` is the one test command: the README gives it, `.ci/run` runs
//! it, and it runs every check in order (Miri beside the loom step: see
//! `Step::beside`), stopping at the first failure:
//! formatting, clippy, the workspace tests, the loom models, Miri over the core,
//! the `riscv64gc-unknown-none-elf` build of the no_std crates, a short run of the
//! protocol decoder's fuzz target, the RISC-V kernel's checks and QEMU test
//! suites (`cargo xtask test-kernel`), the docs, and a smoke run of the
//! benchmarks (micro, rtbench, rtecho, coordbench, ssbench). `cargo xtask qemu`
//! boots the kernel to its shell; `cargo xtask qemu-bench` runs the paper's
//! experiments against the kernel's servers in QEMU (`ssbench qemu`).

use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::{Parser, Subcommand};

mod kernel;

#[derive(Parser)]
#[command(about = "SharedScheduler task runner")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run every check CI runs (or only the named steps).
    Test {
        /// Run only these steps (fmt, clippy, unit, loom, miri, riscv, fuzz, kernel, doc, bench).
        #[arg(long = "only", value_delimiter = ',')]
        only: Vec<String>,
        /// Skip Miri even where the nightly toolchain is present (local use; CI never skips).
        #[arg(long)]
        no_miri: bool,
    },
    /// Build the RISC-V kernel and boot it in QEMU to its shell.
    Qemu {
        /// Harts to boot.
        #[arg(long, default_value_t = 4)]
        harts: usize,
        /// Stop QEMU after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// The kernel's checks: fmt and clippy of `kernel/`, host unit tests of its
    /// logic, the in-kernel and user test suites under QEMU (4 and 1 harts),
    /// and the protocol and fault checks against its four servers in QEMU.
    TestKernel,
    /// The paper's experiments on the RISC-V kernel under QEMU: builds the kernel,
    /// then `ssbench qemu --kernel ELF …` (emulated figures; `docs/evaluation.md`).
    QemuBench {
        /// Short run (~1–2 minutes).
        #[arg(long)]
        quick: bool,
        /// Further arguments for `ssbench qemu` (`--out DIR`, `--duration 5s`, …).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The no_std crates that must build for the kernel's target.
const NO_STD_CRATES: [&str; 3] = ["ss-abi", "ss-proto", "ss-core"];
const RISCV: &str = "riscv64gc-unknown-none-elf";

struct Step {
    name: &'static str,
    what: &'static str,
    run: fn(&Ctx) -> Result<(), String>,
    /// When both are selected, this step runs in a process of its own
    /// beside the step named here, from that step's start, its output kept
    /// in a log shown when its own turn comes. For a step that keeps one CPU
    /// busy (Miri interprets on one thread) beside one that leaves CPU time
    /// over (the loom models' single-threaded crates and runs): ~85 s of
    /// CI's run.
    beside: Option<&'static str>,
}

struct Ctx {
    ci: bool,
    no_miri: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.task {
        Task::Qemu { harts, timeout } => report(kernel::qemu_interactive(
            harts,
            std::time::Duration::from_secs(timeout),
        )),
        Task::TestKernel => report(kernel::test_kernel()),
        Task::QemuBench { quick, args } => report(kernel::qemu_bench(quick, &args)),
        Task::Test { only, no_miri } => {
            let ctx = Ctx {
                ci: std::env::var_os("CI").is_some(),
                no_miri,
            };
            let steps = steps();
            for name in &only {
                if !steps.iter().any(|s| s.name == name) {
                    eprintln!("xtask: unknown step `{name}`; steps are: {}", names(&steps));
                    return ExitCode::from(2);
                }
            }
            let selected: Vec<&Step> = steps
                .iter()
                .filter(|s| only.is_empty() || only.iter().any(|o| o == s.name))
                .collect();
            run_steps(&ctx, &selected)
        }
    }
}

/// Runs `steps` in order, stopping at the first failure; a step with a
/// [`Step::beside`] partner among them starts with its partner (see
/// [`Beside`]).
fn run_steps(ctx: &Ctx, steps: &[&Step]) -> ExitCode {
    let started = Instant::now();
    let mut beside: Vec<Beside> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let t = Instant::now();
        let result = match beside.iter().position(|b| b.name == step.name) {
            Some(at) => {
                let b = beside.swap_remove(at);
                eprintln!(
                    "\n==> [{}] {} (ran beside `{}`: its output follows)",
                    step.name,
                    step.what,
                    step.beside.unwrap_or_default()
                );
                b.finish().map(|()| None)
            }
            None => {
                eprintln!("\n==> [{}] {}", step.name, step.what);
                start_beside(ctx, &steps[i + 1..], step, &mut beside)
                    .and_then(|()| (step.run)(ctx))
                    .map(|()| Some(t.elapsed().as_secs_f64()))
            }
        };
        match result {
            Ok(Some(secs)) => eprintln!("==> [{}] ok in {secs:.1}s", step.name),
            Ok(None) => eprintln!("==> [{}] ok (its own time above)", step.name),
            Err(e) => {
                eprintln!("\nxtask: step `{}` failed: {e}", step.name);
                // Dropping the rest stops them.
                drop(beside);
                return ExitCode::FAILURE;
            }
        }
    }
    if std::env::var_os(BESIDE_ENV).is_none() {
        eprintln!(
            "\nxtask: all steps passed in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    ExitCode::SUCCESS
}

/// Set in the environment of a step run beside another ([`Beside`]).
const BESIDE_ENV: &str = "XTASK_BESIDE";

/// The process groups of the steps running beside (their leaders' pids),
/// for the signal watch to kill before this program ends.
static BESIDE_GROUPS: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Takes group `pid` off [`BESIDE_GROUPS`] (its leader was reaped).
fn forget_group(pid: u32) {
    BESIDE_GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| *p != pid);
}

/// Kills process group `pid` (`kill -TERM -- -PID`).
fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{pid}")])
        .status();
}

/// From the first call on, a thread waits for `SIGINT`, `SIGTERM` or
/// `SIGHUP`, kills the groups in [`BESIDE_GROUPS`] and ends this program
/// as the signal would have (exit code 128 + the signal).
fn watch_signals() -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    static WATCHING: std::sync::Once = std::sync::Once::new();
    let mut result = Ok(());
    WATCHING.call_once(
        || match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            Ok(mut signals) => {
                std::thread::spawn(move || {
                    if let Some(sig) = signals.forever().next() {
                        let groups = std::mem::take(
                            &mut *BESIDE_GROUPS.lock().unwrap_or_else(|e| e.into_inner()),
                        );
                        for pid in groups {
                            kill_group(pid);
                        }
                        std::process::exit(128 + sig);
                    }
                });
            }
            Err(e) => result = Err(format!("could not watch for signals: {e}")),
        },
    );
    result
}

/// Starts the steps among `later` (those after `step`) that run beside
/// `step`.
fn start_beside(
    ctx: &Ctx,
    later: &[&Step],
    step: &Step,
    beside: &mut Vec<Beside>,
) -> Result<(), String> {
    for b in later.iter().filter(|b| b.beside == Some(step.name)) {
        beside.push(Beside::start(b, ctx).map_err(|e| format!("`{}`: {e}", b.name))?);
    }
    Ok(())
}

/// A step running beside another: this program again (`test --only NAME`),
/// in a process group of its own, its output in `target/xtask/NAME.log`.
/// Dropped unfinished (another step failed), the whole group is killed; so
/// it is when this program gets `SIGINT` (its own group, the terminal's
/// Ctrl-C does not reach it), `SIGTERM` or `SIGHUP` (see [`BESIDE_GROUPS`]).
struct Beside {
    name: &'static str,
    child: Option<std::process::Child>,
    log: std::path::PathBuf,
}

impl Beside {
    fn start(step: &Step, ctx: &Ctx) -> Result<Beside, String> {
        use std::os::unix::process::CommandExt as _;
        let dir = std::path::Path::new("target/xtask");
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let log = dir.join(format!("{}.log", step.name));
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.args(["test", "--only", step.name]);
        if ctx.no_miri {
            cmd.arg("--no-miri");
        }
        cmd.env(BESIDE_ENV, "1")
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        watch_signals()?;
        let child = cmd
            .spawn()
            .map_err(|e| format!("could not start `{}` beside: {e}", step.name))?;
        BESIDE_GROUPS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child.id());
        eprintln!(
            "xtask: `{}` runs beside this step from now (log: {})",
            step.name,
            log.display()
        );
        Ok(Beside {
            name: step.name,
            child: Some(child),
            log,
        })
    }

    /// Waits for the step and shows its log (with the step's own time).
    fn finish(mut self) -> Result<(), String> {
        // `Some` until here or `drop`: `finish` takes `self`.
        let mut child = self.child.take().expect("a step beside is finished once");
        let status = child.wait().map_err(|e| e.to_string());
        forget_group(child.id());
        match std::fs::read(&self.log) {
            Ok(log) => {
                use std::io::Write as _;
                let _ = std::io::stderr().write_all(&log);
            }
            Err(e) => eprintln!("xtask: {}: {e}", self.log.display()),
        }
        match status? {
            s if s.success() => Ok(()),
            s => Err(format!("exited with {s} (output above)")),
        }
    }
}

impl Drop for Beside {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The group: cargo and the test binaries it started.
            kill_group(child.id());
            let _ = child.wait();
            forget_group(child.id());
        }
    }
}

fn report(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn names(steps: &[Step]) -> String {
    steps.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

fn steps() -> Vec<Step> {
    vec![
        Step {
            name: "fmt",
            what: "rustfmt --check",
            run: |_| cargo(&["fmt", "--all", "--check"], &[]),
            beside: None,
        },
        Step {
            name: "clippy",
            what: "clippy on every target, warnings denied",
            run: |_| {
                cargo(
                    &[
                        "clippy",
                        "--workspace",
                        "--all-targets",
                        "--",
                        "-D",
                        "warnings",
                    ],
                    &[],
                )
            },
            beside: None,
        },
        Step {
            name: "unit",
            what: "cargo test --workspace (unit, integration, proptest, doc tests)",
            run: |_| cargo(&["test", "--workspace"], &[]),
            beside: None,
        },
        Step {
            name: "loom",
            what: "loom models of the core's races and of the runtime's remote-request, watch, \
                   parking (permits, ring wake-ups) and reserve (call-outs) handshakes; clippy \
                   over the code built for them",
            run: |_| {
                let env = [
                    ("RUSTFLAGS", "--cfg loom"),
                    ("CARGO_TARGET_DIR", "target/loom"),
                ];
                // The code under `cfg(loom)` is code too: the clippy step never
                // sees it.
                let clippy = [
                    "clippy",
                    "-p",
                    "ss-core",
                    "-p",
                    "ss-runtime",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ];
                cargo(&clippy, &env)?;
                let core = [
                    "test",
                    "-p",
                    "ss-core",
                    "--features",
                    "std",
                    "--test",
                    "loom",
                    "--release",
                ];
                cargo(&core, &env)?;
                let runtime = [
                    "test",
                    "-p",
                    "ss-runtime",
                    "--lib",
                    "--release",
                    "loom_model",
                ];
                cargo(&runtime, &env)
            },
            beside: None,
        },
        Step {
            name: "miri",
            what: "Miri over the core's tests (nightly)",
            run: miri,
            beside: Some("loom"),
        },
        Step {
            name: "riscv",
            what: "build the no_std crates for riscv64gc-unknown-none-elf",
            run: |_| {
                let mut args = vec!["build", "--target", RISCV];
                for c in NO_STD_CRATES {
                    args.extend(["-p", c]);
                }
                cargo(&args, &[])
            },
            beside: None,
        },
        Step {
            name: "fuzz",
            what: "20 s of the protocol decoder's cargo-fuzz target (nightly)",
            run: fuzz,
            beside: None,
        },
        Step {
            name: "kernel",
            what: "the RISC-V kernel: fmt, clippy, host tests, QEMU test suites (cargo xtask test-kernel)",
            run: |_| kernel::test_kernel(),
            beside: None,
        },
        Step {
            name: "doc",
            what: "cargo doc, warnings denied",
            run: |_| {
                cargo(
                    &["doc", "--workspace", "--no-deps"],
                    &[("RUSTDOCFLAGS", "-D warnings")],
                )
            },
            beside: None,
        },
        Step {
            name: "bench",
            what: "benchmark smoke runs: micro, rtbench, rtecho, coordbench, ssbench all, ssbench qemu \
                   (--quick; they assert completion and verified answers, never timings)",
            run: |_| {
                for bin in ["micro", "rtbench", "rtecho", "coordbench"] {
                    bench_bin(bin, &["--quick"])?;
                }
                // The paper's evaluation, every experiment on a small scale: fails
                // unless every run completed, every answer verified, and the
                // models named here started.
                bench_bin(
                    "ssbench",
                    &[
                        "all",
                        "--quick",
                        "--out",
                        "target/ssbench/ci",
                        "--require",
                        "kcuc,tokio,ceiling",
                    ],
                )?;
                // The same experiments against the kernel's servers in QEMU:
                // fails unless every guest served and every answer verified.
                kernel::qemu_bench(
                    true,
                    &["--out".to_owned(), "target/ssbench/qemu-ci".to_owned()],
                )
            },
            beside: None,
        },
    ]
}

fn miri(ctx: &Ctx) -> Result<(), String> {
    if ctx.no_miri {
        eprintln!("skipped (--no-miri)");
        return Ok(());
    }
    let have = Command::new("cargo")
        .args(["+nightly", "miri", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have {
        let fix = "install it with `rustup toolchain install nightly --profile minimal \
                   --component miri,rust-src`";
        if ctx.ci {
            return Err(format!("Miri is missing; {fix}"));
        }
        eprintln!("skipped: Miri is missing; {fix}");
        return Ok(());
    }
    cargo(
        &["+nightly", "miri", "test", "-p", "ss-core"],
        &[(
            "MIRIFLAGS",
            "-Zmiri-strict-provenance -Zmiri-disable-isolation",
        )],
    )
}

fn fuzz(ctx: &Ctx) -> Result<(), String> {
    let have = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have {
        let fix = "install it with `cargo install cargo-fuzz --locked` (and the nightly toolchain)";
        if ctx.ci {
            return Err(format!("cargo-fuzz is missing; {fix}"));
        }
        eprintln!("skipped: cargo-fuzz is missing; {fix}");
        return Ok(());
    }
    let dir = std::path::Path::new("crates/proto");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(dir).args([
        "+nightly",
        "fuzz",
        "run",
        "decode",
        "--",
        "-max_total_time=20",
        "-dict=fuzz/decode.dict",
    ]);
    eprintln!("$ (cd crates/proto && cargo +nightly fuzz run decode -- -max_total_time=20)");
    let status = cmd
        .status()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "the fuzzer found a failure ({status}); see crates/proto/fuzz/artifacts"
        ))
    }
}

/// `cargo run --release -p ss-bench --bin BIN -- ARGS…`.
fn bench_bin(bin: &str, args: &[&str]) -> Result<(), String> {
    let mut all = vec!["run", "--release", "-p", "ss-bench", "--bin", bin, "--"];
    all.extend_from_slice(args);
    cargo(&all, &[])
}

fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let mut cmd = Command::new("cargo");
    // A `+toolchain` argument must come first; `cargo` from rustup handles it.
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    eprintln!("$ {}cargo {}", env_prefix(env), args.join(" "));
    let status = cmd
        .status()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` exited with {status}", args.join(" ")))
    }
}

fn env_prefix(env: &[(&str, &str)]) -> String {
    env.iter().map(|(k, v)| format!("{k}=\"{v}\" ")).collect()
}
