//! The value of one customer: plain data that a projector folds events into and persists.

use chrono::{DateTime, Utc};
use patron_domain::{Currency, Event, EventBody, Money};
use serde::{Deserialize, Serialize};

use crate::rfm::RfmInput;

/// What one customer is worth, in the reporting currency, from its purchases and refunds.
///
/// Only purchases and refunds in the reporting currency count (orders, amounts and purchase
/// dates alike); those in any other currency are left out and only counted in
/// `other_currency_events`, so that every figure here is about the same set of orders. Sums
/// saturate at the `i64` bounds instead of overflowing (unreachable with validated amounts).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CustomerValue {
    /// Purchases (orders) in the reporting currency.
    pub orders: u64,
    /// Refunds in the reporting currency.
    pub refunds: u64,
    /// The sum of purchase amounts in the reporting currency, in minor units.
    pub gross_revenue_minor: i64,
    /// The sum of refund amounts in the reporting currency, in minor units.
    pub refunded_minor: i64,
    /// The earliest purchase in the reporting currency.
    pub first_purchase_at: Option<DateTime<Utc>>,
    /// The latest purchase in the reporting currency.
    pub last_purchase_at: Option<DateTime<Utc>>,
    /// Purchases and refunds in other currencies, which every other figure leaves out.
    pub other_currency_events: u64,
}

impl CustomerValue {
    /// A customer with no purchases or refunds yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gross revenue minus refunds, in minor units: kept exact, so negative when refunds exceed
    /// purchases (e.g. a refund of an order bought in another currency or before tracking began).
    pub fn net_revenue_minor(&self) -> i64 {
        self.gross_revenue_minor.saturating_sub(self.refunded_minor)
    }

    /// Historical customer lifetime value: by definition here the net revenue to date, in minor
    /// units (no margin, no discounting, no prediction).
    pub fn historical_clv_minor(&self) -> i64 {
        self.net_revenue_minor()
    }

    /// Net revenue per order, in minor units, rounded to the nearest unit with halves away from
    /// zero (5 over 2 orders is 3, -5 over 2 orders is -3); `None` without orders.
    pub fn average_order_value(&self) -> Option<i64> {
        (self.orders > 0).then(|| div_round_half_away(self.net_revenue_minor(), self.orders))
    }

    /// Whole days (rounded down) from the first purchase to `now`; 0 if `now` is earlier, `None`
    /// without purchases.
    pub fn tenure_days(&self, now: DateTime<Utc>) -> Option<i64> {
        self.first_purchase_at.map(|first| whole_days(first, now))
    }

    /// Whole days (rounded down) from the latest purchase to `now`; 0 if `now` is earlier, `None`
    /// without purchases.
    pub fn recency_days(&self, now: DateTime<Utc>) -> Option<i64> {
        self.last_purchase_at.map(|last| whole_days(last, now))
    }

    /// This customer's input to [`crate::rfm_scores`] at `now`: recency in days, orders and net
    /// revenue; `None` without purchases, since RFM only ranks customers who bought.
    pub fn rfm_input(&self, now: DateTime<Utc>) -> Option<RfmInput> {
        Some(RfmInput {
            recency_days: self.recency_days(now)?,
            frequency: self.orders,
            monetary_minor: self.net_revenue_minor(),
        })
    }
}

/// Folds one event of the customer into its value: purchases and refunds in `currency` count,
/// those in other currencies are only counted in `other_currency_events`, and any other event
/// type changes nothing. Order of application does not matter: the result is the same for any
/// order of the same events.
pub fn apply(value: &mut CustomerValue, event: &Event, currency: Currency) {
    match &event.body {
        EventBody::Purchase(purchase) => {
            if let Some(minor) = in_currency(value, purchase.amount, currency) {
                value.orders = value.orders.saturating_add(1);
                value.gross_revenue_minor = value.gross_revenue_minor.saturating_add(minor);
                let at = event.occurred_at;
                value.first_purchase_at = Some(value.first_purchase_at.map_or(at, |t| t.min(at)));
                value.last_purchase_at = Some(value.last_purchase_at.map_or(at, |t| t.max(at)));
            }
        }
        EventBody::Refund(refund) => {
            if let Some(minor) = in_currency(value, refund.amount, currency) {
                value.refunds = value.refunds.saturating_add(1);
                value.refunded_minor = value.refunded_minor.saturating_add(minor);
            }
        }
        _ => {}
    }
}

/// The amount in minor units if it is in `currency`; otherwise counts it as an other-currency
/// event and returns `None`.
fn in_currency(value: &mut CustomerValue, amount: Money, currency: Currency) -> Option<i64> {
    if amount.currency == currency {
        Some(amount.minor_units)
    } else {
        value.other_currency_events = value.other_currency_events.saturating_add(1);
        None
    }
}

/// Whole days from `from` to `to`, rounded down, never negative.
fn whole_days(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    // `num_days` truncates toward zero, which is rounding down for the non-negative span kept.
    (to - from).num_days().max(0)
}

/// `numerator / denominator` rounded to the nearest integer, halves away from zero.
/// `denominator` must be positive.
fn div_round_half_away(numerator: i64, denominator: u64) -> i64 {
    let (n, d) = (i128::from(numerator), i128::from(denominator));
    let mut quotient = n / d;
    if 2 * (n % d).abs() >= d {
        quotient += n.signum();
    }
    // |quotient| <= |numerator| for any denominator >= 1, so it always fits.
    i64::try_from(quotient).unwrap_or(numerator)
}
