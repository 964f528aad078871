//! Probability-alive lifecycle rules: a `model_fitted` event in the log makes repeat buyers
//! at risk and churned when a fitted BG/NBD model's probability alive falls below the
//! thresholds; without one the inactivity rules apply; replay equals live either way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use patron_clv::{BgNbdParams, TimeUnit};
use patron_domain::{CustomerId, Event, EventBody, ModelFitted, Money, Purchase};
use patron_lifecycle::{Rules, Stage, Transition, rule};
use patron_projector::{OutboxEntry, Projection, catch_up, restore_from_log};
use patron_store::contract::customer;
use patron_store::{EventStore, InMemoryEventStore};
use serde_json::Map;
use support::*;
use uuid::Uuid;

/// The model the log announces (weeks).
const PARAMS: BgNbdParams = BgNbdParams {
    r: 0.243,
    alpha: 4.414,
    a: 2.0,
    b: 2.4,
};

fn purchase(who: &str, at: DateTime<Utc>, id: u128) -> Event {
    Event {
        event_id: Uuid::from_u128(1_000_000 + id),
        customer_id: customer(who),
        occurred_at: at,
        source: "test".into(),
        body: EventBody::Purchase(Purchase {
            order_id: format!("f-{id}"),
            amount: Money::new(2_500, usd()).unwrap(),
            items: Vec::new(),
            extra: Map::new(),
        }),
    }
}

fn model_event(at: DateTime<Utc>) -> Event {
    Event {
        event_id: Uuid::from_u128(2_000_000),
        customer_id: CustomerId::clv(),
        occurred_at: at,
        source: "patron-fit".into(),
        body: EventBody::ModelFitted(ModelFitted {
            version: 1,
            time_unit: "weeks".into(),
            r: PARAMS.r.to_string(),
            alpha: PARAMS.alpha.to_string(),
            a: PARAMS.a.to_string(),
            b: PARAMS.b.to_string(),
        }),
    }
}

/// The scripted year, plus `fader`, who buys on January 2, February 1 and March 1, falls
/// silent and comes back on November 20; with the model event on March 2 when `model`.
fn log(model: bool) -> Vec<Event> {
    let mut events = year();
    events.push(purchase("fader", day(1, 2), 1));
    events.push(purchase("fader", day(2, 1), 2));
    events.push(purchase("fader", day(3, 1), 3));
    events.push(purchase("fader", day(11, 20), 4));
    if model {
        events.push(model_event(day(3, 2)));
    }
    events.sort_by_key(|e| e.occurred_at);
    events
}

/// The first midnight after March 2 at which fader's probability alive (as of March 1's
/// purchases) is below `threshold`, computed directly from the model.
fn first_day_below(threshold: f64) -> DateTime<Utc> {
    let mut summary = patron_clv::PurchaseSummary::new();
    for (m, d) in [(1, 2), (2, 1), (3, 1)] {
        summary
            .record_purchase(NaiveDate::from_ymd_opt(2025, m, d).unwrap(), 2_500)
            .unwrap();
    }
    let mut d = NaiveDate::from_ymd_opt(2025, 3, 3).unwrap();
    loop {
        let observation = summary.observation(d, TimeUnit::Weeks).unwrap();
        if PARAMS.probability_alive(&observation) < threshold {
            return d.and_time(NaiveTime::MIN).and_utc();
        }
        d = d.succ_opt().unwrap();
    }
}

fn fader(outbox: &[OutboxEntry]) -> Vec<Transition> {
    support::history(outbox, "fader")
}

fn rules_of(history: &[Transition]) -> Vec<&str> {
    history.iter().map(|t| t.rule.as_str()).collect()
}

async fn project(events: &[Event], page: usize) -> (Projection, Vec<OutboxEntry>) {
    let store = store_with(events).await;
    let mut projection = Projection::new();
    let changes = catch_up(&mut projection, &store, &Rules::default(), usd(), page)
        .await
        .unwrap();
    (projection, changes.outbox)
}

#[tokio::test]
async fn below_the_thresholds_a_repeat_buyer_goes_at_risk_then_churns_with_the_reason() {
    let (projection, outbox) = project(&log(true), 10_000).await;
    assert_eq!(projection.model().map(|m| m.params), Some(PARAMS));
    let history = fader(&outbox);
    assert_eq!(
        rules_of(&history),
        [
            rule::FIRST_SEEN,
            rule::FIRST_PURCHASE,
            rule::REPEAT_PURCHASE,
            rule::P_ALIVE_AT_RISK,
            rule::P_ALIVE_CHURN,
            rule::WIN_BACK,
            rule::REACTIVATION_END,
        ],
        "{history:#?}"
    );
    let (at_risk, churn) = (&history[3], &history[4]);
    assert_eq!((at_risk.to, churn.to), (Stage::AtRisk, Stage::Churned));
    assert_eq!(at_risk.at, first_day_below(0.5));
    assert_eq!(churn.at, first_day_below(0.1));
    for (t, threshold) in [(at_risk, "0.50"), (churn, "0.10")] {
        assert_eq!(t.facts["threshold"], threshold);
        assert_eq!(t.facts["model_version"], "1");
        let p: f64 = t.facts["p_alive"].parse().unwrap();
        let limit: f64 = threshold.parse().unwrap();
        assert!(p < limit, "{t:?}");
    }
    assert_eq!(history[5].at, day(11, 20), "the purchase wins fader back");
    // The one-off buyer has no repeat purchase day: the inactivity rules still govern it.
    let oneoff = &projection.customer(&customer("oneoff")).unwrap().lifecycle;
    assert!(oneoff.p_alive.is_none());
    assert_eq!(
        rules_of(&support::history(&outbox, "oneoff"))[2..],
        [rule::INACTIVITY_AT_RISK, rule::INACTIVITY_CHURN]
    );
}

#[tokio::test]
async fn without_a_model_event_or_with_the_rules_off_inactivity_decides() {
    let (projection, outbox) = project(&log(false), 10_000).await;
    assert!(projection.model().is_none());
    let history = fader(&outbox);
    assert_eq!(
        rules_of(&history)[3..5],
        [rule::INACTIVITY_AT_RISK, rule::INACTIVITY_CHURN],
        "{history:#?}"
    );
    assert!(
        projection
            .customers()
            .values()
            .all(|view| view.lifecycle.p_alive.is_none())
    );
    assert!(
        outbox
            .iter()
            .all(|entry| !entry.transition.rule.starts_with("p_alive"))
    );

    let off = Rules {
        p_alive: false,
        ..Rules::default()
    };
    let store = store_with(&log(true)).await;
    let mut with_model_off = Projection::new();
    catch_up(&mut with_model_off, &store, &off, usd(), 100)
        .await
        .unwrap();
    assert_eq!(
        with_model_off.customers(),
        projection.customers(),
        "with p_alive = false the model event changes nothing"
    );
}

#[tokio::test]
async fn with_a_model_replay_equals_live_whatever_the_paging_and_restarts() {
    let events = log(true);
    let (full, full_outbox) = project(&events, 10_000).await;
    assert!(
        full_outbox
            .iter()
            .filter(|e| e.transition.rule.starts_with("p_alive"))
            .count()
            >= 3,
        "the model moves several customers"
    );
    for page in [1, 7, 100] {
        let (paged, outbox) = project(&events, page).await;
        assert_eq!(paged.customers(), full.customers(), "pages of {page}");
        assert_eq!(outbox, full_outbox, "pages of {page}");
    }

    // Live, in chunks, restarted from the persisted views after every chunk: the model comes
    // back from the log.
    let rules = Rules::default();
    let live = InMemoryEventStore::new();
    let mut projection = Projection::new();
    let mut outbox = Vec::new();
    for chunk in events.chunks(13) {
        append_each(&live, chunk).await;
        let changes = catch_up(&mut projection, &live, &rules, usd(), 5)
            .await
            .unwrap();
        outbox.extend(changes.outbox);
        projection = Projection::restore(
            projection.customers().clone(),
            projection.watermark(),
            projection.checkpoint(),
            changes.scored_at,
            &rules,
        );
        restore_from_log(&mut projection, &live).await.unwrap();
    }
    assert_eq!(projection.customers(), full.customers(), "live views");
    assert_eq!(outbox, full_outbox, "live outbox");
    assert_eq!(projection.checkpoint(), live.head().await.unwrap());
}

/// A model event that arrives after events dated past it (the fit's evaluation time lies before
/// them) re-folds the customers it is late for: their histories, and the published records net
/// of retractions, are what the log in event-time order gives, the model in force from its time.
#[tokio::test]
async fn a_model_arriving_after_later_events_refolds_those_customers() {
    let in_order = log(true);
    let (oracle, oracle_outbox) = project(&in_order, 10_000).await;
    assert!(
        oracle_outbox.iter().all(|e| e.retracts.is_none()),
        "in event-time order nothing is corrected"
    );
    let mut model_last = log(false);
    model_last.push(model_event(day(3, 2)));
    for page in [1, 9, 10_000] {
        let (late, outbox) = project(&model_last, page).await;
        assert!(
            outbox.iter().any(|e| e.retracts.is_some()),
            "pages of {page}: the inactivity transitions published before the model are retracted"
        );
        for (id, view) in oracle.customers() {
            let got = late.customer(id).unwrap();
            assert_eq!(
                (got.lifecycle.stage, got.lifecycle.since),
                (view.lifecycle.stage, view.lifecycle.since),
                "pages of {page}: {id}'s stage"
            );
            let net: Vec<Transition> = patron_projector::net_records(outbox.iter().cloned())
                .into_iter()
                .filter(|e| e.customer_id == *id)
                .map(|e| e.transition)
                .collect();
            assert_eq!(
                net,
                support::history(&oracle_outbox, id.as_str()),
                "pages of {page}: {id}'s published history, net of retractions"
            );
        }
    }
}
