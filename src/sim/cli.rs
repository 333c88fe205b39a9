//! Entry point of `tideshift simulate` (being built).

use crate::cli::CliResult;

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {}

pub fn run(_args: SimulateArgs) -> CliResult {
    Err("tideshift simulate is not built yet".into())
}
