//! Shared helpers for the consumer tests: records in every format, a store that can go down.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use patron_domain::CustomerId;
use patron_kafka::testing::TestRecord;
use patron_proto::events::v1 as pb;
use patron_store::{
    AppendBatch, AppendReceipt, EventStore, Position, RecordedEvent, SourceOffset, StoreError,
};
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

/// Wraps a store; while `down` is set, appends fail as if the database were unreachable, and
/// the time of each failed attempt is recorded.
pub struct SwitchableStore<S> {
    pub inner: S,
    pub down: AtomicBool,
    pub failed_attempts: Mutex<Vec<Instant>>,
    /// Added to every successful append, to make a consumer slow.
    pub latency: Duration,
}

impl<S> SwitchableStore<S> {
    pub fn new(inner: S, down: bool) -> Arc<Self> {
        Arc::new(Self {
            inner,
            down: AtomicBool::new(down),
            failed_attempts: Mutex::new(Vec::new()),
            latency: Duration::ZERO,
        })
    }

    pub fn slow(inner: S, latency: Duration) -> Arc<Self> {
        Arc::new(Self {
            inner,
            down: AtomicBool::new(false),
            failed_attempts: Mutex::new(Vec::new()),
            latency,
        })
    }
}

#[async_trait]
impl<S: EventStore> EventStore for SwitchableStore<S> {
    async fn append(&self, batch: &AppendBatch) -> Result<AppendReceipt, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            self.failed_attempts.lock().unwrap().push(Instant::now());
            return Err(StoreError::Unavailable(
                "connection refused (test outage)".into(),
            ));
        }
        tokio::time::sleep(self.latency).await;
        self.inner.append(batch).await
    }
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, limit).await
    }
    async fn read_stream(
        &self,
        c: &CustomerId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(c, after, limit).await
    }
    async fn head(&self) -> Result<Position, StoreError> {
        self.inner.head().await
    }
    async fn stream_version(&self, c: &CustomerId) -> Result<u64, StoreError> {
        self.inner.stream_version(c).await
    }
    async fn source_offsets(&self, consumer: &str) -> Result<Vec<SourceOffset>, StoreError> {
        self.inner.source_offsets(consumer).await
    }
}
