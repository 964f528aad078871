//! The projector core against the in-memory store: replay equals live, time-driven transitions,
//! stable dedupe keys, idempotent re-delivery and ticks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;

use patron_lifecycle::{Rules, Stage};
use patron_projector::{LogStreams, OutboxEntry, Projection, catch_up};
use patron_store::contract::customer;
use patron_store::{EventStore, InMemoryEventStore, Position};
use support::*;

#[tokio::test]
async fn the_scripted_year_ends_in_the_expected_stages_and_values() {
    let events = year();
    let store = store_with(&events).await;
    let out = replay(&store, 10_000).await;

    assert_eq!(
        out.checkpoint,
        store.head().await.unwrap(),
        "checkpoint is the head"
    );
    assert_eq!(
        out.watermark,
        Some(day(12, 31) - Rules::default().allowed_lateness()),
        "watermark is the latest event time less the allowed lateness"
    );
    assert!(
        !out.views.contains_key(&customer("ghost")),
        "an unknown event type must not create a customer"
    );
    let view = |who: &str| out.views.get(&customer(who)).unwrap();
    use Stage::*;
    for (id, view) in &out.views {
        assert!(
            view.lifecycle.history.is_empty(),
            "{id}: the stage history is in the outbox, not held in memory"
        );
        let published = out.outbox.iter().filter(|e| &e.customer_id == id).count();
        assert_eq!(view.lifecycle.transitions(), published, "{id}");
    }

    let weekly = view("weekly");
    assert_eq!(
        stages(&out.outbox, "weekly"),
        [Prospect, New, Active, Loyal]
    );
    assert_eq!(
        weekly.lifecycle.transitions(),
        4,
        "the view keeps the length"
    );
    assert_eq!(
        history(&out.outbox, "weekly")[3].at,
        day(4, 4),
        "loyal at the 14th order"
    );
    assert_eq!(
        (weekly.value.orders, weekly.value.refunds),
        (52, 1),
        "weekly orders and refunds"
    );
    assert_eq!(weekly.value.net_revenue_minor(), 52 * 4_000 - 4_000);

    assert_eq!(
        stages(&out.outbox, "monthly"),
        [Prospect, New, Active, Loyal]
    );
    assert_eq!(
        view("monthly").value.net_revenue_minor(),
        12 * 5_000 - 1_000
    );

    let churner = view("churner");
    let churned = history(&out.outbox, "churner");
    assert_eq!(
        stages(&out.outbox, "churner"),
        [Prospect, New, AtRisk, Churned, Reactivated, Active],
        "the churner churns and comes back"
    );
    assert_eq!(churned[2].at, day(2, 2), "at risk 2x the 7-day gap");
    assert_eq!(churned[3].at, day(2, 16), "churned at 4x the gap");
    assert_eq!(churned[4].at, day(10, 1), "reactivated by the purchase");
    assert_eq!(churner.value.orders, 16, "USD orders only");
    assert_eq!(churner.value.other_currency_events, 1, "the EUR order");

    assert_eq!(
        stages(&out.outbox, "refunder"),
        [Prospect, New, Active, AtRisk, Churned]
    );
    assert_eq!(view("refunder").value.net_revenue_minor(), 30_000);
    assert_eq!(
        stages(&out.outbox, "oneoff"),
        [Prospect, New, AtRisk, Churned]
    );
    assert_eq!(stages(&out.outbox, "browser"), [Prospect]);
}

#[tokio::test]
async fn replay_equals_live_whatever_the_page_size_and_append_chunks() {
    let events = year();
    let store = store_with(&events).await;
    let full = replay(&store, 10_000).await;
    assert!(full.outbox.len() > 20, "the year fires many transitions");
    for page in [1, 7, 100] {
        assert_eq!(
            replay(&store, page).await,
            full,
            "pages of {page} must give the one-shot state and outbox"
        );
    }

    // Live: events arrive in chunks and the projector catches up after each; half-way it is
    // restarted from its persisted views, watermark and checkpoint.
    let live = InMemoryEventStore::new();
    let rules = Rules::default();
    let mut projection = Projection::new();
    let mut outbox: Vec<OutboxEntry> = Vec::new();
    let mut kpis = std::collections::BTreeMap::new();
    let mut rest: &[_] = &events;
    for (round, size) in [1, 5, 17, 60, 3, 40].into_iter().cycle().enumerate() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        append_each(&live, chunk).await;
        let changes = catch_up(&mut projection, &live, &rules, usd(), 3)
            .await
            .unwrap();
        assert_eq!(changes.checkpoint, live.head().await.unwrap());
        outbox.extend(changes.outbox);
        add_kpis(&mut kpis, changes.kpis);
        if round == 4 {
            projection = Projection::restore(
                projection.customers().clone(),
                projection.watermark(),
                projection.checkpoint(),
                changes.scored_at,
                &rules,
            );
        }
    }
    assert_eq!(
        projection.customers(),
        &full.views,
        "live views equal replay"
    );
    assert_eq!(outbox, full.outbox, "live outbox equals replay, in order");
    assert_eq!(projection.watermark(), full.watermark);
    assert_eq!(
        kpis, full.kpis,
        "KPI counters summed over live batches equal replay"
    );
}

#[tokio::test]
async fn time_driven_transitions_fire_for_a_silent_customer_at_their_deadlines() {
    let events = year();
    let store = store_with(&events).await;
    let out = replay(&store, 50).await;
    let all = store.read_all(Position::ZERO, 10_000).await.unwrap();
    let oneoff = customer("oneoff");
    let own = all
        .iter()
        .find(|e| e.event.customer_id == oneoff)
        .unwrap()
        .position;

    let fired: Vec<&OutboxEntry> = out
        .outbox
        .iter()
        .filter(|e| e.customer_id == oneoff && e.position > own)
        .collect();
    let expected = [
        (Stage::AtRisk, plus_days(day(1, 2), 120)),
        (Stage::Churned, plus_days(day(1, 2), 240)),
    ];
    assert_eq!(
        fired.len(),
        2,
        "at_risk then churned, without an event of their own"
    );
    for (entry, (stage, deadline)) in fired.iter().zip(expected) {
        assert_eq!(entry.transition.to, stage);
        assert_eq!(entry.transition.at, deadline, "stamped at the deadline");
        let cause = &all[usize::try_from(entry.position.0).unwrap() - 1];
        assert_eq!(cause.position, entry.position);
        assert_ne!(
            cause.event.customer_id, oneoff,
            "another customer's event moved time"
        );
        // Time has provably passed a deadline once an event is later than it by the allowed
        // lateness.
        let lateness = Rules::default().allowed_lateness();
        assert!(
            cause.event.occurred_at - lateness >= deadline,
            "the cause passed the deadline by the allowed lateness"
        );
        let before = &all[usize::try_from(entry.position.0).unwrap() - 2];
        assert!(
            before.event.occurred_at - lateness < deadline,
            "fired by the first event past the deadline and the lateness, not later"
        );
    }
}

#[tokio::test]
async fn dedupe_keys_are_unique_and_stable_across_replays() {
    let store = store_with(&year()).await;
    let first = replay(&store, 13).await;
    let second = replay(&store, 10_000).await;
    let keys = |outbox: &[OutboxEntry]| -> Vec<String> {
        outbox.iter().map(|e| e.dedupe_key.clone()).collect()
    };
    let unique: HashSet<String> = keys(&first.outbox).into_iter().collect();
    assert_eq!(
        unique.len(),
        first.outbox.len(),
        "dedupe keys must be unique"
    );
    assert_eq!(
        keys(&first.outbox),
        keys(&second.outbox),
        "same keys on every replay"
    );
    assert!(
        unique.iter().any(|key| key.starts_with("churner:5#")),
        "keys are customer:history index#digest"
    );
    // Other rules make other transitions: their keys differ, so the outbox keeps both.
    let strict = Rules {
        at_risk_gap_multiple_percent: 150,
        ..Rules::default()
    };
    let mut projection = Projection::new();
    let changes = catch_up(&mut projection, &store, &strict, usd(), 10_000)
        .await
        .unwrap();
    let churner = |outbox: &[OutboxEntry]| -> Vec<OutboxEntry> {
        outbox
            .iter()
            .filter(|e| e.customer_id == customer("churner"))
            .cloned()
            .collect()
    };
    let (default, other) = (churner(&first.outbox), churner(&changes.outbox));
    assert_ne!(
        default.iter().map(|e| &e.transition).collect::<Vec<_>>(),
        other.iter().map(|e| &e.transition).collect::<Vec<_>>(),
        "stricter rules change churner's history"
    );
    for (a, b) in default.iter().zip(&other) {
        assert_eq!(a.seq, b.seq);
        assert_eq!(
            a.dedupe_key == b.dedupe_key,
            a.transition == b.transition,
            "index {}: the same key exactly when the same transition",
            a.seq
        );
    }
}

#[tokio::test]
async fn re_applying_applied_positions_changes_nothing() {
    let store = store_with(&year()).await;
    let rules = Rules::default();
    let mut projection = Projection::new();
    catch_up(&mut projection, &store, &rules, usd(), 10_000)
        .await
        .unwrap();
    let (views, watermark, checkpoint) = (
        projection.customers().clone(),
        projection.watermark(),
        projection.checkpoint(),
    );
    for event in store.read_all(Position::ZERO, 10_000).await.unwrap() {
        assert!(
            projection
                .apply(&event, &rules, usd(), &LogStreams(&[]))
                .unwrap()
                .is_empty(),
            "position {} was applied already",
            event.position
        );
    }
    assert_eq!(projection.customers(), &views);
    assert_eq!(
        (projection.watermark(), projection.checkpoint()),
        (watermark, checkpoint)
    );
    let changes = projection.take_changes();
    assert!(changes.is_empty(), "no change to write: {changes:?}");
    assert_eq!(changes.checkpoint, checkpoint);

    // The views survive the adapter's JSON round trip.
    let json = serde_json::to_string(&views).unwrap();
    assert_eq!(
        serde_json::from_str::<std::collections::BTreeMap<_, _>>(&json).unwrap(),
        views
    );
}

#[tokio::test]
async fn tick_moves_a_silent_population_to_at_risk_then_churned() {
    let mut s = Script::default();
    for who in ["a", "b", "c"] {
        s.purchase(who, day(1, 1), 1_000);
    }
    s.purchase("d", day(1, 1), 1_000);
    s.purchase("d", day(1, 11), 1_000);
    // e's only purchase was in October 2024: at risk on 2025-02-02, between d's two deadlines.
    s.purchase("e", plus_days(day(1, 1), -88), 1_000);
    let store = store_with(&s.into_events()).await;
    let rules = Rules::default();
    let mut projection = Projection::new();
    catch_up(&mut projection, &store, &rules, usd(), 10)
        .await
        .unwrap();
    let checkpoint = projection.checkpoint();

    let fired = projection.tick(plus_days(day(1, 1), 100), &rules);
    let moved: Vec<(&str, Stage, _)> = fired
        .iter()
        .map(|e| (e.customer_id.as_str(), e.transition.to, e.transition.at))
        .collect();
    assert_eq!(
        moved,
        [
            ("d", Stage::AtRisk, day(1, 31)),
            ("e", Stage::AtRisk, day(2, 2)),
            ("d", Stage::Churned, day(2, 20)),
        ],
        "transitions across customers come out in deadline order"
    );
    let stage = |p: &Projection, who: &str| p.customer(&customer(who)).unwrap().lifecycle.stage;
    assert_eq!(
        stage(&projection, "d"),
        Some(Stage::Churned),
        "d's gap is 10 days"
    );
    assert_eq!(stage(&projection, "a"), Some(Stage::New));
    projection.take_changes();

    let fired = projection.tick(plus_days(day(1, 1), 130), &rules);
    let moved: Vec<(&str, Stage)> = fired
        .iter()
        .map(|e| (e.customer_id.as_str(), e.transition.to))
        .collect();
    assert_eq!(
        moved,
        [
            ("a", Stage::AtRisk),
            ("b", Stage::AtRisk),
            ("c", Stage::AtRisk)
        ],
        "deadline order, ties by customer id"
    );
    assert!(
        fired
            .iter()
            .all(|e| e.position == checkpoint && e.transition.at == plus_days(day(1, 1), 120))
    );
    let changes = projection.take_changes();
    let ids: Vec<&str> = changes
        .customers
        .iter()
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(ids, ["a", "b", "c"], "only the moved customers are dirty");
    assert_eq!(changes.watermark, Some(plus_days(day(1, 1), 130)));
    assert_eq!(changes.checkpoint, checkpoint, "a tick is not a position");

    assert!(
        projection.tick(day(1, 1), &rules).is_empty(),
        "time never goes back"
    );
    assert_eq!(projection.watermark(), Some(plus_days(day(1, 1), 130)));
    assert_eq!(projection.tick(plus_days(day(1, 1), 365), &rules).len(), 4);
    for who in ["a", "b", "c", "d", "e"] {
        assert_eq!(
            stage(&projection, who),
            Some(Stage::Churned),
            "{who} churned"
        );
    }
    assert!(
        projection.next_deadline().is_none(),
        "churned customers have no deadline"
    );
}
