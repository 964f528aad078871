//! Decoding stored rows back into [`RecordedEvent`]s, shared by both backends.

use chrono::{DateTime, Utc};
use patron_domain::{CustomerId, Event, EventBody};
use patron_store::{Position, RecordedEvent, StoreError};
use uuid::Uuid;

use crate::sealing::{self, PageKeys};

/// The columns of one `events` row, as read (text borrowed from the row).
pub(crate) struct EventRow<'a> {
    pub(crate) position: i64,
    pub(crate) event_id: Uuid,
    pub(crate) customer_id: &'a str,
    pub(crate) version: i64,
    pub(crate) event_type: &'a str,
    pub(crate) occurred_at: DateTime<Utc>,
    pub(crate) recorded_at: DateTime<Utc>,
    pub(crate) source: &'a str,
    /// The body as JSON text, parsed straight into the body of its type.
    pub(crate) payload: &'a str,
}

impl EventRow<'_> {
    /// The event, its sealed personal fields opened with `keys` (see [`crate::sealing`]).
    pub(crate) fn decode(self, keys: &PageKeys) -> Result<RecordedEvent, StoreError> {
        let position = Position(u64::try_from(self.position).unwrap_or(0));
        let corrupt = |reason: String| StoreError::Corrupt { position, reason };
        let customer_id =
            CustomerId::parse(self.customer_id).map_err(|e| corrupt(format!("customer_id {e}")))?;
        let opened;
        let payload = if sealing::may_be_sealed(self.event_type, self.payload) {
            opened = sealing::open(
                self.event_type,
                self.payload,
                self.customer_id,
                &self.event_id,
                keys.opening(self.customer_id),
            )?;
            opened.as_str()
        } else {
            self.payload
        };
        let body = EventBody::from_payload_str(self.event_type, payload)
            .map_err(|e| corrupt(format!("{} payload: {e}", self.event_type)))?;
        Ok(RecordedEvent {
            position,
            version: u64::try_from(self.version).map_err(|_| corrupt("negative version".into()))?,
            recorded_at: self.recorded_at,
            event: Event {
                event_id: self.event_id,
                customer_id,
                occurred_at: self.occurred_at,
                source: self.source.to_owned(),
                body,
            },
        })
    }
}

/// Converts an in-memory count or position to the `bigint` the databases store.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Clamps a page size to what SQL `LIMIT` takes.
pub(crate) fn limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
