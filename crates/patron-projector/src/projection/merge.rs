//! Merged customers: `customers_merged` and `customers_unmerged`, and the events of customers
//! that are part of a merged group.
//!
//! Customers merged together form a tree: each member points, in its view's `merged_into`, to the
//! customer it was merged into directly, and the root (which points nowhere) is the combined
//! customer. Every member of a group, and its root, keeps in `own` what its own events alone
//! give. The root's view is the combined customer: at a merge it is recomputed from the own folds
//! of everyone in the group, and from then on every member's events are folded into it
//! incrementally; its stage history simply continues. A member's view is frozen as it was when
//! it was merged (with its scores cleared: members are not scored).
//!
//! A merge and a split are decided at the watermark the event brings (`w`, the greater of the
//! watermark and the event's time), which does not depend on how events are paged: the own folds
//! involved are advanced to `w`, the combined views are recomputed, and [`settle`] gives each the
//! stage its new facts imply at `w`.
//!
//! [`settle`]: patron_lifecycle::settle

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use patron_domain::{Currency, CustomerId, CustomersMerged, CustomersUnmerged, Event};
use patron_lifecycle::{CustomerLifecycle, Rules, rule};
use patron_value::CustomerValue;

use super::{CustomerView, Projection, fold};
use crate::consent::Consents;
use crate::kpi::{self, CustomerKpi};
use crate::p_alive;
use crate::purchases::Purchases;

impl Projection {
    /// Applies an event of a customer that is part of a merged group (its view has `own`): to
    /// its own fold, and to the view of the group's root, which fires the transitions, counts the
    /// event-driven KPIs (at the root's stage) and gets the deadline. The caller has touched the
    /// event's customer.
    pub(super) fn apply_merged(&mut self, event: &Event, rules: &Rules, currency: Currency) {
        let customer_id = &event.customer_id;
        let (model, model_at) = (self.model, self.model_at);
        if let Some(own) = self
            .customers
            .get_mut(customer_id)
            .and_then(|view| view.own.as_deref_mut())
        {
            fold(own, event, rules, currency, model.as_ref(), model_at);
            own.lifecycle.history.clear();
        }
        let root = self.root(customer_id);
        self.touch(&root);
        let Some(view) = self.customers.get_mut(&root) else {
            return;
        };
        let fired = fold(view, event, rules, currency, model.as_ref(), model_at);
        kpi::event_counters(event, view.lifecycle.stage, currency, &mut self.kpis);
        let history = view.lifecycle.transitions();
        let next = patron_lifecycle::next_deadline(&view.lifecycle, rules);
        self.record_at(&root, history, fired);
        self.set_deadline(&root, next);
    }

    /// Applies `customers_merged` in the stream of `survivor` (after the event's ordinary
    /// application): the group of the merged customer joins the group of `survivor`, under
    /// `survivor`'s root. A merged customer never seen gets an empty view; one already in the
    /// same group changes nothing.
    pub(super) fn merge(
        &mut self,
        survivor: &CustomerId,
        merged: &CustomersMerged,
        occurred_at: DateTime<Utc>,
        rules: &Rules,
    ) {
        let other = &merged.merged_customer_id;
        if other.is_reserved() {
            return;
        }
        let at = self.watermark.map_or(occurred_at, |w| w.max(occurred_at));
        if !self.customers.contains_key(other) {
            self.touch(other);
            self.customers
                .insert(other.clone(), CustomerView::default());
        }
        let (root, joining) = (self.root(survivor), self.root(other));
        if root == joining {
            return;
        }
        self.touch(&root);
        self.touch(&joining);
        for id in [&root, &joining] {
            if let Some(view) = self.customers.get_mut(id) {
                keep_own(view);
            }
        }
        if let Some(view) = self.customers.get_mut(&joining) {
            // It leaves the stage counts: the group is counted once, as its root.
            if let Some(stage) = view.lifecycle.stage {
                kpi::stage_exit(stage, clock(&view.lifecycle, at), &mut self.kpis);
            }
            view.merged_into = Some(root.clone());
            view.scores = None;
        }
        self.set_deadline(&joining, None);
        let members = self.members.entry(root.clone()).or_default();
        if let Err(index) = members.binary_search(&joining) {
            members.insert(index, joining);
        }

        let members = self.members_of(&root);
        self.advance_own(&root, &members, at, rules);
        let mut facts = BTreeMap::new();
        fact(&mut facts, "merged_customer_id", other);
        fact(&mut facts, "identity_kind", merged.identity_kind.as_str());
        if let Some(evidence) = &merged.evidence {
            fact(&mut facts, "evidence", evidence);
        }
        self.recombine(&root, &members, at, rule::MERGE, facts, rules);
    }

    /// Applies `customers_unmerged` in the stream of `parent` (after the event's ordinary
    /// application): if the named customer is merged directly into `parent`, it (with everyone
    /// merged into it) is split off its group, and both parts are rebuilt from their members'
    /// own folds. Otherwise nothing changes.
    pub(super) fn unmerge(
        &mut self,
        parent: &CustomerId,
        unmerged: &CustomersUnmerged,
        occurred_at: DateTime<Utc>,
        rules: &Rules,
    ) {
        let split = &unmerged.merged_customer_id;
        let merged_here = self
            .customers
            .get(split)
            .is_some_and(|view| view.merged_into.as_ref() == Some(parent));
        if !merged_here {
            return;
        }
        let at = self.watermark.map_or(occurred_at, |w| w.max(occurred_at));
        let root = self.root(parent);
        self.touch(&root);
        self.touch(split);
        if let Some(view) = self.customers.get_mut(split) {
            view.merged_into = None;
            // It re-enters the stage counts in the stage it was merged in; `settle` moves it on.
            if let Some(stage) = view.lifecycle.stage {
                kpi::stage_entry(stage, clock(&view.lifecycle, at), &mut self.kpis);
            }
        }
        if let Some(members) = self.members.get_mut(parent) {
            members.retain(|member| member != split);
            if members.is_empty() {
                self.members.remove(parent);
            }
        }

        let (root_members, split_members) = (self.members_of(&root), self.members_of(split));
        self.advance_own(&root, &root_members, at, rules);
        self.advance_own(split, &split_members, at, rules);
        let mut facts = BTreeMap::new();
        if let Some(reason) = &unmerged.reason {
            fact(&mut facts, "reason", reason);
        }
        let mut root_facts = facts.clone();
        fact(&mut root_facts, "merged_customer_id", split);
        self.recombine(&root, &root_members, at, rule::UNMERGE, root_facts, rules);
        fact(&mut facts, "into_customer_id", parent);
        self.recombine(split, &split_members, at, rule::UNMERGE, facts, rules);
    }

    /// The root of the group `customer_id` is in: the customer reached by following
    /// `merged_into` (the customer itself when it is not merged into anyone).
    fn root(&self, customer_id: &CustomerId) -> CustomerId {
        let mut current = customer_id;
        // Bounded, against a cycle in hand-edited views.
        for _ in 0..=self.members.len() {
            match self
                .customers
                .get(current)
                .and_then(|view| view.merged_into.as_ref())
            {
                Some(parent) => current = parent,
                None => break,
            }
        }
        current.clone()
    }

    /// Everyone merged into `root`, directly or not, sorted.
    fn members_of(&self, root: &CustomerId) -> Vec<CustomerId> {
        let mut out = Vec::new();
        let mut pending = vec![root];
        while let Some(id) = pending.pop() {
            if let Some(members) = self.members.get(id) {
                out.extend(members.iter().cloned());
                pending.extend(members);
            }
            // Against a cycle in hand-edited views.
            if out.len() > self.customers.len() {
                break;
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Fires the time-driven transitions of the own folds of `root` and `members` up to `at`
    /// (kept lazily: only their own events and merges move them); customers whose fold moves
    /// become dirty.
    fn advance_own(
        &mut self,
        root: &CustomerId,
        members: &[CustomerId],
        at: DateTime<Utc>,
        rules: &Rules,
    ) {
        for id in std::iter::once(root).chain(members) {
            let Some(own) = self.customers.get(id).and_then(|view| view.own.as_deref()) else {
                continue;
            };
            let mut lifecycle = own.lifecycle.clone();
            if patron_lifecycle::advance(&mut lifecycle, at, rules).is_empty() {
                continue;
            }
            lifecycle.history.clear();
            self.touch(id);
            if let Some(own) = self
                .customers
                .get_mut(id)
                .and_then(|view| view.own.as_deref_mut())
            {
                own.lifecycle = lifecycle;
            }
        }
    }

    /// Rebuilds the view of `root` from the own folds of `root` and `members` (its own fold
    /// alone, which it then no longer needs, when there are no members), recomputes its
    /// probability-alive schedule, puts it in the stage the facts imply at `at` under `rule`
    /// (with `facts` plus the combined orders and net revenue) and re-indexes its deadline. The
    /// caller has touched `root`.
    fn recombine(
        &mut self,
        root: &CustomerId,
        members: &[CustomerId],
        at: DateTime<Utc>,
        rule: &str,
        mut facts: BTreeMap<String, String>,
        rules: &Rules,
    ) {
        let parts: Vec<&CustomerView> = std::iter::once(root)
            .chain(members)
            .filter_map(|id| self.customers.get(id)?.own.as_deref())
            .collect();
        if parts.is_empty() {
            return;
        }
        let combined = combine(&parts);
        let model = self.model;
        let Some(view) = self.customers.get_mut(root) else {
            return;
        };
        view.lifecycle.combine_facts([&combined.lifecycle]);
        view.value = combined.value;
        view.purchases = combined.purchases;
        view.consents = combined.consents;
        view.kpi = combined.kpi;
        if members.is_empty() {
            view.own = None;
        }
        if let Some(model) = &model {
            view.lifecycle.p_alive = p_alive::schedule(&view.purchases.summary, model, at, rules);
        }
        if view.value.last_purchase_at.is_none() {
            // No longer a buyer: scoring would never replace these.
            view.scores = None;
        }
        fact(&mut facts, "orders", view.lifecycle.purchases);
        fact(
            &mut facts,
            "net_revenue_minor",
            view.lifecycle.net_revenue_minor,
        );
        let fired = patron_lifecycle::settle(&mut view.lifecycle, at, rule, facts, rules);
        self.record(root, fired.into_iter().collect());
        self.reindex(root, rules);
    }
}

/// Starts the own fold of a customer joining a group, if it has none yet: its view as it is,
/// without stage history and scores.
fn keep_own(view: &mut CustomerView) {
    if view.own.is_none() {
        let mut own = CustomerView {
            own: None,
            merged_into: None,
            scores: None,
            ..view.clone()
        };
        own.lifecycle.history.clear();
        view.own = Some(Box::new(own));
    }
}

/// The views of several customers taken as one customer's: lifecycle facts, value, purchases,
/// consents and KPI facts combined (no stage, history, scores or schedule). Does not depend on
/// the order of `parts`.
fn combine(parts: &[&CustomerView]) -> CustomerView {
    let mut lifecycle = CustomerLifecycle::new();
    lifecycle.combine_facts(parts.iter().map(|part| &part.lifecycle));
    CustomerView {
        lifecycle,
        value: combine_value(parts.iter().map(|part| &part.value)),
        kpi: CustomerKpi::combine(parts.iter().map(|part| &part.kpi)),
        purchases: Purchases::combine(parts.iter().map(|part| &part.purchases)),
        consents: Consents::combine(parts.iter().map(|part| &part.consents)),
        ..CustomerView::default()
    }
}

/// The value of several customers taken as one's: counts and sums added (saturating), the
/// earliest first purchase and the latest last purchase. (`patron-value` has no combination of
/// its own; every field is public.)
fn combine_value<'a>(parts: impl IntoIterator<Item = &'a CustomerValue>) -> CustomerValue {
    let mut value = CustomerValue::new();
    for part in parts {
        value.orders = value.orders.saturating_add(part.orders);
        value.refunds = value.refunds.saturating_add(part.refunds);
        value.gross_revenue_minor = value
            .gross_revenue_minor
            .saturating_add(part.gross_revenue_minor);
        value.refunded_minor = value.refunded_minor.saturating_add(part.refunded_minor);
        value.first_purchase_at = match (value.first_purchase_at, part.first_purchase_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        value.last_purchase_at = value.last_purchase_at.max(part.last_purchase_at);
        value.other_currency_events = value
            .other_currency_events
            .saturating_add(part.other_currency_events);
    }
    value
}

/// When a change decided at `at` is stamped for a customer: never before its stage began (as
/// the engine stamps transitions).
fn clock(lifecycle: &CustomerLifecycle, at: DateTime<Utc>) -> DateTime<Utc> {
    lifecycle.since.map_or(at, |since| since.max(at))
}

/// Inserts one fact.
fn fact(facts: &mut BTreeMap<String, String>, key: &str, value: impl ToString) {
    facts.insert(key.to_owned(), value.to_string());
}
