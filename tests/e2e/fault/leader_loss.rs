//! Leader loss.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn leader_killed_mid_shift_standby_takes_over_and_never_two_writers() {
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
    // Mid-shift: a shrinks training, to zero whatever the hour (4 per replica), and waits for
    // its pods; then a dies.
    let (resume_cm, shift_from) = shift_held_mid_way(&env, &admin, &ns, 4).await;
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
    // a shrank training to zero through `/scale`, which leaves no owner of the replicas, and
    // died before its cycle's status: b knows the zero is tideshift's only because a recorded
    // it in the status before sending it. Without that record b reported another writer.
    let zeroed = writes_to(&writes, &ns, "training")
        .iter()
        .any(|w| w.by == "replica-a" && w.to == 0);
    if !zeroed {
        problems.push(format!(
            "replica a never scaled training to zero (the case this class is about): {writes:?}"
        ));
    }
    let events = tideshift_events(&admin, &ns).await;
    for event in events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("OtherWriter"))
    {
        problems.push(format!(
            "after the takeover, a's own scale to zero was taken for another writer's: {:?} by {:?}",
            event.note, event.reporting_instance
        ));
    }
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
