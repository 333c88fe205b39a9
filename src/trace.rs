//! The one reader of demand traces, CSV files of `timestamp,value`: `tideshift simulate`,
//! `tideshift backtest` and `tideshift exporter` all read them here, by the same rules.
//!
//! - One point a line, `timestamp,value`, exactly two fields; blank lines and `#` comments are
//!   skipped, and so is a first line whose timestamp and value do not parse (a header).
//! - Timestamps: RFC 3339 / ISO-8601 with or without a zone (`2026-11-01T08:00:00+08:00`,
//!   `2026-11-01T00:00:00`), `YYYY-MM-DD HH:MM[:SS]`, a date, or epoch seconds (a fraction is
//!   dropped). Timestamps without a zone are read as UTC: daily and weekly seasonality do not
//!   depend on the zone, and a trace is only ever compared with itself. Epoch milliseconds are
//!   refused rather than read as the year 50000.
//! - Values: a finite, non-negative number; an empty value, `NaN` or `null` is a gap. Anything
//!   else is an error naming the file and line.
//! - Rows are in time order; rows with the same timestamp are averaged. A row may go back by at
//!   most an hour ([`MAX_STEP_BACK`]): that is local time repeating an hour when daylight saving
//!   ends (NAB's `machine_temperature_system_failure.csv` has one), and those rows are sorted in
//!   place with a warning. A row further back is an error: that is more often two files glued
//!   together than a recording, and sorting it would hide that.
//! - The trace's step ([`Trace::typical_step`]) is the most common gap between rows, the
//!   smallest on a tie, so that gaps and a few uneven rows do not change it.
//! - On a grid ([`Trace::resample`]) each point is the mean of the rows in `[t, t + step)`,
//!   with `t` a multiple of the step; a grid point with no row is a gap (`NaN`), never an
//!   invented value.

use std::path::Path;

use chrono::{DateTime, NaiveDate, NaiveDateTime};

use crate::series::Series;

/// How far a row may go back in time: the hour local time repeats when daylight saving ends.
pub const MAX_STEP_BACK: i64 = 3_600;

/// Refuse traces larger than this: a year of 1-second points fits, a runaway file does not.
const MAX_BYTES: u64 = 512 * 1024 * 1024;
/// Refuse traces whose grid at their own step would be longer than this: a few far-off rows
/// among fine ones would otherwise ask for gigabytes of gaps.
const MAX_GRID_POINTS: i64 = 50_000_000;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{path}: cannot read the trace: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the trace is {bytes} bytes, more than the {MAX_BYTES} bytes allowed")]
    TooLarge { path: String, bytes: u64 },
    #[error("{origin}:{line}: {message}")]
    Line {
        origin: String,
        line: usize,
        message: String,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// A demand trace as read: points in time order (timestamps in unix seconds), `NaN` for
/// points the file marks as missing.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// Where the trace came from (a path, or a description), for error messages.
    pub origin: String,
    pub points: Vec<(i64, f64)>,
}

pub fn load_file(path: &Path) -> Result<Trace, TraceError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| TraceError::Io {
        path: shown.clone(),
        source,
    })?;
    if meta.len() > MAX_BYTES {
        return Err(TraceError::TooLarge {
            path: shown,
            bytes: meta.len(),
        });
    }
    let bytes = std::fs::read(path).map_err(|source| TraceError::Io {
        path: shown.clone(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| TraceError::Invalid {
        origin: shown.clone(),
        message: format!(
            "not a text file (invalid UTF-8 at byte {}); expected CSV `timestamp,value`",
            e.utf8_error().valid_up_to()
        ),
    })?;
    parse_str(&text, &shown)
}

/// Parse CSV text. A first line whose timestamp does not parse is taken as a header.
pub fn parse_str(text: &str, origin: &str) -> Result<Trace, TraceError> {
    let mut points: Vec<(i64, f64)> = Vec::new();
    let line_error = |line: usize, message: String| TraceError::Line {
        origin: origin.to_string(),
        line,
        message,
    };
    let mut seen_content = false;
    let mut latest = i64::MIN;
    let mut first_back: Option<usize> = None;
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim().trim_start_matches('\u{feff}');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first_content = !seen_content;
        seen_content = true;
        let fields: Vec<&str> = line
            .split(',')
            .map(|f| f.trim().trim_matches('"'))
            .collect();
        if fields.len() != 2 {
            return Err(line_error(
                line_no,
                format!(
                    "expected 2 fields `timestamp,value`, found {}: {line:?}",
                    fields.len()
                ),
            ));
        }
        let timestamp = match parse_timestamp(fields[0]) {
            Ok(t) => t,
            // A header line: `timestamp,value` or any other names.
            Err(_) if first_content && fields[1].parse::<f64>().is_err() => continue,
            Err(message) => return Err(line_error(line_no, message)),
        };
        let value = parse_value(fields[1]).map_err(|m| line_error(line_no, m))?;
        if timestamp < latest.saturating_sub(MAX_STEP_BACK) {
            return Err(line_error(
                line_no,
                format!(
                    "timestamp {} is more than {MAX_STEP_BACK}s earlier than a line before it; \
                     rows must be in time order (an hour repeated when daylight saving ends is \
                     the only step back allowed)",
                    fields[0]
                ),
            ));
        }
        if timestamp < latest {
            first_back.get_or_insert(line_no);
        }
        latest = latest.max(timestamp);
        points.push((timestamp, value));
    }
    if let Some(line) = first_back {
        tracing::warn!(
            trace = origin,
            line,
            "rows go back in time (a repeated hour?) from this line on; sorted by time"
        );
        points.sort_by_key(|&(t, _)| t);
    }
    if points.is_empty() {
        return Err(TraceError::Invalid {
            origin: origin.to_string(),
            message: "no data rows; expected CSV lines `timestamp,value`".into(),
        });
    }
    if points.iter().all(|(_, v)| v.is_nan()) {
        return Err(TraceError::Invalid {
            origin: origin.to_string(),
            message: "every value is missing".into(),
        });
    }
    let trace = Trace {
        origin: origin.to_string(),
        points,
    };
    let step = trace.typical_step();
    let grid_points = (trace.last() - trace.first()) / step + 1;
    if grid_points > MAX_GRID_POINTS {
        return Err(TraceError::Invalid {
            origin: origin.to_string(),
            message: format!(
                "{grid_points} steps of {step}s from the first row to the last, more than the \
                 {MAX_GRID_POINTS} allowed: the trace is too long or too sparse"
            ),
        });
    }
    Ok(trace)
}

/// Unix seconds from the timestamp forms a trace may use.
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty timestamp".into());
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = text
            .parse()
            .map_err(|_| format!("invalid epoch timestamp {text:?}"))?;
        // Epoch milliseconds are a common mistake; refuse them rather than land in year 50000.
        if !(0.0..1e11).contains(&secs) {
            return Err(format!(
                "epoch timestamp {text:?} is out of range; write seconds since 1970 (not milliseconds)"
            ));
        }
        return Ok(secs.floor() as i64);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Ok(t.timestamp());
        }
    }
    let naive = text.trim_end_matches(['Z', 'z']);
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(naive, format) {
            return Ok(t.and_utc().timestamp());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(naive, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc().timestamp());
    }
    Err(format!(
        "invalid timestamp {text:?}; write ISO-8601 (2026-11-01T08:00:00Z), \
         `YYYY-MM-DD HH:MM:SS` or epoch seconds"
    ))
}

fn parse_value(text: &str) -> Result<f64, String> {
    if text.is_empty() || text.eq_ignore_ascii_case("nan") || text.eq_ignore_ascii_case("null") {
        return Ok(f64::NAN);
    }
    let value: f64 = text.parse().map_err(|_| {
        format!("invalid value: `{text}` is not a number; expected a number (or empty for a gap)")
    })?;
    if !value.is_finite() {
        return Err(format!("value {text:?} is not finite"));
    }
    if value < 0.0 {
        return Err(format!("value {text:?} is negative; demand cannot be"));
    }
    Ok(value)
}

impl Trace {
    pub fn first(&self) -> i64 {
        self.points.first().map_or(0, |p| p.0)
    }
    pub fn last(&self) -> i64 {
        self.points.last().map_or(0, |p| p.0)
    }

    /// The trace's usual step: the most common gap between consecutive rows (the smallest on
    /// a tie), so that a few gaps or uneven rows do not change it. At least one second.
    pub fn typical_step(&self) -> i64 {
        let mut gaps: Vec<i64> = self
            .points
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .filter(|&d| d > 0)
            .collect();
        if gaps.is_empty() {
            return 1;
        }
        gaps.sort_unstable();
        let mut step = gaps[0];
        let mut best = 0;
        let mut i = 0;
        while i < gaps.len() {
            let run = gaps[i..].iter().take_while(|&&g| g == gaps[i]).count();
            if run > best {
                best = run;
                step = gaps[i];
            }
            i += run;
        }
        step.max(1)
    }

    /// The trace on the grid of its own step ([`Trace::typical_step`]).
    pub fn series(&self) -> Series {
        self.resample(self.typical_step())
    }

    /// Put the trace on a regular grid of `step` seconds aligned to multiples of `step`:
    /// each grid point is the mean of the trace points in `[t, t + step)`, `NaN` when there
    /// are none (a gap).
    pub fn resample(&self, step: i64) -> Series {
        let step = step.max(1);
        let start = self.first().div_euclid(step) * step;
        let end = self.last().div_euclid(step) * step + step;
        let len = ((end - start) / step) as usize;
        let mut sums = vec![0.0; len];
        let mut counts = vec![0u32; len];
        for &(t, v) in &self.points {
            if v.is_nan() {
                continue;
            }
            let i = ((t - start) / step) as usize;
            sums[i] += v;
            counts[i] += 1;
        }
        let values = sums
            .into_iter()
            .zip(counts)
            .map(|(s, c)| if c == 0 { f64::NAN } else { s / c as f64 })
            .collect();
        Series::new(start, step, values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Trace, TraceError> {
        parse_str(text, "test.csv")
    }

    #[test]
    fn reads_every_timestamp_form_to_the_same_instant() {
        let expected = 1_793_491_200; // 2026-11-01T00:00:00Z
        for form in [
            "2026-11-01T00:00:00Z",
            "2026-11-01T08:00:00+08:00",
            "2026-11-01T00:00:00",
            "2026-11-01 00:00:00",
            "2026-11-01 00:00",
            "2026-11-01T00:00:00.000Z",
            "2026-11-01 03:00:00+03:00",
            "1793491200",
            "1793491200.7",
        ] {
            assert_eq!(parse_timestamp(form), Ok(expected), "{form}");
        }
    }

    #[test]
    fn header_is_skipped_and_values_read() {
        let trace = parse("timestamp,value\n2014-07-01 00:00:00,10844\n2014-07-01 00:30:00,8127")
            .expect("valid trace");
        assert_eq!(trace.points.len(), 2);
        assert_eq!(trace.points[1].1, 8127.0);
        assert_eq!(trace.points[1].0 - trace.points[0].0, 1800);
        assert_eq!(trace.typical_step(), 1800);
    }

    #[test]
    fn empty_values_are_gaps_not_zeros() {
        let trace = parse("0,1\n60,\n120,NaN\n180,4").expect("valid trace");
        assert!(trace.points[1].1.is_nan());
        assert!(trace.points[2].1.is_nan());
        let series = trace.resample(60);
        assert_eq!(series.values.len(), 4);
        assert!(series.values[1].is_nan() && series.values[2].is_nan());
        assert_eq!(series.values[3], 4.0);
    }

    #[test]
    fn resampling_averages_fine_points_and_leaves_missing_buckets_nan() {
        // Uneven steps: two points in the first minute, none in the second, one in the third.
        let trace = parse("0,2\n30,4\n130,9").expect("valid trace");
        let series = trace.resample(60);
        assert_eq!(series.start, 0);
        assert_eq!(series.step, 60);
        assert_eq!(series.values[0], 3.0);
        assert!(series.values[1].is_nan());
        assert_eq!(series.values[2], 9.0);
    }

    #[test]
    fn timestamps_in_the_usual_forms() {
        assert_eq!(parse_timestamp("1700000000").ok(), Some(1_700_000_000));
        assert_eq!(parse_timestamp("1970-01-01T00:01:00Z").ok(), Some(60));
        assert_eq!(parse_timestamp("1970-01-01 00:02:00").ok(), Some(120));
        assert_eq!(parse_timestamp("1970-01-01T01:00:00+01:00").ok(), Some(0));
        assert_eq!(parse_timestamp("yesterday").ok(), None);
    }

    #[test]
    fn uneven_points_land_on_a_grid_with_gaps() {
        let s = Trace {
            origin: String::new(),
            points: vec![(0, 1.0), (60, 2.0), (125, 3.0), (300, 4.0), (300, 6.0)],
        }
        .series();
        assert_eq!(s.step, 60);
        assert_eq!(s.values.len(), 6);
        assert_eq!(s.values[2], 3.0);
        assert!(s.values[3].is_nan());
        assert_eq!(s.values[5], 5.0);
    }

    #[test]
    fn typical_step_ignores_a_few_gaps() {
        let mut text = String::new();
        for i in 0..20 {
            let t = if i > 10 { i * 60 + 3600 } else { i * 60 };
            text.push_str(&format!("{t},1\n"));
        }
        assert_eq!(parse(&text).expect("valid").typical_step(), 60);
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let cases = [
            (
                "timestamp,value\n2026-11-01T00:00:00Z,1\nyesterday,2",
                3,
                "invalid timestamp",
            ),
            ("0,1\n60,lots", 2, "invalid value"),
            ("0,1\n60,-3", 2, "negative"),
            ("0,1\n60,1,2", 2, "expected 2 fields"),
            ("7200,1\n0,1", 2, "time order"),
            ("1793491200000,1", 1, "milliseconds"),
            ("0,inf", 1, "not finite"),
        ];
        for (text, line, needle) in cases {
            let message = parse(text).expect_err(text).to_string();
            assert!(
                message.starts_with(&format!("test.csv:{line}: ")) && message.contains(needle),
                "{text:?} gave {message:?}"
            );
        }
    }

    #[test]
    fn an_hour_repeated_when_daylight_saving_ends_is_sorted_in() {
        // Local time: 01:00-01:59 twice (the second pass as 01:00 again, 55 minutes back).
        let text = "2026-11-01 00:30,1\n2026-11-01 01:00,2\n2026-11-01 01:55,3\n\
                    2026-11-01 01:00,4\n2026-11-01 02:00,5";
        let trace = parse(text).expect("an hour back is a repeated hour, not an error");
        let times: Vec<i64> = trace.points.iter().map(|p| p.0).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        assert_eq!(trace.points.len(), 5);
        // More than an hour back is refused.
        assert!(parse("2026-11-01 03:00,1\n2026-11-01 01:59,2").is_err());
    }

    #[test]
    fn empty_or_all_missing_traces_are_refused() {
        assert!(parse("").unwrap_err().to_string().contains("no data rows"));
        assert!(parse("timestamp,value\n").is_err());
        assert!(
            parse("0,\n60,")
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = load_file(Path::new("/nonexistent/trace.csv")).unwrap_err();
        assert!(err.to_string().starts_with("/nonexistent/trace.csv: "));
    }

    #[test]
    fn binary_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.csv");
        std::fs::write(&path, [0xff, 0xfe, 0x00, 0x01]).expect("write");
        assert!(
            load_file(&path)
                .unwrap_err()
                .to_string()
                .contains("not a text file")
        );
    }
}
