//! The in-memory projection: per-customer views, the event-time watermark, the checkpoint, and
//! an index of pending time-driven deadlines.
//!
//! Customers can be merged (`customers_merged`) and split again (`customers_unmerged`), see
//! [`merge`](self::merge) for what that does to the views.

mod merge;
mod refold;
mod sources;

pub(crate) use refold::dedupe_key;
pub use refold::{LogStreams, NeedsStream, Streams, net_records};
pub use sources::SourceHold;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use patron_domain::{Currency, CustomerId, Event, EventBody, ModelFitted};
use patron_lifecycle::{CustomerLifecycle, PAliveSchedule, Rules, Transition};
use patron_store::{Position, RecordedEvent};
use patron_value::{CustomerValue, DEFAULT_A_SHARE_PERCENT, DEFAULT_B_SHARE_PERCENT};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::consent::Consents;
use crate::kpi::{self, CustomerKpi, KpiKey};
use crate::p_alive::{self, FittedModel};
use crate::purchases::{self, Purchases};
use crate::scores::{Scores, midnight};

/// What the projector knows about one customer: its lifecycle and its value.
///
/// A customer merged into another keeps the view it had then (`merged_into` set) and the one it
/// was merged into shows the combined customer; both keep, in `own`, what their own events
/// alone give, for a split. See [`Projection`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CustomerView {
    /// Stage, stage history and the facts the lifecycle rules need.
    pub lifecycle: CustomerLifecycle,
    /// Revenue, orders and purchase dates in the reporting currency.
    pub value: CustomerValue,
    /// Monthly activity, for the population KPIs.
    #[serde(default)]
    pub kpi: CustomerKpi,
    /// RFM scores, segment and value tier as of the last scoring (`None` before the customer's
    /// first purchase was scored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<Scores>,
    /// Purchase days and their net values, for the predictive models (`patron-clv`); views
    /// stored before it existed load with an empty one (a rebuild fills it).
    #[serde(default)]
    pub purchases: Purchases,
    /// The latest answer per consent purpose (empty until the first `consent_changed`).
    #[serde(default, skip_serializing_if = "Consents::is_empty")]
    pub consents: Consents,
    /// The customer this one is merged into (directly; follow these to the combined customer,
    /// which has none). While it is set, this view is frozen as it was at the merge (except
    /// `own`): its events count for the combined customer, and it has no deadline, no outbox
    /// entries, no scores and no state-driven KPIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<CustomerId>,
    /// While the customer is part of a merged group (as the combined customer or merged into
    /// it): what its own events alone give (lifecycle facts, value, purchases, consents and
    /// KPI facts; no stage history, scores, `merged_into` or `own`), for a split to restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own: Option<Box<CustomerView>>,
    /// The greatest `(event time, event id)` folded into this view: a purchase or refund ordered
    /// before it arrived late and re-folds the customer (see [`Projection::apply_page`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folded: Option<(DateTime<Utc>, Uuid)>,
    /// Corrections of the published stage history, oldest first: `(first seq, revision)` — from
    /// that index on, records were (re)published under that revision (1, 2, …), which their
    /// dedupe keys carry. Empty for a customer whose history was never corrected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<(u64, u32)>,
}

/// One lifecycle transition to publish, written to the outbox with the projection's batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// `{customer_id}:{index in the customer's stage history}#{digest of the transition}`
    /// (`{customer_id}:{index}.r{revision}#…` once a correction republished it; a retraction's is
    /// the retracted record's with `-retracted`): the same on every replay with the same rules.
    pub dedupe_key: String,
    /// The customer who changed stage.
    pub customer_id: CustomerId,
    /// The transition's index in the customer's stage history (from 0).
    pub seq: usize,
    /// The transition, with its rule and facts.
    pub transition: Transition,
    /// The position of the event whose application fired it (the checkpoint, for a tick).
    pub position: Position,
    /// The customer's consent when the transition fired: purpose → granted, for every purpose
    /// answered (a purpose not listed was never answered, which is no consent).
    pub consent: BTreeMap<String, bool>,
    /// For a retraction, the dedupe key of the record it retracts (whose transition and `seq`
    /// it repeats): that transition no longer holds. `None` for a transition.
    pub retracts: Option<String>,
    /// Whether the transition is older than the rules' `historical_after_days` at the commit of
    /// the event that caused it (a backfill or a late correction rather than news).
    pub historical: bool,
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
    /// The latest evidence of time after this batch (see [`Projection::latest_evidence`]): the
    /// watermark plus the allowed lateness, unless partitions behind hold the watermark back.
    pub latest_evidence: Option<DateTime<Utc>>,
    /// KPI counter deltas to add, see [`crate::kpi`].
    pub kpis: BTreeMap<KpiKey, i64>,
    /// The midnight of the last scoring (RFM and tiers), if there has been one.
    pub scored_at: Option<DateTime<Utc>>,
}

impl Changes {
    /// Whether there is nothing to write but (possibly) a moved checkpoint or watermark.
    pub fn is_empty(&self) -> bool {
        self.customers.is_empty() && self.outbox.is_empty() && self.kpis.is_empty()
    }
}

/// The projection state: folded in position order, so that a rebuild from position zero gives
/// exactly the state (and outbox) that live processing gave.
///
/// Invariant: after every [`Projection::apply`] or [`Projection::tick`], no customer has a
/// pending time-driven deadline at or before the watermark. The same [`Rules`] and currency must
/// be passed to every call for the life of a projection (a rules change is a rebuild).
///
/// Merges: a `customers_merged` event in a customer's stream merges the named customer (with
/// everyone merged into it) into the stream's customer (or into the one that customer is merged
/// into). From then on the combined customer's view holds everyone's facts, value, purchases,
/// consents and KPI facts, folds every member's events, and continues its own stage history and
/// outbox; a member's view is frozen. `customers_unmerged` splits a member (with everyone merged
/// into it) off again; each side's view is then rebuilt from its members' own folds. Both enter
/// the stage their new facts imply (rules [`patron_lifecycle::rule::MERGE`] and
/// [`patron_lifecycle::rule::UNMERGE`]). All of it follows from the log alone, so a rebuild
/// still equals live processing.
#[derive(Debug, Clone, Default)]
pub struct Projection {
    customers: BTreeMap<CustomerId, CustomerView>,
    watermark: Option<DateTime<Utc>>,
    checkpoint: Position,
    /// `(next_deadline, customer)` for every customer that has one.
    deadlines: BTreeSet<(DateTime<Utc>, CustomerId)>,
    /// Each indexed customer's deadline, to find its entry in `deadlines`. (Hashed, like the
    /// two below: probed for nearly every event, never iterated in order.)
    deadline_of: HashMap<CustomerId, DateTime<Utc>>,
    dirty: HashSet<CustomerId>,
    /// For each dirty customer, its state-driven KPI contributions before this batch changed it.
    baselines: HashMap<CustomerId, Vec<(KpiKey, i64)>>,
    /// Event-driven KPI counters added since the last take.
    kpis: BTreeMap<KpiKey, i64>,
    scored_at: Option<DateTime<Utc>>,
    /// The latest valid model event applied (probability-alive rules), see [`crate::p_alive`].
    model: Option<FittedModel>,
    /// The event time of that model event.
    model_at: Option<DateTime<Utc>>,
    /// The latest evidence of time: the greatest of every event's time capped at its commit
    /// time. The watermark is this less the allowed lateness, held back by `behind`.
    high: Option<DateTime<Utc>>,
    /// Source partitions that ingest last reported as read behind their end, each with the
    /// latest event time read from it (`None`: nothing yet), from the `$sources` stream: the
    /// watermark stays at or before the earliest of them (see [`SourceHold`]).
    behind: SourceHold,
    /// The commit time of the event being applied (for `historical`).
    recorded_at: Option<DateTime<Utc>>,
    /// Every valid model event applied, by event time (a re-fold puts each in force at its
    /// time).
    models: Vec<(DateTime<Utc>, FittedModel)>,
    /// The rules' `historical_after_days`, as of the last page applied.
    historical_after: chrono::TimeDelta,
    /// How many late events re-folded their customer.
    refolds: u64,
    /// How many re-folds found a view that was not the fold of the customer's earlier events.
    refold_mismatches: u64,
    outbox: Vec<OutboxEntry>,
    /// Every customer that others are merged into directly, with those others (sorted): the
    /// inverse of the views' `merged_into`. Empty while nobody is merged.
    members: BTreeMap<CustomerId, Vec<CustomerId>>,
}

impl Projection {
    /// An empty projection, before the first event.
    pub fn new() -> Self {
        Self::default()
    }

    /// A projection resumed from persisted views, watermark, checkpoint and last scoring (what
    /// an adapter loads at start); the deadline index is rebuilt from the views with `rules`,
    /// and who is merged into whom from their `merged_into`.
    pub fn restore(
        customers: impl IntoIterator<Item = (CustomerId, CustomerView)>,
        watermark: Option<DateTime<Utc>>,
        checkpoint: Position,
        scored_at: Option<DateTime<Utc>>,
        rules: &Rules,
    ) -> Self {
        let mut projection = Self {
            customers: customers.into_iter().collect(),
            watermark,
            high: watermark.and_then(|w| w.checked_add_signed(rules.allowed_lateness())),
            checkpoint,
            scored_at,
            ..Self::default()
        };
        for (id, view) in &projection.customers {
            if let Some(parent) = &view.merged_into {
                let members = projection.members.entry(parent.clone()).or_default();
                members.push(id.clone());
            }
        }
        for members in projection.members.values_mut() {
            members.sort_unstable();
        }
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

    /// The latest evidence of time: the greatest event time applied, each capped at its commit
    /// time (the watermark is this less the allowed lateness); `None` before the first event.
    pub fn latest_evidence(&self) -> Option<DateTime<Utc>> {
        self.high
    }

    /// Puts back the latest evidence of time when resuming (what [`Changes::latest_evidence`]
    /// persisted); without it, the evidence is taken to be the watermark plus the allowed
    /// lateness, which is exact unless partitions behind were holding the watermark.
    pub fn restore_latest_evidence(&mut self, latest: Option<DateTime<Utc>>) {
        if let Some(latest) = latest {
            self.high = Some(self.high.map_or(latest, |h| h.max(latest)));
        }
    }

    /// The source partitions holding the watermark back: reported behind their end by ingest,
    /// each with the latest event time read from it.
    pub fn sources_behind(&self) -> &SourceHold {
        &self.behind
    }

    /// Puts back the source progress when resuming: a `source_progress` event at or before the
    /// checkpoint (events after it will be applied). Call for each, in log order.
    pub fn restore_progress(&mut self, event: &RecordedEvent) {
        if event.position > self.checkpoint {
            return;
        }
        if let Some(progress) = source_progress(&event.event) {
            self.behind.apply(progress);
        }
    }

    /// The position of the last applied event ([`Position::ZERO`] before the first).
    pub fn checkpoint(&self) -> Position {
        self.checkpoint
    }

    /// The fitted model the probability-alive rules follow: the latest valid `model_fitted`
    /// event applied; `None` before the first.
    pub fn model(&self) -> Option<&FittedModel> {
        self.model.as_ref()
    }

    /// Puts back the model in force when resuming from persisted views: the latest valid
    /// `model_fitted` event at or before the checkpoint (customers' schedules are part of their
    /// views and are not recomputed). Events after the checkpoint are ignored: they will be
    /// applied.
    pub fn restore_model(&mut self, event: &RecordedEvent) {
        if event.position > self.checkpoint {
            return;
        }
        if let EventBody::ModelFitted(fitted) = &event.event.body
            && let Some(model) = FittedModel::from_event(fitted)
        {
            self.model = Some(model);
            self.model_at = Some(event.event.occurred_at);
            self.remember_model(event.event.occurred_at, model);
        }
    }

    /// Sets the revisions a customer's records are published under (a rebuild adopting the
    /// published keys, see [`crate::reconcile`]); the view becomes dirty. Unknown customers are
    /// left alone.
    pub(crate) fn set_revisions(&mut self, customer_id: &CustomerId, revisions: Vec<(u64, u32)>) {
        if self.customers.contains_key(customer_id) {
            self.touch(customer_id);
            if let Some(view) = self.customers.get_mut(customer_id) {
                view.revisions = revisions;
            }
        }
    }

    /// The earliest pending time-driven deadline and its customer, if any.
    pub fn next_deadline(&self) -> Option<&(DateTime<Utc>, CustomerId)> {
        self.deadlines.first()
    }

    /// Applies the event at the next position and returns the transitions it fired, which are
    /// also kept for [`Projection::take_changes`]. The same as [`Projection::apply_page`] with a
    /// page of one event.
    pub fn apply(
        &mut self,
        event: &RecordedEvent,
        rules: &Rules,
        currency: Currency,
        streams: &dyn Streams,
    ) -> Result<Vec<OutboxEntry>, NeedsStream> {
        let start = self.outbox.len();
        self.apply_page(std::slice::from_ref(event), rules, currency, streams)?;
        Ok(self.outbox[start..].to_vec())
    }

    /// How many late events re-folded their customer, and how many of those re-folds found a
    /// view that was not the fold of the customer's earlier events (0 unless the read models
    /// were projected by an older version).
    pub fn refold_counts(&self) -> (u64, u64) {
        (self.refolds, self.refold_mismatches)
    }

    /// Applies a page of events in position order; returns how many were new.
    ///
    /// An event at or before the checkpoint has already been applied: it is skipped and changes
    /// nothing (idempotent re-delivery). Ticks, Patron's own streams and unknown event types
    /// create no customer but move the checkpoint and the evidence of time.
    ///
    /// Each customer is folded in event-time order (ties by event id). An event that is *late*
    /// for its customer (see [`refold`](self::refold)) re-folds the customer from its stored
    /// events, which `streams` supplies; when it does not have them, the call stops before that
    /// event with [`NeedsStream`]: fetch the stream and call again with the same page.
    ///
    /// After the event, the evidence of time rises to the event's time capped at its commit
    /// time, and the watermark (that evidence less the rules' allowed lateness) passes every
    /// customer deadline at or before it, in deadline order (ties by customer id).
    ///
    /// A `model_fitted` event in the `$clv` stream makes its model the one in force and
    /// recomputes every customer's probability-alive schedule; a purchase or refund recomputes
    /// its customer's (see [`crate::p_alive`]).
    ///
    /// Scores (RFM, segment, tier) are recomputed when the watermark enters a new UTC day. Only
    /// the last such crossing in a page is scored: earlier scores would be overwritten before
    /// anything read them, and the state at the last crossing is the same whatever the paging,
    /// so live processing and a rebuild end with the same scores.
    pub fn apply_page(
        &mut self,
        events: &[RecordedEvent],
        rules: &Rules,
        currency: Currency,
        streams: &dyn Streams,
    ) -> Result<usize, NeedsStream> {
        self.historical_after = rules.historical_after();
        let last_crossing = self.last_day_crossing(events, rules);
        let mut applied = 0;
        for (index, event) in events.iter().enumerate() {
            if event.position <= self.checkpoint {
                continue;
            }
            let customer_id = &event.event.customer_id;
            let projected = !customer_id.is_reserved()
                && !matches!(event.event.body, EventBody::Unknown(_) | EventBody::Tick(_));
            let late = if projected {
                self.late_stream(event, streams, applied)?
            } else {
                None
            };
            // A valid model event dated before what some customers have folded re-folds them:
            // their folds under the models known so far (what was published), taken first.
            let mut model_late = match &event.event.body {
                EventBody::ModelFitted(fitted)
                    if *customer_id == CustomerId::clv()
                        && FittedModel::from_event(fitted).is_some() =>
                {
                    let customers = self.model_late_for(event.event.occurred_at);
                    Some(self.folds_before(
                        &customers,
                        event.position,
                        streams,
                        applied,
                        rules,
                        currency,
                    )?)
                }
                _ => None,
            };
            applied += 1;
            self.checkpoint = event.position;
            self.recorded_at = Some(event.recorded_at);
            if projected {
                self.touch(customer_id);
                let view = match self.customers.get_mut(customer_id) {
                    Some(view) => view,
                    None => self.customers.entry(customer_id.clone()).or_default(),
                };
                if let Some(stream) = late {
                    self.refold(event, &stream, rules, currency);
                } else if view.own.is_some() {
                    // Part of a merged group (rare): see `merge`.
                    self.apply_merged(&event.event, rules, currency);
                } else {
                    let (model, model_at) = (self.model.as_ref(), self.model_at);
                    let fired = fold(view, &event.event, rules, currency, model, model_at);
                    kpi::event_counters(
                        &event.event,
                        view.lifecycle.stage,
                        currency,
                        &mut self.kpis,
                    );
                    let history = view.lifecycle.transitions();
                    let next = patron_lifecycle::next_deadline(&view.lifecycle, rules);
                    self.record_at(customer_id, history, fired);
                    self.set_deadline(customer_id, next);
                }
                match &event.event.body {
                    EventBody::CustomersMerged(merged) => {
                        self.merge(customer_id, merged, event.event.occurred_at, rules);
                    }
                    EventBody::CustomersUnmerged(unmerged) => {
                        self.unmerge(customer_id, unmerged, event.event.occurred_at, rules);
                    }
                    _ => {}
                }
            } else if let EventBody::ModelFitted(fitted) = &event.event.body
                && *customer_id == CustomerId::clv()
            {
                self.apply_model(fitted, event.event.occurred_at, rules);
                if let Some(folds) = model_late.take() {
                    self.refold_under_new_model(folds, rules, currency);
                }
            } else if let Some(progress) = source_progress(&event.event) {
                self.behind.apply(progress);
            }
            self.observe(event, rules);
            if Some(index) == last_crossing
                && let Some(watermark) = self.watermark
            {
                self.score(midnight(watermark));
            }
        }
        Ok(applied)
    }

    /// The evidence of time after an event: `high` joined to the event's time, but never later
    /// than its commit. Source progress brings none (it says what was read, not when).
    fn evidence(high: Option<DateTime<Utc>>, event: &RecordedEvent) -> Option<DateTime<Utc>> {
        if matches!(event.event.body, EventBody::SourceProgress(_)) {
            return high;
        }
        let evidence = event.event.occurred_at.min(event.recorded_at);
        Some(high.map_or(evidence, |h| h.max(evidence)))
    }

    /// The watermark that evidence `high` allows: `high`, held at the earliest progress of the
    /// partitions behind, less the allowed lateness. `None` while nothing allows one.
    fn allowed(
        high: Option<DateTime<Utc>>,
        behind: &SourceHold,
        rules: &Rules,
    ) -> Option<DateTime<Utc>> {
        let low = behind.cap(high?)?;
        low.checked_sub_signed(rules.allowed_lateness())
    }

    /// Takes the evidence of time an applied event brings and raises the watermark with it.
    fn observe(&mut self, event: &RecordedEvent, rules: &Rules) {
        self.high = Self::evidence(self.high, event);
        if let Some(watermark) = Self::allowed(self.high, &self.behind, rules) {
            self.raise_watermark(watermark, rules);
        }
    }

    /// Keeps a model event's model with its time (in time order) for re-folds.
    fn remember_model(&mut self, at: DateTime<Utc>, model: FittedModel) {
        let index = self.models.partition_point(|(t, _)| *t <= at);
        self.models.insert(index, (at, model));
    }

    /// Makes a fitted model the one in force (an invalid one is ignored) and recomputes every
    /// customer's probability-alive schedule from the watermark the event brings; customers
    /// whose schedule changes become dirty. Crossings already passed fire when the watermark is
    /// raised next (at once: the caller raises it to the event's time).
    fn apply_model(&mut self, fitted: &ModelFitted, occurred_at: DateTime<Utc>, rules: &Rules) {
        let Some(model) = FittedModel::from_event(fitted) else {
            return;
        };
        // The previous rules govern up to the model's time (a no-op live, where the watermark
        // has passed it; folding one customer's events, as "as of" queries do, it is not).
        self.fire_until(occurred_at, rules);
        self.model = Some(model);
        self.model_at = Some(occurred_at);
        self.remember_model(occurred_at, model);
        let schedule = |view: &CustomerView| {
            let schedule = p_alive_schedule(view, &model, occurred_at, rules);
            (schedule != view.lifecycle.p_alive).then_some(schedule)
        };
        // A member's (frozen) view keeps its schedule; own folds follow the model like a
        // customer's would.
        let changed: Vec<ScheduleChange> = self
            .customers
            .iter()
            .filter_map(|(id, view)| {
                let public = view.merged_into.is_none().then(|| schedule(view)).flatten();
                let own = view.own.as_deref().and_then(schedule);
                (public.is_some() || own.is_some()).then(|| (id.clone(), public, own))
            })
            .collect();
        for (id, public, own) in changed {
            self.touch(&id);
            if let Some(view) = self.customers.get_mut(&id) {
                if let Some(schedule) = public {
                    view.lifecycle.p_alive = schedule;
                }
                if let (Some(schedule), Some(own)) = (own, view.own.as_deref_mut()) {
                    own.lifecycle.p_alive = schedule;
                }
            }
            self.reindex(&id, rules);
        }
    }

    /// The index of the last new event in `events` that moves the watermark into a later UTC
    /// day than the one before it (the very first event counts).
    fn last_day_crossing(&self, events: &[RecordedEvent], rules: &Rules) -> Option<usize> {
        let (mut high, mut watermark) = (self.high, self.watermark);
        // Cloned only when the page carries source progress (a few partitions at most).
        let mut behind = std::borrow::Cow::Borrowed(&self.behind);
        let mut last = None;
        for (index, event) in events.iter().enumerate() {
            if event.position <= self.checkpoint {
                continue;
            }
            if let Some(progress) = source_progress(&event.event) {
                behind.to_mut().apply(progress);
            }
            high = Self::evidence(high, event);
            let Some(raised) = Self::allowed(high, &behind, rules) else {
                continue;
            };
            let after = watermark.map_or(raised, |w| w.max(raised));
            if watermark.is_none_or(|before| before < midnight(after)) {
                last = Some(index);
            }
            watermark = Some(after);
        }
        last
    }

    /// Recomputes every buyer's RFM scores, segment and tier as of `as_of`; customers whose
    /// scores change become dirty. Customers merged into another are left out (the one they
    /// are merged into has their purchases).
    fn score(&mut self, as_of: DateTime<Utc>) {
        self.scored_at = Some(as_of);
        let inputs: Vec<(&CustomerId, patron_value::RfmInput)> = self
            .customers
            .iter()
            .filter(|(_, view)| view.merged_into.is_none())
            .filter_map(|(id, view)| Some((id, view.value.rfm_input(as_of)?)))
            .collect();
        let revenue: Vec<(&CustomerId, i64)> = inputs
            .iter()
            .map(|(id, input)| (*id, input.monetary_minor))
            .collect();
        let mut tiers =
            patron_value::abc_tiers(&revenue, DEFAULT_A_SHARE_PERCENT, DEFAULT_B_SHARE_PERCENT);
        tiers.sort_unstable_by(|x, y| x.0.cmp(y.0));
        let mut rfm = patron_value::rfm_scores(&inputs);
        rfm.sort_unstable_by(|x, y| x.0.cmp(y.0));
        // Both lists hold every buyer once, sorted by id: zip them.
        let changed: Vec<(CustomerId, Scores)> = rfm
            .into_iter()
            .zip(tiers)
            .filter_map(|((id, rfm), (_, tier))| {
                let scores = Scores {
                    rfm,
                    tier: Some(tier),
                };
                let current = self.customers.get(id).and_then(|view| view.scores.as_ref());
                (current != Some(&scores)).then(|| (id.clone(), scores))
            })
            .collect();
        for (id, scores) in changed {
            self.touch(&id);
            if let Some(view) = self.customers.get_mut(&id) {
                view.scores = Some(scores);
            }
        }
    }

    /// Marks a customer as changed in this batch, remembering its KPI contributions before the
    /// change (call before mutating its view).
    fn touch(&mut self, customer_id: &CustomerId) {
        if !self.dirty.contains(customer_id) {
            self.dirty.insert(customer_id.clone());
            let before = self
                .customers
                .get(customer_id)
                .map(kpi::state_contributions)
                .unwrap_or_default();
            self.baselines.insert(customer_id.clone(), before);
        }
    }

    /// Advances event time to `watermark` without an event, firing every deadline it passes;
    /// returns the transitions, stamped at their deadlines and at the current checkpoint.
    ///
    /// A projection's state must follow from the log alone, so in production a tick is itself
    /// an event in the store (replay must see it); this method is what applying one does. A
    /// watermark at or before the current one changes nothing.
    pub fn tick(&mut self, watermark: DateTime<Utc>, rules: &Rules) -> Vec<OutboxEntry> {
        let start = self.outbox.len();
        if let Some(high) = watermark.checked_add_signed(rules.allowed_lateness()) {
            self.high = Some(self.high.map_or(high, |h| h.max(high)));
        }
        self.raise_watermark(watermark, rules);
        self.outbox[start..].to_vec()
    }

    /// Hands over everything changed since the last call (dirty customers' current views and
    /// the transitions fired), with the checkpoint and watermark to write alongside.
    pub fn take_changes(&mut self) -> Changes {
        self.changes(|customers, id| customers.get(id).cloned())
    }

    /// Hands over the transitions fired since the last take, leaving the rest of the changes
    /// for [`Projection::take_changes`] (a rebuild writes transitions as it goes: they are
    /// never rewritten, unlike views).
    pub fn take_transitions(&mut self) -> Vec<OutboxEntry> {
        std::mem::take(&mut self.outbox)
    }

    /// The last [`Projection::take_changes`] of a projection that is done with: the changed
    /// views are moved out rather than copied (what the end of a rebuild hands over is every
    /// customer).
    pub fn into_changes(mut self) -> Changes {
        self.changes(BTreeMap::remove)
    }

    fn changes(
        &mut self,
        mut view: impl FnMut(
            &mut BTreeMap<CustomerId, CustomerView>,
            &CustomerId,
        ) -> Option<CustomerView>,
    ) -> Changes {
        let mut kpis = std::mem::take(&mut self.kpis);
        let mut baselines = std::mem::take(&mut self.baselines);
        let mut dirty: Vec<CustomerId> = std::mem::take(&mut self.dirty).into_iter().collect();
        dirty.sort_unstable();
        let customers = dirty
            .into_iter()
            .filter_map(|id| {
                let view = view(&mut self.customers, &id)?;
                for (key, value) in baselines.remove(&id).unwrap_or_default() {
                    kpi::add(&mut kpis, key, -value);
                }
                for (key, value) in kpi::state_contributions(&view) {
                    kpi::add(&mut kpis, key, value);
                }
                Some((id, view))
            })
            .collect();
        kpis.retain(|_, delta| *delta != 0);
        Changes {
            customers,
            outbox: std::mem::take(&mut self.outbox),
            checkpoint: self.checkpoint,
            watermark: self.watermark,
            latest_evidence: self.high,
            kpis,
            scored_at: self.scored_at,
        }
    }

    /// Raises the watermark to `to` (never lowers it) and fires every deadline now passed.
    fn raise_watermark(&mut self, to: DateTime<Utc>, rules: &Rules) {
        let watermark = self.watermark.map_or(to, |w| w.max(to));
        self.watermark = Some(watermark);
        self.fire_until(watermark, rules);
    }

    /// Fires every customer deadline at or before `watermark`, in deadline order (ties by
    /// customer id).
    fn fire_until(&mut self, watermark: DateTime<Utc>, rules: &Rules) {
        while self
            .deadlines
            .first()
            .is_some_and(|(deadline, _)| *deadline <= watermark)
        {
            let Some((deadline, customer_id)) = self.deadlines.pop_first() else {
                break;
            };
            self.deadline_of.remove(&customer_id);
            let merged = |view: &CustomerView| view.merged_into.is_some();
            if self.customers.get(&customer_id).is_none_or(merged) {
                continue;
            }
            self.touch(&customer_id);
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
        let Some(view) = self.customers.get(customer_id) else {
            return;
        };
        let history = view.lifecycle.transitions();
        self.record_at(customer_id, history, fired);
    }

    /// [`Projection::record`] for a customer whose stage history is now `history` long
    /// (forgotten transitions included). The customer's history is forgotten: views hold only
    /// its length.
    fn record_at(&mut self, customer_id: &CustomerId, history: usize, fired: Vec<Transition>) {
        if fired.is_empty() {
            return;
        }
        let first = history.saturating_sub(fired.len());
        let consent = match self.customers.get_mut(customer_id) {
            Some(view) => {
                // Recorded in the outbox (and so in `stage_history`): only the count is needed.
                view.lifecycle.forget_history();
                view.consents.marks()
            }
            None => BTreeMap::new(),
        };
        self.record_from(customer_id, first, fired, &consent);
    }

    /// Puts transitions `first..` of a customer in the outbox (and counts their stage flows).
    fn record_from(
        &mut self,
        customer_id: &CustomerId,
        first: usize,
        fired: Vec<Transition>,
        consent: &BTreeMap<String, bool>,
    ) {
        let revisions = self
            .customers
            .get(customer_id)
            .map(|view| view.revisions.clone())
            .unwrap_or_default();
        for (i, transition) in fired.into_iter().enumerate() {
            kpi::transition_counter(&transition, &mut self.kpis);
            let seq = first + i;
            self.push_outbox(OutboxEntry {
                dedupe_key: refold::dedupe_key(customer_id, seq, &revisions, &transition),
                customer_id: customer_id.clone(),
                seq,
                transition,
                position: self.checkpoint,
                consent: consent.clone(),
                retracts: None,
                historical: false,
            });
        }
    }

    /// Adds an entry to the outbox, marking it historical when its transition is older than
    /// the rules' horizon at the commit of the event being applied.
    fn push_outbox(&mut self, mut entry: OutboxEntry) {
        if let Some(recorded_at) = self.recorded_at {
            entry.historical = recorded_at - entry.transition.at > self.historical_after;
        }
        self.outbox.push(entry);
    }

    /// Puts the customer's current next deadline in the index (replacing any previous one); a
    /// customer merged into another has none.
    fn reindex(&mut self, customer_id: &CustomerId, rules: &Rules) {
        let next = self
            .customers
            .get(customer_id)
            .filter(|view| view.merged_into.is_none())
            .and_then(|view| patron_lifecycle::next_deadline(&view.lifecycle, rules));
        self.set_deadline(customer_id, next);
    }

    /// Puts `next` in the index as the customer's deadline (replacing any previous one).
    fn set_deadline(&mut self, customer_id: &CustomerId, next: Option<DateTime<Utc>>) {
        let current = self.deadline_of.get(customer_id).copied();
        if next == current {
            return;
        }
        if let Some(old) = current {
            self.deadline_of.remove(customer_id);
            self.deadlines.remove(&(old, customer_id.clone()));
        }
        if let Some(deadline) = next {
            self.deadlines.insert((deadline, customer_id.clone()));
            self.deadline_of.insert(customer_id.clone(), deadline);
        }
    }
}

/// A customer whose probability-alive schedules a new model changes: the new schedule of its
/// view and of its own fold, where they change.
type ScheduleChange = (
    CustomerId,
    Option<Option<PAliveSchedule>>,
    Option<Option<PAliveSchedule>>,
);

/// The customer's probability-alive schedule under a model dated `model_at`, computed from the
/// model's time but never from before the customer's last purchase: the same schedule whatever
/// order the model and the customer's purchases arrived in.
pub(super) fn p_alive_schedule(
    view: &CustomerView,
    model: &FittedModel,
    model_at: DateTime<Utc>,
    rules: &Rules,
) -> Option<PAliveSchedule> {
    let lifecycle = &view.lifecycle;
    let from = lifecycle
        .last_purchase_at
        .map_or(model_at, |last| last.max(model_at));
    p_alive::schedule(&view.purchases.summary, model, from, rules)
}

/// Folds one event of the customer into a view (lifecycle, value, purchases, consents, KPI facts
/// and, with a model in force, the probability-alive schedule after a purchase or refund);
/// returns the transitions fired, also in the view's history.
fn fold(
    view: &mut CustomerView,
    event: &Event,
    rules: &Rules,
    currency: Currency,
    model: Option<&FittedModel>,
    model_at: Option<DateTime<Utc>>,
) -> Vec<Transition> {
    let fired = patron_lifecycle::apply(&mut view.lifecycle, event, rules);
    let key = refold::order_key(event);
    view.folded = Some(view.folded.map_or(key, |folded| folded.max(key)));
    patron_value::apply(&mut view.value, event, currency);
    purchases::apply(&mut view.purchases, event, currency);
    view.consents.apply(event);
    if let Some(model) = model
        && matches!(event.body, EventBody::Purchase(_) | EventBody::Refund(_))
    {
        let model_at = model_at.unwrap_or(event.occurred_at);
        view.lifecycle.p_alive = p_alive_schedule(view, model, model_at, rules);
    }
    kpi::apply_state(&mut view.kpi, event, currency);
    fired
}

/// The source progress an event reports, if it is a progress report of the `$sources` stream.
fn source_progress(event: &Event) -> Option<&patron_domain::SourceProgress> {
    match &event.body {
        EventBody::SourceProgress(progress) if event.customer_id == CustomerId::sources() => {
            Some(progress)
        }
        _ => None,
    }
}
