//! The curvature of an objective at a candidate optimum: how a fit is judged converged, and
//! where the standard errors come from.
//!
//! The Hessian is central differences of the analytic gradient (2N evaluations). At a true
//! maximum of the likelihood it is positive definite (for the negative log-likelihood); the
//! Newton step `H⁻¹g` then says how far the parameters still are from the exact optimum, in
//! log units, i.e. as relative errors, which is a meaningful stopping test even along the
//! flat, correlated directions where the gradient alone says little. Its inverse over the
//! number of customers is the asymptotic covariance of the log-parameters.

use crate::objective::Objective;

/// Step of the central differences, in log-parameter units (relative steps of 0.01%).
const STEP: f64 = 1e-4;

/// A symmetric positive definite matrix, factored.
pub(crate) struct Curvature<const N: usize> {
    /// Lower-triangular `L` with `H = L Lᵀ`.
    lower: [[f64; N]; N],
}

impl<const N: usize> Curvature<N> {
    /// The Hessian of `objective` at `theta`, factored; `None` when it is not positive definite
    /// (a saddle, a flat direction, or not a finite matrix).
    pub(crate) fn at<O: Objective<N>>(objective: &O, theta: &[f64; N]) -> Option<Self> {
        let mut hessian = [[0.0; N]; N];
        for (i, row) in hessian.iter_mut().enumerate() {
            let (mut up, mut down) = (*theta, *theta);
            up[i] += STEP;
            down[i] -= STEP;
            let (g_up, g_down) = (objective.evaluate(&up).1, objective.evaluate(&down).1);
            for (j, cell) in row.iter_mut().enumerate() {
                *cell = (g_up[j] - g_down[j]) / (2.0 * STEP);
            }
        }
        Self::factor(&hessian)
    }

    /// Cholesky factorisation of the symmetric part of `matrix`.
    fn factor(matrix: &[[f64; N]; N]) -> Option<Self> {
        let mut lower = [[0.0; N]; N];
        for i in 0..N {
            for j in 0..=i {
                let symmetric = 0.5 * (matrix[i][j] + matrix[j][i]);
                let dot: f64 = (0..j).map(|k| lower[i][k] * lower[j][k]).sum();
                if i == j {
                    let pivot = symmetric - dot;
                    if !(pivot.is_finite() && pivot > 0.0) {
                        return None;
                    }
                    lower[i][i] = pivot.sqrt();
                } else {
                    lower[i][j] = (symmetric - dot) / lower[j][j];
                }
            }
        }
        Some(Self { lower })
    }

    /// Solves `H x = rhs`.
    pub(crate) fn solve(&self, rhs: &[f64; N]) -> [f64; N] {
        let l = &self.lower;
        let mut y = [0.0; N];
        for i in 0..N {
            let dot: f64 = (0..i).map(|k| l[i][k] * y[k]).sum();
            y[i] = (rhs[i] - dot) / l[i][i];
        }
        let mut x = [0.0; N];
        for i in (0..N).rev() {
            let dot: f64 = (i + 1..N).map(|k| l[k][i] * x[k]).sum();
            x[i] = (y[i] - dot) / l[i][i];
        }
        x
    }

    /// The diagonal of `H⁻¹`.
    pub(crate) fn inverse_diagonal(&self) -> [f64; N] {
        std::array::from_fn(|i| {
            let mut unit = [0.0; N];
            unit[i] = 1.0;
            self.solve(&unit)[i]
        })
    }
}
