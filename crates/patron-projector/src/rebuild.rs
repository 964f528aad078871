//! Rebuilding the read models from position zero into a new generation, then swapping it in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use patron_store::{EventStore, Position, RecordedEvent};

use crate::port::{GenerationId, ReadModelError, ReadModelStore};
use crate::runner::ProjectorConfig;
use crate::{OutboxEntry, Projection};

/// How a rebuild reads and writes.
#[derive(Debug, Clone, Copy)]
pub struct RebuildOptions {
    /// Events per read.
    pub page: usize,
    /// Events folded between two writes of the new generation's views (transitions are written
    /// after every page, in the background, while the next page is folded). No write is made
    /// when the head of the log (as of the start) is less than a quarter of this away: the last
    /// write comes soon anyway, and every customer it touches would be written twice.
    pub flush_every: usize,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        Self {
            // Large pages: fewer round trips, and scoring (RFM and tiers of every buyer) runs at
            // most once per page.
            page: 50_000,
            flush_every: 1_000_000,
        }
    }
}

/// Where a rebuild is, for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct RebuildProgress {
    /// The last position folded.
    pub position: Position,
    /// The head of the log when the rebuild started (it may grow meanwhile).
    pub head: Position,
    /// Events folded so far.
    pub events: u64,
}

/// What a rebuild did.
#[derive(Debug, Clone)]
pub struct RebuildReport {
    /// The generation built and now active.
    pub generation: GenerationId,
    /// The generation it replaced (now deleted).
    pub replaced: Option<GenerationId>,
    /// Events folded.
    pub events: u64,
    /// Customers in the new generation.
    pub customers: usize,
    /// The position it is active from.
    pub checkpoint: Position,
    /// Time taken, swap included.
    pub elapsed: Duration,
    /// Of which waiting for pages from the event store (reads overlap folding).
    pub reading: Duration,
    /// Of which folding events in memory.
    pub folding: Duration,
    /// Of which writing the new generation and swapping it in.
    pub writing: Duration,
}

/// Folds the whole log into a new generation, writing it every `flush_every` events, then makes
/// it active in one transaction and deletes the generation it replaced.
///
/// Queries keep reading the old generation until the swap. A live projector may run meanwhile:
/// on its next commit it finds its generation superseded, reloads the new one and goes on from
/// its checkpoint. Transitions the live projector already published are not published again
/// (only the new generation's transitions after the old one's checkpoint are added to the
/// outbox, and known dedupe keys are skipped).
pub async fn rebuild(
    store: Arc<dyn EventStore>,
    models: Arc<dyn ReadModelStore>,
    config: &ProjectorConfig,
    options: RebuildOptions,
    progress: &mut (dyn FnMut(RebuildProgress) + Send),
) -> Result<RebuildReport, ReadModelError> {
    let started = Instant::now();
    let currency = config.currency()?;
    let page_size = options.page.max(1);
    let generation = models.create_generation(&config.rules_text).await?;
    let head = store.head().await?;
    let mut projection = Projection::new();
    let mut written = Position::ZERO;
    let mut since_flush = 0usize;
    let mut events = 0u64;
    let mut held: Vec<OutboxEntry> = Vec::new();
    let (mut reading, mut folding, mut writing) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    // Read the next page and write the last page's transitions while folding this one.
    let mut next = read(store.clone(), Position::ZERO, page_size);
    let mut history: Option<Writing> = None;
    loop {
        let waited = Instant::now();
        let page = next
            .await
            .map_err(|join| ReadModelError::Corrupt(join.to_string()))??;
        reading += waited.elapsed();
        let Some(last) = page.last().map(|event| event.position) else {
            break;
        };
        next = read(store.clone(), last, page_size);
        let fold = Instant::now();
        let applied = crate::apply_page_from(
            &mut projection,
            store.as_ref(),
            &page,
            &config.rules,
            currency,
        )
        .await?;
        let fired = projection.take_transitions();
        folding += fold.elapsed();
        let write = Instant::now();
        hold(&mut held, &fired, models.as_ref()).await?;
        finish(history.take()).await?;
        history = Some(write_history(models.clone(), generation.id, fired));
        writing += write.elapsed();
        events += u64::try_from(applied).unwrap_or(u64::MAX);
        since_flush += applied;
        progress(RebuildProgress {
            position: projection.checkpoint(),
            head,
            events,
        });
        let remaining = head.0.saturating_sub(projection.checkpoint().0);
        let near_head = usize::try_from(remaining).unwrap_or(usize::MAX) < options.flush_every / 4;
        let overdue = since_flush >= options.flush_every.saturating_add(options.flush_every / 4);
        if since_flush >= options.flush_every && (!near_head || overdue) {
            let write = Instant::now();
            let changes = projection.take_changes();
            models.commit(generation.id, written, &changes).await?;
            tracing::debug!(elapsed = ?write.elapsed(), customers = changes.customers.len(), "flushed");
            written = changes.checkpoint;
            since_flush = 0;
            writing += write.elapsed();
        }
    }
    let write = Instant::now();
    finish(history.take()).await?;
    let customers = projection.customers().len();
    let checkpoint = projection.checkpoint();
    // Transitions are all written (taken after every page); the views and KPIs remain.
    let changes = projection.into_changes();
    let replaced = models
        .activate(generation.id, written, &changes, &held)
        .await?;
    tracing::debug!(elapsed = ?write.elapsed(), "activated");
    if let Some(old) = replaced {
        models.drop_generation(old).await?;
    }
    tracing::debug!(elapsed = ?write.elapsed(), "dropped the old generation");
    writing += write.elapsed();
    Ok(RebuildReport {
        generation: generation.id,
        replaced,
        events,
        customers,
        checkpoint,
        elapsed: started.elapsed(),
        reading,
        folding,
        writing,
    })
}

/// Keeps the transitions the active generation has not reached yet (the others it has
/// published itself, or will never need: its checkpoint only grows). Normally the live projector
/// is ahead and none are kept.
async fn hold(
    held: &mut Vec<OutboxEntry>,
    fired: &[OutboxEntry],
    models: &dyn ReadModelStore,
) -> Result<(), ReadModelError> {
    let live = models
        .active_generation()
        .await?
        .map_or(Position::ZERO, |active| active.checkpoint);
    held.retain(|entry| entry.position > live);
    held.extend(fired.iter().filter(|entry| entry.position > live).cloned());
    Ok(())
}

/// Stage-history rows being written in the background.
type Writing = tokio::task::JoinHandle<Result<(), ReadModelError>>;

fn write_history(
    models: Arc<dyn ReadModelStore>,
    generation: GenerationId,
    entries: Vec<OutboxEntry>,
) -> Writing {
    tokio::spawn(async move { models.write_history(generation, &entries).await })
}

/// Waits for a background write, if any, and passes its error on.
async fn finish(writing: Option<Writing>) -> Result<(), ReadModelError> {
    match writing {
        None => Ok(()),
        Some(writing) => writing
            .await
            .map_err(|join| ReadModelError::Corrupt(join.to_string()))?,
    }
}

fn read(
    store: Arc<dyn EventStore>,
    after: Position,
    limit: usize,
) -> tokio::task::JoinHandle<Result<Vec<RecordedEvent>, patron_store::StoreError>> {
    tokio::spawn(async move { store.read_all(after, limit).await })
}
