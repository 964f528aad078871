//! The read-model store port: where a projection's views, stage history, KPI counters, outbox
//! and checkpoint live. Implemented for PostgreSQL and SQLite by `patron-store-sql`.
//!
//! Read models are kept per *generation*. The live projector writes the active generation; a
//! rebuild folds the log into a new generation beside it and then makes it active in one
//! transaction, so queries switch from the old state to the rebuilt one without downtime.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use patron_domain::CustomerId;
use patron_store::{Position, StoreError};

use crate::{Changes, CustomerView, OutboxEntry};

/// A generation's number.
pub type GenerationId = i64;

/// What activating a generation adds to the outbox.
#[derive(Debug, Clone, Copy)]
pub enum Publish<'a> {
    /// The transitions the generation fired while not active: those after the previously active
    /// generation's checkpoint are added (already present dedupe keys are skipped).
    Held(&'a [OutboxEntry]),
    /// Corrections that make the published records the generation's stage histories, computed
    /// from the outbox up to `outbox_head`: added as they are, provided the outbox still ends at
    /// `outbox_head` ([`ReadModelError::OutboxMoved`] otherwise, and nothing is changed).
    Corrections {
        /// Retractions and the records that replace them, in order.
        entries: &'a [OutboxEntry],
        /// The last outbox id they were computed from.
        outbox_head: i64,
    },
}

/// One generation of the read models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// Its number (increasing).
    pub id: GenerationId,
    /// The lifecycle rules it was built with, as configured (TOML text).
    pub rules: String,
    /// The last position folded into it.
    pub checkpoint: Position,
    /// Its event-time watermark.
    pub watermark: Option<DateTime<Utc>>,
    /// Its latest evidence of time (`None` when written by a version that did not keep it).
    pub latest_evidence: Option<DateTime<Utc>>,
    /// The midnight of its last RFM and tier scoring.
    pub scored_at: Option<DateTime<Utc>>,
}

/// Everything needed to resume a projection.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every customer's view.
    pub customers: Vec<(CustomerId, CustomerView)>,
}

/// A transition in the outbox, with its commit-ordered id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    /// Increasing in commit order (no reader can see id N+1 before id N): where a relay or a
    /// watcher resumes.
    pub id: i64,
    /// The transition.
    pub entry: OutboxEntry,
}

/// What went wrong in the read-model store.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    /// Another generation became active: reload and go on from it.
    #[error("generation {0} is no longer the active one")]
    Superseded(GenerationId),
    /// The generation's checkpoint moved under this writer (another projector wrote it, e.g. after
    /// this one lost its lease without noticing): reload and go on, or stand by.
    #[error(
        "generation {generation} is at position {actual}, not {expected}: another projector is writing it"
    )]
    Conflict {
        /// The generation.
        generation: GenerationId,
        /// The checkpoint this writer started from.
        expected: Position,
        /// The checkpoint found.
        actual: Position,
    },
    /// Records were added to the outbox after the ones corrections were computed from (a live
    /// projector published meanwhile): compute them again.
    #[error("the outbox moved on from id {expected} to {actual} while corrections were computed")]
    OutboxMoved {
        /// The last id the corrections were computed from.
        expected: i64,
        /// The last id found.
        actual: i64,
    },
    /// The active generation was built with other lifecycle rules than the ones configured.
    #[error(
        "the active read models (generation {generation}) were built with other lifecycle rules; run `patron rebuild` to apply the new rules, or configure the old ones"
    )]
    RulesChanged {
        /// The active generation.
        generation: GenerationId,
    },
    /// Stored state cannot be read back (e.g. a view written by an incompatible version).
    #[error("read model is corrupt: {0}")]
    Corrupt(String),
    /// The database or the event store failed; retrying later may succeed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ReadModelError {
    /// Whether waiting and retrying may help (the database was unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Store(StoreError::Unavailable(_)))
    }
}

/// The claim of one projector instance to be the live projector of a database. Only the holder
/// projects; other instances stand by. The checkpoint fence stays the safety net: a holder that
/// lost its claim without noticing is refused on its next commit ([`ReadModelError::Conflict`]).
#[async_trait]
pub trait Lease: Send + 'static {
    /// Keeps the claim (SQLite: pushes its expiry on; PostgreSQL: checks that the session holding
    /// the lock is alive). `Ok(false)` when it was lost (another instance took it over).
    async fn renew(&mut self) -> Result<bool, ReadModelError>;

    /// Gives the claim up, so that a standby takes over without waiting for it to expire.
    async fn release(self: Box<Self>) -> Result<(), ReadModelError>;
}

/// Where read models are stored.
#[async_trait]
pub trait ReadModelStore: Send + Sync + 'static {
    /// Tries to become the live projector of this database as `owner` (unique per instance);
    /// `None` while another instance holds the claim. Unless renewed, the claim lapses after
    /// `ttl` where the backend cannot tell a dead holder by itself (SQLite).
    async fn try_lead(
        &self,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Box<dyn Lease>>, ReadModelError>;

    /// Tries to become the one relay publishing as `relay` (its offset's name) from this
    /// database, as `owner` (unique per instance); `None` while another instance holds that
    /// claim. Like [`ReadModelStore::try_lead`]: a second relay stands by instead of publishing
    /// every batch again beside the first.
    async fn try_lead_relay(
        &self,
        relay: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Box<dyn Lease>>, ReadModelError>;

    /// The active generation, if one was ever activated.
    async fn active_generation(&self) -> Result<Option<Generation>, ReadModelError>;

    /// Creates an empty generation (not active) for a projection built with `rules`.
    async fn create_generation(&self, rules: &str) -> Result<Generation, ReadModelError>;

    /// Every customer view of a generation.
    async fn load(&self, generation: GenerationId) -> Result<Snapshot, ReadModelError>;

    /// Writes a batch of changes and the new checkpoint in one transaction, provided the
    /// generation is still at `expected` ([`ReadModelError::Conflict`] otherwise). The outbox
    /// entries are written (with new ids) only when the generation is active; a generation
    /// being rebuilt keeps its own.
    async fn commit(
        &self,
        generation: GenerationId,
        expected: Position,
        changes: &Changes,
    ) -> Result<(), ReadModelError>;

    /// Writes stage-history rows of a generation being built, ahead of the commits that write
    /// its views: a rebuild writes the transitions it fires while it goes on folding (they are
    /// never rewritten, and the generation is invisible until activated). A generation that is
    /// not being built is refused ([`ReadModelError::Superseded`]).
    async fn write_history(
        &self,
        generation: GenerationId,
        entries: &[OutboxEntry],
    ) -> Result<(), ReadModelError>;

    /// Writes a last batch of changes to `generation` and makes it the active one, in one
    /// transaction, adding to the outbox what `publish` says. Returns the previously active
    /// generation.
    async fn activate(
        &self,
        generation: GenerationId,
        expected: Position,
        changes: &Changes,
        publish: Publish<'_>,
    ) -> Result<Option<GenerationId>, ReadModelError>;

    /// Deletes an inactive generation's rows.
    async fn drop_generation(&self, generation: GenerationId) -> Result<(), ReadModelError>;

    /// Up to `limit` outbox records with an id greater than `after`, in id order.
    async fn outbox_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRecord>, ReadModelError>;

    /// The last outbox id a relay has published (0 before the first).
    async fn relay_offset(&self, relay: &str) -> Result<i64, ReadModelError>;

    /// Records that a relay has published every outbox record up to `id`.
    async fn set_relay_offset(&self, relay: &str, id: i64) -> Result<(), ReadModelError>;
}
