//! Bad policies.

use super::*;

/// Policies the CRD's OpenAPI schema or CEL rules refuse at apply: (what, YAML).
pub(crate) fn refused_at_apply() -> Vec<(&'static str, String)> {
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
pub(crate) async fn bad_policies_are_refused_at_apply_or_reported_and_never_stop_others() {
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
