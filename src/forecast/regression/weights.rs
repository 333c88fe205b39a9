//! A fitted model's weights as it keeps them for its lifetime: 16-bit floats, each horizon
//! step's column scaled by its largest weight.
//!
//! A model per online workload lives as long as the daemon, and its weights are most of it
//! (~100 features x 30 steps). Halves stored relative to their column's largest magnitude
//! keep 11 significant bits and cannot overflow, whatever the fit's scale; the dot product is
//! in `f64`. The backtests are unchanged to the digits they report (docs/daemon.md "Scale").

use half::f16;
use ndarray::{Array2, Axis};

#[derive(Debug)]
pub(super) struct StepWeights {
    /// Features x horizon steps, each column divided by its scale.
    values: Array2<f16>,
    /// Per horizon step, the largest magnitude of its weights (0 for a column of zeros).
    scales: Vec<f64>,
}

impl StepWeights {
    pub(super) fn of(weights: &Array2<f64>) -> Self {
        let scales: Vec<f64> = weights
            .axis_iter(Axis(1))
            .map(|column| column.iter().fold(0.0, |m: f64, w| m.max(w.abs())))
            .collect();
        let mut values = Array2::from_elem(weights.dim(), f16::ZERO);
        for ((row, step), w) in weights.indexed_iter() {
            if scales[step] > 0.0 {
                values[[row, step]] = f16::from_f64(w / scales[step]);
            }
        }
        Self { values, scales }
    }

    /// Each horizon step's prediction for one feature row.
    pub(super) fn predict(&self, row: &[f64]) -> Vec<f64> {
        self.values
            .axis_iter(Axis(1))
            .zip(&self.scales)
            .map(|(column, scale)| {
                scale
                    * row
                        .iter()
                        .zip(column)
                        .map(|(x, w)| x * w.to_f64())
                        .sum::<f64>()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact(weights: &Array2<f64>, row: &[f64]) -> Vec<f64> {
        weights
            .axis_iter(Axis(1))
            .map(|column| row.iter().zip(column).map(|(x, w)| x * w).sum())
            .collect()
    }

    proptest! {
        /// Whatever the fit's scale, a prediction is within 2^-11 of each weight's column
        /// maximum times the row's size of the exact one.
        #[test]
        fn predictions_stay_within_the_halves_precision(
            magnitude in -8i32..8,
            raw in proptest::collection::vec(-1.0f64..1.0, 24),
            row in proptest::collection::vec(-3.0f64..3.0, 8),
        ) {
            let scale = 10f64.powi(magnitude);
            let weights = Array2::from_shape_fn((8, 3), |(i, j)| raw[i * 3 + j] * scale);
            let kept = StepWeights::of(&weights);
            let bound: f64 = row.iter().map(|x| x.abs()).sum::<f64>() / 2048.0;
            for (step, (got, want)) in kept.predict(&row).iter().zip(exact(&weights, &row)).enumerate() {
                let column_max = kept.scales[step];
                prop_assert!((got - want).abs() <= bound * column_max + 1e-300,
                    "step {step}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn a_column_of_zeros_predicts_zero_and_huge_weights_do_not_overflow() {
        let weights = Array2::from_shape_vec((2, 2), vec![0.0, 1e9, 0.0, -3e9]).unwrap();
        let kept = StepWeights::of(&weights);
        let got = kept.predict(&[1.0, 1.0]);
        assert_eq!(got[0], 0.0);
        assert!((got[1] + 2e9).abs() < 2e9 / 1000.0, "{}", got[1]);
    }
}
