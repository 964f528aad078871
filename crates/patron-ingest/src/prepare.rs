//! Turning a batch of records into one append and a list of dead letters.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use patron_codec::{Limits, Message};
use patron_domain::{
    CustomerId, ErrorClass, Event, Identity, ValidationError, ValidationPolicy, validate_subject,
};
use patron_store::{AppendBatch, EventIdConflict, ExpectedVersion, SourceOffset, StreamAppend};

use crate::dead_letter::DeadLetter;
use crate::progress::Reports;

/// A record as a transport delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRecord {
    /// Topic (or source name).
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// Message key (the customer id, by convention).
    pub key: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The bytes.
    pub payload: Vec<u8>,
}

/// How records are judged.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The consumer name offsets are stored under (the Kafka consumer group id).
    pub consumer: String,
    /// Payload limits.
    pub limits: Limits,
    /// Oldest acceptable event time, relative to now.
    pub max_age: TimeDelta,
    /// Furthest acceptable event time ahead of now.
    pub max_future: TimeDelta,
}

impl Settings {
    /// Defaults for a consumer: 256 KiB payloads, events up to 50 years old and 1 day ahead.
    pub fn new(consumer: impl Into<String>) -> Self {
        let policy = ValidationPolicy::at(DateTime::UNIX_EPOCH);
        Self {
            consumer: consumer.into(),
            limits: Limits::default(),
            max_age: policy.max_age,
            max_future: policy.max_future,
        }
    }
}

/// One batch, ready to commit.
#[derive(Debug, Clone, Default)]
pub struct PreparedBatch {
    /// Valid events and the offsets the whole batch covers.
    pub batch: AppendBatch,
    /// The record each event came from, in the same shape: `origins[s][i]` carried
    /// `batch.streams[s].events[i]` (kept to dead-letter it if the store refuses it).
    pub origins: Vec<Vec<InboundRecord>>,
    /// Valid events that name their customer only by an identifier, with it and their records:
    /// [`PreparedBatch::place`] adds them to `batch` once the store has resolved the customer.
    pub unresolved: Vec<(Event, Identity, InboundRecord)>,
    /// Records that failed, with their reasons.
    pub dead_letters: Vec<DeadLetter>,
    /// How many of `dead_letters` have been delivered (a retried commit does not resend them).
    pub dead_letters_sent: usize,
    /// How many records the batch holds.
    pub records: usize,
    /// For each partition the batch read valid events from, the latest event time among them
    /// (each capped at the time of reading).
    pub read_to: BTreeMap<(String, i32), DateTime<Utc>>,
    /// The source progress to store with the batch (see [`crate::SourceTracker`]): put into
    /// the append when it commits.
    pub progress: Reports,
    /// The source progress put into the append (hold first).
    pub progress_appended: Vec<Event>,
}

/// Decodes and validates records at time `now`. The offsets cover every record, valid or not:
/// a dead-lettered record is done with once its letter is delivered.
pub fn prepare(
    records: Vec<InboundRecord>,
    settings: &Settings,
    now: DateTime<Utc>,
) -> PreparedBatch {
    let policy = ValidationPolicy {
        now,
        max_age: settings.max_age,
        max_future: settings.max_future,
    };
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut events: Vec<(Event, InboundRecord)> = Vec::with_capacity(records.len());
    let mut dead_letters = Vec::new();
    let mut unresolved = Vec::new();
    let count = records.len();
    for record in records {
        let slot = next
            .entry((record.topic.clone(), record.partition))
            .or_insert(record.offset + 1);
        *slot = (*slot).max(record.offset + 1);
        let headers: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let message = Message {
            content_type: None,
            headers: &headers,
            key: record.key.as_deref(),
            payload: &record.payload,
        };
        match patron_codec::decode(&message, &settings.limits)
            .and_then(|raw| validate_subject(raw, &policy))
        {
            Ok((event, None)) => events.push((event, record)),
            Ok((event, Some(identity))) => unresolved.push((event, identity, record)),
            Err(error) => {
                tracing::debug!(
                    topic = %record.topic, partition = record.partition, offset = record.offset,
                    class = %error.class, "dead letter: {error}"
                );
                dead_letters.push(DeadLetter { record, error });
            }
        }
    }
    let offsets = next
        .into_iter()
        .map(|((topic, partition), next_offset)| SourceOffset {
            consumer: settings.consumer.clone(),
            topic,
            partition,
            next_offset,
        })
        .collect();
    let mut read_to: BTreeMap<(String, i32), DateTime<Utc>> = BTreeMap::new();
    let times = events
        .iter()
        .map(|(event, record)| (event, record))
        .chain(unresolved.iter().map(|(event, _, record)| (event, record)));
    for (event, record) in times {
        let at = event.occurred_at.min(now);
        read_to
            .entry((record.topic.clone(), record.partition))
            .and_modify(|latest| *latest = (*latest).max(at))
            .or_insert(at);
    }
    let (batch, origins) = AppendBatch::grouped(events);
    PreparedBatch {
        batch: batch.with_offsets(offsets),
        origins,
        unresolved,
        dead_letters,
        dead_letters_sent: 0,
        records: count,
        read_to,
        progress: Reports::default(),
        progress_appended: Vec::new(),
    }
}

impl PreparedBatch {
    /// The source progress events the batch carries, appended or not: its hold, then its
    /// update.
    pub fn progress_events(&self) -> Vec<&Event> {
        if !self.progress_appended.is_empty() {
            return self.progress_appended.iter().collect();
        }
        self.progress
            .hold
            .iter()
            .chain(&self.progress.update)
            .collect()
    }

    /// Puts the batch's source progress into the append, once: its hold as the first stream
    /// (stored before every event of the batch), its update as the last (after them).
    pub fn append_progress(&mut self) {
        let stream = |event: Event| StreamAppend {
            customer_id: event.customer_id.clone(),
            expected: ExpectedVersion::Any,
            events: vec![event],
        };
        if let Some(hold) = self.progress.hold.take() {
            self.progress_appended.push(hold.clone());
            self.batch.streams.insert(0, stream(hold));
            self.origins.insert(0, Vec::new());
        }
        if let Some(update) = self.progress.update.take() {
            self.progress_appended.push(update.clone());
            self.batch.streams.push(stream(update));
            self.origins.push(Vec::new());
        }
    }

    /// Adds an event whose customer was resolved to `customer` (see `unresolved`) to the batch:
    /// at the end of that customer's stream, after the events that named the customer directly.
    pub fn place(&mut self, mut event: Event, customer: CustomerId, record: InboundRecord) {
        event.customer_id = customer;
        match self
            .batch
            .streams
            .iter()
            .position(|s| s.customer_id == event.customer_id)
        {
            Some(slot) => {
                self.batch.streams[slot].events.push(event);
                self.origins[slot].push(record);
            }
            None => {
                self.batch.streams.push(StreamAppend {
                    customer_id: event.customer_id.clone(),
                    expected: ExpectedVersion::Any,
                    events: vec![event],
                });
                self.origins.push(vec![record]);
            }
        }
    }

    /// Takes the events the store refused for re-using an id with different content out of the
    /// batch and turns their records into dead letters (class `duplicate_event_id_conflict`).
    /// The offsets stay: those records are done with once their letters are delivered.
    ///
    /// Fails, changing nothing, if a conflict names no event of the batch.
    pub fn set_aside(&mut self, conflicts: &[EventIdConflict]) -> Result<(), String> {
        let taken = self.batch.set_aside(&mut self.origins, conflicts)?;
        let mut letters = Vec::with_capacity(taken.len());
        for (event, record, conflict) in taken {
            let conflict = format!(
                ": the id stands for payload digest {}, this record's is {}",
                conflict.kept, conflict.offered
            );
            let error = ValidationError::new(
                ErrorClass::DuplicateEventIdConflict,
                "event_id",
                format!(
                    "{} is already taken by an event with different content (a redelivery must \
                     carry the same content){conflict}",
                    event.event_id
                ),
            );
            tracing::warn!(
                topic = %record.topic, partition = record.partition, offset = record.offset,
                event_id = %event.event_id, "dead letter: {error}"
            );
            letters.push(DeadLetter { record, error });
        }
        letters.sort_by(|a, b| {
            (&a.record.topic, a.record.partition, a.record.offset).cmp(&(
                &b.record.topic,
                b.record.partition,
                b.record.offset,
            ))
        });
        self.dead_letters.extend(letters);
        Ok(())
    }
}
