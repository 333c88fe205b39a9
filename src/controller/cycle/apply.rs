//! Stage 5: the plan's writes. Every shrink, then wait until the shrunk pods are gone (the
//! capacity they held is free only then), then every grow; a workload another writer owns is
//! left alone, and nothing is written once the fence refuses (leadership lost, the policy
//! changed).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Applied, CycleReport, Environment, PendingZero};
use crate::actuate::{Actuator, DryRun, ScaleOutcome, Target, WriteRefused};
use crate::plan::Plan;
use crate::policy::WorkloadKind;

/// Every shrink, then wait for the shrunk pods to be gone, then every grow.
pub(super) async fn apply(env: &Environment<'_>, plan: &Plan, report: &mut CycleReport) {
    let dry_run = DryRun(env.actuator);
    let writer: &dyn Actuator = if report.dry_run {
        &dry_run
    } else {
        env.actuator
    };
    let by_name: HashMap<&str, (&'static str, Target)> = report
        .workloads
        .iter()
        .map(|w| (w.name.as_str(), (w.class, w.target.clone())))
        .collect();
    let in_conflict: Vec<String> = report.conflicts.iter().map(|(n, _)| n.clone()).collect();

    let mut shrunk: Vec<(Target, u32)> = Vec::new();
    // A shrink that failed or met another writer may still land later (a write whose answer
    // was lost) or never: the capacity it was to free is not free, so nothing grows on it in
    // this cycle; the next cycle decides on what it reads then.
    let mut shrink_not_applied = false;
    let shrinks: Vec<(String, u32)> = plan.shrinks().map(|a| (a.name.to_string(), a.to)).collect();
    let grows: Vec<(String, u32)> = plan.grows().map(|a| (a.name.to_string(), a.to)).collect();
    if !report.dry_run {
        match record_zeros_ahead(env, report, &shrinks, &in_conflict).await {
            Ok(recorded) => report.zeros_recorded = recorded,
            Err(refused) => {
                report.fenced = Some(refused);
                return;
            }
        }
    }
    for (phase, actions) in [("shrink", shrinks), ("grow", grows)] {
        if phase == "grow" && !actions.is_empty() && shrink_not_applied {
            report.errors.push(format!(
                "not growing {}: a shrink before it was not applied",
                actions
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            return;
        }
        if phase == "grow" && !actions.is_empty() && !report.dry_run {
            // Batch shrunk by an earlier cycle may still hold the capacity too: a cycle cut
            // short (restart, lost leadership) whose successor finds nothing left to shrink.
            // Whoever shrank it: the plan counts its replicas, not its pods, so pods above its
            // replicas hold capacity the plan takes for free. That includes a target in
            // conflict: a scale to zero through `/scale` leaves no owner on the replicas, so a
            // successor takes its predecessor's last shrink for another writer's.
            let mut settle = shrunk.clone();
            for w in report.workloads.iter().filter(|w| w.class == "offline") {
                let growing = actions.iter().any(|(name, _)| *name == w.name);
                let known = settle.iter().any(|(target, _)| *target == w.target);
                if !growing && !known {
                    settle.push((w.target.clone(), w.current));
                }
            }
            if !settle.is_empty() {
                report.shrink_wait_timed_out = !wait_for_pods(env, &settle).await;
            }
        }
        for (name, desired) in actions {
            let Some((class, target)) = by_name.get(name.as_str()) else {
                continue;
            };
            if in_conflict.contains(&name) {
                // Its capacity is not freed: nothing grows on it (as for a shrink that meets
                // another writer when written).
                shrink_not_applied |= phase == "shrink";
                continue;
            }
            if !report.dry_run
                && let Err(refused) = (env.may_write)(Duration::ZERO)
            {
                report.fenced = Some(refused);
                return;
            }
            match writer.scale(target, desired, env.may_write).await {
                Ok(ScaleOutcome::Scaled { from, to }) | Ok(ScaleOutcome::DryRun { from, to }) => {
                    report.applied.push(Applied {
                        name: name.clone(),
                        class,
                        from,
                        to,
                    });
                    if phase == "shrink" {
                        shrunk.push((target.clone(), to));
                    }
                }
                Ok(ScaleOutcome::Unchanged) => {}
                Ok(ScaleOutcome::Conflict(why)) => {
                    shrink_not_applied |= phase == "shrink";
                    report.conflicts.push((name.clone(), why));
                }
                Ok(ScaleOutcome::Fenced(refused)) => {
                    report.fenced = Some(refused);
                    return;
                }
                Err(e) => {
                    shrink_not_applied |= phase == "shrink";
                    env.metrics
                        .kube_api_errors_total
                        .with_label_values(&[e.verb()])
                        .inc();
                    report.errors.push(e.to_string());
                }
            }
        }
    }
}

/// Before any scale to zero of a Deployment or StatefulSet is sent, the policy's status says
/// that a zero is pending there (`pendingZero`). Through `/scale` a zero leaves no owner of
/// the replicas in `managedFields` (the Scale object omits a zero), so a successor whose
/// predecessor died between the scale and its next status could not tell the zero from
/// another writer's: it reported a false `Conflict` and held the target. The actuator marks the
/// same in its memory right before sending (so its own next cycle accepts a zero whose answer
/// was lost), and the cycle's status carries the mark until a read of zero or a later write
/// settles it. (A Job's zero is `suspend: true`, which keeps an owner.) Returns whether a
/// record was sent: the cycle's status is then written whatever else it says, since the one
/// on the server carries the record.
async fn record_zeros_ahead(
    env: &Environment<'_>,
    report: &CycleReport,
    shrinks: &[(String, u32)],
    in_conflict: &[String],
) -> Result<bool, WriteRefused> {
    let zeros: Vec<PendingZero> = shrinks
        .iter()
        .filter(|(name, to)| *to == 0 && !in_conflict.contains(name))
        .filter_map(|(name, _)| {
            let index = report.workloads.iter().position(|w| &w.name == name)?;
            let target = &report.workloads[index].target;
            let scaled_through_scale = matches!(
                target.kind,
                WorkloadKind::Deployment | WorkloadKind::StatefulSet
            );
            Some(PendingZero {
                index,
                workload: name.clone(),
                object: target.name.clone().filter(|_| scaled_through_scale)?,
                since: report.now,
            })
        })
        .collect();
    if zeros.is_empty() {
        return Ok(false);
    }
    (env.may_write)(Duration::ZERO)?;
    env.write_ahead.record_zeros(zeros).await?;
    Ok(true)
}

/// True when every shrunk target's pods are down to its new count within the wait.
async fn wait_for_pods(env: &Environment<'_>, shrunk: &[(Target, u32)]) -> bool {
    let deadline = Instant::now() + env.shrink_wait;
    // Pods usually go within a second: look again soon, then less often (a pod list per
    // target each time), at most a second apart.
    let mut pause = Duration::from_millis(200);
    loop {
        let mut all_gone = true;
        for (target, replicas) in shrunk {
            match env.actuator.pods_holding_capacity(target).await {
                Ok(pods) if pods <= *replicas => {}
                Ok(_) => all_gone = false,
                Err(e) => {
                    tracing::warn!(%target, error = %e, "cannot count pods after a shrink");
                    all_gone = false;
                }
            }
        }
        if all_gone {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}
