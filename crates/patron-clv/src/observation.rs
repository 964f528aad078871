//! The per-customer inputs of the models, in one time unit.

use serde::{Deserialize, Serialize};

use crate::error::{ClvError, Result};

/// The unit in which times enter a model; fitted parameters are only valid in the same unit.
///
/// `alpha` of BG/NBD is a time scale: parameters fitted on weeks must be used with observations
/// and horizons in weeks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    /// Whole calendar days.
    Days,
    /// Days divided by 7 (fractional weeks, as in Fader, Hardie & Lee 2005).
    Weeks,
}

impl TimeUnit {
    /// A number of days expressed in this unit.
    pub fn from_days(self, days: i64) -> f64 {
        // Day counts of real histories are far below 2^53, so the conversion is exact.
        let days = days as f64;
        match self {
            TimeUnit::Days => days,
            TimeUnit::Weeks => days / 7.0,
        }
    }
}

/// One customer's BG/NBD input: `(x, t_x, T)` in the notation of Fader, Hardie & Lee (2005).
///
/// Times are measured from the customer's first purchase, in one [`TimeUnit`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// `x`: repeat purchases (purchase days after the first one).
    pub frequency: u32,
    /// `t_x`: time from the first to the last purchase (0 when `frequency` is 0).
    pub recency: f64,
    /// `T`: time from the first purchase to the evaluation time (at least `recency`).
    pub age: f64,
}

impl Observation {
    /// An observation, checked: times finite, `0 <= recency <= age`, recency 0 without repeats.
    pub fn new(frequency: u32, recency: f64, age: f64) -> Result<Self> {
        let observation = Self {
            frequency,
            recency,
            age,
        };
        observation
            .check()
            .map_err(|reason| ClvError::InvalidObservation { index: 0, reason })?;
        Ok(observation)
    }

    /// Why this is not a possible customer history, if it is not.
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        let Self {
            frequency,
            recency,
            age,
        } = *self;
        if !recency.is_finite() || !age.is_finite() {
            return Err(format!("times must be finite (t_x={recency}, T={age})"));
        }
        if recency < 0.0 || age < recency {
            return Err(format!("need 0 <= t_x <= T (t_x={recency}, T={age})"));
        }
        if frequency == 0 && recency != 0.0 {
            return Err(format!(
                "t_x must be 0 without repeat purchases (t_x={recency})"
            ));
        }
        Ok(())
    }
}

/// One repeat buyer's Gamma-Gamma input: repeat purchases and their mean spend.
///
/// The mean is over repeat purchase days only (the first purchase is left out), in whatever
/// money unit the caller uses consistently; from a [`crate::PurchaseSummary`] it is minor units,
/// and the fitted `gamma` is then in minor units too.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpendObservation {
    /// `x`: repeat purchases (at least 1).
    pub frequency: u32,
    /// `z̄`: mean spend of those repeat purchases (positive).
    pub mean_spend: f64,
}

impl SpendObservation {
    /// A spend observation, checked: at least one repeat purchase and a finite positive mean.
    pub fn new(frequency: u32, mean_spend: f64) -> Result<Self> {
        let observation = Self {
            frequency,
            mean_spend,
        };
        observation
            .check()
            .map_err(|reason| ClvError::InvalidObservation { index: 0, reason })?;
        Ok(observation)
    }

    /// Why the Gamma-Gamma model cannot use this, if it cannot.
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        if self.frequency == 0 {
            return Err("the spend model needs at least one repeat purchase".to_owned());
        }
        if !(self.mean_spend.is_finite() && self.mean_spend > 0.0) {
            return Err(format!(
                "mean spend must be finite and positive, got {}",
                self.mean_spend
            ));
        }
        Ok(())
    }
}
