//! Merged customers: `customers_merged` combines two customers into the survivor's view,
//! `customers_unmerged` splits them again, and a rebuild still equals live processing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use patron_domain::{CustomerId, Event, EventBody, ModelFitted};
use patron_lifecycle::{CustomerLifecycle, Rules, Stage, rule};
use patron_projector::{
    Consents, CustomerKpi, CustomerView, KpiKey, LogStreams, OutboxEntry, Projection, Purchases,
    kpi,
};
use patron_store::contract::customer;
use patron_store::{Position, RecordedEvent};
use patron_value::CustomerValue;
use support::*;
use uuid::Uuid;

/// What projecting a log gave: the projection, and everything its batches handed over.
struct Run {
    projection: Projection,
    outbox: Vec<OutboxEntry>,
    kpis: BTreeMap<KpiKey, i64>,
}

impl Run {
    fn view(&self, who: &str) -> &CustomerView {
        self.projection
            .customer(&customer(who))
            .unwrap_or_else(|| panic!("{who} has a view"))
    }
}

/// Projects `events` in pages of `page`, taking the changes after each page.
fn run(events: &[RecordedEvent], page: usize) -> Run {
    let rules = Rules::default();
    let mut run = Run {
        projection: Projection::new(),
        outbox: Vec::new(),
        kpis: BTreeMap::new(),
    };
    for chunk in events.chunks(page) {
        run.projection
            .apply_page(chunk, &rules, usd(), &LogStreams(events))
            .unwrap();
        let changes = run.projection.take_changes();
        run.outbox.extend(changes.outbox);
        add_kpis(&mut run.kpis, changes.kpis);
    }
    run
}

/// Projects `events` in one page.
fn project(events: &[Event]) -> Run {
    run(&recorded(events), usize::MAX)
}

/// Projects only the events of `who`'s own stream.
fn project_own(events: &[Event], who: &str) -> Run {
    let own: Vec<Event> = events
        .iter()
        .filter(|event| event.customer_id == customer(who))
        .cloned()
        .collect();
    project(&own)
}

/// The events with `from`'s relabelled as `to`'s: one customer with everyone's events.
fn as_one(events: &[Event], from: &str, to: &str) -> Vec<Event> {
    events
        .iter()
        .cloned()
        .map(|mut event| {
            if event.customer_id == customer(from) {
                event.customer_id = customer(to);
            }
            event
        })
        .collect()
}

/// What a view holds that follows from events alone: not the stage, history or scores.
#[derive(Debug, Clone, PartialEq)]
struct Facts {
    value: CustomerValue,
    purchases: Purchases,
    consents: Consents,
    kpi: CustomerKpi,
    /// The lifecycle facts alone (no stage, history or schedule).
    lifecycle: CustomerLifecycle,
}

fn facts(view: &CustomerView) -> Facts {
    let mut lifecycle = CustomerLifecycle::new();
    lifecycle.combine_facts([&view.lifecycle]);
    Facts {
        value: view.value.clone(),
        purchases: view.purchases.clone(),
        consents: view.consents.clone(),
        kpi: view.kpi.clone(),
        lifecycle,
    }
}

/// Customers per stage as the stage-flow counters give it (entries minus exits).
fn stage_counts(kpis: &BTreeMap<KpiKey, i64>) -> BTreeMap<String, i64> {
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for (key, value) in kpis.iter().filter(|(key, _)| key.metric == kpi::STAGE_FLOW) {
        *counts.entry(key.dim1.clone()).or_default() -= value;
        *counts.entry(key.dim2.clone()).or_default() += value;
    }
    counts.remove("none");
    counts.retain(|_, count| *count != 0);
    counts
}

/// Customers per stage as the views give it, counting every merged group once (its root).
fn view_stage_counts(projection: &Projection) -> BTreeMap<String, i64> {
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for view in projection.customers().values() {
        if let (None, Some(stage)) = (&view.merged_into, view.lifecycle.stage) {
            *counts.entry(stage.as_str().to_owned()).or_default() += 1;
        }
    }
    counts
}

fn sum(kpis: &BTreeMap<KpiKey, i64>, metric: &str) -> i64 {
    kpis.iter()
        .filter(|(key, _)| key.metric == metric)
        .map(|(_, value)| *value)
        .sum()
}

/// The state-driven KPIs count every merged group once: cohort sizes, revenue and stages agree
/// with the views of the customers nobody is merged into.
#[track_caller]
fn assert_kpis_count_groups_once(run: &Run) {
    let roots: Vec<&CustomerView> = run
        .projection
        .customers()
        .values()
        .filter(|view| view.merged_into.is_none())
        .collect();
    assert_eq!(
        stage_counts(&run.kpis),
        view_stage_counts(&run.projection),
        "stage distribution"
    );
    let buyers = roots.iter().filter(|view| view.value.orders > 0).count();
    assert_eq!(
        sum(&run.kpis, kpi::COHORT_SIZE),
        i64::try_from(buyers).unwrap(),
        "cohort sizes"
    );
    let revenue: i64 = roots
        .iter()
        .map(|view| view.value.net_revenue_minor())
        .sum();
    assert_eq!(sum(&run.kpis, kpi::REVENUE), revenue, "revenue");
}

/// Anna and Bob both buy twice; Bob is merged into Anna on March 5, then both carry on.
fn anna_and_bob() -> (Vec<Event>, usize) {
    let mut s = Script::default();
    s.purchase("anna", day(1, 5), 20_000);
    s.consent("anna", day(1, 6), "email", true);
    s.consent("anna", day(1, 6), "sms", true);
    s.purchase("bob", day(1, 20), 10_000);
    s.consent("bob", day(2, 1), "email", false);
    s.purchase("anna", day(2, 10), 20_000);
    s.purchase("bob", day(3, 1), 10_000);
    s.merged("anna", day(3, 5), "bob");
    let merge = s.len() - 1;
    s.purchase("bob", day(3, 10), 3_000);
    s.feedback("bob", day(3, 11), 10, 5);
    s.visit("anna", day(3, 12));
    (s.into_log(), merge)
}

#[test]
fn a_merge_combines_both_customers_into_the_survivor_and_freezes_the_other() {
    let (mut events, merge) = anna_and_bob();
    // A model fitted afterwards changes the schedules of current customers, not frozen ones.
    events.push(model_event(day(3, 13)));
    let before = project(&events[..merge]);
    assert_eq!(before.view("anna").lifecycle.stage, Some(Stage::Active));
    assert_eq!(before.view("bob").lifecycle.stage, Some(Stage::Active));
    assert_eq!(
        stage_counts(&before.kpis),
        BTreeMap::from([("active".to_owned(), 2)])
    );

    // The merge, in a batch of its own.
    let mut merged = run(&recorded(&events[..merge]), usize::MAX);
    let all = recorded(&events);
    merged
        .projection
        .apply_page(
            &all[merge..=merge],
            &Rules::default(),
            usd(),
            &LogStreams(&all),
        )
        .unwrap();
    let changes = merged.projection.take_changes();
    let changed: Vec<&str> = changes
        .customers
        .iter()
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(changed, ["anna", "bob"]);
    let flow = |from: &str, to: &str| {
        changes.kpis.iter().find_map(|(key, value)| {
            (key.metric == kpi::STAGE_FLOW && key.dim1 == from && key.dim2 == to).then_some(*value)
        })
    };
    assert_eq!(flow("active", "loyal"), Some(1), "anna is loyal now");
    assert_eq!(
        flow("active", "none"),
        Some(1),
        "bob leaves the stage counts"
    );
    let cohort_size = changes
        .kpis
        .iter()
        .find(|(key, _)| key.metric == kpi::COHORT_SIZE)
        .map(|(key, value)| (key.period.as_str(), *value));
    assert_eq!(
        cohort_size,
        Some(("2025-01", -1)),
        "both were in January's cohort; the pair counts once"
    );
    merged.outbox.extend(changes.outbox.clone());
    add_kpis(&mut merged.kpis, changes.kpis);

    let anna = merged.view("anna");
    let one = project(&as_one(&events[..=merge], "bob", "anna"));
    assert_eq!(
        facts(anna),
        facts(one.view("anna")),
        "the survivor holds both customers' facts"
    );
    assert_eq!(anna.value.orders, 4);
    assert_eq!(anna.value.net_revenue_minor(), 60_000);
    assert_eq!(anna.value.first_purchase_at, Some(day(1, 5)));
    assert_eq!(anna.value.last_purchase_at, Some(day(3, 1)));
    assert!(!anna.consents.granted("email"), "bob's later refusal wins");
    assert!(anna.consents.granted("sms"));
    assert_eq!(anna.purchases.summary.frequency(), 3, "four purchase days");
    assert_eq!(anna.merged_into, None);
    assert_eq!(anna.lifecycle.transitions(), 4, "the history continues");
    assert_eq!(changes.outbox.len(), 1);
    let transition = &changes.outbox[0].transition;
    assert_eq!(
        (
            transition.from,
            transition.to,
            transition.at,
            transition.rule.as_str()
        ),
        (Some(Stage::Active), Stage::Loyal, day(3, 5), rule::MERGE)
    );
    for (key, value) in [
        ("merged_customer_id", "bob"),
        ("identity_kind", "email"),
        ("evidence", "same email"),
        ("orders", "4"),
        ("net_revenue_minor", "60000"),
    ] {
        assert_eq!(transition.facts[key], value, "fact {key}");
    }
    assert_eq!(changes.outbox.len(), 1);
    assert!(changes.outbox[0].dedupe_key.starts_with("anna:3#"));
    let own = anna.own.as_deref().expect("anna keeps her own fold");
    assert_eq!(
        facts(own),
        facts(project_own(&events[..=merge], "anna").view("anna"))
    );
    assert!(own.lifecycle.history.is_empty() && own.own.is_none());

    let bob = merged.view("bob");
    let frozen = before.view("bob");
    assert_eq!(bob.merged_into, Some(customer("anna")));
    assert_eq!(
        (&bob.lifecycle, facts(bob)),
        (&frozen.lifecycle, facts(frozen)),
        "bob's view is frozen"
    );
    assert_eq!(bob.scores, None, "members are not scored");
    assert_eq!(
        facts(bob.own.as_deref().expect("bob keeps his own fold")),
        facts(project_own(&events[..=merge], "bob").view("bob")),
        "bob's own fold"
    );
    assert_kpis_count_groups_once(&merged);

    // Afterwards: bob's events count for anna.
    let end = run(&all, 4);
    let anna = end.view("anna");
    assert_eq!(
        facts(anna),
        facts(project(&as_one(&events, "bob", "anna")).view("anna"))
    );
    assert_eq!(anna.value.orders, 5, "bob's March 10 purchase");
    assert_eq!(anna.value.last_purchase_at, Some(day(3, 10)));
    assert_eq!(anna.own.as_deref().unwrap().value.orders, 2, "anna's own");
    let bob = end.view("bob");
    assert_eq!(
        (&bob.lifecycle, facts(bob)),
        (&frozen.lifecycle, facts(frozen)),
        "still frozen"
    );
    assert!(
        end.projection.model().is_some() && anna.lifecycle.p_alive.is_some(),
        "the model is in force for anna"
    );
    assert_eq!(
        facts(bob.own.as_deref().unwrap()),
        facts(project_own(&events, "bob").view("bob")),
        "bob's own fold follows his events"
    );
    let merge_position = Position(u64::try_from(merge).unwrap() + 1);
    assert!(
        end.outbox
            .iter()
            .all(|entry| entry.customer_id != customer("bob") || entry.position < merge_position),
        "no outbox entries for a merged customer"
    );
    let nps: Vec<(&str, i64)> = end
        .kpis
        .iter()
        .filter(|(key, _)| key.metric == kpi::NPS)
        .map(|(key, value)| (key.dim1.as_str(), *value))
        .collect();
    assert_eq!(
        nps,
        [("loyal", 1)],
        "bob's answer counts once, at anna's stage"
    );
    assert_eq!(
        end.projection.next_deadline().map(|(_, id)| id.as_str()),
        Some("anna")
    );
    assert_kpis_count_groups_once(&end);
}

/// Anna and Bob, merged on March 5 and split again on April 10, with events on both sides in
/// between and after.
fn merge_then_split() -> (Vec<Event>, usize) {
    let mut s = Script::default();
    s.purchase("anna", day(1, 5), 20_000);
    s.consent("anna", day(1, 6), "email", true);
    s.purchase("bob", day(1, 20), 10_000);
    s.consent("bob", day(2, 1), "email", false);
    s.consent("bob", day(2, 2), "sms", true);
    s.purchase("anna", day(2, 10), 20_000);
    s.purchase("bob", day(3, 1), 10_000);
    s.merged("anna", day(3, 5), "bob");
    let order = s.len();
    s.purchase("bob", day(3, 10), 5_000);
    s.refund_order("bob", day(3, 12), order, 2_000);
    s.consent("anna", day(3, 15), "email", true);
    s.purchase("anna", day(4, 1), 1_000);
    s.consent("bob", day(4, 2), "sms", false);
    s.unmerged("anna", day(4, 10), "bob");
    let unmerge = s.len() - 1;
    s.purchase("bob", day(4, 20), 2_000);
    s.visit("anna", day(4, 21));
    (s.into_log(), unmerge)
}

#[test]
fn an_unmerge_gives_each_customer_exactly_what_its_own_events_give() {
    let (events, unmerge) = merge_then_split();
    let merged = project(&events[..unmerge]);
    assert_eq!(
        merged.view("anna").value.orders,
        6,
        "merged: everyone's orders"
    );
    assert_eq!(merged.view("anna").lifecycle.stage, Some(Stage::Loyal));

    for (upto, label) in [
        (unmerge + 1, "right after the split"),
        (events.len(), "at the end"),
    ] {
        let split = run(&recorded(&events[..upto]), 3);
        for who in ["anna", "bob"] {
            let view = split.view(who);
            assert_eq!(
                facts(view),
                facts(project_own(&events[..upto], who).view(who)),
                "{who}, {label}: what its own events alone give"
            );
            assert_eq!(view.merged_into, None, "{who}, {label}");
            assert!(view.own.is_none(), "{who}, {label}: standalone again");
        }
        assert_kpis_count_groups_once(&split);
    }

    let split = project(&events);
    let anna = split.view("anna");
    let transition = &split
        .outbox
        .iter()
        .find(|e| e.customer_id == customer("anna") && e.transition.rule == rule::UNMERGE)
        .expect("anna's stage follows her own facts again")
        .transition;
    assert_eq!(
        (transition.from, transition.to, transition.at),
        (Some(Stage::Loyal), Stage::Active, day(4, 10))
    );
    for (key, value) in [
        ("merged_customer_id", "bob"),
        ("reason", "ticket 42"),
        ("orders", "3"),
        ("net_revenue_minor", "41000"),
    ] {
        assert_eq!(transition.facts[key], value, "fact {key}");
    }
    assert_eq!(anna.value.orders, 3);
    let bob = split.view("bob");
    assert_eq!(
        bob.value.orders, 4,
        "bob's own, with his purchase after the split"
    );
    assert_eq!(bob.lifecycle.stage, Some(Stage::Active));
    assert_eq!(
        anna.value.last_purchase_at,
        Some(day(4, 1)),
        "bob's purchase after the split is his alone"
    );
}

/// The model the log announces (weeks), as in the probability-alive tests.
fn model_event(at: DateTime<Utc>) -> Event {
    Event {
        event_id: Uuid::from_u128(9_000_000),
        customer_id: CustomerId::clv(),
        occurred_at: at,
        source: "patron-fit".into(),
        body: EventBody::ModelFitted(ModelFitted {
            version: 1,
            time_unit: "weeks".into(),
            r: "0.243".into(),
            alpha: "4.414".into(),
            a: "2.0".into(),
            b: "2.4".into(),
        }),
    }
}

/// A year of seven customers with chains of merges and splits:
/// * c ← d (Mar 1), c ← h (Mar 2; h never buys again, so only merges and splits move its own
///   fold); a ← b (Apr 1); a ← c, which holds d (May 1): a chain a ← c ← d;
/// * an unmerge of d in a's stream (May 15) does nothing: d is merged into c;
/// * b, itself merged into a, merges `ghost`, never seen (Jun 1): ghost is merged into a;
/// * a model is fitted (Jun 10); e ← f (Jul 1, arriving late on Jul 20); f merges b (Aug 1):
///   a's whole group joins e's;
/// * a re-merge of c in a's stream (Aug 15) does nothing: same group;
/// * c (with d) is split off a (Sep 1), d off c (Oct 1), a (with b, ghost) off e (Oct 15);
/// * d ← g (Nov 1);
///
/// with purchases, refunds, consents, answers and visits all year, some arriving late.
fn history() -> Vec<Event> {
    let mut s = Script::default();
    let who = ["a", "b", "c", "d", "e", "f", "g"];
    for (i, name) in who.iter().enumerate() {
        let i = i64::try_from(i).unwrap();
        let mut t = plus_days(day(1, 1), i);
        let mut k = 0;
        while t < day(12, 31) {
            s.purchase(name, t, 1_000 + 700 * i + 300 * (k % 4));
            if k % 5 == 2 {
                s.visit(name, plus_days(t, 1));
            }
            if k % 7 == 3 {
                s.consent(name, plus_days(t, 2), "email", k % 2 == 0);
            }
            if k % 9 == 4 {
                s.refund(name, plus_days(t, 3), 400);
            }
            if k % 6 == 1 {
                s.feedback(name, plus_days(t, 1), u8::try_from(k % 11).unwrap(), 4);
            }
            // Each customer has its own rhythm, and pauses long enough to go at risk.
            let gap = if (40..80).contains(&(k * (i + 2))) {
                70
            } else {
                9 + 4 * i
            };
            t = plus_days(t, gap);
            k += 1;
        }
    }
    // h buys twice, then falls silent inside c's group: only merges and splits move its fold.
    s.purchase("h", day(1, 10), 2_000);
    s.purchase("h", day(3, 1), 2_000);
    s.merged("c", day(3, 1), "d");
    s.merged("c", day(3, 2), "h");
    s.merged("a", day(4, 1), "b");
    s.merged("a", day(5, 1), "c");
    s.unmerged("a", day(5, 15), "d");
    s.merged("b", day(6, 1), "ghost");
    s.merged("f", day(8, 1), "b");
    s.merged("a", day(8, 15), "c");
    s.unmerged("a", day(9, 1), "c");
    s.unmerged("c", day(10, 1), "d");
    s.unmerged("e", day(10, 15), "a");
    s.merged("d", day(11, 1), "g");
    let mut events = s.into_events();
    let model = model_event(day(6, 10));
    let at = events.partition_point(|e| e.occurred_at <= model.occurred_at);
    events.insert(at, model);

    let mut late = Script::default();
    late.purchase("d", day(6, 1), 1_234);
    late.visit("b", day(2, 1));
    late.purchase("c", day(8, 20), 999);
    late.consent("a", day(3, 1), "email", false);
    late.purchase("g", day(10, 1), 4_321);
    late.merged("e", day(7, 1), "f");
    for (event, delay) in late.into_log().into_iter().zip([12, 30, 5, 60, 45, 19]) {
        let arrives = plus_days(event.occurred_at, delay);
        let at = events.partition_point(|e| e.occurred_at <= arrives);
        events.insert(at, event);
    }
    events
}

/// Live processing in pages of 5, restarted now and then from the views persisted (as JSON)
/// from the changes taken so far; returns the final projection, the persisted views, the
/// outbox and the KPI totals.
fn live_with_restarts(
    events: &[RecordedEvent],
) -> (Run, BTreeMap<CustomerId, CustomerView>, usize) {
    let rules = Rules::default();
    let mut stored: BTreeMap<CustomerId, String> = BTreeMap::new();
    let mut live = Run {
        projection: Projection::new(),
        outbox: Vec::new(),
        kpis: BTreeMap::new(),
    };
    let mut restarts = 0;
    for (page, chunk) in events.chunks(5).enumerate() {
        live.projection
            .apply_page(chunk, &rules, usd(), &LogStreams(events))
            .unwrap();
        let changes = live.projection.take_changes();
        for (id, view) in &changes.customers {
            stored.insert(id.clone(), serde_json::to_string(view).unwrap());
        }
        live.outbox.extend(changes.outbox);
        add_kpis(&mut live.kpis, changes.kpis);
        if page % 7 == 3 {
            let views = stored
                .iter()
                .map(|(id, json)| (id.clone(), serde_json::from_str(json).unwrap()));
            live.projection = Projection::restore(
                views,
                changes.watermark,
                changes.checkpoint,
                changes.scored_at,
                &rules,
            );
            for event in events.iter().filter(|e| e.position <= changes.checkpoint) {
                live.projection.restore_model(event);
            }
            if let Some((_, id)) = live.projection.next_deadline() {
                let view = live.projection.customer(id).unwrap();
                assert_eq!(view.merged_into, None, "{id} is merged: no deadline");
            }
            restarts += 1;
        }
    }
    let persisted = stored
        .iter()
        .map(|(id, json)| (id.clone(), serde_json::from_str(json).unwrap()))
        .collect();
    (live, persisted, restarts)
}

#[test]
fn replay_equals_live_with_chains_of_merges_and_splits() {
    let events = recorded(&history());
    let full = run(&events, usize::MAX);

    // The history does what it says.
    let root = |who: &str| full.view(who).merged_into.as_ref().map(CustomerId::as_str);
    let roots: Vec<(&str, Option<&str>)> = ["a", "b", "c", "d", "e", "f", "g", "ghost", "h"]
        .into_iter()
        .map(|who| (who, root(who)))
        .collect();
    assert_eq!(
        roots,
        [
            ("a", None),
            ("b", Some("a")),
            ("c", None),
            ("d", None),
            ("e", None),
            ("f", Some("e")),
            ("g", Some("d")),
            ("ghost", Some("a")),
            ("h", Some("c")),
        ]
    );
    let rules: HashSet<&str> = full
        .outbox
        .iter()
        .map(|entry| entry.transition.rule.as_str())
        .collect();
    for expected in [rule::MERGE, rule::UNMERGE, rule::P_ALIVE_AT_RISK] {
        assert!(rules.contains(expected), "{expected} fired: {rules:?}");
    }
    assert!(full.projection.model().is_some());
    for (who, grouped) in [
        ("a", true),
        ("c", true),
        ("d", true),
        ("e", true),
        ("f", true),
    ] {
        assert_eq!(
            full.view(who).own.is_some(),
            grouped,
            "{who}: own fold while grouped"
        );
    }
    // h's own fold went at risk (active at its last purchase) with no event of its own.
    let h = full.view("h").own.as_deref().expect("h's own fold");
    assert_eq!(h.lifecycle.stage, Some(Stage::AtRisk));
    // d's view holds g's events; c, split off twice, holds its own and h's.
    let events_of = |names: &[&str]| -> Vec<Event> {
        events
            .iter()
            .map(|e| e.event.clone())
            .filter(|e| names.iter().any(|n| e.customer_id == customer(n)))
            .collect()
    };
    assert_eq!(
        facts(full.view("c")),
        facts(project(&as_one(&events_of(&["c", "h"]), "h", "c")).view("c")),
        "c: its own events and h's"
    );
    let d = full.view("d");
    assert_eq!(
        d.value.orders,
        project(&events_of(&["d"])).view("d").value.orders
            + project(&events_of(&["g"])).view("g").value.orders
    );
    assert_kpis_count_groups_once(&full);

    for page in [1, 7] {
        let paged = run(&events, page);
        assert_eq!(
            paged.projection.customers(),
            full.projection.customers(),
            "views, pages of {page}"
        );
        assert_eq!(paged.outbox, full.outbox, "outbox, pages of {page}");
        assert_eq!(paged.kpis, full.kpis, "KPIs, pages of {page}");
    }

    let (live, persisted, restarts) = live_with_restarts(&events);
    assert!(restarts >= 5, "restarted {restarts} times");
    assert_eq!(
        live.projection.customers(),
        full.projection.customers(),
        "live views"
    );
    assert_eq!(live.outbox, full.outbox, "live outbox");
    assert_eq!(live.kpis, full.kpis, "live KPIs");
    assert_eq!(
        &persisted,
        full.projection.customers(),
        "every view that changed was handed over"
    );
}

/// Every outbox entry of a customer has the next index of its public stage history.
#[track_caller]
fn assert_dedupe_keys_never_repeat(run: &Run) {
    let keys: HashSet<&str> = run.outbox.iter().map(|e| e.dedupe_key.as_str()).collect();
    assert_eq!(keys.len(), run.outbox.len(), "dedupe keys are unique");
    let mut next: BTreeMap<&CustomerId, usize> = BTreeMap::new();
    for entry in &run.outbox {
        let seq = next.entry(&entry.customer_id).or_default();
        assert_eq!(
            entry.seq, *seq,
            "{}: no index skipped or repeated",
            entry.dedupe_key
        );
        assert!(
            entry
                .dedupe_key
                .starts_with(&format!("{}:{}#", entry.customer_id, entry.seq)),
            "{}: the key names the customer and index",
            entry.dedupe_key
        );
        *seq += 1;
    }
    for (id, count) in next {
        let view = run.projection.customer(id).unwrap();
        assert_eq!(
            view.lifecycle.transitions(),
            count,
            "{id}: every transition published"
        );
    }
}

#[test]
fn dedupe_keys_never_repeat_across_merges_and_splits() {
    // The same two customers merged and split again and again, with stage changes each time.
    let mut s = Script::default();
    s.purchase("anna", day(1, 5), 30_000);
    s.purchase("anna", day(2, 10), 30_000);
    s.purchase("bob", day(1, 6), 1_000);
    for (k, month) in (3..12).enumerate() {
        if k % 2 == 0 {
            s.merged("anna", day(month, 1), "bob");
            s.purchase("bob", day(month, 3), 30_000);
        } else {
            s.unmerged("anna", day(month, 1), "bob");
            s.purchase("anna", day(month, 3), 500);
        }
    }
    let run_all = project(&s.into_log());
    let merges = run_all
        .outbox
        .iter()
        .filter(|e| [rule::MERGE, rule::UNMERGE].contains(&e.transition.rule.as_str()))
        .count();
    assert!(merges >= 5, "merges and splits move stages: {merges}");
    assert_dedupe_keys_never_repeat(&run_all);
    assert_dedupe_keys_never_repeat(&run(&recorded(&history()), 7));
}

#[test]
fn an_unmerge_of_a_customer_not_merged_into_this_one_is_an_ordinary_event() {
    let build = |unmerges: bool| {
        let mut s = Script::default();
        for (who, d) in [("a", 2), ("b", 3), ("c", 4)] {
            s.purchase(who, day(1, d), 5_000);
            s.purchase(who, day(2, d), 5_000);
        }
        s.merged("a", day(3, 1), "b");
        // b is merged into a, not c; c is merged into nobody; a into nobody; zed is unknown.
        for (stream, merged, d) in [("c", "b", 2), ("a", "c", 3), ("b", "a", 4), ("a", "zed", 5)] {
            if unmerges {
                s.unmerged(stream, day(3, d), merged);
            } else {
                s.visit(stream, day(3, d));
            }
        }
        s.purchase("b", day(3, 20), 5_000);
        s.into_log()
    };
    let with = project(&build(true));
    let without = project(&build(false));
    assert_eq!(with.projection.customers(), without.projection.customers());
    assert_eq!(with.outbox, without.outbox);
    assert_eq!(with.kpis, without.kpis);
    assert_eq!(
        with.view("b").merged_into,
        Some(customer("a")),
        "still merged"
    );
    assert!(with.projection.customer(&customer("zed")).is_none());
}

#[test]
fn a_customer_a_split_leaves_without_purchases_has_no_scores() {
    // Anna only visits; Bob's purchases make the pair a buyer, scored every day, until the split.
    let mut s = Script::default();
    s.visit("anna", day(1, 2));
    s.purchase("bob", day(1, 3), 5_000);
    s.purchase("carl", day(1, 4), 7_000);
    s.merged("anna", day(1, 5), "bob");
    for d in 6..20 {
        s.visit("carl", day(1, d));
    }
    s.unmerged("anna", day(1, 20), "bob");
    for d in 21..25 {
        s.visit("carl", day(1, d));
    }
    let events = recorded(&s.into_log());
    let one_page = run(&events, usize::MAX);
    let anna = one_page.view("anna");
    assert_eq!((anna.value.orders, &anna.scores), (0, &None));
    assert!(one_page.view("bob").scores.is_some(), "bob is scored again");
    for page in [1, 3] {
        assert_eq!(
            run(&events, page).projection.customers(),
            one_page.projection.customers(),
            "pages of {page}"
        );
    }
}
