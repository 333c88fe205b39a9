//! Replicas on a real cluster.
//!
//! - Deployments and StatefulSets through the `scale` subresource (merge patch, field manager
//!   `tideshift`), so the rest of the object is never touched.
//! - Jobs through `spec.parallelism`, and `spec.suspend: true` for zero (the Job controller then
//!   removes its running pods). A Job selector spreads the replicas over the matching Jobs that
//!   have not finished, in name order; their pods are counted over every matching Job.
//! - Another writer is a conflict, never a fight: an HPA whose `scaleTargetRef` names the same
//!   object, or replicas that differ from tideshift's baseline (what it last wrote, or, for an
//!   object it has not written, what it adopted when it first read it: `adopt`) and were last
//!   written by another field manager (`managedFields`; what a predecessor replica wrote is tideshift's
//!   too). A target in conflict is not written for `conflict_hold` (an HPA conflict lasts as
//!   long as the HPA, a foreign write from its last change); after the hold the then-current
//!   value is the new baseline, so a persistent other writer sees at most one write per hold. What is known of a target's
//!   writers is handed to the controller to keep in the policy's status, and handed back to a
//!   successor (`Actuator::writers`, `Actuator::remember_writers`).
//! - Writes are fenced: every write carries the `resourceVersion` of the read it was decided
//!   on (the API server refuses it with 409 if the object changed since), leadership is asked
//!   right before it is sent, and every request gives up after `timeout`, which the daemon
//!   keeps inside the lease (see `controller::leader`). A 409 is read again and retried a few
//!   times, each attempt fenced on its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::Selector;
use serde_json::json;

use super::{
    ActuateError, Actuator, Fence, Observed, OtherWriter, ScaleOutcome, Target, WriterMemory,
    pod_requests,
};
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

/// Attempts of one scale when the object keeps changing between read and write (409).
const WRITE_ATTEMPTS: usize = 3;

#[derive(Clone, Debug, PartialEq)]
enum ConflictKind {
    Autoscaler,
    ForeignWrite,
}

/// The HPAs of one namespace, listed at most every `HPA_CACHE_TTL`.
type HpaList = tokio::sync::Mutex<Option<(Instant, Vec<HorizontalPodAutoscaler>)>>;

#[derive(Clone, Debug)]
struct Conflict {
    /// Wall clock, so that a successor can carry the hold on from the policy's status.
    since: SystemTime,
    kind: ConflictKind,
    reason: String,
}

#[derive(Clone, Debug, Default)]
struct TargetMemory {
    /// Per object (the Deployment, or each Job of a selector): what tideshift last asked for,
    /// or last saw and agreed with.
    written: BTreeMap<String, u32>,
    conflict: Option<Conflict>,
    /// Per object: the replicas of the last read (what `adopt` takes as the baseline).
    last_read: BTreeMap<String, u32>,
}

pub struct KubeActuator {
    client: kube::Client,
    conflict_hold: Duration,
    /// Longest wait for one API request.
    timeout: Duration,
    memory: Mutex<HashMap<String, TargetMemory>>,
    /// Per namespace: when its HPAs were listed, and the list. Each namespace has its own lock,
    /// held across its list request, so targets in one namespace share one list while other
    /// namespaces go on: one lock for all held every list for every namespace, and with the
    /// API server answering in 130 ms the whole daemon's cycles queued behind it.
    hpas: Mutex<HashMap<String, Arc<HpaList>>>,
    in_flight: tokio::sync::Semaphore,
}

/// One object that holds (a share of) a target's replicas, as read.
#[derive(Clone, Debug)]
struct ObjectRead {
    name: String,
    replicas: u32,
    /// The write's precondition.
    resource_version: Option<String>,
    /// The field manager that last wrote the replica fields (`managedFields`).
    last_writer: Option<String>,
}

/// A workload as read from the API.
struct Read {
    replicas: u32,
    ready: u32,
    /// Requests of one pod; for several Jobs, the largest of each resource.
    pod: Option<Resources>,
    /// Pod selectors: one per object.
    selectors: Vec<LabelSelector>,
    objects: Vec<ObjectRead>,
}

/// Why a write attempt did not happen.
enum WriteFailure {
    /// The object changed since it was read (409): read again.
    Changed,
    Fenced,
    Error(ActuateError),
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

/// The fields under `spec` that hold a kind's replicas.
fn replica_fields(kind: WorkloadKind) -> &'static [&'static str] {
    match kind {
        WorkloadKind::Deployment | WorkloadKind::StatefulSet => &["f:replicas"],
        WorkloadKind::Job => &["f:parallelism", "f:suspend"],
    }
}

/// The field manager that last wrote any of `fields` under `spec`: of the `managedFields`
/// entries owning one, the most recent (on a tie, one that is not tideshift: the safe side).
fn last_writer(meta: &ObjectMeta, fields: &[&str]) -> Option<String> {
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry
                .fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec"))
                .is_some_and(|spec| fields.iter().any(|field| spec.get(field).is_some()))
        })
        .max_by_key(|entry| {
            (
                entry.time.as_ref().map(|t| t.0),
                entry.manager.as_deref() != Some(FIELD_MANAGER),
            )
        })
        .and_then(|entry| entry.manager.clone())
}

fn object_read(meta: &ObjectMeta, kind: WorkloadKind, replicas: u32) -> ObjectRead {
    ObjectRead {
        name: meta.name.clone().unwrap_or_default(),
        replicas,
        resource_version: meta.resource_version.clone(),
        last_writer: last_writer(meta, replica_fields(kind)),
    }
}

/// Per resource, the larger of two pods' requests.
fn larger_pod(a: Option<Resources>, b: Option<Resources>) -> Option<Resources> {
    match (a, b) {
        (Some(a), Some(b)) => Some(Resources {
            cpu: a.cpu.max(b.cpu),
            memory: a.memory.max(b.memory),
        }),
        (a, b) => a.or(b),
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

fn unix_seconds(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl KubeActuator {
    /// `timeout` bounds every API request (the daemon keeps it inside the lease).
    pub fn new(client: kube::Client, conflict_hold: Duration, timeout: Duration) -> Self {
        Self {
            client,
            conflict_hold,
            timeout,
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

    /// One API request, given up after `timeout` (the request is then cancelled).
    async fn call<T>(
        &self,
        what: &str,
        verb: &'static str,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, ActuateError> {
        tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| ActuateError::Api {
                target: what.to_string(),
                verb,
                cause: format!("no answer within {:?}", self.timeout),
            })
    }

    /// `call` for a target's request, with the API's error mapped.
    async fn request<T>(
        &self,
        target: &Target,
        verb: &'static str,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, ActuateError> {
        self.call(&target.to_string(), verb, request)
            .await?
            .map_err(|e| api_error(target, verb, e))
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
            let job = self.request(target, "get", api.get(name)).await?;
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
        let mut jobs = self
            .request(
                target,
                "list",
                api.list(&ListParams::default().labels_from(&selector)),
            )
            .await?
            .items;
        jobs.retain(|job| !job_finished(job));
        jobs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(jobs)
    }

    async fn read(&self, target: &Target) -> Result<Read, ActuateError> {
        match target.kind {
            WorkloadKind::Deployment => {
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), &target.namespace);
                let object = self
                    .request(target, "get", api.get(self.name(target)?))
                    .await?;
                let spec = object.spec;
                let replicas = to_u32(spec.replicas, 1);
                Ok(Read {
                    replicas,
                    ready: to_u32(object.status.and_then(|s| s.ready_replicas), 0),
                    pod: spec.template.spec.as_ref().and_then(pod_requests),
                    selectors: vec![spec.selector],
                    objects: vec![object_read(&object.metadata, target.kind, replicas)],
                })
            }
            WorkloadKind::StatefulSet => {
                let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &target.namespace);
                let object = self
                    .request(target, "get", api.get(self.name(target)?))
                    .await?;
                let spec = object.spec;
                let replicas = to_u32(spec.replicas, 1);
                Ok(Read {
                    replicas,
                    ready: to_u32(object.status.and_then(|s| s.ready_replicas), 0),
                    pod: spec.template.spec.as_ref().and_then(pod_requests),
                    selectors: vec![spec.selector],
                    objects: vec![object_read(&object.metadata, target.kind, replicas)],
                })
            }
            WorkloadKind::Job => {
                let jobs = self.jobs(target).await?;
                let mut read = Read {
                    replicas: 0,
                    ready: 0,
                    pod: None,
                    selectors: Vec::new(),
                    objects: Vec::new(),
                };
                for job in jobs {
                    let replicas = job_replicas(&job);
                    read.replicas += replicas;
                    read.ready += to_u32(job.status.as_ref().and_then(|s| s.ready), 0);
                    read.objects
                        .push(object_read(&job.metadata, target.kind, replicas));
                    if let Some(spec) = job.spec {
                        read.pod = larger_pod(
                            read.pod,
                            spec.template.spec.as_ref().and_then(pod_requests),
                        );
                        read.selectors.extend(spec.selector);
                    }
                }
                Ok(read)
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
            let listed = self
                .call(
                    &target.to_string(),
                    "list",
                    api.list(&ListParams::default()),
                )
                .await?;
            let items = match listed {
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
    fn judge(&self, target: &Target, read: &Read, autoscaler: Option<String>) -> Option<String> {
        let mut memory = self.lock_memory();
        let entry = memory.entry(target.to_string()).or_default();
        entry.last_read = read
            .objects
            .iter()
            .map(|o| (o.name.clone(), o.replicas))
            .collect();
        if let Some(reason) = autoscaler {
            let since = match &entry.conflict {
                Some(c) if c.kind == ConflictKind::Autoscaler => c.since,
                _ => SystemTime::now(),
            };
            entry.conflict = Some(Conflict {
                since,
                kind: ConflictKind::Autoscaler,
                reason: reason.clone(),
            });
            entry.written.clear();
            return Some(reason);
        }
        // A replica count that is not what tideshift wrote, last written by someone else. One
        // last written by tideshift is a predecessor's write (another replica of the daemon,
        // or this one before a restart): the new baseline.
        let field = if target.kind == WorkloadKind::Job {
            "parallelism"
        } else {
            "replicas"
        };
        let mut foreign = None;
        for object in &read.objects {
            let Some(&written) = entry.written.get(&object.name) else {
                continue;
            };
            if written == object.replicas {
                continue;
            }
            if object.last_writer.as_deref() == Some(FIELD_MANAGER) {
                entry.written.insert(object.name.clone(), object.replicas);
                continue;
            }
            let what = match (&target.name, target.kind) {
                (Some(_), _) => target.to_string(),
                (None, kind) => format!("{} {}/{}", kind_name(kind), target.namespace, object.name),
            };
            let by = object.last_writer.as_deref().unwrap_or("unknown");
            foreign.get_or_insert(format!(
                "{field} of {what} changed from {written} (tideshift's baseline) to {} by another writer ({by})",
                object.replicas
            ));
        }
        // Jobs that finished or went away are no longer anyone's.
        entry
            .written
            .retain(|name, _| read.objects.iter().any(|o| &o.name == name));
        if let Some(reason) = foreign {
            entry.conflict = Some(Conflict {
                since: SystemTime::now(),
                kind: ConflictKind::ForeignWrite,
                reason: reason.clone(),
            });
            // After the hold, the other writer's value is the new baseline.
            entry.written.clear();
            return Some(reason);
        }
        match &entry.conflict {
            Some(c) if c.kind == ConflictKind::Autoscaler => {
                entry.conflict = None;
                None
            }
            Some(c) => {
                let held = SystemTime::now()
                    .duration_since(c.since)
                    .unwrap_or(Duration::ZERO);
                if held < self.conflict_hold {
                    Some(c.reason.clone())
                } else {
                    entry.conflict = None;
                    None
                }
            }
            None => None,
        }
    }

    /// Remember that tideshift asked for (or agrees with) these replicas per object.
    fn agree(&self, target: &Target, written: impl IntoIterator<Item = (String, u32)>) {
        self.lock_memory()
            .entry(target.to_string())
            .or_default()
            .written
            .extend(written);
    }

    /// One merge patch carrying the read's `resourceVersion`, sent only if the fence allows.
    async fn patch_object<K>(
        &self,
        target: &Target,
        api: &Api<K>,
        object: &ObjectRead,
        scale: bool,
        spec: serde_json::Value,
        fence: Fence<'_>,
    ) -> Result<(), WriteFailure>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        let patch = Patch::Merge(json!({
            "metadata": {"resourceVersion": object.resource_version},
            "spec": spec,
        }));
        // Leadership may have ended during the read (a stall, a pause): asked again right
        // before sending, with the time the request may take.
        if !fence(self.timeout) {
            return Err(WriteFailure::Fenced);
        }
        let written = if scale {
            self.call(
                &target.to_string(),
                "patch",
                api.patch_scale(&object.name, &params, &patch),
            )
            .await
            .map(|r| r.map(|_| ()))
        } else {
            self.call(
                &target.to_string(),
                "patch",
                api.patch(&object.name, &params, &patch),
            )
            .await
            .map(|r| r.map(|_| ()))
        };
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(kube::Error::Api(status))) if status.is_conflict() => Err(WriteFailure::Changed),
            Ok(Err(e)) => Err(WriteFailure::Error(api_error(target, "patch", e))),
            Err(e) => Err(WriteFailure::Error(e)),
        }
    }

    /// Write `replicas` as decided on `read`: the objects that need it, each with its
    /// precondition. Returns what tideshift now asks per object.
    async fn write(
        &self,
        target: &Target,
        read: &Read,
        replicas: u32,
        fence: Fence<'_>,
    ) -> Result<Vec<(String, u32)>, WriteFailure> {
        match target.kind {
            WorkloadKind::Deployment | WorkloadKind::StatefulSet => {
                let Some(object) = read.objects.first() else {
                    return Err(WriteFailure::Error(ActuateError::NotFound {
                        target: target.to_string(),
                    }));
                };
                let spec = json!({"replicas": replicas});
                if target.kind == WorkloadKind::Deployment {
                    let api: Api<Deployment> =
                        Api::namespaced(self.client.clone(), &target.namespace);
                    self.patch_object(target, &api, object, true, spec, fence)
                        .await?;
                } else {
                    let api: Api<StatefulSet> =
                        Api::namespaced(self.client.clone(), &target.namespace);
                    self.patch_object(target, &api, object, true, spec, fence)
                        .await?;
                }
                Ok(vec![(object.name.clone(), replicas)])
            }
            WorkloadKind::Job => {
                if read.objects.is_empty() && replicas > 0 {
                    return Err(WriteFailure::Error(ActuateError::NotFound {
                        target: target.to_string(),
                    }));
                }
                let api: Api<Job> = Api::namespaced(self.client.clone(), &target.namespace);
                let mut now_asked = Vec::new();
                for (object, share) in read
                    .objects
                    .iter()
                    .zip(spread(replicas, read.objects.len()))
                {
                    if object.replicas != share {
                        let spec = if share == 0 {
                            json!({"suspend": true})
                        } else {
                            json!({"parallelism": share, "suspend": false})
                        };
                        if let Err(failure) = self
                            .patch_object(target, &api, object, false, spec, fence)
                            .await
                        {
                            // What was written so far stays tideshift's.
                            self.agree(target, now_asked);
                            return Err(failure);
                        }
                    }
                    now_asked.push((object.name.clone(), share));
                }
                Ok(now_asked)
            }
        }
    }

    async fn observe_read(&self, target: &Target) -> Result<(Read, Option<String>), ActuateError> {
        let read = self.read(target).await?;
        let autoscaler = self.autoscaler(target).await?;
        let conflict = self.judge(target, &read, autoscaler);
        Ok((read, conflict))
    }

    async fn observe_target(&self, target: &Target) -> Result<Observed, ActuateError> {
        let (read, conflict) = self.observe_read(target).await?;
        Ok(Observed {
            replicas: read.replicas,
            ready: read.ready,
            pod: read.pod,
            conflict,
        })
    }

    async fn scale_target(
        &self,
        target: &Target,
        replicas: u32,
        fence: Fence<'_>,
    ) -> Result<ScaleOutcome, ActuateError> {
        // The replicas the write is decided on, per object, as first read.
        let mut basis: Option<BTreeMap<String, u32>> = None;
        for _ in 0..WRITE_ATTEMPTS {
            // Read again right before writing: the value may have moved since the cycle
            // observed it, and the write is conditional on this read.
            let (read, conflict) = self.observe_read(target).await?;
            if let Some(reason) = conflict {
                return Ok(ScaleOutcome::Conflict(reason));
            }
            let now: BTreeMap<String, u32> = read
                .objects
                .iter()
                .map(|o| (o.name.clone(), o.replicas))
                .collect();
            match &basis {
                None => basis = Some(now),
                // After a 409, a change of the other fields (status, labels) is retried; a
                // change of the replicas (a successor's write, say) means the decision was
                // made on a world that is gone: the next cycle decides again.
                Some(basis) if *basis != now => {
                    return Err(ActuateError::Api {
                        target: target.to_string(),
                        verb: "patch",
                        cause: format!(
                            "replicas changed from {basis:?} to {now:?} since they were read (409); \
                             not written, the next cycle decides again"
                        ),
                    });
                }
                Some(_) => {}
            }
            if read.replicas == replicas {
                self.agree(
                    target,
                    read.objects.iter().map(|o| (o.name.clone(), o.replicas)),
                );
                return Ok(ScaleOutcome::Unchanged);
            }
            match self.write(target, &read, replicas, fence).await {
                Ok(asked) => {
                    self.agree(target, asked);
                    tracing::info!(%target, from = read.replicas, to = replicas, "scaled");
                    return Ok(ScaleOutcome::Scaled {
                        from: read.replicas,
                        to: replicas,
                    });
                }
                Err(WriteFailure::Fenced) => {
                    tracing::warn!(%target, to = replicas, "not written: leadership lost or running out");
                    return Ok(ScaleOutcome::Fenced);
                }
                Err(WriteFailure::Error(e)) => return Err(e),
                Err(WriteFailure::Changed) => {
                    tracing::info!(%target, "changed since it was read (409); reading again");
                }
            }
        }
        Err(ActuateError::Api {
            target: target.to_string(),
            verb: "patch",
            cause: format!(
                "the object changed between read and write {WRITE_ATTEMPTS} times in a row (409)"
            ),
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
        let nodes = self
            .call(
                &what,
                "list",
                api.list(&ListParams::default().labels_from(&labels)),
            )
            .await?
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

    /// Pods holding capacity over every object of the target (each Job of a selector has its
    /// own pods), each pod counted once.
    async fn count_pods(&self, target: &Target) -> Result<u32, ActuateError> {
        let read = self.read(target).await?;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &target.namespace);
        let mut seen = BTreeSet::new();
        let mut listed = BTreeSet::new();
        for selector in read.selectors {
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
            if !listed.insert(selector.to_string()) {
                continue;
            }
            let pods = self
                .request(
                    target,
                    "list",
                    api.list(&ListParams::default().labels_from(&selector)),
                )
                .await?;
            for pod in &pods.items {
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                if !matches!(phase, Some("Succeeded") | Some("Failed")) {
                    seen.insert(
                        pod.metadata
                            .uid
                            .clone()
                            .or_else(|| pod.metadata.name.clone())
                            .unwrap_or_default(),
                    );
                }
            }
        }
        Ok(seen.len() as u32)
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
        fence: Fence<'a>,
    ) -> BoxFuture<'a, Result<ScaleOutcome, ActuateError>> {
        self.bounded(self.scale_target(target, replicas, fence))
            .boxed()
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

    fn writers(&self, target: &Target) -> Option<WriterMemory> {
        let memory = self.lock_memory();
        let entry = memory.get(&target.to_string())?;
        let other_writer = entry
            .conflict
            .as_ref()
            .filter(|c| c.kind == ConflictKind::ForeignWrite)
            .map(|c| OtherWriter {
                since: unix_seconds(c.since),
                reason: c.reason.clone(),
            });
        Some(WriterMemory {
            written: entry.written.clone(),
            other_writer,
        })
    }

    fn adopt(&self, target: &Target) {
        let mut memory = self.lock_memory();
        let Some(entry) = memory.get_mut(&target.to_string()) else {
            return;
        };
        // Not while a conflict holds: the other writer's value becomes the baseline after it.
        if entry.conflict.is_some() {
            return;
        }
        for (name, &replicas) in &entry.last_read {
            entry.written.entry(name.clone()).or_insert(replicas);
        }
    }

    fn remember_writers(&self, target: &Target, remembered: WriterMemory) {
        let mut memory = self.lock_memory();
        let entry = memory.entry(target.to_string()).or_default();
        entry.written = remembered.written;
        entry.conflict = remembered.other_writer.map(|other| Conflict {
            since: SystemTime::UNIX_EPOCH + Duration::from_secs(other.since.max(0) as u64),
            kind: ConflictKind::ForeignWrite,
            reason: other.reason,
        });
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

    /// Any write may be sent.
    fn allow(_: Duration) -> bool {
        true
    }

    fn deployment(replicas: i32) -> serde_json::Value {
        deployment_at(replicas, "5", None)
    }

    /// A Deployment at `resource_version` whose replicas `manager` wrote last, if given.
    fn deployment_at(
        replicas: i32,
        resource_version: &str,
        manager: Option<&str>,
    ) -> serde_json::Value {
        let managed: Vec<serde_json::Value> = manager
            .into_iter()
            .map(|m| {
                json!({"manager": m, "operation": "Update", "subresource": "scale",
                       "time": "2026-11-26T08:00:00Z", "fieldsType": "FieldsV1",
                       "fieldsV1": {"f:spec": {"f:replicas": {}}}})
            })
            .collect();
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "payment", "namespace": "shop",
                         "resourceVersion": resource_version, "managedFields": managed},
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
        let actuator = Arc::new(KubeActuator::new(
            client,
            Duration::from_secs(60),
            Duration::from_secs(5),
        ));
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
        let actuator = Arc::new(KubeActuator::new(
            client,
            Duration::from_secs(60),
            Duration::from_secs(5),
        ));
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
        let actuator = KubeActuator::new(client, Duration::from_secs(60), Duration::from_secs(5));
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
            // Conditional on the object read: a change since makes the API server refuse it.
            assert_eq!(
                patch,
                json!({"metadata": {"resourceVersion": "5"}, "spec": {"replicas": 6}})
            );
            respond(
                send,
                json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": "payment"}, "spec": {"replicas": 6}}),
            );
        });
        let outcome = actuator.scale(&target(), 6, &allow).await.unwrap();
        assert_eq!(outcome, ScaleOutcome::Scaled { from: 2, to: 6 });
        server.await.unwrap();
    }

    #[tokio::test]
    async fn an_hpa_on_the_same_deployment_is_a_conflict_and_nothing_is_written() {
        let (client, mut handle) = mock();
        let actuator = KubeActuator::new(client, Duration::from_secs(60), Duration::from_secs(5));
        let server = tokio::spawn(async move {
            let (_, send) = next(&mut handle).await;
            respond(send, deployment(2));
            let (_, send) = next(&mut handle).await;
            respond(send, hpa_list(Some("payment")));
            handle
        });
        let outcome = actuator.scale(&target(), 6, &allow).await.unwrap();
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
        let actuator = KubeActuator::new(client, Duration::from_secs(3600), Duration::from_secs(5));
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
            actuator.scale(&target(), 6, &allow).await.unwrap(),
            ScaleOutcome::Scaled { from: 2, to: 6 }
        );
        let first = actuator.scale(&target(), 6, &allow).await.unwrap();
        assert!(
            matches!(&first, ScaleOutcome::Conflict(r) if r.contains("from 6 (tideshift's baseline) to 3")),
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

    #[tokio::test]
    async fn a_target_adopted_before_its_first_write_sees_a_later_hand_scale_as_a_conflict() {
        let (client, mut handle) = mock();
        let actuator = KubeActuator::new(client, Duration::from_secs(3600), Duration::from_secs(5));
        let server = tokio::spawn(async move {
            let (_, send) = next(&mut handle).await;
            respond(send, deployment_at(8, "5", Some("kubectl-create")));
            let (_, send) = next(&mut handle).await;
            respond(send, hpa_list(None));
            let (_, send) = next(&mut handle).await;
            respond(send, deployment_at(6, "6", Some("kubectl")));
            handle
        });
        let first = actuator.observe(&target()).await.unwrap();
        assert_eq!(first.conflict, None, "what was there first is the baseline");
        actuator.adopt(&target());
        assert_eq!(
            actuator.writers(&target()).unwrap().written,
            BTreeMap::from([("payment".to_string(), 8)])
        );
        let second = actuator.observe(&target()).await.unwrap();
        assert!(
            second
                .conflict
                .as_deref()
                .is_some_and(|r| r
                    .contains("from 8 (tideshift's baseline) to 6 by another writer (kubectl)")),
            "{second:?}"
        );
        server.await.unwrap();
    }

    fn conflict_status() -> serde_json::Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
               "code": 409, "message": "the object has been modified"})
    }

    fn respond_status(
        send: tower_test::mock::SendResponse<Response<Body>>,
        code: u16,
        body: serde_json::Value,
    ) {
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
    }

    fn scale_answer(replicas: i32) -> serde_json::Value {
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
               "metadata": {"name": "payment"}, "spec": {"replicas": replicas}})
    }

    #[tokio::test]
    async fn a_write_the_fence_refuses_is_never_sent() {
        let (client, mut handle) = mock();
        let actuator = KubeActuator::new(client, Duration::from_secs(60), Duration::from_secs(5));
        let server = tokio::spawn(async move {
            let (_, send) = next(&mut handle).await;
            respond(send, deployment(2));
            let (_, send) = next(&mut handle).await;
            respond(send, hpa_list(None));
            handle
        });
        // Leadership ran out while the target was read (a stall, a pause).
        let deposed = |_: Duration| false;
        let outcome = actuator.scale(&target(), 6, &deposed).await.unwrap();
        assert_eq!(outcome, ScaleOutcome::Fenced);
        let mut handle = server.await.unwrap();
        drop(actuator);
        assert!(handle.next_request().await.is_none(), "nothing sent");
    }

    #[tokio::test]
    async fn the_fence_is_asked_with_the_time_the_write_may_take() {
        let (client, mut handle) = mock();
        let actuator = KubeActuator::new(client, Duration::from_secs(60), Duration::from_secs(2));
        let server = tokio::spawn(async move {
            let (_, send) = next(&mut handle).await;
            respond(send, deployment(2));
            let (_, send) = next(&mut handle).await;
            respond(send, hpa_list(None));
        });
        let asked = std::sync::Mutex::new(Vec::new());
        let fence = |within: Duration| {
            asked.lock().unwrap().push(within);
            false
        };
        actuator.scale(&target(), 6, &fence).await.unwrap();
        server.await.unwrap();
        assert_eq!(*asked.lock().unwrap(), [Duration::from_secs(2)]);
    }

    /// Payment read at 2 (resourceVersion 5), no HPA, and its write refused: changed since.
    async fn refuse_a_write(handle: &mut Handle) {
        let (_, send) = next(handle).await;
        respond(send, deployment_at(2, "5", None));
        let (_, send) = next(handle).await;
        respond(send, hpa_list(None));
        let (request, send) = next(handle).await;
        assert_eq!(request.method(), "PATCH");
        respond_status(send, 409, conflict_status());
    }

    #[tokio::test]
    async fn a_write_refused_because_the_object_changed_is_read_again_and_retried() {
        let (client, mut handle) = mock();
        let actuator = KubeActuator::new(client, Duration::from_secs(60), Duration::from_secs(5));
        let server = tokio::spawn(async move {
            refuse_a_write(&mut handle).await;
            // Read again (the HPA list is cached), and write on the new version.
            let (request, send) = next(&mut handle).await;
            assert_eq!(request.method(), "GET");
            respond(send, deployment_at(2, "6", None));
            let (request, send) = next(&mut handle).await;
            assert_eq!(request.method(), "PATCH");
            let body = request.into_body().collect_bytes().await.unwrap();
            let patch: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(patch["metadata"]["resourceVersion"], "6");
            respond(send, scale_answer(6));
        });
        let outcome = actuator.scale(&target(), 6, &allow).await.unwrap();
        assert_eq!(outcome, ScaleOutcome::Scaled { from: 2, to: 6 });
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_write_refused_because_the_replicas_changed_is_not_retried() {
        let (client, mut handle) = mock();
        let actuator = KubeActuator::new(client, Duration::from_secs(60), Duration::from_secs(5));
        let server = tokio::spawn(async move {
            refuse_a_write(&mut handle).await;
            // A successor (same field manager) scaled it meanwhile: what this write was
            // decided on is gone.
            let (_, send) = next(&mut handle).await;
            respond(send, deployment_at(4, "6", Some(FIELD_MANAGER)));
            handle
        });
        let error = actuator
            .scale(&target(), 6, &allow)
            .await
            .expect_err("not written");
        assert!(
            error.to_string().contains("the next cycle decides again"),
            "{error}"
        );
        let mut handle = server.await.unwrap();
        drop(actuator);
        assert!(handle.next_request().await.is_none(), "no second write");
    }

    #[tokio::test]
    async fn a_request_without_an_answer_fails_within_the_timeout() {
        let (client, mut handle) = mock();
        let actuator =
            KubeActuator::new(client, Duration::from_secs(60), Duration::from_millis(200));
        let started = Instant::now();
        let payment = target();
        let (result, _pending) = tokio::join!(actuator.observe(&payment), next(&mut handle));
        let error = result.expect_err("no answer is an error");
        assert!(error.to_string().contains("no answer within"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_predecessors_write_is_tideshifts_and_a_remembered_other_writer_is_held() {
        let (client, mut handle) = mock();
        let actuator = KubeActuator::new(client, Duration::from_secs(300), Duration::from_secs(5));
        // The status said tideshift wrote 8; the predecessor wrote 4 before it died.
        actuator.remember_writers(
            &target(),
            WriterMemory {
                written: [("payment".to_string(), 8)].into(),
                other_writer: None,
            },
        );
        let server = tokio::spawn(async move {
            let (_, send) = next(&mut handle).await;
            respond(send, deployment_at(4, "9", Some(FIELD_MANAGER)));
            let (_, send) = next(&mut handle).await;
            respond(send, hpa_list(None));
            // Then someone scaled it by hand while no replica led.
            let (_, send) = next(&mut handle).await;
            respond(send, deployment_at(7, "10", Some("kubectl")));
        });
        let observed = actuator.observe(&target()).await.unwrap();
        assert_eq!(observed.conflict, None, "tideshift's own write");
        assert_eq!(
            actuator.writers(&target()).unwrap().written,
            BTreeMap::from([("payment".to_string(), 4)])
        );
        let observed = actuator.observe(&target()).await.unwrap();
        let conflict = observed.conflict.expect("another writer");
        assert!(
            conflict.contains("from 4 (tideshift's baseline) to 7 by another writer (kubectl)"),
            "{conflict}"
        );
        let other = actuator.writers(&target()).unwrap().other_writer.unwrap();
        assert!(other.reason.contains("kubectl"));
        server.await.unwrap();

        // A successor told of that writer holds off until the hold has passed.
        let (client, mut handle) = mock();
        let successor = KubeActuator::new(client, Duration::from_secs(300), Duration::from_secs(5));
        let now = unix_seconds(SystemTime::now());
        let remembered = |since: i64| WriterMemory {
            written: BTreeMap::new(),
            other_writer: Some(OtherWriter {
                since,
                reason: other.reason.clone(),
            }),
        };
        successor.remember_writers(&target(), remembered(now - 60));
        let server = tokio::spawn(async move {
            let (_, send) = next(&mut handle).await;
            respond(send, deployment_at(7, "10", Some("kubectl")));
            let (_, send) = next(&mut handle).await;
            respond(send, hpa_list(None));
            let (_, send) = next(&mut handle).await;
            respond(send, deployment_at(7, "10", Some("kubectl")));
        });
        let held = successor.observe(&target()).await.unwrap();
        assert!(held.conflict.is_some(), "60 s into a 300 s hold");
        successor.remember_writers(&target(), remembered(now - 301));
        let free = successor.observe(&target()).await.unwrap();
        assert_eq!(free.conflict, None, "the hold is over");
        server.await.unwrap();
    }

    fn job(name: &str, parallelism: i32, manager: &str) -> serde_json::Value {
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": "3",
                         "labels": {"team": "finance"},
                         "managedFields": [{"manager": manager, "operation": "Update",
                             "time": "2026-11-26T08:00:00Z", "fieldsType": "FieldsV1",
                             "fieldsV1": {"f:spec": {"f:parallelism": {}}}}]},
            "spec": {
                "parallelism": parallelism,
                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": format!("uid-{name}")}},
                "template": {"spec": {"restartPolicy": "Never", "containers": [
                    {"name": "c", "image": "x", "resources": {"requests": {"cpu": if name == "b" { "300m" } else { "100m" }}}}
                ]}}
            },
            "status": {"ready": parallelism}
        })
    }

    fn job_list(jobs: &[serde_json::Value]) -> serde_json::Value {
        json!({"apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": jobs})
    }

    fn pod_list(job: &str, count: usize) -> serde_json::Value {
        let items: Vec<serde_json::Value> = (0..count)
            .map(|i| {
                json!({"metadata": {"name": format!("{job}-{i}"), "uid": format!("{job}-uid-{i}")},
                       "status": {"phase": "Running"}})
            })
            .collect();
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
    }

    fn reports() -> Target {
        Target {
            kind: WorkloadKind::Job,
            namespace: "shop".into(),
            name: None,
            selector: Some([("team".to_string(), "finance".to_string())].into()),
        }
    }

    #[tokio::test]
    async fn a_job_selector_counts_the_pods_of_every_job_it_matches() {
        let (client, mut handle) = mock();
        let actuator = KubeActuator::new(client, Duration::from_secs(60), Duration::from_secs(5));
        let server = tokio::spawn(async move {
            let (request, send) = next(&mut handle).await;
            assert_path_contains(&request, "/apis/batch/v1/namespaces/shop/jobs");
            respond(
                send,
                job_list(&[
                    job("a", 1, "kubectl"),
                    job("b", 3, "kubectl"),
                    job("c", 3, "kubectl"),
                ]),
            );
            let mut selectors = Vec::new();
            for (name, count) in [("a", 1), ("b", 3), ("c", 3)] {
                let (request, send) = next(&mut handle).await;
                assert_path_contains(&request, "/api/v1/namespaces/shop/pods");
                selectors.push(request.uri().query().unwrap_or("").to_string());
                respond(send, pod_list(name, count));
            }
            assert!(selectors[2].contains("uid-c"), "{selectors:?}");
        });
        let pods = actuator.pods_holding_capacity(&reports()).await.unwrap();
        assert_eq!(pods, 7, "the pods of a, b and c");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_job_selector_reads_the_largest_pod_and_sees_a_foreign_write_to_one_job() {
        let (client, mut handle) = mock();
        let actuator = KubeActuator::new(client, Duration::from_secs(60), Duration::from_secs(5));
        actuator.remember_writers(
            &reports(),
            WriterMemory {
                written: [
                    ("a".to_string(), 1),
                    ("b".to_string(), 3),
                    ("c".to_string(), 3),
                ]
                .into(),
                other_writer: None,
            },
        );
        let server = tokio::spawn(async move {
            let (_, send) = next(&mut handle).await;
            // b was scaled to 5 by hand; a new Job d appeared (not a foreign write).
            respond(
                send,
                job_list(&[
                    job("a", 1, FIELD_MANAGER),
                    job("b", 5, "kubectl"),
                    job("c", 3, FIELD_MANAGER),
                    job("d", 2, "kubectl"),
                ]),
            );
        });
        let observed = actuator.observe(&reports()).await.unwrap();
        server.await.unwrap();
        assert_eq!(observed.replicas, 11);
        assert_eq!(
            observed.pod.map(|p| p.cpu),
            Some(0.3),
            "b's pods are the largest"
        );
        let conflict = observed.conflict.expect("b was written by someone else");
        assert!(
            conflict
                .contains("parallelism of Job shop/b changed from 3 (tideshift's baseline) to 5"),
            "{conflict}"
        );
    }

    #[test]
    fn replicas_spread_over_jobs_in_order() {
        assert_eq!(spread(7, 3), vec![3, 2, 2]);
        assert_eq!(spread(0, 2), vec![0, 0]);
        assert!(spread(4, 0).is_empty());
    }
}
