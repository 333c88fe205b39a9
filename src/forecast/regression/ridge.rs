//! Ridge regression with many targets, as a linfa algorithm.
//!
//! `Ridge` implements `linfa::traits::Fit` on a multi-target `Dataset`; the normal equations
//! are factored by `linfa-linalg`'s Cholesky. The forecaster also solves from normal equations
//! it has already summed (the whole history minus a held-out block), so solving is exposed on
//! its own.

use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_linalg::cholesky::CholeskyInplace;
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
pub fn normal_equations(x: ArrayView2<f64>, y: ArrayView2<f64>) -> (Array2<f64>, Array2<f64>) {
    (x.t().dot(&x), x.t().dot(&y))
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
