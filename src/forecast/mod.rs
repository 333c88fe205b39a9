//! Demand forecasting. One trait, one file per implementation.
//!
//! A forecaster is fitted on a regular demand series (every `retrain`) and the fitted model
//! predicts from the latest history (every `interval`), so a cycle does not pay for a refit.

use crate::policy::EventWindow;

/// A regular time series: `values[i]` is the demand at `start + i * step` (unix seconds).
/// Missing points are `NaN`; sources never invent values for gaps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub start: i64,
    pub step: i64,
    pub values: Vec<f64>,
}

impl Series {
    pub fn new(start: i64, step: i64, values: Vec<f64>) -> Self {
        Self {
            start,
            step,
            values,
        }
    }
    /// Time of the point after the last one: where a forecast starts.
    pub fn end(&self) -> i64 {
        self.start + self.step * self.values.len() as i64
    }
    pub fn timestamp(&self, i: usize) -> i64 {
        self.start + self.step * i as i64
    }
}

/// What a fit needs besides the history.
#[derive(Clone, Debug, Default)]
pub struct ForecastSpec {
    /// Seasonal periods in steps (e.g. 1440 and 10080 for day and week at 1-minute steps).
    pub seasons: Vec<usize>,
    /// Known events over the history and the horizon: regressors.
    pub events: Vec<EventWindow>,
    /// Largest horizon (in steps) that will be asked of the fitted model.
    pub horizon: usize,
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

#[derive(Clone, Debug, PartialEq)]
pub enum ForecastMethod {
    Regression,
    /// Too little or too broken history for the regression; says why.
    SeasonalNaive {
        reason: String,
    },
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
}
pub mod backtest;
pub mod prep;
pub mod regression;
pub mod seasonal_naive;

pub use regression::{RegressionConfig, RegressionForecaster};
pub use seasonal_naive::{SeasonalNaive, SeasonalNaiveModel};

/// THE forecaster used by the daemon, `tideshift simulate` and `tideshift backtest`.
pub fn default_forecaster() -> Box<dyn Forecaster> {
    Box::new(RegressionForecaster::default())
}
