//! The experiments: each starts the servers it measures as child processes
//! ([`super::spawn`]), drives them with the load generator ([`super::load`],
//! in this process, so the server and the client are separate processes), and
//! records every data point for the report ([`super::report`]).
//!
//! Every model of [`Model::value_variants`] takes part unless `--models` says
//! otherwise; a model whose server does not start is reported *unavailable* (with
//! its server's own words) and skipped, not treated as a crash of the suite.
//!
//! | experiment | what runs | paper |
//! |---|---|---|
//! | `fig5` | every model at 1, 2, 4 … connections (up to `--max-connections`), each model until it fails (an error, or less than 90 % of the offered load answered), the paper's closed loop: a 15 × 15 request per connection every 100 ms | Fig. 5 |
//! | `fig6` | 64 connections asking for priorities 0–7 (8 each), servers with 1 and with 2 workers | Fig. 6 |
//! | `fig7` | 64 connections in 4 priorities; the latency distribution of each | Fig. 7 |
//! | `memory` | each model's server in one fixed memory limit; connections ramp up until one fails | the 385 vs 186 connections |
//! | `saturation` | open-loop Poisson load at doubling rates over 64 connections, until the model falls behind | (new: the throughput–latency curve, and the ceiling) |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::load::{self, HoldReport, LoadArgs, LoadReport, Mode};
use super::server::Model;
use super::spawn::{model_name, MemCage, ServerProc, ServerSpec};

/// One experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Experiment {
    /// Connections sweep.
    Fig5,
    /// 8 priority levels.
    Fig6,
    /// 4 priority levels' distributions.
    Fig7,
    /// Connections within a memory limit.
    Memory,
    /// Open-loop rate sweep.
    Saturation,
    /// fig5's models back to back at a few connection counts.
    Throughput,
}

impl Experiment {
    /// Every experiment, in the order `all` runs them.
    pub const ALL: [Experiment; 6] = [
        Experiment::Fig5,
        Experiment::Throughput,
        Experiment::Fig6,
        Experiment::Fig7,
        Experiment::Memory,
        Experiment::Saturation,
    ];
}

/// Options shared by the experiments.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SuiteArgs {
    /// Smoke run, under a minute: few points, short windows (CI runs this; it
    /// fails unless every run completed without an error and every answer was right).
    #[arg(long)]
    pub quick: bool,
    /// Output directory (default: `target/ssbench/<date>_<time>-<pid>/`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Models to run, comma-separated (default: every model).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub models: Vec<Model>,
    /// Models that must start; the run fails if one does not (default: none).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub require: Vec<Model>,
    /// Measured window of each point (default 2s, 0.3s with --quick; the paper's is 5s).
    #[arg(long, value_parser = load::parse_duration)]
    pub duration: Option<Duration>,
    /// Server workers in fig5, memory and saturation (default 2).
    #[arg(long)]
    pub workers: Option<usize>,
    /// fig5: the largest connection count (default 4096, 64 with --quick).
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// fig6 and fig7: each connection's interval between requests (default 0:
    /// back to back, which keeps the server saturated as the paper's 50 ms kept
    /// its 100 MHz cores; `50ms` is the paper's setting).
    #[arg(long, value_parser = load::parse_duration)]
    pub prio_interval: Option<Duration>,
    /// memory: the limit in MiB (default 64).
    #[arg(long)]
    pub memory_mib: Option<u64>,
    /// memory: the most connections tried (default 16384, 1024 with --quick).
    #[arg(long)]
    pub memory_cap: Option<u64>,
    /// saturation: target rates in requests/s, comma-separated (default
    /// 5000, 10000, 20000 … 320000; 2000,8000 with --quick).
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,
    /// throughput: rounds per point, the models' order alternating from one
    /// round to the next; the median round's point is kept (default 3, 1 with
    /// --quick).
    #[arg(long)]
    pub rounds: Option<usize>,
}

/// The settings a run used, after defaults.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Smoke run.
    pub quick: bool,
    /// Models asked for.
    pub models: Vec<String>,
    /// Window per point, seconds.
    pub duration_s: f64,
    /// Workers in fig5, memory, saturation.
    pub workers: usize,
    /// fig5's connection counts.
    pub fig5_connections: Vec<usize>,
    /// fig6/fig7 interval, ms.
    pub prio_interval_ms: f64,
    /// memory limit, MiB.
    pub memory_mib: u64,
    /// memory: most connections tried.
    pub memory_cap: u64,
    /// saturation rates.
    pub rates: Vec<f64>,
    /// saturation: connections.
    pub saturation_connections: usize,
    /// throughput: connection counts (back to back).
    pub throughput_connections: Vec<usize>,
    /// throughput: rounds per point (the median round is kept).
    pub throughput_rounds: usize,
}

/// Settings for tests of the report: two models, no points asked for.
#[cfg(test)]
pub(super) fn test_settings() -> Settings {
    Settings {
        quick: false,
        models: vec!["kcuc".into(), "ktut".into()],
        duration_s: 1.0,
        workers: 2,
        fig5_connections: vec![],
        prio_interval_ms: 50.0,
        memory_mib: 128,
        memory_cap: 0,
        rates: vec![],
        saturation_connections: 0,
        throughput_connections: vec![],
        throughput_rounds: 1,
    }
}

impl Settings {
    fn from(a: &SuiteArgs) -> Settings {
        let q = a.quick;
        let models = if a.models.is_empty() {
            Model::value_variants().to_vec()
        } else {
            a.models.clone()
        };
        let max = a
            .max_connections
            .unwrap_or(if q { 64 } else { 4096 })
            .max(1);
        let fig5_connections = if q {
            [1, 8, 64].into_iter().filter(|&c| c <= max).collect()
        } else {
            std::iter::successors(Some(1usize), |c| c.checked_mul(2))
                .take_while(|&c| c <= max)
                .collect()
        };
        let rates = if !a.rates.is_empty() {
            a.rates.clone()
        } else if q {
            vec![2_000.0, 8_000.0]
        } else {
            (0..7).map(|i| 5_000.0 * f64::from(1u32 << i)).collect()
        };
        Settings {
            quick: q,
            models: models.iter().map(|&m| model_name(m)).collect(),
            duration_s: a
                .duration
                .unwrap_or(Duration::from_millis(if q { 300 } else { 2_000 }))
                .as_secs_f64(),
            workers: a.workers.unwrap_or(2).max(1),
            fig5_connections,
            prio_interval_ms: a.prio_interval.unwrap_or(Duration::ZERO).as_secs_f64() * 1e3,
            memory_mib: a.memory_mib.unwrap_or(64).max(1),
            memory_cap: a.memory_cap.unwrap_or(if q { 1024 } else { 16_384 }).max(1),
            rates,
            saturation_connections: 64,
            throughput_connections: if q { vec![64] } else { vec![64, 1024] },
            throughput_rounds: a.rounds.unwrap_or(if q { 1 } else { 3 }).clamp(1, 99),
        }
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s)
    }
}

/// One measured point: a server, a load, what came back.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    /// The model.
    pub model: String,
    /// Server workers (`None`: the server's default).
    pub workers: Option<usize>,
    /// Priority levels asked for by Hello (`None`: no Hello).
    pub levels: Option<u8>,
    /// CPUs the server kept busy during the load.
    pub server_cpus: f64,
    /// How the server ended when stopped (`exit 0` is clean).
    pub server_end: String,
    /// Why this point counts as failed (`None`: every request answered right,
    /// the server stopped cleanly).
    pub failed: Option<String>,
    /// What the load generator measured.
    pub load: LoadReport,
    /// The throughput of every round, in the order run, when this point is
    /// the median of several (the throughput experiment); empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rounds: Vec<f64>,
    /// Under QEMU only: the CPUs QEMU's main-loop thread kept busy during the
    /// load — the thread that runs the user network (slirp: every frame
    /// between the guest and the host's sockets) and the device models'
    /// deferred work. One host thread: at 1.0 it is the emulator's ceiling,
    /// whatever the guest does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emulator_loop_cpus: Option<f64>,
}

/// One model in the memory experiment.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryPoint {
    /// The model.
    pub model: String,
    /// The limit, MiB.
    pub limit_mib: u64,
    /// How the limit was enforced.
    pub enforced_by: String,
    /// The ramp's outcome.
    pub hold: HoldReport,
    /// The cgroup's peak usage, MiB.
    pub peak_mib: Option<f64>,
    /// How the server ended.
    pub server_end: String,
}

/// Everything a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Results {
    /// The machine line.
    pub machine: String,
    /// The command line.
    pub command: String,
    /// `/proc/loadavg`'s 1, 5 and 15 minute averages when the run began, and
    /// when it ended (the run's own server and client count in the latter).
    pub load_average: (String, String),
    /// The settings after defaults.
    pub settings: Settings,
    /// Models whose server did not start, with its reason.
    pub unavailable: BTreeMap<String, String>,
    /// Runs the driver could not complete (its own failures).
    pub incomplete: Vec<String>,
    /// Figure 5 points.
    pub fig5: Vec<Point>,
    /// Figure 6 points.
    pub fig6: Vec<Point>,
    /// Figure 7 points.
    pub fig7: Vec<Point>,
    /// Memory experiment.
    pub memory: Vec<MemoryPoint>,
    /// Saturation sweep.
    pub saturation: Vec<Point>,
    /// fig5's models back to back (the throughput experiment).
    pub throughput: Vec<Point>,
    /// The targets, judged from this run.
    pub targets: Vec<super::report::Target>,
}

impl Results {
    /// A run about to begin on `machine`: this process's command line, the
    /// load average now, no points yet.
    pub fn new(machine: String, settings: Settings) -> Results {
        Results {
            machine,
            command: std::env::args().collect::<Vec<_>>().join(" "),
            load_average: (load_average(), String::new()),
            settings,
            unavailable: BTreeMap::new(),
            incomplete: Vec::new(),
            fig5: Vec::new(),
            fig6: Vec::new(),
            fig7: Vec::new(),
            memory: Vec::new(),
            saturation: Vec::new(),
            throughput: Vec::new(),
            targets: Vec::new(),
        }
    }

    /// These results with the throughput experiment's points in fig5's place,
    /// for fig5's tables and targets to read them (back to back).
    pub(super) fn throughput_as_fig5(&self) -> Results {
        let mut r = self.clone();
        r.fig5.clone_from(&self.throughput);
        r
    }

    /// Every load point of every experiment.
    pub fn points(&self) -> impl Iterator<Item = &Point> {
        self.fig5
            .iter()
            .chain(&self.fig6)
            .chain(&self.fig7)
            .chain(&self.saturation)
            .chain(&self.throughput)
    }

    /// Wrong answers anywhere in the run.
    pub fn wrong_answers(&self) -> u64 {
        self.points()
            .map(|p| p.load.counts.wrong_answers)
            .sum::<u64>()
            + self
                .memory
                .iter()
                .map(|m| m.hold.wrong_answers)
                .sum::<u64>()
    }

    /// Answers verified anywhere in the run.
    pub fn verified(&self) -> u64 {
        self.points().map(|p| p.load.counts.verified).sum::<u64>()
            + self.memory.iter().map(|m| m.hold.verified).sum::<u64>()
    }
}

/// The state of a run in progress.
struct Ctx {
    s: Settings,
    logs: PathBuf,
    models: Vec<Model>,
    r: Results,
    bar: ProgressBar,
}

impl Ctx {
    fn available(&self) -> Vec<Model> {
        self.models
            .iter()
            .copied()
            .filter(|&m| !self.r.unavailable.contains_key(&model_name(m)))
            .collect()
    }

    fn bar(&mut self, name: &str, len: usize) {
        self.bar.finish_and_clear();
        self.bar = ProgressBar::new(len as u64);
        self.bar.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        self.bar.set_prefix(name.to_owned());
    }

    /// Starts a server for `spec`, runs `args` against it, stops it.
    fn point(&mut self, tag: &str, spec: &ServerSpec, mut args: LoadArgs) -> Option<Point> {
        let name = model_name(spec.model);
        if self.r.unavailable.contains_key(&name) {
            return None;
        }
        self.bar.set_message(format!("{name} {tag}"));
        let log = self.logs.join(format!("{name}-{tag}.log"));
        let mut server = match ServerProc::start(spec, &log, None) {
            Ok(s) => s,
            Err(e) => {
                self.r.unavailable.insert(name, format!("{e:#}"));
                return None;
            }
        };
        args.addr = server.addr;
        let mut mark = None;
        let load = load::run_with(&args, || mark = Some(server.mark()));
        let server_cpus = mark.map_or(0.0, |m| server.cpus_since(m));
        let alive = server.alive();
        let server_end = server.stop();
        let load = match load {
            Ok(l) => l,
            Err(e) => {
                self.r.incomplete.push(format!("{name} {tag}: {e:#}"));
                return None;
            }
        };
        let c = &load.counts;
        let failed = if !alive {
            Some(format!(
                "the server died during the run ({server_end}): {}",
                server.log_tail()
            ))
        } else if !c.clean() {
            Some(c.breakdown())
        } else if c.verified == 0 {
            Some("no answer at all".to_owned())
        } else if server_end != "exit 0" {
            Some(format!("the server did not stop cleanly: {server_end}"))
        } else {
            None
        };
        Some(Point {
            model: name,
            workers: spec.workers,
            levels: args.levels,
            server_cpus,
            server_end,
            failed,
            load,
            rounds: Vec::new(),
            emulator_loop_cpus: None,
        })
    }

    fn closed(&self, connections: usize, interval: Duration, levels: Option<u8>) -> LoadArgs {
        LoadArgs {
            connections,
            interval,
            levels,
            duration: self.s.duration(),
            ..LoadArgs::paper(([127, 0, 0, 1], 0).into(), connections)
        }
    }
}

/// Runs `experiments`, writes the report, and says whether the run passes: every
/// run completed, no answer was wrong, every required model started, and (with
/// `--quick`) no point had an error.
///
/// # Errors
/// The output directory cannot be written, or the driver itself fails.
pub fn run(args: &SuiteArgs, experiments: &[Experiment]) -> Result<bool> {
    let s = Settings::from(args);
    let out = match &args.out {
        Some(o) => o.clone(),
        None => default_out(),
    };
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let need = s
        .memory_cap
        .max(*s.fig5_connections.last().unwrap_or(&1) as u64)
        + 256;
    if let Err(e) = load::raise_nofile(need) {
        eprintln!("ssbench: {e:#}; large connection counts will fail to connect");
    }
    let machine = format!(
        "{}\n\n{}",
        crate::machine::Machine::detect(),
        crate::stalls::HostStalls::probe(crate::stalls::HostStalls::span(s.quick))
    );
    eprintln!("{machine}");
    eprintln!("ssbench: writing to {}", out.display());
    let models = if args.models.is_empty() {
        Model::value_variants().to_vec()
    } else {
        args.models.clone()
    };
    let mut ctx = Ctx {
        r: Results::new(machine, s.clone()),
        s,
        logs,
        models,
        bar: ProgressBar::hidden(),
    };
    for &e in experiments {
        match e {
            Experiment::Fig5 => fig5(&mut ctx),
            Experiment::Fig6 => priorities(&mut ctx, 8, &[1, 2], true),
            Experiment::Fig7 => priorities(&mut ctx, 4, &[1, 2], false),
            Experiment::Memory => memory(&mut ctx)?,
            Experiment::Saturation => saturation(&mut ctx),
            Experiment::Throughput => throughput(&mut ctx),
        }
    }
    ctx.bar.finish_and_clear();
    let mut r = ctx.r;
    r.load_average.1 = load_average();
    r.targets = super::report::judge(&r);
    super::report::write(&out, &r)?;
    let mut problems = Vec::new();
    if !r.incomplete.is_empty() {
        problems.push(format!("{} runs did not complete", r.incomplete.len()));
    }
    if r.wrong_answers() > 0 {
        problems.push(format!("{} wrong answers", r.wrong_answers()));
    }
    if r.verified() == 0 && r.unavailable.len() < ctx.models.len() {
        problems.push("no answer was verified".to_owned());
    }
    for m in &args.require {
        if let Some(why) = r.unavailable.get(&model_name(*m)) {
            problems.push(format!(
                "required model {} did not start: {why}",
                model_name(*m)
            ));
        }
    }
    if r.settings.quick {
        for p in r.points().filter(|p| p.failed.is_some()) {
            problems.push(format!(
                "{} ({} connections): {}",
                p.model,
                p.load.connections,
                p.failed.as_deref().unwrap_or_default()
            ));
        }
    }
    println!("{}", super::report::summary(&r));
    println!("report: {}", out.join("report.md").display());
    for p in &problems {
        eprintln!("ssbench: FAILED: {p}");
    }
    Ok(problems.is_empty())
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them.
pub(super) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

fn default_out() -> PathBuf {
    let date = crate::machine::Machine::detect().date;
    // "YYYY-MM-DD HH:MM UTC" → "YYYY-MM-DD_HH-MM".
    let stamp: String = date
        .trim_end_matches(" UTC")
        .replace(' ', "_")
        .replace(':', "-");
    Path::new("target")
        .join("ssbench")
        .join(format!("{stamp}-{}", std::process::id()))
}

/// Figure 5: every model at each connection count until it fails.
fn fig5(ctx: &mut Ctx) {
    let counts = ctx.s.fig5_connections.clone();
    let mut running = ctx.available();
    ctx.bar("fig5", counts.len() * running.len());
    for &c in &counts {
        let mut still = Vec::new();
        for &m in &running {
            let spec = ServerSpec {
                model: m,
                workers: Some(ctx.s.workers),
                levels: 8,
            };
            let args = ctx.closed(c, Duration::from_millis(100), None);
            let p = ctx.point(&format!("fig5-c{c}"), &spec, args);
            ctx.bar.inc(1);
            if let Some(p) = p {
                // Offered: C requests per 100 ms.
                let keeps_up = p.load.throughput >= 0.9 * c as f64 * 10.0;
                if p.failed.is_none() && keeps_up {
                    still.push(m);
                }
                ctx.r.fig5.push(p);
            }
        }
        running = still;
        if running.is_empty() {
            break;
        }
    }
}

/// The throughput experiment: fig5's models back to back (each connection
/// sends its next request as soon as the answer is in) at a few connection
/// counts: what each model sustains, where fig5's closed loop at 100 ms shows
/// the offered load for every model that keeps up.
///
/// Each point runs `throughput_rounds` times, the models in turn and their
/// order reversed every other round, so that a drift of the host (one round of
/// one model moves ±10 % here) falls on every model alike; the median round is
/// kept, with every round's throughput beside it.
fn throughput(ctx: &mut Ctx) {
    let counts = ctx.s.throughput_connections.clone();
    let models = ctx.available();
    let rounds = ctx.s.throughput_rounds.max(1);
    ctx.bar("throughput", counts.len() * models.len() * rounds);
    for &c in &counts {
        let mut got: Vec<Vec<Point>> = vec![Vec::new(); models.len()];
        for round in 0..rounds {
            for i in crate::harness::round_order(models.len(), round) {
                let spec = ServerSpec {
                    model: models[i],
                    workers: Some(ctx.s.workers),
                    levels: 8,
                };
                let args = ctx.closed(c, Duration::ZERO, None);
                let p = ctx.point(&format!("throughput-c{c}-r{}", round + 1), &spec, args);
                ctx.bar.inc(1);
                got[i].extend(p);
            }
        }
        ctx.r
            .throughput
            .extend(got.into_iter().filter_map(median_round));
    }
}

/// The point that stands for several rounds of one model at one count: the
/// first failed round if any failed (a failure is never hidden behind a
/// median), else the round of median throughput (the lower middle one of an
/// even number); every round's throughput goes with it.
pub(super) fn median_round(points: Vec<Point>) -> Option<Point> {
    let all: Vec<f64> = points.iter().map(|p| p.load.throughput).collect();
    let pick = match points.iter().position(|p| p.failed.is_some()) {
        Some(i) => i,
        None => {
            let mut by: Vec<usize> = (0..points.len()).collect();
            by.sort_by(|&a, &b| all[a].total_cmp(&all[b]));
            *by.get(points.len().saturating_sub(1) / 2)?
        }
    };
    let mut p = points.into_iter().nth(pick)?;
    if all.len() > 1 {
        p.rounds = all;
    }
    Some(p)
}

/// Figures 6 and 7: 64 connections spread over `levels` priorities.
fn priorities(ctx: &mut Ctx, levels: u8, workers: &[usize], six: bool) {
    let models = ctx.available();
    let name = if six { "fig6" } else { "fig7" };
    ctx.bar(name, models.len() * workers.len());
    let interval = Duration::from_secs_f64(ctx.s.prio_interval_ms / 1e3);
    for &w in workers {
        for &m in &models {
            let spec = ServerSpec {
                model: m,
                workers: Some(w),
                levels,
            };
            let args = ctx.closed(64, interval, Some(levels));
            let p = ctx.point(&format!("{name}-w{w}"), &spec, args);
            ctx.bar.inc(1);
            if let Some(p) = p {
                if six {
                    ctx.r.fig6.push(p);
                } else {
                    ctx.r.fig7.push(p);
                }
            }
        }
    }
}

/// Open-loop sweep per model, up the rates until the model falls behind.
fn saturation(ctx: &mut Ctx) {
    let models = ctx.available();
    let rates = ctx.s.rates.clone();
    ctx.bar("saturation", models.len() * rates.len());
    for &m in &models {
        for (k, &rate) in rates.iter().enumerate() {
            let spec = ServerSpec {
                model: m,
                workers: Some(ctx.s.workers),
                levels: 8,
            };
            let args = LoadArgs {
                mode: Mode::Open,
                rate,
                timeout: Duration::from_secs(2),
                ..ctx.closed(ctx.s.saturation_connections, Duration::ZERO, None)
            };
            let p = ctx.point(&format!("sat-r{rate}"), &spec, args);
            ctx.bar.inc(1);
            let Some(p) = p else { break };
            let behind = p.load.throughput < 0.9 * rate || p.failed.is_some();
            ctx.r.saturation.push(p);
            if behind {
                ctx.bar.inc((rates.len() - k - 1) as u64);
                break;
            }
        }
    }
}

/// The most connections each model holds within one memory limit.
fn memory(ctx: &mut Ctx) -> Result<()> {
    let models = ctx.available();
    ctx.bar("memory", models.len());
    let bytes = ctx.s.memory_mib << 20;
    for &m in &models {
        let name = model_name(m);
        ctx.bar.set_message(name.clone());
        let cage = MemCage::new(bytes, &name)?;
        let spec = ServerSpec {
            model: m,
            workers: Some(ctx.s.workers),
            levels: 8,
        };
        let log = ctx.logs.join(format!("{name}-memory.log"));
        let mut server = match ServerProc::start(&spec, &log, Some(&cage)) {
            Ok(s) => s,
            Err(e) => {
                // It started outside the cage, so the limit is what stopped it:
                // a result (it holds nothing), not an unavailable model.
                ctx.r.memory.push(MemoryPoint {
                    model: name,
                    limit_mib: ctx.s.memory_mib,
                    enforced_by: cage.how.clone(),
                    hold: HoldReport {
                        failed_at: Some(0),
                        reason: format!("did not start within the limit: {e:#}"),
                        ..HoldReport::default()
                    },
                    peak_mib: cage.peak_mib(),
                    server_end: "did not start".to_owned(),
                });
                ctx.bar.inc(1);
                continue;
            }
        };
        let addr = server.addr;
        let min_step = if ctx.s.quick { 128 } else { 64 };
        let hold = load::hold(
            addr,
            ctx.s.memory_cap,
            min_step,
            Duration::from_secs(3),
            Duration::ZERO,
            || server.alive(),
        );
        let server_end = server.stop();
        let peak_mib = cage.peak_mib();
        let enforced_by = cage.how.clone();
        drop(server);
        drop(cage);
        ctx.bar.inc(1);
        match hold {
            Ok(hold) => ctx.r.memory.push(MemoryPoint {
                model: name,
                limit_mib: ctx.s.memory_mib,
                enforced_by,
                hold,
                peak_mib,
                server_end,
            }),
            Err(e) => ctx.r.incomplete.push(format!("{name} memory: {e:#}")),
        }
    }
    Ok(())
}
