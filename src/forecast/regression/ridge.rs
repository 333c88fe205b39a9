//! Ridge regression with many targets, as a linfa algorithm.
//!
//! `Ridge` implements `linfa::traits::Fit` on a multi-target `Dataset`; the normal equations
//! are factored by `linfa-linalg`'s Cholesky. The forecaster also solves from normal equations
//! it has already summed (the whole history minus a held-out block), so solving is exposed on
//! its own.

use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_linalg::cholesky::CholeskyInplace;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, Axis, s};

/// Ridge regression with one weight column per target; the intercept is a feature of ones.
/// With several penalties it fits one model per penalty on the same normal equations and
/// averages them (a cheap ensemble: the mean of the weights gives the mean prediction).
#[derive(Clone, Debug)]
pub struct Ridge {
    /// Penalties relative to the mean diagonal of `X'X`, so they do not depend on scale or size.
    pub alphas: Vec<f64>,
}

#[derive(Clone, Debug)]
pub struct FittedRidge {
    /// Shape `(features, targets)`.
    pub weights: Array2<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RidgeError {
    #[error(transparent)]
    Linfa(#[from] linfa::error::Error),
    #[error("ridge normal equations could not be solved: {0}")]
    Solve(String),
}

impl Fit<Array2<f64>, Array2<f64>, RidgeError> for Ridge {
    type Object = FittedRidge;

    fn fit(
        &self,
        dataset: &DatasetBase<Array2<f64>, Array2<f64>>,
    ) -> Result<FittedRidge, RidgeError> {
        let (gram, xty) = normal_equations(dataset.records().view(), dataset.targets.view());
        self.solve_normal(&gram, &xty)
            .map(|weights| FittedRidge { weights })
    }
}

/// `X'X` and `X'Y` of a set of rows.
fn normal_equations(x: ArrayView2<f64>, y: ArrayView2<f64>) -> (Array2<f64>, Array2<f64>) {
    (x.t().dot(&x), x.t().dot(&y))
}

/// Rows of `f32` features converted to `f64` at a time: the products are summed in `f64`
/// without an `f64` copy of the whole matrix.
const ROWS_AT_A_TIME: usize = 256;

/// `X'X` and `X'Y` of rows kept in `f32`, summed in `f64`.
pub fn normal_equations_of_f32(
    x: ArrayView2<f32>,
    y: ArrayView2<f64>,
) -> (Array2<f64>, Array2<f64>) {
    let mut gram = Array2::zeros((x.ncols(), x.ncols()));
    let mut xty = Array2::zeros((x.ncols(), y.ncols()));
    for (rows, targets) in x
        .axis_chunks_iter(Axis(0), ROWS_AT_A_TIME)
        .zip(y.axis_chunks_iter(Axis(0), ROWS_AT_A_TIME))
    {
        let rows = rows.mapv(f64::from);
        general_mat_mul(1.0, &rows.t(), &rows, 1.0, &mut gram);
        general_mat_mul(1.0, &rows.t(), &targets, 1.0, &mut xty);
    }
    (gram, xty)
}

/// `X W` for rows kept in `f32`, in `f64`.
pub fn predict_f32(x: ArrayView2<f32>, weights: &Array2<f64>) -> Array2<f64> {
    let mut out = Array2::zeros((x.nrows(), weights.ncols()));
    for (rows, mut predicted) in x
        .axis_chunks_iter(Axis(0), ROWS_AT_A_TIME)
        .zip(out.axis_chunks_iter_mut(Axis(0), ROWS_AT_A_TIME))
    {
        general_mat_mul(1.0, &rows.mapv(f64::from), weights, 0.0, &mut predicted);
    }
    out
}

impl Ridge {
    /// The weights for the normal equations `gram`, `xty`: the mean over the penalties.
    pub fn solve_normal(
        &self,
        gram: &Array2<f64>,
        xty: &Array2<f64>,
    ) -> Result<Array2<f64>, RidgeError> {
        if self.alphas.is_empty() {
            return Err(RidgeError::Solve("no ridge penalty configured".to_string()));
        }
        if gram.nrows() == 0 {
            return Err(RidgeError::Solve("no features".to_string()));
        }
        let mut sum = Array2::zeros(xty.raw_dim());
        for &alpha in &self.alphas {
            sum += &solve_ridge(gram.clone(), xty.clone(), alpha)?;
        }
        Ok(sum / self.alphas.len() as f64)
    }
}

fn solve_ridge(gram: Array2<f64>, xty: Array2<f64>, alpha: f64) -> Result<Array2<f64>, RidgeError> {
    let f = gram.nrows();
    let mean_diag = gram.diag().sum() / f as f64;
    let penalty = alpha * mean_diag + 1e-9 * mean_diag + 1e-12;
    let mut factor = gram;
    for i in 0..f {
        factor[[i, i]] += penalty;
    }
    factor
        .cholesky_inplace()
        .map_err(|e| RidgeError::Solve(e.to_string()))?;
    let mut weights = xty;
    substitute(&factor, &mut weights);
    if weights.iter().any(|w| !w.is_finite()) {
        return Err(RidgeError::Solve("non-finite weights".to_string()));
    }
    Ok(weights)
}

/// Solves `L L' W = B` in place for the lower Cholesky factor `L`, a row of `W` at a time: each
/// row is one dot product with the rows already solved, so all targets are solved together.
/// (`linfa-linalg`'s triangular solve works column by column and slices per element, which made
/// it most of the cost of a fit with many targets.)
fn substitute(factor: &Array2<f64>, weights: &mut Array2<f64>) {
    let f = factor.nrows();
    // Forward: L Y = B.
    for i in 0..f {
        let (solved, mut rest) = weights.view_mut().split_at(Axis(0), i);
        let mut row = rest.row_mut(0);
        if i > 0 {
            let known = factor.slice(s![i, ..i]).dot(&solved);
            row -= &known;
        }
        row /= factor[[i, i]];
    }
    // Backward: L' W = Y; row i of L' is column i of L.
    let upper = factor.t().as_standard_layout().into_owned();
    for i in (0..f).rev() {
        let (mut head, solved) = weights.view_mut().split_at(Axis(0), i + 1);
        let mut row = head.row_mut(i);
        if i + 1 < f {
            let known = upper.slice(s![i, i + 1..]).dot(&solved);
            row -= &known;
        }
        row /= factor[[i, i]];
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn rows_kept_in_f32_give_the_normal_equations_and_predictions_of_f64() {
        // 600 rows: two whole blocks of `ROWS_AT_A_TIME` and a part of one. Values that `f32`
        // holds exactly, so the sums must agree to rounding.
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let x = Array2::from_shape_fn((600, 7), |_| f64::from(rng.random_range(-64i32..64)) / 8.0);
        let y = Array2::from_shape_fn((600, 3), |_| rng.random_range(-1.0..1.0));
        let weights = Array2::from_shape_fn((7, 3), |_| rng.random_range(-1.0..1.0));
        let kept = x.mapv(|v| v as f32);
        let (gram, xty) = normal_equations_of_f32(kept.view(), y.view());
        let (expected_gram, expected_xty) = normal_equations(x.view(), y.view());
        let close = |a: &Array2<f64>, b: &Array2<f64>| {
            a.shape() == b.shape()
                && a.iter()
                    .zip(b)
                    .all(|(u, v)| (u - v).abs() <= 1e-9 * (1.0 + v.abs()))
        };
        assert!(close(&gram, &expected_gram));
        assert!(close(&xty, &expected_xty));
        assert!(close(&predict_f32(kept.view(), &weights), &x.dot(&weights)));
    }

    #[test]
    fn ridge_recovers_known_weights_through_linfa() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let x = Array2::from_shape_fn((200, 3), |(_, j)| {
            if j == 0 {
                1.0
            } else {
                rng.random_range(-1.0..1.0)
            }
        });
        let y = Array2::from_shape_fn((200, 2), |(i, k)| {
            if k == 0 {
                2.0 + 3.0 * x[[i, 1]]
            } else {
                -x[[i, 2]]
            }
        });
        let model = Ridge { alphas: vec![1e-8] }
            .fit(&DatasetBase::new(x, y))
            .unwrap();
        assert!((model.weights[[0, 0]] - 2.0).abs() < 1e-4);
        assert!((model.weights[[1, 0]] - 3.0).abs() < 1e-4);
        assert!((model.weights[[2, 1]] + 1.0).abs() < 1e-4);
    }
}
