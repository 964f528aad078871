//! Unit tests: every transition with its rule and facts, rules validation, and determinism of
//! histories however the watermark advances.

mod determinism;
mod rules;
mod settle;
mod transitions;
mod value;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use patron_domain::{
    Currency, CustomerId, Event, EventBody, Interaction, InteractionKind, Money, Purchase, Refund,
};
use serde_json::Map;
use uuid::Uuid;

use crate::Transition;

/// Midnight UTC on day `d` after 2024-01-01.
fn day(d: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + TimeDelta::days(d)
}

/// `hours` past midnight on day `d`.
fn at(d: i64, hours: i64) -> DateTime<Utc> {
    day(d) + TimeDelta::hours(hours)
}

/// A sum of money in `currency`.
fn money(minor_units: i64, currency: &str) -> Money {
    Money::new(minor_units, Currency::from_code(currency).unwrap()).unwrap()
}

/// An event of `customer` at `occurred_at`.
fn event(customer: &str, occurred_at: DateTime<Utc>, body: EventBody) -> Event {
    Event {
        event_id: Uuid::new_v4(),
        customer_id: CustomerId::parse(customer).unwrap(),
        occurred_at,
        source: "test".into(),
        body,
    }
}

/// A purchase of `minor_units` in `currency`.
fn purchase_in(customer: &str, t: DateTime<Utc>, minor_units: i64, currency: &str) -> Event {
    let body = EventBody::Purchase(Purchase {
        order_id: format!("o-{}", t.timestamp()),
        amount: money(minor_units, currency),
        items: Vec::new(),
        extra: Map::new(),
    });
    event(customer, t, body)
}

/// A purchase of `minor_units` USD.
fn purchase(customer: &str, t: DateTime<Utc>, minor_units: i64) -> Event {
    purchase_in(customer, t, minor_units, "USD")
}

/// A refund of `minor_units` in `currency`.
fn refund_in(customer: &str, t: DateTime<Utc>, minor_units: i64, currency: &str) -> Event {
    let body = EventBody::Refund(Refund {
        order_id: "o-refunded".into(),
        amount: money(minor_units, currency),
        reason: None,
        extra: Map::new(),
    });
    event(customer, t, body)
}

/// A web visit.
fn visit(customer: &str, t: DateTime<Utc>) -> Event {
    let body = EventBody::Interaction(Interaction {
        channel: "web".into(),
        kind: InteractionKind::Visit,
        extra: Map::new(),
    });
    event(customer, t, body)
}

/// Asserts that a transition carries `key = value` among its facts.
#[track_caller]
fn assert_fact(transition: &Transition, key: &str, value: &str) {
    assert_eq!(
        transition.facts.get(key).map(String::as_str),
        Some(value),
        "fact {key} of {} -> {} ({}); all facts: {:?}",
        transition.from.map_or("none", |s| s.as_str()),
        transition.to,
        transition.rule,
        transition.facts
    );
}
