//! The regular time series every stage passes on: sources read demand into it, the forecaster
//! fits on it, the simulator replays it. A leaf module, so that any stage can use it without
//! importing another stage.

/// A regular time series: `values[i]` is the demand at `start + i * step` (unix seconds).
/// Missing points are `NaN`; sources never invent values for gaps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub start: i64,
    pub step: i64,
    pub values: Vec<f64>,
}

impl Series {
    pub fn new(start: i64, step: i64, values: Vec<f64>) -> Self {
        Self {
            start,
            step,
            values,
        }
    }
    /// Time of the point after the last one: where a forecast starts.
    pub fn end(&self) -> i64 {
        self.start + self.step * self.values.len() as i64
    }
    pub fn timestamp(&self, i: usize) -> i64 {
        self.start + self.step * i as i64
    }
}
