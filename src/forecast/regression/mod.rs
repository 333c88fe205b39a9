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

mod fit;
mod layout;
mod model;
mod prepare;
mod ridge;
mod validation;
mod weights;

use std::sync::Arc;

use ndarray::Array2;

use self::layout::{EventIndex, FeatureBounds, FeatureRange, Layout};
use self::prepare::{Prepared, prepare};
pub use self::ridge::{FittedRidge, Ridge, RidgeError};
use self::validation::{
    Chosen, Judging, Samples, Verdict, season_before, season_drift, seasonal_naive_z,
};
use self::weights::StepWeights;
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
    weights: StepWeights,
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
