//! The policy loader on arbitrary bytes: never a panic, never a hang (libFuzzer's -timeout
//! catches slow inputs). Whatever loads must be a valid policy that round-trips through YAML,
//! whose events expand, and that the planner can plan with for two cycles: a policy that
//! passes `tideshift check` must not crash the daemon later.
//!
//! Called by the fuzz target fuzz/fuzz_targets/policy_load.rs (`fuzz/run`), and by
//! tests/fuzz_corpora.rs on every file of fuzz/corpus/policy_load/ in every `tests/run`.

use tideshift::forecast::{Forecast, ForecastMethod};
use tideshift::plan::{self, OfflineState, OnlineState, PlanInput, PlanMemory, Resources};
use tideshift::policy::{self, ShiftPolicySpec};

/// A fixed "now" (2026-09-21), so a crash reproduces from its input alone.
const NOW: i64 = 1_790_000_000;
const DAY: i64 = 86_400;

/// One input: panics when a property does not hold.
pub fn check(data: &[u8]) {
    let policy = match policy::load_bytes(data, "fuzz") {
        Ok(policy) => policy,
        Err(error) => {
            // Error messages are built from the input (paths, lines, excerpts): render them.
            let _ = error.to_string();
            let _ = error.field_errors();
            return;
        }
    };
    assert!(
        policy::validate(&policy).is_ok(),
        "load_bytes returned an invalid policy"
    );

    let text = serde_yaml::to_string(&policy).expect("a loaded policy serializes");
    let again = policy::load_str(&text, "roundtrip").expect("a serialized policy loads back");
    assert_eq!(policy.spec, again.spec, "round trip changed the spec");

    // Errors are allowed (e.g. a cron with too many occurrences), panics are not.
    if let Ok(windows) = policy::events::expand(&policy.spec.events, NOW - 2 * DAY, NOW + 2 * DAY) {
        for window in &windows {
            assert!(window.start < window.end, "empty window {window:?}");
        }
    }

    plan_two_cycles(&policy.spec);
}

/// Two planner cycles on flat forecasts derived from the policy's own numbers: demand at
/// 80% of what `replicas.max` serves, so every guardrail and priority path can be reached.
fn plan_two_cycles(spec: &ShiftPolicySpec) {
    let step = i64::try_from(spec.forecast.step.as_secs())
        .unwrap_or(60)
        .clamp(1, DAY);
    // Enough points to cover any valid horizon without allocating per-second arrays.
    let points = usize::try_from(spec.forecast.horizon.as_secs() / step as u64)
        .unwrap_or(usize::MAX)
        .clamp(1, 2_000);
    let default_pod = Resources {
        cpu: 0.5,
        memory: 512.0 * 1024.0 * 1024.0,
    };
    let pod = |resources: &Option<policy::PodResources>| {
        resources.as_ref().map_or(default_pod, |r| Resources {
            cpu: r.cpu.value,
            memory: r.memory.value,
        })
    };
    let capacity = Resources {
        cpu: spec.capacity.cpu.as_ref().map_or(64.0, |c| c.value),
        memory: spec
            .capacity
            .memory
            .as_ref()
            .map_or(f64::INFINITY, |m| m.value),
    };
    let online = |now: i64, current: &dyn Fn(usize) -> u32| -> Vec<OnlineState> {
        spec.online
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let demand = w.per_replica * f64::from(w.replicas.max) * 0.8;
                OnlineState {
                    name: w.name.clone(),
                    forecast: Some(Forecast {
                        start: now,
                        step,
                        point: vec![demand; points],
                        lower: vec![demand * 0.9; points],
                        upper: vec![demand * 1.1; points],
                        quantile: w.quantile,
                        method: ForecastMethod::Regression,
                    }),
                    observed_demand: Some(demand),
                    accuracy: None,
                    current: current(i),
                    pod: pod(&w.resources),
                }
            })
            .collect()
    };
    let offline = |current: &dyn Fn(usize) -> u32| -> Vec<OfflineState> {
        spec.offline
            .iter()
            .enumerate()
            .map(|(i, w)| OfflineState {
                name: w.name.clone(),
                current: current(i),
                pod: pod(&w.resources),
            })
            .collect()
    };

    let first = PlanInput {
        now: NOW,
        capacity,
        online: online(NOW, &|i| spec.online[i].replicas.min),
        offline: offline(&|i| spec.offline[i].replicas.max),
    };
    let (plan, memory) = plan::plan(spec, &first, &PlanMemory::default());
    let _ = plan.shrinks().count() + plan.grows().count();

    // The next cycle starts from what the first one decided.
    let later = NOW
        + i64::try_from(spec.interval.as_secs())
            .unwrap_or(DAY)
            .clamp(1, DAY);
    let desired = |plans: &[plan::WorkloadPlan], name: &str, fallback: u32| {
        plans
            .iter()
            .find(|p| p.name == name)
            .map_or(fallback, |p| p.desired)
    };
    let second = PlanInput {
        now: later,
        capacity,
        online: online(later, &|i| {
            let w = &spec.online[i];
            desired(&plan.online, &w.name, w.replicas.min)
        }),
        offline: offline(&|i| {
            let w = &spec.offline[i];
            desired(&plan.offline, &w.name, w.replicas.max)
        }),
    };
    let _ = plan::plan(spec, &second, &memory);
}
