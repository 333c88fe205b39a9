//! What every e2e test target shares: the test bed's variables and an API client.
// Each target uses a subset of these helpers.
#![allow(dead_code)]

pub mod audit;
pub mod policy;

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// True when the caller opted out of the e2e tests explicitly (`TIDESHIFT_SKIP_E2E=1`). Unset
/// test bed variables without the opt-out fail instead: CI always sets them, so a silent skip
/// would hide a broken harness.
pub fn skip_e2e(what: &str) -> bool {
    let skip = std::env::var("TIDESHIFT_SKIP_E2E").as_deref() == Ok("1");
    if skip {
        eprintln!("skipping {what}: TIDESHIFT_SKIP_E2E=1");
    }
    skip
}

/// The test bed's variables (from `tests/e2e/testbed env`), one struct for every e2e target.
pub struct TestBed {
    pub admin_kubeconfig: String,
    /// The least-privilege ServiceAccount the chart gives the daemon.
    pub daemon_kubeconfig: String,
    pub prometheus_url: String,
    pub exporter_url: String,
    pub apiserver_url: String,
    pub state_dir: String,
    /// Where a daemon under test serves its metrics.
    pub metrics_addr: String,
    /// Where a test's own scrape target listens (Prometheus scrapes it).
    pub faults_scrape_addr: String,
    pub lease_name: String,
    pub lease_namespace: String,
    /// The independent record of writes.
    pub audit: audit::Audit,
    /// `tests/e2e/testbed`, to pause, resume and restart its components.
    pub script: String,
}

impl TestBed {
    /// The test bed, or `None` when the caller opted out of the e2e tests (`what` names them).
    /// Unset variables without the opt-out fail: CI always sets them, so a silent skip would
    /// hide a broken harness.
    pub fn from_env(what: &str) -> Option<Self> {
        if skip_e2e(what) {
            return None;
        }
        let get = testbed_var;
        Some(Self {
            admin_kubeconfig: get("KUBECONFIG"),
            daemon_kubeconfig: get("TIDESHIFT_DAEMON_KUBECONFIG"),
            prometheus_url: get("TIDESHIFT_PROMETHEUS_URL"),
            exporter_url: get("TESTBED_EXPORTER_URL"),
            apiserver_url: get("TESTBED_APISERVER_URL"),
            state_dir: get("TESTBED_STATE_DIR"),
            metrics_addr: get("TESTBED_DAEMON_METRICS_ADDR"),
            faults_scrape_addr: get("TESTBED_FAULTS_SCRAPE_ADDR"),
            lease_name: get("TESTBED_LEASE_NAME"),
            lease_namespace: get("TESTBED_LEASE_NAMESPACE"),
            audit: audit::Audit::new(get("TESTBED_AUDIT_LOG")),
            // TESTBED_SCRIPT: the test bed's script when it lives elsewhere (another checkout).
            script: std::env::var("TESTBED_SCRIPT").unwrap_or_else(|_| {
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/testbed").into()
            }),
        })
    }
}

/// A test bed variable (from `tests/e2e/testbed env`); panics, saying how to set it, when unset.
pub fn testbed_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is unset: run the e2e tests through tests/run (it starts the test bed), \
             or by hand after `tests/e2e/testbed up && eval \"$(tests/e2e/testbed env)\"`; \
             set TIDESHIFT_SKIP_E2E=1 to skip them explicitly"
        )
    })
}

/// A client for the kubeconfig at `path`. Reads and writes time out after 10 s, so a stalled
/// etcd or a restarting API server never hangs a test's own reads.
pub async fn client_from(path: &str) -> Client {
    let kubeconfig =
        Kubeconfig::read_from(path).unwrap_or_else(|e| panic!("reading kubeconfig {path}: {e}"));
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {path}: {e}"));
    config.read_timeout = Some(Duration::from_secs(10));
    config.write_timeout = Some(Duration::from_secs(10));
    Client::try_from(config).expect("building a kube client")
}

/// Deletes the test's namespaces when the test ends, however it ends, so a failed run does not
/// leave pods holding the test bed's capacity: (admin kubeconfig, namespaces).
pub struct Namespaces(pub String, pub Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        let kubeconfig = self.0.clone();
        let names = self.1.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Runtime::new() else {
                return;
            };
            runtime.block_on(async {
                let client = client_from(&kubeconfig).await;
                for name in names {
                    let _ = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
                        .delete(&name, &kube::api::DeleteParams::background())
                        .await;
                }
            });
        })
        .join();
    }
}

/// Create namespace `name` (panics, naming it, if the API server refuses).
pub async fn create_namespace(client: &Client, name: &str) {
    kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(
            &kube::api::PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
                .expect("namespace object"),
        )
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
}

/// A Deployment of `replicas` pods of one container requesting `cpu` and `memory`, on nodes
/// labelled `type: node_type` (the test bed's KWOK nodes are `kwok`; a type no node has keeps
/// them Pending). KWOK never pulls the image: its fake kubelet only plays the pod lifecycle.
pub fn fake_deployment(
    name: &str,
    replicas: i32,
    node_type: &str,
    cpu: &str,
    memory: &str,
) -> k8s_openapi::api::apps::v1::Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": {"type": node_type},
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{
                        "name": "app",
                        "image": "registry.invalid/tideshift/fake:1",
                        "resources": {"requests": {"cpu": cpu, "memory": memory}}
                    }]
                }
            }
        }
    }))
    .expect("deployment object")
}
