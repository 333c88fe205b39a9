//! Another writer, remembered across failover and restart.

use super::*;

/// The status's record of another writer of `workload`: (since, message).
pub(crate) async fn other_writer(
    admin: &Client,
    ns: &str,
    workload: &str,
) -> Option<(String, String)> {
    let (_, status) = status_of(admin, ns, "shop").await?;
    let w = status.workloads.iter().find(|w| w.name == workload)?;
    let other = w.other_writer.as_ref()?;
    Some((other.since.clone(), other.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn another_writer_is_remembered_across_failover_and_restart() {
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
        let written_by_b = env.audit.requests(&ns).iter().any(|r| {
            r.resource == "shiftpolicies" && r.by == "replica-b" && r.is_write() && r.succeeded()
        });
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
