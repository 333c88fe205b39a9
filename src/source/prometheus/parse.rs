//! The Prometheus HTTP API's JSON answers, read without trusting them: any bytes give a value
//! or a [`ParseError`], never a panic (`fuzz/` holds the fuzzer that checks it).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::source::ParseError;

/// One series of a matrix result, with its labels and raw `(time, value)` points.
#[derive(Clone, Debug, PartialEq)]
pub struct RawSeries {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(f64, f64)>,
}

/// One element of a vector result.
#[derive(Clone, Debug, PartialEq)]
pub struct RawSample {
    pub labels: BTreeMap<String, String>,
    pub at: f64,
    pub value: f64,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    status: &'a str,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, borrow)]
    data: Option<Data<'a>>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(rename = "resultType")]
    result_type: String,
    /// The result's bytes in the body, read once its type is known: a history of weeks is
    /// read straight into numbers, with no tree of JSON values in between.
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MatrixEntry<'a> {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default, borrow)]
    values: Vec<(f64, &'a str)>,
}

#[derive(Deserialize)]
struct VectorEntry<'a> {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(borrow)]
    value: (f64, &'a str),
}

/// The `data` of a successful answer, or the error it reports.
fn success(body: &[u8]) -> Result<Data<'_>, ParseError> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?;
    if envelope.status != "success" {
        return Err(ParseError::NotSuccess {
            status: envelope.status.to_string(),
            error_type: envelope.error_type.unwrap_or_default(),
            message: envelope.error.unwrap_or_default(),
        });
    }
    envelope
        .data
        .ok_or_else(|| ParseError::Json("missing field `data`".into()))
}

/// The result of a successful answer of the `expected` type, as the body's bytes.
pub(super) fn parse_envelope<'a>(
    body: &'a [u8],
    expected: &str,
) -> Result<&'a RawValue, ParseError> {
    result_of(success(body)?, expected)
}

fn result_of<'a>(data: Data<'a>, expected: &str) -> Result<&'a RawValue, ParseError> {
    if data.result_type != expected {
        return Err(ParseError::ResultType {
            expected: expected.into(),
            got: data.result_type,
        });
    }
    data.result
        .ok_or_else(|| ParseError::Json("missing field `result`".into()))
}

/// A result's bytes read as `T`.
fn typed<'a, T: Deserialize<'a>>(result: &'a RawValue) -> Result<T, ParseError> {
    serde_json::from_str(result.get()).map_err(|e| ParseError::Json(e.to_string()))
}

/// Prometheus writes sample values as strings, including `NaN`, `+Inf` and `-Inf`.
fn parse_value(text: &str) -> Result<f64, ParseError> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text
            .parse::<f64>()
            .map_err(|_| ParseError::Value(truncate(text, 40))),
    }
}

fn check_time(t: f64) -> Result<f64, ParseError> {
    if t.is_finite() && t.abs() < 1e13 {
        Ok(t)
    } else {
        Err(ParseError::Timestamp(t))
    }
}

pub(super) fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Parse a `/api/v1/query_range` response body. Never panics, whatever the bytes.
pub fn parse_matrix(body: &[u8]) -> Result<Vec<RawSeries>, ParseError> {
    let entries: Vec<MatrixEntry> = typed(parse_envelope(body, "matrix")?)?;
    entries
        .into_iter()
        .map(|entry| {
            let points = entry
                .values
                .iter()
                .map(|(t, v)| Ok((check_time(*t)?, parse_value(v)?)))
                .collect::<Result<Vec<_>, ParseError>>()?;
            Ok(RawSeries {
                labels: entry.metric,
                points,
            })
        })
        .collect()
}

/// Parse a `/api/v1/query` response body whose result is a vector (or a scalar).
pub fn parse_vector(body: &[u8]) -> Result<Vec<RawSample>, ParseError> {
    let data = success(body)?;
    if data.result_type == "scalar" {
        let (t, v): (f64, &str) = typed(result_of(data, "scalar")?)?;
        return Ok(vec![RawSample {
            labels: BTreeMap::new(),
            at: check_time(t)?,
            value: parse_value(v)?,
        }]);
    }
    let entries: Vec<VectorEntry> = typed(result_of(data, "vector")?)?;
    entries
        .into_iter()
        .map(|entry| {
            Ok(RawSample {
                labels: entry.metric,
                at: check_time(entry.value.0)?,
                value: parse_value(entry.value.1)?,
            })
        })
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::source::prometheus) const MATRIX: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[
        {"metric":{"workload":"payment"},"values":[[60,"1.5"],[120,"NaN"],[180,"+Inf"],[300,"-2"],[360,"4"]]}]}}"#;

    #[test]
    fn parses_a_matrix_with_special_values() {
        let series = parse_matrix(MATRIX.as_bytes()).unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].labels["workload"], "payment");
        assert_eq!(series[0].points[0], (60.0, 1.5));
        assert!(series[0].points[1].1.is_nan());
        assert_eq!(series[0].points[2].1, f64::INFINITY);
    }

    #[test]
    fn rejects_errors_and_wrong_shapes_without_panicking() {
        let error = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        assert!(matches!(
            parse_matrix(error),
            Err(ParseError::NotSuccess { error_type, .. }) if error_type == "bad_data"
        ));
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(matches!(
            parse_matrix(vector),
            Err(ParseError::ResultType { .. })
        ));
        for junk in [
            &b""[..],
            b"{",
            b"null",
            b"[]",
            br#"{"status":"success"}"#,
            br#"{"status":"success","data":{"resultType":"matrix","result":[{"values":[[1,"x"]]}]}}"#,
            br#"{"status":"success","data":{"resultType":"matrix","result":[{"values":[[1e300,"1"]]}]}}"#,
            br#"{"status":"success","data":{"resultType":"matrix","result":[{"values":[["a","1"]]}]}}"#,
            br#"{"status":"success","data":{"resultType":"matrix","result":{}}}"#,
        ] {
            assert!(parse_matrix(junk).is_err(), "{:?}", String::from_utf8_lossy(junk));
        }
    }

    #[test]
    fn parses_vectors_and_scalars() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.5,"42"]}]}}"#;
        let samples = parse_vector(vector).unwrap();
        assert_eq!(samples[0].value, 42.0);
        assert_eq!(samples[0].at, 1_700_000_000.5);
        let scalar =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"7"]}}"#;
        assert_eq!(parse_vector(scalar).unwrap()[0].value, 7.0);
    }
}
