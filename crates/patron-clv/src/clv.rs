//! Customer lifetime value over a finite horizon, discounted per period.
//!
//! `CLV = Σ_{k=1..K} m · (E[Y(kΔ)] − E[Y((k−1)Δ)]) / (1 + d)^k`
//!
//! where `E[Y(t)]` is BG/NBD's expected purchases in the `t` time units after the evaluation
//! time (conditional on the customer's history), `m` is Gamma-Gamma's expected value of one of
//! the customer's transactions, `Δ` is the period length and `d` the discount rate per period.
//! Purchases expected in period `k` are valued as if made at its end. Spend and the purchase
//! process are independent in these models, so the expected revenue of a period is the
//! product of the two expectations. No margin is applied: multiply the result by one if the
//! value should be profit rather than revenue.

use serde::{Deserialize, Serialize};

use crate::bgnbd::BgNbdParams;
use crate::error::{ClvError, Result};
use crate::gamma_gamma::GammaGammaParams;
use crate::observation::Observation;

/// The horizon of a CLV: `periods` periods of `period_length` model time units each,
/// discounted at `discount_rate` per period.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Horizon {
    /// Number of periods summed.
    pub periods: u32,
    /// Length of one period, in the time unit the BG/NBD parameters were fitted in.
    pub period_length: f64,
    /// Discount rate per period (0.01 is 1% per period).
    pub discount_rate: f64,
}

impl Horizon {
    /// A horizon with a per-period discount rate, checked (positive finite length, rate > −1).
    pub fn new(periods: u32, period_length: f64, discount_rate: f64) -> Result<Self> {
        if !(period_length.is_finite() && period_length > 0.0) {
            return Err(ClvError::InvalidArgument(format!(
                "period length must be finite and positive, got {period_length}"
            )));
        }
        if !(discount_rate.is_finite() && discount_rate > -1.0) {
            return Err(ClvError::InvalidArgument(format!(
                "discount rate must be finite and above -1, got {discount_rate}"
            )));
        }
        Ok(Self {
            periods,
            period_length,
            discount_rate,
        })
    }

    /// A horizon with an annual discount rate, compounded: the per-period rate is
    /// `(1 + annual_rate)^(1/periods_per_year) − 1` (12 for months, 52 for weeks).
    pub fn with_annual_rate(
        periods: u32,
        period_length: f64,
        annual_rate: f64,
        periods_per_year: f64,
    ) -> Result<Self> {
        if !(periods_per_year.is_finite() && periods_per_year > 0.0) {
            return Err(ClvError::InvalidArgument(format!(
                "periods per year must be finite and positive, got {periods_per_year}"
            )));
        }
        if !(annual_rate.is_finite() && annual_rate > -1.0) {
            return Err(ClvError::InvalidArgument(format!(
                "annual discount rate must be finite and above -1, got {annual_rate}"
            )));
        }
        let per_period = (annual_rate.ln_1p() / periods_per_year).exp_m1();
        Self::new(periods, period_length, per_period)
    }
}

/// `Σ_k (E[Y(kΔ)] − E[Y((k−1)Δ)]) / (1 + d)^k`: the discounted expected purchases over the
/// horizon, the factor that multiplies the expected spend in [`clv`].
pub fn discounted_expected_purchases(
    bgnbd: &BgNbdParams,
    customer: &Observation,
    horizon: &Horizon,
) -> Result<f64> {
    let mut total = 0.0;
    let mut previous = 0.0;
    let mut discount = 1.0;
    for k in 1..=horizon.periods {
        let cumulative =
            bgnbd.expected_purchases(f64::from(k) * horizon.period_length, customer)?;
        discount /= 1.0 + horizon.discount_rate;
        total += (cumulative - previous) * discount;
        previous = cumulative;
    }
    Ok(total)
}

/// One customer's CLV over `horizon`, in the money unit of the spend model (minor units when
/// fitted on [`crate::PurchaseSummary`] means); see the module docs for the formula.
///
/// `mean_spend` is the customer's mean repeat spend (`z̄`, ignored without repeat purchases,
/// where the population mean is used). Round with [`to_minor_units`] to store it.
pub fn clv(
    bgnbd: &BgNbdParams,
    gamma_gamma: &GammaGammaParams,
    customer: &Observation,
    mean_spend: f64,
    horizon: &Horizon,
) -> Result<f64> {
    let spend = gamma_gamma.conditional_expected_spend(customer.frequency, mean_spend)?;
    let value = spend * discounted_expected_purchases(bgnbd, customer, horizon)?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ClvError::NonFinite(format!("CLV is {value}")))
    }
}

/// Rounds a predicted amount (an estimate in minor units) to whole minor units for storage,
/// halves away from zero; an error if it is not finite or does not fit in `i64`.
pub fn to_minor_units(amount: f64) -> Result<i64> {
    let rounded = amount.round();
    // i64::MIN is -2^63 exactly; 2^63 itself is one past i64::MAX.
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if !(rounded.is_finite() && (-TWO_POW_63..TWO_POW_63).contains(&rounded)) {
        return Err(ClvError::OutOfRange(amount));
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "rounded is a whole number checked to be within i64's range"
    )]
    let minor = rounded as i64;
    Ok(minor)
}
