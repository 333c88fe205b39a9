//! Prometheus HTTP API response bodies on arbitrary bytes, through the same pure functions the
//! daemon applies to every answer: `parse_matrix` + `grid_from_body` (range queries: points where
//! series overlap, NaN/±Inf/negative values and holes become gaps) and `parse_vector` +
//! `sample_from_body` (instant queries). Never a panic, and the source's contract holds:
//! grid values are gaps or finite non-negative numbers that came from the answer.
//!
//! Called by the fuzz target fuzz/fuzz_targets/prometheus_response.rs (`fuzz/run`), and by
//! tests/fuzz_corpora.rs on every file of fuzz/corpus/prometheus_response/ in every `tests/run`.

use tideshift::forecast::Series;
use tideshift::source::prometheus::{grid_from_body, parse_matrix, parse_vector, sample_from_body};
use tideshift::source::{SourceError, align_down, grid_len, last_finite_age};

/// Grid steps the daemon uses (1s is the extreme of `forecast.step`); chosen by input length
/// so that one input always meets the same grid.
const STEPS: [i64; 4] = [1, 15, 60, 3_600];
/// Points per chunk: enough to place every point of a 4 KiB answer, small enough to be cheap.
const CHUNK_POINTS: i64 = 1_000;

/// One input: panics when a property does not hold.
pub fn check(data: &[u8]) {
    let step = STEPS[data.len() % STEPS.len()];
    check_range(data, step);
    check_instant(data);
}

fn check_range(data: &[u8], step: i64) {
    let parsed = parse_matrix(data);
    // Start the chunk at the first point, as a cycle's chunk starts at its own first time.
    let first = parsed
        .as_ref()
        .ok()
        .and_then(|all| all.iter().find_map(|s| s.points.first()))
        .map_or(0.0, |p| p.0);
    let start = align_down(first.floor() as i64, step);
    let end = start + (CHUNK_POINTS - 1) * step;
    let len = grid_len(start, end, step);
    let result = grid_from_body("fuzz", data, start, step, len);
    let series = match (parsed, result) {
        (Err(_), Err(SourceError::Parse { .. })) => return,
        (Ok(all), Ok(values)) => {
            assert_eq!(values.len(), len);
            for value in &values {
                assert!(
                    value.is_nan() || (value.is_finite() && *value >= 0.0),
                    "{value}"
                );
                // Sources never invent values (nor sum series): every number on the grid was
                // in the answer; where several series overlap the point is a gap.
                if !value.is_nan() {
                    assert!(
                        all.iter().flat_map(|s| &s.points).any(|p| p.1 == *value),
                        "{value} is not in the answer"
                    );
                }
            }
            for point in all.iter().flat_map(|s| &s.points) {
                assert!(point.0.is_finite());
            }
            Series::new(start, step, values)
        }
        (parsed, result) => panic!("parse_matrix {parsed:?} but grid_from_body {result:?}"),
    };
    if let Some(age) = last_finite_age(&series, series.end()) {
        assert!(age > 0 && age <= CHUNK_POINTS * step, "age {age}");
    }
}

fn check_instant(data: &[u8]) {
    let parsed = parse_vector(data);
    match (parsed, sample_from_body("fuzz", data)) {
        (Err(_), Err(SourceError::Parse { .. })) => {}
        (Ok(all), Err(error @ SourceError::MultipleSeries { .. })) => {
            assert!(all.len() > 1);
            let _ = error.to_string();
        }
        (Ok(all), Ok(None)) => {
            assert!(all.len() <= 1);
            if let Some(one) = all.first() {
                let usable = one.value.is_finite() && one.value >= 0.0;
                assert!(!usable, "usable value {} was dropped", one.value);
            }
        }
        (Ok(all), Ok(Some(sample))) => {
            assert_eq!(all.len(), 1);
            assert_eq!(sample.value, all[0].value);
            assert!(sample.value.is_finite() && sample.value >= 0.0);
            assert_eq!(sample.at, all[0].at.floor() as i64);
        }
        (parsed, result) => panic!("parse_vector {parsed:?} but sample_from_body {result:?}"),
    }
}
