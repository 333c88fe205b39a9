//! One reconcile of one policy, in three steps that hand data forward:
//! - `admit`: on which spec (the policy's own, or its last valid generation's when the new
//!   one is refused);
//! - `run`: the cycle (`cycle::run_cycle`) on the admitted spec;
//! - `publish`: status, conditions and Events, written only while leading.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::cycle::{self, CycleReport, Environment, PendingZero, WriteAhead};
use super::{Context, Error, PolicyState, foreign_targets, status};
use crate::actuate::{Actuator, WriteRefused};
use crate::policy::{ShiftPolicy, ShiftPolicySpec};

pub fn interval_of(spec: &ShiftPolicySpec) -> Duration {
    spec.interval.0.max(Duration::from_secs(1))
}

pub async fn reconcile(policy: Arc<ShiftPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = policy.namespace().ok_or(Error::NoNamespace)?;
    let name = policy.name_any();
    let key = format!("{namespace}/{name}");
    if !ctx.leadership.is_leader() {
        // A standby looks again soon, so it picks the policy up quickly after a takeover.
        return Ok(Action::requeue(
            interval_of(&policy.spec).min(Duration::from_secs(2)),
        ));
    }
    let state = ctx.state(&key).await;
    let mut state = state.lock().await;
    let started = Instant::now();
    let admitted = admit(&policy, &ctx, &mut state, &namespace);
    let report = match &admitted.spec {
        Some(spec) => Some(run(&policy, &ctx, &mut state, spec, &name, &namespace).await),
        None => None,
    };
    let status_written = state.status_written;
    drop(state);
    ctx.metrics
        .decision_duration_seconds
        .with_label_values(&[&name])
        .observe(started.elapsed().as_secs_f64());
    if let Some(report) = &report {
        if let Some(direction) = report.direction()
            && !report.dry_run
        {
            ctx.metrics
                .shifts_total
                .with_label_values(&[&name, &namespace, direction])
                .inc();
        }
        log_cycle(&key, report, started.elapsed());
    }
    if let Some(message) = &admitted.invalid {
        tracing::warn!(policy = %key, %message, "invalid policy");
    }

    // Write nothing, not even status, once leadership is gone.
    if !ctx.leadership.is_leader() {
        return Ok(Action::requeue(interval_of(&policy.spec)));
    }
    let published = publish(
        &policy,
        &ctx,
        report.as_ref(),
        admitted.invalid.as_deref(),
        &namespace,
        &key,
        status_written,
    )
    .await?;
    match published {
        Published::Deposed => return Ok(Action::requeue(interval_of(&policy.spec))),
        Published::Written => {
            ctx.state(&key).await.lock().await.status_written = Some(Instant::now());
        }
        Published::Unchanged => {}
    }
    let interval = admitted
        .spec
        .as_ref()
        .map_or(interval_of(&policy.spec), interval_of);
    // Keep the cadence: the next cycle starts one interval after this one started.
    Ok(Action::requeue(
        interval
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(200)),
    ))
}

/// What a reconcile runs on.
struct Admitted {
    /// The policy's spec, or its last valid generation's; none when no generation was valid.
    spec: Option<ShiftPolicySpec>,
    /// Why the policy's own spec is refused, if it is.
    invalid: Option<String>,
}

/// On which spec the cycle runs. A reconcile is a cycle: only a new generation and the
/// requeue start one (the controller's generation predicate, `run_controllers`).
fn admit(
    policy: &ShiftPolicy,
    ctx: &Context,
    state: &mut PolicyState,
    namespace: &str,
) -> Admitted {
    let generation = policy.metadata.generation;

    let checked = crate::policy::validate::validate(policy)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())
        .and_then(|()| {
            let foreign = if ctx.allow_cross_namespace {
                Vec::new()
            } else {
                foreign_targets(&policy.spec, namespace)
            };
            if foreign.is_empty() {
                Ok(())
            } else {
                Err(foreign)
            }
        });
    let invalid = match checked {
        Ok(()) => {
            state.last_good = Some((generation, policy.spec.clone()));
            None
        }
        Err(errors) => Some(errors.join("; ")),
    };
    Admitted {
        spec: state.last_good.as_ref().map(|(_, spec)| spec.clone()),
        invalid,
    }
}

/// One cycle on the admitted spec.
async fn run(
    policy: &ShiftPolicy,
    ctx: &Context,
    state: &mut PolicyState,
    spec: &ShiftPolicySpec,
    name: &str,
    namespace: &str,
) -> CycleReport {
    state.workloads = spec
        .online
        .iter()
        .map(|w| (w.name.clone(), "online"))
        .chain(spec.offline.iter().map(|w| (w.name.clone(), "offline")))
        .collect();
    // What a predecessor (a replica that led before, or this process before a restart) knew
    // of the targets' writers: that another writer owns a target, and what tideshift last
    // wrote, so that a foreign write made meanwhile is seen.
    let epoch = ctx.leadership.epoch();
    if state.writers_read_in != Some(epoch) {
        remember_writers(ctx.actuator.as_ref(), policy, spec, namespace);
        state.writers_read_in = Some(epoch);
    }
    let may_write = |within: Duration| {
        if !ctx.leadership.may_write(within) {
            Err(WriteRefused::LeadershipLost)
        } else if ctx.policies.changed_since(policy) {
            Err(WriteRefused::PolicyChanged)
        } else {
            Ok(())
        }
    };
    let write_ahead = StatusWriteAhead {
        policy,
        ctx,
        namespace,
    };
    let env = Environment {
        source: ctx.source.as_ref(),
        actuator: ctx.actuator.as_ref(),
        forecaster: ctx.forecaster.clone(),
        fit_slots: &ctx.fit_slots,
        may_write: &may_write,
        write_ahead: &write_ahead,
        shrink_wait: ctx.shrink_wait,
        metrics: &ctx.metrics,
        policy: name,
        namespace,
    };
    cycle::run_cycle(&env, spec, &mut state.memory, super::unix_now()).await
}

/// The write-ahead of scales to zero: `pendingZero` in the policy's status, as
/// `status::zeros_ahead` puts it. Fenced like the status; a patch the API server refuses (the
/// status's workloads are not the cycle's yet) or that fails lets the scales go ahead, with a
/// warning: without the record a successor may report a false `Conflict`, which holds a
/// target but never scales online down.
struct StatusWriteAhead<'a> {
    policy: &'a ShiftPolicy,
    ctx: &'a Context,
    namespace: &'a str,
}

impl WriteAhead for StatusWriteAhead<'_> {
    fn record_zeros(&self, zeros: Vec<PendingZero>) -> BoxFuture<'_, Result<(), WriteRefused>> {
        record_zeros_ahead(self.policy, self.ctx, self.namespace, zeros).boxed()
    }
}

async fn record_zeros_ahead(
    policy: &ShiftPolicy,
    ctx: &Context,
    namespace: &str,
    zeros: Vec<PendingZero>,
) -> Result<(), WriteRefused> {
    let Some(patch) = status::zeros_ahead(&zeros) else {
        return Ok(());
    };
    let name = policy.name_any();
    let _permit = ctx.status_writes.acquire().await;
    if !ctx.leadership.may_write(ctx.api_timeout) {
        return Err(WriteRefused::LeadershipLost);
    }
    let recorded = patch_status(ctx, namespace, &name, &Patch::Json::<()>(patch)).await;
    if let Err(cause) = recorded {
        let workloads: Vec<&str> = zeros.iter().map(|z| z.workload.as_str()).collect();
        tracing::warn!(
            policy = %format!("{namespace}/{name}"),
            ?workloads,
            %cause,
            "scaling to zero without recording it in the status first; a successor may take the zero for another writer's"
        );
    }
    Ok(())
}

/// What `publish` did with the status.
enum Published {
    Written,
    /// Nothing new to say, or only new wording within `status::STATUS_REFRESH`.
    Unchanged,
    /// Leadership ran out before the status could be written: nothing was.
    Deposed,
}

/// Status, conditions and Events of the cycle (or of the refusal). `written`: when this
/// daemon last wrote the status.
async fn publish(
    policy: &ShiftPolicy,
    ctx: &Context,
    report: Option<&CycleReport>,
    invalid: Option<&str>,
    namespace: &str,
    key: &str,
    written: Option<Instant>,
) -> Result<Published, Error> {
    let name = policy.name_any();
    let generation = policy.metadata.generation;
    let previous = policy.status.as_ref();
    let previous_conditions = previous.map(|s| s.conditions.clone()).unwrap_or_default();
    let judgements = status::judge(report, invalid);
    for j in &judgements {
        ctx.metrics
            .policy_condition
            .with_label_values(&[&name, namespace, j.type_])
            .set(f64::from(u8::from(j.status)));
    }
    let conditions = status::conditions(&judgements, &previous_conditions, generation);
    let new_status = status::status(report, conditions, generation, previous);
    let patch = json!({"status": new_status});
    // Every cycle's figures change the wording of the status; writing it every cycle was most
    // of the daemon's API traffic at 500 policies. What a decision, a condition or a successor
    // depends on is written at once, the wording at most every `STATUS_REFRESH`.
    let wording_only = previous.is_some_and(|old| {
        !status::materially_different(old, &new_status)
            && written.is_some_and(|at| at.elapsed() < status::STATUS_REFRESH)
    });
    let mut outcome = Published::Unchanged;
    // A record of scales to zero changed the status on the server since `previous` was read.
    let recorded = report.is_some_and(|r| r.zeros_recorded);
    let nothing_to_write = !recorded && (previous == Some(&new_status) || wording_only);
    // Taken before the fence is asked: the wait for it may outlast the leadership.
    let permit = match nothing_to_write {
        true => None,
        false => ctx.status_writes.acquire().await.ok(),
    };
    if nothing_to_write {
        // Nothing new to say, or nothing that cannot wait.
    } else if !ctx.leadership.may_write(ctx.api_timeout) {
        // The status holds what a successor reads: a deposed leader must not overwrite it.
        return Ok(Published::Deposed);
    } else {
        outcome = Published::Written;
        if let Err(cause) = patch_status(ctx, namespace, &name, &Patch::Merge(&patch)).await {
            return Err(Error::Status {
                policy: key.to_string(),
                cause,
            });
        }
    }
    let reference = policy.object_ref(&());
    let repeated_dry_run = report.is_some_and(|r| {
        r.dry_run
            && previous
                .and_then(|p| p.last_decision.as_ref())
                .is_some_and(|d| d.dry_run && d.summary == r.summary())
    });
    drop(permit);
    for event in status::events(report, &judgements, &previous_conditions) {
        if repeated_dry_run && event.reason == "DryRunShift" {
            continue;
        }
        let _permit = ctx.status_writes.acquire().await;
        if !ctx.leadership.may_write(ctx.api_timeout) {
            break;
        }
        let published = within(ctx.api_timeout, ctx.recorder.publish(&event, &reference)).await;
        if let Err(error) = published {
            ctx.metrics
                .kube_api_errors_total
                .with_label_values(&["create"])
                .inc();
            tracing::warn!(policy = %key, %error, reason = %event.reason, "event not recorded");
        }
    }
    Ok(outcome)
}

/// One patch of a policy's status, given up after the API timeout; a failure is counted.
async fn patch_status<P: serde::Serialize + std::fmt::Debug>(
    ctx: &Context,
    namespace: &str,
    name: &str,
    patch: &Patch<P>,
) -> Result<(), String> {
    let api: Api<ShiftPolicy> = Api::namespaced(ctx.client.clone(), namespace);
    let patched = within(
        ctx.api_timeout,
        api.patch_status(name, &PatchParams::default(), patch),
    )
    .await;
    if patched.is_err() {
        ctx.metrics
            .kube_api_errors_total
            .with_label_values(&["patch"])
            .inc();
    }
    patched.map(|_| ())
}

/// An API request given up after `timeout`; its error in words either way.
async fn within<T, E: std::fmt::Display>(
    timeout: Duration,
    request: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// Hand what the policy's status says of each workload's writers to the actuator.
fn remember_writers(
    actuator: &dyn Actuator,
    policy: &ShiftPolicy,
    spec: &ShiftPolicySpec,
    namespace: &str,
) {
    let Some(status) = &policy.status else {
        return;
    };
    let targets = spec
        .online
        .iter()
        .map(|w| (&w.name, &w.target))
        .chain(spec.offline.iter().map(|w| (&w.name, &w.target)));
    for (name, target) in targets {
        if let Some(workload) = status.workloads.iter().find(|w| &w.name == name) {
            let target = crate::actuate::Target::from_ref(target, namespace);
            actuator.remember_writers(&target, status::writers(workload));
        }
    }
}

fn log_cycle(key: &str, report: &CycleReport, took: Duration) {
    if !report.applied.is_empty() {
        // How long the decision took and whose demand it could not read: a shift made on
        // data read before an outage shows a start before it, one made blind names who.
        let unreadable: Vec<&str> = report
            .missing_metrics
            .iter()
            .map(|(workload, _)| workload.as_str())
            .collect();
        tracing::info!(
            policy = %key,
            dry_run = report.dry_run,
            summary = %report.summary(),
            took_ms = took.as_millis() as u64,
            demand_unreadable = %unreadable.join(","),
            "shift"
        );
    }
    for (workload, why) in &report.missing_metrics {
        tracing::warn!(policy = %key, %workload, %why, "demand unreadable; holding");
    }
    for (workload, why) in &report.conflicts {
        tracing::warn!(policy = %key, %workload, %why, "conflict; not writing");
    }
    for error in &report.errors {
        tracing::warn!(policy = %key, %error, "cycle error");
    }
}
