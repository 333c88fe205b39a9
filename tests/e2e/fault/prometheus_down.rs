//! Prometheus down, slow or erroring.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn prometheus_down_slow_or_erroring_holds_the_plan_and_recovers() {
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
    //
    // One exception, by design: a cycle whose history read failed while its latest value was
    // read (Prometheus came back between the two) holds payment, but never below the need of
    // that fresh value (`onMissingMetrics: hold`), so it may grow payment and nothing else.
    // The daemon names payment unreadable (its history was); the proxy says an answer came.
    let shifts = daemon.shifts();
    eprintln!("fault windows (start, restore): {fault_windows:?}");
    let only_payment_grows = |summary: &str| {
        summary
            .strip_prefix("scaled payment ")
            .is_some_and(|moved| {
                moved
                    .split_once('→')
                    .and_then(|(from, to)| {
                        Some((from.parse::<u32>().ok()?, to.parse::<u32>().ok()?))
                    })
                    .is_some_and(|(from, to)| to > from)
            })
    };
    for shift in shifts.iter().filter(|s| !s.dry_run) {
        let grown_on_a_fresh_value =
            only_payment_grows(&shift.summary) && proxy.answered_between(shift.started, shift.at);
        if !shift.demand_unreadable.is_empty() && grown_on_a_fresh_value {
            eprintln!("payment grown on a fresh value, its history unreadable: {shift:?}");
        }
        if !shift.demand_unreadable.is_empty() && !grown_on_a_fresh_value {
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
