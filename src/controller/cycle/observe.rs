//! Stage 1: what the cluster holds now. Every workload's replicas, readiness, pod size and
//! writers (through the `Actuator`), and the capacity the policy may use.

use std::collections::HashMap;

use super::{CycleReport, Environment, labels};
use crate::actuate::{Observed, Target};
use crate::plan::{OfflineState, Resources};
use crate::policy::ShiftPolicySpec;

/// Stand-in for a resource the policy does not limit: large, but still finite arithmetic.
const UNLIMITED: f64 = 1e18;

/// Every workload's target and what was read of it (absent: the read failed).
pub(super) struct Observations {
    pub online_targets: Vec<Target>,
    pub offline_targets: Vec<Target>,
    pub observed: HashMap<String, Observed>,
}

impl Observations {
    /// Without every workload's current replicas the plan would move capacity it cannot see.
    pub fn blind(&self, spec: &ShiftPolicySpec) -> bool {
        spec.online
            .iter()
            .map(|w| &w.name)
            .chain(spec.offline.iter().map(|w| &w.name))
            .any(|name| !self.observed.contains_key(name))
    }

    pub fn get(&self, name: &str) -> Option<&Observed> {
        self.observed.get(name)
    }
}

/// Observe every workload; a failed read is an error of the report, and leaves it unobserved.
pub(super) async fn workloads(
    env: &Environment<'_>,
    spec: &ShiftPolicySpec,
    report: &mut CycleReport,
) -> Observations {
    let online_targets: Vec<Target> = spec
        .online
        .iter()
        .map(|w| Target::from_ref(&w.target, env.namespace))
        .collect();
    let offline_targets: Vec<Target> = spec
        .offline
        .iter()
        .map(|w| Target::from_ref(&w.target, env.namespace))
        .collect();
    let mut observed: HashMap<String, Observed> = HashMap::new();
    let names = spec
        .online
        .iter()
        .map(|w| (&w.name, "online"))
        .chain(spec.offline.iter().map(|w| (&w.name, "offline")));
    for ((name, class), target) in names.zip(online_targets.iter().chain(&offline_targets)) {
        match env.actuator.observe(target).await {
            Ok(o) => {
                let metric_labels = labels(env, name, class);
                env.metrics
                    .current_replicas
                    .with_label_values(&metric_labels)
                    .set(f64::from(o.replicas));
                env.metrics
                    .ready_replicas
                    .with_label_values(&metric_labels)
                    .set(f64::from(o.ready));
                if let Some(conflict) = &o.conflict {
                    report.conflicts.push((name.clone(), conflict.clone()));
                }
                if !report.dry_run {
                    env.actuator.adopt(target);
                }
                observed.insert(name.clone(), o);
            }
            Err(e) => {
                env.metrics
                    .kube_api_errors_total
                    .with_label_values(&[e.verb()])
                    .inc();
                report.errors.push(e.to_string());
            }
        }
    }
    Observations {
        online_targets,
        offline_targets,
        observed,
    }
}

/// Batch workloads as the planner sees them.
pub(super) fn offline_states(spec: &ShiftPolicySpec, seen: &Observations) -> Vec<OfflineState> {
    spec.offline
        .iter()
        .map(|workload| {
            let seen = seen.get(&workload.name);
            OfflineState {
                name: workload.name.clone(),
                current: seen.map_or(0, |o| o.replicas),
                pod: pod_resources(workload.resources.as_ref(), seen).unwrap_or_default(),
            }
        })
        .collect()
}

/// The capacity the policy may use: its own limits, else what the selected nodes offer.
pub(super) async fn capacity(
    env: &Environment<'_>,
    spec: &ShiftPolicySpec,
    report: &mut CycleReport,
) -> Resources {
    let mut capacity = Resources {
        cpu: spec.capacity.cpu.as_ref().map_or(UNLIMITED, |c| c.value),
        memory: spec.capacity.memory.as_ref().map_or(UNLIMITED, |m| m.value),
    };
    if let Some(selector) = &spec.capacity.node_selector {
        match env.actuator.node_capacity(selector).await {
            Ok(nodes) => {
                if spec.capacity.cpu.is_none() {
                    capacity.cpu = nodes.cpu;
                }
                if spec.capacity.memory.is_none() {
                    capacity.memory = nodes.memory;
                }
            }
            Err(e) => {
                env.metrics
                    .kube_api_errors_total
                    .with_label_values(&[e.verb()])
                    .inc();
                report.errors.push(e.to_string());
            }
        }
    }
    for (resource, value) in [("cpu", capacity.cpu), ("memory", capacity.memory)] {
        if value < UNLIMITED {
            env.metrics
                .capacity
                .with_label_values(&[env.policy, env.namespace, resource])
                .set(value);
        }
    }
    capacity
}

/// A workload's pod size: the policy's, else the pod template's (read with the workload).
pub(super) fn pod_resources(
    given: Option<&crate::policy::PodResources>,
    observed: Option<&Observed>,
) -> Option<Resources> {
    given
        .map(|r| Resources {
            cpu: r.cpu.value,
            memory: r.memory.value,
        })
        .or_else(|| observed.and_then(|o| o.pod))
}
