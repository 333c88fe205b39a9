//! The main forecaster: a direct multi-horizon ridge regression on the log of demand, judged
//! against the simple methods on held-out origins.
//!
//! For every origin `t` in the history the model sees a feature row built from the past only
//! (recent lags, the previous seasons around the horizon, time of day and week, known events,
//! `layout.rs`) and learns all `H` future steps at once, one output column per step. Everything
//! happens in `z = ln(y + offset)` minus the recent level `l_t` (mean of `z` over the last
//! season, `prepare.rs`), so the model is scale free: multiplicative seasonality becomes
//! additive and level shifts are absorbed by `l_t`.
//!
//! Every origin is also forecast by a model that did not see its targets (`validation.rs`):
//! those errors decide, per series, between the regression (blended with seasonal naive), the
//! seasonal naive forecast and the last value, and make the band. A forecast is never worse
//! than the forecaster can tell, and never leaves `[0, CEILING × the highest demand seen]`.

mod layout;
mod prepare;
mod ridge;
mod validation;

use std::sync::Arc;

use ndarray::Array2;

use self::layout::{EventIndex, FeatureBounds, Layout};
use self::prepare::{Prepared, prepare};
pub use self::ridge::{FittedRidge, Ridge, RidgeError};
use self::validation::{
    Chosen, Judging, Samples, Verdict, season_before, season_drift, seasonal_naive_z,
};
use super::prep::{check_request, clean_value};
use super::seasonal_naive::SeasonalNaiveModel;
use super::{
    FittedModel, Forecast, ForecastError, ForecastMethod, ForecastSpec, Forecaster,
    RECURRING_SEASONS, Series,
};

/// Knobs of the regression. Defaults are what `default_forecaster` uses; docs/forecast.md says
/// which data chose them.
#[derive(Clone, Debug)]
pub struct RegressionConfig {
    /// Ridge penalties to choose from: the one with the smallest held-out error is used.
    pub alphas: Vec<f64>,
    /// Number of most recent points used as raw lags.
    pub raw_lags: usize,
    /// Harmonics of each season's Fourier terms (local fits only: pooled series have no
    /// common clock).
    pub fourier_harmonics: usize,
    /// At most this many training origins per series (evenly strided, most recent kept):
    /// bounds fit time on long minute-level histories.
    pub max_origins: usize,
    /// Fewer usable origins than `min_origins_per_feature * features` means seasonal naive.
    pub min_origins_per_feature: f64,
    /// Blend each series' regression with its seasonal naive by held-out errors.
    pub blend: bool,
    /// Use seasonal naive or the last value instead when it did better on held-out origins.
    pub select: bool,
    /// Blocks of the held-out evaluation (cross-validation over time).
    pub cv_blocks: usize,
    /// Share of the most recent held-out origins that choose the method and make the band.
    pub recent_share: f64,
    /// Hold each block out with a model fitted on the blocks before it only.
    pub forward: bool,
    /// Held-out errors are multiplied by this for the band (1: as held out).
    pub band_scale: f64,
    /// The last value is a member of the blend, beside seasonal naive and its drift.
    pub blend_last: bool,
    /// Choose the method by relative errors as well as absolute ones.
    pub select_relative_too: bool,
    /// The last value (naive) is a candidate only for horizons up to this share of the main
    /// season. Unbounded by default: a cut-off at a day ahead was worse on the validation
    /// windows (docs/forecast.md, ablations), though a flat line cannot follow a season.
    pub naive_up_to: f64,
}

impl Default for RegressionConfig {
    fn default() -> Self {
        Self {
            alphas: vec![0.01],
            raw_lags: 24,
            fourier_harmonics: 3,
            max_origins: 4000,
            min_origins_per_feature: 2.0,
            blend: true,
            select: true,
            cv_blocks: 5,
            recent_share: 1.0,
            forward: false,
            band_scale: 1.0,
            blend_last: true,
            select_relative_too: true,
            naive_up_to: NAIVE_UP_TO,
        }
    }
}

/// No forecast value exceeds this multiple of the highest demand in the history a model was
/// fitted on or predicts from: a bound on what any model may claim beyond what it has seen.
pub const CEILING: f64 = 2.0;

/// Default of `RegressionConfig::naive_up_to`.
pub const NAIVE_UP_TO: f64 = f64::INFINITY;

#[derive(Clone, Debug, Default)]
pub struct RegressionForecaster {
    pub config: RegressionConfig,
}

impl RegressionForecaster {
    pub fn new(config: RegressionConfig) -> Self {
        Self { config }
    }
}

/// Shared part of a fitted model (one per pool of series).
#[derive(Debug)]
struct Shared {
    layout: Layout,
    events: EventIndex,
    bounds: FeatureBounds,
    /// Mean of the ensemble's weights: predicting with the mean equals the mean prediction.
    /// Kept in `f32` (a model per online workload lives as long as the daemon; ~100 features
    /// x 30 steps are 12 KB instead of 24), the dot product is in `f64`.
    weights: Array2<f32>,
}

pub struct RegressionModel {
    band_scale: f64,
    shared: Arc<Shared>,
    offset: f64,
    /// The highest demand in the history it was fitted on.
    history_max: f64,
    verdict: Verdict,
    fallback: SeasonalNaiveModel,
}

/// Seasonal naive standing in for the regression, with the reason in every forecast.
struct FallbackModel(SeasonalNaiveModel);

impl Forecaster for RegressionForecaster {
    fn name(&self) -> &'static str {
        "regression"
    }

    fn fit(
        &self,
        history: &Series,
        spec: &ForecastSpec,
    ) -> Result<Box<dyn FittedModel>, ForecastError> {
        self.fit_pool(std::slice::from_ref(history), spec, true)
            .pop()
            .unwrap_or_else(|| Err(ForecastError::Fit("no model produced".to_string())))
    }

    fn fit_many(
        &self,
        histories: &[Series],
        spec: &ForecastSpec,
    ) -> Vec<Result<Box<dyn FittedModel>, ForecastError>> {
        self.fit_pool(histories, spec, histories.len() == 1)
    }
}

/// The highest finite non-negative value of `values` (0 when there is none).
fn highest(values: &[f64]) -> f64 {
    values
        .iter()
        .map(|&v| clean_value(v))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
}

impl RegressionForecaster {
    fn fit_pool(
        &self,
        histories: &[Series],
        spec: &ForecastSpec,
        local: bool,
    ) -> Vec<Result<Box<dyn FittedModel>, ForecastError>> {
        let horizon = spec.horizon.max(1);
        let step = histories.first().map(|s| s.step).unwrap_or(60);
        let max_len = histories.iter().map(|s| s.values.len()).max().unwrap_or(0);
        let layout = Layout::new(spec, step, &self.config, local, max_len);
        let events = EventIndex::new(&spec.events);
        let prepared: Vec<Option<Prepared>> = histories
            .iter()
            .map(|s| {
                (s.step == step)
                    .then(|| prepare(s, layout.main_period, &events, None))
                    .flatten()
            })
            .collect();
        let samples = self.build_samples(&layout, &events, histories, &prepared, horizon);
        let min_rows = ((self.config.min_origins_per_feature * layout.features as f64).ceil()
            as usize)
            .max(32);
        let fitted = self.fit_shared(spec, &layout, &samples, horizon, max_len, min_rows);
        let (shared, held_out, fit_error) = match fitted {
            Ok((weights, held_out)) => (
                Some(Arc::new(Shared {
                    layout: layout.clone(),
                    events: events.clone(),
                    bounds: FeatureBounds::of(samples.x.view()),
                    weights: weights.mapv(|w| w as f32),
                })),
                Some(held_out),
                String::new(),
            ),
            Err(reason) => {
                tracing::debug!(%reason, "regression falls back to seasonal naive");
                (None, None, reason)
            }
        };
        let judging = Judging {
            blocks: self.config.cv_blocks,
            blend: self.config.blend,
            select: self.config.select,
            recent_share: self.config.recent_share,
            blend_last: self.config.blend_last,
            relative_too: self.config.select_relative_too,
            naive_up_to: self.config.naive_up_to,
        };
        let mut out = Vec::with_capacity(histories.len());
        for (i, s) in histories.iter().enumerate() {
            let rows = samples
                .series
                .iter()
                .find(|(si, _)| *si == i)
                .map(|(_, rows)| rows.clone());
            let reason = match (&shared, &prepared[i], &rows) {
                (None, _, _) => fit_error.clone(),
                (_, None, _) if s.step != step => "step differs from the pooled series".to_string(),
                (_, None, _) => "no finite non-negative value in the history".to_string(),
                (_, _, None) => format!(
                    "{} points of history, the regression needs {}",
                    s.values.len(),
                    layout.lookback + horizon + 1
                ),
                _ => String::new(),
            };
            let fallback = match SeasonalNaiveModel::fit(
                s,
                spec,
                ForecastMethod::Fallback {
                    reason: reason.clone(),
                },
            ) {
                Ok(f) => f,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            let model: Box<dyn FittedModel> = match (&shared, &held_out, &prepared[i], rows) {
                (Some(shared), Some((forecasts, block_of)), Some(p), Some(rows))
                    if reason.is_empty() =>
                {
                    match validation::judge(
                        &samples, forecasts, block_of, rows, p, &layout, &judging,
                    ) {
                        Some(mut verdict) => {
                            if let Some(quantile) = spec.band_quantile {
                                for step in &mut verdict.residuals {
                                    step.keep_band(quantile);
                                }
                            }
                            Box::new(RegressionModel {
                                band_scale: self.config.band_scale,
                                shared: shared.clone(),
                                offset: p.offset,
                                history_max: highest(&s.values),
                                verdict,
                                fallback,
                            })
                        }
                        None => match SeasonalNaiveModel::fit(
                            s,
                            spec,
                            ForecastMethod::Fallback {
                                reason: "no held-out origin to check the regression on".into(),
                            },
                        ) {
                            Ok(unchecked) => Box::new(FallbackModel(unchecked)),
                            Err(e) => {
                                out.push(Err(e));
                                continue;
                            }
                        },
                    }
                }
                _ => Box::new(FallbackModel(fallback)),
            };
            out.push(Ok(model));
        }
        out
    }

    /// The pool's weights and its held-out forecasts, or why there is no regression.
    #[allow(clippy::type_complexity)]
    fn fit_shared(
        &self,
        spec: &ForecastSpec,
        layout: &Layout,
        samples: &Samples,
        horizon: usize,
        max_len: usize,
        min_rows: usize,
    ) -> Result<(Array2<f64>, (Array2<f64>, Vec<usize>)), String> {
        let rows = samples.x.nrows();
        let shortest = spec.seasons.iter().copied().filter(|&m| m >= 2).min();
        if let (Some(m), 1) = (shortest, layout.main_period) {
            return Err(format!(
                "{max_len} points of history, fewer than two seasons of {m} plus the horizon \
                 {horizon}: too short for the regression"
            ));
        }
        if rows < min_rows {
            return Err(format!(
                "{rows} usable training windows, the regression needs at least {min_rows} for {} \
                 features (history too short or too sparse for horizon {horizon})",
                layout.features
            ));
        }
        // One candidate per penalty; the one with the smallest held-out error is fitted.
        let ridges: Vec<Ridge> = self
            .config
            .alphas
            .iter()
            .map(|&alpha| Ridge {
                alphas: vec![alpha],
            })
            .collect();
        let full = ridge::normal_equations(samples.x.view(), samples.y.view());
        let (held_out, block_of) = validation::held_out_forecasts(
            samples,
            &ridges,
            &full,
            self.config.cv_blocks,
            min_rows,
            self.config.forward,
        )
        .ok_or_else(|| {
            format!(
                "{rows} usable training windows are too few to hold {} blocks out and still fit \
                 {} features: the regression cannot be checked",
                self.config.cv_blocks, layout.features
            )
        })?;
        let (best, forecasts) = held_out
            .into_iter()
            .enumerate()
            .min_by(|(_, a), (_, b)| a.squared_error.total_cmp(&b.squared_error))
            .map(|(i, h)| (i, h.forecasts))
            .ok_or_else(|| "no ridge penalty configured".to_string())?;
        let weights = ridges[best]
            .solve_normal(&full.0, &full.1)
            .map_err(|e| e.to_string())?;
        let held_out = (forecasts, block_of);
        Ok((weights, held_out))
    }

    fn build_samples(
        &self,
        layout: &Layout,
        events: &EventIndex,
        histories: &[Series],
        prepared: &[Option<Prepared>],
        horizon: usize,
    ) -> Samples {
        // Origins per series: t from lookback-1 to n-1-horizon, strided to at most max_origins,
        // keeping the most recent.
        let mut plan: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut total = 0;
        for (si, p) in prepared.iter().enumerate() {
            let Some(p) = p else { continue };
            let n = p.z.len();
            if n < layout.lookback + horizon + 1 {
                continue;
            }
            let first = layout.lookback - 1;
            let last = n - 1 - horizon;
            let count = last - first + 1;
            let stride = count.div_ceil(self.config.max_origins.max(1)).max(1);
            let mut origins = Vec::with_capacity(count / stride + 1);
            let mut t = last as i64;
            while t >= first as i64 {
                let tu = t as usize;
                let gaps = p.missing[tu + 1..=tu + horizon]
                    .iter()
                    .filter(|m| **m)
                    .count();
                if gaps * 4 <= horizon && !p.missing[tu] {
                    origins.push(tu);
                }
                t -= stride as i64;
            }
            origins.reverse();
            if origins.is_empty() {
                continue;
            }
            total += origins.len();
            plan.push((si, origins));
        }
        let f = layout.features;
        let mut x = Array2::<f64>::zeros((total, f));
        let mut y = Array2::<f64>::zeros((total, horizon));
        let mut observed = vec![false; total * horizon];
        let mut row_origins = Vec::with_capacity(total);
        let mut series = Vec::with_capacity(plan.len());
        let mut r = 0;
        for (si, origins) in &plan {
            let Some(p) = &prepared[*si] else { continue };
            let s = &histories[*si];
            let first_row = r;
            let mut view = p.z.clone();
            for &t in origins {
                p.view_at(t, &mut view);
                let level = layout.level(&view, t);
                row_origins.push(t);
                let mut row = x.row_mut(r);
                let row = row
                    .as_slice_mut()
                    .expect("rows of a standard-layout array are contiguous");
                layout.row(&view, t, level, s.timestamp(t), events, row);
                p.restore(t, &mut view);
                for h in 0..horizon {
                    let idx = t + 1 + h;
                    // A gap inside the targets is fitted on its fill but never scored.
                    y[[r, h]] = p.z[idx] - level;
                    observed[r * horizon + h] = !p.missing[idx];
                }
                r += 1;
            }
            series.push((*si, first_row..r));
        }
        Samples {
            x,
            y,
            observed,
            origins: row_origins,
            series,
        }
    }
}

impl FittedModel for FallbackModel {
    fn predict(
        &self,
        recent: &Series,
        horizon: usize,
        quantile: f64,
    ) -> Result<Forecast, ForecastError> {
        self.0.predict(recent, horizon, quantile)
    }

    fn recent_len(&self, horizon: usize) -> usize {
        self.0.recent_len(horizon)
    }
}

impl RegressionModel {
    /// What the forecast says about how it was made.
    fn method(&self) -> ForecastMethod {
        let [blend, seasonal, last] = self.verdict.errors;
        let versus = format!(
            "mean absolute error on {} held-out origins: regression {blend:.3}, seasonal naive \
             {seasonal:.3}, last value {last:.3}",
            self.verdict.origins
        );
        match self.verdict.chosen {
            Chosen::Blend { .. } => ForecastMethod::Regression,
            Chosen::SeasonalNaive => ForecastMethod::SeasonalNaive { reason: versus },
            Chosen::Naive => ForecastMethod::Naive { reason: versus },
        }
    }

    /// Seasonal naive in place of the regression for this forecast, unchecked, saying why.
    fn unchecked(
        &self,
        recent: &Series,
        horizon: usize,
        quantile: f64,
        reason: String,
    ) -> Result<Forecast, ForecastError> {
        let mut forecast = self.fallback.predict(recent, horizon, quantile)?;
        forecast.method = ForecastMethod::Fallback { reason };
        Ok(forecast)
    }
}

impl FittedModel for RegressionModel {
    fn predict(
        &self,
        recent: &Series,
        horizon: usize,
        quantile: f64,
    ) -> Result<Forecast, ForecastError> {
        let layout = &self.shared.layout;
        check_request(recent.step, layout.step, quantile)?;
        if recent.values.len() < layout.lookback {
            return self.unchecked(
                recent,
                horizon,
                quantile,
                format!(
                    "recent history has {} points, the regression needs {}",
                    recent.values.len(),
                    layout.lookback
                ),
            );
        }
        // Only the lookback matters; preparing more would cost time every cycle.
        let from = recent.values.len()
            - layout
                .lookback
                .max(layout.main_period * 2)
                .min(recent.values.len());
        let tail = Series::new(
            recent.timestamp(from),
            recent.step,
            recent.values[from..].to_vec(),
        );
        let Some(p) = prepare(
            &tail,
            layout.main_period,
            &self.shared.events,
            Some(self.offset),
        ) else {
            // The regression's whole lookback is a gap: seasonal naive walks further back.
            return self.unchecked(
                recent,
                horizon,
                quantile,
                format!(
                    "the last {} points, all the regression reads, are gaps",
                    tail.values.len()
                ),
            );
        };
        let t = p.z.len() - 1;
        let level = layout.level(&p.z, t);
        let before = season_before(&p.z, t, layout.main_period);
        let regression: Option<Vec<f64>> = match &self.verdict.chosen {
            Chosen::Blend { .. } => {
                let mut row = vec![0.0; layout.features];
                layout.row(
                    &p.z,
                    t,
                    level,
                    tail.timestamp(t),
                    &self.shared.events,
                    &mut row,
                );
                self.shared.bounds.clip(&mut row);
                Some(
                    self.shared
                        .weights
                        .columns()
                        .into_iter()
                        .map(|w| row.iter().zip(w).map(|(x, w)| x * f64::from(*w)).sum())
                        .collect(),
                )
            }
            _ => None,
        };
        let ceiling = CEILING
            * self.history_max.max(highest(
                &recent.values
                    [recent.values.len() - self.recent_len(horizon).min(recent.values.len())..],
            ));
        let scale = self.band_scale;
        let fitted_h = layout.horizon;
        let naive = if horizon > fitted_h {
            Some(self.fallback.predict(recent, horizon, quantile)?)
        } else {
            None
        };
        let mut point = Vec::with_capacity(horizon);
        let mut lower = Vec::with_capacity(horizon);
        let mut upper = Vec::with_capacity(horizon);
        let back = |v: f64| (v.exp() - self.offset).clamp(0.0, ceiling);
        for h in 0..horizon {
            if h >= fitted_h {
                // Past the fitted horizon: seasonal naive, with its own band.
                if let Some(nv) = &naive {
                    point.push(nv.point[h].min(ceiling));
                    lower.push(nv.lower[h].min(ceiling));
                    upper.push(nv.upper[h].min(ceiling));
                }
                continue;
            }
            let seasonal = seasonal_naive_z(&p.z, t, h, layout.main_period, level);
            let zc = level
                + match (&self.verdict.chosen, &regression) {
                    (Chosen::Blend { weights }, Some(pred)) => {
                        let [a, c, b] = weights[h];
                        seasonal
                            + a * (pred[h] - seasonal)
                            + c * (p.z[t] - level - seasonal)
                            + b * season_drift(before, h, layout.main_period, level)
                    }
                    (Chosen::Naive, _) => p.z[t] - level,
                    _ => seasonal,
                };
            let (lo_q, hi_q) = match self.verdict.residuals.get(h) {
                Some(errors) => errors.band(quantile).ok_or_else(|| {
                    ForecastError::InvalidRequest(format!(
                        "the model keeps its band at another quantile than {quantile}; refit it"
                    ))
                })?,
                None => (0.0, 0.0),
            };
            let (lo_q, hi_q) = (scale * lo_q, scale * hi_q);
            let pt = back(zc);
            point.push(pt);
            lower.push(back(zc + lo_q).min(pt));
            upper.push(back(zc + hi_q).max(pt));
        }
        let mut forecast = Forecast {
            start: recent.end(),
            step: recent.step,
            point,
            lower,
            upper,
            quantile,
            method: self.method(),
        };
        forecast.raise_to_recurring_peaks(recent, layout.main_period);
        Ok(forecast)
    }

    /// The feature rows' lookback, two seasons to prepare them, the recurring peaks' seasons
    /// (one step beyond each side), and past the fitted horizon the fallback's.
    fn recent_len(&self, horizon: usize) -> usize {
        let layout = &self.shared.layout;
        let own = layout
            .lookback
            .max(2 * layout.main_period)
            .max(RECURRING_SEASONS * layout.main_period + 2);
        if horizon > layout.horizon {
            own.max(self.fallback.recent_len(horizon))
        } else {
            own
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::EventWindow;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    const STEP: i64 = 300;
    const DAY: usize = 288;

    /// Daily and weekly multiplicative seasonality with log-normal noise, 5-minute steps.
    fn demand(len: usize, seed: u64, noise: f64) -> Vec<f64> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let normal = Normal::new(0.0, noise).unwrap();
        (0..len)
            .map(|i| {
                let day = 2.0 * std::f64::consts::PI * (i % DAY) as f64 / DAY as f64;
                let week = 2.0 * std::f64::consts::PI * (i % (7 * DAY)) as f64 / (7 * DAY) as f64;
                let base = 1000.0
                    * (1.0 + 0.6 * day.sin() + 0.2 * (2.0 * day).cos())
                    * (1.0 + 0.2 * week.sin());
                base * normal.sample(&mut rng).exp()
            })
            .collect()
    }

    fn spec(horizon: usize, events: Vec<EventWindow>) -> ForecastSpec {
        ForecastSpec {
            seasons: vec![DAY, 7 * DAY],
            events,
            horizon,
            band_quantile: None,
        }
    }

    fn mae(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>() / a.len() as f64
    }

    #[test]
    fn the_recent_points_it_names_forecast_what_the_whole_history_does() {
        let mut all = demand(15 * DAY, 11, 0.1);
        for (i, value) in all.iter_mut().enumerate() {
            // A short daily peak, which the recurring-peak floor reads three seasons back for.
            if (100..103).contains(&(i % DAY)) {
                *value *= 4.0;
            }
            // A few gaps, as a real series has.
            if i % 997 == 0 {
                *value = f64::NAN;
            }
        }
        // Ends just before the daily peak, so the forecast's horizon covers it.
        let history = Series::new(0, STEP, all[..13 * DAY + 90].to_vec());
        // Past the fitted horizon too: the seasonal naive fallback answers there.
        for (seasons, horizon) in [(vec![DAY, 7 * DAY], 24), (vec![DAY], 24), (vec![DAY], 400)] {
            let spec = ForecastSpec {
                seasons,
                events: vec![],
                horizon: 24,
                band_quantile: None,
            };
            let model = RegressionForecaster::default()
                .fit(&history, &spec)
                .unwrap();
            let keep = model.recent_len(horizon);
            assert!(keep < history.values.len(), "{keep}");
            let from = history.values.len() - keep;
            let tail = Series::new(
                history.timestamp(from),
                STEP,
                history.values[from..].to_vec(),
            );
            let whole = model.predict(&history, horizon, 0.95).unwrap();
            assert_eq!(whole.method, ForecastMethod::Regression);
            assert_eq!(model.predict(&tail, horizon, 0.95).unwrap(), whole);
        }
    }

    #[test]
    fn beats_seasonal_naive_on_seasonal_demand() {
        let all = demand(15 * DAY, 3, 0.05);
        let mut reg_err = 0.0;
        let mut naive_err = 0.0;
        for k in 0..6 {
            let cut = 14 * DAY - 1 + k * 37;
            let hist = Series::new(0, STEP, all[..cut].to_vec());
            let truth = &all[cut..cut + 24];
            let f = RegressionForecaster::default()
                .fit(&hist, &spec(24, vec![]))
                .unwrap()
                .predict(&hist, 24, 0.95)
                .unwrap();
            assert_eq!(f.method, ForecastMethod::Regression);
            let n = super::super::SeasonalNaive
                .fit(&hist, &spec(24, vec![]))
                .unwrap()
                .predict(&hist, 24, 0.95)
                .unwrap();
            reg_err += mae(truth, &f.point);
            naive_err += mae(truth, &n.point);
        }
        assert!(
            reg_err < 0.8 * naive_err,
            "regression {reg_err} vs naive {naive_err}"
        );
    }

    /// Coverage of the [1-q, q] band over three unseen days.
    fn synthetic_coverage(config: RegressionConfig) -> f64 {
        let all = demand(17 * DAY, 11, 0.08);
        let hist = Series::new(0, STEP, all[..14 * DAY].to_vec());
        let model = RegressionForecaster::new(config)
            .fit(&hist, &spec(24, vec![]))
            .unwrap();
        let (mut inside, mut total) = (0, 0);
        for origin in (14 * DAY..17 * DAY - 24).step_by(7) {
            let recent = Series::new(0, STEP, all[..origin].to_vec());
            let f = model.predict(&recent, 24, 0.95).unwrap();
            for h in 0..24 {
                total += 1;
                let y = all[origin + h];
                if y >= f.lower[h] && y <= f.upper[h] {
                    inside += 1;
                }
            }
        }
        inside as f64 / total as f64
    }

    #[test]
    fn a_band_kept_at_one_quantile_forecasts_the_same_and_refuses_another() {
        let all = demand(15 * DAY, 11, 0.08);
        let hist = Series::new(0, STEP, all[..14 * DAY].to_vec());
        let full = RegressionForecaster::default()
            .fit(&hist, &spec(24, vec![]))
            .unwrap();
        let kept = RegressionForecaster::default()
            .fit(
                &hist,
                &ForecastSpec {
                    band_quantile: Some(0.9),
                    ..spec(24, vec![])
                },
            )
            .unwrap();
        assert!(kept.predict(&hist, 24, 0.9).unwrap().method.is_checked());
        assert_eq!(
            kept.predict(&hist, 24, 0.9).unwrap(),
            full.predict(&hist, 24, 0.9).unwrap()
        );
        let other = kept.predict(&hist, 24, 0.95);
        assert!(
            matches!(other, Err(ForecastError::InvalidRequest(ref m)) if m.contains("another quantile")),
            "{other:?}"
        );
    }

    #[test]
    fn band_is_calibrated_on_synthetic_seasonal_data() {
        // Held-out errors alone make the band: calibrated when the future is like the past.
        let coverage = synthetic_coverage(RegressionConfig::default());
        assert!((coverage - 0.90).abs() <= 0.04, "band coverage {coverage}");
    }

    #[test]
    fn survives_gaps_resets_and_spikes() {
        let clean = demand(15 * DAY, 5, 0.05);
        let mut broken = clean.clone();
        for v in &mut broken[3000..3030] {
            *v = f64::NAN; // a scrape outage of two and a half hours
        }
        for i in (100..14 * DAY).step_by(97) {
            broken[i] = f64::NAN;
        }
        broken[2000] = -1e6; // a counter reset seen as a negative rate
        broken[2500] = 0.0;
        broken[3500] *= 50.0;
        let cut = 14 * DAY;
        broken[cut - 5] *= 40.0; // a spike just before now
        let truth = &clean[cut..cut + 24];
        let hist = Series::new(0, STEP, broken[..cut].to_vec());
        let f = RegressionForecaster::default()
            .fit(&hist, &spec(24, vec![]))
            .unwrap()
            .predict(&hist, 24, 0.95)
            .unwrap();
        assert_eq!(f.method, ForecastMethod::Regression);
        assert!(
            f.point
                .iter()
                .chain(&f.lower)
                .chain(&f.upper)
                .all(|v| v.is_finite() && *v >= 0.0)
        );
        let clean_hist = Series::new(0, STEP, clean[..cut].to_vec());
        let g = RegressionForecaster::default()
            .fit(&clean_hist, &spec(24, vec![]))
            .unwrap()
            .predict(&clean_hist, 24, 0.95)
            .unwrap();
        let mean_truth = truth.iter().sum::<f64>() / 24.0;
        assert!(
            mae(truth, &f.point) < 1.5 * mae(truth, &g.point) + 0.02 * mean_truth,
            "broken {} clean {}",
            mae(truth, &f.point),
            mae(truth, &g.point)
        );
    }

    #[test]
    fn follows_a_level_shift() {
        let mut all = demand(15 * DAY, 9, 0.03);
        for v in &mut all[12 * DAY..] {
            *v *= 2.0;
        }
        let cut = 14 * DAY + 50;
        let hist = Series::new(0, STEP, all[..cut].to_vec());
        let f = RegressionForecaster::default()
            .fit(&hist, &spec(24, vec![]))
            .unwrap()
            .predict(&hist, 24, 0.95)
            .unwrap();
        let truth = &all[cut..cut + 24];
        let ratio = f.point.iter().sum::<f64>() / truth.iter().sum::<f64>();
        // Weekly lags still remember the old level (half); most of the shift is followed.
        assert!(ratio > 0.8 && ratio < 1.1, "forecast / truth = {ratio}");
    }

    #[test]
    fn short_history_falls_back_to_seasonal_naive_and_says_why() {
        let all = demand(DAY, 2, 0.05);
        let hist = Series::new(0, STEP, all);
        let f = RegressionForecaster::default()
            .fit(&hist, &spec(24, vec![]))
            .unwrap()
            .predict(&hist, 24, 0.95)
            .unwrap();
        match f.method {
            ForecastMethod::Fallback { reason } => {
                assert!(reason.contains("too short"), "{reason}")
            }
            other => panic!("expected a fallback, got {other:?}"),
        }
        assert_eq!(f.point.len(), 24);
    }

    #[test]
    fn event_regressor_raises_the_forecast_in_the_event_window() {
        let mut all = demand(15 * DAY, 13, 0.03);
        let mut events = Vec::new();
        // Irregular promotion days, so seasonality alone cannot predict them.
        for day in [1usize, 3, 4, 7, 9, 12, 14] {
            let start = day * DAY + 200;
            for v in &mut all[start..start + 12] {
                *v *= 2.0;
            }
            events.push(EventWindow {
                name: "promo".to_string(),
                start: (start as i64) * STEP,
                end: ((start + 12) as i64) * STEP,
            });
        }
        let cut = 14 * DAY + 190; // ten steps before the promotion starts
        let hist = Series::new(0, STEP, all[..cut].to_vec());
        let with = RegressionForecaster::default()
            .fit(&hist, &spec(24, events))
            .unwrap()
            .predict(&hist, 24, 0.95)
            .unwrap();
        let without = RegressionForecaster::default()
            .fit(&hist, &spec(24, vec![]))
            .unwrap()
            .predict(&hist, 24, 0.95)
            .unwrap();
        let inside: f64 = (10..22)
            .map(|h| with.point[h] / without.point[h])
            .sum::<f64>()
            / 12.0;
        let before: f64 = (0..8)
            .map(|h| with.point[h] / without.point[h])
            .sum::<f64>()
            / 8.0;
        assert!(inside > 1.6, "event window raised by {inside}");
        assert!(
            (before - 1.0).abs() < 0.15,
            "outside the window changed by {before}"
        );
        let truth_inside: f64 = (10..22).map(|h| all[cut + h]).sum();
        let fc_inside: f64 = (10..22).map(|h| with.point[h]).sum();
        assert!((fc_inside / truth_inside - 1.0).abs() < 0.2);
    }

    #[test]
    fn pooled_fit_gives_one_model_per_series() {
        let a = Series::new(0, 3600, demand(700, 1, 0.05));
        let b = Series::new(
            0,
            3600,
            demand(960, 2, 0.05).iter().map(|v| v * 30.0).collect(),
        );
        let short = Series::new(0, 3600, vec![1.0; 30]);
        let spec = ForecastSpec {
            seasons: vec![24, 168],
            events: vec![],
            horizon: 48,
            band_quantile: None,
        };
        let models =
            RegressionForecaster::default().fit_many(&[a.clone(), b.clone(), short.clone()], &spec);
        assert_eq!(models.len(), 3);
        let fb = models[1].as_ref().unwrap().predict(&b, 48, 0.9).unwrap();
        assert_eq!(fb.method, ForecastMethod::Regression);
        assert!(
            fb.point.iter().all(|p| *p > 100.0),
            "the scale of b is kept"
        );
        let fs = models[2]
            .as_ref()
            .unwrap()
            .predict(&short, 48, 0.9)
            .unwrap();
        assert!(matches!(fs.method, ForecastMethod::Fallback { .. }));
    }
}
