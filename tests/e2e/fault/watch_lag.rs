//! A watch that lags behind the API server.

use super::*;

/// How far behind the API server the daemon's watches run: longer than a cycle (3 s) and than
/// the wait for training's pods, so that a shift decided on the views alone would show it.
const LAG: Duration = Duration::from_secs(30);

/// The daemon reads workloads from watched views (issue 14). Its watches run `LAG` behind the
/// API server for the whole test, while its reads and writes do not: after tideshift shrinks
/// training, the view still shows training as tideshift last wrote it, before the shrink. The
/// shift must complete as it does without the lag (batch first, nothing written twice, payment
/// grown once training's pods are gone, not once the watch catches up), tideshift's own writes
/// must never look like another writer's, and a hand scale must still be reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_lagging_watch_neither_delays_nor_repeats_the_shift() {
    let Some(env) = testbed_env() else { return };
    let _serial = SERIAL.lock().await;
    let admin = common::client_from(&env.admin_kubeconfig).await;
    let ns = format!("faults-watchlag-{}", suffix());
    let _cleanup = Namespaces(env.admin_kubeconfig.clone(), vec![ns.clone()]);
    create_namespace(&admin, &ns).await;
    // Training below what the capacity leaves it: tideshift grows it while settling, and is
    // its last writer when the sale comes.
    create_deployments(&admin, &ns, &[("payment", 2), ("training", 4)]).await;
    create_policy(&admin, &ns, &policy("shop", "", CHECKOUT, 50)).await;
    let proxy = ApiProxy::start(&env).await;
    proxy.delay_watches(LAG);
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = proxy.kubeconfig(&env, dir.path());
    let mut daemon = Daemon::spawn_with(
        &kubeconfig,
        &env.prometheus_url,
        &env.metrics_addr,
        &["--namespace", &ns, "--shrink-wait", "120s"],
    );
    let before = wait_settled(&admin, &ns, "shop", Duration::from_secs(240)).await;
    let mut problems = Vec::new();
    // The views catch up with what tideshift wrote while settling (training grows into the
    // free capacity): its last writer is tideshift from here on.
    tokio::time::sleep(LAG + Duration::from_secs(3)).await;
    let settling = writes_to(&env.audit.daemon_writes(&ns), &ns, "training").len();
    eprintln!("watch lag: tideshift wrote training {settling} time(s) while settling");
    if settling == 0 {
        problems.push(format!(
            "set-up: tideshift did not grow training while settling ({before:?}), so the lag \
             was not tested against its own write"
        ));
    }

    let shift_from = unix_now();
    start_shift(&admin, &ns).await;
    let (after, mut figures) = finish_shift(
        "watch lag",
        (&env.audit, &admin),
        &ns,
        &mut daemon,
        &before,
        (shift_from, shift_from),
        &mut problems,
    )
    .await;
    let writes: Vec<Write> = env
        .audit
        .daemon_writes(&ns)
        .into_iter()
        .filter(|w| w.at >= shift_from)
        .collect();
    let shrunk = writes_to(&writes, &ns, "training").first().map(|w| w.at);
    let grown = writes_to(&writes, &ns, "payment").first().map(|w| w.at);
    if let (Some(shrunk), Some(grown)) = (shrunk, grown) {
        let waited = grown - shrunk;
        eprintln!("watch lag: payment grew {waited:.1} s after training shrank");
        if waited >= LAG.as_secs_f64() / 2.0 {
            problems.push(format!(
                "payment grew {waited:.1} s after training shrank: the daemon waited for its \
                 watch ({} s behind), not for training's pods",
                LAG.as_secs()
            ));
        }
    }

    // The views still show training as tideshift wrote it before the shrink: taken at their
    // word, they make that older write the baseline again, and the server's 0 (a scale to 0
    // leaves no manager of the field) then looks like another writer's.
    let conflict_now = async || {
        let (_, status) = status_of(&admin, &ns, "shop").await?;
        let (state, _, message) = condition(&status, "Conflict")?;
        (state == "True").then(|| message.to_string())
    };
    tokio::time::sleep(Duration::from_secs(6)).await;
    if let Some(message) = conflict_now().await {
        problems.push(format!(
            "a Conflict before anyone else wrote (tideshift's own shrink, seen through the \
             lagging watch): {message}"
        ));
    }
    // A person scales training by hand; the daemon hears of it through its lagging watch, and
    // reports it then.
    let by_hand = match after["training"] {
        0 => 1,
        n => n - 1,
    };
    assert!(
        scale_by_hand(&admin, &ns, "training", by_hand).await,
        "scaling by hand"
    );
    let scaled = unix_now();
    let reported = wait_until(
        "the daemon to report the hand scale as a Conflict",
        LAG + Duration::from_secs(60),
        async || {
            let message = conflict_now().await?;
            (message.contains("training") && message.contains(&format!("to {by_hand} by")))
                .then_some(message)
        },
    )
    .await;
    eprintln!(
        "watch lag: Conflict {:.1} s after the hand scale: {reported}",
        unix_now() - scaled
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    if replicas(&admin, &ns, "training").await != Some(by_hand) {
        problems.push("the daemon wrote over the hand scale".into());
    }
    if !daemon.alive() {
        problems.push("the daemon exited".into());
    }
    figures.passed = problems.is_empty();
    report("watch_lag", &figures, &problems);
}
