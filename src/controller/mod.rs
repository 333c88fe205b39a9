//! The daemon: a kube-rs `Controller` over `ShiftPolicy` objects. Each policy is reconciled
//! every `interval` (requeue): validate, run one cycle (source → forecast → plan → actuate),
//! then report in status, Events and metrics. A policy that fails validation keeps running on
//! its last valid generation, and never affects other policies. Only the Lease holder reconciles.

pub mod cycle;
pub mod leader;
pub mod status;
pub mod trim;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Mutex;

use crate::actuate::Actuator;
use crate::forecast::Forecaster;
use crate::policy::{ShiftPolicy, ShiftPolicySpec};
use crate::source::DemandSource;
use crate::telemetry::Metrics;
use cycle::{CycleReport, Environment, PolicyMemory};
use leader::Leadership;

pub const FIELD_MANAGER: &str = "tideshift";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ShiftPolicy {policy}: status patch failed: {cause}")]
    Status { policy: String, cause: String },
    #[error("ShiftPolicy without a namespace")]
    NoNamespace,
}

/// What every reconcile shares.
pub struct Context {
    pub client: kube::Client,
    pub source: Arc<dyn DemandSource>,
    pub actuator: Arc<dyn Actuator>,
    pub forecaster: Arc<dyn Forecaster>,
    pub metrics: Metrics,
    pub leadership: Leadership,
    pub recorder: Recorder,
    pub shrink_wait: Duration,
    /// Whether a policy may name workloads outside its own namespace.
    pub allow_cross_namespace: bool,
    /// Longest wait for the status write (fenced by leadership like every other write).
    pub api_timeout: Duration,
    states: Mutex<HashMap<String, Arc<Mutex<PolicyState>>>>,
}

/// One policy's memory between reconciles.
#[derive(Default)]
struct PolicyState {
    memory: PolicyMemory,
    /// The last spec that passed validation, and its generation.
    last_good: Option<(Option<i64>, ShiftPolicySpec)>,
    /// Workload (name, class) pairs, to drop their metrics when the policy goes.
    workloads: Vec<(String, &'static str)>,
    /// When the last cycle started, and for which generation.
    last_run: Option<(Instant, Option<i64>)>,
    /// The leadership epoch in which what the status says of the workloads' writers was last
    /// handed to the actuator: read again whenever leading begins (a predecessor wrote it).
    writers_read_in: Option<u64>,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        source: Arc<dyn DemandSource>,
        actuator: Arc<dyn Actuator>,
        forecaster: Arc<dyn Forecaster>,
        metrics: Metrics,
        leadership: Leadership,
        reporter: Reporter,
        shrink_wait: Duration,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            source,
            actuator,
            forecaster,
            metrics,
            leadership,
            shrink_wait,
            allow_cross_namespace: false,
            api_timeout: Duration::from_secs(10),
            states: Mutex::new(HashMap::new()),
        }
    }

    /// Let policies name workloads in other namespaces (off by default: whoever may write a
    /// ShiftPolicy in one namespace must not be able to scale another namespace's workloads
    /// through the daemon's rights).
    pub fn with_cross_namespace(mut self, allow: bool) -> Self {
        self.allow_cross_namespace = allow;
        self
    }

    pub fn with_api_timeout(mut self, timeout: Duration) -> Self {
        self.api_timeout = timeout;
        self
    }

    async fn state(&self, key: &str) -> Arc<Mutex<PolicyState>> {
        self.states
            .lock()
            .await
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    /// Forget policies that are gone from every store: their memory and their metrics.
    pub async fn prune(&self, stores: &[Store<ShiftPolicy>]) {
        let mut states = self.states.lock().await;
        let gone: Vec<String> = states
            .keys()
            .filter(|key| {
                let Some((namespace, name)) = key.split_once('/') else {
                    return true;
                };
                let reference = ObjectRef::<ShiftPolicy>::new(name).within(namespace);
                !stores.iter().any(|s| s.get(&reference).is_some())
            })
            .cloned()
            .collect();
        for key in gone {
            if let Some(state) = states.remove(&key)
                && let Some((namespace, name)) = key.split_once('/')
            {
                let workloads = state.lock().await.workloads.clone();
                let workloads: Vec<(String, &str)> = workloads.into_iter().collect();
                self.metrics.forget_policy(namespace, name, &workloads);
                tracing::info!(policy = %key, "policy deleted; forgot its state");
            }
        }
        drop(states);
        // Histories cached for queries that no policy asks for any more (edited or deleted).
        let queries: std::collections::HashSet<String> = stores
            .iter()
            .flat_map(|store| store.state())
            .flat_map(|policy| {
                policy
                    .spec
                    .online
                    .iter()
                    .map(|w| w.demand.query.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        self.source.retain_queries(&|query| queries.contains(query));
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Targets of `spec` that lie outside `namespace`, as field errors.
pub fn foreign_targets(spec: &ShiftPolicySpec, namespace: &str) -> Vec<String> {
    let online = spec
        .online
        .iter()
        .enumerate()
        .map(|(i, w)| (format!("spec.online[{i}]"), &w.target));
    let offline = spec
        .offline
        .iter()
        .enumerate()
        .map(|(i, w)| (format!("spec.offline[{i}]"), &w.target));
    online
        .chain(offline)
        .filter_map(|(path, target)| {
            let other = target.namespace.as_deref().filter(|ns| *ns != namespace)?;
            Some(format!(
                "{path}.target.namespace: {other} is outside the policy's namespace {namespace}; \
                 refused (the daemon runs without --allow-cross-namespace)"
            ))
        })
        .collect()
}

fn interval_of(spec: &ShiftPolicySpec) -> Duration {
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
    let generation = policy.metadata.generation;
    // Our own status patches wake the controller too; a cycle runs once per interval unless
    // the spec changed.
    let interval = state
        .last_good
        .as_ref()
        .map_or(interval_of(&policy.spec), |(_, spec)| interval_of(spec));
    if let Some((last, last_generation)) = state.last_run
        && last_generation == generation
        && last.elapsed() + Duration::from_millis(100) < interval
    {
        return Ok(Action::requeue(interval - last.elapsed()));
    }
    state.last_run = Some((started, generation));

    let checked = crate::policy::validate::validate(&policy)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())
        .and_then(|()| {
            let foreign = if ctx.allow_cross_namespace {
                Vec::new()
            } else {
                foreign_targets(&policy.spec, &namespace)
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
    let spec = state.last_good.as_ref().map(|(_, spec)| spec.clone());
    let report: Option<CycleReport> = match &spec {
        Some(spec) => {
            state.workloads = spec
                .online
                .iter()
                .map(|w| (w.name.clone(), "online"))
                .chain(spec.offline.iter().map(|w| (w.name.clone(), "offline")))
                .collect();
            // What a predecessor (a replica that led before, or this process before a
            // restart) knew of the targets' writers: that another writer owns a target, and
            // what tideshift last wrote, so that a foreign write made meanwhile is seen.
            let epoch = ctx.leadership.epoch();
            if state.writers_read_in != Some(epoch) {
                remember_writers(ctx.actuator.as_ref(), &policy, spec, &namespace);
                state.writers_read_in = Some(epoch);
            }
            let leadership = ctx.leadership.clone();
            let may_write = move |within: Duration| leadership.may_write(within);
            let env = Environment {
                source: ctx.source.as_ref(),
                actuator: ctx.actuator.as_ref(),
                forecaster: ctx.forecaster.clone(),
                may_write: &may_write,
                shrink_wait: ctx.shrink_wait,
                metrics: &ctx.metrics,
                policy: &name,
                namespace: &namespace,
            };
            Some(cycle::run_cycle(&env, spec, &mut state.memory, unix_now()).await)
        }
        None => None,
    };
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
    if let Some(message) = &invalid {
        tracing::warn!(policy = %key, %message, "invalid policy");
    }

    // Write nothing, not even status, once leadership is gone.
    if !ctx.leadership.is_leader() {
        return Ok(Action::requeue(interval_of(&policy.spec)));
    }
    let previous = policy.status.as_ref();
    let previous_conditions = previous.map(|s| s.conditions.clone()).unwrap_or_default();
    let judgements = status::judge(report.as_ref(), invalid.as_deref());
    for j in &judgements {
        ctx.metrics
            .policy_condition
            .with_label_values(&[&name, &namespace, j.type_])
            .set(i64::from(j.status));
    }
    let conditions = status::conditions(&judgements, &previous_conditions, generation);
    let new_status = status::status(report.as_ref(), conditions, generation, previous);
    let api: Api<ShiftPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = json!({"status": new_status});
    if previous == Some(&new_status) {
        // Nothing new to say.
    } else if !ctx.leadership.may_write(ctx.api_timeout) {
        // The status holds what a successor reads: a deposed leader must not overwrite it.
        return Ok(Action::requeue(interval_of(&policy.spec)));
    } else {
        let written = within(
            ctx.api_timeout,
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await;
        if let Err(cause) = written {
            ctx.metrics
                .kube_api_errors_total
                .with_label_values(&["patch"])
                .inc();
            return Err(Error::Status { policy: key, cause });
        }
    }
    let reference = policy.object_ref(&());
    let repeated_dry_run = report.as_ref().is_some_and(|r| {
        r.dry_run
            && previous
                .and_then(|p| p.last_decision.as_ref())
                .is_some_and(|d| d.dry_run && d.summary == r.summary())
    });
    for event in status::events(report.as_ref(), &judgements, &previous_conditions) {
        if repeated_dry_run && event.reason == "DryRunShift" {
            continue;
        }
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
    let interval = spec.as_ref().map_or(interval_of(&policy.spec), interval_of);
    // Keep the cadence: the next cycle starts one interval after this one started.
    Ok(Action::requeue(
        interval
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(200)),
    ))
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

pub fn error_policy(policy: Arc<ShiftPolicy>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(policy = %policy.name_any(), %error, "reconcile failed");
    Action::requeue(interval_of(&policy.spec).min(Duration::from_secs(10)))
}

/// Run one Controller per namespace (or one over all namespaces) until `shutdown`; calls
/// `on_synced` once every policy cache has its first list.
pub async fn run_controllers(
    ctx: Arc<Context>,
    namespaces: &[String],
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
    on_synced: impl FnOnce() + Send + 'static,
) {
    let apis: Vec<Api<ShiftPolicy>> = if namespaces.is_empty() {
        vec![Api::all(ctx.client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(ctx.client.clone(), ns))
            .collect()
    };
    let mut stores = Vec::new();
    let mut runs = Vec::new();
    for api in apis {
        let controller = Controller::new(api, watcher::Config::default());
        stores.push(controller.store());
        let run = controller
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "controller");
                }
            });
        runs.push(run);
    }
    let waiting = stores.clone();
    tokio::spawn(async move {
        for store in &waiting {
            if store.wait_until_ready().await.is_err() {
                return;
            }
        }
        on_synced();
    });
    let pruner_ctx = ctx.clone();
    let pruner_stores = stores.clone();
    let pruner = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            pruner_ctx.prune(&pruner_stores).await;
        }
    });
    futures::future::join_all(runs).await;
    pruner.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_in_other_namespaces_are_named() {
        let spec: ShiftPolicySpec = serde_yaml::from_str(
            r#"
capacity: {cpu: "4"}
online:
  - name: payment
    target: {kind: Deployment, name: payment, namespace: shop}
    demand: {query: q}
    perReplica: 10
    replicas: {min: 1, max: 4}
offline:
  - name: own
    target: {kind: Deployment, name: own}
    replicas: {min: 0, max: 4}
  - name: theirs
    target: {kind: Deployment, name: theirs, namespace: payroll}
    replicas: {min: 0, max: 4}
"#,
        )
        .expect("spec");
        let foreign = foreign_targets(&spec, "shop");
        assert_eq!(foreign.len(), 1, "{foreign:?}");
        assert!(
            foreign[0].starts_with("spec.offline[1].target.namespace: payroll"),
            "{foreign:?}"
        );
        assert_eq!(foreign_targets(&spec, "payroll").len(), 1);
    }
}
