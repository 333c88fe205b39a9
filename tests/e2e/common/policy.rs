//! The e2e tests' one way to write a ShiftPolicy: typed (the crate's own spec types), with the
//! settings the test bed's classes share, so that a test states only what it is about and a
//! field renamed in the spec breaks the build here, not a YAML template at run time.
//!
//! A test that breaks a policy on purpose takes [`PolicyBuilder::json`] and edits the JSON: what
//! the API server refuses does not fit the typed spec.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tideshift::policy::{Mode, OfflineWorkload, OnlineWorkload, ShiftPolicy, WorkloadKind};

/// A policy being written; [`policy`] starts one.
pub struct PolicyBuilder {
    policy: ShiftPolicy,
}

/// An online workload being written; [`online`] starts one.
pub struct Online(OnlineWorkload);

/// An offline workload being written; [`offline`] starts one.
pub struct Offline(OfflineWorkload);

/// `text` read as the spec type `T` (a duration, a quantity), as a policy's YAML would give it.
fn parsed<T: DeserializeOwned>(text: &str) -> T {
    serde_json::from_value(json!(text)).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// A policy `name` without workloads: every 3 s, 1200m CPU and 12Gi shared, a 1-minute forecast
/// on 3 days of history (30 minutes ahead, a daily season, refitted every 10 minutes), and a
/// scale-down guard of 100% per minute after 20 s.
pub fn policy(name: &str) -> PolicyBuilder {
    let policy = serde_json::from_value(json!({
        "apiVersion": "tideshift.io/v1alpha1",
        "kind": "ShiftPolicy",
        "metadata": {"name": name},
        "spec": {
            "interval": "3s",
            "capacity": {"cpu": "1200m", "memory": "12Gi"},
            "online": [],
            "forecast": {
                "step": "1m", "history": "3d", "horizon": "30m",
                "seasonality": ["1d"], "retrain": "10m",
            },
            "guardrails": {"scaleDown": {"maxPercentPerMinute": 100, "stabilization": "20s"}},
        },
    }))
    .expect("the base policy fits the spec");
    PolicyBuilder { policy }
}

/// Online Deployment `name` serving `query`, `per_replica` each: headroom 10%, quantile 0.9,
/// 1 to 12 replicas, ready 10 s after start.
pub fn online(name: &str, query: &str, per_replica: f64) -> Online {
    Online(
        serde_json::from_value(json!({
            "name": name,
            "target": {"kind": "Deployment", "name": name},
            "demand": {"query": query},
            "perReplica": per_replica,
            "headroom": 0.1,
            "quantile": 0.9,
            "replicas": {"min": 1, "max": 12},
            "startup": "10s",
        }))
        .expect("an online workload fits the spec"),
    )
}

/// Offline Deployment `name`, 0 to 12 replicas.
pub fn offline(name: &str) -> Offline {
    Offline(
        serde_json::from_value(json!({
            "name": name,
            "target": {"kind": "Deployment", "name": name},
            "replicas": {"min": 0, "max": 12},
        }))
        .expect("an offline workload fits the spec"),
    )
}

impl PolicyBuilder {
    pub fn mode(mut self, mode: Mode) -> Self {
        self.policy.spec.mode = mode;
        self
    }

    pub fn capacity(mut self, cpu: &str, memory: &str) -> Self {
        self.policy.spec.capacity.cpu = Some(parsed(cpu));
        self.policy.spec.capacity.memory = Some(parsed(memory));
        self
    }

    /// `forecast.history`, e.g. "14d".
    pub fn history(mut self, history: &str) -> Self {
        self.policy.spec.forecast.history = parsed(history);
        self
    }

    /// `guardrails.missingMetricsAfter`, e.g. "40s".
    pub fn missing_metrics_after(mut self, after: &str) -> Self {
        self.policy.spec.guardrails.missing_metrics_after = Some(parsed(after));
        self
    }

    pub fn online(mut self, workload: Online) -> Self {
        self.policy.spec.online.push(workload.0);
        self
    }

    pub fn offline(mut self, workload: Offline) -> Self {
        self.policy.spec.offline.push(workload.0);
        self
    }

    pub fn build(self) -> ShiftPolicy {
        self.policy
    }

    /// The policy as JSON, to break on purpose.
    pub fn json(self) -> Value {
        serde_json::to_value(self.policy).expect("a policy serializes")
    }
}

impl Online {
    /// The workload as JSON, for a patch that replaces a policy's online list.
    pub fn json(self) -> Value {
        serde_json::to_value(self.0).expect("a workload serializes")
    }

    pub fn replicas(mut self, min: u32, max: u32) -> Self {
        self.0.replicas.min = min;
        self.0.replicas.max = max;
        self
    }

    /// How long a new replica takes to be ready, e.g. "20s".
    pub fn startup(mut self, startup: &str) -> Self {
        self.0.startup = parsed(startup);
        self
    }
}

impl Offline {
    pub fn replicas(mut self, min: u32, max: u32) -> Self {
        self.0.replicas.min = min;
        self.0.replicas.max = max;
        self
    }

    pub fn weight(mut self, weight: f64) -> Self {
        self.0.weight = weight;
        self
    }

    /// A Job target named `name` instead.
    pub fn job(mut self, name: &str) -> Self {
        self.0.target.kind = WorkloadKind::Job;
        self.0.target.name = Some(name.to_string());
        self
    }

    /// A Job target: every Job with these labels.
    pub fn jobs_labelled(mut self, labels: &[(&str, &str)]) -> Self {
        self.0.target.kind = WorkloadKind::Job;
        self.0.target.name = None;
        self.0.target.selector = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self
    }
}
