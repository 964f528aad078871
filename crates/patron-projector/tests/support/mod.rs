//! A scripted year of customer behaviour, and helpers to store and project it.

#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use patron_domain::{
    Acquired, ConsentChanged, Currency, CustomerId, CustomersMerged, CustomersUnmerged, Event,
    EventBody, Feedback, IdentityKind, Interaction, InteractionKind, Money, Purchase, Refund,
    UnknownBody,
};
use patron_lifecycle::Rules;
use patron_projector::{CustomerView, KpiKey, OutboxEntry, Projection, catch_up};
use patron_store::contract::customer;
use patron_store::{
    AppendBatch, EventStore, ExpectedVersion, InMemoryEventStore, Position, RecordedEvent,
};
use uuid::Uuid;

/// The reporting currency of every test.
pub(crate) fn usd() -> Currency {
    Currency::from_code("USD").unwrap()
}

/// Noon UTC of a day in 2025.
pub(crate) fn day(month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, month, day, 12, 0, 0).unwrap()
}

/// `n` days after `t`.
pub(crate) fn plus_days(t: DateTime<Utc>, n: i64) -> DateTime<Utc> {
    t + TimeDelta::days(n)
}

/// A builder of a scripted history; events get deterministic ids in script order.
#[derive(Default)]
pub(crate) struct Script {
    events: Vec<Event>,
}

impl Script {
    fn push(&mut self, who: &str, at: DateTime<Utc>, body: EventBody) {
        let id = u128::try_from(self.events.len()).unwrap() + 1;
        self.events.push(Event {
            event_id: Uuid::from_u128(id),
            customer_id: customer(who),
            occurred_at: at,
            source: "script".into(),
            body,
        });
    }

    /// A purchase of `minor` units of `currency`.
    pub(crate) fn purchase_in(&mut self, who: &str, at: DateTime<Utc>, minor: i64, code: &str) {
        let currency = Currency::from_code(code).unwrap();
        let order_id = format!("{who}-{}", self.events.len());
        self.push(
            who,
            at,
            EventBody::Purchase(Purchase {
                order_id,
                amount: Money::new(minor, currency).unwrap(),
                items: Vec::new(),
                extra: Default::default(),
            }),
        );
    }

    /// A purchase in USD.
    pub(crate) fn purchase(&mut self, who: &str, at: DateTime<Utc>, minor: i64) {
        self.purchase_in(who, at, minor, "USD");
    }

    /// A refund in USD.
    pub(crate) fn refund(&mut self, who: &str, at: DateTime<Utc>, minor: i64) {
        self.push(
            who,
            at,
            EventBody::Refund(Refund {
                order_id: format!("{who}-refunded"),
                amount: Money::new(minor, usd()).unwrap(),
                reason: None,
                extra: Default::default(),
            }),
        );
    }

    /// A web visit.
    pub(crate) fn visit(&mut self, who: &str, at: DateTime<Utc>) {
        self.push(
            who,
            at,
            EventBody::Interaction(Interaction {
                channel: "web".into(),
                kind: InteractionKind::Visit,
                extra: Default::default(),
            }),
        );
    }

    /// A survey answer.
    pub(crate) fn feedback(&mut self, who: &str, at: DateTime<Utc>, nps: u8, csat: u8) {
        self.push(
            who,
            at,
            EventBody::Feedback(Feedback {
                nps: Some(nps),
                csat: Some(csat),
                comment: None,
                extra: Default::default(),
            }),
        );
    }

    /// An acquisition through `channel` at a cost in USD.
    pub(crate) fn acquired(&mut self, who: &str, at: DateTime<Utc>, channel: &str, cost: i64) {
        self.push(
            who,
            at,
            EventBody::Acquired(Acquired {
                channel: channel.into(),
                campaign: None,
                cost: Some(Money::new(cost, usd()).unwrap()),
                extra: Default::default(),
            }),
        );
    }

    /// An event of a type this version does not know.
    pub(crate) fn unknown(&mut self, who: &str, at: DateTime<Utc>) {
        self.push(
            who,
            at,
            EventBody::Unknown(UnknownBody {
                event_type: "loyalty.points_granted".into(),
                data: serde_json::json!({"points": 10}),
            }),
        );
    }

    /// A refund in USD of the order of `who`'s purchase that was the script's `index`th event
    /// (from 0), see [`Script::purchase_in`].
    pub(crate) fn refund_order(&mut self, who: &str, at: DateTime<Utc>, index: usize, minor: i64) {
        self.push(
            who,
            at,
            EventBody::Refund(Refund {
                order_id: format!("{who}-{index}"),
                amount: Money::new(minor, usd()).unwrap(),
                reason: None,
                extra: Default::default(),
            }),
        );
    }

    /// How many events the script holds (the index the next one gets).
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    /// A consent answer.
    pub(crate) fn consent(&mut self, who: &str, at: DateTime<Utc>, purpose: &str, granted: bool) {
        self.push(
            who,
            at,
            EventBody::ConsentChanged(ConsentChanged {
                purpose: purpose.into(),
                granted,
                extra: Default::default(),
            }),
        );
    }

    /// `merged` (with everyone merged into it) is merged into `survivor`, in `survivor`'s stream.
    pub(crate) fn merged(&mut self, survivor: &str, at: DateTime<Utc>, merged: &str) {
        let link = u128::try_from(self.events.len()).unwrap() + 1_000_000;
        self.push(
            survivor,
            at,
            EventBody::CustomersMerged(CustomersMerged {
                merged_customer_id: customer(merged),
                link_event_id: Uuid::from_u128(link),
                identity_kind: IdentityKind::Email,
                evidence: Some("same email".into()),
                extra: Default::default(),
            }),
        );
    }

    /// `merged` is split off `parent` again, in `parent`'s stream.
    pub(crate) fn unmerged(&mut self, parent: &str, at: DateTime<Utc>, merged: &str) {
        self.push(
            parent,
            at,
            EventBody::CustomersUnmerged(CustomersUnmerged {
                merged_customer_id: customer(merged),
                reason: Some("ticket 42".into()),
                extra: Default::default(),
            }),
        );
    }

    /// The events in script order (so that late events stay late).
    pub(crate) fn into_log(self) -> Vec<Event> {
        self.events
    }

    /// The events in time order (script order at equal times).
    pub(crate) fn into_events(mut self) -> Vec<Event> {
        self.events.sort_by_key(|e| e.occurred_at);
        self.events
    }
}

/// A year of several habits:
/// * `weekly` buys 40.00 every week all year, refunds one order in March (loyal from April 4);
/// * `monthly` buys 50.00 every 30 days and has a partial refund in June;
/// * `churner` buys three times in January, falls silent, churns, and comes back weekly from
///   October 1 (one purchase in EUR);
/// * `oneoff` buys once on January 2 and never again;
/// * `refunder` buys twice in March, refunds one order, and is never seen again;
/// * `browser` only visits; `ghost` only sends an event type nobody knows (the last event).
pub(crate) fn year() -> Vec<Event> {
    let mut s = Script::default();
    for k in 0..52 {
        s.purchase("weekly", plus_days(day(1, 3), 7 * k), 4_000);
    }
    s.refund("weekly", day(3, 15), 4_000);
    for k in 0..12 {
        s.purchase("monthly", plus_days(day(1, 10), 30 * k), 5_000);
    }
    s.refund("monthly", day(6, 20), 1_000);
    for d in [5, 12, 19] {
        s.purchase("churner", day(1, d), 2_000);
    }
    for k in 0..13 {
        s.purchase("churner", plus_days(day(10, 1), 7 * k), 2_000);
    }
    s.purchase_in("churner", day(11, 1), 1_500, "EUR");
    s.purchase("oneoff", day(1, 2), 3_000);
    s.purchase("refunder", day(3, 1), 30_000);
    s.purchase("refunder", day(3, 20), 30_000);
    s.refund("refunder", day(3, 25), 30_000);
    s.visit("browser", day(2, 1));
    s.visit("browser", day(4, 1));
    s.visit("monthly", day(7, 7));
    s.acquired("weekly", plus_days(day(1, 3), -1), "paid_search", 2_500);
    s.acquired("churner", day(1, 4), "paid_search", 3_500);
    s.acquired("browser", day(1, 30), "social", 800);
    s.feedback("weekly", day(5, 5), 10, 5);
    s.feedback("monthly", day(5, 6), 8, 4);
    s.feedback("churner", day(11, 2), 3, 2);
    s.unknown("ghost", day(12, 31));
    s.into_events()
}

/// The events as a store would hand them out: positions 1, 2, ... in the given order.
pub(crate) fn recorded(events: &[Event]) -> Vec<RecordedEvent> {
    events
        .iter()
        .enumerate()
        .map(|(i, event)| RecordedEvent {
            position: Position(u64::try_from(i).unwrap() + 1),
            version: 1,
            recorded_at: event.occurred_at,
            event: event.clone(),
        })
        .collect()
}

/// Appends events one per append, so that positions follow the given order.
pub(crate) async fn append_each(store: &InMemoryEventStore, events: &[Event]) {
    for event in events {
        let batch = AppendBatch::single(
            event.customer_id.clone(),
            ExpectedVersion::Any,
            vec![event.clone()],
        );
        store.append(&batch).await.unwrap();
    }
}

/// A store holding `events`, in order.
pub(crate) async fn store_with(events: &[Event]) -> InMemoryEventStore {
    let store = InMemoryEventStore::new();
    append_each(&store, events).await;
    store
}

/// What a projection produced: its views, its whole outbox, checkpoint and watermark.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    pub(crate) views: BTreeMap<CustomerId, CustomerView>,
    pub(crate) outbox: Vec<OutboxEntry>,
    pub(crate) checkpoint: Position,
    pub(crate) watermark: Option<DateTime<Utc>>,
    pub(crate) kpis: BTreeMap<KpiKey, i64>,
}

/// Adds a batch's KPI deltas to running totals, dropping counters that return to zero.
pub(crate) fn add_kpis(totals: &mut BTreeMap<KpiKey, i64>, deltas: BTreeMap<KpiKey, i64>) {
    for (key, delta) in deltas {
        *totals.entry(key).or_insert(0) += delta;
    }
    totals.retain(|_, value| *value != 0);
}

/// Projects the whole store from position zero in one catch-up with pages of `page`.
pub(crate) async fn replay(store: &InMemoryEventStore, page: usize) -> Outcome {
    let mut projection = Projection::new();
    let changes = catch_up(&mut projection, store, &Rules::default(), usd(), page)
        .await
        .unwrap();
    Outcome {
        views: projection.customers().clone(),
        outbox: changes.outbox,
        checkpoint: projection.checkpoint(),
        watermark: projection.watermark(),
        kpis: changes.kpis,
    }
}

/// A customer's stage history, in order: its transitions in the outbox (views keep only the
/// history's length).
pub(crate) fn history(outbox: &[OutboxEntry], who: &str) -> Vec<patron_lifecycle::Transition> {
    let who = customer(who);
    let mut entries: Vec<&OutboxEntry> = outbox.iter().filter(|e| e.customer_id == who).collect();
    entries.sort_by_key(|e| e.seq);
    entries.into_iter().map(|e| e.transition.clone()).collect()
}

/// The stages a customer has entered, in order.
pub(crate) fn stages(outbox: &[OutboxEntry], who: &str) -> Vec<patron_lifecycle::Stage> {
    history(outbox, who).into_iter().map(|t| t.to).collect()
}
