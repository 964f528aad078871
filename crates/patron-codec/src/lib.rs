//! Decoding Patron's wire formats into [`RawEvent`]s, ready for [`patron_domain::validate`].
//!
//! Three shapes arrive:
//!
//! * the protobuf envelope `patron.events.v1.CustomerEvent` (`application/protobuf`, also
//!   `application/x-protobuf`);
//! * CloudEvents JSON in structured mode (`application/cloudevents+json`, or `application/json`
//!   with a `specversion` attribute);
//! * CloudEvents in binary mode: attributes in `ce_*` headers, the data in the payload.
//!
//! The content type says which; without one, the payload is sniffed (JSON starts with `{`).
//! Every failure is a [`ValidationError`] with a class fit for a dead-letter header.

mod encode;
mod json;
mod protobuf;

use patron_domain::{ErrorClass, RawEvent, ValidationError};

pub use encode::to_proto;
pub use json::CLOUDEVENTS_TYPE_PREFIX;
pub use protobuf::to_raw;

/// One inbound message, as any transport (Kafka, a file, gRPC) hands it over.
#[derive(Debug, Clone, Copy, Default)]
pub struct Message<'a> {
    /// The `content-type` header, if any.
    pub content_type: Option<&'a str>,
    /// All headers (CloudEvents binary mode reads the `ce_*` ones).
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The message key: by convention the customer id.
    pub key: Option<&'a [u8]>,
    /// The bytes.
    pub payload: &'a [u8],
}

/// Bounds on what is accepted.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest payload accepted, in bytes.
    pub max_payload_bytes: usize,
}

impl Default for Limits {
    /// 256 KiB: far above any real customer event, far below what would hurt the store.
    fn default() -> Self {
        Self {
            max_payload_bytes: 256 * 1024,
        }
    }
}

/// The wire format of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `patron.events.v1.CustomerEvent`.
    Protobuf,
    /// CloudEvents JSON, structured mode.
    CloudEventsJson,
    /// CloudEvents binary mode: `ce_*` headers plus a JSON data payload.
    CloudEventsBinary,
}

/// The bytes a message takes: key, header names and values, payload (in binary mode the event's
/// attributes travel in `ce_*` headers, so they count like the payload).
pub fn size_of(message: &Message<'_>) -> usize {
    message.key.map_or(0, <[u8]>::len)
        + message
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum::<usize>()
        + message.payload.len()
}

/// Decodes a message into a raw event, checking its size, format and key.
pub fn decode(message: &Message<'_>, limits: &Limits) -> Result<RawEvent, ValidationError> {
    let size = size_of(message);
    if size > limits.max_payload_bytes {
        return Err(ValidationError::new(
            ErrorClass::PayloadTooLarge,
            "record",
            format!(
                "record is {size} bytes (key, headers and payload; payload {}), the limit is {}",
                message.payload.len(),
                limits.max_payload_bytes
            ),
        ));
    }
    let mut raw = match format_of(message)? {
        Format::Protobuf => protobuf::decode(message.payload)?,
        Format::CloudEventsJson => json::decode_structured(message.payload)?,
        Format::CloudEventsBinary => json::decode_binary(message.headers, message.payload)?,
    };
    reconcile_key(&mut raw, message.key)?;
    Ok(raw)
}

/// Decides the format from the content type, CloudEvents headers, or (absent both) the bytes.
pub fn format_of(message: &Message<'_>) -> Result<Format, ValidationError> {
    let binary = header(message.headers, "ce_specversion").is_some();
    let content_type = message.content_type.or_else(|| {
        header(message.headers, "content-type").and_then(|v| std::str::from_utf8(v).ok())
    });
    let media = content_type.map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    match media.as_deref() {
        Some(
            "application/protobuf" | "application/x-protobuf" | "application/vnd.google.protobuf",
        ) => Ok(Format::Protobuf),
        Some("application/cloudevents+json") => Ok(Format::CloudEventsJson),
        Some("application/json" | "text/json") if binary => Ok(Format::CloudEventsBinary),
        Some("application/json" | "text/json") => Ok(Format::CloudEventsJson),
        Some(other) => Err(ValidationError::new(
            ErrorClass::UnsupportedContentType,
            "content-type",
            format!(
                "{other:?} is not supported (use application/protobuf, application/cloudevents+json \
                 or application/json)"
            ),
        )),
        None if binary => Ok(Format::CloudEventsBinary),
        None => Ok(sniff(message.payload)),
    }
}

fn sniff(payload: &[u8]) -> Format {
    match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Format::CloudEventsJson,
        _ => Format::Protobuf,
    }
}

/// Finds a header by (case-insensitive) name.
fn header<'a>(headers: &[(&str, &'a [u8])], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// The key is the customer id: it fills a missing one, and must agree with a present one
/// (partitioning by key would otherwise split a customer's stream across partitions). An event
/// that names its customer only by an identifier may be keyed by anything (the identifier,
/// say): its key is only a partitioning key.
fn reconcile_key(raw: &mut RawEvent, key: Option<&[u8]>) -> Result<(), ValidationError> {
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return Ok(());
    };
    if raw.identity.is_some()
        && raw
            .customer_id
            .as_deref()
            .is_none_or(|id| id.trim().is_empty())
    {
        return Ok(());
    }
    let key = std::str::from_utf8(key).map_err(|_| {
        ValidationError::new(ErrorClass::InvalidField, "key", "message key is not UTF-8")
    })?;
    match raw.customer_id.as_deref().map(str::trim) {
        None | Some("") => raw.customer_id = Some(key.to_owned()),
        Some(id) if id == key.trim() => {}
        Some(id) => {
            return Err(ValidationError::new(
                ErrorClass::InvalidField,
                "customer_id",
                format!("{id:?} differs from the message key {key:?}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
