//! Entry point of `tideshift run` (being built).

use crate::cli::CliResult;

#[derive(Debug, clap::Args)]
pub struct RunArgs {}

pub fn run(_args: RunArgs) -> CliResult {
    Err("tideshift run is not built yet".into())
}
