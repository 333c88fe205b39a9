//! API server restart mid-shift.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn apiserver_restart_mid_shift_resumes_and_completes_once() {
    let Some(env) = testbed_env() else { return };
    let _serial = SERIAL.lock().await;
    let (admin, ns, _cleanup) = shift_scenario(&env, "apiserver").await;
    let mut daemon = Daemon::spawn(
        &env,
        &env.prometheus_url,
        &env.metrics_addr,
        &["--namespace", &ns, "--shrink-wait", "120s"],
    );
    let before = wait_settled(&admin, &ns, "shop", Duration::from_secs(240)).await;
    let mut problems = Vec::new();

    // Hold the shift between its halves: with the controller-manager frozen, the shrunk
    // training pods stay, so the daemon waits for them before growing payment.
    testbed(&env, &["pause", "kube-controller-manager"]);
    let resume_cm = ResumeOnDrop(env.script.clone(), "kube-controller-manager");
    let shift_from = unix_now();
    start_shift(&admin, &ns).await;
    wait_until(
        "the daemon to shrink training",
        Duration::from_secs(60),
        async || {
            (!writes_to(&env.audit.daemon_writes(&ns), &ns, "training").is_empty()).then_some(())
        },
    )
    .await;
    if replicas(&admin, &ns, "payment").await != Some(before["payment"]) {
        problems.push("payment grew before the shrunk pods were gone".into());
    }
    // Mid-shift: batch shrunk, online not yet grown. Restart the API server.
    testbed(&env, &["restart", "kube-apiserver"]);
    let back = unix_now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(resume_cm);
    let (after, mut figures) = finish_shift(
        "API server restart",
        (&env.audit, &admin),
        &ns,
        &mut daemon,
        &before,
        (shift_from, back),
        &mut problems,
    )
    .await;
    // The daemon's watch came back too: the sale ends (a change made after the restart) and
    // capacity returns to batch.
    set_per_replica(&admin, &ns, "shop", "payment", 50).await;
    let back_to_batch = wait_until(
        "the daemon to see a policy change made after the restart",
        Duration::from_secs(120),
        async || {
            let desired = settled(&admin, &ns, "shop").await?;
            (desired["training"] > after["training"]).then_some(desired)
        },
    )
    .await;
    eprintln!("after the sale: {back_to_batch:?}");
    figures.passed = problems.is_empty();
    report("apiserver_restart", &figures, &problems);
}

/// SIGCONT a paused component when the test ends, however it ends.
pub(crate) struct ResumeOnDrop(pub(crate) String, pub(crate) &'static str);

impl Drop for ResumeOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.0)
            .args(["resume", self.1])
            .status();
    }
}
