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

impl Purchases {
    /// The purchases of several customers taken as one's (customers merged): the union of their
    /// purchase days, with the purchases, amounts and refunds of a day present in several parts
    /// summed. An order id known to several parts keeps the earliest day; a refund waiting in
    /// one part for an order another part bought nets against that order's day now, as it would
    /// had one customer had all the events. The result does not depend on the order of `parts`.
    pub fn combine<'a>(parts: impl IntoIterator<Item = &'a Purchases>) -> Purchases {
        let mut summary = PurchaseSummary::new();
        let mut order_days: BTreeMap<String, NaiveDate> = BTreeMap::new();
        let mut pending_refunds: BTreeMap<String, i64> = BTreeMap::new();
        for part in parts {
            summary.absorb(&part.summary);
            for (order, day) in &part.order_days {
                order_days
                    .entry(order.clone())
                    .and_modify(|known| *known = (*known).min(*day))
                    .or_insert(*day);
            }
            for (order, amount) in &part.pending_refunds {
                let pending = pending_refunds.entry(order.clone()).or_insert(0);
                *pending = pending.saturating_add(*amount);
            }
        }
        // A refund one customer was holding for an order the other bought nets now.
        pending_refunds.retain(|order, amount| match order_days.get(order) {
            Some(&day) => {
                let _not_negative = summary.record_refund(day, *amount);
                false
            }
            None => true,
        });
        Purchases {
            summary,
            order_days,
            pending_refunds,
        }
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

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use patron_domain::{CustomerId, Money, Purchase, Refund};

    use super::*;

    fn usd() -> Currency {
        Currency::from_code("USD").expect("USD")
    }

    fn event(day: u32, hour: u32, body: EventBody) -> Event {
        Event {
            event_id: uuid::Uuid::new_v4(),
            customer_id: CustomerId::parse("c-1").expect("an id"),
            occurred_at: Utc
                .with_ymd_and_hms(2026, 1, day, hour, 0, 0)
                .single()
                .expect("a time"),
            source: "test".into(),
            body,
        }
    }

    fn purchase(order: &str, day: u32, hour: u32, minor: i64) -> Event {
        event(
            day,
            hour,
            EventBody::Purchase(Purchase {
                order_id: order.into(),
                amount: Money::new(minor, usd()).expect("money"),
                items: Vec::new(),
                extra: Default::default(),
            }),
        )
    }

    fn refund(order: &str, day: u32, minor: i64) -> Event {
        event(
            day,
            23,
            EventBody::Refund(Refund {
                order_id: order.into(),
                amount: Money::new(minor, usd()).expect("money"),
                reason: None,
                extra: Default::default(),
            }),
        )
    }

    fn fold(events: &[Event]) -> Purchases {
        let mut purchases = Purchases::new();
        for event in events {
            apply(&mut purchases, event, usd());
        }
        purchases
    }

    #[test]
    fn combined_purchases_are_those_of_all_events_in_any_order() {
        let a = [
            purchase("a1", 1, 9, 1_000),
            purchase("a2", 3, 9, 2_000),
            refund("a2", 4, 500),
            refund("b1", 5, 300),
            refund("x", 5, 100),
        ];
        let b = [
            purchase("b1", 3, 15, 700),
            purchase("b2", 3, 16, 800),
            refund("b2", 6, 800),
            purchase("b3", 9, 10, 400),
        ];
        let all: Vec<Event> = a.iter().chain(&b).cloned().collect();
        let expected = fold(&all);
        assert_eq!(
            expected.pending_refunds_minor(),
            100,
            "only x's order is unknown"
        );
        let (pa, pb) = (fold(&a), fold(&b));
        assert_eq!(
            pa.pending_refunds_minor(),
            400,
            "b1's refund waits in a alone"
        );
        assert_eq!(Purchases::combine([&pa, &pb]), expected);
        assert_eq!(Purchases::combine([&pb, &pa]), expected);
        assert_eq!(Purchases::combine([&pa]), pa, "one part is itself");
        assert_eq!(Purchases::combine([]), Purchases::new());
        assert_eq!(expected.summary.frequency(), 2, "days 1, 3 and 9");
    }
}
