//! Dead letters: records that cannot become events, with the reason attached.

use patron_domain::ValidationError;

use crate::prepare::InboundRecord;

/// A record that failed decoding or validation, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The record as it arrived (key, headers and payload are forwarded unchanged).
    pub record: InboundRecord,
    /// Why it was rejected.
    pub error: ValidationError,
}

/// Header names a dead letter carries besides the original record's own headers.
pub mod headers {
    /// Topic the record was read from.
    pub const ORIGINAL_TOPIC: &str = "patron.original.topic";
    /// Partition it was read from.
    pub const ORIGINAL_PARTITION: &str = "patron.original.partition";
    /// Its offset there.
    pub const ORIGINAL_OFFSET: &str = "patron.original.offset";
    /// The error class, e.g. `negative_amount` (see `patron_domain::ErrorClass`).
    pub const ERROR_CLASS: &str = "patron.error.class";
    /// The offending field, e.g. `data.amount.minor_units`.
    pub const ERROR_FIELD: &str = "patron.error.field";
    /// A human-readable reason.
    pub const ERROR_REASON: &str = "patron.error.reason";
}

impl DeadLetter {
    /// The headers to send: the original ones, then Patron's (`patron.original.*`,
    /// `patron.error.*`).
    pub fn headers(&self) -> Vec<(String, Vec<u8>)> {
        let mut all = self.record.headers.clone();
        let r = &self.record;
        for (name, value) in [
            (headers::ORIGINAL_TOPIC, r.topic.clone()),
            (headers::ORIGINAL_PARTITION, r.partition.to_string()),
            (headers::ORIGINAL_OFFSET, r.offset.to_string()),
            (headers::ERROR_CLASS, self.error.class.as_str().to_owned()),
            (headers::ERROR_FIELD, self.error.field.clone()),
            (headers::ERROR_REASON, self.error.to_string()),
        ] {
            all.push((name.to_owned(), value.into_bytes()));
        }
        all
    }
}
