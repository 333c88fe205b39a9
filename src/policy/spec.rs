//! The `ShiftPolicy` custom resource: the one schema that `kubectl apply`, `tideshift check`
//! and `tideshift simulate` all read. Field docs become the CRD's OpenAPI descriptions.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::units::{Cpu, Memory, PolicyDuration};

/// What a platform team declares: which online services to keep served, which batch work may
/// give way, the shared capacity, and the guardrails.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    cel,
    group = "tideshift.io",
    version = "v1alpha1",
    kind = "ShiftPolicy",
    namespaced,
    status = "ShiftPolicyStatus",
    shortname = "sp",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Next peak","type":"string","jsonPath":".status.nextPeak.at"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new(
    "self.online.all(o, !has(self.offline) || self.offline.all(f, f.name != o.name))"
).message("workload names must be unique across online and offline"))]
pub struct ShiftPolicySpec {
    /// `enforce` writes replica counts; `dry-run` forecasts, plans and reports, and writes nothing.
    #[serde(default)]
    pub mode: Mode,
    /// How often the loop runs (source, forecast, plan, actuate).
    #[serde(default = "defaults::interval")]
    pub interval: PolicyDuration,
    /// The capacity online and offline workloads share.
    pub capacity: CapacitySpec,
    /// Latency-critical services that must be served at their forecast peak.
    #[schemars(length(min = 1, max = 100))]
    #[x_kube(validation = Rule::new("self.all(x, self.exists_one(y, y.name == x.name))")
        .message("online workload names must be unique"))]
    pub online: Vec<OnlineWorkload>,
    /// Batch work that gives way before a peak and gets the capacity back after it.
    #[serde(default)]
    #[schemars(length(max = 100))]
    #[x_kube(validation = Rule::new("self.all(x, self.exists_one(y, y.name == x.name))")
        .message("offline workload names must be unique"))]
    pub offline: Vec<OfflineWorkload>,
    /// Forecaster settings.
    #[serde(default)]
    pub forecast: ForecastSettings,
    /// Known promotions and drops: regressors for the forecaster.
    #[serde(default)]
    #[schemars(length(max = 100))]
    #[x_kube(validation = Rule::new("self.all(x, self.exists_one(y, y.name == x.name))")
        .message("event names must be unique"))]
    pub events: Vec<EventSpec>,
    /// Limits on how fast and when capacity moves.
    #[serde(default)]
    pub guardrails: Guardrails,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Enforce,
    DryRun,
}

/// The shared capacity: fixed amounts, or the allocatable of the Nodes a selector picks.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.cpu) || has(self.nodeSelector)")
    .message("capacity needs cpu (a fixed amount) or nodeSelector (read from Nodes)"))]
pub struct CapacitySpec {
    /// CPU shared by the workloads of this policy, e.g. `"96"` or `"96000m"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// Memory shared by the workloads of this policy, e.g. `384Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// Read capacity from the allocatable of Nodes with these labels (daemon only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
}

/// Per-pod resource requests. Optional in the cluster (read from the pod template), required
/// by `tideshift simulate`, which has no cluster to read them from.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodResources {
    pub cpu: Cpu,
    pub memory: Memory,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    Job,
}

/// Which Kubernetes object carries a workload's replicas.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(
    validation = Rule::new("self.kind == 'Job' ? has(self.name) != has(self.selector) : has(self.name)")
        .message("a Deployment or StatefulSet target needs a name; a Job target needs a name or a selector, not both"),
    validation = Rule::new("self.kind == 'Job' || !has(self.selector)")
        .message("only Job targets take a selector")
)]
pub struct TargetRef {
    pub kind: WorkloadKind,
    /// Object name. For Jobs, either `name` or `selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN))]
    pub name: Option<String>,
    /// Defaults to the policy's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS1123_LABEL))]
    pub namespace: Option<String>,
    /// Label selector (Jobs only): every matching Job is one workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, KubeSchema)]
#[serde(deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.min <= self.max").message("replicas.min must not exceed replicas.max"))]
pub struct ReplicaRange {
    #[schemars(range(max = 10_000))]
    pub min: u32,
    #[schemars(range(max = 10_000))]
    pub max: u32,
}

/// Where demand comes from: a PromQL expression that yields one series (requests per second,
/// or any unit `perReplica` is written in).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DemandSpec {
    /// PromQL, e.g. `sum(rate(http_requests_total{app="web"}[1m]))`.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(
    validation = Rule::new("self.target.kind != 'Job'")
        .message("an online workload must be a Deployment or StatefulSet"),
    validation = Rule::new("self.replicas.max >= 1").message("an online workload needs replicas.max >= 1")
)]
pub struct OnlineWorkload {
    /// Unique within the policy; used in metrics, status and traces.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS1123_LABEL))]
    pub name: String,
    pub target: TargetRef,
    pub demand: DemandSpec,
    /// Demand one replica serves within its SLO.
    #[x_kube(validation = Rule::new("self > 0.0").message("perReplica must be greater than 0"))]
    pub per_replica: f64,
    /// Extra capacity on top of the forecast, as a fraction (0.15 = 15%).
    #[serde(default = "defaults::headroom")]
    #[schemars(range(min = 0, max = 10))]
    pub headroom: f64,
    /// Forecast quantile to plan for (the upper band), in (0.5, 1).
    #[serde(default = "defaults::quantile")]
    #[x_kube(validation = Rule::new("self > 0.5 && self < 1.0")
        .message("quantile must be greater than 0.5 and less than 1"))]
    pub quantile: f64,
    pub replicas: ReplicaRange,
    /// How long a new replica takes to become ready: the lead time of a scale-up.
    #[serde(default = "defaults::startup")]
    pub startup: PolicyDuration,
    /// When online peaks cannot all fit, higher priority is served first.
    #[serde(default)]
    pub priority: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<PodResources>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OfflineWorkload {
    /// Unique within the policy (across online and offline).
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS1123_LABEL))]
    pub name: String,
    pub target: TargetRef,
    pub replicas: ReplicaRange,
    /// Share of the capacity left by online, relative to other offline workloads.
    #[serde(default = "defaults::weight")]
    #[schemars(range(max = 1_000_000))]
    #[x_kube(validation = Rule::new("self > 0.0").message("weight must be greater than 0"))]
    pub weight: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<PodResources>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForecastSettings {
    /// Resolution of the demand series the forecaster works on.
    #[serde(default = "defaults::step")]
    pub step: PolicyDuration,
    /// How much past demand to learn from.
    #[serde(default = "defaults::history")]
    pub history: PolicyDuration,
    /// How far ahead to forecast (at least the largest `startup` plus `interval`).
    #[serde(default = "defaults::horizon")]
    pub horizon: PolicyDuration,
    /// Seasonal periods, e.g. `[1d, 7d]`.
    #[serde(default = "defaults::seasonality")]
    #[schemars(length(max = 4))]
    pub seasonality: Vec<PolicyDuration>,
    /// How often the model is refitted; predictions are refreshed every `interval`.
    #[serde(default = "defaults::retrain")]
    pub retrain: PolicyDuration,
}

impl Default for ForecastSettings {
    fn default() -> Self {
        Self {
            step: defaults::step(),
            history: defaults::history(),
            horizon: defaults::horizon(),
            seasonality: defaults::seasonality(),
            retrain: defaults::retrain(),
        }
    }
}

/// A known promotion: a fixed start (RFC 3339) or a cron schedule, and a duration.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(
    validation = Rule::new("has(self.start) != has(self.cron)")
        .message("an event takes exactly one of start (RFC 3339) or cron"),
    validation = Rule::new("!has(self.timezone) || has(self.cron)")
        .message("timezone applies only to cron; start carries its own offset")
)]
pub struct EventSpec {
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS1123_LABEL))]
    pub name: String,
    /// RFC 3339 start, e.g. `2026-11-10T20:00:00+08:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), extend("format" = "date-time"))]
    pub start: Option<String>,
    /// Five-field cron expression (minute hour day-of-month month day-of-week), evaluated in
    /// `timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), regex(pattern = r"^\s*\S+(\s+\S+){4}\s*$"))]
    pub cron: Option<String>,
    /// IANA time zone for `cron`, default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub timezone: Option<String>,
    pub duration: PolicyDuration,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Guardrails {
    #[serde(default)]
    pub scale_down: ScaleDownGuard,
    #[serde(default)]
    pub on_missing_metrics: MissingMetrics,
    /// Demand with no usable value (NaN, infinite, absent, stale) for this long counts as
    /// missing, and `onMissingMetrics` applies; until then the forecast runs on the history
    /// with a gap. Default: three forecast steps, at least 5m (Prometheus's lookback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_metrics_after: Option<PolicyDuration>,
}

impl Guardrails {
    /// Seconds after which unusable demand counts as missing, for a forecast `step` in seconds.
    pub fn missing_after_secs(&self, step: i64) -> i64 {
        match self.missing_metrics_after {
            Some(after) => after.as_secs().max(1) as i64,
            None => (3 * step).max(300),
        }
    }
}

/// How fast online replicas may be given back.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScaleDownGuard {
    /// Largest share of an online workload's replicas removed per minute, in percent.
    #[serde(default = "defaults::max_percent_per_minute")]
    #[schemars(range(max = 100))]
    #[x_kube(validation = Rule::new("self > 0.0").message("maxPercentPerMinute must be greater than 0"))]
    pub max_percent_per_minute: f64,
    /// An online scale-down happens only when every plan of this window agrees.
    #[serde(default = "defaults::stabilization")]
    pub stabilization: PolicyDuration,
}

impl Default for ScaleDownGuard {
    fn default() -> Self {
        Self {
            max_percent_per_minute: defaults::max_percent_per_minute(),
            stabilization: defaults::stabilization(),
        }
    }
}

/// What to do when an online workload's demand cannot be read.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MissingMetrics {
    /// Keep the last plan; never scale online down.
    #[default]
    Hold,
    /// Scale on observed demand only (no forecast), still never below the last plan.
    Reactive,
}

/// What the daemon reports on the object (`kubectl get sp -o yaml`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShiftPolicyStatus {
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// Ready, Degraded, Conflict, ForecastShortfall.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<DecisionStatus>,
    #[serde(default)]
    pub workloads: Vec<WorkloadStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_peak: Option<PeakStatus>,
    #[serde(default)]
    pub shortfalls: Vec<ShortfallStatus>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionStatus {
    /// RFC 3339 time of the decision.
    pub time: String,
    /// One line: what moved and why.
    pub summary: String,
    pub dry_run: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    pub name: String,
    /// `online` or `offline`.
    pub class: String,
    pub desired: u32,
    pub current: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Online only: the method that made the forecast (`regression`, `seasonal-naive`,
    /// `naive`, or `fallback` when no model could be checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast_method: Option<String>,
    /// Online only: false when the plan did not use the forecast: an unchecked fallback or a
    /// band the demand keeps breaking (sized on observed demand instead), or a stale forecast
    /// (held as missing data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast_trusted: Option<bool>,
    /// Replicas tideshift last wrote (or saw and agreed with), per object: the workload, or
    /// each Job of a selector. A different value written by someone else is another writer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub written: BTreeMap<String, u32>,
    /// Scales to zero tideshift sent and has not seen land yet, recorded before they are sent:
    /// a zero found there soon after `since` is tideshift's too. Through the `scale`
    /// subresource a zero leaves no owner of `spec.replicas`, so nothing else tells a successor
    /// that the zero is not another writer's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_zero: Vec<PendingZeroStatus>,
    /// Another writer changed the target: tideshift leaves it alone for the daemon's
    /// `--conflict-hold` from `since`, and a successor (restart, failover) does too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_writer: Option<OtherWriterStatus>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingZeroStatus {
    /// The object (the Deployment or StatefulSet).
    pub object: String,
    /// When the scale to zero was sent (RFC 3339).
    pub since: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OtherWriterStatus {
    /// RFC 3339 time the other writer was seen.
    pub since: String,
    pub message: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeakStatus {
    pub workload: String,
    /// RFC 3339 time of the highest forecast demand within the horizon.
    pub at: String,
    pub demand: f64,
    pub replicas: u32,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShortfallStatus {
    pub workload: String,
    pub at: String,
    pub missing_replicas: u32,
    pub unserved_demand: f64,
}

/// Names that become label values and metric labels (DNS-1123 label).
pub const DNS1123_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// Kubernetes object names (DNS-1123 subdomain).
pub const DNS1123_SUBDOMAIN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Defaults live in one place so the CRD, the docs and the loader agree.
pub mod defaults {
    use super::PolicyDuration;

    pub fn interval() -> PolicyDuration {
        PolicyDuration::from_secs(15)
    }
    pub fn headroom() -> f64 {
        0.1
    }
    pub fn quantile() -> f64 {
        0.95
    }
    pub fn startup() -> PolicyDuration {
        PolicyDuration::from_secs(30)
    }
    pub fn weight() -> f64 {
        1.0
    }
    pub fn step() -> PolicyDuration {
        PolicyDuration::from_secs(60)
    }
    pub fn history() -> PolicyDuration {
        PolicyDuration::from_secs(14 * 86_400)
    }
    pub fn horizon() -> PolicyDuration {
        PolicyDuration::from_secs(3_600)
    }
    pub fn seasonality() -> Vec<PolicyDuration> {
        vec![
            PolicyDuration::from_secs(86_400),
            PolicyDuration::from_secs(7 * 86_400),
        ]
    }
    pub fn retrain() -> PolicyDuration {
        PolicyDuration::from_secs(600)
    }
    pub fn max_percent_per_minute() -> f64 {
        10.0
    }
    pub fn stabilization() -> PolicyDuration {
        PolicyDuration::from_secs(300)
    }
}
