//! `tideshift backtest`: the flags, the ablation variants they select, and the tables printed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use super::CliResult;
use crate::forecast::backtest::{
    BacktestError, M4_HORIZON, M4Report, NAIVE2_MASE, NAIVE2_SMAPE, TraceSettings, TracesReport,
    Window, m4_backtest_with, read_trace, traces_backtest_with,
};
use crate::forecast::{Forecaster, RegressionConfig, RegressionForecaster, SeasonalNaive};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["m4", "trace"])))]
pub struct BacktestArgs {
    /// Directory with the M4 `Hourly-train.csv` and `Hourly-test.csv`.
    #[arg(long, value_name = "DIR")]
    pub m4: Option<PathBuf>,
    /// A CSV `timestamp,value` trace (ISO-8601 or epoch seconds); repeat it, or name a
    /// directory, to score several series and their means.
    #[arg(long, value_name = "FILE|DIR")]
    pub trace: Vec<PathBuf>,
    /// Seasonal period in steps (trace): seasonal naive's period and MASE's scale.
    #[arg(long, requires = "trace")]
    pub season: Option<usize>,
    /// Steps per forecast window (trace).
    #[arg(long, requires = "trace")]
    pub horizon: Option<usize>,
    /// Number of last non-overlapping windows to forecast (trace).
    #[arg(long, requires = "trace", default_value_t = 10)]
    pub folds: usize,
    /// Score the windows just before the test windows instead of the test windows: M4, the
    /// last 48 hours of each training series; a trace, the `--folds` windows before the last
    /// `--folds`. Defaults are chosen here, never on the test windows.
    #[arg(long)]
    pub validation: bool,
    /// Band quantile (the planner's): coverage counts points inside [1-q, q].
    #[arg(long, default_value_t = 0.95)]
    pub quantile: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Ablation: measure seasonal naive instead of the default forecaster.
    #[arg(long, hide = true)]
    pub seasonal_naive: bool,
    /// Ablation: number of raw lags of the regression.
    #[arg(long, hide = true)]
    pub raw_lags: Option<usize>,
    /// Ablation: ridge penalties of the regression (comma separated).
    #[arg(long, hide = true, value_delimiter = ',')]
    pub alphas: Option<Vec<f64>>,
    /// Ablation: no blend with seasonal naive.
    #[arg(long, hide = true)]
    pub no_blend: bool,
    /// Ablation: never fall back to a simple method that did better on held-out origins.
    #[arg(long, hide = true)]
    pub no_selection: bool,
    /// Ablation: cross-validation blocks.
    #[arg(long, hide = true)]
    pub cv_blocks: Option<usize>,
    /// Ablation: share of the most recent held-out origins for the choice and the band.
    #[arg(long, hide = true)]
    pub recent_share: Option<f64>,
    /// Ablation: hold blocks out with models fitted on earlier blocks only.
    #[arg(long, hide = true)]
    pub forward: bool,
    /// Ablation: the last value is not a member of the blend.
    #[arg(long, hide = true)]
    pub no_blend_last: bool,
    /// Ablation: choose the method by absolute errors only.
    #[arg(long, hide = true)]
    pub select_absolute: bool,
    /// Ablation: widening of the held-out errors for the band.
    #[arg(long, hide = true)]
    pub band_scale: Option<f64>,
    /// Ablation: longest horizon, as a share of the main season, at which naive is a candidate.
    #[arg(long, hide = true)]
    pub naive_up_to: Option<f64>,
}

impl BacktestArgs {
    /// THE forecaster, unless an ablation flag asks for a variant.
    fn forecaster(&self) -> Box<dyn Forecaster> {
        if self.seasonal_naive {
            return Box::new(SeasonalNaive);
        }
        let mut config = RegressionConfig::default();
        if let Some(v) = self.raw_lags {
            config.raw_lags = v;
        }
        if let Some(v) = &self.alphas {
            config.alphas = v.clone();
        }
        if self.no_blend {
            config.blend = false;
        }
        if self.no_selection {
            config.select = false;
        }
        if let Some(v) = self.cv_blocks {
            config.cv_blocks = v;
        }
        if self.select_absolute {
            config.select_relative_too = false;
        }
        if self.no_blend_last {
            config.blend_last = false;
        }
        if let Some(v) = self.band_scale {
            config.band_scale = v;
        }
        if self.forward {
            config.forward = true;
        }
        if let Some(v) = self.recent_share {
            config.recent_share = v;
        }
        if let Some(v) = self.naive_up_to {
            config.naive_up_to = v;
        }
        Box::new(RegressionForecaster::new(config))
    }
}

pub fn run(args: BacktestArgs) -> CliResult {
    if !(args.quantile > 0.5 && args.quantile < 1.0) {
        return Err(BacktestError::Invalid(format!(
            "--quantile must be in (0.5, 1), got {}",
            args.quantile
        ))
        .into());
    }
    let window = if args.validation {
        Window::Validation
    } else {
        Window::Test
    };
    if let Some(dir) = &args.m4 {
        let report = m4_backtest_with(args.forecaster().as_ref(), dir, args.quantile, window)?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print_m4(&report);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let season = args
        .season
        .ok_or_else(|| BacktestError::Invalid("--trace needs --season S".to_string()))?;
    let horizon = args
        .horizon
        .ok_or_else(|| BacktestError::Invalid("--trace needs --horizon H".to_string()))?;
    let files = trace_files(&args.trace)?;
    let mut series = Vec::with_capacity(files.len());
    for path in &files {
        series.push((path.display().to_string(), read_trace(path)?));
    }
    let settings = TraceSettings {
        season,
        horizon,
        folds: args.folds,
        quantile: args.quantile,
        window,
    };
    let report = traces_backtest_with(args.forecaster().as_ref(), &series, &settings)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_traces(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// The files `--trace` names: each file as given, each directory's `*.csv` in name order.
fn trace_files(given: &[PathBuf]) -> Result<Vec<PathBuf>, BacktestError> {
    let mut files = Vec::new();
    for path in given {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| BacktestError::Io {
                path: path.display().to_string(),
                source,
            })?;
            let mut csv: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "csv"))
                .collect();
            csv.sort();
            if csv.is_empty() {
                return Err(BacktestError::Invalid(format!(
                    "{}: no *.csv trace in the directory",
                    path.display()
                )));
            }
            files.extend(csv);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn print_m4(report: &M4Report) {
    println!(
        "M4 Hourly, {} series, horizon {M4_HORIZON}, {} windows",
        report.series,
        match report.window {
            Window::Test => "test",
            Window::Validation => "validation (last 48 h of training)",
        }
    );
    println!(
        "{:<34}{:>9}{:>9}{:>9}{:>10}{:>9}",
        "", "sMAPE", "MASE", "OWA", "coverage", "CPU s"
    );
    for (name, s) in [
        ("tideshift (as deployed, per series)", &report.tideshift),
        ("variant: one model pooled", &report.pooled),
    ] {
        println!(
            "{:<34}{:>9.3}{:>9.3}{:>9.3}{:>9.1}%{:>9.2}",
            name,
            s.smape,
            s.mase,
            s.owa,
            100.0 * s.coverage,
            s.cpu_seconds
        );
    }
    let sn = &report.seasonal_naive;
    println!(
        "{:<34}{:>9.3}{:>9.3}{:>9.3}",
        "seasonal naive", sn.smape, sn.mase, sn.owa
    );
    println!(
        "{:<34}{:>9.3}{:>9.3}{:>9.3}",
        "Naive2 (published, test)", NAIVE2_SMAPE, NAIVE2_MASE, 1.0
    );
    println!(
        "band nominal {:.0}%; methods used: {}",
        100.0 * (2.0 * report.quantile - 1.0),
        methods_text(&report.tideshift.methods)
    );
}

fn methods_text(methods: &BTreeMap<String, usize>) -> String {
    methods
        .iter()
        .map(|(m, n)| format!("{m} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_traces(report: &TracesReport) {
    println!(
        "{} series, {} {} windows of {} steps each, season {}",
        report.series.len(),
        report.folds,
        match report.window {
            Window::Test => "test",
            Window::Validation => "validation",
        },
        report.horizon,
        report.season
    );
    if report.series.len() > 1 {
        println!(
            "{:<44}{:>9}{:>9}{:>10}{:>9}{:>9}",
            "series", "sMAPE", "MASE", "coverage", "sn sMAPE", "sn MASE"
        );
        for s in &report.series {
            let name = std::path::Path::new(&s.name)
                .file_name()
                .map_or(s.name.clone(), |n| n.to_string_lossy().into_owned());
            println!(
                "{:<44}{:>9.3}{:>9.3}{:>9.1}%{:>9.3}{:>9.3}",
                name,
                s.tideshift.smape,
                s.tideshift.mase,
                100.0 * s.tideshift.coverage,
                s.seasonal_naive.smape,
                s.seasonal_naive.mase
            );
        }
        println!("means:");
    }
    println!("{:<16}{:>10}{:>10}{:>10}", "", "sMAPE", "MASE", "coverage");
    println!(
        "{:<16}{:>10.3}{:>10.3}{:>9.1}%",
        "tideshift",
        report.tideshift.smape,
        report.tideshift.mase,
        100.0 * report.tideshift.coverage
    );
    println!(
        "{:<16}{:>10.3}{:>10.3}{:>10}",
        "seasonal naive", report.seasonal_naive.smape, report.seasonal_naive.mase, "-"
    );
    println!(
        "band nominal {:.0}%; methods used: {}; fit + predict {:.2} s",
        100.0 * (2.0 * report.quantile - 1.0),
        methods_text(&report.methods),
        report.seconds
    );
}
