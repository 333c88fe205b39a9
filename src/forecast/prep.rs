//! Shared helpers for the forecasters: cleaning a demand series and quantiles.

/// Demand is a rate: negative values can only come from counter resets or broken scrapes,
/// so they are treated as gaps rather than as information.
pub fn clean_value(v: f64) -> f64 {
    if v.is_finite() && v >= 0.0 {
        v
    } else {
        f64::NAN
    }
}

/// Quantile of already sorted finite values, linear interpolation between order statistics.
/// `None` when there are no values.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let q = q.clamp(0.0, 1.0);
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// Sorts finite values in place and drops the others.
pub fn sorted_finite(mut values: Vec<f64>) -> Vec<f64> {
    values.retain(|v| v.is_finite());
    values.sort_unstable_by(f64::total_cmp);
    values
}

/// At most `max` evenly spaced order statistics of `sorted`, both ends kept. Quantiles read
/// from them are off by at most `1 / (max - 1)` in rank, and a model keeps a fixed size however
/// long its history is (the daemon holds one model per online workload).
pub fn thin_sorted(sorted: Vec<f64>, max: usize) -> Vec<f64> {
    if max < 2 || sorted.len() <= max {
        return sorted;
    }
    let last = sorted.len() - 1;
    let gaps = max - 1;
    (0..max)
        .map(|k| sorted[(2 * k * last + gaps) / (2 * gaps)])
        .collect()
}

/// A distribution kept by a fitted model: at most `max` evenly spaced order statistics of
/// finite values, in `f32`. A daemon holds one model per online workload for as long as it
/// runs, so what a model keeps must not grow with its history; quantiles read from it are off by
/// at most `1 / (max - 1)` in rank, and errors of demand (or of its logarithm) need no more
/// than `f32`'s seven significant digits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrderStatistics(Vec<f32>);

impl OrderStatistics {
    /// Keeps the finite ones of `values` (NaN and infinities are dropped).
    pub fn new(values: Vec<f64>, max: usize) -> Self {
        Self(
            thin_sorted(sorted_finite(values), max)
                .into_iter()
                .map(|v| v as f32)
                .collect(),
        )
    }

    /// How many values it keeps (at most the `max` it was made with).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Quantile `q`, linear interpolation between the kept order statistics; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        let pos = q * (self.0.len() - 1) as f64;
        let lo = pos.floor() as usize;
        let hi = pos.ceil() as usize;
        let (a, b) = (f64::from(self.0[lo]), f64::from(self.0[hi]));
        Some(a + (b - a) * (pos - lo as f64))
    }
}

/// Median of finite values; `None` when there are none.
pub fn median(values: &[f64]) -> Option<f64> {
    quantile_sorted(&sorted_finite(values.to_vec()), 0.5)
}

/// Checks the band quantile asked of a model: the upper band is at `q`, the lower at `1 - q`.
pub fn check_quantile(q: f64) -> Result<(), super::ForecastError> {
    if q.is_finite() && q > 0.5 && q < 1.0 {
        Ok(())
    } else {
        Err(super::ForecastError::InvalidRequest(format!(
            "band quantile must be in (0.5, 1), got {q}"
        )))
    }
}

/// What a fitted model asks of the history it predicts from, and of the band.
pub fn check_request(
    recent_step: i64,
    fitted_step: i64,
    q: f64,
) -> Result<(), super::ForecastError> {
    check_quantile(q)?;
    if recent_step != fitted_step {
        return Err(super::ForecastError::InvalidRequest(format!(
            "recent history has step {recent_step}s but the model was fitted on step {fitted_step}s"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_between_order_statistics() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile_sorted(&v, 0.5), Some(3.0));
        assert_eq!(quantile_sorted(&v, 0.0), Some(1.0));
        assert_eq!(quantile_sorted(&v, 1.0), Some(5.0));
        assert_eq!(quantile_sorted(&v, 0.125), Some(1.5));
        assert_eq!(quantile_sorted(&[], 0.5), None);
        let long: Vec<f64> = (0..=20_000).map(f64::from).collect();
        let thin = thin_sorted(long.clone(), 1001);
        assert_eq!(thin.len(), 1001);
        assert_eq!((thin[0], thin[1000]), (0.0, 20_000.0));
        for q in [0.05, 0.5, 0.9, 0.95, 0.99] {
            let (full, kept) = (quantile_sorted(&long, q), quantile_sorted(&thin, q));
            assert!(
                (full.unwrap() - kept.unwrap()).abs() <= 20.0,
                "{q}: {full:?} {kept:?}"
            );
        }
        assert_eq!(thin_sorted(vec![1.0, 2.0], 1001), vec![1.0, 2.0]);
    }

    #[test]
    fn order_statistics_keep_quantiles_in_a_fixed_size() {
        let values: Vec<f64> = (0..=20_000)
            .rev()
            .map(f64::from)
            .chain([f64::NAN])
            .collect();
        let kept = OrderStatistics::new(values, 201);
        assert_eq!(kept.len(), 201);
        assert_eq!(
            (kept.quantile(0.0), kept.quantile(1.0)),
            (Some(0.0), Some(20_000.0))
        );
        for q in [0.01, 0.05, 0.5, 0.9, 0.95, 0.99, 0.999] {
            let got = kept.quantile(q).unwrap();
            // Off by at most 1/200 of the rank: 100 of 20,000.
            assert!((got - q * 20_000.0).abs() <= 100.0, "{q}: {got}");
        }
        let few = OrderStatistics::new(vec![3.0, f64::INFINITY, 1.0, 2.0], 201);
        assert_eq!(few.len(), 3);
        assert_eq!(few.quantile(0.5), Some(2.0));
        assert_eq!(few.quantile(0.75), Some(2.5));
        assert!(
            OrderStatistics::new(vec![f64::NAN], 201)
                .quantile(0.5)
                .is_none()
        );
    }

    #[test]
    fn negative_and_nan_values_become_gaps() {
        assert!(clean_value(-3.0).is_nan());
        assert!(clean_value(f64::INFINITY).is_nan());
        assert_eq!(clean_value(0.0), 0.0);
        assert_eq!(median(&[f64::NAN, 3.0, 1.0, 2.0]), Some(2.0));
    }

    #[test]
    fn quantile_outside_the_open_interval_is_refused() {
        assert!(check_quantile(0.95).is_ok());
        assert!(check_quantile(0.5).is_err());
        assert!(check_quantile(1.0).is_err());
        assert!(check_quantile(f64::NAN).is_err());
    }
}
