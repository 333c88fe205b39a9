//! A competing writer.

use super::*;

pub(crate) async fn scale_by_hand(client: &Client, ns: &str, name: &str, replicas: u32) -> bool {
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
pub(crate) async fn a_competing_writer_is_reported_and_never_fought() {
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
