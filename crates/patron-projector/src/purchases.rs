//! Each customer's purchase history as the predictive models need it (a
//! [`patron_clv::PurchaseSummary`]), kept by the projector beside the lifecycle and the value.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use patron_clv::PurchaseSummary;
use patron_domain::{Currency, Event, EventBody};
use serde::{Deserialize, Serialize};

/// The purchase summary of one customer, and what it takes to attribute refunds to the day of
/// the order they refund.
///
/// Only purchases and refunds in the reporting currency count, as for
/// [`patron_value::CustomerValue`]. A transaction is a UTC calendar day (same-day purchases are
/// one transaction; see `patron-clv`'s conventions). A refund names its order: it nets against
/// the day that order was bought on. A refund of an order not seen yet waits in
/// `pending_refunds` and is applied when the order's purchase arrives (one that never arrives —
/// bought before tracking began, or in another currency — changes nothing). An order id seen in
/// two purchases keeps the day of the first one in log order, so the result depends only on the
/// log, as every projection does.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Purchases {
    /// The sufficient statistics: one entry per purchase day.
    #[serde(default)]
    pub summary: PurchaseSummary,
    /// The purchase day of every order id seen in the reporting currency.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    order_days: BTreeMap<String, NaiveDate>,
    /// Refunds (minor units, summed) of orders whose purchase has not arrived yet.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pending_refunds: BTreeMap<String, i64>,
}

impl Purchases {
    /// Nothing bought yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The refunds still waiting for their order's purchase, in minor units.
    pub fn pending_refunds_minor(&self) -> i64 {
        self.pending_refunds
            .values()
            .fold(0_i64, |sum, amount| sum.saturating_add(*amount))
    }
}

/// Folds one event of the customer into its purchases: purchases and refunds in `currency`,
/// nothing else. Validated events never carry negative amounts; one that did would be ignored.
pub(crate) fn apply(purchases: &mut Purchases, event: &Event, currency: Currency) {
    match &event.body {
        EventBody::Purchase(purchase) if purchase.amount.currency == currency => {
            let day = event.occurred_at.date_naive();
            if purchases
                .summary
                .record_purchase(day, purchase.amount.minor_units)
                .is_err()
            {
                return;
            }
            let day = *purchases
                .order_days
                .entry(purchase.order_id.clone())
                .or_insert(day);
            if let Some(refunded) = purchases.pending_refunds.remove(&purchase.order_id) {
                // Amounts were checked when they were recorded as pending.
                let _not_negative = purchases.summary.record_refund(day, refunded);
            }
        }
        EventBody::Refund(refund) if refund.amount.currency == currency => {
            let amount = refund.amount.minor_units;
            if amount < 0 {
                return;
            }
            match purchases.order_days.get(&refund.order_id) {
                Some(&day) => {
                    let _not_negative = purchases.summary.record_refund(day, amount);
                }
                None => {
                    let pending = purchases
                        .pending_refunds
                        .entry(refund.order_id.clone())
                        .or_insert(0);
                    *pending = pending.saturating_add(amount);
                }
            }
        }
        _ => {}
    }
}
