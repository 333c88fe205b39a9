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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;

use super::{DemandSource, ParseError, Sample, SourceError, align_down, grid_len};
use crate::policy::PolicyDuration;
use crate::series::Series;

/// Prometheus's own limit is 11,000 points per series per query; stay clear of it.
pub const DEFAULT_MAX_POINTS: usize = 10_000;

/// Requests to Prometheus in flight at once, and idle connections kept for reuse. Every
/// policy's cycle reads demand at the same time after a start: without a bound the client
/// opened one connection per concurrent request (700 for 500 policies) and kept them all, each
/// with a read buffer grown to the largest history chunk it carried. Prometheus itself runs 20
/// queries at once by default (`--query.max-concurrency`); more only wait there.
const MAX_IN_FLIGHT: usize = 16;

/// Points at the end of the cached history fetched again each cycle: the newest points of a
/// `rate()` may have been computed before the last scrape arrived.
const REFETCH_POINTS: i64 = 3;

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

/// How to reach Prometheus besides its URL: the flags `tideshift run` and `tideshift simulate
/// --prometheus` share, so a rehearsal reads history exactly as the daemon would.
#[derive(Clone, Debug, clap::Args)]
pub struct PrometheusClientArgs {
    /// File holding a bearer token for Prometheus (read on every request; never logged).
    #[arg(long, env = "TIDESHIFT_PROMETHEUS_TOKEN_FILE", value_name = "FILE")]
    pub prometheus_token_file: Option<PathBuf>,
    /// PEM file of the CA that signed Prometheus's certificate.
    #[arg(long, env = "TIDESHIFT_PROMETHEUS_CA_FILE", value_name = "FILE")]
    pub prometheus_ca_file: Option<PathBuf>,
    /// Timeout of one Prometheus request.
    #[arg(
        long,
        env = "TIDESHIFT_PROMETHEUS_TIMEOUT",
        default_value = "10s",
        value_name = "DURATION"
    )]
    pub prometheus_timeout: PolicyDuration,
}

impl PrometheusClientArgs {
    pub fn config(&self, url: &str) -> PrometheusConfig {
        let mut config = PrometheusConfig::new(url);
        config.token_file = self.prometheus_token_file.clone();
        config.ca_file = self.prometheus_ca_file.clone();
        config.timeout = self.prometheus_timeout.0;
        config
    }
}

pub struct PrometheusSource {
    http: reqwest::Client,
    config: PrometheusConfig,
    base: String,
    cache: Mutex<HashMap<(String, i64), CachedHistory>>,
    in_flight: tokio::sync::Semaphore,
}

/// A query's history kept between cycles, in `f32`: a daemon holds one per online workload
/// (14 days at 1m are 20,160 points), and demand needs no more than its 7 significant digits.
struct CachedHistory {
    start: i64,
    step: i64,
    values: Vec<f32>,
}

impl CachedHistory {
    fn new(series: &Series) -> Self {
        Self {
            start: series.start,
            step: series.step,
            values: series.values.iter().map(|&v| v as f32).collect(),
        }
    }

    /// One past the last cached time.
    fn end(&self) -> i64 {
        self.start + self.values.len() as i64 * self.step
    }

    /// Drops the points before `before`, and the memory they held.
    fn forget_before(&mut self, before: i64) {
        if before <= self.start || self.step <= 0 {
            return;
        }
        let drop = (((before - self.start) / self.step) as usize).min(self.values.len());
        self.values.drain(..drop);
        self.values.shrink_to_fit();
        self.start += drop as i64 * self.step;
    }
}

/// One series of a matrix result, with its labels and raw `(time, value)` points.
#[derive(Clone, Debug, PartialEq)]
pub struct RawSeries {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(f64, f64)>,
}

/// One element of a vector result.
#[derive(Clone, Debug, PartialEq)]
pub struct RawSample {
    pub labels: BTreeMap<String, String>,
    pub at: f64,
    pub value: f64,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    status: &'a str,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    #[serde(default)]
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct MatrixEntry {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

#[derive(Deserialize)]
struct VectorEntry {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

fn parse_envelope(body: &[u8], expected: &str) -> Result<serde_json::Value, ParseError> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?;
    if envelope.status != "success" {
        return Err(ParseError::NotSuccess {
            status: envelope.status.to_string(),
            error_type: envelope.error_type.unwrap_or_default(),
            message: envelope.error.unwrap_or_default(),
        });
    }
    let data = envelope
        .data
        .ok_or_else(|| ParseError::Json("missing field `data`".into()))?;
    if data.result_type != expected {
        return Err(ParseError::ResultType {
            expected: expected.into(),
            got: data.result_type,
        });
    }
    Ok(data.result)
}

/// Prometheus writes sample values as strings, including `NaN`, `+Inf` and `-Inf`.
fn parse_value(text: &str) -> Result<f64, ParseError> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text
            .parse::<f64>()
            .map_err(|_| ParseError::Value(truncate(text, 40))),
    }
}

fn check_time(t: f64) -> Result<f64, ParseError> {
    if t.is_finite() && t.abs() < 1e13 {
        Ok(t)
    } else {
        Err(ParseError::Timestamp(t))
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Parse a `/api/v1/query_range` response body. Never panics, whatever the bytes.
pub fn parse_matrix(body: &[u8]) -> Result<Vec<RawSeries>, ParseError> {
    let result = parse_envelope(body, "matrix")?;
    let entries: Vec<MatrixEntry> =
        serde_json::from_value(result).map_err(|e| ParseError::Json(e.to_string()))?;
    entries
        .into_iter()
        .map(|entry| {
            let points = entry
                .values
                .iter()
                .map(|(t, v)| Ok((check_time(*t)?, parse_value(v)?)))
                .collect::<Result<Vec<_>, ParseError>>()?;
            Ok(RawSeries {
                labels: entry.metric,
                points,
            })
        })
        .collect()
}

/// Parse a `/api/v1/query` response body whose result is a vector (or a scalar).
pub fn parse_vector(body: &[u8]) -> Result<Vec<RawSample>, ParseError> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?;
    let is_scalar = envelope
        .data
        .as_ref()
        .is_some_and(|d| d.result_type == "scalar");
    if is_scalar {
        let result = parse_envelope(body, "scalar")?;
        let (t, v): (f64, String) =
            serde_json::from_value(result).map_err(|e| ParseError::Json(e.to_string()))?;
        return Ok(vec![RawSample {
            labels: BTreeMap::new(),
            at: check_time(t)?,
            value: parse_value(&v)?,
        }]);
    }
    let result = parse_envelope(body, "vector")?;
    let entries: Vec<VectorEntry> =
        serde_json::from_value(result).map_err(|e| ParseError::Json(e.to_string()))?;
    entries
        .into_iter()
        .map(|entry| {
            Ok(RawSample {
                labels: entry.metric,
                at: check_time(entry.value.0)?,
                value: parse_value(&entry.value.1)?,
            })
        })
        .collect()
}

/// Demand is a finite, non-negative amount; anything else is a gap.
fn usable(value: f64) -> f64 {
    if value.is_finite() && value >= 0.0 {
        value
    } else {
        f64::NAN
    }
}

fn describe_labels(series: &[BTreeMap<String, String>]) -> String {
    series
        .iter()
        .take(3)
        .map(|labels| {
            let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            format!("{{{}}}", inner.join(","))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Put one series' points on the grid `start + i * step`, `len` points.
pub fn to_grid(series: Option<&RawSeries>, start: i64, step: i64, len: usize) -> Vec<f64> {
    let mut values = vec![f64::NAN; len];
    if let Some(series) = series {
        for &(t, v) in &series.points {
            let offset = (t - start as f64) / step as f64;
            let index = offset.round();
            if index >= 0.0 && (index as usize) < len {
                values[index as usize] = usable(v);
            }
        }
    }
    values
}

/// Put the points of every series on the grid; a point where more than one series has a value
/// is a gap (two series where one was expected cannot be told apart, nor summed). Returns the
/// values and how many points were such overlaps.
fn merge_to_grid(series: &[RawSeries], start: i64, step: i64, len: usize) -> (Vec<f64>, usize) {
    let mut values = vec![f64::NAN; len];
    let mut seen = vec![0u32; len];
    for one in series {
        for (i, value) in to_grid(Some(one), start, step, len).into_iter().enumerate() {
            if value.is_finite() {
                seen[i] += 1;
                values[i] = value;
            }
        }
    }
    let mut overlaps = 0;
    for (value, count) in values.iter_mut().zip(seen) {
        if count > 1 {
            *value = f64::NAN;
            overlaps += 1;
        }
    }
    (values, overlaps)
}

/// The one series a demand query must yield, or `None` when it yielded nothing.
pub fn one_series<T>(
    query: &str,
    items: Vec<T>,
    labels: impl Fn(&T) -> &BTreeMap<String, String>,
) -> Result<Option<T>, SourceError> {
    if items.len() > 1 {
        let all: Vec<BTreeMap<String, String>> = items.iter().map(|i| labels(i).clone()).collect();
        return Err(SourceError::MultipleSeries {
            query: query.to_string(),
            count: items.len(),
            labels: describe_labels(&all),
        });
    }
    Ok(items.into_iter().next())
}

/// One chunk of a range query on the grid, with what the grid alone does not tell: which
/// series the answer held and at how many points several of them overlapped (those points
/// are gaps in `values`).
#[derive(Clone, Debug, PartialEq)]
pub struct GridChunk {
    pub values: Vec<f64>,
    pub labels: Vec<BTreeMap<String, String>>,
    pub overlaps: usize,
}

/// One chunk of a range query, from response body to grid values: what `range` does with
/// each answer, as a pure function so the fuzzer (`fuzz/`) runs exactly the daemon's code.
pub fn chunk_from_body(
    query: &str,
    body: &[u8],
    start: i64,
    step: i64,
    len: usize,
) -> Result<GridChunk, SourceError> {
    let series = parse_matrix(body).map_err(|cause| SourceError::Parse {
        query: query.to_string(),
        cause,
    })?;
    let (values, overlaps) = merge_to_grid(&series, start, step, len);
    Ok(GridChunk {
        values,
        labels: series.into_iter().map(|s| s.labels).collect(),
        overlaps,
    })
}

/// [`chunk_from_body`]'s grid values, warning when several series overlapped.
pub fn grid_from_body(
    query: &str,
    body: &[u8],
    start: i64,
    step: i64,
    len: usize,
) -> Result<Vec<f64>, SourceError> {
    let chunk = chunk_from_body(query, body, start, step, len)?;
    warn_overlaps(query, &chunk.labels, chunk.overlaps);
    Ok(chunk.values)
}

fn warn_overlaps(query: &str, labels: &[BTreeMap<String, String>], overlaps: usize) {
    if overlaps > 0 {
        tracing::warn!(
            query,
            points = overlaps,
            series = %describe_labels(labels),
            "several series at the same time in history; those points are gaps"
        );
    }
}

/// A whole range query's answer: the grid the daemon reads, every distinct label set the
/// query returned over the range (none, one, or several), and the points where several series
/// overlapped (gaps in `series`).
#[derive(Clone, Debug, PartialEq)]
pub struct RangeAnswer {
    pub series: Series,
    pub labels: Vec<BTreeMap<String, String>>,
    pub overlaps: usize,
}

impl RangeAnswer {
    /// The label sets, as an error message shows them (the first three).
    pub fn describe_labels(&self) -> String {
        describe_labels(&self.labels)
    }
}

/// An instant query's answer as the latest sample: what `latest` does with the response body.
pub fn sample_from_body(query: &str, body: &[u8]) -> Result<Option<Sample>, SourceError> {
    let samples = parse_vector(body).map_err(|cause| SourceError::Parse {
        query: query.to_string(),
        cause,
    })?;
    let sample = one_series(query, samples, |s| &s.labels)?;
    Ok(sample.and_then(|s| {
        let value = usable(s.value);
        value.is_finite().then_some(Sample {
            at: s.at.floor() as i64,
            value,
        })
    }))
}

enum Attempt {
    Done(Vec<u8>),
    Retry(SourceError),
    Fail(SourceError),
}

impl PrometheusSource {
    pub fn new(config: PrometheusConfig) -> Result<Self, SourceError> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(MAX_IN_FLIGHT)
            .user_agent(concat!("tideshift/", env!("CARGO_PKG_VERSION")));
        if let Some(ca_file) = &config.ca_file {
            let pem = std::fs::read(ca_file).map_err(|e| SourceError::Config {
                what: format!("Prometheus CA file {}", ca_file.display()),
                cause: e.to_string(),
            })?;
            let certificates =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| SourceError::Config {
                    what: format!("Prometheus CA file {}", ca_file.display()),
                    cause: e.to_string(),
                })?;
            if certificates.is_empty() {
                return Err(SourceError::Config {
                    what: format!("Prometheus CA file {}", ca_file.display()),
                    cause: "no PEM certificate in it".into(),
                });
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build().map_err(|e| SourceError::Config {
            what: "HTTP client".into(),
            cause: e.to_string(),
        })?;
        let base = config.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(SourceError::Config {
                what: "Prometheus URL".into(),
                cause: format!("{base:?} must start with http:// or https://"),
            });
        }
        Ok(Self {
            http,
            config,
            base,
            cache: Mutex::new(HashMap::new()),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
        })
    }

    fn token(&self, query: &str) -> Result<Option<String>, SourceError> {
        let Some(path) = &self.config.token_file else {
            return Ok(None);
        };
        let token = std::fs::read_to_string(path).map_err(|e| SourceError::Config {
            what: format!("Prometheus token file {} (query {query:?})", path.display()),
            cause: e.to_string(),
        })?;
        Ok(Some(token.trim().to_string()))
    }

    async fn attempt(&self, path: &str, query: &str, params: &[(&str, String)]) -> Attempt {
        let token = match self.token(query) {
            Ok(token) => token,
            Err(e) => return Attempt::Fail(e),
        };
        let mut request = self
            .http
            .get(format!("{}{path}", self.base))
            .query(params)
            .query(&[
                ("query", query),
                (
                    "timeout",
                    &format!("{}s", self.config.timeout.as_secs().max(1)),
                ),
            ]);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        // Held until the body is read; the semaphore is never closed.
        let _slot = self.in_flight.acquire().await;
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_timeout() => {
                return Attempt::Retry(SourceError::Timeout {
                    query: query.to_string(),
                    seconds: self.config.timeout.as_secs(),
                });
            }
            Err(e) => {
                return Attempt::Retry(SourceError::Unreachable {
                    query: query.to_string(),
                    attempts: 1,
                    cause: error_chain(&e),
                });
            }
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(body) => body.to_vec(),
            Err(e) if e.is_timeout() => {
                return Attempt::Retry(SourceError::Timeout {
                    query: query.to_string(),
                    seconds: self.config.timeout.as_secs(),
                });
            }
            Err(e) => {
                return Attempt::Retry(SourceError::Unreachable {
                    query: query.to_string(),
                    attempts: 1,
                    cause: error_chain(&e),
                });
            }
        };
        if status.is_success() {
            return Attempt::Done(body);
        }
        // Prometheus explains 4xx (bad query) and 422/503 in the usual JSON envelope.
        let explained = parse_envelope(&body, "matrix").err();
        let error = match explained {
            Some(ParseError::NotSuccess {
                error_type,
                message,
                ..
            }) if status.is_client_error() && status.as_u16() != 429 => SourceError::Rejected {
                query: query.to_string(),
                error_type,
                message,
            },
            _ => SourceError::Http {
                query: query.to_string(),
                status: status.as_u16(),
                message: truncate(&String::from_utf8_lossy(&body), 200),
            },
        };
        if status.is_server_error() || status.as_u16() == 429 {
            Attempt::Retry(error)
        } else {
            Attempt::Fail(error)
        }
    }

    async fn get(
        &self,
        path: &str,
        query: &str,
        params: &[(&str, String)],
    ) -> Result<Vec<u8>, SourceError> {
        let attempts = self.config.attempts.max(1);
        let mut delay = self.config.backoff;
        let mut last = None;
        for attempt in 1..=attempts {
            match self.attempt(path, query, params).await {
                Attempt::Done(body) => return Ok(body),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry(e) => {
                    tracing::debug!(query, attempt, error = %e, "Prometheus request failed");
                    last = Some(e);
                    if attempt < attempts {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        Err(match last {
            Some(SourceError::Unreachable { query, cause, .. }) => SourceError::Unreachable {
                query,
                attempts,
                cause,
            },
            Some(other) => other,
            None => SourceError::Unreachable {
                query: query.to_string(),
                attempts,
                cause: "no attempt made".into(),
            },
        })
    }

    /// One uncached range query over `[start, end]`, chunked.
    async fn fetch_range(
        &self,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Series, SourceError> {
        let answer = self.history(query, start, end, step, &|_| {}).await?;
        warn_overlaps(query, &answer.labels, answer.overlaps);
        Ok(answer.series)
    }

    /// A whole history in one go: the grid `align_down(start), ... <= align_down(end)` in
    /// chunks of at most `max_points` points, one request after the other, not cached, with
    /// the label sets the query returned, so that a caller can tell no series from one from
    /// several. `progress` gets the grid points of each chunk as it arrives. The daemon's
    /// `range` reads through it; `tideshift simulate --prometheus` calls it directly.
    pub async fn history(
        &self,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<RangeAnswer, SourceError> {
        check_step(query, step)?;
        let start = align_down(start, step);
        let end = align_down(end, step);
        let len = grid_len(start, end, step);
        let mut values = Vec::with_capacity(len);
        let mut labels: BTreeSet<BTreeMap<String, String>> = BTreeSet::new();
        let mut overlaps = 0;
        let chunk_points = self.config.max_points.max(1) as i64;
        let mut chunk_start = start;
        while chunk_start <= end {
            let chunk_end = (chunk_start + (chunk_points - 1) * step).min(end);
            let body = self
                .get(
                    "/api/v1/query_range",
                    query,
                    &[
                        ("start", chunk_start.to_string()),
                        ("end", chunk_end.to_string()),
                        ("step", step.to_string()),
                    ],
                )
                .await?;
            let chunk_len = grid_len(chunk_start, chunk_end, step);
            let chunk = chunk_from_body(query, &body, chunk_start, step, chunk_len)?;
            values.extend(chunk.values);
            overlaps += chunk.overlaps;
            labels.extend(chunk.labels);
            progress(chunk_len as u64);
            chunk_start = chunk_end + step;
        }
        Ok(RangeAnswer {
            series: Series::new(start, step, values),
            labels: labels.into_iter().collect(),
            overlaps,
        })
    }

    async fn cached_range(
        &self,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Series, SourceError> {
        let start = align_down(start, step);
        let end = align_down(end, step);
        if end < start {
            return Ok(Series::new(start, step, Vec::new()));
        }
        let key = (query.to_string(), step);
        let kept: Option<Vec<f64>> = self.lock_cache().get(&key).and_then(|cached| {
            (cached.start <= start && cached.end() > start).then(|| {
                let keep_until = (cached.end() - REFETCH_POINTS * step).max(start);
                let keep = grid_len(start, keep_until - step, step);
                let offset = ((start - cached.start) / step) as usize;
                cached.values[offset..]
                    .iter()
                    .take(keep)
                    .map(|&v| f64::from(v))
                    .collect()
            })
        });
        let series = match kept {
            Some(mut values) => {
                let fetch_from = start + values.len() as i64 * step;
                if fetch_from <= end {
                    let fresh = self.fetch_range(query, fetch_from, end, step).await?;
                    values.extend(fresh.values);
                }
                values.truncate(grid_len(start, end, step));
                Series::new(start, step, values)
            }
            None => self.fetch_range(query, start, end, step).await?,
        };
        self.lock_cache().insert(key, CachedHistory::new(&series));
        Ok(series)
    }

    async fn instant(&self, query: &str) -> Result<Option<Sample>, SourceError> {
        let body = self.get("/api/v1/query", query, &[]).await?;
        sample_from_body(query, &body)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i64), CachedHistory>> {
        // A panic while holding the lock leaves only a cache behind: keep using it.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn check_step(query: &str, step: i64) -> Result<(), SourceError> {
    if step <= 0 {
        return Err(SourceError::Config {
            what: format!("range query {query:?}"),
            cause: format!("step must be positive, got {step}"),
        });
    }
    Ok(())
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

impl DemandSource for PrometheusSource {
    fn range<'a>(
        &'a self,
        query: &'a str,
        start: i64,
        end: i64,
        step: i64,
    ) -> BoxFuture<'a, Result<Series, SourceError>> {
        async move {
            check_step(query, step)?;
            self.cached_range(query, start, end, step).await
        }
        .boxed()
    }

    fn latest<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<Option<Sample>, SourceError>> {
        self.instant(query).boxed()
    }

    fn retain_queries(&self, keep: &dyn Fn(&str) -> bool) {
        self.lock_cache().retain(|(query, _), _| keep(query));
    }

    fn forget_before(&self, query: &str, step: i64, before: i64) {
        if let Some(cached) = self.lock_cache().get_mut(&(query.to_string(), step)) {
            cached.forget_before(before);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;

    use super::*;

    const MATRIX: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[
        {"metric":{"workload":"payment"},"values":[[60,"1.5"],[120,"NaN"],[180,"+Inf"],[300,"-2"],[360,"4"]]}]}}"#;

    #[test]
    fn parses_a_matrix_with_special_values() {
        let series = parse_matrix(MATRIX.as_bytes()).unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].labels["workload"], "payment");
        assert_eq!(series[0].points[0], (60.0, 1.5));
        assert!(series[0].points[1].1.is_nan());
        assert_eq!(series[0].points[2].1, f64::INFINITY);
    }

    #[test]
    fn grid_turns_unusable_values_and_holes_into_nan() {
        let series = parse_matrix(MATRIX.as_bytes()).unwrap();
        let grid = to_grid(series.first(), 60, 60, 6);
        assert_eq!(grid[0], 1.5);
        assert!(grid[1].is_nan(), "NaN stays a gap");
        assert!(grid[2].is_nan(), "+Inf is a gap");
        assert!(grid[3].is_nan(), "missing point at 240 is a gap");
        assert!(grid[4].is_nan(), "negative demand is a gap");
        assert_eq!(grid[5], 4.0);
    }

    #[test]
    fn rejects_errors_and_wrong_shapes_without_panicking() {
        let error = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        assert!(matches!(
            parse_matrix(error),
            Err(ParseError::NotSuccess { error_type, .. }) if error_type == "bad_data"
        ));
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(matches!(
            parse_matrix(vector),
            Err(ParseError::ResultType { .. })
        ));
        for junk in [
            &b""[..],
            b"{",
            b"null",
            b"[]",
            br#"{"status":"success"}"#,
            br#"{"status":"success","data":{"resultType":"matrix","result":[{"values":[[1,"x"]]}]}}"#,
            br#"{"status":"success","data":{"resultType":"matrix","result":[{"values":[[1e300,"1"]]}]}}"#,
            br#"{"status":"success","data":{"resultType":"matrix","result":[{"values":[["a","1"]]}]}}"#,
            br#"{"status":"success","data":{"resultType":"matrix","result":{}}}"#,
        ] {
            assert!(parse_matrix(junk).is_err(), "{:?}", String::from_utf8_lossy(junk));
        }
    }

    #[test]
    fn parses_vectors_and_scalars() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.5,"42"]}]}}"#;
        let samples = parse_vector(vector).unwrap();
        assert_eq!(samples[0].value, 42.0);
        assert_eq!(samples[0].at, 1_700_000_000.5);
        let scalar =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"7"]}}"#;
        assert_eq!(parse_vector(scalar).unwrap()[0].value, 7.0);
    }

    #[test]
    fn several_series_where_one_was_expected_is_an_error_naming_the_query() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"pod":"a"},"values":[[60,"1"]]},{"metric":{"pod":"b"},"values":[[60,"1"]]}]}}"#;
        let series = parse_matrix(body).unwrap();
        let err = one_series("rate(x[1m])", series, |s| &s.labels).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("rate(x[1m])"), "{text}");
        assert!(text.contains("2 series"), "{text}");
        assert!(text.contains("pod=\"a\""), "{text}");
        assert_eq!(err.reason(), "multiple_series");
    }

    #[test]
    fn a_duplicate_in_history_leaves_gaps_not_an_error() {
        // b duplicated a at 120 only; c replaced both from 240 on (relabelled).
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"pod":"a"},"values":[[60,"1"],[120,"2"],[180,"3"]]},
            {"metric":{"pod":"b"},"values":[[120,"2"]]},
            {"metric":{"pod":"c"},"values":[[240,"4"]]}]}}"#;
        let series = parse_matrix(body).unwrap();
        let (values, overlaps) = merge_to_grid(&series, 60, 60, 4);
        assert_eq!(overlaps, 1);
        assert_eq!(values[0], 1.0);
        assert!(values[1].is_nan(), "{values:?}");
        assert_eq!(&values[2..], &[3.0, 4.0]);
    }

    /// A fake Prometheus: demand equals the timestamp in minutes; counts requests and the
    /// number of points asked for; fails the first `fail_first` requests with 503.
    #[derive(Clone, Default)]
    struct Fake {
        requests: Arc<AtomicUsize>,
        max_points_seen: Arc<AtomicUsize>,
        points_served: Arc<AtomicUsize>,
        fail_first: Arc<AtomicUsize>,
        token_seen: Arc<Mutex<Option<String>>>,
    }

    async fn fake_range(
        State(fake): State<Fake>,
        headers: HeaderMap,
        Query(params): Query<HashMap<String, String>>,
    ) -> (StatusCode, String) {
        fake.requests.fetch_add(1, Ordering::SeqCst);
        *fake.token_seen.lock().unwrap() = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if fake
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return (StatusCode::SERVICE_UNAVAILABLE, "overloaded".into());
        }
        let start: i64 = params["start"].parse().unwrap();
        let end: i64 = params["end"].parse().unwrap();
        let step: i64 = params["step"].parse().unwrap();
        let points: Vec<String> = (0..)
            .map(|i| start + i * step)
            .take_while(|t| *t <= end)
            .map(|t| format!("[{t},\"{}\"]", t / 60))
            .collect();
        fake.max_points_seen
            .fetch_max(points.len(), Ordering::SeqCst);
        fake.points_served.fetch_add(points.len(), Ordering::SeqCst);
        (
            StatusCode::OK,
            format!(
                r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{}},"values":[{}]}}]}}}}"#,
                points.join(",")
            ),
        )
    }

    async fn serve(fake: Fake) -> String {
        let app = axum::Router::new()
            .route("/api/v1/query_range", get(fake_range))
            .with_state(fake);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn chunks_caches_retries_and_sends_the_token() {
        let fake = Fake::default();
        let url = serve(fake.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "s3cret\n").unwrap();
        let mut config = PrometheusConfig::new(url);
        config.token_file = Some(token_file);
        config.backoff = Duration::from_millis(1);
        let source = PrometheusSource::new(config).unwrap();

        // 25,000 one-minute points: three chunks, none above the limit.
        let end = 25_000 * 60 - 1;
        let series = source.range("demand", 0, end, 60).await.unwrap();
        assert_eq!(series.values.len(), 25_000);
        assert_eq!(series.values[12_345], 12_345.0);
        assert_eq!(fake.requests.load(Ordering::SeqCst), 3);
        assert!(fake.max_points_seen.load(Ordering::SeqCst) <= DEFAULT_MAX_POINTS);
        assert_eq!(
            fake.token_seen.lock().unwrap().as_deref(),
            Some("Bearer s3cret")
        );

        // Five minutes later, the window slid: only the new points and a few recent ones.
        fake.points_served.store(0, Ordering::SeqCst);
        let series = source.range("demand", 300, end + 300, 60).await.unwrap();
        assert_eq!(series.start, 300);
        assert_eq!(series.values.len(), 25_000);
        assert_eq!(series.values[0], 5.0);
        assert_eq!(*series.values.last().unwrap(), 25_004.0);
        let served = fake.points_served.load(Ordering::SeqCst);
        assert!(
            served <= 5 + REFETCH_POINTS as usize,
            "fetched {served} points"
        );

        // After a refit the caller keeps only the last hour: the cache drops the rest, still
        // serves that hour, and a whole history asked again is fetched again, not half-cached.
        source.forget_before("demand", 60, end + 300 - 3_600);
        let cached = source.lock_cache()[&("demand".to_string(), 60)]
            .values
            .len();
        assert!((60..=61).contains(&cached), "{cached} points kept");
        fake.points_served.store(0, Ordering::SeqCst);
        let hour = source
            .range("demand", end + 300 - 3_540, end + 300, 60)
            .await
            .unwrap();
        assert_eq!(hour.values.len(), 60);
        assert_eq!(*hour.values.last().unwrap(), 25_004.0);
        assert!(fake.points_served.load(Ordering::SeqCst) <= REFETCH_POINTS as usize + 1);
        let whole = source.range("demand", 300, end + 300, 60).await.unwrap();
        assert_eq!(whole.values[0], 5.0);
        assert_eq!(whole.values.len(), 25_000);
        // The policy asking for it was deleted: its history is forgotten.
        source.retain_queries(&|query| query != "demand");
        assert!(source.lock_cache().is_empty());

        // Two 503s, then success: retried within the attempts.
        fake.fail_first.store(2, Ordering::SeqCst);
        let series = source.range("other", 0, 600, 60).await.unwrap();
        assert_eq!(series.values.len(), 11);

        // Three 503s: gives up, naming the query and the status.
        fake.fail_first.store(3, Ordering::SeqCst);
        let err = source.range("third", 0, 600, 60).await.unwrap_err();
        assert!(
            matches!(err, SourceError::Http { status: 503, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("\"third\""));
    }

    #[tokio::test]
    async fn a_whole_history_is_read_in_chunks_with_its_labels_and_not_cached() {
        let fake = Fake::default();
        let url = serve(fake.clone()).await;
        let mut config = PrometheusConfig::new(url);
        config.max_points = 1_000;
        let source = PrometheusSource::new(config).unwrap();
        let progress = AtomicUsize::new(0);
        // Unaligned ends are rounded down to the grid, as `range` does.
        let answer = source
            .history("demand", 30, 2_500 * 60 + 59, 60, &|points| {
                progress.fetch_add(points as usize, Ordering::SeqCst);
            })
            .await
            .unwrap();
        assert_eq!(answer.series.start, 0);
        assert_eq!(answer.series.values.len(), 2_501);
        assert_eq!(answer.series.values[2_500], 2_500.0);
        assert_eq!(
            answer.labels,
            vec![BTreeMap::new()],
            "one series, no labels"
        );
        assert_eq!(answer.overlaps, 0);
        assert_eq!(fake.requests.load(Ordering::SeqCst), 3);
        assert!(fake.max_points_seen.load(Ordering::SeqCst) <= 1_000);
        assert_eq!(progress.load(Ordering::SeqCst), 2_501);
        assert!(source.lock_cache().is_empty());
        assert!(matches!(
            source.history("demand", 0, 60, 0, &|_| {}).await,
            Err(SourceError::Config { .. })
        ));
    }

    #[tokio::test]
    async fn unreachable_prometheus_is_reported_not_panicked() {
        let mut config = PrometheusConfig::new("http://127.0.0.1:9");
        config.backoff = Duration::from_millis(1);
        config.timeout = Duration::from_secs(2);
        let source = PrometheusSource::new(config).unwrap();
        let err = source.latest("up").await.unwrap_err();
        assert!(
            matches!(
                err,
                SourceError::Unreachable { attempts: 3, .. } | SourceError::Timeout { .. }
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_configuration_is_named() {
        assert!(matches!(
            PrometheusSource::new(PrometheusConfig::new("prometheus:9090")),
            Err(SourceError::Config { .. })
        ));
        let mut config = PrometheusConfig::new("https://prometheus");
        config.ca_file = Some("/nonexistent/ca.pem".into());
        let err = PrometheusSource::new(config).err().unwrap();
        assert!(err.to_string().contains("/nonexistent/ca.pem"));
    }
}
