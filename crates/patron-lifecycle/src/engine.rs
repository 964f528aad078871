//! The engine: folds events and watermarks into a customer's stage history.
//!
//! Two kinds of rules move a customer. Event-driven rules fire when [`apply`] folds an event in
//! (a first event, a purchase). Time-driven rules fire because *no* purchase came: each has a
//! deadline computed from the state alone (honeymoon end, reactivation window end, inactivity
//! reaching a multiple of the customer's usual gap). [`advance`] fires every deadline up to a
//! watermark, earliest first, each stamped at its own deadline; [`apply`] first advances to the
//! event's time. Because deadlines depend on the state and not on when anyone looked, one late
//! watermark and many small ones give the same history.
//!
//! [`settle`] is for a projector that replaces a customer's facts wholesale (customers merged or
//! split): it enters the stage the new facts imply, under the rule the projector names.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use patron_domain::{Event, EventBody};

use crate::rule;
use crate::rules::{DAY_SECONDS, Rules};
use crate::stage::Stage;
use crate::state::{CustomerLifecycle, Transition};

/// A time-driven rule whose deadline is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// Inactivity reaches the at-risk multiple.
    AtRisk,
    /// Inactivity reaches the churn multiple.
    Churn,
    /// The honeymoon of a repeat buyer ends.
    HoneymoonEnd,
    /// The reactivation window ends.
    ReactivationEnd,
    /// Probability alive falls below the at-risk threshold.
    PAliveAtRisk,
    /// Probability alive falls below the churn threshold.
    PAliveChurn,
}

/// More time-driven steps than any state can take in a row (the longest chain is
/// new → active → at_risk → churned); the bound only guards against a hand-edited state.
const MAX_STEPS: usize = 8;

/// Applies one event of the customer: first fires the time-driven transitions due at or before
/// the event's time, then the event's own. Returns the transitions, also appended to the history.
///
/// Events are applied in arrival order. A late event (earlier than transitions already made) is
/// still counted; any transition it causes is stamped no earlier than the current stage began,
/// and a late purchase brings an at-risk, churned or reactivated customer back only if, counted,
/// it leaves the customer short of the at-risk threshold at that stamp.
pub fn apply(state: &mut CustomerLifecycle, event: &Event, rules: &Rules) -> Vec<Transition> {
    let occurred_at = event.occurred_at;
    let mut fired = advance(state, occurred_at, rules);
    if state.stage.is_none() {
        let mut facts = BTreeMap::new();
        fact(&mut facts, "event_type", event.event_type());
        fired.push(state.enter(Stage::Prospect, occurred_at, rule::FIRST_SEEN, facts));
    }
    match &event.body {
        EventBody::Purchase(purchase) => {
            state.add_value(purchase.amount, 1, rules);
            fired.extend(on_purchase(state, occurred_at, rules));
        }
        EventBody::Refund(refund) => state.add_value(refund.amount, -1, rules),
        _ => {}
    }
    state.last_event_at = Some(
        state
            .last_event_at
            .map_or(occurred_at, |t| t.max(occurred_at)),
    );
    fired
}

/// Fires, earliest first, every time-driven transition whose deadline is at or before
/// `watermark`, each stamped at its deadline. Returns them, also appended to the history.
pub fn advance(
    state: &mut CustomerLifecycle,
    watermark: DateTime<Utc>,
    rules: &Rules,
) -> Vec<Transition> {
    let mut fired = Vec::new();
    for _ in 0..MAX_STEPS {
        match next_due(state, rules) {
            Some((deadline, due)) if deadline <= watermark => {
                fired.push(fire(state, due, deadline, rules));
            }
            _ => break,
        }
    }
    fired
}

/// When the next time-driven transition falls due (`advance` to this instant fires it), or
/// `None` if only an event can move the customer.
pub fn next_deadline(state: &CustomerLifecycle, rules: &Rules) -> Option<DateTime<Utc>> {
    next_due(state, rules).map(|(deadline, _)| deadline)
}

/// Puts the customer in the stage its facts imply at `at`, when that is not its current stage:
/// enters it, stamped `state.clock(at)`, with `rule` and `facts`, and returns the transition
/// (also appended to the history). For a projector that has just replaced the facts wholesale
/// (customers merged or split, see [`crate::rule::MERGE`]), where no single event explains the
/// stage.
///
/// The implied stage, in order: no purchase → `prospect`; a probability-alive crossing at or
/// before `at` (churn first), or without a schedule inactivity since the last purchase reaching
/// the churn or at-risk multiple of the usual gap → `churned` or `at_risk`; fewer than
/// `active_min_orders` orders or still inside the honeymoon → `new`; otherwise `loyal` if orders
/// and net revenue reach the tier, else `active`. A `reactivated` customer whose implied stage
/// is `active` or `loyal` stays `reactivated` (its window ends by the usual rule). A state that
/// has never seen an event (no stage, no event time) is left alone.
///
/// The implied stage has no time-driven deadline at or before `at`, except a reactivation
/// window already over, which the next [`advance`] fires.
pub fn settle(
    state: &mut CustomerLifecycle,
    at: DateTime<Utc>,
    rule: &str,
    facts: BTreeMap<String, String>,
    rules: &Rules,
) -> Option<Transition> {
    if state.stage.is_none() && state.last_event_at.is_none() {
        return None;
    }
    let to = match (state.stage, implied_stage(state, at, rules)) {
        (Some(Stage::Reactivated), Stage::Active | Stage::Loyal) => Stage::Reactivated,
        (_, implied) => implied,
    };
    if state.stage == Some(to) {
        return None;
    }
    let now = state.clock(at);
    Some(state.enter(to, now, rule, facts))
}

/// The stage the facts of `state` imply at `at`, see [`settle`].
fn implied_stage(state: &CustomerLifecycle, at: DateTime<Utc>, rules: &Rules) -> Stage {
    if state.purchases == 0 || state.last_purchase_at.is_none() {
        return Stage::Prospect;
    }
    let passed = |deadline: Option<DateTime<Utc>>| deadline.is_some_and(|d| d <= at);
    let (churned, at_risk) = match &state.p_alive {
        Some(schedule) => (
            passed(schedule.churn.as_ref().map(|crossing| crossing.at)),
            passed(schedule.at_risk.as_ref().map(|crossing| crossing.at)),
        ),
        None => (
            passed(inactivity_deadline(
                state,
                rules.churn_gap_multiple_percent,
                rules,
            )),
            passed(inactivity_deadline(
                state,
                rules.at_risk_gap_multiple_percent,
                rules,
            )),
        ),
    };
    if churned {
        return Stage::Churned;
    }
    if at_risk {
        return Stage::AtRisk;
    }
    let in_honeymoon = !passed(honeymoon_end(state, rules));
    if !state.has_orders(rules.active_min_orders) || in_honeymoon {
        Stage::New
    } else if state.qualifies_loyal(rules) {
        Stage::Loyal
    } else {
        Stage::Active
    }
}

/// The earliest pending time-driven rule; at equal deadlines inactivity (or probability alive)
/// wins. While a probability-alive schedule is set, its crossings replace the inactivity rules.
fn next_due(state: &CustomerLifecycle, rules: &Rules) -> Option<(DateTime<Utc>, Due)> {
    let schedule = state.p_alive.as_ref();
    let at_risk = || match schedule {
        Some(schedule) => schedule
            .at_risk
            .as_ref()
            .map(|crossing| (crossing.at, Due::PAliveAtRisk)),
        None => inactivity_deadline(state, rules.at_risk_gap_multiple_percent, rules)
            .map(|deadline| (deadline, Due::AtRisk)),
    };
    let churn = || match schedule {
        Some(schedule) => schedule
            .churn
            .as_ref()
            .map(|crossing| (crossing.at, Due::PAliveChurn)),
        None => inactivity_deadline(state, rules.churn_gap_multiple_percent, rules)
            .map(|deadline| (deadline, Due::Churn)),
    };
    let repeat = state.has_orders(rules.active_min_orders);
    match state.stage? {
        Stage::Prospect | Stage::Churned => None,
        Stage::Active | Stage::Loyal => at_risk(),
        Stage::AtRisk => churn(),
        Stage::New => {
            let end = honeymoon_end(state, rules).filter(|_| repeat);
            earliest(at_risk(), end.map(|deadline| (deadline, Due::HoneymoonEnd)))
        }
        Stage::Reactivated => {
            let end = state
                .since
                .and_then(|since| after(since, Rules::days_seconds(rules.reactivated_days)))
                .filter(|_| repeat);
            earliest(
                at_risk(),
                end.map(|deadline| (deadline, Due::ReactivationEnd)),
            )
        }
    }
}

/// The earlier of two pending rules, preferring the first at a tie.
fn earliest(
    first: Option<(DateTime<Utc>, Due)>,
    second: Option<(DateTime<Utc>, Due)>,
) -> Option<(DateTime<Utc>, Due)> {
    match (first, second) {
        (Some(a), Some(b)) if b.0 < a.0 => Some(b),
        (a, b) => a.or(b),
    }
}

/// Fires one time-driven rule that fell due at `deadline`.
fn fire(
    state: &mut CustomerLifecycle,
    due: Due,
    deadline: DateTime<Utc>,
    rules: &Rules,
) -> Transition {
    let at = state.clock(deadline);
    let mut facts = BTreeMap::new();
    let (to, rule) = match due {
        Due::AtRisk => {
            inactivity_facts(
                state,
                at,
                rules.at_risk_gap_multiple_percent,
                rules,
                &mut facts,
            );
            (Stage::AtRisk, rule::INACTIVITY_AT_RISK)
        }
        Due::Churn => {
            inactivity_facts(
                state,
                at,
                rules.churn_gap_multiple_percent,
                rules,
                &mut facts,
            );
            (Stage::Churned, rule::INACTIVITY_CHURN)
        }
        Due::HoneymoonEnd => {
            fact(&mut facts, "honeymoon_days", rules.honeymoon_days);
            (settled(state, rules, &mut facts), rule::HONEYMOON_END)
        }
        Due::ReactivationEnd => {
            fact(&mut facts, "reactivated_days", rules.reactivated_days);
            (settled(state, rules, &mut facts), rule::REACTIVATION_END)
        }
        Due::PAliveAtRisk => {
            p_alive_facts(state, rules.p_alive_at_risk_percent, false, &mut facts);
            (Stage::AtRisk, rule::P_ALIVE_AT_RISK)
        }
        Due::PAliveChurn => {
            p_alive_facts(state, rules.p_alive_churn_percent, true, &mut facts);
            (Stage::Churned, rule::P_ALIVE_CHURN)
        }
    };
    if at > deadline {
        fact(&mut facts, "deadline", rfc3339(deadline));
    }
    state.enter(to, at, rule, facts)
}

/// Counts a purchase made at `occurred_at` and makes the transition it causes, if any.
fn on_purchase(
    state: &mut CustomerLifecycle,
    occurred_at: DateTime<Utc>,
    rules: &Rules,
) -> Option<Transition> {
    let previous = state.last_purchase_at;
    state.record_purchase(occurred_at);
    let now = state.clock(occurred_at);
    let mut facts = BTreeMap::new();
    if now > occurred_at {
        fact(&mut facts, "event_occurred_at", rfc3339(occurred_at));
    }
    let recent = || {
        inactivity_deadline(state, rules.at_risk_gap_multiple_percent, rules)
            .is_some_and(|deadline| deadline > now)
    };
    if let Some(previous) = previous {
        fact(&mut facts, "inactive_days", days(occurred_at - previous));
    }
    let (to, rule) = match state.stage? {
        Stage::Prospect => {
            facts.remove("inactive_days");
            fact(&mut facts, "orders", state.purchases);
            fact(&mut facts, "honeymoon_days", rules.honeymoon_days);
            (Stage::New, rule::FIRST_PURCHASE)
        }
        Stage::New => {
            let past_honeymoon = honeymoon_end(state, rules).is_some_and(|end| now >= end);
            if !past_honeymoon || !state.has_orders(rules.active_min_orders) {
                return None;
            }
            fact(&mut facts, "honeymoon_days", rules.honeymoon_days);
            (settled(state, rules, &mut facts), rule::REPEAT_PURCHASE)
        }
        Stage::Active if state.qualifies_loyal(rules) => {
            (settled(state, rules, &mut facts), rule::LOYAL_THRESHOLD)
        }
        Stage::AtRisk if recent() => (settled(state, rules, &mut facts), rule::RETURNED),
        Stage::Churned if recent() => {
            fact(&mut facts, "orders", state.purchases);
            (Stage::Reactivated, rule::WIN_BACK)
        }
        Stage::Reactivated if recent() => {
            (settled(state, rules, &mut facts), rule::REACTIVATION_REPEAT)
        }
        Stage::Active | Stage::Loyal | Stage::AtRisk | Stage::Churned | Stage::Reactivated => {
            return None;
        }
    };
    Some(state.enter(to, now, rule, facts))
}

/// Where a repeat buyer settles: `loyal` when orders and net revenue reach the tier, otherwise
/// `active`. Records the value facts behind the choice.
fn settled(
    state: &CustomerLifecycle,
    rules: &Rules,
    facts: &mut BTreeMap<String, String>,
) -> Stage {
    fact(facts, "orders", state.purchases);
    fact(facts, "net_revenue_minor", state.net_revenue_minor);
    fact(facts, "currency", &rules.currency);
    if state.qualifies_loyal(rules) {
        fact(facts, "loyal_min_orders", rules.loyal_min_orders);
        fact(
            facts,
            "loyal_min_net_revenue_minor",
            rules.loyal_min_net_revenue_minor,
        );
        Stage::Loyal
    } else {
        fact(facts, "active_min_orders", rules.active_min_orders);
        Stage::Active
    }
}

/// When the honeymoon after the first purchase ends.
fn honeymoon_end(state: &CustomerLifecycle, rules: &Rules) -> Option<DateTime<Utc>> {
    after(
        state.first_purchase_at?,
        Rules::days_seconds(rules.honeymoon_days),
    )
}

/// Inactivity (since the last purchase) that reaches `percent` of the usual gap, in seconds.
fn inactivity_threshold(state: &CustomerLifecycle, percent: i64, rules: &Rules) -> i64 {
    state.usual_gap(rules).seconds.saturating_mul(percent) / 100
}

/// When inactivity reaches `percent` of the usual gap; `None` before any purchase.
fn inactivity_deadline(
    state: &CustomerLifecycle,
    percent: i64,
    rules: &Rules,
) -> Option<DateTime<Utc>> {
    after(
        state.last_purchase_at?,
        inactivity_threshold(state, percent, rules),
    )
}

/// Records the numbers behind an inactivity rule evaluated at `at`.
fn inactivity_facts(
    state: &CustomerLifecycle,
    at: DateTime<Utc>,
    percent: i64,
    rules: &Rules,
    facts: &mut BTreeMap<String, String>,
) {
    let gap = state.usual_gap(rules);
    if let Some(last) = state.last_purchase_at {
        fact(facts, "inactive_days", days(at - last));
        fact(facts, "last_purchase_at", rfc3339(last));
    }
    let threshold = inactivity_threshold(state, percent, rules);
    fact(facts, "threshold_days", days_of_seconds(threshold));
    fact(facts, "gap_days", days_of_seconds(gap.seconds));
    fact(facts, "gap_source", gap.source);
    fact(facts, "gaps", gap.gaps);
    fact(facts, "multiple_percent", percent);
}

/// Records the numbers behind a probability-alive rule: the probability at the crossing, the
/// threshold (a fraction) and the model version.
fn p_alive_facts(
    state: &CustomerLifecycle,
    percent: i64,
    churn: bool,
    facts: &mut BTreeMap<String, String>,
) {
    if let Some(schedule) = &state.p_alive {
        let crossing = if churn {
            &schedule.churn
        } else {
            &schedule.at_risk
        };
        if let Some(crossing) = crossing {
            fact(facts, "p_alive", &crossing.p_alive);
        }
        fact(facts, "model_version", schedule.model_version);
    }
    fact(facts, "threshold", format!("0.{percent:02}"));
    if let Some(last) = state.last_purchase_at {
        fact(facts, "last_purchase_at", rfc3339(last));
    }
}

/// `t` plus `seconds`, or `None` past the end of representable time (a deadline never reached).
fn after(t: DateTime<Utc>, seconds: i64) -> Option<DateTime<Utc>> {
    t.checked_add_signed(TimeDelta::try_seconds(seconds)?)
}

/// Inserts one fact.
fn fact(facts: &mut BTreeMap<String, String>, key: &str, value: impl ToString) {
    facts.insert(key.to_owned(), value.to_string());
}

/// A duration as days: `90` when whole, else with two (truncated) decimals, e.g. `1.50`.
fn days(duration: TimeDelta) -> String {
    days_of_seconds(duration.num_seconds())
}

/// See [`days`].
fn days_of_seconds(seconds: i64) -> String {
    let (whole, rest) = (seconds / DAY_SECONDS, seconds % DAY_SECONDS);
    if rest == 0 {
        return whole.to_string();
    }
    let sign = if seconds < 0 && whole == 0 { "-" } else { "" };
    format!("{sign}{whole}.{:02}", rest.abs() * 100 / DAY_SECONDS)
}

/// A time as RFC 3339 in UTC, to the second.
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}
