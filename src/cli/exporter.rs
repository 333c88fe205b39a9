//! `tideshift exporter`: the flags of the demo and test-bed demand exporter (`src/demo/`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::CliResult;
use crate::demo::{self, ExporterConfig};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).multiple(true).args(["traces", "scenarios"])))]
pub struct ExporterArgs {
    /// Address to serve `/metrics` on.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,
    /// A CSV trace `timestamp,value` (ISO-8601 or epoch seconds) for one workload; repeatable.
    #[arg(long = "trace", value_name = "NAME=FILE")]
    pub traces: Vec<String>,
    /// A scripted workload, e.g.
    /// `checkout:baseline=100,daily=0.3,peak_at=now+20m,peak=4,ramp=10m,hold=30m`; repeatable.
    #[arg(long = "scenario", value_name = "NAME:KEY=VALUE,...")]
    pub scenarios: Vec<String>,
    /// Wall-clock time at which the trace point `--trace-at` plays (`now`, `now-1h`, RFC 3339,
    /// epoch seconds).
    #[arg(long, default_value = "now")]
    pub anchor: String,
    /// Trace timestamp that plays at `--anchor`; defaults to the trace's first point.
    #[arg(long)]
    pub trace_at: Option<String>,
    /// Trace seconds played per wall-clock second.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Multiplies every trace value (e.g. to turn rides per 30 minutes into requests per second).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Write history as OpenMetrics to this file instead of serving.
    #[arg(long, value_name = "OUT.om")]
    pub backfill: Option<PathBuf>,
    /// Start of the backfill (`now-14d`, RFC 3339, epoch seconds).
    #[arg(long, default_value = "now-14d")]
    pub from: String,
    /// End of the backfill.
    #[arg(long, default_value = "now")]
    pub to: String,
    /// Spacing of backfilled samples.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub step: Duration,
    /// Extra label on every backfilled sample, e.g. `job=demand` and `instance=127.0.0.1:9464`
    /// so that backfilled series are the very ones Prometheus scrapes; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
}

impl ExporterArgs {
    fn config(self) -> ExporterConfig {
        ExporterConfig {
            listen: self.listen,
            traces: self.traces,
            scenarios: self.scenarios,
            anchor: self.anchor,
            trace_at: self.trace_at,
            speed: self.speed,
            scale: self.scale,
            backfill: self.backfill,
            from: self.from,
            to: self.to,
            step: self.step,
            labels: self.labels,
        }
    }
}

pub fn run(args: ExporterArgs) -> CliResult {
    demo::run(&args.config())?;
    Ok(ExitCode::SUCCESS)
}
