//! `ss-coord`: the SharedScheduler coordinator daemon. See `docs/coordinator.md`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use ss_coord::{default_socket_path, Config, Coordinator, Policy};

const USAGE: &str = "\
usage: ss-coord [options]

  --socket PATH        registration socket (default: $SS_COORD_SOCKET,
                       else $XDG_RUNTIME_DIR/ss-coord.sock, else /tmp/ss-coord-<uid>.sock)
  --policy FILE        policy file (rules as below, one per line, # comments)
  --tick-us N          scan period in microseconds (default 1000)
  --max-clients N      registrations served at most (default 1024)
  --levels N           priority levels, 1..=64 (default 8)
  --default LEVEL      ceiling when no rule matches (default 0)
  --hold-ms MS         how long a process may hold its top level; 0 = unbounded (default 100)
  --uid UID=LEVEL      ceiling for a uid (repeatable)
  --program NAME=LEVEL ceiling for an executable name or full path (repeatable)
  --quiet              do not log registrations
Command-line rules are added after the policy file's; the first matching rule wins.";

fn parse(args: &[String]) -> Result<Config, String> {
    let mut cfg = Config::new(default_socket_path());
    cfg.verbose = true;
    let mut rules: Vec<Vec<String>> = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let num = |v: String| -> Result<u64, String> {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: `{v}` is not a non-negative integer"))
        };
        match flag.as_str() {
            "--socket" => cfg.socket = value()?.into(),
            "--policy" => {
                let path = value()?;
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
                cfg.policy = Policy::parse(&text).map_err(|e| format!("{path}: {e}"))?;
            }
            "--tick-us" => cfg.tick = Duration::from_micros(num(value()?)?.max(10)),
            "--max-clients" => cfg.max_clients = num(value()?)? as usize,
            "--levels" => rules.push(vec!["levels".into(), value()?]),
            "--default" => rules.push(vec!["default".into(), value()?]),
            "--hold-ms" => rules.push(vec!["hold-ms".into(), value()?]),
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("ss-coord: {e}");
            }
            eprintln!("{USAGE}");
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let socket = cfg.socket.clone();
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
        "ss-coord: listening on {} (tick {:?})",
        socket.display(),
        tick
    );
    match coord.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ss-coord: {e}");
            ExitCode::FAILURE
        }
    }
}
