//! What held-out origins say about a fit: every training origin is forecast by a model that
//! did not see its targets (blocked cross-validation over time, with a horizon's gap on either
//! side of each block), so the forecaster knows, per series and per horizon step, how its
//! regression does against the simple methods and how large its errors are.
//!
//! From those forecasts, per series:
//! - the blend: per horizon step, the weight of the regression against seasonal naive and the
//!   weight of seasonal naive's drift, fitted by least squares;
//! - the choice: the blend, seasonal naive or the last value, whichever had the smallest mean
//!   absolute error on held-out origins. The blend is scored with weights fitted on the other
//!   blocks (cross-fitted), so it does not win by having seen the errors it is scored on;
//! - the band: the chosen method's held-out errors per horizon step.

use std::ops::Range;

use ndarray::{Array2, s};

use super::super::prep::OrderStatistics;
use super::layout::{FeatureBounds, Layout};
use super::prepare::Prepared;
use super::ridge::{Ridge, normal_equations_of_f32, predict_f32};

/// Order statistics kept per horizon step for the band: a quantile read from them is off by at
/// most one percent of rank, and a daemon with a thousand workloads keeps 12 KB per workload at
/// 30 steps instead of one value per held-out origin.
const BAND_POINTS: usize = 101;

/// A step's band is read from at least this many held-out errors: from the neighbouring steps
/// too when one step has fewer (short histories).
const MIN_BAND_ERRORS: usize = 60;

/// The training rows of a fit: one per origin of each series, strided on long histories.
pub(super) struct Samples {
    /// The features, one row per origin, in `f32`: in `f64` the design matrix was a fit's
    /// largest allocation (3,450 origins x 101 features, 2.8 MB, at 14 days of 1m), and a fit's
    /// working set is live all the time while the first fits queue, when the daemon's memory
    /// peaks. Products are summed in `f64` (`ridge::normal_equations_of_f32`).
    pub x: Array2<f32>,
    /// The range of each feature over the rows as computed, before they were kept in `f32`.
    pub bounds: FeatureBounds,
    pub y: Array2<f64>,
    /// Row-major `rows x horizon`: the target was observed (not a filled gap).
    pub observed: Vec<bool>,
    /// Origin index (in its series) of every row.
    pub origins: Vec<usize>,
    /// Rows of each series: (index among the fitted histories, rows), in time order.
    pub series: Vec<(usize, Range<usize>)>,
}

/// Held-out forecasts of one ridge penalty, and their squared error on the fitted targets.
pub(super) struct HeldOut {
    pub forecasts: Array2<f64>,
    pub squared_error: f64,
}

/// Forecasts of every row by models fitted without the rows whose targets overlap its own, one
/// per candidate in `ridges`, and the block each row was held out in (`NOT_HELD_OUT` for a
/// block that would leave fewer than `min_rows` to fit on). `None` when no block can be held
/// out.
pub(super) fn held_out_forecasts(
    samples: &Samples,
    ridges: &[Ridge],
    full: &(Array2<f64>, Array2<f64>),
    blocks: usize,
    min_rows: usize,
    forward: bool,
) -> Option<(Vec<HeldOut>, Vec<usize>)> {
    let rows = samples.x.nrows();
    let horizon = samples.y.ncols();
    let blocks = blocks.max(2);
    let mut block_of = vec![0usize; rows];
    for (_, range) in &samples.series {
        let n = range.len();
        for (i, r) in range.clone().enumerate() {
            block_of[r] = i * blocks / n.max(1);
        }
    }
    let mut held_out: Vec<HeldOut> = ridges
        .iter()
        .map(|_| HeldOut {
            forecasts: Array2::zeros((rows, horizon)),
            squared_error: 0.0,
        })
        .collect();
    for block in 0..blocks {
        // Held out: the block's rows and every row whose targets overlap the block's targets
        // (origins within a horizon of it), in each series. A series' rows are in time order and
        // its blocks are consecutive, so both are one run of rows per series, read in place:
        // copies of them were a fit's largest allocations after the design matrix.
        let mut excluded: Vec<Range<usize>> = Vec::new();
        let mut scored: Vec<Range<usize>> = Vec::new();
        for (_, range) in &samples.series {
            let mut in_block = range.clone().filter(|&r| block_of[r] == block);
            let Some(first) = in_block.next() else {
                continue;
            };
            let last = in_block.next_back().unwrap_or(first);
            let (from, to) = (samples.origins[first], samples.origins[last]);
            let start = range
                .clone()
                .find(|&r| samples.origins[r] + horizon > from)
                .unwrap_or(range.end);
            let end = match forward {
                true => range.end,
                false => (start..range.end)
                    .find(|&r| samples.origins[r] >= to + horizon)
                    .unwrap_or(range.end),
            };
            excluded.push(start..end);
            scored.push(first..last + 1);
        }
        if scored.is_empty() {
            continue;
        }
        if rows - excluded.iter().map(Range::len).sum::<usize>() < min_rows {
            // Too little left to fit on without this block: its origins stay unjudged.
            for r in scored.iter().flat_map(Range::clone) {
                block_of[r] = NOT_HELD_OUT;
            }
            continue;
        }
        let (mut gram, mut xty) = full.clone();
        for run in &excluded {
            let (gram_out, xty_out) = normal_equations_of_f32(
                samples.x.slice(s![run.clone(), ..]),
                samples.y.slice(s![run.clone(), ..]),
            );
            gram -= &gram_out;
            xty -= &xty_out;
        }
        for (ridge, out) in ridges.iter().zip(&mut held_out) {
            let weights = ridge.solve_normal(&gram, &xty).ok()?;
            for run in &scored {
                let predicted = predict_f32(samples.x.slice(s![run.clone(), ..]), &weights);
                for (r, predicted) in run.clone().zip(predicted.rows()) {
                    for h in 0..horizon {
                        if samples.observed[r * horizon + h] {
                            out.squared_error += (samples.y[[r, h]] - predicted[h]).powi(2);
                        }
                    }
                    out.forecasts.row_mut(r).assign(&predicted);
                }
            }
        }
    }
    if block_of.iter().all(|&b| b == NOT_HELD_OUT) {
        return None;
    }
    Some((held_out, block_of))
}

/// A row no held-out model forecast (too little before it to fit on).
pub(super) const NOT_HELD_OUT: usize = usize::MAX;

/// Which forecast a series' model makes.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Chosen {
    /// Per horizon step `[a, c, b]`: seasonal naive + a × (regression − seasonal naive) +
    /// c × (last value − seasonal naive) + b × seasonal naive's drift.
    Blend {
        weights: Vec<[f64; 3]>,
    },
    SeasonalNaive,
    /// The last value.
    Naive,
}

/// The held-out verdict on one series.
#[derive(Clone, Debug)]
pub(super) struct Verdict {
    pub chosen: Chosen,
    /// Errors (in model space) of the chosen method per horizon step.
    pub residuals: Vec<StepErrors>,
    /// Mean absolute held-out error of (blend, seasonal naive, last value), in demand units.
    pub errors: [f64; 3],
    /// Held-out origins the verdict rests on.
    pub origins: usize,
}

/// The held-out errors of one horizon step: their order statistics, which answer any quantile,
/// or only the two quantiles of the band a model will be asked for (`keep_band`), exactly as
/// the order statistics answered them: 16 bytes instead of 404 per step.
#[derive(Clone, Debug)]
pub(super) enum StepErrors {
    All(OrderStatistics),
    Band {
        quantile: f64,
        lower: f64,
        upper: f64,
    },
}

impl StepErrors {
    /// The errors at `1 - quantile` and at `quantile`; `None` when this quantile was not kept.
    pub fn band(&self, quantile: f64) -> Option<(f64, f64)> {
        match self {
            StepErrors::All(errors) => Some((
                errors.quantile(1.0 - quantile).unwrap_or(0.0),
                errors.quantile(quantile).unwrap_or(0.0),
            )),
            StepErrors::Band {
                quantile: kept,
                lower,
                upper,
            } => (kept.to_bits() == quantile.to_bits()).then_some((*lower, *upper)),
        }
    }

    /// Keep only what `band(quantile)` answers.
    pub fn keep_band(&mut self, quantile: f64) {
        if let Some((lower, upper)) = self.band(quantile) {
            *self = StepErrors::Band {
                quantile,
                lower,
                upper,
            };
        }
    }
}

/// One held-out point of a series: step, block, and the target and forecasts in model space
/// (relative to the level at the origin).
struct Point {
    h: usize,
    block: usize,
    /// The target is fitted on (not a clipped spike): it may set the blend's weights.
    fitted: bool,
    level: f64,
    /// The target the model is fitted on (a clipped spike replaced), and the value observed.
    target: f64,
    actual: f64,
    regression: f64,
    seasonal: f64,
    last: f64,
    drift: f64,
}

/// Least-squares sums of `target - seasonal = a (regression - seasonal) + c (last - seasonal)
/// + b drift`.
#[derive(Clone, Copy, Default)]
struct BlendSums {
    gram: [[f64; 3]; 3],
    rhs: [f64; 3],
}

impl BlendSums {
    fn add(&mut self, p: &Point, with_last: bool) {
        let x = [
            p.regression - p.seasonal,
            if with_last { p.last - p.seasonal } else { 0.0 },
            p.drift,
        ];
        let e = p.target - p.seasonal;
        for i in 0..3 {
            for j in 0..3 {
                self.gram[i][j] += x[i] * x[j];
            }
            self.rhs[i] += x[i] * e;
        }
    }

    fn minus(&self, other: &Self) -> Self {
        let mut out = *self;
        for i in 0..3 {
            for j in 0..3 {
                out.gram[i][j] -= other.gram[i][j];
            }
            out.rhs[i] -= other.rhs[i];
        }
        out
    }

    /// The weights `[a, c, b]` that fit best with each within [0, 1]: a blend never
    /// extrapolates beyond its members. Every way of holding some weights at a bound is
    /// tried (27 small systems), so the optimum of the box is found exactly.
    fn weights(&self) -> [f64; 3] {
        let g = &self.gram;
        let trace = g[0][0] + g[1][1] + g[2][2];
        let objective = |w: &[f64; 3]| {
            let mut v = 0.0;
            for i in 0..3 {
                for j in 0..3 {
                    v += w[i] * g[i][j] * w[j];
                }
                v -= 2.0 * w[i] * self.rhs[i];
            }
            v
        };
        let mut best: Option<([f64; 3], f64)> = None;
        // The unconstrained optimum first: when it lies in the box it is the box's optimum
        // (the objective is convex), and the 26 other cases need not be tried.
        for code in 0..27usize {
            // Each weight: 0 free, 1 held at 0, 2 held at 1.
            let state = [code % 3, (code / 3) % 3, code / 9];
            let mut w = [0.0; 3];
            let free: Vec<usize> = (0..3).filter(|&i| state[i] == 0).collect();
            for i in 0..3 {
                if state[i] == 2 {
                    w[i] = 1.0;
                }
            }
            if !free.is_empty() {
                let k = free.len();
                let mut m = [[0.0f64; 4]; 3];
                for (r, &i) in free.iter().enumerate() {
                    for (c, &j) in free.iter().enumerate() {
                        m[r][c] = g[i][j] + if r == c { 1e-9 * trace + 1e-300 } else { 0.0 };
                    }
                    let fixed: f64 = (0..3)
                        .filter(|j| state[*j] != 0)
                        .map(|j| g[i][j] * w[j])
                        .sum();
                    m[r][k] = self.rhs[i] - fixed;
                }
                let Some(solved) = solve_small(&mut m, k) else {
                    continue;
                };
                if solved[..k].iter().any(|v| !(0.0..=1.0).contains(v)) {
                    continue;
                }
                for (r, &i) in free.iter().enumerate() {
                    w[i] = solved[r];
                }
            }
            if code == 0 {
                best = Some((w, 0.0));
                break;
            }
            let value = objective(&w);
            if best.is_none_or(|(_, b)| value < b) {
                best = Some((w, value));
            }
        }
        let mut w = best.map_or([1.0, 0.0, 0.0], |(w, _)| w);
        // Regression and last value together weigh at most 1; seasonal naive takes the rest.
        let sum = w[0] + w[1];
        if sum > 1.0 {
            w[0] /= sum;
            w[1] /= sum;
        }
        w
    }
}

/// Gaussian elimination of a `k x k` system (augmented in column `k`), k <= 3.
fn solve_small(m: &mut [[f64; 4]; 3], k: usize) -> Option<[f64; 3]> {
    for col in 0..k {
        let pivot = (col..k).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() < 1e-300 {
            return None;
        }
        m.swap(col, pivot);
        let pivot_row = m[col];
        for (row, values) in m.iter_mut().enumerate().take(k) {
            if row != col {
                let f = values[col] / pivot_row[col];
                for (v, p) in values[col..=k].iter_mut().zip(&pivot_row[col..=k]) {
                    *v -= f * p;
                }
            }
        }
    }
    let mut out = [0.0; 3];
    for i in 0..k {
        out[i] = m[i][k] / m[i][i];
        if !out[i].is_finite() {
            return None;
        }
    }
    Some(out)
}

/// What a forecaster's settings say about judging.
pub(super) struct Judging {
    pub blocks: usize,
    pub blend: bool,
    pub select: bool,
    /// Share of the most recent held-out origins the choice and the band rest on.
    pub recent_share: f64,
    /// The last value is a member of the blend.
    pub blend_last: bool,
    /// Choose by relative errors as well as absolute ones.
    pub relative_too: bool,
    /// Naive is a candidate only for horizons up to this share of the main period.
    pub naive_up_to: f64,
}

/// The held-out points of one series, produced again for each pass over them: kept in a
/// vector they were a fit's largest allocation (4,000 origins x 30 steps x 80 bytes).
struct HeldOutPoints<'a> {
    samples: &'a Samples,
    forecasts: &'a Array2<f64>,
    block_of: &'a [usize],
    prepared: &'a Prepared,
    period: usize,
    /// Held-out rows with their origin's level and drift base, computed once.
    origins: Vec<(usize, f64, Option<f64>)>,
    /// The series as each origin saw it (`Prepared::view_at`), reused by every pass.
    view: Vec<f64>,
}

impl<'a> HeldOutPoints<'a> {
    fn new(
        samples: &'a Samples,
        forecasts: &'a Array2<f64>,
        block_of: &'a [usize],
        range: Range<usize>,
        prepared: &'a Prepared,
        layout: &Layout,
    ) -> Self {
        let period = layout.main_period;
        let mut view = prepared.z.clone();
        let origins = range
            .filter(|&r| block_of[r] != NOT_HELD_OUT)
            .map(|r| {
                let t = samples.origins[r];
                // As the origin saw the series (its last two points uncleaned), like the rows
                // fitted.
                prepared.view_at(t, &mut view);
                let level = layout.level(&view, t);
                let before = season_before(&view, t, period);
                prepared.restore(t, &mut view);
                (r, level, before)
            })
            .collect();
        Self {
            samples,
            forecasts,
            block_of,
            prepared,
            period,
            origins,
            view,
        }
    }

    /// Calls `visit` with every held-out point whose actual value is known, in row order.
    fn for_each(&mut self, mut visit: impl FnMut(&Point)) {
        let horizon = self.samples.y.ncols();
        let view = &mut self.view;
        for &(r, level, before) in &self.origins {
            let t = self.samples.origins[r];
            self.prepared.view_at(t, view);
            for h in 0..horizon {
                let actual = self.prepared.actual[t + 1 + h] - level;
                if !actual.is_finite() {
                    continue;
                }
                visit(&Point {
                    h,
                    block: self.block_of[r],
                    fitted: self.samples.observed[r * horizon + h],
                    level,
                    target: self.samples.y[[r, h]],
                    actual,
                    regression: self.forecasts[[r, h]],
                    seasonal: seasonal_naive_z(view, t, h, self.period, level),
                    last: view[t] - level,
                    drift: season_drift(before, h, self.period, level),
                });
            }
            self.prepared.restore(t, view);
        }
    }
}

/// The verdict on the series whose rows are `range`, from the held-out `forecasts`.
pub(super) fn judge(
    samples: &Samples,
    forecasts: &Array2<f64>,
    block_of: &[usize],
    range: Range<usize>,
    prepared: &Prepared,
    layout: &Layout,
    judging: &Judging,
) -> Option<Verdict> {
    let horizon = samples.y.ncols();
    let period = layout.main_period;
    let recent = ((range.len() as f64 * judging.recent_share.clamp(0.0, 1.0)).ceil() as usize)
        .clamp(1, range.len().max(1));
    let range = range.end.saturating_sub(recent).max(range.start)..range.end;
    let origins = range.len();
    let mut points = HeldOutPoints::new(samples, forecasts, block_of, range, prepared, layout);
    let blocks = judging.blocks.max(2);
    let mut sums = vec![vec![BlendSums::default(); horizon]; blocks + 1];
    let mut count = 0usize;
    points.for_each(|p| {
        count += 1;
        if p.fitted {
            sums[p.block.min(blocks - 1)][p.h].add(p, judging.blend_last);
            sums[blocks][p.h].add(p, judging.blend_last);
        }
    });
    if count == 0 {
        // Nothing held out to check the regression against: not a verdict.
        return None;
    }
    let weights_of = |s: &BlendSums| {
        if judging.blend {
            s.weights()
        } else {
            [1.0, 0.0, 0.0]
        }
    };
    let back = |v: f64| (v.exp() - prepared.offset).max(0.0);
    let mut errors = [0.0f64; 3];
    let mut relative = [0.0f64; 3];
    // The blend each block is scored with: fitted on the other blocks.
    let cross_fitted: Vec<Vec<[f64; 3]>> = (0..blocks)
        .map(|k| {
            (0..horizon)
                .map(|h| weights_of(&sums[blocks][h].minus(&sums[k][h])))
                .collect()
        })
        .collect();
    let blended = |p: &Point| {
        let w = cross_fitted[p.block.min(blocks - 1)][p.h];
        p.seasonal
            + w[0] * (p.regression - p.seasonal)
            + w[1] * (p.last - p.seasonal)
            + w[2] * p.drift
    };
    points.for_each(|p| {
        let actual = back(p.level + p.actual);
        for (c, forecast) in [blended(p), p.seasonal, p.last].into_iter().enumerate() {
            let predicted = back(p.level + forecast);
            errors[c] += (actual - predicted).abs();
            if actual + predicted > 0.0 {
                relative[c] += 2.0 * (actual - predicted).abs() / (actual + predicted);
            }
        }
    });
    let n = count as f64;
    for e in errors.iter_mut().chain(relative.iter_mut()) {
        *e /= n;
    }
    // Each candidate's absolute and relative errors, both against seasonal naive's: a method
    // is better when it is better on average over the two (absolute errors weigh the peaks a
    // capacity plan is for, relative errors every hour of the day alike).
    let score = |c: usize| {
        if judging.relative_too {
            let ratio = |e: &[f64; 3]| if e[1] > 0.0 { e[c] / e[1] } else { 1.0 };
            0.5 * (ratio(&errors) + ratio(&relative))
        } else {
            errors[c]
        }
    };
    let naive_allowed = horizon as f64 <= judging.naive_up_to * period.max(1) as f64;
    let best_simple = if naive_allowed && score(2) < score(1) {
        2
    } else {
        1
    };
    let pick = if !judging.select || score(0) <= score(best_simple) {
        0
    } else {
        best_simple
    };
    // The band: the chosen method's errors.
    let mut per_step = vec![Vec::with_capacity(count / horizon.max(1) + 1); horizon];
    points.for_each(|p| {
        let forecast = match pick {
            0 => blended(p),
            1 => p.seasonal,
            _ => p.last,
        };
        per_step[p.h].push(p.actual - forecast);
    });
    let chosen = match pick {
        0 => Chosen::Blend {
            weights: (0..horizon).map(|h| weights_of(&sums[blocks][h])).collect(),
        },
        1 => Chosen::SeasonalNaive,
        _ => Chosen::Naive,
    };
    Some(Verdict {
        chosen,
        residuals: band(per_step).into_iter().map(StepErrors::All).collect(),
        errors,
        origins,
    })
}

/// The errors of each step, pooled with the neighbouring steps' while fewer than
/// `MIN_BAND_ERRORS`.
fn band(per_step: Vec<Vec<f64>>) -> Vec<OrderStatistics> {
    let horizon = per_step.len();
    (0..horizon)
        .map(|h| {
            let mut width = 0;
            let mut pooled: Vec<f64> = per_step[h].clone();
            while pooled.len() < MIN_BAND_ERRORS && width < horizon {
                width += 1;
                if h >= width {
                    pooled.extend(&per_step[h - width]);
                }
                if h + width < horizon {
                    pooled.extend(&per_step[h + width]);
                }
            }
            OrderStatistics::new(pooled, BAND_POINTS)
        })
        .collect()
}

/// Seasonal naive in model space: the value one (or more) main periods before the target.
pub(super) fn seasonal_naive_z(z: &[f64], t: usize, h: usize, period: usize, level: f64) -> f64 {
    let period = period.max(1);
    let back = period * (h + 1).div_ceil(period);
    z[t + 1 + h - back] - level
}

/// The mean of the season before the last one, as origin `t` sees it: what the drift of
/// [`season_drift`] is measured from. `None` before two full seasons. It does not depend on the
/// horizon step, so it is computed once per origin (a season of 1,440 points summed for each of
/// 30 steps of 4,000 origins was most of a fit's time).
pub(super) fn season_before(z: &[f64], t: usize, period: usize) -> Option<f64> {
    let period = period.max(1);
    (t >= 2 * period)
        .then(|| z[t + 1 - 2 * period..=t - period].iter().sum::<f64>() / period as f64)
}

/// The level change over the last season (`before`: [`season_before`]), carried forward as
/// many seasons as seasonal naive looks back for step `h`.
pub(super) fn season_drift(before: Option<f64>, h: usize, period: usize, level: f64) -> f64 {
    let Some(before) = before else {
        return 0.0;
    };
    let seasons = (h + 1).div_ceil(period.max(1)) as f64;
    seasons * (level - before)
}
