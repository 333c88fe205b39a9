//! The features of one forecast origin: recent lags, the previous seasons around the horizon,
//! time of day and week, known events. The same layout serves every series pooled into a model.

use super::super::ForecastSpec;
use super::RegressionConfig;
use crate::policy::EventWindow;

/// Where a season's window around the horizon sits and how it is averaged.
#[derive(Clone, Debug)]
pub(super) struct SeasonWindow {
    period: usize,
    /// Offsets `j` (target index `t + j - period`), from `first` to `last` inclusive.
    first: i64,
    last: i64,
    block: usize,
}

/// Which features a model uses; identical for every series pooled into one model.
#[derive(Clone, Debug)]
pub(super) struct Layout {
    pub step: i64,
    pub horizon: usize,
    /// Season used for the level and the fallback.
    pub main_period: usize,
    pub raw_lags: usize,
    /// Block means over the last `recent_blocks * recent_block` points (long seasons).
    pub recent_block: usize,
    pub recent_blocks: usize,
    pub windows: Vec<SeasonWindow>,
    /// Fourier terms of the origin time: (period in seconds, harmonics).
    pub fourier: Vec<(f64, usize)>,
    /// Event share per block of the horizon: (block, count); none when there are no events.
    pub event_blocks: Option<(usize, usize)>,
    /// Points of history one origin needs behind it.
    pub lookback: usize,
    pub features: usize,
}

impl Layout {
    pub fn new(
        spec: &ForecastSpec,
        step: i64,
        config: &RegressionConfig,
        local: bool,
        max_len: usize,
    ) -> Self {
        let horizon = spec.horizon.max(1);
        let mut seasons: Vec<usize> = spec.seasons.iter().copied().filter(|&s| s >= 2).collect();
        seasons.sort_unstable();
        seasons.dedup();
        // A season is usable when a few hundred origins remain behind its window.
        seasons.retain(|&m| 2 * m + horizon <= max_len);
        let main_period = seasons.first().copied().unwrap_or(1);
        let raw_lags = config.raw_lags.max(1);
        let (recent_block, recent_blocks) = if main_period > raw_lags {
            let block = main_period.div_ceil(24);
            (block, main_period / block)
        } else {
            (1, 0)
        };
        let mut windows = Vec::new();
        for &m in &seasons {
            if m <= raw_lags {
                continue;
            }
            let span = horizon.min(m) as i64;
            let first = 1 - span / 2;
            let last = span;
            let len = (last - first + 1) as usize;
            let block = len.div_ceil(72);
            windows.push(SeasonWindow {
                period: m,
                first,
                last,
                block,
            });
        }
        let fourier = if local && config.fourier_harmonics > 0 {
            seasons
                .iter()
                .map(|&m| {
                    (
                        (m as i64 * step) as f64,
                        config.fourier_harmonics.min(m / 2),
                    )
                })
                .collect()
        } else {
            vec![]
        };
        let event_blocks = if spec.events.is_empty() {
            None
        } else {
            let block = horizon.div_ceil(12);
            Some((block, horizon.div_ceil(block)))
        };
        let mut lookback = raw_lags
            .max(recent_block * recent_blocks)
            .max(2 * main_period);
        for w in &windows {
            // The window reads `t - period + j` for `j` in `first..=last`; `first` is 1 when the
            // horizon is a single step.
            lookback = lookback.max((w.period as i64 - w.first + 1).max(1) as usize);
        }
        let mut features = 1 + raw_lags + recent_blocks + 1;
        for w in &windows {
            features += ((w.last - w.first + 1) as usize).div_ceil(w.block);
        }
        features += fourier.iter().map(|(_, k)| 2 * k).sum::<usize>();
        if let Some((_, count)) = event_blocks {
            features += count + 1;
        }
        Self {
            step,
            horizon,
            main_period,
            raw_lags,
            recent_block,
            recent_blocks,
            windows,
            fourier,
            event_blocks,
            lookback,
            features,
        }
    }

    /// The level of the series at origin `t`: mean of `z` over the last season (or raw lags).
    pub fn level(&self, z: &[f64], t: usize) -> f64 {
        let len = self.main_period.max(1).min(t + 1);
        z[t + 1 - len..=t].iter().sum::<f64>() / len as f64
    }

    /// Writes the feature row for origin `t` (the last observed index) into `row`.
    pub fn row(
        &self,
        z: &[f64],
        t: usize,
        level: f64,
        time: i64,
        events: &EventIndex,
        row: &mut [f64],
    ) {
        let mut k = 0;
        row[k] = 1.0;
        k += 1;
        for i in 0..self.raw_lags {
            row[k] = z[t - i] - level;
            k += 1;
        }
        for b in 0..self.recent_blocks {
            let end = t + 1 - b * self.recent_block;
            let slice = &z[end - self.recent_block..end];
            row[k] = slice.iter().sum::<f64>() / slice.len() as f64 - level;
            k += 1;
        }
        // The level of the season before, against this one: trend.
        let prev_end = t + 1 - self.main_period.min(t + 1);
        let len = self.main_period.max(1).min(prev_end);
        row[k] = if len > 0 {
            z[prev_end - len..prev_end].iter().sum::<f64>() / len as f64 - level
        } else {
            0.0
        };
        k += 1;
        for w in &self.windows {
            // Past seasons give the shape; the level is today's. Relative to their own level,
            // a level shift since then would drag the forecast back for a whole season.
            let window_level = level;
            let mut j = w.first;
            while j <= w.last {
                let end = (j + w.block as i64 - 1).min(w.last);
                let mut sum = 0.0;
                for jj in j..=end {
                    sum += z[(t as i64 + jj - w.period as i64) as usize];
                }
                row[k] = sum / (end - j + 1) as f64 - window_level;
                k += 1;
                j = end + 1;
            }
        }
        for &(period, harmonics) in &self.fourier {
            let phase =
                2.0 * std::f64::consts::PI * (time.rem_euclid(period as i64) as f64) / period;
            for h in 1..=harmonics {
                row[k] = (phase * h as f64).sin();
                row[k + 1] = (phase * h as f64).cos();
                k += 2;
            }
        }
        if let Some((block, count)) = self.event_blocks {
            row[k] = events.share(time, time + self.step, self.step);
            k += 1;
            for b in 0..count {
                let from = time + self.step * (1 + (b * block) as i64);
                let to = (from + self.step * block as i64)
                    .min(time + self.step * (1 + self.horizon as i64));
                row[k] = events.share(from, to, self.step);
                k += 1;
            }
        }
        debug_assert_eq!(k, self.features);
    }
}

/// Event windows sorted by start, to ask what share of a time span is inside one.
#[derive(Clone, Debug, Default)]
pub(super) struct EventIndex {
    windows: Vec<(i64, i64)>,
}

impl EventIndex {
    pub fn new(events: &[EventWindow]) -> Self {
        let mut windows: Vec<(i64, i64)> = events
            .iter()
            .filter(|e| e.end > e.start)
            .map(|e| (e.start, e.end))
            .collect();
        windows.sort_unstable();
        Self { windows }
    }

    pub fn contains(&self, time: i64) -> bool {
        self.windows.iter().any(|&(s, e)| s <= time && time < e)
    }

    /// Share of the points `from, from + step, ...` before `to` that are inside an event.
    pub fn share(&self, from: i64, to: i64, step: i64) -> f64 {
        if self.windows.is_empty() || to <= from {
            return 0.0;
        }
        let mut inside = 0usize;
        let mut total = 0usize;
        let mut time = from;
        while time < to {
            total += 1;
            if self.contains(time) {
                inside += 1;
            }
            time += step.max(1);
        }
        inside as f64 / total.max(1) as f64
    }
}

/// The range each feature took in training. A forecast from features outside it (a drop to zero
/// never seen before, a spike the cleaning kept) is made from the features clipped into it: a
/// linear model extrapolates without limit, which is how a forecast runs away.
///
/// Kept in `f32` (a model per online workload keeps its bounds as long as the daemon runs),
/// rounded outwards: the kept range holds every value seen in training.
#[derive(Clone, Debug)]
pub(super) struct FeatureBounds {
    low: Vec<f32>,
    high: Vec<f32>,
}

/// The lowest and highest value of each feature, over rows seen one at a time: the training
/// rows are kept in `f32` (`Samples`), and the bounds come from them as computed.
pub(super) struct FeatureRange {
    low: Vec<f64>,
    high: Vec<f64>,
}

impl FeatureRange {
    pub fn new(features: usize) -> Self {
        Self {
            low: vec![f64::INFINITY; features],
            high: vec![f64::NEG_INFINITY; features],
        }
    }

    pub fn add(&mut self, row: &[f64]) {
        for ((low, high), &v) in self.low.iter_mut().zip(&mut self.high).zip(row) {
            *low = low.min(v);
            *high = high.max(v);
        }
    }

    /// The range in `f32`, rounded outwards.
    pub fn bounds(&self) -> FeatureBounds {
        let below = |&v: &f64| {
            let r = v as f32;
            if f64::from(r) > v { r.next_down() } else { r }
        };
        let above = |&v: &f64| {
            let r = v as f32;
            if f64::from(r) < v { r.next_up() } else { r }
        };
        FeatureBounds {
            low: self.low.iter().map(below).collect(),
            high: self.high.iter().map(above).collect(),
        }
    }
}

impl FeatureBounds {
    pub fn clip(&self, row: &mut [f64]) {
        for ((v, &lo), &hi) in row.iter_mut().zip(&self.low).zip(&self.high) {
            if lo <= hi {
                *v = v.clamp(f64::from(lo), f64::from(hi));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FeatureRange;
    use proptest::prelude::*;

    proptest! {
        /// Whatever their magnitude, the rows a model was fitted on pass its bounds unclipped,
        /// and a value beyond them is brought back within an `f32` step of the edge.
        #[test]
        fn bounds_keep_every_training_value(
            magnitude in -30i32..30,
            raw in proptest::collection::vec(-1.0f64..1.0, 12),
        ) {
            let scale = 10f64.powi(magnitude);
            let rows = ndarray::Array2::from_shape_fn((4, 3), |(i, j)| raw[i * 3 + j] * scale);
            let mut range = FeatureRange::new(3);
            for row in rows.rows() {
                range.add(row.as_slice().unwrap());
            }
            let bounds = range.bounds();
            for row in rows.rows() {
                let mut clipped = row.to_vec();
                bounds.clip(&mut clipped);
                prop_assert_eq!(clipped, row.to_vec());
            }
            let top = rows.column(0).iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
            let mut beyond = vec![top + 10.0 * scale, 0.0, 0.0];
            bounds.clip(&mut beyond);
            prop_assert!(beyond[0] >= top && beyond[0] <= top + top.abs() * 1e-6 + f64::MIN_POSITIVE);
        }
    }
}
