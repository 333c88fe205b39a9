//! Stage 4: what the plan decided, into the cycle's report and the metrics.

use super::observe::Observations;
use super::{CycleReport, Environment, WorkloadReport, labels};
use crate::plan::{Plan, PlanInput};
use crate::policy::ShiftPolicySpec;

pub(super) fn record(
    env: &Environment<'_>,
    spec: &ShiftPolicySpec,
    plan: &Plan,
    input: &PlanInput,
    seen: &Observations,
    report: &mut CycleReport,
) {
    for decision in &plan.online {
        env.metrics
            .forecast_trusted
            .with_label_values(&labels(env, &decision.name, "online"))
            // 1 only when the plan was made on the forecast: an untrusted forecast, a stale one
            // and no forecast at all are all 0 (a workload's peak comes from a planned-on
            // forecast only).
            .set(if decision.peak.is_some() { 1.0 } else { 0.0 });
        if let Some(why) = &decision.untrusted {
            report.untrusted.push((decision.name.clone(), why.clone()));
        }
        // No forecast sized it: the plan held it as for missing demand, and Degraded says so,
        // with the demand stage's own reason when it had one (a failed query, a first fit
        // still queued).
        let listed = |list: &[(String, String)]| list.iter().any(|(n, _)| *n == decision.name);
        if let Some(why) = &decision.forecast_unusable
            && !listed(&report.missing_metrics)
            && !listed(&report.warming_up)
        {
            report
                .missing_metrics
                .push((decision.name.clone(), why.clone()));
        }
    }
    for (workloads, class, targets) in [
        (&plan.online, "online", &seen.online_targets),
        (&plan.offline, "offline", &seen.offline_targets),
    ] {
        for (decision, target) in workloads.iter().zip(targets.iter()) {
            let observed = seen.get(&decision.name);
            env.metrics
                .desired_replicas
                .with_label_values(&labels(env, &decision.name, class))
                .set(f64::from(decision.desired));
            let forecast = input
                .online
                .iter()
                .find(|state| class == "online" && state.name == decision.name)
                .and_then(|state| state.forecast.as_ref());
            report.workloads.push(WorkloadReport {
                name: decision.name.clone(),
                class,
                target: target.clone(),
                current: decision.current,
                ready: observed.map_or(0, |o| o.ready),
                desired: decision.desired,
                reason: decision.reason.clone(),
                forecast_method: forecast.map(|f| f.method.name()),
                forecast_trusted: forecast.map(|_| decision.peak.is_some()),
                writers: None,
            });
        }
    }
    for workload in &spec.online {
        let missing = plan
            .shortfalls
            .iter()
            .filter(|s| s.workload == workload.name)
            .map(|s| s.missing_replicas)
            .max()
            .unwrap_or(0);
        env.metrics
            .shortfall_replicas
            .with_label_values(&labels(env, &workload.name, "online"))
            .set(f64::from(missing));
    }
}
