//! The BG/NBD model (Fader, Hardie & Lee 2005, "Counting your customers the easy way"):
//! its likelihood and its per-customer closed forms.
//!
//! While alive, a customer buys as a Poisson process with rate `λ ~ Gamma(r, α)`; after each
//! repeat purchase it drops out for good with probability `p ~ Beta(a, b)`.

use serde::{Deserialize, Serialize};
use statrs::function::gamma::ln_gamma;

use crate::error::{ClvError, Result};
use crate::observation::Observation;
use crate::special::{expm1_over, ln1p_over, reduced_tail, softplus};

/// BG/NBD parameters, in the [`crate::TimeUnit`] of the data they were fitted on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BgNbdParams {
    /// Shape of the purchase-rate distribution.
    pub r: f64,
    /// Scale of the purchase-rate distribution (a time, in the fitting unit).
    pub alpha: f64,
    /// First shape of the dropout-probability distribution.
    pub a: f64,
    /// Second shape of the dropout-probability distribution.
    pub b: f64,
}

impl BgNbdParams {
    /// Checks that every parameter is finite and positive.
    pub fn validate(&self) -> Result<()> {
        let Self { r, alpha, a, b } = *self;
        if [r, alpha, a, b].iter().all(|v| v.is_finite() && *v > 0.0) {
            Ok(())
        } else {
            Err(ClvError::InvalidParams(format!(
                "BG/NBD needs finite positive r, alpha, a, b (got {self:?})"
            )))
        }
    }

    /// One customer's log-likelihood (FHL 2005, the likelihood of x, t_x, T), in log space.
    ///
    /// `ln L = ln Γ(r+x) − ln Γ(r) + r ln α + ln B(a, b+x) − ln B(a, b)
    ///        + ln[(α+T)^−(r+x) + 1{x>0}·a/(b+x−1)·(α+t_x)^−(r+x)]`,
    /// the bracket summed with log-sum-exp so that neither power underflows.
    pub fn log_likelihood(&self, customer: &Observation) -> f64 {
        let Self { r, alpha, a, b } = *self;
        let x = f64::from(customer.frequency);
        let head =
            ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln() + ln_gamma(a + b) + ln_gamma(b + x)
                - ln_gamma(b)
                - ln_gamma(a + b + x);
        let still_alive = -(r + x) * (alpha + customer.age).ln();
        if customer.frequency == 0 {
            return head + still_alive;
        }
        let dropped = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + customer.recency).ln();
        head + log_add_exp(still_alive, dropped)
    }

    /// The sum of [`BgNbdParams::log_likelihood`] over `customers`.
    pub fn total_log_likelihood(&self, customers: &[Observation]) -> f64 {
        customers.iter().map(|c| self.log_likelihood(c)).sum()
    }

    /// `P(alive | x, t_x, T)`: the probability that the customer has not dropped out by `T`.
    ///
    /// `1 / (1 + 1{x>0}·a/(b+x−1)·((α+T)/(α+t_x))^(r+x))` (FHL 2005 appendix, Fader, Hardie &
    /// Lee 2008 note), computed as a logistic of a log-odds so that the power cannot overflow.
    pub fn probability_alive(&self, customer: &Observation) -> f64 {
        if customer.frequency == 0 {
            return 1.0;
        }
        let Self { r, alpha, a, b } = *self;
        let x = f64::from(customer.frequency);
        let gap = (customer.age - customer.recency) / (alpha + customer.recency);
        let log_odds_dead = a.ln() - (b + x - 1.0).ln() + (r + x) * gap.ln_1p();
        (-softplus(log_odds_dead)).exp()
    }

    /// `E[Y(t) | x, t_x, T]`: expected purchases in the `t` time units after `T` (FHL 2005
    /// eq. 10).
    ///
    /// `(a+b+x−1)/(a−1) · [1 − ((α+T)/(α+T+t))^(r+x) ₂F₁(r+x, b+x; a+b+x−1; z)] · P(alive)`
    /// with `z = t/(α+T+t)`, the bracket evaluated without cancellation or overflow (through
    /// `ln P` and Euler's transformation; see the source).
    pub fn expected_purchases(&self, t: f64, customer: &Observation) -> Result<f64> {
        self.validate()?;
        customer
            .check()
            .map_err(|reason| ClvError::InvalidObservation { index: 0, reason })?;
        let alive = self.probability_alive(customer);
        let if_alive =
            self.expected_purchases_if_alive(t, f64::from(customer.frequency), customer.age)?;
        finite(if_alive * alive, "expected purchases")
    }

    /// `E[X(t)]`: expected repeat purchases in the first `t` time units of a new customer
    /// (FHL 2005 eq. 9), the conditional expectation at `x = t_x = T = 0`.
    pub fn expected_purchases_new(&self, t: f64) -> Result<f64> {
        self.validate()?;
        finite(
            self.expected_purchases_if_alive(t, 0.0, 0.0)?,
            "expected purchases",
        )
    }

    /// `(a+b+x−1)/(a−1) · [1 − P]` with `P = ((α+T)/(α+T+t))^(r+x) ₂F₁(r+x, b+x; c; z)`,
    /// `c = a+b+x−1`: the expected purchases in `(T, T+t]` of a customer alive at `T`.
    ///
    /// `P` is close to 1 for short horizons, so `1 − P` comes from `expm1` of `ln P`, and
    /// `ln P` from the series tail (never `1 + tail` then `ln`). Of Euler's two equivalent
    /// forms, `P = (1−z)^(a−1) ₂F₁(a+b−1−r, a−1; c; z)` is used when its terms share one sign
    /// (`a+b−1−r > −1`) or `a` is near 1, because it stays finite for large `x` and the
    /// reduced tail makes `a = 1` exact; otherwise the original form, whose terms are all
    /// positive, with a rescaled sum. `c ≤ 0` (only `x = 0` with `a + b ≤ 1`) uses the original
    /// form multiplied through by `c`, which removes the pole at `c = 0`.
    fn expected_purchases_if_alive(&self, t: f64, x: f64, age: f64) -> Result<f64> {
        if !(t.is_finite() && t >= 0.0) {
            return Err(ClvError::InvalidArgument(format!(
                "horizon must be finite and non-negative, got {t}"
            )));
        }
        if t == 0.0 {
            return Ok(0.0);
        }
        let Self { r, alpha, a, b } = *self;
        let c = a + b + x - 1.0;
        let a_minus_1 = a - 1.0;
        let z = t / (alpha + age + t);
        // ln(1 − z) = −ln(1 + t/(α+T)), exact even when z rounds to 1.
        let ln_1mz = -(t / (alpha + age)).ln_1p();
        let euler_a = a + b - 1.0 - r;
        if c <= 0.0 {
            // c·(1 − P)/(a−1) = [−c·expm1((r+x)·ln(1−z)) − (1−z)^(r+x)·(b+x)·V]/(a−1); a < 1 here.
            let v = reduced_tail(r + x, b + x, c, z)?.to_f64();
            let power = (r + x) * ln_1mz;
            return Ok((-c * power.exp_m1() - power.exp() * (b + x) * v) / a_minus_1);
        }
        if euler_a > -1.0 || a_minus_1.abs() < 0.05 {
            // ₂F₁ here is P·(1−z)^(1−a) > 0 (P > 0 always), so its log exists; rounding that
            // broke this would surface as a non-finite result, which callers reject.
            let u = reduced_tail(euler_a, a_minus_1, c, z)?.to_f64() / c;
            let g = ln_1mz + ln1p_over(a_minus_1, u);
            return Ok(-c * expm1_over(a_minus_1, g));
        }
        let v = reduced_tail(r + x, b + x, c, z)?;
        let ln_p = (r + x) * ln_1mz + softplus(((b + x) / c).ln() + v.ln());
        Ok(-c * ln_p.exp_m1() / a_minus_1)
    }
}

/// `ln(eᵘ + eᵛ)` without overflow or underflow.
pub(crate) fn log_add_exp(u: f64, v: f64) -> f64 {
    u.max(v) + softplus(-(u - v).abs())
}

fn finite(value: f64, what: &str) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ClvError::NonFinite(format!("{what} is {value}")))
    }
}
