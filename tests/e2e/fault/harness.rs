//! What every fault class uses: the test bed's variables, figures, cluster objects, the
//! daemon under test.

use super::*;

// ---- environment -------------------------------------------------------------------------------

pub(crate) use common::TestBed;

pub(crate) fn testbed_env() -> Option<TestBed> {
    TestBed::from_env("the fault tests")
}

/// The classes share one cluster (and the test bed's components): one at a time.
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

pub(crate) fn suffix() -> String {
    format!("{:x}", (unix_now() * 10.0) as u64 % 0xffffff)
}

pub(crate) fn testbed(env: &TestBed, args: &[&str]) {
    let status = std::process::Command::new(&env.script)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", env.script));
    assert!(status.success(), "tests/e2e/testbed {args:?} failed");
}

/// Poll `check` every half second until it gives a value, or `None` after `timeout`.
pub(crate) async fn poll_until<T>(
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
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

/// Poll `check` every half second until it gives a value, or panic naming `what` after
/// `timeout`.
pub(crate) async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    wait_for(what, timeout, async || {
        check().await.ok_or_else(String::new)
    })
    .await
}

/// [`wait_until`] for a check that says why it is not there yet: the last reason is in the
/// panic message, so a timeout tells what the test was stuck on.
pub(crate) async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let why = match check().await {
            Ok(value) => return value,
            Err(why) => why,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}{}",
            if why.is_empty() {
                String::new()
            } else {
                format!("; last seen: {why}")
            }
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---- figures -----------------------------------------------------------------------------------

#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Figures {
    pub(crate) passed: bool,
    pub(crate) wrong_scale_actions: usize,
    pub(crate) lost_actions: usize,
    pub(crate) recovery_seconds: Option<f64>,
}

/// Write the class's figures (for tests/e2e/faults), then fail the test if they are bad.
pub(crate) fn report(class: &str, figures: &Figures, problems: &[String]) {
    eprintln!(
        "{class}: {}",
        serde_json::to_string(figures).unwrap_or_default()
    );
    if let Ok(dir) = std::env::var("TIDESHIFT_FAULTS_OUT") {
        let path = PathBuf::from(dir).join(format!("{class}.json"));
        std::fs::write(&path, serde_json::to_string(figures).unwrap_or_default())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
    // A test drops its daemons before judging (a standby's Lease must go first): what each of
    // them logged is shown when it fails, not lost with its temporary directory.
    let ended = take_ended_daemon_logs();
    if !problems.is_empty() || !figures.passed {
        show(&ended);
    }
    assert!(problems.is_empty(), "{class}: {problems:#?}");
    assert!(figures.passed, "{class}: {figures:?}");
}

/// The end of the log of every daemon that stopped since the last `report`, for a failing
/// test to show: (which daemon, by its metrics address; its last log lines).
static ENDED_DAEMON_LOGS: std::sync::Mutex<Vec<(String, String)>> =
    std::sync::Mutex::new(Vec::new());

fn take_ended_daemon_logs() -> Vec<(String, String)> {
    std::mem::take(&mut *ENDED_DAEMON_LOGS.lock().unwrap_or_else(|e| e.into_inner()))
}

fn show(logs: &[(String, String)]) {
    for (daemon, tail) in logs {
        eprintln!("---- {daemon}: its last {DAEMON_LOG_TAIL} log lines ----\n{tail}");
    }
}

// ---- cluster objects ---------------------------------------------------------------------------

pub(crate) use common::Namespaces;

pub(crate) use common::create_namespace;

/// Small pods (0.1 core) so that every class fits the test bed's nodes with room to spare.
pub(crate) fn deployment(name: &str, replicas: i32) -> Deployment {
    common::fake_deployment(name, replicas, "kwok", "100m", "64Mi")
}

pub(crate) async fn create_deployments(client: &Client, ns: &str, items: &[(&str, i32)]) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    for (name, replicas) in items {
        api.create(&PostParams::default(), &deployment(name, *replicas))
            .await
            .unwrap_or_else(|e| panic!("creating {ns}/{name}: {e}"));
    }
}

/// The demand the test bed's exporter serves with 14 days of history (see docs/testbed.md).
pub(crate) const CHECKOUT: &str = r#"sum(tideshift_demo_demand{workload="checkout"})"#;

/// A policy over online `{prefix}payment` and offline `{prefix}training` (Deployments of 0.1
/// core), with a budget of 12 pods: the fault classes' common case.
pub(crate) fn policy(name: &str, prefix: &str, query: &str, per_replica: u32) -> ShiftPolicy {
    shop_policy(name, prefix, query, per_replica).build()
}

/// [`policy`] before it is built, for a class that changes it.
pub(crate) fn shop_policy(
    name: &str,
    prefix: &str,
    query: &str,
    per_replica: u32,
) -> common::policy::PolicyBuilder {
    common::policy::policy(name)
        .online(common::policy::online(
            &format!("{prefix}payment"),
            query,
            f64::from(per_replica),
        ))
        .offline(common::policy::offline(&format!("{prefix}training")))
}

pub(crate) async fn create_policy(client: &Client, ns: &str, policy: &ShiftPolicy) {
    Api::<ShiftPolicy>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), policy)
        .await
        .unwrap_or_else(|e| panic!("creating policy in {ns}: {e}"));
}

pub(crate) async fn patch_policy(client: &Client, ns: &str, name: &str, patch: Value) {
    Api::<ShiftPolicy>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("patching policy {ns}/{name}: {e}"));
}

/// Edit a policy as a user would: its one online workload `workload` (demand CHECKOUT) now
/// serves `per_replica` per replica, so the policy wants more or fewer replicas.
pub(crate) async fn set_per_replica(
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

pub(crate) async fn status_of(
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

pub(crate) fn condition<'s>(
    status: &'s ShiftPolicyStatus,
    type_: &str,
) -> Option<(&'s str, &'s str, &'s str)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

pub(crate) fn is_true(status: &ShiftPolicyStatus, type_: &str) -> bool {
    condition(status, type_).is_some_and(|(s, _, _)| s == "True")
}

/// Ready, not Degraded, the current generation seen, and every workload at its desired
/// replicas (each Deployment's spec too; a Job selector's total is the status's): the plan is
/// applied. Returns the desired replicas by workload.
pub(crate) async fn settled(
    client: &Client,
    ns: &str,
    name: &str,
) -> Option<BTreeMap<String, u32>> {
    settled_or_why(client, ns, name).await.ok()
}

/// [`settled`], or what is not settled yet: the conditions that are not as wanted, with
/// their reasons and messages, and the workloads not at their desired replicas.
pub(crate) async fn settled_or_why(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<BTreeMap<String, u32>, String> {
    let (policy, status) = status_of(client, ns, name)
        .await
        .ok_or_else(|| format!("policy {ns}/{name} has no status (or could not be read)"))?;
    let mut why = Vec::new();
    if status.observed_generation != policy.metadata.generation {
        why.push(format!(
            "observedGeneration {:?} of generation {:?}",
            status.observed_generation, policy.metadata.generation
        ));
    }
    for (type_, wanted) in [("Ready", true), ("Degraded", false)] {
        if is_true(&status, type_) != wanted {
            let (state, reason, message) = condition(&status, type_).unwrap_or(("absent", "", ""));
            why.push(format!("{type_} {state} ({reason}: {message})"));
        }
    }
    if status.workloads.is_empty() {
        why.push("no workloads in the status".into());
    }
    for w in status.workloads.iter().filter(|w| w.current != w.desired) {
        why.push(format!("{} at {} of {}", w.name, w.current, w.desired));
    }
    if !why.is_empty() {
        return Err(why.join("; "));
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let mut desired = BTreeMap::new();
    for w in &status.workloads {
        let deployment = deployments
            .get_opt(&w.name)
            .await
            .map_err(|e| format!("reading Deployment {ns}/{}: {e}", w.name))?;
        if let Some(d) = deployment {
            let replicas = d.spec.replicas;
            if replicas != Some(w.desired as i32) {
                return Err(format!(
                    "Deployment {} has spec.replicas {replicas:?}, the status wants {}",
                    w.name, w.desired
                ));
            }
        }
        desired.insert(w.name.clone(), w.desired);
    }
    Ok(desired)
}

pub(crate) async fn wait_settled(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> BTreeMap<String, u32> {
    wait_for(
        &format!("policy {ns}/{name} to be Ready with its plan applied"),
        timeout,
        async || settled_or_why(client, ns, name).await,
    )
    .await
}

pub(crate) async fn replicas(client: &Client, ns: &str, name: &str) -> Option<u32> {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .ok()?;
    Some(d.spec.replicas? as u32)
}

/// tideshift's Events on the policies of `ns`.
pub(crate) async fn tideshift_events(client: &Client, ns: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|list| {
            list.items
                .into_iter()
                .filter(|e| e.reporting_controller.as_deref() == Some("tideshift"))
                .collect()
        })
        .unwrap_or_default()
}

/// Reasons of tideshift's Events on the policies of `ns`.
pub(crate) async fn event_reasons(client: &Client, ns: &str) -> Vec<String> {
    tideshift_events(client, ns)
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

// ---- the daemon under test ---------------------------------------------------------------------

pub(crate) fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("local address").to_string()
}

/// One cycle that changed replicas.
#[derive(Debug)]
#[allow(dead_code)] // `summary` is read through Debug, in a failure's message
pub(crate) struct Shift {
    /// When the cycle began (Unix seconds): before it, nothing it decided on was read.
    pub(crate) started: f64,
    /// When it logged its writes, all made by then.
    pub(crate) at: f64,
    pub(crate) summary: String,
    /// The online workloads whose demand this cycle could not read, comma-separated.
    pub(crate) demand_unreadable: String,
    pub(crate) dry_run: bool,
}

/// `tideshift run` as a child process; killed when dropped. Its stderr (JSON lines) goes to a
/// file: the record of every write it made.
pub(crate) struct Daemon {
    pub(crate) child: std::process::Child,
    pub(crate) log: PathBuf,
    pub(crate) metrics_addr: String,
    pub(crate) _dir: tempfile::TempDir,
}

impl Daemon {
    pub(crate) fn spawn(
        env: &TestBed,
        prometheus_url: &str,
        metrics_addr: &str,
        extra: &[&str],
    ) -> Daemon {
        Self::spawn_with(&env.daemon_kubeconfig, prometheus_url, metrics_addr, extra)
    }

    /// With its own kubeconfig (e.g. through a fault proxy).
    pub(crate) fn spawn_with(
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

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log lines whose message is `message`: when each was logged (Unix seconds), and its
    /// fields.
    /// Every log line: when it was logged (Unix seconds), and its fields.
    pub(crate) fn logged_any(&self) -> Vec<(f64, Value)> {
        self.log_text()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter_map(|v| {
                let at = chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str()?).ok()?;
                Some((at.timestamp_micros() as f64 / 1e6, v["fields"].clone()))
            })
            .collect()
    }

    pub(crate) fn logged(&self, message: &str) -> Vec<(f64, Value)> {
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
    pub(crate) fn logged_writes(&self) -> Vec<Write> {
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

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every cycle that changed replicas, from its "shift" log line.
    pub(crate) fn shifts(&self) -> Vec<Shift> {
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
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sum of a metric's samples whose labels contain every `label="value"` in `with`.
    pub(crate) async fn metric(&self, name: &str, with: &[&str]) -> Option<f64> {
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
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(DAEMON_LOG_TAIL)..].join("\n");
        let this = (format!("the daemon at {}", self.metrics_addr), tail);
        if std::thread::panicking() {
            // A test that failed before `report`: the daemons it dropped earlier too.
            let mut logs = take_ended_daemon_logs();
            logs.push(this);
            show(&logs);
        } else {
            ENDED_DAEMON_LOGS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(this);
        }
    }
}

/// Lines of the daemon's log a failing test prints.
pub(crate) const DAEMON_LOG_TAIL: usize = 80;

pub(crate) fn writes_to<'w>(writes: &'w [Write], ns: &str, name: &str) -> Vec<&'w Write> {
    let target = format!("Deployment {ns}/{name}");
    writes.iter().filter(|w| w.target == target).collect()
}
