//! Bad metric data.

use super::*;

/// What the test's scrape target serves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Data {
    Normal,
    NaN,
    Inf,
    /// The demand series is absent from the scrape (Prometheus marks it stale).
    Vanished,
    /// A second series where one was expected.
    Doubled,
    /// The request counter restarts from 0.
    CounterReset,
}

pub(crate) struct BadData {
    pub(crate) run: String,
    pub(crate) data: Mutex<(Data, f64, f64)>,
    pub(crate) checkout: tideshift::demo::Scenario,
}

impl BadData {
    /// Demand of the test's series: the test bed's `checkout` demand, so that the history
    /// (taken from `checkout` before the switch) and the live series agree.
    pub(crate) fn demand(&self, t: f64) -> f64 {
        self.checkout.demand_at(t)
    }

    pub(crate) fn render(&self) -> String {
        let now = unix_now();
        let mut state = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let (data, last, total) = *state;
        // The counter counts half of the demand in requests per second.
        let mut total = total + 0.5 * self.demand(now) * (now - last).max(0.0);
        if data == Data::CounterReset && total > 1000.0 {
            total = 0.0;
        }
        *state = (data, now, total);
        let run = &self.run;
        let value = match data {
            Data::NaN => "NaN".to_string(),
            Data::Inf => "+Inf".to_string(),
            _ => format!("{:.3}", self.demand(now)),
        };
        let mut text = String::from("# TYPE faults_demand gauge\n");
        if data != Data::Vanished {
            text.push_str(&format!("faults_demand{{run=\"{run}\"}} {value}\n"));
        }
        if data == Data::Doubled {
            text.push_str(&format!(
                "faults_demand{{run=\"{run}\",copy=\"b\"}} {value}\n"
            ));
        }
        text.push_str(&format!(
            "# TYPE faults_requests_total counter\nfaults_requests_total{{run=\"{run}\"}} {total:.3}\n"
        ));
        text
    }
}

/// Demand payment is served per replica normally, and during a fault: raised at the start of
/// each fault, so that a daemon planning on its history during the fault would scale payment
/// down; one that holds while demand is unusable does not. Once demand is readable again the
/// change applies (a lost action otherwise).
pub(crate) const PAYMENT_PER_REPLICA: u32 = 25;
/// Refund's demand per replica (headroom 10%, `common::policy::online`): near 22:30 and 05:30
/// UTC its daily wave crosses the 1/2-replica boundary (45.5).
pub(crate) const REFUND_PER_REPLICA: f64 = 50.0;
pub(crate) const PAYMENT_PER_REPLICA_DURING: u32 = 100;
/// The policy's `guardrails.missingMetricsAfter`, and how much longer each fault lasts. The
/// grace is longer than the scale-down stabilization (20 s), so a daemon that planned on the
/// history during it would scale payment down before the grace is over.
pub(crate) const MISSING_AFTER: f64 = 40.0;
pub(crate) const PAST_MISSING: f64 = 20.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn bad_metric_data_never_panics_nor_scales_online_down() {
    let Some(env) = testbed_env() else { return };
    let _serial = SERIAL.lock().await;
    let admin = common::client_from(&env.admin_kubeconfig).await;
    let id = suffix();
    let ns = format!("faults-data-{id}");
    let _cleanup = Namespaces(env.admin_kubeconfig.clone(), vec![ns.clone()]);
    create_namespace(&admin, &ns).await;
    create_deployments(
        &admin,
        &ns,
        &[("payment", 2), ("refund", 1), ("training", 6)],
    )
    .await;

    let run = format!("r{id}");
    let source = Arc::new(BadData {
        run: run.clone(),
        data: Mutex::new((Data::Normal, unix_now(), 0.0)),
        checkout: tideshift::demo::Scenario::parse(
            "checkout:baseline=120,daily=0.4,daily_peak=14:00,weekend=0.7,noise=0.05",
            unix_now() as i64,
        )
        .expect("the test bed's checkout scenario"),
    });
    let listener = tokio::net::TcpListener::bind(&env.faults_scrape_addr)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "binding the faults scrape target {}: {e}",
                env.faults_scrape_addr
            )
        });
    let served = source.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let served = served.clone();
            async move { served.render() }
        }),
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    struct Abort(tokio::task::JoinHandle<()>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _server = Abort(server);

    // Before `switch`, history comes from `checkout` (14 days backfilled); from then on, from
    // the test's series. Aggregations keep every label but `run` (and `copy`), so a doubled
    // series reaches the daemon as two series.
    let switch = unix_now() as i64 + 15;
    let history = |expr: &str| {
        format!(
            r#"label_replace({expr}, "run", "{run}", "", "") unless on() (vector(time()) > {switch})"#
        )
    };
    let payment_query = format!(
        r#"sum by (run, copy) (faults_demand{{run="{run}"}}) or {}"#,
        history(CHECKOUT)
    );
    let refund_query = format!(
        r#"sum by (run) (rate(faults_requests_total{{run="{run}"}}[30s])) or {}"#,
        history(&format!("0.5 * {CHECKOUT}"))
    );
    let shop_with = |per_replica: u32| {
        use common::policy::{offline, online, policy};
        policy("shop")
            .missing_metrics_after(&format!("{MISSING_AFTER}s"))
            .online(online("payment", &payment_query, f64::from(per_replica)).startup("45s"))
            .online(online("refund", &refund_query, REFUND_PER_REPLICA).startup("45s"))
            .offline(offline("training"))
    };
    // The online workloads alone, for the edits a user makes during the test.
    let online =
        |per_replica: u32| -> Value { shop_with(per_replica).json()["spec"]["online"].take() };
    let shop = shop_with(PAYMENT_PER_REPLICA).build();
    create_policy(&admin, &ns, &shop).await;
    let mut daemon = Daemon::spawn(
        &env,
        &env.prometheus_url,
        &env.metrics_addr,
        &["--namespace", &ns],
    );
    wait_settled(&admin, &ns, "shop", Duration::from_secs(240)).await;
    // Past the switch, on the test's own series.
    wait_until(
        "the switch to the test's series",
        Duration::from_secs(60),
        async || (unix_now() as i64 > switch + 10).then_some(()),
    )
    .await;
    let first = wait_settled(&admin, &ns, "shop", Duration::from_secs(60)).await;
    eprintln!("settled on the test's series: {first:?}");

    let mut problems = Vec::new();
    let mut wrong = 0;
    let mut lost = 0;
    let mut recovery: f64 = 0.0;
    for data in [Data::NaN, Data::Inf, Data::Vanished, Data::Doubled] {
        let before = wait_settled(&admin, &ns, "shop", Duration::from_secs(120)).await;
        // Where in the minute a fault starts decides how old the last good point on the
        // history grid (step 1m) is: start just after a whole minute, so the grace runs its
        // full length (a daemon planning on the history during it then has 35 s or more to
        // shrink payment). A doubled series starts just before one, so the duplicate lands on
        // the grid too.
        let start_at = if data == Data::Doubled {
            42.0..48.0
        } else {
            2.0..8.0
        };
        wait_until(
            "the fault's second of the minute",
            Duration::from_secs(70),
            async || start_at.contains(&(unix_now() % 60.0)).then_some(()),
        )
        .await;
        let from = unix_now();
        source.data.lock().unwrap_or_else(|e| e.into_inner()).0 = data;
        // The plan now wants payment smaller: only readable demand may say so.
        patch_policy(
            &admin,
            &ns,
            "shop",
            json!({"spec": {"online": online(PAYMENT_PER_REPLICA_DURING)}}),
        )
        .await;
        let mut missing_seen = None;
        let mut reasons = BTreeMap::new();
        let phase_end = from + MISSING_AFTER + PAST_MISSING;
        while unix_now() < phase_end {
            if let Some((_, status)) = status_of(&admin, &ns, "shop").await {
                if let Some(("True", "MetricsUnavailable", message)) =
                    condition(&status, "Degraded")
                    && message.contains("payment")
                {
                    missing_seen.get_or_insert(unix_now() - from);
                }
                // Why an online workload was planned down, for the record.
                for w in status.workloads.iter().filter(|w| w.class == "online") {
                    if w.desired < w.current {
                        reasons
                            .entry(w.name.clone())
                            .or_insert_with(|| w.reason.clone().unwrap_or_default());
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if !reasons.is_empty() {
            eprintln!("{data:?}: planned down during the fault: {reasons:?}");
        }
        let ended = unix_now();
        // Past the grace, the daemon must have declared payment's demand missing.
        match missing_seen {
            Some(after) => eprintln!("{data:?}: payment reported missing after {after:.1}s"),
            None => problems.push(format!(
                "{data:?}: {:.0}s of unusable demand (grace {MISSING_AFTER}s) and payment never reported missing (Degraded/MetricsUnavailable)",
                ended - from
            )),
        }
        for w in env
            .audit
            .daemon_writes(&ns)
            .iter()
            .filter(|w| w.at >= from && w.at <= ended)
        {
            let online_down =
                (w.target.ends_with("/payment") || w.target.ends_with("/refund")) && w.to < w.from;
            let batch_up = w.target.ends_with("/training") && w.to > w.from;
            if w.target.ends_with("/payment") && w.to < w.from {
                wrong += 1;
                problems.push(format!(
                    "{data:?}: payment scaled down while its demand was unusable: {w:?}"
                ));
            } else if batch_up {
                wrong += 1;
                problems.push(format!(
                    "{data:?}: batch grew while payment's demand was unusable: {w:?}"
                ));
            } else if online_down {
                eprintln!("{data:?}: refund followed its own (readable) demand: {w:?}");
            }
        }
        let payment_now = replicas(&admin, &ns, "payment").await;
        if payment_now.is_some_and(|p| p < before["payment"]) {
            problems.push(format!(
                "{data:?}: payment at {payment_now:?} after the fault, {} before",
                before["payment"]
            ));
        }
        source.data.lock().unwrap_or_else(|e| e.into_inner()).0 = Data::Normal;
        let normal_again = unix_now();
        // Demand is readable again: the change made during the fault applies.
        let applied = wait_for(
            &format!("the change made during {data:?} to apply after it"),
            Duration::from_secs(120),
            async || {
                let desired = settled_or_why(&admin, &ns, "shop").await?;
                match desired["payment"] < before["payment"] {
                    true => Ok(desired),
                    false => Err(format!(
                        "settled at {desired:?}, payment not below {before:?}"
                    )),
                }
            },
        )
        .await;
        recovery = recovery.max(unix_now() - normal_again);
        eprintln!("{data:?}: {before:?} -> {applied:?}");
        if applied["payment"] >= before["payment"] {
            lost += 1;
        }
        patch_policy(
            &admin,
            &ns,
            "shop",
            json!({"spec": {"online": online(PAYMENT_PER_REPLICA)}}),
        )
        .await;
    }

    // A counter reset is not a drop in demand: `rate()` carries on, refund's demand stays
    // readable and near what it was.
    let before = wait_settled(&admin, &ns, "shop", Duration::from_secs(120)).await;
    let refund_demand = async || {
        daemon
            .metric("tideshift_demand", &["workload=\"refund\""])
            .await
    };
    let usual = refund_demand().await.unwrap_or(0.0);
    let from = unix_now();
    source.data.lock().unwrap_or_else(|e| e.into_inner()).0 = Data::CounterReset;
    let mut lowest = f64::INFINITY;
    let mut degraded = false;
    while unix_now() < from + MISSING_AFTER + PAST_MISSING {
        if let Some(demand) = refund_demand().await {
            lowest = lowest.min(demand);
        }
        if let Some((_, status)) = status_of(&admin, &ns, "shop").await {
            degraded |= is_true(&status, "Degraded");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    source.data.lock().unwrap_or_else(|e| e.into_inner()).0 = Data::Normal;
    if degraded {
        problems.push("CounterReset: the policy was Degraded by counter resets".into());
    }
    if lowest < 0.5 * usual {
        problems.push(format!(
            "CounterReset: refund's demand read as {lowest:.1} (usually {usual:.1})"
        ));
    }
    for w in env
        .audit
        .daemon_writes(&ns)
        .iter()
        .filter(|w| w.at >= from && w.target.ends_with("/refund") && w.to < w.from)
    {
        eprintln!(
            "CounterReset: refund scaled down (its demand: usually {usual:.1}, lowest {lowest:.1}): {w:?}"
        );
        // Wrong only if the dip took it: below what its usual demand needs. Refund's own daily
        // wave takes it from 2 to 1 near 22:30 UTC, reset or not (failed once so at 22:41).
        let usual_need = tideshift::plan::replicas_for(usual, REFUND_PER_REPLICA, 0.1);
        if lowest < 0.8 * usual && (w.to as u32) < usual_need {
            wrong += 1;
            problems.push(format!(
                "CounterReset: refund scaled down on a reset: {w:?}"
            ));
        }
    }
    eprintln!(
        "CounterReset: refund's demand {usual:.1}, lowest {lowest:.1}; settled before {before:?}"
    );
    wait_until(
        "Ready, not Degraded, plan applied after the bad data",
        Duration::from_secs(120),
        async || {
            let desired = settled(&admin, &ns, "shop").await?;
            let (_, status) = status_of(&admin, &ns, "shop").await?;
            (!is_true(&status, "Degraded")).then_some(desired)
        },
    )
    .await;
    // The faults really went through Prometheus: its raw samples hold NaN and +Inf.
    let raw = reqwest::Client::new()
        .get(format!("{}/api/v1/query", env.prometheus_url))
        .query(&[("query", format!("faults_demand{{run=\"{run}\"}}[30m]"))])
        .send()
        .await
        .expect("querying Prometheus")
        .text()
        .await
        .unwrap_or_default();
    for injected in ["\"NaN\"", "\"+Inf\"", "\"copy\":\"b\""] {
        if !raw.contains(injected) {
            problems.push(format!(
                "Prometheus never stored {injected} for the test's series"
            ));
        }
    }
    if !daemon.alive() {
        problems.push("the daemon exited".into());
    }
    if daemon.log_text().contains("panicked") {
        problems.push("the daemon panicked".into());
    }
    eprintln!(
        "bad data: writes (audit) {:?}",
        env.audit.daemon_writes(&ns)
    );
    let figures = Figures {
        passed: problems.is_empty(),
        wrong_scale_actions: wrong,
        lost_actions: lost,
        recovery_seconds: Some((recovery * 10.0).round() / 10.0),
    };
    report("bad_data", &figures, &problems);
}
