//! What the leader-election classes share: two replicas, who led when.

use super::*;

/// The chart's RBAC lets the daemon read and renew only its release's Lease, `tideshift` in
/// tideshift-system. The classes run one at a time, so it is free.
pub(crate) const LEASE: &str = "tideshift";
pub(crate) const LEASE_NAMESPACE: &str = "tideshift-system";

pub(crate) fn leases(admin: &Client) -> Api<k8s_openapi::api::coordination::v1::Lease> {
    Api::namespaced(admin.clone(), LEASE_NAMESPACE)
}

/// Clear what an earlier (killed) run may have left, and delete it again at the end.
pub(crate) struct LeaseCleanup(pub(crate) Client);

impl LeaseCleanup {
    pub(crate) async fn new(admin: &Client) -> LeaseCleanup {
        let _ = leases(admin).delete(LEASE, &DeleteParams::default()).await;
        LeaseCleanup(admin.clone())
    }

    pub(crate) async fn expect_holder(&self, who: &str, problems: &mut Vec<String>) {
        let holder = leases(&self.0)
            .get(LEASE)
            .await
            .ok()
            .and_then(|l| l.spec?.holder_identity);
        if holder.as_deref() != Some(who) {
            problems.push(format!("lease holder at the end: {holder:?}"));
        }
    }

    pub(crate) async fn delete(self) {
        let _ = leases(&self.0)
            .delete(LEASE, &DeleteParams::default())
            .await;
    }
}

/// The chart's default lease timings (`charts/tideshift/values.yaml`), as the flags the
/// chart renders from them: what a user who installs the chart gets.
pub(crate) struct ChartTimings {
    pub(crate) lease_duration: String,
    pub(crate) renew_deadline: String,
    pub(crate) retry_period: String,
    pub(crate) api_timeout: String,
}

impl ChartTimings {
    pub(crate) fn read() -> ChartTimings {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/tideshift/values.yaml");
        let text = std::fs::read_to_string(path).expect("the chart's values.yaml");
        let values: Value = serde_yaml::from_str(&text).expect("values.yaml is YAML");
        let text = |v: &Value| v.as_str().expect("a duration in values.yaml").to_string();
        ChartTimings {
            lease_duration: text(&values["leaderElection"]["leaseDuration"]),
            renew_deadline: text(&values["leaderElection"]["renewDeadline"]),
            retry_period: text(&values["leaderElection"]["retryPeriod"]),
            api_timeout: text(&values["apiTimeout"]),
        }
    }

    pub(crate) fn seconds(duration: &str) -> f64 {
        duration
            .parse::<tideshift::policy::PolicyDuration>()
            .expect("a duration")
            .as_secs_f64()
    }

    /// The longest takeover these timings allow after a leader dies: a lease after the
    /// standby first saw the last renewal, which it sees within a retry period.
    pub(crate) fn takeover_bound(&self) -> f64 {
        Self::seconds(&self.lease_duration) + Self::seconds(&self.retry_period)
    }
}

/// A replica of the daemon with leader election on the chart's Lease and the chart's default
/// timings, naming itself `identity` (in its User-Agent too).
pub(crate) fn replica(
    env: &TestBed,
    kubeconfig: &str,
    identity: &str,
    metrics_addr: &str,
    ns: &str,
    extra: &[&str],
) -> Daemon {
    let timings = ChartTimings::read();
    let mut args = vec![
        "--namespace",
        ns,
        "--leader-election",
        "--lease-name",
        LEASE,
        "--identity",
        identity,
        "--lease-duration",
        &timings.lease_duration,
        "--renew-deadline",
        &timings.renew_deadline,
        "--retry-period",
        &timings.retry_period,
        "--api-timeout",
        &timings.api_timeout,
    ];
    args.extend_from_slice(extra);
    Daemon::spawn_with(kubeconfig, &env.prometheus_url, metrics_addr, &args)
}

pub(crate) async fn wait_leading(daemon: &Daemon, who: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while daemon.metric("tideshift_leader", &[]).await != Some(1.0) {
        let log = daemon.log_text();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        assert!(
            Instant::now() < deadline,
            "{who} did not lead within 60 s; its log ends with {tail:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Replica a (through `a_kubeconfig`), leading, and replica b standing by, then the policy
/// settled: (a, b, the settled replicas).
pub(crate) async fn two_replicas(
    env: &TestBed,
    admin: &Client,
    ns: &str,
    a_kubeconfig: &str,
    extra: &[&str],
) -> (Daemon, Daemon, BTreeMap<String, u32>) {
    let a = replica(env, a_kubeconfig, "replica-a", &env.metrics_addr, ns, extra);
    wait_leading(&a, "replica a").await;
    let b_addr = free_addr();
    let b = replica(env, &env.daemon_kubeconfig, "replica-b", &b_addr, ns, extra);
    let before = wait_settled(admin, ns, "shop", Duration::from_secs(240)).await;
    (a, b, before)
}

/// A flash sale (`per_replica`, as `start_shift_of`) with the controller-manager frozen:
/// replica a shrinks training, whose pods stay, and waits for them. Returns the
/// controller-manager's resumption (on drop) and when the shift began.
pub(crate) async fn shift_held_mid_way(
    env: &TestBed,
    admin: &Client,
    ns: &str,
    per_replica: u32,
) -> (ResumeOnDrop, f64) {
    testbed(env, &["pause", "kube-controller-manager"]);
    let resume_cm = ResumeOnDrop(env.script.clone(), "kube-controller-manager");
    let shift_from = unix_now();
    start_shift_of(admin, ns, per_replica).await;
    wait_until(
        "replica a to shrink training",
        Duration::from_secs(60),
        async || {
            writes_to(&env.audit.daemon_writes(ns), ns, "training")
                .iter()
                .any(|w| w.by == "replica-a" && w.at >= shift_from)
                .then_some(())
        },
    )
    .await;
    (resume_cm, shift_from)
}

/// When `who` took the Lease after `after`: its first successful Lease write since (a standby
/// only reads the Lease), from the audit log.
pub(crate) async fn taken_over(audit: &Audit, who: &str, after: f64) -> f64 {
    wait_until(
        &format!("{who} to take the Lease over"),
        Duration::from_secs(60),
        async || {
            audit
                .lease_writes(LEASE_NAMESPACE, LEASE)
                .iter()
                .find(|r| r.by == who && r.succeeded() && r.at > after)
                .map(|r| r.at)
        },
    )
    .await
}

/// Writes in `ns` by a replica that did not lead at the time: before `a` lost the lease
/// (`lost`), only `a` may write; from when `b` took it (`took_over`), only `b`.
pub(crate) fn judge_writers(
    writes: &[Write],
    (a, lost): (&str, f64),
    (b, took_over): (&str, f64),
    problems: &mut Vec<String>,
) -> usize {
    let mut wrong = 0;
    for w in writes.iter().filter(|w| w.daemon) {
        let rightful = (w.by == a && w.at < lost) || (w.by == b && w.at >= took_over);
        if !rightful {
            wrong += 1;
            problems.push(format!(
                "{} wrote while it did not lead ({a} lost the lease at {lost:.1}, {b} took it at {took_over:.1}): {w:?}",
                w.by
            ));
        }
    }
    wrong
}

/// Events are writes too; each names the replica that recorded it.
pub(crate) async fn judge_events(
    admin: &Client,
    ns: &str,
    (a, lost): (&str, f64),
    b: &str,
    problems: &mut Vec<String>,
) {
    let events = Api::<Event>::namespaced(admin.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mut recorded = 0;
    for event in &events {
        let Some(at) = event.event_time.as_ref() else {
            continue;
        };
        let at = at.0.as_millisecond() as f64 / 1000.0;
        recorded += 1;
        let by = event.reporting_instance.as_deref().unwrap_or("");
        if (by == b && at < lost) || (by == a && at > lost + 1.0) {
            problems.push(format!(
                "Event {:?} by {by} at {at:.1} ({a} lost the lease at {lost:.1})",
                event.reason
            ));
        }
    }
    if recorded == 0 {
        problems.push("no Events recorded by either replica".into());
    }
}
