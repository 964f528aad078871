//! The one error type of the store ports.

use patron_domain::{CustomerId, EventDigest};
use uuid::Uuid;

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
    /// Events reuse ids that are already stored, or that an earlier event of the same batch
    /// carries, with different content (their [`EventDigest`]s differ). Nothing was written;
    /// the rest of the batch can be appended without the listed events.
    #[error("{}", describe_conflicts(.0))]
    DuplicateEventIds(Vec<EventIdConflict>),
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

/// One event whose id is taken by different content (see [`StoreError::DuplicateEventIds`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventIdConflict {
    /// Which stream of the batch (index into `AppendBatch::streams`).
    pub stream: usize,
    /// Which event of that stream (index into its `events`).
    pub index: usize,
    /// The id.
    pub event_id: Uuid,
    /// The digest of the content the id already stands for: the stored event's, or the first
    /// event of the batch with that id.
    pub kept: EventDigest,
    /// The digest of this event.
    pub offered: EventDigest,
}

impl std::fmt::Display for EventIdConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "event id {} is already taken by different content (payload digest {} kept, this \
             event's is {})",
            self.event_id, self.kept, self.offered
        )
    }
}

fn describe_conflicts(conflicts: &[EventIdConflict]) -> String {
    match conflicts {
        [] => "duplicate event ids with different content".to_owned(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
    }
}
