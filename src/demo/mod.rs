//! `tideshift exporter`: serves a demand trace or a scripted scenario as Prometheus metrics, so
//! the test bed and demos can play a live flash sale while Prometheus already holds weeks of
//! history (written with `--backfill` for `promtool tsdb create-blocks-from openmetrics`).
//!
//! Metrics, one series per workload:
//! - `tideshift_demo_demand{workload}` (gauge): demand now, in requests per second;
//! - `tideshift_demo_requests_total{workload}` (counter): demand integrated over time.
//!
//! Live and backfilled values come from the same function of wall-clock time, so a
//! backfill up to now and a live exporter started with the same `--anchor` join without a seam.
//!
//! This is the demo and test-bed program, not part of the daemon: `scenario.rs` (scripted
//! demand), `workload.rs` (a workload's demand over wall-clock time: a scenario, or a trace
//! replayed), `openmetrics.rs` (the backfill), `serve.rs` (the live `/metrics`).

mod openmetrics;
mod scenario;
mod serve;
mod workload;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::trace::{self as csv_trace, TraceError};

pub use openmetrics::write_openmetrics;
pub use scenario::Scenario;
use serve::{Live, now_f64};
pub use workload::{Replay, Trace, Workload};

pub const DEMAND_METRIC: &str = "tideshift_demo_demand";
pub const REQUESTS_METRIC: &str = "tideshift_demo_requests_total";
/// The counter family's name in OpenMetrics, which writes `_total` only on samples.
const REQUESTS_FAMILY: &str = "tideshift_demo_requests";
/// Counters integrate demand in slices no longer than this, so a slow scrape interval does not
/// flatten a peak's ramp.
const INTEGRATION_SLICE_SECS: f64 = 5.0;

/// What the exporter plays and where: `tideshift exporter`'s flags as plain values
/// (`cli/exporter.rs` documents each).
#[derive(Clone, Debug)]
pub struct ExporterConfig {
    pub listen: SocketAddr,
    /// `NAME=FILE` per trace.
    pub traces: Vec<String>,
    /// `NAME:KEY=VALUE,...` per scenario.
    pub scenarios: Vec<String>,
    pub anchor: String,
    pub trace_at: Option<String>,
    pub speed: f64,
    pub scale: f64,
    /// Write history to this file instead of serving.
    pub backfill: Option<PathBuf>,
    pub from: String,
    pub to: String,
    pub step: Duration,
    /// `KEY=VALUE` per extra label.
    pub labels: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    #[error("scenario `{spec}`: {reason}")]
    Scenario { spec: String, reason: String },
    #[error("--trace `{0}`: expected NAME=FILE")]
    TraceArg(String),
    #[error("trace {path}, line {line}: {reason}")]
    TraceLine {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("trace {path}: {reason}")]
    Trace { path: String, reason: String },
    #[error("trace {0}")]
    TraceFile(TraceError),
    #[error("time `{0}`: expected now, now±DURATION, RFC 3339 or epoch seconds")]
    Time(String),
    #[error("--label `{0}`: expected KEY=VALUE with KEY a Prometheus label name")]
    Label(String),
    #[error("workload `{0}` is given twice")]
    DuplicateWorkload(String),
    #[error("{0}")]
    Range(String),
    #[error("cannot write backfill {path}: {source}")]
    BackfillIo {
        path: String,
        source: std::io::Error,
    },
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot serve on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl From<TraceError> for ExporterError {
    fn from(error: TraceError) -> Self {
        match error {
            TraceError::Line {
                origin,
                line,
                message,
            } => ExporterError::TraceLine {
                path: origin,
                line,
                reason: message,
            },
            other => ExporterError::TraceFile(other),
        }
    }
}

/// Parses `now`, `now-14d`, `now+10m`, RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC) or epoch seconds.
pub fn parse_time(text: &str, now: i64) -> Result<i64, ExporterError> {
    let s = text.trim();
    let bad = || ExporterError::Time(text.to_string());
    if let Some(rest) = s.strip_prefix("now") {
        let rest = rest.trim();
        if rest.is_empty() {
            return Ok(now);
        }
        let (sign, dur) = match rest.split_at(1) {
            ("+", d) => (1, d),
            ("-", d) => (-1, d),
            _ => return Err(bad()),
        };
        let d = humantime::parse_duration(dur.trim()).map_err(|_| bad())?;
        let secs = i64::try_from(d.as_secs()).map_err(|_| bad())?;
        return Ok(now + sign * secs);
    }
    crate::trace::parse_timestamp(s).map_err(|_| bad())
}

fn parse_seconds(text: &str) -> Option<f64> {
    humantime::parse_duration(text.trim())
        .ok()
        .map(|d| d.as_secs_f64())
}

/// Builds the workloads the flags describe, resolving relative times against `now`.
pub fn workloads_from_args(
    args: &ExporterConfig,
    now: i64,
) -> Result<Vec<Workload>, ExporterError> {
    let mut workloads = Vec::new();
    let anchor = parse_time(&args.anchor, now)?;
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err(ExporterError::Range(
            "--speed must be a positive number".into(),
        ));
    }
    for arg in &args.traces {
        let (name, path) = arg
            .split_once('=')
            .filter(|(n, p)| !n.is_empty() && !p.is_empty())
            .ok_or_else(|| ExporterError::TraceArg(arg.clone()))?;
        let trace = Trace::from_rows(name, csv_trace::load_file(Path::new(path))?)?;
        let trace_at = match &args.trace_at {
            Some(t) => parse_time(t, now)?,
            None => trace.first_timestamp(),
        };
        workloads.push(Workload::Trace(Replay {
            trace,
            anchor,
            trace_at,
            speed: args.speed,
            scale: args.scale,
        }));
    }
    for spec in &args.scenarios {
        workloads.push(Workload::Scenario(Scenario::parse(spec, now)?));
    }
    let mut names: Vec<&str> = workloads.iter().map(Workload::name).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(ExporterError::DuplicateWorkload(w[0].to_string()));
    }
    Ok(workloads)
}

fn parse_labels(labels: &[String]) -> Result<Vec<(String, String)>, ExporterError> {
    labels
        .iter()
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| ExporterError::Label(l.clone()))?;
            let valid = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && k != "workload";
            if !valid {
                return Err(ExporterError::Label(l.clone()));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

fn backfill(
    path: &Path,
    workloads: &[Workload],
    args: &ExporterConfig,
    now: i64,
) -> Result<(), ExporterError> {
    let from = parse_time(&args.from, now)?;
    let to = parse_time(&args.to, now)?;
    let step = i64::try_from(args.step.as_secs()).unwrap_or(0);
    if step <= 0 {
        return Err(ExporterError::Range("--step must be at least 1s".into()));
    }
    if to < from {
        return Err(ExporterError::Range("--to is before --from".into()));
    }
    // Whole steps keep backfilled samples on the same grid whenever the backfill is made.
    let from = from.div_euclid(step) * step + if from.rem_euclid(step) == 0 { 0 } else { step };
    let labels = parse_labels(&args.labels)?;
    let io = |source| ExporterError::BackfillIo {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut out = std::io::BufWriter::new(file);
    write_openmetrics(&mut out, workloads, &labels, from, to, step).map_err(io)?;
    out.flush().map_err(io)?;
    tracing::info!(path = %path.display(), from, to, step, "backfill written");
    Ok(())
}

/// Writes the backfill, or serves `/metrics` until SIGINT or SIGTERM.
pub fn run(args: &ExporterConfig) -> Result<(), ExporterError> {
    let now_f = now_f64();
    let now = now_f.floor() as i64;
    let workloads = workloads_from_args(args, now)?;
    if let Some(path) = &args.backfill {
        return backfill(path, &workloads, args, now);
    }
    let live = Arc::new(Live::new(workloads, now_f)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(ExporterError::Runtime)?;
    runtime.block_on(serve::serve(args.listen, live))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000; // 2025-11-24T16:00:00Z, a Monday

    #[test]
    fn time_specs() {
        assert_eq!(parse_time("now", NOW).unwrap(), NOW);
        assert_eq!(parse_time("now-14d", NOW).unwrap(), NOW - 14 * 86_400);
        assert_eq!(parse_time("now+10m", NOW).unwrap(), NOW + 600);
        assert_eq!(parse_time("2025-11-24T16:00:00Z", 0).unwrap(), NOW);
        assert_eq!(parse_time("2025-11-24 16:00:00", 0).unwrap(), NOW);
        assert_eq!(parse_time("1764000000", 0).unwrap(), NOW);
        assert!(parse_time("tomorrow", NOW).is_err());
        assert!(parse_time("now*2", NOW).is_err());
    }

    #[test]
    fn labels_are_validated() {
        assert!(parse_labels(&["job=demand".into()]).is_ok());
        for bad in ["job", "1x=a", "workload=a", "a-b=c"] {
            assert!(parse_labels(&[bad.to_string()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn duplicate_workloads_are_refused() {
        let args = ExporterConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            traces: vec![],
            scenarios: vec!["web:baseline=1".into(), "web:baseline=2".into()],
            anchor: "now".into(),
            trace_at: None,
            speed: 1.0,
            scale: 1.0,
            backfill: None,
            from: "now-1h".into(),
            to: "now".into(),
            step: Duration::from_secs(60),
            labels: vec![],
        };
        let err = workloads_from_args(&args, NOW).unwrap_err();
        assert!(matches!(err, ExporterError::DuplicateWorkload(ref n) if n == "web"));
    }
}
