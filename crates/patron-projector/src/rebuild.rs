//! Rebuilding the read models from position zero into a new generation, then swapping it in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use patron_store::{EventStore, Position, RecordedEvent};

use crate::port::{GenerationId, Publish, ReadModelError, ReadModelStore};
use crate::reconcile::{self, Histories, Published};
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
    /// Whether the swap publishes corrections: retractions of the published lifecycle records
    /// that the new histories no longer hold, and the new records that replace them (see
    /// [`RebuildReport::corrections`]). Without, it publishes only the transitions the active
    /// generation had not reached, and the report says how many customers' published records
    /// are left different from their new histories.
    pub corrections: bool,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        Self {
            // Large pages: fewer round trips, and scoring (RFM and tiers of every buyer) runs at
            // most once per page.
            page: 50_000,
            flush_every: 1_000_000,
            corrections: true,
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
    /// How the published lifecycle records compare with the new histories at the swap.
    pub corrections: Corrections,
}

/// How a rebuild's swap left the published lifecycle records (see
/// [`RebuildOptions::corrections`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Corrections {
    /// Whether corrections were published (otherwise they were only counted).
    pub published: bool,
    /// Customers whose published records differed from their new history.
    pub customers: usize,
    /// Retractions (published, or that would have been).
    pub retractions: usize,
    /// New records (published, or that would have been): the changed part of the new histories,
    /// and the transitions the active generation had not reached.
    pub records: usize,
}

/// Folds the whole log into a new generation, writing it every `flush_every` events, then makes
/// it active in one transaction and deletes the generation it replaced.
///
/// Queries keep reading the old generation until the swap. A live projector may run meanwhile:
/// the rebuild reads on until it has folded at least as far as the live one, and on its next
/// commit the live projector finds its generation superseded, reloads the new one and goes on
/// from its checkpoint. At the swap, the published lifecycle records are made the new histories
/// (see [`RebuildOptions::corrections`]): records that still hold are not published again, those
/// that no longer hold are retracted, and the new records follow. If the live projector publishes
/// while the corrections are computed, they are computed again.
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
    let mut histories = Histories::default();
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
            // Caught up with the log as it was; the live projector may have gone further.
            let live = models
                .active_generation()
                .await?
                .map_or(Position::ZERO, |active| active.checkpoint);
            if live > projection.checkpoint() {
                next = read(store.clone(), projection.checkpoint(), page_size);
                continue;
            }
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
        histories.add(&fired);
        folding += fold.elapsed();
        let write = Instant::now();
        if !options.corrections {
            hold(&mut held, &fired, models.as_ref()).await?;
        }
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
    let mut published = Published::default();
    let (replaced, corrections) = if options.corrections {
        swap_with_corrections(
            models.as_ref(),
            generation.id,
            written,
            projection,
            &histories,
            &mut published,
        )
        .await?
    } else {
        published.read_more(models.as_ref()).await?;
        let plan = reconcile::plan(
            &published,
            &histories,
            |customer| projection.customer(customer),
            checkpoint,
        );
        let changes = projection.into_changes();
        let replaced = models
            .activate(generation.id, written, &changes, Publish::Held(&held))
            .await?;
        (replaced, summary(&plan, false))
    };
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
        corrections,
    })
}

/// Swaps the new generation in with the corrections that make the published records its
/// histories. If a live projector publishes under the old generation meanwhile, the corrections
/// are computed again from the records it added, starting from the views as the first plan left
/// them (their revisions only go up, so no key is reused); a customer not among the views to
/// write is read back from what the rebuild already wrote.
async fn swap_with_corrections(
    models: &dyn ReadModelStore,
    generation: GenerationId,
    written: Position,
    mut projection: Projection,
    histories: &Histories,
    published: &mut Published,
) -> Result<(Option<GenerationId>, Corrections), ReadModelError> {
    let position = projection.checkpoint();
    published.read_more(models).await?;
    let mut plan = reconcile::plan(
        published,
        histories,
        |customer| projection.customer(customer),
        position,
    );
    for (customer, revisions) in &plan.revisions {
        projection.set_revisions(customer, revisions.clone());
    }
    // Moved, not copied: the last changes of a rebuild hold (nearly) every customer.
    let mut changes = projection.into_changes();
    let mut written_views: Option<std::collections::HashMap<_, _>> = None;
    loop {
        let publish = Publish::Corrections {
            entries: &plan.entries,
            outbox_head: published.head(),
        };
        match models
            .activate(generation, written, &changes, publish)
            .await
        {
            Ok(replaced) => return Ok((replaced, summary(&plan, true))),
            Err(ReadModelError::OutboxMoved { expected, actual }) => {
                tracing::debug!(expected, actual, "the outbox moved on; correcting again");
            }
            Err(error) => return Err(error),
        }
        published.read_more(models).await?;
        let snapshot = match written_views.take() {
            Some(views) => views,
            None => models
                .load(generation)
                .await?
                .customers
                .into_iter()
                .collect(),
        };
        let view = |customer: &patron_domain::CustomerId| match changes
            .customers
            .binary_search_by(|(id, _)| id.cmp(customer))
        {
            Ok(index) => Some(&changes.customers[index].1),
            Err(_) => snapshot.get(customer),
        };
        plan = reconcile::plan(published, histories, view, position);
        for (customer, revisions) in std::mem::take(&mut plan.revisions) {
            let index = changes
                .customers
                .binary_search_by(|(id, _)| id.cmp(&customer));
            match index {
                Ok(index) => changes.customers[index].1.revisions = revisions,
                Err(index) => {
                    if let Some(mut view) = snapshot.get(&customer).cloned() {
                        view.revisions = revisions;
                        changes.customers.insert(index, (customer, view));
                    }
                }
            }
        }
        written_views = Some(snapshot);
    }
}

fn summary(plan: &reconcile::Plan, published: bool) -> Corrections {
    Corrections {
        published,
        customers: plan.customers,
        retractions: plan.retractions,
        records: plan.entries.len() - plan.retractions,
    }
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
