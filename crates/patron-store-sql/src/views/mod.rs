//! SQL read models: the projector's [`ReadModelStore`](patron_projector::ReadModelStore) on
//! PostgreSQL and SQLite, in the same database as the event store. The schema is in
//! `migrations/<backend>/0002_read_models.sql`.

mod copy;
mod lease;
mod postgres;
mod sqlite;

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use patron_domain::CustomerId;
use patron_lifecycle::{CustomerLifecycle, Stage, Transition};
use patron_projector::{CustomerView, OutboxEntry, OutboxRecord, ReadModelError};
use patron_store::Position;

pub use postgres::PgReadModels;
pub use sqlite::SqliteReadModels;

use crate::row::to_i64;

/// A generation's status column.
pub(crate) const BUILDING: &str = "building";
/// See [`BUILDING`].
pub(crate) const ACTIVE: &str = "active";
/// See [`BUILDING`].
pub(crate) const RETIRED: &str = "retired";

/// Change records (`customer_changes`) kept for API caches: a reader further behind than this
/// many commits finds a hole and drops its whole cache.
pub(crate) const CHANGES_KEPT: i64 = 1_000;
/// A commit that wrote more customers than this records "everything changed" instead of the
/// list (e.g. the daily re-scoring of every buyer).
pub(crate) const CHANGES_LISTED: usize = 10_000;

/// One `customers` row, flattened from a view.
pub(crate) struct CustomerRow {
    pub(crate) customer_id: String,
    pub(crate) stage: Option<&'static str>,
    pub(crate) stage_since: Option<DateTime<Utc>>,
    pub(crate) orders: i64,
    pub(crate) refunds: i64,
    pub(crate) gross_revenue_minor: i64,
    pub(crate) refunded_minor: i64,
    pub(crate) net_revenue_minor: i64,
    pub(crate) average_order_minor: Option<i64>,
    pub(crate) first_purchase_at: Option<DateTime<Utc>>,
    pub(crate) last_purchase_at: Option<DateTime<Utc>>,
    pub(crate) last_event_at: Option<DateTime<Utc>>,
    pub(crate) rfm: Option<[i16; 3]>,
    pub(crate) segment: Option<&'static str>,
    pub(crate) tier: Option<&'static str>,
    pub(crate) state: String,
    /// The granted purposes, see [`patron_projector::Consents::granted_list`].
    pub(crate) consented: Option<String>,
    /// Every answer as JSON (purpose -> granted and time); `None` when there is none.
    pub(crate) consents: Option<String>,
    /// The customer this one was merged into, if it was.
    pub(crate) merged_into: Option<String>,
}

/// The view as kept in `customers.state`: without its stage history, which `stage_history`
/// holds row by row ([`attach_counts`] sets its length on load). Keeps the state small, which is
/// most of what a commit writes.
fn stored(view: &CustomerView) -> CustomerView {
    let l = &view.lifecycle;
    CustomerView {
        lifecycle: CustomerLifecycle {
            stage: l.stage,
            since: l.since,
            purchases: l.purchases,
            net_revenue_minor: l.net_revenue_minor,
            other_currency_events: l.other_currency_events,
            first_purchase_at: l.first_purchase_at,
            last_purchase_at: l.last_purchase_at,
            recent_purchases: l.recent_purchases.clone(),
            last_event_at: l.last_event_at,
            p_alive: l.p_alive.clone(),
            history: Vec::new(),
            forgotten: 0,
        },
        value: view.value.clone(),
        kpi: view.kpi.clone(),
        scores: view.scores.clone(),
        purchases: view.purchases.clone(),
        consents: view.consents.clone(),
        merged_into: view.merged_into.clone(),
        own: view.own.clone(),
        folded: view.folded,
        revisions: view.revisions.clone(),
    }
}

/// What a batch of outbox entries does to `stage_history`: the rows that retractions remove
/// (customer, seq), to delete first, and the transitions to insert — for each customer and seq
/// the batch's last, unless a later entry of the batch retracts it.
pub(crate) fn history_changes(entries: &[OutboxEntry]) -> (Vec<(&str, i32)>, Vec<&OutboxEntry>) {
    let mut deleted: Vec<(&str, i32)> = Vec::new();
    let mut rows: BTreeMap<(&str, i32), &OutboxEntry> = BTreeMap::new();
    for entry in entries {
        let key = (entry.customer_id.as_str(), seq(entry));
        if entry.retracts.is_some() {
            rows.remove(&key);
            deleted.push(key);
        } else {
            rows.insert(key, entry);
        }
    }
    deleted.sort_unstable();
    deleted.dedup();
    (deleted, rows.into_values().collect())
}

/// Sets the length of each loaded view's stage history: the customer's `stage_history` rows
/// (`counts`: customer id, rows, highest `seq`). Views keep only that count in memory (see
/// `CustomerLifecycle::forget_history`); the rows stay in the table.
pub(crate) fn attach_counts(
    customers: &mut [(CustomerId, CustomerView)],
    counts: impl IntoIterator<Item = (String, i64, i64)>,
) -> Result<(), ReadModelError> {
    let index: std::collections::HashMap<String, usize> = customers
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (id.as_str().to_owned(), i))
        .collect();
    for (customer_id, rows, last_seq) in counts {
        let corrupt =
            |what: &str| ReadModelError::Corrupt(format!("stage history of {customer_id}: {what}"));
        let Some(&i) = index.get(&customer_id) else {
            return Err(corrupt("no such customer"));
        };
        if last_seq.checked_add(1) != Some(rows) {
            return Err(corrupt(&format!(
                "{rows} rows up to seq {last_seq}: not gapless from 0"
            )));
        }
        let lifecycle = &mut customers[i].1.lifecycle;
        lifecycle.history.clear();
        lifecycle.forgotten = u64::try_from(rows).map_err(|_| corrupt("negative count"))?;
    }
    Ok(())
}

impl CustomerRow {
    pub(crate) fn new(id: &CustomerId, view: &CustomerView) -> Result<Self, ReadModelError> {
        let state = serde_json::to_string(&stored(view))
            .map_err(|e| ReadModelError::Corrupt(format!("view of {id}: {e}")))?;
        let scores = view.scores.as_ref();
        Ok(Self {
            customer_id: id.as_str().to_owned(),
            stage: view.lifecycle.stage.map(Stage::as_str),
            stage_since: view.lifecycle.since,
            orders: to_i64(view.value.orders),
            refunds: to_i64(view.value.refunds),
            gross_revenue_minor: view.value.gross_revenue_minor,
            refunded_minor: view.value.refunded_minor,
            net_revenue_minor: view.value.net_revenue_minor(),
            average_order_minor: view.value.average_order_value(),
            first_purchase_at: view.value.first_purchase_at,
            last_purchase_at: view.value.last_purchase_at,
            last_event_at: view.lifecycle.last_event_at,
            rfm: scores.map(|s| [s.rfm.r, s.rfm.f, s.rfm.m].map(i16::from)),
            segment: scores.map(|s| s.rfm.segment()),
            tier: scores.and_then(|s| s.tier).map(|t| t.as_str()),
            state,
            consented: view.consents.granted_list(),
            consents: if view.consents.is_empty() {
                None
            } else {
                Some(
                    serde_json::to_string(&view.consents)
                        .map_err(|e| ReadModelError::Corrupt(format!("consents of {id}: {e}")))?,
                )
            },
            merged_into: view.merged_into.as_ref().map(|c| c.as_str().to_owned()),
        })
    }
}

/// The facts of a transition as stored (a JSON object of strings).
pub(crate) fn facts_json(entry: &OutboxEntry) -> String {
    serde_json::to_string(&entry.transition.facts).unwrap_or_else(|_| "{}".to_owned())
}

/// A transition's consent marks as stored (a JSON object purpose -> granted; `None` when the
/// customer had answered nothing).
pub(crate) fn consent_json(entry: &OutboxEntry) -> Option<String> {
    (!entry.consent.is_empty())
        .then(|| serde_json::to_string(&entry.consent).unwrap_or_else(|_| "{}".to_owned()))
}

/// A stored view read back.
pub(crate) fn view(
    customer_id: String,
    state: &str,
) -> Result<(CustomerId, CustomerView), ReadModelError> {
    let id = CustomerId::parse(&customer_id)
        .map_err(|e| ReadModelError::Corrupt(format!("customer id {customer_id:?}: {e}")))?;
    let view = serde_json::from_str(state)
        .map_err(|e| ReadModelError::Corrupt(format!("view of {customer_id}: {e}")))?;
    Ok((id, view))
}

/// An outbox row read back.
pub(crate) struct OutboxRow {
    pub(crate) id: i64,
    pub(crate) dedupe_key: String,
    pub(crate) customer_id: String,
    pub(crate) seq: i32,
    pub(crate) from_stage: Option<String>,
    pub(crate) to_stage: String,
    pub(crate) occurred_at: DateTime<Utc>,
    pub(crate) rule: String,
    pub(crate) facts: String,
    pub(crate) position: i64,
    pub(crate) consent: Option<String>,
    pub(crate) retracts: Option<String>,
    pub(crate) historical: bool,
}

impl OutboxRow {
    pub(crate) fn decode(self) -> Result<OutboxRecord, ReadModelError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            ReadModelError::Corrupt(format!("outbox record {}: {what}: {e}", self.id))
        };
        let stage = |name: &str| Stage::from_str(name).map_err(|e| corrupt("stage", &e));
        let facts: BTreeMap<String, String> =
            serde_json::from_str(&self.facts).map_err(|e| corrupt("facts", &e))?;
        let consent: BTreeMap<String, bool> = match &self.consent {
            Some(json) => serde_json::from_str(json).map_err(|e| corrupt("consent", &e))?,
            None => BTreeMap::new(),
        };
        let customer_id =
            CustomerId::parse(&self.customer_id).map_err(|e| corrupt("customer id", &e))?;
        Ok(OutboxRecord {
            id: self.id,
            entry: OutboxEntry {
                dedupe_key: self.dedupe_key.clone(),
                customer_id,
                seq: usize::try_from(self.seq).map_err(|e| corrupt("seq", &e))?,
                transition: Transition {
                    from: self.from_stage.as_deref().map(stage).transpose()?,
                    to: stage(&self.to_stage)?,
                    at: self.occurred_at,
                    rule: self.rule.clone(),
                    facts,
                },
                position: Position(
                    u64::try_from(self.position).map_err(|e| corrupt("position", &e))?,
                ),
                consent,
                retracts: self.retracts.clone(),
                historical: self.historical,
            },
        })
    }
}

/// A position as stored.
pub(crate) fn position(value: i64) -> Result<Position, ReadModelError> {
    u64::try_from(value)
        .map(Position)
        .map_err(|_| ReadModelError::Corrupt(format!("negative position {value}")))
}

/// A stage history index as stored.
pub(crate) fn seq(entry: &OutboxEntry) -> i32 {
    i32::try_from(entry.seq).unwrap_or(i32::MAX)
}

/// The outbox entries an activation adds, when the active generation (at `old_checkpoint`, the
/// outbox at `head`) is replaced: the held transitions after its checkpoint, or the corrections
/// if the outbox has not moved since they were computed.
pub(crate) fn to_publish<'a>(
    publish: patron_projector::Publish<'a>,
    head: i64,
    old_checkpoint: Position,
) -> Result<Vec<&'a OutboxEntry>, ReadModelError> {
    match publish {
        patron_projector::Publish::Held(held) => Ok(held
            .iter()
            .filter(|e| e.position > old_checkpoint)
            .collect()),
        patron_projector::Publish::Corrections {
            entries,
            outbox_head,
        } if outbox_head == head => Ok(entries.iter().collect()),
        patron_projector::Publish::Corrections { outbox_head, .. } => {
            Err(ReadModelError::OutboxMoved {
                expected: outbox_head,
                actual: head,
            })
        }
    }
}
