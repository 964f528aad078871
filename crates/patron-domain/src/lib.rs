//! Patron's domain model: customer events, money, and validation.
//!
//! Everything here is plain synchronous code over data. Time is always passed in (see
//! [`ValidationPolicy::now`]); nothing in this crate reads a clock, touches a database or a
//! broker. Edges decode their wire formats into a [`RawEvent`] and call [`validate`] to obtain a
//! typed [`Event`] or a precise [`ValidationError`].

mod digest;
mod event;
mod money;
mod validate;

pub use digest::EventDigest;
pub use event::{
    Acquired, ConsentChanged, CustomerId, CustomersMerged, CustomersUnmerged, ErasureRequested,
    Event, EventBody, EventType, Feedback, IdentitiesLinked, Identity, IdentityKind, Interaction,
    InteractionKind, LineItem, ModelFitted, PartitionProgress, ProfileUpdated, Purchase, Refund,
    SourceProgress, Tick, UnknownBody,
};
pub use money::{Currency, MAX_ABS_MINOR_UNITS, Money, MoneyError};
pub use validate::{
    ErrorClass, MAX_PURPOSE_CHARS, MAX_TYPE_CHARS, RawEvent, RawTime, ValidationError,
    ValidationPolicy, is_purpose_name, validate, validate_subject,
};
