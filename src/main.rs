use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tideshift::cli::Cli::parse();
    tideshift::telemetry::init_logging();
    match tideshift::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            let mut message = format!("error: {err}");
            let mut source = err.source();
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}
