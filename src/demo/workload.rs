//! One workload's demand as a function of wall-clock time: a scenario, or a recorded trace
//! replayed in a loop.

use super::{ExporterError, INTEGRATION_SLICE_SECS, Scenario};
use crate::trace as csv_trace;

/// A recorded trace, replayed by linear interpolation and looped over its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    pub workload: String,
    pub points: Vec<(i64, f64)>,
    /// Length of one loop: the points' span plus one mean step, so the loop is evenly spaced.
    pub period: f64,
}

impl Trace {
    /// A trace from CSV text (`crate::trace`'s rules); `path` names it in errors.
    pub fn parse(workload: &str, path: &str, text: &str) -> Result<Self, ExporterError> {
        Self::from_rows(workload, csv_trace::parse_str(text, path)?)
    }

    /// The rows of a trace as read: gaps are left out (interpolation bridges them), and rows
    /// with the same timestamp are averaged.
    pub fn from_rows(workload: &str, rows: csv_trace::Trace) -> Result<Self, ExporterError> {
        let path = rows.origin;
        let mut points: Vec<(i64, f64)> = Vec::with_capacity(rows.points.len());
        let mut same_time = 1.0;
        for (t, value) in rows.points.into_iter().filter(|(_, v)| !v.is_nan()) {
            match points.last_mut() {
                Some((last_t, mean)) if *last_t == t => {
                    same_time += 1.0;
                    *mean += (value - *mean) / same_time;
                }
                _ => {
                    same_time = 1.0;
                    points.push((t, value));
                }
            }
        }
        if points.len() < 2 {
            return Err(ExporterError::Trace {
                path,
                reason: "needs at least two points".into(),
            });
        }
        let span = (points[points.len() - 1].0 - points[0].0) as f64;
        let period = span + span / (points.len() - 1) as f64;
        Ok(Trace {
            workload: workload.to_string(),
            points,
            period,
        })
    }

    pub fn first_timestamp(&self) -> i64 {
        self.points[0].0
    }

    pub fn value_at(&self, trace_t: f64) -> f64 {
        let first = self.points[0].0 as f64;
        let t = first + (trace_t - first).rem_euclid(self.period);
        let idx = self.points.partition_point(|p| (p.0 as f64) <= t);
        let (t0, v0) = self.points[idx - 1];
        let (t1, v1) = match self.points.get(idx) {
            Some(&p) => (p.0 as f64, p.1),
            // Between the last point and the loop's restart.
            None => (first + self.period, self.points[0].1),
        };
        let t0 = t0 as f64;
        if t1 <= t0 {
            return v0;
        }
        v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    }
}

/// How wall-clock time maps onto a trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    pub trace: Trace,
    pub anchor: i64,
    pub trace_at: i64,
    pub speed: f64,
    pub scale: f64,
}

/// One workload's demand as a function of wall-clock time.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    Trace(Replay),
    Scenario(Scenario),
}

impl Workload {
    pub fn name(&self) -> &str {
        match self {
            Workload::Trace(r) => &r.trace.workload,
            Workload::Scenario(s) => &s.workload,
        }
    }

    pub fn demand_at(&self, t: f64) -> f64 {
        match self {
            Workload::Trace(r) => {
                let trace_t = r.trace_at as f64 + (t - r.anchor as f64) * r.speed;
                (r.trace.value_at(trace_t) * r.scale).max(0.0)
            }
            Workload::Scenario(s) => s.demand_at(t),
        }
    }

    /// Requests served in [from, to]: trapezoids over slices of at most INTEGRATION_SLICE_SECS.
    pub fn requests_between(&self, from: f64, to: f64) -> f64 {
        if to <= from {
            return 0.0;
        }
        let slices = ((to - from) / INTEGRATION_SLICE_SECS).ceil().max(1.0) as usize;
        let dt = (to - from) / slices as f64;
        (0..slices)
            .map(|i| {
                let a = from + dt * i as f64;
                (self.demand_at(a) + self.demand_at(a + dt)) * 0.5 * dt
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000; // 2025-11-24T16:00:00Z, a Monday

    #[test]
    fn trace_parses_iso_and_epoch_with_header_and_gaps() {
        let text = "timestamp,value\n2025-11-24 00:00:00,10\n2025-11-24T00:30:00Z,20\n1763945999,\n1763947800,40\n";
        let t = Trace::parse("taxi", "t.csv", text).unwrap();
        assert_eq!(
            t.points,
            vec![
                (1_763_942_400, 10.0),
                (1_763_944_200, 20.0),
                (1_763_947_800, 40.0)
            ]
        );
        assert_eq!(t.period, 5400.0 + 2700.0);
    }

    #[test]
    fn trace_errors_name_the_line() {
        let err = Trace::parse("x", "t.csv", "0,1\nyesterday,2\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.csv, line 2"), "{err}");
        let err = Trace::parse("x", "t.csv", "0,1\n60,lots\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`lots` is not a number"), "{err}");
        let err = Trace::parse("x", "t.csv", "0,1\n").unwrap_err().to_string();
        assert!(err.contains("at least two points"), "{err}");
    }

    #[test]
    fn trace_interpolates_and_loops() {
        let t = Trace::parse("x", "t.csv", "0,10\n60,20\n120,40\n").unwrap();
        assert_eq!(t.value_at(30.0), 15.0);
        assert_eq!(t.value_at(120.0), 40.0);
        // Between the last point and the loop's restart it heads back to the first value.
        assert_eq!(t.value_at(150.0), 25.0);
        assert_eq!(t.value_at(180.0 + 30.0), 15.0);
        assert_eq!(t.value_at(-180.0 + 60.0), 20.0);
    }

    #[test]
    fn replay_maps_wall_time_with_anchor_and_speed() {
        let trace = Trace::parse("x", "t.csv", "0,10\n60,20\n120,40\n").unwrap();
        let w = Workload::Trace(Replay {
            trace,
            anchor: NOW,
            trace_at: 60,
            speed: 2.0,
            scale: 10.0,
        });
        assert_eq!(w.demand_at(NOW as f64), 200.0);
        assert_eq!(w.demand_at(NOW as f64 + 15.0), 300.0);
    }

    #[test]
    fn requests_integrate_demand() {
        let w = Workload::Scenario(Scenario::parse("web:baseline=10", NOW).unwrap());
        assert!((w.requests_between(0.0, 60.0) - 600.0).abs() < 1e-9);
        assert_eq!(w.requests_between(60.0, 0.0), 0.0);
    }
}
