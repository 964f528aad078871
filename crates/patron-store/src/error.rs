//! The one error type of the store ports.

use patron_domain::CustomerId;

use crate::types::{ExpectedVersion, Position};

/// Boxed source error from a backend.
type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Optimistic concurrency: the stream was not at the expected version. Nothing was written.
    #[error(
        "version conflict on stream {customer_id}: expected {expected}, stream is at version {actual}"
    )]
    Conflict {
        /// The stream.
        customer_id: CustomerId,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// What the stream was at.
        actual: u64,
    },
    /// The batch itself is malformed (the caller's mistake). Nothing was written.
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    /// The backend could not be reached or dropped the connection; retrying later may succeed.
    #[error("event store unavailable: {0}")]
    Unavailable(#[source] Source),
    /// A stored event could not be decoded.
    #[error("stored event at position {position} cannot be decoded: {reason}")]
    Corrupt {
        /// Where.
        position: Position,
        /// Why.
        reason: String,
    },
    /// Any other backend failure.
    #[error("event store failure: {0}")]
    Backend(#[source] Source),
}

impl StoreError {
    /// Whether the same operation may succeed if retried later (outages, dropped connections).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}
