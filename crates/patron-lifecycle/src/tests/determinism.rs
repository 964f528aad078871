//! Determinism: the same events give the same histories whether the watermark jumps to the end
//! at once or advances in many small steps between the events.

use std::collections::BTreeMap;
use std::iter;

use chrono::{DateTime, TimeDelta, Utc};
use patron_domain::Event;

use super::{at, day, purchase, purchase_in, refund_in, visit};
use crate::{CustomerLifecycle, Rules, Stage, Transition, advance, apply, next_deadline, rule};

/// Customers' states by id.
type States = BTreeMap<String, CustomerLifecycle>;

/// The (rule, stage entered, time) of each transition in a history.
type Summary<'a> = Vec<(&'a str, Stage, DateTime<Utc>)>;

/// Where the scripted run ends.
fn end() -> DateTime<Utc> {
    day(730)
}

/// Two years of events for customers with different habits, in time order.
fn script() -> Vec<Event> {
    let mut events = Vec::new();
    // Buys every two weeks for two years.
    events.extend((0..=52).map(|k| purchase("loyal", at(14 * k, 10), 12_000)));
    // Buys once, browses a little.
    events.push(purchase("one-off", at(5, 10), 4_999));
    events.push(visit("one-off", at(6, 15)));
    events.push(visit("one-off", at(50, 15)));
    // Buys around the holidays, every year.
    events.push(visit("seasonal", at(300, 18)));
    for d in [320, 340, 685, 705] {
        events.push(purchase("seasonal", at(d, 10), 20_000));
    }
    // Buys weekly for three weeks, then only visits.
    for d in [10, 17, 24] {
        events.push(purchase("churning", at(d, 10), 3_000));
    }
    events.push(visit("churning", at(30, 15)));
    events.push(visit("churning", at(60, 15)));
    // Buys monthly, lapses, is won back, lapses briefly, comes back for good.
    for d in [
        0, 30, 60, 90, 400, 470, 500, 530, 560, 590, 620, 650, 680, 710,
    ] {
        events.push(purchase("win-back", at(d, 10), 9_000));
    }
    events.push(refund_in("win-back", at(475, 12), 9_000, "USD"));
    // Pays in another currency, twice in two days.
    events.push(purchase_in("euro", at(100, 10), 80_000, "EUR"));
    events.push(purchase_in("euro", at(101, 10), 80_000, "EUR"));
    // Never buys.
    for d in [1, 100, 700] {
        events.push(visit("browser", at(d, 8)));
    }
    events.sort_by_key(|e| e.occurred_at);
    events
}

/// Applies `events`, advancing every customer to each of `watermarks` (after applying the
/// events up to it) and finally to [`end`]. Checks that what `apply`/`advance` return is what
/// they append to the history, and that no deadline is left at or before a watermark.
fn run(events: &[Event], watermarks: impl Iterator<Item = DateTime<Utc>>) -> States {
    let rules = Rules::default();
    let mut states = States::new();
    let mut returned: BTreeMap<String, Vec<Transition>> = BTreeMap::new();
    let mut pending = events.iter().peekable();
    for watermark in watermarks.chain(iter::once(end())) {
        while let Some(event) = pending.next_if(|e| e.occurred_at <= watermark) {
            let id = event.customer_id.to_string();
            let state = states.entry(id.clone()).or_default();
            returned
                .entry(id)
                .or_default()
                .extend(apply(state, event, &rules));
        }
        for (id, state) in &mut states {
            let fired = advance(state, watermark, &rules);
            returned.entry(id.clone()).or_default().extend(fired);
            if let Some(next) = next_deadline(state, &rules) {
                assert!(
                    next > watermark,
                    "{id}: deadline {next} left behind at {watermark}"
                );
            }
        }
    }
    assert!(
        pending.next().is_none(),
        "every scripted event is before the end"
    );
    for (id, state) in &states {
        assert_eq!(
            state.history, returned[id],
            "{id}: returned transitions = history"
        );
    }
    states
}

/// Watermarks every `step` from the start of the script up to (not including) the end.
fn every(step: TimeDelta) -> impl Iterator<Item = DateTime<Utc>> {
    iter::successors(Some(day(0)), move |w| Some(*w + step)).take_while(|w| *w < end())
}

/// See [`Summary`].
fn summary(state: &CustomerLifecycle) -> Summary<'_> {
    state
        .history
        .iter()
        .map(|t| (t.rule.as_str(), t.to, t.at))
        .collect()
}

#[test]
fn histories_match_the_habits() {
    use Stage::*;
    let states = run(&script(), iter::empty());
    let expected: [(&str, Summary<'_>); 7] = [
        ("browser", vec![(rule::FIRST_SEEN, Prospect, at(1, 8))]),
        (
            "churning",
            vec![
                (rule::FIRST_SEEN, Prospect, at(10, 10)),
                (rule::FIRST_PURCHASE, New, at(10, 10)),
                (rule::INACTIVITY_AT_RISK, AtRisk, at(38, 10)),
                (rule::INACTIVITY_CHURN, Churned, at(52, 10)),
            ],
        ),
        (
            "euro",
            vec![
                (rule::FIRST_SEEN, Prospect, at(100, 10)),
                (rule::FIRST_PURCHASE, New, at(100, 10)),
                (rule::INACTIVITY_AT_RISK, AtRisk, at(115, 10)),
                (rule::INACTIVITY_CHURN, Churned, at(129, 10)),
            ],
        ),
        (
            "loyal",
            vec![
                (rule::FIRST_SEEN, Prospect, at(0, 10)),
                (rule::FIRST_PURCHASE, New, at(0, 10)),
                (rule::HONEYMOON_END, Active, at(30, 10)),
                (rule::LOYAL_THRESHOLD, Loyal, at(56, 10)),
            ],
        ),
        (
            "one-off",
            vec![
                (rule::FIRST_SEEN, Prospect, at(5, 10)),
                (rule::FIRST_PURCHASE, New, at(5, 10)),
                (rule::INACTIVITY_AT_RISK, AtRisk, at(125, 10)),
                (rule::INACTIVITY_CHURN, Churned, at(245, 10)),
            ],
        ),
        (
            "seasonal",
            vec![
                (rule::FIRST_SEEN, Prospect, at(300, 18)),
                (rule::FIRST_PURCHASE, New, at(320, 10)),
                (rule::HONEYMOON_END, Active, at(350, 10)),
                (rule::INACTIVITY_AT_RISK, AtRisk, at(380, 10)),
                (rule::INACTIVITY_CHURN, Churned, at(420, 10)),
                (rule::WIN_BACK, Reactivated, at(685, 10)),
                (rule::REACTIVATION_REPEAT, Loyal, at(705, 10)),
            ],
        ),
        (
            "win-back",
            vec![
                (rule::FIRST_SEEN, Prospect, at(0, 10)),
                (rule::FIRST_PURCHASE, New, at(0, 10)),
                (rule::REPEAT_PURCHASE, Active, at(30, 10)),
                (rule::INACTIVITY_AT_RISK, AtRisk, at(150, 10)),
                (rule::INACTIVITY_CHURN, Churned, at(210, 10)),
                (rule::WIN_BACK, Reactivated, at(400, 10)),
                (rule::REACTIVATION_END, Active, at(430, 10)),
                (rule::INACTIVITY_AT_RISK, AtRisk, at(460, 10)),
                (rule::RETURNED, Loyal, at(470, 10)),
            ],
        ),
    ];
    assert_eq!(states.len(), expected.len());
    for (id, history) in expected {
        assert_eq!(summary(&states[id]), history, "history of {id}");
    }
    let win_back = &states["win-back"];
    assert_eq!(
        (win_back.purchases, win_back.net_revenue_minor),
        (14, 117_000)
    );
    let euro = &states["euro"];
    assert_eq!((euro.net_revenue_minor, euro.other_currency_events), (0, 2));
    // Seasonal gaps 20 and 345 days: a median of 182.5 days is what made day 685 a win-back.
    let seasonal = &states["seasonal"].history[5];
    assert_eq!(seasonal.facts["inactive_days"], "345");
}

#[test]
fn advancing_in_small_steps_gives_the_same_history_as_one_late_watermark() {
    let events = script();
    let at_once = run(&events, iter::empty());
    for step in [
        TimeDelta::days(1),
        TimeDelta::hours(7),
        TimeDelta::hours(1),
        TimeDelta::days(13),
    ] {
        let stepped = run(&events, every(step));
        assert_eq!(
            stepped.keys().collect::<Vec<_>>(),
            at_once.keys().collect::<Vec<_>>()
        );
        for (id, state) in &at_once {
            assert_eq!(&stepped[id], state, "{id} advanced every {step}");
        }
    }
}

#[test]
fn advancing_exactly_to_each_deadline_gives_the_same_history() {
    let rules = Rules::default();
    let events = script();
    let at_once = run(&events, iter::empty());
    let mut states = States::new();
    for event in &events {
        let state = states.entry(event.customer_id.to_string()).or_default();
        // Step from deadline to deadline until the event, as a projector indexing by deadline.
        while let Some(next) = next_deadline(state, &rules).filter(|d| *d <= event.occurred_at) {
            assert!(
                !advance(state, next, &rules).is_empty(),
                "a due deadline fires"
            );
        }
        apply(state, event, &rules);
    }
    for state in states.values_mut() {
        advance(state, end(), &rules);
    }
    assert_eq!(states, at_once);
}
