//! `tideshift check` and `tideshift crd`.
//!
//! `check` prints one line per file on standard output: `FILE: ok` for a good one, and for a
//! bad one the file, the line where known, the field path and what is wrong, e.g.
//! `policies/x.yaml:12: spec.online[0].replicas.max: invalid value: integer -3, expected u32`.
//! Exit status: 0 when every file is good, 1 when any is bad.

use std::path::PathBuf;
use std::process::ExitCode;

use super::CliResult;
use crate::policy;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Policy files to validate (`-` reads standard input).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print only the bad files.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(args: CheckArgs) -> CliResult {
    let mut failed = 0usize;
    for file in &args.files {
        match policy::load_file(file) {
            Ok(_) => {
                if !args.quiet {
                    println!("{}: ok", file.display());
                }
            }
            Err(e) => {
                // One line per file, whatever the error text holds.
                println!("{}", e.to_string().replace(['\n', '\r'], " "));
                failed += 1;
            }
        }
    }
    if failed > 0 {
        tracing::debug!(failed, total = args.files.len(), "policy check failed");
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub fn print_crd() -> CliResult {
    print!("{}", policy::crd_yaml()?);
    Ok(ExitCode::SUCCESS)
}
