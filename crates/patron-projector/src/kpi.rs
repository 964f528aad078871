//! Population KPIs as counters: every KPI is a sum over customers and events, so it is kept as
//! `(metric, period, dim1, dim2) → value` rows that a batch changes by deltas.
//!
//! Two kinds of contribution, both exact under replay and whatever the batch boundaries:
//! - *event-driven*: counted once when something happens (a stage transition, a survey answer,
//!   an acquisition), in the period of its event time;
//! - *state-driven*: what a customer's current view contributes (cohort membership, activity,
//!   churned-ness, revenue by current tier). A batch writes `contributions(after) −
//!   contributions(before)` for every customer it changed, so late events and tier changes move
//!   counts instead of double-counting them.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};
use patron_domain::{Currency, Event, EventBody};
use patron_lifecycle::{Stage, Transition};
use serde::{Deserialize, Serialize};

use crate::projection::CustomerView;

/// Stage-to-stage moves per day: period = day, dim1 = from stage (`none` for the first), dim2 =
/// to stage. Stage distribution on a day is the running sum of entries minus exits. A customer
/// merged into another leaves the counts (a move from its stage to `none`: the merged customer
/// is counted once, as the one it was merged into) and one split off again re-enters them (a
/// move from `none` to its stage).
pub const STAGE_FLOW: &str = "stage_flow";
/// Customers whose first purchase fell in a month: period = cohort month.
pub const COHORT_SIZE: &str = "cohort_size";
/// Cohort customers who bought in a month: period = activity month, dim1 = cohort month.
pub const COHORT_ACTIVE: &str = "cohort_active";
/// Cohort customers whose current stage is churned: period = cohort month.
pub const COHORT_CHURNED: &str = "cohort_churned";
/// NPS answers: period = month, dim1 = stage at answer time, dim2 = promoter/passive/detractor.
pub const NPS: &str = "nps";
/// CSAT answers: period = month, dim1 = stage at answer time, dim2 = the score 1–5.
pub const CSAT: &str = "csat";
/// Acquired customers: period = month, dim1 = acquisition channel.
pub const ACQUIRED: &str = "acquired";
/// Acquisition cost in minor units of the reporting currency: period = month, dim1 = channel.
pub const ACQUISITION_COST: &str = "acquisition_cost_minor";
/// Net revenue in minor units of the reporting currency: period = month of the purchase or
/// refund, dim1 = the customer's current value tier (`none` before the first scoring).
pub const REVENUE: &str = "revenue_minor";

/// One KPI counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KpiKey {
    /// Which KPI, one of the constants of this module.
    pub metric: &'static str,
    /// `YYYY-MM-DD` (daily metrics) or `YYYY-MM` (monthly metrics), in UTC.
    pub period: String,
    /// First dimension (metric-specific; empty when unused).
    pub dim1: String,
    /// Second dimension (metric-specific; empty when unused).
    pub dim2: String,
}

impl KpiKey {
    fn new(metric: &'static str, period: String, dim1: &str, dim2: &str) -> Self {
        Self {
            metric,
            period,
            dim1: dim1.to_owned(),
            dim2: dim2.to_owned(),
        }
    }
}

/// Per-customer facts the state-driven KPIs need beyond the lifecycle and value views.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CustomerKpi {
    /// Per month (as `year * 100 + month`, e.g. 202511) with purchase or refund activity:
    /// purchases and net revenue.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub months: BTreeMap<i32, MonthActivity>,
}

impl CustomerKpi {
    /// The activity of several customers taken as one's: purchases and net revenue summed per
    /// month (saturating).
    pub fn combine<'a>(parts: impl IntoIterator<Item = &'a CustomerKpi>) -> CustomerKpi {
        let mut months: BTreeMap<i32, MonthActivity> = BTreeMap::new();
        for part in parts {
            for (month, activity) in &part.months {
                let entry = months.entry(*month).or_default();
                entry.purchases = entry.purchases.saturating_add(activity.purchases);
                entry.net_minor = entry.net_minor.saturating_add(activity.net_minor);
            }
        }
        CustomerKpi { months }
    }
}

/// One customer's activity in one month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MonthActivity {
    /// Purchases in the reporting currency.
    pub purchases: u64,
    /// Purchases minus refunds, in minor units of the reporting currency.
    pub net_minor: i64,
}

/// `YYYY-MM-DD` of a time, in UTC.
pub fn day(at: DateTime<Utc>) -> String {
    format!("{:04}-{:02}-{:02}", at.year(), at.month(), at.day())
}

/// `YYYY-MM` of a time, in UTC.
pub fn month(at: DateTime<Utc>) -> String {
    month_text(month_key(at))
}

/// A month as a number, `year * 100 + month` (cheap to compute and compare).
pub fn month_key(at: DateTime<Utc>) -> i32 {
    at.year() * 100 + i32::try_from(at.month()).unwrap_or(0)
}

/// `YYYY-MM` of a [`month_key`].
pub fn month_text(key: i32) -> String {
    format!("{:04}-{:02}", key / 100, key % 100)
}

/// Folds a customer event into the customer's KPI facts (purchases and refunds by month).
pub(crate) fn apply_state(kpi: &mut CustomerKpi, event: &Event, currency: Currency) {
    let (amount, sign, purchase) = match &event.body {
        EventBody::Purchase(p) => (p.amount, 1, true),
        EventBody::Refund(r) => (r.amount, -1, false),
        _ => return,
    };
    if amount.currency != currency {
        return;
    }
    let entry = kpi.months.entry(month_key(event.occurred_at)).or_default();
    entry.purchases = entry.purchases.saturating_add(u64::from(purchase));
    entry.net_minor = entry
        .net_minor
        .saturating_add(amount.minor_units.saturating_mul(sign));
}

/// The event-driven counters one customer event adds (`stage` is the customer's stage after it).
pub(crate) fn event_counters(
    event: &Event,
    stage: Option<Stage>,
    currency: Currency,
    out: &mut BTreeMap<KpiKey, i64>,
) {
    let stage = stage.map_or("none", Stage::as_str);
    match &event.body {
        EventBody::Feedback(feedback) => {
            let period = month(event.occurred_at);
            if let Some(nps) = feedback.nps {
                let bucket = match nps {
                    9.. => "promoter",
                    7..=8 => "passive",
                    _ => "detractor",
                };
                add(out, KpiKey::new(NPS, period.clone(), stage, bucket), 1);
            }
            if let Some(csat) = feedback.csat {
                add(out, KpiKey::new(CSAT, period, stage, &csat.to_string()), 1);
            }
        }
        EventBody::Acquired(acquired) => {
            let period = month(event.occurred_at);
            let channel = acquired.channel.as_str();
            add(out, KpiKey::new(ACQUIRED, period.clone(), channel, ""), 1);
            if let Some(cost) = acquired.cost.filter(|cost| cost.currency == currency) {
                let key = KpiKey::new(ACQUISITION_COST, period, channel, "");
                add(out, key, cost.minor_units);
            }
        }
        _ => {}
    }
}

/// The counter a lifecycle transition adds.
pub(crate) fn transition_counter(transition: &Transition, out: &mut BTreeMap<KpiKey, i64>) {
    let from = transition.from.map_or("none", Stage::as_str);
    let key = KpiKey::new(STAGE_FLOW, day(transition.at), from, transition.to.as_str());
    add(out, key, 1);
}

/// Takes back the counter of a transition that a correction retracted.
pub(crate) fn retract_transition(transition: &Transition, out: &mut BTreeMap<KpiKey, i64>) {
    let from = transition.from.map_or("none", Stage::as_str);
    let key = KpiKey::new(STAGE_FLOW, day(transition.at), from, transition.to.as_str());
    add(out, key, -1);
}

/// The counter a customer merged into another adds: it leaves its stage (see [`STAGE_FLOW`]).
pub(crate) fn stage_exit(stage: Stage, at: DateTime<Utc>, out: &mut BTreeMap<KpiKey, i64>) {
    add(
        out,
        KpiKey::new(STAGE_FLOW, day(at), stage.as_str(), "none"),
        1,
    );
}

/// The counter a customer split off a merge adds: it re-enters its stage (see [`STAGE_FLOW`]).
pub(crate) fn stage_entry(stage: Stage, at: DateTime<Utc>, out: &mut BTreeMap<KpiKey, i64>) {
    add(
        out,
        KpiKey::new(STAGE_FLOW, day(at), "none", stage.as_str()),
        1,
    );
}

/// What a customer's current view contributes to the state-driven counters: nothing for a
/// customer merged into another (the one it was merged into counts its activity).
pub(crate) fn state_contributions(view: &CustomerView) -> Vec<(KpiKey, i64)> {
    let mut out = Vec::new();
    if view.merged_into.is_some() {
        return out;
    }
    let tier = view
        .scores
        .as_ref()
        .and_then(|scores| scores.tier)
        .map_or("none", |tier| tier.as_str());
    for (period, activity) in &view.kpi.months {
        if activity.net_minor != 0 {
            out.push((
                KpiKey::new(REVENUE, month_text(*period), tier, ""),
                activity.net_minor,
            ));
        }
    }
    if let Some(first) = view.value.first_purchase_at {
        let cohort = month(first);
        out.push((KpiKey::new(COHORT_SIZE, cohort.clone(), "", ""), 1));
        for (period, activity) in &view.kpi.months {
            if activity.purchases > 0 {
                out.push((
                    KpiKey::new(COHORT_ACTIVE, month_text(*period), &cohort, ""),
                    1,
                ));
            }
        }
        if view.lifecycle.stage == Some(Stage::Churned) {
            out.push((KpiKey::new(COHORT_CHURNED, cohort, "", ""), 1));
        }
    }
    out
}

/// Adds `value` to a counter.
pub(crate) fn add(out: &mut BTreeMap<KpiKey, i64>, key: KpiKey, value: i64) {
    let slot = out.entry(key).or_insert(0);
    *slot = slot.saturating_add(value);
}
