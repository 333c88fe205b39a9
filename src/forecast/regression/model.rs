//! A fitted model: its forecasts, its method, and the seasonal naive fallback.

use super::fit::highest;
use super::*;

impl FittedModel for FallbackModel {
    fn predict(
        &self,
        recent: &Series,
        horizon: usize,
        quantile: f64,
    ) -> Result<Forecast, ForecastError> {
        self.0.predict(recent, horizon, quantile)
    }

    fn recent_len(&self, horizon: usize) -> usize {
        self.0.recent_len(horizon)
    }
}

impl RegressionModel {
    /// What the forecast says about how it was made.
    fn method(&self) -> ForecastMethod {
        let [blend, seasonal, last] = self.verdict.errors;
        let versus = format!(
            "mean absolute error on {} held-out origins: regression {blend:.3}, seasonal naive \
             {seasonal:.3}, last value {last:.3}",
            self.verdict.origins
        );
        match self.verdict.chosen {
            Chosen::Blend { .. } => ForecastMethod::Regression,
            Chosen::SeasonalNaive => ForecastMethod::SeasonalNaive { reason: versus },
            Chosen::Naive => ForecastMethod::Naive { reason: versus },
        }
    }

    /// Seasonal naive in place of the regression for this forecast, unchecked, saying why.
    fn unchecked(
        &self,
        recent: &Series,
        horizon: usize,
        quantile: f64,
        reason: String,
    ) -> Result<Forecast, ForecastError> {
        let mut forecast = self.fallback.predict(recent, horizon, quantile)?;
        forecast.method = ForecastMethod::Fallback { reason };
        Ok(forecast)
    }
}

impl FittedModel for RegressionModel {
    fn predict(
        &self,
        recent: &Series,
        horizon: usize,
        quantile: f64,
    ) -> Result<Forecast, ForecastError> {
        let layout = &self.shared.layout;
        check_request(recent.step, layout.step, quantile)?;
        if recent.values.len() < layout.lookback {
            return self.unchecked(
                recent,
                horizon,
                quantile,
                format!(
                    "recent history has {} points, the regression needs {}",
                    recent.values.len(),
                    layout.lookback
                ),
            );
        }
        // Only the lookback matters; preparing more would cost time every cycle.
        let from = recent.values.len()
            - layout
                .lookback
                .max(layout.main_period * 2)
                .min(recent.values.len());
        let tail = Series::new(
            recent.timestamp(from),
            recent.step,
            recent.values[from..].to_vec(),
        );
        let Some(p) = prepare(
            &tail,
            layout.main_period,
            &self.shared.events,
            Some(self.offset),
        ) else {
            // The regression's whole lookback is a gap: seasonal naive walks further back.
            return self.unchecked(
                recent,
                horizon,
                quantile,
                format!(
                    "the last {} points, all the regression reads, are gaps",
                    tail.values.len()
                ),
            );
        };
        let t = p.z.len() - 1;
        let level = layout.level(&p.z, t);
        let before = season_before(&p.z, t, layout.main_period);
        let regression: Option<Vec<f64>> = match &self.verdict.chosen {
            Chosen::Blend { .. } => {
                let mut row = vec![0.0; layout.features];
                layout.row(
                    &p.z,
                    t,
                    level,
                    tail.timestamp(t),
                    &self.shared.events,
                    &mut row,
                );
                self.shared.bounds.clip(&mut row);
                Some(self.shared.weights.predict(&row))
            }
            _ => None,
        };
        let ceiling = CEILING
            * self.history_max.max(highest(
                &recent.values
                    [recent.values.len() - self.recent_len(horizon).min(recent.values.len())..],
            ));
        let scale = self.band_scale;
        let fitted_h = layout.horizon;
        let naive = if horizon > fitted_h {
            Some(self.fallback.predict(recent, horizon, quantile)?)
        } else {
            None
        };
        let mut point = Vec::with_capacity(horizon);
        let mut lower = Vec::with_capacity(horizon);
        let mut upper = Vec::with_capacity(horizon);
        let back = |v: f64| (v.exp() - self.offset).clamp(0.0, ceiling);
        for h in 0..horizon {
            if h >= fitted_h {
                // Past the fitted horizon: seasonal naive, with its own band.
                if let Some(nv) = &naive {
                    point.push(nv.point[h].min(ceiling));
                    lower.push(nv.lower[h].min(ceiling));
                    upper.push(nv.upper[h].min(ceiling));
                }
                continue;
            }
            let seasonal = seasonal_naive_z(&p.z, t, h, layout.main_period, level);
            let zc = level
                + match (&self.verdict.chosen, &regression) {
                    (Chosen::Blend { weights }, Some(pred)) => {
                        let [a, c, b] = weights[h];
                        seasonal
                            + a * (pred[h] - seasonal)
                            + c * (p.z[t] - level - seasonal)
                            + b * season_drift(before, h, layout.main_period, level)
                    }
                    (Chosen::Naive, _) => p.z[t] - level,
                    _ => seasonal,
                };
            let (lo_q, hi_q) = match self.verdict.residuals.get(h) {
                Some(errors) => errors.band(quantile).ok_or_else(|| {
                    ForecastError::InvalidRequest(format!(
                        "the model keeps its band at another quantile than {quantile}; refit it"
                    ))
                })?,
                None => (0.0, 0.0),
            };
            let (lo_q, hi_q) = (scale * lo_q, scale * hi_q);
            let pt = back(zc);
            point.push(pt);
            lower.push(back(zc + lo_q).min(pt));
            upper.push(back(zc + hi_q).max(pt));
        }
        let mut forecast = Forecast {
            start: recent.end(),
            step: recent.step,
            point,
            lower,
            upper,
            quantile,
            method: self.method(),
        };
        forecast.raise_to_recurring_peaks(recent, layout.main_period);
        Ok(forecast)
    }

    /// The feature rows' lookback, two seasons to prepare them, the recurring peaks' seasons
    /// (one step beyond each side), and past the fitted horizon the fallback's.
    fn recent_len(&self, horizon: usize) -> usize {
        let layout = &self.shared.layout;
        let own = layout
            .lookback
            .max(2 * layout.main_period)
            .max(RECURRING_SEASONS * layout.main_period + 2);
        if horizon > layout.horizon {
            own.max(self.fallback.recent_len(horizon))
        } else {
            own
        }
    }
}
