//! A CSV trace (or several): rolling windows, each forecast from all data before it.

use super::*;

#[derive(Debug, Default, Serialize)]
pub struct Scores {
    pub smape: f64,
    pub mase: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct BandScores {
    pub smape: f64,
    pub mase: f64,
    pub coverage: f64,
    /// Mean MSIS of the band (M4's interval score; lower is better).
    pub msis: f64,
}

/// One trace's scores, means over its windows.
#[derive(Debug, Serialize)]
pub struct SeriesReport {
    pub name: String,
    pub tideshift: BandScores,
    pub seasonal_naive: Scores,
    /// How many windows each method forecast.
    pub methods: BTreeMap<String, usize>,
}

/// Several traces: per series, and the means over series (coverage over all scored points).
#[derive(Debug, Serialize)]
pub struct TracesReport {
    pub tideshift: BandScores,
    pub seasonal_naive: Scores,
    pub series: Vec<SeriesReport>,
    pub methods: BTreeMap<String, usize>,
    pub window: Window,
    pub folds: usize,
    pub season: usize,
    pub horizon: usize,
    pub quantile: f64,
    /// Wall time of tideshift's fits and predictions over all windows of all series.
    pub seconds: f64,
}

/// How a trace is cut into windows and scored.
#[derive(Clone, Debug)]
pub struct TraceSettings {
    pub season: usize,
    pub horizon: usize,
    pub folds: usize,
    pub quantile: f64,
    pub window: Window,
}

/// Reads a trace (`crate::trace`'s rules) onto the grid of its own step.
pub fn read_trace(path: &Path) -> Result<Series, BacktestError> {
    Ok(crate::trace::load_file(path)?.series())
}

/// Seasonal periods the forecaster is given for a trace: the season and, when the history
/// holds enough of it, seven seasons (a week when the season is a day, as in policies'
/// default `seasonality: [1d, 7d]`).
pub fn trace_seasons(season: usize, history_len: usize) -> Vec<usize> {
    let mut seasons = vec![season];
    if history_len >= 3 * 7 * season {
        seasons.push(7 * season);
    }
    seasons
}

/// Every window of every trace, forecast from all data before it.
pub fn traces_backtest_with(
    forecaster: &dyn Forecaster,
    traces: &[(String, Series)],
    settings: &TraceSettings,
) -> Result<TracesReport, BacktestError> {
    let mut series = Vec::with_capacity(traces.len());
    let (mut inside, mut total, mut seconds) = (0, 0, 0.0);
    let mut methods = BTreeMap::new();
    for (name, trace) in traces {
        let scored = trace_backtest_with(forecaster, trace, settings)
            .map_err(|e| BacktestError::Invalid(format!("{name}: {e}")))?;
        inside += scored.inside;
        total += scored.total;
        seconds += scored.seconds;
        for (m, n) in &scored.report.methods {
            *methods.entry(m.clone()).or_insert(0) += n;
        }
        series.push(SeriesReport {
            name: name.clone(),
            ..scored.report
        });
    }
    let mean_of =
        |pick: fn(&SeriesReport) -> f64| mean(&series.iter().map(pick).collect::<Vec<_>>());
    Ok(TracesReport {
        tideshift: BandScores {
            smape: mean_of(|s| s.tideshift.smape),
            mase: mean_of(|s| s.tideshift.mase),
            coverage: inside as f64 / total.max(1) as f64,
            msis: mean_of(|s| s.tideshift.msis),
        },
        seasonal_naive: Scores {
            smape: mean_of(|s| s.seasonal_naive.smape),
            mase: mean_of(|s| s.seasonal_naive.mase),
        },
        series,
        methods,
        window: settings.window,
        folds: settings.folds,
        season: settings.season,
        horizon: settings.horizon,
        quantile: settings.quantile,
        seconds,
    })
}

/// One trace's windows: the report, band hits over all its points, and the time taken.
pub struct TraceScored {
    pub report: SeriesReport,
    pub inside: usize,
    pub total: usize,
    pub seconds: f64,
}

pub fn trace_backtest_with(
    forecaster: &dyn Forecaster,
    series: &Series,
    settings: &TraceSettings,
) -> Result<TraceScored, BacktestError> {
    let TraceSettings {
        season,
        horizon,
        folds,
        quantile,
        window,
    } = *settings;
    if season == 0 || horizon == 0 || folds == 0 {
        return Err(BacktestError::Invalid(
            "--season, --horizon and --folds must be positive".to_string(),
        ));
    }
    // Validation scores the `folds` windows before the test windows.
    let skipped = match window {
        Window::Test => 0,
        Window::Validation => folds,
    };
    let n = series.values.len();
    let needed = (folds + skipped) * horizon + 2 * season;
    if n < needed {
        return Err(BacktestError::Invalid(format!(
            "{n} points; {folds} {} windows of {horizon} need at least {needed} (two seasons of \
             history before the first)",
            match window {
                Window::Test => "test",
                Window::Validation => "validation windows before as many test",
            }
        )));
    }
    let mut ts_smape = Vec::with_capacity(folds);
    let mut ts_mase = Vec::with_capacity(folds);
    let mut ts_msis = Vec::with_capacity(folds);
    let mut sn_smape = Vec::with_capacity(folds);
    let mut sn_mase = Vec::with_capacity(folds);
    let (mut inside, mut total) = (0, 0);
    let mut seconds = 0.0;
    let mut methods = BTreeMap::new();
    for fold in 0..folds {
        let start = n - (folds + skipped - fold) * horizon;
        let history = Series::new(series.start, series.step, series.values[..start].to_vec());
        let actual = &series.values[start..start + horizon];
        let spec = ForecastSpec {
            seasons: trace_seasons(season, start),
            events: vec![],
            horizon,
            band_quantile: None,
        };
        let began = Instant::now();
        let forecast = forecaster
            .fit(&history, &spec)
            .and_then(|m| m.predict(&history, horizon, quantile))
            .map_err(|e| BacktestError::Invalid(format!("fold {fold}: {e}")))?;
        seconds += began.elapsed().as_secs_f64();
        *methods
            .entry(forecast.method.name().to_string())
            .or_insert(0) += 1;
        let naive = seasonal_naive_repeat(&history.values, season, horizon);
        let scale = seasonal_naive_scale(&history.values, season);
        ts_smape.push(smape(actual, &forecast.point));
        ts_mase.push(mase(actual, &forecast.point, scale));
        ts_msis.push(msis(actual, &forecast, scale));
        sn_smape.push(smape(actual, &naive));
        sn_mase.push(mase(actual, &naive, scale));
        let (hit, count) = band_hits(actual, &forecast);
        inside += hit;
        total += count;
    }
    Ok(TraceScored {
        report: SeriesReport {
            name: String::new(),
            tideshift: BandScores {
                smape: mean(&ts_smape),
                mase: mean(&ts_mase),
                coverage: inside as f64 / total.max(1) as f64,
                msis: mean(&ts_msis),
            },
            seasonal_naive: Scores {
                smape: mean(&sn_smape),
                mase: mean(&sn_mase),
            },
            methods,
        },
        inside,
        total,
        seconds,
    })
}

/// The last `season` values before the window, repeated; a gap takes the value one more
/// season back.
pub fn seasonal_naive_repeat(history: &[f64], season: usize, horizon: usize) -> Vec<f64> {
    let n = history.len();
    (0..horizon)
        .map(|h| {
            let mut idx = n as i64 - season as i64 + (h % season) as i64;
            while idx >= 0 {
                let v = history[idx as usize];
                if v.is_finite() {
                    return v;
                }
                idx -= season as i64;
            }
            f64::NAN
        })
        .collect()
}
