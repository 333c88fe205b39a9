//! The planner: a pure function from policy, forecasts and current state to a plan.
//!
//! Online workloads get what their forecast band needs over `[now, now + startup + margin]`,
//! highest priority first; offline workloads share what is left by weight. The actuator (or
//! the simulator) applies every shrink before any grow.

use crate::forecast::Forecast;

/// CPU in cores and memory in bytes: the two resources capacity is split by.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Resources {
    pub cpu: f64,
    pub memory: f64,
}

/// An online workload as the planner sees it this cycle.
#[derive(Clone, Debug)]
pub struct OnlineState {
    pub name: String,
    /// `None` when demand could not be read or was unusable: the planner then holds.
    pub forecast: Option<Forecast>,
    /// The latest observed demand, used by `onMissingMetrics: reactive` and as a floor.
    pub observed_demand: Option<f64>,
    /// Replicas the workload has now (spec).
    pub current: u32,
    /// Requests of one pod.
    pub pod: Resources,
}

/// An offline workload as the planner sees it this cycle.
#[derive(Clone, Debug)]
pub struct OfflineState {
    pub name: String,
    pub current: u32,
    pub pod: Resources,
}

/// Everything the planner needs for one decision. Workloads are in the policy's order and
/// matched to the policy by name.
#[derive(Clone, Debug)]
pub struct PlanInput {
    /// Unix seconds.
    pub now: i64,
    /// The capacity shared by this policy's workloads.
    pub capacity: Resources,
    pub online: Vec<OnlineState>,
    pub offline: Vec<OfflineState>,
}

/// One workload's decision.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadPlan {
    pub name: String,
    pub current: u32,
    pub desired: u32,
    /// Why `desired` is what it is, for status, Events and logs.
    pub reason: String,
}

/// Forecast demand that the capacity cannot serve, known before it happens.
#[derive(Clone, Debug, PartialEq)]
pub struct ForecastShortfall {
    pub workload: String,
    /// Unix seconds of the worst step.
    pub at: i64,
    pub missing_replicas: u32,
    pub unserved_demand: f64,
}

/// The highest forecast demand within the horizon, over all online workloads.
#[derive(Clone, Debug, PartialEq)]
pub struct PeakForecast {
    pub workload: String,
    pub at: i64,
    pub demand: f64,
    pub replicas: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub now: i64,
    pub online: Vec<WorkloadPlan>,
    pub offline: Vec<WorkloadPlan>,
    pub shortfalls: Vec<ForecastShortfall>,
    pub next_peak: Option<PeakForecast>,
}
