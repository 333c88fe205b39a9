//! Replicas on a real cluster.
//!
//! - Deployments and StatefulSets through the `scale` subresource (merge patch, field manager
//!   `tideshift`), so the rest of the object is never touched.
//! - Jobs through `spec.parallelism`, and `spec.suspend: true` for zero (the Job controller then
//!   removes its running pods). A Job selector spreads the replicas over the matching Jobs that
//!   have not finished, in name order.
//! - Another writer is a conflict, never a fight: an HPA whose `scaleTargetRef` names the same
//!   object, or replicas that differ from what tideshift last wrote. A target in conflict is not
//!   written for `conflict_hold` (an HPA conflict lasts as long as the HPA); after the hold the
//!   then-current value is taken as the new baseline, so a persistent other writer sees at most
//!   one write per hold.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::Selector;
use serde_json::json;

use super::{ActuateError, Actuator, Observed, ScaleOutcome, Target, pod_requests};
use crate::plan::Resources;
use crate::policy::WorkloadKind;

pub const FIELD_MANAGER: &str = "tideshift";

/// How long an HPA list is reused for a namespace: one list serves every target of a cycle.
const HPA_CACHE_TTL: Duration = Duration::from_secs(10);

/// Workload operations (each one to three requests) in flight at once. The Kubernetes client
/// opens a connection per concurrent request and keeps it: 500 policies starting together had
/// about 500 connections open, each with its TLS state and buffers, and the API server answered
/// them no faster than it answers 32 (its own default limit is 400 in-flight reads).
const MAX_IN_FLIGHT: usize = 32;

#[derive(Clone, Debug, PartialEq)]
enum ConflictKind {
    Autoscaler,
    ForeignWrite,
}

/// The HPAs of one namespace, listed at most every `HPA_CACHE_TTL`.
type HpaList = tokio::sync::Mutex<Option<(Instant, Vec<HorizontalPodAutoscaler>)>>;

#[derive(Clone, Debug, Default)]
struct TargetMemory {
    /// What tideshift last asked for, or last saw and agreed with.
    last_written: Option<u32>,
    conflict: Option<(Instant, ConflictKind, String)>,
}

pub struct KubeActuator {
    client: kube::Client,
    conflict_hold: Duration,
    memory: Mutex<HashMap<String, TargetMemory>>,
    /// Per namespace: when its HPAs were listed, and the list. Each namespace has its own lock,
    /// held across its list request, so targets in one namespace share one list while other
    /// namespaces go on: one lock for all held every list for every namespace, and with the
    /// API server answering in 130 ms the whole daemon's cycles queued behind it.
    hpas: Mutex<HashMap<String, Arc<HpaList>>>,
    in_flight: tokio::sync::Semaphore,
}

/// A workload as read from the API.
struct Read {
    replicas: u32,
    ready: u32,
    template: Option<PodTemplateSpec>,
    selector: Option<LabelSelector>,
}

fn api_error(target: &Target, verb: &'static str, error: kube::Error) -> ActuateError {
    match &error {
        kube::Error::Api(status) if status.is_not_found() => ActuateError::NotFound {
            target: target.to_string(),
        },
        _ => ActuateError::Api {
            target: target.to_string(),
            verb,
            cause: error.to_string(),
        },
    }
}

fn to_u32(value: Option<i32>, default: u32) -> u32 {
    value.map_or(default, |v| v.max(0) as u32)
}

fn job_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

fn job_replicas(job: &Job) -> u32 {
    let spec = job.spec.as_ref();
    if spec.and_then(|s| s.suspend).unwrap_or(false) {
        0
    } else {
        to_u32(spec.and_then(|s| s.parallelism), 1)
    }
}

fn kind_name(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
        WorkloadKind::Job => "Job",
    }
}

/// Split `total` replicas over `count` Jobs: equal shares, the remainder to the first ones.
pub fn spread(total: u32, count: usize) -> Vec<u32> {
    if count == 0 {
        return Vec::new();
    }
    let base = total / count as u32;
    let extra = (total % count as u32) as usize;
    (0..count).map(|i| base + u32::from(i < extra)).collect()
}

impl KubeActuator {
    pub fn new(client: kube::Client, conflict_hold: Duration) -> Self {
        Self {
            client,
            conflict_hold,
            memory: Mutex::new(HashMap::new()),
            hpas: Mutex::new(HashMap::new()),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    /// Runs one workload operation once fewer than `MAX_IN_FLIGHT` are in flight.
    async fn bounded<T>(
        &self,
        operation: impl Future<Output = Result<T, ActuateError>>,
    ) -> Result<T, ActuateError> {
        // The semaphore is never closed; were it, running unbounded beats not running.
        let _permit = self.in_flight.acquire().await.ok();
        operation.await
    }

    fn lock_memory(&self) -> std::sync::MutexGuard<'_, HashMap<String, TargetMemory>> {
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn name<'t>(&self, target: &'t Target) -> Result<&'t str, ActuateError> {
        target.name.as_deref().ok_or_else(|| ActuateError::Invalid {
            target: target.to_string(),
            message: format!("a {} target needs a name", kind_name(target.kind)),
        })
    }

    async fn jobs(&self, target: &Target) -> Result<Vec<Job>, ActuateError> {
        let api: Api<Job> = Api::namespaced(self.client.clone(), &target.namespace);
        if let Some(name) = &target.name {
            let job = api
                .get(name)
                .await
                .map_err(|e| api_error(target, "get", e))?;
            return Ok(vec![job]);
        }
        let selector: Selector = target
            .selector
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        if selector.selects_all() {
            return Err(ActuateError::Invalid {
                target: target.to_string(),
                message: "a Job target needs a name or a non-empty selector".into(),
            });
        }
        let mut jobs = api
            .list(&ListParams::default().labels_from(&selector))
            .await
            .map_err(|e| api_error(target, "list", e))?
            .items;
        jobs.retain(|job| !job_finished(job));
        jobs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(jobs)
    }

    async fn read(&self, target: &Target) -> Result<Read, ActuateError> {
        match target.kind {
            WorkloadKind::Deployment => {
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), &target.namespace);
                let object = api
                    .get(self.name(target)?)
                    .await
                    .map_err(|e| api_error(target, "get", e))?;
                let spec = object.spec;
                Ok(Read {
                    replicas: to_u32(spec.replicas, 1),
                    ready: to_u32(object.status.and_then(|s| s.ready_replicas), 0),
                    template: Some(spec.template),
                    selector: Some(spec.selector),
                })
            }
            WorkloadKind::StatefulSet => {
                let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &target.namespace);
                let object = api
                    .get(self.name(target)?)
                    .await
                    .map_err(|e| api_error(target, "get", e))?;
                let spec = object.spec;
                Ok(Read {
                    replicas: to_u32(spec.replicas, 1),
                    ready: to_u32(object.status.and_then(|s| s.ready_replicas), 0),
                    template: Some(spec.template),
                    selector: Some(spec.selector),
                })
            }
            WorkloadKind::Job => {
                let jobs = self.jobs(target).await?;
                let replicas = jobs.iter().map(job_replicas).sum();
                let ready = jobs
                    .iter()
                    .map(|j| to_u32(j.status.as_ref().and_then(|s| s.ready), 0))
                    .sum();
                let first = jobs.into_iter().next().and_then(|j| j.spec);
                Ok(Read {
                    replicas,
                    ready,
                    template: first.as_ref().map(|s| s.template.clone()),
                    selector: first.and_then(|s| s.selector),
                })
            }
        }
    }

    /// The HPA that scales this target, if any. An HPA cannot target a Job.
    async fn autoscaler(&self, target: &Target) -> Result<Option<String>, ActuateError> {
        let Some(name) = &target.name else {
            return Ok(None);
        };
        if target.kind == WorkloadKind::Job {
            return Ok(None);
        }
        let namespace = self
            .hpas
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(target.namespace.clone())
            .or_default()
            .clone();
        let mut cache = namespace.lock().await;
        let fresh = cache
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < HPA_CACHE_TTL);
        if !fresh {
            let api: Api<HorizontalPodAutoscaler> =
                Api::namespaced(self.client.clone(), &target.namespace);
            let items = match api.list(&ListParams::default()).await {
                Ok(list) => list.items,
                // Without the right to read HPAs the check is skipped (warned once per
                // namespace), rather than blinding the whole policy.
                Err(kube::Error::Api(status)) if status.is_forbidden() => {
                    if cache.is_none() {
                        tracing::warn!(
                            namespace = %target.namespace,
                            "may not list HorizontalPodAutoscalers; HPA conflicts go undetected \
                             (grant get/list on autoscaling horizontalpodautoscalers)"
                        );
                    }
                    Vec::new()
                }
                Err(e) => return Err(api_error(target, "list", e)),
            };
            *cache = Some((Instant::now(), items));
        }
        let kind = kind_name(target.kind);
        Ok(cache.as_ref().and_then(|(_, hpas)| {
            hpas.iter()
                .find(|hpa| {
                    hpa.spec.scale_target_ref.kind == kind
                        && &hpa.spec.scale_target_ref.name == name
                })
                .map(|hpa| {
                    format!(
                        "HorizontalPodAutoscaler {}/{} scales {target}",
                        target.namespace,
                        hpa.metadata.name.as_deref().unwrap_or("?")
                    )
                })
        }))
    }

    /// Update what is known about the target's writers; returns the conflict, if any.
    fn judge(&self, target: &Target, replicas: u32, autoscaler: Option<String>) -> Option<String> {
        let mut memory = self.lock_memory();
        let entry = memory.entry(target.to_string()).or_default();
        if let Some(reason) = autoscaler {
            let since = match &entry.conflict {
                Some((since, ConflictKind::Autoscaler, _)) => *since,
                _ => Instant::now(),
            };
            entry.conflict = Some((since, ConflictKind::Autoscaler, reason.clone()));
            entry.last_written = None;
            return Some(reason);
        }
        if let Some(written) = entry.last_written
            && written != replicas
            && target.name.is_some()
        {
            let reason = format!(
                "replicas of {target} changed from {written} (tideshift's) to {replicas} by another writer"
            );
            entry.conflict = Some((Instant::now(), ConflictKind::ForeignWrite, reason.clone()));
            // After the hold, the other writer's value is the new baseline.
            entry.last_written = None;
            return Some(reason);
        }
        match &entry.conflict {
            Some((_, ConflictKind::Autoscaler, _)) => {
                entry.conflict = None;
                None
            }
            Some((since, ConflictKind::ForeignWrite, reason)) => {
                if since.elapsed() < self.conflict_hold {
                    Some(reason.clone())
                } else {
                    entry.conflict = None;
                    None
                }
            }
            None => None,
        }
    }

    async fn write(&self, target: &Target, replicas: u32) -> Result<(), ActuateError> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        let scale = Patch::Merge(json!({"spec": {"replicas": replicas}}));
        match target.kind {
            WorkloadKind::Deployment => {
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), &target.namespace);
                api.patch_scale(self.name(target)?, &params, &scale)
                    .await
                    .map_err(|e| api_error(target, "patch", e))?;
            }
            WorkloadKind::StatefulSet => {
                let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &target.namespace);
                api.patch_scale(self.name(target)?, &params, &scale)
                    .await
                    .map_err(|e| api_error(target, "patch", e))?;
            }
            WorkloadKind::Job => {
                let api: Api<Job> = Api::namespaced(self.client.clone(), &target.namespace);
                let jobs = self.jobs(target).await?;
                if jobs.is_empty() && replicas > 0 {
                    return Err(ActuateError::NotFound {
                        target: target.to_string(),
                    });
                }
                for (job, share) in jobs.iter().zip(spread(replicas, jobs.len())) {
                    let Some(name) = job.metadata.name.as_deref() else {
                        continue;
                    };
                    if job_replicas(job) == share {
                        continue;
                    }
                    let patch = if share == 0 {
                        json!({"spec": {"suspend": true}})
                    } else {
                        json!({"spec": {"parallelism": share, "suspend": false}})
                    };
                    api.patch(name, &params, &Patch::Merge(patch))
                        .await
                        .map_err(|e| api_error(target, "patch", e))?;
                }
            }
        }
        Ok(())
    }

    async fn observe_target(&self, target: &Target) -> Result<Observed, ActuateError> {
        let read = self.read(target).await?;
        let autoscaler = self.autoscaler(target).await?;
        let conflict = self.judge(target, read.replicas, autoscaler);
        Ok(Observed {
            replicas: read.replicas,
            ready: read.ready,
            pod: read
                .template
                .as_ref()
                .and_then(|t| t.spec.as_ref())
                .and_then(pod_requests),
            conflict,
        })
    }

    async fn scale_target(
        &self,
        target: &Target,
        replicas: u32,
    ) -> Result<ScaleOutcome, ActuateError> {
        // Read again right before writing: the value may have moved since the cycle observed it.
        let observed = self.observe_target(target).await?;
        if let Some(reason) = observed.conflict {
            return Ok(ScaleOutcome::Conflict(reason));
        }
        if observed.replicas == replicas {
            self.lock_memory()
                .entry(target.to_string())
                .or_default()
                .last_written = Some(replicas);
            return Ok(ScaleOutcome::Unchanged);
        }
        self.write(target, replicas).await?;
        self.lock_memory()
            .entry(target.to_string())
            .or_default()
            .last_written = Some(replicas);
        tracing::info!(%target, from = observed.replicas, to = replicas, "scaled");
        Ok(ScaleOutcome::Scaled {
            from: observed.replicas,
            to: replicas,
        })
    }

    async fn nodes_allocatable(
        &self,
        selector: &BTreeMap<String, String>,
    ) -> Result<Resources, ActuateError> {
        use crate::policy::units::parse_quantity;
        let what = format!("Nodes [{}]", selector_text(selector));
        let labels: Selector = selector.clone().into_iter().collect();
        let api: Api<Node> = Api::all(self.client.clone());
        let nodes = api
            .list(&ListParams::default().labels_from(&labels))
            .await
            .map_err(|e| ActuateError::Api {
                target: what.clone(),
                verb: "list",
                cause: e.to_string(),
            })?;
        let mut total = Resources::default();
        for node in &nodes.items {
            let unschedulable = node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false);
            if unschedulable {
                continue;
            }
            let Some(allocatable) = node.status.as_ref().and_then(|s| s.allocatable.as_ref())
            else {
                continue;
            };
            if let Some(cpu) = allocatable
                .get("cpu")
                .and_then(|q| parse_quantity(&q.0).ok())
            {
                total.cpu += cpu;
            }
            if let Some(memory) = allocatable
                .get("memory")
                .and_then(|q| parse_quantity(&q.0).ok())
            {
                total.memory += memory;
            }
        }
        Ok(total)
    }

    async fn count_pods(&self, target: &Target) -> Result<u32, ActuateError> {
        let read = self.read(target).await?;
        let Some(selector) = read.selector else {
            return Ok(0);
        };
        let selector = Selector::try_from(selector).map_err(|e| ActuateError::Invalid {
            target: target.to_string(),
            message: format!("unusable pod selector: {e}"),
        })?;
        if selector.selects_all() {
            return Err(ActuateError::Invalid {
                target: target.to_string(),
                message: "pod selector selects every pod".into(),
            });
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &target.namespace);
        let pods = api
            .list(&ListParams::default().labels_from(&selector))
            .await
            .map_err(|e| api_error(target, "list", e))?;
        let holding = pods
            .items
            .iter()
            .filter(|pod| {
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded") | Some("Failed"))
            })
            .count();
        Ok(holding as u32)
    }
}

impl Actuator for KubeActuator {
    fn observe<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Observed, ActuateError>> {
        self.bounded(self.observe_target(target)).boxed()
    }

    fn scale<'a>(
        &'a self,
        target: &'a Target,
        replicas: u32,
    ) -> BoxFuture<'a, Result<ScaleOutcome, ActuateError>> {
        self.bounded(self.scale_target(target, replicas)).boxed()
    }

    fn pods_holding_capacity<'a>(
        &'a self,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<u32, ActuateError>> {
        self.bounded(self.count_pods(target)).boxed()
    }

    fn node_capacity<'a>(
        &'a self,
        selector: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<Resources, ActuateError>> {
        self.bounded(self.nodes_allocatable(selector)).boxed()
    }
}

/// Labels of a target for logs and metrics.
pub fn selector_text(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use http::{Request, Response};
    use kube::client::Body;

    use std::sync::Arc;

    use super::*;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn mock() -> (kube::Client, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (kube::Client::new(service, "default"), handle)
    }

    fn deployment(replicas: i32) -> serde_json::Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "payment", "namespace": "shop"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "payment"}},
                "template": {"metadata": {"labels": {"app": "payment"}}, "spec": {"containers": [
                    {"name": "app", "image": "x", "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}}}
                ]}}
            },
            "status": {"readyReplicas": replicas}
        })
    }

    fn hpa_list(target: Option<&str>) -> serde_json::Value {
        let items: Vec<serde_json::Value> = target
            .into_iter()
            .map(|name| {
                json!({
                    "metadata": {"name": "payment-hpa", "namespace": "shop"},
                    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                             "maxReplicas": 10}
                })
            })
            .collect();
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscalerList",
               "metadata": {}, "items": items})
    }

    fn respond(send: tower_test::mock::SendResponse<Response<Body>>, body: serde_json::Value) {
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
    }

    fn target() -> Target {
        Target {
            kind: WorkloadKind::Deployment,
            namespace: "shop".into(),
            name: Some("payment".into()),
            selector: None,
        }
    }

    async fn next(
        handle: &mut Handle,
    ) -> (
        Request<Body>,
        tower_test::mock::SendResponse<Response<Body>>,
    ) {
        tokio::time::timeout(Duration::from_secs(5), handle.next_request())
            .await
            .expect("an API request")
            .expect("the client is alive")
    }

    fn spawn_observe(
        actuator: &Arc<KubeActuator>,
        target: Target,
    ) -> tokio::task::JoinHandle<Result<Observed, ActuateError>> {
        let actuator = actuator.clone();
        tokio::spawn(async move { actuator.observe(&target).await })
    }

    fn assert_path_contains(request: &Request<Body>, fragment: &str) {
        let path = request.uri().path();
        assert!(
            path.contains(fragment),
            "{path} does not contain {fragment}"
        );
    }

    #[tokio::test]
    async fn at_most_max_in_flight_workload_operations_reach_the_api_server() {
        let (client, mut handle) = mock();
        let actuator = Arc::new(KubeActuator::new(client, Duration::from_secs(60)));
        let tasks: Vec<_> = (0..MAX_IN_FLIGHT + 8)
            .map(|_| spawn_observe(&actuator, target()))
            .collect();
        let mut pending = Vec::new();
        for _ in 0..MAX_IN_FLIGHT {
            let (request, send) = next(&mut handle).await;
            assert_eq!(
                request.uri().path(),
                "/apis/apps/v1/namespaces/shop/deployments/payment"
            );
            pending.push(send);
        }
        // Every slot is taken: the next operation waits in the daemon, not on a new connection.
        let more = tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await;
        assert!(
            more.is_err(),
            "more than {MAX_IN_FLIGHT} requests in flight"
        );
        // One operation finishes (its HPA list is its second request): one more starts.
        respond(pending.remove(0), deployment(2));
        let (request, send) = next(&mut handle).await;
        assert!(request.uri().path().ends_with("/horizontalpodautoscalers"));
        respond(send, hpa_list(None));
        let (request, send) = next(&mut handle).await;
        assert!(request.uri().path().ends_with("/deployments/payment"));
        pending.push(send);
        // The rest: HPA lists are cached for the namespace now, so one request each.
        for send in pending {
            respond(send, deployment(2));
        }
        for _ in 0..7 {
            let (_, send) = next(&mut handle).await;
            respond(send, deployment(2));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap().replicas, 2);
        }
    }

    #[tokio::test]
    async fn a_slow_hpa_list_in_one_namespace_does_not_hold_up_another() {
        let (client, mut handle) = mock();
        let actuator = Arc::new(KubeActuator::new(client, Duration::from_secs(60)));
        let in_shop = spawn_observe(&actuator, target());
        let (_, send) = next(&mut handle).await;
        respond(send, deployment(2));
        let (request, shop_list) = next(&mut handle).await;
        assert_path_contains(&request, "/namespaces/shop/horizontalpodautoscalers");
        // The shop list is still unanswered: a target in another namespace goes on.
        let mut elsewhere = target();
        elsewhere.namespace = "ledger".into();
        let in_ledger = spawn_observe(&actuator, elsewhere);
        let (request, send) = next(&mut handle).await;
        assert_path_contains(&request, "/namespaces/ledger/deployments/");
        respond(send, deployment(3));
        let (request, send) = next(&mut handle).await;
        assert_path_contains(&request, "/namespaces/ledger/horizontalpodautoscalers");
        respond(send, hpa_list(None));
        assert_eq!(in_ledger.await.unwrap().unwrap().replicas, 3);
        respond(shop_list, hpa_list(None));
        assert_eq!(in_shop.await.unwrap().unwrap().replicas, 2);
    }

    #[tokio::test]
    async fn scales_through_the_scale_subresource_with_the_field_manager() {
        let (client, mut handle) = mock();
        let actuator = KubeActuator::new(client, Duration::from_secs(60));
        let server = tokio::spawn(async move {
            let (request, send) = next(&mut handle).await;
            assert_eq!(
                request.uri().path(),
                "/apis/apps/v1/namespaces/shop/deployments/payment"
            );
            respond(send, deployment(2));
            let (request, send) = next(&mut handle).await;
            assert_eq!(
                request.uri().path(),
                "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers"
            );
            respond(send, hpa_list(None));
            let (request, send) = next(&mut handle).await;
            assert_eq!(request.method(), "PATCH");
            assert_eq!(
                request.uri().path(),
                "/apis/apps/v1/namespaces/shop/deployments/payment/scale"
            );
            assert!(
                request
                    .uri()
                    .query()
                    .unwrap_or("")
                    .contains("fieldManager=tideshift")
            );
            let body = request.into_body().collect_bytes().await.unwrap();
            let patch: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(patch, json!({"spec": {"replicas": 6}}));
            respond(
                send,
                json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": "payment"}, "spec": {"replicas": 6}}),
            );
        });
        let outcome = actuator.scale(&target(), 6).await.unwrap();
        assert_eq!(outcome, ScaleOutcome::Scaled { from: 2, to: 6 });
        server.await.unwrap();
    }

    #[tokio::test]
    async fn an_hpa_on_the_same_deployment_is_a_conflict_and_nothing_is_written() {
        let (client, mut handle) = mock();
        let actuator = KubeActuator::new(client, Duration::from_secs(60));
        let server = tokio::spawn(async move {
            let (_, send) = next(&mut handle).await;
            respond(send, deployment(2));
            let (_, send) = next(&mut handle).await;
            respond(send, hpa_list(Some("payment")));
            handle
        });
        let outcome = actuator.scale(&target(), 6).await.unwrap();
        match outcome {
            ScaleOutcome::Conflict(reason) => {
                assert!(
                    reason.contains("HorizontalPodAutoscaler shop/payment-hpa"),
                    "{reason}"
                )
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        let mut handle = server.await.unwrap();
        drop(actuator);
        assert!(
            handle.next_request().await.is_none(),
            "no write after a conflict"
        );
    }

    #[tokio::test]
    async fn another_writer_after_our_write_is_a_conflict_held_for_the_hold() {
        let (client, mut handle) = mock();
        let actuator = KubeActuator::new(client, Duration::from_secs(3600));
        let server = tokio::spawn(async move {
            // First cycle: we scale 2 -> 6.
            let (_, send) = next(&mut handle).await;
            respond(send, deployment(2));
            let (_, send) = next(&mut handle).await;
            respond(send, hpa_list(None));
            let (request, send) = next(&mut handle).await;
            assert_eq!(request.method(), "PATCH");
            respond(
                send,
                json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": "payment"}, "spec": {"replicas": 6}}),
            );
            // Someone scaled it to 3 by hand; the next two observations are conflicts
            // (the HPA list is cached, so only the Deployment is read).
            for _ in 0..2 {
                let (request, send) = next(&mut handle).await;
                assert_eq!(request.method(), "GET");
                respond(send, deployment(3));
            }
            handle
        });
        assert_eq!(
            actuator.scale(&target(), 6).await.unwrap(),
            ScaleOutcome::Scaled { from: 2, to: 6 }
        );
        let first = actuator.scale(&target(), 6).await.unwrap();
        assert!(
            matches!(&first, ScaleOutcome::Conflict(r) if r.contains("from 6 (tideshift's) to 3")),
            "{first:?}"
        );
        let second = actuator.observe(&target()).await.unwrap();
        assert!(second.conflict.is_some(), "still held");
        assert_eq!(
            second.pod,
            Some(crate::plan::Resources {
                cpu: 0.5,
                memory: 256.0 * 1024.0 * 1024.0
            })
        );
        let mut handle = server.await.unwrap();
        drop(actuator);
        assert!(
            handle.next_request().await.is_none(),
            "no write while in conflict"
        );
    }

    #[test]
    fn replicas_spread_over_jobs_in_order() {
        assert_eq!(spread(7, 3), vec![3, 2, 2]);
        assert_eq!(spread(0, 2), vec![0, 0]);
        assert!(spread(4, 0).is_empty());
    }
}
