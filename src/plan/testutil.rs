//! Builders for planner unit tests.

use super::{OfflineState, OnlineState, PlanInput, Resources};
use crate::forecast::{Forecast, ForecastMethod};
use crate::policy::ShiftPolicySpec;

/// Two online workloads (`pay` priority 10, `refund` priority 0, 100 demand per replica, no
/// headroom, startup 30s) and two offline (`train` weight 2, `report` weight 1), 1-core/1-GiB
/// pods; interval 15s, stabilization 5m, 10%/min.
pub(crate) const POLICY: &str = r#"
interval: 15s
capacity: {cpu: "100", memory: 100Gi}
online:
  - name: pay
    target: {kind: Deployment, name: pay}
    demand: {query: pay}
    perReplica: 100
    headroom: 0
    replicas: {min: 2, max: 80}
    startup: 30s
    priority: 10
  - name: refund
    target: {kind: Deployment, name: refund}
    demand: {query: refund}
    perReplica: 100
    headroom: 0
    replicas: {min: 1, max: 80}
    startup: 30s
offline:
  - name: train
    target: {kind: Deployment, name: train}
    replicas: {min: 0, max: 100}
    weight: 2
  - name: report
    target: {kind: Deployment, name: report}
    replicas: {min: 0, max: 100}
    weight: 1
guardrails:
  scaleDown: {maxPercentPerMinute: 10, stabilization: 5m}
  onMissingMetrics: hold
"#;

pub(crate) fn spec() -> ShiftPolicySpec {
    spec_from(POLICY)
}

pub(crate) fn spec_from(yaml: &str) -> ShiftPolicySpec {
    serde_yaml::from_str(yaml).expect("test policy parses")
}

pub(crate) const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

pub(crate) fn pod() -> Resources {
    Resources::new(1.0, GIB)
}

pub(crate) fn capacity(cores: f64) -> Resources {
    Resources::new(cores, cores * GIB)
}

/// A forecast from `start` in 60 s steps with the given upper band.
pub(crate) fn forecast(start: i64, upper: &[f64]) -> Forecast {
    Forecast {
        start,
        step: 60,
        point: upper.iter().map(|v| v * 0.9).collect(),
        lower: upper.iter().map(|v| v * 0.8).collect(),
        upper: upper.to_vec(),
        quantile: 0.95,
        method: ForecastMethod::Regression,
    }
}

pub(crate) fn online(name: &str, current: u32, forecast: Option<Forecast>) -> OnlineState {
    OnlineState {
        name: name.to_string(),
        forecast,
        // Readable, and no floor under the forecast: tests that need demand unreadable now set
        // `None`.
        observed_demand: Some(0.0),
        accuracy: None,
        current,
        pod: pod(),
    }
}

pub(crate) fn offline(name: &str, current: u32) -> OfflineState {
    OfflineState {
        name: name.to_string(),
        current,
        pod: pod(),
    }
}

/// `pay` and `refund` with flat forecasts, `train` and `report` at the given replicas.
pub(crate) fn input(
    now: i64,
    cores: f64,
    pay: (u32, f64),
    refund: (u32, f64),
    batch: (u32, u32),
) -> PlanInput {
    PlanInput {
        now,
        capacity: capacity(cores),
        online: vec![
            online("pay", pay.0, Some(forecast(now, &[pay.1; 60]))),
            online("refund", refund.0, Some(forecast(now, &[refund.1; 60]))),
        ],
        offline: vec![offline("train", batch.0), offline("report", batch.1)],
    }
}
