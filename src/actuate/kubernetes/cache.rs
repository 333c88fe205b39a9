//! Watch-backed views of what every cycle reads: the Deployments, StatefulSets, Jobs and HPAs of
//! the watched namespaces, and the Nodes once a policy takes its capacity from a node selector
//! (kube-runtime reflectors), trimmed to what the daemon uses (replicas, readiness, pod
//! requests, selectors, the managers of the replica fields, an HPA's target, a Node's labels
//! and allocatable), so that a cycle reads no object from the API server and the stores stay
//! small.
//!
//! Pods are not watched: the daemon counts a target's pods only while it waits for a shrink to
//! free capacity, a few cycles per shift, and a watch would hold every pod of the namespaces.
//!
//! A view is used only once its first list is in, and only for namespaces it watches; any other
//! read goes to the API server as before. Writes always do: the write path reads the object
//! again and sends the patch conditional on that read. A watch may lag behind the server (an API
//! server restart, a slow watch), so a foreign write the view suggests is confirmed with a read
//! from the server before it becomes a conflict (`KubeActuator::observe_read`).

use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use super::*;

/// Objects per page of a view's list (kube-runtime's default is 500).
const LIST_PAGE: u32 = 100;

/// The reflectors of one namespace, or of the whole cluster (`namespace: None`).
struct Scope {
    namespace: Option<String>,
    deployments: View<Deployment>,
    statefulsets: View<StatefulSet>,
    jobs: View<Job>,
    hpas: View<HorizontalPodAutoscaler>,
}

/// One reflector's store, and whether it is current: its list is in and its watch is
/// delivering. It is not between a watch error and the next event, nor while a new list is
/// being read after one (the store still holds the old list then).
struct View<K: kube::Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    current: Arc<AtomicBool>,
}

impl<K> View<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    /// Start the reflector on `api`; `trim` keeps only what the daemon reads of each object.
    fn start(api: Api<K>, what: &'static str, scope: String, trim: fn(&mut K)) -> Self {
        let (store, writer) = reflector::store();
        let current = Arc::new(AtomicBool::new(false));
        let flag = current.clone();
        // Lists come in pages of `LIST_PAGE`: a page is held whole, untrimmed, while it is read.
        let config = watcher::Config::default().page_size(LIST_PAGE);
        let stream = watcher(api, config)
            .default_backoff()
            .modify(trim)
            .reflect(writer);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut failing = false;
            while let Some(item) = stream.next().await {
                match item {
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {
                        flag.store(false, Ordering::Release);
                    }
                    Ok(_) => {
                        if failing {
                            failing = false;
                            tracing::info!(%scope, kind = what, "watch recovered");
                        }
                        flag.store(true, Ordering::Release);
                    }
                    Err(error) => {
                        flag.store(false, Ordering::Release);
                        if !failing {
                            // Reads go to the API server meanwhile.
                            failing = true;
                            tracing::warn!(%scope, kind = what, %error, "watch failed; reading from the API server until it recovers");
                        }
                    }
                }
            }
        });
        Self { store, current }
    }

    /// A view that holds `objects` and is current, with the writer that changes it (a watch
    /// that delivers when the test says so).
    #[cfg(test)]
    pub(super) fn fixed(objects: Vec<K>) -> (Self, reflector::store::Writer<K>) {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Init);
        for object in objects {
            writer.apply_watcher_event(&watcher::Event::InitApply(object));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let current = Arc::new(AtomicBool::new(true));
        (Self { store, current }, writer)
    }

    fn ready(&self) -> Option<&Store<K>> {
        self.current.load(Ordering::Acquire).then_some(&self.store)
    }
}

/// The watched workloads of the daemon's namespaces (or of all namespaces).
pub struct WorkloadCache {
    scopes: Vec<Scope>,
    client: kube::Client,
    /// Started by the first policy that asks for node capacity: most policies never do, and
    /// the chart grants Node reads only when asked (`rbac.readNodes`).
    nodes: std::sync::OnceLock<View<Node>>,
}

impl WorkloadCache {
    /// Start watching `namespaces` (all namespaces when empty). Must run inside a tokio runtime.
    pub fn start(client: &kube::Client, namespaces: &[String]) -> Self {
        let scopes: Vec<Option<String>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().cloned().map(Some).collect()
        };
        let scopes = scopes
            .into_iter()
            .map(|namespace| {
                let label = namespace.clone().unwrap_or_else(|| "(all)".into());
                Scope {
                    deployments: View::start(
                        api(client, &namespace),
                        "Deployment",
                        label.clone(),
                        trim_deployment,
                    ),
                    statefulsets: View::start(
                        api(client, &namespace),
                        "StatefulSet",
                        label.clone(),
                        trim_statefulset,
                    ),
                    jobs: View::start(api(client, &namespace), "Job", label.clone(), trim_job),
                    hpas: View::start(
                        api(client, &namespace),
                        "HorizontalPodAutoscaler",
                        label,
                        trim_hpa,
                    ),
                    namespace,
                }
            })
            .collect();
        Self {
            scopes,
            client: client.clone(),
            nodes: std::sync::OnceLock::new(),
        }
    }

    /// What the schedulable Nodes with these labels offer, as the view holds them; `None` while
    /// it cannot say (the first call starts the watch).
    pub(super) fn nodes_allocatable(
        &self,
        selector: &BTreeMap<String, String>,
    ) -> Option<Resources> {
        let view = self.nodes.get_or_init(|| {
            View::start(
                Api::all(self.client.clone()),
                "Node",
                "(cluster)".into(),
                trim_node,
            )
        });
        let store = view.ready()?;
        let nodes = store.state();
        Some(schedulable_allocatable(
            nodes
                .iter()
                .filter(|node| selects(selector, node.metadata.labels.as_ref()))
                .map(|node| node.as_ref()),
        ))
    }

    /// Views of one namespace that hold these Deployments and no other object, and are
    /// current; the writer changes the Deployments' view.
    #[cfg(test)]
    pub(super) fn fixed(
        client: kube::Client,
        namespace: &str,
        deployments: Vec<Deployment>,
    ) -> (Self, reflector::store::Writer<Deployment>) {
        let (deployments, writer) = View::fixed(deployments);
        let scope = Scope {
            namespace: Some(namespace.to_string()),
            deployments,
            statefulsets: View::fixed(Vec::new()).0,
            jobs: View::fixed(Vec::new()).0,
            hpas: View::fixed(Vec::new()).0,
        };
        let cache = Self {
            scopes: vec![scope],
            client,
            nodes: std::sync::OnceLock::new(),
        };
        (cache, writer)
    }

    fn scope(&self, namespace: &str) -> Option<&Scope> {
        self.scopes
            .iter()
            .find(|s| s.namespace.as_deref().is_none_or(|n| n == namespace))
    }

    /// The target as the views hold it; `None` when they cannot say (not watched, first list
    /// not in yet, or the object not in the view: it may be new).
    pub(super) fn read(&self, target: &Target) -> Option<Read> {
        let scope = self.scope(&target.namespace)?;
        match target.kind {
            WorkloadKind::Deployment => view_single(&scope.deployments, target, |d| {
                let ready = d.status.as_ref().and_then(|s| s.ready_replicas);
                (
                    &d.metadata,
                    d.spec.replicas,
                    ready,
                    &d.spec.template,
                    &d.spec.selector,
                )
            }),
            WorkloadKind::StatefulSet => view_single(&scope.statefulsets, target, |s| {
                let ready = s.status.as_ref().and_then(|s| s.ready_replicas);
                (
                    &s.metadata,
                    s.spec.replicas,
                    ready,
                    &s.spec.template,
                    &s.spec.selector,
                )
            }),
            WorkloadKind::Job => {
                let store = scope.jobs.ready()?;
                let jobs: Vec<Job> = match (&target.name, &target.selector) {
                    (Some(name), _) => {
                        let reference = ObjectRef::new(name).within(&target.namespace);
                        vec![store.get(&reference)?.as_ref().clone()]
                    }
                    (None, Some(selector)) if !selector.is_empty() => {
                        let mut jobs: Vec<Job> = store
                            .state_filter(|job| {
                                job.metadata.namespace.as_deref() == Some(&target.namespace)
                                    && selects(selector, job.metadata.labels.as_ref())
                                    && !job_finished(job)
                            })
                            .iter()
                            .map(|job| job.as_ref().clone())
                            .collect();
                        jobs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
                        jobs
                    }
                    _ => return None,
                };
                Some(jobs_read(target, jobs))
            }
        }
    }

    /// The HPA that scales this target, as the view holds them; `None` when it cannot say.
    pub(super) fn autoscaler(&self, target: &Target) -> Option<Option<String>> {
        let Some(name) = &target.name else {
            return Some(None);
        };
        if target.kind == WorkloadKind::Job {
            return Some(None);
        }
        let store = self.scope(&target.namespace)?.hpas.ready()?;
        let kind = kind_name(target.kind);
        Some(
            store
                .find(|hpa| {
                    hpa.metadata.namespace.as_deref() == Some(&target.namespace)
                        && hpa.spec.scale_target_ref.kind == kind
                        && &hpa.spec.scale_target_ref.name == name
                })
                .map(|hpa| autoscaler_reason(target, &hpa)),
        )
    }
}

/// The parts of a Deployment or StatefulSet that `single` reads.
type SingleParts<'a> = (
    &'a ObjectMeta,
    Option<i32>,
    Option<i32>,
    &'a PodTemplateSpec,
    &'a LabelSelector,
);

/// A Deployment or StatefulSet target as its view holds it.
fn view_single<K>(
    view: &View<K>,
    target: &Target,
    parts: impl Fn(&K) -> SingleParts<'_>,
) -> Option<Read>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let reference = ObjectRef::new(target.name.as_deref()?).within(&target.namespace);
    let object = view.ready()?.get(&reference)?;
    let (meta, replicas, ready, template, selector) = parts(&object);
    Some(single(
        target,
        meta,
        replicas,
        ready,
        template.clone(),
        selector.clone(),
    ))
}

fn api<K>(client: &kube::Client, namespace: &Option<String>) -> Api<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Every label of the selector is on the object.
fn selects(selector: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// What `last_writer` reads of `managedFields`: each entry's manager, time and whether it owns
/// a replica field, nothing else of the (large) field sets.
fn trim_managed_fields(meta: &mut ObjectMeta, kind: WorkloadKind) {
    let fields = replica_fields(kind);
    meta.annotations = None;
    meta.managed_fields = meta.managed_fields.take().map(|entries| {
        entries
            .into_iter()
            .filter_map(|entry| {
                let owned: serde_json::Map<String, serde_json::Value> = entry
                    .fields_v1
                    .as_ref()
                    .and_then(|f| f.0.get("f:spec"))
                    .and_then(|spec| spec.as_object())
                    .map(|spec| {
                        spec.iter()
                            .filter(|(k, _)| fields.contains(&k.as_str()))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                if owned.is_empty() {
                    return None;
                }
                Some(ManagedFieldsEntry {
                    manager: entry.manager,
                    time: entry.time,
                    fields_v1: Some(FieldsV1(serde_json::json!({ "f:spec": owned }))),
                    ..Default::default()
                })
            })
            .collect()
    });
}

/// What `pod_requests` reads of a pod template: each container's resources.
fn trim_template(template: &mut PodTemplateSpec) {
    template.metadata = None;
    let containers = |list: Vec<Container>| -> Vec<Container> {
        list.into_iter()
            .map(|c| Container {
                name: c.name,
                resources: c.resources,
                restart_policy: c.restart_policy,
                ..Default::default()
            })
            .collect()
    };
    template.spec = template.spec.take().map(|spec| PodSpec {
        containers: containers(spec.containers),
        init_containers: spec.init_containers.map(containers),
        overhead: spec.overhead,
        ..Default::default()
    });
}

fn trim_deployment(d: &mut Deployment) {
    trim_managed_fields(&mut d.metadata, WorkloadKind::Deployment);
    d.metadata.labels = None;
    trim_template(&mut d.spec.template);
    d.status = d
        .status
        .take()
        .map(|s| k8s_openapi::api::apps::v1::DeploymentStatus {
            ready_replicas: s.ready_replicas,
            ..Default::default()
        });
}

fn trim_statefulset(s: &mut StatefulSet) {
    trim_managed_fields(&mut s.metadata, WorkloadKind::StatefulSet);
    s.metadata.labels = None;
    trim_template(&mut s.spec.template);
    s.spec.volume_claim_templates = None;
    s.status = s
        .status
        .take()
        .map(|st| k8s_openapi::api::apps::v1::StatefulSetStatus {
            ready_replicas: st.ready_replicas,
            replicas: st.replicas,
            ..Default::default()
        });
}

fn trim_job(j: &mut Job) {
    // Labels stay: a selector target finds its Jobs by them.
    trim_managed_fields(&mut j.metadata, WorkloadKind::Job);
    if let Some(spec) = j.spec.as_mut() {
        trim_template(&mut spec.template);
    }
    j.status = j
        .status
        .take()
        .map(|s| k8s_openapi::api::batch::v1::JobStatus {
            ready: s.ready,
            conditions: s.conditions.map(|conditions| {
                conditions
                    .into_iter()
                    .filter(|c| c.type_ == "Complete" || c.type_ == "Failed")
                    .map(|c| k8s_openapi::api::batch::v1::JobCondition {
                        type_: c.type_,
                        status: c.status,
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        });
}

fn trim_node(n: &mut Node) {
    // Labels stay: a policy selects its Nodes by them.
    n.metadata.annotations = None;
    n.metadata.managed_fields = None;
    n.spec = n
        .spec
        .take()
        .map(|spec| k8s_openapi::api::core::v1::NodeSpec {
            unschedulable: spec.unschedulable,
            ..Default::default()
        });
    n.status = n
        .status
        .take()
        .map(|status| k8s_openapi::api::core::v1::NodeStatus {
            allocatable: status.allocatable.map(|mut allocatable| {
                allocatable.retain(|resource, _| resource == "cpu" || resource == "memory");
                allocatable
            }),
            ..Default::default()
        });
}

fn trim_hpa(h: &mut HorizontalPodAutoscaler) {
    h.metadata.annotations = None;
    h.metadata.labels = None;
    h.metadata.managed_fields = None;
    h.spec.metrics = None;
    h.spec.behavior = None;
    h.status = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_keeps_what_the_daemon_reads() {
        let mut deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "payment", "namespace": "shop", "resourceVersion": "7",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "managedFields": [
                    {"manager": "kubectl", "operation": "Update", "time": "2026-11-26T08:00:00Z",
                     "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {}}}}},
                    {"manager": "kube-controller-manager", "operation": "Update",
                     "time": "2026-11-26T08:01:00Z", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:status": {"f:readyReplicas": {}}}}
                ]
            },
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "payment"}},
                "template": {
                    "metadata": {"labels": {"app": "payment"}},
                    "spec": {"containers": [{
                        "name": "app", "image": "registry.invalid/x:1",
                        "env": [{"name": "A", "value": "b"}],
                        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}}
                    }]}
                }
            },
            "status": {"readyReplicas": 2, "conditions": [{"type": "Available", "status": "True"}]}
        }))
        .expect("deployment");
        let target = Target {
            kind: WorkloadKind::Deployment,
            namespace: "shop".into(),
            name: Some("payment".into()),
            selector: None,
        };
        let before = single(
            &target,
            &deployment.metadata,
            deployment.spec.replicas,
            deployment.status.as_ref().and_then(|s| s.ready_replicas),
            deployment.spec.template.clone(),
            deployment.spec.selector.clone(),
        );
        let size_before = serde_json::to_string(&deployment).unwrap().len();
        trim_deployment(&mut deployment);
        let size_after = serde_json::to_string(&deployment).unwrap().len();
        let after = single(
            &target,
            &deployment.metadata,
            deployment.spec.replicas,
            deployment.status.as_ref().and_then(|s| s.ready_replicas),
            deployment.spec.template.clone(),
            deployment.spec.selector.clone(),
        );
        assert_eq!(
            (after.replicas, after.ready),
            (before.replicas, before.ready)
        );
        assert_eq!(after.pod, before.pod);
        assert_eq!(after.objects[0].last_writer.as_deref(), Some("kubectl"));
        assert_eq!(after.objects[0].resource_version.as_deref(), Some("7"));
        assert!(size_after < size_before, "{size_after} >= {size_before}");
        let container = &deployment.spec.template.spec.as_ref().unwrap().containers[0];
        assert!(container.env.is_none() && container.image.is_none());
    }

    #[test]
    fn a_trimmed_node_still_offers_its_allocatable_to_the_policies_that_select_it() {
        let node = |name: &str, pool: &str, unschedulable: bool| -> Node {
            let mut node: Node = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": {"pool": pool},
                             "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
                "spec": {"unschedulable": unschedulable, "podCIDR": "10.0.0.0/24"},
                "status": {
                    "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                    "images": [{"names": ["registry.invalid/x:1"], "sizeBytes": 1}]
                }
            }))
            .expect("node");
            trim_node(&mut node);
            node
        };
        let nodes = [
            node("a", "batch", false),
            node("b", "batch", false),
            node("c", "batch", true),
            node("d", "web", false),
        ];
        let selector = BTreeMap::from([("pool".to_string(), "batch".to_string())]);
        let total = schedulable_allocatable(
            nodes
                .iter()
                .filter(|n| selects(&selector, n.metadata.labels.as_ref())),
        );
        assert_eq!(total.cpu, 8.0);
        assert_eq!(total.memory, 16.0 * 1024.0 * 1024.0 * 1024.0);
        let status = nodes[0].status.as_ref().expect("status");
        assert!(status.images.is_none());
        assert_eq!(status.allocatable.as_ref().map(|a| a.len()), Some(2));
    }

    #[test]
    fn a_selector_selects_objects_with_every_label() {
        let selector = BTreeMap::from([("team".to_string(), "finance".to_string())]);
        let labels = BTreeMap::from([
            ("team".to_string(), "finance".to_string()),
            ("app".to_string(), "reports".to_string()),
        ]);
        assert!(selects(&selector, Some(&labels)));
        assert!(!selects(&selector, None));
        let other = BTreeMap::from([("team".to_string(), "payroll".to_string())]);
        assert!(!selects(&selector, Some(&other)));
    }
}
