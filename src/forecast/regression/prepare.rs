//! Preparing a series for the regression: clean, log, clip single-point spikes, fill gaps.

use super::super::Series;
use super::super::prep::{clean_value, quantile_sorted, sorted_finite};
use super::layout::EventIndex;

/// A series in model space.
#[derive(Clone, Debug)]
pub(super) struct Prepared {
    pub z: Vec<f64>,
    /// The point was a gap, a negative value (reset) or a clipped spike.
    pub missing: Vec<bool>,
    /// `z` as observed, spikes kept (NaN for gaps): what held-out forecasts are scored against,
    /// since a spike is demand the band must cover even though the model is not fitted on it.
    pub actual: Vec<f64>,
    pub offset: f64,
}

impl Prepared {
    /// `z` as a forecast made at origin `t` sees it, written into `view` (a copy of `z`):
    /// spikes are judged by the two points after them, so the last two points before an origin
    /// are never cleaned, exactly as `predict` sees the newest two points of a live history.
    /// Cleaning them with the values after `t` would let the held-out origins, and the rows
    /// the model is fitted on, look at their own targets.
    pub fn view_at(&self, t: usize, view: &mut [f64]) {
        let from = t.saturating_sub(1);
        for ((seen, &actual), &cleaned) in view[from..=t]
            .iter_mut()
            .zip(&self.actual[from..=t])
            .zip(&self.z[from..=t])
        {
            *seen = if actual.is_finite() { actual } else { cleaned };
        }
    }

    /// Undoes [`Prepared::view_at`] on `view`.
    pub fn restore(&self, t: usize, view: &mut [f64]) {
        let from = t.saturating_sub(1);
        view[from..=t].copy_from_slice(&self.z[from..=t]);
    }
}

/// Offset of the log transform: small against typical demand so seasonality stays
/// multiplicative, but keeps zeros finite.
fn log_offset(values: &[f64]) -> f64 {
    let positive: Vec<f64> = values
        .iter()
        .copied()
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    match super::super::prep::median(&positive) {
        Some(m) if m > 0.0 => 0.01 * m,
        _ => 1.0,
    }
}

/// Single points far from both neighbours (on the log scale: more than 50% and many robust
/// deviations away) are spikes or drops, not demand: they become gaps. Points inside known
/// events are kept, and so are the last two points, which have no right neighbours to judge by.
fn clip_spikes(
    z: &mut [f64],
    missing: &mut [bool],
    times: impl Fn(usize) -> i64,
    events: &EventIndex,
) {
    let n = z.len();
    if n < 8 {
        return;
    }
    let mut dev = vec![f64::NAN; n];
    let mut neigh = Vec::with_capacity(4);
    for i in 0..n.saturating_sub(2) {
        if !z[i].is_finite() {
            continue;
        }
        neigh.clear();
        let from = i.saturating_sub(2);
        for (j, &v) in z.iter().enumerate().take((i + 3).min(n)).skip(from) {
            if j != i && v.is_finite() {
                neigh.push(v);
            }
        }
        if neigh.len() < 2 {
            continue;
        }
        neigh.sort_by(f64::total_cmp);
        let med = if neigh.len() % 2 == 1 {
            neigh[neigh.len() / 2]
        } else {
            0.5 * (neigh[neigh.len() / 2 - 1] + neigh[neigh.len() / 2])
        };
        dev[i] = z[i] - med;
    }
    let abs_dev = sorted_finite(dev.iter().map(|d| d.abs()).collect());
    let mad = quantile_sorted(&abs_dev, 0.5).unwrap_or(0.0);
    let threshold = (8.0 * 1.4826 * mad).max(1.5f64.ln());
    for i in 0..n {
        if dev[i].is_finite() && dev[i].abs() > threshold && !events.contains(times(i)) {
            z[i] = f64::NAN;
            missing[i] = true;
        }
    }
}

/// `offset`: the log offset of the fitted model when preparing a live history for it (the
/// model's space must not move with the recent median); `None` when fitting.
pub(super) fn prepare(
    series: &Series,
    period: usize,
    events: &EventIndex,
    offset: Option<f64>,
) -> Option<Prepared> {
    let values: Vec<f64> = series.values.iter().map(|&v| clean_value(v)).collect();
    let offset = offset.unwrap_or_else(|| log_offset(&values));
    let mut z: Vec<f64> = values.iter().map(|v| (v + offset).ln()).collect();
    let mut missing: Vec<bool> = z.iter().map(|v| !v.is_finite()).collect();
    let actual = z.clone();
    clip_spikes(&mut z, &mut missing, |i| series.timestamp(i), events);
    let first = z.iter().position(|v| v.is_finite())?;
    let first_value = z[first];
    let mut last = first_value;
    for i in 0..z.len() {
        if z[i].is_finite() {
            last = z[i];
        } else if i < first {
            z[i] = first_value;
        } else if period > 1 && i >= period && !missing[i - period] {
            z[i] = z[i - period];
        } else {
            z[i] = last;
        }
    }
    Some(Prepared {
        z,
        missing,
        actual,
        offset,
    })
}
