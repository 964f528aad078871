//! CloudEvents JSON: structured mode (one JSON document) and binary mode (`ce_*` headers).

use patron_domain::{ErrorClass, RawEvent, RawTime, ValidationError};
use serde_json::{Map, Value};

/// CloudEvents `type` values are `patron.<event type>.v1`, e.g. `patron.purchase.v1`; a bare
/// `purchase` is accepted too, and any other type is kept as an unknown type by its full name.
pub const CLOUDEVENTS_TYPE_PREFIX: &str = "patron.";

/// Attributes read into the envelope; every other attribute (extensions) is kept with the data.
const CONTEXT_ATTRIBUTES: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "customerid",
    "identitykind",
    "identityvalue",
];

fn undecodable(message: impl Into<String>) -> ValidationError {
    ValidationError::new(ErrorClass::Undecodable, "record", message)
}

/// Maps a CloudEvents type to Patron's event type name.
pub(crate) fn event_type(ce_type: &str) -> String {
    let ce_type = ce_type.trim();
    ce_type
        .strip_prefix(CLOUDEVENTS_TYPE_PREFIX)
        .and_then(|rest| rest.strip_suffix(".v1"))
        .unwrap_or(ce_type)
        .to_owned()
}

pub(crate) fn decode_structured(payload: &[u8]) -> Result<RawEvent, ValidationError> {
    let document: Value =
        serde_json::from_slice(payload).map_err(|e| undecodable(format!("not valid JSON: {e}")))?;
    let Value::Object(mut attributes) = document else {
        return Err(undecodable("a CloudEvent must be a JSON object"));
    };
    if attributes.contains_key("data_base64") {
        return Err(ValidationError::new(
            ErrorClass::UnsupportedContentType,
            "data_base64",
            "binary data in a JSON CloudEvent is not supported; send JSON data",
        ));
    }
    check_specversion(attributes.get("specversion").and_then(Value::as_str))?;
    if let Some(ct) = attributes.get("datacontenttype").and_then(Value::as_str) {
        check_data_content_type(ct)?;
    }
    let text =
        |attributes: &Map<String, Value>, key: &str| -> Result<Option<String>, ValidationError> {
            match attributes.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(ValidationError::new(
                    ErrorClass::InvalidField,
                    key,
                    "must be a string",
                )),
            }
        };
    let customer_id = match text(&attributes, "customerid")? {
        Some(id) => Some(id),
        None => text(&attributes, "subject")?,
    };
    let mut raw = RawEvent {
        event_id: text(&attributes, "id")?,
        customer_id,
        event_type: text(&attributes, "type")?.map(|t| event_type(&t)),
        occurred_at: text(&attributes, "time")?.map(RawTime::Text),
        source: text(&attributes, "source")?,
        data: attributes.remove("data").unwrap_or(Value::Null),
        identity: None,
    };
    if let Some(kind) = text(&attributes, "identitykind")? {
        raw.identity = Some((
            kind,
            text(&attributes, "identityvalue")?.unwrap_or_default(),
        ));
    }
    let extensions: Map<String, Value> = attributes
        .into_iter()
        .filter(|(k, _)| !CONTEXT_ATTRIBUTES.contains(&k.as_str()))
        .collect();
    keep_extensions(&mut raw, extensions);
    Ok(raw)
}

pub(crate) fn decode_binary(
    headers: &[(&str, &[u8])],
    payload: &[u8],
) -> Result<RawEvent, ValidationError> {
    let mut attributes: Map<String, Value> = Map::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let Some(attribute) = lower.strip_prefix("ce_") else {
            continue;
        };
        let value = std::str::from_utf8(value).map_err(|_| {
            ValidationError::new(ErrorClass::InvalidField, *name, "header value is not UTF-8")
        })?;
        attributes.insert(attribute.to_owned(), Value::String(value.to_owned()));
    }
    check_specversion(attributes.get("specversion").and_then(Value::as_str))?;
    let data = if payload.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(payload)
            .map_err(|e| undecodable(format!("data is not valid JSON: {e}")))?
    };
    let mut take = |key: &str| {
        attributes
            .remove(key)
            .and_then(|v| v.as_str().map(str::to_owned))
    };
    let customer_id = take("customerid").or_else(|| take("subject"));
    let mut raw = RawEvent {
        event_id: take("id"),
        customer_id,
        event_type: take("type").map(|t| event_type(&t)),
        occurred_at: take("time").map(RawTime::Text),
        source: take("source"),
        data,
        identity: None,
    };
    if let Some(kind) = take("identitykind") {
        raw.identity = Some((kind, take("identityvalue").unwrap_or_default()));
    }
    attributes.retain(|k, _| !CONTEXT_ATTRIBUTES.contains(&k.as_str()));
    keep_extensions(&mut raw, attributes);
    Ok(raw)
}

/// Extension attributes (e.g. `traceparent`, `partitionkey`) are kept with the event under
/// `ce_extensions` in its data, so nothing a producer sent is lost.
fn keep_extensions(raw: &mut RawEvent, extensions: Map<String, Value>) {
    if extensions.is_empty() {
        return;
    }
    if let Value::Object(data) = &mut raw.data {
        data.insert("ce_extensions".into(), Value::Object(extensions));
    } else if raw.data.is_null() {
        raw.data = Value::Object(Map::from_iter([(
            "ce_extensions".to_owned(),
            Value::Object(extensions),
        )]));
    }
}

fn check_specversion(version: Option<&str>) -> Result<(), ValidationError> {
    match version {
        Some("1.0") => Ok(()),
        Some(other) => Err(ValidationError::new(
            ErrorClass::InvalidField,
            "specversion",
            format!("CloudEvents {other:?} is not supported (expected \"1.0\")"),
        )),
        None => Err(ValidationError::new(
            ErrorClass::MissingField,
            "specversion",
            "is required (CloudEvents 1.0)",
        )),
    }
}

fn check_data_content_type(content_type: &str) -> Result<(), ValidationError> {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    if media.eq_ignore_ascii_case("application/json")
        || media.to_ascii_lowercase().ends_with("+json")
    {
        Ok(())
    } else {
        Err(ValidationError::new(
            ErrorClass::UnsupportedContentType,
            "datacontenttype",
            format!("{media:?} is not supported; data must be JSON"),
        ))
    }
}
