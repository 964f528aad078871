//! The live projector: follows the event store from the active generation's checkpoint, writes
//! each page of changes with its checkpoint in one transaction, and appends ticks when the log
//! is quiet so that time-driven transitions fire without customer events.
//!
//! Several instances may run on one database: the one holding the lease ([`crate::Lease`]) is
//! active, the others stand by and take over when it dies or lets go.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use patron_domain::{Currency, CustomerId, Event, EventBody, Tick};
use patron_lifecycle::Rules;
use patron_store::{AppendBatch, EventStore, ExpectedVersion, Position, RecordedEvent, StoreError};
use uuid::Uuid;

use crate::leader::Leadership;
use crate::port::{Generation, Lease, Publish, ReadModelError, ReadModelStore};
use crate::{Projection, SourceHold};

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
    /// How long the active instance's lease lasts unrenewed (it is renewed every quarter of it):
    /// on SQLite, how soon a standby takes over from an instance that died without letting go.
    /// (On PostgreSQL the lease is a session lock, freed as soon as its holder's connection
    /// closes.)
    pub lease_ttl: Duration,
    /// How often a standby tries to take the lease.
    pub standby_poll: Duration,
    /// Whether this instance is the active projector now, kept up to date by [`run`]. Clones of
    /// the config share it: pass it to work only the active instance should do, such as the
    /// scheduled CLV fits of `patron serve` (see [`crate::clv::run_fitter`]).
    pub active: Arc<AtomicBool>,
}

impl ProjectorConfig {
    /// Defaults for `rules`: pages of 2,000, 200 ms idle poll, a tick after 60 s of quiet, a 10 s
    /// lease that standbys try to take every second.
    pub fn new(rules: Rules, rules_text: impl Into<String>) -> Self {
        Self {
            rules,
            rules_text: rules_text.into(),
            batch: 2_000,
            idle_poll: Duration::from_millis(200),
            tick_interval: Duration::from_secs(60),
            retry_max_delay: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(10),
            standby_poll: Duration::from_secs(1),
            active: Arc::new(AtomicBool::new(false)),
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
                    .activate(created.id, Position::ZERO, &empty, Publish::Held(&[]))
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
        projection.restore_latest_evidence(generation.latest_evidence);
        restore_from_log(&mut projection, store.as_ref()).await?;
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
        let (refolds_before, _) = self.projection.refold_counts();
        let applied = crate::apply_page_from(
            &mut self.projection,
            self.store.as_ref(),
            &page,
            &self.config.rules,
            self.currency,
        )
        .await?;
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
        let retractions = changes
            .outbox
            .iter()
            .filter(|entry| entry.retracts.is_some())
            .count();
        metrics::counter!("patron_projection_transitions_total")
            .increment((changes.outbox.len() - retractions) as u64);
        metrics::counter!("patron_projection_retractions_total").increment(retractions as u64);
        let (refolds, _) = self.projection.refold_counts();
        metrics::counter!("patron_projection_refolds_total")
            .increment(refolds.saturating_sub(refolds_before));
        metrics::gauge!("patron_projection_checkpoint").set(changes.checkpoint.0 as f64);
        metrics::gauge!("patron_projection_partitions_behind")
            .set(self.projection.sources_behind().iter().count() as f64);
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
        self.generation.latest_evidence = changes.latest_evidence;
        Ok(Step { applied, caught_up })
    }

    /// Appends a tick at `now` (to whole seconds) if event time lags it by the tick interval;
    /// returns whether it did. Ticks are events, so a replay sees them where live processing did.
    #[tracing::instrument(name = "projector.tick", skip_all, level = "debug")]
    pub async fn tick_if_quiet(&self, now: DateTime<Utc>) -> Result<bool, ReadModelError> {
        let interval = TimeDelta::from_std(self.config.tick_interval).unwrap_or(TimeDelta::MAX);
        // The latest evidence of time, not the watermark (which trails it by the allowed
        // lateness): a tick is due when nothing has shown time passing for an interval.
        let lagging = self
            .projection
            .latest_evidence()
            .is_none_or(|evidence| now - evidence >= interval);
        // Nothing to fire without customers; an empty store stays empty. While a source
        // partition is read behind its end, the wall clock proves nothing: its events are on
        // their way (and the watermark waits for them whatever a tick says).
        if !lagging
            || self.projection.customers().is_empty()
            || !self.projection.sources_behind().is_empty()
        {
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

/// Puts back what a resumed projection keeps from Patron's own streams, up to its checkpoint:
/// the model in force (the latest valid event of `$clv`) and the source partitions behind
/// (`$sources`). The log is their only source, so a resumed projection follows what a rebuild
/// would.
pub async fn restore_from_log(
    projection: &mut Projection,
    store: &dyn EventStore,
) -> Result<(), ReadModelError> {
    for stream in [CustomerId::clv(), CustomerId::sources()] {
        for_each_in_stream(store, &stream, |event| {
            projection.restore_model(event);
            projection.restore_progress(event);
        })
        .await?;
    }
    Ok(())
}

/// The source partitions the whole log reports behind (what holds a projector that has applied
/// it all), from the `$sources` stream.
pub async fn sources_behind(store: &dyn EventStore) -> Result<SourceHold, StoreError> {
    let mut hold = SourceHold::default();
    for_each_in_stream(store, &CustomerId::sources(), |event| {
        if let EventBody::SourceProgress(progress) = &event.event.body {
            hold.apply(progress);
        }
    })
    .await?;
    Ok(hold)
}

/// Calls `f` with every event of `stream`, in order, reading it page by page.
async fn for_each_in_stream(
    store: &dyn EventStore,
    stream: &CustomerId,
    mut f: impl FnMut(&RecordedEvent),
) -> Result<(), StoreError> {
    const PAGE: usize = 256;
    let mut after = 0;
    loop {
        let page = store.read_stream(stream, after, PAGE).await?;
        page.iter().for_each(&mut f);
        match page.last() {
            Some(last) if page.len() == PAGE && last.version > after => after = last.version,
            _ => return Ok(()),
        }
    }
}

/// Runs the live projector until `shutdown` completes. Stands by while another instance holds the
/// lease, and takes it over when that one dies or lets go. While active: catches up, then polls
/// for new events, appending ticks while the log is quiet. Reloads when a rebuild swapped the
/// generation or another writer moved the checkpoint; steps back to standby when the lease is
/// lost; waits and retries (with exponential backoff) while a database is unreachable. Returns an
/// error for anything else (e.g. changed rules).
pub async fn run(
    store: Arc<dyn EventStore>,
    models: Arc<dyn ReadModelStore>,
    config: ProjectorConfig,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ReadModelError> {
    tokio::pin!(shutdown);
    let owner = instance_id();
    loop {
        metrics::gauge!("patron_projector_active").set(0.0);
        config.active.store(false, Ordering::SeqCst);
        let Some(lease) = stand_by(models.as_ref(), &owner, &config, &mut shutdown).await? else {
            return Ok(());
        };
        tracing::info!(owner, "this instance is now the active projector");
        metrics::gauge!("patron_projector_active").set(1.0);
        config.active.store(true, Ordering::SeqCst);
        let mut leadership = Leadership::hold(lease, config.lease_ttl);
        let outcome = lead(
            &store,
            &models,
            &config,
            clock.as_ref(),
            &mut leadership,
            &mut shutdown,
        )
        .await;
        metrics::gauge!("patron_projector_active").set(0.0);
        config.active.store(false, Ordering::SeqCst);
        leadership.release().await;
        match outcome {
            Ok(Led::Shutdown) => return Ok(()),
            Ok(Led::Lost) => {
                tracing::warn!(
                    owner,
                    "this instance is no longer the active projector; standing by"
                );
            }
            Err(error) => return Err(error),
        }
    }
}

/// This instance's name in the lease, `PID@HOST:NONCE`: process, host (the pod's name on
/// Kubernetes) and a random part (several runners may share a process, e.g. in tests).
pub(crate) fn instance_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "patron".to_owned());
    let nonce = Uuid::new_v4().simple().to_string();
    format!("{}@{host}:{}", std::process::id(), &nonce[..8])
}

fn backoff(config: &ProjectorConfig) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(config.retry_max_delay)
        .without_max_times()
        .build()
}

/// Waits for the lease; `None` when `shutdown` came first.
async fn stand_by<F: Future<Output = ()>>(
    models: &dyn ReadModelStore,
    owner: &str,
    config: &ProjectorConfig,
    shutdown: &mut Pin<&mut F>,
) -> Result<Option<Box<dyn Lease>>, ReadModelError> {
    let mut delays = backoff(config);
    let mut announced = false;
    loop {
        let wait = match models.try_lead(owner, config.lease_ttl).await {
            Ok(Some(lease)) => return Ok(Some(lease)),
            Ok(None) => {
                if !announced {
                    tracing::info!(
                        owner,
                        "another instance is the active projector; standing by"
                    );
                    announced = true;
                }
                delays = backoff(config);
                config.standby_poll
            }
            Err(error) if error.is_transient() => {
                let delay = delays.next().unwrap_or(config.retry_max_delay);
                tracing::warn!(%error, ?delay, "database unavailable; projector waits and retries");
                delay
            }
            Err(error) => return Err(error),
        };
        tokio::select! {
            () = shutdown.as_mut() => return Ok(None),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// How a term as the active projector ended.
enum Led {
    Shutdown,
    Lost,
}

/// Projects while `leadership` holds.
async fn lead<F: Future<Output = ()>>(
    store: &Arc<dyn EventStore>,
    models: &Arc<dyn ReadModelStore>,
    config: &ProjectorConfig,
    clock: &dyn Clock,
    leadership: &mut Leadership,
    shutdown: &mut Pin<&mut F>,
) -> Result<Led, ReadModelError> {
    let mut delays = backoff(config);
    let mut live: Option<LiveProjection> = None;
    loop {
        if !leadership.is_held() {
            return Ok(Led::Lost);
        }
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
                delays = backoff(config);
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
            Err(error @ ReadModelError::Conflict { .. }) => {
                // Another writer moved the checkpoint (an instance that held the lease before
                // this one and had not noticed losing it): nothing of this page was written.
                tracing::warn!(%error, "another projector wrote the read models; reloading");
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
                () = shutdown.as_mut() => return Ok(Led::Shutdown),
                () = leadership.lost() => return Ok(Led::Lost),
                () = tokio::time::sleep(wait) => {}
            }
        } else if futures_ready(shutdown).await {
            return Ok(Led::Shutdown);
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
