//! The command line, the front door: one binary, one subcommand per job. Each subcommand's
//! flags and wiring live here, one file each; the domain modules take plain values and config
//! structs and return their own errors, and none of them imports this module.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod backtest;
mod check;
mod exporter;
mod prometheus;
mod run;
mod simulate;

pub use backtest::BacktestArgs;
pub use check::CheckArgs;
pub use exporter::ExporterArgs;
pub use prometheus::PrometheusClientArgs;
pub use run::RunArgs;
pub use simulate::SimulateArgs;

pub type CliResult = Result<ExitCode, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, Parser)]
#[command(
    name = "tideshift",
    version,
    about = "Shift capacity from batch to online services before the peak, and back after it"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: watch ShiftPolicy objects and shift replicas every interval.
    Run(Box<RunArgs>),
    /// Rehearse a policy on past or synthetic traffic, against static, reactive and oracle baselines.
    Simulate(SimulateArgs),
    /// Measure forecast accuracy on M4 Hourly or on a CSV trace.
    Backtest(BacktestArgs),
    /// Validate ShiftPolicy files.
    Check(CheckArgs),
    /// Print the ShiftPolicy CustomResourceDefinition generated from the Rust types.
    Crd,
    /// Serve a demand trace or scenario as Prometheus metrics (test bed and demos).
    Exporter(Box<ExporterArgs>),
}

pub fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Simulate(args) => simulate::run(args),
        Command::Backtest(args) => backtest::run(args),
        Command::Check(args) => check::run(args),
        Command::Crd => check::print_crd(),
        Command::Exporter(args) => exporter::run(*args),
    }
}
