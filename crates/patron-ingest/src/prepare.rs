//! Turning a batch of records into one append and a list of dead letters.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use patron_codec::{Limits, Message};
use patron_domain::{Event, ValidationPolicy, validate};
use patron_store::{AppendBatch, SourceOffset};

use crate::dead_letter::DeadLetter;

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
    /// Records that failed, with their reasons.
    pub dead_letters: Vec<DeadLetter>,
    /// Whether the dead letters have been delivered (a retried commit does not resend them).
    pub dead_letters_sent: bool,
    /// How many records the batch holds.
    pub records: usize,
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
    let mut events: Vec<Event> = Vec::with_capacity(records.len());
    let mut dead_letters = Vec::new();
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
            .and_then(|raw| validate(raw, &policy))
        {
            Ok(event) => events.push(event),
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
    PreparedBatch {
        batch: AppendBatch::from_events(events).with_offsets(offsets),
        dead_letters,
        dead_letters_sent: false,
        records: count,
    }
}
