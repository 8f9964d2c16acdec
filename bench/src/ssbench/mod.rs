//! `ssbench`: the paper's evaluation (§4) on Linux — servers in the four models
//! and the peers, the load generator, the experiments and the report.
//!
//! | module | what |
//! |---|---|
//! | [`server`] | `ssbench server --model M`: the matrix service in every model |
//! | [`load`] | `ssbench load`: closed- and open-loop load with verified answers |
//! | [`spawn`] | servers as child processes; a fixed memory limit for one |
//! | [`suite`] | the experiments `fig5`, `throughput`, `fig6`, `fig7`, `memory`, `saturation`, `all` |
//! | [`report`] | the markdown report, the JSON of every data point, the targets |
//! | [`plot`] | the SVG figures |
//! | [`qemu`] | `ssbench qemu`: the experiments on the RISC-V kernel, booted in QEMU |
//!
//! How to run it and read its report: `docs/evaluation.md`.

pub mod load;
pub mod plot;
pub mod qemu;
pub mod report;
pub mod server;
pub mod spawn;
pub mod suite;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The command line of `ssbench`.
#[derive(Parser, Debug)]
#[command(
    name = "ssbench",
    about = "SharedScheduler's evaluation: servers, load generator, experiments",
    long_about = "SharedScheduler's evaluation (the paper's §4) on Linux. Without a subcommand \
                  it runs the default suite, the same as `ssbench all`."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the matrix protocol in one model.
    Server(server::ServerArgs),
    /// Generate load against a running server.
    Load(load::LoadArgs),
    /// Figure 5: throughput and latency of every model at 1, 2, 4 … connections.
    Fig5(suite::SuiteArgs),
    /// Figure 6: 64 connections in 8 priority levels, 1 and 2 workers.
    Fig6(suite::SuiteArgs),
    /// Figure 7: latency distribution of 4 priority levels.
    Fig7(suite::SuiteArgs),
    /// The most connections each model holds within one memory limit.
    Memory(suite::SuiteArgs),
    /// Open-loop rate sweep: throughput against latency, with the ceiling.
    Saturation(suite::SuiteArgs),
    /// fig5's models back to back at 64 and 1024 connections: what each sustains.
    Throughput(suite::SuiteArgs),
    /// Every experiment, one report (the default).
    All(suite::SuiteArgs),
    /// The experiments on the RISC-V kernel's servers, each booted in QEMU (emulated figures).
    Qemu(qemu::QemuArgs),
}

/// Runs `ssbench` with parsed arguments; the exit code says whether every run
/// completed and every answer was verified (experiments) or the command
/// succeeded (server, load).
pub fn main(cli: Cli) -> ExitCode {
    use suite::Experiment as E;
    let result = match cli.command {
        Some(Command::Server(a)) => server::run(&a).map(|()| true),
        Some(Command::Load(a)) => load::main(&a).map(|()| true),
        Some(Command::Fig5(a)) => suite::run(&a, &[E::Fig5]),
        Some(Command::Fig6(a)) => suite::run(&a, &[E::Fig6]),
        Some(Command::Fig7(a)) => suite::run(&a, &[E::Fig7]),
        Some(Command::Memory(a)) => suite::run(&a, &[E::Memory]),
        Some(Command::Saturation(a)) => suite::run(&a, &[E::Saturation]),
        Some(Command::Throughput(a)) => suite::run(&a, &[E::Throughput]),
        Some(Command::All(a)) => suite::run(&a, &E::ALL),
        Some(Command::Qemu(a)) => qemu::run(&a),
        None => suite::run(&suite::SuiteArgs::default(), &E::ALL),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("ssbench: {e:#}");
            ExitCode::from(2)
        }
    }
}
