//! Every transition, with the rule that fires it, its time and its facts.

use super::{assert_fact, at, day, purchase, visit};
use crate::{CustomerLifecycle, Rules, Stage, Transition, advance, apply, next_deadline, rule};

const C: &str = "c-1";

/// Applies purchases of `minor_units` USD at 10:00 on each of `days`; returns what fired.
fn buy(state: &mut CustomerLifecycle, days: &[i64], minor_units: i64) -> Vec<Transition> {
    let rules = Rules::default();
    days.iter()
        .flat_map(|&d| apply(state, &purchase(C, at(d, 10), minor_units), &rules))
        .collect()
}

/// Asserts the stage change, its time and its rule.
#[track_caller]
fn assert_moved(
    t: &Transition,
    from: Stage,
    to: Stage,
    when: chrono::DateTime<chrono::Utc>,
    rule: &str,
) {
    assert_eq!(
        (t.from, t.to, t.at, t.rule.as_str()),
        (Some(from), to, when, rule),
        "unexpected transition {t:?}"
    );
}

#[test]
fn first_event_of_any_type_creates_a_prospect() {
    let rules = Rules::default();
    let mut state = CustomerLifecycle::new();
    assert_eq!(next_deadline(&state, &rules), None);
    let fired = apply(&mut state, &visit(C, at(0, 9)), &rules);
    assert_eq!(fired.len(), 1, "one transition: {fired:?}");
    let t = &fired[0];
    assert_eq!((t.from, t.to, t.at), (None, Stage::Prospect, at(0, 9)));
    assert_eq!(t.rule, rule::FIRST_SEEN);
    assert_fact(t, "event_type", "interaction");
    assert!(apply(&mut state, &visit(C, at(3, 9)), &rules).is_empty());
    assert_eq!(
        (state.stage, state.since),
        (Some(Stage::Prospect), Some(at(0, 9)))
    );
    assert_eq!(state.last_event_at, Some(at(3, 9)));
    assert_eq!(
        next_deadline(&state, &rules),
        None,
        "a prospect waits for nothing"
    );
    assert!(advance(&mut state, day(3000), &rules).is_empty());
    assert_eq!(
        state.history, fired,
        "the history holds what apply returned"
    );
}

#[test]
fn first_purchase_makes_a_prospect_new() {
    let mut state = CustomerLifecycle::new();
    let fired = buy(&mut state, &[0], 10_000);
    assert_eq!(fired.len(), 2, "prospect then new: {fired:?}");
    assert_fact(&fired[0], "event_type", "purchase");
    assert_moved(
        &fired[1],
        Stage::Prospect,
        Stage::New,
        at(0, 10),
        rule::FIRST_PURCHASE,
    );
    assert_fact(&fired[1], "orders", "1");
    assert_fact(&fired[1], "honeymoon_days", "30");
    assert_eq!((state.purchases, state.net_revenue_minor), (1, 10_000));
    assert_eq!(state.first_purchase_at, Some(at(0, 10)));
    assert_eq!(state.last_purchase_at, Some(at(0, 10)));
    assert_eq!(
        next_deadline(&state, &Rules::default()),
        Some(at(120, 10)),
        "a one-off buyer waits for inactivity of 2 x the 60-day default gap"
    );
}

#[test]
fn honeymoon_end_makes_a_repeat_buyer_active() {
    let rules = Rules::default();
    let mut state = CustomerLifecycle::new();
    buy(&mut state, &[0, 12], 10_000);
    assert_eq!(
        state.stage,
        Some(Stage::New),
        "a repeat inside the honeymoon stays new"
    );
    assert_eq!(next_deadline(&state, &rules), Some(at(30, 10)));
    assert!(advance(&mut state, at(30, 9), &rules).is_empty());
    let fired = advance(&mut state, day(31), &rules);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_moved(
        &fired[0],
        Stage::New,
        Stage::Active,
        at(30, 10),
        rule::HONEYMOON_END,
    );
    assert_fact(&fired[0], "orders", "2");
    assert_fact(&fired[0], "honeymoon_days", "30");
    assert_fact(&fired[0], "active_min_orders", "2");
    assert_fact(&fired[0], "net_revenue_minor", "20000");
    // Median gap 12 days: at risk 24 days after the last purchase.
    assert_eq!(next_deadline(&state, &rules), Some(at(36, 10)));
}

#[test]
fn honeymoon_end_makes_a_big_spender_loyal() {
    let rules = Rules::default();
    let mut state = CustomerLifecycle::new();
    buy(&mut state, &[0, 8, 16, 24], 15_000);
    let fired = advance(&mut state, day(31), &rules);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_moved(
        &fired[0],
        Stage::New,
        Stage::Loyal,
        at(30, 10),
        rule::HONEYMOON_END,
    );
    assert_fact(&fired[0], "orders", "4");
    assert_fact(&fired[0], "net_revenue_minor", "60000");
    assert_fact(&fired[0], "loyal_min_orders", "4");
    assert_fact(&fired[0], "loyal_min_net_revenue_minor", "50000");
    assert_fact(&fired[0], "currency", "USD");
}

#[test]
fn one_off_buyer_stays_new_then_goes_at_risk_and_churns_on_the_default_gap() {
    let rules = Rules::default();
    let mut state = CustomerLifecycle::new();
    buy(&mut state, &[0], 10_000);
    assert!(
        advance(&mut state, day(120), &rules).is_empty(),
        "due at 10:00"
    );
    assert_eq!(
        state.stage,
        Some(Stage::New),
        "one-off buyers stay new after the honeymoon"
    );
    let fired = advance(&mut state, day(400), &rules);
    assert_eq!(fired.len(), 2, "{fired:?}");
    assert_moved(
        &fired[0],
        Stage::New,
        Stage::AtRisk,
        at(120, 10),
        rule::INACTIVITY_AT_RISK,
    );
    assert_fact(&fired[0], "inactive_days", "120");
    assert_fact(&fired[0], "threshold_days", "120");
    assert_fact(&fired[0], "gap_days", "60");
    assert_fact(&fired[0], "gap_source", "default");
    assert_fact(&fired[0], "gaps", "0");
    assert_fact(&fired[0], "multiple_percent", "200");
    assert_fact(&fired[0], "last_purchase_at", "2024-01-01T10:00:00Z");
    assert_moved(
        &fired[1],
        Stage::AtRisk,
        Stage::Churned,
        at(240, 10),
        rule::INACTIVITY_CHURN,
    );
    assert_fact(&fired[1], "inactive_days", "240");
    assert_fact(&fired[1], "threshold_days", "240");
    assert_fact(&fired[1], "multiple_percent", "400");
    assert_eq!(
        next_deadline(&state, &rules),
        None,
        "churned waits for a purchase"
    );
}

#[test]
fn repeat_purchase_after_the_honeymoon_makes_new_active() {
    let mut state = CustomerLifecycle::new();
    buy(&mut state, &[0], 10_000);
    let fired = buy(&mut state, &[45], 10_000);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_moved(
        &fired[0],
        Stage::New,
        Stage::Active,
        at(45, 10),
        rule::REPEAT_PURCHASE,
    );
    assert_fact(&fired[0], "inactive_days", "45");
    assert_fact(&fired[0], "orders", "2");
}

#[test]
fn active_becomes_loyal_at_the_tier_and_loyal_goes_at_risk() {
    let rules = Rules::default();
    let mut state = CustomerLifecycle::new();
    buy(&mut state, &[0, 8, 16, 24], 10_000);
    let fired = advance(&mut state, day(31), &rules);
    assert_eq!(
        fired[0].to,
        Stage::Active,
        "40000 is short of the tier: {fired:?}"
    );
    assert!(
        buy(&mut state, &[31], 5_000).is_empty(),
        "45000 is still short"
    );
    let fired = buy(&mut state, &[32], 5_000);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_moved(
        &fired[0],
        Stage::Active,
        Stage::Loyal,
        at(32, 10),
        rule::LOYAL_THRESHOLD,
    );
    assert_fact(&fired[0], "orders", "6");
    assert_fact(&fired[0], "net_revenue_minor", "50000");
    assert_fact(&fired[0], "loyal_min_net_revenue_minor", "50000");
    // Gaps 8, 8, 8, 7, 1 days: median 8, at risk after 16 days.
    let fired = advance(&mut state, day(60), &rules);
    assert_moved(
        &fired[0],
        Stage::Loyal,
        Stage::AtRisk,
        at(48, 10),
        rule::INACTIVITY_AT_RISK,
    );
    assert_fact(&fired[0], "gap_days", "8");
    assert_fact(&fired[0], "gaps", "5");
    assert_fact(&fired[0], "threshold_days", "16");
}

/// A customer who bought on days 0, 20, 40 and 60 for 50.00 each.
fn every_twenty_days() -> CustomerLifecycle {
    let mut state = CustomerLifecycle::new();
    buy(&mut state, &[0, 20, 40, 60], 5_000);
    state
}

#[test]
fn active_goes_at_risk_at_twice_the_median_gap_and_churns_at_four_times() {
    let rules = Rules::default();
    let mut state = every_twenty_days();
    assert_eq!(state.stage, Some(Stage::Active));
    let fired = advance(&mut state, day(200), &rules);
    assert_eq!(fired.len(), 2, "{fired:?}");
    assert_moved(
        &fired[0],
        Stage::Active,
        Stage::AtRisk,
        at(100, 10),
        rule::INACTIVITY_AT_RISK,
    );
    assert_fact(&fired[0], "inactive_days", "40");
    assert_fact(&fired[0], "threshold_days", "40");
    assert_fact(&fired[0], "gap_days", "20");
    assert_fact(&fired[0], "gap_source", "median");
    assert_fact(&fired[0], "gaps", "3");
    assert_moved(
        &fired[1],
        Stage::AtRisk,
        Stage::Churned,
        at(140, 10),
        rule::INACTIVITY_CHURN,
    );
    assert_fact(&fired[1], "inactive_days", "80");
    assert_fact(&fired[1], "threshold_days", "80");
}

#[test]
fn purchase_while_at_risk_returns_the_customer() {
    let rules = Rules::default();
    let mut state = every_twenty_days();
    advance(&mut state, day(110), &rules);
    assert_eq!(state.stage, Some(Stage::AtRisk));
    let fired = buy(&mut state, &[110], 5_000);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_moved(
        &fired[0],
        Stage::AtRisk,
        Stage::Active,
        at(110, 10),
        rule::RETURNED,
    );
    assert_fact(&fired[0], "inactive_days", "50");
    assert_fact(&fired[0], "orders", "5");
}

#[test]
fn purchase_after_churn_reactivates_and_the_next_one_makes_active() {
    let rules = Rules::default();
    let mut state = every_twenty_days();
    let fired = buy(&mut state, &[300], 5_000);
    assert_eq!(fired.len(), 3, "at risk, churned, then win-back: {fired:?}");
    assert_moved(
        &fired[2],
        Stage::Churned,
        Stage::Reactivated,
        at(300, 10),
        rule::WIN_BACK,
    );
    assert_fact(&fired[2], "inactive_days", "240");
    assert_fact(&fired[2], "orders", "5");
    // Window end at day 330 comes before inactivity (median still 20 days: day 340).
    assert_eq!(next_deadline(&state, &rules), Some(at(330, 10)));
    let fired = buy(&mut state, &[310], 5_000);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_moved(
        &fired[0],
        Stage::Reactivated,
        Stage::Active,
        at(310, 10),
        rule::REACTIVATION_REPEAT,
    );
    assert_fact(&fired[0], "orders", "6");
}

#[test]
fn reactivated_becomes_active_when_the_window_ends() {
    let rules = Rules::default();
    let mut state = every_twenty_days();
    buy(&mut state, &[300], 5_000);
    let fired = advance(&mut state, day(400), &rules);
    assert_eq!(fired.len(), 3, "{fired:?}");
    assert_moved(
        &fired[0],
        Stage::Reactivated,
        Stage::Active,
        at(330, 10),
        rule::REACTIVATION_END,
    );
    assert_fact(&fired[0], "reactivated_days", "30");
    assert_fact(&fired[0], "orders", "5");
    assert_moved(
        &fired[1],
        Stage::Active,
        Stage::AtRisk,
        at(340, 10),
        rule::INACTIVITY_AT_RISK,
    );
    assert_moved(
        &fired[2],
        Stage::AtRisk,
        Stage::Churned,
        at(380, 10),
        rule::INACTIVITY_CHURN,
    );
}

#[test]
fn same_day_repeat_uses_the_minimum_gap_and_can_go_at_risk_in_the_honeymoon() {
    let rules = Rules::default();
    let mut state = CustomerLifecycle::new();
    apply(&mut state, &purchase(C, at(0, 10), 2_000), &rules);
    apply(&mut state, &purchase(C, at(0, 13), 2_000), &rules);
    assert_eq!(state.median_gap_seconds(), Some(3 * 3600));
    assert_eq!(next_deadline(&state, &rules), Some(at(14, 13)));
    let fired = advance(&mut state, day(29), &rules);
    assert_eq!(fired.len(), 2, "{fired:?}");
    assert_moved(
        &fired[0],
        Stage::New,
        Stage::AtRisk,
        at(14, 13),
        rule::INACTIVITY_AT_RISK,
    );
    assert_fact(&fired[0], "gap_source", "minimum");
    assert_fact(&fired[0], "gap_days", "7");
    assert_fact(&fired[0], "threshold_days", "14");
    assert_moved(
        &fired[1],
        Stage::AtRisk,
        Stage::Churned,
        at(28, 13),
        rule::INACTIVITY_CHURN,
    );
    assert!(
        advance(&mut state, day(60), &rules).is_empty(),
        "no honeymoon end after churn"
    );
}

#[test]
fn events_at_a_deadline_see_the_transition_first() {
    let rules = Rules::default();
    let mut state = CustomerLifecycle::new();
    buy(&mut state, &[0], 10_000);
    let fired = apply(&mut state, &visit(C, at(120, 10)), &rules);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_moved(
        &fired[0],
        Stage::New,
        Stage::AtRisk,
        at(120, 10),
        rule::INACTIVITY_AT_RISK,
    );
    let fired = buy(&mut state, &[300], 10_000);
    assert_eq!(fired.len(), 2, "{fired:?}");
    assert_moved(
        &fired[0],
        Stage::AtRisk,
        Stage::Churned,
        at(240, 10),
        rule::INACTIVITY_CHURN,
    );
    assert_moved(
        &fired[1],
        Stage::Churned,
        Stage::Reactivated,
        at(300, 10),
        rule::WIN_BACK,
    );
}

#[test]
fn inactivity_wins_over_a_honeymoon_end_at_the_same_instant() {
    let rules = Rules::default();
    let mut state = CustomerLifecycle::new();
    // Gap 10 days: at risk 20 days after day 10, exactly when the honeymoon ends.
    buy(&mut state, &[0, 10], 10_000);
    let fired = advance(&mut state, day(31), &rules);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_moved(
        &fired[0],
        Stage::New,
        Stage::AtRisk,
        at(30, 10),
        rule::INACTIVITY_AT_RISK,
    );
    assert_fact(&fired[0], "inactive_days", "20");
}

/// A probability-alive schedule of model `version` crossing the at-risk threshold on day
/// `at_risk` and the churn threshold on day `churn`.
fn schedule(version: i64, at_risk: i64, churn: i64) -> crate::PAliveSchedule {
    crate::PAliveSchedule {
        model_version: version,
        at_risk: Some(crate::PAliveCrossing {
            at: day(at_risk),
            p_alive: "0.4998".into(),
        }),
        churn: Some(crate::PAliveCrossing {
            at: day(churn),
            p_alive: "0.0999".into(),
        }),
    }
}

#[test]
fn a_probability_alive_schedule_replaces_the_inactivity_rules() {
    let rules = Rules::default();
    let mut state = every_twenty_days();
    // Inactivity alone would make this customer at risk on day 100 (see above).
    state.p_alive = Some(schedule(7, 130, 300));
    assert_eq!(next_deadline(&state, &rules), Some(day(130)));
    assert!(advance(&mut state, day(129), &rules).is_empty());
    let fired = advance(&mut state, day(400), &rules);
    assert_eq!(fired.len(), 2, "{fired:?}");
    assert_moved(
        &fired[0],
        Stage::Active,
        Stage::AtRisk,
        day(130),
        rule::P_ALIVE_AT_RISK,
    );
    assert_fact(&fired[0], "p_alive", "0.4998");
    assert_fact(&fired[0], "threshold", "0.50");
    assert_fact(&fired[0], "model_version", "7");
    assert_moved(
        &fired[1],
        Stage::AtRisk,
        Stage::Churned,
        day(300),
        rule::P_ALIVE_CHURN,
    );
    assert_fact(&fired[1], "p_alive", "0.0999");
    assert_fact(&fired[1], "threshold", "0.10");
    // A purchase after churn wins the customer back, as with the inactivity rules.
    let fired = buy(&mut state, &[410], 5_000);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_moved(
        &fired[0],
        Stage::Churned,
        Stage::Reactivated,
        at(410, 10),
        rule::WIN_BACK,
    );
}

#[test]
fn without_a_schedule_the_inactivity_rules_apply_unchanged() {
    let rules = Rules::default();
    let mut with_none = every_twenty_days();
    with_none.p_alive = None;
    let fired = advance(&mut with_none, day(200), &rules);
    let rules_fired: Vec<&str> = fired.iter().map(|t| t.rule.as_str()).collect();
    assert_eq!(
        rules_fired,
        [rule::INACTIVITY_AT_RISK, rule::INACTIVITY_CHURN]
    );
    // A schedule that never crosses keeps the customer active.
    let mut never = every_twenty_days();
    never.p_alive = Some(crate::PAliveSchedule {
        model_version: 1,
        at_risk: None,
        churn: None,
    });
    assert!(advance(&mut never, day(10_000), &rules).is_empty());
    assert_eq!(never.stage, Some(Stage::Active));
}
