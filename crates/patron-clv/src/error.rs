//! The one error type of this crate.

use thiserror::Error;

/// Everything that can go wrong in this crate.
///
/// Fitting errors ([`ClvError::NotConverged`], [`ClvError::NonFinite`], [`ClvError::Optimiser`])
/// mean "keep the previous model version": no partial or doubtful parameters are ever returned.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ClvError {
    /// A money amount that must not be negative was negative.
    #[error("amount must not be negative, got {0} minor units")]
    NegativeAmount(i64),
    /// An observation handed to a model is not a possible customer history.
    #[error("observation {index} is invalid: {reason}")]
    InvalidObservation {
        /// Its position in the input slice.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Model parameters outside their domain (every parameter must be finite and positive).
    #[error("invalid model parameters: {0}")]
    InvalidParams(String),
    /// A function argument outside its domain (a negative horizon, a pole of 2F1, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A fit was asked for without any observation.
    #[error("no observations to fit")]
    NoData,
    /// The data cannot determine the parameters (for example no repeat purchase at all, which
    /// leaves the dropout process without a trace).
    #[error("parameters not identified by the data: {0}")]
    Unidentified(String),
    /// The optimiser stopped before the convergence criterion was met.
    #[error("fit did not converge after {iterations} iterations: {reason}")]
    NotConverged {
        /// Iterations run.
        iterations: u64,
        /// Why the fit is not accepted.
        reason: String,
    },
    /// A fit or a prediction produced a NaN or an infinity.
    #[error("non-finite result: {0}")]
    NonFinite(String),
    /// The optimiser itself failed (for example a line search that found no descent).
    #[error("optimiser failed: {0}")]
    Optimiser(String),
    /// A series did not reach its tolerance within its term budget.
    #[error("series did not converge: {0}")]
    SeriesDiverged(String),
    /// A quantity the model does not define for these parameters (an infinite mean, ...).
    #[error("undefined for these parameters: {0}")]
    Undefined(String),
    /// A predicted amount that does not fit in `i64` minor units.
    #[error("amount {0} does not fit in i64 minor units")]
    OutOfRange(f64),
}

/// This crate's result type.
pub type Result<T, E = ClvError> = std::result::Result<T, E>;
