//! `tideshift check` on good and bad policy files: every file in `policies/` passes; every bad
//! fixture fails with one line that names the file and the problem.

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use proptest::prelude::*;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

fn bad(name: &str) -> PathBuf {
    Path::new(MANIFEST)
        .join("tests/fixtures/policies/bad")
        .join(name)
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
}

fn check(args: &[&Path]) -> Outcome {
    let output = Command::cargo_bin("tideshift")
        .unwrap()
        .arg("check")
        .args(args)
        // Only so that a hang fails the test instead of stalling the suite; how fast a check
        // is gets measured, not asserted (docs/policy.md).
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
    }
}

/// Each bad-policy class, and words its one-line message must contain.
const BAD: &[(&str, &[&str])] = &[
    ("alias-bomb.yaml", &["alias"]),
    ("deep-nesting.yaml", &["nested deeper"]),
    ("binary.yaml", &["binary data"]),
    ("not-utf8.yaml", &["not UTF-8"]),
    ("empty.yaml", &["empty file"]),
    ("comments-only.yaml", &["empty file"]),
    ("multi-document.yaml", &["2 YAML documents"]),
    ("not-a-mapping.yaml", &["expected a mapping"]),
    ("syntax-error.yaml", &[":15:"]),
    ("wrong-kind.yaml", &[":3: kind", "Deployment"]),
    (
        "wrong-api-version.yaml",
        &[":2: apiVersion", "tideshift.io/v1"],
    ),
    ("misspelt-spec.yaml", &["unknown field `sepc`"]),
    (
        "unknown-field.yaml",
        &["spec.online[0].perReplicas", "unknown field"],
    ),
    (
        "negative-replicas.yaml",
        &[":15: spec.online[0].replicas.max", "-40"],
    ),
    ("replicas-overflow.yaml", &["spec.online[0].replicas.max"]),
    (
        "absurd-replicas.yaml",
        &["spec.online[0].replicas.max", "absurd"],
    ),
    (
        "negative-per-replica.yaml",
        &[":14: spec.online[0].perReplica", "-100"],
    ),
    ("nan.yaml", &["spec.online[0].perReplica", "NaN"]),
    ("infinite.yaml", &["spec.online[0].perReplica", "inf"]),
    (
        "wrong-type.yaml",
        &["spec.online[0].perReplica", "expected a number"],
    ),
    (
        "min-greater-than-max.yaml",
        &["spec.online[0].replicas", "min 50 is greater than max 40"],
    ),
    (
        "bad-duration.yaml",
        &["spec.events[0].duration", "15 minutes"],
    ),
    ("bad-quantity.yaml", &["spec.capacity.cpu", "32 cores"]),
    (
        "duplicate-names.yaml",
        &["spec.offline[0].name", "duplicate"],
    ),
    ("bad-cron.yaml", &["spec.events[0].cron", "0 25 * * *"]),
    (
        "bad-timezone.yaml",
        &["spec.events[0].timezone", "Asia/Atlantis"],
    ),
    ("start-and-cron.yaml", &["spec.events[0]", "not both"]),
    ("bad-start.yaml", &["spec.events[0].start", "RFC 3339"]),
    (
        "job-without-target.yaml",
        &["spec.offline[0].target", "name or a selector"],
    ),
    (
        "no-capacity.yaml",
        &["spec.capacity", "cpu", "nodeSelector"],
    ),
    (
        "quantile-out-of-range.yaml",
        &["spec.online[0].quantile", "1.5"],
    ),
    ("horizon-too-short.yaml", &["spec.forecast.horizon"]),
    ("invalid-name.yaml", &["spec.online[0].name", "Web_API"]),
    (
        "empty-query.yaml",
        &["spec.online[0].demand.query", "empty"],
    ),
    ("bad-mode.yaml", &["spec.mode", "yolo"]),
];

#[test]
fn every_example_policy_passes() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(MANIFEST).join("policies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "expected example policies, found {files:?}"
    );
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let outcome = check(&refs);
    assert_eq!(outcome.code, Some(0), "{}", outcome.stdout);
    for file in &files {
        assert!(
            outcome.stdout.contains(&format!("{}: ok", file.display())),
            "{}",
            outcome.stdout
        );
    }
}

#[test]
fn every_bad_class_fails_with_one_line_naming_the_problem() {
    for (name, words) in BAD {
        let path = bad(name);
        assert!(path.exists(), "missing fixture {name}");
        let outcome = check(&[&path]);
        assert_eq!(outcome.code, Some(1), "{name}: {}", outcome.stdout);
        let lines: Vec<&str> = outcome.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "{name}: one line expected, got {lines:?}");
        let line = lines[0];
        assert!(
            line.starts_with(&path.display().to_string()),
            "{name}: {line}"
        );
        for word in *words {
            assert!(line.contains(word), "{name}: {word:?} missing in {line}");
        }
    }
}

#[test]
fn every_fixture_is_covered_by_the_table() {
    for entry in std::fs::read_dir(Path::new(MANIFEST).join("tests/fixtures/policies/bad")).unwrap()
    {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            BAD.iter().any(|(n, _)| *n == name),
            "fixture {name} has no expectation"
        );
    }
}

#[test]
fn one_line_per_file_and_failure_when_any_is_bad() {
    let good = Path::new(MANIFEST).join("policies/minimal.yaml");
    let nan = bad("nan.yaml");
    let empty = bad("empty.yaml");
    let outcome = check(&[&good, &nan, &empty]);
    assert_eq!(outcome.code, Some(1));
    let lines: Vec<&str> = outcome.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].ends_with("minimal.yaml: ok"));
    assert!(lines[1].contains("nan.yaml"));
    assert!(lines[2].contains("empty.yaml"));
}

#[test]
fn huge_file_is_refused_without_reading_it_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    let mut text = String::from("apiVersion: tideshift.io/v1alpha1\nkind: ShiftPolicy\n");
    while text.len() < 8 * 1024 * 1024 {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&path, text).unwrap();
    let outcome = check(&[&path]);
    assert_eq!(outcome.code, Some(1));
    assert!(outcome.stdout.contains("larger than"), "{}", outcome.stdout);
}

#[test]
fn missing_file_and_directory_are_errors() {
    let missing = Path::new("/nonexistent/policy.yaml");
    let outcome = check(&[missing]);
    assert_eq!(outcome.code, Some(1));
    assert!(
        outcome
            .stdout
            .contains("/nonexistent/policy.yaml: cannot read")
    );
    let outcome = check(&[Path::new(MANIFEST)]);
    assert_eq!(outcome.code, Some(1));
    assert!(outcome.stdout.contains("not a regular file"));
}

#[test]
fn standard_input_is_read_with_dash() {
    let text = std::fs::read(Path::new(MANIFEST).join("policies/minimal.yaml")).unwrap();
    Command::cargo_bin("tideshift")
        .unwrap()
        .args(["check", "-"])
        .write_stdin(text)
        .timeout(Duration::from_secs(20))
        .assert()
        .success()
        .stdout("-: ok\n");
    Command::cargo_bin("tideshift")
        .unwrap()
        .args(["check", "-"])
        .write_stdin("kind: Nope\n")
        .timeout(Duration::from_secs(20))
        .assert()
        .code(1);
}

#[test]
fn crd_command_prints_the_definition() {
    let output = Command::cargo_bin("tideshift")
        .unwrap()
        .arg("crd")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("name: shiftpolicies.tideshift.io"));
    assert!(text.contains("x-kubernetes-validations"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the loader.
    #[test]
    fn load_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = tideshift::policy::load_bytes(&bytes, "fuzz");
    }

    /// YAML-looking text (keys, brackets, anchors, aliases, numbers) never panics the loader.
    #[test]
    fn load_never_panics_on_yaml_like_text(
        text in r"(apiVersion: tideshift.io/v1alpha1\nkind: ShiftPolicy\n)?(spec|online|replicas|min|max|name|&a|\*a|[-:\[\]{},'\x22]| |\n|[0-9]|\.nan|\.inf|~){0,200}"
    ) {
        let _ = tideshift::policy::load_str(&text, "fuzz");
    }

    /// Mutating one character of a good policy never panics, and a success is a valid policy.
    #[test]
    fn mutated_good_policy_never_panics(position in 0usize..2_000, replacement in any::<char>()) {
        let text = include_str!("../policies/checkout.yaml");
        let mut chars: Vec<char> = text.chars().collect();
        let index = position % chars.len();
        chars[index] = replacement;
        let mutated: String = chars.into_iter().collect();
        if let Ok(policy) = tideshift::policy::load_str(&mutated, "fuzz") {
            prop_assert!(tideshift::policy::validate(&policy).is_ok());
        }
    }
}
