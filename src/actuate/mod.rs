//! Where replica counts go. One trait, one file per implementation.
//!
//! The controller observes every workload of a policy, plans, and then applies the plan's
//! shrinks, waits until the shrunk pods are really gone (the capacity is free), and only then
//! applies the grows. An actuator never decides; it reads and writes, and reports another
//! writer (an HPA, a person with `kubectl scale`) as a conflict instead of fighting it.

pub mod kubernetes;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::plan::Resources;
use crate::policy::WorkloadKind;

/// A policy's target resolved to a namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub kind: WorkloadKind,
    pub namespace: String,
    /// Object name; `None` for a Job selector.
    pub name: Option<String>,
    /// Job label selector: every matching Job carries a share of the replicas.
    pub selector: Option<BTreeMap<String, String>>,
}

impl Target {
    pub fn from_ref(target: &crate::policy::TargetRef, policy_namespace: &str) -> Self {
        Self {
            kind: target.kind,
            namespace: target
                .namespace
                .clone()
                .unwrap_or_else(|| policy_namespace.to_string()),
            name: target.name.clone(),
            selector: target.selector.clone(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::Job => "Job",
        };
        match (&self.name, &self.selector) {
            (Some(name), _) => write!(f, "{kind} {}/{name}", self.namespace),
            (None, Some(selector)) => {
                let labels: Vec<String> =
                    selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "{kind} {}/[{}]", self.namespace, labels.join(","))
            }
            (None, None) => write!(f, "{kind} {}/?", self.namespace),
        }
    }
}

/// What a workload looks like now.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// Replicas asked for (spec; for Jobs the parallelism, 0 when suspended).
    pub replicas: u32,
    /// Pods ready.
    pub ready: u32,
    /// Requests of one pod from the pod template, when it sets any.
    pub pod: Option<Resources>,
    /// Another writer owns the replicas: why, in one line.
    pub conflict: Option<String>,
}

/// Asked right before every write, with the longest time the write may take: whether it may be
/// sent now, or why not.
pub type Fence<'a> = &'a (dyn Fn(Duration) -> Result<(), WriteRefused> + Send + Sync);

/// Why a fence refused a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteRefused {
    /// Leadership is lost, or could run out before the write is done: a deposed leader must
    /// never write.
    LeadershipLost,
    /// The policy changed (a newer generation, or deleted) since the cycle began: its plan
    /// was made on a spec the user has replaced, and the next cycle plans on the new one.
    PolicyChanged,
}

/// What an actuator knows of a target's writers: kept in the policy's status, so that a
/// successor (after a restart or a failover) knows it too.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriterMemory {
    /// Per object (the workload, or each Job of a selector): the replicas tideshift last wrote
    /// or saw and agreed with. A different value written by someone else is a conflict.
    pub written: BTreeMap<String, u32>,
    /// Objects sent a scale to zero not seen to land yet, and when (Unix seconds): zero there
    /// is tideshift's too, for a while (`PENDING_ZERO_TTL`).
    pub pending_zero: BTreeMap<String, i64>,
    /// Another writer changed the target: it is left alone for the conflict hold from then.
    pub other_writer: Option<OtherWriter>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OtherWriter {
    /// Unix seconds.
    pub since: i64,
    pub reason: String,
}

/// The result of a write.
#[derive(Clone, Debug, PartialEq)]
pub enum ScaleOutcome {
    /// Written; the workload now asks for this many replicas.
    Scaled { from: u32, to: u32 },
    /// Nothing to do: it already asks for that many.
    Unchanged,
    /// Not written: another writer owns the replicas.
    Conflict(String),
    /// Not written: dry-run.
    DryRun { from: u32, to: u32 },
    /// Not written: the fence refused it (leadership lost or running out, the policy changed).
    Fenced(WriteRefused),
}

#[derive(Debug, thiserror::Error)]
pub enum ActuateError {
    #[error("{target}: not found")]
    NotFound { target: String },
    #[error("{target}: {verb} failed: {cause}")]
    Api {
        target: String,
        verb: &'static str,
        cause: String,
    },
    #[error("{target}: {message}")]
    Invalid { target: String, message: String },
}

impl ActuateError {
    /// The Kubernetes verb, for `tideshift_kube_api_errors_total{verb}`.
    /// The API verbs the daemon's errors are counted by; each counter starts at 0.
    pub const VERBS: &'static [&'static str] = &["get", "list", "patch", "update", "create"];

    pub fn verb(&self) -> &'static str {
        match self {
            ActuateError::NotFound { .. } => "get",
            ActuateError::Api { verb, .. } => verb,
            ActuateError::Invalid { .. } => "get",
        }
    }
}

/// An extension point: something that holds replica counts.
pub trait Actuator: Send + Sync {
    fn observe<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Observed, ActuateError>>;

    /// Ask for `replicas`. Refuses (returns `Conflict`) when another writer owns the target,
    /// and sends nothing (returns `Fenced`) unless `fence` allows it right before sending.
    fn scale<'a>(
        &'a self,
        target: &'a Target,
        replicas: u32,
        fence: Fence<'a>,
    ) -> BoxFuture<'a, Result<ScaleOutcome, ActuateError>>;

    /// Pods of the target that still exist and hold capacity (including terminating ones).
    fn pods_holding_capacity<'a>(
        &'a self,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<u32, ActuateError>>;

    /// Allocatable CPU and memory of the Nodes with these labels.
    fn node_capacity<'a>(
        &'a self,
        selector: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<Resources, ActuateError>> {
        async move {
            Err(ActuateError::Invalid {
                target: format!("Nodes {selector:?}"),
                message: "this actuator cannot read Nodes".into(),
            })
        }
        .boxed()
    }

    /// What is known of the target's writers, to keep where a successor finds it.
    fn writers(&self, _target: &Target) -> Option<WriterMemory> {
        None
    }

    /// Take over what a predecessor knew of the target's writers (from the policy's status).
    fn remember_writers(&self, _target: &Target, _memory: WriterMemory) {}

    /// Take the replicas last observed of the target's objects that tideshift has not written
    /// as its baseline, so that a later change by someone else is another writer even before
    /// tideshift first writes. Called for policies that write (not in dry-run, where nothing is
    /// tideshift's and a person scaling a workload fights no one).
    fn adopt(&self, _target: &Target) {}
}

/// Reads through to `inner`, writes nothing: `mode: dry-run`.
pub struct DryRun<'i>(pub &'i dyn Actuator);

impl Actuator for DryRun<'_> {
    fn observe<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Observed, ActuateError>> {
        self.0.observe(target)
    }

    fn scale<'a>(
        &'a self,
        target: &'a Target,
        replicas: u32,
        _fence: Fence<'a>,
    ) -> BoxFuture<'a, Result<ScaleOutcome, ActuateError>> {
        async move {
            let observed = self.0.observe(target).await?;
            if let Some(conflict) = observed.conflict {
                return Ok(ScaleOutcome::Conflict(conflict));
            }
            if observed.replicas == replicas {
                return Ok(ScaleOutcome::Unchanged);
            }
            Ok(ScaleOutcome::DryRun {
                from: observed.replicas,
                to: replicas,
            })
        }
        .boxed()
    }

    fn pods_holding_capacity<'a>(
        &'a self,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<u32, ActuateError>> {
        self.0.pods_holding_capacity(target)
    }

    fn node_capacity<'a>(
        &'a self,
        selector: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<Resources, ActuateError>> {
        self.0.node_capacity(selector)
    }

    fn writers(&self, target: &Target) -> Option<WriterMemory> {
        self.0.writers(target)
    }
}

/// Sum of container requests of a pod as the scheduler counts them: the larger of the
/// regular containers' sum and the largest init container, plus the pod overhead.
pub fn pod_requests(spec: &k8s_openapi::api::core::v1::PodSpec) -> Option<Resources> {
    use crate::policy::units::parse_quantity;
    fn requests(container: &k8s_openapi::api::core::v1::Container, resource: &str) -> Option<f64> {
        let quantity = container
            .resources
            .as_ref()?
            .requests
            .as_ref()?
            .get(resource)
            .or_else(|| container.resources.as_ref()?.limits.as_ref()?.get(resource))?;
        parse_quantity(&quantity.0).ok()
    }
    let mut any = false;
    let mut total = Resources::default();
    for container in &spec.containers {
        if let Some(cpu) = requests(container, "cpu") {
            total.cpu += cpu;
            any = true;
        }
        if let Some(memory) = requests(container, "memory") {
            total.memory += memory;
            any = true;
        }
    }
    for container in spec.init_containers.iter().flatten() {
        let restartable_sidecar = container.restart_policy.as_deref() == Some("Always");
        let cpu = requests(container, "cpu").unwrap_or(0.0);
        let memory = requests(container, "memory").unwrap_or(0.0);
        if restartable_sidecar {
            total.cpu += cpu;
            total.memory += memory;
        } else {
            total.cpu = total.cpu.max(cpu);
            total.memory = total.memory.max(memory);
        }
        any |= cpu > 0.0 || memory > 0.0;
    }
    if let Some(overhead) = &spec.overhead {
        if let Some(cpu) = overhead.get("cpu").and_then(|q| parse_quantity(&q.0).ok()) {
            total.cpu += cpu;
        }
        if let Some(memory) = overhead
            .get("memory")
            .and_then(|q| parse_quantity(&q.0).ok())
        {
            total.memory += memory;
        }
    }
    any.then_some(total)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;

    fn container(cpu: &str, memory: &str) -> Container {
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: Some(
                    [
                        ("cpu".to_string(), Quantity(cpu.into())),
                        ("memory".to_string(), Quantity(memory.into())),
                    ]
                    .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_requests_follow_the_scheduler() {
        let spec = PodSpec {
            containers: vec![container("500m", "1Gi"), container("250m", "512Mi")],
            init_containers: Some(vec![container("2", "128Mi")]),
            ..Default::default()
        };
        let pod = pod_requests(&spec).unwrap();
        assert_eq!(pod.cpu, 2.0, "init container larger than the sum");
        assert_eq!(pod.memory, 1.5 * 1024.0 * 1024.0 * 1024.0);
        assert_eq!(
            pod_requests(&PodSpec {
                containers: vec![Container::default()],
                ..Default::default()
            }),
            None
        );
    }

    #[test]
    fn targets_read_like_kubectl() {
        let target = Target {
            kind: WorkloadKind::Job,
            namespace: "batch".into(),
            name: None,
            selector: Some([("team".to_string(), "finance".to_string())].into()),
        };
        assert_eq!(target.to_string(), "Job batch/[team=finance]");
    }
}
