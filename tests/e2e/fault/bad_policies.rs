//! Bad policies.

use super::*;

/// Policies the CRD's OpenAPI schema or CEL rules refuse at apply: (what, the object). Each is
/// the fault classes' common policy with one thing broken.
pub(crate) fn refused_at_apply() -> Vec<(&'static str, Value)> {
    fn spec(v: &mut Value) -> &mut Value {
        &mut v["spec"]
    }
    fn payment(v: &mut Value) -> &mut Value {
        &mut v["spec"]["online"][0]
    }
    fn training(v: &mut Value) -> &mut Value {
        &mut v["spec"]["offline"][0]
    }
    let good = shop_policy("bad", "", CHECKOUT, 50).json();
    let broken = |edit: &dyn Fn(&mut Value)| {
        let mut bad = good.clone();
        edit(&mut bad);
        assert_ne!(bad, good, "the edit changed nothing");
        bad
    };
    vec![
        (
            "replicas.min > replicas.max",
            broken(&|v| payment(v)["replicas"] = json!({"min": 5, "max": 2})),
        ),
        (
            "perReplica 0",
            broken(&|v| payment(v)["perReplica"] = json!(0)),
        ),
        (
            "quantile 0.4",
            broken(&|v| payment(v)["quantile"] = json!(0.4)),
        ),
        (
            "headroom 11",
            broken(&|v| payment(v)["headroom"] = json!(11)),
        ),
        (
            "duration not a duration",
            broken(&|v| spec(v)["interval"] = json!("3 seconds")),
        ),
        ("unknown mode", broken(&|v| spec(v)["mode"] = json!("yolo"))),
        (
            "online Job target",
            broken(&|v| payment(v)["target"] = json!({"kind": "Job", "name": "payment"})),
        ),
        (
            "Deployment target without name",
            broken(&|v| payment(v)["target"] = json!({"kind": "Deployment"})),
        ),
        (
            "selector on a Deployment",
            broken(&|v| training(v)["target"]["selector"] = json!({"team": "x"})),
        ),
        (
            "capacity without cpu or nodeSelector",
            broken(&|v| spec(v)["capacity"] = json!({"memory": "12Gi"})),
        ),
        (
            "quantity not a quantity",
            broken(&|v| spec(v)["capacity"]["cpu"] = json!("lots")),
        ),
        (
            "no online workload",
            broken(&|v| spec(v)["online"] = json!([])),
        ),
        (
            "duplicate workload names",
            broken(&|v| training(v)["name"] = json!("payment")),
        ),
        (
            "offline weight 0",
            broken(&|v| training(v)["weight"] = json!(0)),
        ),
        (
            "maxPercentPerMinute 0",
            broken(&|v| spec(v)["guardrails"]["scaleDown"]["maxPercentPerMinute"] = json!(0)),
        ),
        (
            "workload name not DNS-1123",
            broken(&|v| payment(v)["name"] = json!("Payment_API")),
        ),
        (
            "target namespace not DNS-1123",
            broken(&|v| training(v)["target"]["namespace"] = json!("Not_Valid")),
        ),
        (
            "event with start and cron",
            broken(&|v| {
                spec(v)["events"] = json!([{
                    "name": "sale", "start": "2026-11-11T00:00:00Z",
                    "cron": "0 20 * * *", "duration": "1h",
                }])
            }),
        ),
        (
            "empty demand query",
            broken(&|v| payment(v)["demand"]["query"] = json!("")),
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
    for (what, object) in refused_at_apply() {
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
    // same edit that would otherwise shift capacity to payment: at least 10 replicas. Nothing
    // of it is applied; a keeps running its last valid generation, which at 50 per replica
    // and 10% headroom needs 10 replicas only above a demand of 409 (9 x 50 / 1.1); the test
    // bed's checkout stays under 180.
    const EDITED_MIN: u32 = 10;
    let edited = unix_now();
    let edited_payment = common::policy::online("a-payment", CHECKOUT, 10.0)
        .replicas(EDITED_MIN, 12)
        .json();
    patch_policy(
        &admin,
        &ns,
        "a",
        json!({"spec": {
            "events": [{"name": "sale", "cron": "61 * * * *", "duration": "1h"}],
            "online": [edited_payment],
        }}),
    )
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
    if !a_invalid.contains("spec.events[0].cron") || !a_invalid.contains("last valid generation") {
        problems.push(format!(
            "invalid message does not name the field, or what runs instead: {a_invalid}"
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
    // a ran its last valid generation all along: its writes (batch following demand, say)
    // are that spec's, never the invalid edit's.
    let mut wrong = 0;
    let writes = env.audit.daemon_writes(&ns);
    for w in writes.iter().filter(|w| {
        w.at >= edited && w.target.ends_with("/a-payment") && w.to >= u64::from(EDITED_MIN)
    }) {
        wrong += 1;
        problems.push(format!("the invalid edit was applied to a-payment: {w:?}"));
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
