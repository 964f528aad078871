//! Unit tests: hand-computed examples for every computation, the tie and boundary rules, and
//! independence from input order.

mod customer;
mod rfm;
mod segment;
mod tier;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use patron_domain::{
    Currency, CustomerId, Event, EventBody, Interaction, InteractionKind, Money, Purchase, Refund,
};
use serde_json::Map;
use uuid::Uuid;

/// Midnight UTC on day `d` after 2024-01-01.
fn day(d: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + TimeDelta::days(d)
}

/// `hours` past midnight on day `d`.
fn at(d: i64, hours: i64) -> DateTime<Utc> {
    day(d) + TimeDelta::hours(hours)
}

/// A currency by code.
fn currency(code: &str) -> Currency {
    Currency::from_code(code).unwrap()
}

/// An event of customer `c-1` at `occurred_at`.
fn event(occurred_at: DateTime<Utc>, body: EventBody) -> Event {
    Event {
        event_id: Uuid::new_v4(),
        customer_id: CustomerId::parse("c-1").unwrap(),
        occurred_at,
        source: "test".into(),
        body,
    }
}

/// A purchase of `minor_units` in `code`.
fn purchase(t: DateTime<Utc>, minor_units: i64, code: &str) -> Event {
    let body = EventBody::Purchase(Purchase {
        order_id: format!("o-{}", t.timestamp()),
        amount: Money::new(minor_units, currency(code)).unwrap(),
        items: Vec::new(),
        extra: Map::new(),
    });
    event(t, body)
}

/// A refund of `minor_units` in `code`.
fn refund(t: DateTime<Utc>, minor_units: i64, code: &str) -> Event {
    let body = EventBody::Refund(Refund {
        order_id: "o-refunded".into(),
        amount: Money::new(minor_units, currency(code)).unwrap(),
        reason: None,
        extra: Map::new(),
    });
    event(t, body)
}

/// A web visit.
fn visit(t: DateTime<Utc>) -> Event {
    let body = EventBody::Interaction(Interaction {
        channel: "web".into(),
        kind: InteractionKind::Visit,
        extra: Map::new(),
    });
    event(t, body)
}

/// `items` in a pseudo-random order fixed by `seed` (Fisher–Yates over a 64-bit LCG).
fn shuffled<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
    let mut items = items.to_vec();
    let mut state = seed;
    for i in (1..items.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = usize::try_from((state >> 33) % (i as u64 + 1)).unwrap();
        items.swap(i, j);
    }
    items
}

#[test]
fn shuffled_permutes_and_is_deterministic() {
    let items: Vec<u32> = (0..20).collect();
    let a = shuffled(&items, 7);
    assert_eq!(a, shuffled(&items, 7), "same seed, same order");
    assert_ne!(a, items, "seed 7 moves something");
    assert_ne!(a, shuffled(&items, 8), "another seed, another order");
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, items, "a permutation of the input");
}
