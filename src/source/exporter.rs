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

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{CounterVec, Encoder, GaugeVec, Opts, Registry, TextEncoder};

use crate::cli::CliResult;
use crate::trace::{self as csv_trace, TraceError};

pub const DEMAND_METRIC: &str = "tideshift_demo_demand";
pub const REQUESTS_METRIC: &str = "tideshift_demo_requests_total";
/// The counter family's name in OpenMetrics, which writes `_total` only on samples.
const REQUESTS_FAMILY: &str = "tideshift_demo_requests";
/// Counters integrate demand in slices no longer than this, so a slow scrape interval does not
/// flatten a peak's ramp.
const INTEGRATION_SLICE_SECS: f64 = 5.0;

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

/// A scripted workload: a baseline with a daily wave, a weekend factor and one flash peak.
///
/// demand(t) = baseline · (1 + daily·cos(2π(t − daily_peak)/1 day)) · weekend(t)
///             · (1 + (peak − 1)·shape(t)) · (1 + noise·u(t))
/// where shape ramps linearly from 0 at `peak_at − ramp` to 1 at `peak_at`, holds 1 for `hold`,
/// and ramps back to 0 over `ramp`; u(t) is a fixed pseudo-random value in [−1, 1] per minute.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub workload: String,
    pub baseline: f64,
    pub daily: f64,
    /// Seconds after midnight UTC at which the daily wave tops.
    pub daily_peak: f64,
    pub weekend: f64,
    pub peak_at: Option<i64>,
    pub peak: f64,
    pub ramp: f64,
    pub hold: f64,
    pub noise: f64,
}

impl Scenario {
    /// Parses `NAME:key=value,...`; `now` resolves relative times such as `peak_at=now+20m`.
    pub fn parse(spec: &str, now: i64) -> Result<Self, ExporterError> {
        let err = |reason: String| ExporterError::Scenario {
            spec: spec.to_string(),
            reason,
        };
        let (name, body) = spec
            .split_once(':')
            .ok_or_else(|| err("expected NAME:key=value,...".into()))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(err("workload name is empty".into()));
        }
        let mut scenario = Scenario {
            workload: name.to_string(),
            baseline: f64::NAN,
            daily: 0.0,
            daily_peak: 14.0 * 3600.0,
            weekend: 1.0,
            peak_at: None,
            peak: f64::NAN,
            ramp: 15.0 * 60.0,
            hold: 30.0 * 60.0,
            noise: 0.0,
        };
        for pair in body.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| err(format!("`{pair}` is not key=value")))?;
            let (key, value) = (key.trim(), value.trim());
            let number = || {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| err(format!("{key}: `{value}` is not a number")))
            };
            let duration = || {
                parse_seconds(value)
                    .ok_or_else(|| err(format!("{key}: `{value}` is not a duration like 15m")))
            };
            match key {
                "baseline" => scenario.baseline = number()?,
                "daily" => scenario.daily = number()?,
                "daily_peak" => {
                    let (h, m) = value
                        .split_once(':')
                        .and_then(|(h, m)| Some((h.parse::<u32>().ok()?, m.parse::<u32>().ok()?)))
                        .filter(|&(h, m)| h < 24 && m < 60)
                        .ok_or_else(|| err(format!("daily_peak: `{value}` is not HH:MM")))?;
                    scenario.daily_peak = f64::from(h * 3600 + m * 60);
                }
                "weekend" => scenario.weekend = number()?,
                "peak_at" => {
                    scenario.peak_at = Some(parse_time(value, now).map_err(|e| err(e.to_string()))?)
                }
                "peak" => scenario.peak = number()?,
                "ramp" => scenario.ramp = duration()?,
                "hold" => scenario.hold = duration()?,
                "noise" => scenario.noise = number()?,
                other => {
                    return Err(err(format!(
                        "unknown key `{other}` (known: baseline, daily, daily_peak, weekend, peak_at, peak, ramp, hold, noise)"
                    )));
                }
            }
        }
        if scenario.baseline.is_nan() {
            return Err(err("baseline is required".into()));
        }
        if scenario.baseline < 0.0 {
            return Err(err("baseline must not be negative".into()));
        }
        if !(0.0..1.0).contains(&scenario.daily) {
            return Err(err("daily must be in [0, 1)".into()));
        }
        if scenario.weekend < 0.0 || !(0.0..1.0).contains(&scenario.noise) {
            return Err(err("weekend must be >= 0 and noise in [0, 1)".into()));
        }
        if scenario.peak.is_nan() {
            scenario.peak = if scenario.peak_at.is_some() { 3.0 } else { 1.0 };
        }
        if scenario.peak <= 0.0 {
            return Err(err("peak must be a positive multiplier".into()));
        }
        if scenario.peak != 1.0 && scenario.peak_at.is_none() {
            return Err(err("peak needs peak_at".into()));
        }
        Ok(scenario)
    }

    /// Where in the peak `t` lies: 0 outside it, 1 on its plateau.
    fn peak_shape(&self, t: f64) -> f64 {
        let Some(at) = self.peak_at else { return 0.0 };
        let at = at as f64;
        let end = at + self.hold;
        if t >= at && t <= end {
            1.0
        } else if t < at && t > at - self.ramp {
            1.0 - (at - t) / self.ramp
        } else if t > end && t < end + self.ramp {
            1.0 - (t - end) / self.ramp
        } else {
            0.0
        }
    }

    pub fn demand_at(&self, t: f64) -> f64 {
        let seconds_of_day = t.rem_euclid(86_400.0);
        let wave = 1.0
            + self.daily
                * (std::f64::consts::TAU * (seconds_of_day - self.daily_peak) / 86_400.0).cos();
        // 1970-01-01 was a Thursday: day 2 and 3 of each week (from Thursday) are Sat/Sun.
        let weekday_from_thursday = (t / 86_400.0).floor().rem_euclid(7.0) as i64;
        let weekend = if matches!(weekday_from_thursday, 2 | 3) {
            self.weekend
        } else {
            1.0
        };
        let peak = 1.0 + (self.peak - 1.0) * self.peak_shape(t);
        let noise = 1.0 + self.noise * unit_noise(&self.workload, (t / 60.0).floor() as i64);
        (self.baseline * wave * weekend * peak * noise).max(0.0)
    }
}

/// A fixed pseudo-random value in [-1, 1] for (workload, minute): live and backfill agree.
fn unit_noise(workload: &str, minute: i64) -> f64 {
    // FNV-1a then a splitmix64 finaliser: stable across Rust versions, unlike DefaultHasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in workload.bytes().chain(minute.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// A recorded trace, replayed by linear interpolation and looped over its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    pub workload: String,
    pub points: Vec<(i64, f64)>,
    /// Length of one loop: the points' span plus one mean step, so the loop is evenly spaced.
    pub period: f64,
}

impl Trace {
    /// A trace from CSV text (`crate::trace`'s rules); `path` names it in errors.
    pub fn parse(workload: &str, path: &str, text: &str) -> Result<Self, ExporterError> {
        Self::from_rows(workload, csv_trace::parse_str(text, path)?)
    }

    /// The rows of a trace as read: gaps are left out (interpolation bridges them), and rows
    /// with the same timestamp are averaged.
    pub fn from_rows(workload: &str, rows: csv_trace::Trace) -> Result<Self, ExporterError> {
        let path = rows.origin;
        let mut points: Vec<(i64, f64)> = Vec::with_capacity(rows.points.len());
        let mut same_time = 1.0;
        for (t, value) in rows.points.into_iter().filter(|(_, v)| !v.is_nan()) {
            match points.last_mut() {
                Some((last_t, mean)) if *last_t == t => {
                    same_time += 1.0;
                    *mean += (value - *mean) / same_time;
                }
                _ => {
                    same_time = 1.0;
                    points.push((t, value));
                }
            }
        }
        if points.len() < 2 {
            return Err(ExporterError::Trace {
                path,
                reason: "needs at least two points".into(),
            });
        }
        let span = (points[points.len() - 1].0 - points[0].0) as f64;
        let period = span + span / (points.len() - 1) as f64;
        Ok(Trace {
            workload: workload.to_string(),
            points,
            period,
        })
    }

    pub fn first_timestamp(&self) -> i64 {
        self.points[0].0
    }

    pub fn value_at(&self, trace_t: f64) -> f64 {
        let first = self.points[0].0 as f64;
        let t = first + (trace_t - first).rem_euclid(self.period);
        let idx = self.points.partition_point(|p| (p.0 as f64) <= t);
        let (t0, v0) = self.points[idx - 1];
        let (t1, v1) = match self.points.get(idx) {
            Some(&p) => (p.0 as f64, p.1),
            // Between the last point and the loop's restart.
            None => (first + self.period, self.points[0].1),
        };
        let t0 = t0 as f64;
        if t1 <= t0 {
            return v0;
        }
        v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    }
}

/// How wall-clock time maps onto a trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    pub trace: Trace,
    pub anchor: i64,
    pub trace_at: i64,
    pub speed: f64,
    pub scale: f64,
}

/// One workload's demand as a function of wall-clock time.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    Trace(Replay),
    Scenario(Scenario),
}

impl Workload {
    pub fn name(&self) -> &str {
        match self {
            Workload::Trace(r) => &r.trace.workload,
            Workload::Scenario(s) => &s.workload,
        }
    }

    pub fn demand_at(&self, t: f64) -> f64 {
        match self {
            Workload::Trace(r) => {
                let trace_t = r.trace_at as f64 + (t - r.anchor as f64) * r.speed;
                (r.trace.value_at(trace_t) * r.scale).max(0.0)
            }
            Workload::Scenario(s) => s.demand_at(t),
        }
    }

    /// Requests served in [from, to]: trapezoids over slices of at most INTEGRATION_SLICE_SECS.
    pub fn requests_between(&self, from: f64, to: f64) -> f64 {
        if to <= from {
            return 0.0;
        }
        let slices = ((to - from) / INTEGRATION_SLICE_SECS).ceil().max(1.0) as usize;
        let dt = (to - from) / slices as f64;
        (0..slices)
            .map(|i| {
                let a = from + dt * i as f64;
                (self.demand_at(a) + self.demand_at(a + dt)) * 0.5 * dt
            })
            .sum()
    }
}

/// Builds the workloads the flags describe, resolving relative times against `now`.
pub fn workloads_from_args(args: &ExporterArgs, now: i64) -> Result<Vec<Workload>, ExporterError> {
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

fn escape_label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes `[from, to]` every `step` seconds as OpenMetrics text, ending with `# EOF`.
/// Counters start at 0 at `from`.
pub fn write_openmetrics(
    out: &mut impl Write,
    workloads: &[Workload],
    labels: &[(String, String)],
    from: i64,
    to: i64,
    step: i64,
) -> std::io::Result<()> {
    let label_text = |w: &Workload| {
        let mut all: Vec<(String, String)> = labels.to_vec();
        all.push(("workload".to_string(), w.name().to_string()));
        all.sort();
        all.iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
            .collect::<Vec<_>>()
            .join(",")
    };
    writeln!(
        out,
        "# HELP {DEMAND_METRIC} Demand now, requests per second."
    )?;
    writeln!(out, "# TYPE {DEMAND_METRIC} gauge")?;
    for w in workloads {
        let l = label_text(w);
        let mut t = from;
        while t <= to {
            writeln!(out, "{DEMAND_METRIC}{{{l}}} {} {t}", w.demand_at(t as f64))?;
            t += step;
        }
    }
    writeln!(out, "# HELP {REQUESTS_FAMILY} Requests served.")?;
    writeln!(out, "# TYPE {REQUESTS_FAMILY} counter")?;
    for w in workloads {
        let l = label_text(w);
        let mut total = 0.0;
        let mut t = from;
        while t <= to {
            if t > from {
                total += w.requests_between((t - step) as f64, t as f64);
            }
            writeln!(out, "{REQUESTS_METRIC}{{{l}}} {total} {t}")?;
            t += step;
        }
    }
    writeln!(out, "# EOF")
}

fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

struct Live {
    workloads: Vec<Workload>,
    registry: Registry,
    demand: GaugeVec,
    requests: CounterVec,
    /// When the counters were last brought up to date.
    counted_until: Mutex<f64>,
}

impl Live {
    fn new(workloads: Vec<Workload>, start: f64) -> Result<Self, ExporterError> {
        let registry = Registry::new();
        let demand = GaugeVec::new(
            Opts::new(DEMAND_METRIC, "Demand now, requests per second."),
            &["workload"],
        )?;
        let requests = CounterVec::new(
            Opts::new(REQUESTS_METRIC, "Requests served."),
            &["workload"],
        )?;
        registry.register(Box::new(demand.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        for w in &workloads {
            requests.with_label_values(&[w.name()]);
        }
        let live = Live {
            workloads,
            registry,
            demand,
            requests,
            counted_until: Mutex::new(start),
        };
        live.update(start);
        Ok(live)
    }

    fn update(&self, now: f64) {
        let mut until = self
            .counted_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for w in &self.workloads {
            self.demand
                .with_label_values(&[w.name()])
                .set(w.demand_at(now));
            if now > *until {
                self.requests
                    .with_label_values(&[w.name()])
                    .inc_by(w.requests_between(*until, now));
            }
        }
        if now > *until {
            *until = now;
        }
    }

    fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

async fn metrics(State(live): State<Arc<Live>>) -> impl IntoResponse {
    live.update(now_f64());
    match live.render() {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            body,
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain")],
                e.to_string(),
            )
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn serve(addr: SocketAddr, live: Arc<Live>) -> Result<(), ExporterError> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(live);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ExporterError::Serve { addr, source })?;
    tracing::info!(%addr, "demand exporter serving /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|source| ExporterError::Serve { addr, source })
}

fn backfill(
    path: &Path,
    workloads: &[Workload],
    args: &ExporterArgs,
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

pub fn run(args: ExporterArgs) -> CliResult {
    let now_f = now_f64();
    let now = now_f.floor() as i64;
    let workloads = workloads_from_args(&args, now)?;
    if let Some(path) = &args.backfill {
        backfill(path, &workloads, &args, now)?;
        return Ok(ExitCode::SUCCESS);
    }
    let live = Arc::new(Live::new(workloads, now_f)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(serve(args.listen, live))?;
    Ok(ExitCode::SUCCESS)
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
    fn scenario_parses_every_key() {
        let s = Scenario::parse(
            "checkout:baseline=100,daily=0.3,daily_peak=13:30,weekend=0.8,peak_at=now+20m,peak=4,ramp=10m,hold=1h,noise=0.05",
            NOW,
        )
        .unwrap();
        assert_eq!(s.workload, "checkout");
        assert_eq!(s.baseline, 100.0);
        assert_eq!(s.daily, 0.3);
        assert_eq!(s.daily_peak, 13.5 * 3600.0);
        assert_eq!(s.weekend, 0.8);
        assert_eq!(s.peak_at, Some(NOW + 1200));
        assert_eq!(s.peak, 4.0);
        assert_eq!(s.ramp, 600.0);
        assert_eq!(s.hold, 3600.0);
        assert_eq!(s.noise, 0.05);
    }

    #[test]
    fn scenario_defaults_peak_when_peak_at_is_given() {
        let s = Scenario::parse("web:baseline=10,peak_at=2025-11-24T18:00:00Z", NOW).unwrap();
        assert_eq!(s.peak, 3.0);
        let flat = Scenario::parse("web:baseline=10", NOW).unwrap();
        assert_eq!(flat.peak, 1.0);
        assert_eq!(flat.peak_at, None);
    }

    #[test]
    fn scenario_errors_name_the_problem() {
        let cases = [
            ("web", "NAME:key=value"),
            (":baseline=1", "workload name is empty"),
            ("web:daily=0.2", "baseline is required"),
            ("web:baseline=-1", "must not be negative"),
            ("web:baseline=1,speed=2", "unknown key `speed`"),
            ("web:baseline=1,ramp=soon", "ramp"),
            ("web:baseline=abc", "baseline: `abc` is not a number"),
            ("web:baseline=1,daily=1.5", "daily must be in [0, 1)"),
            ("web:baseline=1,peak=3", "peak needs peak_at"),
            ("web:baseline=1,daily_peak=25:00", "daily_peak"),
            ("web:baseline=1,peak_at=later", "peak_at"),
            ("web:baseline", "not key=value"),
        ];
        for (spec, expected) in cases {
            let err = Scenario::parse(spec, NOW).unwrap_err().to_string();
            assert!(err.contains(expected), "{spec}: `{err}` lacks `{expected}`");
        }
    }

    #[test]
    fn scenario_peak_shape_ramps_holds_and_returns() {
        let s = Scenario::parse(
            "web:baseline=100,peak_at=1764003600,peak=5,ramp=10m,hold=30m",
            NOW,
        )
        .unwrap();
        let at = 1_764_003_600.0;
        assert_eq!(s.demand_at(at - 3600.0), 100.0);
        assert!(
            (s.demand_at(at - 300.0) - 300.0).abs() < 1e-9,
            "half way up the ramp"
        );
        assert_eq!(s.demand_at(at), 500.0);
        assert_eq!(s.demand_at(at + 1800.0), 500.0);
        assert!((s.demand_at(at + 1800.0 + 300.0) - 300.0).abs() < 1e-9);
        assert_eq!(s.demand_at(at + 1800.0 + 600.0), 100.0);
    }

    #[test]
    fn scenario_daily_wave_and_weekend() {
        let s = Scenario::parse(
            "web:baseline=100,daily=0.5,daily_peak=14:00,weekend=0.5",
            NOW,
        )
        .unwrap();
        let monday_midnight = 1_763_942_400.0; // 2025-11-24T00:00:00Z
        assert!((s.demand_at(monday_midnight + 14.0 * 3600.0) - 150.0).abs() < 1e-9);
        assert!((s.demand_at(monday_midnight + 2.0 * 3600.0) - 50.0).abs() < 1e-9);
        let saturday = monday_midnight + 5.0 * 86_400.0;
        assert!((s.demand_at(saturday + 14.0 * 3600.0) - 75.0).abs() < 1e-9);
    }

    #[test]
    fn scenario_noise_is_bounded_and_repeatable() {
        let s = Scenario::parse("web:baseline=100,noise=0.1", NOW).unwrap();
        let values: Vec<f64> = (0..500)
            .map(|i| s.demand_at((NOW + i * 60) as f64))
            .collect();
        assert!(values.iter().all(|v| (90.0..=110.0).contains(v)));
        assert!(
            values.iter().any(|v| (v - 100.0).abs() > 1.0),
            "noise is there"
        );
        assert_eq!(s.demand_at(NOW as f64), s.demand_at(NOW as f64 + 30.0));
    }

    #[test]
    fn trace_parses_iso_and_epoch_with_header_and_gaps() {
        let text = "timestamp,value\n2025-11-24 00:00:00,10\n2025-11-24T00:30:00Z,20\n1763945999,\n1763947800,40\n";
        let t = Trace::parse("taxi", "t.csv", text).unwrap();
        assert_eq!(
            t.points,
            vec![
                (1_763_942_400, 10.0),
                (1_763_944_200, 20.0),
                (1_763_947_800, 40.0)
            ]
        );
        assert_eq!(t.period, 5400.0 + 2700.0);
    }

    #[test]
    fn trace_errors_name_the_line() {
        let err = Trace::parse("x", "t.csv", "0,1\nyesterday,2\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.csv, line 2"), "{err}");
        let err = Trace::parse("x", "t.csv", "0,1\n60,lots\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`lots` is not a number"), "{err}");
        let err = Trace::parse("x", "t.csv", "0,1\n").unwrap_err().to_string();
        assert!(err.contains("at least two points"), "{err}");
    }

    #[test]
    fn trace_interpolates_and_loops() {
        let t = Trace::parse("x", "t.csv", "0,10\n60,20\n120,40\n").unwrap();
        assert_eq!(t.value_at(30.0), 15.0);
        assert_eq!(t.value_at(120.0), 40.0);
        // Between the last point and the loop's restart it heads back to the first value.
        assert_eq!(t.value_at(150.0), 25.0);
        assert_eq!(t.value_at(180.0 + 30.0), 15.0);
        assert_eq!(t.value_at(-180.0 + 60.0), 20.0);
    }

    #[test]
    fn replay_maps_wall_time_with_anchor_and_speed() {
        let trace = Trace::parse("x", "t.csv", "0,10\n60,20\n120,40\n").unwrap();
        let w = Workload::Trace(Replay {
            trace,
            anchor: NOW,
            trace_at: 60,
            speed: 2.0,
            scale: 10.0,
        });
        assert_eq!(w.demand_at(NOW as f64), 200.0);
        assert_eq!(w.demand_at(NOW as f64 + 15.0), 300.0);
    }

    #[test]
    fn requests_integrate_demand() {
        let w = Workload::Scenario(Scenario::parse("web:baseline=10", NOW).unwrap());
        assert!((w.requests_between(0.0, 60.0) - 600.0).abs() < 1e-9);
        assert_eq!(w.requests_between(60.0, 0.0), 0.0);
    }

    fn openmetrics(workloads: &[Workload], labels: &[(String, String)]) -> String {
        let mut out = Vec::new();
        write_openmetrics(&mut out, workloads, labels, NOW, NOW + 180, 60).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn openmetrics_output_is_what_promtool_reads() {
        let w = Workload::Scenario(Scenario::parse("web:baseline=10", NOW).unwrap());
        let labels = vec![("job".to_string(), "demand \"x\"".to_string())];
        let text = openmetrics(&[w], &labels);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.last(), Some(&"# EOF"));
        assert!(lines.contains(&"# TYPE tideshift_demo_demand gauge"));
        assert!(lines.contains(&"# TYPE tideshift_demo_requests counter"));
        let demand: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("tideshift_demo_demand{"))
            .collect();
        assert_eq!(demand.len(), 4);
        assert_eq!(
            demand[0],
            format!("tideshift_demo_demand{{job=\"demand \\\"x\\\"\",workload=\"web\"}} 10 {NOW}")
        );
        let totals: Vec<f64> = lines
            .iter()
            .filter(|l| l.starts_with("tideshift_demo_requests_total{"))
            // The value is the second field from the end: label values may hold spaces.
            .map(|l| l.rsplit(' ').nth(1).unwrap().parse().unwrap())
            .collect();
        assert_eq!(totals.len(), 4);
        for (i, total) in totals.iter().enumerate() {
            assert!((total - 600.0 * i as f64).abs() < 1e-6, "{totals:?}");
        }
        // Families must not interleave: every gauge sample precedes the counter's TYPE line.
        let counter_type = lines
            .iter()
            .position(|l| *l == "# TYPE tideshift_demo_requests counter")
            .unwrap();
        assert!(
            lines[counter_type..]
                .iter()
                .all(|l| !l.starts_with("tideshift_demo_demand"))
        );
    }

    #[test]
    fn labels_are_validated() {
        assert!(parse_labels(&["job=demand".into()]).is_ok());
        for bad in ["job", "1x=a", "workload=a", "a-b=c"] {
            assert!(parse_labels(&[bad.to_string()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn live_counters_and_gauges_follow_the_clock() {
        let w = Workload::Scenario(Scenario::parse("web:baseline=10", NOW).unwrap());
        let live = Live::new(vec![w], NOW as f64).unwrap();
        live.update(NOW as f64 + 30.0);
        let text = live.render().unwrap();
        assert!(
            text.contains("tideshift_demo_demand{workload=\"web\"} 10"),
            "{text}"
        );
        assert!(
            text.contains("tideshift_demo_requests_total{workload=\"web\"} 300"),
            "{text}"
        );
        // A clock that steps back does not make the counter go down.
        live.update(NOW as f64 + 10.0);
        assert!(
            live.render()
                .unwrap()
                .contains("tideshift_demo_requests_total{workload=\"web\"} 300")
        );
    }

    #[test]
    fn duplicate_workloads_are_refused() {
        let args = ExporterArgs {
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
