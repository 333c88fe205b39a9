//! Reading targets: the workload objects (a Deployment, a StatefulSet, the Jobs of a
//! selector), the HPAs that would fight over them, their pods and the Nodes' capacity.

use super::*;

/// One object that holds (a share of) a target's replicas, as read.
#[derive(Clone, Debug, PartialEq)]
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

/// What a read takes from one Deployment, StatefulSet or Job. An answer of the API server is
/// reduced to it on arrival, and a watched view keeps only this of each object: a few hundred
/// bytes where the object (its pod template's containers alone) takes kilobytes.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct WorkloadObject {
    pub(super) object: ObjectRead,
    pub(super) ready: u32,
    /// Requests of one of its pods.
    pub(super) pod: Option<Resources>,
    pub(super) selector: Option<LabelSelector>,
}

impl WorkloadObject {
    fn new(
        meta: &ObjectMeta,
        kind: WorkloadKind,
        replicas: u32,
        ready: Option<i32>,
        pod: Option<&k8s_openapi::api::core::v1::PodSpec>,
        selector: Option<LabelSelector>,
    ) -> Self {
        Self {
            object: ObjectRead {
                name: meta.name.clone().unwrap_or_default(),
                replicas,
                resource_version: meta.resource_version.clone(),
                last_writer: last_writer(meta, replica_fields(kind)),
            },
            ready: to_u32(ready, 0),
            pod: pod.and_then(pod_requests),
            selector,
        }
    }

    pub(super) fn deployment(d: &Deployment) -> Self {
        Self::new(
            &d.metadata,
            WorkloadKind::Deployment,
            to_u32(d.spec.replicas, 1),
            d.status.as_ref().and_then(|s| s.ready_replicas),
            d.spec.template.spec.as_ref(),
            Some(d.spec.selector.clone()),
        )
    }

    pub(super) fn statefulset(s: &StatefulSet) -> Self {
        Self::new(
            &s.metadata,
            WorkloadKind::StatefulSet,
            to_u32(s.spec.replicas, 1),
            s.status.as_ref().and_then(|s| s.ready_replicas),
            s.spec.template.spec.as_ref(),
            Some(s.spec.selector.clone()),
        )
    }

    pub(super) fn job(j: &Job) -> Self {
        let spec = j.spec.as_ref();
        Self::new(
            &j.metadata,
            WorkloadKind::Job,
            job_replicas(j),
            j.status.as_ref().and_then(|s| s.ready),
            spec.and_then(|s| s.template.spec.as_ref()),
            spec.and_then(|s| s.selector.clone()),
        )
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

impl Read {
    /// A target held by these objects (one Deployment or StatefulSet, or the Jobs of a target):
    /// their replicas add up, and its pod is the largest of theirs per resource.
    pub(super) fn of(objects: impl IntoIterator<Item = WorkloadObject>) -> Self {
        let mut read = Read {
            replicas: 0,
            ready: 0,
            pod: None,
            selectors: Vec::new(),
            objects: Vec::new(),
        };
        for object in objects {
            read.replicas += object.object.replicas;
            read.ready += object.ready;
            read.pod = larger_pod(read.pod, object.pod);
            read.selectors.extend(object.selector);
            read.objects.push(object.object);
        }
        read
    }
}

/// The conflict an HPA on the target makes.
pub(super) fn autoscaler_reason(target: &Target, hpa: Option<&str>) -> String {
    format!(
        "HorizontalPodAutoscaler {}/{} scales {target}",
        target.namespace,
        hpa.unwrap_or("?")
    )
}

/// What a Node offers the policies that select it: its allocatable CPU and memory, unless it
/// is cordoned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct NodeCapacity {
    pub(super) schedulable: bool,
    pub(super) allocatable: Resources,
}

impl NodeCapacity {
    pub(super) fn of(node: &Node) -> Self {
        use crate::policy::units::parse_quantity;
        let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
        let quantity = |resource: &str| {
            allocatable
                .and_then(|a| a.get(resource))
                .and_then(|q| parse_quantity(&q.0).ok())
                .unwrap_or(0.0)
        };
        Self {
            schedulable: !node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
            allocatable: Resources {
                cpu: quantity("cpu"),
                memory: quantity("memory"),
            },
        }
    }
}

/// What the schedulable ones of `nodes` offer: the sum of their allocatable CPU and memory.
pub(super) fn schedulable_allocatable(nodes: impl IntoIterator<Item = NodeCapacity>) -> Resources {
    let mut total = Resources::default();
    for node in nodes.into_iter().filter(|n| n.schedulable) {
        total.cpu += node.allocatable.cpu;
        total.memory += node.allocatable.memory;
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
                Ok(Read::of([WorkloadObject::deployment(&object)]))
            }
            WorkloadKind::StatefulSet => {
                let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &target.namespace);
                let object = self
                    .request(target, "get", api.get(self.name(target)?))
                    .await?;
                Ok(Read::of([WorkloadObject::statefulset(&object)]))
            }
            WorkloadKind::Job => Ok(Read::of(
                self.jobs(target).await?.iter().map(WorkloadObject::job),
            )),
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
                .map(|hpa| autoscaler_reason(target, hpa.metadata.name.as_deref()))
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
        Ok(schedulable_allocatable(
            nodes.items.iter().map(NodeCapacity::of),
        ))
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
