//! The daemon: a kube-rs `Controller` over `ShiftPolicy` objects. Each policy is reconciled
//! every `interval` (requeue): validate, run one cycle (source → forecast → plan → actuate),
//! then report in status, Events and metrics. A policy that fails validation keeps running on
//! its last valid generation, and never affects other policies. Only the Lease holder reconciles.

pub mod cycle;
pub mod leader;
mod reconcile;
pub mod status;
pub mod trim;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use tokio::sync::Mutex;

use crate::actuate::Actuator;
use crate::forecast::Forecaster;
use crate::policy::{ShiftPolicy, ShiftPolicySpec};
use crate::source::DemandSource;
use crate::telemetry::Metrics;
use cycle::PolicyMemory;
use leader::Leadership;
use reconcile::{interval_of, reconcile};

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
    /// Fits and refits in progress, across all policies.
    pub fit_slots: cycle::FitSlots,
    pub metrics: Metrics,
    pub leadership: Leadership,
    pub recorder: Recorder,
    pub shrink_wait: Duration,
    /// Whether a policy may name workloads outside its own namespace.
    pub allow_cross_namespace: bool,
    /// Longest wait for the status write (fenced by leadership like every other write).
    pub api_timeout: Duration,
    /// Status patches and Events in flight at once (`MAX_STATUS_WRITES`).
    status_writes: tokio::sync::Semaphore,
    /// The controllers' caches of the policies, to fence a cycle's writes on the newest
    /// generation known (set once by `run_controllers`).
    policies: PolicyCaches,
    states: Mutex<HashMap<String, Arc<Mutex<PolicyState>>>>,
}

/// Status patches and Events sent at once. A start with 2,000 policies sent 2,000 status
/// patches together: the API server answered few within the timeout, and each retry added to
/// the pile (3,405 timeouts, the last status after 169 s). In turn, each is answered at once.
pub const MAX_STATUS_WRITES: usize = 16;

/// One policy's memory between reconciles.
#[derive(Default)]
struct PolicyState {
    memory: PolicyMemory,
    /// The last spec that passed validation, and its generation.
    last_good: Option<(Option<i64>, ShiftPolicySpec)>,
    /// Workload (name, class) pairs, to drop their metrics when the policy goes.
    workloads: Vec<(String, &'static str)>,
    /// The leadership epoch in which what the status says of the workloads' writers was last
    /// handed to the actuator: read again whenever leading begins (a predecessor wrote it).
    writers_read_in: Option<u64>,
    /// When this daemon last wrote the policy's status.
    status_written: Option<Instant>,
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
            fit_slots: cycle::FitSlots::for_this_machine(),
            metrics,
            leadership,
            shrink_wait,
            allow_cross_namespace: false,
            api_timeout: Duration::from_secs(10),
            status_writes: tokio::sync::Semaphore::new(MAX_STATUS_WRITES),
            policies: PolicyCaches::default(),
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

/// The watch-backed caches of the policies, as the controllers keep them.
#[derive(Default)]
pub struct PolicyCaches(std::sync::OnceLock<Vec<Store<ShiftPolicy>>>);

impl PolicyCaches {
    fn set(&self, stores: Vec<Store<ShiftPolicy>>) {
        if self.0.set(stores).is_err() {
            tracing::warn!("policy caches set twice; keeping the first");
        }
    }

    /// Whether the caches know the policy in a newer state than `seen`: another generation,
    /// or gone (deleted, or deleted and created again). A cycle began on `seen`'s spec; once
    /// the user has replaced it, the rest of that cycle's plan is not theirs any more.
    pub fn changed_since(&self, seen: &ShiftPolicy) -> bool {
        // Without caches (a cycle run outside the controllers) nothing newer is known.
        let Some(stores) = self.0.get() else {
            return false;
        };
        let reference = ObjectRef::from_obj(seen);
        match stores.iter().find_map(|store| store.get(&reference)) {
            Some(now) => {
                now.metadata.generation != seen.metadata.generation
                    || now.metadata.uid != seen.metadata.uid
            }
            None => true,
        }
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

/// The policies' watch events into the cache (`writer`), and the policies whose reconcile they
/// start: only a new object or a new generation (a spec edit). The daemon's own status patches
/// would otherwise wake every policy after every cycle; cycles are paced by their requeue.
fn policy_triggers(
    events: impl Stream<Item = Result<watcher::Event<ShiftPolicy>, watcher::Error>> + Send,
    writer: reflector::store::Writer<ShiftPolicy>,
) -> impl Stream<Item = Result<ShiftPolicy, watcher::Error>> + Send {
    events
        .modify(trim_policy)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default())
}

/// What the policy cache keeps of a policy: not its managed fields (a daemon status patch
/// every cycle makes them a tree of every status field) nor the annotations (`kubectl apply`
/// keeps a copy of the whole object there).
fn trim_policy(policy: &mut ShiftPolicy) {
    policy.metadata.managed_fields = None;
    policy.metadata.annotations = None;
}

/// A failed reconcile (its status not written) runs again at the policy's cadence: a reconcile
/// is a whole cycle, and an early one would only add reads and writes to an API server that is
/// already failing.
pub fn error_policy(policy: Arc<ShiftPolicy>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(policy = %policy.name_any(), %error, "reconcile failed");
    Action::requeue(interval_of(&policy.spec))
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
        let (store, writer) = reflector::store();
        let events = watcher(api, watcher::Config::default()).default_backoff();
        let triggers = policy_triggers(events, writer);
        stores.push(store.clone());
        let run = Controller::for_stream(triggers, store)
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "controller");
                }
            });
        runs.push(run);
    }
    ctx.policies.set(stores.clone());
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

    fn shift_policy(uid: &str, generation: i64) -> ShiftPolicy {
        let mut policy = ShiftPolicy::new("checkout", crate::plan::testutil::spec());
        policy.metadata.namespace = Some("shop".into());
        policy.metadata.uid = Some(uid.into());
        policy.metadata.generation = Some(generation);
        policy
    }

    #[tokio::test]
    async fn only_a_new_policy_or_generation_starts_a_reconcile() {
        // As the API server sends them: with managed fields, and `kubectl apply`'s annotation.
        let served = |generation: i64, resource_version: &str| {
            let mut policy = shift_policy("u1", generation);
            policy.metadata.resource_version = Some(resource_version.into());
            policy.metadata.managed_fields = Some(vec![Default::default()]);
            policy.metadata.annotations = Some([("last-applied".into(), "{}".into())].into());
            policy
        };
        let (first, status_patched, edited) = (served(1, "1"), served(1, "2"), served(2, "3"));
        let events = [first, status_patched, edited]
            .into_iter()
            .map(|policy| Ok(watcher::Event::Apply(policy)));
        let (store, writer) = reflector::store();
        let triggered: Vec<Option<i64>> = policy_triggers(futures::stream::iter(events), writer)
            .map(|policy| policy.expect("no error").metadata.generation)
            .collect()
            .await;
        assert_eq!(
            triggered,
            [Some(1), Some(2)],
            "the status patch woke nothing"
        );
        let cached = store.state();
        assert_eq!(cached.len(), 1);
        assert_eq!(cached[0].metadata.generation, Some(2));
        assert_eq!(cached[0].metadata.managed_fields, None);
        assert_eq!(cached[0].metadata.annotations, None);
    }

    #[test]
    fn a_cycle_knows_when_its_policy_changed_since_it_began() {
        let seen = shift_policy("u1", 3);
        let caches = PolicyCaches::default();
        assert!(
            !caches.changed_since(&seen),
            "no caches: nothing newer known"
        );

        let (store, mut writer) = kube::runtime::reflector::store();
        caches.set(vec![store]);
        writer.apply_watcher_event(&watcher::Event::Apply(seen.clone()));
        assert!(!caches.changed_since(&seen));
        // A status patch leaves the generation as it is.
        let mut status_only = seen.clone();
        status_only.metadata.resource_version = Some("99".into());
        writer.apply_watcher_event(&watcher::Event::Apply(status_only));
        assert!(!caches.changed_since(&seen));

        writer.apply_watcher_event(&watcher::Event::Apply(shift_policy("u1", 4)));
        assert!(caches.changed_since(&seen), "a newer generation");
        writer.apply_watcher_event(&watcher::Event::Delete(shift_policy("u1", 4)));
        assert!(caches.changed_since(&seen), "deleted");
        writer.apply_watcher_event(&watcher::Event::Apply(shift_policy("u2", 3)));
        assert!(caches.changed_since(&seen), "deleted and created again");
    }

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
