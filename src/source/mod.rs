//! Where demand comes from. One trait, one file per implementation.
//!
//! A source answers two questions about a demand query: its history on a regular grid (with
//! `NaN` where nothing was recorded, never an invented value) and its latest value. Sources
//! never sum, fill or guess: a query that does not yield exactly one series is an error that
//! names the query, so the controller holds instead of acting on doubled or partial demand.

pub mod prometheus;

use futures::future::BoxFuture;

use crate::series::Series;

/// One observed value of a demand query, at unix seconds `at`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub at: i64,
    pub value: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("query {query:?}: request failed after {attempts} attempt(s): {cause}")]
    Unreachable {
        query: String,
        attempts: u32,
        cause: String,
    },
    #[error("query {query:?}: timed out after {seconds}s")]
    Timeout { query: String, seconds: u64 },
    #[error("query {query:?}: Prometheus answered HTTP {status}: {message}")]
    Http {
        query: String,
        status: u16,
        message: String,
    },
    #[error("query {query:?}: Prometheus rejected it ({error_type}): {message}")]
    Rejected {
        query: String,
        error_type: String,
        message: String,
    },
    #[error("query {query:?}: unreadable response: {cause}")]
    Parse { query: String, cause: ParseError },
    #[error(
        "query {query:?} returned {count} series where one was expected ({labels}); \
         aggregate it, e.g. sum(...)"
    )]
    MultipleSeries {
        query: String,
        count: usize,
        labels: String,
    },
    #[error("reading {what}: {cause}")]
    Config { what: String, cause: String },
}

impl SourceError {
    /// A short, fixed label for the `tideshift_prometheus_errors_total{reason}` metric.
    /// Every value `reason()` returns, so the error counter starts at 0 for each and a rate()
    /// or an alert on it works before the first error.
    pub const REASONS: &'static [&'static str] = &[
        "unreachable",
        "timeout",
        "http",
        "rejected",
        "parse",
        "multiple_series",
        "config",
    ];

    pub fn reason(&self) -> &'static str {
        match self {
            SourceError::Unreachable { .. } => "unreachable",
            SourceError::Timeout { .. } => "timeout",
            SourceError::Http { .. } => "http",
            SourceError::Rejected { .. } => "rejected",
            SourceError::Parse { .. } => "parse",
            SourceError::MultipleSeries { .. } => "multiple_series",
            SourceError::Config { .. } => "config",
        }
    }
}

/// What went wrong reading a Prometheus API response body.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("not JSON of the Prometheus API shape: {0}")]
    Json(String),
    #[error("status {status:?} ({error_type}): {message}")]
    NotSuccess {
        status: String,
        error_type: String,
        message: String,
    },
    #[error("expected resultType {expected:?}, got {got:?}")]
    ResultType { expected: String, got: String },
    #[error("sample value {0:?} is not a number")]
    Value(String),
    #[error("sample timestamp {0} is not a finite time")]
    Timestamp(f64),
}

/// An extension point: somewhere demand history can be read from.
pub trait DemandSource: Send + Sync {
    /// The query's values on the grid `start, start + step, ... <= end` (unix seconds; `start`
    /// is rounded down to a multiple of `step`). Missing or non-finite points are `NaN`.
    fn range<'a>(
        &'a self,
        query: &'a str,
        start: i64,
        end: i64,
        step: i64,
    ) -> BoxFuture<'a, Result<Series, SourceError>>;

    /// The query's value now, or `None` when it has no current value (absent or stale).
    fn latest<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<Option<Sample>, SourceError>>;

    /// The caller will not ask for the query's points before `before` again soon (it fetched a
    /// whole history to refit a model, and predicts from the latest points until the next
    /// refit): a source that caches history drops them. Others need not do anything.
    fn forget_before(&self, _query: &str, _step: i64, _before: i64) {}

    /// Only the queries `keep` accepts will be asked again (a policy was edited or deleted): a
    /// source that caches history forgets the others.
    fn retain_queries(&self, _keep: &dyn Fn(&str) -> bool) {}
}

/// Age in seconds of the last finite point of `series` at `now`, or `None` when it has none.
pub fn last_finite_age(series: &Series, now: i64) -> Option<i64> {
    series
        .values
        .iter()
        .rposition(|v| v.is_finite())
        .map(|i| now - series.timestamp(i))
}

/// The number of points of the grid `[start, end]` at `step`, both ends included.
pub fn grid_len(start: i64, end: i64, step: i64) -> usize {
    if end < start || step <= 0 {
        0
    } else {
        ((end - start) / step + 1) as usize
    }
}

/// `t` rounded down to a multiple of `step`, so that every cycle asks for the same grid.
pub fn align_down(t: i64, step: i64) -> i64 {
    if step <= 0 {
        t
    } else {
        t.div_euclid(step) * step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_helpers_agree_with_prometheus_range_semantics() {
        assert_eq!(grid_len(0, 0, 60), 1);
        assert_eq!(grid_len(0, 59, 60), 1);
        assert_eq!(grid_len(0, 60, 60), 2);
        assert_eq!(grid_len(10, 0, 60), 0);
        assert_eq!(align_down(119, 60), 60);
        assert_eq!(align_down(-1, 60), -60);
    }

    #[test]
    fn last_finite_age_skips_trailing_gaps() {
        let s = Series::new(0, 60, vec![1.0, 2.0, f64::NAN, f64::NAN]);
        assert_eq!(last_finite_age(&s, 240), Some(180));
        let empty = Series::new(0, 60, vec![f64::NAN]);
        assert_eq!(last_finite_age(&empty, 240), None);
    }
}
