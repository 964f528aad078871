//! The Gamma-Gamma spend model (Fader & Hardie 2013, "The Gamma-Gamma model of monetary
//! value"; Colombo & Jiang 1999): its likelihood and the per-customer expected spend.
//!
//! Each transaction's value is `Gamma(p, ν)` around a customer's own mean, with
//! `ν ~ Gamma(q, γ)` across customers; spend is assumed independent of the purchase process.

use serde::{Deserialize, Serialize};
use statrs::function::gamma::ln_gamma;

use crate::error::{ClvError, Result};
use crate::observation::SpendObservation;

/// Gamma-Gamma parameters; `gamma` is in the money unit of the fitted means (minor units when
/// the means come from a [`crate::PurchaseSummary`]), `p` and `q` have no unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GammaGammaParams {
    /// Shape of the per-transaction spend distribution.
    pub p: f64,
    /// Shape of the distribution of customers' spend scales.
    pub q: f64,
    /// Scale of the distribution of customers' spend scales (a money amount).
    pub gamma: f64,
}

impl GammaGammaParams {
    /// Checks that every parameter is finite and positive.
    pub fn validate(&self) -> Result<()> {
        let Self { p, q, gamma } = *self;
        if [p, q, gamma].iter().all(|v| v.is_finite() && *v > 0.0) {
            Ok(())
        } else {
            Err(ClvError::InvalidParams(format!(
                "Gamma-Gamma needs finite positive p, q, gamma (got {self:?})"
            )))
        }
    }

    /// One repeat buyer's log-likelihood of its mean spend `z̄` over `x` repeat purchases:
    ///
    /// `ln Γ(px+q) − ln Γ(px) − ln Γ(q) + q ln γ + (px−1) ln z̄ + px ln x − (px+q) ln(γ + x z̄)`
    /// (the density of `z̄` given `x`, Fader & Hardie 2013).
    pub fn log_likelihood(&self, customer: &SpendObservation) -> f64 {
        let Self { p, q, gamma } = *self;
        let x = f64::from(customer.frequency);
        let px = p * x;
        let mean = customer.mean_spend;
        ln_gamma(px + q) - ln_gamma(px) - ln_gamma(q)
            + q * gamma.ln()
            + (px - 1.0) * mean.ln()
            + px * x.ln()
            - (px + q) * (gamma + x * mean).ln()
    }

    /// The sum of [`GammaGammaParams::log_likelihood`] over `customers`.
    pub fn total_log_likelihood(&self, customers: &[SpendObservation]) -> f64 {
        customers.iter().map(|c| self.log_likelihood(c)).sum()
    }

    /// `E[Z] = pγ/(q−1)`: the mean transaction value across customers, for a customer without
    /// repeat purchases; undefined (infinite) unless `q > 1`.
    pub fn population_mean_spend(&self) -> Result<f64> {
        self.validate()?;
        let Self { p, q, gamma } = *self;
        if q <= 1.0 {
            return Err(ClvError::Undefined(format!(
                "the population mean spend is infinite for q = {q} <= 1"
            )));
        }
        Ok(p * gamma / (q - 1.0))
    }

    /// `E[Z | x, z̄] = p(γ + x z̄)/(px + q − 1)`: a customer's expected transaction value,
    /// a weighted mean of the population mean and its own `z̄` (Fader & Hardie 2013).
    ///
    /// `mean_spend` is the mean of the customer's repeat purchases (not negative; a mean of 0,
    /// all refunded, is allowed and shrinks towards 0). With `frequency = 0` the customer's own
    /// mean carries no information and this is [`GammaGammaParams::population_mean_spend`].
    pub fn conditional_expected_spend(&self, frequency: u32, mean_spend: f64) -> Result<f64> {
        if frequency == 0 {
            return self.population_mean_spend();
        }
        self.validate()?;
        if !(mean_spend.is_finite() && mean_spend >= 0.0) {
            return Err(ClvError::InvalidArgument(format!(
                "mean spend must be finite and non-negative, got {mean_spend}"
            )));
        }
        let Self { p, q, gamma } = *self;
        let x = f64::from(frequency);
        let denominator = p * x + q - 1.0;
        if denominator <= 0.0 {
            return Err(ClvError::Undefined(format!(
                "the expected spend is infinite for px + q = {} <= 1",
                p * x + q
            )));
        }
        Ok(p * (gamma + x * mean_spend) / denominator)
    }
}
