//! How the forecasts a workload was planned on did against the demand that came.
//!
//! For each grid time the record keeps the forecast made `lead` seconds before it (the one a
//! plan at that moment relied on: the workload's startup ahead). The daemon and the simulator
//! keep one record per online workload, so both judge a forecast the same way: the planner stops
//! planning ahead on a forecast whose band the demand keeps breaking (docs/planner.md).

use std::collections::BTreeMap;

use super::{Forecast, Series};

/// What the record says about the recent forecasts.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RecentAccuracy {
    /// Grid times with both a forecast and an observed demand, over the judged window.
    pub points: usize,
    /// Of those, the ones whose demand was above the forecast's upper band (what was planned).
    pub missed: usize,
    /// Mean absolute error of the point forecast relative to the demand (demand above zero).
    pub error: Option<f64>,
}

impl RecentAccuracy {
    /// Share of the judged points whose demand broke the upper band.
    pub fn missed_share(&self) -> f64 {
        if self.points == 0 {
            0.0
        } else {
            self.missed as f64 / self.points as f64
        }
    }
}

/// (point, lower, upper) forecast for one grid time.
pub type Predicted = (f32, f32, f32);

/// The forecasts made `lead` ahead, per grid time, over the last `keep` seconds.
#[derive(Clone, Debug, Default)]
pub struct ForecastRecord {
    predictions: BTreeMap<i64, Predicted>,
}

impl ForecastRecord {
    /// Keeps the step of `forecast` that covers `now + lead`, unless that time already has one
    /// (the earliest forecast of a time is the one plans relied on), and forgets times older
    /// than `keep` seconds.
    pub fn record(&mut self, forecast: &Forecast, now: i64, lead: i64, keep: i64) {
        let step = forecast.step.max(1);
        let target = now + lead.max(0);
        let index = ((target - forecast.start) as f64 / step as f64)
            .ceil()
            .max(0.0) as usize;
        if let (Some(&point), Some(&lower), Some(&upper)) = (
            forecast.point.get(index),
            forecast.lower.get(index),
            forecast.upper.get(index),
        ) {
            let at = forecast.start + index as i64 * step;
            self.predictions
                .entry(at)
                .or_insert((point as f32, lower as f32, upper as f32));
        }
        self.predictions.retain(|&at, _| at >= now - keep);
    }

    /// The latest forecast of a time at or before `now`: what was expected now.
    pub fn expected_now(&self, now: i64) -> Option<Predicted> {
        self.predictions.range(..=now).next_back().map(|(_, p)| *p)
    }

    /// How the forecasts of the times in `[now - window, now]` did against `actual`.
    pub fn accuracy(&self, actual: &Series, now: i64, window: i64) -> RecentAccuracy {
        let mut judged = RecentAccuracy::default();
        let (mut error_sum, mut error_count) = (0.0, 0usize);
        for (&at, &(point, _, upper)) in self.predictions.range(now - window..=now) {
            if at < actual.start || actual.step <= 0 {
                continue;
            }
            let i = ((at - actual.start) / actual.step) as usize;
            let Some(&demand) = actual.values.get(i) else {
                continue;
            };
            if !demand.is_finite() || demand < 0.0 {
                continue;
            }
            judged.points += 1;
            if demand > f64::from(upper) * (1.0 + 1e-6) {
                judged.missed += 1;
            }
            if demand > 0.0 && point.is_finite() {
                error_sum += (demand - f64::from(point)).abs() / demand;
                error_count += 1;
            }
        }
        judged.error = (error_count > 0).then(|| error_sum / error_count as f64);
        judged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::ForecastMethod;

    fn forecast(start: i64, point: f64, upper: f64) -> Forecast {
        Forecast {
            start,
            step: 60,
            point: vec![point; 10],
            lower: vec![point * 0.5; 10],
            upper: vec![upper; 10],
            quantile: 0.95,
            method: ForecastMethod::Regression,
        }
    }

    #[test]
    fn each_time_keeps_the_forecast_made_lead_ahead_and_is_judged_against_the_demand() {
        let mut record = ForecastRecord::default();
        // Every minute from 0 to 9 a forecast starting now; lead 120 s.
        for minute in 0..10 {
            let now = minute * 60;
            record.record(&forecast(now, 100.0, 120.0), now, 120, 3600);
        }
        // A later forecast of the same time does not replace the first.
        record.record(&forecast(480, 1.0, 1.0), 480, 120, 3600);
        assert_eq!(record.expected_now(600), Some((100.0, 50.0, 120.0)));
        // Demand 110 up to minute 8, then 200: the last three judged times broke the band.
        let values: Vec<f64> = (0..12).map(|m| if m < 9 { 110.0 } else { 200.0 }).collect();
        let actual = Series::new(0, 60, values);
        let judged = record.accuracy(&actual, 660, 3600);
        // Times 120..=660 were forecast: 10 of them, minutes 9, 10, 11 missed.
        assert_eq!(judged.points, 10);
        assert_eq!(judged.missed, 3);
        assert!((judged.missed_share() - 0.3).abs() < 1e-9);
        let error = judged.error.unwrap();
        assert!(
            (error - (7.0 * 10.0 / 110.0 + 3.0 * 0.5) / 10.0).abs() < 1e-6,
            "{error}"
        );
        // Only the window counts, and gaps are not judged.
        let mut gappy = actual.clone();
        gappy.values[10] = f64::NAN;
        assert_eq!(record.accuracy(&gappy, 660, 120).points, 2);
    }

    #[test]
    fn old_times_are_forgotten() {
        let mut record = ForecastRecord::default();
        record.record(&forecast(0, 1.0, 1.0), 0, 0, 600);
        record.record(&forecast(3600, 1.0, 1.0), 3600, 0, 600);
        assert_eq!(record.predictions.len(), 1);
    }
}
