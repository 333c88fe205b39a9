//! Accuracy measures: sMAPE, MASE, MSIS and band coverage, as M4 defines them.

use super::*;

/// sMAPE on the 0-200 scale over the points where the actual value is known.
pub fn smape(actual: &[f64], forecast: &[f64]) -> f64 {
    let mut sum = 0.0;
    let mut n = 0usize;
    for (&a, &f) in actual.iter().zip(forecast) {
        if !a.is_finite() || !f.is_finite() {
            continue;
        }
        let denom = a.abs() + f.abs();
        // Both zero: a perfect forecast of nothing.
        if denom > 0.0 {
            sum += 200.0 * (a - f).abs() / denom;
        }
        n += 1;
    }
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// Mean absolute error of the seasonal naive forecast with period `m` inside `history`.
pub fn seasonal_naive_scale(history: &[f64], m: usize) -> f64 {
    let mut sum = 0.0;
    let mut n = 0usize;
    for i in m..history.len() {
        let d = history[i] - history[i - m];
        if d.is_finite() {
            sum += d.abs();
            n += 1;
        }
    }
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// MASE: mean absolute error over the in-sample seasonal naive error.
pub fn mase(actual: &[f64], forecast: &[f64], scale: f64) -> f64 {
    let mut sum = 0.0;
    let mut n = 0usize;
    for (&a, &f) in actual.iter().zip(forecast) {
        if a.is_finite() && f.is_finite() {
            sum += (a - f).abs();
            n += 1;
        }
    }
    if n == 0 || scale.is_nan() || scale <= 0.0 {
        f64::NAN
    } else {
        sum / n as f64 / scale
    }
}

/// (points inside the band, points with a known actual value).
pub(super) fn band_hits(actual: &[f64], forecast: &Forecast) -> (usize, usize) {
    let mut inside = 0;
    let mut total = 0;
    for (i, &a) in actual.iter().enumerate() {
        if !a.is_finite() {
            continue;
        }
        total += 1;
        if a >= forecast.lower[i] && a <= forecast.upper[i] {
            inside += 1;
        }
    }
    (inside, total)
}

/// MSIS, M4's interval score: the band's width plus, for every value outside it, 2/alpha times
/// how far outside, scaled like MASE; alpha = 2 (1 - q) for the band [1-q, q]. Lower is better:
/// a band is rewarded for being narrow and punished for every miss, so neither a too wide nor a
/// too narrow band scores well.
pub fn msis(actual: &[f64], forecast: &Forecast, scale: f64) -> f64 {
    let alpha = 2.0 * (1.0 - forecast.quantile);
    let mut sum = 0.0;
    let mut n = 0usize;
    for ((&a, &lo), &hi) in actual.iter().zip(&forecast.lower).zip(&forecast.upper) {
        if !a.is_finite() {
            continue;
        }
        sum += (hi - lo) + 2.0 / alpha * ((lo - a).max(0.0) + (a - hi).max(0.0));
        n += 1;
    }
    if n == 0 || scale.is_nan() || scale <= 0.0 || alpha <= 0.0 {
        f64::NAN
    } else {
        sum / n as f64 / scale
    }
}

pub(super) fn mean(values: &[f64]) -> f64 {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        f64::NAN
    } else {
        finite.iter().sum::<f64>() / finite.len() as f64
    }
}
