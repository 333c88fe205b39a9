//! Logging set-up, the daemon's Prometheus metrics, and its HTTP endpoints (`/metrics`,
//! `/healthz`, `/readyz`). Kept apart from the control logic, which only records into
//! [`Metrics`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::{StreamExt, TryStreamExt};
use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tracing_subscriber::EnvFilter;

/// Logs go to stderr so that `--json` output on stdout stays clean. `RUST_LOG` overrides the
/// default level; `TIDESHIFT_LOG_FORMAT=json` switches to JSON lines for log collectors.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: log files and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if std::env::var("TIDESHIFT_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

mod gauges;

pub use gauges::LabelledGauges;

const WORKLOAD_LABELS: &[&str] = &["policy", "namespace", "workload", "class"];

/// The `method` label values of `tideshift_forecast_method` (`ForecastMethod::name`).
pub const FORECAST_METHODS: [&str; 4] = ["regression", "seasonal-naive", "naive", "fallback"];

/// Every metric the daemon exports; names are fixed by the chart and the dashboard.
#[derive(Clone)]
pub struct Metrics {
    /// Every metric registered once (which checks the definitions); `render` must write what
    /// its `gather` would, which a test checks.
    #[cfg_attr(not(test), allow(dead_code))]
    registry: Registry,
    /// The same metrics, in name order, for [`Metrics::render`].
    collectors: Arc<Vec<Box<dyn Collector>>>,
    pub demand: LabelledGauges,
    pub forecast_demand: LabelledGauges,
    pub forecast_peak_demand: LabelledGauges,
    pub desired_replicas: LabelledGauges,
    pub current_replicas: LabelledGauges,
    pub ready_replicas: LabelledGauges,
    pub capacity: LabelledGauges,
    pub shortfall_replicas: LabelledGauges,
    pub forecast_error_ratio: LabelledGauges,
    pub forecast_missed_ratio: LabelledGauges,
    pub forecast_trusted: LabelledGauges,
    pub forecast_method: LabelledGauges,
    pub decision_duration_seconds: HistogramVec,
    pub shifts_total: IntCounterVec,
    pub prometheus_errors_total: IntCounterVec,
    pub kube_api_errors_total: IntCounterVec,
    pub leader: IntGauge,
    pub policy_condition: LabelledGauges,
    pub build_info: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut families = Families::default();
        let demand = families.gauge(
            "tideshift_demand",
            "Observed demand of an online workload, in the unit of its query",
            WORKLOAD_LABELS,
        );
        let forecast_demand = families.gauge(
            "tideshift_forecast_demand",
            "Demand forecast earlier for now (band: point, lower, upper), to overlay on tideshift_demand",
            &["policy", "namespace", "workload", "class", "band"],
        );
        let forecast_peak_demand = families.gauge(
            "tideshift_forecast_peak_demand",
            "Highest upper-band demand forecast within the horizon",
            WORKLOAD_LABELS,
        );
        let desired_replicas = families.gauge(
            "tideshift_desired_replicas",
            "Replicas the last plan asked for",
            WORKLOAD_LABELS,
        );
        let current_replicas = families.gauge(
            "tideshift_current_replicas",
            "Replicas the workload asks for now (spec)",
            WORKLOAD_LABELS,
        );
        let ready_replicas = families.gauge(
            "tideshift_ready_replicas",
            "Ready pods of the workload",
            WORKLOAD_LABELS,
        );
        let capacity = families.gauge(
            "tideshift_capacity",
            "Capacity shared by a policy's workloads (cpu in cores, memory in bytes)",
            &["policy", "namespace", "resource"],
        );
        let shortfall_replicas = families.gauge(
            "tideshift_shortfall_replicas",
            "Replicas the forecast needs that the capacity cannot give",
            WORKLOAD_LABELS,
        );
        let forecast_error_ratio = families.gauge(
            "tideshift_forecast_error_ratio",
            "Mean absolute percentage error of the forecast over the last 6h (0..1+)",
            WORKLOAD_LABELS,
        );
        let forecast_missed_ratio = families.gauge(
            "tideshift_forecast_missed_ratio",
            "Share of the planner's judged window (2h, or 8 steps) in which demand was above the forecast's upper band",
            WORKLOAD_LABELS,
        );
        let forecast_trusted = families.gauge(
            "tideshift_forecast_trusted",
            "1 when the plan used the forecast; 0 when the workload was sized on observed demand (an unchecked fallback, or a band the demand keeps breaking)",
            WORKLOAD_LABELS,
        );
        let forecast_method = families.gauge(
            "tideshift_forecast_method",
            "1 for the method that made the workload's forecast (regression, seasonal-naive, naive, fallback)",
            &["policy", "namespace", "workload", "class", "method"],
        );
        let decision_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tideshift_decision_duration_seconds",
                "Time of one policy cycle: read, forecast, plan, apply",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["policy"],
        )
        .expect("valid metric definition");
        let decision_duration_seconds = families.add(decision_duration_seconds);
        let shifts_total = families.counter(
            "tideshift_shifts_total",
            "Shifts applied: up moves capacity to online, down gives it back",
            &["policy", "namespace", "direction"],
        );
        let prometheus_errors_total = families.counter(
            "tideshift_prometheus_errors_total",
            "Failed Prometheus queries by reason",
            &["reason"],
        );
        let kube_api_errors_total = families.counter(
            "tideshift_kube_api_errors_total",
            "Failed Kubernetes API calls by verb",
            &["verb"],
        );
        for reason in crate::source::SourceError::REASONS {
            prometheus_errors_total.with_label_values(&[*reason]);
        }
        for verb in crate::actuate::ActuateError::VERBS {
            kube_api_errors_total.with_label_values(&[*verb]);
        }
        let leader = IntGauge::new(
            "tideshift_leader",
            "1 when this replica holds the lease and may write",
        )
        .expect("valid metric definition");
        let leader = families.add(leader);
        let policy_condition = families.gauge(
            "tideshift_policy_condition",
            "1 when the policy's condition of this type is True",
            &["policy", "namespace", "type"],
        );
        let build_info = IntGaugeVec::new(
            Opts::new("tideshift_build_info", "Version of the running daemon"),
            &["version"],
        )
        .expect("valid metric definition");
        let build_info = families.add(build_info);
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let (registry, collectors) = families.into_parts();
        Self {
            registry,
            collectors: Arc::new(collectors),
            demand,
            forecast_demand,
            forecast_peak_demand,
            desired_replicas,
            current_replicas,
            ready_replicas,
            capacity,
            shortfall_replicas,
            forecast_error_ratio,
            forecast_missed_ratio,
            forecast_trusted,
            forecast_method,
            decision_duration_seconds,
            shifts_total,
            prometheus_errors_total,
            kube_api_errors_total,
            leader,
            policy_condition,
            build_info,
        }
    }

    /// Drop every series of a policy that was deleted, so dashboards do not show ghosts.
    /// `workloads` are its (name, class) pairs.
    pub fn forget_policy(&self, namespace: &str, policy: &str, workloads: &[(String, &str)]) {
        for (workload, class) in workloads {
            let labels = [policy, namespace, workload.as_str(), *class];
            for vec in [
                &self.demand,
                &self.forecast_peak_demand,
                &self.desired_replicas,
                &self.current_replicas,
                &self.ready_replicas,
                &self.shortfall_replicas,
                &self.forecast_error_ratio,
                &self.forecast_missed_ratio,
                &self.forecast_trusted,
            ] {
                let _ = vec.remove_label_values(&labels);
            }
            for method in FORECAST_METHODS {
                let _ = self.forecast_method.remove_label_values(&[
                    policy,
                    namespace,
                    workload.as_str(),
                    class,
                    method,
                ]);
            }
            for band in ["point", "lower", "upper"] {
                let _ = self.forecast_demand.remove_label_values(&[
                    policy,
                    namespace,
                    workload.as_str(),
                    class,
                    band,
                ]);
            }
        }
        for resource in ["cpu", "memory"] {
            let _ = self
                .capacity
                .remove_label_values(&[policy, namespace, resource]);
        }
        for condition in ["Ready", "Degraded", "Conflict", "ForecastShortfall"] {
            let _ = self
                .policy_condition
                .remove_label_values(&[policy, namespace, condition]);
        }
    }

    /// `tideshift_forecast_method`: 1 for `method`, 0 for the others, so a change of method
    /// shows as a step on the dashboard.
    pub fn set_forecast_method(&self, labels: &[&str; 4], method: &str) {
        for m in FORECAST_METHODS {
            self.forecast_method
                .with_label_values(&[labels[0], labels[1], labels[2], labels[3], m])
                .set(if m == method { 1.0 } else { 0.0 });
        }
    }

    /// The text exposition of every metric, as `Registry::gather` and `TextEncoder` would write
    /// it, one family at a time: gathering all at once copied every series (tens of thousands
    /// at 500 policies, ~15 MB) before the first byte was written.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut text = Vec::new();
        for collector in self.collectors.iter() {
            text.extend(render_collector(collector.as_ref())?);
        }
        String::from_utf8(text).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }

    /// What `render` writes, a collector's families at a time, each made when the body asks
    /// for more: a scrape holds one family's text (about 200 KB for a per-workload family at
    /// 1,000 online workloads) instead of all of it (3.5 MB at 500 policies).
    pub fn render_stream(
        &self,
    ) -> impl futures::Stream<Item = Result<Vec<u8>, prometheus::Error>> + Send + 'static {
        let collectors = self.collectors.clone();
        futures::stream::iter(0..collectors.len())
            .map(move |i| render_collector(collectors[i].as_ref()))
    }
}

/// The text exposition of one collector's families, in `Registry::gather`'s order.
fn render_collector(collector: &dyn Collector) -> Result<Vec<u8>, prometheus::Error> {
    let mut families = collector.collect();
    families.retain(|family| !family.get_metric().is_empty());
    for family in &mut families {
        family
            .mut_metric()
            .sort_by(|a, b| label_values(a).cmp(label_values(b)));
    }
    let mut text = Vec::new();
    TextEncoder::new().encode(&families, &mut text)?;
    Ok(text)
}

fn label_values(metric: &prometheus::proto::Metric) -> impl Iterator<Item = &str> {
    metric.get_label().iter().map(|pair| pair.value())
}

/// The metrics as they are defined: registered (which checks them) and kept in name order.
#[derive(Default)]
struct Families {
    registry: Registry,
    collectors: Vec<Box<dyn Collector>>,
}

impl Families {
    fn add<C: Collector + Clone + 'static>(&mut self, collector: C) -> C {
        self.registry
            .register(Box::new(collector.clone()))
            .expect("metric registered once");
        self.collectors.push(Box::new(collector.clone()));
        collector
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[&str]) -> LabelledGauges {
        self.add(LabelledGauges::new(name, help, labels).expect("valid metric definition"))
    }

    fn counter(&mut self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition"),
        )
    }

    fn into_parts(mut self) -> (Registry, Vec<Box<dyn Collector>>) {
        self.collectors.sort_by_key(|c| {
            c.desc()
                .first()
                .map(|d| d.fq_name.clone())
                .unwrap_or_default()
        });
        (self.registry, self.collectors)
    }
}

/// What `/readyz` reports: the caches are synced and, with leader election, this replica is
/// either the leader or a healthy standby (it can reach the Lease).
#[derive(Clone, Default)]
pub struct Health {
    pub caches_synced: Arc<AtomicBool>,
    pub lease_healthy: Arc<AtomicBool>,
    pub leader_election: bool,
}

impl Health {
    pub fn ready(&self) -> bool {
        self.caches_synced.load(Ordering::SeqCst)
            && (!self.leader_election || self.lease_healthy.load(Ordering::SeqCst))
    }
}

#[derive(Clone)]
struct ServerState {
    metrics: Metrics,
    health: Health,
}

async fn metrics_handler(State(state): State<ServerState>) -> impl IntoResponse {
    let body = state.metrics.render_stream().inspect_err(|e| {
        // The status line is sent by then: the scrape ends cut short and Prometheus counts it
        // failed (`up` 0).
        tracing::warn!(error = %e, "encoding metrics failed; the scrape is cut short");
    });
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        axum::body::Body::from_stream(body),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<ServerState>) -> (StatusCode, &'static str) {
    if state.health.ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

pub fn router(metrics: Metrics, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(ServerState { metrics, health })
}

/// Serve the endpoints until `shutdown` resolves.
pub async fn serve(
    listen: SocketAddr,
    metrics: Metrics,
    health: Health,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(metrics, health))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_counters_start_at_zero_so_rates_and_alerts_work_before_the_first_error() {
        let text = Metrics::new().render().unwrap();
        for reason in crate::source::SourceError::REASONS {
            let line = format!("tideshift_prometheus_errors_total{{reason=\"{reason}\"}} 0");
            assert!(text.contains(&line), "missing {line}");
        }
        assert!(text.contains("tideshift_kube_api_errors_total{verb=\"patch\"} 0"));
    }

    #[test]
    fn exports_the_contract_names() {
        let metrics = Metrics::new();
        let labels = ["checkout", "shop", "payment", "online"];
        metrics.demand.with_label_values(&labels).set(1.0);
        metrics
            .forecast_demand
            .with_label_values(&["checkout", "shop", "payment", "online", "upper"])
            .set(2.0);
        metrics
            .forecast_peak_demand
            .with_label_values(&labels)
            .set(3.0);
        metrics.desired_replicas.with_label_values(&labels).set(4.0);
        metrics.current_replicas.with_label_values(&labels).set(4.0);
        metrics.ready_replicas.with_label_values(&labels).set(4.0);
        metrics
            .capacity
            .with_label_values(&["checkout", "shop", "cpu"])
            .set(16.0);
        metrics
            .shortfall_replicas
            .with_label_values(&labels)
            .set(0.0);
        metrics
            .forecast_error_ratio
            .with_label_values(&labels)
            .set(0.1);
        metrics
            .decision_duration_seconds
            .with_label_values(&["checkout"])
            .observe(0.01);
        metrics
            .shifts_total
            .with_label_values(&["checkout", "shop", "up"])
            .inc();
        metrics
            .prometheus_errors_total
            .with_label_values(&["timeout"])
            .inc();
        metrics
            .kube_api_errors_total
            .with_label_values(&["patch"])
            .inc();
        metrics.leader.set(1);
        metrics
            .policy_condition
            .with_label_values(&["checkout", "shop", "Ready"])
            .set(1.0);
        // Every family has a series now; two more workloads, set out of order, show the order
        // of label values: render() writes exactly what gathering all at once would.
        for workload in ["zeta", "alpha"] {
            let labels = ["checkout", "shop", workload, "online"];
            metrics.demand.with_label_values(&labels).set(1.0);
            metrics
                .forecast_missed_ratio
                .with_label_values(&labels)
                .set(0.0);
            metrics.forecast_trusted.with_label_values(&labels).set(1.0);
            metrics.set_forecast_method(&labels, "naive");
        }
        let mut gathered = Vec::new();
        TextEncoder::new()
            .encode(&metrics.registry.gather(), &mut gathered)
            .unwrap();
        let text = metrics.render().unwrap();
        assert_eq!(text, String::from_utf8(gathered).unwrap());
        for name in [
            "tideshift_demand{",
            "tideshift_forecast_demand{band=\"upper\"",
            "tideshift_forecast_peak_demand{",
            "tideshift_desired_replicas{",
            "tideshift_current_replicas{",
            "tideshift_ready_replicas{",
            "tideshift_capacity{",
            "tideshift_shortfall_replicas{",
            "tideshift_forecast_error_ratio{",
            "tideshift_decision_duration_seconds_bucket{",
            "tideshift_shifts_total{",
            "tideshift_prometheus_errors_total{reason=\"timeout\"}",
            "tideshift_kube_api_errors_total{verb=\"patch\"}",
            "tideshift_leader 1",
            "tideshift_policy_condition{",
            "tideshift_build_info{version=",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        let workloads = ["payment", "zeta", "alpha"].map(|w| (w.to_string(), "online"));
        metrics.forget_policy("shop", "checkout", &workloads);
        let text = metrics.render().unwrap();
        assert!(!text.contains("tideshift_demand{"), "{text}");
    }

    #[tokio::test]
    async fn readyz_follows_caches_and_lease() {
        let health = Health {
            leader_election: true,
            ..Default::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = router(Metrics::new(), health.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let status = |path: &'static str| {
            let client = client.clone();
            async move {
                client
                    .get(format!("http://{address}{path}"))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        assert_eq!(status("/healthz").await, 200);
        assert_eq!(status("/readyz").await, 503);
        health.caches_synced.store(true, Ordering::SeqCst);
        assert_eq!(status("/readyz").await, 503, "lease not reachable yet");
        health.lease_healthy.store(true, Ordering::SeqCst);
        assert_eq!(status("/readyz").await, 200);
        assert_eq!(status("/metrics").await, 200);
    }

    #[tokio::test]
    async fn a_scrape_is_served_family_by_family_and_reads_as_the_whole_text() {
        let metrics = Metrics::new();
        for workload in ["payment", "refund"] {
            let labels = ["checkout", "shop", workload, "online"];
            metrics.demand.with_label_values(&labels).set(2.0);
        }
        metrics.leader.set(1);
        let chunks: Vec<Vec<u8>> = metrics.render_stream().try_collect().await.unwrap();
        assert!(chunks.len() > 10, "{} chunks", chunks.len());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = router(metrics.clone(), Health::default());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let response = reqwest::get(format!("http://{address}/metrics"))
            .await
            .unwrap();
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; version=0.0.4"
        );
        let served = response.text().await.unwrap();
        assert_eq!(served, metrics.render().unwrap());
        assert!(served.contains("tideshift_demand{"), "{served}");
        assert!(served.contains("tideshift_leader 1"), "{served}");
    }
}
