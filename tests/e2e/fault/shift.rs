//! A flash sale interrupted by a fault (API server restart, etcd stall, leader loss).

use super::*;

/// A namespace with payment (2) and training (8) under policy `shop` at 50 per replica.
pub(crate) async fn shift_scenario(env: &TestBed, class: &str) -> (Client, String, Namespaces) {
    let admin = common::client_from(&env.admin_kubeconfig).await;
    let ns = format!("faults-{class}-{}", suffix());
    let cleanup = Namespaces(env.admin_kubeconfig.clone(), vec![ns.clone()]);
    create_namespace(&admin, &ns).await;
    create_deployments(&admin, &ns, &[("payment", 2), ("training", 8)]).await;
    create_policy(&admin, &ns, &policy("shop", "", CHECKOUT, 50)).await;
    (admin, ns, cleanup)
}

/// A flash sale: a quarter of the demand per replica, so payment needs about four times as
/// many replicas (5 to 9 from 2) and training must give way first whatever the forecast's band:
/// at twice as many, payment 4 beside training 8 fit the capacity exactly, and whether training
/// moved depended on the band's width.
pub(crate) async fn start_shift(admin: &Client, ns: &str) {
    start_shift_of(admin, ns, 12).await;
}

/// A flash sale with `per_replica` demand per payment replica. At 4 (or less) payment needs its
/// maximum, 12, at any hour of any day (the test bed's `checkout` is 50 to 170), so training
/// gives way all the way to zero; at 12, how far it goes depends on the time of day.
pub(crate) async fn start_shift_of(admin: &Client, ns: &str, per_replica: u32) {
    patch_policy(admin, ns, "shop", json!({"spec": {"online": [serde_yaml::from_str::<Value>(&format!(
        "{{name: payment, target: {{kind: Deployment, name: payment}}, demand: {{query: '{CHECKOUT}'}}, perReplica: {per_replica}, headroom: 0.1, quantile: 0.9, replicas: {{min: 1, max: 12}}, startup: 10s}}"
    )).expect("online workload")]}}))
    .await;
}

/// Pods of `app` that still hold capacity (not Succeeded or Failed).
pub(crate) async fn pods_holding(client: &Client, ns: &str, app: &str) -> Option<usize> {
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .ok()?;
    Some(
        pods.items
            .iter()
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded") | Some("Failed")
                )
            })
            .count(),
    )
}

/// Judge the writes made since `since` of a shift from `before` to `after`: batch first,
/// online never down, nothing applied twice, nothing lost. Returns (wrong, lost) and notes problems.
pub(crate) fn judge_shift(
    writes: &[Write],
    since: f64,
    ns: &str,
    before: &BTreeMap<String, u32>,
    after: &BTreeMap<String, u32>,
    problems: &mut Vec<String>,
) -> (usize, usize) {
    let mut wrong = 0;
    let mut lost = 0;
    let writes: Vec<Write> = writes.iter().filter(|w| w.at >= since).cloned().collect();
    let payment = writes_to(&writes, ns, "payment");
    let training = writes_to(&writes, ns, "training");
    for w in payment.iter().filter(|w| w.to < w.from) {
        wrong += 1;
        problems.push(format!("payment scaled down: {w:?}"));
    }
    // A shift may come in steps as the forecast moves, but the same action is never applied
    // twice and no workload goes back and forth.
    for (name, list) in [("payment", &payment), ("training", &training)] {
        for pair in list.windows(2) {
            let (first, second) = (pair[0], pair[1]);
            if second.to == first.to {
                wrong += 1;
                problems.push(format!(
                    "{name}: the same write applied twice: {first:?} {second:?}"
                ));
            } else if (second.to > second.from) != (first.to > first.from) {
                wrong += 1;
                problems.push(format!("{name} went back and forth: {first:?} {second:?}"));
            }
        }
    }
    if after["payment"] <= before["payment"] {
        lost += 1;
        problems.push(format!("payment never grew: {before:?} -> {after:?}"));
    }
    if after["training"] >= before["training"] {
        lost += 1;
        problems.push(format!("training never gave way: {before:?} -> {after:?}"));
    }
    if let (Some(grow), Some(shrink)) = (payment.first(), training.first())
        && grow.at < shrink.at
    {
        wrong += 1;
        problems.push(format!(
            "payment grew before training shrank: {grow:?} {shrink:?}"
        ));
    }
    (wrong, lost)
}

/// The end of a mid-shift fault: `times` is (shift started, fault over). Waits for the shift to
/// complete, lets a few more cycles pass (nothing may be applied again), and judges every write
/// since the shift started. Returns the settled replicas and the class's figures.
pub(crate) async fn finish_shift(
    fault: &str,
    (audit, admin): (&Audit, &Client),
    ns: &str,
    daemon: &mut Daemon,
    before: &BTreeMap<String, u32>,
    (shift_from, back): (f64, f64),
    problems: &mut Vec<String>,
) -> (BTreeMap<String, u32>, Figures) {
    let after = wait_until(
        &format!("the shift to complete after the {fault}"),
        Duration::from_secs(180),
        async || {
            let desired = settled(admin, ns, "shop").await?;
            (desired["payment"] > before["payment"]).then_some(desired)
        },
    )
    .await;
    let recovery = unix_now() - back;
    if !daemon.alive() {
        problems.push(format!("the daemon exited during the {fault}"));
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    let writes = audit.daemon_writes(ns);
    let (wrong, lost) = judge_shift(&writes, shift_from, ns, before, &after, problems);
    // What the API server applied that the daemon never heard back about (an answer lost to
    // the fault): not wrong in itself, and judged above with the rest.
    let logged = daemon.logged_writes();
    let unheard: Vec<&Write> = writes
        .iter()
        .filter(|w| w.from != w.to)
        .filter(|w| {
            !logged
                .iter()
                .any(|l| l.target == w.target && l.from == w.from && l.to == w.to)
        })
        .collect();
    eprintln!(
        "{fault}: {before:?} -> {after:?}, writes (audit) {writes:?}, applied without the daemon hearing back: {unheard:?}"
    );
    let figures = Figures {
        passed: problems.is_empty(),
        wrong_scale_actions: wrong,
        lost_actions: lost,
        recovery_seconds: Some((recovery * 10.0).round() / 10.0),
    };
    (after, figures)
}
