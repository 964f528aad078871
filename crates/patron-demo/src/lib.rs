//! Demo traffic: customers with different habits (loyal, one-off, seasonal, churning, win-back)
//! doing what such customers do — signing up (two in three consenting to marketing email),
//! visits, purchases, refunds, feedback, email clicks — encoded as Patron's wire formats
//! (protobuf and CloudEvents JSON), plus the odd malformed record so the dead-letter path shows
//! too.
//!
//! Deterministic for a seed; time is passed in.

use chrono::{DateTime, TimeDelta, Utc};
use patron_proto::events::v1 as pb;
use prost::Message as _;
use serde_json::json;
use uuid::Uuid;

/// How a demo customer behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Habit {
    /// Buys every two weeks or so, and tells friends.
    Loyal,
    /// Buys once, then mostly ignores the emails.
    OneOff,
    /// Buys a few times a year.
    Seasonal,
    /// Buys less and less often, then stops.
    Churning,
    /// Buys monthly, disappears for half a year, comes back.
    WinBack,
}

const HABITS: [Habit; 5] = [
    Habit::Loyal,
    Habit::OneOff,
    Habit::Seasonal,
    Habit::Churning,
    Habit::WinBack,
];

/// One encoded record, ready to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoRecord {
    /// The customer id (the message key).
    pub key: String,
    /// `application/protobuf` or `application/cloudevents+json`.
    pub content_type: &'static str,
    /// The bytes.
    pub payload: Vec<u8>,
    /// The event time the record carries.
    pub occurred_at: DateTime<Utc>,
}

/// The records as validated events, through the decoder and validation ingest uses; records
/// ingest would dead-letter (the deliberately malformed ones) are left out. For tests and
/// benchmarks that fill a store without Kafka.
pub fn into_events(
    records: Vec<DemoRecord>,
    policy: &patron_domain::ValidationPolicy,
) -> Vec<patron_domain::Event> {
    records
        .into_iter()
        .filter_map(|record| {
            let message = patron_codec::Message {
                content_type: Some(record.content_type),
                headers: &[],
                key: Some(record.key.as_bytes()),
                payload: &record.payload,
            };
            let raw = patron_codec::decode(&message, &patron_codec::Limits::default()).ok()?;
            patron_domain::validate(raw, policy).ok()
        })
        .collect()
}

struct Customer {
    id: String,
    habit: Habit,
    next_purchase: DateTime<Utc>,
    purchases: u32,
}

/// A seeded source of demo traffic.
pub struct Generator {
    state: u64,
    customers: Vec<Customer>,
    clock: DateTime<Utc>,
    orders: u64,
    seed: u64,
}

impl Generator {
    /// `customers` customers acquired from `start` on, with habits in rotation.
    pub fn new(seed: u64, customers: usize, start: DateTime<Utc>) -> Self {
        let mut generator = Self {
            state: seed | 1,
            customers: Vec::with_capacity(customers),
            clock: start,
            orders: 0,
            seed,
        };
        for i in 0..customers {
            let offset = TimeDelta::hours(generator.below(24 * 90) as i64);
            generator.customers.push(Customer {
                id: format!("demo-{i:04}"),
                habit: HABITS[i % HABITS.len()],
                next_purchase: start + offset,
                purchases: 0,
            });
        }
        generator
    }

    /// A pseudo-random number below `bound` (xorshift64*).
    fn below(&mut self, bound: u64) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound.max(1)
    }

    /// A pseudo-random index below `n`.
    fn pick(&mut self, n: usize) -> usize {
        usize::try_from(self.below(n as u64)).unwrap_or(0)
    }

    /// Every record whose event time falls after the previous call and at or before `until`,
    /// in time order.
    pub fn until(&mut self, until: DateTime<Utc>) -> Vec<DemoRecord> {
        let mut records = Vec::new();
        while let Some(index) = (0..self.customers.len())
            .filter(|&i| self.customers[i].next_purchase <= until)
            .min_by_key(|&i| self.customers[i].next_purchase)
        {
            let at = self.customers[index].next_purchase;
            self.clock = at;
            records.extend(self.visit_and_buy(index, at, until));
            let gap = self.next_gap(index);
            self.customers[index].next_purchase = match gap {
                Some(gap) => at + gap,
                None => DateTime::<Utc>::MAX_UTC,
            };
        }
        self.clock = until;
        // A purchase's follow-ups (refund, answer, emails) are generated with it but happen days
        // later: sorted, the records go out as producers send them, when they happen.
        records.sort_by_key(|record| record.occurred_at);
        records
    }

    /// Days until the customer's next purchase, by habit; `None` when they stop buying.
    fn next_gap(&mut self, index: usize) -> Option<TimeDelta> {
        let purchases = self.customers[index].purchases;
        let jitter = self.below(6) as i64;
        let days = match self.customers[index].habit {
            Habit::Loyal => 12 + jitter,
            Habit::OneOff => return None,
            Habit::Seasonal => 80 + 4 * jitter,
            Habit::Churning if purchases >= 5 => return None,
            Habit::Churning => 15 * (1 << purchases) + jitter,
            Habit::WinBack if purchases == 4 => 190 + jitter,
            Habit::WinBack => 28 + jitter,
        };
        Some(TimeDelta::days(days) + TimeDelta::minutes(self.below(600) as i64))
    }

    fn visit_and_buy(
        &mut self,
        index: usize,
        at: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Vec<DemoRecord> {
        // Follow-ups (refund, feedback, emails) come days later, but never after `until`: the
        // traffic of a call is never in the future of its bound.
        let later = |days: i64| (at + TimeDelta::days(days)).min(until);
        let customer = self.customers[index].id.clone();
        let habit = self.customers[index].habit;
        self.customers[index].purchases += 1;
        let first = self.customers[index].purchases == 1;
        let mut out = Vec::new();
        if first {
            let channel = ["paid_search", "social", "referral", "email"][self.pick(4)];
            let cost = 500 + self.below(2500) as i64;
            out.push(self.json(&customer, at - TimeDelta::hours(1), "acquired", json!({
                "channel": channel, "campaign": "demo", "cost": {"minor_units": cost, "currency": "USD"}
            })));
            // Two customers in three agree to marketing email when they sign up. (The id comes
            // from the seed and the customer, not from the random sequence, which stays as it
            // was before consent was part of the demo.)
            if index % 3 != 2 {
                let id = self.consent_id(index);
                out.push(self.json_with_id(
                    id,
                    &customer,
                    at - TimeDelta::minutes(50),
                    "consent_changed",
                    json!({"purpose": "marketing_email", "granted": true}),
                ));
            }
        }
        out.push(self.json(
            &customer,
            at - TimeDelta::minutes(20),
            "interaction",
            json!({"channel": "web", "kind": "visit"}),
        ));
        self.orders += 1;
        let order_id = format!("o-{}", self.orders);
        let amount = match habit {
            Habit::Loyal => 4_000 + self.below(8_000) as i64,
            Habit::Seasonal => 8_000 + self.below(20_000) as i64,
            _ => 1_500 + self.below(6_000) as i64,
        };
        // Every 97th order is malformed on purpose: a negative amount, which ingest dead-letters.
        let amount = if self.orders.is_multiple_of(97) {
            -amount
        } else {
            amount
        };
        out.push(self.protobuf_purchase(&customer, at, &order_id, amount));
        if self.below(100) < 5 {
            out.push(self.json(&customer, later(3), "refund", json!({
                "order_id": order_id, "amount": {"minor_units": amount.abs() / 2, "currency": "USD"}, "reason": "damaged"
            })));
        }
        if self.below(100) < 25 {
            let nps = match habit {
                Habit::Loyal => 8 + self.below(3),
                Habit::Churning => self.below(7),
                _ => 5 + self.below(6),
            };
            out.push(self.json(&customer, later(5), "feedback", json!({"nps": nps})));
        }
        if self.below(100) < 30 {
            let kind = ["email_open", "email_click", "support_contact"][self.pick(3)];
            out.push(self.json(
                &customer,
                later(7),
                "interaction",
                json!({"channel": "email", "kind": kind}),
            ));
        }
        out
    }

    /// `n` small live events stamped `now` (visits, app opens, email clicks, now and then a
    /// purchase) by random customers.
    pub fn live(&mut self, n: usize, now: DateTime<Utc>) -> Vec<DemoRecord> {
        (0..n)
            .map(|_| {
                let index = self.pick(self.customers.len());
                let customer = self.customers[index].id.clone();
                if self.below(5) == 0 {
                    self.orders += 1;
                    let order_id = format!("live-{}", self.orders);
                    let amount = 1_000 + self.below(9_000) as i64;
                    self.protobuf_purchase(&customer, now, &order_id, amount)
                } else {
                    let kind = ["visit", "app_open", "email_open", "email_click"][self.pick(4)];
                    self.json(
                        &customer,
                        now,
                        "interaction",
                        json!({"channel": "web", "kind": kind}),
                    )
                }
            })
            .collect()
    }

    fn uuid(&mut self) -> Uuid {
        let high = self.below(u64::MAX);
        let low = self.below(u64::MAX);
        uuid::Builder::from_random_bytes(((u128::from(high) << 64) | u128::from(low)).to_be_bytes())
            .into_uuid()
    }

    /// The id of customer `index`'s consent answer: a function of the seed and the customer.
    fn consent_id(&self, index: usize) -> Uuid {
        // splitmix64 of the seed and the index, twice, as the 128 random bits of a v4 UUID.
        let mix = |mut z: u64| {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let high = mix(self.seed ^ 0xC0_4E_E7 ^ (index as u64).rotate_left(17));
        let low = mix(high ^ index as u64);
        uuid::Builder::from_random_bytes(((u128::from(high) << 64) | u128::from(low)).to_be_bytes())
            .into_uuid()
    }

    fn json(
        &mut self,
        customer: &str,
        at: DateTime<Utc>,
        event_type: &str,
        data: serde_json::Value,
    ) -> DemoRecord {
        let id = self.uuid();
        self.json_with_id(id, customer, at, event_type, data)
    }

    fn json_with_id(
        &self,
        id: Uuid,
        customer: &str,
        at: DateTime<Utc>,
        event_type: &str,
        data: serde_json::Value,
    ) -> DemoRecord {
        let document = json!({
            "specversion": "1.0",
            "id": id,
            "source": "demo",
            "type": format!("patron.{event_type}.v1"),
            "subject": customer,
            "time": at,
            "datacontenttype": "application/json",
            "data": data,
        });
        DemoRecord {
            key: customer.to_owned(),
            content_type: "application/cloudevents+json",
            payload: document.to_string().into_bytes(),
            occurred_at: at,
        }
    }

    fn protobuf_purchase(
        &mut self,
        customer: &str,
        at: DateTime<Utc>,
        order_id: &str,
        amount: i64,
    ) -> DemoRecord {
        let money = |minor_units| pb::Money {
            minor_units,
            currency: "USD".into(),
        };
        let event = pb::CustomerEvent {
            identity: None,
            event_id: self.uuid().to_string(),
            customer_id: customer.to_owned(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: at.timestamp(),
                nanos: 0,
            }),
            source: "demo-shop".into(),
            extra: None,
            body: Some(pb::customer_event::Body::Purchase(pb::Purchase {
                order_id: order_id.to_owned(),
                amount: Some(money(amount)),
                items: vec![pb::LineItem {
                    sku: "tea".into(),
                    quantity: 1,
                    unit_price: Some(money(amount)),
                }],
            })),
        };
        DemoRecord {
            key: customer.to_owned(),
            content_type: "application/protobuf",
            payload: event.encode_to_vec(),
            occurred_at: at,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use patron_codec::{Limits, Message};
    use patron_domain::{ErrorClass, ValidationPolicy, validate};

    use super::*;

    #[test]
    fn traffic_is_valid_except_the_planted_bad_records_and_deterministic() {
        let start = Utc.with_ymd_and_hms(2025, 11, 1, 0, 0, 0).unwrap();
        let end = start + TimeDelta::days(365);
        let records = Generator::new(7, 50, start).until(end);
        assert_eq!(
            records,
            Generator::new(7, 50, start).until(end),
            "same seed, same traffic"
        );
        let policy = ValidationPolicy::at(end + TimeDelta::days(1));
        let mut valid = 0;
        let mut rejected = Vec::new();
        for r in &records {
            let message = Message {
                content_type: Some(r.content_type),
                key: Some(r.key.as_bytes()),
                payload: &r.payload,
                ..Message::default()
            };
            match patron_codec::decode(&message, &Limits::default())
                .and_then(|raw| validate(raw, &policy))
            {
                Ok(_) => valid += 1,
                Err(e) => rejected.push(e.class),
            }
        }
        assert!(valid > 500, "a year of 50 customers is busy: {valid}");
        assert!(!rejected.is_empty(), "some malformed records are planted");
        assert!(
            rejected.iter().all(|c| *c == ErrorClass::NegativeAmount),
            "{rejected:?}"
        );
        let loyal = records
            .iter()
            .filter(|r| r.key == "demo-0000" && r.content_type == "application/protobuf")
            .count();
        let one_off = records
            .iter()
            .filter(|r| r.key == "demo-0001" && r.content_type == "application/protobuf")
            .count();
        assert!(
            loyal > 15 && one_off == 1,
            "habits differ: loyal {loyal}, one-off {one_off}"
        );
    }
}
