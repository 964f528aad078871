//! The protobuf envelope `patron.events.v1.CustomerEvent`.

use patron_domain::{ErrorClass, RawEvent, RawTime, ValidationError};
use patron_proto::events::v1 as pb;
use pb::customer_event::Body;
use prost::Message as _;
use serde_json::{Map, Value, json};

pub(crate) fn decode(payload: &[u8]) -> Result<RawEvent, ValidationError> {
    let event = pb::CustomerEvent::decode(payload).map_err(|e| {
        ValidationError::new(
            ErrorClass::Undecodable,
            "record",
            format!("not a patron.events.v1.CustomerEvent: {e}"),
        )
    })?;
    Ok(to_raw(event))
}

/// Converts a decoded envelope; the body becomes the JSON shape validation reads.
pub fn to_raw(event: pb::CustomerEvent) -> RawEvent {
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    let (event_type, mut data) = match event.body {
        None => (None, Value::Null),
        Some(body) => {
            let (name, data) = body_to_json(body);
            (Some(name), data)
        }
    };
    if let (Some(extra), Value::Object(map)) = (event.extra, &mut data) {
        for (key, value) in struct_to_json(extra) {
            map.entry(key).or_insert(value);
        }
    }
    RawEvent {
        event_id: non_empty(event.event_id),
        customer_id: non_empty(event.customer_id),
        event_type,
        occurred_at: event.occurred_at.map(|t| RawTime::Unix {
            seconds: t.seconds,
            nanos: t.nanos,
        }),
        source: non_empty(event.source),
        data,
        identity: event.identity.map(|i| (i.kind, i.value)),
    }
}

fn money(m: Option<pb::Money>) -> Option<Value> {
    m.map(|m| json!({"minor_units": m.minor_units, "currency": m.currency}))
}

/// Builds a JSON object from optional fields, leaving out the absent ones (so that validation
/// reports "missing" rather than "invalid" for them).
fn object(fields: impl IntoIterator<Item = (&'static str, Option<Value>)>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
            .collect(),
    )
}

fn text(s: String) -> Option<Value> {
    (!s.is_empty()).then_some(Value::String(s))
}

fn body_to_json(body: Body) -> (String, Value) {
    match body {
        Body::Purchase(p) => (
            "purchase".into(),
            object([
                ("order_id", text(p.order_id)),
                ("amount", money(p.amount)),
                (
                    "items",
                    (!p.items.is_empty()).then(|| {
                        Value::Array(
                            p.items
                                .into_iter()
                                .map(|i| {
                                    object([
                                        ("sku", text(i.sku)),
                                        ("quantity", (i.quantity > 0).then(|| json!(i.quantity))),
                                        ("unit_price", money(i.unit_price)),
                                    ])
                                })
                                .collect(),
                        )
                    }),
                ),
            ]),
        ),
        Body::Refund(r) => (
            "refund".into(),
            object([
                ("order_id", text(r.order_id)),
                ("amount", money(r.amount)),
                ("reason", text(r.reason)),
            ]),
        ),
        Body::Interaction(i) => (
            "interaction".into(),
            object([("channel", text(i.channel)), ("kind", text(i.kind))]),
        ),
        Body::Feedback(f) => (
            "feedback".into(),
            object([
                ("nps", f.nps.map(Value::from)),
                ("csat", f.csat.map(Value::from)),
                ("comment", f.comment.map(Value::from)),
            ]),
        ),
        Body::ProfileUpdated(p) => (
            "profile_updated".into(),
            object([("traits", p.traits.map(|t| Value::Object(struct_to_json(t))))]),
        ),
        Body::Acquired(a) => (
            "acquired".into(),
            object([
                ("channel", text(a.channel)),
                ("campaign", text(a.campaign)),
                ("cost", money(a.cost)),
            ]),
        ),
        Body::ConsentChanged(c) => (
            "consent_changed".into(),
            object([
                ("purpose", text(c.purpose)),
                ("granted", Some(Value::Bool(c.granted))),
            ]),
        ),
        Body::ErasureRequested(e) => (
            "erasure_requested".into(),
            object([("reason", text(e.reason))]),
        ),
        Body::IdentitiesLinked(l) => (
            "identities_linked".into(),
            object([
                (
                    "identities",
                    Some(Value::Array(
                        l.identities
                            .into_iter()
                            .map(|i| {
                                object([
                                    ("kind", text(i.kind)),
                                    ("value", Some(Value::String(i.value))),
                                ])
                            })
                            .collect(),
                    )),
                ),
                ("evidence", text(l.evidence)),
            ]),
        ),
        Body::CustomersUnmerged(u) => (
            "customers_unmerged".into(),
            object([
                ("merged_customer_id", text(u.merged_customer_id)),
                ("reason", text(u.reason)),
            ]),
        ),
        Body::Other(o) => (
            crate::json::event_type(&o.r#type),
            o.data.map_or(Value::Object(Map::new()), |d| {
                Value::Object(struct_to_json(d))
            }),
        ),
    }
}

fn struct_to_json(s: prost_types::Struct) -> Map<String, Value> {
    s.fields
        .into_iter()
        .map(|(k, v)| (k, value_to_json(v)))
        .collect()
}

fn value_to_json(v: prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n)) => {
            serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
        }
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
    }
}
