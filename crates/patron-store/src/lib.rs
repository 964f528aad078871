//! Store ports: what the application needs from an event store, independent of any database.
//!
//! [`EventStore`] is implemented by [`InMemoryEventStore`] here and by the SQL backends in
//! `patron-store-sql`; every implementation runs the same [`contract`] test suite (feature
//! `contract`). The guarantees it checks are the ones callers rely on:
//!
//! * an [`AppendBatch`] commits atomically, together with the source offsets it carries;
//! * events are idempotent by `event_id`: a re-sent event is acknowledged, not stored twice;
//!   an id re-used for different content (another payload digest) is refused, precisely;
//! * [`ExpectedVersion`] gives optimistic concurrency per customer stream;
//! * positions are gapless and commit-ordered, so a reader following [`EventStore::read_all`]
//!   from the last position it saw can never skip an event that commits later.

mod error;
mod memory;
mod plan;
mod types;

#[cfg(any(test, feature = "contract"))]
pub mod contract;
#[cfg(any(test, feature = "contract"))]
pub mod faulty;

pub use error::{EventIdConflict, StoreError};
pub use memory::InMemoryEventStore;
pub use plan::{AppendPlan, PlannedEvent, StoredDigests, plan_append};
pub use types::{
    AppendBatch, AppendReceipt, ExpectedVersion, Position, RecordedEvent, SourceOffset,
    StreamAppend,
};

use async_trait::async_trait;
use patron_domain::{CustomerId, Identity};

/// The event store: the source of truth, one stream per customer, one global log.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends a batch atomically: every new event and every source offset, or nothing.
    ///
    /// Events whose `event_id` is already stored with the same content (the same
    /// [`patron_domain::EventDigest`]; events stored before digests existed count as the same)
    /// are acknowledged as duplicates and skipped, as are repeats within the batch. A stream
    /// whose events are all duplicates succeeds whatever its expected version (a retry of a
    /// committed append); otherwise a mismatched expected version fails the whole batch with
    /// [`StoreError::Conflict`]. An id already taken by *different* content fails the whole
    /// batch with [`StoreError::DuplicateEventIds`], which lists every such event, so that the
    /// caller can set them aside and append the rest.
    async fn append(&self, batch: &AppendBatch) -> Result<AppendReceipt, StoreError>;

    /// Up to `limit` events with a position greater than `after`, in position order.
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `limit` events of one customer's stream with a version greater than `after_version`,
    /// in version order.
    async fn read_stream(
        &self,
        customer_id: &CustomerId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Every event of the named customers' streams up to position `up_to`, in position order:
    /// one read for the streams a projector re-folds. The default reads each stream in pages.
    async fn read_streams(
        &self,
        customers: &[CustomerId],
        up_to: Position,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        const PAGE: usize = 1024;
        let mut events = Vec::new();
        for customer in customers {
            let mut after = 0;
            loop {
                let page = self.read_stream(customer, after, PAGE).await?;
                let done = page.len() < PAGE || page.last().is_none_or(|e| e.version <= after);
                after = page.last().map_or(after, |e| e.version);
                events.extend(page.into_iter().filter(|e| e.position <= up_to));
                if done {
                    break;
                }
            }
        }
        events.sort_unstable_by_key(|e| e.position);
        Ok(events)
    }

    /// The position of the last committed event ([`Position::ZERO`] when empty).
    async fn head(&self) -> Result<Position, StoreError>;

    /// A stream's current version (0 when it has no events).
    async fn stream_version(&self, customer_id: &CustomerId) -> Result<u64, StoreError>;

    /// The source offsets stored for one consumer (e.g. a Kafka consumer group).
    async fn source_offsets(&self, consumer: &str) -> Result<Vec<SourceOffset>, StoreError>;

    /// The customer `customer` is merged into directly, if it is (see `customers_merged`);
    /// stores without an identity index know no merges.
    async fn merged_into(&self, customer: &CustomerId) -> Result<Option<CustomerId>, StoreError> {
        let _ = customer;
        Ok(None)
    }

    /// The customer an event naming only `identity` belongs to: the customer holding the
    /// identifier (the one everyone merged with it was merged into), or a new provisional
    /// customer ([`CustomerId::provisional`]) that holds it from now on. Stores without an
    /// identity index (the in-memory one) refuse.
    async fn resolve_identity(&self, identity: &Identity) -> Result<CustomerId, StoreError> {
        Err(StoreError::InvalidAppend(format!(
            "this store keeps no identity index: an event naming only a {} identifier cannot \
             be stored; name the customer id",
            identity.kind.as_str()
        )))
    }
}

#[async_trait]
impl<S: EventStore + ?Sized> EventStore for std::sync::Arc<S> {
    async fn append(&self, batch: &AppendBatch) -> Result<AppendReceipt, StoreError> {
        (**self).append(batch).await
    }
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        (**self).read_all(after, limit).await
    }
    async fn read_stream(
        &self,
        customer_id: &CustomerId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        (**self)
            .read_stream(customer_id, after_version, limit)
            .await
    }
    async fn read_streams(
        &self,
        customers: &[CustomerId],
        up_to: Position,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        (**self).read_streams(customers, up_to).await
    }
    async fn head(&self) -> Result<Position, StoreError> {
        (**self).head().await
    }
    async fn stream_version(&self, customer_id: &CustomerId) -> Result<u64, StoreError> {
        (**self).stream_version(customer_id).await
    }
    async fn source_offsets(&self, consumer: &str) -> Result<Vec<SourceOffset>, StoreError> {
        (**self).source_offsets(consumer).await
    }
    async fn resolve_identity(&self, identity: &Identity) -> Result<CustomerId, StoreError> {
        (**self).resolve_identity(identity).await
    }
    async fn merged_into(&self, customer: &CustomerId) -> Result<Option<CustomerId>, StoreError> {
        (**self).merged_into(customer).await
    }
}
