#![doc = include_str!("../README.md")]

mod bgnbd;
mod clv;
mod curvature;
mod error;
mod fit;
mod gamma_gamma;
mod minimise;
mod objective;
mod observation;
mod simulate;
pub mod special;
mod summary;

pub use bgnbd::BgNbdParams;
pub use clv::{Horizon, clv, discounted_expected_purchases, to_minor_units};
pub use error::{ClvError, Result};
pub use fit::{
    FitOptions, FitReport, fit_bgnbd, fit_bgnbd_with, fit_gamma_gamma, fit_gamma_gamma_with,
};
pub use gamma_gamma::GammaGammaParams;
pub use observation::{Observation, SpendObservation, TimeUnit};
pub use simulate::simulate;
pub use summary::PurchaseSummary;

#[cfg(test)]
mod tests;
