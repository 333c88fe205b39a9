//! One pass of a policy's loop, as stages that hand data forward:
//! 1. `observe`: every workload's replicas and the capacity;
//! 2. `demand`: each online workload's demand and forecast (refitting on its schedule);
//! 3. the planner (`crate::plan::plan`, pure and shared with the simulator);
//! 4. `decisions`: what was decided, into the report and the metrics;
//! 5. `apply`: the shrinks, the wait for their pods, the grows.
//!
//! Works on the `DemandSource` and `Actuator` traits, so it is tested without a cluster.

mod apply;
mod decisions;
mod demand;
mod observe;

pub use demand::FitSlots;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::actuate::{Actuator, Fence, Target, WriteRefused, WriterMemory};
use crate::forecast::{FittedModel, ForecastRecord, Forecaster};
use crate::plan::{Plan, PlanInput, PlanMemory};
use crate::policy::{Mode, ShiftPolicySpec};
use crate::source::DemandSource;
use crate::telemetry::Metrics;

/// Records, before these scales to zero are sent, that tideshift sends them (why:
/// `apply::record_zeros_ahead`). Refuses like a write once the fence refuses.
pub trait WriteAhead: Send + Sync {
    fn record_zeros(&self, zeros: Vec<PendingZero>) -> BoxFuture<'_, Result<(), WriteRefused>>;
}

/// A scale to zero about to be sent: to `object`, of `workload`, which is at `index` in the
/// status's workloads (the cycle's order, `CycleReport::workloads`).
#[derive(Clone, Debug, PartialEq)]
pub struct PendingZero {
    pub index: usize,
    pub workload: String,
    pub object: String,
    /// Unix seconds: the cycle's time.
    pub since: i64,
}

/// What stays between cycles of one policy.
#[derive(Default)]
pub struct PolicyMemory {
    pub plan_memory: PlanMemory,
    pub models: HashMap<String, FittedEntry>,
    /// Per online workload: the forecast made `startup` ahead for each grid time, to overlay on
    /// observed demand, to measure the error, and to judge whether to plan on it.
    pub predictions: HashMap<String, ForecastRecord>,
    pub last_plan: Option<Plan>,
}

pub struct FittedEntry {
    pub model: Arc<dyn FittedModel>,
    pub fitted_at: i64,
    /// What the fit depended on; a change refits at once.
    pub fingerprint: String,
}

/// What a cycle needs from the daemon.
pub struct Environment<'a> {
    pub source: &'a dyn DemandSource,
    pub actuator: &'a dyn Actuator,
    pub forecaster: Arc<dyn Forecaster>,
    /// The process's fit slots (`FitSlots`): fits are bounded across all policies.
    pub fit_slots: &'a FitSlots,
    /// Checked before every write (by the actuator right before sending it, with the time
    /// the write may take): refuses once leadership is lost or about to run out, or once the
    /// policy has changed since the cycle began.
    pub may_write: Fence<'a>,
    /// Where a scale to zero is recorded before it is sent (the policy's status).
    pub write_ahead: &'a dyn WriteAhead,
    /// Longest wait for shrunk pods to be gone before growing anyway.
    pub shrink_wait: Duration,
    pub metrics: &'a Metrics,
    /// Labels `policy`, `namespace` for metrics.
    pub policy: &'a str,
    pub namespace: &'a str,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadReport {
    pub name: String,
    pub class: &'static str,
    pub target: Target,
    pub current: u32,
    pub ready: u32,
    pub desired: u32,
    pub reason: String,
    /// Online with a forecast: its method (`ForecastMethod::name`).
    pub forecast_method: Option<&'static str>,
    /// Online with a forecast: whether the plan used it.
    pub forecast_trusted: Option<bool>,
    /// What the actuator knows of the target's writers after the cycle, for the status.
    pub writers: Option<WriterMemory>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    pub name: String,
    pub class: &'static str,
    pub from: u32,
    pub to: u32,
}

/// Everything a cycle learnt and did, for status, Events, metrics and tests.
#[derive(Clone, Debug, Default)]
pub struct CycleReport {
    pub now: i64,
    pub dry_run: bool,
    pub plan: Option<Plan>,
    pub workloads: Vec<WorkloadReport>,
    /// (workload, why): demand unreadable, the plan held it.
    pub missing_metrics: Vec<(String, String)>,
    /// Online workloads held because their first forecast is still queued for a fit.
    pub warming_up: Vec<(String, String)>,
    /// (workload, why): the forecaster fell back or could not fit.
    pub forecast_notes: Vec<(String, String)>,
    /// (workload, why): its forecast was not planned on; sized on observed demand instead.
    pub untrusted: Vec<(String, String)>,
    /// (workload, why): another writer owns it; not written.
    pub conflicts: Vec<(String, String)>,
    /// Reads or writes that failed.
    pub errors: Vec<String>,
    /// Writes made (or, in dry-run, that would be made), in order.
    pub applied: Vec<Applied>,
    /// Shrunk pods still held capacity when the wait ran out.
    pub shrink_wait_timed_out: bool,
    /// Scales to zero were recorded in the status before being sent (`WriteAhead`): the status
    /// on the server differs from the one the cycle began with, so it is written.
    pub zeros_recorded: bool,
    /// The fence refused a write (leadership lost, the policy changed); the rest was not
    /// written.
    pub fenced: Option<WriteRefused>,
}

impl CycleReport {
    /// One line for status and Events: what moved.
    pub fn summary(&self) -> String {
        if self.applied.is_empty() {
            return "no change".into();
        }
        let moves: Vec<String> = self
            .applied
            .iter()
            .map(|a| format!("{} {}→{}", a.name, a.from, a.to))
            .collect();
        format!(
            "{}{}",
            if self.dry_run {
                "would scale "
            } else {
                "scaled "
            },
            moves.join(", ")
        )
    }

    /// `up` when an online workload grew (capacity moved to online), else `down`.
    pub fn direction(&self) -> Option<&'static str> {
        if self.applied.is_empty() {
            None
        } else if self
            .applied
            .iter()
            .any(|a| a.class == "online" && a.to > a.from)
        {
            Some("up")
        } else {
            Some("down")
        }
    }
}

fn labels<'l>(env: &'l Environment<'l>, workload: &'l str, class: &'l str) -> [&'l str; 4] {
    [env.policy, env.namespace, workload, class]
}

/// Run one cycle for `spec` (already validated) of the policy in `namespace`.
pub async fn run_cycle(
    env: &Environment<'_>,
    spec: &ShiftPolicySpec,
    memory: &mut PolicyMemory,
    now: i64,
) -> CycleReport {
    let mut report = CycleReport {
        now,
        dry_run: spec.mode == Mode::DryRun,
        ..Default::default()
    };
    let seen = observe::workloads(env, spec, &mut report).await;
    let online = demand::online_states(env, spec, memory, &seen, &mut report, now).await;
    let offline = observe::offline_states(spec, &seen);
    let capacity = observe::capacity(env, spec, &mut report).await;
    if seen.blind(spec) {
        report
            .errors
            .push("not every workload could be read; holding".into());
        return report;
    }
    let input = PlanInput {
        now,
        capacity,
        online,
        offline,
    };
    let (plan, plan_memory) = crate::plan::plan(spec, &input, &memory.plan_memory);
    memory.plan_memory = plan_memory;
    decisions::record(env, spec, &plan, &input, &seen, &mut report);
    apply::apply(env, &plan, &mut report).await;
    for workload in &mut report.workloads {
        workload.writers = env.actuator.writers(&workload.target);
    }
    memory.last_plan = Some(plan.clone());
    report.plan = Some(plan);
    report
}
