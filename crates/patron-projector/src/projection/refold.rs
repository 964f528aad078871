//! Late events: a customer is re-folded from its stored events in event-time order, and what
//! changes in its published stage history goes out as corrections.
//!
//! A customer's view must always equal the fold of its events *sorted by event time* (ties by
//! event id), advanced to the watermark: that is the oracle the tests check against. Events that
//! arrive in that order are simply folded. One that would fold differently at its place in time
//! is *late* ([`Projection::is_late`]: dated before the customer's last transition, or a purchase
//! or refund ordered before an event the view holds or before the model in force): the
//! projection folds the customer's stored events with the late one afresh, in event-time
//! order, and compares the stage history it had (the same fold without the late event) with the
//! new one. Transitions past their common prefix no longer hold: each is *retracted* (an outbox
//! entry naming the record it retracts, newest first), then the new transitions follow in order,
//! under a new *revision* that their dedupe keys carry. Event-driven KPI counters move by the
//! difference of the two folds.
//!
//! Customers that are part of a merged group are not re-folded (their events are folded in
//! arrival order, as before): see the README's *Time and order*.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use patron_domain::{Currency, CustomerId, Event, EventBody};
use patron_lifecycle::{Rules, Transition};
use patron_store::{Position, RecordedEvent};

use super::{CustomerView, OutboxEntry, Projection, fold, p_alive_schedule};
use crate::kpi::{self, KpiKey};
use crate::p_alive::FittedModel;

/// Where the stored events of a customer with a late event come from (the projection keeps no
/// events in memory).
pub trait Streams {
    /// Every stored event of the customer's stream (at least up to the late event's position;
    /// later ones are ignored), or `None` when they have not been fetched.
    fn stream(&self, customer_id: &CustomerId) -> Option<Vec<RecordedEvent>>;
}

impl Streams for HashMap<CustomerId, Vec<RecordedEvent>> {
    fn stream(&self, customer_id: &CustomerId) -> Option<Vec<RecordedEvent>> {
        self.get(customer_id).cloned()
    }
}

/// A log held in memory (tests, `GetCustomerAsOf`, benchmarks): every stream is in it.
#[derive(Debug, Clone, Copy)]
pub struct LogStreams<'a>(pub &'a [RecordedEvent]);

impl Streams for LogStreams<'_> {
    fn stream(&self, customer_id: &CustomerId) -> Option<Vec<RecordedEvent>> {
        Some(
            self.0
                .iter()
                .filter(|e| e.event.customer_id == *customer_id)
                .cloned()
                .collect(),
        )
    }
}

/// [`Projection::apply_page`] stopped before a late event whose customer's stream it needs:
/// fetch the stream and call again with the same page (applied events are skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeedsStream {
    /// The customer whose stream is needed.
    pub customer_id: CustomerId,
    /// How many events the call applied before it stopped.
    pub applied: usize,
}

/// The records that still hold once every retraction in `entries` has withdrawn the record it
/// names: what a consumer that applies retractions ends up with, in publication order.
pub fn net_records(entries: impl IntoIterator<Item = OutboxEntry>) -> Vec<OutboxEntry> {
    // Dedupe keys are unique and a retraction comes after the record it names, so a record
    // holds exactly when no retraction names it.
    let entries: Vec<OutboxEntry> = entries.into_iter().collect();
    let retracted: std::collections::HashSet<&str> = entries
        .iter()
        .filter_map(|entry| entry.retracts.as_deref())
        .collect();
    let kept: Vec<bool> = entries
        .iter()
        .map(|entry| entry.retracts.is_none() && !retracted.contains(entry.dedupe_key.as_str()))
        .collect();
    entries
        .into_iter()
        .zip(kept)
        .filter_map(|(entry, kept)| kept.then_some(entry))
        .collect()
}

/// One fold of a customer's events in event-time order.
pub(super) struct Refolded {
    view: CustomerView,
    history: Vec<Transition>,
    /// The event-driven KPI counters of the events (stage flows are counted as transitions
    /// are published and retracted).
    counters: BTreeMap<KpiKey, i64>,
}

/// Whether an event of a customer's own stream is folded into its view.
fn projected(event: &Event) -> bool {
    !matches!(event.body, EventBody::Unknown(_) | EventBody::Tick(_))
}

/// The order events are folded in: event time, then event id.
pub(super) fn order_key(event: &Event) -> (DateTime<Utc>, uuid::Uuid) {
    (event.occurred_at, event.event_id)
}

/// The dedupe key of a customer's transition `seq` published under `revisions`:
/// `{customer}:{seq}` (with `.r{revision}` once corrected) and `#` a digest of the transition.
///
/// The digest keeps keys apart across rules: a rebuild with other rules makes other transitions
/// at the same index, which must not be taken for repeats of the old ones (the outbox drops a
/// key it already holds); with the same rules, the same transitions get the same keys, so a
/// rebuild publishes nothing twice. The revision keeps a transition retracted and later
/// published again, identical, from being dropped as a repeat.
pub(crate) fn dedupe_key(
    customer_id: &CustomerId,
    seq: usize,
    revisions: &[(u64, u32)],
    transition: &Transition,
) -> String {
    let seq64 = u64::try_from(seq).unwrap_or(u64::MAX);
    let digest = digest(transition);
    match revisions.iter().rev().find(|(first, _)| *first <= seq64) {
        Some((_, revision)) => format!("{customer_id}:{seq}.r{revision}#{digest:08x}"),
        None => format!("{customer_id}:{seq}#{digest:08x}"),
    }
}

/// A stable 32-bit digest of a transition (FNV-1a over its stages, time, rule and facts): the
/// same on every platform and version, as dedupe keys must be.
fn digest(transition: &Transition) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes.iter().chain(b"\x1f") {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(transition.from.map_or("", |s| s.as_str()).as_bytes());
    feed(transition.to.as_str().as_bytes());
    feed(
        transition
            .at
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
            .as_bytes(),
    );
    feed(transition.rule.as_bytes());
    for (key, value) in &transition.facts {
        feed(key.as_bytes());
        feed(value.as_bytes());
    }
    #[expect(clippy::cast_possible_truncation, reason = "folds 64 bits into 32")]
    let folded = (hash ^ (hash >> 32)) as u32;
    folded
}

impl Projection {
    /// Whether `event` is late for its customer: dated before the customer's last transition
    /// (the stage it was answered in, or the first stage, would differ); or a purchase or refund
    /// ordered before an event the view holds or before the model in force (the order of money
    /// events decides transitions and probability-alive schedules).
    ///
    /// Any other event dated at or after the last transition folds the same in any order: it
    /// changes no lifecycle fact but the latest event time, its value and KPI effects do not
    /// depend on order, and its stage then is the current one.
    pub(super) fn is_late(&self, event: &Event) -> bool {
        let Some(view) = self.customers.get(&event.customer_id) else {
            return false;
        };
        let t = event.occurred_at;
        let money = matches!(event.body, EventBody::Purchase(_) | EventBody::Refund(_));
        view.lifecycle.since.is_some_and(|since| t < since)
            || (money
                && (view.folded.is_some_and(|folded| order_key(event) < folded)
                    || self.model_at.is_some_and(|model_at| t < model_at)))
    }

    /// Whether the customer is part of a merged group (folded in arrival order, not re-folded).
    fn in_merged_group(&self, customer_id: &CustomerId) -> bool {
        self.customers
            .get(customer_id)
            .is_some_and(|view| view.own.is_some() || view.merged_into.is_some())
    }

    /// The customers of `page` with an event that is late for the state before the page (and
    /// that can be re-folded), once each: whose streams to read before applying it.
    pub fn late_candidates(&self, page: &[RecordedEvent]) -> Vec<CustomerId> {
        let mut out: Vec<CustomerId> = page
            .iter()
            .filter(|e| e.position > self.checkpoint && !e.event.customer_id.is_reserved())
            .filter(|e| projected(&e.event) && self.is_late(&e.event))
            .filter(|e| !self.in_merged_group(&e.event.customer_id))
            .map(|e| e.event.customer_id.clone())
            .collect();
        // A model event dated before what customers have folded re-folds them (as of the state
        // before the page; customers it makes late within the page are read one by one).
        for event in page.iter().filter(|e| e.position > self.checkpoint) {
            if let EventBody::ModelFitted(fitted) = &event.event.body
                && event.event.customer_id == CustomerId::clv()
                && crate::p_alive::FittedModel::from_event(fitted).is_some()
            {
                out.extend(self.model_late_for(event.event.occurred_at));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// For a late event of a customer that can be re-folded, its stream; `Ok(None)` when the
    /// event is not late or the customer is part of a merged group (folded in arrival order).
    pub(super) fn late_stream(
        &self,
        event: &RecordedEvent,
        streams: &dyn Streams,
        applied: usize,
    ) -> Result<Option<Vec<RecordedEvent>>, NeedsStream> {
        let customer_id = &event.event.customer_id;
        if self.in_merged_group(customer_id) || !self.is_late(&event.event) {
            return Ok(None);
        }
        let stream = streams.stream(customer_id).ok_or_else(|| NeedsStream {
            customer_id: customer_id.clone(),
            applied,
        })?;
        let merging = stream.iter().any(|e| {
            e.position < event.position
                && matches!(
                    e.event.body,
                    EventBody::CustomersMerged(_) | EventBody::CustomersUnmerged(_)
                )
        });
        Ok((!merging).then_some(stream))
    }

    /// Re-folds a customer with the late `event` from its `stream` and records the corrections.
    pub(super) fn refold(
        &mut self,
        event: &RecordedEvent,
        stream: &[RecordedEvent],
        rules: &Rules,
        currency: Currency,
    ) {
        let customer_id = event.event.customer_id.clone();
        let mut known: Vec<&Event> = stream
            .iter()
            .filter(|e| e.position < event.position && projected(&e.event))
            .map(|e| &e.event)
            .collect();
        known.sort_by_key(|e| order_key(e));
        let old = self.fold_sorted(&known, rules, currency);
        let at = known.partition_point(|e| order_key(e) < order_key(&event.event));
        known.insert(at, &event.event);
        let new = self.fold_sorted(&known, rules, currency);
        self.correct(&customer_id, old, new, rules);
    }

    /// The customers a model event dated `at` arrives late for: outside merged groups, with an
    /// event folded after `at` or a transition after it (fired under the model before it). Their
    /// histories from `at` on may differ under the new model: they are re-folded.
    pub(super) fn model_late_for(&self, at: DateTime<Utc>) -> Vec<CustomerId> {
        self.customers
            .iter()
            .filter(|(_, view)| view.own.is_none() && view.merged_into.is_none())
            .filter(|(_, view)| {
                view.folded.is_some_and(|(t, _)| t > at)
                    || view.lifecycle.since.is_some_and(|since| since > at)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Folds each of `customers` from its stream (events before `position`) under the models
    /// known so far: what was published for it. Stops with [`NeedsStream`] for a stream
    /// `streams` does not have.
    pub(super) fn folds_before(
        &self,
        customers: &[CustomerId],
        position: Position,
        streams: &dyn Streams,
        applied: usize,
        rules: &Rules,
        currency: Currency,
    ) -> Result<Vec<(CustomerId, Vec<Event>, Refolded)>, NeedsStream> {
        customers
            .iter()
            .map(|customer_id| {
                let stream = streams.stream(customer_id).ok_or_else(|| NeedsStream {
                    customer_id: customer_id.clone(),
                    applied,
                })?;
                let mut known: Vec<Event> = stream
                    .into_iter()
                    .filter(|e| e.position < position && projected(&e.event))
                    .map(|e| e.event)
                    .collect();
                known.sort_by_key(order_key);
                let refs: Vec<&Event> = known.iter().collect();
                let old = self.fold_sorted(&refs, rules, currency);
                Ok((customer_id.clone(), known, old))
            })
            .collect()
    }

    /// Re-folds customers folded before (`folds_before`) under the models known now (a model
    /// event arrived late for them) and records the corrections.
    pub(super) fn refold_under_new_model(
        &mut self,
        folds: Vec<(CustomerId, Vec<Event>, Refolded)>,
        rules: &Rules,
        currency: Currency,
    ) {
        for (customer_id, known, old) in folds {
            let refs: Vec<&Event> = known.iter().collect();
            let new = self.fold_sorted(&refs, rules, currency);
            self.correct(&customer_id, old, new, rules);
        }
    }

    /// Makes a customer's view the `new` fold and publishes the difference between the `old`
    /// fold's history (what was published) and the new one: retractions, newest first, then
    /// the new transitions under a new revision.
    fn correct(&mut self, customer_id: &CustomerId, old: Refolded, new: Refolded, rules: &Rules) {
        let customer_id = customer_id.clone();
        self.refolds += 1;

        let Some(current) = self.customers.get(&customer_id) else {
            return;
        };
        if current.lifecycle.transitions() != old.history.len()
            || current.lifecycle.stage != old.view.lifecycle.stage
        {
            // The view was not what the log gives (e.g. projected by an older version): the
            // corrections below still make the published history the new fold's.
            self.refold_mismatches += 1;
        }
        let published = current.lifecycle.transitions();
        let common = old
            .history
            .iter()
            .zip(&new.history)
            .take_while(|(a, b)| a == b)
            .count()
            .min(published);
        let mut revisions = current.revisions.clone();
        let changed = published > common || new.history.len() > common;
        let mut retractions = Vec::new();
        if changed {
            for seq in (common..published).rev() {
                let Some(transition) = old.history.get(seq) else {
                    continue;
                };
                kpi::retract_transition(transition, &mut self.kpis);
                let key = dedupe_key(&customer_id, seq, &revisions, transition);
                retractions.push((seq, transition.clone(), key));
            }
            let revision = revisions.last().map_or(1, |(_, r)| r.saturating_add(1));
            let first = u64::try_from(common).unwrap_or(u64::MAX);
            revisions.retain(|(from, _)| *from < first);
            revisions.push((first, revision));
        }
        for (key, value) in &new.counters {
            kpi::add(&mut self.kpis, key.clone(), *value);
        }
        for (key, value) in &old.counters {
            kpi::add(&mut self.kpis, key.clone(), -value);
        }

        let mut view = new.view;
        view.scores = current.scores.clone();
        view.revisions = revisions;
        view.lifecycle.forget_history();
        let consent = view.consents.marks();
        let next = patron_lifecycle::next_deadline(&view.lifecycle, rules);
        self.customers.insert(customer_id.clone(), view);
        for (seq, transition, key) in retractions {
            self.push_outbox(OutboxEntry {
                dedupe_key: format!("{key}-retracted"),
                customer_id: customer_id.clone(),
                seq,
                transition,
                position: self.checkpoint,
                consent: consent.clone(),
                retracts: Some(key),
                historical: false,
            });
        }
        if changed {
            let fresh: Vec<Transition> = new.history.into_iter().skip(common).collect();
            self.record_from(&customer_id, common, fresh, &consent);
        }
        self.set_deadline(&customer_id, next);
    }

    /// Folds `events` (sorted by [`order_key`]) into a fresh view, with the models in force at
    /// their times, and advances it to the watermark: what the log gives for the customer.
    fn fold_sorted(&self, events: &[&Event], rules: &Rules, currency: Currency) -> Refolded {
        let mut view = CustomerView::default();
        let mut history = Vec::new();
        let mut counters = BTreeMap::new();
        let mut models = self.models.iter().peekable();
        let mut model: Option<(FittedModel, DateTime<Utc>)> = None;
        for event in events {
            while let Some((at, next)) = models.next_if(|(at, _)| *at <= event.occurred_at) {
                history.extend(switch_model(&mut view, next, *at, rules));
                model = Some((*next, *at));
            }
            let (m, m_at) = (model.as_ref().map(|(m, _)| m), model.map(|(_, at)| at));
            history.extend(fold(&mut view, event, rules, currency, m, m_at));
            kpi::event_counters(event, view.lifecycle.stage, currency, &mut counters);
        }
        for (at, next) in models {
            if self.watermark.is_some_and(|w| *at <= w) && view.lifecycle.stage.is_some() {
                history.extend(switch_model(&mut view, next, *at, rules));
            }
        }
        if let Some(watermark) = self.watermark {
            history.extend(patron_lifecycle::advance(
                &mut view.lifecycle,
                watermark,
                rules,
            ));
        }
        Refolded {
            view,
            history,
            counters,
        }
    }
}

/// Advances a view to a model's time and puts it under that model.
fn switch_model(
    view: &mut CustomerView,
    model: &FittedModel,
    at: DateTime<Utc>,
    rules: &Rules,
) -> Vec<Transition> {
    let fired = patron_lifecycle::advance(&mut view.lifecycle, at, rules);
    view.lifecycle.p_alive = p_alive_schedule(view, model, at, rules);
    fired
}
