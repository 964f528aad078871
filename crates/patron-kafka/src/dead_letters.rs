//! The dead-letter producer.

use std::time::Duration;

use async_trait::async_trait;
use patron_ingest::{DeadLetter, DeadLetterSink, SinkError};
use rdkafka::producer::{FutureProducer, Producer as _};
use rdkafka::types::RDKafkaRespErr;

use crate::{KafkaError, KafkaSettings};

/// Sends dead letters to `<original topic><suffix>` (`customer-events.dlq` by default), keeping
/// the original key, headers and payload and adding `patron.original.*` and `patron.error.*`
/// headers. An idempotent producer; `send` returns only once every letter is acknowledged.
///
/// Every letter fits in a message: a record too large to forward whole (a broker may accept a
/// record a little over the producer's `message.max.bytes`) is sent without its payload, then
/// without its own headers, then without its key, each noted in a `patron.*.omitted` header
/// (see [`DeadLetter::fitted`]).
pub struct KafkaDeadLetters {
    producer: FutureProducer,
    suffix: String,
    /// The most a letter may take (key, headers, payload).
    max_letter_bytes: usize,
}

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;
/// Room left in a message for the record's framing.
const FRAMING_BYTES: usize = 16 * 1024;

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
        let message_max_bytes = kafka
            .options
            .iter()
            .rev()
            .find(|(key, _)| key == "message.max.bytes")
            .and_then(|(_, value)| value.parse::<usize>().ok())
            .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES);
        Ok(Self {
            producer,
            suffix: suffix.into(),
            max_letter_bytes: message_max_bytes.saturating_sub(FRAMING_BYTES),
        })
    }

    /// Checks that the dead-letter topic of each of `sources` exists (or that the broker created
    /// it when asked for its metadata). A topic the broker does not know and will not create, or
    /// one this client may not write, is an error naming it: letters that can never be delivered
    /// would otherwise pause ingest for good at the first bad record.
    pub async fn check_topics(
        &self,
        sources: &[String],
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        let producer = self.producer.clone();
        let topics: Vec<String> = sources.iter().map(|t| self.topic_for(t)).collect();
        tokio::task::spawn_blocking(move || {
            for topic in &topics {
                let metadata = producer.client().fetch_metadata(Some(topic), timeout)?;
                for found in metadata.topics() {
                    match found.error() {
                        None
                        // Being created (auto-creation): usable in a moment.
                        | Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE) => {}
                        Some(error) => {
                            return Err(KafkaError::Config(format!(
                                "dead-letter topic {topic}: {} ({error:?}); create it (or let the \
                                 broker create topics) and allow this client to write to it",
                                rdkafka::error::RDKafkaErrorCode::from(error)
                            )));
                        }
                    }
                }
            }
            Ok(())
        })
        .await
        .map_err(|error| KafkaError::Config(format!("dead-letter topic check failed: {error}")))?
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
            let sent = letter.fitted(self.max_letter_bytes);
            if sent.payload.len() < letter.record.payload.len() {
                tracing::warn!(
                    %topic,
                    partition = letter.record.partition,
                    offset = letter.record.offset,
                    bytes = letter.record.payload.len(),
                    "dead letter too large to forward whole: sent without its payload"
                );
            }
            crate::embedded::send(
                &self.producer,
                &topic,
                sent.key.as_deref(),
                &sent.headers,
                &sent.payload,
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
