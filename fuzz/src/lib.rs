//! What every fuzz target checks, whatever the input: decoding and validation never panic, and an
//! event that passes them survives a round trip through Patron's own protobuf encoding unchanged
//! (what the store and the API would re-encode is what was accepted).

use chrono::TimeZone as _;
use patron_codec::{Limits, Message};
use prost::Message as _;

/// Decodes `message`, validates what decodes, and round-trips what validates.
pub fn check(message: &Message<'_>) {
    let Ok(raw) = patron_codec::decode(message, &Limits::default()) else {
        return;
    };
    let policy = patron_domain::ValidationPolicy::at(
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .single()
            .unwrap_or_else(chrono::Utc::now),
    );
    let Ok(event) = patron_domain::validate(raw, &policy) else {
        return;
    };
    let bytes = patron_codec::to_proto(&event).encode_to_vec();
    let again = Message {
        content_type: Some("application/protobuf"),
        headers: &[],
        key: Some(event.customer_id.as_str().as_bytes()),
        payload: &bytes,
    };
    let raw = patron_codec::decode(&again, &Limits::default())
        .unwrap_or_else(|e| panic!("re-encoded event does not decode: {e}\n{event:?}"));
    let back = patron_domain::validate(raw, &policy)
        .unwrap_or_else(|e| panic!("re-encoded event does not validate: {e}\n{event:?}"));
    assert_eq!(back, event, "the protobuf round trip changed the event");
}
