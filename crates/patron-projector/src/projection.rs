//! The in-memory projection: per-customer views, the event-time watermark, the checkpoint, and
//! an index of pending time-driven deadlines.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use patron_domain::{Currency, CustomerId, EventBody};
use patron_lifecycle::{CustomerLifecycle, Rules, Transition};
use patron_store::{Position, RecordedEvent};
use patron_value::CustomerValue;
use serde::{Deserialize, Serialize};

/// What the projector knows about one customer: its lifecycle and its value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CustomerView {
    /// Stage, stage history and the facts the lifecycle rules need.
    pub lifecycle: CustomerLifecycle,
    /// Revenue, orders and purchase dates in the reporting currency.
    pub value: CustomerValue,
}

/// One lifecycle transition to publish, written to the outbox with the projection's batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// `{customer_id}:{index in the customer's stage history}`: the same on every replay.
    pub dedupe_key: String,
    /// The customer who changed stage.
    pub customer_id: CustomerId,
    /// The transition, with its rule and facts.
    pub transition: Transition,
    /// The position of the event whose application fired it (the checkpoint, for a tick).
    pub position: Position,
}

/// Everything that changed since the last [`Projection::take_changes`]: what an adapter writes
/// in one transaction, together with the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// The current view of every customer changed since the last take, sorted by customer id.
    pub customers: Vec<(CustomerId, CustomerView)>,
    /// Transitions fired since the last take, in the order they fired.
    pub outbox: Vec<OutboxEntry>,
    /// The last applied position: where to resume after this batch is durable.
    pub checkpoint: Position,
    /// The event-time watermark after this batch.
    pub watermark: Option<DateTime<Utc>>,
}

impl Changes {
    /// Whether there is nothing to write but (possibly) a moved checkpoint or watermark.
    pub fn is_empty(&self) -> bool {
        self.customers.is_empty() && self.outbox.is_empty()
    }
}

/// The projection state: folded in position order, so that a rebuild from position zero gives
/// exactly the state (and outbox) that live processing gave.
///
/// Invariant: after every [`Projection::apply`] or [`Projection::tick`], no customer has a
/// pending time-driven deadline at or before the watermark. The same [`Rules`] and currency must
/// be passed to every call for the life of a projection (a rules change is a rebuild).
#[derive(Debug, Clone, Default)]
pub struct Projection {
    customers: BTreeMap<CustomerId, CustomerView>,
    watermark: Option<DateTime<Utc>>,
    checkpoint: Position,
    /// `(next_deadline, customer)` for every customer that has one.
    deadlines: BTreeSet<(DateTime<Utc>, CustomerId)>,
    /// Each indexed customer's deadline, to find its entry in `deadlines`.
    deadline_of: BTreeMap<CustomerId, DateTime<Utc>>,
    dirty: BTreeSet<CustomerId>,
    outbox: Vec<OutboxEntry>,
}

impl Projection {
    /// An empty projection, before the first event.
    pub fn new() -> Self {
        Self::default()
    }

    /// A projection resumed from persisted views, watermark and checkpoint (what an adapter
    /// loads at start); the deadline index is rebuilt from the views with `rules`.
    pub fn restore(
        customers: impl IntoIterator<Item = (CustomerId, CustomerView)>,
        watermark: Option<DateTime<Utc>>,
        checkpoint: Position,
        rules: &Rules,
    ) -> Self {
        let mut projection = Self {
            customers: customers.into_iter().collect(),
            watermark,
            checkpoint,
            ..Self::default()
        };
        let ids: Vec<CustomerId> = projection.customers.keys().cloned().collect();
        for id in ids {
            projection.reindex(&id, rules);
        }
        projection
    }

    /// Every customer's view, by customer id.
    pub fn customers(&self) -> &BTreeMap<CustomerId, CustomerView> {
        &self.customers
    }

    /// One customer's view, if the customer has been seen.
    pub fn customer(&self, customer_id: &CustomerId) -> Option<&CustomerView> {
        self.customers.get(customer_id)
    }

    /// The greatest `occurred_at` (or tick) applied so far; `None` before the first.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        self.watermark
    }

    /// The position of the last applied event ([`Position::ZERO`] before the first).
    pub fn checkpoint(&self) -> Position {
        self.checkpoint
    }

    /// The earliest pending time-driven deadline and its customer, if any.
    pub fn next_deadline(&self) -> Option<&(DateTime<Utc>, CustomerId)> {
        self.deadlines.first()
    }

    /// Applies the event at the next position and returns the transitions it fired, which are
    /// also kept for [`Projection::take_changes`].
    ///
    /// Events must come in position order. An event at or before the checkpoint has already been
    /// applied: it is skipped and changes nothing (idempotent re-delivery). An unknown event type
    /// is not projected (no customer is created) but still moves the checkpoint and watermark.
    /// After the event's own customer, the watermark rises to the event's time and every
    /// customer whose deadline it passed is advanced, in deadline order (ties by customer id).
    /// That is normally other customers; the event's own customer only when the event came late
    /// (before the watermark) and left it with a deadline already passed.
    pub fn apply(
        &mut self,
        event: &RecordedEvent,
        rules: &Rules,
        currency: Currency,
    ) -> Vec<OutboxEntry> {
        if event.position <= self.checkpoint {
            return Vec::new();
        }
        self.checkpoint = event.position;
        let start = self.outbox.len();
        let customer_id = &event.event.customer_id;
        if !matches!(event.event.body, EventBody::Unknown(_)) {
            let view = self.customers.entry(customer_id.clone()).or_default();
            let fired = patron_lifecycle::apply(&mut view.lifecycle, &event.event, rules);
            patron_value::apply(&mut view.value, &event.event, currency);
            self.record(customer_id, fired);
            self.reindex(customer_id, rules);
        }
        self.raise_watermark(event.event.occurred_at, rules);
        self.outbox[start..].to_vec()
    }

    /// Advances event time to `watermark` without an event, firing every deadline it passes;
    /// returns the transitions, stamped at their deadlines and at the current checkpoint.
    ///
    /// A projection's state must follow from the log alone, so in production a tick is itself
    /// an event in the store (replay must see it); this method is what applying one does. A
    /// watermark at or before the current one changes nothing.
    pub fn tick(&mut self, watermark: DateTime<Utc>, rules: &Rules) -> Vec<OutboxEntry> {
        let start = self.outbox.len();
        self.raise_watermark(watermark, rules);
        self.outbox[start..].to_vec()
    }

    /// Hands over everything changed since the last call (dirty customers' current views and
    /// the transitions fired), with the checkpoint and watermark to write alongside.
    pub fn take_changes(&mut self) -> Changes {
        let customers = std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|id| {
                let view = self.customers.get(&id)?.clone();
                Some((id, view))
            })
            .collect();
        Changes {
            customers,
            outbox: std::mem::take(&mut self.outbox),
            checkpoint: self.checkpoint,
            watermark: self.watermark,
        }
    }

    /// Raises the watermark to `to` (never lowers it) and fires every deadline now passed.
    fn raise_watermark(&mut self, to: DateTime<Utc>, rules: &Rules) {
        let watermark = self.watermark.map_or(to, |w| w.max(to));
        self.watermark = Some(watermark);
        while let Some((deadline, customer_id)) = self.deadlines.first().cloned() {
            if deadline > watermark {
                break;
            }
            self.deadlines.remove(&(deadline, customer_id.clone()));
            self.deadline_of.remove(&customer_id);
            let Some(view) = self.customers.get_mut(&customer_id) else {
                continue;
            };
            // Advance only to this deadline, so transitions across customers come out in
            // deadline order; the engine gives the same history in one step or many.
            let fired = patron_lifecycle::advance(&mut view.lifecycle, deadline, rules);
            let progressed = !fired.is_empty();
            self.record(&customer_id, fired);
            // A deadline that fires nothing would come back forever (only a hand-edited state
            // can do that): it is dropped until the customer's next event re-indexes it.
            if progressed {
                self.reindex(&customer_id, rules);
            }
        }
    }

    /// Turns transitions just appended to a customer's history into outbox entries.
    fn record(&mut self, customer_id: &CustomerId, fired: Vec<Transition>) {
        self.dirty.insert(customer_id.clone());
        let Some(view) = self.customers.get(customer_id) else {
            return;
        };
        let first = view.lifecycle.history.len().saturating_sub(fired.len());
        let position = self.checkpoint;
        self.outbox.extend(
            fired
                .into_iter()
                .enumerate()
                .map(|(i, transition)| OutboxEntry {
                    dedupe_key: format!("{customer_id}:{}", first + i),
                    customer_id: customer_id.clone(),
                    transition,
                    position,
                }),
        );
    }

    /// Puts the customer's current next deadline in the index (replacing any previous one).
    fn reindex(&mut self, customer_id: &CustomerId, rules: &Rules) {
        if let Some(old) = self.deadline_of.remove(customer_id) {
            self.deadlines.remove(&(old, customer_id.clone()));
        }
        let next = self
            .customers
            .get(customer_id)
            .and_then(|view| patron_lifecycle::next_deadline(&view.lifecycle, rules));
        if let Some(deadline) = next {
            self.deadlines.insert((deadline, customer_id.clone()));
            self.deadline_of.insert(customer_id.clone(), deadline);
        }
    }
}
