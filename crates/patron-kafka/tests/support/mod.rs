//! Shared helpers for the consumer tests: records in every format, a store that can go down.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use patron_kafka::testing::TestRecord;
use patron_proto::events::v1 as pb;
use prost::Message as _;

pub fn event_id(n: u64) -> String {
    uuid::Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0000 | u128::from(n)).to_string()
}

pub fn structured(n: u64, customer: &str) -> TestRecord {
    let body = serde_json::json!({
        "specversion": "1.0", "id": event_id(n), "source": "shop", "type": "patron.purchase.v1",
        "subject": customer, "time": "2026-11-20T10:00:00Z", "datacontenttype": "application/json",
        "data": {"order_id": format!("o-{n}"), "amount": {"minor_units": 1000 + n, "currency": "EUR"}}
    });
    TestRecord {
        key: Some(customer.as_bytes().to_vec()),
        headers: vec![(
            "content-type".into(),
            b"application/cloudevents+json".to_vec(),
        )],
        payload: body.to_string().into_bytes(),
    }
}

pub fn binary(n: u64, customer: &str) -> TestRecord {
    TestRecord {
        key: Some(customer.as_bytes().to_vec()),
        headers: vec![
            ("ce_specversion".into(), b"1.0".to_vec()),
            ("ce_id".into(), event_id(n).into_bytes()),
            ("ce_source".into(), b"app".to_vec()),
            ("ce_type".into(), b"patron.interaction.v1".to_vec()),
            ("ce_time".into(), b"2026-11-20T10:00:00Z".to_vec()),
            ("content-type".into(), b"application/json".to_vec()),
        ],
        payload: br#"{"channel": "app", "kind": "app_open"}"#.to_vec(),
    }
}

pub fn protobuf(n: u64, customer: &str) -> TestRecord {
    let event = pb::CustomerEvent {
        identity: None,
        event_id: event_id(n),
        customer_id: customer.into(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: 1_795_000_000,
            nanos: 0,
        }),
        source: "survey".into(),
        extra: None,
        body: Some(pb::customer_event::Body::Feedback(pb::Feedback {
            nps: Some(9),
            csat: None,
            comment: None,
        })),
    };
    TestRecord {
        key: Some(customer.as_bytes().to_vec()),
        headers: vec![("content-type".into(), b"application/protobuf".to_vec())],
        payload: event.encode_to_vec(),
    }
}

/// A record in one of the three formats, by `n`.
pub fn any_format(n: u64) -> TestRecord {
    let customer = format!("c-{}", n % 37);
    match n % 3 {
        0 => structured(n, &customer),
        1 => binary(n, &customer),
        _ => protobuf(n, &customer),
    }
}

/// Polls `check` until it holds or `within` passes; panics with `what` on timeout.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every customer event in the log, in order: the log less Patron's own streams (the source
/// progress ingest writes beside the events).
pub async fn customer_events(
    store: &dyn patron_store::EventStore,
) -> Vec<patron_store::RecordedEvent> {
    let mut out = Vec::new();
    let mut after = patron_store::Position::ZERO;
    loop {
        let page = store.read_all(after, 5_000).await.unwrap();
        let Some(last) = page.last() else {
            return out;
        };
        after = last.position;
        out.extend(
            page.into_iter()
                .filter(|e| !e.event.customer_id.is_reserved()),
        );
    }
}

/// The source partitions the log says are behind once every progress report is read (what
/// would hold a projector's watermark), and how many reports there were.
pub async fn sources_behind(
    store: &dyn patron_store::EventStore,
) -> (patron_projector::SourceHold, usize) {
    let stream = patron_domain::CustomerId::sources();
    let reports = store.read_stream(&stream, 0, 100_000).await.unwrap().len();
    let hold = patron_projector::sources_behind(store).await.unwrap();
    (hold, reports)
}
