//! End-to-end: `tideshift simulate --prometheus` rehearses a policy on the history the test
//! bed's real Prometheus holds (14 days backfilled by `tests/e2e/testbed up`, then scraped
//! live from the demand exporter), read with the daemon's own client.
//!
//! What it checks: the demand replayed is what Prometheus answers (compared at instants with
//! direct instant queries), replaying it from the CSV files `--save-traces` wrote gives the very
//! same report (so Prometheus history and a CSV trace go through one path), and a wrong query,
//! too little history or an unreachable Prometheus stop the run with an error that names the
//! workload and the query.
//!
//! Run through `tests/run`, or: `eval "$(tests/e2e/testbed env)"; cargo test --test e2e_simulate`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// A policy with one online workload per `(name, query)`, sized to the test bed's demand
/// (checkout about 120 requests/s, search about 40), and one batch workload. The capacity
/// leaves batch room even at the weekday peaks (checkout up to ~175 requests/s: 9 replicas,
/// search ~55: 3): with 12 cores, static sizing at the peak left batch nothing whenever the
/// 3 days read held a weekday's 14:00, and the test failed by the calendar.
fn policy(dir: &Path, online: &[(&str, &str)]) -> PathBuf {
    let mut text = String::from(
        "apiVersion: tideshift.io/v1alpha1\n\
         kind: ShiftPolicy\n\
         metadata: {name: rehearsal, namespace: shop}\n\
         spec:\n  \
           interval: 15s\n  \
           capacity: {cpu: \"16\", memory: 24Gi}\n  \
           forecast: {step: 1m, history: 2d, horizon: 30m, seasonality: [1d], retrain: 1h}\n  \
           offline:\n    \
             - {name: training, target: {kind: Deployment, name: training}, \
                replicas: {min: 0, max: 12}, resources: {cpu: \"1\", memory: 1Gi}}\n  \
           online:\n",
    );
    for (name, query) in online {
        text.push_str(&format!(
            "    - {{name: {name}, target: {{kind: Deployment, name: {name}}}, \
             demand: {{query: '{query}'}}, perReplica: 25, headroom: 0.2, startup: 45s, \
             replicas: {{min: 1, max: 10}}, resources: {{cpu: \"1\", memory: 1Gi}}}}\n"
        ));
    }
    let path = dir.join("policy.yaml");
    std::fs::write(&path, text).expect("writing the policy");
    path
}

fn simulate(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tideshift"))
        .arg("simulate")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running tideshift simulate")
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "simulate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("simulate --json prints JSON")
}

fn error_of(output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(2),
        "expected an error, got stdout {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// The value of `query` at instant `t`, asked of Prometheus directly (not through tideshift).
fn prometheus_at(url: &str, query: &str, t: i64) -> Option<f64> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let body: Value = runtime.block_on(async {
        reqwest::Client::new()
            .get(format!("{url}/api/v1/query"))
            .query(&[("query", query.to_string()), ("time", t.to_string())])
            .send()
            .await
            .unwrap_or_else(|e| panic!("querying {url}: {e}"))
            .json()
            .await
            .expect("Prometheus answers JSON")
    });
    assert_eq!(body["status"], "success", "{query} at {t}: {body}");
    let result = body["data"]["result"].as_array().expect("a vector");
    assert!(result.len() <= 1, "{query} at {t}: {body}");
    result.first().map(|sample| {
        sample["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .expect("a number")
    })
}

/// `timestamp,value` rows of a saved trace: unix seconds, `None` for a gap.
fn read_saved(path: &Path) -> Vec<(i64, Option<f64>)> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .skip(1)
        .map(|line| {
            let (t, v) = line.split_once(',').expect("timestamp,value");
            let t = chrono::DateTime::parse_from_rfc3339(t)
                .unwrap_or_else(|e| panic!("{t}: {e}"))
                .timestamp();
            (t, v.parse().ok())
        })
        .collect()
}

#[test]
fn simulate_replays_the_history_prometheus_holds() {
    let Some(testbed) = common::TestBed::from_env("the simulate e2e test") else {
        return;
    };
    let url = testbed.prometheus_url;
    let dir = tempfile::tempdir().expect("tempdir");
    // One query as users write it over a counter, one over a gauge.
    let checkout = r#"sum(rate(tideshift_demo_requests_total{workload="checkout"}[5m]))"#;
    let search = r#"tideshift_demo_demand{workload="search"}"#;
    let policy = policy(dir.path(), &[("checkout", checkout), ("search", search)]);
    let saved = dir.path().join("saved");
    let policy_arg = policy.to_str().expect("a UTF-8 path");
    let saved_arg = saved.to_str().expect("a UTF-8 path");

    let started = unix_now();
    let output = simulate(&[
        "--policy",
        policy_arg,
        "--prometheus",
        &url,
        "--since",
        "3d",
        "--step",
        "1m",
        "--warmup",
        "1d",
        "--json",
        "--save-traces",
        saved_arg,
    ]);
    let report = json_of(&output);
    assert_eq!(report["online"], serde_json::json!(["checkout", "search"]));
    let source = report["demand"].as_str().expect("the demand's source");
    assert!(
        source.starts_with(&format!("Prometheus {url}, ")),
        "{source}"
    );
    for strategy in ["static", "reactive", "tideshift", "oracle"] {
        let scores = &report["strategies"][strategy];
        assert!(
            scores["batch_core_hours"].as_f64().is_some_and(|h| h > 0.0),
            "{strategy}: {scores}"
        );
    }
    let scored_days = report["window"]["scored_days"].as_f64().expect("days");
    assert!(
        (1.99..=2.01).contains(&scored_days),
        "3 days read, 1 of warm-up: scored {scored_days} days"
    );

    // The demand replayed is what Prometheus holds: the saved traces cover the three days
    // asked for (the test bed backfilled 14), and match direct queries at instants spread over
    // them. Instants at least 10 minutes old: the newest samples may still be arriving.
    for (name, query) in [("checkout", checkout), ("search", search)] {
        let rows = read_saved(&saved.join(format!("{name}.csv")));
        let (first, last) = (rows[0].0, rows[rows.len() - 1].0);
        assert!(
            first <= started - 3 * 86_400 + 60 && last >= started - 300,
            "{name}: saved {first}..{last}, asked for the 3 days before {started}"
        );
        assert!(
            rows.windows(2).all(|w| w[1].0 - w[0].0 == 60),
            "{name}: 1-minute steps"
        );
        let gaps: Vec<i64> = rows
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(t, _)| *t)
            .collect();
        // Holes made while the test bed's Prometheus ran without scraping (a suspended
        // machine) are not backfilled by a later `up`, which fills only the time it was down.
        assert!(
            gaps.len() * 100 <= rows.len(),
            "{name}: {} gaps in {} points, from {:?} to {:?} (Unix seconds); if Prometheus \
             holds a hole there, start its history anew: tests/e2e/testbed down, remove the \
             state directory's prometheus/, tests/e2e/testbed up",
            gaps.len(),
            rows.len(),
            gaps.first(),
            gaps.last()
        );
        let old_enough: Vec<_> = rows
            .iter()
            .filter(|(t, v)| *t <= started - 600 && v.is_some())
            .collect();
        let picks = 7;
        for k in 0..picks {
            let &(t, saved_value) = old_enough[k * (old_enough.len() - 1) / (picks - 1)];
            let saved_value = saved_value.expect("picked a recorded point");
            let direct = prometheus_at(&url, query, t)
                .unwrap_or_else(|| panic!("{name}: Prometheus has no value at {t}"));
            assert!(
                (saved_value - direct).abs() <= 1e-9 * direct.abs().max(1.0),
                "{name} at {t}: replayed {saved_value}, Prometheus says {direct}"
            );
            assert!(
                direct > 0.0,
                "{name} at {t}: the test bed's demand is positive"
            );
        }
    }

    // Replayed from the saved CSV files, the rehearsal is the same to the last number.
    let checkout_trace = format!("checkout={saved_arg}/checkout.csv");
    let search_trace = format!("search={saved_arg}/search.csv");
    let replay = json_of(&simulate(&[
        "--policy",
        policy_arg,
        "--trace",
        &checkout_trace,
        "--trace",
        &search_trace,
        "--warmup",
        "1d",
        "--json",
    ]));
    assert_eq!(replay["strategies"], report["strategies"]);
    assert_eq!(replay["window"], report["window"]);
    assert_eq!(
        replay["forecast_step_seconds"],
        report["forecast_step_seconds"]
    );
}

#[test]
fn wrong_queries_short_history_and_no_prometheus_are_clear_errors() {
    let Some(testbed) = common::TestBed::from_env("the simulate e2e test") else {
        return;
    };
    let url = testbed.prometheus_url;
    let dir = tempfile::tempdir().expect("tempdir");
    let good = r#"tideshift_demo_demand{workload="checkout"}"#;
    let run = |query: &str, prometheus: &str| {
        let policy = policy(dir.path(), &[("checkout", good), ("search", query)]);
        error_of(&simulate(&[
            "--policy",
            policy.to_str().expect("a UTF-8 path"),
            "--prometheus",
            prometheus,
            "--since",
            "3d",
        ]))
    };

    // A typo in a label: no series.
    let typo = r#"tideshift_demo_demand{workload="serach"}"#;
    let err = run(typo, &url);
    assert!(
        err.contains("online workload search: query")
            && err.contains(&format!("{typo:?}"))
            && err.contains("returned no series"),
        "{err}"
    );

    // No aggregation over two series at once (checkout and search).
    let err = run("tideshift_demo_demand", &url);
    assert!(
        err.contains("online workload search")
            && err.contains("\"tideshift_demo_demand\"")
            && err.contains("series at the same time")
            && err.contains("sum(...)"),
        "{err}"
    );

    // A metric that exists only for the last day (as after a rename or a short retention).
    let young = format!(
        "tideshift_demo_demand{{workload=\"search\"}} and on() (vector(time()) > {})",
        unix_now() - 86_400
    );
    let err = run(&young, &url);
    assert!(
        err.contains("online workload search: Prometheus")
            && err.contains("holds 1d")
            && err.contains("simulate needs at least 2d:"),
        "{err}"
    );

    // Nothing listens on the discard port.
    let err = run(good, "http://127.0.0.1:9");
    assert!(
        err.contains("reading its demand from Prometheus http://127.0.0.1:9")
            && err.contains("request failed after 3 attempt(s)"),
        "{err}"
    );
}
