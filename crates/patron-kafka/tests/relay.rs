//! The outbox relay against a Kafka cluster (librdkafka's mock): every transition arrives as a
//! `patron.lifecycle.v1` protobuf record keyed by customer, in order per customer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, TimeZone, Utc};
use patron_domain::{ConsentChanged, Currency, Event, EventBody, Money, Purchase};
use patron_kafka::testing::{MockKafka, read_topic};
use patron_kafka::{DEDUPE_HEADER, KafkaLifecyclePublisher, KafkaSettings};
use patron_lifecycle::Rules;
use patron_projector::{LiveProjection, ProjectorConfig, ReadModelStore, RelayConfig, relay_once};
use patron_proto::lifecycle::v1::LifecycleChanged;
use patron_store::contract::customer;
use patron_store::{AppendBatch, EventStore, ExpectedVersion};
use patron_store_sql::SqlEventStore;
use prost::Message as _;
use uuid::Uuid;

const TOPIC: &str = "patron.lifecycle.v1";

/// 12 customers, each buying four times 20 days apart, at different starts; `c-00` granted
/// `marketing_email` the day before its first purchase.
fn purchases() -> Vec<Event> {
    let usd = Currency::from_code("USD").unwrap();
    let start = Utc.with_ymd_and_hms(2025, 1, 1, 9, 0, 0).unwrap();
    let mut events = Vec::new();
    for c in 0..12 {
        for k in 0..4 {
            events.push(Event {
                event_id: Uuid::new_v4(),
                customer_id: customer(&format!("c-{c:02}")),
                occurred_at: start + TimeDelta::days(c * 3 + k * 20),
                source: "test".into(),
                body: EventBody::Purchase(Purchase {
                    order_id: format!("o-{c}-{k}"),
                    amount: Money::new(12_000, usd).unwrap(),
                    items: Vec::new(),
                    extra: Default::default(),
                }),
            });
        }
    }
    events.push(Event {
        event_id: Uuid::new_v4(),
        customer_id: customer("c-00"),
        occurred_at: start - TimeDelta::days(1),
        source: "crm".into(),
        body: EventBody::ConsentChanged(ConsentChanged {
            purpose: "marketing_email".into(),
            granted: true,
            extra: Default::default(),
        }),
    });
    events.sort_by_key(|e| e.occurred_at);
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_publishes_every_transition_keyed_and_in_order_per_customer() {
    let (sqlite, _guard) = patron_store_sql::testing::fresh_sqlite().await;
    let sql = SqlEventStore::Sqlite(sqlite);
    let store: Arc<dyn EventStore> = sql.clone().into_dyn();
    for event in purchases() {
        let batch =
            AppendBatch::single(event.customer_id.clone(), ExpectedVersion::Any, vec![event]);
        store.append(&batch).await.unwrap();
    }
    let models: Arc<dyn ReadModelStore> = sql.read_models();
    let config = ProjectorConfig::new(Rules::default(), Rules::example_toml());
    let mut live = LiveProjection::open(store.clone(), models.clone(), config)
        .await
        .unwrap();
    while !live.step().await.unwrap().caught_up {}
    // A year of silence: everyone becomes at risk, then churned.
    let far = live.projection().watermark().unwrap() + TimeDelta::days(365);
    assert!(live.tick_if_quiet(far).await.unwrap());
    while !live.step().await.unwrap().caught_up {}
    let outbox = models.outbox_after(0, 10_000).await.unwrap();
    assert!(
        outbox.len() >= 12 * 4,
        "each customer went new → … → churned: {}",
        outbox.len()
    );

    let kafka = MockKafka::start_for_test(1);
    kafka.create_topic(TOPIC, 3).unwrap();
    let publisher =
        KafkaLifecyclePublisher::new(&KafkaSettings::new(kafka.bootstrap()), TOPIC).unwrap();
    let mut relay = RelayConfig::new("test");
    relay.batch = 7;
    while relay_once(models.as_ref(), &publisher, &relay)
        .await
        .unwrap()
        > 0
    {}
    assert_eq!(
        models.relay_offset("test").await.unwrap(),
        outbox.last().unwrap().id
    );

    let records = read_topic(
        &kafka.bootstrap(),
        TOPIC,
        outbox.len(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(records.len(), outbox.len(), "one record per outbox entry");
    let mut by_customer: BTreeMap<String, Vec<(i32, i64, LifecycleChanged)>> = BTreeMap::new();
    for record in &records {
        let change = LifecycleChanged::decode(record.payload.as_slice()).expect("protobuf payload");
        assert_eq!(
            record.key.as_deref(),
            Some(change.customer_id.as_bytes()),
            "keyed by customer"
        );
        assert_eq!(
            record.header(DEDUPE_HEADER).as_deref(),
            Some(change.dedupe_id.as_str())
        );
        assert_eq!(
            record.header("content-type").as_deref(),
            Some("application/protobuf")
        );
        assert!(
            !change.rule.is_empty() && change.occurred_at.is_some(),
            "{change:?}"
        );
        by_customer
            .entry(change.customer_id.clone())
            .or_default()
            .push((record.partition, record.offset, change));
    }
    let published: BTreeSet<String> = by_customer
        .values()
        .flatten()
        .map(|(_, _, c)| c.dedupe_id.clone())
        .collect();
    let expected: BTreeSet<String> = outbox.iter().map(|r| r.entry.dedupe_key.clone()).collect();
    assert_eq!(published, expected, "every transition exactly once");
    for (customer, mut changes) in by_customer {
        let partitions: BTreeSet<i32> = changes.iter().map(|(p, _, _)| *p).collect();
        assert_eq!(partitions.len(), 1, "{customer}: one partition");
        changes.sort_by_key(|(_, offset, _)| *offset);
        let sequence: Vec<u64> = changes.iter().map(|(_, _, c)| c.sequence).collect();
        let in_order: Vec<u64> = (0..sequence.len() as u64).collect();
        assert_eq!(sequence, in_order, "{customer}: stage history order");
        let last = &changes.last().unwrap().2;
        assert_eq!(
            last.to_stage,
            patron_proto::lifecycle::v1::Stage::Churned as i32
        );
        // Every change carries the customer's consent when it fired.
        let consent: std::collections::HashMap<String, bool> = match customer.as_str() {
            "c-00" => [("marketing_email".to_owned(), true)].into(),
            _ => Default::default(),
        };
        for (_, _, change) in &changes {
            assert_eq!(change.consent, consent, "{customer}: {change:?}");
        }
    }
}
