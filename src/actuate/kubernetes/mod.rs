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
//!
//! `cache.rs` holds the watched views cycles read from; `read.rs` reads targets, HPAs, pods and
//! Nodes (from the views where they can say); `writers.rs` keeps who writes each target;
//! `write.rs` writes.

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
    ActuateError, Actuator, Fence, Observed, OtherWriter, ScaleOutcome, Target, WriteRefused,
    WriterMemory, pod_requests,
};
use crate::plan::Resources;
use crate::policy::WorkloadKind;

mod cache;
mod read;
#[cfg(test)]
mod tests;
mod write;
mod writers;

pub use cache::WorkloadCache;
use read::*;
pub use write::spread;
use writers::*;

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

/// The HPAs of one namespace, listed at most every `HPA_CACHE_TTL`.
type HpaList = tokio::sync::Mutex<Option<(Instant, Vec<HorizontalPodAutoscaler>)>>;

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
    /// Watched views of the workloads and HPAs that cycles read instead of the API server.
    cache: Option<WorkloadCache>,
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

fn kind_name(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
        WorkloadKind::Job => "Job",
    }
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
            cache: None,
        }
    }

    /// Read what cycles observe from these watched views (see `cache.rs`).
    pub fn with_cache(mut self, cache: WorkloadCache) -> Self {
        self.cache = Some(cache);
        self
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
            written: entry
                .written
                .iter()
                .filter(|(name, _)| !entry.adopted.contains(*name))
                .map(|(name, &replicas)| (name.clone(), replicas))
                .collect(),
            pending_zero: entry
                .pending_zero
                .iter()
                .map(|(object, &sent)| (object.clone(), unix_seconds(sent)))
                .collect(),
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
            if !entry.written.contains_key(name) {
                entry.written.insert(name.clone(), replicas);
                entry.adopted.insert(name.clone());
            }
        }
    }

    fn remember_writers(&self, target: &Target, remembered: WriterMemory) {
        let mut memory = self.lock_memory();
        let entry = memory.entry(target.to_string()).or_default();
        entry.written = remembered.written;
        entry.pending_zero = remembered
            .pending_zero
            .into_iter()
            .map(|(object, sent)| (object, from_unix_seconds(sent)))
            .collect();
        entry.adopted.clear();
        entry.conflict = remembered.other_writer.map(|other| Conflict {
            since: from_unix_seconds(other.since),
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
