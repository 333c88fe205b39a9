//! Demand from the Prometheus HTTP API: `/api/v1/query_range` for history and `/api/v1/query`
//! for the latest value.
//!
//! - Range queries are split into chunks of at most `max_points` points, because Prometheus
//!   refuses more than 11,000 points per series in one query.
//! - History is cached per (query, step): a cycle asks only for the points after the cached
//!   ones (plus a few recent ones again, whose rate windows may have been incomplete).
//!   `history` reads a whole range the same way without the cache, and says which series the
//!   query returned (`tideshift simulate --prometheus`).
//! - `NaN`, `±Inf` and negative values become gaps (`NaN`): demand is a finite, non-negative
//!   amount and anything else is unusable rather than a reason to scale.
//! - A query that yields several series now is an error naming the query: summing them would
//!   silently double demand when a series is duplicated (a relabelling mistake, two scrapes),
//!   so the controller holds and reports instead. Write the query with `sum(...)`. In history
//!   (range queries) only the points where several series overlap are unusable: they become
//!   gaps, so a duplicate that is gone does not block the policy for its whole history.
//! - Network errors, timeouts, HTTP 5xx and 429 are retried with exponential backoff; HTTP 4xx
//!   (a bad query) is not.
//! - The bearer token is read from its file on every request (projected tokens rotate) and is
//!   never logged.
//!
//! One concern a file: `parse.rs` reads the API's JSON, `grid.rs` puts what it read on the
//! grid a forecaster wants, `cache.rs` keeps history between cycles, `client.rs` talks HTTP
//! (chunks, retries, token, TLS) and is the [`DemandSource`](super::DemandSource).

mod cache;
mod client;
mod grid;
mod parse;

use std::path::PathBuf;
use std::time::Duration;

pub use client::PrometheusSource;
pub use grid::{
    GridChunk, RangeAnswer, chunk_from_body, grid_from_body, one_series, sample_from_body, to_grid,
};
pub use parse::{RawSample, RawSeries, parse_matrix, parse_vector};

/// Prometheus's own limit is 11,000 points per series per query; stay clear of it.
pub const DEFAULT_MAX_POINTS: usize = 10_000;

#[derive(Clone, Debug)]
pub struct PrometheusConfig {
    /// Base URL, e.g. `http://prometheus:9090` (a path prefix is kept).
    pub url: String,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// Per HTTP request; also sent to Prometheus as its query `timeout`.
    pub timeout: Duration,
    /// Attempts per request, including the first.
    pub attempts: u32,
    /// First retry delay; doubles per attempt.
    pub backoff: Duration,
    pub max_points: usize,
}

impl PrometheusConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token_file: None,
            ca_file: None,
            timeout: Duration::from_secs(10),
            attempts: 3,
            backoff: Duration::from_millis(200),
            max_points: DEFAULT_MAX_POINTS,
        }
    }
}
