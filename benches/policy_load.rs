//! How long the policy loader takes on the worst inputs it must refuse or accept, up to the
//! 1 MiB limit (issue 12, item 7: 200 KB of nested flow collections took `tideshift check`
//! 33 s). `load_str` is what `tideshift check` runs after reading the file; each input is
//! built here, so the figures in docs/fuzzing.md come from `cargo bench --bench policy_load`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use tideshift::policy::{self, load::MAX_FILE_BYTES};

const HEAD: &str = "apiVersion: tideshift.io/v1alpha1\nkind: ShiftPolicy\nspec:\n  online: ";
const FESTIVAL: &str = include_str!("../policies/festival.yaml");

/// `unit` repeated after `head` until the text is as close to `size` as it gets.
fn repeated(head: &str, unit: &str, size: usize) -> String {
    let count = (size - head.len()) / unit.len();
    format!("{head}{}", unit.repeat(count))
}

/// The festival policy with its online workloads replaced by 4,000 that each break a rule
/// (headroom -1), padded to just under 1 MiB: every validation error, and lines for some.
fn many_rule_errors() -> String {
    let (before, rest) = FESTIVAL
        .split_once("  online:\n")
        .expect("festival has online");
    let after = &rest[rest.find("  offline:").expect("festival has offline")..];
    let count = 4_000;
    let each = (MAX_FILE_BYTES - 256 - before.len() - after.len()) / count;
    let mut text = format!("{before}  online:\n");
    for i in 0..count {
        let item = format!(
            "    - name: w{i}\n      target: {{kind: Deployment, name: w{i}}}\n      \
             demand: {{query: 'sum(rate(x{{app=\"PAD\"}}[1m]))'}}\n      perReplica: 100\n      \
             headroom: -1\n      replicas: {{min: 1, max: 10}}\n"
        );
        let pad = "a".repeat(each.saturating_sub(item.len() - 3));
        text.push_str(&item.replace("PAD", &pad));
    }
    text.push_str(after);
    text
}

fn inputs() -> Vec<(&'static str, String)> {
    vec![
        ("festival (accepted)", FESTIVAL.to_string()),
        (
            "flow mappings and lists nested 40,000 deep, 200 KB",
            repeated(HEAD, "{a: [", 200_000),
        ),
        (
            "flow lists nested 1 M deep, 1 MiB",
            repeated(HEAD, "[", MAX_FILE_BYTES),
        ),
        (
            "flow collections 32 deep around 0.5 M values, 1 MiB",
            repeated(
                &format!("{HEAD}{}", "{a: [".repeat(16)),
                "a,",
                MAX_FILE_BYTES,
            ),
        ),
        (
            "block mappings nested 1,400 deep, 1 MiB",
            (0..1_400)
                .map(|i| format!("{}k:\n", " ".repeat(i)))
                .collect(),
        ),
        ("4,000 rule violations, 1 MiB", many_rule_errors()),
    ]
}

fn load(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy_load");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for (name, text) in inputs() {
        assert!(text.len() <= MAX_FILE_BYTES, "{name}: {} bytes", text.len());
        group.bench_function(name, |b| {
            b.iter(|| policy::load_str(black_box(&text), "bench.yaml").is_ok())
        });
    }
    group.finish();
}

criterion_group!(benches, load);
criterion_main!(benches);
