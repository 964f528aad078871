//! Per-customer sufficient statistics, kept incrementally from purchases and refunds.

use std::collections::BTreeMap;
use std::ops::Bound;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{ClvError, Result};
use crate::observation::{Observation, SpendObservation, TimeUnit};

/// One customer's purchase history, reduced to what the models need, fed one event at a time.
///
/// It keeps one small record per calendar day with a purchase (or a refund), because
/// out-of-order arrival must give exactly the in-order result: a purchase earlier than the
/// current first one changes which day is "first" (and so which spend leaves the repeat mean),
/// and a second purchase on an already-seen day must merge into it rather than count again.
/// Neither can be decided from running counters alone. The map stays small (one entry per
/// purchase day), is ordered, and serialises to JSON as `{"days": {"YYYY-MM-DD": {...}}}`.
///
/// Conventions (see the crate docs): purchases on the same calendar day are one transaction
/// whose amount is their sum; `frequency` counts purchase days after the first; the spend mean
/// leaves out the first day; refunds net against the day of the purchase they refund.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseSummary {
    days: BTreeMap<NaiveDate, DayTotal>,
}

/// What happened on one calendar day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct DayTotal {
    /// Purchases recorded for the day; 0 for a day that only has refunds so far.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    purchases: u32,
    /// The sum of those purchases, in minor units.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    gross_minor: i64,
    /// The sum of refunds attributed to the day's purchases, in minor units.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    refunded_minor: i64,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

impl DayTotal {
    /// What the day's transaction is worth: never below zero, so that a refund larger than the
    /// day's purchases (a mis-attributed one) cannot make a transaction's value negative.
    fn net_minor(&self) -> i64 {
        self.gross_minor.saturating_sub(self.refunded_minor).max(0)
    }
}

/// The statistics over the purchase days up to some day.
struct Stats {
    first: NaiveDate,
    last: NaiveDate,
    repeat_days: u32,
    repeat_net_minor: i64,
}

impl PurchaseSummary {
    /// A customer with no purchases yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `other`'s days to this summary, as if one customer had made both customers'
    /// purchases (two customers found to be one): the totals of a day both have are summed.
    pub fn absorb(&mut self, other: &PurchaseSummary) {
        for (day, total) in &other.days {
            let entry = self.days.entry(*day).or_default();
            entry.purchases = entry.purchases.saturating_add(total.purchases);
            entry.gross_minor = entry.gross_minor.saturating_add(total.gross_minor);
            entry.refunded_minor = entry.refunded_minor.saturating_add(total.refunded_minor);
        }
    }

    /// Records a purchase of `amount_minor` (not negative) on calendar day `day`.
    pub fn record_purchase(&mut self, day: NaiveDate, amount_minor: i64) -> Result<()> {
        if amount_minor < 0 {
            return Err(ClvError::NegativeAmount(amount_minor));
        }
        let total = self.days.entry(day).or_default();
        total.purchases = total.purchases.saturating_add(1);
        total.gross_minor = total.gross_minor.saturating_add(amount_minor);
        Ok(())
    }

    /// Records a purchase at an instant; the day is its UTC calendar date.
    ///
    /// A business that wants days in its own time zone converts first and calls
    /// [`PurchaseSummary::record_purchase`] with the local date.
    pub fn record_purchase_at(&mut self, at: DateTime<Utc>, amount_minor: i64) -> Result<()> {
        self.record_purchase(at.date_naive(), amount_minor)
    }

    /// Records a refund of `amount_minor` (not negative) of a purchase made on `purchase_day`.
    ///
    /// A refund lowers the value of the transaction it refunds (the spend model predicts what
    /// a customer's transactions are worth, and a refunded order was worth less), but it does
    /// not remove the transaction: the purchase still happened, which is what BG/NBD counts as
    /// a sign of life. A day's value never goes below zero. A refund for a day with no purchase
    /// recorded yet is kept, changes nothing, and nets against that day's purchases when they
    /// arrive, so arrival order never matters.
    pub fn record_refund(&mut self, purchase_day: NaiveDate, amount_minor: i64) -> Result<()> {
        if amount_minor < 0 {
            return Err(ClvError::NegativeAmount(amount_minor));
        }
        let total = self.days.entry(purchase_day).or_default();
        total.refunded_minor = total.refunded_minor.saturating_add(amount_minor);
        Ok(())
    }

    /// True when no purchase has been recorded.
    pub fn is_empty(&self) -> bool {
        self.stats(None).is_none()
    }

    /// The first purchase day, if any.
    pub fn first_purchase_day(&self) -> Option<NaiveDate> {
        self.stats(None).map(|s| s.first)
    }

    /// The last purchase day, if any.
    pub fn last_purchase_day(&self) -> Option<NaiveDate> {
        self.stats(None).map(|s| s.last)
    }

    /// `x`: purchase days after the first one (0 without purchases).
    pub fn frequency(&self) -> u32 {
        self.stats(None).map_or(0, |s| s.repeat_days)
    }

    /// `t_x` in days: from the first to the last purchase day; `None` without purchases.
    pub fn recency_days(&self) -> Option<i64> {
        self.stats(None).map(|s| (s.last - s.first).num_days())
    }

    /// `T` in days: from the first purchase day to the evaluation day `at`; `None` without a
    /// purchase on or before `at`.
    pub fn age_days(&self, at: NaiveDate) -> Option<i64> {
        self.stats(Some(at)).map(|s| (at - s.first).num_days())
    }

    /// The net value of all repeat purchase days (every day but the first), in minor units.
    pub fn repeat_spend_minor(&self) -> i64 {
        self.stats(None).map_or(0, |s| s.repeat_net_minor)
    }

    /// `z̄`: the mean net value of a repeat purchase day, in minor units; `None` without repeats.
    ///
    /// An estimate's input rather than an amount of money, hence a float: the exact total is
    /// [`PurchaseSummary::repeat_spend_minor`].
    pub fn mean_repeat_spend_minor(&self) -> Option<f64> {
        self.stats(None).and_then(|s| s.mean_repeat_spend_minor())
    }

    /// The BG/NBD input as of the evaluation day `at`, in `unit`.
    ///
    /// Only purchase days on or before `at` count, so a summary holding later purchases too
    /// gives the calibration-period view used to fit and test against a holdout period.
    /// `None` without a purchase on or before `at`.
    pub fn observation(&self, at: NaiveDate, unit: TimeUnit) -> Option<Observation> {
        let s = self.stats(Some(at))?;
        Some(Observation {
            frequency: s.repeat_days,
            recency: unit.from_days((s.last - s.first).num_days()),
            age: unit.from_days((at - s.first).num_days()),
        })
    }

    /// The Gamma-Gamma input as of `at` (purchase days on or before `at`); `None` without a
    /// repeat purchase day or when the repeat days' net value is zero (all refunded).
    pub fn spend_observation(&self, at: NaiveDate) -> Option<SpendObservation> {
        let s = self.stats(Some(at))?;
        let mean_spend = s.mean_repeat_spend_minor()?;
        (mean_spend > 0.0).then_some(SpendObservation {
            frequency: s.repeat_days,
            mean_spend,
        })
    }

    /// Statistics over the purchase days on or before `through` (all of them for `None`).
    ///
    /// Linear in the number of recorded days, which is small per customer; nothing is cached
    /// so that the persisted form is exactly the day map.
    fn stats(&self, through: Option<NaiveDate>) -> Option<Stats> {
        let upper = through.map_or(Bound::Unbounded, Bound::Included);
        let mut days = self
            .days
            .range((Bound::Unbounded, upper))
            .filter(|(_, total)| total.purchases > 0);
        let (&first, _) = days.next()?;
        let mut stats = Stats {
            first,
            last: first,
            repeat_days: 0,
            repeat_net_minor: 0,
        };
        for (&day, total) in days {
            stats.last = day;
            stats.repeat_days = stats.repeat_days.saturating_add(1);
            stats.repeat_net_minor = stats.repeat_net_minor.saturating_add(total.net_minor());
        }
        Some(stats)
    }
}

impl Stats {
    fn mean_repeat_spend_minor(&self) -> Option<f64> {
        // Sums of real spend are far below 2^53 minor units, so the conversion is exact.
        (self.repeat_days > 0).then(|| self.repeat_net_minor as f64 / f64::from(self.repeat_days))
    }
}
