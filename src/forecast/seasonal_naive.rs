//! Seasonal naive: tomorrow looks like today. The baseline every other forecaster is measured
//! against, and the fallback when history is too short or too broken for the regression.
//!
//! The band comes from the empirical distribution of the method's own errors in the history:
//! for a forecast `k` seasons back, the errors `y[t] - y[t - k * period]`.

use super::prep::{OrderStatistics, check_request, clean_value};
use super::{
    CEILING, FittedModel, Forecast, ForecastError, ForecastMethod, ForecastSpec, Forecaster, Series,
};

/// Fewer errors than this make an empirical quantile meaningless; a spread of the history is
/// used instead.
const MIN_RESIDUALS: usize = 8;

/// Order statistics kept per look-back (and for the spread): quantiles to half a percent of
/// rank, as the regression's band, without one value per point of history.
const KEPT_QUANTILES: usize = 201;

#[derive(Clone, Debug, Default)]
pub struct SeasonalNaive;

impl Forecaster for SeasonalNaive {
    fn name(&self) -> &'static str {
        "seasonal-naive"
    }

    fn fit(
        &self,
        history: &Series,
        spec: &ForecastSpec,
    ) -> Result<Box<dyn FittedModel>, ForecastError> {
        let model = SeasonalNaiveModel::fit(
            history,
            spec,
            ForecastMethod::SeasonalNaive {
                reason: "seasonal naive is the configured forecaster".to_string(),
            },
        )?;
        Ok(Box::new(model))
    }
}

/// A fitted seasonal naive model: the period and its error distribution per look-back.
#[derive(Clone, Debug)]
pub struct SeasonalNaiveModel {
    pub period: usize,
    step: i64,
    /// `errors[k - 1]`: errors of a forecast `k` periods back.
    errors: Vec<OrderStatistics>,
    /// Spread of the history around its median: the band when errors are too few.
    spread: OrderStatistics,
    /// The highest demand in the history it was fitted on.
    history_max: f64,
    /// What every forecast says about how it was made.
    method: ForecastMethod,
}

impl SeasonalNaiveModel {
    /// Fits on `history`; every forecast reports `method`.
    pub fn fit(
        history: &Series,
        spec: &ForecastSpec,
        method: ForecastMethod,
    ) -> Result<Self, ForecastError> {
        let values: Vec<f64> = history.values.iter().map(|&v| clean_value(v)).collect();
        let finite = values.iter().filter(|v| v.is_finite()).count();
        if finite == 0 {
            return Err(ForecastError::NoHistory(format!(
                "{} points, none of them a finite non-negative number",
                values.len()
            )));
        }
        let period = choose_period(&spec.seasons, values.len());
        let horizon = spec.horizon.max(1);
        let cycles = horizon.div_ceil(period);
        let errors = (1..=cycles)
            .map(|k| {
                let lag = k * period;
                let e = (lag..values.len())
                    .map(|i| values[i] - values[i - lag])
                    .collect::<Vec<_>>();
                OrderStatistics::new(e, KEPT_QUANTILES)
            })
            .collect();
        let median = super::prep::median(&values).unwrap_or(0.0);
        let spread =
            OrderStatistics::new(values.iter().map(|v| v - median).collect(), KEPT_QUANTILES);
        Ok(Self {
            period,
            step: history.step,
            errors,
            spread,
            history_max: values
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .fold(0.0, f64::max),
            method,
        })
    }

    fn error_quantile(&self, cycle: usize, q: f64) -> f64 {
        let idx = cycle.min(self.errors.len()).saturating_sub(1);
        match self.errors.get(idx) {
            Some(e) if e.len() >= MIN_RESIDUALS => e.quantile(q).unwrap_or(0.0),
            _ => self.spread.quantile(q).unwrap_or(0.0),
        }
    }
}

/// The shortest season with two full periods of history (one to copy, one to learn the errors
/// from); else the shortest with one; else the last value (period 1).
fn choose_period(seasons: &[usize], len: usize) -> usize {
    let mut sorted: Vec<usize> = seasons.iter().copied().filter(|&s| s >= 1).collect();
    sorted.sort_unstable();
    sorted
        .iter()
        .copied()
        .find(|&s| 2 * s <= len)
        .or_else(|| sorted.iter().copied().find(|&s| s <= len))
        .unwrap_or(1)
}

impl FittedModel for SeasonalNaiveModel {
    fn predict(
        &self,
        recent: &Series,
        horizon: usize,
        quantile: f64,
    ) -> Result<Forecast, ForecastError> {
        check_request(recent.step, self.step, quantile)?;
        let values: Vec<f64> = recent.values.iter().map(|&v| clean_value(v)).collect();
        let last = values
            .iter()
            .rev()
            .find(|v| v.is_finite())
            .copied()
            .ok_or_else(|| {
                ForecastError::NoHistory("recent history has no finite value".to_string())
            })?;
        let n = values.len();
        let p = self.period;
        let seen = values[n.saturating_sub(self.recent_len(horizon))..]
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(self.history_max, f64::max);
        let ceiling = CEILING * seen;
        let mut point = Vec::with_capacity(horizon);
        let mut lower = Vec::with_capacity(horizon);
        let mut upper = Vec::with_capacity(horizon);
        for h in 1..=horizon {
            let cycle = h.div_ceil(p);
            let target = n + h - 1;
            // Walk back whole periods past gaps; the last value if the phase is all gaps.
            let mut value = last;
            let mut back = cycle * p;
            while back <= target {
                let v = values[target - back];
                if v.is_finite() {
                    value = v;
                    break;
                }
                back += p;
            }
            let bounded = |v: f64| v.clamp(0.0, ceiling);
            let lo = bounded(value + self.error_quantile(cycle, 1.0 - quantile));
            let hi = bounded(value + self.error_quantile(cycle, quantile));
            let pt = bounded(value);
            point.push(pt);
            lower.push(lo.min(pt));
            upper.push(hi.max(pt));
        }
        Ok(Forecast {
            start: recent.end(),
            step: recent.step,
            point,
            lower,
            upper,
            quantile,
            method: self.method.clone(),
        })
    }

    /// The seasons a forecast copies, and `RECURRING_SEASONS` more to walk back past gaps.
    fn recent_len(&self, horizon: usize) -> usize {
        let p = self.period.max(1);
        (horizon.div_ceil(p) + super::RECURRING_SEASONS) * p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daily(len: usize, period: usize) -> Vec<f64> {
        (0..len)
            .map(|i| {
                let phase = (i % period) as f64 / period as f64;
                100.0 + 50.0 * (2.0 * std::f64::consts::PI * phase).sin()
            })
            .collect()
    }

    fn spec(seasons: Vec<usize>, horizon: usize) -> ForecastSpec {
        ForecastSpec {
            seasons,
            events: vec![],
            horizon,
            band_quantile: None,
        }
    }

    #[test]
    fn repeats_the_last_season() {
        let s = Series::new(0, 60, daily(96, 24));
        let model = SeasonalNaive.fit(&s, &spec(vec![24], 30)).unwrap();
        let f = model.predict(&s, 30, 0.95).unwrap();
        assert_eq!(f.start, 96 * 60);
        for h in 0..30 {
            assert!((f.point[h] - s.values[72 + h % 24]).abs() < 1e-9, "h={h}");
            assert!(f.lower[h] <= f.point[h] && f.point[h] <= f.upper[h]);
        }
    }

    #[test]
    fn walks_back_over_gaps_and_ignores_resets() {
        let mut v = daily(96, 24);
        v[72] = f64::NAN; // the value seasonal naive would copy for h = 1
        v[80] = -5000.0; // a counter reset artefact
        let s = Series::new(0, 60, v.clone());
        let model = SeasonalNaive.fit(&s, &spec(vec![24], 24)).unwrap();
        let f = model.predict(&s, 24, 0.9).unwrap();
        assert!((f.point[0] - v[48]).abs() < 1e-9);
        assert!((f.point[8] - v[56]).abs() < 1e-9);
        assert!(f.point.iter().all(|p| p.is_finite() && *p >= 0.0));
    }

    #[test]
    fn short_history_falls_back_to_last_value() {
        let s = Series::new(0, 60, vec![5.0, 6.0, f64::NAN]);
        let model = SeasonalNaive.fit(&s, &spec(vec![24], 4)).unwrap();
        let f = model.predict(&s, 4, 0.95).unwrap();
        assert_eq!(f.point, vec![6.0; 4]);
    }

    #[test]
    fn all_gaps_is_an_error_not_a_panic() {
        let s = Series::new(0, 60, vec![f64::NAN; 10]);
        assert!(SeasonalNaive.fit(&s, &spec(vec![24], 4)).is_err());
        let ok = Series::new(0, 60, vec![1.0; 10]);
        let model = SeasonalNaive.fit(&ok, &spec(vec![24], 4)).unwrap();
        assert!(model.predict(&s, 4, 0.95).is_err());
        assert!(model.predict(&ok, 4, 1.5).is_err());
    }

    #[test]
    fn band_covers_noise_at_the_nominal_rate() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let v: Vec<f64> = daily(24 * 60, 24)
            .into_iter()
            .map(|x| x + rng.random_range(-10.0..10.0))
            .collect();
        let (train, test) = v.split_at(24 * 50);
        let s = Series::new(0, 3600, train.to_vec());
        let model = SeasonalNaive.fit(&s, &spec(vec![24], 24)).unwrap();
        let mut inside = 0;
        let mut total = 0;
        for origin in (0..test.len() - 24).step_by(24) {
            let mut hist = train.to_vec();
            hist.extend_from_slice(&test[..origin]);
            let f = model
                .predict(&Series::new(0, 3600, hist), 24, 0.95)
                .unwrap();
            for h in 0..24 {
                total += 1;
                let y = test[origin + h];
                if y >= f.lower[h] && y <= f.upper[h] {
                    inside += 1;
                }
            }
        }
        let coverage = inside as f64 / total as f64;
        assert!((coverage - 0.90).abs() < 0.05, "coverage {coverage}");
    }
}
