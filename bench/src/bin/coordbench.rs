//! `coordbench`: cross-process priority on two cores (paper §2.4, issue 4 item 6).
//!
//! A high-priority request/response server process and a low-priority CPU-flood
//! process share the machine; a client process drives the server open-loop and
//! measures each response's latency from its intended send time. Three scenarios
//! run in one invocation:
//!
//! | scenario | flood | coordination |
//! |---|---|---|
//! | `alone` | none | on (server and client registered) |
//! | `flood, uncoordinated` | yes | off for everyone |
//! | `flood, cooperative only` | yes | on, the coordinator's OS weights off: processes defer by themselves |
//! | `flood, coordinated` | yes | on, with OS weights (the flood's workers lowered while level 0 is about) |
//!
//! The server and client run at level 0, the flood at level 7. Each scenario has
//! a fresh coordinator (in this process). Target: with coordination, the
//! server's p99 ≤ 1.2 × its p99 alone. The flood's progress (work chunks per
//! second) is printed beside, so the price it pays is visible too. OS weights
//! need `CAP_SYS_NICE` (the report says whether the coordinator had it). See
//! `bench/README.md`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use ss_bench::harness::round_order;
use ss_bench::latency::Latencies;
use ss_bench::machine::Machine;
use ss_bench::stalls::HostStalls;
use ss_runtime::net::{TcpListener, TcpStream};
use ss_runtime::{prio, Builder, Coordination, Runtime};

/// Bytes of a request and of a response.
const MSG: usize = 64;

#[derive(Parser, Debug)]
#[command(
    name = "coordbench",
    about = "High-priority server vs low-priority CPU flood, with and without cross-process coordination"
)]
struct Args {
    /// Short run for CI (completes and checks every answer; timings mean little).
    #[arg(long)]
    quick: bool,
    /// Seconds of measurement per scenario and round.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Rounds: every scenario runs once per round, the order reversed every
    /// other round; each scenario's row is its median-p99 round (default 3, or
    /// 1 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Client connections.
    #[arg(long, default_value_t = 8)]
    conns: usize,
    /// Requests per second per connection (open loop).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Work per request in the server: squarings of a 15×15 matrix.
    #[arg(long, default_value_t = 1)]
    work: u32,
    /// Worker threads of the flood process.
    #[arg(long, default_value_t = 2)]
    flood_workers: usize,
    /// Idle spin of every ss-runtime in the run, in µs (default: the runtime's, 20).
    #[arg(long)]
    idle_spin_us: Option<u64>,
    /// CPUs the coordinator keeps free of lowered processes' workers
    /// (default: the coordinator's, 1; 0 turns the reservation off).
    #[arg(long)]
    reserve_cpus: Option<usize>,
    /// Internal: run as one of the child processes.
    #[arg(long, hide = true)]
    role: Option<String>,
    /// Internal: the coordinator's socket for a child (absent: uncoordinated).
    #[arg(long, hide = true)]
    socket: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.role.as_deref() {
        None => orchestrate(&args),
        Some("server") => serve(&args),
        Some("flood") => flood(&args),
        Some(other) => bail!("unknown role {other}"),
    }
}

/// A runtime builder with this run's settings.
fn builder(args: &Args) -> Builder {
    match args.idle_spin_us {
        Some(us) => Builder::new().idle_spin(Duration::from_micros(us)),
        None => Builder::new(),
    }
}

fn coordination(socket: &Option<PathBuf>) -> Coordination {
    match socket {
        Some(p) => Coordination::Connect(p.clone()),
        None => Coordination::Off,
    }
}

/// Returns once stdin reaches end of file (the parent went away or is done).
fn stdin_closed() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        f.store(true, Ordering::Relaxed);
    });
    flag
}

/// The server's work: squares a 15×15 matrix seeded by the request, `rounds`
/// times, and folds the result into the response.
fn handle(req: &[u8], rounds: u32, out: &mut [u8]) {
    let mut m = [0u32; 225];
    for (i, x) in m.iter_mut().enumerate() {
        *x = u32::from(req[i % MSG]).wrapping_add(i as u32);
    }
    let mut acc = 0u32;
    for _ in 0..rounds {
        let mut c = [0u32; 225];
        for r in 0..15 {
            for k in 0..15 {
                let a = m[r * 15 + k];
                for col in 0..15 {
                    c[r * 15 + col] = c[r * 15 + col].wrapping_add(a.wrapping_mul(m[k * 15 + col]));
                }
            }
        }
        acc = c.iter().fold(acc, |s, &v| s.wrapping_add(v));
        m = c;
    }
    out.copy_from_slice(req);
    out[MSG - 4..].copy_from_slice(&acc.to_le_bytes());
}

/// Receives exactly `MSG` bytes into `buf` (its length becomes `MSG`);
/// `Ok(false)` at a clean end of stream. Both sides go in lock step (one
/// request, one response), so a receive never takes bytes of the next message.
async fn recv_msg(s: &TcpStream, mut buf: Vec<u8>) -> (std::io::Result<bool>, Vec<u8>) {
    buf.clear();
    buf.reserve_exact(MSG);
    while buf.len() < MSG {
        let (r, b) = s.recv(buf).await;
        buf = b;
        match r {
            Ok(0) if buf.is_empty() => return (Ok(false), buf),
            Ok(0) => {
                return (
                    Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "peer closed mid-message",
                    )),
                    buf,
                )
            }
            Ok(_) => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(true), buf)
}

/// Role `server`: a level-0 request/response server.
fn serve(args: &Args) -> anyhow::Result<()> {
    let rt = builder(args)
        .workers(2)
        .coordination(coordination(&args.socket))
        .build()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("listening {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let done = stdin_closed();
    let work = args.work;
    rt.block_on(async move {
        loop {
            let accepted =
                ss_runtime::time::timeout(Duration::from_millis(50), listener.accept()).await;
            if done.load(Ordering::Relaxed) {
                return;
            }
            let Ok(Ok((stream, _))) = accepted else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            // Detached: the connection's coroutine ends with its connection.
            drop(ss_runtime::spawn(
                async move {
                    let mut req = vec![0u8; MSG];
                    let mut resp = vec![0u8; MSG];
                    loop {
                        let (r, b) = recv_msg(&stream, req).await;
                        req = b;
                        if !matches!(r, Ok(true)) {
                            return;
                        }
                        handle(&req, work, &mut resp);
                        let (r, b) = stream.send_all(resp).await;
                        resp = b;
                        if r.is_err() {
                            return;
                        }
                    }
                },
                prio(0),
            ));
        }
    });
    rt.shutdown();
    Ok(())
}

/// Role `flood`: CPU-bound coroutines at level 7, one per worker, each doing
/// ~10 µs chunks of arithmetic between budget units. Prints chunks done.
fn flood(args: &Args) -> anyhow::Result<()> {
    let rt = builder(args)
        .workers(args.flood_workers)
        .main_priority(prio(7))
        .coordination(coordination(&args.socket))
        .build()?;
    println!("flooding");
    std::io::stdout().flush()?;
    let done = stdin_closed();
    let chunks = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..args.flood_workers {
        let (done, chunks) = (done.clone(), chunks.clone());
        handles.push(rt.spawn(
            async move {
                let mut x = 0x9e37_79b9_7f4a_7c15u64;
                while !done.load(Ordering::Relaxed) {
                    for _ in 0..4000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                    }
                    std::hint::black_box(x);
                    chunks.fetch_add(1, Ordering::Relaxed);
                    ss_runtime::budget::consume_budget().await;
                }
            },
            prio(7),
        )?);
    }
    rt.block_on(async move {
        for h in handles {
            let _ = h.await;
        }
    });
    println!(
        "chunks {} deferrals {}",
        chunks.load(Ordering::Relaxed),
        rt.deferrals()
    );
    rt.shutdown();
    Ok(())
}

/// A child process of this executable in `role`, reading its first line.
struct Role {
    child: Child,
    first: String,
    out: BufReader<std::process::ChildStdout>,
}

impl Role {
    fn start(role: &str, args: &Args, socket: Option<&Path>) -> anyhow::Result<Role> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.arg("--role")
            .arg(role)
            .arg("--work")
            .arg(args.work.to_string())
            .arg("--flood-workers")
            .arg(args.flood_workers.to_string())
            .args(
                args.idle_spin_us
                    .map(|us| vec!["--idle-spin-us".to_owned(), us.to_string()])
                    .unwrap_or_default(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(s) = socket {
            cmd.arg("--socket").arg(s);
        }
        let mut child = cmd.spawn()?;
        let mut out = BufReader::new(child.stdout.take().context("child stdout")?);
        let mut first = String::new();
        out.read_line(&mut first)?;
        if first.is_empty() {
            let status = child.wait()?;
            bail!("the {role} process exited before it started ({status})");
        }
        Ok(Role { child, first, out })
    }

    /// Closes its stdin (asks it to stop), waits, returns the rest of its output.
    fn finish(mut self) -> anyhow::Result<String> {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        self.out.read_to_string(&mut rest)?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("a child process failed: {status}");
        }
        Ok(rest)
    }
}

/// One scenario's result.
struct Outcome {
    name: &'static str,
    lat: Latencies,
    sent: u64,
    answered: u64,
    secs: f64,
    flood_chunks_per_s: Option<f64>,
    flood_deferrals: Option<u64>,
}

fn scenario(
    name: &'static str,
    args: &Args,
    socket: Option<&Path>,
    with_flood: bool,
    secs: f64,
) -> anyhow::Result<Outcome> {
    let server = Role::start("server", args, socket)?;
    let addr: SocketAddr = server
        .first
        .trim()
        .strip_prefix("listening ")
        .context("server's first line")?
        .parse()?;
    let flood = if with_flood {
        Some(Role::start("flood", args, socket)?)
    } else {
        None
    };
    let flood_started = Instant::now();
    let rt = builder(args)
        .workers(1)
        .coordination(match socket {
            Some(p) => Coordination::Connect(p.to_owned()),
            None => Coordination::Off,
        })
        .build()?;
    let (lat, sent, answered) = drive(&rt, addr, args, secs)?;
    rt.shutdown();
    let flood_out = flood.map(Role::finish).transpose()?;
    let flood_secs = flood_started.elapsed().as_secs_f64();
    server.finish()?;
    let (mut chunks, mut deferrals) = (None, None);
    if let Some(out) = flood_out {
        let mut words = out.split_whitespace();
        while let Some(w) = words.next() {
            match w {
                "chunks" => chunks = words.next().and_then(|v| v.parse::<f64>().ok()),
                "deferrals" => deferrals = words.next().and_then(|v| v.parse::<u64>().ok()),
                _ => {}
            }
        }
    }
    Ok(Outcome {
        name,
        lat,
        sent,
        answered,
        secs,
        flood_chunks_per_s: chunks.map(|c| c / flood_secs),
        flood_deferrals: deferrals,
    })
}

/// The client: `conns` connections at level 0, each sending open-loop at
/// `rate`/s for `secs` after a warm-up; latency from the intended send time.
fn drive(
    rt: &Runtime,
    addr: SocketAddr,
    args: &Args,
    secs: f64,
) -> anyhow::Result<(Latencies, u64, u64)> {
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let warm = Duration::from_millis(300);
    let measure = Duration::from_secs_f64(secs);
    let conns = args.conns;
    let work = args.work;
    rt.block_on(async move {
        let start = Instant::now() + Duration::from_millis(20);
        let mut handles = Vec::new();
        for c in 0..conns {
            handles.push(ss_runtime::spawn(
                async move {
                    let s = TcpStream::connect(addr).await?;
                    s.set_nodelay(true)?;
                    let mut lat = Latencies::new();
                    let (mut sent, mut answered) = (0u64, 0u64);
                    let mut req = vec![0u8; MSG];
                    let mut resp = vec![0u8; MSG];
                    let mut want = [0u8; MSG];
                    // Spread the connections over one interval.
                    let offset = interval.mul_f64(c as f64 / conns as f64);
                    let mut k: u32 = 0;
                    loop {
                        let intended = start + offset + interval * k;
                        k += 1;
                        if intended >= start + warm + measure {
                            break;
                        }
                        ss_runtime::time::sleep_until(intended).await;
                        req[..4].copy_from_slice(&k.to_le_bytes());
                        req[4] = c as u8;
                        let (r, b) = s.send_all(req).await;
                        req = b;
                        r?;
                        let (r, b) = recv_msg(&s, resp).await;
                        resp = b;
                        if !r? {
                            anyhow::bail!("the server closed connection {c}");
                        }
                        handle(&req, work, &mut want);
                        if resp != want {
                            anyhow::bail!("wrong answer on connection {c}, request {k}");
                        }
                        if intended >= start + warm {
                            sent += 1;
                            answered += 1;
                            lat.record(
                                u64::try_from(intended.elapsed().as_nanos()).unwrap_or(u64::MAX),
                            );
                        }
                    }
                    Ok::<_, anyhow::Error>((lat, sent, answered))
                },
                prio(0),
            ));
        }
        let mut all = Latencies::new();
        let (mut sent, mut answered) = (0, 0);
        for h in handles {
            let (l, s, a) = h
                .await
                .map_err(|e| anyhow::anyhow!("client coroutine: {e}"))??;
            all.merge(&l);
            sent += s;
            answered += a;
        }
        Ok((all, sent, answered))
    })
}

fn orchestrate(args: &Args) -> anyhow::Result<()> {
    let secs = if args.quick { 0.5 } else { args.seconds };
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    println!("{}", Machine::detect());
    println!("{}", HostStalls::probe(HostStalls::span(args.quick)));
    println!(
        "coordbench: {} connections × {}/s open loop, {} s per scenario × {rounds} round(s), server work {} × 15x15 squaring; flood {} workers at level 7",
        args.conns, args.rate, secs, args.work, args.flood_workers
    );
    // (name, coordinator with OS weights?, flood?)
    let runs = [
        ("alone", Some(true), false),
        ("flood, uncoordinated", None, true),
        ("flood, cooperative only", Some(false), true),
        ("flood, coordinated", Some(true), true),
    ];
    let mut outcomes: Vec<Vec<Outcome>> = runs.iter().map(|_| Vec::new()).collect();
    let mut weights_note = String::new();
    for round in 0..rounds {
        for i in round_order(runs.len(), round) {
            let (name, coordinated, with_flood) = runs[i];
            eprintln!("round {}/{rounds}: {name}", round + 1);
            let socket =
                std::env::temp_dir().join(format!("coordbench-{}-{i}.sock", std::process::id()));
            let _ = std::fs::remove_file(&socket);
            let coord = match coordinated {
                Some(weights) => {
                    let mut cfg = ss_coord::Config::new(&socket);
                    cfg.policy.weights.enabled = weights;
                    if let Some(n) = args.reserve_cpus {
                        cfg.policy.weights.reserve_cpus = n;
                    }
                    Some(ss_coord::Coordinator::spawn(cfg).context("starting the coordinator")?)
                }
                None => None,
            };
            let sock = coord.as_ref().map(|_| socket.as_path());
            let o = scenario(name, args, sock, with_flood, secs)?;
            if o.sent != o.answered {
                bail!("{}: {} requests, {} answers", o.name, o.sent, o.answered);
            }
            outcomes[i].push(o);
            if let Some(c) = coord {
                if coordinated == Some(true) && with_flood {
                    let w = c.status().weights;
                    weights_note = if w.enabled {
                        format!("{w} (the coordinator has CAP_SYS_NICE)")
                    } else {
                        format!("OS weights: not applied — {}", w.note)
                    };
                }
                c.stop()?;
            }
        }
    }

    println!();
    println!(
        "{:<24} {:>10} {:>9} {:>9} {:>15} {:>9} {:>9} {:>12} {:>10}",
        "scenario",
        "resp/s",
        "p50 µs",
        "p99 µs",
        "p99 range",
        "p99.9 µs",
        "max µs",
        "flood ch/s",
        "deferrals"
    );
    let mut median_p99 = Vec::new();
    for rows in &mut outcomes {
        rows.sort_by(|a, b| a.lat.quantile_us(0.99).total_cmp(&b.lat.quantile_us(0.99)));
        let (lo, hi) = (
            rows[0].lat.quantile_us(0.99),
            rows[rows.len() - 1].lat.quantile_us(0.99),
        );
        let o = &rows[rows.len() / 2];
        let p = |q: f64| o.lat.quantile_us(q);
        median_p99.push(p(0.99));
        println!(
            "{:<24} {:>10.0} {:>9.1} {:>9.1} {:>15} {:>9.1} {:>9.1} {:>12} {:>10}",
            o.name,
            o.answered as f64 / o.secs,
            p(0.5),
            p(0.99),
            format!("{lo:.0}–{hi:.0}"),
            p(0.999),
            o.lat.max_us(),
            o.flood_chunks_per_s
                .map_or("-".to_owned(), |c| format!("{c:.0}")),
            o.flood_deferrals.map_or("-".to_owned(), |d| d.to_string()),
        );
    }
    let (alone, uncoordinated, coordinated) = (median_p99[0], median_p99[1], median_p99[3]);
    println!();
    println!("{weights_note}");
    println!(
        "target (median rounds): p99 with coordination ≤ 1.2 × alone: {coordinated:.1} µs vs {:.1} µs ({:.2}×) — {}; without coordination {uncoordinated:.1} µs ({:.2}×)",
        1.2 * alone,
        coordinated / alone,
        if coordinated <= 1.2 * alone { "met" } else { "MISSED" },
        uncoordinated / alone,
    );
    Ok(())
}
