//! The embedded broker and a plain producer, for `patron dev`: librdkafka's in-process mock
//! cluster speaks the real protocol on a loopback port, so any Kafka client can use it. It keeps
//! only a few MiB per partition and nothing across restarts: a demo broker, not a store.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};

use crate::{KafkaError, KafkaSettings};

/// An in-process Kafka cluster on loopback.
pub struct EmbeddedKafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedKafka {
    /// Starts a one-broker cluster.
    pub fn start() -> Result<Self, KafkaError> {
        Self::with_brokers(1)
    }

    /// Starts a cluster of `brokers` brokers.
    pub fn with_brokers(brokers: i32) -> Result<Self, KafkaError> {
        Ok(Self {
            cluster: MockCluster::new(brokers)?,
        })
    }

    /// Its `bootstrap.servers`, for any client.
    pub fn bootstrap(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Creates a topic.
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), KafkaError> {
        Ok(self.cluster.create_topic(name, partitions, 1)?)
    }
}

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundRecord {
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The bytes.
    pub payload: Vec<u8>,
}

/// An idempotent producer that waits for every acknowledgement.
pub struct Producer {
    producer: FutureProducer,
}

impl Producer {
    /// Creates the producer (`kafka`'s options may tune batching, e.g. `batch.num.messages`).
    pub fn new(kafka: &KafkaSettings) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: kafka
                .config(&[("enable.idempotence", "true"), ("linger.ms", "5")])
                .create()?,
        })
    }

    /// Sends records to a topic and waits until the broker acknowledged all of them.
    pub async fn send_all(
        &self,
        topic: &str,
        records: &[OutboundRecord],
    ) -> Result<(), KafkaError> {
        let sends = records.iter().map(|r| {
            send(
                &self.producer,
                topic,
                r.key.as_deref(),
                &r.headers,
                &r.payload,
            )
        });
        for result in futures::future::join_all(sends).await {
            result?;
        }
        Ok(())
    }
}

/// Sends one record and waits for its acknowledgement: the one place records are built for
/// rdkafka, shared by the dead-letter producer and [`Producer`].
pub(crate) async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    headers: &[(String, Vec<u8>)],
    payload: &[u8],
) -> Result<(), rdkafka::error::KafkaError> {
    let headers = headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: Some(v),
        })
    });
    let mut record = FutureRecord::<[u8], [u8]>::to(topic)
        .payload(payload)
        .headers(headers);
    if let Some(key) = key {
        record = record.key(key);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|(error, _)| error)
}
