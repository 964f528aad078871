//! Turning raw, untrusted input into typed [`Event`]s, with precise errors.
//!
//! Edges (Kafka, files, gRPC) decode their wire formats into a [`RawEvent`]: the envelope fields
//! as text and the body as JSON. [`validate`] checks every field and either returns an [`Event`]
//! or a [`ValidationError`] naming the field, an [`ErrorClass`] and a human-readable reason.

use std::fmt;

use chrono::{DateTime, TimeDelta, TimeZone, Timelike as _, Utc};
use serde_json::{Map, Number, Value};
use uuid::Uuid;

use crate::event::{
    Acquired, ConsentChanged, CustomerId, CustomersUnmerged, ErasureRequested, Event, EventBody,
    EventType, Feedback, IdentitiesLinked, Identity, IdentityKind, Interaction, InteractionKind,
    LineItem, ProfileUpdated, Purchase, Refund, UnknownBody,
};
use crate::money::{Currency, MAX_ABS_MINOR_UNITS, Money};

/// The class of a rejected input: stable names used in dead-letter headers and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The bytes could not be decoded at all (bad protobuf, bad JSON, bad UTF-8).
    Undecodable,
    /// The content type is not one Patron reads.
    UnsupportedContentType,
    /// The record is larger than the configured limit.
    PayloadTooLarge,
    /// A required field is absent.
    MissingField,
    /// A field is present but malformed.
    InvalidField,
    /// An amount of money is negative.
    NegativeAmount,
    /// An amount is not an integer number of minor units, or is out of range.
    InvalidAmount,
    /// A currency code is not ISO 4217.
    UnknownCurrency,
    /// A timestamp is absurdly far in the past or the future.
    TimestampOutOfRange,
    /// The event id is already stored (or repeated in the same batch) with different content:
    /// not a redelivery but a second event reusing the id.
    DuplicateEventIdConflict,
}

impl ErrorClass {
    /// The stable snake_case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorClass::Undecodable => "undecodable",
            ErrorClass::UnsupportedContentType => "unsupported_content_type",
            ErrorClass::PayloadTooLarge => "payload_too_large",
            ErrorClass::MissingField => "missing_field",
            ErrorClass::InvalidField => "invalid_field",
            ErrorClass::NegativeAmount => "negative_amount",
            ErrorClass::InvalidAmount => "invalid_amount",
            ErrorClass::UnknownCurrency => "unknown_currency",
            ErrorClass::TimestampOutOfRange => "timestamp_out_of_range",
            ErrorClass::DuplicateEventIdConflict => "duplicate_event_id_conflict",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an input was rejected: the class, the field (a dotted path) and a readable reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The class, for dead-letter headers and metrics.
    pub class: ErrorClass,
    /// The offending field as a dotted path, e.g. `data.amount.currency`; `record` for the whole.
    pub field: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl ValidationError {
    /// Builds an error.
    pub fn new(class: ErrorClass, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            class,
            field: field.into(),
            message: message.into(),
        }
    }

    fn missing(field: &str) -> Self {
        Self::new(ErrorClass::MissingField, field, "is required")
    }

    fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::InvalidField, field, message)
    }
}

/// An event timestamp as it arrived: RFC 3339 text (JSON) or seconds and nanos (protobuf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawTime {
    /// RFC 3339 text, e.g. `2026-11-23T09:15:00Z`.
    Text(String),
    /// Seconds and nanoseconds since the Unix epoch.
    Unix {
        /// Whole seconds.
        seconds: i64,
        /// Nanoseconds within the second, 0..1e9.
        nanos: i32,
    },
}

/// An event as decoded from a wire format, before any checks.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawEvent {
    /// Should be a UUID.
    pub event_id: Option<String>,
    /// Should be a valid [`CustomerId`].
    pub customer_id: Option<String>,
    /// The type name, e.g. `purchase`.
    pub event_type: Option<String>,
    /// Event time.
    pub occurred_at: Option<RawTime>,
    /// The producing system or channel.
    pub source: Option<String>,
    /// The body, as a JSON object.
    pub data: Value,
    /// An identifier of the customer (`kind`, `value`), for events that name no customer id:
    /// ingest resolves it to the customer holding it (see [`validate_subject`]).
    pub identity: Option<(String, String)>,
}

/// What "absurd" means for timestamps, and the clock reading to judge them by.
#[derive(Debug, Clone, Copy)]
pub struct ValidationPolicy {
    /// The current time, passed in (the domain reads no clock).
    pub now: DateTime<Utc>,
    /// Oldest acceptable event time, relative to `now`.
    pub max_age: TimeDelta,
    /// How far ahead of `now` an event time may be (producer clock skew).
    pub max_future: TimeDelta,
}

impl ValidationPolicy {
    /// Defaults: events up to 50 years old (historical backfills) and at most 1 day ahead.
    pub fn at(now: DateTime<Utc>) -> Self {
        Self {
            now,
            max_age: TimeDelta::days(365 * 50),
            max_future: TimeDelta::days(1),
        }
    }
}

/// Checks a raw event and turns it into a typed [`Event`]; the event must name its customer.
pub fn validate(raw: RawEvent, policy: &ValidationPolicy) -> Result<Event, ValidationError> {
    match validate_subject(raw, policy)? {
        (event, None) => Ok(event),
        (_, Some(_)) => Err(ValidationError::missing("customer_id")),
    }
}

/// Checks a raw event that names its customer either by id or by an identifier only.
///
/// With a customer id, returns the event and `None`. With only an identifier (`identity`),
/// returns the event with the placeholder [`CustomerId::unresolved`] and the identifier, which
/// ingest resolves to the customer holding it before the event is stored.
pub fn validate_subject(
    raw: RawEvent,
    policy: &ValidationPolicy,
) -> Result<(Event, Option<Identity>), ValidationError> {
    let event_id = parse_event_id(raw.event_id.as_deref())?;
    let (customer_id, identity) = match (raw.customer_id.as_deref(), &raw.identity) {
        (Some(id), _) => (customer_id(id)?, None),
        (None, Some((kind, value))) => (CustomerId::unresolved(), Some(subject(kind, value)?)),
        (None, None) => return Err(ValidationError::missing("customer_id")),
    };
    let occurred_at = parse_time(raw.occurred_at.as_ref(), policy)?;
    let source = match raw.source.as_deref() {
        None => return Err(ValidationError::missing("source")),
        Some(source) => text("source", source, 128)?,
    };
    let event_type = match raw.event_type.as_deref().map(str::trim) {
        None | Some("") => return Err(ValidationError::missing("type")),
        Some(name) => EventType::from_name(&type_name(name)?),
    };
    if event_type == EventType::Tick {
        return Err(ValidationError::invalid(
            "type",
            "tick events are written by Patron's projector, never accepted from producers",
        ));
    }
    if event_type == EventType::ModelFitted {
        return Err(ValidationError::invalid(
            "type",
            "model_fitted events are written by Patron's fitter, never accepted from producers",
        ));
    }
    if event_type == EventType::SourceProgress {
        return Err(ValidationError::invalid(
            "type",
            "source_progress events are written by Patron's ingest, never accepted from producers",
        ));
    }
    if let Some(path) = find_nul("data", &raw.data) {
        // Neither PostgreSQL text nor jsonb can hold U+0000; refuse it here, not at the store.
        return Err(ValidationError::invalid(
            &path,
            "must not contain NUL (U+0000) characters",
        ));
    }
    let body = parse_body(event_type, raw.data)?;
    if let EventBody::CustomersUnmerged(unmerged) = &body
        && unmerged.merged_customer_id == customer_id
    {
        return Err(ValidationError::invalid(
            "data.merged_customer_id",
            "a customer cannot be unmerged from itself",
        ));
    }
    Ok((
        Event {
            event_id,
            customer_id,
            occurred_at,
            source,
            body,
        },
        identity,
    ))
}

/// A customer id as a producer may send it: valid, and not one of the reserved or provisional
/// ids Patron gives out itself.
fn customer_id(id: &str) -> Result<CustomerId, ValidationError> {
    customer_id_at("customer_id", id)
}

fn customer_id_at(path: &str, id: &str) -> Result<CustomerId, ValidationError> {
    let customer_id =
        CustomerId::parse(id).map_err(|reason| ValidationError::invalid(path, reason))?;
    if customer_id.is_reserved() {
        return Err(ValidationError::invalid(
            path,
            format!(
                "must not start with {:?}: such ids are reserved for Patron's own streams",
                CustomerId::RESERVED_PREFIX
            ),
        ));
    }
    if customer_id.is_provisional() {
        return Err(ValidationError::invalid(
            path,
            format!(
                "must not start with {:?}: such ids are given by Patron to customers known only \
                 by an identifier; send the identifier instead",
                CustomerId::PROVISIONAL_PREFIX
            ),
        ));
    }
    Ok(customer_id)
}

/// The identifier an event names its customer by, checked like a linked identity.
fn subject(kind: &str, value: &str) -> Result<Identity, ValidationError> {
    let kind = text("identity.kind", kind, 64)?;
    if kind.is_empty() {
        return Err(ValidationError::missing("identity.kind"));
    }
    identity(IdentityKind::from_name(&kind), value, "identity.value")
}

/// The path of the first string (key or value) holding a NUL character, if any.
fn find_nul(path: &str, value: &Value) -> Option<String> {
    match value {
        Value::String(s) if s.contains('\0') => Some(path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| find_nul(&format!("{path}[{i}]"), v)),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let child = format!("{path}.{k}");
            if k.contains('\0') {
                Some(child)
            } else {
                find_nul(&child, v)
            }
        }),
        _ => None,
    }
}

fn parse_event_id(value: Option<&str>) -> Result<Uuid, ValidationError> {
    let value = value.ok_or_else(|| ValidationError::missing("event_id"))?;
    let id = Uuid::parse_str(value.trim())
        .map_err(|e| ValidationError::invalid("event_id", format!("must be a UUID ({e})")))?;
    if id.is_nil() {
        return Err(ValidationError::invalid(
            "event_id",
            "must not be the nil UUID",
        ));
    }
    Ok(id)
}

fn parse_time(
    value: Option<&RawTime>,
    policy: &ValidationPolicy,
) -> Result<DateTime<Utc>, ValidationError> {
    const FIELD: &str = "occurred_at";
    let time = match value.ok_or_else(|| ValidationError::missing(FIELD))? {
        RawTime::Text(text) => DateTime::parse_from_rfc3339(text.trim())
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                ValidationError::invalid(FIELD, format!("must be an RFC 3339 timestamp ({e})"))
            })?,
        RawTime::Unix { seconds, nanos } => u32::try_from(*nanos)
            .ok()
            .and_then(|nanos| Utc.timestamp_opt(*seconds, nanos).single())
            .ok_or_else(|| {
                ValidationError::new(
                    ErrorClass::TimestampOutOfRange,
                    FIELD,
                    format!("{seconds}s {nanos}ns is not a representable time"),
                )
            })?,
    };
    // Kept to the microsecond, PostgreSQL's precision, so that what is stored (on any backend)
    // and read back is exactly what was validated.
    let time = time
        .with_nanosecond(time.nanosecond() / 1_000 * 1_000)
        .unwrap_or(time);
    let earliest = (policy.now - policy.max_age).max(DateTime::UNIX_EPOCH);
    let latest = policy.now + policy.max_future;
    if time < earliest || time > latest {
        return Err(ValidationError::new(
            ErrorClass::TimestampOutOfRange,
            FIELD,
            format!(
                "{} is outside the accepted window {} .. {}",
                time.to_rfc3339(),
                earliest.to_rfc3339(),
                latest.to_rfc3339()
            ),
        ));
    }
    Ok(time)
}

/// Reads fields out of one JSON object, remembering the path for error messages.
/// Whatever is left after the known fields are taken is kept as "extra" (unknown fields).
struct Fields {
    path: String,
    map: Map<String, Value>,
}

impl Fields {
    fn of(path: &str, value: Value) -> Result<Self, ValidationError> {
        match value {
            Value::Object(map) => Ok(Self {
                path: path.to_owned(),
                map,
            }),
            Value::Null => Ok(Self {
                path: path.to_owned(),
                map: Map::new(),
            }),
            other => Err(ValidationError::invalid(
                path,
                format!("must be an object, got {}", kind_of(&other)),
            )),
        }
    }

    fn path(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    fn required(&mut self, key: &str) -> Result<Value, ValidationError> {
        self.take(key)
            .ok_or_else(|| ValidationError::missing(&self.path(key)))
    }

    fn string(&mut self, key: &str, max_chars: usize) -> Result<String, ValidationError> {
        let path = self.path(key);
        match self.required(key)? {
            Value::String(s) => text(&path, &s, max_chars),
            other => Err(ValidationError::invalid(
                &path,
                format!("must be a string, got {}", kind_of(&other)),
            )),
        }
    }

    fn opt_string(
        &mut self,
        key: &str,
        max_chars: usize,
    ) -> Result<Option<String>, ValidationError> {
        if self.map.get(key).is_none_or(Value::is_null) {
            return Ok(None);
        }
        self.string(key, max_chars).map(Some)
    }

    fn money(&mut self, key: &str) -> Result<Money, ValidationError> {
        let path = self.path(key);
        money(&path, self.required(key)?)
    }

    fn opt_money(&mut self, key: &str) -> Result<Option<Money>, ValidationError> {
        let path = self.path(key);
        self.take(key).map(|v| money(&path, v)).transpose()
    }

    fn opt_small_int(
        &mut self,
        key: &str,
        range: std::ops::RangeInclusive<u8>,
    ) -> Result<Option<u8>, ValidationError> {
        let path = self.path(key);
        let Some(value) = self.take(key) else {
            return Ok(None);
        };
        let number = integer(&path, &value)?;
        u8::try_from(number)
            .ok()
            .filter(|n| range.contains(n))
            .map(Some)
            .ok_or_else(|| {
                ValidationError::invalid(
                    &path,
                    format!(
                        "must be between {} and {}, got {number}",
                        range.start(),
                        range.end()
                    ),
                )
            })
    }

    fn extra(self) -> Map<String, Value> {
        self.map
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Longest event type name accepted (an unknown type is stored as sent).
pub const MAX_TYPE_CHARS: usize = 128;

/// An event type name: at most [`MAX_TYPE_CHARS`] characters, none of them a control character
/// (NUL, which no database text column holds, among them). Unknown types are stored as sent, so
/// this is all that stands between a producer's `type` and the store.
fn type_name(name: &str) -> Result<String, ValidationError> {
    if name.chars().any(char::is_control) {
        return Err(ValidationError::invalid(
            "type",
            "must not contain control characters (NUL included)",
        ));
    }
    if name.chars().count() > MAX_TYPE_CHARS {
        return Err(ValidationError::invalid(
            "type",
            format!("must be at most {MAX_TYPE_CHARS} characters"),
        ));
    }
    Ok(name.to_owned())
}

fn text(path: &str, value: &str, max_chars: usize) -> Result<String, ValidationError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ValidationError::invalid(path, "must not be empty"));
    }
    if value.contains('\0') {
        return Err(ValidationError::invalid(
            path,
            "must not contain NUL (U+0000) characters",
        ));
    }
    if value.chars().count() > max_chars {
        return Err(ValidationError::invalid(
            path,
            format!("must be at most {max_chars} characters"),
        ));
    }
    Ok(value.to_owned())
}

/// Reads an integer given as a JSON number or a string of digits (int64 in JSON is often quoted).
fn integer(path: &str, value: &Value) -> Result<i64, ValidationError> {
    let not_integer = |shown: &dyn fmt::Display| {
        ValidationError::new(
            ErrorClass::InvalidAmount,
            path,
            format!("must be an integer, got {shown}"),
        )
    };
    match value {
        Value::Number(n) => number_to_i64(n).ok_or_else(|| not_integer(n)),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| not_integer(&format!("{s:?}"))),
        other => Err(not_integer(&kind_of(other))),
    }
}

fn number_to_i64(n: &Number) -> Option<i64> {
    n.as_i64()
}

fn money(path: &str, value: Value) -> Result<Money, ValidationError> {
    let mut fields = Fields::of(path, value)?;
    let minor_path = fields.path("minor_units");
    let minor = integer(&minor_path, &fields.required("minor_units")?)?;
    if minor < 0 {
        return Err(ValidationError::new(
            ErrorClass::NegativeAmount,
            minor_path,
            format!("must not be negative, got {minor}"),
        ));
    }
    if minor > MAX_ABS_MINOR_UNITS {
        return Err(ValidationError::new(
            ErrorClass::InvalidAmount,
            minor_path,
            format!("{minor} is out of range (at most {MAX_ABS_MINOR_UNITS})"),
        ));
    }
    let currency_path = fields.path("currency");
    let code = fields.string("currency", 3)?;
    let currency = Currency::from_code(&code).map_err(|e| {
        ValidationError::new(ErrorClass::UnknownCurrency, currency_path, e.to_string())
    })?;
    if let Some(unexpected) = fields.extra().keys().next() {
        return Err(ValidationError::invalid(
            &format!("{path}.{unexpected}"),
            "is not a field of money (expected minor_units and currency)",
        ));
    }
    Ok(Money {
        minor_units: minor,
        currency,
    })
}

fn parse_body(event_type: EventType, data: Value) -> Result<EventBody, ValidationError> {
    if let EventType::Unknown(name) = event_type {
        return Ok(EventBody::Unknown(UnknownBody {
            event_type: name,
            data,
        }));
    }
    let mut f = Fields::of("data", data)?;
    Ok(match event_type {
        EventType::Purchase => {
            let order_id = f.string("order_id", 128)?;
            let amount = f.money("amount")?;
            let items = line_items(&mut f, amount.currency)?;
            EventBody::Purchase(Purchase {
                order_id,
                amount,
                items,
                extra: f.extra(),
            })
        }
        EventType::Refund => {
            let order_id = f.string("order_id", 128)?;
            let amount = f.money("amount")?;
            if amount.minor_units == 0 {
                return Err(ValidationError::new(
                    ErrorClass::InvalidAmount,
                    "data.amount.minor_units",
                    "a refund must be greater than zero",
                ));
            }
            EventBody::Refund(Refund {
                order_id,
                amount,
                reason: f.opt_string("reason", 1024)?,
                extra: f.extra(),
            })
        }
        EventType::Interaction => EventBody::Interaction(Interaction {
            channel: f.string("channel", 64)?,
            kind: InteractionKind::from_name(&f.string("kind", 64)?),
            extra: f.extra(),
        }),
        EventType::Feedback => {
            let nps = f.opt_small_int("nps", 0..=10)?;
            let csat = f.opt_small_int("csat", 1..=5)?;
            let comment = f.opt_string("comment", 4096)?;
            if nps.is_none() && csat.is_none() && comment.is_none() {
                return Err(ValidationError::missing("data.nps|data.csat|data.comment"));
            }
            EventBody::Feedback(Feedback {
                nps,
                csat,
                comment,
                extra: f.extra(),
            })
        }
        EventType::ProfileUpdated => {
            let traits = match f.required("traits")? {
                Value::Object(traits) if !traits.is_empty() => traits,
                Value::Object(_) => {
                    return Err(ValidationError::invalid("data.traits", "must not be empty"));
                }
                other => {
                    return Err(ValidationError::invalid(
                        "data.traits",
                        format!("must be an object, got {}", kind_of(&other)),
                    ));
                }
            };
            if traits.len() > 256 {
                return Err(ValidationError::invalid(
                    "data.traits",
                    "must have at most 256 traits",
                ));
            }
            EventBody::ProfileUpdated(ProfileUpdated {
                traits,
                extra: f.extra(),
            })
        }
        EventType::Acquired => EventBody::Acquired(Acquired {
            channel: f.string("channel", 64)?,
            campaign: f.opt_string("campaign", 256)?,
            cost: f.opt_money("cost")?,
            extra: f.extra(),
        }),
        EventType::ConsentChanged => {
            let purpose_path = f.path("purpose");
            let purpose = f.string("purpose", MAX_PURPOSE_CHARS)?;
            if !is_purpose_name(&purpose) {
                return Err(ValidationError::invalid(
                    &purpose_path,
                    format!(
                        "{purpose:?} is not a purpose name: use lowercase letters, digits and \
                         _ . : - (e.g. marketing_email)"
                    ),
                ));
            }
            let granted = match f.required("granted")? {
                Value::Bool(granted) => granted,
                other => {
                    return Err(ValidationError::invalid(
                        "data.granted",
                        format!("must be a boolean, got {}", kind_of(&other)),
                    ));
                }
            };
            EventBody::ConsentChanged(ConsentChanged {
                purpose,
                granted,
                extra: f.extra(),
            })
        }
        EventType::ErasureRequested => EventBody::ErasureRequested(ErasureRequested {
            reason: f.opt_string("reason", 1024)?,
            extra: f.extra(),
        }),
        EventType::IdentitiesLinked => {
            let identities = identities(&mut f)?;
            EventBody::IdentitiesLinked(IdentitiesLinked {
                identities,
                evidence: f.opt_string("evidence", 256)?,
                extra: f.extra(),
            })
        }
        EventType::CustomersMerged => {
            return Err(ValidationError::invalid(
                "type",
                "customers_merged events are written by Patron's store when identities link \
                 two customers, never accepted from producers (send identities_linked)",
            ));
        }
        EventType::CustomersUnmerged => {
            let path = f.path("merged_customer_id");
            let merged = f.string("merged_customer_id", CustomerId::MAX_LEN)?;
            // A provisional customer can be split off again: its id came from Patron.
            let merged_customer_id = match CustomerId::parse(&merged) {
                Ok(id) if id.is_provisional() => id,
                _ => customer_id_at(&path, &merged)?,
            };
            EventBody::CustomersUnmerged(CustomersUnmerged {
                merged_customer_id,
                reason: f.opt_string("reason", 1024)?,
                extra: f.extra(),
            })
        }
        // Refused by `validate` before the body is parsed; an empty tick is all a tick can be.
        EventType::Tick => EventBody::Tick(crate::event::Tick {}),
        // Refused by `validate` before the body is parsed.
        EventType::SourceProgress => {
            return Err(ValidationError::invalid(
                "type",
                "source_progress events are written by Patron's ingest, never accepted from producers",
            ));
        }
        // Refused by `validate` before the body is parsed.
        EventType::ModelFitted => {
            return Err(ValidationError::invalid(
                "type",
                "model_fitted events are written by Patron's fitter, never accepted from producers",
            ));
        }
        // Handled above, before the body had to be an object; kept here for exhaustiveness.
        EventType::Unknown(name) => EventBody::Unknown(UnknownBody {
            event_type: name,
            data: Value::Object(f.extra()),
        }),
    })
}

fn array(f: &mut Fields, key: &str, max: usize) -> Result<Vec<Value>, ValidationError> {
    let path = f.path(key);
    match f.take(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(values)) if values.len() <= max => Ok(values),
        Some(Value::Array(_)) => Err(ValidationError::invalid(
            &path,
            format!("must have at most {max} entries"),
        )),
        Some(other) => Err(ValidationError::invalid(
            &path,
            format!("must be an array, got {}", kind_of(&other)),
        )),
    }
}

fn line_items(f: &mut Fields, currency: Currency) -> Result<Vec<LineItem>, ValidationError> {
    let base = f.path("items");
    array(f, "items", 1000)?
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let mut item = Fields::of(&format!("{base}[{i}]"), value)?;
            let sku = item.string("sku", 128)?;
            let quantity_path = item.path("quantity");
            let quantity = match item.take("quantity") {
                None => 1,
                Some(value) => integer(&quantity_path, &value)
                    .ok()
                    .and_then(|q| u32::try_from(q).ok())
                    .filter(|q| *q >= 1)
                    .ok_or_else(|| {
                        ValidationError::invalid(&quantity_path, "must be a whole number ≥ 1")
                    })?,
            };
            let unit_price = item.opt_money("unit_price")?;
            if let Some(price) = unit_price.filter(|p| p.currency != currency) {
                return Err(ValidationError::invalid(
                    &item.path("unit_price.currency"),
                    format!(
                        "{} differs from the order currency {currency}",
                        price.currency
                    ),
                ));
            }
            Ok(LineItem {
                sku,
                quantity,
                unit_price,
                extra: item.extra(),
            })
        })
        .collect()
}

/// Identifier values that are placeholders, not identities; linking on them would merge strangers.
fn is_junk_identifier(value: &str) -> bool {
    let lower = value.trim().to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "" | "null" | "nil" | "none" | "undefined" | "anonymous" | "unknown" | "n/a" | "test"
    ) || lower.chars().all(|c| c == '0' || c == '-' || c == ':')
}

/// Longest consent purpose name.
pub const MAX_PURPOSE_CHARS: usize = 64;

/// Whether `purpose` can name a consent purpose: 1 to [`MAX_PURPOSE_CHARS`] lowercase ASCII
/// letters, digits, `_`, `.`, `:` and `-` (one spelling per purpose; read models keep purposes
/// as space-separated lists).
pub fn is_purpose_name(purpose: &str) -> bool {
    (1..=MAX_PURPOSE_CHARS).contains(&purpose.len())
        && purpose.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b':' | b'-')
        })
}

fn identities(f: &mut Fields) -> Result<Vec<Identity>, ValidationError> {
    let base = f.path("identities");
    let values = array(f, "identities", 64)?;
    if values.is_empty() {
        return Err(ValidationError::missing(&base));
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let mut id = Fields::of(&format!("{base}[{i}]"), value)?;
            let kind = IdentityKind::from_name(&id.string("kind", 64)?);
            let value_path = id.path("value");
            let value = id.string("value", 256)?;
            identity(kind, &value, &value_path)
        })
        .collect()
}

/// An identifier whose value is not a placeholder (after normalizing, see
/// [`Identity::normalized_value`]).
fn identity(
    kind: IdentityKind,
    value: &str,
    value_path: &str,
) -> Result<Identity, ValidationError> {
    let value = text(value_path, value, 256)?;
    let identity = Identity { kind, value };
    if is_junk_identifier(&identity.normalized_value()) {
        return Err(ValidationError::invalid(
            value_path,
            format!("{:?} is a placeholder, not an identifier", identity.value),
        ));
    }
    Ok(identity)
}

#[cfg(test)]
mod tests;
