//! `settle`: the stage a customer's (replaced) facts imply, and `combine_facts`.

use std::collections::BTreeMap;

use super::{at, day, purchase, visit};
use crate::{
    CustomerLifecycle, MAX_GAPS, PAliveCrossing, PAliveSchedule, Rules, Stage, apply, rule, settle,
};

const C: &str = "c-1";

/// A customer who bought `minor_units` USD at 10:00 on each of `days`.
fn bought(days: &[i64], minor_units: i64) -> CustomerLifecycle {
    let rules = Rules::default();
    let mut state = CustomerLifecycle::new();
    for &d in days {
        apply(&mut state, &purchase(C, at(d, 10), minor_units), &rules);
    }
    state
}

/// A customer who only visited, on day `d`.
fn visitor(d: i64) -> CustomerLifecycle {
    let mut state = CustomerLifecycle::new();
    apply(&mut state, &visit(C, at(d, 9)), &Rules::default());
    state
}

/// `state` with its facts replaced by those of `parts`.
fn with_facts(mut state: CustomerLifecycle, parts: &[&CustomerLifecycle]) -> CustomerLifecycle {
    state.combine_facts(parts.iter().copied());
    state
}

fn facts() -> BTreeMap<String, String> {
    BTreeMap::from([("merged_customer_id".to_owned(), "c-2".to_owned())])
}

/// Settles at `when` with the merge rule; returns the stage entered, if any.
fn settled(state: &mut CustomerLifecycle, when: chrono::DateTime<chrono::Utc>) -> Option<Stage> {
    let before = state.history.len();
    let fired = settle(state, when, rule::MERGE, facts(), &Rules::default());
    match &fired {
        Some(t) => {
            assert_eq!(
                state.history.len(),
                before + 1,
                "the transition is in the history"
            );
            assert_eq!(state.history.last(), Some(t));
            assert_eq!(t.rule, rule::MERGE);
            assert_eq!(t.facts, facts(), "the given facts");
            assert_eq!(state.stage, Some(t.to));
        }
        None => assert_eq!(state.history.len(), before, "nothing recorded"),
    }
    fired.map(|t| t.to)
}

#[test]
fn no_purchase_implies_prospect() {
    let mut state = with_facts(bought(&[0, 20, 40, 60], 5_000), &[&visitor(70)]);
    assert_eq!(state.stage, Some(Stage::Active));
    assert_eq!(settled(&mut state, day(71)), Some(Stage::Prospect));
    let t = state.history.last().expect("a transition");
    assert_eq!(
        (t.from, t.at),
        (Some(Stage::Active), day(71)),
        "from the current stage, at the given time"
    );
}

#[test]
fn a_first_buyer_or_a_repeat_buyer_in_the_honeymoon_is_new() {
    let mut state = with_facts(visitor(0), &[&bought(&[5], 1_000)]);
    assert_eq!(settled(&mut state, day(10)), Some(Stage::New));
    let mut state = with_facts(visitor(0), &[&bought(&[0], 1_000), &bought(&[25], 1_000)]);
    assert_eq!(
        settled(&mut state, day(26)),
        Some(Stage::New),
        "two orders, still inside the 30-day honeymoon"
    );
}

#[test]
fn a_repeat_buyer_past_the_honeymoon_is_active_or_loyal() {
    let mut state = with_facts(visitor(0), &[&bought(&[0], 1_000), &bought(&[25], 1_000)]);
    assert_eq!(settled(&mut state, day(35)), Some(Stage::Active));
    let mut state = with_facts(
        visitor(0),
        &[&bought(&[0, 20], 15_000), &bought(&[40, 60], 15_000)],
    );
    assert_eq!(
        settled(&mut state, day(61)),
        Some(Stage::Loyal),
        "4 orders and 600.00 reach the tier"
    );
}

#[test]
fn inactivity_past_the_multiples_implies_at_risk_then_churned() {
    // Purchases every 20 days up to day 60: at risk from day 100 10:00, churned from day 140.
    let base = bought(&[0, 20, 40, 60], 5_000);
    let mut state = with_facts(visitor(0), &[&base]);
    assert_eq!(settled(&mut state, at(100, 9)), Some(Stage::Active));
    let mut state = with_facts(visitor(0), &[&base]);
    assert_eq!(
        settled(&mut state, at(100, 10)),
        Some(Stage::AtRisk),
        "at the deadline"
    );
    let mut state = with_facts(visitor(0), &[&base]);
    assert_eq!(settled(&mut state, at(140, 10)), Some(Stage::Churned));
}

#[test]
fn a_probability_alive_schedule_replaces_the_inactivity_rules() {
    let crossing = |d: i64, p: &str| PAliveCrossing {
        at: day(d),
        p_alive: p.into(),
    };
    let mut base = bought(&[0, 20, 40, 60], 5_000);
    base.p_alive = Some(PAliveSchedule {
        model_version: 3,
        at_risk: Some(crossing(130, "0.4999")),
        churn: Some(crossing(300, "0.0999")),
    });
    for (when, stage) in [
        (day(110), Stage::Active),
        (day(130), Stage::AtRisk),
        (day(300), Stage::Churned),
    ] {
        let mut state = visitor(0);
        state.p_alive = base.p_alive.clone();
        state.combine_facts([&base]);
        assert_eq!(settled(&mut state, when), Some(stage), "at {when}");
    }
}

#[test]
fn an_unchanged_stage_is_no_transition() {
    let mut state = bought(&[0, 20, 40, 60], 5_000);
    let history = state.history.clone();
    assert_eq!(settled(&mut state, day(61)), None);
    assert_eq!(state.history, history);
    let mut never = CustomerLifecycle::new();
    assert_eq!(
        settled(&mut never, day(1)),
        None,
        "a customer never seen is left alone"
    );
    assert_eq!(never, CustomerLifecycle::new());
}

#[test]
fn reactivated_stays_reactivated_unless_the_facts_imply_worse() {
    let mut state = bought(&[0, 20, 40, 60, 300], 5_000);
    assert_eq!(state.stage, Some(Stage::Reactivated));
    assert_eq!(settled(&mut state, day(301)), None, "implied active: kept");
    let mut richer = state.clone();
    richer.combine_facts([&state, &bought(&[280, 290], 50_000)]);
    assert_eq!(settled(&mut richer, day(301)), None, "implied loyal: kept");
    assert_eq!(
        settled(&mut state, day(400)),
        Some(Stage::Churned),
        "implied churned"
    );
}

#[test]
fn the_transition_is_never_stamped_before_the_current_stage_began() {
    let mut state = bought(&[0, 20, 40, 60, 300], 5_000);
    let since = state.since.expect("a stage");
    state.combine_facts([&visitor(0)]);
    assert_eq!(settled(&mut state, day(200)), Some(Stage::Prospect));
    assert_eq!(state.history.last().map(|t| t.at), Some(since));
}

#[test]
fn combined_facts_are_the_facts_of_all_events_in_any_order() {
    let rules = Rules::default();
    let a = bought(&[0, 3, 9], 1_000);
    let mut b = bought(&[1, 30], 2_000);
    apply(&mut b, &super::refund_in(C, at(31, 0), 500, "USD"), &rules);
    apply(
        &mut b,
        &super::purchase_in(C, at(32, 0), 700, "EUR"),
        &rules,
    );
    let c = visitor(40);
    let all = {
        let mut state = CustomerLifecycle::new();
        for (d, minor) in [(0, 1_000), (1, 2_000), (3, 1_000), (9, 1_000), (30, 2_000)] {
            apply(&mut state, &purchase(C, at(d, 10), minor), &rules);
        }
        apply(
            &mut state,
            &super::refund_in(C, at(31, 0), 500, "USD"),
            &rules,
        );
        apply(
            &mut state,
            &super::purchase_in(C, at(32, 0), 700, "EUR"),
            &rules,
        );
        apply(&mut state, &visit(C, at(40, 9)), &rules);
        state
    };
    let mut forward = CustomerLifecycle::new();
    forward.combine_facts([&a, &b, &c]);
    let mut backward = a.clone();
    backward.combine_facts([&c, &b, &a]);
    for combined in [&forward, &backward] {
        assert_eq!(
            (
                combined.purchases,
                combined.net_revenue_minor,
                combined.other_currency_events,
                combined.first_purchase_at,
                combined.last_purchase_at,
                &combined.recent_purchases,
                combined.last_event_at,
            ),
            (
                all.purchases,
                all.net_revenue_minor,
                all.other_currency_events,
                all.first_purchase_at,
                all.last_purchase_at,
                &all.recent_purchases,
                all.last_event_at,
            )
        );
    }
    assert_eq!(backward.stage, a.stage, "the stage is kept");
    assert_eq!(backward.history, a.history, "the history is kept");

    let days: Vec<i64> = (0..40).map(|k| 2 * k).collect();
    let (even, odd): (Vec<i64>, Vec<i64>) = days.iter().copied().partition(|d| d % 4 == 0);
    let mut long = CustomerLifecycle::new();
    long.combine_facts([&bought(&even, 100), &bought(&odd, 100)]);
    assert_eq!(long.recent_purchases.len(), MAX_GAPS + 1);
    assert_eq!(
        long.recent_purchases,
        bought(&days, 100).recent_purchases,
        "the latest purchases of all"
    );
}
