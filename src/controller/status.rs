//! What a cycle tells the user: the `status` of the ShiftPolicy (conditions Ready, Degraded,
//! Conflict, ForecastShortfall with `observedGeneration`, last decision, workloads, next peak,
//! shortfalls) and Kubernetes Events. Events fire on changes (a shift, a condition turning
//! True or back), never once per cycle.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::{Event, EventType};
use serde_json::json;

use super::cycle::{CycleReport, PendingZero};
use crate::actuate::{OtherWriter, WriteRefused, WriterMemory};
use crate::policy::{
    DecisionStatus, OtherWriterStatus, PeakStatus, PendingZeroStatus, ShiftPolicyStatus,
    ShortfallStatus, WorkloadStatus,
};

pub const READY: &str = "Ready";
pub const DEGRADED: &str = "Degraded";
pub const CONFLICT: &str = "Conflict";
pub const FORECAST_SHORTFALL: &str = "ForecastShortfall";
pub const CONDITION_TYPES: [&str; 4] = [READY, DEGRADED, CONFLICT, FORECAST_SHORTFALL];

/// One condition as this cycle sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Kubernetes caps condition messages at 32 KiB; keep them readable well below that.
fn clip(text: String) -> String {
    if text.chars().count() <= 1000 {
        text
    } else {
        let mut clipped: String = text.chars().take(997).collect();
        clipped.push_str("...");
        clipped
    }
}

fn list(items: &[(String, String)]) -> String {
    items
        .iter()
        .map(|(name, why)| format!("{name}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The four conditions for a cycle. `invalid` is the validation message when the current
/// generation is invalid (and the cycle ran on the last valid one, or not at all).
pub fn judge(report: Option<&CycleReport>, invalid: Option<&str>) -> Vec<Judgement> {
    let mut ready = Judgement {
        type_: READY,
        status: true,
        reason: "Planned".into(),
        message: String::new(),
    };
    let mut degraded = Judgement {
        type_: DEGRADED,
        status: false,
        reason: "Healthy".into(),
        message: "demand and workloads readable".into(),
    };
    let mut conflict = Judgement {
        type_: CONFLICT,
        status: false,
        reason: "NoOtherWriter".into(),
        message: "tideshift is the only writer of its targets".into(),
    };
    let mut shortfall = Judgement {
        type_: FORECAST_SHORTFALL,
        status: false,
        reason: "CapacitySuffices".into(),
        message: "the forecast fits the capacity".into(),
    };
    match report {
        Some(report) => {
            ready.message = report.summary();
            if report.plan.is_none() {
                ready.status = false;
                ready.reason = "NotPlanned".into();
                ready.message = report.errors.join("; ");
            } else if !report.errors.is_empty() {
                ready.status = false;
                ready.reason = "ActuationFailed".into();
                ready.message = report.errors.join("; ");
            } else if let Some(refused) = report.fenced {
                ready.status = false;
                (ready.reason, ready.message) = match refused {
                    WriteRefused::LeadershipLost => (
                        "LostLeadership".into(),
                        "leadership lost mid-cycle; the next leader continues".into(),
                    ),
                    WriteRefused::PolicyChanged => (
                        "PolicyChanged".into(),
                        "the policy changed mid-cycle; the rest of the plan made on the old \
                         spec was not written, the next cycle plans on the new one"
                            .into(),
                    ),
                };
            }
            if !report.missing_metrics.is_empty() {
                degraded.status = true;
                degraded.reason = "MetricsUnavailable".into();
                degraded.message = format!(
                    "holding the last plan, never scaling these down: {}",
                    list(&report.missing_metrics)
                );
            } else if !report.warming_up.is_empty() {
                degraded.status = true;
                degraded.reason = FORECAST_WARMING_UP.into();
                degraded.message = format!(
                    "holding, never scaling these down, until their first forecast is fitted: {}",
                    list(&report.warming_up)
                );
            } else if report.shrink_wait_timed_out {
                degraded.status = true;
                degraded.reason = "ShrinkSlow".into();
                degraded.message =
                    "shrunk batch pods still held capacity when the wait ran out; grew anyway"
                        .into();
            } else if !report.untrusted.is_empty() {
                degraded.status = true;
                degraded.reason = "ForecastUntrusted".into();
                degraded.message = format!(
                    "sized on observed demand, as an HPA would: {}",
                    list(&report.untrusted)
                );
            } else if !report.forecast_notes.is_empty() {
                degraded.status = true;
                degraded.reason = "ForecastFallback".into();
                degraded.message = list(&report.forecast_notes);
            }
            if !report.conflicts.is_empty() {
                conflict.status = true;
                conflict.reason = "OtherWriter".into();
                conflict.message =
                    format!("not writing these targets: {}", list(&report.conflicts));
            }
            if let Some(plan) = &report.plan
                && !plan.shortfalls.is_empty()
            {
                shortfall.status = true;
                shortfall.reason = "CapacityShort".into();
                shortfall.message = plan
                    .shortfalls
                    .iter()
                    .map(|s| {
                        format!(
                            "{} misses {} replicas ({:.1} demand unserved) at {}",
                            s.workload,
                            s.missing_replicas,
                            s.unserved_demand,
                            rfc3339(s.at)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
            }
        }
        None => {
            ready.status = false;
            ready.reason = "NotPlanned".into();
        }
    }
    if let Some(message) = invalid {
        ready.status = false;
        ready.reason = "InvalidPolicy".into();
        ready.message = if report.is_some() {
            format!("{message}; running the last valid generation")
        } else {
            format!("{message}; nothing applied")
        };
    }
    for judgement in [&mut ready, &mut degraded, &mut conflict, &mut shortfall] {
        judgement.message = clip(std::mem::take(&mut judgement.message));
    }
    vec![ready, degraded, conflict, shortfall]
}

/// Conditions with `lastTransitionTime` kept from `previous` when the status did not change.
pub fn conditions(
    judgements: &[Judgement],
    previous: &[Condition],
    generation: Option<i64>,
) -> Vec<Condition> {
    judgements
        .iter()
        .map(|j| {
            let status = if j.status { "True" } else { "False" };
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == j.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
            Condition {
                type_: j.type_.to_string(),
                status: status.to_string(),
                reason: j.reason.clone(),
                message: j.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// How long a status whose only news is its wording (a reason's demand figure, the next
/// peak's forecast) may go unwritten. Anything else that changes is written at once.
pub const STATUS_REFRESH: std::time::Duration = std::time::Duration::from_secs(300);

fn pending_zero_status(pending: &BTreeMap<String, i64>) -> Vec<PendingZeroStatus> {
    pending
        .iter()
        .map(|(object, &since)| PendingZeroStatus {
            object: object.clone(),
            since: rfc3339(since),
        })
        .collect()
}

/// The status patch that records scales to zero before they are sent (`pendingZero`; why:
/// `apply`'s `record_zeros_ahead`). Each workload's entry is found by its index, guarded by a
/// test of its name: if the list is not the cycle's (the policy's first status is not written
/// yet, or the spec changed), the API server refuses the whole patch. A Deployment or
/// StatefulSet has one object, so the list is replaced. `None` when there is nothing to record.
pub fn zeros_ahead(zeros: &[PendingZero]) -> Option<json_patch::Patch> {
    let operations: Vec<serde_json::Value> = zeros
        .iter()
        .flat_map(|zero| {
            let at = format!("/status/workloads/{}", zero.index);
            let pending = pending_zero_status(&[(zero.object.clone(), zero.since)].into());
            [
                json!({"op": "test", "path": format!("{at}/name"), "value": zero.workload}),
                json!({"op": "add", "path": format!("{at}/pendingZero"), "value": pending}),
            ]
        })
        .collect();
    if operations.is_empty() {
        return None;
    }
    serde_json::from_value(serde_json::Value::Array(operations)).ok()
}

/// Whether `new` tells something `old` does not, beyond what changes every cycle without a
/// decision changing: each workload's reason text and the next peak's time and demand (its
/// replicas are material).
pub fn materially_different(old: &ShiftPolicyStatus, new: &ShiftPolicyStatus) -> bool {
    let steady = |status: &ShiftPolicyStatus| {
        let mut status = status.clone();
        for workload in &mut status.workloads {
            workload.reason = None;
        }
        if let Some(peak) = status.next_peak.as_mut() {
            peak.at.clear();
            peak.demand = 0.0;
        }
        for shortfall in &mut status.shortfalls {
            shortfall.at.clear();
            shortfall.unserved_demand = 0.0;
        }
        status
    };
    steady(old) != steady(new)
}

/// The whole status for a cycle; `previous` keeps what a cycle that did not plan cannot know.
pub fn status(
    report: Option<&CycleReport>,
    conditions: Vec<Condition>,
    generation: Option<i64>,
    previous: Option<&ShiftPolicyStatus>,
) -> ShiftPolicyStatus {
    let Some(report) = report.filter(|r| r.plan.is_some()) else {
        return ShiftPolicyStatus {
            observed_generation: generation,
            conditions,
            ..previous.cloned().unwrap_or_default()
        };
    };
    let plan = report.plan.as_ref();
    let previous_decision = previous.and_then(|p| p.last_decision.clone());
    // A dry-run repeats the same "would scale" every cycle: keep its first time.
    let repeated_dry_run = report.dry_run
        && previous_decision
            .as_ref()
            .is_some_and(|d| d.dry_run && d.summary == report.summary());
    let last_decision = if report.applied.is_empty() || repeated_dry_run {
        previous_decision.or_else(|| {
            Some(DecisionStatus {
                time: rfc3339(report.now),
                summary: "no change".into(),
                dry_run: report.dry_run,
            })
        })
    } else {
        Some(DecisionStatus {
            time: rfc3339(report.now),
            summary: report.summary(),
            dry_run: report.dry_run,
        })
    };
    ShiftPolicyStatus {
        observed_generation: generation,
        conditions,
        last_decision,
        workloads: report
            .workloads
            .iter()
            .map(|w| WorkloadStatus {
                name: w.name.clone(),
                class: w.class.to_string(),
                desired: w.desired,
                current: w.current,
                reason: Some(w.reason.clone()).filter(|r| !r.is_empty()),
                forecast_method: w.forecast_method.map(str::to_string),
                forecast_trusted: w.forecast_trusted,
                written: w
                    .writers
                    .as_ref()
                    .map(|m| m.written.clone())
                    .unwrap_or_default(),
                pending_zero: w
                    .writers
                    .as_ref()
                    .map(|m| pending_zero_status(&m.pending_zero))
                    .unwrap_or_default(),
                other_writer: w
                    .writers
                    .as_ref()
                    .and_then(|m| m.other_writer.as_ref())
                    .map(|other| OtherWriterStatus {
                        since: rfc3339(other.since),
                        message: other.reason.clone(),
                    }),
            })
            .collect(),
        next_peak: plan
            .and_then(|p| p.next_peak.as_ref())
            .map(|peak| PeakStatus {
                workload: peak.workload.clone(),
                at: rfc3339(peak.at),
                demand: if peak.demand.is_finite() {
                    peak.demand
                } else {
                    0.0
                },
                replicas: peak.replicas,
            }),
        shortfalls: plan
            .map(|p| {
                p.shortfalls
                    .iter()
                    .map(|s| ShortfallStatus {
                        workload: s.workload.clone(),
                        at: rfc3339(s.at),
                        missing_replicas: s.missing_replicas,
                        unserved_demand: if s.unserved_demand.is_finite() {
                            s.unserved_demand
                        } else {
                            0.0
                        },
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// What a predecessor knew of a workload's writers, read back from the status it wrote.
pub fn writers(workload: &WorkloadStatus) -> WriterMemory {
    WriterMemory {
        written: workload.written.clone(),
        pending_zero: workload
            .pending_zero
            .iter()
            .filter_map(|pending| {
                let since = chrono::DateTime::parse_from_rfc3339(&pending.since).ok()?;
                Some((pending.object.clone(), since.timestamp()))
            })
            .collect(),
        other_writer: workload.other_writer.as_ref().and_then(|other| {
            let since = chrono::DateTime::parse_from_rfc3339(&other.since).ok()?;
            Some(OtherWriter {
                since: since.timestamp(),
                reason: other.message.clone(),
            })
        }),
    }
}

fn event(type_: EventType, reason: &str, action: &str, note: String) -> Event {
    Event {
        type_,
        reason: reason.into(),
        note: Some(clip(note)),
        action: action.into(),
        secondary: None,
    }
}

/// Degraded's reason while first forecasts wait for a fit.
const FORECAST_WARMING_UP: &str = "ForecastWarmingUp";

/// Events for this cycle: every applied shift, and each condition that changed.
pub fn events(
    report: Option<&CycleReport>,
    judgements: &[Judgement],
    previous: &[Condition],
) -> Vec<Event> {
    let mut out = Vec::new();
    if let Some(report) = report
        && let Some(direction) = report.direction()
    {
        let reason = match (report.dry_run, direction) {
            (true, _) => "DryRunShift",
            (false, "up") => "ShiftUp",
            (false, _) => "ShiftDown",
        };
        out.push(event(EventType::Normal, reason, "Scale", report.summary()));
    }
    let was = |type_: &str| {
        previous
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status == "True", c.reason.clone()))
    };
    for j in judgements {
        let before = was(j.type_);
        let changed = match &before {
            None => j.status != (j.type_ == READY),
            Some((status, reason)) => *status != j.status || (j.status && *reason != j.reason),
        };
        if !changed {
            continue;
        }
        let bad = if j.type_ == READY {
            !j.status
        } else {
            j.status
        };
        // First forecasts queued after a start are expected, not news: no Event into the
        // warm-up or out of it (a daemon restarting with 2,000 policies would post 4,000).
        let warming_up = |reason: &str| reason == FORECAST_WARMING_UP;
        if (bad && warming_up(&j.reason))
            || (!bad
                && before
                    .as_ref()
                    .is_some_and(|(_, reason)| warming_up(reason)))
        {
            continue;
        }
        let (type_, reason) = if bad {
            (EventType::Warning, j.reason.clone())
        } else {
            (EventType::Normal, format!("{}Resolved", j.type_))
        };
        let note = if j.message.is_empty() {
            format!("{} is now {}", j.type_, j.status)
        } else {
            j.message.clone()
        };
        out.push(event(type_, &reason, "Reconcile", note));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::cycle::Applied;
    use crate::plan::{ForecastShortfall, Plan};

    fn report() -> CycleReport {
        CycleReport {
            now: 1_790_000_000,
            plan: Some(Plan {
                now: 1_790_000_000,
                online: vec![],
                offline: vec![],
                shortfalls: vec![],
                next_peak: None,
            }),
            applied: vec![
                Applied {
                    name: "batch".into(),
                    class: "offline",
                    from: 8,
                    to: 2,
                },
                Applied {
                    name: "payment".into(),
                    class: "online",
                    from: 2,
                    to: 6,
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_shift_up_is_an_event_and_conditions_keep_their_transition_time() {
        let report = report();
        let judgements = judge(Some(&report), None);
        assert!(judgements.iter().all(|j| j.status == (j.type_ == READY)));
        let first = conditions(&judgements, &[], Some(3));
        let events_now = events(Some(&report), &judgements, &[]);
        assert_eq!(events_now.len(), 1, "only the shift: nothing turned bad");
        assert_eq!(events_now[0].reason, "ShiftUp");
        assert_eq!(
            events_now[0].note.as_deref(),
            Some("scaled batch 8→2, payment 2→6")
        );
        let again = conditions(&judgements, &first, Some(3));
        assert_eq!(
            again[0].last_transition_time, first[0].last_transition_time,
            "unchanged status keeps its transition time"
        );
        assert_eq!(again[0].observed_generation, Some(3));
    }

    #[test]
    fn a_forecast_warming_up_is_degraded_without_events() {
        let warming = CycleReport {
            warming_up: vec![("payment".into(), "no forecast yet".into())],
            applied: vec![],
            ..report()
        };
        let judged = judge(Some(&warming), None);
        let degraded = judged.iter().find(|j| j.type_ == DEGRADED).unwrap();
        assert!(degraded.status);
        assert_eq!(degraded.reason, FORECAST_WARMING_UP);
        assert!(degraded.message.contains("payment: no forecast yet"));
        assert!(events(Some(&warming), &judged, &[]).is_empty());
        let warm = CycleReport {
            applied: vec![],
            ..report()
        };
        let was_warming = conditions(&judged, &[], None);
        assert!(events(Some(&warm), &judge(Some(&warm), None), &was_warming).is_empty());
        // Demand lost while warming up is news.
        let lost = CycleReport {
            missing_metrics: vec![("payment".into(), "query failed".into())],
            ..warming
        };
        let reasons: Vec<String> = events(Some(&lost), &judge(Some(&lost), None), &was_warming)
            .into_iter()
            .map(|e| e.reason)
            .collect();
        assert_eq!(reasons, ["MetricsUnavailable"]);
    }

    #[test]
    fn missing_metrics_degrade_once_and_recover_once() {
        let mut report = report();
        report.applied.clear();
        report
            .missing_metrics
            .push(("payment".into(), "query \"x\": timed out".into()));
        let bad = judge(Some(&report), None);
        let degraded = bad.iter().find(|j| j.type_ == DEGRADED).unwrap();
        assert!(degraded.status);
        assert!(degraded.message.contains("never scaling these down"));
        let healthy = conditions(
            &judge(
                Some(&CycleReport {
                    missing_metrics: vec![],
                    ..report.clone()
                }),
                None,
            ),
            &[],
            None,
        );
        let turned_bad = events(Some(&report), &bad, &healthy);
        assert_eq!(turned_bad.len(), 1);
        assert_eq!(turned_bad[0].reason, "MetricsUnavailable");
        assert_eq!(turned_bad[0].type_, EventType::Warning);
        let still_bad = events(Some(&report), &bad, &conditions(&bad, &[], None));
        assert!(still_bad.is_empty(), "no event per cycle while it lasts");
        let recovered = events(
            None,
            &judge(
                Some(&CycleReport {
                    missing_metrics: vec![],
                    ..report
                }),
                None,
            ),
            &conditions(&bad, &[], None),
        );
        assert_eq!(recovered[0].reason, "DegradedResolved");
    }

    #[test]
    fn invalid_policy_and_shortfall_are_reported() {
        let mut report = report();
        report
            .plan
            .as_mut()
            .unwrap()
            .shortfalls
            .push(ForecastShortfall {
                workload: "payment".into(),
                at: 1_790_000_600,
                missing_replicas: 3,
                unserved_demand: 450.0,
            });
        let judgements = judge(
            Some(&report),
            Some("spec.online[0].replicas.max: below min"),
        );
        let ready = &judgements[0];
        assert!(!ready.status);
        assert_eq!(ready.reason, "InvalidPolicy");
        assert!(ready.message.contains("last valid generation"));
        let shortfall = judgements
            .iter()
            .find(|j| j.type_ == FORECAST_SHORTFALL)
            .unwrap();
        assert!(shortfall.status);
        assert!(shortfall.message.contains("payment misses 3 replicas"));
        let status = status(
            Some(&report),
            conditions(&judgements, &[], Some(2)),
            Some(2),
            None,
        );
        assert_eq!(status.shortfalls[0].missing_replicas, 3);
        assert_eq!(status.shortfalls[0].at, "2026-09-21T14:23:20Z");
        assert_eq!(
            status.last_decision.unwrap().summary,
            "scaled batch 8→2, payment 2→6"
        );
    }

    #[test]
    fn only_wording_is_not_a_material_change() {
        let old = ShiftPolicyStatus {
            workloads: vec![WorkloadStatus {
                name: "payment".into(),
                class: "online".into(),
                desired: 4,
                current: 4,
                reason: Some("forecast 310.2 (in 12m) needs 4".into()),
                ..Default::default()
            }],
            next_peak: Some(PeakStatus {
                workload: "payment".into(),
                at: "2026-12-02T20:00:00Z".into(),
                demand: 310.2,
                replicas: 4,
            }),
            ..Default::default()
        };
        let mut reworded = old.clone();
        reworded.workloads[0].reason = Some("forecast 311.9 (in 11m) needs 4".into());
        let peak = reworded.next_peak.as_mut().unwrap();
        peak.demand = 311.9;
        peak.at = "2026-12-02T20:01:00Z".into();
        assert!(!materially_different(&old, &reworded));
        let mut decided = reworded.clone();
        decided.workloads[0].desired = 5;
        assert!(materially_different(&old, &decided));
        let mut peak_needs_more = reworded;
        peak_needs_more.next_peak.as_mut().unwrap().replicas = 5;
        assert!(materially_different(&old, &peak_needs_more));
    }

    #[test]
    fn a_scale_to_zero_is_recorded_as_pending_at_its_workloads_index() {
        let workload = |name: &str, written: u32| WorkloadStatus {
            name: name.into(),
            class: "offline".into(),
            written: [(name.to_string(), written)].into(),
            ..Default::default()
        };
        let status = ShiftPolicyStatus {
            workloads: vec![workload("payment", 6), workload("training", 3)],
            ..Default::default()
        };
        let zero = PendingZero {
            index: 1,
            workload: "training".into(),
            object: "training".into(),
            since: 1_790_000_000,
        };
        let patch = zeros_ahead(std::slice::from_ref(&zero)).expect("a zero to record");
        // Applied as the API server applies it, to the policy as it was read.
        let mut policy = json!({"status": status});
        json_patch::patch(&mut policy, &patch).expect("the patch applies");
        let after: ShiftPolicyStatus = serde_json::from_value(policy["status"].take()).unwrap();
        assert_eq!(
            after.workloads[1].pending_zero,
            [PendingZeroStatus {
                object: "training".into(),
                since: "2026-09-21T14:13:20Z".into(),
            }]
        );
        assert_eq!(after.workloads[1].written, status.workloads[1].written);
        assert_eq!(after.workloads[0], status.workloads[0]);
        // A successor reads both: 3 and 0 are tideshift's.
        let remembered = writers(&after.workloads[1]);
        assert_eq!(remembered.written, status.workloads[1].written);
        assert_eq!(
            remembered.pending_zero,
            [("training".to_string(), 1_790_000_000)].into()
        );
        // The list is not the cycle's: the whole patch is refused, nothing is written.
        for workloads in [
            vec![],
            vec![status.workloads[1].clone(), status.workloads[0].clone()],
        ] {
            let mut other =
                json!({"status": ShiftPolicyStatus { workloads, ..Default::default() }});
            assert!(json_patch::patch(&mut other, &patch).is_err());
        }
        assert!(zeros_ahead(&[]).is_none());
    }
}
