//! Starting and stopping servers as child processes, and caging one in a fixed
//! amount of memory.
//!
//! A server is `current_exe() server --model M --listen 127.0.0.1:0 …`. It must
//! print one line `listening <addr>` within [`START_TIMEOUT`]; anything else (an
//! error because the model is not built, a crash, silence) makes the model
//! *unavailable* for that run, with the reason taken from its stderr. It is
//! stopped by closing its stdin, then SIGTERM, then SIGKILL, each after a bounded
//! wait, and dies with the driver (`PR_SET_PDEATHSIG`) whatever happens.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::ValueEnum;

use super::server::Model;

/// How long a server may take to print its `listening` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The command-line name of a model (`kcuc`, `tokio`, …).
pub fn model_name(model: Model) -> String {
    model.to_possible_value().map_or_else(
        || format!("{model:?}").to_lowercase(),
        |v| v.get_name().to_owned(),
    )
}

/// A running server.
pub struct ServerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its stderr, for the reason it failed.
    log: PathBuf,
}

/// How a server is started.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    /// The model.
    pub model: Model,
    /// `--workers` (None: the server's default).
    pub workers: Option<usize>,
    /// `--levels`.
    pub levels: u8,
}

impl ServerProc {
    /// Starts a server and waits for its `listening` line. `log` receives its
    /// stderr; `cage`, if given, holds its memory from its first instruction.
    ///
    /// # Errors
    /// The model is unavailable: the message says why (its stderr's last lines).
    pub fn start(spec: &ServerSpec, log: &Path, cage: Option<&MemCage>) -> Result<ServerProc> {
        let exe = std::env::current_exe().context("finding this program's path")?;
        let mut cmd = Command::new(exe);
        cmd.arg("server")
            .arg("--model")
            .arg(model_name(spec.model))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--levels")
            .arg(spec.levels.to_string());
        if let Some(w) = spec.workers {
            cmd.arg("--workers").arg(w.to_string());
        }
        let err = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err));
        let procs_fd = cage.map(|c| c.procs.as_raw_fd());
        let rlimit_as = cage.and_then(|c| c.rlimit_as);
        let parent = std::process::id();
        // SAFETY: the closure runs in the child between fork and exec and calls
        // only async-signal-safe functions (prctl, getppid, kill, write,
        // setrlimit) on values prepared before the fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                if libc::getppid() as u32 != parent {
                    // The driver died before the signal was armed.
                    libc::kill(libc::getpid(), libc::SIGKILL);
                }
                if let Some(fd) = procs_fd {
                    // "0" moves the writing process: this child, before exec.
                    let msg = b"0\n";
                    if libc::write(fd, msg.as_ptr().cast(), msg.len()) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(bytes) = rlimit_as {
                    let lim = libc::rlimit {
                        rlim_cur: bytes,
                        rlim_max: bytes,
                    };
                    if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("starting the server process")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("the server's stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let mut reader = BufReader::new(stdout);
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so that a chatty server never blocks on its stdout.
            let mut sink = Vec::new();
            let _ = std::io::copy(&mut reader, &mut sink);
        });
        let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.trim().parse::<SocketAddr>().ok());
        let mut proc = ServerProc {
            child,
            stdin,
            addr: "0.0.0.0:0".parse().expect("a literal address"),
            log: log.to_owned(),
        };
        match addr {
            Some(a) => {
                proc.addr = a;
                Ok(proc)
            }
            None => {
                let status = proc.stop();
                let tail = proc.log_tail();
                let why = if tail.is_empty() {
                    format!("no `listening` line ({status})")
                } else {
                    tail
                };
                Err(anyhow!(why))
            }
        }
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// CPU seconds (user + system) the server has used.
    pub fn cpu_secs(&self) -> f64 {
        let stat =
            fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat.rsplit_once(')').map_or("", |r| r.1);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
        // SAFETY: sysconf reads a configuration value and touches no memory.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        (ticks(11) + ticks(12)) / hz
    }

    /// CPUs the server kept busy since `mark` (cpu seconds, instant).
    pub fn cpus_since(&self, mark: (f64, Instant)) -> f64 {
        (self.cpu_secs() - mark.0) / mark.1.elapsed().as_secs_f64().max(1e-9)
    }

    /// A mark for [`ServerProc::cpus_since`].
    pub fn mark(&self) -> (f64, Instant) {
        (self.cpu_secs(), Instant::now())
    }

    /// Stops the server: stdin closed, then SIGTERM, then SIGKILL. Returns how
    /// it ended (`exit 0` is a clean stop).
    pub fn stop(&mut self) -> String {
        drop(self.stdin.take());
        let pid = self.child.id() as libc::pid_t;
        for (wait, signal) in [
            (Duration::from_secs(3), Some(libc::SIGTERM)),
            (Duration::from_secs(2), Some(libc::SIGKILL)),
            (Duration::from_secs(2), None),
        ] {
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline {
                if let Ok(Some(status)) = self.child.try_wait() {
                    return describe(status);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if let Some(sig) = signal {
                // SAFETY: kill sends a signal to our own child, which we have not
                // reaped yet, so the pid still names it.
                unsafe { libc::kill(pid, sig) };
            }
        }
        "did not exit after SIGKILL".to_owned()
    }

    /// The last lines of the server's stderr, joined.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(3)..].join(" / ")
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(9)) => "killed (SIGKILL: out of memory?)".to_owned(),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "ended".to_owned(),
    }
}

/// A fixed memory limit for one server process.
pub struct MemCage {
    /// The cgroup directory (None for the rlimit fallback).
    dir: Option<PathBuf>,
    /// Its `cgroup.procs`, opened before the fork (or /dev/null).
    procs: File,
    /// RLIMIT_AS in bytes, when no cgroup could be made.
    rlimit_as: Option<u64>,
    /// How the limit is enforced, for the report.
    pub how: String,
    peak_file: Option<PathBuf>,
}

impl MemCage {
    /// A cage of `bytes`: a cgroup v2 child with `memory.max` if this process's
    /// cgroup allows one, else a cgroup v1 memory child with
    /// `memory.limit_in_bytes`, else RLIMIT_AS (address space, a much cruder
    /// bound). `tag` names the cgroup.
    ///
    /// # Errors
    /// Only if even /dev/null cannot be opened.
    pub fn new(bytes: u64, tag: &str) -> Result<MemCage> {
        let name = format!("ssbench-{}-{tag}", std::process::id());
        let mut notes = Vec::new();
        match cgroup_v2(bytes, &name) {
            Ok(c) => return Ok(c),
            Err(e) => notes.push(format!("cgroup v2: {e}")),
        }
        match cgroup_v1(bytes, &name) {
            Ok(c) => return Ok(c),
            Err(e) => notes.push(format!("cgroup v1: {e}")),
        }
        Ok(MemCage {
            dir: None,
            procs: File::options().write(true).open("/dev/null")?,
            rlimit_as: Some(bytes),
            how: format!(
                "RLIMIT_AS of {} MiB (address space, not resident memory; no cgroup: {})",
                bytes >> 20,
                notes.join("; ")
            ),
            peak_file: None,
        })
    }

    /// The most memory the caged processes used, in MiB, if the cgroup says.
    pub fn peak_mib(&self) -> Option<f64> {
        let p = self.peak_file.as_ref()?;
        let v: f64 = fs::read_to_string(p).ok()?.trim().parse().ok()?;
        Some(v / (1024.0 * 1024.0))
    }
}

impl Drop for MemCage {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            // The server has exited by now; the kernel may take a moment to
            // notice the cgroup is empty.
            for _ in 0..100 {
                if fs::remove_dir(dir).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// This process's cgroup path for a v1 controller (`Some("memory")`) or v2 (`None`).
fn own_cgroup(controller: Option<&str>) -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = match controller {
            None => ctrls.is_empty(),
            Some(c) => ctrls.split(',').any(|x| x == c),
        };
        hit.then(|| path.to_owned())
    })
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .with_context(|| format!("writing {value:?} to {}", path.display()))
}

/// A cage of the cgroup at `dir`, whose limit is already written.
fn cgroup_cage(dir: &Path, how: String, peak: &str) -> Result<MemCage> {
    let procs = File::options()
        .write(true)
        .open(dir.join("cgroup.procs"))
        .context("opening cgroup.procs")?;
    Ok(MemCage {
        dir: Some(dir.to_owned()),
        procs,
        rlimit_as: None,
        how,
        peak_file: Some(dir.join(peak)),
    })
}

fn cgroup_v2(bytes: u64, name: &str) -> Result<MemCage> {
    let own = own_cgroup(None).context("no cgroup v2 line in /proc/self/cgroup")?;
    let mount = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|m| m.join("cgroup.controllers").exists())
        .context("no cgroup v2 mount")?;
    let parent = mount.join(own.trim_start_matches('/'));
    let controllers = fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
    if !controllers.split_whitespace().any(|c| c == "memory") {
        bail!(
            "the memory controller is not available in {}",
            parent.display()
        );
    }
    let dir = parent.join(name);
    fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let made = (|| -> Result<MemCage> {
        if !dir.join("memory.max").exists() {
            bail!("memory is not enabled for children of {}", parent.display());
        }
        write(&dir.join("memory.max"), &bytes.to_string())?;
        let _ = write(&dir.join("memory.swap.max"), "0");
        cgroup_cage(
            &dir,
            format!("cgroup v2 memory.max = {} MiB", bytes >> 20),
            "memory.peak",
        )
    })();
    if made.is_err() {
        let _ = fs::remove_dir(&dir);
    }
    made
}

fn cgroup_v1(bytes: u64, name: &str) -> Result<MemCage> {
    let own = own_cgroup(Some("memory")).context("no memory controller in /proc/self/cgroup")?;
    let mount = PathBuf::from("/sys/fs/cgroup/memory");
    if !mount.join("memory.limit_in_bytes").exists() {
        bail!("no cgroup v1 memory mount at {}", mount.display());
    }
    let dir = mount.join(own.trim_start_matches('/')).join(name);
    fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let made = (|| -> Result<MemCage> {
        write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
        // No swap to escape to, where the kernel offers the knob.
        let _ = write(&dir.join("memory.memsw.limit_in_bytes"), &bytes.to_string());
        let _ = write(&dir.join("memory.swappiness"), "0");
        cgroup_cage(
            &dir,
            format!(
                "cgroup v1 memory.limit_in_bytes = {} MiB (the server process's pages and the kernel memory charged to it, such as thread stacks)",
                bytes >> 20
            ),
            "memory.max_usage_in_bytes",
        )
    })();
    if made.is_err() {
        let _ = fs::remove_dir(&dir);
    }
    made
}
