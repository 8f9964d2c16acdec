//! `ssbench`: the paper's evaluation on Linux (see `bench/README.md` and
//! `docs/evaluation.md`).

use clap::Parser;
use ss_bench::ssbench::Cli;

fn main() -> std::process::ExitCode {
    ss_bench::ssbench::main(Cli::parse())
}
