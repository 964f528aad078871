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
        Self::grouped(events.into_iter().map(|event| (event, ()))).0
    }

    /// Groups events by customer as [`AppendBatch::from_events`] does, with what each came from
    /// (a record, a line) in the same shape, stream by stream: the `origins` that
    /// [`AppendBatch::set_aside`] takes.
    pub fn grouped<O>(items: impl IntoIterator<Item = (Event, O)>) -> (Self, Vec<Vec<O>>) {
        let mut streams: Vec<StreamAppend> = Vec::new();
        let mut origins: Vec<Vec<O>> = Vec::new();
        let mut index = std::collections::HashMap::<CustomerId, usize>::new();
        for (event, origin) in items {
            let slot = *index.entry(event.customer_id.clone()).or_insert_with(|| {
                streams.push(StreamAppend {
                    customer_id: event.customer_id.clone(),
                    expected: ExpectedVersion::Any,
                    events: Vec::new(),
                });
                origins.push(Vec::new());
                streams.len() - 1
            });
            streams[slot].events.push(event);
            origins[slot].push(origin);
        }
        let batch = Self {
            streams,
            offsets: Vec::new(),
        };
        (batch, origins)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use patron_domain::EventDigest;

    use super::*;
    use crate::contract::{customer, purchase};

    fn conflict(stream: usize, index: usize, batch: &AppendBatch) -> EventIdConflict {
        EventIdConflict {
            stream,
            index,
            event_id: batch.streams[stream].events[index].event_id,
            kept: EventDigest([1; 32]),
            offered: EventDigest([2; 32]),
        }
    }

    #[test]
    fn set_aside_takes_the_named_events_with_their_origins_and_keeps_the_rest_in_order() {
        let (a, b) = (customer("a"), customer("b"));
        let events = [
            purchase(&a, 1),
            purchase(&b, 2),
            purchase(&a, 3),
            purchase(&a, 4),
        ];
        let mut batch = AppendBatch::from_events(events.clone());
        // Origins stream by stream: a's events are lines 1, 3 and 4; b's is line 2.
        let mut origins = vec![vec![1, 3, 4], vec![2]];
        let conflicts = [
            conflict(0, 2, &batch),
            conflict(1, 0, &batch),
            conflict(0, 0, &batch),
            conflict(0, 2, &batch),
        ];
        let taken = batch.set_aside(&mut origins, &conflicts).unwrap();
        let lines: Vec<i32> = taken.iter().map(|(_, line, _)| *line).collect();
        assert_eq!(lines, [1, 4, 2], "batch order, each place once");
        assert_eq!(taken[0].0, events[0]);
        assert_eq!(taken[1].0, events[3]);
        assert_eq!(taken[2].2.stream, 1);
        assert_eq!(batch.streams[0].events, [events[2].clone()]);
        assert!(batch.streams[1].events.is_empty());
        assert_eq!(origins, [vec![3], vec![]]);

        // A conflict outside the batch changes nothing.
        let mut batch = AppendBatch::from_events(events.clone());
        let mut origins = vec![vec![1, 3, 4], vec![2]];
        let mut outside = conflict(0, 0, &batch);
        outside.index = 3;
        assert!(batch.set_aside(&mut origins, &[outside]).is_err());
        assert!(batch.set_aside(&mut origins, &[]).is_err());
        assert_eq!(batch.event_count(), 4);
        assert_eq!(origins, [vec![1, 3, 4], vec![2]]);
    }
}
