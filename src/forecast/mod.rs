//! Demand forecasting. One trait, one file per implementation.
//!
//! A forecaster is fitted on a regular demand series (every `retrain`) and the fitted model
//! predicts from the latest history (every `interval`), so a cycle does not pay for a refit.

use crate::policy::EventWindow;
pub use crate::series::Series;

/// What a fit needs besides the history.
#[derive(Clone, Debug, Default)]
pub struct ForecastSpec {
    /// Seasonal periods in steps (e.g. 1440 and 10080 for day and week at 1-minute steps).
    pub seasons: Vec<usize>,
    /// Known events over the history and the horizon: regressors.
    pub events: Vec<EventWindow>,
    /// Largest horizon (in steps) that will be asked of the fitted model.
    pub horizon: usize,
    /// The one band quantile that will be asked of the fitted model, if known: it may then keep
    /// its band at that quantile only (and `1 - q`), not the whole error distribution, and
    /// answers no other. The daemon knows it (a policy's `quantile`; a change refits); the
    /// simulator and the backtest ask for several.
    pub band_quantile: Option<f64>,
}

/// A forecast of `point.len()` steps starting at `start`, with a band at a quantile.
#[derive(Clone, Debug, PartialEq)]
pub struct Forecast {
    pub start: i64,
    pub step: i64,
    /// The central forecast.
    pub point: Vec<f64>,
    /// The lower band at `1 - quantile`.
    pub lower: Vec<f64>,
    /// The upper band at `quantile`: what the planner plans for.
    pub upper: Vec<f64>,
    pub quantile: f64,
    /// Which method produced it, and why when it is a fallback.
    pub method: ForecastMethod,
}

/// How many past seasons must all have reached a level at the same phase before the upper band
/// keeps it: three, so one odd day (an outage, a one-off campaign) never raises the band alone.
pub const RECURRING_SEASONS: usize = 3;

impl Forecast {
    /// Raise the upper band to the level the same phase (within one step either side) reached
    /// in each of the last `RECURRING_SEASONS` seasons of `recent`. A peak that came at this
    /// time on every recent day (a daily flash sale, a nightly settlement rush) is planned for
    /// even when a model fitted mostly on ordinary hours smooths it away: for online capacity,
    /// missing a peak that history keeps showing costs far more than a few spare replicas.
    /// A step whose past seasons have a gap (NaN) or are not all in `recent` is left alone.
    pub fn raise_to_recurring_peaks(&mut self, recent: &Series, season: usize) {
        if season < 2 || recent.step != self.step || self.start != recent.end() {
            return;
        }
        let n = recent.values.len();
        for (h, upper) in self.upper.iter_mut().enumerate() {
            let mut floor = f64::INFINITY;
            // The most recent seasons that are already history for step h.
            let first = h / season + 1;
            for k in first..first + RECURRING_SEASONS {
                let Some(centre) = (n + h).checked_sub(k * season) else {
                    floor = f64::NAN;
                    break;
                };
                let around = centre.saturating_sub(1)..=(centre + 1).min(n.saturating_sub(1));
                let reached = recent.values[around]
                    .iter()
                    .copied()
                    .fold(f64::NAN, f64::max);
                if !reached.is_finite() {
                    floor = f64::NAN;
                    break;
                }
                floor = floor.min(reached);
            }
            if floor.is_finite() && floor > *upper {
                *upper = floor;
            }
        }
    }
}

/// How a forecast was made. Every method but `Fallback` was checked against the others on
/// held-out origins of the workload's own history; a `Fallback` was not, and the planner does
/// not plan ahead on it.
#[derive(Clone, Debug, PartialEq)]
pub enum ForecastMethod {
    /// The regression, blended per horizon step with seasonal naive: it did best on held-out
    /// origins.
    Regression,
    /// Seasonal naive (tomorrow is like today): it did better than the regression on held-out
    /// origins, or was configured; says which.
    SeasonalNaive { reason: String },
    /// The last value carried forward: it did better than the others on held-out origins.
    Naive { reason: String },
    /// Too little or too broken history to fit and check a model: seasonal naive, unchecked.
    Fallback { reason: String },
}

impl ForecastMethod {
    /// The `method` label of metrics and the word in status and JSON.
    pub fn name(&self) -> &'static str {
        match self {
            ForecastMethod::Regression => "regression",
            ForecastMethod::SeasonalNaive { .. } => "seasonal-naive",
            ForecastMethod::Naive { .. } => "naive",
            ForecastMethod::Fallback { .. } => "fallback",
        }
    }

    /// Why this method, for status and Events; empty for the regression.
    pub fn reason(&self) -> &str {
        match self {
            ForecastMethod::Regression => "",
            ForecastMethod::SeasonalNaive { reason }
            | ForecastMethod::Naive { reason }
            | ForecastMethod::Fallback { reason } => reason,
        }
    }

    /// Checked against the other methods on held-out origins (not a fallback).
    pub fn is_checked(&self) -> bool {
        !matches!(self, ForecastMethod::Fallback { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ForecastError {
    #[error("no usable demand history: {0}")]
    NoHistory(String),
    #[error("model fit failed: {0}")]
    Fit(String),
    #[error("invalid forecast request: {0}")]
    InvalidRequest(String),
}

/// An extension point: a way to learn demand from history.
pub trait Forecaster: Send + Sync {
    fn name(&self) -> &'static str;
    fn fit(
        &self,
        history: &Series,
        spec: &ForecastSpec,
    ) -> Result<Box<dyn FittedModel>, ForecastError>;

    /// Fits several series that share a spec and step (the workloads of one policy, or a
    /// benchmark set). A forecaster may pool them into one model; by default each is fitted
    /// on its own. One result per history, in order.
    fn fit_many(
        &self,
        histories: &[Series],
        spec: &ForecastSpec,
    ) -> Vec<Result<Box<dyn FittedModel>, ForecastError>> {
        histories.iter().map(|h| self.fit(h, spec)).collect()
    }
}

/// A fitted model; cheap to call every cycle.
pub trait FittedModel: Send + Sync {
    /// Forecast `horizon` steps after the end of `recent` (the latest history, which may
    /// extend past what the model was fitted on).
    fn predict(
        &self,
        recent: &Series,
        horizon: usize,
        quantile: f64,
    ) -> Result<Forecast, ForecastError>;

    /// How many of the latest points `predict` reads for a forecast of `horizon` steps: given
    /// only these it forecasts what it would from the whole history (except that a walk back
    /// past gaps stops there). The daemon keeps just this much between fits, so its memory
    /// does not grow with `forecast.history`.
    fn recent_len(&self, horizon: usize) -> usize;
}
pub mod accuracy;
pub mod backtest;
pub mod prep;
pub mod refit;
pub mod regression;
pub mod seasonal_naive;

pub use accuracy::{ForecastRecord, RecentAccuracy};
pub use refit::RefitSchedule;
pub use regression::{CEILING, RegressionConfig, RegressionForecaster};
pub use seasonal_naive::{SeasonalNaive, SeasonalNaiveModel};

/// THE forecaster used by the daemon, `tideshift simulate` and `tideshift backtest`.
pub fn default_forecaster() -> Box<dyn Forecaster> {
    Box::new(RegressionForecaster::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat_forecast(start: i64, step: i64, upper: f64, len: usize) -> Forecast {
        Forecast {
            start,
            step,
            point: vec![upper; len],
            lower: vec![upper; len],
            upper: vec![upper; len],
            quantile: 0.9,
            method: ForecastMethod::Regression,
        }
    }

    /// Four days of 10 steps, baseline 100, with a spike of 600 at phase 5 on the given days.
    fn days_with_spike(spike_days: &[usize]) -> Series {
        let mut values = vec![100.0; 40];
        for &d in spike_days {
            values[d * 10 + 5] = 600.0;
        }
        Series::new(0, 60, values)
    }

    #[test]
    fn a_peak_on_each_of_the_last_seasons_raises_the_upper_band() {
        let recent = days_with_spike(&[1, 2, 3]);
        let mut f = flat_forecast(recent.end(), 60, 110.0, 20);
        f.raise_to_recurring_peaks(&recent, 10);
        // The spike's phase and one step either side (timing jitter) are raised.
        assert_eq!(&f.upper[4..=6], &[600.0, 600.0, 600.0]);
        // A season ahead, the three seasons before it that are history decide.
        assert_eq!(f.upper[15], 600.0);
        assert_eq!(f.upper[0], 110.0);
        assert_eq!(f.upper[8], 110.0);
        assert_eq!(f.point[5], 110.0, "only the band moves");
    }

    #[test]
    fn a_peak_missing_on_one_recent_season_does_not_raise_the_band() {
        let recent = days_with_spike(&[0, 1, 3]);
        let mut f = flat_forecast(recent.end(), 60, 110.0, 10);
        f.raise_to_recurring_peaks(&recent, 10);
        assert!(f.upper.iter().all(|&u| u == 110.0), "{:?}", f.upper);
    }

    #[test]
    fn gaps_and_short_history_leave_the_band_alone() {
        let mut recent = days_with_spike(&[1, 2, 3]);
        recent.values[25] = f64::NAN;
        recent.values[24] = f64::NAN;
        recent.values[26] = f64::NAN;
        let mut f = flat_forecast(recent.end(), 60, 110.0, 10);
        f.raise_to_recurring_peaks(&recent, 10);
        assert_eq!(f.upper[5], 110.0);

        let short = Series::new(0, 60, vec![500.0; 20]);
        let mut f = flat_forecast(short.end(), 60, 110.0, 10);
        f.raise_to_recurring_peaks(&short, 10);
        assert!(f.upper.iter().all(|&u| u == 110.0));
    }
}
