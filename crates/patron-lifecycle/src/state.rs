//! The lifecycle state of one customer: plain data that a projector persists between events.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use patron_domain::Money;
use serde::{Deserialize, Serialize};

use crate::rules::Rules;
use crate::stage::Stage;

/// How many gaps between purchases are kept to compute a customer's usual (median) gap.
pub const MAX_GAPS: usize = 32;

/// One stage change, with the rule that made it and the numbers that rule used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The stage left; `None` for the customer's first stage.
    pub from: Option<Stage>,
    /// The stage entered.
    pub to: Stage,
    /// When, in event time: the event's time, or the deadline of a time-driven rule.
    pub at: DateTime<Utc>,
    /// The rule that fired, one of [`crate::rule`].
    pub rule: String,
    /// The numbers the rule used, e.g. `inactive_days` and `threshold_days`.
    pub facts: BTreeMap<String, String>,
}

/// What the engine knows about one customer's lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CustomerLifecycle {
    /// The current stage; `None` until the customer's first event.
    pub stage: Option<Stage>,
    /// When the current stage was entered; `None` until the customer's first event.
    pub since: Option<DateTime<Utc>>,
    /// Purchases, in any currency.
    pub purchases: u64,
    /// Purchases minus refunds in the rules' currency, in minor units.
    pub net_revenue_minor: i64,
    /// Purchases and refunds in other currencies, which `net_revenue_minor` leaves out.
    pub other_currency_events: u64,
    /// The earliest purchase.
    pub first_purchase_at: Option<DateTime<Utc>>,
    /// The latest purchase.
    pub last_purchase_at: Option<DateTime<Utc>>,
    /// The latest purchase times, ascending: at most [`MAX_GAPS`] + 1, for the median gap.
    pub recent_purchases: Vec<DateTime<Utc>>,
    /// The latest `occurred_at` of any event applied.
    pub last_event_at: Option<DateTime<Utc>>,
    /// When a fitted model's probability alive falls below the thresholds, computed by the
    /// projector from the customer's purchases and the latest model; `Some` only while the
    /// probability-alive rules govern this customer (they replace the inactivity rules then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_alive: Option<PAliveSchedule>,
    /// The stage changes not yet forgotten, oldest first: the engine appends every change here;
    /// a projector that has recorded them elsewhere forgets them
    /// ([`CustomerLifecycle::forget_history`]), so memory does not grow with a customer's age.
    /// (Omitted from the serialised form when empty.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Transition>,
    /// How many stage changes came before `history` (forgotten): the customer's whole history
    /// is `forgotten + history.len()` long ([`CustomerLifecycle::transitions`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub forgotten: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// When a customer's probability alive (under one fitted model, for its current purchases)
/// falls below each threshold. Probability alive only falls while no purchase comes, so each
/// crossing is a deadline like an inactivity one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PAliveSchedule {
    /// The model version the probabilities come from.
    pub model_version: i64,
    /// Falling below `p_alive_at_risk_percent`; `None` if it never does (within 100 years).
    pub at_risk: Option<PAliveCrossing>,
    /// Falling below `p_alive_churn_percent`; `None` if it never does (within 100 years).
    pub churn: Option<PAliveCrossing>,
}

/// The first instant a customer's probability alive is below a threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PAliveCrossing {
    /// When: a UTC midnight (ages are whole days), or the model's (or purchase's) own time if
    /// the probability was already below then.
    pub at: DateTime<Utc>,
    /// The probability alive at `at`, as text (four decimals), for the transition's facts.
    pub p_alive: String,
}

/// A customer's usual gap between purchases, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UsualGap {
    /// The gap, in seconds (always positive for valid rules).
    pub(crate) seconds: i64,
    /// `median`, `minimum` (the median was below `min_gap_days`) or `default` (too few purchases).
    pub(crate) source: &'static str,
    /// How many gaps the median was taken over.
    pub(crate) gaps: usize,
}

impl CustomerLifecycle {
    /// A customer the engine has not seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many stage changes the customer has had, forgotten ones included: the index the
    /// next one will have.
    pub fn transitions(&self) -> usize {
        usize::try_from(self.forgotten)
            .unwrap_or(usize::MAX)
            .saturating_add(self.history.len())
    }

    /// Drops the stage changes held in `history`, counting them in `forgotten`.
    pub fn forget_history(&mut self) {
        self.forgotten = u64::try_from(self.transitions()).unwrap_or(u64::MAX);
        self.history.clear();
    }

    /// Replaces the facts (purchases, net revenue, other-currency events, first and last
    /// purchase, recent purchases and last event time) by those of `parts` taken together, as if
    /// one customer had had all their events: counts and sums are added (saturating), the first
    /// purchase is the earliest, the last purchase and last event the latest, and the recent
    /// purchases are the latest [`MAX_GAPS`] + 1 of all. Stage, history and probability-alive
    /// schedule are kept (see [`crate::settle`] for the stage the new facts imply). The result
    /// does not depend on the order of `parts`.
    pub fn combine_facts<'a>(&mut self, parts: impl IntoIterator<Item = &'a CustomerLifecycle>) {
        let mut purchases = 0_u64;
        let mut net_revenue_minor = 0_i64;
        let mut other_currency_events = 0_u64;
        let mut first_purchase_at: Option<DateTime<Utc>> = None;
        let mut last_purchase_at: Option<DateTime<Utc>> = None;
        let mut last_event_at: Option<DateTime<Utc>> = None;
        let mut recent_purchases = Vec::new();
        for part in parts {
            purchases = purchases.saturating_add(part.purchases);
            net_revenue_minor = net_revenue_minor.saturating_add(part.net_revenue_minor);
            other_currency_events =
                other_currency_events.saturating_add(part.other_currency_events);
            first_purchase_at = earliest(first_purchase_at, part.first_purchase_at);
            last_purchase_at = last_purchase_at.max(part.last_purchase_at);
            last_event_at = last_event_at.max(part.last_event_at);
            recent_purchases.extend_from_slice(&part.recent_purchases);
        }
        recent_purchases.sort_unstable();
        let excess = recent_purchases.len().saturating_sub(MAX_GAPS + 1);
        recent_purchases.drain(..excess);
        self.purchases = purchases;
        self.net_revenue_minor = net_revenue_minor;
        self.other_currency_events = other_currency_events;
        self.first_purchase_at = first_purchase_at;
        self.last_purchase_at = last_purchase_at;
        self.recent_purchases = recent_purchases;
        self.last_event_at = last_event_at;
    }

    /// The median of the kept gaps between purchases, in seconds; `None` with fewer than two.
    pub fn median_gap_seconds(&self) -> Option<i64> {
        // Called for nearly every event: the gaps go on the stack unless a state holds more than
        // are ever kept.
        let count = self.recent_purchases.len().saturating_sub(1);
        let mut stack = [0i64; MAX_GAPS];
        let mut heap = Vec::new();
        let gaps: &mut [i64] = if count <= MAX_GAPS {
            &mut stack[..count]
        } else {
            heap.resize(count, 0);
            &mut heap
        };
        for (gap, pair) in gaps.iter_mut().zip(self.recent_purchases.windows(2)) {
            *gap = (pair[1] - pair[0]).num_seconds();
        }
        gaps.sort_unstable();
        let mid = gaps.len() / 2;
        match gaps.len() {
            0 => None,
            n if n % 2 == 1 => Some(gaps[mid]),
            // Both are non-negative, so this cannot overflow.
            _ => Some(gaps[mid - 1] + (gaps[mid] - gaps[mid - 1]) / 2),
        }
    }

    /// The gap that inactivity is measured against.
    pub(crate) fn usual_gap(&self, rules: &Rules) -> UsualGap {
        let gaps = self.recent_purchases.len().saturating_sub(1);
        let minimum = Rules::days_seconds(rules.min_gap_days);
        match self.median_gap_seconds() {
            None => UsualGap {
                seconds: Rules::days_seconds(rules.default_gap_days),
                source: "default",
                gaps,
            },
            Some(median) if median < minimum => UsualGap {
                seconds: minimum,
                source: "minimum",
                gaps,
            },
            Some(median) => UsualGap {
                seconds: median,
                source: "median",
                gaps,
            },
        }
    }

    /// Whether the customer has at least `orders` purchases.
    pub(crate) fn has_orders(&self, orders: i64) -> bool {
        u64::try_from(orders).is_ok_and(|orders| self.purchases >= orders)
    }

    /// Whether orders and net revenue reach the loyal tier.
    pub(crate) fn qualifies_loyal(&self, rules: &Rules) -> bool {
        self.has_orders(rules.loyal_min_orders)
            && self.net_revenue_minor >= rules.loyal_min_net_revenue_minor
    }

    /// The time a transition triggered at `t` is stamped with: never before the current stage
    /// began, so that a late event cannot make the history run backwards.
    pub(crate) fn clock(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        self.since.map_or(t, |since| since.max(t))
    }

    /// Adds (`sign` 1) or subtracts (`sign` -1) an amount: to net revenue in the rules'
    /// currency, otherwise only to the count of other-currency events.
    pub(crate) fn add_value(&mut self, amount: Money, sign: i64, rules: &Rules) {
        if rules.counts(amount.currency) {
            let delta = amount.minor_units.saturating_mul(sign);
            self.net_revenue_minor = self.net_revenue_minor.saturating_add(delta);
        } else {
            self.other_currency_events = self.other_currency_events.saturating_add(1);
        }
    }

    /// Counts a purchase made at `at` (possibly earlier than ones already counted).
    pub(crate) fn record_purchase(&mut self, at: DateTime<Utc>) {
        self.purchases = self.purchases.saturating_add(1);
        self.first_purchase_at = Some(self.first_purchase_at.map_or(at, |t| t.min(at)));
        self.last_purchase_at = Some(self.last_purchase_at.map_or(at, |t| t.max(at)));
        let index = self.recent_purchases.partition_point(|t| *t <= at);
        self.recent_purchases.insert(index, at);
        let excess = self.recent_purchases.len().saturating_sub(MAX_GAPS + 1);
        self.recent_purchases.drain(..excess);
    }

    /// Moves to `to` at `at`, records the transition in the history and returns it.
    pub(crate) fn enter(
        &mut self,
        to: Stage,
        at: DateTime<Utc>,
        rule: &str,
        facts: BTreeMap<String, String>,
    ) -> Transition {
        let transition = Transition {
            from: self.stage,
            to,
            at,
            rule: rule.to_owned(),
            facts,
        };
        self.stage = Some(to);
        self.since = Some(at);
        self.history.push(transition.clone());
        transition
    }
}

/// The earlier of two optional times (`None` is no time, not the earliest).
fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
