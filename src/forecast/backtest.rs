//! Entry point of `tideshift backtest` (being built).

use crate::cli::CliResult;

#[derive(Debug, clap::Args)]
pub struct BacktestArgs {}

pub fn run(_args: BacktestArgs) -> CliResult {
    Err("tideshift backtest is not built yet".into())
}
