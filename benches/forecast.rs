//! Forecaster speed: one workload's retrain (14 days of 1-minute history, horizon 60) and the
//! whole M4 Hourly run (skipped when the data set is not next to the repository).

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use tideshift::forecast::backtest::{load_m4, m4_forecasts};
use tideshift::forecast::{ForecastSpec, Series, default_forecaster};

fn minute_history() -> Series {
    let values = (0..20_160)
        .map(|i| {
            let day = 2.0 * std::f64::consts::PI * (i % 1440) as f64 / 1440.0;
            let week = 2.0 * std::f64::consts::PI * (i % 10_080) as f64 / 10_080.0;
            let wobble = ((i as f64 * 12.9898).sin() * 43_758.545).fract() * 0.1;
            800.0 * (1.0 + 0.5 * day.sin()) * (1.0 + 0.2 * week.cos()) * (1.0 + wobble)
        })
        .collect();
    Series::new(1_700_000_000, 60, values)
}

fn one_workload(c: &mut Criterion) {
    let history = minute_history();
    let spec = ForecastSpec {
        seasons: vec![1440, 10_080],
        events: vec![],
        horizon: 60,
        // As the daemon fits: the band kept at the policy's quantile only.
        band_quantile: Some(0.95),
    };
    let forecaster = default_forecaster();
    c.bench_function("fit+predict 14d of 1-minute history, horizon 60", |b| {
        b.iter(|| {
            let model = forecaster.fit(&history, &spec).expect("fit");
            model.predict(&history, 60, 0.95).expect("predict")
        })
    });
}

fn m4_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("TIDESHIFT_M4_DIR") {
        return Some(PathBuf::from(dir));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    ["../shared/data/m4-hourly", "../../shared/data/m4-hourly"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.join("Hourly-train.csv").is_file())
}

fn m4_run(c: &mut Criterion) {
    let Some(dir) = m4_dir() else {
        eprintln!("skipping the M4 bench: no m4-hourly data (set TIDESHIFT_M4_DIR)");
        return;
    };
    let data = match load_m4(&dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipping the M4 bench: {e}");
            return;
        }
    };
    let mut group = c.benchmark_group("m4");
    group.sample_size(10);
    group.bench_function("fit+predict all 414 M4 Hourly series", |b| {
        // Exactly what the daemon runs: each series fitted on its own by the default forecaster.
        let forecaster = default_forecaster();
        b.iter(|| {
            m4_forecasts(forecaster.as_ref(), &data.train, &data.ids, 0.95).expect("forecasts")
        })
    });
    group.finish();
}

criterion_group!(benches, one_workload, m4_run);
criterion_main!(benches);
