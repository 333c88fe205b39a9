//! `tideshift check` and `tideshift crd`.

use std::path::PathBuf;
use std::process::ExitCode;

use kube::CustomResourceExt;

use crate::cli::CliResult;

use super::ShiftPolicy;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Policy files to validate.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub fn run(args: CheckArgs) -> CliResult {
    let mut failed = false;
    for file in &args.files {
        if let Err(e) = super::load_file(file) {
            println!("{e}");
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub fn print_crd() -> CliResult {
    print!("{}", serde_yaml::to_string(&ShiftPolicy::crd())?);
    Ok(ExitCode::SUCCESS)
}
