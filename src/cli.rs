//! The command line: one binary, one subcommand per job. Each subcommand's flags and entry
//! point live next to the code they drive.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Run(Box<crate::controller::cli::RunArgs>),
    /// Rehearse a policy on past or synthetic traffic, against static, reactive and oracle baselines.
    Simulate(crate::sim::cli::SimulateArgs),
    /// Measure forecast accuracy on M4 Hourly or on a CSV trace.
    Backtest(crate::forecast::backtest::BacktestArgs),
    /// Validate ShiftPolicy files.
    Check(crate::policy::check::CheckArgs),
    /// Print the ShiftPolicy CustomResourceDefinition generated from the Rust types.
    Crd,
    /// Serve a demand trace or scenario as Prometheus metrics (test bed and demos).
    Exporter(Box<crate::demo::ExporterArgs>),
}

pub fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Run(args) => crate::controller::cli::run(*args),
        Command::Simulate(args) => crate::sim::cli::run(args),
        Command::Backtest(args) => crate::forecast::backtest::run(args),
        Command::Check(args) => crate::policy::check::run(args),
        Command::Crd => crate::policy::check::print_crd(),
        Command::Exporter(args) => crate::demo::run(*args),
    }
}
