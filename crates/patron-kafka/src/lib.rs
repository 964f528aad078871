//! Patron's Kafka adapter: the only crate that talks to Kafka (through rdkafka).
//!
//! * [`IngestConsumer`] consumes customer events in a consumer group and hands batches to
//!   `patron_ingest::Ingestor`. Offsets live in the event store, written in the same transaction
//!   as the events they carried; on every partition assignment the consumer seeks to them. Kafka's
//!   own committed offsets are updated afterwards for monitoring (lag) only.
//! * [`KafkaDeadLetters`] sends rejected records to `<topic>.dlq` with their reasons.
//! * [`EmbeddedKafka`] and [`Producer`] serve `patron dev`: an in-process broker and demo traffic.

mod client;
mod consumer;
mod dead_letters;
mod embedded;
mod lifecycle;
mod positions;
#[cfg(feature = "testing")]
pub mod testing;

pub use client::{BrokerProbe, KafkaSettings};
pub use consumer::{IngestConsumer, IngestOptions, IngestSummary};
pub use dead_letters::KafkaDeadLetters;
pub use embedded::{EmbeddedKafka, OutboundRecord, Producer};
pub use lifecycle::{
    DEDUPE_HEADER, DEFAULT_LIFECYCLE_TOPIC, KafkaLifecyclePublisher, lifecycle_changed, stage,
};

/// Why the Kafka adapter stopped.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// A client could not be created or configured.
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    /// The options are inconsistent.
    #[error("invalid kafka configuration: {0}")]
    Config(String),
    /// A batch could not be committed for a reason retrying will not fix.
    #[error(transparent)]
    Ingest(#[from] patron_ingest::IngestError),
}
