//! Reading targets: the workload objects (a Deployment, a StatefulSet, the Jobs of a
//! selector), the HPAs that would fight over them, their pods and the Nodes' capacity.

use k8s_openapi::api::core::v1::PodTemplateSpec;

use super::*;

/// One object that holds (a share of) a target's replicas, as read.
#[derive(Clone, Debug)]
pub(super) struct ObjectRead {
    pub(super) name: String,
    pub(super) replicas: u32,
    /// The write's precondition.
    pub(super) resource_version: Option<String>,
    /// The field manager that last wrote the replica fields (`managedFields`).
    pub(super) last_writer: Option<String>,
}

/// A workload as read from the API.
pub(super) struct Read {
    pub(super) replicas: u32,
    pub(super) ready: u32,
    /// Requests of one pod; for several Jobs, the largest of each resource.
    pub(super) pod: Option<Resources>,
    /// Pod selectors: one per object.
    pub(super) selectors: Vec<LabelSelector>,
    pub(super) objects: Vec<ObjectRead>,
}

pub(super) fn to_u32(value: Option<i32>, default: u32) -> u32 {
    value.map_or(default, |v| v.max(0) as u32)
}

pub(super) fn job_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

pub(super) fn job_replicas(job: &Job) -> u32 {
    let spec = job.spec.as_ref();
    if spec.and_then(|s| s.suspend).unwrap_or(false) {
        0
    } else {
        to_u32(spec.and_then(|s| s.parallelism), 1)
    }
}

/// The fields under `spec` that hold a kind's replicas.
pub(super) fn replica_fields(kind: WorkloadKind) -> &'static [&'static str] {
    match kind {
        WorkloadKind::Deployment | WorkloadKind::StatefulSet => &["f:replicas"],
        WorkloadKind::Job => &["f:parallelism", "f:suspend"],
    }
}

/// The field manager that last wrote any of `fields` under `spec`: of the `managedFields`
/// entries owning one, the most recent (on a tie, one that is not tideshift: the safe side).
pub(super) fn last_writer(meta: &ObjectMeta, fields: &[&str]) -> Option<String> {
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

pub(super) fn object_read(meta: &ObjectMeta, kind: WorkloadKind, replicas: u32) -> ObjectRead {
    ObjectRead {
        name: meta.name.clone().unwrap_or_default(),
        replicas,
        resource_version: meta.resource_version.clone(),
        last_writer: last_writer(meta, replica_fields(kind)),
    }
}

/// Per resource, the larger of two pods' requests.
pub(super) fn larger_pod(a: Option<Resources>, b: Option<Resources>) -> Option<Resources> {
    match (a, b) {
        (Some(a), Some(b)) => Some(Resources {
            cpu: a.cpu.max(b.cpu),
            memory: a.memory.max(b.memory),
        }),
        (a, b) => a.or(b),
    }
}

/// A Deployment or a StatefulSet: one object that holds all of the target's replicas.
pub(super) fn single(
    target: &Target,
    meta: &ObjectMeta,
    replicas: Option<i32>,
    ready: Option<i32>,
    template: PodTemplateSpec,
    selector: LabelSelector,
) -> Read {
    let replicas = to_u32(replicas, 1);
    Read {
        replicas,
        ready: to_u32(ready, 0),
        pod: template.spec.as_ref().and_then(pod_requests),
        selectors: vec![selector],
        objects: vec![object_read(meta, target.kind, replicas)],
    }
}

/// The Jobs of a target (a named Job, or those a selector matches): their replicas add up.
pub(super) fn jobs_read(target: &Target, jobs: Vec<Job>) -> Read {
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
            read.pod = larger_pod(read.pod, spec.template.spec.as_ref().and_then(pod_requests));
            read.selectors.extend(spec.selector);
        }
    }
    read
}

/// The conflict an HPA on the target makes.
pub(super) fn autoscaler_reason(target: &Target, hpa: &HorizontalPodAutoscaler) -> String {
    format!(
        "HorizontalPodAutoscaler {}/{} scales {target}",
        target.namespace,
        hpa.metadata.name.as_deref().unwrap_or("?")
    )
}

/// What the schedulable ones of `nodes` offer: the sum of their allocatable CPU and memory.
pub(super) fn schedulable_allocatable<'a>(nodes: impl Iterator<Item = &'a Node>) -> Resources {
    use crate::policy::units::parse_quantity;
    let mut total = Resources::default();
    for node in nodes {
        let unschedulable = node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        if unschedulable {
            continue;
        }
        let Some(allocatable) = node.status.as_ref().and_then(|s| s.allocatable.as_ref()) else {
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
    total
}

impl KubeActuator {
    pub(super) async fn jobs(&self, target: &Target) -> Result<Vec<Job>, ActuateError> {
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

    pub(super) async fn read(&self, target: &Target) -> Result<Read, ActuateError> {
        match target.kind {
            WorkloadKind::Deployment => {
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), &target.namespace);
                let object = self
                    .request(target, "get", api.get(self.name(target)?))
                    .await?;
                let ready = object.status.and_then(|s| s.ready_replicas);
                let spec = object.spec;
                Ok(single(
                    target,
                    &object.metadata,
                    spec.replicas,
                    ready,
                    spec.template,
                    spec.selector,
                ))
            }
            WorkloadKind::StatefulSet => {
                let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &target.namespace);
                let object = self
                    .request(target, "get", api.get(self.name(target)?))
                    .await?;
                let ready = object.status.and_then(|s| s.ready_replicas);
                let spec = object.spec;
                Ok(single(
                    target,
                    &object.metadata,
                    spec.replicas,
                    ready,
                    spec.template,
                    spec.selector,
                ))
            }
            WorkloadKind::Job => Ok(jobs_read(target, self.jobs(target).await?)),
        }
    }

    /// The HPA that scales this target, if any. An HPA cannot target a Job.
    pub(super) async fn autoscaler(&self, target: &Target) -> Result<Option<String>, ActuateError> {
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
                .map(|hpa| autoscaler_reason(target, hpa))
        }))
    }

    /// The target and its conflict, if any. `live`: read from the API server (a write's
    /// precondition); otherwise from the watched views where they can say. A view that
    /// disagrees with tideshift's baseline is checked against the server: a lagging watch still
    /// shows the replicas from before tideshift's own last write.
    pub(super) async fn observe_read(
        &self,
        target: &Target,
        live: bool,
    ) -> Result<(Read, Option<String>), ActuateError> {
        let cached = match (&self.cache, live) {
            (Some(cache), false) => cache.read(target),
            _ => None,
        };
        let read = match cached {
            Some(read) if !self.disagrees_with_baseline(target, &read) => read,
            _ => self.read(target).await?,
        };
        let autoscaler = match self.cache.as_ref().and_then(|c| c.autoscaler(target)) {
            Some(autoscaler) => autoscaler,
            None => self.autoscaler(target).await?,
        };
        let conflict = self.judge(target, &read, autoscaler);
        Ok((read, conflict))
    }

    pub(super) async fn observe_target(&self, target: &Target) -> Result<Observed, ActuateError> {
        let (read, conflict) = self.observe_read(target, false).await?;
        Ok(Observed {
            replicas: read.replicas,
            ready: read.ready,
            pod: read.pod,
            conflict,
        })
    }

    pub(super) async fn nodes_allocatable(
        &self,
        selector: &BTreeMap<String, String>,
    ) -> Result<Resources, ActuateError> {
        if let Some(total) = self
            .cache
            .as_ref()
            .and_then(|c| c.nodes_allocatable(selector))
        {
            return Ok(total);
        }
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
        Ok(schedulable_allocatable(nodes.items.iter()))
    }

    /// Pods holding capacity over every object of the target (each Job of a selector has its
    /// own pods), each pod counted once.
    pub(super) async fn count_pods(&self, target: &Target) -> Result<u32, ActuateError> {
        // The pod selectors: from the view when it can say (they do not change with a scale).
        let read = match self.cache.as_ref().and_then(|cache| cache.read(target)) {
            Some(read) => read,
            None => self.read(target).await?,
        };
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
