//! Forecast accuracy of THE forecaster (`default_forecaster`) on the M4 Hourly set or on any
//! `timestamp,value` trace, next to seasonal naive: what `tideshift backtest` measures
//! (its flags and tables are in `cli/backtest.rs`).

mod m4;
mod metrics;
mod traces;

pub use m4::*;
pub use metrics::*;
pub use traces::*;

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
