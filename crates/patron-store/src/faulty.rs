//! A store wrapper that injects outages and latency, for tests of what sits on top of a store.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use patron_domain::CustomerId;

use crate::{
    AppendBatch, AppendReceipt, EventStore, Position, RecordedEvent, SourceOffset, StoreError,
};

/// Wraps a store. Appends fail with [`StoreError::Unavailable`] while `down` is set and for the
/// next `fail_next` calls; every failed attempt's time is recorded; successful appends are
/// delayed by `latency`. Reads pass through.
pub struct FaultyStore<S> {
    pub inner: S,
    pub down: AtomicBool,
    pub fail_next: AtomicUsize,
    pub latency: Duration,
    pub failed_attempts: Mutex<Vec<Instant>>,
}

impl<S> FaultyStore<S> {
    /// A wrapper that injects nothing yet.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            down: AtomicBool::new(false),
            fail_next: AtomicUsize::new(0),
            latency: Duration::ZERO,
            failed_attempts: Mutex::new(Vec::new()),
        }
    }

    /// Starts down (until `down` is cleared).
    pub fn down(self) -> Self {
        self.down.store(true, Ordering::SeqCst);
        self
    }

    /// Fails the next `n` appends.
    pub fn failing(self, n: usize) -> Self {
        self.fail_next.store(n, Ordering::SeqCst);
        self
    }

    /// Delays every successful append.
    pub fn slow(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// How many appends have failed so far.
    pub fn failures(&self) -> usize {
        self.failed_attempts.lock().unwrap().len()
    }

    fn should_fail(&self) -> bool {
        self.down.load(Ordering::SeqCst)
            || self
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }
}

#[async_trait]
impl<S: EventStore> EventStore for FaultyStore<S> {
    async fn append(&self, batch: &AppendBatch) -> Result<AppendReceipt, StoreError> {
        if self.should_fail() {
            self.failed_attempts.lock().unwrap().push(Instant::now());
            return Err(StoreError::Unavailable(
                "connection refused (injected outage)".into(),
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
        customer_id: &CustomerId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner
            .read_stream(customer_id, after_version, limit)
            .await
    }
    async fn head(&self) -> Result<Position, StoreError> {
        self.inner.head().await
    }
    async fn stream_version(&self, customer_id: &CustomerId) -> Result<u64, StoreError> {
        self.inner.stream_version(customer_id).await
    }
    async fn source_offsets(&self, consumer: &str) -> Result<Vec<SourceOffset>, StoreError> {
        self.inner.source_offsets(consumer).await
    }
    async fn resolve_identity(
        &self,
        identity: &patron_domain::Identity,
    ) -> Result<CustomerId, StoreError> {
        if self.should_fail() {
            return Err(StoreError::Unavailable(
                "connection refused (injected outage)".into(),
            ));
        }
        self.inner.resolve_identity(identity).await
    }
    async fn merged_into(&self, customer: &CustomerId) -> Result<Option<CustomerId>, StoreError> {
        self.inner.merged_into(customer).await
    }
}
