use chrono::TimeZone;
use serde_json::json;

use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn raw(event_type: &str, data: Value) -> RawEvent {
    RawEvent {
        event_id: Some("0193a0c4-1f4e-7b6a-9a55-0c1e2d3f4a5b".into()),
        customer_id: Some("c-42".into()),
        event_type: Some(event_type.into()),
        occurred_at: Some(RawTime::Text("2026-11-20T10:00:00Z".into())),
        source: Some("web-shop".into()),
        data,
        identity: None,
    }
}

fn purchase(amount: Value) -> RawEvent {
    raw("purchase", json!({"order_id": "o-1", "amount": amount}))
}

fn check(raw: RawEvent) -> Result<Event, ValidationError> {
    validate(raw, &ValidationPolicy::at(now()))
}

#[track_caller]
fn rejected(raw: RawEvent, class: ErrorClass, field: &str) -> ValidationError {
    let err = check(raw).expect_err("expected the event to be rejected");
    assert_eq!(err.class, class, "class of {err}");
    assert_eq!(err.field, field, "field of {err}");
    err
}

#[test]
fn a_valid_purchase_becomes_a_typed_event() {
    let event = check(raw(
        "purchase",
        json!({
            "order_id": "o-1",
            "amount": {"minor_units": 2598, "currency": "EUR"},
            "items": [{"sku": "tea", "quantity": 2, "unit_price": {"minor_units": 1299, "currency": "EUR"}}],
            "coupon": "WELCOME"
        }),
    ))
    .unwrap();
    assert_eq!(event.customer_id.as_str(), "c-42");
    assert_eq!(event.source, "web-shop");
    assert_eq!(
        event.occurred_at,
        Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap()
    );
    let EventBody::Purchase(p) = event.body else {
        panic!("expected a purchase, got {:?}", event.body)
    };
    assert_eq!(p.amount.minor_units, 2598);
    assert_eq!(p.amount.currency.code(), "EUR");
    assert_eq!(p.items[0].quantity, 2);
    assert_eq!(p.extra["coupon"], "WELCOME", "unknown fields are kept");
}

#[test]
fn amounts_may_arrive_as_quoted_integers() {
    let event = check(purchase(
        json!({"minor_units": "9007199254740993", "currency": "JPY"}),
    ));
    // 2^53 + 1 survives exactly because it never passes through a float.
    let err = event.expect_err("beyond the per-event maximum");
    assert_eq!(err.class, ErrorClass::InvalidAmount);
    let event = check(purchase(json!({"minor_units": "1999", "currency": "USD"}))).unwrap();
    let EventBody::Purchase(p) = event.body else {
        panic!("expected a purchase")
    };
    assert_eq!(p.amount.minor_units, 1999);
}

#[test]
fn money_errors_are_precise() {
    rejected(
        purchase(json!({"minor_units": -1, "currency": "EUR"})),
        ErrorClass::NegativeAmount,
        "data.amount.minor_units",
    );
    rejected(
        purchase(json!({"minor_units": 12.5, "currency": "EUR"})),
        ErrorClass::InvalidAmount,
        "data.amount.minor_units",
    );
    rejected(
        purchase(json!({"minor_units": 1e3, "currency": "EUR"})),
        ErrorClass::InvalidAmount,
        "data.amount.minor_units",
    );
    rejected(
        purchase(json!({"minor_units": "12.50", "currency": "EUR"})),
        ErrorClass::InvalidAmount,
        "data.amount.minor_units",
    );
    rejected(
        purchase(json!({"minor_units": 100, "currency": "XXY"})),
        ErrorClass::UnknownCurrency,
        "data.amount.currency",
    );
    rejected(
        purchase(json!({"minor_units": 100})),
        ErrorClass::MissingField,
        "data.amount.currency",
    );
    rejected(
        purchase(json!({"amount": 100, "currency": "EUR"})),
        ErrorClass::MissingField,
        "data.amount.minor_units",
    );
    rejected(
        purchase(json!("19.99 EUR")),
        ErrorClass::InvalidField,
        "data.amount",
    );
    rejected(
        purchase(json!({"minor_units": u64::MAX, "currency": "EUR"})),
        ErrorClass::InvalidAmount,
        "data.amount.minor_units",
    );
    rejected(
        raw(
            "refund",
            json!({"order_id": "o-1", "amount": {"minor_units": 0, "currency": "EUR"}}),
        ),
        ErrorClass::InvalidAmount,
        "data.amount.minor_units",
    );
}

#[test]
fn envelope_errors_are_precise() {
    let mut r = purchase(json!({"minor_units": 1, "currency": "EUR"}));
    r.event_id = None;
    rejected(r, ErrorClass::MissingField, "event_id");
    let mut r = purchase(json!({"minor_units": 1, "currency": "EUR"}));
    r.event_id = Some("not-a-uuid".into());
    rejected(r, ErrorClass::InvalidField, "event_id");
    let mut r = purchase(json!({"minor_units": 1, "currency": "EUR"}));
    r.event_id = Some(Uuid::nil().to_string());
    rejected(r, ErrorClass::InvalidField, "event_id");
    let mut r = purchase(json!({"minor_units": 1, "currency": "EUR"}));
    r.customer_id = Some("   ".into());
    rejected(r, ErrorClass::InvalidField, "customer_id");
    let mut r = purchase(json!({"minor_units": 1, "currency": "EUR"}));
    r.source = None;
    rejected(r, ErrorClass::MissingField, "source");
    let mut r = purchase(json!({"minor_units": 1, "currency": "EUR"}));
    r.event_type = Some(" ".into());
    rejected(r, ErrorClass::MissingField, "type");
    rejected(
        raw("purchase", json!([1, 2])),
        ErrorClass::InvalidField,
        "data",
    );
}

#[test]
fn absurd_timestamps_are_rejected() {
    for text in [
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "9999-12-31T00:00:00Z",
        "2026-11-25T12:00:01Z",
    ] {
        let mut r = purchase(json!({"minor_units": 1, "currency": "EUR"}));
        r.occurred_at = Some(RawTime::Text(text.into()));
        rejected(r, ErrorClass::TimestampOutOfRange, "occurred_at");
    }
    let mut r = purchase(json!({"minor_units": 1, "currency": "EUR"}));
    r.occurred_at = Some(RawTime::Unix {
        seconds: i64::MAX,
        nanos: 0,
    });
    rejected(r, ErrorClass::TimestampOutOfRange, "occurred_at");
    let mut r = purchase(json!({"minor_units": 1, "currency": "EUR"}));
    r.occurred_at = Some(RawTime::Text("yesterday".into()));
    rejected(r, ErrorClass::InvalidField, "occurred_at");
    // Within a day of skew is fine; so is a 1997 backfill.
    for text in [
        "2026-11-24T11:00:00Z",
        "1997-01-01T00:00:00Z",
        "2026-11-20T10:00:00+08:00",
    ] {
        let mut r = purchase(json!({"minor_units": 1, "currency": "EUR"}));
        r.occurred_at = Some(RawTime::Text(text.into()));
        check(r).unwrap_or_else(|e| panic!("{text} should be accepted: {e}"));
    }
}

#[test]
fn every_known_body_validates() {
    let bodies = [
        (
            "refund",
            json!({"order_id": "o-1", "amount": {"minor_units": 500, "currency": "GBP"}, "reason": "damaged"}),
        ),
        (
            "interaction",
            json!({"channel": "email", "kind": "email_click"}),
        ),
        ("feedback", json!({"nps": 9, "csat": 5, "comment": "great"})),
        ("profile_updated", json!({"traits": {"name": "Ada"}})),
        (
            "acquired",
            json!({"channel": "paid_search", "campaign": "bf-2026", "cost": {"minor_units": 1250, "currency": "USD"}}),
        ),
        (
            "consent_changed",
            json!({"purpose": "marketing_email", "granted": false}),
        ),
        ("erasure_requested", json!({})),
        (
            "identities_linked",
            json!({"identities": [{"kind": "email", "value": "ada@example.com"}, {"kind": "wechat_unionid", "value": "o6_bmasdasdsad6_2sgVt7hMZOPfL"}], "evidence": "login"}),
        ),
        (
            "customers_unmerged",
            json!({"merged_customer_id": "c-7", "reason": "two people"}),
        ),
        ("points_earned", json!({"points": 40})),
    ];
    for (event_type, data) in bodies {
        let event = check(raw(event_type, data.clone()))
            .unwrap_or_else(|e| panic!("{event_type} should validate: {e}"));
        assert_eq!(event.event_type().as_str(), event_type);
        // The stored form decodes back to the same body.
        let back = EventBody::from_payload(event_type, event.body.to_payload()).unwrap();
        assert_eq!(
            back, event.body,
            "{event_type} round-trips through its stored form"
        );
        let text = EventBody::from_payload_str(event_type, &event.body.to_payload_string());
        assert_eq!(
            text.unwrap(),
            event.body,
            "{event_type} round-trips through its stored text"
        );
    }
}

#[test]
fn body_errors_are_precise() {
    rejected(
        raw("feedback", json!({"nps": 11})),
        ErrorClass::InvalidField,
        "data.nps",
    );
    rejected(
        raw("feedback", json!({"csat": 0})),
        ErrorClass::InvalidField,
        "data.csat",
    );
    rejected(
        raw("feedback", json!({})),
        ErrorClass::MissingField,
        "data.nps|data.csat|data.comment",
    );
    rejected(
        raw(
            "consent_changed",
            json!({"purpose": "sms", "granted": "yes"}),
        ),
        ErrorClass::InvalidField,
        "data.granted",
    );
    rejected(
        raw(
            "consent_changed",
            json!({"purpose": "marketing email", "granted": true}),
        ),
        ErrorClass::InvalidField,
        "data.purpose",
    );
    rejected(
        raw(
            "identities_linked",
            json!({"identities": [{"kind": "device_id", "value": "00000000-0000"}]}),
        ),
        ErrorClass::InvalidField,
        "data.identities[0].value",
    );
    rejected(
        raw(
            "identities_linked",
            json!({"identities": [{"kind": "email", "value": "anonymous"}]}),
        ),
        ErrorClass::InvalidField,
        "data.identities[0].value",
    );
    rejected(
        raw("identities_linked", json!({})),
        ErrorClass::MissingField,
        "data.identities",
    );
    rejected(
        raw(
            "purchase",
            json!({"order_id": "o", "amount": {"minor_units": 1, "currency": "EUR"}, "items": [{"sku": "a", "quantity": 0}]}),
        ),
        ErrorClass::InvalidField,
        "data.items[0].quantity",
    );
    rejected(
        raw(
            "purchase",
            json!({"order_id": "o", "amount": {"minor_units": 1, "currency": "EUR"}, "items": [{"sku": "a", "unit_price": {"minor_units": 1, "currency": "USD"}}]}),
        ),
        ErrorClass::InvalidField,
        "data.items[0].unit_price.currency",
    );
    rejected(
        raw(
            "interaction",
            json!({"channel": "x".repeat(65), "kind": "visit"}),
        ),
        ErrorClass::InvalidField,
        "data.channel",
    );
    rejected(
        raw("profile_updated", json!({"traits": {}})),
        ErrorClass::InvalidField,
        "data.traits",
    );
}

#[test]
fn nul_characters_are_refused_anywhere() {
    rejected(
        raw("profile_updated", json!({"traits": {"name": "A\u{0}da"}})),
        ErrorClass::InvalidField,
        "data.traits.name",
    );
    rejected(
        raw("points_earned", json!({"notes": ["ok", "b\u{0}ad"]})),
        ErrorClass::InvalidField,
        "data.notes[1]",
    );
    let mut r = raw("interaction", json!({"channel": "web", "kind": "visit"}));
    r.source = Some("we\u{0}b".into());
    rejected(r, ErrorClass::InvalidField, "source");
}

#[test]
fn producers_cannot_send_ticks_or_use_reserved_streams() {
    let err = rejected(raw("tick", json!({})), ErrorClass::InvalidField, "type");
    assert!(
        err.message.contains("projector"),
        "says who writes ticks: {err}"
    );
    let mut reserved = raw("interaction", json!({"channel": "web", "kind": "visit"}));
    reserved.customer_id = Some("$clock".into());
    let err = rejected(reserved, ErrorClass::InvalidField, "customer_id");
    assert!(err.message.contains("reserved"), "explains why: {err}");
}

#[test]
fn merges_come_from_patron_and_unmerges_name_another_customer() {
    let merged = json!({"merged_customer_id": "c-7", "link_event_id": "0193a0c4-1f4e-7b6a-9a55-0c1e2d3f4a5b", "identity_kind": "email"});
    let err = rejected(
        raw("customers_merged", merged),
        ErrorClass::InvalidField,
        "type",
    );
    assert!(
        err.message.contains("identities_linked"),
        "says what to send: {err}"
    );
    rejected(
        raw("customers_unmerged", json!({"merged_customer_id": "c-42"})),
        ErrorClass::InvalidField,
        "data.merged_customer_id",
    );
    rejected(
        raw(
            "customers_unmerged",
            json!({"merged_customer_id": "$clock"}),
        ),
        ErrorClass::InvalidField,
        "data.merged_customer_id",
    );
    rejected(
        raw("customers_unmerged", json!({})),
        ErrorClass::MissingField,
        "data.merged_customer_id",
    );
    // A provisional customer Patron made can be split off again.
    let event = check(raw(
        "customers_unmerged",
        json!({"merged_customer_id": "~device_id:0123abcd"}),
    ))
    .expect("a provisional customer can be named");
    assert!(
        matches!(event.body, EventBody::CustomersUnmerged(u) if u.merged_customer_id.is_provisional())
    );
}

#[test]
fn an_event_may_name_its_customer_by_an_identifier_only() {
    let policy = ValidationPolicy::at(now());
    let mut by_device = raw("interaction", json!({"channel": "app", "kind": "app_open"}));
    by_device.customer_id = None;
    by_device.identity = Some(("device_id".into(), "dev-42".into()));
    let (event, identity) = validate_subject(by_device.clone(), &policy).expect("valid");
    assert_eq!(event.customer_id, CustomerId::unresolved());
    let identity = identity.expect("the identifier to resolve");
    assert_eq!(
        (identity.kind.as_str(), identity.value.as_str()),
        ("device_id", "dev-42")
    );
    // `validate` needs a customer id.
    let err = check(by_device.clone()).expect_err("no customer id");
    assert_eq!(
        (err.class, err.field.as_str()),
        (ErrorClass::MissingField, "customer_id")
    );
    // A customer id wins over an identifier.
    let mut both = by_device.clone();
    both.customer_id = Some("c-1".into());
    let (event, identity) = validate_subject(both, &policy).expect("valid");
    assert_eq!((event.customer_id.as_str(), identity), ("c-1", None));
    // Placeholders and empty kinds are refused.
    for (kind, value, field) in [
        ("device_id", "00000000-0000-0000", "identity.value"),
        ("email", " NULL ", "identity.value"),
        ("", "dev-42", "identity.kind"),
    ] {
        let mut junk = by_device.clone();
        junk.identity = Some((kind.into(), value.into()));
        let err = validate_subject(junk, &policy).expect_err("junk");
        assert_eq!(err.field, field, "{kind}={value}: {err}");
    }
    // Producers cannot write to provisional customers directly.
    let mut provisional = raw("interaction", json!({"channel": "app", "kind": "app_open"}));
    provisional.customer_id = Some("~device_id:0123".into());
    let err = rejected(provisional, ErrorClass::InvalidField, "customer_id");
    assert!(err.message.contains("identifier"), "{err}");
}

#[test]
fn identifiers_normalize_to_one_spelling() {
    let email = Identity {
        kind: IdentityKind::Email,
        value: "  Ada@Example.COM ".into(),
    };
    assert_eq!(email.normalized_value(), "ada@example.com");
    let phone = Identity {
        kind: IdentityKind::Phone,
        value: "+44 (7700) 900-123".into(),
    };
    assert_eq!(phone.normalized_value(), "+447700900123");
    let device = Identity {
        kind: IdentityKind::DeviceId,
        value: " AbC-1 ".into(),
    };
    assert_eq!(
        device.normalized_value(),
        "AbC-1",
        "device ids keep their case"
    );
}

#[test]
fn producers_cannot_send_model_events() {
    let data =
        json!({"version": 1, "time_unit": "weeks", "r": "1", "alpha": "1", "a": "1", "b": "1"});
    let err = rejected(raw("model_fitted", data), ErrorClass::InvalidField, "type");
    assert!(
        err.message.contains("fitter"),
        "says who writes them: {err}"
    );
}

#[test]
fn a_model_event_round_trips_its_parameters_exactly() {
    let (r, alpha, a, b) = (
        0.2425945_f64,
        4.413_f64 / 3.0,
        0.1_f64 + 0.2,
        2.0_f64.sqrt(),
    );
    let body = EventBody::ModelFitted(crate::ModelFitted {
        version: 3,
        time_unit: "weeks".into(),
        r: r.to_string(),
        alpha: alpha.to_string(),
        a: a.to_string(),
        b: b.to_string(),
    });
    let back = EventBody::from_payload("model_fitted", body.to_payload()).unwrap();
    assert_eq!(back, body);
    let EventBody::ModelFitted(model) = back else {
        panic!("not a model event: {back:?}");
    };
    let (r2, alpha2, a2, b2) = model.parameters().expect("valid parameters");
    assert_eq!(
        [r2.to_bits(), alpha2.to_bits(), a2.to_bits(), b2.to_bits()],
        [r.to_bits(), alpha.to_bits(), a.to_bits(), b.to_bits()]
    );
    let bad = crate::ModelFitted {
        b: "-1".into(),
        ..model
    };
    assert!(
        bad.parameters().is_none(),
        "a negative parameter is refused"
    );
    assert!(CustomerId::clv().is_reserved());
}

#[test]
fn a_type_with_control_characters_or_too_long_is_refused_not_stored() {
    for bad in ["shop.order\u{0}created", "shop.order\ncreated", "\u{7f}x"] {
        let err = rejected(raw(bad, json!({})), ErrorClass::InvalidField, "type");
        assert!(err.message.contains("control"), "{bad:?}: {err}");
    }
    let long = "t".repeat(MAX_TYPE_CHARS + 1);
    let err = rejected(raw(&long, json!({})), ErrorClass::InvalidField, "type");
    assert!(err.message.contains("at most"), "{err}");
    // An unknown type of ordinary text is kept as sent.
    let kept = check(raw(&"t".repeat(MAX_TYPE_CHARS), json!({"x": 1}))).expect("valid");
    assert_eq!(kept.event_type().as_str(), "t".repeat(MAX_TYPE_CHARS));
}

#[test]
fn producers_cannot_send_source_progress() {
    let data = json!({"partitions": [{"topic": "t", "partition": 0, "behind": true}]});
    let err = rejected(
        raw("source_progress", data),
        ErrorClass::InvalidField,
        "type",
    );
    assert!(
        err.message.contains("ingest"),
        "says who writes them: {err}"
    );
}

#[test]
fn source_progress_round_trips_through_its_stored_form() {
    let at = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:00:00.5Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let body = EventBody::SourceProgress(crate::SourceProgress {
        partitions: vec![
            crate::PartitionProgress {
                topic: "customer-events".into(),
                partition: 3,
                read_to: Some(at),
                behind: true,
            },
            crate::PartitionProgress {
                topic: "customer-events".into(),
                partition: 0,
                read_to: None,
                behind: false,
            },
        ],
    });
    let text = body.to_payload_string();
    assert_eq!(
        EventBody::from_payload_str("source_progress", &text).unwrap(),
        body
    );
    assert_eq!(
        EventBody::from_payload("source_progress", body.to_payload()).unwrap(),
        body
    );
    assert!(CustomerId::sources().is_reserved());
}

#[test]
fn a_tick_round_trips_through_its_stored_form() {
    let body = EventBody::Tick(crate::Tick {});
    assert_eq!(body.to_payload_string(), "{}");
    let back = EventBody::from_payload("tick", body.to_payload()).unwrap();
    assert_eq!(back, body);
    assert!(CustomerId::clock().is_reserved());
}

#[test]
fn event_times_are_kept_to_the_microsecond() {
    let mut r = raw("interaction", json!({"channel": "web", "kind": "visit"}));
    r.occurred_at = Some(RawTime::Text("2026-11-20T10:00:00.123456789Z".into()));
    let at = check(r).expect("valid").occurred_at;
    assert_eq!(at.to_rfc3339(), "2026-11-20T10:00:00.123456+00:00");
    let mut r = raw("interaction", json!({"channel": "web", "kind": "visit"}));
    r.occurred_at = Some(RawTime::Unix {
        seconds: 1_795_000_000,
        nanos: 999_999_999,
    });
    let at = check(r).expect("valid").occurred_at;
    assert_eq!(chrono::Timelike::nanosecond(&at), 999_999_000);
}
