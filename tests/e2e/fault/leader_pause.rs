//! A leader paused past its lease.

use super::*;

/// SIGSTOP / SIGCONT a process; SIGCONT again when dropped, however the test ends.
pub(crate) struct Paused(pub(crate) i32);

impl Paused {
    pub(crate) fn stop(pid: u32) -> Paused {
        let pid = pid as i32;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(
            unsafe { libc::kill(pid, libc::SIGSTOP) },
            0,
            "SIGSTOP {pid}"
        );
        // Stopped means state T in /proc/<pid>/stat (the third field).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            if state == Some("T") {
                break;
            }
            assert!(Instant::now() < deadline, "{pid} did not stop: {stat}");
            std::thread::sleep(Duration::from_millis(10));
        }
        Paused(pid)
    }

    pub(crate) fn resume(self) {}
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn leader_paused_past_its_lease_never_writes_after_the_takeover() {
    let Some(env) = testbed_env() else { return };
    let _serial = SERIAL.lock().await;
    let (admin, ns, _cleanup) = shift_scenario(&env, "pause").await;
    let lease = LeaseCleanup::new(&admin).await;
    let proxy = ApiProxy::start(&env).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let proxied = proxy.kubeconfig(&env, dir.path());
    // Replica a reaches the cluster through the proxy; b directly.
    let (mut a, b, before) =
        two_replicas(&env, &admin, &ns, &proxied, &["--shrink-wait", "90s"]).await;
    let mut problems = Vec::new();
    // Mid-shift: a shrinks training and waits for its pods (the controller-manager is frozen).
    let (resume_cm, shift_from) = shift_held_mid_way(&env, &admin, &ns, 12).await;
    // Its next read of payment is the one its grow of payment is decided on: hold its answer,
    // let the pods go, and pause a as soon as that read reaches the API server.
    let (arrived, release) = proxy.hold_next(
        axum::http::Method::GET,
        &format!("/apis/apps/v1/namespaces/{ns}/deployments/payment"),
    );
    drop(resume_cm);
    tokio::time::timeout(Duration::from_secs(120), arrived)
        .await
        .expect("replica a to read payment before growing it")
        .expect("the proxy held the read");
    let paused = Paused::stop(a.pid());
    let stopped = unix_now();
    // The answer (payment as it was) waits in a's socket while it is stopped.
    let _ = release.send(());

    // b takes over and completes the shift.
    let took_over = taken_over(&env.audit, "replica-b", stopped).await;
    let takeover = took_over - stopped;
    let after = wait_until(
        "replica b to complete the shift",
        Duration::from_secs(180),
        async || {
            let desired = settled(&admin, &ns, "shop").await?;
            (desired["payment"] > before["payment"]).then_some(desired)
        },
    )
    .await;
    // a wakes up: it had the read it would have written on, a lease long gone, and b's writes
    // since. It must not write anything.
    paused.resume();
    let resumed = unix_now();
    tokio::time::sleep(Duration::from_secs(12)).await;
    if !a.alive() {
        problems.push("replica a exited after it was resumed".into());
    }
    if a.metric("tideshift_leader", &[]).await != Some(0.0) {
        problems.push("replica a leads again after it was resumed".into());
    }
    let requests = env.audit.requests("");
    let mut wrong = 0;
    for r in requests
        .iter()
        .filter(|r| r.by == "replica-a" && r.at > stopped && r.is_write())
        .filter(|r| r.resource != "leases")
    {
        if r.succeeded() {
            wrong += 1;
            problems.push(format!("replica a wrote after it was deposed: {r:?}"));
        } else {
            eprintln!("replica a's write refused by the API server (precondition): {r:?}");
        }
    }
    let writes = env.audit.daemon_writes(&ns);
    wrong += judge_writers(
        &writes,
        ("replica-a", stopped),
        ("replica-b", took_over),
        &mut problems,
    );
    let (more_wrong, lost) = judge_shift(&writes, shift_from, &ns, &before, &after, &mut problems);
    wrong += more_wrong;
    let fenced = a
        .log_text()
        .lines()
        .filter(|l| l.contains("leadership lost or running out"))
        .count();
    // What a did once resumed, in its own words.
    for (at, fields) in a.logged_any() {
        if at >= resumed - 1.0 {
            eprintln!("replica a after the pause: {fields}");
        }
    }
    eprintln!(
        "leader pause: a stopped at {stopped:.1}, b took over after {takeover:.2}s, a resumed at {resumed:.1} ({fenced} writes fenced in a's log); {before:?} -> {after:?}; writes (audit) {writes:?}"
    );
    lease.expect_holder("replica-b", &mut problems).await;
    drop(a);
    drop(b);
    lease.delete().await;
    let figures = Figures {
        passed: problems.is_empty(),
        wrong_scale_actions: wrong,
        lost_actions: lost,
        recovery_seconds: Some((takeover * 100.0).round() / 100.0),
    };
    report("leader_pause", &figures, &problems);
}
