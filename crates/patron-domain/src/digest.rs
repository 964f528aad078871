//! What makes two events that share an id "the same event": a digest of their content.
//!
//! Event ids are idempotency keys. A producer that re-sends an event (after a timeout, a crash, a
//! replay) must be acknowledged, but a producer that reuses an id for *different* content has a
//! bug that silently loses data if the second event is dropped as a duplicate. The store keeps
//! an [`EventDigest`] beside every event to tell the two apart.
//!
//! The digest is SHA-256 over a canonical encoding of the validated [`Event`], version 1:
//!
//! ```text
//! "patron.event.v1" 0x00
//! event_id      16 bytes (the UUID's bytes)
//! customer_id   u32 big-endian byte length, UTF-8 bytes
//! occurred_at   i64 big-endian microseconds since the Unix epoch
//! source        u32 big-endian byte length, UTF-8 bytes
//! event_type    u32 big-endian byte length, UTF-8 bytes
//! payload       u32 big-endian byte length, the body's stored JSON (EventBody::to_payload_string)
//! ```
//!
//! It covers exactly what the store keeps of an event (not when it was recorded), at the
//! precision it keeps (validation already cuts event times to the microsecond). Because it is
//! computed from the validated event and not from the record's bytes, the same event digests the
//! same whether it arrived as protobuf, CloudEvents JSON or CloudEvents binary mode. The stored
//! JSON is canonical: typed fields in a fixed order, kept (unknown) fields in key order
//! (`serde_json`'s map is sorted). A change to any of this changes stored digests' meaning: it
//! needs a new version tag, and the golden test below pins version 1.

use std::fmt;

use sha2::{Digest as _, Sha256};

use crate::event::Event;

/// The version tag that starts the canonical encoding.
const VERSION_TAG: &[u8] = b"patron.event.v1\0";

/// SHA-256 of an event's canonical encoding (see the module documentation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventDigest(pub [u8; 32]);

impl EventDigest {
    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A digest from stored bytes; `None` unless there are exactly 32.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// The digest as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.as_bytes();
        if text.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            let digit = |c: u8| char::from(c).to_digit(16);
            *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
        }
        Some(Self(bytes))
    }
}

impl fmt::Display for EventDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for EventDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventDigest({self})")
    }
}

impl Event {
    /// The event's content digest (see [`EventDigest`]).
    pub fn digest(&self) -> EventDigest {
        self.digest_with_payload(&self.body.to_payload_string())
    }

    /// The digest, given the body's stored JSON (`self.body.to_payload_string()`) when the caller
    /// has it already, so that it is serialised once for both storing and digesting.
    pub fn digest_with_payload(&self, payload: &str) -> EventDigest {
        fn field(hash: &mut Sha256, bytes: &[u8]) {
            // Fields are bounded far below 4 GiB (payloads are limited at ingest).
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            hash.update(len.to_be_bytes());
            hash.update(bytes);
        }
        let mut hash = Sha256::new();
        hash.update(VERSION_TAG);
        hash.update(self.event_id.as_bytes());
        field(&mut hash, self.customer_id.as_str().as_bytes());
        hash.update(self.occurred_at.timestamp_micros().to_be_bytes());
        field(&mut hash, self.source.as_bytes());
        field(&mut hash, self.event_type().as_str().as_bytes());
        field(&mut hash, payload.as_bytes());
        EventDigest(hash.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::{Currency, CustomerId, EventBody, Money, Purchase};

    fn purchase(minor_units: i64, note: &str) -> Event {
        Event {
            event_id: Uuid::parse_str("6f1c1b0e-5c1a-4f5e-9a57-0f3c8b7f4a01").unwrap(),
            customer_id: CustomerId::parse("c-1").unwrap(),
            occurred_at: Utc.with_ymd_and_hms(2026, 1, 5, 10, 0, 0).unwrap(),
            source: "web-shop".into(),
            body: EventBody::Purchase(Purchase {
                order_id: "o-1".into(),
                amount: Money::new(minor_units, Currency::from_code("EUR").unwrap()).unwrap(),
                items: Vec::new(),
                extra: serde_json::Map::from_iter([
                    ("note".to_owned(), note.into()),
                    ("channel".to_owned(), "web".into()),
                ]),
            }),
        }
    }

    /// Version 1 of the encoding, pinned: if this fails, stored digests no longer mean what new
    /// ones do, and every redelivery after an upgrade would be reported as a conflict. The
    /// expected value was computed independently (Python `hashlib`, from the layout in the module
    /// documentation), not by this code.
    #[test]
    fn version_1_is_pinned() {
        let event = purchase(4999, "gift");
        let payload = event.body.to_payload_string();
        assert_eq!(
            payload,
            r#"{"order_id":"o-1","amount":{"minor_units":4999,"currency":"EUR"},"channel":"web","note":"gift"}"#,
            "the stored JSON is canonical: typed fields in order, kept fields by key"
        );
        assert_eq!(
            event.digest().to_hex(),
            "edaa5e1fbcc87c59df87e5d6e5ac131b47c42b549b2c7c778ca16107908aa2e4",
            "the canonical encoding changed"
        );
    }

    #[test]
    fn any_content_change_changes_the_digest_and_equal_content_does_not() {
        let base = purchase(4999, "gift");
        assert_eq!(base.digest(), purchase(4999, "gift").digest());
        let mut other_time = base.clone();
        other_time.occurred_at += chrono::TimeDelta::microseconds(1);
        let mut other_source = base.clone();
        other_source.source = "app".into();
        let mut other_customer = base.clone();
        other_customer.customer_id = CustomerId::parse("c-2").unwrap();
        for (what, changed) in [
            ("amount", purchase(5000, "gift")),
            ("kept field", purchase(4999, "gift!")),
            ("event time", other_time),
            ("source", other_source),
            ("customer", other_customer),
        ] {
            assert_ne!(
                base.digest(),
                changed.digest(),
                "{what} must change the digest"
            );
        }
    }

    #[test]
    fn hex_round_trips() {
        let digest = purchase(1, "x").digest();
        assert_eq!(EventDigest::from_hex(&digest.to_hex()), Some(digest));
        assert_eq!(
            EventDigest::from_hex(&digest.to_hex().to_uppercase()),
            Some(digest)
        );
        assert_eq!(EventDigest::from_hex("abc"), None);
        assert_eq!(EventDigest::from_hex(&"zz".repeat(32)), None);
        assert_eq!(EventDigest::from_slice(digest.as_bytes()), Some(digest));
        assert_eq!(EventDigest::from_slice(&[0; 31]), None);
    }
}
