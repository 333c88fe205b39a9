//! Forecast accuracy of THE forecaster (`default_forecaster`) on the M4 Hourly set or on any
//! `timestamp,value` trace, next to seasonal naive: what `tideshift backtest` measures
//! (its flags and tables are in `cli/backtest.rs`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::{Forecast, ForecastSpec, Forecaster, Series, default_forecaster};
use crate::trace::TraceError;

/// Published M4 Hourly scores of Naive2, the OWA reference.
pub const NAIVE2_SMAPE: f64 = 18.383;
pub const NAIVE2_MASE: f64 = 2.395;
/// M4 Hourly: seasonal period of MASE and the official horizon.
pub const M4_PERIOD: usize = 24;
pub const M4_HORIZON: usize = 48;

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {message}")]
    Parse {
        path: String,
        line: u64,
        message: String,
    },
    #[error(transparent)]
    Trace(TraceError),
    #[error("{0}")]
    Invalid(String),
}

impl From<TraceError> for BacktestError {
    fn from(error: TraceError) -> Self {
        match error {
            TraceError::Line {
                origin,
                line,
                message,
            } => BacktestError::Parse {
                path: origin,
                line: line as u64,
                message,
            },
            other => BacktestError::Trace(other),
        }
    }
}

/// Which windows are scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    /// The test windows (M4's test set; a trace's last `folds` windows).
    Test,
    /// The windows just before them, where defaults are chosen.
    Validation,
}

// ---------------------------------------------------------------------------------------------
// Metrics.

/// sMAPE on the 0-200 scale over the points where the actual value is known.
pub fn smape(actual: &[f64], forecast: &[f64]) -> f64 {
    let mut sum = 0.0;
    let mut n = 0usize;
    for (&a, &f) in actual.iter().zip(forecast) {
        if !a.is_finite() || !f.is_finite() {
            continue;
        }
        let denom = a.abs() + f.abs();
        // Both zero: a perfect forecast of nothing.
        if denom > 0.0 {
            sum += 200.0 * (a - f).abs() / denom;
        }
        n += 1;
    }
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// Mean absolute error of the seasonal naive forecast with period `m` inside `history`.
pub fn seasonal_naive_scale(history: &[f64], m: usize) -> f64 {
    let mut sum = 0.0;
    let mut n = 0usize;
    for i in m..history.len() {
        let d = history[i] - history[i - m];
        if d.is_finite() {
            sum += d.abs();
            n += 1;
        }
    }
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// MASE: mean absolute error over the in-sample seasonal naive error.
pub fn mase(actual: &[f64], forecast: &[f64], scale: f64) -> f64 {
    let mut sum = 0.0;
    let mut n = 0usize;
    for (&a, &f) in actual.iter().zip(forecast) {
        if a.is_finite() && f.is_finite() {
            sum += (a - f).abs();
            n += 1;
        }
    }
    if n == 0 || scale.is_nan() || scale <= 0.0 {
        f64::NAN
    } else {
        sum / n as f64 / scale
    }
}

/// (points inside the band, points with a known actual value).
fn band_hits(actual: &[f64], forecast: &Forecast) -> (usize, usize) {
    let mut inside = 0;
    let mut total = 0;
    for (i, &a) in actual.iter().enumerate() {
        if !a.is_finite() {
            continue;
        }
        total += 1;
        if a >= forecast.lower[i] && a <= forecast.upper[i] {
            inside += 1;
        }
    }
    (inside, total)
}

/// MSIS, M4's interval score: the band's width plus, for every value outside it, 2/alpha times
/// how far outside, scaled like MASE; alpha = 2 (1 - q) for the band [1-q, q]. Lower is better:
/// a band is rewarded for being narrow and punished for every miss, so neither a too wide nor a
/// too narrow band scores well.
pub fn msis(actual: &[f64], forecast: &Forecast, scale: f64) -> f64 {
    let alpha = 2.0 * (1.0 - forecast.quantile);
    let mut sum = 0.0;
    let mut n = 0usize;
    for ((&a, &lo), &hi) in actual.iter().zip(&forecast.lower).zip(&forecast.upper) {
        if !a.is_finite() {
            continue;
        }
        sum += (hi - lo) + 2.0 / alpha * ((lo - a).max(0.0) + (a - hi).max(0.0));
        n += 1;
    }
    if n == 0 || scale.is_nan() || scale <= 0.0 || alpha <= 0.0 {
        f64::NAN
    } else {
        sum / n as f64 / scale
    }
}

fn mean(values: &[f64]) -> f64 {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        f64::NAN
    } else {
        finite.iter().sum::<f64>() / finite.len() as f64
    }
}

// ---------------------------------------------------------------------------------------------
// M4 Hourly.

/// Accuracy of one way of forecasting the M4 set.
#[derive(Debug, Default, Serialize)]
pub struct M4Scores {
    pub smape: f64,
    pub mase: f64,
    pub owa: f64,
    /// Share of scored points inside the band [1-q, q] (nominal 2q - 1).
    pub coverage: f64,
    /// Share of scored points at or below the upper band (nominal q).
    pub upper_coverage: f64,
    /// Mean MSIS of the band (M4's interval score; lower is better).
    pub msis: f64,
    /// Wall time of fit + predict for all series.
    pub seconds: f64,
    /// CPU time of fit + predict for all series (one thread): what the wall time is on an idle
    /// core.
    pub cpu_seconds: f64,
    /// How many series each method forecast (`regression`, `seasonal-naive`, ...).
    pub methods: BTreeMap<String, usize>,
}

#[derive(Debug, Serialize)]
pub struct M4Report {
    pub series: usize,
    pub window: Window,
    pub quantile: f64,
    /// THE forecaster as the daemon and `simulate` run it: one fit per series.
    pub tideshift: M4Scores,
    /// A labelled variant the daemon does not run: one model pooled over every series.
    pub pooled: M4Scores,
    pub seasonal_naive: M4Scores,
}

/// One M4 file: series id and values (trailing empty cells dropped).
pub fn read_m4_file(path: &Path) -> Result<Vec<(String, Vec<f64>)>, BacktestError> {
    let name = path.display().to_string();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_path(path)
        .map_err(|e| BacktestError::Io {
            path: name.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| BacktestError::Parse {
            path: name.clone(),
            line: e.position().map(|p| p.line()).unwrap_or(0),
            message: e.to_string(),
        })?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let mut fields = record.iter();
        let id = fields.next().unwrap_or_default().to_string();
        let mut values = Vec::with_capacity(record.len());
        for field in fields {
            let field = field.trim();
            if field.is_empty() {
                break;
            }
            let v: f64 = field.parse().map_err(|_| BacktestError::Parse {
                path: name.clone(),
                line,
                message: format!("series {id}: {field:?} is not a number"),
            })?;
            values.push(v);
        }
        out.push((id, values));
    }
    Ok(out)
}

/// The M4 Hourly set: training histories (hourly steps) and the 48 test values of each.
pub struct M4Data {
    pub ids: Vec<String>,
    pub train: Vec<Series>,
    pub test: Vec<Vec<f64>>,
}

pub fn load_m4(dir: &Path) -> Result<M4Data, BacktestError> {
    let train = read_m4_file(&dir.join("Hourly-train.csv"))?;
    let test = read_m4_file(&dir.join("Hourly-test.csv"))?;
    if train.len() != test.len() || train.is_empty() {
        return Err(BacktestError::Invalid(format!(
            "{}: {} train series but {} test series",
            dir.display(),
            train.len(),
            test.len()
        )));
    }
    let mut data = M4Data {
        ids: Vec::with_capacity(train.len()),
        train: Vec::with_capacity(train.len()),
        test: Vec::with_capacity(train.len()),
    };
    for (i, ((id, history), (test_id, actual))) in train.into_iter().zip(test).enumerate() {
        if id != test_id {
            return Err(BacktestError::Invalid(format!(
                "row {i}: train series {id} but test series {test_id}"
            )));
        }
        if actual.len() != M4_HORIZON {
            return Err(BacktestError::Invalid(format!(
                "series {id}: {} test values, expected {M4_HORIZON}",
                actual.len()
            )));
        }
        data.ids.push(id);
        data.train.push(Series::new(0, 3600, history));
        data.test.push(actual);
    }
    Ok(data)
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu_seconds() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; the call only writes it.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if status != 0 {
        return f64::NAN;
    }
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
}

/// The horizon, seasons and band of every M4 forecast.
fn m4_spec() -> ForecastSpec {
    ForecastSpec {
        seasons: vec![M4_PERIOD, 7 * M4_PERIOD],
        events: vec![],
        horizon: M4_HORIZON,
        band_quantile: None,
    }
}

/// THE forecaster as deployed: each series fitted on its own, as the daemon fits each online
/// workload.
pub fn m4_forecasts(
    forecaster: &dyn Forecaster,
    histories: &[Series],
    ids: &[String],
    quantile: f64,
) -> Result<Vec<Forecast>, BacktestError> {
    let spec = m4_spec();
    histories
        .iter()
        .zip(ids)
        .map(|(history, id)| {
            forecaster
                .fit(history, &spec)
                .and_then(|model| model.predict(history, M4_HORIZON, quantile))
                .map_err(|e| BacktestError::Invalid(format!("series {id}: {e}")))
        })
        .collect()
}

/// The pooled variant: one `fit_many` over every series.
pub fn m4_pooled_forecasts(
    forecaster: &dyn Forecaster,
    histories: &[Series],
    ids: &[String],
    quantile: f64,
) -> Result<Vec<Forecast>, BacktestError> {
    let models = forecaster.fit_many(histories, &m4_spec());
    models
        .into_iter()
        .zip(histories.iter().zip(ids))
        .map(|(model, (history, id))| {
            model
                .and_then(|model| model.predict(history, M4_HORIZON, quantile))
                .map_err(|e| BacktestError::Invalid(format!("series {id}: {e}")))
        })
        .collect()
}

/// Histories and the values that score them: the test set, or the last 48 hours of each
/// training series (validation).
fn m4_windows(data: &M4Data, window: Window) -> (Vec<Series>, Vec<Vec<f64>>) {
    match window {
        Window::Test => (data.train.clone(), data.test.clone()),
        Window::Validation => data
            .train
            .iter()
            .map(|s| {
                let cut = s.values.len().saturating_sub(M4_HORIZON);
                (
                    Series::new(s.start, s.step, s.values[..cut].to_vec()),
                    s.values[cut..].to_vec(),
                )
            })
            .unzip(),
    }
}

fn score_m4(
    histories: &[Series],
    actuals: &[Vec<f64>],
    forecasts: &[Forecast],
    (seconds, cpu_seconds): (f64, f64),
) -> M4Scores {
    let mut smapes = Vec::with_capacity(forecasts.len());
    let mut mases = Vec::with_capacity(forecasts.len());
    let mut msises = Vec::with_capacity(forecasts.len());
    let (mut inside, mut below, mut total) = (0, 0, 0);
    let mut methods = BTreeMap::new();
    for ((history, actual), f) in histories.iter().zip(actuals).zip(forecasts) {
        let scale = seasonal_naive_scale(&history.values, M4_PERIOD);
        smapes.push(smape(actual, &f.point));
        mases.push(mase(actual, &f.point, scale));
        msises.push(msis(actual, f, scale));
        let (hit, n) = band_hits(actual, f);
        inside += hit;
        total += n;
        below += actual.iter().zip(&f.upper).filter(|(a, u)| a <= u).count();
        *methods.entry(f.method.name().to_string()).or_insert(0) += 1;
    }
    let (smape, mase) = (mean(&smapes), mean(&mases));
    M4Scores {
        smape,
        mase,
        owa: 0.5 * (smape / NAIVE2_SMAPE + mase / NAIVE2_MASE),
        coverage: inside as f64 / total.max(1) as f64,
        upper_coverage: below as f64 / total.max(1) as f64,
        msis: mean(&msises),
        seconds,
        cpu_seconds,
        methods,
    }
}

pub fn m4_backtest(dir: &Path, quantile: f64, window: Window) -> Result<M4Report, BacktestError> {
    m4_backtest_with(default_forecaster().as_ref(), dir, quantile, window)
}

pub fn m4_backtest_with(
    forecaster: &dyn Forecaster,
    dir: &Path,
    quantile: f64,
    window: Window,
) -> Result<M4Report, BacktestError> {
    let data = load_m4(dir)?;
    let (histories, actuals) = m4_windows(&data, window);
    let timed = |run: &dyn Fn() -> Result<Vec<Forecast>, BacktestError>| {
        let (started, cpu) = (Instant::now(), thread_cpu_seconds());
        run().map(|f| {
            let times = (started.elapsed().as_secs_f64(), thread_cpu_seconds() - cpu);
            (f, times)
        })
    };
    let (deployed, deployed_s) =
        timed(&|| m4_forecasts(forecaster, &histories, &data.ids, quantile))?;
    let (pooled, pooled_s) =
        timed(&|| m4_pooled_forecasts(forecaster, &histories, &data.ids, quantile))?;
    let (naive, naive_s) =
        timed(&|| m4_forecasts(&super::SeasonalNaive, &histories, &data.ids, quantile))?;
    Ok(M4Report {
        series: data.ids.len(),
        window,
        quantile,
        tideshift: score_m4(&histories, &actuals, &deployed, deployed_s),
        pooled: score_m4(&histories, &actuals, &pooled, pooled_s),
        seasonal_naive: score_m4(&histories, &actuals, &naive, naive_s),
    })
}

// ---------------------------------------------------------------------------------------------
// A CSV trace.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smape_follows_the_m4_definition() {
        assert!((smape(&[100.0], &[100.0]) - 0.0).abs() < 1e-12);
        assert!((smape(&[100.0], &[50.0]) - 200.0 * 50.0 / 150.0).abs() < 1e-9);
        assert!((smape(&[0.0, 10.0], &[0.0, 0.0]) - 100.0).abs() < 1e-9);
        assert!((smape(&[f64::NAN, 10.0], &[1.0, 10.0])).abs() < 1e-12);
    }

    #[test]
    fn mase_scales_by_in_sample_seasonal_naive() {
        let history = [1.0, 2.0, 3.0, 2.0, 3.0, 4.0];
        assert!((seasonal_naive_scale(&history, 3) - 1.0).abs() < 1e-12);
        assert!((mase(&[5.0, 5.0], &[3.0, 7.0], 1.0) - 2.0).abs() < 1e-12);
        assert!(mase(&[5.0], &[3.0], 0.0).is_nan());
    }

    #[test]
    fn seasonal_naive_repeats_the_last_season() {
        let h = [1.0, 2.0, 3.0, 4.0, f64::NAN, 6.0];
        assert_eq!(seasonal_naive_repeat(&h, 3, 4)[..3], [4.0, 2.0, 6.0]);
        assert_eq!(seasonal_naive_repeat(&h, 3, 4)[3], 4.0);
    }
}
