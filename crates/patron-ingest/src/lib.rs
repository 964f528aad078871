//! The ingest application: from transport records to stored events, effectively once.
//!
//! A transport adapter (Kafka, in `patron-kafka`) hands over a batch of [`InboundRecord`]s.
//! [`prepare`] decodes and validates each one: valid events go into one [`AppendBatch`] together
//! with the offsets the batch covers, invalid records become [`DeadLetter`]s. [`Ingestor::commit`]
//! first delivers the dead letters, then appends events and offsets in one store transaction. A
//! crash at any point therefore either loses the whole batch's effect (it is read again from the
//! stored offsets) or none of it; nothing is lost and nothing is stored twice.
//!
//! An event whose id the store already holds with the same content is a redelivery and is
//! acknowledged. One whose id is taken by *different* content (another payload digest) is refused
//! by the store ([`StoreError::DuplicateEventIds`], nothing written): the commit takes those
//! events out, delivers their records as dead letters (`duplicate_event_id_conflict`) and appends
//! the rest with all the offsets, so the order "dead letters first, then offsets" holds for them
//! too.

mod dead_letter;
mod prepare;
mod progress;

use std::sync::Arc;

use async_trait::async_trait;
use patron_domain::{ErrorClass, ValidationError};
use patron_store::{EventStore, Position, StoreError};

pub use dead_letter::{DeadLetter, Letter, headers as dead_letter_headers};
pub use prepare::{InboundRecord, PreparedBatch, Settings, prepare};
pub use progress::{BEHIND_AFTER, Reports, SourceTracker};

/// Where dead letters go (a Kafka topic in production).
#[async_trait]
pub trait DeadLetterSink: Send + Sync + 'static {
    /// Delivers every letter durably before returning `Ok`.
    async fn send(&self, letters: &[DeadLetter]) -> Result<(), SinkError>;
}

/// A dead-letter delivery failed.
#[derive(Debug, thiserror::Error)]
#[error("dead-letter delivery failed: {0}")]
pub struct SinkError(#[source] pub Box<dyn std::error::Error + Send + Sync + 'static>);

/// Why a batch could not be committed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Dead letters could not be delivered (the batch's offsets were therefore not stored).
    #[error(transparent)]
    DeadLetters(#[from] SinkError),
}

impl IngestError {
    /// Whether retrying the same batch later may succeed (outages). Dead-letter delivery failures
    /// are treated as transient: the broker may come back.
    pub fn is_transient(&self) -> bool {
        match self {
            IngestError::Store(e) => e.is_transient(),
            IngestError::DeadLetters(_) => true,
        }
    }
}

/// What committing one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Records in the batch.
    pub records: usize,
    /// Events newly stored.
    pub appended: u64,
    /// Events whose id was already stored (re-sent by a producer).
    pub duplicates: u64,
    /// Classes of the records sent to dead letters.
    pub dead_letters: Vec<ErrorClass>,
    /// The log position after the batch, when it stored events.
    pub last_position: Option<Position>,
}

/// Commits prepared batches: dead letters first, then events with offsets in one transaction.
pub struct Ingestor {
    store: Arc<dyn EventStore>,
    dead_letters: Arc<dyn DeadLetterSink>,
}

impl Ingestor {
    /// An ingestor writing to `store` and sending bad records to `dead_letters`.
    pub fn new(store: Arc<dyn EventStore>, dead_letters: Arc<dyn DeadLetterSink>) -> Self {
        Self {
            store,
            dead_letters,
        }
    }

    /// Commits a batch. Safe to call again with the same batch after a transient error: dead
    /// letters already delivered are not sent twice, and the append is idempotent.
    #[tracing::instrument(name = "ingest.commit", skip_all,
        fields(records = prepared.records, appended, duplicates))]
    pub async fn commit(&self, prepared: &mut PreparedBatch) -> Result<BatchReport, IngestError> {
        self.resolve(prepared).await?;
        prepared.append_progress();
        let (mut receipt, started) = loop {
            self.deliver_dead_letters(prepared).await?;
            let started = std::time::Instant::now();
            match self.store.append(&prepared.batch).await {
                Ok(receipt) => break (receipt, started),
                // Each round takes at least one event out, so this ends.
                Err(StoreError::DuplicateEventIds(conflicts)) => prepared
                    .set_aside(&conflicts)
                    .map_err(|reason| StoreError::Backend(reason.into()))?,
                Err(error) => return Err(error.into()),
            }
        };
        // The progress event is Patron's own, not a customer event: it is counted neither as
        // appended nor as a duplicate. It is new whenever anything is (a fresh id, in the same
        // transaction), and a duplicate when a retried commit finds the batch already stored.
        let progress = prepared.progress_events().len() as u64;
        if receipt.appended > 0 {
            receipt.appended = receipt.appended.saturating_sub(progress);
        } else {
            receipt.duplicates = receipt.duplicates.saturating_sub(progress);
        }
        metrics::histogram!("patron_ingest_append_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("patron_ingest_events_total").increment(receipt.appended);
        metrics::counter!("patron_ingest_duplicates_total").increment(receipt.duplicates);
        let span = tracing::Span::current();
        span.record("appended", receipt.appended);
        span.record("duplicates", receipt.duplicates);
        for letter in &prepared.dead_letters {
            metrics::counter!("patron_ingest_dead_letters_total", "class" => letter.error.class.as_str())
                .increment(1);
        }
        Ok(BatchReport {
            records: prepared.records,
            appended: receipt.appended,
            duplicates: receipt.duplicates,
            dead_letters: prepared
                .dead_letters
                .iter()
                .map(|l| l.error.class)
                .collect(),
            last_position: receipt.last_position,
        })
    }

    /// Finds the customer of every event that named only an identifier and puts the event in
    /// that customer's stream. A store that cannot resolve identifiers at all (no identity
    /// index) sends such records to dead letters; an outage fails the commit (nothing placed
    /// is lost: resolving again gives the same customer).
    async fn resolve(&self, prepared: &mut PreparedBatch) -> Result<(), IngestError> {
        // In arrival order: events of one customer keep their order in its stream.
        while !prepared.unresolved.is_empty() {
            let (event, identity, record) = prepared.unresolved.remove(0);
            match self.store.resolve_identity(&identity).await {
                Ok(customer) => {
                    metrics::counter!("patron_ingest_resolved_total").increment(1);
                    prepared.place(event, customer, record);
                }
                Err(error) if error.is_transient() => {
                    prepared.unresolved.insert(0, (event, identity, record));
                    return Err(error.into());
                }
                Err(error) => prepared.dead_letters.push(DeadLetter {
                    record,
                    error: ValidationError::new(
                        ErrorClass::InvalidField,
                        "identity",
                        format!("the customer could not be resolved: {error}"),
                    ),
                }),
            }
        }
        Ok(())
    }

    /// Delivers the batch's dead letters not delivered yet.
    async fn deliver_dead_letters(&self, prepared: &mut PreparedBatch) -> Result<(), SinkError> {
        let pending =
            &prepared.dead_letters[prepared.dead_letters_sent.min(prepared.dead_letters.len())..];
        if !pending.is_empty() {
            self.dead_letters.send(pending).await?;
            prepared.dead_letters_sent = prepared.dead_letters.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
