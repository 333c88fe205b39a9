//! Job selector targets.

use super::*;

/// A Job of the finance team: `parallelism` pods of 0.1 core that run for an hour (KWOK).
pub(crate) fn report_job(name: &str, parallelism: i32) -> k8s_openapi::api::batch::v1::Job {
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
pub(crate) async fn a_job_selector_counts_every_jobs_pods_and_sees_other_writers() {
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
    let shop = common::policy::policy("shop")
        .capacity("1000m", "12Gi")
        .online(common::policy::online("payment", CHECKOUT, 50.0))
        .offline(
            common::policy::offline("reports")
                .jobs_labelled(&[("team", "finance")])
                .replicas(1, 12),
        )
        .build();
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
