//! Watch-backed views of what every cycle reads: the Deployments, StatefulSets, Jobs and HPAs of
//! the watched namespaces, and the Nodes once a policy takes its capacity from a node selector
//! (kube-runtime reflectors), so that a cycle reads no object from the API server. A view keeps
//! of each object only what a read takes from it (`Watched::keep`: replicas, readiness, one
//! pod's requests, the selector, the last writer of the replica fields, an HPA's target, a
//! Node's allocatable), computed once when the watch delivers the object: a few hundred bytes
//! where the object takes kilobytes.
//!
//! Pods are not watched: the daemon counts a target's pods only while it waits for a shrink to
//! free capacity, a few cycles per shift, and a watch would hold every pod of the namespaces.
//!
//! A view is used only once its first list is in, and only for namespaces it watches; any other
//! read goes to the API server as before. Writes always do: the write path reads the object
//! again and sends the patch conditional on that read. A watch may lag behind the server (an API
//! server restart, a slow watch), so a foreign write the view suggests is confirmed with a read
//! from the server before it becomes a conflict (`KubeActuator::observe_read`).

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{StreamExt, TryStreamExt};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use super::*;

/// Objects per page of a view's list (kube-runtime's default is 500).
const LIST_PAGE: u32 = 100;

/// A kind a view watches, and what the view keeps of each of its objects.
pub(super) trait Watched:
    kube::Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    type Kept: Clone + std::fmt::Debug + Send + Sync + 'static;
    /// Whether the view matches selectors on the objects' labels, and so keeps them.
    const LABELS: bool = false;
    fn keep(&self) -> Self::Kept;
}

impl Watched for Deployment {
    type Kept = WorkloadObject;
    fn keep(&self) -> WorkloadObject {
        WorkloadObject::deployment(self)
    }
}

impl Watched for StatefulSet {
    type Kept = WorkloadObject;
    fn keep(&self) -> WorkloadObject {
        WorkloadObject::statefulset(self)
    }
}

/// A Job, and whether it has finished: a selector's target leaves finished Jobs out.
impl Watched for Job {
    type Kept = (WorkloadObject, bool);
    const LABELS: bool = true;
    fn keep(&self) -> (WorkloadObject, bool) {
        (WorkloadObject::job(self), job_finished(self))
    }
}

/// The kind and name of the object an HPA scales.
impl Watched for HorizontalPodAutoscaler {
    type Kept = (String, String);
    fn keep(&self) -> (String, String) {
        let target = &self.spec.scale_target_ref;
        (target.kind.clone(), target.name.clone())
    }
}

impl Watched for Node {
    type Kept = NodeCapacity;
    const LABELS: bool = true;
    fn keep(&self) -> NodeCapacity {
        NodeCapacity::of(self)
    }
}

/// What a view holds of one object: its name and namespace (the store's key), its labels
/// where the view matches selectors on them, and what a read takes from it.
#[derive(Clone, Debug)]
pub(super) struct Kept<K: Watched> {
    metadata: ObjectMeta,
    kept: K::Kept,
}

impl<K: Watched> Kept<K> {
    pub(super) fn of(object: &K) -> Self {
        let meta = object.meta();
        Self {
            metadata: ObjectMeta {
                name: meta.name.clone(),
                namespace: meta.namespace.clone(),
                labels: if K::LABELS { meta.labels.clone() } else { None },
                ..Default::default()
            },
            kept: object.keep(),
        }
    }
}

/// The kind is the watched kind's: a view's store is keyed, and reported, as that kind.
impl<K: Watched> kube::Resource for Kept<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A watch event of `K` as its view keeps it.
fn kept<K: Watched>(event: watcher::Event<K>) -> watcher::Event<Kept<K>> {
    use watcher::Event;
    match event {
        Event::Apply(object) => Event::Apply(Kept::of(&object)),
        Event::Delete(object) => Event::Delete(Kept::of(&object)),
        Event::Init => Event::Init,
        Event::InitApply(object) => Event::InitApply(Kept::of(&object)),
        Event::InitDone => Event::InitDone,
    }
}

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
struct View<K: Watched> {
    store: Store<Kept<K>>,
    current: Arc<AtomicBool>,
}

impl<K: Watched> View<K> {
    /// Start the reflector on `api`.
    fn start(api: Api<K>, what: &'static str, scope: String) -> Self {
        let (store, writer) = reflector::store();
        let current = Arc::new(AtomicBool::new(false));
        let flag = current.clone();
        // Lists come in pages of `LIST_PAGE`: a page is held whole while it is read.
        let config = watcher::Config::default().page_size(LIST_PAGE);
        let stream = watcher(api, config)
            .default_backoff()
            .map_ok(kept)
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
    pub(super) fn fixed(objects: &[K]) -> (Self, reflector::store::Writer<Kept<K>>) {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Init);
        for object in objects {
            writer.apply_watcher_event(&watcher::Event::InitApply(Kept::of(object)));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let current = Arc::new(AtomicBool::new(true));
        (Self { store, current }, writer)
    }

    fn ready(&self) -> Option<&Store<Kept<K>>> {
        self.current.load(Ordering::Acquire).then_some(&self.store)
    }

    /// What the view keeps of the object `name` of `namespace`, if it holds it.
    fn get(&self, namespace: &str, name: &str) -> Option<Arc<Kept<K>>> {
        self.ready()?.get(&ObjectRef::new(name).within(namespace))
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
                    deployments: View::start(api(client, &namespace), "Deployment", label.clone()),
                    statefulsets: View::start(
                        api(client, &namespace),
                        "StatefulSet",
                        label.clone(),
                    ),
                    jobs: View::start(api(client, &namespace), "Job", label.clone()),
                    hpas: View::start(api(client, &namespace), "HorizontalPodAutoscaler", label),
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
        let view = self
            .nodes
            .get_or_init(|| View::start(Api::all(self.client.clone()), "Node", "(cluster)".into()));
        let nodes = view.ready()?.state();
        Some(schedulable_allocatable(
            nodes
                .iter()
                .filter(|node| selects(selector, node.metadata.labels.as_ref()))
                .map(|node| node.kept),
        ))
    }

    /// Views of one namespace that hold these Deployments and no other object, and are
    /// current; the writer changes the Deployments' view.
    #[cfg(test)]
    pub(super) fn fixed(
        client: kube::Client,
        namespace: &str,
        deployments: &[Deployment],
    ) -> (Self, reflector::store::Writer<Kept<Deployment>>) {
        let (deployments, writer) = View::fixed(deployments);
        let scope = Scope {
            namespace: Some(namespace.to_string()),
            deployments,
            statefulsets: View::fixed(&[]).0,
            jobs: View::fixed(&[]).0,
            hpas: View::fixed(&[]).0,
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
        let namespace = target.namespace.as_str();
        match (target.kind, &target.name) {
            (WorkloadKind::Deployment, Some(name)) => {
                let kept = scope.deployments.get(namespace, name)?;
                Some(Read::of([kept.kept.clone()]))
            }
            (WorkloadKind::StatefulSet, Some(name)) => {
                let kept = scope.statefulsets.get(namespace, name)?;
                Some(Read::of([kept.kept.clone()]))
            }
            (WorkloadKind::Job, Some(name)) => {
                let kept = scope.jobs.get(namespace, name)?;
                Some(Read::of([kept.kept.0.clone()]))
            }
            (WorkloadKind::Job, None) => {
                let selector = target.selector.as_ref().filter(|s| !s.is_empty())?;
                let mut jobs = scope.jobs.ready()?.state_filter(|job| {
                    job.metadata.namespace.as_deref() == Some(namespace)
                        && selects(selector, job.metadata.labels.as_ref())
                        && !job.kept.1
                });
                jobs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
                Some(Read::of(jobs.iter().map(|job| job.kept.0.clone())))
            }
            (WorkloadKind::Deployment | WorkloadKind::StatefulSet, None) => None,
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
                        && hpa.kept.0 == kind
                        && &hpa.kept.1 == name
                })
                .map(|hpa| autoscaler_reason(target, hpa.metadata.name.as_deref())),
        )
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_keeps_what_a_read_takes_and_no_more() {
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "payment", "namespace": "shop", "resourceVersion": "7",
                "labels": {"app": "payment"},
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
        let kept = Kept::of(&deployment);
        assert_eq!(kept.kept, WorkloadObject::deployment(&deployment));
        let read = Read::of([kept.kept.clone()]);
        assert_eq!((read.replicas, read.ready), (3, 2));
        let pod = read.pod.expect("the pod's requests");
        assert_eq!((pod.cpu, pod.memory), (0.5, 256.0 * 1024.0 * 1024.0));
        assert_eq!(read.objects[0].name, "payment");
        assert_eq!(read.objects[0].last_writer.as_deref(), Some("kubectl"));
        assert_eq!(read.objects[0].resource_version.as_deref(), Some("7"));
        let app = read.selectors[0]
            .match_labels
            .as_ref()
            .and_then(|l| l.get("app"));
        assert_eq!(app.map(String::as_str), Some("payment"));
        // The store's key, and nothing else of the object's metadata.
        let meta = &kept.metadata;
        assert_eq!(
            (meta.name.as_deref(), meta.namespace.as_deref()),
            (Some("payment"), Some("shop"))
        );
        assert!(meta.annotations.is_none() && meta.managed_fields.is_none());
        assert!(meta.labels.is_none() && meta.resource_version.is_none());
    }

    #[test]
    fn a_kept_node_still_offers_its_allocatable_to_the_policies_that_select_it() {
        let node = |name: &str, pool: &str, unschedulable: bool| -> Kept<Node> {
            let node: Node = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": {"pool": pool},
                             "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
                "spec": {"unschedulable": unschedulable, "podCIDR": "10.0.0.0/24"},
                "status": {
                    "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                    "images": [{"names": ["registry.invalid/x:1"], "sizeBytes": 1}]
                }
            }))
            .expect("node");
            Kept::of(&node)
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
                .filter(|n| selects(&selector, n.metadata.labels.as_ref()))
                .map(|n| n.kept),
        );
        assert_eq!(total.cpu, 8.0);
        assert_eq!(total.memory, 16.0 * 1024.0 * 1024.0 * 1024.0);
        assert!(nodes[0].metadata.annotations.is_none());
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
