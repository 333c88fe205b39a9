//! Smoke test of the real test bed (`tests/e2e/testbed up`): kube-apiserver, scheduler,
//! controller-manager and KWOK schedule and run pods against node capacity, the scale
//! subresource works, Prometheus holds backfilled history and scrapes the live exporter, and
//! the daemon's ServiceAccount is held to its role.
//!
//! Run through `tests/run`, or by hand: `eval "$(tests/e2e/testbed env)"; cargo test --test e2e_smoke`.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use common::TestBed;

fn testbed_env() -> Option<TestBed> {
    TestBed::from_env("e2e smoke test")
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    format!("{prefix}-{}-{:x}", std::process::id(), nanos)
}

async fn create_namespace(client: &Client, prefix: &str) -> String {
    let name = unique(prefix);
    common::create_namespace(client, &name).await;
    name
}

async fn delete_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::background()).await;
}

fn deployment(name: &str, replicas: i32, cpu: &str, memory: &str) -> Deployment {
    common::fake_deployment(name, replicas, "kwok", cpu, memory)
}

async fn wait_until<F, Fut, T>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not true after {timeout:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

async fn kwok_nodes(client: &Client) -> Vec<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes
        .list(&ListParams::default().labels("type=kwok"))
        .await
        .expect("listing kwok nodes");
    assert!(!list.items.is_empty(), "the test bed has no KWOK nodes");
    list.items
}

/// CPU quantity in millicores ("4", "500m", "1.5").
fn millicores(q: &str) -> i64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().expect("millicore quantity"),
        None => (q.parse::<f64>().expect("cpu quantity") * 1000.0).round() as i64,
    }
}

fn node_cpu_millis(node: &Node) -> i64 {
    let cpu = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .and_then(|a| a.get("cpu"))
        .expect("node allocatable cpu");
    millicores(&cpu.0)
}

async fn pods_of(client: &Client, ns: &str, app: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("listing pods")
        .items
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn unschedulable(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
        })
}

async fn running_on_kwok(client: &Client, ns: &str, app: &str, want: usize) -> Result<(), String> {
    let nodes: BTreeSet<String> = kwok_nodes(client)
        .await
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let pods = pods_of(client, ns, app).await;
    let running: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| phase(p) == "Running")
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some_and(|n| nodes.contains(n))
        })
        .collect();
    if running.len() == want {
        Ok(())
    } else {
        Err(format!(
            "{} of {want} pods Running on KWOK nodes (phases: {:?})",
            running.len(),
            pods.iter().map(phase).collect::<Vec<_>>()
        ))
    }
}

#[tokio::test]
async fn deployment_runs_on_kwok_nodes_and_scales_through_the_subresource() {
    let Some(env) = testbed_env() else { return };
    let client = common::client_from(&env.admin_kubeconfig).await;
    let ns = create_namespace(&client, "smoke-scale").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", 2, "100m", "64Mi"),
        )
        .await
        .expect("creating deployment web");

    wait_until("2 web pods Running", Duration::from_secs(120), || {
        running_on_kwok(&client, &ns, "web", 2)
    })
    .await;

    deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .expect("patching deployments/scale");
    let scale = deployments.get_scale("web").await.expect("reading scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(4));

    wait_until(
        "4 web pods Running after scale",
        Duration::from_secs(120),
        || running_on_kwok(&client, &ns, "web", 4),
    )
    .await;
    wait_until(
        "deployment reports 4 ready replicas",
        Duration::from_secs(60),
        || {
            let deployments = deployments.clone();
            async move {
                let d = deployments.get("web").await.map_err(|e| e.to_string())?;
                let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
                if ready == 4 {
                    Ok(())
                } else {
                    Err(format!("readyReplicas {ready}"))
                }
            }
        },
    )
    .await;

    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn pods_beyond_node_capacity_stay_pending() {
    let Some(env) = testbed_env() else { return };
    let client = common::client_from(&env.admin_kubeconfig).await;
    let nodes = kwok_nodes(&client).await;
    let node_count = nodes.len();
    let smallest = nodes.iter().map(node_cpu_millis).min().expect("a node");
    // Three quarters of a node: two never fit on one node, so at most one runs per node
    // whatever else is scheduled, and two more than the node count must stay Pending.
    let request = format!("{}m", smallest * 3 / 4);
    let replicas = i32::try_from(node_count + 2).expect("small node count");

    let ns = create_namespace(&client, "smoke-capacity").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(
            &PostParams::default(),
            &deployment("hog", replicas, &request, "64Mi"),
        )
        .await
        .expect("creating deployment hog");

    let (running, pending) = wait_until(
        "surplus hog pods marked Unschedulable",
        Duration::from_secs(120),
        || {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                let pods = pods_of(&client, &ns, "hog").await;
                let running: Vec<String> = pods
                    .iter()
                    .filter(|p| phase(p) == "Running")
                    .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
                    .collect();
                let pending = pods
                    .iter()
                    .filter(|p| phase(p) == "Pending" && unschedulable(p))
                    .count();
                if pods.len() == node_count + 2
                    && running.len() + pending == pods.len()
                    && pending >= 2
                {
                    Ok((running, pending))
                } else {
                    Err(format!(
                        "{} pods, {} running, {pending} unschedulable",
                        pods.len(),
                        running.len()
                    ))
                }
            }
        },
    )
    .await;
    let distinct: BTreeSet<&String> = running.iter().collect();
    assert_eq!(
        distinct.len(),
        running.len(),
        "two hogs share a node: {running:?}"
    );
    assert!(running.len() <= node_count);
    assert!(pending >= 2);

    // Pending stays pending: the scheduler does not squeeze them in later.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let still_pending = pods_of(&client, &ns, "hog")
        .await
        .iter()
        .filter(|p| phase(p) == "Pending")
        .count();
    assert_eq!(still_pending, pending);

    delete_namespace(&client, &ns).await;
}

async fn prometheus_range(
    env: &TestBed,
    query: &str,
    start: i64,
    end: i64,
    step: i64,
) -> Vec<Value> {
    let url = format!("{}/api/v1/query_range", env.prometheus_url);
    let response = reqwest::Client::new()
        .get(&url)
        .query(&[
            ("query", query.to_string()),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("step", step.to_string()),
        ])
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let body: Value = response.json().await.expect("Prometheus answer is JSON");
    assert_eq!(body["status"], "success", "query {query}: {body}");
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn sample_values(series: &Value) -> Vec<(i64, f64)> {
    series["values"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter_map(|v| {
                    let t = v[0].as_f64()? as i64;
                    let x = v[1].as_str()?.parse::<f64>().ok()?;
                    Some((t, x))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

#[tokio::test]
async fn prometheus_answers_over_backfilled_history_and_the_live_exporter() {
    let Some(env) = testbed_env() else { return };
    let workload = std::env::var("TESTBED_WORKLOADS")
        .ok()
        .and_then(|w| w.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "checkout".to_string());
    let days: i64 = std::env::var("TESTBED_BACKFILL_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(14);
    let t = now();

    // History: a week-old stretch long before the test bed started, hourly.
    let start = t - (days - 1) * 86_400;
    let end = t - 86_400;
    let query = format!("tideshift_demo_demand{{workload=\"{workload}\"}}");
    let history = prometheus_range(&env, &query, start, end, 3600).await;
    assert_eq!(history.len(), 1, "one series for {workload}: {history:?}");
    let points = sample_values(&history[0]);
    let expected = ((end - start) / 3600) as usize;
    assert!(
        points.len() + 2 >= expected,
        "{} of {expected} hourly points backfilled",
        points.len()
    );
    assert!(points.iter().all(|&(_, v)| v > 0.0), "demand is positive");
    let (lo, hi) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &(_, v)| {
            (lo.min(v), hi.max(v))
        });
    assert!(
        hi > lo * 1.3,
        "the daily wave shows in the history: {lo}..{hi}"
    );
    assert_eq!(
        history[0]["metric"]["job"], "demand",
        "backfill carries the scrape's labels"
    );

    // Live: the exporter's counter is scraped and grows.
    let live = wait_until(
        "live exporter samples in Prometheus",
        Duration::from_secs(60),
        || {
            let env = &env;
            let workload = workload.clone();
            async move {
                let t = now();
                let q =
                    format!("rate(tideshift_demo_requests_total{{workload=\"{workload}\"}}[30s])");
                let r = prometheus_range(env, &q, t - 60, t, 5).await;
                let points: Vec<(i64, f64)> = r.first().map(sample_values).unwrap_or_default();
                if points.len() >= 3 && points.iter().all(|&(_, v)| v > 0.0) {
                    Ok(points)
                } else {
                    Err(format!("{points:?}"))
                }
            }
        },
    )
    .await;
    assert!(live.len() >= 3);

    // Backfilled and live samples are one series, so a forecaster sees one continuous history.
    let joined = prometheus_range(&env, &query, t - 2 * 86_400, now(), 600).await;
    assert_eq!(
        joined.len(),
        1,
        "backfill and live are the same series: {joined:?}"
    );
}

#[tokio::test]
async fn daemon_identity_is_held_to_its_role() {
    let Some(env) = testbed_env() else { return };
    let admin = common::client_from(&env.admin_kubeconfig).await;
    let daemon = common::client_from(&env.daemon_kubeconfig).await;
    let ns = create_namespace(&admin, "smoke-rbac").await;
    Api::<Deployment>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &deployment("svc", 1, "100m", "64Mi"),
        )
        .await
        .expect("creating deployment svc");

    // Allowed: reading workloads and patching the scale subresource.
    let deployments: Api<Deployment> = Api::namespaced(daemon.clone(), &ns);
    deployments
        .list(&ListParams::default())
        .await
        .expect("daemon may list deployments");
    deployments
        .patch_scale(
            "svc",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect("daemon may patch deployments/scale");

    let forbidden = |result: Result<(), kube::Error>, what: &str| match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        Err(e) => panic!("{what}: expected 403 Forbidden, got {e}"),
        Ok(_) => panic!("{what}: the daemon's identity was allowed"),
    };
    forbidden(
        Api::<Secret>::namespaced(daemon.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map(|_| ()),
        "list secrets",
    );
    forbidden(
        deployments
            .patch(
                "svc",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"template": {"metadata": {"labels": {"x": "y"}}}}})),
            )
            .await
            .map(|_| ()),
        "patch a whole deployment",
    );
    forbidden(
        deployments
            .delete("svc", &DeleteParams::default())
            .await
            .map(|_| ()),
        "delete a deployment",
    );
    forbidden(
        Api::<Namespace>::all(daemon.clone())
            .delete(&ns, &DeleteParams::default())
            .await
            .map(|_| ()),
        "delete a namespace",
    );

    delete_namespace(&admin, &ns).await;
}
