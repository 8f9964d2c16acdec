//! `ss-coord`: the SharedScheduler coordinator daemon. See `docs/coordinator.md`.

mod common;

use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use ss_coord::{default_socket_path, Config, Coordinator, Policy};

const USAGE: &str = "\
usage: ss-coord [options]

  --socket PATH        registration socket (default: $SS_COORD_SOCKET,
                       else $XDG_RUNTIME_DIR/ss-coord.sock, else /tmp/ss-coord-<uid>.sock)
  --query PATH         read-only query socket for ss-top (default: <socket>.query)
  --socket-mode MODE   octal permission bits of both socket files, e.g. 0666 for a
                       system-wide coordinator (default: from the umask)
  --policy FILE        policy file (rules as below, one per line, # comments)
  --tick-us N          scan period in microseconds (default 1000)
  --max-clients N      registrations served at most (default 1024)
  --max-per-uid N      connections one uid may hold at a time (default 64)
  --levels N           priority levels, 1..=64 (default 8)
  --default LEVEL      ceiling when no rule matches (default 0)
  --hold-ms MS         top-level budget: burst; 0 = no budget (default 100)
  --hold-share PCT     top-level budget: long-run share of time, 0..=100 (default 50)
  --uid UID=LEVEL      ceiling for a uid (repeatable)
  --program NAME=LEVEL ceiling for an executable name or full path (repeatable)
  --no-os-weights      leave the worker threads' nice values and policies alone
  --worker-prefix P    worker threads are those named P... (default ss-worker; * = all)
  --nice-step N        nice added per level below the top (default 5)
  --nice-max N         highest nice value given (default 19)
  --least CLASS        threads of processes at the least important level:
                       idle (SCHED_IDLE, default), batch (SCHED_BATCH) or nice
  --weight-window-ms MS  how long a level seen ready keeps counting (default 100)
  --quiet              do not log registrations
Command-line rules are added after the policy file's; the first matching rule wins.";

fn parse(args: &[String]) -> Result<Config, String> {
    let mut cfg = Config::new(default_socket_path());
    cfg.verbose = true;
    let mut rules: Vec<Vec<String>> = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || common::value(&mut it, flag);
        let num = |v: String| -> Result<u64, String> {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: `{v}` is not a non-negative integer"))
        };
        match flag.as_str() {
            "--socket" => cfg.socket = value()?.into(),
            "--query" => cfg.query_socket = Some(value()?.into()),
            "--socket-mode" => {
                let v = value()?;
                let mode = u32::from_str_radix(v.trim_start_matches("0o"), 8)
                    .ok()
                    .filter(|&m| m <= 0o777)
                    .ok_or_else(|| {
                        format!("--socket-mode: `{v}` is not an octal mode like 0660")
                    })?;
                cfg.socket_mode = Some(mode);
            }
            "--policy" => {
                let path = value()?;
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
                cfg.policy = Policy::parse(&text).map_err(|e| format!("{path}: {e}"))?;
            }
            "--tick-us" => cfg.tick = Duration::from_micros(num(value()?)?.max(10)),
            "--max-clients" => cfg.max_clients = num(value()?)? as usize,
            "--max-per-uid" => cfg.max_per_uid = num(value()?)? as usize,
            "--no-os-weights" => rules.push(vec!["os-weights".into(), "off".into()]),
            "--levels" | "--default" | "--hold-ms" | "--hold-share" | "--worker-prefix"
            | "--nice-step" | "--nice-max" | "--least" | "--weight-window-ms" => {
                rules.push(vec![flag[2..].to_string(), value()?]);
            }
            "--uid" | "--program" => {
                let v = value()?;
                let (who, level) = v
                    .split_once('=')
                    .ok_or_else(|| format!("{flag} expects WHO=LEVEL, got `{v}`"))?;
                rules.push(vec![flag[2..].to_string(), who.into(), level.into()]);
            }
            "--quiet" => cfg.verbose = false,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    for r in rules {
        let words: Vec<&str> = r.iter().map(String::as_str).collect();
        cfg.policy
            .apply(&words)
            .map_err(|e| format!("--{}: {e}", words[0]))?;
    }
    Ok(cfg)
}

static STOP_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_: libc::c_int) {
    let fd = STOP_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let v = 1u64;
        // SAFETY: write(2) is async-signal-safe; `v` is 8 readable bytes; the
        // eventfd lives as long as the coordinator, which outlives the handler's use.
        unsafe { libc::write(fd, (&v as *const u64).cast(), 8) };
    }
}

fn main() -> ExitCode {
    let cfg = match common::args_or_usage("ss-coord", USAGE, parse) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let socket = cfg.socket.clone();
    let query = cfg.query_path();
    let tick = cfg.tick;
    let coord = match Coordinator::bind(cfg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ss-coord: cannot serve {}: {e}", socket.display());
            return ExitCode::FAILURE;
        }
    };
    STOP_FD.store(coord.stop_handle().raw_fd(), Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `on_signal` only does an async-signal-safe write.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    eprintln!(
        "ss-coord: listening on {} (tick {:?}), queries on {}",
        socket.display(),
        tick,
        query.display()
    );
    match coord.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ss-coord: {e}");
            ExitCode::FAILURE
        }
    }
}
