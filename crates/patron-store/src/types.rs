//! The values that cross the store boundary.

use std::fmt;

use chrono::{DateTime, Utc};
use patron_domain::{CustomerId, Event};

use crate::error::EventIdConflict;

/// A place in the global log. Positions start at 1, are gapless and follow commit order;
/// [`Position::ZERO`] is "before the first event".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Position(pub u64);

impl Position {
    /// Before the first event.
    pub const ZERO: Position = Position(0);

    /// The position `n` events later.
    pub fn advanced_by(self, n: u64) -> Position {
        Position(self.0 + n)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What the writer believes a stream's version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check: append after whatever is there (ingest from producers).
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must be at exactly this version (0 = no events).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` satisfies the expectation.
    pub fn admits(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(expected) => actual == expected,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// Events for one customer stream, with the version the writer expects.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAppend {
    /// The stream; every event must carry the same customer id.
    pub customer_id: CustomerId,
    /// The optimistic-concurrency expectation.
    pub expected: ExpectedVersion,
    /// The events, in order.
    pub events: Vec<Event>,
}

/// How far a consumer has read one partition of a source (e.g. a Kafka topic partition).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceOffset {
    /// The consumer, e.g. a Kafka consumer group id.
    pub consumer: String,
    /// The topic (or any named source).
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The next offset to read: everything before it has been stored or dead-lettered.
    pub next_offset: i64,
}

/// One atomic write: events for any number of streams, and the source offsets they came from.
///
/// Offsets never move backwards: a stored offset is only replaced by a greater one, so a stale
/// writer (a consumer that lost its partition) cannot rewind another's progress.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppendBatch {
    /// Streams to append to, in order.
    pub streams: Vec<StreamAppend>,
    /// Offsets to store in the same transaction.
    pub offsets: Vec<SourceOffset>,
}

impl AppendBatch {
    /// A batch of events for one stream.
    pub fn single(customer_id: CustomerId, expected: ExpectedVersion, events: Vec<Event>) -> Self {
        Self {
            streams: vec![StreamAppend {
                customer_id,
                expected,
                events,
            }],
            offsets: Vec::new(),
        }
    }

    /// Groups events by customer (keeping their order) with no version expectation: the shape
    /// of an ingest batch.
    pub fn from_events(events: impl IntoIterator<Item = Event>) -> Self {
        let mut streams: Vec<StreamAppend> = Vec::new();
        let mut index = std::collections::HashMap::<CustomerId, usize>::new();
        for event in events {
            let slot = *index.entry(event.customer_id.clone()).or_insert_with(|| {
                streams.push(StreamAppend {
                    customer_id: event.customer_id.clone(),
                    expected: ExpectedVersion::Any,
                    events: Vec::new(),
                });
                streams.len() - 1
            });
            streams[slot].events.push(event);
        }
        Self {
            streams,
            offsets: Vec::new(),
        }
    }

    /// Adds offsets to store with the events.
    pub fn with_offsets(mut self, offsets: Vec<SourceOffset>) -> Self {
        self.offsets = offsets;
        self
    }

    /// How many events the batch carries (duplicates included).
    pub fn event_count(&self) -> usize {
        self.streams.iter().map(|s| s.events.len()).sum()
    }

    /// Takes the events that `conflicts` (from [`crate::StoreError::DuplicateEventIds`]) name out
    /// of the batch, with what `origins` holds at the same places (one item per event, stream by
    /// stream: where each event came from), so that the rest can be appended. Returns them in
    /// batch order, each with its conflict.
    ///
    /// Fails, changing nothing, if `conflicts` is empty or names a place outside the batch or
    /// `origins`.
    pub fn set_aside<O>(
        &mut self,
        origins: &mut [Vec<O>],
        conflicts: &[EventIdConflict],
    ) -> Result<Vec<(Event, O, EventIdConflict)>, String> {
        let mut places: Vec<&EventIdConflict> = conflicts.iter().collect();
        places.sort_unstable_by_key(|c| (c.stream, c.index));
        places.dedup_by_key(|c| (c.stream, c.index));
        let outside = |c: &&EventIdConflict| {
            self.streams
                .get(c.stream)
                .is_none_or(|stream| c.index >= stream.events.len())
                || origins
                    .get(c.stream)
                    .is_none_or(|items| c.index >= items.len())
        };
        if places.is_empty() || places.iter().any(outside) {
            return Err(format!(
                "the store reported conflicts outside the batch: {conflicts:?}"
            ));
        }
        // From the back, so that earlier places keep their indices.
        let mut taken: Vec<_> = places
            .iter()
            .rev()
            .map(|c| {
                let event = self.streams[c.stream].events.remove(c.index);
                let origin = origins[c.stream].remove(c.index);
                (event, origin, (*c).clone())
            })
            .collect();
        taken.reverse();
        Ok(taken)
    }
}

/// What an append did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendReceipt {
    /// Events newly stored.
    pub appended: u64,
    /// Events acknowledged because their `event_id` was already stored (or repeated in the batch).
    pub duplicates: u64,
    /// The position of the last event this append stored, if it stored any.
    pub last_position: Option<Position>,
}

/// An event as stored, with its place in the log and in its stream.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Global, gapless, commit-ordered position.
    pub position: Position,
    /// Version within the customer's stream (starts at 1).
    pub version: u64,
    /// When the store committed it.
    pub recorded_at: DateTime<Utc>,
    /// The event.
    pub event: Event,
}
