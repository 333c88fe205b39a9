//! An etcd stall mid-shift.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn etcd_stall_mid_shift_no_crash_no_wrong_writes_resumes() {
    let Some(env) = testbed_env() else { return };
    let _serial = SERIAL.lock().await;
    let (admin, ns, _cleanup) = shift_scenario(&env, "etcd").await;
    let mut daemon = Daemon::spawn(
        &env,
        &env.prometheus_url,
        &env.metrics_addr,
        &["--namespace", &ns, "--shrink-wait", "60s"],
    );
    let before = wait_settled(&admin, &ns, "shop", Duration::from_secs(240)).await;
    let mut problems = Vec::new();

    let shift_from = unix_now();
    start_shift(&admin, &ns).await;
    testbed(&env, &["pause", "etcd"]);
    let resume = ResumeOnDrop(env.script.clone(), "etcd");
    tokio::time::sleep(Duration::from_secs(20)).await;
    drop(resume);
    let back = unix_now();
    let (_, figures) = finish_shift(
        "etcd stall",
        (&env.audit, &admin),
        &ns,
        &mut daemon,
        &before,
        (shift_from, back),
        &mut problems,
    )
    .await;
    report("etcd_stall", &figures, &problems);
}
