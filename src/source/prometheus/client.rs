//! The HTTP client: range queries in chunks, retries with backoff, the bearer token read on
//! every request, a bound on requests in flight; the [`DemandSource`] the daemon reads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::PrometheusConfig;
use super::cache::CachedHistory;
use super::grid::{RangeAnswer, chunk_from_body, sample_from_body, warn_overlaps};
use super::parse::{parse_envelope, truncate};
use crate::series::Series;
use crate::source::{DemandSource, ParseError, Sample, SourceError, align_down, grid_len};

/// Requests to Prometheus in flight at once, and idle connections kept for reuse. Every
/// policy's cycle reads demand at the same time after a start: without a bound the client
/// opened one connection per concurrent request (700 for 500 policies) and kept them all, each
/// with a read buffer grown to the largest history chunk it carried. Prometheus itself runs 20
/// queries at once by default (`--query.max-concurrency`); more only wait there.
const MAX_IN_FLIGHT: usize = 16;

/// Answers of more than this many points (a whole history's chunks, up to `max_points` each,
/// and a workload's first recent window) travel on connections of their own, which are closed
/// after `BULK_IDLE` unused. hyper keeps a connection's read buffer at the size of the largest
/// answer it read (up to 400 KB): with one pool, each of the 16 connections grew to a history
/// chunk's size, about 4 MB at 500 policies, for the windows of a few points that most requests
/// carry.
const BULK_POINTS: usize = 2_000;

/// How long an idle connection for large answers is kept. Long enough for the daemon's refits
/// (two at a time, `FitSlots`) to reuse theirs; the burst of first windows at a start opens up
/// to 16, and they go soon after it.
const BULK_IDLE: Duration = Duration::from_secs(5);

/// Points at the end of the cached history fetched again each cycle: the newest points of a
/// `rate()` may have been computed before the last scrape arrived.
const REFETCH_POINTS: i64 = 3;

pub struct PrometheusSource {
    http: reqwest::Client,
    /// For answers of more than `BULK_POINTS` points.
    bulk_http: reqwest::Client,
    config: PrometheusConfig,
    base: String,
    cache: Mutex<HashMap<(String, i64), CachedHistory>>,
    in_flight: tokio::sync::Semaphore,
}

enum Attempt {
    Done(Vec<u8>),
    Retry(SourceError),
    Fail(SourceError),
}

impl PrometheusSource {
    pub fn new(config: PrometheusConfig) -> Result<Self, SourceError> {
        let roots = root_certificates(&config)?;
        let http = http_client(&config, &roots, None)?;
        let bulk_http = http_client(&config, &roots, Some(BULK_IDLE))?;
        let base = config.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(SourceError::Config {
                what: "Prometheus URL".into(),
                cause: format!("{base:?} must start with http:// or https://"),
            });
        }
        Ok(Self {
            http,
            bulk_http,
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

    /// A request or its body that did not come back: worth another attempt.
    fn transport_failure(&self, query: &str, e: &reqwest::Error) -> Attempt {
        Attempt::Retry(if e.is_timeout() {
            SourceError::Timeout {
                query: query.to_string(),
                seconds: self.config.timeout.as_secs(),
            }
        } else {
            SourceError::Unreachable {
                query: query.to_string(),
                attempts: 1,
                cause: error_chain(e),
            }
        })
    }

    async fn attempt(
        &self,
        path: &str,
        query: &str,
        params: &[(&str, String)],
        points: usize,
    ) -> Attempt {
        let token = match self.token(query) {
            Ok(token) => token,
            Err(e) => return Attempt::Fail(e),
        };
        let http = if points > BULK_POINTS {
            &self.bulk_http
        } else {
            &self.http
        };
        let mut request = http
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
            Err(e) => return self.transport_failure(query, &e),
        };
        let status = response.status();
        let body = match response.bytes().await {
            // The body's own buffer, not a copy of it.
            Ok(body) => Vec::from(body),
            Err(e) => return self.transport_failure(query, &e),
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

    /// The body of a successful answer of up to `points` points, after retries.
    async fn get(
        &self,
        path: &str,
        query: &str,
        params: &[(&str, String)],
        points: usize,
    ) -> Result<Vec<u8>, SourceError> {
        let attempts = self.config.attempts.max(1);
        let mut delay = self.config.backoff;
        let mut last = None;
        for attempt in 1..=attempts {
            match self.attempt(path, query, params, points).await {
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
            let chunk_len = grid_len(chunk_start, chunk_end, step);
            let body = self
                .get(
                    "/api/v1/query_range",
                    query,
                    &[
                        ("start", chunk_start.to_string()),
                        ("end", chunk_end.to_string()),
                        ("step", step.to_string()),
                    ],
                    chunk_len,
                )
                .await?;
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
        // The cached points kept: from `start` to `REFETCH_POINTS` before the cache's end (the
        // last points may still change: late scrapes, rule evaluations).
        let keep = self
            .lock_cache()
            .get(&key)
            .filter(|cached| cached.start <= start && cached.end() > start)
            .map_or(0, |cached| {
                let keep_until = (cached.end() - REFETCH_POINTS * step).max(start);
                grid_len(start, keep_until - step, step)
            });
        let series = match keep {
            0 => self.fetch_range(query, start, end, step).await?,
            _ => self.cached_and_fresh(&key, start, end, keep).await?,
        };
        self.lock_cache().insert(key, CachedHistory::new(&series));
        Ok(series)
    }

    /// The window `start..=end` from the first `keep` points the cache holds from `start` and
    /// the points after them, read from Prometheus.
    async fn cached_and_fresh(
        &self,
        key: &(String, i64),
        start: i64,
        end: i64,
        keep: usize,
    ) -> Result<Series, SourceError> {
        let (query, step) = (key.0.as_str(), key.1);
        // What the cache lacks is read first and the window put together after: a window made
        // before the request waited with it for a request slot (hundreds of cycles at once
        // when a daemon starts, 5 MB at 500 policies).
        let fetch_from = start + keep as i64 * step;
        let fresh = match fetch_from <= end {
            true => self.fetch_range(query, fetch_from, end, step).await?.values,
            false => Vec::new(),
        };
        let kept = self
            .lock_cache()
            .get(key)
            .filter(|cached| cached.start <= start && cached.end() >= fetch_from)
            .map(|cached| {
                let offset = ((start - cached.start) / step) as usize;
                // Room for the fresh points too: growing by doubling left every returned
                // history holding twice its points while a cycle used it.
                let mut values = Vec::with_capacity(grid_len(start, end, step));
                values.extend(
                    cached.values[offset..offset + keep]
                        .iter()
                        .map(|&v| f64::from(v)),
                );
                values
            });
        match kept {
            Some(mut values) => {
                values.extend(fresh);
                values.truncate(grid_len(start, end, step));
                Ok(Series::new(start, step, values))
            }
            // Another cycle of the same query trimmed the cache meanwhile.
            None => self.fetch_range(query, start, end, step).await,
        }
    }

    async fn instant(&self, query: &str) -> Result<Option<Sample>, SourceError> {
        let body = self.get("/api/v1/query", query, &[], 1).await?;
        sample_from_body(query, &body)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i64), CachedHistory>> {
        // A panic while holding the lock leaves only a cache behind: keep using it.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A client for Prometheus keeping up to `MAX_IN_FLIGHT` connections for reuse, each for
/// `idle_timeout` when given (reqwest's default, 90 s, when not), trusting `roots` besides the
/// system's.
fn http_client(
    config: &PrometheusConfig,
    roots: &[reqwest::Certificate],
    idle_timeout: Option<Duration>,
) -> Result<reqwest::Client, SourceError> {
    let mut builder = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout.min(Duration::from_secs(5)))
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .user_agent(concat!("tideshift/", env!("CARGO_PKG_VERSION")));
    if let Some(timeout) = idle_timeout {
        builder = builder.pool_idle_timeout(timeout);
    }
    for certificate in roots {
        builder = builder.add_root_certificate(certificate.clone());
    }
    builder.build().map_err(|e| SourceError::Config {
        what: "HTTP client".into(),
        cause: e.to_string(),
    })
}

/// The certificates of the configured CA file, read once for both clients.
fn root_certificates(config: &PrometheusConfig) -> Result<Vec<reqwest::Certificate>, SourceError> {
    let Some(ca_file) = &config.ca_file else {
        return Ok(Vec::new());
    };
    let config_error = |cause: String| SourceError::Config {
        what: format!("Prometheus CA file {}", ca_file.display()),
        cause,
    };
    let pem = std::fs::read(ca_file).map_err(|e| config_error(e.to_string()))?;
    let certificates =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| config_error(e.to_string()))?;
    if certificates.is_empty() {
        return Err(config_error("no PEM certificate in it".into()));
    }
    Ok(certificates)
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
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::{ConnectInfo, Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;

    use super::super::DEFAULT_MAX_POINTS;
    use super::*;

    /// A fake Prometheus: demand equals the timestamp in minutes; counts requests and the
    /// number of points asked for; fails the first `fail_first` requests with 503.
    #[derive(Clone, Default)]
    struct Fake {
        requests: Arc<AtomicUsize>,
        max_points_seen: Arc<AtomicUsize>,
        points_served: Arc<AtomicUsize>,
        fail_first: Arc<AtomicUsize>,
        token_seen: Arc<Mutex<Option<String>>>,
        /// The fewest and the most points each client connection carried in one answer.
        connections: Arc<Mutex<HashMap<SocketAddr, (usize, usize)>>>,
    }

    async fn fake_range(
        State(fake): State<Fake>,
        ConnectInfo(client): ConnectInfo<SocketAddr>,
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
        let mut connections = fake.connections.lock().unwrap();
        let seen = connections.entry(client).or_insert((usize::MAX, 0));
        *seen = (seen.0.min(points.len()), seen.1.max(points.len()));
        drop(connections);
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
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
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
    async fn whole_histories_and_recent_windows_travel_on_separate_connections() {
        let fake = Fake::default();
        let url = serve(fake.clone()).await;
        let source = PrometheusSource::new(PrometheusConfig::new(url)).unwrap();
        let end = 25_000 * 60 - 1;
        for query in ["a", "b"] {
            // Chunks of 10,000 points, then windows sliding by five minutes: a few points each.
            source.range(query, 0, end, 60).await.unwrap();
            for slid in 1..=3 {
                let shift = slid * 300;
                source.range(query, shift, end + shift, 60).await.unwrap();
            }
        }
        let connections = fake.connections.lock().unwrap();
        assert!(connections.len() >= 2, "{connections:?}");
        for (client, (fewest, most)) in connections.iter() {
            assert!(
                *most <= BULK_POINTS || *fewest > BULK_POINTS,
                "connection {client} carried answers of {fewest} and of {most} points"
            );
        }
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

        let not_pem = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(not_pem.path(), "not a certificate\n").unwrap();
        let mut config = PrometheusConfig::new("https://prometheus");
        config.ca_file = Some(not_pem.path().into());
        let err = PrometheusSource::new(config).err().unwrap();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn a_ca_bundle_is_trusted_by_both_connection_pools() {
        // Debian's bundle (package ca-certificates): many certificates, each added to both pools.
        let bundle = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
        let mut config = PrometheusConfig::new("https://prometheus");
        config.ca_file = Some(bundle.into());
        let roots = root_certificates(&config).unwrap();
        assert!(roots.len() > 1, "{} certificates", roots.len());
        PrometheusSource::new(config).unwrap();
    }
}
