use chrono::{TimeZone, Utc};
use patron_domain::{EventBody, ValidationPolicy, validate};
use patron_proto::events::v1 as pb;
use prost::Message as _;

use super::*;

const EVENT_ID: &str = "0193a0c4-1f4e-7b6a-9a55-0c1e2d3f4a5b";

fn policy() -> ValidationPolicy {
    ValidationPolicy::at(Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap())
}

fn message<'a>(content_type: Option<&'a str>, payload: &'a [u8]) -> Message<'a> {
    Message {
        content_type,
        headers: &[],
        key: None,
        payload,
    }
}

fn pb_purchase() -> pb::CustomerEvent {
    pb::CustomerEvent {
        identity: None,
        event_id: EVENT_ID.into(),
        customer_id: "c-42".into(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: 1_795_000_000,
            nanos: 0,
        }),
        source: "web-shop".into(),
        extra: Some(prost_types::Struct {
            fields: [(
                "coupon".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue("WELCOME".into())),
                },
            )]
            .into(),
        }),
        body: Some(pb::customer_event::Body::Purchase(pb::Purchase {
            order_id: "o-1".into(),
            amount: Some(pb::Money {
                minor_units: 2598,
                currency: "EUR".into(),
            }),
            items: vec![pb::LineItem {
                sku: "tea".into(),
                quantity: 2,
                unit_price: None,
            }],
        })),
    }
}

const STRUCTURED: &str = r#"{
  "specversion": "1.0",
  "id": "0193a0c4-1f4e-7b6a-9a55-0c1e2d3f4a5b",
  "source": "web-shop",
  "type": "patron.purchase.v1",
  "subject": "c-42",
  "time": "2026-11-20T10:00:00Z",
  "datacontenttype": "application/json",
  "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
  "data": {"order_id": "o-1", "amount": {"minor_units": 2598, "currency": "EUR"}}
}"#;

#[test]
fn structured_cloudevents_decode_and_validate() {
    for content_type in [
        Some("application/cloudevents+json; charset=utf-8"),
        Some("application/json"),
        None,
    ] {
        let raw = decode(
            &message(content_type, STRUCTURED.as_bytes()),
            &Limits::default(),
        )
        .unwrap_or_else(|e| panic!("{content_type:?}: {e}"));
        let event = validate(raw, &policy()).expect("valid purchase");
        assert_eq!(event.customer_id.as_str(), "c-42");
        let EventBody::Purchase(p) = event.body else {
            panic!("expected a purchase")
        };
        assert_eq!(p.amount.minor_units, 2598);
        assert_eq!(
            p.extra["ce_extensions"]["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "extension attributes are kept"
        );
    }
}

#[test]
fn binary_cloudevents_read_ce_headers() {
    let headers: Vec<(&str, &[u8])> = vec![
        ("ce_specversion", b"1.0"),
        ("ce_id", EVENT_ID.as_bytes()),
        ("ce_source", b"crm"),
        ("ce_type", b"patron.feedback.v1"),
        ("ce_time", b"2026-11-20T10:00:00Z"),
        ("content-type", b"application/json"),
    ];
    let payload = br#"{"nps": 9, "comment": "quick delivery"}"#;
    let m = Message {
        content_type: None,
        headers: &headers,
        key: Some(b"c-7"),
        payload,
    };
    assert_eq!(format_of(&m).unwrap(), Format::CloudEventsBinary);
    let event = validate(decode(&m, &Limits::default()).unwrap(), &policy()).unwrap();
    assert_eq!(
        event.customer_id.as_str(),
        "c-7",
        "the key supplies the customer id"
    );
    assert_eq!(event.source, "crm");
    let EventBody::Feedback(f) = event.body else {
        panic!("expected feedback")
    };
    assert_eq!(f.nps, Some(9));
}

#[test]
fn protobuf_decodes_and_validates() {
    let bytes = pb_purchase().encode_to_vec();
    for content_type in [
        Some("application/protobuf"),
        Some("application/x-protobuf"),
        None,
    ] {
        let raw = decode(&message(content_type, &bytes), &Limits::default()).unwrap();
        let event = validate(raw, &policy()).expect("valid purchase");
        assert_eq!(event.occurred_at.timestamp(), 1_795_000_000);
        let EventBody::Purchase(p) = event.body else {
            panic!("expected a purchase")
        };
        assert_eq!(
            (p.amount.minor_units, p.amount.currency.code()),
            (2598, "EUR")
        );
        assert_eq!(p.items[0].quantity, 2);
        assert_eq!(
            p.extra["coupon"], "WELCOME",
            "envelope extras are kept with the body"
        );
    }
}

/// The committed bytes were written by an earlier version of the schema. They must keep
/// decoding to the same event for as long as `patron.events.v1` exists.
#[test]
fn golden_protobuf_keeps_decoding() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/purchase.v1.pb");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, pb_purchase().encode_to_vec()).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}); UPDATE_GOLDEN=1 writes it",
            path.display()
        )
    });
    let raw = decode(
        &message(Some("application/protobuf"), &bytes),
        &Limits::default(),
    )
    .unwrap();
    let event = validate(raw, &policy()).unwrap();
    assert_eq!(event.event_id.to_string(), EVENT_ID);
    assert_eq!(event.customer_id.as_str(), "c-42");
    assert_eq!(event.source, "web-shop");
    let EventBody::Purchase(p) = event.body else {
        panic!("expected a purchase")
    };
    assert_eq!((p.order_id.as_str(), p.amount.minor_units), ("o-1", 2598));
}

#[test]
fn golden_cloudevents_keep_decoding() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/cloudevents.v1.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut types = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let raw = decode(&message(None, line.as_bytes()), &Limits::default())
            .unwrap_or_else(|e| panic!("line {}: {e}", n + 1));
        let event = validate(raw, &policy()).unwrap_or_else(|e| panic!("line {}: {e}", n + 1));
        types.push(event.event_type().as_str().to_owned());
    }
    assert_eq!(
        types,
        [
            "purchase",
            "refund",
            "interaction",
            "feedback",
            "profile_updated",
            "acquired",
            "consent_changed",
            "erasure_requested",
            "identities_linked",
            "points_earned"
        ]
    );
}

#[test]
fn bad_input_gets_a_precise_class() {
    let limits = Limits {
        max_payload_bytes: 64,
    };
    let cases: Vec<(Message<'_>, ErrorClass, &str)> = vec![
        (
            message(Some("application/protobuf"), b"\xff\xff\xff\xff"),
            ErrorClass::Undecodable,
            "record",
        ),
        (
            message(Some("application/json"), b"{\"specversion\": \"1.0\""),
            ErrorClass::Undecodable,
            "record",
        ),
        (
            message(Some("application/json"), b"[1,2]"),
            ErrorClass::Undecodable,
            "record",
        ),
        (
            message(Some("application/json"), b"\"\xc3\x28\""),
            ErrorClass::Undecodable,
            "record",
        ),
        (
            message(Some("text/csv"), b"a,b"),
            ErrorClass::UnsupportedContentType,
            "content-type",
        ),
        (
            message(None, &[b'{'; 65]),
            ErrorClass::PayloadTooLarge,
            "record",
        ),
        (
            message(Some("application/json"), b"{\"id\": \"x\"}"),
            ErrorClass::MissingField,
            "specversion",
        ),
        (
            message(Some("application/json"), b"{\"specversion\": \"0.3\"}"),
            ErrorClass::InvalidField,
            "specversion",
        ),
        (
            message(
                Some("application/json"),
                b"{\"specversion\":\"1.0\",\"data_base64\":\"AA==\"}",
            ),
            ErrorClass::UnsupportedContentType,
            "data_base64",
        ),
    ];
    for (m, class, field) in cases {
        let err = decode(&m, &limits).expect_err("bad input must be rejected");
        assert_eq!((err.class, err.field.as_str()), (class, field), "{err}");
    }
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let err = decode(
        &message(Some("application/json"), deep.as_bytes()),
        &Limits {
            max_payload_bytes: 1 << 20,
        },
    )
    .expect_err("deep nesting is refused, not a stack overflow");
    assert_eq!(err.class, ErrorClass::Undecodable);
}

#[test]
fn key_must_agree_with_the_customer_id() {
    let m = Message {
        content_type: None,
        headers: &[],
        key: Some(b"c-other"),
        payload: STRUCTURED.as_bytes(),
    };
    let err = decode(&m, &Limits::default()).expect_err("key and subject disagree");
    assert_eq!(
        (err.class, err.field.as_str()),
        (ErrorClass::InvalidField, "customer_id")
    );
}

/// In binary mode the event's attributes travel in headers: a 900 KB `ce_source` with a small
/// payload is as large a record as a 900 KB payload, and refused the same way; the key counts too.
#[test]
fn headers_and_key_count_toward_the_size_limit() {
    let source = vec![b's'; 900 * 1024];
    let headers: Vec<(&str, &[u8])> = vec![
        ("ce_specversion", b"1.0"),
        ("ce_id", EVENT_ID.as_bytes()),
        ("ce_source", &source),
        ("ce_type", b"patron.feedback.v1"),
        ("ce_time", b"2026-11-20T10:00:00Z"),
        ("content-type", b"application/json"),
    ];
    let payload = br#"{"nps": 9}"#;
    let m = Message {
        content_type: None,
        headers: &headers,
        key: Some(b"c-7"),
        payload,
    };
    let error = decode(&m, &Limits::default()).unwrap_err();
    assert_eq!(error.class, ErrorClass::PayloadTooLarge, "{error}");
    assert!(size_of(&m) > 900 * 1024);

    let key = vec![b'k'; 300 * 1024];
    let m = Message {
        content_type: Some("application/json"),
        headers: &[],
        key: Some(&key),
        payload,
    };
    let error = decode(&m, &Limits::default()).unwrap_err();
    assert_eq!(error.class, ErrorClass::PayloadTooLarge, "{error}");
}
