//! Entry point of `tideshift exporter` (being built).

use crate::cli::CliResult;

#[derive(Debug, clap::Args)]
pub struct ExporterArgs {}

pub fn run(_args: ExporterArgs) -> CliResult {
    Err("tideshift exporter is not built yet".into())
}
