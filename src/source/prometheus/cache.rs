//! History kept between cycles, per (query, step), so that a cycle asks Prometheus only for the
//! points after the ones it already holds.

use crate::series::Series;

/// A query's history kept between cycles, in `f32`: a daemon holds one per online workload
/// (14 days at 1m are 20,160 points), and demand needs no more than its 7 significant digits.
pub(super) struct CachedHistory {
    pub(super) start: i64,
    pub(super) step: i64,
    pub(super) values: Vec<f32>,
}

impl CachedHistory {
    pub(super) fn new(series: &Series) -> Self {
        Self {
            start: series.start,
            step: series.step,
            values: series.values.iter().map(|&v| v as f32).collect(),
        }
    }

    /// One past the last cached time.
    pub(super) fn end(&self) -> i64 {
        self.start + self.values.len() as i64 * self.step
    }

    /// Drops the points before `before`, and the memory they held.
    pub(super) fn forget_before(&mut self, before: i64) {
        if before <= self.start || self.step <= 0 {
            return;
        }
        let drop = (((before - self.start) / self.step) as usize).min(self.values.len());
        self.values.drain(..drop);
        self.values.shrink_to_fit();
        self.start += drop as i64 * self.step;
    }
}
