//! The per-customer fold: amounts, dates, averages, currencies and persistence.

use super::{at, currency, day, purchase, refund, shuffled, visit};
use crate::{CustomerValue, RfmInput, apply};

/// Folds `events` into a fresh value with EUR as the reporting currency.
fn fold(events: &[patron_domain::Event]) -> CustomerValue {
    let mut value = CustomerValue::new();
    for event in events {
        apply(&mut value, event, currency("EUR"));
    }
    value
}

/// A value with only the given orders and net revenue.
fn with_net(net: i64, orders: u64) -> CustomerValue {
    let (gross, refunded) = if net >= 0 { (net, 0) } else { (0, -net) };
    CustomerValue {
        orders,
        gross_revenue_minor: gross,
        refunded_minor: refunded,
        ..CustomerValue::new()
    }
}

#[test]
fn purchases_and_refunds_fold_into_value() {
    let value = fold(&[
        purchase(at(3, 10), 10_000, "EUR"),
        purchase(at(1, 9), 2_500, "EUR"),
        visit(at(5, 0)),
        purchase(at(10, 18), 7_500, "EUR"),
        refund(at(12, 8), 3_000, "EUR"),
    ]);
    assert_eq!(
        (value.orders, value.refunds),
        (3, 1),
        "3 purchases, 1 refund"
    );
    assert_eq!(value.gross_revenue_minor, 20_000, "10000 + 2500 + 7500");
    assert_eq!(value.refunded_minor, 3_000);
    assert_eq!(value.net_revenue_minor(), 17_000, "20000 - 3000");
    assert_eq!(
        value.historical_clv_minor(),
        17_000,
        "historical CLV is net"
    );
    assert_eq!(
        value.average_order_value(),
        Some(5_667),
        "17000 / 3 = 5666.67 rounds to 5667"
    );
    assert_eq!(
        value.first_purchase_at,
        Some(at(1, 9)),
        "earliest, not first applied"
    );
    assert_eq!(value.last_purchase_at, Some(at(10, 18)));
    assert_eq!(value.other_currency_events, 0, "a visit is not money");
    let now = at(30, 12);
    assert_eq!(
        value.tenure_days(now),
        Some(29),
        "day 1 09:00 to day 30 12:00"
    );
    assert_eq!(
        value.recency_days(now),
        Some(19),
        "day 10 18:00 to day 30 12:00"
    );
    assert_eq!(
        value.rfm_input(now),
        Some(RfmInput {
            recency_days: 19,
            frequency: 3,
            monetary_minor: 17_000
        })
    );
}

#[test]
fn average_order_value_rounds_half_away_from_zero() {
    let cases = [
        (5, 2, 3, "2.5 rounds up"),
        (7, 2, 4, "3.5 rounds up"),
        (-5, 2, -3, "-2.5 rounds down"),
        (-7, 2, -4, "-3.5 rounds down"),
        (1, 3, 0, "0.33 rounds to 0"),
        (2, 3, 1, "0.67 rounds to 1"),
        (-1, 3, 0, "-0.33 rounds to 0"),
        (-2, 3, -1, "-0.67 rounds to -1"),
        (0, 4, 0, "zero net"),
        (9_999, 1, 9_999, "one order"),
        (i64::MAX, 1, i64::MAX, "no overflow"),
        (i64::MAX, 2, i64::MAX / 2 + 1, "odd max halves up"),
        (-i64::MAX, 2, -(i64::MAX / 2 + 1), "odd -max halves down"),
    ];
    for (net, orders, expected, why) in cases {
        assert_eq!(
            with_net(net, orders).average_order_value(),
            Some(expected),
            "{net} over {orders} orders: {why}"
        );
    }
    assert_eq!(with_net(-500, 0).average_order_value(), None, "no orders");
}

#[test]
fn refunds_beyond_purchases_leave_net_negative() {
    let value = fold(&[
        purchase(day(0), 1_000, "EUR"),
        refund(day(1), 1_000, "EUR"),
        refund(day(2), 500, "EUR"),
    ]);
    assert_eq!(value.net_revenue_minor(), -500, "exact, not clamped at 0");
    assert_eq!(value.historical_clv_minor(), -500);
    assert_eq!(value.average_order_value(), Some(-500), "-500 over 1 order");
    assert_eq!(value.refunds, 2);
}

#[test]
fn other_currencies_are_ignored_and_counted() {
    let value = fold(&[
        purchase(day(0), 50_000, "USD"),
        purchase(day(5), 2_000, "EUR"),
        refund(day(6), 1_000, "USD"),
        purchase(day(9), 70_000, "GBP"),
        visit(day(10)),
    ]);
    assert_eq!(value.orders, 1, "only the EUR purchase is an order");
    assert_eq!(value.refunds, 0, "the USD refund is not counted");
    assert_eq!(value.net_revenue_minor(), 2_000, "USD and GBP left out");
    assert_eq!(
        (value.first_purchase_at, value.last_purchase_at),
        (Some(day(5)), Some(day(5))),
        "dates come from EUR purchases only"
    );
    assert_eq!(value.other_currency_events, 3, "2 purchases and 1 refund");

    let mut in_usd = CustomerValue::new();
    apply(
        &mut in_usd,
        &purchase(day(0), 50_000, "USD"),
        currency("USD"),
    );
    apply(
        &mut in_usd,
        &purchase(day(5), 2_000, "EUR"),
        currency("USD"),
    );
    assert_eq!(
        (in_usd.net_revenue_minor(), in_usd.other_currency_events),
        (50_000, 1),
        "the reporting currency is a parameter"
    );
}

#[test]
fn a_customer_without_purchases_has_no_averages_or_dates() {
    let now = day(100);
    let empty = CustomerValue::new();
    assert_eq!(empty.average_order_value(), None);
    assert_eq!(empty.tenure_days(now), None);
    assert_eq!(empty.recency_days(now), None);
    assert_eq!(empty.rfm_input(now), None, "non-buyers are not RFM-ranked");
    assert_eq!(empty.net_revenue_minor(), 0);

    let refund_only = fold(&[refund(day(3), 700, "EUR"), visit(day(4))]);
    assert_eq!(refund_only.net_revenue_minor(), -700);
    assert_eq!(refund_only.average_order_value(), None, "no orders");
    assert_eq!(
        refund_only.rfm_input(now),
        None,
        "a refund is not a purchase"
    );
}

#[test]
fn days_round_down_and_never_go_negative() {
    let value = fold(&[
        purchase(at(0, 10), 100, "EUR"),
        purchase(at(4, 10), 100, "EUR"),
    ]);
    assert_eq!(value.tenure_days(at(2, 9)), Some(1), "47 hours is 1 day");
    assert_eq!(value.tenure_days(at(2, 10)), Some(2), "48 hours is 2 days");
    assert_eq!(
        value.recency_days(at(4, 9)),
        Some(0),
        "now before the last purchase"
    );
    assert_eq!(
        value.tenure_days(day(-3)),
        Some(0),
        "now before the first purchase"
    );
    assert_eq!(value.recency_days(at(11, 9)), Some(6), "6 days 23 hours");
}

#[test]
fn the_fold_does_not_depend_on_event_order() {
    let events = vec![
        purchase(at(3, 10), 10_000, "EUR"),
        purchase(at(1, 9), 2_500, "EUR"),
        purchase(at(8, 9), 4_000, "USD"),
        refund(at(12, 8), 3_000, "EUR"),
        purchase(at(10, 18), 7_500, "EUR"),
        visit(at(2, 0)),
    ];
    let expected = fold(&events);
    assert_eq!(expected.orders, 3, "sanity: 3 EUR orders");
    for seed in 1..=10 {
        assert_eq!(fold(&shuffled(&events, seed)), expected, "seed {seed}");
    }
}

#[test]
fn value_round_trips_through_json() {
    let value = fold(&[
        purchase(day(1), 2_500, "EUR"),
        refund(day(2), 500, "EUR"),
        purchase(day(3), 100, "JPY"),
    ]);
    let json = serde_json::to_string(&value).unwrap();
    let back: CustomerValue = serde_json::from_str(&json).unwrap();
    assert_eq!(back, value, "round trip through {json}");
}
