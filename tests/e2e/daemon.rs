//! End-to-end: `tideshift run` on the real test bed (kube-apiserver, scheduler,
//! controller-manager, KWOK nodes, Prometheus) shifts capacity for a flash sale.
//!
//! The cluster has 12 cores of KWOK nodes. At baseline, payment (2) and refund (1) leave 9 pods
//! of 1 core to batch: a `training` Deployment (6) and a `reports` Job (parallelism 3). The
//! flash sale (payment ×4, refund ×3) needs 9 online pods, so batch must give way. Demand has
//! 14 days of history with the same flash sale at the same time of day (backfilled into
//! Prometheus), so the forecast sees the peak coming; the live peak comes from the test bed's
//! demand exporter. The daemon runs as a child process with the least-privilege ServiceAccount.
//!
//! A second namespace holds the same set-up in `mode: dry-run`, over capacity: the daemon must
//! report what it would do and write nothing.
//!
//! Run through `tests/run`, or: `eval "$(tests/e2e/testbed env)"; cargo test --test e2e_daemon`.
//! With `TIDESHIFT_BENCH_OUT=FILE` the measured figures are written there as JSON.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tideshift::policy::{Mode, ShiftPolicy};

use common::TestBed;

fn testbed_env() -> Option<TestBed> {
    TestBed::from_env("the daemon e2e test")
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// The exporter's scenario shape: 0 outside the peak, 1 on its plateau, linear ramps.
#[derive(Clone, Copy)]
struct FlashSale {
    baseline: f64,
    peak: f64,
    /// Start of the plateau, unix seconds.
    at: i64,
    ramp: i64,
    hold: i64,
}

impl FlashSale {
    fn demand(&self, t: i64) -> f64 {
        let (t, at, ramp, end) = (
            t as f64,
            self.at as f64,
            self.ramp as f64,
            (self.at + self.hold) as f64,
        );
        let shape = if t >= at && t <= end {
            1.0
        } else if t < at && t > at - ramp {
            1.0 - (at - t) / ramp
        } else if t > end && t < end + ramp {
            1.0 - (t - end) / ramp
        } else {
            0.0
        };
        self.baseline * (1.0 + (self.peak - 1.0) * shape)
    }

    fn scenario(&self, name: &str) -> String {
        format!(
            "{name}:baseline={},peak_at={},peak={},ramp={}s,hold={}s",
            self.baseline, self.at, self.peak, self.ramp, self.hold
        )
    }
}

/// Write 14 days of history with the same flash sale every day at the same time, as the
/// series Prometheus scrapes from the exporter, and turn it into TSDB blocks.
fn backfill(env: &TestBed, sales: &[(&str, FlashSale)], now: i64) {
    let instance = env
        .exporter_url
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let mut text =
        String::from("# HELP tideshift_demo_demand demand\n# TYPE tideshift_demo_demand gauge\n");
    let from = (now - 14 * 86_400) / 60 * 60;
    let to = now - 180;
    for (name, sale) in sales {
        let mut t = from;
        while t < to {
            // Yesterday's sale, the day before's, ...: shift the live sale by whole days.
            let days_back = ((sale.at - t) as f64 / 86_400.0).round() as i64;
            let value = sale.demand(t + days_back * 86_400);
            text.push_str(&format!(
                "tideshift_demo_demand{{instance=\"{instance}\",job=\"demand\",workload=\"{name}\"}} {value} {t}\n"
            ));
            t += 60;
        }
    }
    text.push_str("# EOF\n");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("history.om");
    std::fs::write(&file, text).expect("writing the backfill");
    let data = format!("{}/prometheus/data", env.state_dir);
    let out = std::process::Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&file)
        .arg(&data)
        .output()
        .expect("running promtool");
    assert!(
        out.status.success(),
        "promtool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn prometheus_has(env: &TestBed, query: &str, at: i64) -> bool {
    let url = format!("{}/api/v1/query", env.prometheus_url);
    let Ok(response) = reqwest::Client::new()
        .get(url)
        .query(&[("query", query.to_string()), ("time", at.to_string())])
        .send()
        .await
    else {
        return false;
    };
    let Ok(body) = response.json::<Value>().await else {
        return false;
    };
    body["data"]["result"]
        .as_array()
        .is_some_and(|r| !r.is_empty())
}

fn deployment(name: &str, replicas: i32, node_type: &str) -> Deployment {
    common::fake_deployment(name, replicas, node_type, "1", "1Gi")
}

fn job(name: &str, parallelism: i32, node_type: &str) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "parallelism": parallelism,
            "completions": 1000000,
            "backoffLimit": 1000000,
            "template": {
                "metadata": {
                    "labels": {"app": name},
                    // A batch pod works for a long while (KWOK would complete it at once, and
                    // the Job would flood the cluster with replacements).
                    "annotations": {
                        "pod-complete.stage.kwok.x-k8s.io/delay": "1h",
                        "pod-complete.stage.kwok.x-k8s.io/jitter-delay": "1h"
                    }
                },
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"type": node_type},
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{
                        "name": "work",
                        "image": "registry.invalid/tideshift/fake:1",
                        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}
                    }]
                }
            }
        }
    }))
    .expect("job object")
}

/// `series`: the exporter's workload label of this run's demand (unique per run, so history
/// backfilled by earlier runs never mixes in).
fn policy(name: &str, mode: Mode, series: &str) -> ShiftPolicy {
    let demand =
        |workload: &str| format!(r#"sum(tideshift_demo_demand{{workload="{series}-{workload}"}})"#);
    common::policy::policy(name)
        .mode(mode)
        .capacity("12", "24Gi")
        .history("14d")
        .online(
            common::policy::online("payment", &demand("payment"), 100.0)
                .replicas(2, 8)
                .startup("20s"),
        )
        .online(
            common::policy::online("refund", &demand("refund"), 100.0)
                .replicas(1, 4)
                .startup("20s"),
        )
        .offline(common::policy::offline("training").weight(2.0))
        .offline(
            common::policy::offline("reports")
                .job("reports")
                .replicas(0, 3),
        )
        .build()
}

/// True when every Deployment has all its replicas Ready.
async fn all_ready(deployments: &Api<Deployment>) -> bool {
    let Ok(list) = deployments.list(&ListParams::default()).await else {
        return false;
    };
    !list.items.is_empty()
        && list.items.iter().all(|d| {
            d.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
                >= d.spec.replicas.unwrap_or(1)
        })
}

async fn set_up(client: &Client, ns: &str, training: i32, mode: Mode, series: &str) {
    common::create_namespace(client, ns).await;
    // The dry-run copy must not take the cluster's capacity: its pods match no node.
    let node_type = if mode == Mode::DryRun { "none" } else { "kwok" };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    for (name, replicas) in [("payment", 2), ("refund", 1), ("training", training)] {
        deployments
            .create(
                &PostParams::default(),
                &deployment(name, replicas, node_type),
            )
            .await
            .unwrap_or_else(|e| panic!("creating {ns}/{name}: {e}"));
    }
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    jobs.create(&PostParams::default(), &job("reports", 3, node_type))
        .await
        .unwrap_or_else(|e| panic!("creating {ns}/reports: {e}"));
    let policies: Api<ShiftPolicy> = Api::namespaced(client.clone(), ns);
    policies
        .create(&PostParams::default(), &policy("flash-sale", mode, series))
        .await
        .unwrap_or_else(|e| panic!("creating {ns}/flash-sale: {e}"));
}

#[derive(Clone, Debug, Default)]
struct Sample {
    /// When the reads began, unix seconds with milliseconds (the figures need sub-second).
    at: f64,
    spec: BTreeMap<String, i32>,
    ready: BTreeMap<String, i32>,
    online_unschedulable: Vec<String>,
}

/// `None` when a read failed (the API server is slow under load): a gap, not zeros.
async fn sample(client: &Client, ns: &str) -> Option<Sample> {
    let mut s = Sample {
        at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs_f64(),
        ..Default::default()
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    {
        let list = deployments.list(&ListParams::default()).await.ok()?;
        for d in list.items {
            let name = d.metadata.name.clone().unwrap_or_default();
            s.spec.insert(name.clone(), d.spec.replicas.unwrap_or(1));
            s.ready
                .insert(name, d.status.and_then(|st| st.ready_replicas).unwrap_or(0));
        }
    }
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    {
        let j = jobs.get("reports").await.ok()?;
        let spec = j.spec.unwrap_or_default();
        let replicas = if spec.suspend.unwrap_or(false) {
            0
        } else {
            spec.parallelism.unwrap_or(1)
        };
        s.spec.insert("reports".into(), replicas);
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    {
        let list = pods.list(&ListParams::default()).await.ok()?;
        for pod in list.items {
            let app = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app"))
                .cloned()
                .unwrap_or_default();
            let unschedulable = pod.status.as_ref().is_some_and(|st| {
                st.phase.as_deref() == Some("Pending")
                    && st.conditions.iter().flatten().any(|c| {
                        c.type_ == "PodScheduled"
                            && c.status == "False"
                            && c.reason.as_deref() == Some("Unschedulable")
                    })
            });
            if unschedulable && (app == "payment" || app == "refund") {
                s.online_unschedulable
                    .push(pod.metadata.name.unwrap_or_default());
            }
        }
    }
    Some(s)
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let index = ((values.len() - 1) as f64 * q).round() as usize;
    values[index]
}

use common::Namespaces;

/// Stops the daemon when the test ends, however it ends: SIGTERM first, so it shuts down
/// gracefully and releases its Lease (the next run then leads at once), SIGKILL after 15 s.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_sale_shifts_batch_to_online_before_the_peak_and_back() {
    let Some(env) = testbed_env() else { return };
    let admin = common::client_from(&env.admin_kubeconfig).await;
    let suffix = format!("{:x}", unix_now() % 0xfffff);
    let ns = format!("e2e-shift-{suffix}");
    let dry_ns = format!("e2e-dry-{suffix}");
    let series = format!("e2e{suffix}");
    let _cleanup = Namespaces(
        env.admin_kubeconfig.clone(),
        vec![ns.clone(), dry_ns.clone()],
    );

    // The flash sale: plateau 330 s from now, for 120 s, after a 30 s ramp.
    let now = unix_now();
    let payment = FlashSale {
        baseline: 150.0,
        peak: 4.0,
        // Room for Prometheus to load the history (up to ~2.5 min) and the workloads to start,
        // and still more than a minute of forecast lead before the ramp.
        at: now + 330,
        ramp: 30,
        hold: 120,
    };
    let refund = FlashSale {
        baseline: 50.0,
        peak: 3.0,
        ..payment
    };
    let status = std::process::Command::new(&env.script)
        .arg("exporter")
        .arg(payment.scenario(&format!("{series}-payment")))
        .arg(refund.scenario(&format!("{series}-refund")))
        // Keep the test bed's default workloads served for other tests.
        .arg("checkout:baseline=120,daily=0.4,daily_peak=14:00,weekend=0.7,noise=0.05")
        .arg("search:baseline=40,daily=0.3,daily_peak=11:00,noise=0.05")
        .status()
        .expect("running tests/e2e/testbed exporter");
    assert!(status.success(), "tests/e2e/testbed exporter failed");
    let payment_series = format!("{series}-payment");
    let refund_series = format!("{series}-refund");
    backfill(
        &env,
        &[
            (payment_series.as_str(), payment),
            (refund_series.as_str(), refund),
        ],
        now,
    );
    // Prometheus picks up new blocks within about a minute.
    let deadline = Instant::now() + Duration::from_secs(150);
    let history_query = format!("tideshift_demo_demand{{workload=\"{payment_series}\"}}");
    while !prometheus_has(&env, &history_query, now - 86_400).await {
        assert!(
            Instant::now() < deadline,
            "Prometheus did not load the backfilled history"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    set_up(&admin, &ns, 6, Mode::Enforce, &series).await;
    // Dry-run: batch over capacity (training 12), so the plan wants to shrink it.
    set_up(&admin, &dry_ns, 12, Mode::DryRun, &series).await;

    // Every workload Ready before the daemon starts: the test judges the daemon, not start-up.
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let ready_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = all_ready(&deployments).await;
        if ready {
            break;
        }
        assert!(
            Instant::now() < ready_deadline,
            "the scenario's Deployments did not become Ready"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let daemon_started = unix_now();
    assert!(
        payment.at - payment.ramp - daemon_started >= 60,
        "set-up took too long: the sale ramps {}s after the daemon starts",
        payment.at - payment.ramp - daemon_started
    );
    let daemon = Daemon(
        std::process::Command::new(env!("CARGO_BIN_EXE_tideshift"))
            .args([
                "run",
                "--kubeconfig",
                &env.daemon_kubeconfig,
                "--prometheus-url",
                &env.prometheus_url,
                "--listen",
                &env.metrics_addr,
                "--namespace",
                &format!("{ns},{dry_ns}"),
                "--shrink-wait",
                "20s",
                // As the chart runs it: only the Lease holder writes (the chart's Lease Role
                // allows this one Lease only).
                "--leader-election",
                "--lease-name",
                &env.lease_name,
                "--lease-namespace",
                &env.lease_namespace,
            ])
            .env("RUST_LOG", "info,tideshift=debug")
            .spawn()
            .expect("starting tideshift run"),
    );

    // Watch until batch should have its capacity back.
    let mut samples: Vec<(i64, Sample)> = Vec::new();
    // Batch gets its capacity back once the forecast's upper band drops, which happens on the
    // forecast's 1-minute grid: up to a step plus the lead time (startup + interval + 15 s) plus
    // the 20 s stabilization and the scale-down rate after the sale, depending on where the sale
    // falls within the minute. 150 s covers the worst phase.
    let restore_within = 150;
    let end = payment.at + payment.hold + payment.ramp + restore_within;
    while unix_now() < end {
        if let Some(s) = sample(&admin, &ns).await {
            samples.push((unix_now(), s));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // 1. Online Ready before demand needs it (from shortly before the ramp on; the first
    //    seconds only see the freshly created pods starting).
    let watch_from = payment.at - payment.ramp - 20;
    for (t, s) in samples.iter().filter(|(t, _)| *t >= watch_from) {
        for (name, sale) in [("payment", payment), ("refund", refund)] {
            let needed = (sale.demand(*t) / 100.0).ceil() as i32;
            let ready = s.ready.get(name).copied().unwrap_or(0);
            assert!(
                ready >= needed,
                "{name}: {ready} ready at t={t} but demand {:.0} needs {needed} (sale at {}); \
                 cluster then: {s:?}",
                sale.demand(*t),
                sale.at
            );
        }
    }
    // 2. Batch gives way first.
    let first_change = |name: &str, grow: bool| {
        let base = samples[0].1.spec.get(name).copied().unwrap_or(0);
        samples
            .iter()
            .find(|(_, s)| {
                let v = s.spec.get(name).copied().unwrap_or(0);
                if grow { v > base } else { v < base }
            })
            .map(|(t, _)| *t)
    };
    let payment_grew = first_change("payment", true).expect("payment never grew");
    let batch_shrank = [
        first_change("training", false),
        first_change("reports", false),
    ]
    .into_iter()
    .flatten()
    .min()
    .expect("batch never shrank");
    assert!(
        batch_shrank <= payment_grew,
        "batch shrank at {batch_shrank}, after payment grew at {payment_grew}"
    );
    assert!(
        payment_grew < payment.at,
        "payment grew only at {payment_grew}"
    );
    // 3. No online pod waited Pending for capacity.
    for (t, s) in &samples {
        assert!(
            s.online_unschedulable.is_empty(),
            "online pods unschedulable at {t}: {:?}",
            s.online_unschedulable
        );
    }
    // 4. Batch gets its capacity back after the peak.
    let sale_over = payment.at + payment.hold + payment.ramp;
    let restored = samples
        .iter()
        .find(|(t, s)| {
            *t >= sale_over
                && s.spec.get("training").copied().unwrap_or(0)
                    + s.spec.get("reports").copied().unwrap_or(0)
                    >= 9
        })
        .map(|(t, _)| *t - sale_over);
    let restored = restored.unwrap_or_else(|| {
        panic!("batch did not get its capacity back within {restore_within} s of the sale")
    });

    // 5. Status and Events tell the story.
    let policies: Api<ShiftPolicy> = Api::namespaced(admin.clone(), &ns);
    let live = policies
        .get("flash-sale")
        .await
        .expect("reading the policy");
    let status = live.status.expect("status written");
    assert_eq!(status.observed_generation, live.metadata.generation);
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(ready.status, "True", "{ready:?}");
    assert_eq!(status.workloads.len(), 4);
    assert!(status.last_decision.is_some());
    let events: Api<Event> = Api::namespaced(admin.clone(), &ns);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("listing events")
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("tideshift"))
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.iter().any(|r| r == "ShiftUp"),
        "events: {reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r == "ShiftDown"),
        "events: {reasons:?}"
    );

    // 6. Dry-run wrote nothing, but said what it would do.
    let dry_deployments: Api<Deployment> = Api::namespaced(admin.clone(), &dry_ns);
    for (name, replicas) in [("payment", 2), ("refund", 1), ("training", 12)] {
        let d = dry_deployments.get(name).await.expect("dry-run deployment");
        assert_eq!(d.spec.replicas, Some(replicas), "dry-run changed {name}");
        let managers: Vec<String> = d
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|m| m.manager.clone())
            .collect();
        assert!(
            !managers.iter().any(|m| m == "tideshift"),
            "dry-run wrote {name}: {managers:?}"
        );
    }
    let dry_policy = Api::<ShiftPolicy>::namespaced(admin.clone(), &dry_ns)
        .get("flash-sale")
        .await
        .expect("dry-run policy");
    let decision = dry_policy
        .status
        .and_then(|s| s.last_decision)
        .expect("dry-run decision in status");
    assert!(decision.dry_run);
    assert!(decision.summary.starts_with("would scale"), "{decision:?}");

    // 7. Every Grafana dashboard panel has data: Prometheus has been scraping this daemon all
    //    along, so a panel whose query does not match what the daemon exports fails here.
    let dashboards = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/chart/dashboard-queries"
    ))
    .args(["--wait", "90"])
    .env("TIDESHIFT_PROMETHEUS_URL", &env.prometheus_url)
    .output()
    .expect("running tests/chart/dashboard-queries");
    assert!(
        dashboards.status.success(),
        "dashboard panels without data from the live daemon:\n{}{}",
        String::from_utf8_lossy(&dashboards.stdout),
        String::from_utf8_lossy(&dashboards.stderr)
    );

    // 8. Graceful shutdown releases the Lease, so a standby takes over at once.
    drop(daemon);
    let lease = Api::<Lease>::namespaced(admin.clone(), &env.lease_namespace)
        .get(&env.lease_name)
        .await
        .expect("reading the Lease");
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(
        holder.is_empty(),
        "the stopped daemon still holds the Lease: {holder:?}"
    );

    // Figures for tests/e2e/bench-shift. A shift towards online starts with its first write
    // (batch shrinks or online grows between two samples; timed at the earlier sample, so the
    // figure errs long by up to one sampling interval) and ends when every online Deployment
    // has all its replicas Ready.
    let online = ["payment", "refund"];
    let all_online_ready = |s: &Sample| {
        online.iter().all(|name| {
            s.ready.get(*name).copied().unwrap_or(0) >= s.spec.get(*name).copied().unwrap_or(0)
        })
    };
    let mut decision_to_ready = Vec::new();
    // (start, whether online has grown yet): batch shrinking alone does not end a shift.
    let mut open_shift: Option<(f64, bool)> = None;
    for pair in samples.windows(2) {
        let (before, after) = (&pair[0].1, &pair[1].1);
        let changed = |name: &str, grew: bool| {
            let (b, a) = (
                before.spec.get(name).copied().unwrap_or(0),
                after.spec.get(name).copied().unwrap_or(0),
            );
            if grew { a > b } else { a < b }
        };
        let online_grew = online.iter().any(|n| changed(n, true));
        let batch_shrank = ["training", "reports"].iter().any(|n| changed(n, false));
        if (online_grew || batch_shrank) && open_shift.is_none() {
            open_shift = Some((before.at, false));
        }
        if let Some((started, grown)) = open_shift.as_mut() {
            *grown |= online_grew;
            if *grown && all_online_ready(after) {
                decision_to_ready.push(after.at - *started);
                open_shift = None;
            }
        }
    }
    assert!(
        !decision_to_ready.is_empty(),
        "no shift towards online completed"
    );
    let underprovisioned = samples
        .windows(2)
        .filter(|w| {
            let (t, s) = &w[0];
            [("payment", payment), ("refund", refund)]
                .iter()
                .any(|(name, sale)| {
                    s.ready.get(*name).copied().unwrap_or(0)
                        < (sale.demand(*t) / 100.0).ceil() as i32
                })
        })
        .map(|w| w[1].1.at - w[0].1.at)
        .sum::<f64>()
        + 0.0; // an empty sum is -0.0
    let figures = json!({
        "decision_to_ready_seconds": {
            "p50": percentile(&mut decision_to_ready.clone(), 0.5),
            "max": decision_to_ready.iter().copied().fold(0.0, f64::max),
            "shifts": decision_to_ready.len(),
        },
        "underprovisioned_seconds": underprovisioned,
        "batch_restored_seconds": restored,
    });
    eprintln!("figures: {figures}");
    if let Ok(path) = std::env::var("TIDESHIFT_BENCH_OUT") {
        std::fs::write(&path, figures.to_string()).expect("writing the figures");
    }
}
