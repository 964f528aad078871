//! Typed customer events: the facts Patron stores and projects.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::money::Money;

/// Fields a producer sent that Patron does not (yet) understand. They are kept, never dropped.
type Extra = Map<String, Value>;

/// Identifies a customer: one event stream per customer.
///
/// Producers choose the identifier; Patron only requires it to be 1–128 characters without
/// control characters (checked by [`crate::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CustomerId(String);

impl CustomerId {
    /// The longest customer id accepted, in characters.
    pub const MAX_LEN: usize = 128;

    /// Wraps an id after checking it; the error says what is wrong.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err("must not be empty".into());
        }
        if value.chars().count() > Self::MAX_LEN {
            return Err(format!("must be at most {} characters", Self::MAX_LEN));
        }
        if value.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(value.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl CustomerId {
    /// Customer ids starting with this are reserved for Patron's own streams.
    pub const RESERVED_PREFIX: char = '$';

    /// The stream of [`Tick`] events.
    pub fn clock() -> Self {
        Self("$clock".to_owned())
    }

    /// The stream of [`ModelFitted`] events.
    pub fn clv() -> Self {
        Self("$clv".to_owned())
    }

    /// The stream of [`SourceProgress`] events.
    pub fn sources() -> Self {
        Self("$sources".to_owned())
    }

    /// Customer ids starting with this are given by Patron to customers known only by an
    /// identifier (an event that named no customer, only e.g. a device id): provisional
    /// customers, merged into a named customer once an `identities_linked` event links them.
    pub const PROVISIONAL_PREFIX: char = '~';

    /// The provisional customer of an identifier, from the kind and a hex digest of its value.
    pub fn provisional(kind: &IdentityKind, digest_hex: &str) -> Self {
        Self(format!(
            "{}{}:{digest_hex}",
            Self::PROVISIONAL_PREFIX,
            kind.as_str()
        ))
    }

    /// Whether this is a provisional customer, see [`CustomerId::PROVISIONAL_PREFIX`].
    pub fn is_provisional(&self) -> bool {
        self.0.starts_with(Self::PROVISIONAL_PREFIX)
    }

    /// The placeholder customer of an event that named only an identifier, until ingest
    /// resolves it (see [`crate::validate_subject`]); never stored.
    pub fn unresolved() -> Self {
        Self("$unresolved".to_owned())
    }

    /// Whether this is one of Patron's own streams rather than a customer.
    pub fn is_reserved(&self) -> bool {
        self.0.starts_with(Self::RESERVED_PREFIX)
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated customer event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The idempotency key: the same id is stored once, however often it is sent.
    pub event_id: Uuid,
    /// Whose stream the event belongs to.
    pub customer_id: CustomerId,
    /// When it happened (event time), as the producer says.
    pub occurred_at: DateTime<Utc>,
    /// The producing system or channel, e.g. `web-shop` or `crm`.
    pub source: String,
    /// What happened.
    pub body: EventBody,
}

impl Event {
    /// The type of the body.
    pub fn event_type(&self) -> EventType {
        self.body.event_type()
    }
}

/// The name of an event type as stored and as carried on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A customer bought something.
    Purchase,
    /// Money went back to a customer.
    Refund,
    /// A visit, app open, email open or click, support contact, ...
    Interaction,
    /// An NPS or CSAT answer, with an optional comment.
    Feedback,
    /// Profile traits changed.
    ProfileUpdated,
    /// The customer was acquired through a channel, at a cost.
    Acquired,
    /// Consent for a purpose was granted or withdrawn.
    ConsentChanged,
    /// The customer asked to be forgotten.
    ErasureRequested,
    /// Several identifiers were found to belong to one customer.
    IdentitiesLinked,
    /// Another customer (with everyone merged into it) was found to be this one: written by
    /// Patron's store when an `identities_linked` event links an identifier another customer
    /// holds (never accepted from producers).
    CustomersMerged,
    /// A merge was wrong: the merged customer is a customer of its own again.
    CustomersUnmerged,
    /// Event time moved on with no customer event: written by the projector (never accepted
    /// from outside) so that time-driven lifecycle changes replay exactly.
    Tick,
    /// A predictive (BG/NBD) model was fitted and accepted: written by Patron's fitter (never
    /// accepted from outside) so that lifecycle rules using it replay exactly.
    ModelFitted,
    /// How far ingest has read its source partitions: written by Patron's ingest (never
    /// accepted from outside) so that the watermark waits for partitions read behind the others,
    /// live and in a replay alike.
    SourceProgress,
    /// A type this version does not know: kept, not projected.
    Unknown(String),
}

impl EventType {
    /// Every type this version understands.
    pub const KNOWN: [EventType; 14] = [
        EventType::Purchase,
        EventType::Refund,
        EventType::Interaction,
        EventType::Feedback,
        EventType::ProfileUpdated,
        EventType::Acquired,
        EventType::ConsentChanged,
        EventType::ErasureRequested,
        EventType::IdentitiesLinked,
        EventType::CustomersMerged,
        EventType::CustomersUnmerged,
        EventType::Tick,
        EventType::ModelFitted,
        EventType::SourceProgress,
    ];

    /// The stable name, e.g. `purchase` or `profile_updated`.
    pub fn as_str(&self) -> &str {
        match self {
            EventType::Purchase => "purchase",
            EventType::Refund => "refund",
            EventType::Interaction => "interaction",
            EventType::Feedback => "feedback",
            EventType::ProfileUpdated => "profile_updated",
            EventType::Acquired => "acquired",
            EventType::ConsentChanged => "consent_changed",
            EventType::ErasureRequested => "erasure_requested",
            EventType::IdentitiesLinked => "identities_linked",
            EventType::CustomersMerged => "customers_merged",
            EventType::CustomersUnmerged => "customers_unmerged",
            EventType::Tick => "tick",
            EventType::ModelFitted => "model_fitted",
            EventType::SourceProgress => "source_progress",
            EventType::Unknown(name) => name,
        }
    }

    /// Maps a stable name back; anything unrecognised becomes [`EventType::Unknown`].
    pub fn from_name(name: &str) -> Self {
        Self::KNOWN
            .into_iter()
            .find(|known| known.as_str() == name)
            .unwrap_or_else(|| EventType::Unknown(name.to_owned()))
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened, by type.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    /// See [`Purchase`].
    Purchase(Purchase),
    /// See [`Refund`].
    Refund(Refund),
    /// See [`Interaction`].
    Interaction(Interaction),
    /// See [`Feedback`].
    Feedback(Feedback),
    /// See [`ProfileUpdated`].
    ProfileUpdated(ProfileUpdated),
    /// See [`Acquired`].
    Acquired(Acquired),
    /// See [`ConsentChanged`].
    ConsentChanged(ConsentChanged),
    /// See [`ErasureRequested`].
    ErasureRequested(ErasureRequested),
    /// See [`IdentitiesLinked`].
    IdentitiesLinked(IdentitiesLinked),
    /// See [`CustomersMerged`].
    CustomersMerged(CustomersMerged),
    /// See [`CustomersUnmerged`].
    CustomersUnmerged(CustomersUnmerged),
    /// See [`Tick`].
    Tick(Tick),
    /// See [`ModelFitted`].
    ModelFitted(ModelFitted),
    /// See [`SourceProgress`].
    SourceProgress(SourceProgress),
    /// See [`UnknownBody`].
    Unknown(UnknownBody),
}

impl EventBody {
    /// The type of this body.
    pub fn event_type(&self) -> EventType {
        match self {
            EventBody::Purchase(_) => EventType::Purchase,
            EventBody::Refund(_) => EventType::Refund,
            EventBody::Interaction(_) => EventType::Interaction,
            EventBody::Feedback(_) => EventType::Feedback,
            EventBody::ProfileUpdated(_) => EventType::ProfileUpdated,
            EventBody::Acquired(_) => EventType::Acquired,
            EventBody::ConsentChanged(_) => EventType::ConsentChanged,
            EventBody::ErasureRequested(_) => EventType::ErasureRequested,
            EventBody::IdentitiesLinked(_) => EventType::IdentitiesLinked,
            EventBody::CustomersMerged(_) => EventType::CustomersMerged,
            EventBody::CustomersUnmerged(_) => EventType::CustomersUnmerged,
            EventBody::Tick(_) => EventType::Tick,
            EventBody::ModelFitted(_) => EventType::ModelFitted,
            EventBody::SourceProgress(_) => EventType::SourceProgress,
            EventBody::Unknown(body) => EventType::Unknown(body.event_type.clone()),
        }
    }

    /// The stored JSON form of the body (without its type, which is stored beside it).
    pub fn to_payload(&self) -> Value {
        // Serialising plain structs of strings, integers and JSON values cannot fail.
        match self {
            EventBody::Unknown(b) => b.data.clone(),
            known => known.with_known(|body| body.to_value().unwrap_or(Value::Null)),
        }
    }

    /// The stored JSON form as text (what [`EventBody::to_payload`] gives, serialised directly).
    pub fn to_payload_string(&self) -> String {
        match self {
            EventBody::Unknown(b) => b.data.to_string(),
            known => known.with_known(|body| body.to_text().unwrap_or_else(|_| "null".to_owned())),
        }
    }

    /// Calls `f` with the body of a known type as something serialisable (`f` is not called for
    /// unknown types, which hold their JSON as sent).
    fn with_known<R>(&self, f: impl FnOnce(&dyn ErasedBody) -> R) -> R {
        match self {
            EventBody::Purchase(b) => f(b),
            EventBody::Refund(b) => f(b),
            EventBody::Interaction(b) => f(b),
            EventBody::Feedback(b) => f(b),
            EventBody::ProfileUpdated(b) => f(b),
            EventBody::Acquired(b) => f(b),
            EventBody::ConsentChanged(b) => f(b),
            EventBody::ErasureRequested(b) => f(b),
            EventBody::IdentitiesLinked(b) => f(b),
            EventBody::CustomersMerged(b) => f(b),
            EventBody::CustomersUnmerged(b) => f(b),
            EventBody::Tick(b) => f(b),
            EventBody::ModelFitted(b) => f(b),
            EventBody::SourceProgress(b) => f(b),
            EventBody::Unknown(b) => f(&b.data),
        }
    }

    /// Rebuilds a body from its stored type name and JSON text, parsing a known type straight
    /// into its struct (no intermediate [`Value`]): what reading the log back does per event.
    pub fn from_payload_str(event_type: &str, payload: &str) -> Result<Self, serde_json::Error> {
        use serde_json::from_str;
        Ok(match EventType::from_name(event_type) {
            EventType::Purchase => EventBody::Purchase(from_str(payload)?),
            EventType::Refund => EventBody::Refund(from_str(payload)?),
            EventType::Interaction => EventBody::Interaction(from_str(payload)?),
            EventType::Feedback => EventBody::Feedback(from_str(payload)?),
            EventType::ProfileUpdated => EventBody::ProfileUpdated(from_str(payload)?),
            EventType::Acquired => EventBody::Acquired(from_str(payload)?),
            EventType::ConsentChanged => EventBody::ConsentChanged(from_str(payload)?),
            EventType::ErasureRequested => EventBody::ErasureRequested(from_str(payload)?),
            EventType::IdentitiesLinked => EventBody::IdentitiesLinked(from_str(payload)?),
            EventType::CustomersMerged => EventBody::CustomersMerged(from_str(payload)?),
            EventType::CustomersUnmerged => EventBody::CustomersUnmerged(from_str(payload)?),
            EventType::Tick => EventBody::Tick(from_str(payload)?),
            EventType::ModelFitted => EventBody::ModelFitted(from_str(payload)?),
            EventType::SourceProgress => EventBody::SourceProgress(from_str(payload)?),
            EventType::Unknown(name) => EventBody::Unknown(UnknownBody {
                event_type: name,
                data: from_str(payload)?,
            }),
        })
    }

    /// Rebuilds a body from its stored type name and JSON form.
    pub fn from_payload(event_type: &str, payload: Value) -> Result<Self, serde_json::Error> {
        use serde_json::from_value;
        Ok(match EventType::from_name(event_type) {
            EventType::Purchase => EventBody::Purchase(from_value(payload)?),
            EventType::Refund => EventBody::Refund(from_value(payload)?),
            EventType::Interaction => EventBody::Interaction(from_value(payload)?),
            EventType::Feedback => EventBody::Feedback(from_value(payload)?),
            EventType::ProfileUpdated => EventBody::ProfileUpdated(from_value(payload)?),
            EventType::Acquired => EventBody::Acquired(from_value(payload)?),
            EventType::ConsentChanged => EventBody::ConsentChanged(from_value(payload)?),
            EventType::ErasureRequested => EventBody::ErasureRequested(from_value(payload)?),
            EventType::IdentitiesLinked => EventBody::IdentitiesLinked(from_value(payload)?),
            EventType::CustomersMerged => EventBody::CustomersMerged(from_value(payload)?),
            EventType::CustomersUnmerged => EventBody::CustomersUnmerged(from_value(payload)?),
            EventType::Tick => EventBody::Tick(from_value(payload)?),
            EventType::ModelFitted => EventBody::ModelFitted(from_value(payload)?),
            EventType::SourceProgress => EventBody::SourceProgress(from_value(payload)?),
            EventType::Unknown(name) => EventBody::Unknown(UnknownBody {
                event_type: name,
                data: payload,
            }),
        })
    }
}

/// A body that serialises to JSON: lets one dispatch over [`EventBody`] serve every format.
trait ErasedBody {
    fn to_value(&self) -> serde_json::Result<Value>;
    fn to_text(&self) -> serde_json::Result<String>;
}

impl<T: Serialize> ErasedBody for T {
    fn to_value(&self) -> serde_json::Result<Value> {
        serde_json::to_value(self)
    }
    fn to_text(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    /// The product's stock-keeping unit.
    pub sku: String,
    /// How many were bought (at least 1).
    pub quantity: u32,
    /// Price of one unit, in the order's currency, when the producer sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<Money>,
    /// Fields not understood by this version.
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

/// A customer bought something.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Purchase {
    /// The order's id in the producing system.
    pub order_id: String,
    /// What the customer paid (never negative).
    pub amount: Money,
    /// The order lines, when sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<LineItem>,
    /// Fields not understood by this version.
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

/// Money went back to a customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refund {
    /// The order being refunded.
    pub order_id: String,
    /// How much went back (positive).
    pub amount: Money,
    /// Why, when the producer says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Fields not understood by this version.
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

/// The kind of a non-purchase interaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InteractionKind {
    /// A visit to a site or store.
    Visit,
    /// The app was opened.
    AppOpen,
    /// A marketing email was opened.
    EmailOpen,
    /// A link in an email was clicked.
    EmailClick,
    /// The customer contacted support.
    SupportContact,
    /// Any other kind, kept by name.
    #[serde(untagged)]
    Other(String),
}

impl InteractionKind {
    /// Parses a kind name; unknown names are kept as [`InteractionKind::Other`].
    pub fn from_name(name: &str) -> Self {
        match name {
            "visit" => Self::Visit,
            "app_open" => Self::AppOpen,
            "email_open" => Self::EmailOpen,
            "email_click" => Self::EmailClick,
            "support_contact" => Self::SupportContact,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// A customer interacted with the business without buying.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    /// Where: `web`, `app`, `email`, `store`, `phone`, ...
    pub channel: String,
    /// What kind of interaction.
    pub kind: InteractionKind,
    /// Fields not understood by this version.
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

/// A survey answer: NPS (0–10), CSAT (1–5) and/or a comment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    /// Net Promoter Score answer, 0–10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nps: Option<u8>,
    /// Customer satisfaction answer, 1–5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csat: Option<u8>,
    /// Free text (personal data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Fields not understood by this version.
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

/// Profile traits changed (names, emails, addresses, preferences: personal data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileUpdated {
    /// The traits that changed, with their new values.
    pub traits: Map<String, Value>,
    /// Fields not understood by this version.
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

/// The customer was acquired through a channel (for CAC by channel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acquired {
    /// The acquisition channel, e.g. `paid_search`.
    pub channel: String,
    /// The campaign, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// What acquiring this customer cost, when known (never negative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Money>,
    /// Fields not understood by this version.
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

/// Event time reached `occurred_at` with nothing else happening.
///
/// The projector appends one to the [`CustomerId::clock`] stream when the log has been quiet for
/// a while, so that customers become at risk or churned by the absence of events, and a replay
/// of the log sees the same ticks at the same positions. It has no fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tick {}

/// A BG/NBD model was fitted and accepted as `version`: the parameters the lifecycle rules use
/// for probability-alive thresholds from this event's position on.
///
/// Patron's fitter appends one to the [`CustomerId::clv`] stream after storing the version, with
/// `occurred_at` = the evaluation time of the fit (the watermark of the read models it was fitted
/// on). The parameters are in `time_unit` (`weeks`) and written as decimal strings: the shortest
/// text that parses back to exactly the fitted `f64` (Rust's `Display`), so a replay computes
/// exactly the probabilities live processing did, whatever the store does to JSON numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFitted {
    /// The model version (1, 2, … as stored in `clv_models`).
    pub version: i64,
    /// The unit of the parameters' time scale: `weeks`.
    pub time_unit: String,
    /// BG/NBD `r`.
    pub r: String,
    /// BG/NBD `alpha`, in `time_unit`.
    pub alpha: String,
    /// BG/NBD `a`.
    pub a: String,
    /// BG/NBD `b`.
    pub b: String,
}

impl ModelFitted {
    /// The parameters as written, `(r, alpha, a, b)`, if all four are finite and positive numbers.
    pub fn parameters(&self) -> Option<(f64, f64, f64, f64)> {
        let parse = |text: &str| {
            text.parse::<f64>()
                .ok()
                .filter(|value| value.is_finite() && *value > 0.0)
        };
        Some((
            parse(&self.r)?,
            parse(&self.alpha)?,
            parse(&self.a)?,
            parse(&self.b)?,
        ))
    }
}

/// How far one ingest consumer has read the source partitions it reads: for each, the latest
/// event time read from it and whether records are left to read.
///
/// Patron's ingest appends one to the [`CustomerId::sources`] stream, in the same append as the
/// batch it describes, whenever a partition is read *behind* its end (a backlog: a catch-up
/// after downtime, a backfill, one partition fetched faster than another) or reaches its end
/// again after being reported behind. The projector holds its watermark at the earliest
/// progress of the partitions still behind, so that time-driven transitions wait for events a
/// slower partition has not delivered yet; a replay sees the same progress at the same places.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceProgress {
    /// The partitions reported, each at most once.
    pub partitions: Vec<PartitionProgress>,
}

/// One source partition's progress (see [`SourceProgress`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionProgress {
    /// The topic (or source name).
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The latest event time read from the partition so far, each capped at the time it was
    /// read; absent while nothing valid has been read from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_to: Option<DateTime<Utc>>,
    /// Whether records are left to read: the partition's end was not reached after its last
    /// record read.
    pub behind: bool,
}

/// Consent for one purpose was granted or withdrawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentChanged {
    /// The purpose, e.g. `marketing_email`, `sms`, `profiling`.
    pub purpose: String,
    /// Whether consent is now given.
    pub granted: bool,
    /// Fields not understood by this version.
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

/// The customer asked for their personal data to be erased.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErasureRequested {
    /// Why, or the ticket that asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Fields not understood by this version.
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

/// The kind of an identifier that can be linked to a customer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// An email address.
    Email,
    /// A phone number.
    Phone,
    /// A device id.
    DeviceId,
    /// A WeChat OpenID (per app).
    WechatOpenid,
    /// A WeChat UnionID (per developer account).
    WechatUnionid,
    /// A loyalty card number.
    LoyaltyCard,
    /// Any other kind, kept by name.
    #[serde(untagged)]
    Other(String),
}

impl IdentityKind {
    /// The stable name, e.g. `email` or `wechat_openid`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::DeviceId => "device_id",
            Self::WechatOpenid => "wechat_openid",
            Self::WechatUnionid => "wechat_unionid",
            Self::LoyaltyCard => "loyalty_card",
            Self::Other(name) => name,
        }
    }

    /// The most identifiers of this kind one customer (together with everyone merged into it)
    /// may hold. A link past the limit links nothing more of that kind, and a merge that would
    /// pass it is refused: a shared device or a pooled family email must not fuse strangers
    /// into one ever-growing customer.
    pub fn limit(&self) -> usize {
        match self {
            Self::Email => 10,
            Self::Phone => 5,
            Self::DeviceId => 50,
            Self::WechatOpenid => 20,
            Self::WechatUnionid => 1,
            Self::LoyaltyCard => 5,
            Self::Other(_) => 20,
        }
    }

    /// Parses a kind name; unknown names are kept as [`IdentityKind::Other`].
    pub fn from_name(name: &str) -> Self {
        match name {
            "email" => Self::Email,
            "phone" => Self::Phone,
            "device_id" => Self::DeviceId,
            "wechat_openid" => Self::WechatOpenid,
            "wechat_unionid" => Self::WechatUnionid,
            "loyalty_card" => Self::LoyaltyCard,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// One identifier of a customer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// What kind of identifier.
    pub kind: IdentityKind,
    /// Its value (personal data).
    pub value: String,
}

impl Identity {
    /// The value as compared and indexed: surrounding spaces dropped; emails lowercased; phone
    /// numbers without spaces, dashes, dots and parentheses. Two spellings of one identifier
    /// give the same normalized value.
    pub fn normalized_value(&self) -> String {
        let value = self.value.trim();
        match self.kind {
            IdentityKind::Email => value.to_lowercase(),
            IdentityKind::Phone => value
                .chars()
                .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
                .collect(),
            _ => value.to_owned(),
        }
    }
}

/// Several identifiers were found to belong to this customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentitiesLinked {
    /// The identifiers, at least one.
    pub identities: Vec<Identity>,
    /// The evidence for the link, e.g. `login` or `order_match`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// Fields not understood by this version.
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

/// Another customer was found to be the one whose stream this event is in: from this event on,
/// both streams (and the streams of everyone already merged into the other customer) project
/// into this customer. Written by Patron's store, in the same transaction as the
/// `identities_linked` event that caused it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomersMerged {
    /// The customer merged into this one.
    pub merged_customer_id: CustomerId,
    /// The `identities_linked` event that linked an identifier the merged customer held.
    pub link_event_id: Uuid,
    /// The kind of the shared identifier (the value is personal data and stays in the link).
    pub identity_kind: IdentityKind,
    /// The evidence the link gave, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// Fields not understood by this version.
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

/// A merge into this customer is undone: the merged customer (with everyone merged into it) is
/// a customer of its own again, and both are projected from their own streams. Sent in the
/// stream of the customer the other was merged into; an unmerge of a customer that is not
/// merged into this one changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomersUnmerged {
    /// The customer to split off again.
    pub merged_customer_id: CustomerId,
    /// Why the merge was wrong, or the ticket that said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Fields not understood by this version.
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

/// An event of a type this version does not know: stored as sent, not projected.
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownBody {
    /// The type name the producer used.
    pub event_type: String,
    /// The body as sent.
    pub data: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    #[test]
    fn customer_ids_are_checked() {
        assert_eq!(CustomerId::parse(" c-1 ").unwrap().as_str(), "c-1");
        assert!(CustomerId::parse("").is_err());
        assert!(CustomerId::parse("a\u{0}b").is_err());
        assert!(CustomerId::parse(&"x".repeat(129)).is_err());
        assert!(CustomerId::parse(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn event_type_names_round_trip() {
        for known in EventType::KNOWN {
            assert_eq!(EventType::from_name(known.as_str()), known);
        }
        assert_eq!(
            EventType::from_name("loyalty_points_earned"),
            EventType::Unknown("loyalty_points_earned".into())
        );
    }

    #[test]
    fn payload_round_trip_keeps_unknown_fields() {
        let mut extra = Map::new();
        extra.insert("coupon".into(), Value::from("WELCOME10"));
        let body = EventBody::Purchase(Purchase {
            order_id: "o-1".into(),
            amount: Money::new(1999, Currency::from_code("EUR").unwrap()).unwrap(),
            items: vec![LineItem {
                sku: "sku-1".into(),
                quantity: 2,
                unit_price: None,
                extra: Map::new(),
            }],
            extra,
        });
        let payload = body.to_payload();
        assert_eq!(payload["coupon"], "WELCOME10", "unknown field kept flat");
        assert_eq!(
            serde_json::from_str::<Value>(&body.to_payload_string()).unwrap(),
            payload,
            "text and value forms agree"
        );
        let back = EventBody::from_payload("purchase", payload).unwrap();
        assert_eq!(back, body);
        let back = EventBody::from_payload_str("purchase", &body.to_payload_string()).unwrap();
        assert_eq!(back, body, "the text form parses straight into the body");
    }

    #[test]
    fn unknown_types_are_kept_verbatim() {
        let data = serde_json::json!({"points": 40});
        let body = EventBody::from_payload("points_earned", data.clone()).unwrap();
        assert_eq!(
            body.event_type(),
            EventType::Unknown("points_earned".into())
        );
        assert_eq!(body.to_payload(), data);
        let text = EventBody::from_payload_str("points_earned", &data.to_string()).unwrap();
        assert_eq!(text, body);
    }

    #[test]
    fn interaction_kinds_keep_unknown_names() {
        let json = serde_json::json!({"channel": "web", "kind": "wishlist_add"});
        let body: Interaction = serde_json::from_value(json).unwrap();
        assert_eq!(body.kind, InteractionKind::Other("wishlist_add".into()));
        let json = serde_json::json!({"channel": "email", "kind": "email_click"});
        let body: Interaction = serde_json::from_value(json).unwrap();
        assert_eq!(body.kind, InteractionKind::EmailClick);
    }
}
