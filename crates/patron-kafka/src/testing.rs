//! Test helpers: an in-process mock cluster, producing records and reading topics back.
//!
//! librdkafka's mock cluster speaks the real protocol on loopback ports, so other processes
//! (the `patron` binary under test) can use its bootstrap address too. It keeps only a few MiB
//! per partition: fine for client logic, not for volume.

#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use futures::StreamExt as _;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};

/// The in-process cluster tests use: [`crate::EmbeddedKafka`].
pub type MockKafka = crate::EmbeddedKafka;

impl crate::EmbeddedKafka {
    /// Starts a cluster of `brokers` brokers for a test, panicking if it cannot.
    pub fn start_for_test(brokers: i32) -> Self {
        Self::with_brokers(brokers).expect("start the mock cluster")
    }
}

/// Creates a topic on a real broker (the mock cluster does not support the admin API).
pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics request");
    for result in results {
        if let Err((topic, code)) = result {
            assert!(
                code == rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                "cannot create topic {topic}: {code}"
            );
        }
    }
}

/// A record to produce.
pub type TestRecord = crate::OutboundRecord;

/// A record read back.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub payload: Vec<u8>,
}

impl ReadRecord {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Produces records with an idempotent producer and waits for every acknowledgement.
pub async fn produce(bootstrap: &str, topic: &str, records: &[TestRecord]) {
    produce_with(bootstrap, topic, records, 10_000).await;
}

/// Like [`produce`], with at most `batch` records per produce request batch. Some brokers only
/// serve fetches from batch boundaries; tests that restart consumers mid-batch use `1`.
pub async fn produce_with(bootstrap: &str, topic: &str, records: &[TestRecord], batch: usize) {
    let mut kafka = crate::KafkaSettings::new(bootstrap);
    kafka.options = vec![
        (
            "linger.ms".into(),
            if batch > 1 { "20" } else { "0" }.into(),
        ),
        ("batch.num.messages".into(), batch.to_string()),
        // Records a little over a megabyte, which brokers accept by default, are test input.
        ("message.max.bytes".into(), "4000000".into()),
    ];
    let producer = crate::Producer::new(&kafka).expect("producer");
    for chunk in records.chunks(10_000) {
        producer
            .send_all(topic, chunk)
            .await
            .expect("produce test records");
    }
}

/// Reads a topic from the beginning until `expected` records arrived or `within` elapsed.
pub async fn read_topic(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    within: Duration,
) -> Vec<ReadRecord> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut records = Vec::new();
    let mut stream = consumer.stream();
    let deadline = tokio::time::Instant::now() + within;
    while records.len() < expected {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        let Ok(Some(Ok(message))) = next else { break };
        records.push(ReadRecord {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            headers: message
                .headers()
                .map(|h| {
                    h.iter()
                        .filter_map(|h| Some((h.key.to_owned(), h.value?.to_vec())))
                        .collect()
                })
                .unwrap_or_default(),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        });
    }
    records
}

/// Reads one partition from `offset` (assigned, not subscribed) until `max` records arrived or
/// `within` elapsed; returns the offsets delivered.
pub async fn read_partition_from(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    max: usize,
    within: Duration,
) -> Vec<i64> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("partition-reader-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(offset))
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let mut offsets = Vec::new();
    let mut stream = consumer.stream();
    let deadline = tokio::time::Instant::now() + within;
    while offsets.len() < max {
        let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, stream.next()).await else {
            break;
        };
        offsets.push(message.offset());
    }
    offsets
}

/// Each partition's high watermark (the offset the next produced record will get).
pub fn high_watermarks(bootstrap: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("watermark client");
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("fetch watermarks")
                .1
        })
        .collect()
}

/// Reads a topic from the beginning with a plain consumer that does nothing with the records,
/// and returns records per second from the first record to the `expected`-th (the group join is
/// not counted): the broker's read ceiling for a benchmark to compare against.
pub async fn read_rate(bootstrap: &str, topic: &str, expected: usize, within: Duration) -> f64 {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("rate-reader-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = tokio::time::Instant::now() + within;
    let mut first = None;
    let mut count = 0usize;
    while count < expected {
        let Ok(Ok(_message)) = tokio::time::timeout_at(deadline, consumer.recv()).await else {
            break;
        };
        first.get_or_insert_with(std::time::Instant::now);
        count += 1;
    }
    first.map_or(0.0, |t| {
        count.saturating_sub(1) as f64 / t.elapsed().as_secs_f64()
    })
}
