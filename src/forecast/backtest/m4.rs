//! The M4 Hourly set: reading it, and scoring THE forecaster, a pooled variant and seasonal
//! naive on its test or validation windows.

use super::*;

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
    let (naive, naive_s) = timed(&|| {
        m4_forecasts(
            &crate::forecast::SeasonalNaive,
            &histories,
            &data.ids,
            quantile,
        )
    })?;
    Ok(M4Report {
        series: data.ids.len(),
        window,
        quantile,
        tideshift: score_m4(&histories, &actuals, &deployed, deployed_s),
        pooled: score_m4(&histories, &actuals, &pooled, pooled_s),
        seasonal_naive: score_m4(&histories, &actuals, &naive, naive_s),
    })
}
