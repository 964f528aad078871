//! PostgreSQL `COPY … FROM STDIN` (text format) for the bulk writes of a generation being built,
//! where rows are new: a rebuild writes every customer and every transition of the log.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};

/// Rows in COPY's text format: fields separated by tabs, rows ended by newlines, `\N` for NULL.
pub(crate) struct CopyRows {
    buffer: String,
    first: bool,
}

impl CopyRows {
    pub(crate) fn new() -> Self {
        Self {
            buffer: String::new(),
            first: true,
        }
    }

    fn separate(&mut self) {
        if !self.first {
            self.buffer.push('\t');
        }
        self.first = false;
    }

    /// A text field (escaped), or NULL.
    pub(crate) fn text(&mut self, value: Option<&str>) -> &mut Self {
        self.separate();
        match value {
            None => self.buffer.push_str("\\N"),
            Some(text) => {
                for c in text.chars() {
                    match c {
                        '\\' => self.buffer.push_str("\\\\"),
                        '\t' => self.buffer.push_str("\\t"),
                        '\n' => self.buffer.push_str("\\n"),
                        '\r' => self.buffer.push_str("\\r"),
                        c => self.buffer.push(c),
                    }
                }
            }
        }
        self
    }

    /// An integer field, or NULL.
    pub(crate) fn int(&mut self, value: Option<i64>) -> &mut Self {
        self.separate();
        match value {
            None => self.buffer.push_str("\\N"),
            Some(n) => {
                let _ = write!(self.buffer, "{n}");
            }
        }
        self
    }

    /// A timestamp field (RFC 3339, UTC), or NULL.
    pub(crate) fn time(&mut self, value: Option<DateTime<Utc>>) -> &mut Self {
        let text = value.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        self.text(text.as_deref())
    }

    /// Ends the current row.
    pub(crate) fn end_row(&mut self) {
        self.buffer.push('\n');
        self.first = true;
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buffer.into_bytes()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_escaped_and_nulls_marked() {
        let mut rows = CopyRows::new();
        rows.text(Some("a\tb\\c\nd"))
            .int(None)
            .int(Some(-4))
            .end_row();
        rows.text(None).end_row();
        assert_eq!(
            String::from_utf8(rows.into_bytes()).unwrap(),
            "a\\tb\\\\c\\nd\t\\N\t-4\n\\N\n"
        );
    }
}
