//! PostgreSQL `COPY … FROM STDIN (FORMAT binary)` for the bulk writes of a generation being
//! built, where rows are new: a rebuild writes every customer and every transition of the log.
//! The binary format spares both sides from printing and parsing numbers and timestamps.

use chrono::{DateTime, Utc};

/// The header of the binary format: signature, flags, header-extension length.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The trailer: a field count of -1.
const TRAILER: &[u8] = &(-1i16).to_be_bytes();
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// A NULL field: a length of -1.
const NULL: &[u8] = &(-1i32).to_be_bytes();

/// Rows in COPY's binary format. Every row starts with [`CopyRows::row`] and then has exactly
/// that many fields, each of the column's exact type.
pub(crate) struct CopyRows {
    buffer: Vec<u8>,
    rows: usize,
}

impl CopyRows {
    pub(crate) fn new() -> Self {
        Self {
            buffer: HEADER.to_vec(),
            rows: 0,
        }
    }

    /// Starts a row of `fields` fields.
    pub(crate) fn row(&mut self, fields: i16) -> &mut Self {
        self.buffer.extend_from_slice(&fields.to_be_bytes());
        self.rows += 1;
        self
    }

    fn field(&mut self, bytes: &[u8]) -> &mut Self {
        // Fields are far below 2 GiB (a customer's state is a few KiB).
        let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
        self.buffer.extend_from_slice(&len.to_be_bytes());
        self.buffer.extend_from_slice(bytes);
        self
    }

    fn null(&mut self) -> &mut Self {
        self.buffer.extend_from_slice(NULL);
        self
    }

    /// A `text` field, or NULL.
    pub(crate) fn text(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            None => self.null(),
            Some(text) => self.field(text.as_bytes()),
        }
    }

    /// A `bigint` field, or NULL.
    pub(crate) fn int8(&mut self, value: Option<i64>) -> &mut Self {
        match value {
            None => self.null(),
            Some(n) => self.field(&n.to_be_bytes()),
        }
    }

    /// An `integer` field.
    pub(crate) fn int4(&mut self, value: i32) -> &mut Self {
        self.field(&value.to_be_bytes())
    }

    /// A `smallint` field, or NULL.
    pub(crate) fn int2(&mut self, value: Option<i16>) -> &mut Self {
        match value {
            None => self.null(),
            Some(n) => self.field(&n.to_be_bytes()),
        }
    }

    /// A `timestamptz` field, or NULL.
    pub(crate) fn time(&mut self, value: Option<DateTime<Utc>>) -> &mut Self {
        match value {
            None => self.null(),
            Some(t) => {
                let micros = t.timestamp_micros().saturating_sub(PG_EPOCH_MICROS);
                self.field(&micros.to_be_bytes())
            }
        }
    }

    /// A `jsonb` field from JSON text (its binary form: a version byte, 1, then the text).
    pub(crate) fn jsonb(&mut self, json: &str) -> &mut Self {
        let len = i32::try_from(json.len() + 1).unwrap_or(i32::MAX);
        self.buffer.extend_from_slice(&len.to_be_bytes());
        self.buffer.push(1);
        self.buffer.extend_from_slice(json.as_bytes());
        self
    }

    /// The whole COPY data, trailer included.
    pub(crate) fn into_bytes(mut self) -> Vec<u8> {
        self.buffer.extend_from_slice(TRAILER);
        self.buffer
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Bytes built and not yet taken.
    pub(crate) fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// Takes the bytes built so far (the first piece starts with the header), to send them
    /// while more rows are built.
    pub(crate) fn take_piece(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buffer)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    #[test]
    fn rows_are_framed_and_nulls_marked() {
        let mut rows = CopyRows::new();
        assert!(rows.is_empty());
        rows.row(4)
            .text(Some("a\tb"))
            .int8(None)
            .int2(Some(-4))
            .time(Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 1).single());
        rows.row(1).jsonb("{}");
        assert!(!rows.is_empty());
        let bytes = rows.into_bytes();
        let mut expected = HEADER.to_vec();
        expected.extend_from_slice(&[0, 4, 0, 0, 0, 3, b'a', b'\t', b'b']);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0, 0, 0, 2, 0xff, 0xfc]);
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x40]);
        expected.extend_from_slice(&[0, 1, 0, 0, 0, 3, 1, b'{', b'}']);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(bytes, expected);
    }
}
