//! What one simulation runs on: the policy's workloads with their pod requests, the shared
//! capacity, each online workload's demand, and the time window.

use crate::plan::Resources;
use crate::policy::{ShiftPolicy, ShiftPolicySpec};

use super::demand::Demand;

/// The HPA's sync period: the reactive baseline decides this often, and it is the finest
/// step the simulated clock takes.
pub const HPA_SYNC_SECONDS: i64 = 15;

/// The least demand a simulation runs on: a warm-up to learn from, then the scored window.
pub const MIN_DEMAND_SECONDS: i64 = 2 * 86_400;

#[derive(Clone, Debug)]
pub struct OnlineSpec {
    pub name: String,
    pub per_replica: f64,
    pub headroom: f64,
    pub pod: Resources,
    pub startup: i64,
    pub min: u32,
    pub max: u32,
    pub priority: i32,
}

#[derive(Clone, Debug)]
pub struct OfflineSpec {
    pub name: String,
    pub pod: Resources,
    pub min: u32,
    pub max: u32,
    pub weight: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error(
        "{field}: required by `tideshift simulate`, which has no cluster to read it from \
         (e.g. resources: {{cpu: 500m, memory: 1Gi}})"
    )]
    Missing { field: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("the demand traces do not overlap in time: {0}")]
    NoOverlap(String),
    #[error(
        "the demand covers {covered}, too short to simulate: it needs at least 2 days \
         (a warm-up to learn from, then the window that is scored)"
    )]
    TooShort { covered: String },
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub policy_name: String,
    pub spec: ShiftPolicySpec,
    pub capacity: Resources,
    pub online: Vec<OnlineSpec>,
    pub offline: Vec<OfflineSpec>,
    /// Per online workload, in policy order; `None`: no trace, the workload has no demand.
    pub demand: Vec<Option<Demand>>,
    /// The forecaster's step: the policy's, or the traces' step when that is coarser.
    pub forecast_step: i64,
    /// The policy's loop interval, in seconds.
    pub interval: i64,
    /// The simulated clock's step, in seconds.
    pub tick: i64,
    /// Strategies run from `start`; only `[scored_from, end)` is scored.
    pub start: i64,
    pub scored_from: i64,
    pub end: i64,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Scenario {
    /// What a simulation needs of the policy besides demand (capacity, pod requests), checked
    /// before any demand is read: the capacity, the online and the offline workloads.
    pub fn workloads(
        policy: &ShiftPolicy,
    ) -> Result<(Resources, Vec<OnlineSpec>, Vec<OfflineSpec>), ScenarioError> {
        let spec = &policy.spec;
        let capacity = Resources {
            cpu: spec
                .capacity
                .cpu
                .as_ref()
                .ok_or_else(|| ScenarioError::Missing {
                    field: "spec.capacity.cpu".into(),
                })?
                .value,
            memory: spec
                .capacity
                .memory
                .as_ref()
                .ok_or_else(|| ScenarioError::Missing {
                    field: "spec.capacity.memory".into(),
                })?
                .value,
        };
        if spec.online.is_empty() {
            return Err(ScenarioError::Invalid {
                field: "spec.online".into(),
                message: "at least one online workload is needed to simulate".into(),
            });
        }
        let online = spec
            .online
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let resources = w.resources.as_ref().ok_or_else(|| ScenarioError::Missing {
                    field: format!("spec.online[{i}].resources ({})", w.name),
                })?;
                if !(w.per_replica.is_finite() && w.per_replica > 0.0) {
                    return Err(ScenarioError::Invalid {
                        field: format!("spec.online[{i}].perReplica ({})", w.name),
                        message: "must be a positive number".into(),
                    });
                }
                Ok(OnlineSpec {
                    name: w.name.clone(),
                    per_replica: w.per_replica,
                    headroom: w.headroom,
                    pod: Resources {
                        cpu: resources.cpu.value,
                        memory: resources.memory.value,
                    },
                    startup: w.startup.as_secs() as i64,
                    min: w.replicas.min,
                    max: w.replicas.max,
                    priority: w.priority,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let offline = spec
            .offline
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let resources = w.resources.as_ref().ok_or_else(|| ScenarioError::Missing {
                    field: format!("spec.offline[{i}].resources ({})", w.name),
                })?;
                Ok(OfflineSpec {
                    name: w.name.clone(),
                    pod: Resources {
                        cpu: resources.cpu.value,
                        memory: resources.memory.value,
                    },
                    min: w.replicas.min,
                    max: w.replicas.max,
                    weight: w.weight,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (field, pod) in online
            .iter()
            .map(|w| (&w.name, w.pod))
            .chain(offline.iter().map(|w| (&w.name, w.pod)))
        {
            if !(pod.cpu > 0.0 || pod.memory > 0.0) {
                return Err(ScenarioError::Invalid {
                    field: format!("resources of {field}"),
                    message: "a pod must request some cpu or memory".into(),
                });
            }
        }
        Ok((capacity, online, offline))
    }

    /// `warmup`: seconds at the start of the demand that strategies see but that are not
    /// scored (the forecaster's first history, the static split's sizing week). Shortened to
    /// half of the demand when the demand is shorter than twice that.
    pub fn new(
        policy: &ShiftPolicy,
        demand: Vec<Option<Demand>>,
        forecast_step: i64,
        warmup: i64,
    ) -> Result<Self, ScenarioError> {
        let spec = &policy.spec;
        let (capacity, online, offline) = Self::workloads(policy)?;

        let mut start = i64::MIN;
        let mut end = i64::MAX;
        for d in demand.iter().flatten() {
            start = start.max(d.start());
            end = end.min(d.end());
        }
        if start == i64::MIN {
            return Err(ScenarioError::Invalid {
                field: "--trace".into(),
                message: "no online workload has a demand trace".into(),
            });
        }
        if end <= start {
            return Err(ScenarioError::NoOverlap(
                demand
                    .iter()
                    .zip(&online)
                    .filter_map(|(d, w)| {
                        d.as_ref().map(|d| {
                            format!("{} {}..{}", w.name, rfc3339(d.start()), rfc3339(d.end()))
                        })
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            ));
        }
        let covered = end - start;
        if covered < MIN_DEMAND_SECONDS {
            return Err(ScenarioError::TooShort {
                covered: humantime::format_duration(std::time::Duration::from_secs(covered as u64))
                    .to_string(),
            });
        }
        let warmup = warmup.clamp(0, covered / 2);
        let interval = (spec.interval.as_secs() as i64).max(1);
        let tick = gcd(HPA_SYNC_SECONDS, interval);
        // Align the clock so every strategy decides on the same instants.
        let start = start.div_euclid(tick) * tick + if start % tick == 0 { 0 } else { tick };
        Ok(Self {
            policy_name: policy.metadata.name.clone().unwrap_or_default(),
            spec: spec.clone(),
            capacity,
            online,
            offline,
            demand,
            forecast_step,
            interval,
            tick,
            start,
            scored_from: start + warmup,
            end,
        })
    }

    /// Workload index in the simulated cluster: online ones first, then offline ones.
    pub fn offline_index(&self, k: usize) -> usize {
        self.online.len() + k
    }
    pub fn workload_count(&self) -> usize {
        self.online.len() + self.offline.len()
    }
    pub fn ticks(&self) -> u64 {
        ((self.end - self.start + self.tick - 1) / self.tick) as u64
    }
}

pub fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| t.to_string())
}
