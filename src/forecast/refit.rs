//! When a workload's model is fitted again: the one schedule the daemon and the simulator share,
//! so that `simulate` rehearses the refits the daemon makes.

use std::time::Duration;

/// Refit every `forecast.retrain` (at least one step: a new fit needs a new point).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RefitSchedule {
    every: i64,
}

impl RefitSchedule {
    pub fn new(retrain: Duration, step: i64) -> Self {
        Self {
            every: (retrain.as_secs() as i64).max(step).max(1),
        }
    }

    /// Whether a model fitted at `fitted_at` (`None`: there is none) is due for a refit at `now`.
    pub fn due(&self, fitted_at: Option<i64>, now: i64) -> bool {
        fitted_at.is_none_or(|at| now.saturating_sub(at) >= self.every)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_without_a_model_and_every_retrain_never_more_often_than_a_step() {
        let hourly = RefitSchedule::new(Duration::from_secs(3600), 60);
        assert!(hourly.due(None, 0));
        assert!(!hourly.due(Some(0), 3599));
        assert!(hourly.due(Some(0), 3600));
        let faster_than_a_step = RefitSchedule::new(Duration::from_secs(10), 300);
        assert!(!faster_than_a_step.due(Some(0), 299));
        assert!(faster_than_a_step.due(Some(0), 300));
        // A model "fitted" at i64::MIN (never) is due, without overflow.
        assert!(hourly.due(Some(i64::MIN), 0));
    }
}
