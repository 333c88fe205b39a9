//! `tideshift simulate` as a user runs it: the bundled example, JSON output, plots, and clear
//! errors on bad input.

use std::fmt::Write as _;
use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;

const STRATEGIES: [&str; 4] = ["static", "reactive", "tideshift", "oracle"];
const FIELDS: [&str; 5] = [
    "slo_violation_minutes",
    "unserved_fraction",
    "batch_core_hours",
    "scale_actions",
    "peak_online_replicas",
];

fn tideshift() -> Command {
    let mut cmd = Command::cargo_bin("tideshift").expect("the tideshift binary is built");
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// Three days of a daily pattern at 5-minute steps, with a gap: small enough for debug runs.
fn write_trace(dir: &Path) -> std::path::PathBuf {
    let mut text = String::from("timestamp,value\n");
    let start = 1_793_491_200i64;
    for i in 0..(3 * 288) {
        if (400..404).contains(&i) {
            continue;
        }
        let hour = (i % 288) as f64 / 12.0;
        let value = 3_000.0 + 2_500.0 * (std::f64::consts::PI * (hour - 6.0) / 12.0).sin();
        writeln!(text, "{},{value:.1}", start + i * 300).expect("write to a String");
    }
    let path = dir.join("trace.csv");
    std::fs::write(&path, text).expect("write the trace");
    path
}

#[test]
fn no_flags_runs_the_bundled_example_with_all_four_strategies() {
    let output = tideshift()
        .arg("simulate")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let table = String::from_utf8(output).expect("utf-8 output");
    for strategy in STRATEGIES {
        assert!(
            table.lines().any(|l| l.starts_with(strategy)),
            "no row for {strategy} in:\n{table}"
        );
    }
    assert!(table.contains("festival"));
    let row = |strategy: &str| -> (u64, f64) {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(strategy))
            .unwrap_or_else(|| panic!("no row for {strategy} in:\n{table}"));
        let cells: Vec<&str> = line.split_whitespace().collect();
        (
            cells[1].parse().expect("violation-minutes"),
            cells[3].parse().expect("batch core-hours"),
        )
    };
    beats_the_baselines(row("static"), row("reactive"), row("tideshift"), &table);
}

/// tideshift has no more SLO violation-minutes than the HPA configured for the same headroom,
/// and gives batch more core-hours than the static split. Arguments: (violation-minutes,
/// batch core-hours) per strategy.
fn beats_the_baselines(
    static_split: (u64, f64),
    reactive: (u64, f64),
    tideshift: (u64, f64),
    report: &str,
) {
    assert!(
        tideshift.0 <= reactive.0,
        "tideshift {} violation-minutes > reactive {}:\n{report}",
        tideshift.0,
        reactive.0
    );
    assert!(
        tideshift.1 > static_split.1,
        "tideshift {} batch core-hours <= static {}:\n{report}",
        tideshift.1,
        static_split.1
    );
}

#[test]
fn on_a_real_trace_with_holidays_tideshift_beats_the_baselines() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let output = tideshift()
        .args(["simulate", "--json", "--policy"])
        .arg(fixtures.join("policies/taxi.yaml"))
        .arg("--trace")
        .arg(fixtures.join("traces/nyc_taxi-2014-12-20.csv"))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let json: serde_json::Value = serde_json::from_slice(&output).expect("stdout is JSON");
    let scores = |strategy: &str| -> (u64, f64) {
        let s = &json["strategies"][strategy];
        (
            s["slo_violation_minutes"]
                .as_u64()
                .expect("violation-minutes"),
            s["batch_core_hours"].as_f64().expect("batch core-hours"),
        )
    };
    beats_the_baselines(
        scores("static"),
        scores("reactive"),
        scores("tideshift"),
        &json.to_string(),
    );
}

#[test]
fn json_has_every_strategy_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = write_trace(dir.path());
    let output = tideshift()
        .args(["simulate", "--json", "--warmup", "1d", "--trace"])
        .arg(&trace)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let json: serde_json::Value = serde_json::from_slice(&output).expect("stdout is JSON");
    for strategy in STRATEGIES {
        let scores = &json["strategies"][strategy];
        for field in FIELDS {
            let value = scores[field]
                .as_f64()
                .unwrap_or_else(|| panic!("{strategy}.{field} missing in {json}"));
            assert!(
                value >= 0.0 && value.is_finite(),
                "{strategy}.{field} = {value}"
            );
        }
        let unserved = scores["unserved_fraction"].as_f64().unwrap_or(2.0);
        assert!(unserved <= 1.0);
    }
    // The static split never moves; the others do.
    assert_eq!(json["strategies"]["static"]["scale_actions"], 0);
    for moving in ["tideshift", "oracle"] {
        assert!(json["strategies"][moving]["scale_actions"].as_u64() > Some(0));
    }
    // Knowing the future exactly, the oracle serves everything the capacity allows.
    assert_eq!(json["strategies"]["oracle"]["slo_violation_minutes"], 0);
    assert!(json["strategies"]["reactive"]["scale_actions"].as_u64() > Some(0));
    // A 5-minute trace is forecast at 5-minute steps, not the policy's 1 minute.
    assert_eq!(json["forecast_step_seconds"], 300);
}

#[test]
fn plot_writes_a_png() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = write_trace(dir.path());
    let png = dir.path().join("out.png");
    tideshift()
        .args(["simulate", "--warmup", "1d", "--trace"])
        .arg(&trace)
        .arg("--plot")
        .arg(&png)
        .assert()
        .success();
    let bytes = std::fs::read(&png).expect("the plot was written");
    assert!(bytes.len() > 10_000, "a real picture, not an empty file");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn bad_trace_names_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.csv");
    std::fs::write(
        &path,
        "timestamp,value\n2026-11-01T00:00:00Z,5\nnot-a-time,3\n",
    )
    .expect("write");
    tideshift()
        .args(["simulate", "--trace"])
        .arg(&path)
        .assert()
        .failure()
        .stderr(
            predicate::str::contains(format!("{}:3:", path.display()))
                .and(predicate::str::contains("invalid timestamp")),
        );
    tideshift()
        .args(["simulate", "--trace", "/nonexistent/trace.csv"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("/nonexistent/trace.csv"));
    tideshift()
        .args(["simulate", "--trace", "nobody=/nonexistent/trace.csv"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "no online workload named \"nobody\"",
        ));
}

#[test]
fn bad_policy_gives_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.yaml");
    std::fs::write(&garbage, "spec: [this is not a policy").expect("write");
    tideshift()
        .args(["simulate", "--policy"])
        .arg(&garbage)
        .assert()
        .failure()
        .stderr(predicate::str::contains("garbage.yaml"));

    // A valid policy without pod resources cannot be simulated: say which field.
    let festival = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/festival.yaml"),
    )
    .expect("the bundled policy");
    let without = festival.replacen("      resources: {cpu: 500m, memory: 1Gi}\n", "", 1);
    assert_ne!(without, festival);
    let path = dir.path().join("no-resources.yaml");
    std::fs::write(&path, without).expect("write");
    tideshift()
        .args(["simulate", "--policy"])
        .arg(&path)
        .assert()
        .failure()
        .stderr(predicate::str::contains("spec.online[0].resources"));

    tideshift()
        .args(["simulate", "--policy", "/nonexistent/policy.yaml"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("/nonexistent/policy.yaml"));
}

#[test]
fn prometheus_flags_are_refused_where_they_make_no_sense() {
    // Demand from a trace or from Prometheus, not both.
    tideshift()
        .args([
            "simulate",
            "--prometheus",
            "http://127.0.0.1:9",
            "--trace",
            "t.csv",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));
    // --since, --step and --save-traces only mean something with --prometheus.
    for flag in [
        ["--since", "3d"],
        ["--step", "1m"],
        ["--save-traces", "dir"],
    ] {
        tideshift()
            .arg("simulate")
            .args(flag)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("--prometheus <URL>"));
    }
    // Checked before any request is sent.
    tideshift()
        .args([
            "simulate",
            "--prometheus",
            "http://127.0.0.1:9",
            "--since",
            "1d",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "--since 1d: simulate needs at least 2d",
        ));
    tideshift()
        .args([
            "simulate",
            "--prometheus",
            "http://127.0.0.1:9",
            "--step",
            "1500ms",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "--step 1s500ms: write a whole number",
        ));
    tideshift()
        .args(["simulate", "--prometheus", "127.0.0.1:9090"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "must start with http:// or https://",
        ));
    // A policy simulate cannot run fails before Prometheus is asked (none listens here).
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("minimal.yaml");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/minimal.yaml"),
        &policy,
    )
    .expect("copy the minimal policy");
    tideshift()
        .args(["simulate", "--prometheus", "http://127.0.0.1:9", "--policy"])
        .arg(&policy)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("spec.capacity.memory")
                .and(predicate::str::contains("attempt").not()),
        );
}
