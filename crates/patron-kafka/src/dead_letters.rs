//! The dead-letter producer.

use async_trait::async_trait;
use patron_ingest::{DeadLetter, DeadLetterSink, SinkError};
use rdkafka::producer::FutureProducer;

use crate::{KafkaError, KafkaSettings};

/// Sends dead letters to `<original topic><suffix>` (`customer-events.dlq` by default), keeping
/// the original key, headers and payload and adding `patron.original.*` and `patron.error.*`
/// headers. An idempotent producer; `send` returns only once every letter is acknowledged.
pub struct KafkaDeadLetters {
    producer: FutureProducer,
    suffix: String,
}

impl KafkaDeadLetters {
    /// Creates the producer.
    pub fn new(kafka: &KafkaSettings, suffix: impl Into<String>) -> Result<Self, KafkaError> {
        let producer = kafka
            .config(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("message.timeout.ms", "30000"),
                ("linger.ms", "5"),
            ])
            .create()?;
        Ok(Self {
            producer,
            suffix: suffix.into(),
        })
    }

    /// The dead-letter topic for a source topic.
    pub fn topic_for(&self, topic: &str) -> String {
        format!("{topic}{}", self.suffix)
    }
}

#[async_trait]
impl DeadLetterSink for KafkaDeadLetters {
    async fn send(&self, letters: &[DeadLetter]) -> Result<(), SinkError> {
        let deliveries = letters.iter().map(|letter| async move {
            let topic = self.topic_for(&letter.record.topic);
            let record = &letter.record;
            crate::embedded::send(
                &self.producer,
                &topic,
                record.key.as_deref(),
                &letter.headers(),
                &record.payload,
            )
            .await
            .map_err(|error| SinkError(Box::new(error)))
        });
        for delivery in futures::future::join_all(deliveries).await {
            delivery?;
        }
        Ok(())
    }
}
