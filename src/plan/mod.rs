//! The planner: a pure function from policy, forecasts and current state to a plan.
//!
//! Online workloads get what their forecast band needs over `[now, now + startup + margin]`,
//! highest priority first; offline workloads share what is left by weight. The actuator (or
//! the simulator) applies every shrink before any grow. The rules are explained for platform
//! engineers in `docs/planner.md`.
//!
//! The planner runs every cycle in the daemon and at every step of a simulation, so it does
//! no search over plans: each stage is a single pass over a handful of workloads.

mod capacity;
mod guardrails;
mod offline;
mod online;
mod shortfall;

use serde::{Deserialize, Serialize};

use crate::forecast::{Forecast, RecentAccuracy};
use crate::policy::ShiftPolicySpec;

pub use guardrails::scale_down_allowance;
pub use online::{
    ACTUATION_ALLOWANCE_SECS, FALSE_DISTRUST_CHANCE, MIN_JUDGED_POINTS, MISSED_SHARE_MARGIN,
    TRUST_WINDOW_SECS, replicas_for, trust_window,
};

/// CPU in cores and memory in bytes: the two resources capacity is split by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
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
    /// How this workload's recent forecasts did against its demand; `None` before any could be
    /// judged. A forecast whose band the demand keeps breaking is not planned on.
    pub accuracy: Option<RecentAccuracy>,
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
/// matched to the policy by name; a policy workload without a state is left out of the plan.
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
    /// Online only: replicas the planned-for demand needs (within min/max), before the
    /// scale-down guardrails and the capacity split. `None` for offline workloads.
    pub need: Option<u32>,
    /// Online only: this workload's highest forecast demand within the horizon.
    pub peak: Option<PeakForecast>,
    /// Online only: why its forecast was not planned on (sized on observed demand instead,
    /// through the scale-down guardrails); `None` when it was, or when there was none.
    pub untrusted: Option<String>,
    /// Online only: why no forecast sized it (none, a stale one, no usable value): its demand
    /// was missing, so it was held at no less than its current replicas, and batch did not grow.
    pub forecast_unusable: Option<String>,
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
    /// The peak (in replicas) with the most replicas over all online workloads; ties go to the
    /// earliest.
    pub next_peak: Option<PeakForecast>,
}

/// Whether a workload is served first (online) or gives way (offline).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkloadClass {
    Online,
    Offline,
}

impl WorkloadClass {
    /// The `class` label value of the daemon's metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadClass::Online => "online",
            WorkloadClass::Offline => "offline",
        }
    }
}

/// One replica change to apply.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Action<'a> {
    pub class: WorkloadClass,
    pub name: &'a str,
    pub from: u32,
    pub to: u32,
    pub reason: &'a str,
}

impl Plan {
    /// Every shrink, batch first: applied before any grow so that online never waits for
    /// capacity that batch still holds.
    pub fn shrinks(&self) -> impl Iterator<Item = Action<'_>> {
        let offline = actions(&self.offline, WorkloadClass::Offline).filter(|a| a.to < a.from);
        let online = actions(&self.online, WorkloadClass::Online).filter(|a| a.to < a.from);
        offline.chain(online)
    }

    /// Every grow, online first: applied after all shrinks.
    pub fn grows(&self) -> impl Iterator<Item = Action<'_>> {
        let online = actions(&self.online, WorkloadClass::Online).filter(|a| a.to > a.from);
        let offline = actions(&self.offline, WorkloadClass::Offline).filter(|a| a.to > a.from);
        online.chain(offline)
    }

    /// `true` when applying the plan changes nothing.
    pub fn is_steady(&self) -> bool {
        self.online
            .iter()
            .chain(&self.offline)
            .all(|w| w.current == w.desired)
    }

    /// Look a workload up by name (online first).
    pub fn workload(&self, name: &str) -> Option<&WorkloadPlan> {
        self.online
            .iter()
            .chain(&self.offline)
            .find(|w| w.name == name)
    }
}

fn actions(workloads: &[WorkloadPlan], class: WorkloadClass) -> impl Iterator<Item = Action<'_>> {
    workloads.iter().map(move |w| Action {
        class,
        name: &w.name,
        from: w.current,
        to: w.desired,
        reason: &w.reason,
    })
}

/// What the planner carries from one cycle to the next. Start with `PlanMemory::default()`;
/// feed each cycle the memory the previous one returned.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanMemory {
    /// Unix seconds of the previous plan, for the scale-down rate.
    pub at: Option<i64>,
    pub online: Vec<OnlineMemory>,
}

/// One online workload's memory: its last plan and its stabilization window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OnlineMemory {
    pub name: String,
    /// The replicas the last plan asked for: the "last good plan" that missing metrics hold.
    pub desired: u32,
    /// Recommendations of the stabilization window as `(unix seconds, replicas)`, kept as a
    /// decreasing queue so its maximum is the first entry.
    pub window: Vec<(i64, u32)>,
}

impl PlanMemory {
    pub fn online(&self, name: &str) -> Option<&OnlineMemory> {
        self.online.iter().find(|m| m.name == name)
    }
}

/// Saturating seconds of a policy duration, so absurd durations cannot overflow time maths.
fn secs(d: crate::policy::PolicyDuration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

/// Plan one cycle. Pure and deterministic: the same inputs give the same plan and memory.
pub fn plan(spec: &ShiftPolicySpec, input: &PlanInput, memory: &PlanMemory) -> (Plan, PlanMemory) {
    let now = input.now;
    let interval = secs(spec.interval).max(1);
    let elapsed = memory
        .at
        .map_or(interval, |at| now.saturating_sub(at).max(0));
    let ctx = online::Context {
        now,
        interval,
        elapsed,
        stabilization: secs(spec.guardrails.scale_down.stabilization),
        max_percent_per_minute: spec.guardrails.scale_down.max_percent_per_minute,
        on_missing: spec.guardrails.on_missing_metrics,
    };

    // Online: what each needs and what the guardrails let it have.
    let mut decisions: Vec<online::Decision> = Vec::with_capacity(spec.online.len());
    let mut next_memory = PlanMemory {
        at: Some(now),
        online: Vec::with_capacity(spec.online.len()),
    };
    for workload in &spec.online {
        let Some(state) = input.online.iter().find(|s| s.name == workload.name) else {
            continue;
        };
        let (decision, remembered) =
            online::decide(workload, state, memory.online(&workload.name), &ctx);
        decisions.push(decision);
        next_memory.online.push(remembered);
    }

    // Capacity: online in priority order, needs before guardrail holds.
    let mut order: Vec<usize> = (0..decisions.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(decisions[i].priority));
    // With its demand missing (no forecast covering now, a stale one) or unreadable now, an
    // online workload keeps at least its current replicas, like a minimum: its need is
    // unknown, so no other workload's demand may take them. An untrusted forecast is not that:
    // the observed demand sizes the workload, through the same guardrails.
    let claims: Vec<capacity::Claim> = decisions
        .iter()
        .map(|d| capacity::Claim {
            pod: d.pod,
            min: if d.demand_unknown() {
                d.min.max(d.current)
            } else {
                d.min
            },
            need: d.need,
            want: d.want,
        })
        .collect();
    let mut grants = vec![0u32; decisions.len()];
    capacity::allocate_online(input.capacity, &claims, &order, &mut grants);

    // Offline: what online leaves, counting online at max(current, desired) while it shrinks.
    let mut online_holds = Resources::default();
    for (d, &grant) in decisions.iter().zip(&grants) {
        online_holds = online_holds.plus(d.pod.times(d.current.max(grant)));
    }
    let budget = input.capacity.minus(online_holds);
    let mut offline_plans = offline::plan_offline(spec, input, budget);
    // While an online demand is unreadable (no forecast covering now, or no usable value now)
    // batch does not grow: its
    // need is unknown, and batch would have to give the capacity back once it is readable,
    // possibly mid-peak. An untrusted forecast is not that: online is sized on observed demand
    // then, as an HPA would be, and batch may use what is left.
    if decisions.iter().any(|d| d.demand_unknown()) {
        for plan in offline_plans
            .iter_mut()
            .filter(|plan| plan.desired > plan.current)
        {
            plan.desired = plan.current;
            plan.reason = format!("holding: online demand unreadable ({})", plan.reason);
        }
    }

    // Shortfalls and peaks over the whole forecast horizon.
    let scan = shortfall::scan(input.capacity, &decisions, &grants, &order, now);

    // Record what was actually planned so the next cycle's "last plan" is the real one.
    for (m, &grant) in next_memory.online.iter_mut().zip(&grants) {
        m.desired = grant;
    }

    let online_plans = decisions
        .into_iter()
        .zip(&grants)
        .zip(scan.peaks)
        .map(|((d, &grant), peak)| WorkloadPlan {
            reason: d.reason(grant),
            untrusted: d.untrusted.clone(),
            forecast_unusable: d.forecast_unusable.clone(),
            name: d.name,
            current: d.current,
            desired: grant,
            need: Some(d.need),
            peak,
        })
        .collect();

    (
        Plan {
            now,
            online: online_plans,
            offline: offline_plans,
            shortfalls: scan.shortfalls,
            next_peak: scan.next_peak,
        },
        next_memory,
    )
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests;
