//! The live projector: follows the event store from the active generation's checkpoint, writes
//! each page of changes with its checkpoint in one transaction, and appends ticks when the log
//! is quiet so that time-driven transitions fire without customer events.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use patron_domain::{Currency, CustomerId, Event, EventBody, Tick};
use patron_lifecycle::Rules;
use patron_store::{AppendBatch, EventStore, ExpectedVersion, Position};
use uuid::Uuid;

use crate::Projection;
use crate::port::{Generation, ReadModelError, ReadModelStore};

/// Where the projector gets the current time (only to decide when to append a tick: the
/// projection itself never reads a clock).
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// How a projector runs.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// The lifecycle rules.
    pub rules: Rules,
    /// The rules as configured (TOML), stored with each generation to detect a change.
    pub rules_text: String,
    /// Most events read and committed per transaction.
    pub batch: usize,
    /// How long to wait before looking for new events when caught up.
    pub idle_poll: Duration,
    /// Append a tick when event time lags the clock by this much while the log is quiet.
    pub tick_interval: Duration,
    /// Longest wait between retries while the database is unreachable.
    pub retry_max_delay: Duration,
}

impl ProjectorConfig {
    /// Defaults for `rules`: pages of 2,000, 200 ms idle poll, a tick after 60 s of quiet.
    pub fn new(rules: Rules, rules_text: impl Into<String>) -> Self {
        Self {
            rules,
            rules_text: rules_text.into(),
            batch: 2_000,
            idle_poll: Duration::from_millis(200),
            tick_interval: Duration::from_secs(60),
            retry_max_delay: Duration::from_secs(10),
        }
    }

    /// The reporting currency the rules name.
    pub fn currency(&self) -> Result<Currency, ReadModelError> {
        Currency::from_code(&self.rules.currency)
            .map_err(|error| ReadModelError::Corrupt(format!("lifecycle rules: {error}")))
    }
}

/// What one [`LiveProjection::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Events applied.
    pub applied: usize,
    /// Whether the projection has reached the head of the log.
    pub caught_up: bool,
}

/// The active generation held in memory, with the event store and read-model store it follows.
pub struct LiveProjection {
    store: Arc<dyn EventStore>,
    models: Arc<dyn ReadModelStore>,
    config: ProjectorConfig,
    currency: Currency,
    generation: Generation,
    projection: Projection,
}

impl LiveProjection {
    /// Loads the active generation, creating and activating the first one on a fresh database.
    ///
    /// Fails if the active generation was built with other rules: a rules change takes a
    /// `patron rebuild`, which swaps in a generation built with the new ones.
    pub async fn open(
        store: Arc<dyn EventStore>,
        models: Arc<dyn ReadModelStore>,
        config: ProjectorConfig,
    ) -> Result<Self, ReadModelError> {
        let currency = config.currency()?;
        let generation = match models.active_generation().await? {
            Some(generation) => generation,
            None => {
                let created = models.create_generation(&config.rules_text).await?;
                let empty = Projection::new().take_changes();
                models
                    .activate(created.id, Position::ZERO, &empty, &[])
                    .await?;
                created
            }
        };
        // The same text, or text that reads as the same rules: a generation recorded before a
        // rule was added (its key missing, so at its default) needs no rebuild.
        let same_rules = generation.rules.trim() == config.rules_text.trim()
            || Rules::from_toml_str(&generation.rules).is_ok_and(|stored| stored == config.rules);
        if !same_rules {
            return Err(ReadModelError::RulesChanged {
                generation: generation.id,
            });
        }
        let snapshot = models.load(generation.id).await?;
        let mut projection = Projection::restore(
            snapshot.customers,
            generation.watermark,
            generation.checkpoint,
            generation.scored_at,
            &config.rules,
        );
        restore_model(&mut projection, store.as_ref()).await?;
        Ok(Self {
            store,
            models,
            config,
            currency,
            generation,
            projection,
        })
    }

    /// The in-memory projection (what has been committed, after a successful step).
    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    /// The generation being written.
    pub fn generation(&self) -> &Generation {
        &self.generation
    }

    /// Reads one page after the checkpoint, applies it and commits the changes with the new
    /// checkpoint. After an error the in-memory state may be ahead of the database: reopen.
    #[tracing::instrument(name = "projector.page", skip_all,
        fields(generation = self.generation.id, after = self.projection.checkpoint().0,
               events, transitions, checkpoint))]
    pub async fn step(&mut self) -> Result<Step, ReadModelError> {
        let expected = self.projection.checkpoint();
        let page = self.store.read_all(expected, self.config.batch).await?;
        if page.is_empty() {
            return Ok(Step {
                applied: 0,
                caught_up: true,
            });
        }
        let caught_up = page.len() < self.config.batch;
        let applied = self
            .projection
            .apply_page(&page, &self.config.rules, self.currency);
        let changes = self.projection.take_changes();
        let span = tracing::Span::current();
        span.record("events", applied);
        span.record("transitions", changes.outbox.len());
        span.record("checkpoint", changes.checkpoint.0);
        let started = std::time::Instant::now();
        self.models
            .commit(self.generation.id, expected, &changes)
            .await?;
        metrics::histogram!("patron_projection_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("patron_projection_events_total").increment(applied as u64);
        metrics::counter!("patron_projection_transitions_total")
            .increment(changes.outbox.len() as u64);
        metrics::gauge!("patron_projection_checkpoint").set(changes.checkpoint.0 as f64);
        if let Some(last) = page.last() {
            // How far behind event time and the log the read models are, as of this commit.
            let behind = (chrono::Utc::now() - last.event.occurred_at).num_milliseconds();
            metrics::gauge!("patron_projection_event_age_seconds").set(behind as f64 / 1000.0);
        }
        if let Ok(head) = self.store.head().await {
            metrics::gauge!("patron_projection_lag_positions")
                .set(head.0.saturating_sub(changes.checkpoint.0) as f64);
        }
        self.generation.checkpoint = changes.checkpoint;
        self.generation.watermark = changes.watermark;
        Ok(Step { applied, caught_up })
    }

    /// Appends a tick at `now` (to whole seconds) if event time lags it by the tick interval;
    /// returns whether it did. Ticks are events, so a replay sees them where live processing did.
    #[tracing::instrument(name = "projector.tick", skip_all, level = "debug")]
    pub async fn tick_if_quiet(&self, now: DateTime<Utc>) -> Result<bool, ReadModelError> {
        let interval = TimeDelta::from_std(self.config.tick_interval).unwrap_or(TimeDelta::MAX);
        let lagging = self
            .projection
            .watermark()
            .is_none_or(|watermark| now - watermark >= interval);
        // Nothing to fire without customers; an empty store stays empty.
        if !lagging || self.projection.customers().is_empty() {
            return Ok(false);
        }
        let at = now.duration_trunc(TimeDelta::seconds(1)).unwrap_or(now);
        let tick = Event {
            event_id: Uuid::now_v7(),
            customer_id: CustomerId::clock(),
            occurred_at: at,
            source: "patron-projector".into(),
            body: EventBody::Tick(Tick {}),
        };
        let batch = AppendBatch::single(CustomerId::clock(), ExpectedVersion::Any, vec![tick]);
        self.store.append(&batch).await?;
        Ok(true)
    }
}

/// Puts back the model in force from the `$clv` stream: the latest valid model event at or
/// before the projection's checkpoint (the log is the only source of the model, so a resumed
/// projection follows the same one a rebuild would).
pub async fn restore_model(
    projection: &mut Projection,
    store: &dyn EventStore,
) -> Result<(), ReadModelError> {
    const PAGE: usize = 256;
    let stream = CustomerId::clv();
    let mut after = 0;
    loop {
        let page = store.read_stream(&stream, after, PAGE).await?;
        for event in &page {
            projection.restore_model(event);
        }
        match page.last() {
            Some(last) if page.len() == PAGE && last.version > after => after = last.version,
            _ => return Ok(()),
        }
    }
}

/// Runs the live projector until `shutdown` completes: catches up, then polls for new events,
/// appending ticks while the log is quiet. Reopens when a rebuild swapped the generation; waits
/// and retries (with exponential backoff) while a database is unreachable. Returns an error for
/// anything else (e.g. changed rules, a second projector on the same generation).
pub async fn run(
    store: Arc<dyn EventStore>,
    models: Arc<dyn ReadModelStore>,
    config: ProjectorConfig,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ReadModelError> {
    tokio::pin!(shutdown);
    let backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(config.retry_max_delay)
            .without_max_times()
            .build()
    };
    let mut delays = backoff();
    let mut live: Option<LiveProjection> = None;
    loop {
        let outcome = match live.as_mut() {
            None => LiveProjection::open(store.clone(), models.clone(), config.clone())
                .await
                .map(|opened| {
                    tracing::info!(
                        generation = opened.generation.id,
                        checkpoint = opened.generation.checkpoint.0,
                        customers = opened.projection.customers().len(),
                        "projector resumed"
                    );
                    live = Some(opened);
                    Step {
                        applied: 0,
                        caught_up: false,
                    }
                }),
            Some(current) => match current.step().await {
                Ok(step) if step.caught_up => {
                    current.tick_if_quiet(clock.now()).await.map(|ticked| Step {
                        caught_up: !ticked,
                        ..step
                    })
                }
                other => other,
            },
        };
        let wait = match outcome {
            Ok(step) => {
                delays = backoff();
                if step.applied > 0
                    && let Some(current) = live.as_ref()
                {
                    tracing::debug!(
                        applied = step.applied,
                        checkpoint = current.projection.checkpoint().0,
                        "projected"
                    );
                }
                step.caught_up.then_some(config.idle_poll)
            }
            Err(ReadModelError::Superseded(old)) => {
                tracing::info!(old, "a rebuilt generation is now active; reloading");
                live = None;
                None
            }
            Err(error) if error.is_transient() => {
                live = None;
                let delay = delays.next().unwrap_or(config.retry_max_delay);
                tracing::warn!(%error, ?delay, "database unavailable; projector waits and retries");
                Some(delay)
            }
            Err(error) => return Err(error),
        };
        if let Some(wait) = wait {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
        } else if futures_ready(&mut shutdown).await {
            return Ok(());
        }
    }
}

/// Whether `future` has completed, without waiting for it.
async fn futures_ready(future: &mut std::pin::Pin<&mut impl Future<Output = ()>>) -> bool {
    tokio::select! {
        biased;
        () = future.as_mut() => true,
        () = std::future::ready(()) => false,
    }
}
