//! What every fuzz target checks, whatever the input: decoding and validation never panic, and an
//! event that passes them survives a round trip through Patron's own protobuf encoding unchanged
//! (what the store and the API would re-encode is what was accepted) — except that numbers inside
//! unknown fields (`extra`) travel as `google.protobuf.Struct` doubles: `800` comes back `800.0`,
//! so those are compared as doubles.

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
    if back != event {
        assert_eq!(
            numbers_as_doubles(&format!("{back:?}")),
            numbers_as_doubles(&format!("{event:?}")),
            "the protobuf round trip changed the event"
        );
    }
}

/// Rewrites every `Number(…)` of a debug-printed event as the double it denotes.
fn numbers_as_doubles(debug: &str) -> String {
    let mut out = String::with_capacity(debug.len());
    let mut rest = debug;
    while let Some(start) = rest.find("Number(") {
        let (before, after) = rest.split_at(start + "Number(".len());
        out.push_str(before);
        let end = after.find(')').unwrap_or(after.len());
        match after[..end].parse::<f64>() {
            Ok(number) => out.push_str(&format!("{number:e}")),
            Err(_) => out.push_str(&after[..end]),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}
