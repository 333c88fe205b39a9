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
                // Many errors already print their source in their own message.
                let text = cause.to_string();
                if !message.contains(&text) {
                    message.push_str(&format!(": {text}"));
                }
                source = cause.source();
            }
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}
