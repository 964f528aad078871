//! Value bookkeeping, late events, the bounded gap window and persistence of the state.

use super::{assert_fact, at, day, purchase, purchase_in, refund_in};
use crate::{CustomerLifecycle, MAX_GAPS, Rules, Stage, advance, apply, next_deadline, rule};

const C: &str = "c-2";

#[test]
fn refunds_subtract_and_other_currencies_are_counted_apart() {
    let rules = Rules::default();
    let mut state = CustomerLifecycle::new();
    for (d, minor, currency) in [(0, 20_000, "USD"), (8, 20_000, "USD"), (16, 20_000, "USD")] {
        apply(
            &mut state,
            &purchase_in(C, at(d, 10), minor, currency),
            &rules,
        );
    }
    apply(
        &mut state,
        &purchase_in(C, at(24, 10), 100_000, "EUR"),
        &rules,
    );
    apply(&mut state, &refund_in(C, at(25, 10), 15_000, "USD"), &rules);
    apply(&mut state, &refund_in(C, at(26, 10), 1_000, "EUR"), &rules);
    assert_eq!(state.purchases, 4, "orders count in any currency");
    assert_eq!(
        state.net_revenue_minor, 45_000,
        "60000 - 15000 USD; EUR left out"
    );
    assert_eq!(state.other_currency_events, 2);
    let fired = advance(&mut state, day(31), &rules);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(
        fired[0].to,
        Stage::Active,
        "4 orders but 450.00 USD net is below the tier"
    );
    assert_fact(&fired[0], "net_revenue_minor", "45000");
    assert_fact(&fired[0], "orders", "4");
    assert_fact(&fired[0], "active_min_orders", "2");

    let euro = Rules::from_toml_str("currency = \"EUR\"").unwrap();
    let mut state = CustomerLifecycle::new();
    apply(
        &mut state,
        &purchase_in(C, at(0, 10), 100_000, "EUR"),
        &euro,
    );
    apply(&mut state, &purchase_in(C, at(1, 10), 7_000, "USD"), &euro);
    assert_eq!(
        (state.net_revenue_minor, state.other_currency_events),
        (100_000, 1)
    );
}

#[test]
fn refunds_do_not_demote_a_loyal_customer() {
    let rules = Rules::default();
    let mut state = CustomerLifecycle::new();
    for d in [0, 8, 16, 24] {
        apply(&mut state, &purchase(C, at(d, 10), 15_000), &rules);
    }
    advance(&mut state, day(31), &rules);
    assert_eq!(state.stage, Some(Stage::Loyal));
    let fired = apply(&mut state, &refund_in(C, at(32, 10), 30_000, "USD"), &rules);
    assert!(
        fired.is_empty(),
        "refunds change value, not stage: {fired:?}"
    );
    assert_eq!(
        (state.stage, state.net_revenue_minor),
        (Some(Stage::Loyal), 30_000)
    );
}

#[test]
fn late_purchases_are_counted_without_rewriting_history() {
    let rules = Rules::default();
    let mut state = CustomerLifecycle::new();
    for d in [0, 20, 40, 60] {
        apply(&mut state, &purchase(C, at(d, 10), 5_000), &rules);
    }
    advance(&mut state, day(105), &rules);
    assert_eq!(
        (state.stage, state.since),
        (Some(Stage::AtRisk), Some(at(100, 10)))
    );
    let before = state.history.clone();

    // Older than the latest purchase: counted, but it does not bring the customer back.
    let fired = apply(&mut state, &purchase(C, at(50, 10), 5_000), &rules);
    assert!(fired.is_empty(), "{fired:?}");
    assert_eq!(state.history, before);
    assert_eq!((state.purchases, state.net_revenue_minor), (5, 25_000));
    assert_eq!(state.last_purchase_at, Some(at(60, 10)));
    assert_eq!(
        state.last_event_at,
        Some(at(60, 10)),
        "the latest event time is kept"
    );
    // Gaps 20, 20, 10, 10: median 15 days, so churn comes 60 days after day 60.
    assert_eq!(next_deadline(&state, &rules), Some(at(120, 10)));

    // Newer than the latest purchase but older than the at-risk transition: the customer is
    // back, stamped when the current stage began so the history never runs backwards.
    let fired = apply(&mut state, &purchase(C, at(95, 10), 5_000), &rules);
    assert_eq!(fired.len(), 1, "{fired:?}");
    let t = &fired[0];
    assert_eq!(
        (t.from, t.to, t.at),
        (Some(Stage::AtRisk), Stage::Active, at(100, 10))
    );
    assert_eq!(t.rule, rule::RETURNED);
    assert_fact(t, "event_occurred_at", "2024-04-05T10:00:00Z");
    assert_fact(t, "inactive_days", "35");
    let times: Vec<_> = state.history.iter().map(|t| t.at).collect();
    assert!(times.is_sorted(), "history is in time order: {times:?}");
}

#[test]
fn advance_is_idempotent_and_ignores_earlier_watermarks() {
    let rules = Rules::default();
    let mut state = CustomerLifecycle::new();
    apply(&mut state, &purchase(C, at(0, 10), 5_000), &rules);
    assert_eq!(advance(&mut state, day(130), &rules).len(), 1);
    assert!(advance(&mut state, day(130), &rules).is_empty());
    assert!(advance(&mut state, day(10), &rules).is_empty());
    assert_eq!(next_deadline(&state, &rules), Some(at(240, 10)));
}

#[test]
fn gap_window_keeps_the_latest_thirty_two_gaps() {
    let rules = Rules::default();
    let mut state = CustomerLifecycle::new();
    // 20 gaps of 30 days, then 32 gaps of 10 days: only the latter are kept.
    let mut d = 0;
    for gap in std::iter::repeat_n(30, 21).chain(std::iter::repeat_n(10, 32)) {
        d += gap;
        apply(&mut state, &purchase(C, at(d, 10), 1_000), &rules);
    }
    assert_eq!(state.purchases, 53);
    assert_eq!(state.recent_purchases.len(), MAX_GAPS + 1);
    assert_eq!(state.median_gap_seconds(), Some(10 * 86_400));
    assert_eq!(
        state.first_purchase_at,
        Some(at(30, 10)),
        "kept beyond the window"
    );

    let mut even = CustomerLifecycle::new();
    for d in [0, 10, 40] {
        apply(&mut even, &purchase(C, at(d, 10), 1_000), &rules);
    }
    assert_eq!(
        even.median_gap_seconds(),
        Some(20 * 86_400),
        "mean of the middle two"
    );
}

#[test]
fn state_round_trips_through_serde() {
    let rules = Rules::default();
    let mut state = CustomerLifecycle::new();
    for d in [0, 20, 40] {
        apply(&mut state, &purchase(C, at(d, 10), 5_000), &rules);
    }
    advance(&mut state, day(200), &rules);
    assert_eq!(state.history.len(), 5);
    let json = serde_json::to_string(&state).unwrap();
    assert!(
        json.contains("\"at_risk\""),
        "stages are stored by name: {json}"
    );
    let back: CustomerLifecycle = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
}

#[test]
fn a_deadline_pulled_into_the_past_fires_when_the_stage_began() {
    let rules = Rules::default();
    let mut state = CustomerLifecycle::new();
    for d in [0, 20, 40, 60] {
        apply(&mut state, &purchase(C, at(d, 10), 5_000), &rules);
    }
    advance(&mut state, day(101), &rules);
    assert_eq!(
        (state.stage, state.since),
        (Some(Stage::AtRisk), Some(at(100, 10)))
    );
    // Late purchases shrink the median gap to 8.5 days: churn was due on day 60 + 34.
    for d in [55, 57, 58] {
        assert!(apply(&mut state, &purchase(C, at(d, 10), 5_000), &rules).is_empty());
    }
    assert_eq!(next_deadline(&state, &rules), Some(at(94, 10)));
    let fired = advance(&mut state, day(101), &rules);
    assert_eq!(fired.len(), 1, "{fired:?}");
    let t = &fired[0];
    assert_eq!(
        (t.from, t.to, t.at),
        (Some(Stage::AtRisk), Stage::Churned, at(100, 10))
    );
    assert_eq!(t.rule, rule::INACTIVITY_CHURN);
    assert_fact(t, "deadline", "2024-04-04T10:00:00Z");
    assert_fact(t, "threshold_days", "34");
    assert_fact(t, "inactive_days", "40");
    assert_fact(t, "gap_days", "8.50");
}
