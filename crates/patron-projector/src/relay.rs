//! The outbox relay: publishes lifecycle transitions from the outbox, in outbox order, at least
//! once, and remembers how far it got.
//!
//! Several relay instances may run with one name (replicas of `patron relay` or `patron serve`):
//! the one holding the relay's lease publishes, the others stand by and take over when it stops
//! or dies. Without it, two relays would each publish every batch, interleaved on the topic, so
//! consumers would see a customer's older records again after newer ones. The lease is not the
//! safety net — the stored offset and idempotent dedupe keys are — it keeps each customer's
//! records on the topic in their order, each once, while nothing crashes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};

use crate::leader::Leadership;
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
    /// This instance, as named in the relay lease (unique per process).
    pub owner: String,
    /// How long the relay lease lasts unless renewed (SQLite; PostgreSQL frees it when the
    /// holder's session ends).
    pub lease_ttl: Duration,
    /// How often a standby tries to take the lease.
    pub standby_poll: Duration,
}

impl RelayConfig {
    /// Defaults: batches of 500, 200 ms idle poll, retries up to 10 s apart.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            batch: 500,
            idle_poll: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(10),
            owner: crate::runner::instance_id(),
            lease_ttl: Duration::from_secs(10),
            standby_poll: Duration::from_secs(1),
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

/// Runs the relay until `shutdown` completes: stands by while another instance holds the relay's
/// lease, publishes while this one does, retrying failures with exponential backoff (a failed
/// batch is sent again, whole and in order), and lets the lease go on the way out.
pub async fn run_relay(
    models: Arc<dyn ReadModelStore>,
    publisher: Arc<dyn LifecyclePublisher>,
    config: RelayConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RelayError> {
    tokio::pin!(shutdown);
    let mut leadership: Option<Leadership> = None;
    let result =
        relay_while_leading(&models, &publisher, &config, &mut shutdown, &mut leadership).await;
    if let Some(leadership) = leadership {
        leadership.release().await;
    }
    result
}

async fn relay_while_leading<F: Future<Output = ()>>(
    models: &Arc<dyn ReadModelStore>,
    publisher: &Arc<dyn LifecyclePublisher>,
    config: &RelayConfig,
    shutdown: &mut std::pin::Pin<&mut F>,
    leadership: &mut Option<Leadership>,
) -> Result<(), RelayError> {
    let backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(config.retry_max_delay)
            .without_max_times()
            .build()
    };
    let mut delays = backoff();
    let mut announced = false;
    loop {
        if leadership.as_ref().is_none_or(|held| !held.is_held()) {
            *leadership = None;
            let lease = match models
                .try_lead_relay(&config.name, &config.owner, config.lease_ttl)
                .await
            {
                Ok(lease) => lease,
                Err(error) if error.is_transient() => None,
                Err(error) => return Err(RelayError::Store(error)),
            };
            match lease {
                Some(lease) => {
                    tracing::info!(relay = %config.name, owner = %config.owner, "this instance now relays");
                    *leadership = Some(Leadership::hold(lease, config.lease_ttl));
                }
                None => {
                    if !announced {
                        tracing::info!(relay = %config.name, "another instance relays; standing by");
                        announced = true;
                    }
                    tokio::select! {
                        biased;
                        () = shutdown.as_mut() => return Ok(()),
                        () = tokio::time::sleep(config.standby_poll) => continue,
                    }
                }
            }
        }
        let wait = match relay_once(models.as_ref(), publisher.as_ref(), config).await {
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
            () = shutdown.as_mut() => return Ok(()),
            () = tokio::time::sleep(wait.unwrap_or(Duration::ZERO)) => {}
        }
    }
}
