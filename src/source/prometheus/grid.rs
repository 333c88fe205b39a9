//! From a parsed answer to the grid a forecaster reads: unusable values become gaps, and a
//! query must yield one series (several are an error now, overlaps are gaps in history).

use std::collections::BTreeMap;

use super::parse::{RawSeries, parse_matrix, parse_vector};
use crate::series::Series;
use crate::source::{Sample, SourceError};

/// Demand is a finite, non-negative amount; anything else is a gap.
fn usable(value: f64) -> f64 {
    if value.is_finite() && value >= 0.0 {
        value
    } else {
        f64::NAN
    }
}

fn describe_labels(series: &[BTreeMap<String, String>]) -> String {
    series
        .iter()
        .take(3)
        .map(|labels| {
            let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            format!("{{{}}}", inner.join(","))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Put one series' points on the grid `start + i * step`, `len` points.
pub fn to_grid(series: Option<&RawSeries>, start: i64, step: i64, len: usize) -> Vec<f64> {
    let mut values = vec![f64::NAN; len];
    if let Some(series) = series {
        for &(t, v) in &series.points {
            let offset = (t - start as f64) / step as f64;
            let index = offset.round();
            if index >= 0.0 && (index as usize) < len {
                values[index as usize] = usable(v);
            }
        }
    }
    values
}

/// Put the points of every series on the grid; a point where more than one series has a value
/// is a gap (two series where one was expected cannot be told apart, nor summed). Returns the
/// values and how many points were such overlaps.
fn merge_to_grid(series: &[RawSeries], start: i64, step: i64, len: usize) -> (Vec<f64>, usize) {
    let mut values = vec![f64::NAN; len];
    let mut seen = vec![0u32; len];
    for one in series {
        for (i, value) in to_grid(Some(one), start, step, len).into_iter().enumerate() {
            if value.is_finite() {
                seen[i] += 1;
                values[i] = value;
            }
        }
    }
    let mut overlaps = 0;
    for (value, count) in values.iter_mut().zip(seen) {
        if count > 1 {
            *value = f64::NAN;
            overlaps += 1;
        }
    }
    (values, overlaps)
}

/// The one series a demand query must yield, or `None` when it yielded nothing.
pub fn one_series<T>(
    query: &str,
    items: Vec<T>,
    labels: impl Fn(&T) -> &BTreeMap<String, String>,
) -> Result<Option<T>, SourceError> {
    if items.len() > 1 {
        let all: Vec<BTreeMap<String, String>> = items.iter().map(|i| labels(i).clone()).collect();
        return Err(SourceError::MultipleSeries {
            query: query.to_string(),
            count: items.len(),
            labels: describe_labels(&all),
        });
    }
    Ok(items.into_iter().next())
}

/// One chunk of a range query on the grid, with what the grid alone does not tell: which
/// series the answer held and at how many points several of them overlapped (those points
/// are gaps in `values`).
#[derive(Clone, Debug, PartialEq)]
pub struct GridChunk {
    pub values: Vec<f64>,
    pub labels: Vec<BTreeMap<String, String>>,
    pub overlaps: usize,
}

/// One chunk of a range query, from response body to grid values: what `range` does with
/// each answer, as a pure function so the fuzzer (`fuzz/`) runs exactly the daemon's code.
pub fn chunk_from_body(
    query: &str,
    body: &[u8],
    start: i64,
    step: i64,
    len: usize,
) -> Result<GridChunk, SourceError> {
    let series = parse_matrix(body).map_err(|cause| SourceError::Parse {
        query: query.to_string(),
        cause,
    })?;
    let (values, overlaps) = merge_to_grid(&series, start, step, len);
    Ok(GridChunk {
        values,
        labels: series.into_iter().map(|s| s.labels).collect(),
        overlaps,
    })
}

/// [`chunk_from_body`]'s grid values, warning when several series overlapped.
pub fn grid_from_body(
    query: &str,
    body: &[u8],
    start: i64,
    step: i64,
    len: usize,
) -> Result<Vec<f64>, SourceError> {
    let chunk = chunk_from_body(query, body, start, step, len)?;
    warn_overlaps(query, &chunk.labels, chunk.overlaps);
    Ok(chunk.values)
}

pub(super) fn warn_overlaps(query: &str, labels: &[BTreeMap<String, String>], overlaps: usize) {
    if overlaps > 0 {
        tracing::warn!(
            query,
            points = overlaps,
            series = %describe_labels(labels),
            "several series at the same time in history; those points are gaps"
        );
    }
}

/// A whole range query's answer: the grid the daemon reads, every distinct label set the
/// query returned over the range (none, one, or several), and the points where several series
/// overlapped (gaps in `series`).
#[derive(Clone, Debug, PartialEq)]
pub struct RangeAnswer {
    pub series: Series,
    pub labels: Vec<BTreeMap<String, String>>,
    pub overlaps: usize,
}

impl RangeAnswer {
    /// The label sets, as an error message shows them (the first three).
    pub fn describe_labels(&self) -> String {
        describe_labels(&self.labels)
    }
}

/// An instant query's answer as the latest sample: what `latest` does with the response body.
pub fn sample_from_body(query: &str, body: &[u8]) -> Result<Option<Sample>, SourceError> {
    let samples = parse_vector(body).map_err(|cause| SourceError::Parse {
        query: query.to_string(),
        cause,
    })?;
    let sample = one_series(query, samples, |s| &s.labels)?;
    Ok(sample.and_then(|s| {
        let value = usable(s.value);
        value.is_finite().then_some(Sample {
            at: s.at.floor() as i64,
            value,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::super::parse::tests::MATRIX;
    use super::*;

    #[test]
    fn grid_turns_unusable_values_and_holes_into_nan() {
        let series = parse_matrix(MATRIX.as_bytes()).unwrap();
        let grid = to_grid(series.first(), 60, 60, 6);
        assert_eq!(grid[0], 1.5);
        assert!(grid[1].is_nan(), "NaN stays a gap");
        assert!(grid[2].is_nan(), "+Inf is a gap");
        assert!(grid[3].is_nan(), "missing point at 240 is a gap");
        assert!(grid[4].is_nan(), "negative demand is a gap");
        assert_eq!(grid[5], 4.0);
    }

    #[test]
    fn several_series_where_one_was_expected_is_an_error_naming_the_query() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"pod":"a"},"values":[[60,"1"]]},{"metric":{"pod":"b"},"values":[[60,"1"]]}]}}"#;
        let series = parse_matrix(body).unwrap();
        let err = one_series("rate(x[1m])", series, |s| &s.labels).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("rate(x[1m])"), "{text}");
        assert!(text.contains("2 series"), "{text}");
        assert!(text.contains("pod=\"a\""), "{text}");
        assert_eq!(err.reason(), "multiple_series");
    }

    #[test]
    fn a_duplicate_in_history_leaves_gaps_not_an_error() {
        // b duplicated a at 120 only; c replaced both from 240 on (relabelled).
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"pod":"a"},"values":[[60,"1"],[120,"2"],[180,"3"]]},
            {"metric":{"pod":"b"},"values":[[120,"2"]]},
            {"metric":{"pod":"c"},"values":[[240,"4"]]}]}}"#;
        let series = parse_matrix(body).unwrap();
        let (values, overlaps) = merge_to_grid(&series, 60, 60, 4);
        assert_eq!(overlaps, 1);
        assert_eq!(values[0], 1.0);
        assert!(values[1].is_nan(), "{values:?}");
        assert_eq!(&values[2..], &[3.0, 4.0]);
    }
}
