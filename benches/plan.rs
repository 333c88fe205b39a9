//! How long one planning cycle takes: three online workloads with 60-step forecasts and two
//! offline workloads, the size of the bundled festival example. The planner runs every 15 s
//! per policy in the daemon and at every step of a simulation.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use tideshift::forecast::{Forecast, ForecastMethod};
use tideshift::plan::{OfflineState, OnlineState, PlanInput, PlanMemory, Resources, plan};
use tideshift::policy::ShiftPolicySpec;

const POLICY: &str = r#"
interval: 15s
capacity: {cpu: "96", memory: 384Gi}
online:
  - {name: payment, target: {kind: Deployment, name: payment}, demand: {query: p},
     perReplica: 250, headroom: 0.15, replicas: {min: 4, max: 200}, startup: 45s, priority: 10}
  - {name: refund, target: {kind: Deployment, name: refund}, demand: {query: r},
     perReplica: 200, headroom: 0.15, replicas: {min: 2, max: 100}, startup: 30s, priority: 5}
  - {name: balance, target: {kind: Deployment, name: balance}, demand: {query: b},
     perReplica: 300, headroom: 0.1, replicas: {min: 2, max: 100}, startup: 30s}
offline:
  - {name: risk-training, target: {kind: Deployment, name: risk-training},
     replicas: {min: 0, max: 120}, weight: 2}
  - {name: nightly-reports, target: {kind: Job, name: nightly-reports},
     replicas: {min: 0, max: 60}, weight: 1}
"#;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn forecast(now: i64, base: f64, phase: f64) -> Forecast {
    let upper: Vec<f64> = (0..60)
        .map(|i| base * (1.5 + (f64::from(i) / 10.0 + phase).sin()))
        .collect();
    Forecast {
        start: now,
        step: 60,
        point: upper.iter().map(|v| v * 0.9).collect(),
        lower: upper.iter().map(|v| v * 0.8).collect(),
        upper,
        quantile: 0.95,
        method: ForecastMethod::Regression,
    }
}

fn input(now: i64) -> PlanInput {
    let online = |name: &str, base: f64, phase: f64, current: u32| OnlineState {
        name: name.to_string(),
        forecast: Some(forecast(now, base, phase)),
        observed_demand: Some(base),
        accuracy: None,
        current,
        pod: Resources {
            cpu: 0.5,
            memory: GIB,
        },
    };
    let offline = |name: &str, current: u32, cpu: f64| OfflineState {
        name: name.to_string(),
        current,
        pod: Resources {
            cpu,
            memory: 4.0 * GIB,
        },
    };
    PlanInput {
        now,
        capacity: Resources {
            cpu: 96.0,
            memory: 384.0 * GIB,
        },
        online: vec![
            online("payment", 3000.0, 0.0, 30),
            online("refund", 1200.0, 1.0, 12),
            online("balance", 1500.0, 2.0, 10),
        ],
        offline: vec![
            offline("risk-training", 40, 1.0),
            offline("nightly-reports", 20, 0.5),
        ],
    }
}

fn bench(c: &mut Criterion) {
    let spec: ShiftPolicySpec = serde_yaml::from_str(POLICY).expect("bench policy parses");
    // A memory with a full stabilization window, as in steady state.
    let mut memory = PlanMemory::default();
    for k in 0..40 {
        memory = plan(&spec, &input(1_800_000_000 + k * 15), &memory).1;
    }
    let now = 1_800_000_000 + 40 * 15;
    let cycle = input(now);
    c.bench_function("plan 3 online + 2 offline", |b| {
        b.iter(|| plan(black_box(&spec), black_box(&cycle), black_box(&memory)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
