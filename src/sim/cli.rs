//! `tideshift simulate`: rehearse a policy on past or synthetic demand and compare it with a
//! static split, the HPA, and an oracle, in one run.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::CliResult;
use crate::policy::PolicyDuration;

use super::report::Report;
use super::scenario::Scenario;
use super::{inputs, plot, run_all, synth};

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
    let inputs = inputs::resolve(args.policy.as_deref(), &args.traces, args.seed)?;
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

    let strategy_count = super::strategies(&scenario).len() as u64;
    let bar = progress_bar(scenario.ticks() * strategy_count);
    let shown = AtomicBool::new(false);
    let progress = |ticks: u64| {
        if !shown.load(Ordering::Relaxed) && started.elapsed() > Duration::from_secs(1) {
            shown.store(true, Ordering::Relaxed);
            if std::io::stderr().is_terminal() {
                bar.set_draw_target(ProgressDrawTarget::stderr());
            }
        }
        bar.inc(ticks);
    };
    let outcomes = run_all(&scenario, &super::timeline_plan(&scenario), &progress);
    bar.finish_and_clear();

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

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    if let Ok(style) = ProgressStyle::with_template("simulating {bar:40} {percent:>3}% (eta {eta})")
    {
        bar.set_style(style);
    }
    bar
}
