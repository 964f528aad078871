//! Patron's customer value: what each customer is worth, and how the population ranks.
//!
//! Everything here is pure, synchronous code over data; time is always passed in and money is
//! always `i64` minor units of one reporting currency, never a float. [`apply`] folds a
//! customer's purchases and refunds into a [`CustomerValue`] (net revenue, orders, average order
//! value, tenure, recency, historical CLV). A projector recomputes the population views on a
//! schedule: [`rfm_scores`] gives 1–5 quintile [`Rfm`] scores (named by [`Rfm::segment`]) and
//! [`abc_tiers`] gives [`Tier`]s by cumulative revenue share. Both are deterministic: equal
//! inputs get equal results, and the input order never matters.

mod customer;
mod rfm;
pub mod segment;
mod tier;

pub use customer::{CustomerValue, apply};
pub use rfm::{Rfm, RfmInput, rfm_scores};
pub use tier::{DEFAULT_A_SHARE_PERCENT, DEFAULT_B_SHARE_PERCENT, Tier, abc_tiers};

#[cfg(test)]
mod tests;
