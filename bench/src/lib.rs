//! # SharedScheduler benchmarks
//!
//! Helpers shared by the benchmark programs in `src/bin/` (see `bench/README.md`
//! for how to run them and read their output).
//!
//! Principles (house style, habit 8):
//!
//! 1. **Fixed workloads.** Every measurement does a fixed amount of work chosen
//!    before the clock starts; nothing adapts its length to the machine, so two
//!    runs do the same thing and can be compared line by line.
//! 2. **Say where it ran.** The first line of every report is the machine
//!    ([`machine`]): CPU, cores, memory, kernel, compiler, date.
//! 3. **A named baseline in the same run.** Absolute nanoseconds travel badly
//!    between machines; the ratio to a well-known executor (tokio,
//!    async-executor) measured minutes apart on the same machine does not.
//! 4. **Targets are judged from this run's numbers**, never hard-coded.
//! 5. **No timed assertions in tests.** Timing belongs here, not in `cargo test`.
//!
//! | module | what |
//! |---|---|
//! | [`machine`] | the machine description printed first |
//! | [`stalls`] | how much time the machine took from busy threads, printed beside it |
//! | [`harness`] | warm-up, repetitions, median and min per operation |
//! | [`futs`] | the small futures every executor under test runs, identically |
//! | [`latency`] | latency distributions (HDR histogram) and their percentiles |
//! | [`report`] | fixed-width tables |

pub mod futs;
pub mod harness;
pub mod latency;
pub mod machine;
pub mod report;
pub mod ssbench;
pub mod stalls;
