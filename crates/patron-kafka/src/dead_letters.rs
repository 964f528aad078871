//! The dead-letter producer.

use std::time::Duration;

use async_trait::async_trait;
use patron_ingest::{DeadLetter, DeadLetterSink, SinkError};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

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
        let deliveries = letters.iter().map(|letter| {
            let topic = self.topic_for(&letter.record.topic);
            let headers =
                letter
                    .headers()
                    .into_iter()
                    .fold(OwnedHeaders::new(), |headers, (key, value)| {
                        headers.insert(Header {
                            key: &key,
                            value: Some(&value),
                        })
                    });
            async move {
                let mut record = FutureRecord::<[u8], [u8]>::to(&topic)
                    .payload(&letter.record.payload)
                    .headers(headers);
                if let Some(key) = &letter.record.key {
                    record = record.key(key.as_slice());
                }
                self.producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .map_err(|(error, _)| SinkError(Box::new(error)))
            }
        });
        for delivery in futures::future::join_all(deliveries).await {
            delivery?;
        }
        Ok(())
    }
}
