//! The protobuf encoder against the decoders: every example event, and every body type with
//! extra fields, survives encode → protobuf bytes → decode → validate unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{TimeZone, Utc};
use patron_codec::{Limits, Message, decode, to_proto};
use patron_domain::{Event, EventBody, ValidationPolicy, validate};
use prost::Message as _;

fn policy() -> ValidationPolicy {
    ValidationPolicy::at(Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap())
}

fn try_json(line: &str) -> Option<Event> {
    let message = Message {
        content_type: Some("application/cloudevents+json"),
        payload: line.as_bytes(),
        ..Message::default()
    };
    validate(decode(&message, &Limits::default()).ok()?, &policy()).ok()
}

fn from_json(line: &str) -> Event {
    try_json(line).unwrap_or_else(|| panic!("a valid event: {line}"))
}

fn round_trip(event: &Event) -> Event {
    let bytes = to_proto(event).encode_to_vec();
    let key = event.customer_id.as_str().as_bytes();
    let message = Message {
        content_type: Some("application/protobuf"),
        key: Some(key),
        payload: &bytes,
        ..Message::default()
    };
    let raw = decode(&message, &Limits::default()).expect("the encoding decodes");
    validate(raw, &policy()).expect("the decoded encoding is valid")
}

/// Every body type, with line items, optional fields and extra fields (no integers in extras:
/// `google.protobuf.Struct` carries doubles).
const MORE: &str = r#"
{"specversion":"1.0","id":"6f1c1d8e-0000-4000-8000-000000000001","source":"shop","type":"patron.purchase.v1","subject":"c-9","time":"2026-01-02T03:04:05.123456789Z","data":{"order_id":"o-1","amount":{"minor_units":1999,"currency":"JPY"},"items":[{"sku":"a","quantity":2,"unit_price":{"minor_units":999,"currency":"JPY"}},{"sku":"b","quantity":1}],"coupon":"WINTER","gift":true,"ratio":0.25}}
{"specversion":"1.0","id":"6f1c1d8e-0000-4000-8000-000000000002","source":"shop","type":"patron.refund.v1","subject":"c-9","time":"2026-01-03T00:00:00Z","data":{"order_id":"o-1","amount":{"minor_units":500,"currency":"JPY"}}}
{"specversion":"1.0","id":"6f1c1d8e-0000-4000-8000-000000000003","source":"app","type":"patron.interaction.v1","subject":"c-9","time":"2026-01-04T00:00:00Z","data":{"channel":"app","kind":"scanned_qr_code","screen":"home"}}
{"specversion":"1.0","id":"6f1c1d8e-0000-4000-8000-000000000004","source":"survey","type":"patron.feedback.v1","subject":"c-9","time":"2026-01-05T00:00:00Z","data":{"nps":0,"csat":5,"comment":"très bien"}}
{"specversion":"1.0","id":"6f1c1d8e-0000-4000-8000-000000000005","source":"crm","type":"patron.consent_changed.v1","subject":"c-9","time":"2026-01-06T00:00:00Z","data":{"purpose":"marketing_email","granted":false}}
{"specversion":"1.0","id":"6f1c1d8e-0000-4000-8000-000000000006","source":"crm","type":"patron.erasure_requested.v1","subject":"c-9","time":"2026-01-07T00:00:00Z","data":{"reason":"gdpr"}}
{"specversion":"1.0","id":"6f1c1d8e-0000-4000-8000-000000000007","source":"crm","type":"patron.erasure_requested.v1","subject":"c-9","time":"2026-01-07T00:00:00Z","data":{}}
{"specversion":"1.0","id":"6f1c1d8e-0000-4000-8000-000000000008","source":"login","type":"patron.identities_linked.v1","subject":"c-9","time":"2026-01-08T00:00:00Z","data":{"identities":[{"kind":"email","value":"a@b.c"},{"kind":"wechat_unionid","value":"u1"},{"kind":"passport","value":"X"}],"evidence":"login"}}
{"specversion":"1.0","id":"6f1c1d8e-0000-4000-8000-000000000009","source":"loyalty","type":"patron.points_earned.v1","subject":"c-9","time":"2026-01-09T00:00:00Z","data":{"points":"12","tier":{"name":"gold","since":null}}}
{"specversion":"1.0","id":"6f1c1d8e-0000-4000-8000-00000000000a","source":"ads","type":"patron.acquired.v1","subject":"c-9","time":"2026-01-10T00:00:00Z","data":{"channel":"tv"}}
"#;

#[test]
fn every_example_event_round_trips() {
    // The example file has a deliberately invalid line or two: only valid events are stored.
    let examples = include_str!("../../../examples/events.jsonl");
    let mut events: Vec<Event> = examples.lines().filter_map(try_json).collect();
    assert!(
        events.len() > 150,
        "the example file was read: {} events",
        events.len()
    );
    events.extend(MORE.lines().filter(|l| !l.trim().is_empty()).map(from_json));
    for event in &events {
        assert_eq!(&round_trip(event), event);
    }
}

#[test]
fn integers_in_extras_come_back_as_doubles() {
    let event = from_json(
        r#"{"specversion":"1.0","id":"6f1c1d8e-0000-4000-8000-0000000000ff","source":"s","type":"patron.interaction.v1","subject":"c-9","time":"2026-01-04T00:00:00Z","data":{"channel":"web","kind":"visit","count":3}}"#,
    );
    let EventBody::Interaction(back) = round_trip(&event).body else {
        panic!("an interaction comes back as an interaction");
    };
    assert_eq!(
        back.extra["count"].as_f64(),
        Some(3.0),
        "the documented Struct limit"
    );
}
