//! One online workload's demand as the simulator uses it: the truth at any instant (what the
//! cluster must serve) and the history a forecaster may see at a given time (only the past).

use crate::series::Series;
use crate::trace::Trace;

#[derive(Clone, Debug)]
pub struct Demand {
    /// The trace on its own grid: `values[i]` is the mean demand over `[t_i, t_i + step)`.
    truth: Series,
    /// The same trace on the forecaster's grid (coarser or equal).
    history: Series,
}

impl Demand {
    /// From a trace read from a file: the truth keeps the trace's own step; the history is
    /// on `forecast_step`, which the caller makes no finer than the trace.
    pub fn from_trace(trace: &Trace, forecast_step: i64) -> Self {
        Self {
            truth: trace.resample(trace.typical_step()),
            history: trace.resample(forecast_step),
        }
    }

    /// From a regular series (the bundled trace).
    pub fn from_series(series: Series, forecast_step: i64) -> Self {
        let history = if forecast_step == series.step {
            series.clone()
        } else {
            regrid(&series, forecast_step)
        };
        Self {
            truth: series,
            history,
        }
    }

    pub fn truth(&self) -> &Series {
        &self.truth
    }
    pub fn step(&self) -> i64 {
        self.truth.step
    }
    pub fn start(&self) -> i64 {
        self.truth.start
    }
    pub fn end(&self) -> i64 {
        self.truth.end()
    }
    pub fn history_step(&self) -> i64 {
        self.history.step
    }

    /// Demand at instant `t`: the mean of the bucket that holds it, held over the bucket (what
    /// the trace says, and nothing it does not: demand at any instant depends on that instant's
    /// bucket only, never on a later one). `None` in gaps and outside the trace.
    pub fn at(&self, t: i64) -> Option<f64> {
        let s = &self.truth;
        if t < s.start || t >= s.end() {
            return None;
        }
        let value = s.values[((t - s.start) / s.step) as usize];
        value.is_finite().then_some(value)
    }

    /// The largest demand over `[from, to]`: what a forecaster that makes no error would
    /// have to cover; the largest of the buckets it overlaps.
    pub fn max_over(&self, from: i64, to: i64) -> Option<f64> {
        let s = &self.truth;
        let from = from.max(s.start);
        let to = to.min(s.end() - 1);
        if from > to {
            return None;
        }
        let first = ((from - s.start) / s.step) as usize;
        let last = ((to - s.start) / s.step) as usize;
        s.values[first..=last]
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(None, |best, v| Some(best.map_or(v, |b: f64| b.max(v))))
    }

    /// The forecaster's history as known at `now`: buckets that have ended by `now`, at most
    /// `max_len` of them (the latest). `None` before the first bucket has ended.
    pub fn history_until(&self, now: i64, max_len: usize) -> Option<Series> {
        let h = &self.history;
        let complete = (now - h.start).div_euclid(h.step);
        if complete <= 0 {
            return None;
        }
        let end = (complete as usize).min(h.values.len());
        let begin = end.saturating_sub(max_len);
        Some(Series::new(
            h.timestamp(begin),
            h.step,
            h.values[begin..end].to_vec(),
        ))
    }

    /// Index into the history grid of the bucket that holds `t`, and the history series.
    pub fn history(&self) -> &Series {
        &self.history
    }
}

/// Put a regular series on a coarser grid (mean of the finite points in each new bucket).
fn regrid(series: &Series, step: i64) -> Series {
    let trace = Trace {
        origin: String::new(),
        points: series
            .values
            .iter()
            .enumerate()
            .map(|(i, &v)| (series.timestamp(i), v))
            .collect(),
    };
    trace.resample(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand() -> Demand {
        Demand::from_series(Series::new(0, 60, vec![10.0, 20.0, f64::NAN, 40.0]), 60)
    }

    #[test]
    fn demand_is_each_buckets_mean_held_over_the_bucket() {
        let d = demand();
        assert_eq!(d.at(0), Some(10.0));
        assert_eq!(
            d.at(59),
            Some(10.0),
            "a later bucket never shows before it starts"
        );
        assert_eq!(d.at(60), Some(20.0));
        assert_eq!(d.at(119), Some(20.0));
        assert_eq!(d.at(120), None, "in a gap demand is unknown");
        assert_eq!(d.at(180), Some(40.0));
        assert_eq!(d.at(240), None, "after the trace");
        assert_eq!(d.at(-1), None);
    }

    #[test]
    fn max_over_finds_peaks_inside_the_window() {
        let d = Demand::from_series(Series::new(0, 60, vec![10.0, 50.0, 10.0]), 60);
        assert_eq!(d.max_over(40, 140), Some(50.0));
        assert_eq!(d.max_over(0, 30), Some(10.0));
        assert_eq!(d.max_over(0, 59), Some(10.0));
        assert_eq!(d.max_over(200, 300), None);
    }

    #[test]
    fn history_holds_only_finished_buckets() {
        let d = Demand::from_series(Series::new(0, 60, vec![1.0, 2.0, 3.0, 4.0]), 60);
        assert!(d.history_until(59, 10).is_none());
        let h = d.history_until(150, 10).expect("two buckets have ended");
        assert_eq!(h.values, vec![1.0, 2.0]);
        let h = d.history_until(1_000, 2).expect("history");
        assert_eq!((h.start, h.values.clone()), (120, vec![3.0, 4.0]));
    }

    #[test]
    fn coarser_history_averages_the_truth() {
        let d = Demand::from_series(Series::new(0, 60, vec![1.0, 3.0, 5.0, f64::NAN]), 120);
        assert_eq!(d.history().values, vec![2.0, 5.0]);
    }
}
