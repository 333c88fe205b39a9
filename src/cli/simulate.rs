//! `tideshift simulate`: rehearse a policy on past or synthetic demand and compare it with a
//! static split, the HPA, and an oracle, in one run.

use std::error::Error;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::CliResult;
use super::prometheus::PrometheusClientArgs;
use crate::policy::PolicyDuration;
use crate::sim::report::Report;
use crate::sim::scenario::Scenario;
use crate::sim::{history, inputs, plot, run_all, strategies, synth, timeline_plan};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "With no flags: the bundled festival example (policies/festival.yaml over \
a synthetic three-week trace with a festival night). See docs/simulate.md."
)]
pub struct SimulateArgs {
    /// ShiftPolicy file (default: the bundled policies/festival.yaml). Pod `resources` are
    /// required for every workload.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Demand trace, CSV `timestamp,value`: FILE drives the first online workload, NAME=FILE
    /// the named one (repeatable). Default: the bundled synthetic trace.
    #[arg(long = "trace", value_name = "[NAME=]FILE")]
    pub traces: Vec<String>,
    /// Read each online workload's `demand.query` from this Prometheus instead of a trace,
    /// over the last --since, with the daemon's client (chunking, retries, bearer token, CA).
    #[arg(
        long = "prometheus",
        alias = "prometheus-url",
        value_name = "URL",
        conflicts_with = "traces"
    )]
    pub prometheus_url: Option<String>,
    /// With --prometheus: how much history to read, ending now.
    #[arg(
        long,
        default_value = "14d",
        value_name = "DURATION",
        requires = "prometheus_url"
    )]
    pub since: PolicyDuration,
    /// With --prometheus: the step of the history read (default: the policy's forecast.step,
    /// what the daemon reads).
    #[arg(long, value_name = "DURATION", requires = "prometheus_url")]
    pub step: Option<PolicyDuration>,
    /// With --prometheus: also write the history read as DIR/NAME.csv per online workload, to
    /// replay it later with --trace NAME=DIR/NAME.csv.
    #[arg(long, value_name = "DIR", requires = "prometheus_url")]
    pub save_traces: Option<PathBuf>,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Draw demand, forecast band, online capacity and batch replicas per strategy to a PNG.
    #[arg(long, value_name = "PNG")]
    pub plot: Option<PathBuf>,
    /// Demand at the start that strategies learn from but that is not scored.
    #[arg(long, default_value = "7d", value_name = "DURATION")]
    pub warmup: PolicyDuration,
    /// Seed of the bundled synthetic trace.
    #[arg(long, default_value_t = synth::DEFAULT_SEED)]
    pub seed: u64,
    // Last: a help heading applies to every flag after it.
    #[command(flatten, next_help_heading = "Prometheus client (with --prometheus)")]
    pub prometheus: PrometheusClientArgs,
}

pub fn run(args: SimulateArgs) -> CliResult {
    let started = Instant::now();
    if let Some(path) = &args.plot
        && path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            != Some("png".into())
    {
        return Err(format!(
            "--plot {}: the plot is a PNG; name the file *.png",
            path.display()
        )
        .into());
    }
    let inputs = match &args.prometheus_url {
        Some(url) => from_prometheus(&args, url)?,
        None => inputs::resolve(args.policy.as_deref(), &args.traces, args.seed)?,
    };
    let scenario = Scenario::new(
        &inputs.policy,
        inputs.demand,
        inputs.forecast_step,
        args.warmup.as_secs() as i64,
    )
    .map_err(|e| format!("policy {}: {e}", inputs.policy_origin))?;
    let scenario = Arc::new(scenario);
    tracing::debug!(
        ticks = scenario.ticks(),
        forecast_step = scenario.forecast_step,
        "simulating"
    );

    let strategy_count = strategies(&scenario).len() as u64;
    let progress = Progress::new(
        "simulating {bar:40} {percent:>3}% (eta {eta})",
        scenario.ticks() * strategy_count,
    );
    let outcomes = run_all(&scenario, &timeline_plan(&scenario), &|ticks| {
        progress.inc(ticks)
    });
    progress.finish();

    let report = Report {
        scenario: &scenario,
        source: inputs.source,
        policy_origin: inputs.policy_origin,
        outcomes: &outcomes,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    if let Some(path) = &args.plot {
        plot::draw(path, &scenario, &outcomes, &report.source)
            .map_err(|e| format!("--plot {}: {e}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_table());
        if let Some(path) = &args.plot {
            println!("\nplot: {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Each online workload's history from Prometheus, as traces (`history.rs`).
fn from_prometheus(
    args: &SimulateArgs,
    url: &str,
) -> Result<inputs::Inputs, Box<dyn Error + Send + Sync>> {
    let (policy, policy_origin) = inputs::load_policy(args.policy.as_deref())?;
    // A policy that cannot be simulated fails now, not after minutes of reading.
    Scenario::workloads(&policy).map_err(|e| format!("policy {policy_origin}: {e}"))?;
    let step = match args.step {
        Some(step) if step.0.subsec_nanos() != 0 || step.as_secs() == 0 => {
            return Err(
                format!("--step {step}: write a whole number of seconds, at least 1s").into(),
            );
        }
        Some(step) => Some(step.as_secs() as i64),
        None => None,
    };
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| format!("the clock is before 1970: {e}"))?
        .as_secs() as i64;
    let plan = history::plan(
        &policy,
        &history::HistoryRequest {
            client: args.prometheus.config(url),
            since: args.since.as_secs() as i64,
            step,
            until,
        },
    )?;
    let progress = Progress::new(
        "reading history from Prometheus {bar:40} {percent:>3}% (eta {eta})",
        plan.points(),
    );
    let reading = Instant::now();
    let histories = plan.fetch(&|points| progress.inc(points));
    progress.finish();
    let histories = histories?;
    tracing::info!(
        workloads = histories.len(),
        points = plan.points(),
        seconds = reading.elapsed().as_secs_f64(),
        "read the demand history from Prometheus"
    );
    if let Some(dir) = &args.save_traces {
        for file in history::save(dir, &histories)? {
            eprintln!("saved {}", file.display());
        }
    }
    let source = plan.describe(&histories);
    let traces: Vec<_> = histories.into_iter().map(|h| Some(h.trace)).collect();
    Ok(inputs::from_traces(policy, policy_origin, &traces, source))
}

/// A progress bar on stderr that appears only once its work has taken more than a second, and
/// only on a terminal.
struct Progress {
    bar: ProgressBar,
    started: Instant,
    shown: AtomicBool,
}

impl Progress {
    fn new(template: &str, total: u64) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        Self {
            bar,
            started: Instant::now(),
            shown: AtomicBool::new(false),
        }
    }

    fn inc(&self, done: u64) {
        if !self.shown.load(Ordering::Relaxed) && self.started.elapsed() > Duration::from_secs(1) {
            self.shown.store(true, Ordering::Relaxed);
            if std::io::stderr().is_terminal() {
                self.bar.set_draw_target(ProgressDrawTarget::stderr());
            }
        }
        self.bar.inc(done);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
