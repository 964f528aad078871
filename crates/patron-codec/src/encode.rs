//! Encoding a validated [`Event`] as the protobuf envelope `patron.events.v1.CustomerEvent`:
//! the inverse of decoding, so that `validate(decode(to_proto(e)))` gives `e` back.
//!
//! Fields a producer sent beyond the schema (each body's `extra`) travel in the envelope's
//! `extra`, as the decoder expects them. Limits of the wire format: `google.protobuf.Struct`
//! numbers are doubles, so integers in extra fields, traits and unknown bodies come back as
//! floating-point JSON numbers (and lose precision beyond 2^53); an unknown body that is not a
//! JSON object is sent as an empty `data`. A projector `tick` and a fitter `model_fitted` (never
//! accepted from producers) are encoded as `OtherEvent { type: "tick" }` and
//! `OtherEvent { type: "model_fitted", data }` (`data` holds the stored fields; the parameters are
//! strings, so they travel exactly).

use patron_domain::{Event, EventBody, InteractionKind, Money};
use patron_proto::events::v1 as pb;
use pb::customer_event::Body;
use serde_json::{Map, Value};

/// The protobuf envelope of `event`.
pub fn to_proto(event: &Event) -> pb::CustomerEvent {
    let (body, extra) = body(&event.body);
    pb::CustomerEvent {
        event_id: event.event_id.to_string(),
        customer_id: event.customer_id.as_str().to_owned(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: event.occurred_at.timestamp(),
            nanos: i32::try_from(event.occurred_at.timestamp_subsec_nanos()).unwrap_or(0),
        }),
        source: event.source.clone(),
        extra: extra.filter(|extra| !extra.is_empty()).map(to_struct),
        body: Some(body),
        identity: None,
    }
}

fn money(money: &Money) -> pb::Money {
    pb::Money {
        minor_units: money.minor_units,
        currency: money.currency.code().to_owned(),
    }
}

fn interaction_kind(kind: &InteractionKind) -> String {
    match kind {
        InteractionKind::Visit => "visit",
        InteractionKind::AppOpen => "app_open",
        InteractionKind::EmailOpen => "email_open",
        InteractionKind::EmailClick => "email_click",
        InteractionKind::SupportContact => "support_contact",
        InteractionKind::Other(name) => name,
    }
    .to_owned()
}

/// The body and the extra fields it carried.
fn body(body: &EventBody) -> (Body, Option<&Map<String, Value>>) {
    match body {
        EventBody::Purchase(p) => (
            Body::Purchase(pb::Purchase {
                order_id: p.order_id.clone(),
                amount: Some(money(&p.amount)),
                items: p
                    .items
                    .iter()
                    .map(|item| pb::LineItem {
                        sku: item.sku.clone(),
                        quantity: item.quantity,
                        unit_price: item.unit_price.as_ref().map(money),
                    })
                    .collect(),
            }),
            Some(&p.extra),
        ),
        EventBody::Refund(r) => (
            Body::Refund(pb::Refund {
                order_id: r.order_id.clone(),
                amount: Some(money(&r.amount)),
                reason: r.reason.clone().unwrap_or_default(),
            }),
            Some(&r.extra),
        ),
        EventBody::Interaction(i) => (
            Body::Interaction(pb::Interaction {
                channel: i.channel.clone(),
                kind: interaction_kind(&i.kind),
            }),
            Some(&i.extra),
        ),
        EventBody::Feedback(f) => (
            Body::Feedback(pb::Feedback {
                nps: f.nps.map(i32::from),
                csat: f.csat.map(i32::from),
                comment: f.comment.clone(),
            }),
            Some(&f.extra),
        ),
        EventBody::ProfileUpdated(p) => (
            Body::ProfileUpdated(pb::ProfileUpdated {
                traits: Some(to_struct(&p.traits)),
            }),
            Some(&p.extra),
        ),
        EventBody::Acquired(a) => (
            Body::Acquired(pb::Acquired {
                channel: a.channel.clone(),
                campaign: a.campaign.clone().unwrap_or_default(),
                cost: a.cost.as_ref().map(money),
            }),
            Some(&a.extra),
        ),
        EventBody::ConsentChanged(c) => (
            Body::ConsentChanged(pb::ConsentChanged {
                purpose: c.purpose.clone(),
                granted: c.granted,
            }),
            Some(&c.extra),
        ),
        EventBody::ErasureRequested(e) => (
            Body::ErasureRequested(pb::ErasureRequested {
                reason: e.reason.clone().unwrap_or_default(),
            }),
            Some(&e.extra),
        ),
        EventBody::IdentitiesLinked(l) => (
            Body::IdentitiesLinked(pb::IdentitiesLinked {
                identities: l
                    .identities
                    .iter()
                    .map(|identity| pb::Identity {
                        kind: identity.kind.as_str().to_owned(),
                        value: identity.value.clone(),
                    })
                    .collect(),
                evidence: l.evidence.clone().unwrap_or_default(),
            }),
            Some(&l.extra),
        ),
        EventBody::CustomersUnmerged(u) => (
            Body::CustomersUnmerged(pb::CustomersUnmerged {
                merged_customer_id: u.merged_customer_id.to_string(),
                reason: u.reason.clone().unwrap_or_default(),
            }),
            Some(&u.extra),
        ),
        EventBody::Tick(_) => (
            Body::Other(pb::OtherEvent {
                r#type: "tick".into(),
                data: None,
            }),
            None,
        ),
        EventBody::ModelFitted(_)
        | EventBody::SourceProgress(_)
        | EventBody::CustomersMerged(_) => (
            Body::Other(pb::OtherEvent {
                r#type: body.event_type().as_str().to_owned(),
                data: match body.to_payload() {
                    Value::Object(map) => Some(to_struct(&map)),
                    _ => None,
                },
            }),
            None,
        ),
        EventBody::Unknown(u) => (
            Body::Other(pb::OtherEvent {
                r#type: u.event_type.clone(),
                data: match &u.data {
                    Value::Object(map) => Some(to_struct(map)),
                    _ => None,
                },
            }),
            None,
        ),
    }
}

fn to_struct(map: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .iter()
            .map(|(key, value)| (key.clone(), to_value(value)))
            .collect(),
    }
}

fn to_value(value: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => n.as_f64().map_or(Kind::NullValue(0), Kind::NumberValue),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(values) => Kind::ListValue(prost_types::ListValue {
            values: values.iter().map(to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}
