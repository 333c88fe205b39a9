//! Demand for a rehearsal read from a real Prometheus (`simulate --prometheus URL`): each
//! online workload's `demand.query` over the last `--since`, with the daemon's own client
//! (same requests, chunking, retries, bearer token and CA), turned into the same [`Trace`] a
//! CSV file would give, so that the rest of `simulate` cannot tell them apart.
//!
//! Where the daemon holds and reports, a rehearsal stops with an error naming the workload and
//! its query: a query that returns no series (a typo in a metric or label), one whose series
//! overlap in time (it lacks a `sum(...)`), one that returns only unusable values, or too
//! little history to rehearse on. Gaps inside the history stay gaps (`NaN`); the gaps before
//! the first and after the last recorded point are cut off, as a CSV file of the same data
//! would not hold them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::policy::{PolicyDuration, ShiftPolicy};
use crate::series::Series;
use crate::source::SourceError;
use crate::source::prometheus::{PrometheusConfig, PrometheusSource, RangeAnswer};
use crate::trace::Trace;

use super::scenario::{MIN_DEMAND_SECONDS, rfc3339};

/// Grid points per workload a rehearsal reads at most: 9.5 years at 1 minute, 58 days at 1
/// second. More is a mistaken `--step` rather than a rehearsal.
const MAX_POINTS: i64 = 5_000_000;

/// What to read: where, with which client settings, and which range.
#[derive(Clone, Debug)]
pub struct HistoryRequest {
    /// Where Prometheus is and how to reach it.
    pub client: PrometheusConfig,
    /// Length of the range, in seconds, ending at `until`.
    pub since: i64,
    /// Grid step in seconds; `None`: the policy's `forecast.step`.
    pub step: Option<i64>,
    /// End of the range, unix seconds (now, for a user).
    pub until: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("--prometheus {url}: {cause}")]
    Client {
        url: String,
        cause: Box<SourceError>,
    },
    #[error("{flag} {message}")]
    Usage { flag: &'static str, message: String },
    #[error("online workload {workload}: reading its demand from Prometheus {url}: {cause}")]
    Query {
        workload: String,
        url: String,
        cause: Box<SourceError>,
    },
    #[error(
        "online workload {workload}: query {query:?} returned no series from Prometheus {url} \
         over {from} → {to}; check the metric name and labels (try the query in Prometheus's \
         graph page)"
    )]
    NoSeries {
        workload: String,
        query: String,
        url: String,
        from: String,
        to: String,
    },
    #[error(
        "online workload {workload}: query {query:?} returned {count} series at the same time \
         ({labels}); demand must be one series, as the daemon reads it: aggregate it, e.g. \
         sum(...)"
    )]
    SeveralSeries {
        workload: String,
        query: String,
        count: usize,
        labels: String,
    },
    #[error(
        "online workload {workload}: query {query:?} returned only NaN, infinite or negative \
         values over {from} → {to}; demand must be a finite, non-negative amount"
    )]
    OnlyGaps {
        workload: String,
        query: String,
        from: String,
        to: String,
    },
    #[error(
        "online workload {workload}: Prometheus holds {covered} of history for query {query:?} \
         ({recorded}, of {asked} asked for); simulate needs at least {needed}: a warm-up to \
         learn from, then the window that is scored",
        needed = human(MIN_DEMAND_SECONDS)
    )]
    TooShort {
        workload: String,
        query: String,
        covered: String,
        /// `first → last` recorded point, and the range asked for.
        recorded: String,
        asked: String,
    },
    #[error("--save-traces {dir}: {cause}")]
    Save { dir: String, cause: std::io::Error },
}

/// The ranges and queries of one read, checked before any request is sent.
#[derive(Clone, Debug)]
pub struct HistoryPlan {
    /// Online workloads in policy order, with their queries.
    pub queries: Vec<(String, String)>,
    pub start: i64,
    pub end: i64,
    pub step: i64,
    url: String,
    client: PrometheusConfig,
}

/// A workload's history as read, before it is turned into a trace.
#[derive(Clone, Debug)]
pub struct WorkloadHistory {
    pub name: String,
    pub trace: Trace,
    /// Grid points between the first and the last recorded one, and how many are gaps.
    pub points: usize,
    pub gaps: usize,
}

pub fn plan(policy: &ShiftPolicy, request: &HistoryRequest) -> Result<HistoryPlan, HistoryError> {
    let step = request
        .step
        .unwrap_or_else(|| policy.spec.forecast.step.as_secs() as i64);
    if step < 1 {
        return Err(HistoryError::Usage {
            flag: "--step",
            message: format!("{step}s: the step must be at least 1s"),
        });
    }
    if request.since < MIN_DEMAND_SECONDS {
        return Err(HistoryError::Usage {
            flag: "--since",
            message: format!(
                "{}: simulate needs at least {} of history (a warm-up to learn from, then the \
                 window that is scored)",
                human(request.since),
                human(MIN_DEMAND_SECONDS)
            ),
        });
    }
    if request.since / step > MAX_POINTS {
        return Err(HistoryError::Usage {
            flag: "--step",
            message: format!(
                "{step}s: {} at {step}s steps is {} points per workload, more than the \
                 {MAX_POINTS} a rehearsal reads; use a coarser --step",
                human(request.since),
                request.since / step
            ),
        });
    }
    let end = request.until.div_euclid(step) * step;
    let start = end - request.since.div_euclid(step) * step;
    Ok(HistoryPlan {
        queries: policy
            .spec
            .online
            .iter()
            .map(|w| (w.name.clone(), w.demand.query.clone()))
            .collect(),
        start,
        end,
        step,
        url: request.client.url.clone(),
        client: request.client.clone(),
    })
}

impl HistoryPlan {
    /// Grid points to read, over every workload.
    pub fn points(&self) -> u64 {
        self.queries.len() as u64 * ((self.end - self.start) / self.step + 1) as u64
    }

    /// Read every workload's history, all workloads at once (the client bounds the requests
    /// in flight). `progress` gets the grid points of each chunk as it arrives.
    pub fn fetch(
        &self,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Vec<WorkloadHistory>, HistoryError> {
        let source =
            PrometheusSource::new(self.client.clone()).map_err(|cause| HistoryError::Client {
                url: self.url.clone(),
                cause: Box::new(cause),
            })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| HistoryError::Client {
                url: self.url.clone(),
                cause: Box::new(SourceError::Config {
                    what: "the async runtime".into(),
                    cause: e.to_string(),
                }),
            })?;
        let source = &source;
        runtime.block_on(futures::future::try_join_all(self.queries.iter().map(
            |(name, query)| async move {
                let answer = source
                    .history(query, self.start, self.end, self.step, progress)
                    .await
                    .map_err(|cause| HistoryError::Query {
                        workload: name.clone(),
                        url: self.url.clone(),
                        cause: Box::new(cause),
                    })?;
                self.check(name, query, answer)
            },
        )))
    }

    /// One workload's answer as a trace, or the error that says why it cannot be one.
    fn check(
        &self,
        name: &str,
        query: &str,
        answer: RangeAnswer,
    ) -> Result<WorkloadHistory, HistoryError> {
        let (from, to) = (rfc3339(self.start), rfc3339(self.end));
        if answer.labels.is_empty() {
            return Err(HistoryError::NoSeries {
                workload: name.into(),
                query: query.into(),
                url: self.url.clone(),
                from,
                to,
            });
        }
        if answer.overlaps > 0 {
            return Err(HistoryError::SeveralSeries {
                workload: name.into(),
                query: query.into(),
                count: answer.labels.len(),
                labels: answer.describe_labels(),
            });
        }
        if answer.labels.len() > 1 {
            tracing::info!(
                workload = name,
                query,
                series = %answer.describe_labels(),
                "the query's series changed labels over the range, never overlapping; \
                 read as one series, as the daemon reads it"
            );
        }
        let series = &answer.series;
        let Some((first, last)) = recorded_span(series) else {
            return Err(HistoryError::OnlyGaps {
                workload: name.into(),
                query: query.into(),
                from,
                to,
            });
        };
        let covered = series.timestamp(last) + series.step - series.timestamp(first);
        if covered < MIN_DEMAND_SECONDS {
            return Err(HistoryError::TooShort {
                workload: name.into(),
                query: query.into(),
                covered: human(covered),
                recorded: format!(
                    "{} → {}",
                    rfc3339(series.timestamp(first)),
                    rfc3339(series.timestamp(last))
                ),
                asked: format!("{from} → {to}"),
            });
        }
        let points: Vec<(i64, f64)> = (first..=last)
            .map(|i| (series.timestamp(i), series.values[i]))
            .collect();
        let gaps = points.iter().filter(|(_, v)| v.is_nan()).count();
        tracing::debug!(
            workload = name,
            points = points.len(),
            gaps,
            first = %rfc3339(series.timestamp(first)),
            last = %rfc3339(series.timestamp(last)),
            "read demand history from Prometheus"
        );
        Ok(WorkloadHistory {
            name: name.into(),
            points: points.len(),
            gaps,
            trace: Trace {
                origin: format!("{name} from Prometheus {}", self.url),
                points,
            },
        })
    }

    /// What the demand came from, in words, for the report.
    pub fn describe(&self, histories: &[WorkloadHistory]) -> String {
        let mut text = format!(
            "Prometheus {}, each online workload's demand.query over {} → {} at {}s steps (",
            self.url,
            rfc3339(self.start),
            rfc3339(self.end),
            self.step
        );
        for (i, h) in histories.iter().enumerate() {
            if i > 0 {
                text.push_str(", ");
            }
            let _ = write!(text, "{}: {} points", h.name, h.points);
            if h.gaps > 0 {
                let _ = write!(text, ", {} gaps", h.gaps);
            }
        }
        text.push(')');
        text
    }
}

/// First and last index of a finite value.
fn recorded_span(series: &Series) -> Option<(usize, usize)> {
    let first = series.values.iter().position(|v| v.is_finite())?;
    let last = series.values.iter().rposition(|v| v.is_finite())?;
    Some((first, last))
}

/// A duration as a policy or a flag writes it (`1d30m`).
fn human(seconds: i64) -> String {
    PolicyDuration::from_secs(seconds.max(0) as u64).to_string()
}

/// Write each workload's history as `DIR/NAME.csv` (`timestamp,value`, an empty value for a
/// gap), which `--trace NAME=DIR/NAME.csv` replays exactly as it was read. Returns the files.
pub fn save(dir: &Path, histories: &[WorkloadHistory]) -> Result<Vec<PathBuf>, HistoryError> {
    let failed = |cause| HistoryError::Save {
        dir: dir.display().to_string(),
        cause,
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    let mut files = Vec::with_capacity(histories.len());
    for h in histories {
        let mut text = String::with_capacity(h.trace.points.len() * 32);
        text.push_str("timestamp,value\n");
        for &(t, v) in &h.trace.points {
            if v.is_nan() {
                let _ = writeln!(text, "{},", rfc3339(t));
            } else {
                // `{}` writes the shortest text that reads back as the same f64.
                let _ = writeln!(text, "{},{v}", rfc3339(t));
            }
        }
        let path = dir.join(format!("{}.csv", h.name));
        std::fs::write(&path, text).map_err(failed)?;
        files.push(path);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use axum::extract::{Query, State};
    use axum::routing::get;

    use super::*;
    use crate::policy;
    use crate::trace;

    const DAY: i64 = 86_400;
    /// The end of every test range: a whole day, so grids are easy to reason about.
    const UNTIL: i64 = 1_793_491_200;

    /// One series a fake query returns: its labels and its value at each grid time, if any.
    type FakeSeries = (&'static str, fn(i64) -> Option<String>);

    /// A fake Prometheus range API: each query answers the series listed for it (none for an
    /// unknown query), at the grid points the request asks for.
    async fn serve(queries: HashMap<&'static str, Vec<FakeSeries>>) -> String {
        async fn range(
            State(queries): State<Arc<HashMap<&'static str, Vec<FakeSeries>>>>,
            Query(params): Query<HashMap<String, String>>,
        ) -> String {
            let start: i64 = params["start"].parse().unwrap();
            let end: i64 = params["end"].parse().unwrap();
            let step: i64 = params["step"].parse().unwrap();
            let series = queries
                .get(params["query"].as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            let result: Vec<String> = series
                .iter()
                .filter_map(|(labels, value)| {
                    let points: Vec<String> = (0..)
                        .map(|i| start + i * step)
                        .take_while(|t| *t <= end)
                        .filter_map(|t| value(t).map(|v| format!("[{t},\"{v}\"]")))
                        .collect();
                    // Prometheus leaves out a series with no point in the range.
                    (!points.is_empty()).then(|| {
                        format!(r#"{{"metric":{labels},"values":[{}]}}"#, points.join(","))
                    })
                })
                .collect();
            format!(
                r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}}}}"#,
                result.join(",")
            )
        }
        let app = axum::Router::new()
            .route("/api/v1/query_range", get(range))
            .with_state(Arc::new(queries));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    fn policy(queries: &[(&str, &str)]) -> ShiftPolicy {
        let mut text = String::from(
            "apiVersion: tideshift.io/v1alpha1\nkind: ShiftPolicy\nmetadata: {name: p, namespace: default}\n\
             spec:\n  capacity: {cpu: \"16\", memory: 64Gi}\n  forecast: {step: 1m}\n  online:\n",
        );
        for (name, query) in queries {
            let _ = writeln!(
                text,
                "    - {{name: {name}, target: {{kind: Deployment, name: {name}}}, \
                 demand: {{query: '{query}'}}, perReplica: 100, replicas: {{min: 1, max: 20}}, \
                 resources: {{cpu: 500m, memory: 1Gi}}}}"
            );
        }
        policy::load_str(&text, "test policy").expect("a valid test policy")
    }

    fn request(url: String) -> HistoryRequest {
        HistoryRequest {
            client: PrometheusConfig {
                timeout: Duration::from_secs(5),
                ..PrometheusConfig::new(url)
            },
            since: 3 * DAY,
            step: None,
            until: UNTIL,
        }
    }

    /// Reads off the async test's runtime, as `simulate` does from its own thread.
    async fn fetch(
        policy: ShiftPolicy,
        request: HistoryRequest,
    ) -> Result<Vec<WorkloadHistory>, HistoryError> {
        tokio::task::spawn_blocking(move || plan(&policy, &request)?.fetch(&|_| {}))
            .await
            .unwrap()
    }

    /// The history of one workload `web` whose query answers one series, `demand`.
    async fn one_workload(
        demand: fn(i64) -> Option<String>,
    ) -> Result<Vec<WorkloadHistory>, HistoryError> {
        let url = serve(HashMap::from([("demand", vec![("{}", demand)])])).await;
        fetch(policy(&[("web", "demand")]), request(url)).await
    }

    fn minutes(t: i64) -> Option<String> {
        Some((t / 60 % 1_000).to_string())
    }

    #[tokio::test]
    async fn history_becomes_a_trace_with_gaps_kept_and_the_unrecorded_ends_cut_off() {
        // Recorded from 2.5 days before the end until 1 hour before it; NaN at one minute, a
        // negative value at another, a scrape missing at a third.
        fn demand(t: i64) -> Option<String> {
            let ago = UNTIL - t;
            match ago {
                _ if !(3_600..=5 * DAY / 2).contains(&ago) => None,
                7_200 => Some("NaN".into()),
                7_260 => Some("-1".into()),
                7_320 => None,
                _ => minutes(t),
            }
        }
        let histories = one_workload(demand).await.expect("history");
        let web = &histories[0];
        assert_eq!(web.name, "web");
        let points = &web.trace.points;
        assert_eq!(
            points[0].0,
            UNTIL - 5 * DAY / 2,
            "starts at the first recorded point"
        );
        assert_eq!(
            points.last().unwrap().0,
            UNTIL - 3_600,
            "ends at the last one"
        );
        assert_eq!(web.points, points.len());
        assert_eq!(points.len() as i64, (5 * DAY / 2 - 3_600) / 60 + 1);
        assert_eq!(web.gaps, 3, "NaN, negative and missing are gaps");
        for ago in [7_200, 7_260, 7_320] {
            let (_, v) = points.iter().find(|(t, _)| *t == UNTIL - ago).unwrap();
            assert!(v.is_nan(), "{ago}s ago: {v}");
        }
        let (_, v) = points.iter().find(|(t, _)| *t == UNTIL - 7_380).unwrap();
        assert_eq!(Some(v.to_string()), minutes(UNTIL - 7_380));
        assert_eq!(web.trace.typical_step(), 60);
    }

    #[tokio::test]
    async fn the_history_saved_reads_back_as_the_same_trace() {
        fn demand(t: i64) -> Option<String> {
            (t % 3_600 != 0).then(|| format!("{}", (t % 7_919) as f64 / 7.0))
        }
        let histories = one_workload(demand).await.expect("history");
        let dir = tempfile::tempdir().unwrap();
        let files = save(dir.path(), &histories).expect("saved");
        assert_eq!(files, vec![dir.path().join("web.csv")]);
        let read = trace::load_file(&files[0]).expect("a valid trace");
        let original = &histories[0].trace.points;
        assert_eq!(read.points.len(), original.len());
        for (a, b) in read.points.iter().zip(original) {
            assert_eq!(a.0, b.0);
            assert!(
                a.1 == b.1 || (a.1.is_nan() && b.1.is_nan()),
                "{a:?} != {b:?}"
            );
        }
        assert!(histories[0].gaps > 0, "the hourly gaps were kept");
    }

    #[tokio::test]
    async fn a_query_with_no_series_names_the_workload_and_the_query() {
        let url = serve(HashMap::from([(
            "demand",
            vec![("{}", minutes as fn(i64) -> _)],
        )]))
        .await;
        let err = fetch(
            policy(&[("web", "demand"), ("api", "demnad")]),
            request(url),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, HistoryError::NoSeries { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("online workload api"), "{text}");
        assert!(text.contains("\"demnad\""), "{text}");
        assert!(text.contains("returned no series"), "{text}");
    }

    #[tokio::test]
    async fn series_at_the_same_time_are_an_error_but_a_relabelled_series_is_one() {
        fn early(t: i64) -> Option<String> {
            (t < UNTIL - DAY).then(|| "5".into())
        }
        fn late(t: i64) -> Option<String> {
            (t >= UNTIL - DAY).then(|| "6".into())
        }
        let url = serve(HashMap::from([
            (
                "per_pod",
                vec![
                    (r#"{"pod":"a"}"#, minutes as fn(i64) -> _),
                    (r#"{"pod":"b"}"#, minutes as fn(i64) -> _),
                ],
            ),
            (
                "relabelled",
                vec![
                    (r#"{"pod":"a"}"#, early as fn(i64) -> _),
                    (r#"{"pod":"b"}"#, late as fn(i64) -> _),
                ],
            ),
        ]))
        .await;
        let err = fetch(policy(&[("web", "per_pod")]), request(url.clone()))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, HistoryError::SeveralSeries { count: 2, .. }),
            "{text}"
        );
        assert!(
            text.contains("online workload web") && text.contains("\"per_pod\""),
            "{text}"
        );
        assert!(
            text.contains("pod=\"a\"") && text.contains("sum(...)"),
            "{text}"
        );

        let histories = fetch(policy(&[("web", "relabelled")]), request(url))
            .await
            .expect("one series over time");
        assert_eq!(histories[0].gaps, 0);
        assert_eq!(histories[0].trace.points[0].1, 5.0);
        assert_eq!(histories[0].trace.points.last().unwrap().1, 6.0);
    }

    #[tokio::test]
    async fn too_little_history_says_how_much_there_is_and_how_much_is_needed() {
        fn last_day(t: i64) -> Option<String> {
            (t > UNTIL - DAY - 1_800).then(|| "1".into())
        }
        fn all_nan(_: i64) -> Option<String> {
            Some("NaN".into())
        }
        let url = serve(HashMap::from([
            ("young", vec![("{}", last_day as fn(i64) -> _)]),
            ("broken", vec![("{}", all_nan as fn(i64) -> _)]),
        ]))
        .await;
        let err = fetch(policy(&[("web", "young")]), request(url.clone()))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, HistoryError::TooShort { .. }), "{text}");
        assert!(text.contains("holds 1d30m of history"), "{text}");
        assert!(text.contains("needs at least 2d:"), "{text}");
        assert!(
            text.contains("online workload web") && text.contains("\"young\""),
            "{text}"
        );

        let err = fetch(policy(&[("web", "broken")]), request(url))
            .await
            .unwrap_err();
        assert!(matches!(err, HistoryError::OnlyGaps { .. }), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_prometheus_names_the_workload_and_the_url() {
        let mut request = request("http://127.0.0.1:9".into());
        request.client.timeout = Duration::from_secs(2);
        let err = fetch(policy(&[("web", "demand")]), request)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                &err,
                HistoryError::Query { cause, .. }
                    if matches!(**cause, SourceError::Unreachable { .. } | SourceError::Timeout { .. })
            ),
            "{text}"
        );
        assert!(
            text.starts_with(
                "online workload web: reading its demand from Prometheus http://127.0.0.1:9: "
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn progress_counts_every_point_of_every_workload_once() {
        let url = serve(HashMap::from([(
            "demand",
            vec![("{}", minutes as fn(i64) -> _)],
        )]))
        .await;
        let policy = policy(&[("web", "demand"), ("api", "demand")]);
        let mut request = request(url);
        request.step = Some(15);
        let done = Arc::new(AtomicU64::new(0));
        let counted = done.clone();
        let (total, histories) = tokio::task::spawn_blocking(move || {
            let plan = plan(&policy, &request).unwrap();
            let histories = plan
                .fetch(&|points| {
                    counted.fetch_add(points, Ordering::SeqCst);
                })
                .unwrap();
            (plan.points(), histories)
        })
        .await
        .unwrap();
        // 3 days at 15 s: 17,281 points per workload, two chunks each.
        assert_eq!(total, 2 * 17_281);
        assert_eq!(done.load(Ordering::SeqCst), total);
        assert_eq!(histories[1].trace.typical_step(), 15);
    }

    #[test]
    fn a_range_too_short_or_too_fine_is_refused_before_any_request() {
        let policy = policy(&[("web", "demand")]);
        let mut short = request("http://unused".into());
        short.since = DAY;
        let err = plan(&policy, &short).unwrap_err().to_string();
        assert!(
            err.starts_with("--since 1d: simulate needs at least 2d"),
            "{err}"
        );
        let mut fine = request("http://unused".into());
        fine.since = 365 * DAY;
        fine.step = Some(1);
        let err = plan(&policy, &fine).unwrap_err().to_string();
        assert!(
            err.starts_with("--step 1s: 365d at 1s steps is 31536000 points"),
            "{err}"
        );
        let ok = plan(&policy, &request("http://unused".into())).unwrap();
        assert_eq!((ok.start, ok.end, ok.step), (UNTIL - 3 * DAY, UNTIL, 60));
        assert_eq!(ok.queries, vec![("web".to_string(), "demand".to_string())]);
    }
}
