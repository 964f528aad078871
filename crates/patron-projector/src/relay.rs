//! The outbox relay: publishes lifecycle transitions from the outbox, in outbox order, at least
//! once, and remembers how far it got.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};

use crate::port::{OutboxRecord, ReadModelError, ReadModelStore};

/// Where transitions are published (e.g. a Kafka topic).
#[async_trait]
pub trait LifecyclePublisher: Send + Sync + 'static {
    /// Publishes `records` in order and returns once every one is durably accepted; on error,
    /// none may be assumed published (the relay sends the whole batch again).
    async fn publish(&self, records: &[OutboxRecord]) -> Result<(), PublishError>;
}

/// A publish that failed; the relay retries it.
#[derive(Debug, thiserror::Error)]
#[error("publishing lifecycle changes failed: {0}")]
pub struct PublishError(pub String);

/// How a relay runs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The relay's name: its offset is stored under it (one per destination).
    pub name: String,
    /// Most records per publish.
    pub batch: usize,
    /// How long to wait before looking again when the outbox is drained.
    pub idle_poll: Duration,
    /// Longest wait between retries.
    pub retry_max_delay: Duration,
}

impl RelayConfig {
    /// Defaults: batches of 500, 200 ms idle poll, retries up to 10 s apart.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            batch: 500,
            idle_poll: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(10),
        }
    }
}

/// Publishes one batch after the stored offset and stores the new offset; returns how many
/// records were published.
#[tracing::instrument(name = "relay.publish", skip_all,
    fields(relay = %config.name, after, records))]
pub async fn relay_once(
    models: &dyn ReadModelStore,
    publisher: &dyn LifecyclePublisher,
    config: &RelayConfig,
) -> Result<usize, RelayError> {
    let after = models.relay_offset(&config.name).await?;
    let records = models.outbox_after(after, config.batch.max(1)).await?;
    let span = tracing::Span::current();
    span.record("after", after);
    span.record("records", records.len());
    let Some(last) = records.last().map(|record| record.id) else {
        return Ok(0);
    };
    publisher.publish(&records).await?;
    metrics::counter!("patron_relay_published_total").increment(records.len() as u64);
    // A crash here publishes the batch again on restart: at least once, in the same order.
    models.set_relay_offset(&config.name, last).await?;
    Ok(records.len())
}

/// Why a relay step failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading the outbox or storing the offset failed.
    #[error(transparent)]
    Store(#[from] ReadModelError),
    /// The destination refused or was unreachable.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Runs the relay until `shutdown` completes, retrying failures with exponential backoff
/// (a failed batch is sent again, whole and in order).
pub async fn run_relay(
    models: Arc<dyn ReadModelStore>,
    publisher: Arc<dyn LifecyclePublisher>,
    config: RelayConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RelayError> {
    tokio::pin!(shutdown);
    let backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(config.retry_max_delay)
            .without_max_times()
            .build()
    };
    let mut delays = backoff();
    loop {
        let wait = match relay_once(models.as_ref(), publisher.as_ref(), &config).await {
            Ok(0) => {
                delays = backoff();
                Some(config.idle_poll)
            }
            Ok(published) => {
                delays = backoff();
                tracing::debug!(published, "relayed lifecycle changes");
                None
            }
            Err(RelayError::Store(error)) if !error.is_transient() => {
                return Err(RelayError::Store(error));
            }
            Err(error) => {
                let delay = delays.next().unwrap_or(config.retry_max_delay);
                tracing::warn!(%error, ?delay, "relay waits and retries");
                Some(delay)
            }
        };
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(wait.unwrap_or(Duration::ZERO)) => {}
        }
    }
}
