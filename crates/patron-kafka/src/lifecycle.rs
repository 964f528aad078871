//! Publishing lifecycle changes from the outbox to a Kafka topic, as `patron.lifecycle.v1`
//! protobuf records keyed by customer id.

use async_trait::async_trait;
use patron_lifecycle::Stage;
use patron_projector::{LifecyclePublisher, OutboxRecord, PublishError};
use patron_proto::lifecycle::v1 as pb;
use prost::Message;

use crate::{KafkaError, KafkaSettings, OutboundRecord, Producer};

/// The default lifecycle topic.
pub const DEFAULT_LIFECYCLE_TOPIC: &str = "patron.lifecycle.v1";

/// Header carrying the dedupe id, for consumers that do not decode the payload to dedupe.
pub const DEDUPE_HEADER: &str = "patron.dedupe_id";

/// Publishes outbox records with an idempotent producer: a batch is acknowledged only when the
/// broker has every record, and records of one customer (one key, one partition) keep their order.
pub struct KafkaLifecyclePublisher {
    producer: Producer,
    topic: String,
}

impl KafkaLifecyclePublisher {
    /// A publisher to `topic`.
    pub fn new(kafka: &KafkaSettings, topic: impl Into<String>) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: Producer::new(kafka)?,
            topic: topic.into(),
        })
    }
}

/// The wire form of a stage.
pub fn stage(stage: Stage) -> pb::Stage {
    match stage {
        Stage::Prospect => pb::Stage::Prospect,
        Stage::New => pb::Stage::New,
        Stage::Active => pb::Stage::Active,
        Stage::Loyal => pb::Stage::Loyal,
        Stage::AtRisk => pb::Stage::AtRisk,
        Stage::Churned => pb::Stage::Churned,
        Stage::Reactivated => pb::Stage::Reactivated,
    }
}

/// The `LifecycleChanged` message of an outbox record.
pub fn lifecycle_changed(record: &OutboxRecord) -> pb::LifecycleChanged {
    let entry = &record.entry;
    let at = entry.transition.at;
    pb::LifecycleChanged {
        dedupe_id: entry.dedupe_key.clone(),
        customer_id: entry.customer_id.as_str().to_owned(),
        from_stage: entry.transition.from.map_or(pb::Stage::Unspecified, stage) as i32,
        to_stage: stage(entry.transition.to) as i32,
        occurred_at: Some(prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
        }),
        rule: entry.transition.rule.clone(),
        facts: entry.transition.facts.clone().into_iter().collect(),
        sequence: u64::try_from(entry.seq).unwrap_or(u64::MAX),
        position: entry.position.0,
        outbox_id: u64::try_from(record.id).unwrap_or(0),
        retracts_dedupe_id: entry.retracts.clone().unwrap_or_default(),
        historical: entry.historical,
        consent: entry.consent.clone().into_iter().collect(),
    }
}

#[async_trait]
impl LifecyclePublisher for KafkaLifecyclePublisher {
    async fn publish(&self, records: &[OutboxRecord]) -> Result<(), PublishError> {
        let outbound: Vec<OutboundRecord> = records
            .iter()
            .map(|record| OutboundRecord {
                key: Some(record.entry.customer_id.as_str().as_bytes().to_vec()),
                headers: vec![
                    ("content-type".into(), b"application/protobuf".to_vec()),
                    (
                        DEDUPE_HEADER.into(),
                        record.entry.dedupe_key.as_bytes().to_vec(),
                    ),
                ],
                payload: lifecycle_changed(record).encode_to_vec(),
            })
            .collect();
        self.producer
            .send_all(&self.topic, &outbound)
            .await
            .map_err(|error| PublishError(error.to_string()))
    }
}
