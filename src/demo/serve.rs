//! The live exporter: `/metrics` and `/healthz`, counters brought up to date at each scrape.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{CounterVec, Encoder, GaugeVec, Opts, Registry, TextEncoder};

use super::{DEMAND_METRIC, ExporterError, REQUESTS_METRIC, Workload};

pub(super) fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub(super) struct Live {
    workloads: Vec<Workload>,
    registry: Registry,
    demand: GaugeVec,
    requests: CounterVec,
    /// When the counters were last brought up to date.
    counted_until: Mutex<f64>,
}

impl Live {
    pub(super) fn new(workloads: Vec<Workload>, start: f64) -> Result<Self, ExporterError> {
        let registry = Registry::new();
        let demand = GaugeVec::new(
            Opts::new(DEMAND_METRIC, "Demand now, requests per second."),
            &["workload"],
        )?;
        let requests = CounterVec::new(
            Opts::new(REQUESTS_METRIC, "Requests served."),
            &["workload"],
        )?;
        registry.register(Box::new(demand.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        for w in &workloads {
            requests.with_label_values(&[w.name()]);
        }
        let live = Live {
            workloads,
            registry,
            demand,
            requests,
            counted_until: Mutex::new(start),
        };
        live.update(start);
        Ok(live)
    }

    fn update(&self, now: f64) {
        let mut until = self
            .counted_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for w in &self.workloads {
            self.demand
                .with_label_values(&[w.name()])
                .set(w.demand_at(now));
            if now > *until {
                self.requests
                    .with_label_values(&[w.name()])
                    .inc_by(w.requests_between(*until, now));
            }
        }
        if now > *until {
            *until = now;
        }
    }

    fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

async fn metrics(State(live): State<Arc<Live>>) -> impl IntoResponse {
    live.update(now_f64());
    match live.render() {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            body,
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain")],
                e.to_string(),
            )
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub(super) async fn serve(addr: SocketAddr, live: Arc<Live>) -> Result<(), ExporterError> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(live);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ExporterError::Serve { addr, source })?;
    tracing::info!(%addr, "demand exporter serving /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|source| ExporterError::Serve { addr, source })
}

#[cfg(test)]
mod tests {
    use super::super::Scenario;
    use super::*;

    const NOW: i64 = 1_764_000_000; // 2025-11-24T16:00:00Z, a Monday

    #[test]
    fn live_counters_and_gauges_follow_the_clock() {
        let w = Workload::Scenario(Scenario::parse("web:baseline=10", NOW).unwrap());
        let live = Live::new(vec![w], NOW as f64).unwrap();
        live.update(NOW as f64 + 30.0);
        let text = live.render().unwrap();
        assert!(
            text.contains("tideshift_demo_demand{workload=\"web\"} 10"),
            "{text}"
        );
        assert!(
            text.contains("tideshift_demo_requests_total{workload=\"web\"} 300"),
            "{text}"
        );
        // A clock that steps back does not make the counter go down.
        live.update(NOW as f64 + 10.0);
        assert!(
            live.render()
                .unwrap()
                .contains("tideshift_demo_requests_total{workload=\"web\"} 300")
        );
    }
}
