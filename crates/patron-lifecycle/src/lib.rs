//! Patron's lifecycle engine: which stage of its lifecycle each customer is in, and why.
//!
//! Everything here is a pure, synchronous fold over data. [`apply`] folds one customer event
//! into a [`CustomerLifecycle`]; [`advance`] fires the transitions that the mere passing of
//! (event) time causes, each stamped at its own deadline, so that replaying a stream, or
//! advancing the watermark in one step or in many, yields the same [`Transition`] history.
//! [`next_deadline`] tells a projector when a customer next needs [`advance`]; [`settle`] puts a
//! customer whose facts a projector replaced (customers merged or split) in the stage they
//! imply. The thresholds are data: [`Rules`], read from TOML.

mod engine;
pub mod rule;
mod rules;
mod stage;
mod state;

pub use engine::{advance, apply, next_deadline, settle};
pub use rules::{Rules, RulesError};
pub use stage::{Stage, UnknownStage};
pub use state::{CustomerLifecycle, MAX_GAPS, PAliveCrossing, PAliveSchedule, Transition};

#[cfg(test)]
mod tests;
