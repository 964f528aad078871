//! The purchase summaries the projector keeps for the predictive models, checked against a
//! computation from the raw events that does not use `patron-clv`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;

use chrono::{NaiveDate, TimeDelta};
use patron_domain::{Currency, Event, EventBody, Money, Purchase, Refund};
use patron_store::contract::customer;
use support::*;
use uuid::Uuid;

/// A small deterministic generator (a 64-bit LCG), so the history is the same on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

fn event(n: &mut u128, who: &str, at: chrono::DateTime<chrono::Utc>, body: EventBody) -> Event {
    *n += 1;
    Event {
        event_id: Uuid::from_u128(*n),
        customer_id: customer(who),
        occurred_at: at,
        source: "test".into(),
        body,
    }
}

/// Twelve customers; purchases on random days (several per day sometimes, some in EUR, some
/// arriving late), refunds of earlier orders and of orders whose purchase comes later in the log.
fn history() -> Vec<Event> {
    let eur = Currency::from_code("EUR").unwrap();
    let mut rng = Lcg(42);
    let mut n = 0;
    let mut events = Vec::new();
    for c in 0..12 {
        let who = format!("c{c}");
        let mut orders = Vec::new();
        for o in 0..(1 + rng.next(9)) {
            let at = day(1, 1) + TimeDelta::hours(i64::try_from(rng.next(24 * 300)).unwrap());
            let order_id = format!("{who}-o{o}");
            let currency = if rng.next(10) == 0 { eur } else { usd() };
            let amount =
                Money::new(i64::try_from(100 + rng.next(10_000)).unwrap(), currency).unwrap();
            orders.push((order_id.clone(), at, amount));
            events.push(event(
                &mut n,
                &who,
                at,
                EventBody::Purchase(Purchase {
                    order_id,
                    amount,
                    items: Vec::new(),
                    extra: Default::default(),
                }),
            ));
            if rng.next(4) == 0 {
                // A second order on the same day: merged into one transaction.
                let order_id = format!("{who}-o{o}-same-day");
                let amount = Money::new(500, usd()).unwrap();
                orders.push((order_id.clone(), at, amount));
                events.push(event(
                    &mut n,
                    &who,
                    at + TimeDelta::minutes(5),
                    EventBody::Purchase(Purchase {
                        order_id,
                        amount,
                        items: Vec::new(),
                        extra: Default::default(),
                    }),
                ));
            }
        }
        for (order_id, at, amount) in &orders {
            if rng.next(3) == 0 {
                // Half or the whole order back; a few refunds are logged before the purchase.
                let back = if rng.next(2) == 0 {
                    amount.minor_units
                } else {
                    amount.minor_units / 2
                };
                let when = if rng.next(3) == 0 {
                    day(1, 1) - TimeDelta::days(1)
                } else {
                    *at + TimeDelta::days(3)
                };
                events.push(event(
                    &mut n,
                    &who,
                    when,
                    EventBody::Refund(Refund {
                        order_id: order_id.clone(),
                        amount: Money::new(back, amount.currency).unwrap(),
                        reason: None,
                        extra: Default::default(),
                    }),
                ));
            }
        }
        // A refund of an order never seen: changes nothing.
        events.push(event(
            &mut n,
            &who,
            day(6, 1),
            EventBody::Refund(Refund {
                order_id: format!("{who}-before-tracking"),
                amount: Money::new(999, usd()).unwrap(),
                reason: None,
                extra: Default::default(),
            }),
        ));
    }
    // Log order: by time, except that every fifth event arrives last (late).
    events.sort_by_key(|e| e.occurred_at);
    let (late, mut on_time): (Vec<_>, Vec<_>) = events
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 5 == 0);
    on_time.extend(late);
    on_time.into_iter().map(|(_, e)| e).collect()
}

/// Per customer: frequency, recency in days, repeat spend total, computed from the raw events.
/// Also returns how many repeat days lost value to a refund (so the test covers refunds).
fn expected(events: &[Event]) -> (BTreeMap<String, (u32, i64, i64)>, usize) {
    let mut order_day: BTreeMap<(String, String), NaiveDate> = BTreeMap::new();
    let mut day_gross: BTreeMap<String, BTreeMap<NaiveDate, i64>> = BTreeMap::new();
    for e in events {
        if let EventBody::Purchase(p) = &e.body
            && p.amount.currency == usd()
        {
            let who = e.customer_id.as_str().to_owned();
            let day = e.occurred_at.date_naive();
            order_day
                .entry((who.clone(), p.order_id.clone()))
                .or_insert(day);
            *day_gross.entry(who).or_default().entry(day).or_default() += p.amount.minor_units;
        }
    }
    let mut day_refunded: BTreeMap<(String, NaiveDate), i64> = BTreeMap::new();
    for e in events {
        if let EventBody::Refund(r) = &e.body
            && r.amount.currency == usd()
        {
            let who = e.customer_id.as_str().to_owned();
            if let Some(day) = order_day.get(&(who.clone(), r.order_id.clone())) {
                *day_refunded.entry((who, *day)).or_default() += r.amount.minor_units;
            }
        }
    }
    let mut refunded_repeat_days = 0;
    let summaries = day_gross
        .into_iter()
        .map(|(who, days)| {
            let first = *days.keys().next().unwrap();
            let last = *days.keys().next_back().unwrap();
            let repeat: i64 = days
                .iter()
                .skip(1)
                .map(|(day, gross)| {
                    let refunded = day_refunded.get(&(who.clone(), *day)).copied().unwrap_or(0);
                    refunded_repeat_days += usize::from(refunded > 0);
                    (gross - refunded).max(0)
                })
                .sum();
            let frequency = u32::try_from(days.len() - 1).unwrap();
            (who, (frequency, (last - first).num_days(), repeat))
        })
        .collect();
    (summaries, refunded_repeat_days)
}

#[tokio::test]
async fn summaries_match_a_direct_computation_and_replay_equals_paged_replay() {
    let events = history();
    let store = store_with(&events).await;
    let full = replay(&store, 10_000).await;
    let (want, refunded_repeat_days) = expected(&events);
    assert!(refunded_repeat_days > 2, "refunds lower some repeat days");
    assert!(want.len() >= 8, "most customers bought in USD");
    assert!(
        want.values().any(|(f, _, spend)| *f > 2 && *spend > 0),
        "some customers are repeat buyers"
    );
    let mut checked = 0;
    for (id, view) in &full.views {
        let summary = &view.purchases.summary;
        match want.get(id.as_str()) {
            Some(&(frequency, recency, repeat)) => {
                assert_eq!(summary.frequency(), frequency, "{id}: frequency");
                assert_eq!(summary.recency_days(), Some(recency), "{id}: recency");
                assert_eq!(summary.repeat_spend_minor(), repeat, "{id}: repeat spend");
                checked += 1;
            }
            None => assert!(summary.is_empty(), "{id} has no USD purchase"),
        }
        assert!(
            view.purchases.pending_refunds_minor() >= 999,
            "{id}: the refund of an unknown order waits"
        );
    }
    assert_eq!(checked, want.len());
    for page in [1, 4, 33] {
        assert_eq!(
            replay(&store, page).await.views,
            full.views,
            "pages of {page}"
        );
    }
}
