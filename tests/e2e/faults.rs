//! Fault classes on the real test bed (issues 7 and 12): Prometheus down, slow or erroring; bad
//! metric data; an API server restart mid-shift; an etcd stall; leader loss; a leader paused
//! past its lease; a competing writer, remembered across failover and restart; Job selector
//! targets; bad policies; security. Each test runs `tideshift run` as a child process with the
//! least-privilege ServiceAccount, injects its fault with the real components (fault proxies in
//! front of the real Prometheus and API server, `tests/e2e/testbed restart|pause|resume`,
//! SIGSTOP), and judges what was written from the API server's audit log (an independent
//! record: a write whose answer was lost is in it, and it names the replica that wrote) and
//! what the daemon reported (status, Events, metrics, its log).
//!
//! Every test writes `{"passed", "wrong_scale_actions", "lost_actions", "recovery_seconds"}` to
//! `$TIDESHIFT_FAULTS_OUT/<class>.json` when that is set (`tests/e2e/faults --json` collects
//! them), then asserts. The tests share one cluster, so they run one at a time (a lock), each
//! in its own namespace with its own series, removed at the end.
//!
//! Run through `tests/e2e/faults`, `tests/run`, or after `eval "$(tests/e2e/testbed env)"`:
//! `cargo test --test e2e_faults -- --test-threads=1 --nocapture`.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tideshift::policy::{ShiftPolicy, ShiftPolicyStatus};

use common::audit::{Audit, Write};

// ---- environment -------------------------------------------------------------------------

struct Env {
    admin_kubeconfig: String,
    daemon_kubeconfig: String,
    prometheus_url: String,
    metrics_addr: String,
    faults_scrape_addr: String,
    script: String,
    /// The independent record of writes.
    audit: Audit,
    apiserver_url: String,
    state_dir: String,
}

fn testbed_env() -> Option<Env> {
    if common::skip_e2e("the fault tests") {
        return None;
    }
    let get = common::testbed_var;
    Some(Env {
        admin_kubeconfig: get("KUBECONFIG"),
        daemon_kubeconfig: get("TIDESHIFT_DAEMON_KUBECONFIG"),
        prometheus_url: get("TIDESHIFT_PROMETHEUS_URL"),
        metrics_addr: get("TESTBED_DAEMON_METRICS_ADDR"),
        faults_scrape_addr: get("TESTBED_FAULTS_SCRAPE_ADDR"),
        audit: Audit::new(get("TESTBED_AUDIT_LOG")),
        apiserver_url: get("TESTBED_APISERVER_URL"),
        state_dir: get("TESTBED_STATE_DIR"),
        script: std::env::var("TESTBED_SCRIPT")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/testbed").into()),
    })
}

/// The classes share one cluster (and the test bed's components): one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

fn suffix() -> String {
    format!("{:x}", (unix_now() * 10.0) as u64 % 0xffffff)
}

fn testbed(env: &Env, args: &[&str]) {
    let status = std::process::Command::new(&env.script)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", env.script));
    assert!(status.success(), "tests/e2e/testbed {args:?} failed");
}

/// Poll `check` every half second until it gives a value, or `None` after `timeout`.
async fn poll_until<T>(timeout: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Poll `check` every `every` until it gives a value, or panic naming `what` after `timeout`.
async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---- figures -----------------------------------------------------------------------------

#[derive(Debug, Default, serde::Serialize)]
struct Figures {
    passed: bool,
    wrong_scale_actions: usize,
    lost_actions: usize,
    recovery_seconds: Option<f64>,
}

/// Write the class's figures (for tests/e2e/faults), then fail the test if they are bad.
fn report(class: &str, figures: &Figures, problems: &[String]) {
    eprintln!(
        "{class}: {}",
        serde_json::to_string(figures).unwrap_or_default()
    );
    if let Ok(dir) = std::env::var("TIDESHIFT_FAULTS_OUT") {
        let path = PathBuf::from(dir).join(format!("{class}.json"));
        std::fs::write(&path, serde_json::to_string(figures).unwrap_or_default())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
    assert!(problems.is_empty(), "{class}: {problems:#?}");
    assert!(figures.passed, "{class}: {figures:?}");
}

// ---- cluster objects ---------------------------------------------------------------------

/// Deletes the test's namespaces when the test ends, however it ends.
struct Namespaces(String, Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        let kubeconfig = self.0.clone();
        let names = self.1.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Runtime::new() else {
                return;
            };
            runtime.block_on(async {
                let client = common::client_from(&kubeconfig).await;
                for name in names {
                    let _ = Api::<Namespace>::all(client.clone())
                        .delete(&name, &DeleteParams::background())
                        .await;
                }
            });
        })
        .join();
    }
}

async fn create_namespace(client: &Client, name: &str) {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace"),
        )
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
}

/// Small pods (0.1 core) so that every class fits the test bed's nodes with room to spare.
fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": {"type": "kwok"},
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{
                        "name": "app",
                        "image": "registry.invalid/tideshift/fake:1",
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}
                    }]
                }
            }
        }
    }))
    .expect("deployment object")
}

async fn create_deployments(client: &Client, ns: &str, items: &[(&str, i32)]) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    for (name, replicas) in items {
        api.create(&PostParams::default(), &deployment(name, *replicas))
            .await
            .unwrap_or_else(|e| panic!("creating {ns}/{name}: {e}"));
    }
}

/// The demand the test bed's exporter serves with 14 days of history (see docs/testbed.md).
const CHECKOUT: &str = r#"sum(tideshift_demo_demand{workload="checkout"})"#;

/// A policy over online `{prefix}payment` and offline `{prefix}training` (Deployments of 0.1
/// core), with a budget of 12 pods.
fn policy_yaml(name: &str, prefix: &str, query: &str, per_replica: u32) -> String {
    let query = query.replace('\'', "''");
    format!(
        r#"
apiVersion: tideshift.io/v1alpha1
kind: ShiftPolicy
metadata: {{name: {name}}}
spec:
  interval: 3s
  capacity: {{cpu: 1200m, memory: 12Gi}}
  online:
    - name: {prefix}payment
      target: {{kind: Deployment, name: {prefix}payment}}
      demand: {{query: '{query}'}}
      perReplica: {per_replica}
      headroom: 0.1
      quantile: 0.9
      replicas: {{min: 1, max: 12}}
      startup: 10s
  offline:
    - name: {prefix}training
      target: {{kind: Deployment, name: {prefix}training}}
      replicas: {{min: 0, max: 12}}
  forecast: {{step: 1m, history: 3d, horizon: 30m, seasonality: [1d], retrain: 10m}}
  guardrails:
    scaleDown: {{maxPercentPerMinute: 100, stabilization: 20s}}
"#
    )
}

fn policy(name: &str, prefix: &str, query: &str, per_replica: u32) -> ShiftPolicy {
    serde_yaml::from_str(&policy_yaml(name, prefix, query, per_replica)).expect("policy YAML")
}

async fn create_policy(client: &Client, ns: &str, policy: &ShiftPolicy) {
    Api::<ShiftPolicy>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), policy)
        .await
        .unwrap_or_else(|e| panic!("creating policy in {ns}: {e}"));
}

async fn patch_policy(client: &Client, ns: &str, name: &str, patch: Value) {
    Api::<ShiftPolicy>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("patching policy {ns}/{name}: {e}"));
}

/// Edit a policy as a user would: its one online workload `workload` (demand CHECKOUT) now
/// serves `per_replica` per replica, so the policy wants more or fewer replicas.
async fn set_per_replica(
    client: &Client,
    ns: &str,
    policy: &str,
    workload: &str,
    per_replica: u32,
) {
    let online: Value = serde_yaml::from_str(&format!(
        "{{name: {workload}, target: {{kind: Deployment, name: {workload}}}, demand: {{query: '{CHECKOUT}'}}, perReplica: {per_replica}, headroom: 0.1, quantile: 0.9, replicas: {{min: 1, max: 12}}, startup: 10s}}"
    ))
    .expect("online workload");
    patch_policy(client, ns, policy, json!({"spec": {"online": [online]}})).await;
}

async fn status_of(
    client: &Client,
    ns: &str,
    name: &str,
) -> Option<(ShiftPolicy, ShiftPolicyStatus)> {
    let policy = Api::<ShiftPolicy>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .ok()?;
    let status = policy.status.clone()?;
    Some((policy, status))
}

fn condition<'s>(
    status: &'s ShiftPolicyStatus,
    type_: &str,
) -> Option<(&'s str, &'s str, &'s str)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

fn is_true(status: &ShiftPolicyStatus, type_: &str) -> bool {
    condition(status, type_).is_some_and(|(s, _, _)| s == "True")
}

/// Ready, not Degraded, the current generation seen, and every workload at its desired
/// replicas (each Deployment's spec too; a Job selector's total is the status's): the plan is
/// applied. Returns the desired replicas by workload.
async fn settled(client: &Client, ns: &str, name: &str) -> Option<BTreeMap<String, u32>> {
    let (policy, status) = status_of(client, ns, name).await?;
    if status.observed_generation != policy.metadata.generation
        || !is_true(&status, "Ready")
        || is_true(&status, "Degraded")
        || status.workloads.is_empty()
        || status.workloads.iter().any(|w| w.current != w.desired)
    {
        return None;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let mut desired = BTreeMap::new();
    for w in &status.workloads {
        match deployments.get_opt(&w.name).await.ok()? {
            Some(d) if d.spec.replicas? as u32 != w.desired => return None,
            _ => {}
        }
        desired.insert(w.name.clone(), w.desired);
    }
    Some(desired)
}

async fn wait_settled(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> BTreeMap<String, u32> {
    wait_until(
        &format!("policy {ns}/{name} to be Ready with its plan applied"),
        timeout,
        async || settled(client, ns, name).await,
    )
    .await
}

async fn replicas(client: &Client, ns: &str, name: &str) -> Option<u32> {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .ok()?;
    Some(d.spec.replicas? as u32)
}

/// Reasons of tideshift's Events on the policies of `ns`.
async fn event_reasons(client: &Client, ns: &str) -> Vec<String> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|list| {
            list.items
                .into_iter()
                .filter(|e| e.reporting_controller.as_deref() == Some("tideshift"))
                .filter_map(|e| e.reason)
                .collect()
        })
        .unwrap_or_default()
}

// ---- the daemon under test ---------------------------------------------------------------

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("local address").to_string()
}

/// One cycle that changed replicas.
#[derive(Debug)]
#[allow(dead_code)] // `summary` is read through Debug, in a failure's message
struct Shift {
    /// When the cycle began (Unix seconds): before it, nothing it decided on was read.
    started: f64,
    /// When it logged its writes, all made by then.
    at: f64,
    summary: String,
    /// The online workloads whose demand this cycle could not read, comma-separated.
    demand_unreadable: String,
    dry_run: bool,
}

/// `tideshift run` as a child process; killed when dropped. Its stderr (JSON lines) goes to a
/// file: the record of every write it made.
struct Daemon {
    child: std::process::Child,
    log: PathBuf,
    metrics_addr: String,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn spawn(env: &Env, prometheus_url: &str, metrics_addr: &str, extra: &[&str]) -> Daemon {
        Self::spawn_with(&env.daemon_kubeconfig, prometheus_url, metrics_addr, extra)
    }

    /// With its own kubeconfig (e.g. through a fault proxy).
    fn spawn_with(
        kubeconfig: &str,
        prometheus_url: &str,
        metrics_addr: &str,
        extra: &[&str],
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("daemon.log");
        let file = std::fs::File::create(&log).expect("daemon log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_tideshift"))
            .args([
                "run",
                "--kubeconfig",
                kubeconfig,
                "--prometheus-url",
                prometheus_url,
                "--listen",
                metrics_addr,
            ])
            .args(extra)
            .env("RUST_LOG", "info,tideshift=debug")
            .env("TIDESHIFT_LOG_FORMAT", "json")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starting tideshift run");
        Daemon {
            child,
            log,
            metrics_addr: metrics_addr.to_string(),
            _dir: dir,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log lines whose message is `message`: when each was logged (Unix seconds), and its
    /// fields.
    /// Every log line: when it was logged (Unix seconds), and its fields.
    fn logged_any(&self) -> Vec<(f64, Value)> {
        self.log_text()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter_map(|v| {
                let at = chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str()?).ok()?;
                Some((at.timestamp_micros() as f64 / 1e6, v["fields"].clone()))
            })
            .collect()
    }

    fn logged(&self, message: &str) -> Vec<(f64, Value)> {
        self.log_text()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|v| v["fields"]["message"] == message)
            .filter_map(|v| {
                let at = chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str()?).ok()?;
                Some((at.timestamp_micros() as f64 / 1e6, v["fields"].clone()))
            })
            .collect()
    }

    /// The writes the daemon says it made (its "scaled" log lines). The tests judge writes
    /// from the audit log; this is what the daemon believed, for messages.
    fn logged_writes(&self) -> Vec<Write> {
        self.logged("scaled")
            .into_iter()
            .filter_map(|(at, fields)| {
                Some(Write {
                    at,
                    target: fields["target"].as_str()?.to_string(),
                    from: fields["from"].as_u64()?,
                    to: fields["to"].as_u64()?,
                    by: "its log".into(),
                    daemon: true,
                })
            })
            .collect()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every cycle that changed replicas, from its "shift" log line.
    fn shifts(&self) -> Vec<Shift> {
        self.logged("shift")
            .into_iter()
            .filter_map(|(at, fields)| {
                Some(Shift {
                    started: at - fields["took_ms"].as_u64()? as f64 / 1e3,
                    at,
                    summary: fields["summary"].as_str()?.to_string(),
                    demand_unreadable: fields["demand_unreadable"].as_str()?.to_string(),
                    dry_run: fields["dry_run"].as_bool()?,
                })
            })
            .collect()
    }

    #[allow(dead_code)] // used by the classes that land next
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sum of a metric's samples whose labels contain every `label="value"` in `with`.
    async fn metric(&self, name: &str, with: &[&str]) -> Option<f64> {
        let text = reqwest::get(format!("http://{}/metrics", self.metrics_addr))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let mut sum = None;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                continue;
            }
            if !with.iter().all(|l| rest.contains(l)) {
                continue;
            }
            if let Some(value) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                *sum.get_or_insert(0.0) += value;
            }
        }
        sum
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        // The log lives in a temporary directory; a failing test shows its end, which is where
        // the writes and warnings that failed it are.
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(DAEMON_LOG_TAIL)..];
            eprintln!(
                "---- the daemon's last {} log lines ----\n{}",
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// Lines of the daemon's log a failing test prints.
const DAEMON_LOG_TAIL: usize = 80;

fn writes_to<'w>(writes: &'w [Write], ns: &str, name: &str) -> Vec<&'w Write> {
    let target = format!("Deployment {ns}/{name}");
    writes.iter().filter(|w| w.target == target).collect()
}

// ---- a fault-injecting HTTP proxy in front of Prometheus -------------------------------------

const PASS: u8 = 0;
const ERROR_5XX: u8 = 1;
const HANG: u8 = 2;

struct ProxyState {
    upstream: String,
    mode: AtomicU8,
    requests: AtomicU64,
    /// When (Unix seconds) each successful answer from Prometheus was passed to the daemon: a
    /// decision is only fresh if its cycle received one.
    answered: Mutex<Vec<f64>>,
    /// Every distinct Authorization header value seen.
    authorizations: Mutex<Vec<String>>,
    client: reqwest::Client,
}

/// Passes requests to Prometheus, answers 503, or hangs (past the daemon's timeout); `refuse`
/// closes the port (connection refused) until `restore`. Every response says
/// `Connection: close`, so no pooled connection outlives a refusal.
struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    server: Option<tokio::task::JoinHandle<()>>,
}

async fn proxy_handler(
    axum::extract::State(state): axum::extract::State<Arc<ProxyState>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    state.requests.fetch_add(1, Ordering::SeqCst);
    let headers = request.headers().clone();
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let mut seen = state
            .authorizations
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !seen.iter().any(|s| s == auth) {
            seen.push(auth.to_string());
        }
    }
    let close = [("connection", "close")];
    match state.mode.load(Ordering::SeqCst) {
        ERROR_5XX => {
            return (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                close,
                "injected fault: 503",
            )
                .into_response();
        }
        HANG => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            return (axum::http::StatusCode::GATEWAY_TIMEOUT, close).into_response();
        }
        _ => {}
    }
    let method = request.method().clone();
    let path = request
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    let Ok(body) = axum::body::to_bytes(request.into_body(), 16 << 20).await else {
        return (axum::http::StatusCode::BAD_REQUEST, close).into_response();
    };
    let mut upstream = state
        .client
        .request(method, format!("{}{path}", state.upstream))
        .body(body);
    if let Some(ct) = headers.get("content-type").and_then(|v| v.to_str().ok()) {
        upstream = upstream.header("content-type", ct);
    }
    match upstream.send().await {
        Ok(response) => {
            let status = axum::http::StatusCode::from_u16(response.status().as_u16())
                .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
            let ct = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_string();
            let bytes = response.bytes().await.unwrap_or_default();
            if status.is_success() {
                state
                    .answered
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(unix_now());
            }
            (
                status,
                [("connection", "close"), ("content-type", ct.as_str())],
                bytes,
            )
                .into_response()
        }
        Err(e) => (axum::http::StatusCode::BAD_GATEWAY, close, e.to_string()).into_response(),
    }
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            mode: AtomicU8::new(PASS),
            requests: AtomicU64::new(0),
            answered: Mutex::new(Vec::new()),
            authorizations: Mutex::new(Vec::new()),
            client: reqwest::Client::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let mut proxy = Proxy {
            addr,
            state,
            server: None,
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = axum::Router::new()
            .fallback(proxy_handler)
            .with_state(self.state.clone());
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, mode: u8) {
        self.state.mode.store(mode, Ordering::SeqCst);
    }

    /// Whether a successful Prometheus answer was passed through between `from` and `to`.
    fn answered_between(&self, from: f64, to: f64) -> bool {
        self.state
            .answered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|&at| at >= from && at <= to)
    }

    /// Close the port: connections are refused.
    async fn refuse(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    async fn restore(&mut self) {
        self.set(PASS);
        if self.server.is_none() {
            let listener = wait_until(
                "the proxy's port to be free again",
                Duration::from_secs(30),
                async || tokio::net::TcpListener::bind(self.addr).await.ok(),
            )
            .await;
            self.serve(listener);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

// ---- 1. Prometheus down, slow, erroring ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_down_slow_or_erroring_holds_the_plan_and_recovers() {
    let Some(env) = testbed_env() else { return };
    let _serial = SERIAL.lock().await;
    let admin = common::client_from(&env.admin_kubeconfig).await;
    let ns = format!("faults-prom-{}", suffix());
    let _cleanup = Namespaces(env.admin_kubeconfig.clone(), vec![ns.clone()]);
    create_namespace(&admin, &ns).await;
    create_deployments(&admin, &ns, &[("payment", 2), ("training", 8)]).await;
    create_policy(&admin, &ns, &policy("shop", "", CHECKOUT, 50)).await;

    let mut proxy = Proxy::start(&env.prometheus_url).await;
    // Prometheus is down when the daemon starts: it knows no plan yet, so it writes nothing.
    proxy.refuse().await;
    let daemon = Daemon::spawn(
        &env,
        &proxy.url(),
        &env.metrics_addr,
        &[
            "--namespace",
            &ns,
            "--prometheus-timeout",
            "2s",
            "--shrink-wait",
            "20s",
        ],
    );
    let mut problems = Vec::new();
    wait_until(
        "Degraded=True with Prometheus down at start",
        Duration::from_secs(120),
        async || {
            let (_, status) = status_of(&admin, &ns, "shop").await?;
            is_true(&status, "Degraded").then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut wrong = 0;
    for w in env.audit.daemon_writes(&ns) {
        wrong += 1;
        problems.push(format!("write with Prometheus down since start: {w:?}"));
    }
    proxy.restore().await;
    let before = wait_settled(&admin, &ns, "shop", Duration::from_secs(240)).await;
    let payment_before = before["payment"];
    eprintln!("settled before the faults: {before:?}");

    let mut recovery: f64 = 0.0;
    let mut fault_windows = Vec::new();
    for fault in ["5xx", "hang", "refused"] {
        let started = unix_now();
        match fault {
            "5xx" => proxy.set(ERROR_5XX),
            "hang" => proxy.set(HANG),
            _ => proxy.refuse().await,
        }
        // Degraded, said three ways: the condition, an Event, the metric.
        let degraded = wait_until(
            &format!("Degraded=True during Prometheus {fault}"),
            Duration::from_secs(120),
            async || {
                let (_, status) = status_of(&admin, &ns, "shop").await?;
                condition(&status, "Degraded")
                    .filter(|(s, _, _)| *s == "True")
                    .map(|(_, reason, message)| (reason.to_string(), message.to_string()))
            },
        )
        .await;
        if degraded.0 != "MetricsUnavailable" {
            problems.push(format!("{fault}: Degraded reason {degraded:?}"));
        }
        let gauge = daemon
            .metric(
                "tideshift_policy_condition",
                &["type=\"Degraded\"", "policy=\"shop\""],
            )
            .await;
        if gauge != Some(1.0) {
            problems.push(format!(
                "{fault}: tideshift_policy_condition{{type=Degraded}} = {gauge:?}"
            ));
        }
        if fault == "refused" {
            // A change made during the outage must be applied once Prometheus is back.
            patch_policy(&admin, &ns, "shop", json!({"spec": {"online": [
                serde_yaml::from_str::<Value>(&format!(
                    "{{name: payment, target: {{kind: Deployment, name: payment}}, demand: {{query: '{CHECKOUT}'}}, perReplica: 25, headroom: 0.1, quantile: 0.9, replicas: {{min: 1, max: 12}}, startup: 10s}}"
                )).expect("online workload")
            ]}})).await;
        }
        // Hold the fault for several cycles.
        tokio::time::sleep(Duration::from_secs(12)).await;
        let payment_during = replicas(&admin, &ns, "payment").await;
        if payment_during.is_some_and(|p| p < payment_before) {
            problems.push(format!(
                "{fault}: payment scaled down to {payment_during:?}"
            ));
        }
        let restored = unix_now();
        proxy.restore().await;
        wait_until(
            &format!("Degraded=False after Prometheus {fault}"),
            Duration::from_secs(120),
            async || {
                let (_, status) = status_of(&admin, &ns, "shop").await?;
                (!is_true(&status, "Degraded") && is_true(&status, "Ready")).then_some(())
            },
        )
        .await;
        recovery = recovery.max(unix_now() - restored);
        fault_windows.push((fault, started, restored));
    }
    // The change made during the outage: payment grows (batch gives way), nothing lost.
    let after = wait_settled(&admin, &ns, "shop", Duration::from_secs(120)).await;
    let lost = usize::from(after["payment"] <= payment_before);
    if lost > 0 {
        problems.push(format!(
            "the change made during the outage was not applied: {before:?} -> {after:?}"
        ));
    }

    // No change is decided on demand that could not be read. Judged per cycle, not by when a
    // write lands: a cycle that read demand just before a fault may write just after it began,
    // and one that began inside a fault may get its answer from a retry after the restore (3
    // attempts, 2 s timeout) and rightly follow demand that moved meanwhile (in CI, payment
    // 3 -> 4 the second a 5xx fault ended). A shift is wrong when its own cycle found demand
    // unreadable (the daemon's word), or when the proxy passed it no answer from Prometheus
    // while that cycle ran (the proxy's word): then it was decided on stale data.
    let shifts = daemon.shifts();
    eprintln!("fault windows (start, restore): {fault_windows:?}");
    for shift in shifts.iter().filter(|s| !s.dry_run) {
        if !shift.demand_unreadable.is_empty() {
            wrong += 1;
            problems.push(format!("shift decided with demand unreadable: {shift:?}"));
        } else if !proxy.answered_between(shift.started, shift.at) {
            let during = fault_windows
                .iter()
                .find(|(_, from, to)| shift.at >= *from && shift.started <= *to)
                .map_or("no fault", |(fault, _, _)| *fault);
            wrong += 1;
            problems.push(format!(
                "shift without an answer from Prometheus in its cycle ({during}): {shift:?}"
            ));
        }
    }
    let writes = env.audit.daemon_writes(&ns);
    // Each write belongs to a judged cycle; one outside every parsed "shift" line would
    // escape the check above.
    for w in &writes {
        if !shifts.iter().any(|s| w.at >= s.started && w.at <= s.at) {
            wrong += 1;
            problems.push(format!("write outside every logged cycle: {w:?}"));
        }
    }
    let online_down = writes
        .iter()
        .filter(|w| w.target.ends_with("/payment") && w.to < w.from)
        .count();
    if online_down > 0 {
        wrong += online_down;
        problems.push(format!(
            "payment scaled down {online_down} times: {writes:?}"
        ));
    }
    let reasons = event_reasons(&admin, &ns).await;
    if !reasons.iter().any(|r| r == "MetricsUnavailable") {
        problems.push(format!("no MetricsUnavailable Event: {reasons:?}"));
    }
    for reason in ["http", "timeout", "unreachable"] {
        let count = daemon
            .metric(
                "tideshift_prometheus_errors_total",
                &[&format!("reason=\"{reason}\"")],
            )
            .await
            .unwrap_or(0.0);
        if count < 1.0 {
            problems.push(format!(
                "tideshift_prometheus_errors_total{{reason={reason}}} = {count}"
            ));
        }
    }
    let figures = Figures {
        passed: problems.is_empty(),
        wrong_scale_actions: wrong,
        lost_actions: lost,
        recovery_seconds: Some((recovery * 10.0).round() / 10.0),
    };
    report("prometheus", &figures, &problems);
}

// ---- 7. bad policies --------------------------------------------------------------------------

/// Policies the CRD's OpenAPI schema or CEL rules refuse at apply: (what, YAML).
fn refused_at_apply() -> Vec<(&'static str, String)> {
    let good = policy_yaml("bad", "", CHECKOUT, 50);
    let swap = |from: &str, to: &str| {
        assert!(good.contains(from), "{from:?} not in the template");
        good.replacen(from, to, 1)
    };
    vec![
        (
            "replicas.min > replicas.max",
            swap("replicas: {min: 1, max: 12}", "replicas: {min: 5, max: 2}"),
        ),
        ("perReplica 0", swap("perReplica: 50", "perReplica: 0")),
        ("quantile 0.4", swap("quantile: 0.9", "quantile: 0.4")),
        ("headroom 11", swap("headroom: 0.1", "headroom: 11")),
        (
            "duration not a duration",
            swap("interval: 3s", "interval: 3 seconds"),
        ),
        (
            "unknown mode",
            swap("  interval: 3s", "  mode: yolo\n  interval: 3s"),
        ),
        (
            "online Job target",
            swap(
                "target: {kind: Deployment, name: payment}",
                "target: {kind: Job, name: payment}",
            ),
        ),
        (
            "Deployment target without name",
            swap(
                "target: {kind: Deployment, name: payment}",
                "target: {kind: Deployment}",
            ),
        ),
        (
            "selector on a Deployment",
            swap(
                "target: {kind: Deployment, name: training}",
                "target: {kind: Deployment, name: training, selector: {team: x}}",
            ),
        ),
        (
            "capacity without cpu or nodeSelector",
            swap(
                "capacity: {cpu: 1200m, memory: 12Gi}",
                "capacity: {memory: 12Gi}",
            ),
        ),
        ("quantity not a quantity", swap("cpu: 1200m", "cpu: lots")),
        ("no online workload", {
            let start = good.find("  online:").expect("online");
            let end = good.find("  offline:").expect("offline");
            format!("{}  online: []\n{}", &good[..start], &good[end..])
        }),
        (
            "duplicate workload names",
            swap("- name: training", "- name: payment"),
        ),
        (
            "offline weight 0",
            swap(
                "replicas: {min: 0, max: 12}",
                "replicas: {min: 0, max: 12}\n      weight: 0",
            ),
        ),
        (
            "maxPercentPerMinute 0",
            swap("maxPercentPerMinute: 100", "maxPercentPerMinute: 0"),
        ),
        (
            "workload name not DNS-1123",
            swap("- name: payment", "- name: Payment_API"),
        ),
        (
            "target namespace not DNS-1123",
            swap("name: training}", "name: training, namespace: Not_Valid}"),
        ),
        (
            "event with start and cron",
            swap(
                "  guardrails:",
                "  events: [{name: sale, start: \"2026-11-11T00:00:00Z\", cron: \"0 20 * * *\", duration: 1h}]\n  guardrails:",
            ),
        ),
        (
            "empty demand query",
            swap(
                &format!("demand: {{query: '{}'}}", CHECKOUT.replace('\'', "''")),
                "demand: {query: ''}",
            ),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policies_are_refused_at_apply_or_reported_and_never_stop_others() {
    let Some(env) = testbed_env() else { return };
    let _serial = SERIAL.lock().await;
    let admin = common::client_from(&env.admin_kubeconfig).await;
    let ns = format!("faults-policy-{}", suffix());
    let _cleanup = Namespaces(env.admin_kubeconfig.clone(), vec![ns.clone()]);
    create_namespace(&admin, &ns).await;
    let mut problems = Vec::new();

    // 1. What the API server refuses: nothing is stored.
    let api: Api<ShiftPolicy> = Api::namespaced(admin.clone(), &ns);
    for (what, yaml) in refused_at_apply() {
        let object: Value = serde_yaml::from_str(&yaml).expect("bad policy YAML");
        let dynamic: kube::api::DynamicObject = serde_json::from_value(object).expect("object");
        let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
            admin.clone(),
            &ns,
            &kube::api::ApiResource::erase::<ShiftPolicy>(&()),
        );
        match raw.create(&PostParams::default(), &dynamic).await {
            Err(kube::Error::Api(status)) if status.code == 422 => {
                eprintln!("refused at apply: {what}: {}", status.message);
            }
            Err(e) => problems.push(format!("{what}: refused, but not as invalid: {e}")),
            Ok(_) => {
                problems.push(format!("{what}: the API server accepted it"));
                let _ = api.delete("bad", &DeleteParams::default()).await;
            }
        }
    }

    // 2. What passes the schema but not the daemon's validation.
    create_deployments(
        &admin,
        &ns,
        &[
            ("a-payment", 2),
            ("a-training", 6),
            ("b-payment", 2),
            ("b-training", 6),
            ("c-payment", 2),
            ("c-training", 3),
        ],
    )
    .await;
    create_policy(&admin, &ns, &policy("a", "a-", CHECKOUT, 50)).await;
    create_policy(&admin, &ns, &policy("b", "b-", CHECKOUT, 50)).await;
    // Invalid from the start: an interval of 2 h (at most 1 h) passes the schema.
    let mut fresh_bad = policy("c", "c-", CHECKOUT, 10);
    fresh_bad.spec.interval = serde_yaml::from_str("2h").expect("duration");
    create_policy(&admin, &ns, &fresh_bad).await;

    let daemon = Daemon::spawn(
        &env,
        &env.prometheus_url,
        &env.metrics_addr,
        &["--namespace", &ns],
    );
    let a_before = wait_settled(&admin, &ns, "a", Duration::from_secs(240)).await;
    let b_before = wait_settled(&admin, &ns, "b", Duration::from_secs(120)).await;
    let c = wait_until(
        "policy c to be reported invalid",
        Duration::from_secs(60),
        async || {
            let (_, status) = status_of(&admin, &ns, "c").await?;
            condition(&status, "Ready")
                .filter(|(s, _, _)| *s == "False")
                .map(|(_, r, m)| (r.to_string(), m.to_string()))
        },
    )
    .await;
    if c.0 != "InvalidPolicy" || !c.1.contains("spec.interval") {
        problems.push(format!("policy invalid from the start: Ready=False {c:?}"));
    }

    // Policy a turns invalid (an unparseable cron: the schema only counts its fields) in the
    // same edit that would otherwise shift capacity to payment: nothing of it is applied.
    let edited = unix_now();
    patch_policy(&admin, &ns, "a", json!({"spec": {
        "events": [{"name": "sale", "cron": "61 * * * *", "duration": "1h"}],
        "online": [serde_yaml::from_str::<Value>(&format!(
            "{{name: a-payment, target: {{kind: Deployment, name: a-payment}}, demand: {{query: '{CHECKOUT}'}}, perReplica: 10, headroom: 0.1, quantile: 0.9, replicas: {{min: 1, max: 12}}, startup: 10s}}"
        )).expect("online workload")]
    }}))
    .await;
    let a_invalid = wait_until(
        "policy a to be reported invalid",
        Duration::from_secs(60),
        async || {
            let (_, status) = status_of(&admin, &ns, "a").await?;
            condition(&status, "Ready")
                .filter(|(s, r, _)| *s == "False" && *r == "InvalidPolicy")
                .map(|(_, _, m)| m.to_string())
        },
    )
    .await;
    if !a_invalid.contains("spec.events[0].cron") {
        problems.push(format!(
            "invalid message does not name the field: {a_invalid}"
        ));
    }
    // Policy b keeps working: a change to it is applied while a is invalid.
    set_per_replica(&admin, &ns, "b", "b-payment", 25).await;
    let b_after = wait_until(
        "policy b to apply its change",
        Duration::from_secs(120),
        async || {
            let desired = settled(&admin, &ns, "b").await?;
            (desired["b-payment"] > b_before["b-payment"]).then_some(desired)
        },
    )
    .await;
    eprintln!("b after its change: {b_after:?}");
    // a kept its last good plan all along.
    let mut wrong = 0;
    let writes = env.audit.daemon_writes(&ns);
    for w in writes
        .iter()
        .filter(|w| w.at >= edited && w.target.contains("/a-"))
    {
        wrong += 1;
        problems.push(format!("write to a's workload while a was invalid: {w:?}"));
    }
    for w in writes.iter().filter(|w| w.target.contains("/c-")) {
        wrong += 1;
        problems.push(format!("write to c's workload (never valid): {w:?}"));
    }
    let reasons = event_reasons(&admin, &ns).await;
    if reasons.iter().filter(|r| *r == "InvalidPolicy").count() < 2 {
        problems.push(format!(
            "expected InvalidPolicy Events for a and c: {reasons:?}"
        ));
    }
    // Fixing a resumes it, with the change.
    let fixed = unix_now();
    patch_policy(&admin, &ns, "a", json!({"spec": {"events": []}})).await;
    let a_after = wait_until(
        "policy a to run again after the fix",
        Duration::from_secs(120),
        async || {
            let desired = settled(&admin, &ns, "a").await?;
            (desired["a-payment"] > a_before["a-payment"]).then_some(desired)
        },
    )
    .await;
    let recovery = unix_now() - fixed;
    eprintln!("a: {a_before:?} -> {a_after:?}");
    let figures = Figures {
        passed: problems.is_empty(),
        wrong_scale_actions: wrong,
        lost_actions: 0,
        recovery_seconds: Some((recovery * 10.0).round() / 10.0),
    };
    drop(daemon);
    report("bad_policies", &figures, &problems);
}

// ---- 6. a competing writer ----------------------------------------------------------------

async fn scale_by_hand(client: &Client, ns: &str, name: &str, replicas: u32) -> bool {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch_scale(
            name,
            &PatchParams {
                field_manager: Some("kubectl".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_competing_writer_is_reported_and_never_fought() {
    let Some(env) = testbed_env() else { return };
    let _serial = SERIAL.lock().await;
    let admin = common::client_from(&env.admin_kubeconfig).await;
    let ns = format!("faults-writer-{}", suffix());
    let _cleanup = Namespaces(env.admin_kubeconfig.clone(), vec![ns.clone()]);
    create_namespace(&admin, &ns).await;
    create_deployments(&admin, &ns, &[("payment", 2), ("training", 8)]).await;
    create_policy(&admin, &ns, &policy("shop", "", CHECKOUT, 50)).await;
    let hold = 20.0;
    let _daemon = Daemon::spawn(
        &env,
        &env.prometheus_url,
        &env.metrics_addr,
        &["--namespace", &ns, "--conflict-hold", "20s"],
    );
    let before = wait_settled(&admin, &ns, "shop", Duration::from_secs(240)).await;
    eprintln!("settled: {before:?}");
    let mut problems = Vec::new();
    let mut wrong = 0;
    let mut lost = 0;

    // A. A person keeps scaling training to another value for a minute.
    let by_hand = before["training"].saturating_sub(3);
    let person_from = unix_now();
    let window = 60.0;
    let mut conflict_seen = None;
    while unix_now() - person_from < window {
        if replicas(&admin, &ns, "training").await != Some(by_hand) {
            scale_by_hand(&admin, &ns, "training", by_hand).await;
        }
        if conflict_seen.is_none()
            && let Some((_, status)) = status_of(&admin, &ns, "shop").await
            && let Some(("True", reason, message)) = condition(&status, "Conflict")
        {
            conflict_seen = Some((reason.to_string(), message.to_string()));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let person_to = unix_now();
    match &conflict_seen {
        Some((reason, message)) if reason == "OtherWriter" && message.contains("training") => {}
        other => problems.push(format!(
            "Conflict while a person scaled training: {other:?}"
        )),
    }
    let writes = env.audit.daemon_writes(&ns);
    let fights = writes_to(&writes, &ns, "training")
        .into_iter()
        .filter(|w| w.at >= person_from && w.at <= person_to)
        .count();
    // At most one write per hold: the daemon takes the other value as baseline after it.
    let bound = (window / hold).ceil() as usize + 1;
    eprintln!("daemon writes to training while a person scaled it: {fights} (bound {bound})");
    if fights > bound {
        wrong += fights - bound;
        problems.push(format!(
            "tug of war: {fights} writes to training in {window}s (bound {bound})"
        ));
    }
    // The person stops: after the hold the daemon's plan applies again.
    let settled_again = wait_until(
        "the plan to apply after the person stopped",
        Duration::from_secs(120),
        async || {
            let desired = settled(&admin, &ns, "shop").await?;
            let (_, status) = status_of(&admin, &ns, "shop").await?;
            (!is_true(&status, "Conflict")).then_some(desired)
        },
    )
    .await;
    let recovery_person = unix_now() - person_to;
    if recovery_person > hold + 60.0 {
        problems.push(format!(
            "took {recovery_person:.0}s to resume after the person stopped"
        ));
    }
    eprintln!("after the person: {settled_again:?}");

    // B. An HPA on payment: tideshift leaves payment alone while it exists, even when its own
    //    plan wants payment to grow.
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "payment"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "payment"},
            "minReplicas": 1, "maxReplicas": 12,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
        }
    }))
    .expect("hpa");
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(admin.clone(), &ns);
    hpas.create(&PostParams::default(), &hpa)
        .await
        .expect("creating the HPA");
    let hpa_seen = wait_until(
        "Conflict=True naming the HPA",
        Duration::from_secs(60),
        async || {
            let (_, status) = status_of(&admin, &ns, "shop").await?;
            condition(&status, "Conflict")
                .filter(|(s, _, m)| *s == "True" && m.contains("HorizontalPodAutoscaler"))
                .map(|_| unix_now())
        },
    )
    .await;
    let payment_at_hpa = replicas(&admin, &ns, "payment").await;
    set_per_replica(&admin, &ns, "shop", "payment", 25).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let hpa_writes: Vec<Write> = writes_to(&env.audit.daemon_writes(&ns), &ns, "payment")
        .into_iter()
        .filter(|w| w.at >= hpa_seen)
        .cloned()
        .collect();
    if !hpa_writes.is_empty() {
        wrong += hpa_writes.len();
        problems.push(format!(
            "wrote payment while an HPA scaled it: {hpa_writes:?}"
        ));
    }
    if replicas(&admin, &ns, "payment").await != payment_at_hpa {
        problems.push("payment changed while the HPA owned it".into());
    }
    let hpa_gone = unix_now();
    hpas.delete("payment", &DeleteParams::default())
        .await
        .expect("deleting the HPA");
    let after = wait_until(
        "payment to grow once the HPA is gone",
        Duration::from_secs(120),
        async || {
            let desired = settled(&admin, &ns, "shop").await?;
            (desired["payment"] > before["payment"]).then_some(desired)
        },
    )
    .await;
    let recovery_hpa = unix_now() - hpa_gone;
    if after["payment"] <= before["payment"] {
        lost += 1;
    }
    let reasons = event_reasons(&admin, &ns).await;
    if !reasons.iter().any(|r| r == "OtherWriter") {
        problems.push(format!("no OtherWriter Event: {reasons:?}"));
    }
    let figures = Figures {
        passed: problems.is_empty(),
        wrong_scale_actions: wrong,
        lost_actions: lost,
        recovery_seconds: Some((recovery_person.max(recovery_hpa) * 10.0).round() / 10.0),
    };
    report("competing_writer", &figures, &problems);
}

// ---- 10. security ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_privilege_cross_namespace_refusal_no_token_in_logs_and_a_locked_down_chart() {
    let Some(env) = testbed_env() else { return };
    let _serial = SERIAL.lock().await;
    let admin = common::client_from(&env.admin_kubeconfig).await;
    let id = suffix();
    let ns = format!("faults-sec-{id}");
    let other = format!("faults-sec-other-{id}");
    let _cleanup = Namespaces(
        env.admin_kubeconfig.clone(),
        vec![ns.clone(), other.clone()],
    );
    create_namespace(&admin, &ns).await;
    create_namespace(&admin, &other).await;
    create_deployments(
        &admin,
        &ns,
        &[
            ("payment", 2),
            ("training", 8),
            ("bystander", 3),
            ("x-payment", 2),
        ],
    )
    .await;
    create_deployments(&admin, &other, &[("victim", 6)]).await;
    create_policy(&admin, &ns, &policy("own", "", CHECKOUT, 50)).await;
    // A policy in `ns` that would shrink a workload of another namespace.
    let mut cross = policy("cross", "x-", CHECKOUT, 10);
    cross.spec.offline[0].target.name = Some("victim".into());
    cross.spec.offline[0].target.namespace = Some(other.clone());
    create_policy(&admin, &ns, &cross).await;

    let mut problems = Vec::new();
    let mut wrong = 0;
    // Prometheus behind a bearer token: the proxy sees it, the logs never do.
    let token = format!("tok-{}-{}", suffix(), std::process::id());
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).expect("token file");
    let proxy = Proxy::start(&env.prometheus_url).await;
    let token_path = token_file.display().to_string();
    let mut daemon = Daemon::spawn(
        &env,
        &proxy.url(),
        &env.metrics_addr,
        &["--namespace", &ns, "--prometheus-token-file", &token_path],
    );
    wait_settled(&admin, &ns, "own", Duration::from_secs(240)).await;
    let refused = wait_until(
        "the cross-namespace policy to be refused",
        Duration::from_secs(60),
        async || {
            let (_, status) = status_of(&admin, &ns, "cross").await?;
            condition(&status, "Ready")
                .filter(|(s, _, _)| *s == "False")
                .map(|(_, r, m)| (r.to_string(), m.to_string()))
        },
    )
    .await;
    if refused.0 != "InvalidPolicy" || !refused.1.contains(&other) {
        problems.push(format!("cross-namespace policy: Ready=False {refused:?}"));
    }
    // Several more cycles, then look at what was touched.
    tokio::time::sleep(Duration::from_secs(10)).await;
    for (namespace, name) in [(&ns, "bystander"), (&other, "victim"), (&ns, "x-payment")] {
        let d = Api::<Deployment>::namespaced(admin.clone(), namespace)
            .get(name)
            .await
            .expect("reading a deployment");
        let managers: Vec<String> = d
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|m| m.manager.clone())
            .collect();
        if managers.iter().any(|m| m == "tideshift") {
            wrong += 1;
            problems.push(format!("tideshift wrote {namespace}/{name}: {managers:?}"));
        }
    }
    let authorizations = proxy
        .state
        .authorizations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if authorizations != vec![format!("Bearer {token}")] {
        problems.push(format!(
            "Prometheus saw Authorization headers {authorizations:?}"
        ));
    }
    daemon.kill();
    let log = daemon.log_text();
    if log.contains(&token) {
        problems.push("the Prometheus bearer token is in the daemon's log".into());
    }
    let kubeconfig = std::fs::read_to_string(&env.daemon_kubeconfig).expect("daemon kubeconfig");
    let sa_token = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("token in the daemon kubeconfig");
    if log.contains(sa_token) {
        problems.push("the ServiceAccount token is in the daemon's log".into());
    }

    // The daemon's identity may scale, not edit, delete or read secrets.
    let daemon_client = common::client_from(&env.daemon_kubeconfig).await;
    let deployments: Api<Deployment> = Api::namespaced(daemon_client.clone(), &ns);
    let attempts = [
        (
            "patch a whole Deployment",
            deployments
                .patch(
                    "bystander",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
                )
                .await
                .err(),
        ),
        (
            "delete a Deployment",
            deployments
                .delete("bystander", &DeleteParams::default())
                .await
                .err(),
        ),
        (
            "list Secrets",
            Api::<Secret>::namespaced(daemon_client.clone(), &ns)
                .list(&ListParams::default())
                .await
                .err(),
        ),
        (
            "create a Deployment",
            deployments
                .create(&PostParams::default(), &deployment("intruder", 1))
                .await
                .err(),
        ),
    ];
    for (what, error) in attempts {
        match error {
            Some(kube::Error::Api(status)) if status.code == 403 => {}
            other => {
                wrong += 1;
                problems.push(format!("the daemon's identity could {what}: {other:?}"));
            }
        }
    }

    // The chart runs the daemon as non-root on a read-only root filesystem.
    let helm = std::env::var("TESTBED_HELM").unwrap_or_else(|_| "helm".into());
    let rendered = std::process::Command::new(&helm)
        .args([
            "template",
            "t",
            concat!(env!("CARGO_MANIFEST_DIR"), "/charts/tideshift"),
        ])
        .output()
        .expect("running helm template");
    assert!(
        rendered.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8_lossy(&rendered.stdout).to_string();
    let mut checked = false;
    for document in serde_yaml::Deserializer::from_str(&text) {
        let Ok(object) = <Value as serde::Deserialize>::deserialize(document) else {
            continue;
        };
        if object["kind"] != "Deployment" {
            continue;
        }
        checked = true;
        let pod = &object["spec"]["template"]["spec"];
        if pod["securityContext"]["runAsNonRoot"] != true {
            problems.push(format!(
                "chart pod securityContext: {}",
                pod["securityContext"]
            ));
        }
        for container in pod["containers"].as_array().into_iter().flatten() {
            let sc = &container["securityContext"];
            if sc["readOnlyRootFilesystem"] != true
                || sc["allowPrivilegeEscalation"] != false
                || sc["runAsUser"] == 0
            {
                problems.push(format!("chart container securityContext: {sc}"));
            }
        }
    }
    if !checked {
        problems.push("no Deployment in the rendered chart".into());
    }
    let figures = Figures {
        passed: problems.is_empty(),
        wrong_scale_actions: wrong,
        lost_actions: 0,
        recovery_seconds: None,
    };
    report("security", &figures, &problems);
}

// ---- shifts interrupted by faults (3, 4, 5) ------------------------------------------------------

/// A namespace with payment (2) and training (8) under policy `shop` at 50 per replica.
async fn shift_scenario(env: &Env, class: &str) -> (Client, String, Namespaces) {
    let admin = common::client_from(&env.admin_kubeconfig).await;
    let ns = format!("faults-{class}-{}", suffix());
    let cleanup = Namespaces(env.admin_kubeconfig.clone(), vec![ns.clone()]);
    create_namespace(&admin, &ns).await;
    create_deployments(&admin, &ns, &[("payment", 2), ("training", 8)]).await;
    create_policy(&admin, &ns, &policy("shop", "", CHECKOUT, 50)).await;
    (admin, ns, cleanup)
}

/// A flash sale: a quarter of the demand per replica, so payment needs about four times as
/// many replicas (5 to 9 from 2) and training must give way first whatever the forecast's band:
/// at twice as many, payment 4 beside training 8 fit the capacity exactly, and whether training
/// moved depended on the band's width.
async fn start_shift(admin: &Client, ns: &str) {
    patch_policy(admin, ns, "shop", json!({"spec": {"online": [serde_yaml::from_str::<Value>(&format!(
        "{{name: payment, target: {{kind: Deployment, name: payment}}, demand: {{query: '{CHECKOUT}'}}, perReplica: 12, headroom: 0.1, quantile: 0.9, replicas: {{min: 1, max: 12}}, startup: 10s}}"
    )).expect("online workload")]}}))
    .await;
}

/// Pods of `app` that still hold capacity (not Succeeded or Failed).
async fn pods_holding(client: &Client, ns: &str, app: &str) -> Option<usize> {
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .ok()?;
    Some(
        pods.items
            .iter()
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded") | Some("Failed")
                )
            })
            .count(),
    )
}

/// Judge the writes made since `since` of a shift from `before` to `after`: batch first,
/// online never down, nothing applied twice, nothing lost. Returns (wrong, lost) and notes problems.
fn judge_shift(
    writes: &[Write],
    since: f64,
    ns: &str,
    before: &BTreeMap<String, u32>,
    after: &BTreeMap<String, u32>,
    problems: &mut Vec<String>,
) -> (usize, usize) {
    let mut wrong = 0;
    let mut lost = 0;
    let writes: Vec<Write> = writes.iter().filter(|w| w.at >= since).cloned().collect();
    let payment = writes_to(&writes, ns, "payment");
    let training = writes_to(&writes, ns, "training");
    for w in payment.iter().filter(|w| w.to < w.from) {
        wrong += 1;
        problems.push(format!("payment scaled down: {w:?}"));
    }
    // A shift may come in steps as the forecast moves, but the same action is never applied
    // twice and no workload goes back and forth.
    for (name, list) in [("payment", &payment), ("training", &training)] {
        for pair in list.windows(2) {
            let (first, second) = (pair[0], pair[1]);
            if second.to == first.to {
                wrong += 1;
                problems.push(format!(
                    "{name}: the same write applied twice: {first:?} {second:?}"
                ));
            } else if (second.to > second.from) != (first.to > first.from) {
                wrong += 1;
                problems.push(format!("{name} went back and forth: {first:?} {second:?}"));
            }
        }
    }
    if after["payment"] <= before["payment"] {
        lost += 1;
        problems.push(format!("payment never grew: {before:?} -> {after:?}"));
    }
    if after["training"] >= before["training"] {
        lost += 1;
        problems.push(format!("training never gave way: {before:?} -> {after:?}"));
    }
    if let (Some(grow), Some(shrink)) = (payment.first(), training.first())
        && grow.at < shrink.at
    {
        wrong += 1;
        problems.push(format!(
            "payment grew before training shrank: {grow:?} {shrink:?}"
        ));
    }
    (wrong, lost)
}

/// The end of a mid-shift fault: `times` is (shift started, fault over). Waits for the shift to
/// complete, lets a few more cycles pass (nothing may be applied again), and judges every write
/// since the shift started. Returns the settled replicas and the class's figures.
async fn finish_shift(
    fault: &str,
    (audit, admin): (&Audit, &Client),
    ns: &str,
    daemon: &mut Daemon,
    before: &BTreeMap<String, u32>,
    (shift_from, back): (f64, f64),
    problems: &mut Vec<String>,
) -> (BTreeMap<String, u32>, Figures) {
    let after = wait_until(
        &format!("the shift to complete after the {fault}"),
        Duration::from_secs(180),
        async || {
            let desired = settled(admin, ns, "shop").await?;
            (desired["payment"] > before["payment"]).then_some(desired)
        },
    )
    .await;
    let recovery = unix_now() - back;
    if !daemon.alive() {
        problems.push(format!("the daemon exited during the {fault}"));
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    let writes = audit.daemon_writes(ns);
    let (wrong, lost) = judge_shift(&writes, shift_from, ns, before, &after, problems);
    // What the API server applied that the daemon never heard back about (an answer lost to
    // the fault): not wrong in itself, and judged above with the rest.
    let logged = daemon.logged_writes();
    let unheard: Vec<&Write> = writes
        .iter()
        .filter(|w| w.from != w.to)
        .filter(|w| {
            !logged
                .iter()
                .any(|l| l.target == w.target && l.from == w.from && l.to == w.to)
        })
        .collect();
    eprintln!(
        "{fault}: {before:?} -> {after:?}, writes (audit) {writes:?}, applied without the daemon hearing back: {unheard:?}"
    );
    let figures = Figures {
        passed: problems.is_empty(),
        wrong_scale_actions: wrong,
        lost_actions: lost,
        recovery_seconds: Some((recovery * 10.0).round() / 10.0),
    };
    (after, figures)
}

// ---- 3. API server restart mid-shift ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_restart_mid_shift_resumes_and_completes_once() {
    let Some(env) = testbed_env() else { return };
    let _serial = SERIAL.lock().await;
    let (admin, ns, _cleanup) = shift_scenario(&env, "apiserver").await;
    let mut daemon = Daemon::spawn(
        &env,
        &env.prometheus_url,
        &env.metrics_addr,
        &["--namespace", &ns, "--shrink-wait", "120s"],
    );
    let before = wait_settled(&admin, &ns, "shop", Duration::from_secs(240)).await;
    let mut problems = Vec::new();

    // Hold the shift between its halves: with the controller-manager frozen, the shrunk
    // training pods stay, so the daemon waits for them before growing payment.
    testbed(&env, &["pause", "kube-controller-manager"]);
    let resume_cm = ResumeOnDrop(env.script.clone(), "kube-controller-manager");
    let shift_from = unix_now();
    start_shift(&admin, &ns).await;
    wait_until(
        "the daemon to shrink training",
        Duration::from_secs(60),
        async || {
            (!writes_to(&env.audit.daemon_writes(&ns), &ns, "training").is_empty()).then_some(())
        },
    )
    .await;
    if replicas(&admin, &ns, "payment").await != Some(before["payment"]) {
        problems.push("payment grew before the shrunk pods were gone".into());
    }
    // Mid-shift: batch shrunk, online not yet grown. Restart the API server.
    testbed(&env, &["restart", "kube-apiserver"]);
    let back = unix_now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(resume_cm);
    let (after, mut figures) = finish_shift(
        "API server restart",
        (&env.audit, &admin),
        &ns,
        &mut daemon,
        &before,
        (shift_from, back),
        &mut problems,
    )
    .await;
    // The daemon's watch came back too: the sale ends (a change made after the restart) and
    // capacity returns to batch.
    set_per_replica(&admin, &ns, "shop", "payment", 50).await;
    let back_to_batch = wait_until(
        "the daemon to see a policy change made after the restart",
        Duration::from_secs(120),
        async || {
            let desired = settled(&admin, &ns, "shop").await?;
            (desired["training"] > after["training"]).then_some(desired)
        },
    )
    .await;
    eprintln!("after the sale: {back_to_batch:?}");
    figures.passed = problems.is_empty();
    report("apiserver_restart", &figures, &problems);
}

/// SIGCONT a paused component when the test ends, however it ends.
struct ResumeOnDrop(String, &'static str);

impl Drop for ResumeOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.0)
            .args(["resume", self.1])
            .status();
    }
}

// ---- 4. etcd stall -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_stall_mid_shift_no_crash_no_wrong_writes_resumes() {
    let Some(env) = testbed_env() else { return };
    let _serial = SERIAL.lock().await;
    let (admin, ns, _cleanup) = shift_scenario(&env, "etcd").await;
    let mut daemon = Daemon::spawn(
        &env,
        &env.prometheus_url,
        &env.metrics_addr,
        &["--namespace", &ns, "--shrink-wait", "60s"],
    );
    let before = wait_settled(&admin, &ns, "shop", Duration::from_secs(240)).await;
    let mut problems = Vec::new();

    let shift_from = unix_now();
    start_shift(&admin, &ns).await;
    testbed(&env, &["pause", "etcd"]);
    let resume = ResumeOnDrop(env.script.clone(), "etcd");
    tokio::time::sleep(Duration::from_secs(20)).await;
    drop(resume);
    let back = unix_now();
    let (_, figures) = finish_shift(
        "etcd stall",
        (&env.audit, &admin),
        &ns,
        &mut daemon,
        &before,
        (shift_from, back),
        &mut problems,
    )
    .await;
    report("etcd_stall", &figures, &problems);
}

// ---- leader election: shared --------------------------------------------------------------------

/// The chart's RBAC lets the daemon read and renew only its release's Lease, `tideshift` in
/// tideshift-system. The classes run one at a time, so it is free.
const LEASE: &str = "tideshift";
const LEASE_NAMESPACE: &str = "tideshift-system";

fn leases(admin: &Client) -> Api<k8s_openapi::api::coordination::v1::Lease> {
    Api::namespaced(admin.clone(), LEASE_NAMESPACE)
}

/// Clear what an earlier (killed) run may have left, and delete it again at the end.
struct LeaseCleanup(Client);

impl LeaseCleanup {
    async fn new(admin: &Client) -> LeaseCleanup {
        let _ = leases(admin).delete(LEASE, &DeleteParams::default()).await;
        LeaseCleanup(admin.clone())
    }

    async fn expect_holder(&self, who: &str, problems: &mut Vec<String>) {
        let holder = leases(&self.0)
            .get(LEASE)
            .await
            .ok()
            .and_then(|l| l.spec?.holder_identity);
        if holder.as_deref() != Some(who) {
            problems.push(format!("lease holder at the end: {holder:?}"));
        }
    }

    async fn delete(self) {
        let _ = leases(&self.0)
            .delete(LEASE, &DeleteParams::default())
            .await;
    }
}

/// The chart's default lease timings (`charts/tideshift/values.yaml`), as the flags the
/// chart renders from them: what a user who installs the chart gets.
struct ChartTimings {
    lease_duration: String,
    renew_deadline: String,
    retry_period: String,
    api_timeout: String,
}

impl ChartTimings {
    fn read() -> ChartTimings {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/tideshift/values.yaml");
        let text = std::fs::read_to_string(path).expect("the chart's values.yaml");
        let values: Value = serde_yaml::from_str(&text).expect("values.yaml is YAML");
        let text = |v: &Value| v.as_str().expect("a duration in values.yaml").to_string();
        ChartTimings {
            lease_duration: text(&values["leaderElection"]["leaseDuration"]),
            renew_deadline: text(&values["leaderElection"]["renewDeadline"]),
            retry_period: text(&values["leaderElection"]["retryPeriod"]),
            api_timeout: text(&values["apiTimeout"]),
        }
    }

    fn seconds(duration: &str) -> f64 {
        duration
            .parse::<tideshift::policy::PolicyDuration>()
            .expect("a duration")
            .as_secs_f64()
    }

    /// The longest takeover these timings allow after a leader dies: a lease after the
    /// standby first saw the last renewal, which it sees within a retry period.
    fn takeover_bound(&self) -> f64 {
        Self::seconds(&self.lease_duration) + Self::seconds(&self.retry_period)
    }
}

/// A replica of the daemon with leader election on the chart's Lease and the chart's default
/// timings, naming itself `identity` (in its User-Agent too).
fn replica(
    env: &Env,
    kubeconfig: &str,
    identity: &str,
    metrics_addr: &str,
    ns: &str,
    extra: &[&str],
) -> Daemon {
    let timings = ChartTimings::read();
    let mut args = vec![
        "--namespace",
        ns,
        "--leader-election",
        "--lease-name",
        LEASE,
        "--identity",
        identity,
        "--lease-duration",
        &timings.lease_duration,
        "--renew-deadline",
        &timings.renew_deadline,
        "--retry-period",
        &timings.retry_period,
        "--api-timeout",
        &timings.api_timeout,
    ];
    args.extend_from_slice(extra);
    Daemon::spawn_with(kubeconfig, &env.prometheus_url, metrics_addr, &args)
}

async fn wait_leading(daemon: &Daemon, who: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while daemon.metric("tideshift_leader", &[]).await != Some(1.0) {
        let log = daemon.log_text();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        assert!(
            Instant::now() < deadline,
            "{who} did not lead within 60 s; its log ends with {tail:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Replica a (through `a_kubeconfig`), leading, and replica b standing by, then the policy
/// settled: (a, b, the settled replicas).
async fn two_replicas(
    env: &Env,
    admin: &Client,
    ns: &str,
    a_kubeconfig: &str,
    extra: &[&str],
) -> (Daemon, Daemon, BTreeMap<String, u32>) {
    let a = replica(env, a_kubeconfig, "replica-a", &env.metrics_addr, ns, extra);
    wait_leading(&a, "replica a").await;
    let b_addr = free_addr();
    let b = replica(env, &env.daemon_kubeconfig, "replica-b", &b_addr, ns, extra);
    let before = wait_settled(admin, ns, "shop", Duration::from_secs(240)).await;
    (a, b, before)
}

/// A flash sale with the controller-manager frozen: replica a shrinks training, whose pods stay,
/// and waits for them. Returns the controller-manager's resumption (on drop) and when the
/// shift began.
async fn shift_held_mid_way(env: &Env, admin: &Client, ns: &str) -> (ResumeOnDrop, f64) {
    testbed(env, &["pause", "kube-controller-manager"]);
    let resume_cm = ResumeOnDrop(env.script.clone(), "kube-controller-manager");
    let shift_from = unix_now();
    start_shift(admin, ns).await;
    wait_until(
        "replica a to shrink training",
        Duration::from_secs(60),
        async || {
            writes_to(&env.audit.daemon_writes(ns), ns, "training")
                .iter()
                .any(|w| w.by == "replica-a" && w.at >= shift_from)
                .then_some(())
        },
    )
    .await;
    (resume_cm, shift_from)
}

/// When `who` took the Lease after `after`: its first successful Lease write since (a standby
/// only reads the Lease), from the audit log.
async fn taken_over(audit: &Audit, who: &str, after: f64) -> f64 {
    wait_until(
        &format!("{who} to take the Lease over"),
        Duration::from_secs(60),
        async || {
            audit
                .lease_writes(LEASE_NAMESPACE, LEASE)
                .iter()
                .find(|r| r.by == who && r.succeeded() && r.at > after)
                .map(|r| r.at)
        },
    )
    .await
}

/// Writes in `ns` by a replica that did not lead at the time: before `a` lost the lease
/// (`lost`), only `a` may write; from when `b` took it (`took_over`), only `b`.
fn judge_writers(
    writes: &[Write],
    (a, lost): (&str, f64),
    (b, took_over): (&str, f64),
    problems: &mut Vec<String>,
) -> usize {
    let mut wrong = 0;
    for w in writes.iter().filter(|w| w.daemon) {
        let rightful = (w.by == a && w.at < lost) || (w.by == b && w.at >= took_over);
        if !rightful {
            wrong += 1;
            problems.push(format!(
                "{} wrote while it did not lead ({a} lost the lease at {lost:.1}, {b} took it at {took_over:.1}): {w:?}",
                w.by
            ));
        }
    }
    wrong
}

/// Events are writes too; each names the replica that recorded it.
async fn judge_events(
    admin: &Client,
    ns: &str,
    (a, lost): (&str, f64),
    b: &str,
    problems: &mut Vec<String>,
) {
    let events = Api::<Event>::namespaced(admin.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mut recorded = 0;
    for event in &events {
        let Some(at) = event.event_time.as_ref() else {
            continue;
        };
        let at = at.0.as_millisecond() as f64 / 1000.0;
        recorded += 1;
        let by = event.reporting_instance.as_deref().unwrap_or("");
        if (by == b && at < lost) || (by == a && at > lost + 1.0) {
            problems.push(format!(
                "Event {:?} by {by} at {at:.1} ({a} lost the lease at {lost:.1})",
                event.reason
            ));
        }
    }
    if recorded == 0 {
        problems.push("no Events recorded by either replica".into());
    }
}

// ---- 5. leader loss ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_mid_shift_standby_takes_over_and_never_two_writers() {
    let Some(env) = testbed_env() else { return };
    let _serial = SERIAL.lock().await;
    let (admin, ns, _cleanup) = shift_scenario(&env, "leader").await;
    let lease = LeaseCleanup::new(&admin).await;
    let (mut a, b, before) = two_replicas(
        &env,
        &admin,
        &ns,
        &env.daemon_kubeconfig,
        &["--shrink-wait", "90s"],
    )
    .await;
    let mut problems = Vec::new();
    if b.metric("tideshift_leader", &[]).await != Some(0.0) {
        problems.push("replica b leads while a holds the lease".into());
    }
    // Mid-shift: a shrinks training and waits for its pods; then a dies.
    let (resume_cm, shift_from) = shift_held_mid_way(&env, &admin, &ns).await;
    a.kill();
    let killed = unix_now();
    let took_over = taken_over(&env.audit, "replica-b", killed).await;
    let takeover = took_over - killed;
    // b must not grow payment while training's shrunk pods still hold the capacity.
    let mut grew_early = false;
    let until = unix_now() + 10.0;
    while unix_now() < until {
        if replicas(&admin, &ns, "payment")
            .await
            .is_some_and(|p| p > before["payment"])
            && pods_holding(&admin, &ns, "training")
                .await
                .is_some_and(|p| p > before["training"] as usize / 2)
        {
            grew_early = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut wrong = 0;
    if grew_early {
        wrong += 1;
        problems.push(
            "after the takeover payment grew while training's shrunk pods still held the capacity"
                .into(),
        );
    }
    drop(resume_cm);
    let after = wait_until(
        "replica b to complete the shift",
        Duration::from_secs(180),
        async || {
            let desired = settled(&admin, &ns, "shop").await?;
            (desired["payment"] > before["payment"]).then_some(desired)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes = env.audit.daemon_writes(&ns);
    wrong += judge_writers(
        &writes,
        ("replica-a", killed),
        ("replica-b", took_over),
        &mut problems,
    );
    judge_events(
        &admin,
        &ns,
        ("replica-a", killed),
        "replica-b",
        &mut problems,
    )
    .await;
    let (more_wrong, lost) = judge_shift(&writes, shift_from, &ns, &before, &after, &mut problems);
    wrong += more_wrong;
    eprintln!(
        "leader loss: takeover {takeover:.2}s, {before:?} -> {after:?}, writes (audit) {writes:?}"
    );
    // Failover in 5 s with the chart's defaults: the timings must allow it, and the measured
    // takeover must stay within what they allow (plus 1 s for the requests on a loaded
    // machine). The figure is the measured takeover.
    let bound = ChartTimings::read().takeover_bound();
    if bound > 5.0 {
        problems.push(format!(
            "the chart's lease timings allow a takeover of up to {bound:.1}s after a leader dies (goal: 5 s)"
        ));
    }
    if takeover > bound + 1.0 {
        problems.push(format!(
            "takeover took {takeover:.2}s; the chart's timings allow {bound:.1}s"
        ));
    }
    lease.expect_holder("replica-b", &mut problems).await;
    drop(b);
    lease.delete().await;
    let figures = Figures {
        passed: problems.is_empty(),
        wrong_scale_actions: wrong,
        lost_actions: lost,
        recovery_seconds: Some((takeover * 100.0).round() / 100.0),
    };
    report("leader_loss", &figures, &problems);
}

// ---- a leader paused past its lease -------------------------------------------------------------

/// A request the API proxy holds: it has the API server's answer, and gives it to the client
/// only when released.
struct HeldRequest {
    method: axum::http::Method,
    path: String,
    arrived: Option<tokio::sync::oneshot::Sender<()>>,
    release: Option<tokio::sync::oneshot::Receiver<()>>,
}

struct ApiProxyState {
    upstream: String,
    client: reqwest::Client,
    hold: Mutex<Option<HeldRequest>>,
}

/// Plain HTTP on loopback in front of the real API server (HTTPS): what one replica sees of the
/// cluster. It passes everything through (watches streamed), except one request it can be told
/// to hold: the answer is fetched at once, then kept until the test releases it. That places a
/// pause of the replica exactly between a read and the write decided on it.
struct ApiProxy {
    addr: SocketAddr,
    state: Arc<ApiProxyState>,
    server: tokio::task::JoinHandle<()>,
}

async fn api_proxy_handler(
    axum::extract::State(state): axum::extract::State<Arc<ApiProxyState>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    let held = {
        let mut hold = state.hold.lock().unwrap_or_else(|e| e.into_inner());
        let matches = hold.as_ref().is_some_and(|h| {
            h.method == method && h.path == path && !path_and_query.contains("watch")
        });
        if matches { hold.take() } else { None }
    };
    let headers = request.headers().clone();
    let Ok(body) = axum::body::to_bytes(request.into_body(), 64 << 20).await else {
        return axum::http::StatusCode::BAD_REQUEST.into_response();
    };
    let mut upstream = state
        .client
        .request(method, format!("{}{path_and_query}", state.upstream))
        .body(body);
    for (name, value) in &headers {
        if !matches!(
            name.as_str(),
            "host" | "connection" | "content-length" | "transfer-encoding"
        ) {
            upstream = upstream.header(name, value);
        }
    }
    let response = match upstream.send().await {
        Ok(response) => response,
        Err(e) => return (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = axum::http::StatusCode::from_u16(response.status().as_u16())
        .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    if let Some(mut held) = held {
        let bytes = response.bytes().await.unwrap_or_default();
        if let Some(arrived) = held.arrived.take() {
            let _ = arrived.send(());
        }
        if let Some(release) = held.release.take() {
            let _ = release.await;
        }
        return (status, [("content-type", content_type)], bytes).into_response();
    }
    let chunks = futures::stream::unfold(response, |mut response| async move {
        match response.chunk().await {
            Ok(Some(chunk)) => Some((Ok::<_, std::io::Error>(chunk), response)),
            _ => None,
        }
    });
    (
        status,
        [("content-type", content_type)],
        axum::body::Body::from_stream(chunks),
    )
        .into_response()
}

impl ApiProxy {
    async fn start(env: &Env) -> ApiProxy {
        let ca = std::fs::read(format!("{}/pki/ca.crt", env.state_dir)).expect("the test bed's CA");
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA certificate"))
            .build()
            .expect("HTTP client");
        let state = Arc::new(ApiProxyState {
            upstream: env.apiserver_url.trim_end_matches('/').to_string(),
            client,
            hold: Mutex::new(None),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the API proxy");
        let addr = listener.local_addr().expect("API proxy address");
        let app = axum::Router::new()
            .fallback(api_proxy_handler)
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ApiProxy {
            addr,
            state,
            server,
        }
    }

    /// A kubeconfig for the daemon's ServiceAccount through this proxy.
    fn kubeconfig(&self, env: &Env, dir: &std::path::Path) -> String {
        let text = std::fs::read_to_string(&env.daemon_kubeconfig).expect("daemon kubeconfig");
        let token = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .expect("token in the daemon kubeconfig");
        let path = dir.join("proxied.kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: proxy\n  cluster: {{server: 'http://{}'}}\nusers:\n- name: tideshift\n  user: {{token: '{token}'}}\ncontexts:\n- name: proxy\n  context: {{cluster: proxy, user: tideshift, namespace: {LEASE_NAMESPACE}}}\ncurrent-context: proxy\n",
                self.addr
            ),
        )
        .expect("writing the proxied kubeconfig");
        path.display().to_string()
    }

    /// Hold the next `method path` (not a watch). Returns (arrived, release).
    fn hold_next(
        &self,
        method: axum::http::Method,
        path: &str,
    ) -> (
        tokio::sync::oneshot::Receiver<()>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let (arrived_tx, arrived_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel();
        *self.state.hold.lock().unwrap_or_else(|e| e.into_inner()) = Some(HeldRequest {
            method,
            path: path.to_string(),
            arrived: Some(arrived_tx),
            release: Some(release_rx),
        });
        (arrived_rx, release_tx)
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// SIGSTOP / SIGCONT a process; SIGCONT again when dropped, however the test ends.
struct Paused(i32);

impl Paused {
    fn stop(pid: u32) -> Paused {
        let pid = pid as i32;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(
            unsafe { libc::kill(pid, libc::SIGSTOP) },
            0,
            "SIGSTOP {pid}"
        );
        // Stopped means state T in /proc/<pid>/stat (the third field).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            if state == Some("T") {
                break;
            }
            assert!(Instant::now() < deadline, "{pid} did not stop: {stat}");
            std::thread::sleep(Duration::from_millis(10));
        }
        Paused(pid)
    }

    fn resume(self) {}
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_paused_past_its_lease_never_writes_after_the_takeover() {
    let Some(env) = testbed_env() else { return };
    let _serial = SERIAL.lock().await;
    let (admin, ns, _cleanup) = shift_scenario(&env, "pause").await;
    let lease = LeaseCleanup::new(&admin).await;
    let proxy = ApiProxy::start(&env).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let proxied = proxy.kubeconfig(&env, dir.path());
    // Replica a reaches the cluster through the proxy; b directly.
    let (mut a, b, before) =
        two_replicas(&env, &admin, &ns, &proxied, &["--shrink-wait", "90s"]).await;
    let mut problems = Vec::new();
    // Mid-shift: a shrinks training and waits for its pods (the controller-manager is frozen).
    let (resume_cm, shift_from) = shift_held_mid_way(&env, &admin, &ns).await;
    // Its next read of payment is the one its grow of payment is decided on: hold its answer,
    // let the pods go, and pause a as soon as that read reaches the API server.
    let (arrived, release) = proxy.hold_next(
        axum::http::Method::GET,
        &format!("/apis/apps/v1/namespaces/{ns}/deployments/payment"),
    );
    drop(resume_cm);
    tokio::time::timeout(Duration::from_secs(120), arrived)
        .await
        .expect("replica a to read payment before growing it")
        .expect("the proxy held the read");
    let paused = Paused::stop(a.pid());
    let stopped = unix_now();
    // The answer (payment as it was) waits in a's socket while it is stopped.
    let _ = release.send(());

    // b takes over and completes the shift.
    let took_over = taken_over(&env.audit, "replica-b", stopped).await;
    let takeover = took_over - stopped;
    let after = wait_until(
        "replica b to complete the shift",
        Duration::from_secs(180),
        async || {
            let desired = settled(&admin, &ns, "shop").await?;
            (desired["payment"] > before["payment"]).then_some(desired)
        },
    )
    .await;
    // a wakes up: it had the read it would have written on, a lease long gone, and b's writes
    // since. It must not write anything.
    paused.resume();
    let resumed = unix_now();
    tokio::time::sleep(Duration::from_secs(12)).await;
    if !a.alive() {
        problems.push("replica a exited after it was resumed".into());
    }
    if a.metric("tideshift_leader", &[]).await != Some(0.0) {
        problems.push("replica a leads again after it was resumed".into());
    }
    let requests = env.audit.requests("");
    let mut wrong = 0;
    for r in requests
        .iter()
        .filter(|r| r.by == "replica-a" && r.at > stopped)
        .filter(|r| r.resource != "leases")
    {
        if r.succeeded() {
            wrong += 1;
            problems.push(format!("replica a wrote after it was deposed: {r:?}"));
        } else {
            eprintln!("replica a's write refused by the API server (precondition): {r:?}");
        }
    }
    let writes = env.audit.daemon_writes(&ns);
    wrong += judge_writers(
        &writes,
        ("replica-a", stopped),
        ("replica-b", took_over),
        &mut problems,
    );
    let (more_wrong, lost) = judge_shift(&writes, shift_from, &ns, &before, &after, &mut problems);
    wrong += more_wrong;
    let fenced = a
        .log_text()
        .lines()
        .filter(|l| l.contains("leadership lost or running out"))
        .count();
    // What a did once resumed, in its own words.
    for (at, fields) in a.logged_any() {
        if at >= resumed - 1.0 {
            eprintln!("replica a after the pause: {fields}");
        }
    }
    eprintln!(
        "leader pause: a stopped at {stopped:.1}, b took over after {takeover:.2}s, a resumed at {resumed:.1} ({fenced} writes fenced in a's log); {before:?} -> {after:?}; writes (audit) {writes:?}"
    );
    lease.expect_holder("replica-b", &mut problems).await;
    drop(a);
    drop(b);
    lease.delete().await;
    let figures = Figures {
        passed: problems.is_empty(),
        wrong_scale_actions: wrong,
        lost_actions: lost,
        recovery_seconds: Some((takeover * 100.0).round() / 100.0),
    };
    report("leader_pause", &figures, &problems);
}

// ---- another writer, remembered across failover and restart -----------------------------------

/// The status's record of another writer of `workload`: (since, message).
async fn other_writer(admin: &Client, ns: &str, workload: &str) -> Option<(String, String)> {
    let (_, status) = status_of(admin, ns, "shop").await?;
    let w = status.workloads.iter().find(|w| w.name == workload)?;
    let other = w.other_writer.as_ref()?;
    Some((other.since.clone(), other.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_writer_is_remembered_across_failover_and_restart() {
    let Some(env) = testbed_env() else { return };
    let _serial = SERIAL.lock().await;
    let (admin, ns, _cleanup) = shift_scenario(&env, "memory").await;
    let lease = LeaseCleanup::new(&admin).await;
    let hold = 40.0;
    let extra = ["--conflict-hold", "40s"];
    let (mut a, mut b, before) =
        two_replicas(&env, &admin, &ns, &env.daemon_kubeconfig, &extra).await;
    let mut problems = Vec::new();
    let mut wrong = 0;
    let mut lost = 0;

    // 1. A person scales training by hand; the leader sees another writer and leaves it.
    let by_hand = before["training"].saturating_sub(2);
    let scaled = unix_now();
    assert!(
        scale_by_hand(&admin, &ns, "training", by_hand).await,
        "scaling by hand"
    );
    let (since, message) = wait_until(
        "the status to record another writer of training",
        Duration::from_secs(60),
        async || other_writer(&admin, &ns, "training").await,
    )
    .await;
    eprintln!("recorded: {since} {message}");
    let since = chrono::DateTime::parse_from_rfc3339(&since)
        .map(|t| t.timestamp() as f64)
        .unwrap_or(scaled);

    // 2. The leader dies; the standby takes over and must keep the hold.
    a.kill();
    let killed = unix_now();
    let took_over = taken_over(&env.audit, "replica-b", killed).await;
    let hold_end = since + hold;
    let conflict_after_takeover = poll_until(Duration::from_secs(30), async || {
        let (_, status) = status_of(&admin, &ns, "shop").await?;
        let last = status.conditions.iter().find(|c| c.type_ == "Conflict")?;
        let written_by_b = env
            .audit
            .requests(&ns)
            .iter()
            .any(|r| r.resource == "shiftpolicies" && r.by == "replica-b" && r.succeeded());
        (written_by_b && last.status == "True").then(|| last.message.clone())
    })
    .await;
    if !conflict_after_takeover
        .as_ref()
        .is_some_and(|m| m.contains("training"))
    {
        problems.push(format!(
            "after the takeover, replica b's Conflict does not name training: {conflict_after_takeover:?}"
        ));
    }
    let wait = (hold_end - 2.0 - unix_now()).max(0.0);
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    for w in writes_to(&env.audit.daemon_writes(&ns), &ns, "training")
        .into_iter()
        .filter(|w| w.at > scaled && w.at < hold_end - 1.0)
    {
        wrong += 1;
        problems.push(format!(
            "{} wrote over the other writer within the hold (taken over at {took_over:.1}): {w:?}",
            w.by
        ));
    }
    // After the hold the plan applies again.
    let resumed = wait_until(
        "the plan to apply again after the hold",
        Duration::from_secs(90),
        async || {
            let desired = settled(&admin, &ns, "shop").await?;
            let (_, status) = status_of(&admin, &ns, "shop").await?;
            (!is_true(&status, "Conflict")
                && replicas(&admin, &ns, "training").await != Some(by_hand))
            .then_some(desired)
        },
    )
    .await;
    let recovery = (unix_now() - hold_end).max(0.0);
    eprintln!("after the hold: {resumed:?}");
    if resumed["training"] == by_hand {
        lost += 1;
    }

    // 3. b dies too, and while no replica runs a person scales training; a new replica starts.
    b.kill();
    let gap = unix_now();
    let current = replicas(&admin, &ns, "training").await.unwrap_or(0);
    let by_hand = if current >= 2 {
        current - 2
    } else {
        current + 2
    };
    assert!(
        scale_by_hand(&admin, &ns, "training", by_hand).await,
        "scaling by hand"
    );
    let c_addr = free_addr();
    let c = replica(
        &env,
        &env.daemon_kubeconfig,
        "replica-c",
        &c_addr,
        &ns,
        &extra,
    );
    wait_leading(&c, "replica c").await;
    let seen = poll_until(Duration::from_secs(60), async || {
        other_writer(&admin, &ns, "training")
            .await
            .filter(|(_, m)| m.contains(&format!("to {by_hand} ")))
    })
    .await;
    eprintln!("replica c: {seen:?}");
    if seen.is_none() {
        problems.push(format!(
            "replica c did not report the write to {by_hand} made while no replica ran"
        ));
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    for w in writes_to(&env.audit.daemon_writes(&ns), &ns, "training")
        .into_iter()
        .filter(|w| w.at > gap)
    {
        wrong += 1;
        problems.push(format!(
            "{} wrote over a write made while no replica ran: {w:?}",
            w.by
        ));
    }
    drop(c);
    lease.delete().await;
    let figures = Figures {
        passed: problems.is_empty(),
        wrong_scale_actions: wrong,
        lost_actions: lost,
        recovery_seconds: Some((recovery * 10.0).round() / 10.0),
    };
    report("conflict_memory", &figures, &problems);
}

// ---- Job selector targets -----------------------------------------------------------------------

/// A Job of the finance team: `parallelism` pods of 0.1 core that run for an hour (KWOK).
fn report_job(name: &str, parallelism: i32) -> k8s_openapi::api::batch::v1::Job {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"team": "finance"}},
        "spec": {
            "parallelism": parallelism,
            "completions": 1000,
            "template": {
                "metadata": {
                    "labels": {"app": "reports"},
                    // Both: kwok's delay is at most the jitter bound (5 s by default).
                    "annotations": {
                        "pod-complete.stage.kwok.x-k8s.io/delay": "1h",
                        "pod-complete.stage.kwok.x-k8s.io/jitter-delay": "1h"
                    }
                },
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"type": "kwok"},
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{
                        "name": "app",
                        "image": "registry.invalid/tideshift/fake:1",
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}
                    }]
                }
            }
        }
    }))
    .expect("job object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_selector_counts_every_jobs_pods_and_sees_other_writers() {
    let Some(env) = testbed_env() else { return };
    let _serial = SERIAL.lock().await;
    let admin = common::client_from(&env.admin_kubeconfig).await;
    let ns = format!("faults-jobs-{}", suffix());
    let _cleanup = Namespaces(env.admin_kubeconfig.clone(), vec![ns.clone()]);
    create_namespace(&admin, &ns).await;
    create_deployments(&admin, &ns, &[("payment", 2)]).await;
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(admin.clone(), &ns);
    let names = ["report-a", "report-b", "report-c"];
    for name in names {
        jobs.create(&PostParams::default(), &report_job(name, 2))
            .await
            .unwrap_or_else(|e| panic!("creating Job {name}: {e}"));
    }
    // payment and the three Jobs share 1 core: the Jobs take what payment leaves, so a
    // flash sale shrinks them.
    let yaml = policy_yaml("shop", "", CHECKOUT, 50)
        .replace("capacity: {cpu: 1200m, memory: 12Gi}", "capacity: {cpu: 1000m, memory: 12Gi}")
        .replace(
            "- name: training\n      target: {kind: Deployment, name: training}\n      replicas: {min: 0, max: 12}",
            "- name: reports\n      target: {kind: Job, selector: {team: finance}}\n      replicas: {min: 1, max: 12}",
        );
    assert!(yaml.contains("selector: {team: finance}"), "{yaml}");
    let shop: ShiftPolicy = serde_yaml::from_str(&yaml).expect("policy YAML");
    create_policy(&admin, &ns, &shop).await;
    let hold = 30.0;
    let daemon = Daemon::spawn(
        &env,
        &env.prometheus_url,
        &env.metrics_addr,
        &[
            "--namespace",
            &ns,
            "--shrink-wait",
            "90s",
            "--conflict-hold",
            "30s",
        ],
    );
    let before = wait_settled(&admin, &ns, "shop", Duration::from_secs(240)).await;
    wait_until(
        "the Jobs' pods to run",
        Duration::from_secs(120),
        async || {
            (pods_holding(&admin, &ns, "reports").await? == before["reports"] as usize)
                .then_some(())
        },
    )
    .await;
    eprintln!("settled: {before:?}");
    let mut problems = Vec::new();
    let mut wrong = 0;
    let mut lost = 0;

    // 1. A flash sale with the controller-manager frozen: the Jobs that shrink keep their pods,
    //    so payment must wait for every Job's pods, not the first Job's.
    testbed(&env, &["pause", "kube-controller-manager"]);
    let resume_cm = ResumeOnDrop(env.script.clone(), "kube-controller-manager");
    let shift_from = unix_now();
    start_shift(&admin, &ns).await;
    let shrunk_at = wait_until(
        "the daemon to shrink the Jobs",
        Duration::from_secs(60),
        async || {
            env.audit
                .daemon_writes(&ns)
                .iter()
                .find(|w| w.at >= shift_from && w.target.starts_with("Job ") && w.to < w.from)
                .map(|w| w.at)
        },
    )
    .await;
    // The Jobs' new total, from the Jobs themselves (the status is written only when the
    // cycle, which waits for the pods, is over).
    let desired_reports = wait_until(
        "the Jobs' parallelism to add up to less than before",
        Duration::from_secs(30),
        async || {
            let total: u32 = jobs
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .iter()
                .filter_map(|j| j.spec.as_ref())
                .map(|s| {
                    if s.suspend == Some(true) {
                        0
                    } else {
                        s.parallelism.unwrap_or(1).max(0) as u32
                    }
                })
                .sum();
            (total < before["reports"]).then_some(total)
        },
    )
    .await;
    let mut grew_early = None;
    let mut timeline = Vec::new();
    let until = unix_now() + 15.0;
    while unix_now() < until {
        let payment = replicas(&admin, &ns, "payment").await;
        let pods = pods_holding(&admin, &ns, "reports").await;
        timeline.push((
            ((unix_now() - shift_from) * 10.0).round() / 10.0,
            payment,
            pods,
        ));
        if payment.is_some_and(|p| p > before["payment"])
            && pods.is_some_and(|p| p > desired_reports as usize)
        {
            grew_early = Some((payment, pods));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("seconds after the sale began, payment, the Jobs' pods: {timeline:?}");
    // The window must really have held more pods than the Jobs' new total, or the check above
    // proves nothing.
    if !timeline
        .iter()
        .any(|(_, _, pods)| pods.is_some_and(|p| p > desired_reports as usize))
    {
        problems.push(format!(
            "the Jobs' pods never outnumbered their new total {desired_reports} while the controller-manager was frozen: {timeline:?}"
        ));
    }
    if let Some((payment, pods)) = grew_early {
        wrong += 1;
        problems.push(format!(
            "payment grew to {payment:?} while the Jobs still had {pods:?} pods (their new total is {desired_reports})"
        ));
    }
    drop(resume_cm);
    let resumed = unix_now();
    let after = wait_until(
        "the shift to complete",
        Duration::from_secs(180),
        async || {
            let desired = settled(&admin, &ns, "shop").await?;
            (desired["payment"] > before["payment"]).then_some(desired)
        },
    )
    .await;
    let recovery = unix_now() - resumed;
    let writes = env.audit.daemon_writes(&ns);
    let payment_grew = writes_to(&writes, &ns, "payment")
        .into_iter()
        .find(|w| w.at >= shift_from && w.to > w.from)
        .map(|w| w.at);
    if payment_grew.is_some_and(|at| at < shrunk_at) {
        wrong += 1;
        problems.push("payment grew before the Jobs shrank".into());
    }
    for w in writes.iter().filter(|w| w.at >= shift_from) {
        if w.target.ends_with("/payment") && w.to < w.from {
            wrong += 1;
            problems.push(format!("payment scaled down: {w:?}"));
        }
    }
    if after["payment"] <= before["payment"] {
        lost += 1;
    }
    eprintln!("shift: {before:?} -> {after:?}, writes (audit) {writes:?}");

    // 2. A person sets one Job's parallelism by hand (resuming it if the sale suspended it, so
    //    its pods really change): another writer, never fought.
    let person = unix_now();
    let current = jobs
        .get("report-b")
        .await
        .ok()
        .and_then(|j| j.spec)
        .map_or(1, |s| {
            if s.suspend == Some(true) {
                0
            } else {
                s.parallelism.unwrap_or(1)
            }
        });
    jobs.patch(
        "report-b",
        &PatchParams {
            field_manager: Some("kubectl".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"spec": {"parallelism": current + 2, "suspend": false}})),
    )
    .await
    .expect("setting report-b's parallelism by hand");
    let conflict = wait_until(
        "Conflict=True naming report-b",
        Duration::from_secs(60),
        async || {
            let (_, status) = status_of(&admin, &ns, "shop").await?;
            condition(&status, "Conflict")
                .filter(|(s, _, m)| *s == "True" && m.contains("report-b"))
                .map(|(_, _, m)| m.to_string())
        },
    )
    .await;
    eprintln!("conflict: {conflict}");
    tokio::time::sleep(Duration::from_secs_f64(hold - 10.0)).await;
    for w in env
        .audit
        .daemon_writes(&ns)
        .into_iter()
        .filter(|w| w.at > person && w.target.starts_with("Job "))
    {
        wrong += 1;
        problems.push(format!(
            "the daemon wrote a Job another writer had just set: {w:?}"
        ));
    }
    drop(daemon);
    let figures = Figures {
        passed: problems.is_empty(),
        wrong_scale_actions: wrong,
        lost_actions: lost,
        // From the Jobs' pods being free to go (the controller-manager back) to the shift done.
        recovery_seconds: Some((recovery * 10.0).round() / 10.0),
    };
    report("job_selector", &figures, &problems);
}

// ---- 2. bad metric data ----------------------------------------------------------------------

/// What the test's scrape target serves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Data {
    Normal,
    NaN,
    Inf,
    /// The demand series is absent from the scrape (Prometheus marks it stale).
    Vanished,
    /// A second series where one was expected.
    Doubled,
    /// The request counter restarts from 0.
    CounterReset,
}

struct BadData {
    run: String,
    data: Mutex<(Data, f64, f64)>,
    checkout: tideshift::demo::Scenario,
}

impl BadData {
    /// Demand of the test's series: the test bed's `checkout` demand, so that the history
    /// (taken from `checkout` before the switch) and the live series agree.
    fn demand(&self, t: f64) -> f64 {
        self.checkout.demand_at(t)
    }

    fn render(&self) -> String {
        let now = unix_now();
        let mut state = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let (data, last, total) = *state;
        // The counter counts half of the demand in requests per second.
        let mut total = total + 0.5 * self.demand(now) * (now - last).max(0.0);
        if data == Data::CounterReset && total > 1000.0 {
            total = 0.0;
        }
        *state = (data, now, total);
        let run = &self.run;
        let value = match data {
            Data::NaN => "NaN".to_string(),
            Data::Inf => "+Inf".to_string(),
            _ => format!("{:.3}", self.demand(now)),
        };
        let mut text = String::from("# TYPE faults_demand gauge\n");
        if data != Data::Vanished {
            text.push_str(&format!("faults_demand{{run=\"{run}\"}} {value}\n"));
        }
        if data == Data::Doubled {
            text.push_str(&format!(
                "faults_demand{{run=\"{run}\",copy=\"b\"}} {value}\n"
            ));
        }
        text.push_str(&format!(
            "# TYPE faults_requests_total counter\nfaults_requests_total{{run=\"{run}\"}} {total:.3}\n"
        ));
        text
    }
}

/// Demand payment is served per replica normally, and during a fault: raised at the start of
/// each fault, so that a daemon planning on its history during the fault would scale payment
/// down; one that holds while demand is unusable does not. Once demand is readable again the
/// change applies (a lost action otherwise).
const PAYMENT_PER_REPLICA: u32 = 25;
const PAYMENT_PER_REPLICA_DURING: u32 = 100;
/// The policy's `guardrails.missingMetricsAfter`, and how much longer each fault lasts. The
/// grace is longer than the scale-down stabilization (20 s), so a daemon that planned on the
/// history during it would scale payment down before the grace is over.
const MISSING_AFTER: f64 = 40.0;
const PAST_MISSING: f64 = 20.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_metric_data_never_panics_nor_scales_online_down() {
    let Some(env) = testbed_env() else { return };
    let _serial = SERIAL.lock().await;
    let admin = common::client_from(&env.admin_kubeconfig).await;
    let id = suffix();
    let ns = format!("faults-data-{id}");
    let _cleanup = Namespaces(env.admin_kubeconfig.clone(), vec![ns.clone()]);
    create_namespace(&admin, &ns).await;
    create_deployments(
        &admin,
        &ns,
        &[("payment", 2), ("refund", 1), ("training", 6)],
    )
    .await;

    let run = format!("r{id}");
    let source = Arc::new(BadData {
        run: run.clone(),
        data: Mutex::new((Data::Normal, unix_now(), 0.0)),
        checkout: tideshift::demo::Scenario::parse(
            "checkout:baseline=120,daily=0.4,daily_peak=14:00,weekend=0.7,noise=0.05",
            unix_now() as i64,
        )
        .expect("the test bed's checkout scenario"),
    });
    let listener = tokio::net::TcpListener::bind(&env.faults_scrape_addr)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "binding the faults scrape target {}: {e}",
                env.faults_scrape_addr
            )
        });
    let served = source.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let served = served.clone();
            async move { served.render() }
        }),
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    struct Abort(tokio::task::JoinHandle<()>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _server = Abort(server);

    // Before `switch`, history comes from `checkout` (14 days backfilled); from then on, from
    // the test's series. Aggregations keep every label but `run` (and `copy`), so a doubled
    // series reaches the daemon as two series.
    let switch = unix_now() as i64 + 15;
    let history = |expr: &str| {
        format!(
            r#"label_replace({expr}, "run", "{run}", "", "") unless on() (vector(time()) > {switch})"#
        )
    };
    let payment_query = format!(
        r#"sum by (run, copy) (faults_demand{{run="{run}"}}) or {}"#,
        history(CHECKOUT)
    );
    let refund_query = format!(
        r#"sum by (run) (rate(faults_requests_total{{run="{run}"}}[30s])) or {}"#,
        history(&format!("0.5 * {CHECKOUT}"))
    );
    let online = |per_replica: u32| -> Value {
        serde_yaml::from_str(&format!(
            "[{{name: payment, target: {{kind: Deployment, name: payment}}, demand: {{query: '{}'}}, perReplica: {per_replica}, headroom: 0.1, quantile: 0.9, replicas: {{min: 1, max: 12}}, startup: 45s}}, {{name: refund, target: {{kind: Deployment, name: refund}}, demand: {{query: '{}'}}, perReplica: 50, headroom: 0.1, quantile: 0.9, replicas: {{min: 1, max: 12}}, startup: 45s}}]",
            payment_query.replace('\'', "''"),
            refund_query.replace('\'', "''"),
        ))
        .expect("online workloads")
    };
    let mut shop: Value = serde_yaml::from_str(&format!(
        r#"
apiVersion: tideshift.io/v1alpha1
kind: ShiftPolicy
metadata: {{name: shop}}
spec:
  interval: 3s
  capacity: {{cpu: 1200m, memory: 12Gi}}
  offline:
    - name: training
      target: {{kind: Deployment, name: training}}
      replicas: {{min: 0, max: 12}}
  forecast: {{step: 1m, history: 3d, horizon: 30m, seasonality: [1d], retrain: 10m}}
  guardrails:
    scaleDown: {{maxPercentPerMinute: 100, stabilization: 20s}}
    missingMetricsAfter: {MISSING_AFTER}s
"#
    ))
    .expect("policy YAML");
    shop["spec"]["online"] = online(PAYMENT_PER_REPLICA);
    let shop: ShiftPolicy = serde_json::from_value(shop).expect("policy");
    create_policy(&admin, &ns, &shop).await;
    let mut daemon = Daemon::spawn(
        &env,
        &env.prometheus_url,
        &env.metrics_addr,
        &["--namespace", &ns],
    );
    wait_settled(&admin, &ns, "shop", Duration::from_secs(240)).await;
    // Past the switch, on the test's own series.
    wait_until(
        "the switch to the test's series",
        Duration::from_secs(60),
        async || (unix_now() as i64 > switch + 10).then_some(()),
    )
    .await;
    let first = wait_settled(&admin, &ns, "shop", Duration::from_secs(60)).await;
    eprintln!("settled on the test's series: {first:?}");

    let mut problems = Vec::new();
    let mut wrong = 0;
    let mut lost = 0;
    let mut recovery: f64 = 0.0;
    for data in [Data::NaN, Data::Inf, Data::Vanished, Data::Doubled] {
        let before = wait_settled(&admin, &ns, "shop", Duration::from_secs(120)).await;
        // Where in the minute a fault starts decides how old the last good point on the
        // history grid (step 1m) is: start just after a whole minute, so the grace runs its
        // full length (a daemon planning on the history during it then has 35 s or more to
        // shrink payment). A doubled series starts just before one, so the duplicate lands on
        // the grid too.
        let start_at = if data == Data::Doubled {
            42.0..48.0
        } else {
            2.0..8.0
        };
        wait_until(
            "the fault's second of the minute",
            Duration::from_secs(70),
            async || start_at.contains(&(unix_now() % 60.0)).then_some(()),
        )
        .await;
        let from = unix_now();
        source.data.lock().unwrap_or_else(|e| e.into_inner()).0 = data;
        // The plan now wants payment smaller: only readable demand may say so.
        patch_policy(
            &admin,
            &ns,
            "shop",
            json!({"spec": {"online": online(PAYMENT_PER_REPLICA_DURING)}}),
        )
        .await;
        let mut missing_seen = None;
        let mut reasons = BTreeMap::new();
        let phase_end = from + MISSING_AFTER + PAST_MISSING;
        while unix_now() < phase_end {
            if let Some((_, status)) = status_of(&admin, &ns, "shop").await {
                if let Some(("True", "MetricsUnavailable", message)) =
                    condition(&status, "Degraded")
                    && message.contains("payment")
                {
                    missing_seen.get_or_insert(unix_now() - from);
                }
                // Why an online workload was planned down, for the record.
                for w in status.workloads.iter().filter(|w| w.class == "online") {
                    if w.desired < w.current {
                        reasons
                            .entry(w.name.clone())
                            .or_insert_with(|| w.reason.clone().unwrap_or_default());
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if !reasons.is_empty() {
            eprintln!("{data:?}: planned down during the fault: {reasons:?}");
        }
        let ended = unix_now();
        // Past the grace, the daemon must have declared payment's demand missing.
        match missing_seen {
            Some(after) => eprintln!("{data:?}: payment reported missing after {after:.1}s"),
            None => problems.push(format!(
                "{data:?}: {:.0}s of unusable demand (grace {MISSING_AFTER}s) and payment never reported missing (Degraded/MetricsUnavailable)",
                ended - from
            )),
        }
        for w in env
            .audit
            .daemon_writes(&ns)
            .iter()
            .filter(|w| w.at >= from && w.at <= ended)
        {
            let online_down =
                (w.target.ends_with("/payment") || w.target.ends_with("/refund")) && w.to < w.from;
            let batch_up = w.target.ends_with("/training") && w.to > w.from;
            if w.target.ends_with("/payment") && w.to < w.from {
                wrong += 1;
                problems.push(format!(
                    "{data:?}: payment scaled down while its demand was unusable: {w:?}"
                ));
            } else if batch_up {
                wrong += 1;
                problems.push(format!(
                    "{data:?}: batch grew while payment's demand was unusable: {w:?}"
                ));
            } else if online_down {
                eprintln!("{data:?}: refund followed its own (readable) demand: {w:?}");
            }
        }
        let payment_now = replicas(&admin, &ns, "payment").await;
        if payment_now.is_some_and(|p| p < before["payment"]) {
            problems.push(format!(
                "{data:?}: payment at {payment_now:?} after the fault, {} before",
                before["payment"]
            ));
        }
        source.data.lock().unwrap_or_else(|e| e.into_inner()).0 = Data::Normal;
        let normal_again = unix_now();
        // Demand is readable again: the change made during the fault applies.
        let applied = wait_until(
            &format!("the change made during {data:?} to apply after it"),
            Duration::from_secs(120),
            async || {
                let desired = settled(&admin, &ns, "shop").await?;
                (desired["payment"] < before["payment"]).then_some(desired)
            },
        )
        .await;
        recovery = recovery.max(unix_now() - normal_again);
        eprintln!("{data:?}: {before:?} -> {applied:?}");
        if applied["payment"] >= before["payment"] {
            lost += 1;
        }
        patch_policy(
            &admin,
            &ns,
            "shop",
            json!({"spec": {"online": online(PAYMENT_PER_REPLICA)}}),
        )
        .await;
    }

    // A counter reset is not a drop in demand: `rate()` carries on, refund's demand stays
    // readable and near what it was.
    let before = wait_settled(&admin, &ns, "shop", Duration::from_secs(120)).await;
    let refund_demand = async || {
        daemon
            .metric("tideshift_demand", &["workload=\"refund\""])
            .await
    };
    let usual = refund_demand().await.unwrap_or(0.0);
    let from = unix_now();
    source.data.lock().unwrap_or_else(|e| e.into_inner()).0 = Data::CounterReset;
    let mut lowest = f64::INFINITY;
    let mut degraded = false;
    while unix_now() < from + MISSING_AFTER + PAST_MISSING {
        if let Some(demand) = refund_demand().await {
            lowest = lowest.min(demand);
        }
        if let Some((_, status)) = status_of(&admin, &ns, "shop").await {
            degraded |= is_true(&status, "Degraded");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    source.data.lock().unwrap_or_else(|e| e.into_inner()).0 = Data::Normal;
    if degraded {
        problems.push("CounterReset: the policy was Degraded by counter resets".into());
    }
    if lowest < 0.5 * usual {
        problems.push(format!(
            "CounterReset: refund's demand read as {lowest:.1} (usually {usual:.1})"
        ));
    }
    for w in env
        .audit
        .daemon_writes(&ns)
        .iter()
        .filter(|w| w.at >= from && w.target.ends_with("/refund") && w.to < w.from)
    {
        eprintln!(
            "CounterReset: refund scaled down (its demand: usually {usual:.1}, lowest {lowest:.1}): {w:?}"
        );
        if lowest < 0.8 * usual {
            wrong += 1;
            problems.push(format!(
                "CounterReset: refund scaled down on a reset: {w:?}"
            ));
        }
    }
    eprintln!(
        "CounterReset: refund's demand {usual:.1}, lowest {lowest:.1}; settled before {before:?}"
    );
    wait_until(
        "Ready, not Degraded, plan applied after the bad data",
        Duration::from_secs(120),
        async || {
            let desired = settled(&admin, &ns, "shop").await?;
            let (_, status) = status_of(&admin, &ns, "shop").await?;
            (!is_true(&status, "Degraded")).then_some(desired)
        },
    )
    .await;
    // The faults really went through Prometheus: its raw samples hold NaN and +Inf.
    let raw = reqwest::Client::new()
        .get(format!("{}/api/v1/query", env.prometheus_url))
        .query(&[("query", format!("faults_demand{{run=\"{run}\"}}[30m]"))])
        .send()
        .await
        .expect("querying Prometheus")
        .text()
        .await
        .unwrap_or_default();
    for injected in ["\"NaN\"", "\"+Inf\"", "\"copy\":\"b\""] {
        if !raw.contains(injected) {
            problems.push(format!(
                "Prometheus never stored {injected} for the test's series"
            ));
        }
    }
    if !daemon.alive() {
        problems.push("the daemon exited".into());
    }
    if daemon.log_text().contains("panicked") {
        problems.push("the daemon panicked".into());
    }
    eprintln!(
        "bad data: writes (audit) {:?}",
        env.audit.daemon_writes(&ns)
    );
    let figures = Figures {
        passed: problems.is_empty(),
        wrong_scale_actions: wrong,
        lost_actions: lost,
        recovery_seconds: Some((recovery * 10.0).round() / 10.0),
    };
    report("bad_data", &figures, &problems);
}
