//! Fitting: a pool of series into one shared ridge ensemble, judged on held-out origins, and a
//! model per series.

use super::*;

/// The highest finite non-negative value of `values` (0 when there is none).
pub(super) fn highest(values: &[f64]) -> f64 {
    values
        .iter()
        .map(|&v| clean_value(v))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
}

impl RegressionForecaster {
    pub(super) fn fit_pool(
        &self,
        histories: &[Series],
        spec: &ForecastSpec,
        local: bool,
    ) -> Vec<Result<Box<dyn FittedModel>, ForecastError>> {
        let horizon = spec.horizon.max(1);
        let step = histories.first().map(|s| s.step).unwrap_or(60);
        let max_len = histories.iter().map(|s| s.values.len()).max().unwrap_or(0);
        let layout = Layout::new(spec, step, &self.config, local, max_len);
        let events = EventIndex::new(&spec.events);
        let prepared: Vec<Option<Prepared>> = histories
            .iter()
            .map(|s| {
                (s.step == step)
                    .then(|| prepare(s, layout.main_period, &events, None))
                    .flatten()
            })
            .collect();
        let samples = self.build_samples(&layout, &events, histories, &prepared, horizon);
        let min_rows = ((self.config.min_origins_per_feature * layout.features as f64).ceil()
            as usize)
            .max(32);
        let fitted = self.fit_shared(spec, &layout, &samples, horizon, max_len, min_rows);
        let (shared, held_out, fit_error) = match fitted {
            Ok((weights, held_out)) => (
                Some(Arc::new(Shared {
                    layout: layout.clone(),
                    events: events.clone(),
                    bounds: samples.bounds.clone(),
                    weights: StepWeights::of(&weights),
                })),
                Some(held_out),
                String::new(),
            ),
            Err(reason) => {
                tracing::debug!(%reason, "regression falls back to seasonal naive");
                (None, None, reason)
            }
        };
        let judging = Judging {
            blocks: self.config.cv_blocks,
            blend: self.config.blend,
            select: self.config.select,
            recent_share: self.config.recent_share,
            blend_last: self.config.blend_last,
            relative_too: self.config.select_relative_too,
            naive_up_to: self.config.naive_up_to,
        };
        let mut out = Vec::with_capacity(histories.len());
        for (i, s) in histories.iter().enumerate() {
            let rows = samples
                .series
                .iter()
                .find(|(si, _)| *si == i)
                .map(|(_, rows)| rows.clone());
            let reason = match (&shared, &prepared[i], &rows) {
                (None, _, _) => fit_error.clone(),
                (_, None, _) if s.step != step => "step differs from the pooled series".to_string(),
                (_, None, _) => "no finite non-negative value in the history".to_string(),
                (_, _, None) => format!(
                    "{} points of history, the regression needs {}",
                    s.values.len(),
                    layout.lookback + horizon + 1
                ),
                _ => String::new(),
            };
            let fallback = match SeasonalNaiveModel::fit(
                s,
                spec,
                ForecastMethod::Fallback {
                    reason: reason.clone(),
                },
            ) {
                Ok(f) => f,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            let model: Box<dyn FittedModel> = match (&shared, &held_out, &prepared[i], rows) {
                (Some(shared), Some((forecasts, block_of)), Some(p), Some(rows))
                    if reason.is_empty() =>
                {
                    match validation::judge(
                        &samples, forecasts, block_of, rows, p, &layout, &judging,
                    ) {
                        Some(mut verdict) => {
                            if let Some(quantile) = spec.band_quantile {
                                for step in &mut verdict.residuals {
                                    step.keep_band(quantile);
                                }
                            }
                            Box::new(RegressionModel {
                                band_scale: self.config.band_scale,
                                shared: shared.clone(),
                                offset: p.offset,
                                history_max: highest(&s.values),
                                verdict,
                                fallback,
                            })
                        }
                        None => match SeasonalNaiveModel::fit(
                            s,
                            spec,
                            ForecastMethod::Fallback {
                                reason: "no held-out origin to check the regression on".into(),
                            },
                        ) {
                            Ok(unchecked) => Box::new(FallbackModel(unchecked)),
                            Err(e) => {
                                out.push(Err(e));
                                continue;
                            }
                        },
                    }
                }
                _ => Box::new(FallbackModel(fallback)),
            };
            out.push(Ok(model));
        }
        out
    }

    /// The pool's weights and its held-out forecasts, or why there is no regression.
    #[allow(clippy::type_complexity)]
    fn fit_shared(
        &self,
        spec: &ForecastSpec,
        layout: &Layout,
        samples: &Samples,
        horizon: usize,
        max_len: usize,
        min_rows: usize,
    ) -> Result<(Array2<f64>, (Array2<f64>, Vec<usize>)), String> {
        let rows = samples.x.nrows();
        let shortest = spec.seasons.iter().copied().filter(|&m| m >= 2).min();
        if let (Some(m), 1) = (shortest, layout.main_period) {
            return Err(format!(
                "{max_len} points of history, fewer than two seasons of {m} plus the horizon \
                 {horizon}: too short for the regression"
            ));
        }
        if rows < min_rows {
            return Err(format!(
                "{rows} usable training windows, the regression needs at least {min_rows} for {} \
                 features (history too short or too sparse for horizon {horizon})",
                layout.features
            ));
        }
        // One candidate per penalty; the one with the smallest held-out error is fitted.
        let ridges: Vec<Ridge> = self
            .config
            .alphas
            .iter()
            .map(|&alpha| Ridge {
                alphas: vec![alpha],
            })
            .collect();
        let full = ridge::normal_equations_of_f32(samples.x.view(), samples.y.view());
        let (held_out, block_of) = validation::held_out_forecasts(
            samples,
            &ridges,
            &full,
            self.config.cv_blocks,
            min_rows,
            self.config.forward,
        )
        .ok_or_else(|| {
            format!(
                "{rows} usable training windows are too few to hold {} blocks out and still fit \
                 {} features: the regression cannot be checked",
                self.config.cv_blocks, layout.features
            )
        })?;
        let (best, forecasts) = held_out
            .into_iter()
            .enumerate()
            .min_by(|(_, a), (_, b)| a.squared_error.total_cmp(&b.squared_error))
            .map(|(i, h)| (i, h.forecasts))
            .ok_or_else(|| "no ridge penalty configured".to_string())?;
        let weights = ridges[best]
            .solve_normal(&full.0, &full.1)
            .map_err(|e| e.to_string())?;
        let held_out = (forecasts, block_of);
        Ok((weights, held_out))
    }

    fn build_samples(
        &self,
        layout: &Layout,
        events: &EventIndex,
        histories: &[Series],
        prepared: &[Option<Prepared>],
        horizon: usize,
    ) -> Samples {
        // Origins per series: t from lookback-1 to n-1-horizon, strided to at most max_origins,
        // keeping the most recent.
        let mut plan: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut total = 0;
        for (si, p) in prepared.iter().enumerate() {
            let Some(p) = p else { continue };
            let n = p.z.len();
            if n < layout.lookback + horizon + 1 {
                continue;
            }
            let first = layout.lookback - 1;
            let last = n - 1 - horizon;
            let count = last - first + 1;
            let stride = count.div_ceil(self.config.max_origins.max(1)).max(1);
            let mut origins = Vec::with_capacity(count / stride + 1);
            let mut t = last as i64;
            while t >= first as i64 {
                let tu = t as usize;
                let gaps = p.missing[tu + 1..=tu + horizon]
                    .iter()
                    .filter(|m| **m)
                    .count();
                if gaps * 4 <= horizon && !p.missing[tu] {
                    origins.push(tu);
                }
                t -= stride as i64;
            }
            origins.reverse();
            if origins.is_empty() {
                continue;
            }
            total += origins.len();
            plan.push((si, origins));
        }
        let f = layout.features;
        let mut x = Array2::<f32>::zeros((total, f));
        let mut range = FeatureRange::new(f);
        let mut row = vec![0.0; f];
        let mut y = Array2::<f64>::zeros((total, horizon));
        let mut observed = vec![false; total * horizon];
        let mut row_origins = Vec::with_capacity(total);
        let mut series = Vec::with_capacity(plan.len());
        let mut r = 0;
        for (si, origins) in &plan {
            let Some(p) = &prepared[*si] else { continue };
            let s = &histories[*si];
            let first_row = r;
            let mut view = p.z.clone();
            for &t in origins {
                p.view_at(t, &mut view);
                let level = layout.level(&view, t);
                row_origins.push(t);
                layout.row(&view, t, level, s.timestamp(t), events, &mut row);
                range.add(&row);
                for (kept, &v) in x.row_mut(r).iter_mut().zip(&row) {
                    *kept = v as f32;
                }
                p.restore(t, &mut view);
                for h in 0..horizon {
                    let idx = t + 1 + h;
                    // A gap inside the targets is fitted on its fill but never scored.
                    y[[r, h]] = p.z[idx] - level;
                    observed[r * horizon + h] = !p.missing[idx];
                }
                r += 1;
            }
            series.push((*si, first_row..r));
        }
        Samples {
            x,
            bounds: range.bounds(),
            y,
            observed,
            origins: row_origins,
            series,
        }
    }
}
