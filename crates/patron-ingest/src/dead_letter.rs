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
    /// Set when the record's payload was left out for the letter to fit: its size in bytes.
    pub const PAYLOAD_OMITTED: &str = "patron.payload.omitted";
    /// Set when the record's own headers were left out for the letter to fit: their size in
    /// bytes (names and values).
    pub const HEADERS_OMITTED: &str = "patron.headers.omitted";
    /// Set when the record's key was left out for the letter to fit: its size in bytes.
    pub const KEY_OMITTED: &str = "patron.key.omitted";
}

/// A dead letter as sent: what of the record fits in one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// The record's key, unless left out.
    pub key: Option<Vec<u8>>,
    /// The record's headers (unless left out), then Patron's.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The record's payload, or nothing when left out.
    pub payload: Vec<u8>,
}

impl Letter {
    /// The bytes it takes: key, header names and values, payload.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self
                .headers
                .iter()
                .map(|(name, value)| name.len() + value.len())
                .sum::<usize>()
            + self.payload.len()
    }
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

    /// The letter to send, at most `max_bytes` (key, headers and payload) where that can be: the
    /// payload is left out first, then the record's own headers, then its key, each noted in a
    /// `patron.*.omitted` header with its size. Patron's headers (where the record came from and
    /// why it was rejected) are always kept, so that the letter can be traced to the record.
    pub fn fitted(&self, max_bytes: usize) -> Letter {
        let record = &self.record;
        let mut letter = Letter {
            key: record.key.clone(),
            headers: self.headers(),
            payload: record.payload.clone(),
        };
        if letter.size() <= max_bytes {
            return letter;
        }
        letter.payload = Vec::new();
        letter.headers.push((
            headers::PAYLOAD_OMITTED.to_owned(),
            record.payload.len().to_string().into_bytes(),
        ));
        if letter.size() <= max_bytes {
            return letter;
        }
        let own: usize = record
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum();
        letter.headers.drain(..record.headers.len());
        letter.headers.push((
            headers::HEADERS_OMITTED.to_owned(),
            own.to_string().into_bytes(),
        ));
        if letter.size() <= max_bytes {
            return letter;
        }
        if let Some(key) = letter.key.take() {
            letter.headers.push((
                headers::KEY_OMITTED.to_owned(),
                key.len().to_string().into_bytes(),
            ));
        }
        letter
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use patron_domain::{ErrorClass, ValidationError};

    use super::*;

    fn letter(key: usize, header: usize, payload: usize) -> DeadLetter {
        DeadLetter {
            record: InboundRecord {
                topic: "customer-events".into(),
                partition: 3,
                offset: 41,
                key: Some(vec![b'k'; key]),
                headers: vec![("ce_type".into(), vec![b'h'; header])],
                payload: vec![b'p'; payload],
            },
            error: ValidationError::new(ErrorClass::PayloadTooLarge, "payload", "too large"),
        }
    }

    fn header<'a>(letter: &'a Letter, name: &str) -> Option<&'a str> {
        letter
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn a_letter_that_fits_is_the_record_with_its_reasons() {
        let dead = letter(10, 20, 1000);
        let sent = dead.fitted(2000);
        assert_eq!(sent.payload, dead.record.payload);
        assert_eq!(sent.key, dead.record.key);
        assert_eq!(sent.headers, dead.headers());
        assert!(sent.size() <= 2000);
        assert_eq!(header(&sent, headers::PAYLOAD_OMITTED), None);
    }

    #[test]
    fn a_large_payload_is_left_out_and_its_size_noted() {
        let dead = letter(10, 20, 1_050_000);
        let sent = dead.fitted(1_000_000);
        assert!(sent.payload.is_empty());
        assert_eq!(header(&sent, headers::PAYLOAD_OMITTED), Some("1050000"));
        assert_eq!(header(&sent, "ce_type").map(str::len), Some(20));
        assert_eq!(sent.key, dead.record.key);
        assert_eq!(header(&sent, headers::ORIGINAL_OFFSET), Some("41"));
        assert!(sent.size() <= 1_000_000);
    }

    #[test]
    fn large_headers_go_next_then_the_key() {
        let dead = letter(10, 900_000, 500_000);
        let sent = dead.fitted(100_000);
        assert!(sent.payload.is_empty());
        assert_eq!(header(&sent, "ce_type"), None);
        assert_eq!(
            header(&sent, headers::HEADERS_OMITTED),
            Some("900007"),
            "name and value"
        );
        assert_eq!(sent.key, dead.record.key, "a small key stays");
        assert!(sent.size() <= 100_000);

        let dead = letter(300_000, 10, 10);
        let sent = dead.fitted(1_000);
        assert_eq!(sent.key, None);
        assert_eq!(header(&sent, headers::KEY_OMITTED), Some("300000"));
        assert_eq!(
            header(&sent, headers::ERROR_CLASS),
            Some("payload_too_large")
        );
        assert!(sent.size() <= 1_000);
    }
}
