//! Runs argmin's L-BFGS on an [`Objective`] and decides whether the end point is accepted.
//!
//! A fit is accepted only when everything is finite, the Hessian at the end point is positive
//! definite (a true maximum: a flat or saddle end point means the data do not determine the
//! parameters), and a Newton step from there predicts that no parameter is further than
//! [`FitOptions::parameter_tolerance`](crate::FitOptions::parameter_tolerance) (relative) from the exact optimum. Otherwise it is an
//! error saying which test failed, and the caller keeps the previous model version. The same
//! Hessian gives the standard errors in the report.

use std::cell::Cell;

use argmin::core::{CostFunction, Error as ArgminError, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

use crate::curvature::Curvature;
use crate::error::{ClvError, Result};
use crate::fit::FitOptions;
use crate::objective::Objective;

/// Where a minimisation ended.
pub(crate) struct Outcome<const N: usize> {
    pub(crate) theta: [f64; N],
    pub(crate) mean_cost: f64,
    pub(crate) gradient_norm: f64,
    pub(crate) optimum_distance: f64,
    /// Standard errors of the log-parameters.
    pub(crate) standard_errors: [f64; N],
    pub(crate) iterations: u64,
}

/// An objective evaluated at a point: the point, the cost, the gradient.
type Evaluation<const N: usize> = ([f64; N], f64, [f64; N]);

/// argmin's view of an objective: cost and gradient come from one evaluation, cached for the
/// point argmin asks about next (it asks for both at every line-search point).
struct Problem<'a, O, const N: usize> {
    objective: &'a O,
    last: Cell<Option<Evaluation<N>>>,
}

impl<O: Objective<N>, const N: usize> Problem<'_, O, N> {
    fn evaluate(&self, param: &[f64]) -> Result<(f64, [f64; N]), ArgminError> {
        let theta: [f64; N] = param
            .try_into()
            .map_err(|_| ArgminError::msg(format!("expected {N} parameters")))?;
        if let Some((at, cost, gradient)) = self.last.get()
            && at == theta
        {
            return Ok((cost, gradient));
        }
        let (cost, gradient) = self.objective.evaluate(&theta);
        if !cost.is_finite() || gradient.iter().any(|g| !g.is_finite()) {
            return Err(ArgminError::msg(format!(
                "non-finite likelihood at log-parameters {theta:?}"
            )));
        }
        self.last.set(Some((theta, cost, gradient)));
        Ok((cost, gradient))
    }
}

impl<O: Objective<N>, const N: usize> CostFunction for Problem<'_, O, N> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, param: &Self::Param) -> Result<f64, ArgminError> {
        Ok(self.evaluate(param)?.0)
    }
}

impl<O: Objective<N>, const N: usize> Gradient for Problem<'_, O, N> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, param: &Self::Param) -> Result<Vec<f64>, ArgminError> {
        Ok(self.evaluate(param)?.1.to_vec())
    }
}

/// Runs L-BFGS from `theta` and accepts the result only if it converged (see the module docs).
pub(crate) fn minimise<O: Objective<N>, const N: usize>(
    objective: &O,
    theta: [f64; N],
    options: &FitOptions,
) -> Result<Outcome<N>> {
    let optimiser = |e: ArgminError| ClvError::Optimiser(e.to_string());
    let (start_cost, start_gradient) = objective.evaluate(&theta);
    if !start_cost.is_finite() || start_gradient.iter().any(|g| !g.is_finite()) {
        return Err(ClvError::NonFinite(format!(
            "likelihood at the starting log-parameters {theta:?} is {start_cost}"
        )));
    }
    // argmin stops on a small gradient, or when an iteration gains less than the rounding
    // noise of a sum over many customers (about 1e-13 of the cost): past that, line searches
    // only chase noise. Whether the end point is accepted is decided below from the
    // curvature, not by argmin.
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 7)
        .with_tolerance_grad(options.gradient_tolerance)
        .map_err(optimiser)?
        .with_tolerance_cost(1e-13 * (1.0 + start_cost.abs()))
        .map_err(optimiser)?;
    let problem = Problem {
        objective,
        last: Cell::new(None),
    };
    let result = Executor::new(problem, solver)
        .configure(|state| {
            state
                .param(theta.to_vec())
                .max_iters(options.max_iterations)
        })
        .run()
        .map_err(optimiser)?;
    let state = result.state();
    let iterations = state.get_iter();
    let stopped = state
        .get_termination_reason()
        .map_or("not terminated", |r| r.text())
        .to_owned();
    let best: [f64; N] = state
        .get_best_param()
        .and_then(|p| p.as_slice().try_into().ok())
        .ok_or_else(|| ClvError::Optimiser("no parameters returned".to_owned()))?;
    let (mean_cost, gradient) = objective.evaluate(&best);
    let gradient_norm = gradient.iter().map(|g| g * g).sum::<f64>().sqrt();
    if !mean_cost.is_finite() || !gradient_norm.is_finite() || best.iter().any(|t| !t.is_finite()) {
        return Err(ClvError::NonFinite(format!(
            "fit ended at log-parameters {best:?} with cost {mean_cost} and gradient norm \
             {gradient_norm}"
        )));
    }
    let Some(curvature) = Curvature::at(objective, &best) else {
        let reason = format!(
            "the likelihood is not locally concave at the end point (gradient norm \
             {gradient_norm:e}; optimiser stopped: {stopped})"
        );
        return Err(if gradient_norm <= options.gradient_tolerance {
            ClvError::Unidentified(reason)
        } else {
            ClvError::NotConverged { iterations, reason }
        });
    };
    let newton_step = curvature.solve(&gradient);
    if newton_step.iter().any(|step| !step.is_finite()) {
        return Err(ClvError::NonFinite(format!(
            "Newton step {newton_step:?} from log-parameters {best:?}"
        )));
    }
    let optimum_distance = newton_step
        .iter()
        .fold(0.0_f64, |worst, step| worst.max(step.abs()));
    if optimum_distance > options.parameter_tolerance {
        return Err(ClvError::NotConverged {
            iterations,
            reason: format!(
                "parameters still up to {optimum_distance:e} (relative) from the optimum, above \
                 the tolerance {:e} (gradient norm {gradient_norm:e}; optimiser stopped: \
                 {stopped})",
                options.parameter_tolerance
            ),
        });
    }
    let n = objective.customers();
    let standard_errors = curvature
        .inverse_diagonal()
        .map(|variance| (variance / n).sqrt());
    Ok(Outcome {
        theta: best,
        mean_cost,
        gradient_norm,
        optimum_distance,
        standard_errors,
        iterations,
    })
}
