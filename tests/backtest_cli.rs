//! `tideshift backtest` end to end on small generated fixtures.

use std::fmt::Write as _;

use assert_cmd::Command;
use predicates::str::contains;

/// Hourly demand with a daily and a weekly cycle and some noise, as `timestamp,value`.
fn trace_csv(days: usize, iso: bool) -> String {
    let mut out = String::from("timestamp,value\n");
    for i in 0..days * 24 {
        let day = 2.0 * std::f64::consts::PI * (i % 24) as f64 / 24.0;
        let week = if (i / 24) % 7 >= 5 { 0.6 } else { 1.0 };
        let noise = ((i as f64 * 12.9898).sin() * 43_758.545).fract() * 0.08;
        let v = 1000.0 * (1.0 + 0.5 * day.sin()) * week * (1.0 + noise);
        let ts = 1_700_000_000 + 3600 * i as i64;
        if iso {
            let t = chrono::DateTime::from_timestamp(ts, 0).expect("valid time");
            writeln!(out, "{},{v:.1}", t.format("%Y-%m-%d %H:%M:%S")).expect("write");
        } else {
            writeln!(out, "{ts},{v:.1}").expect("write");
        }
    }
    out
}

fn json_of(output: &[u8]) -> serde_json::Value {
    serde_json::from_slice(output).expect("backtest --json prints JSON")
}

#[test]
fn trace_backtest_reports_both_methods_and_beats_seasonal_naive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("trace.csv");
    std::fs::write(&path, trace_csv(70, true)).expect("write fixture");
    let out = Command::cargo_bin("tideshift")
        .expect("binary")
        .args(["backtest", "--trace"])
        .arg(&path)
        .args([
            "--season",
            "24",
            "--horizon",
            "24",
            "--folds",
            "6",
            "--json",
        ])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_of(&out.stdout);
    let ts = &v["tideshift"];
    let sn = &v["seasonal_naive"];
    for key in ["smape", "mase", "coverage"] {
        assert!(ts[key].is_number(), "tideshift.{key} missing: {v}");
    }
    assert!(sn["smape"].is_number() && sn["mase"].is_number());
    // The weekend drop fools a daily seasonal naive; the weekly lags do not.
    assert!(
        ts["mase"].as_f64().unwrap() < sn["mase"].as_f64().unwrap(),
        "{v}"
    );
    assert!(
        ts["smape"].as_f64().unwrap() < sn["smape"].as_f64().unwrap(),
        "{v}"
    );
    let coverage = ts["coverage"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&coverage));
}

#[test]
fn m4_backtest_on_a_tiny_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut train = String::from("\"V1\",\"V2\"\n");
    let mut test = String::from("\"V1\",\"V2\"\n");
    for s in 0..3 {
        let values: Vec<f64> = trace_csv(34, false)
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap().parse::<f64>().unwrap() * (s + 1) as f64)
            .collect();
        let (head, tail) = values.split_at(values.len() - 48);
        let row = |id: usize, v: &[f64]| {
            let cells: Vec<String> = v.iter().map(|x| format!("\"{x}\"")).collect();
            format!("\"H{id}\",{}\n", cells.join(","))
        };
        train.push_str(&row(s + 1, head));
        test.push_str(&row(s + 1, tail));
    }
    std::fs::write(dir.path().join("Hourly-train.csv"), train).expect("write");
    std::fs::write(dir.path().join("Hourly-test.csv"), test).expect("write");
    let out = Command::cargo_bin("tideshift")
        .expect("binary")
        .args(["backtest", "--json", "--m4"])
        .arg(dir.path())
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_of(&out.stdout);
    assert_eq!(v["series"], 3);
    // The headline is the deployed configuration; pooled and seasonal naive sit beside it.
    for part in ["tideshift", "pooled", "seasonal_naive"] {
        for key in [
            "smape",
            "mase",
            "owa",
            "coverage",
            "msis",
            "seconds",
            "cpu_seconds",
        ] {
            assert!(v[part][key].is_number(), "{part}.{key} missing: {v}");
        }
    }
    let methods = v["tideshift"]["methods"].as_object().expect("methods");
    let counted: u64 = methods.values().map(|n| n.as_u64().unwrap_or(0)).sum();
    assert_eq!(counted, 3, "every series is counted under one method: {v}");
    assert!(v["tideshift"]["smape"].as_f64().unwrap() < 10.0, "{v}");
}

#[test]
fn bad_input_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.csv");
    std::fs::write(&path, "timestamp,value\n1700000000,5\nnot-a-time,6\n").expect("write");
    Command::cargo_bin("tideshift")
        .expect("binary")
        .args(["backtest", "--trace"])
        .arg(&path)
        .args(["--season", "24", "--horizon", "24"])
        .assert()
        .failure()
        .stderr(contains("line 3"));
    Command::cargo_bin("tideshift")
        .expect("binary")
        .args(["backtest", "--trace"])
        .arg(&path)
        .args(["--horizon", "24"])
        .assert()
        .failure()
        .stderr(contains("--season"));
    Command::cargo_bin("tideshift")
        .expect("binary")
        .args(["backtest", "--m4"])
        .arg(dir.path().join("missing"))
        .assert()
        .failure()
        .stderr(contains("Hourly-train.csv"));
}
