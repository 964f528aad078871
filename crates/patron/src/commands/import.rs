//! `patron import`: a backfill from CloudEvents JSON lines, validated like any inbound event.
//!
//! Like ingest, an event may name its customer by an identifier only (`identitykind` /
//! `identityvalue`): it is stored in the stream of the customer holding it. A line is rejected,
//! and the import goes on, when it is invalid, when its identifier cannot be resolved, or when its
//! event id is already taken by different content; the summary counts the rejects and
//! `--rejects` lists them.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::Utc;
use patron_codec::{Limits, Message};
use patron_domain::{
    CustomerId, ErrorClass, Event, ValidationError, ValidationPolicy, validate_subject,
};
use patron_store::{AppendBatch, EventStore, StoreError};
use serde_json::json;

use crate::cli::{DatabaseArgs, ImportArgs};

#[derive(Default)]
struct Tally {
    lines: u64,
    appended: u64,
    duplicates: u64,
    rejected: u64,
}

/// A line of the input: its number and its text.
struct Line {
    number: usize,
    text: Vec<u8>,
}

/// Where rejected lines are reported: the log, the count, and the rejects file if any.
struct Rejects {
    file: Option<File>,
}

impl Rejects {
    fn report(
        &mut self,
        line: &Line,
        error: &ValidationError,
        tally: &mut Tally,
    ) -> anyhow::Result<()> {
        tally.rejected += 1;
        tracing::warn!(line = line.number, class = %error.class, "rejected: {error}");
        if let Some(file) = &mut self.file {
            let record = json!({
                "line": line.number,
                "error_class": error.class.as_str(),
                "field": error.field,
                "reason": error.message,
                "record": String::from_utf8_lossy(&line.text),
            });
            writeln!(file, "{record}").context("cannot write the rejects file")?;
        }
        Ok(())
    }
}

pub(crate) async fn run(database: &DatabaseArgs, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let store = super::open_store(database).await?.into_dyn();
    let input: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let file = File::open(&args.file)
            .with_context(|| format!("cannot open {}", args.file.display()))?;
        Box::new(BufReader::new(file))
    };
    let mut rejects = Rejects {
        file: args
            .rejects
            .as_ref()
            .map(|path| {
                File::create(path).with_context(|| format!("cannot create {}", path.display()))
            })
            .transpose()?,
    };
    let limits = Limits {
        max_payload_bytes: args.max_payload_bytes,
    };
    let batch_size = usize::try_from(args.batch_size).unwrap_or(1000);

    let mut tally = Tally::default();
    // Validated events waiting for their append, with the lines they came from.
    let mut pending: Vec<(Event, Line)> = Vec::with_capacity(batch_size);
    let mut input = input;
    let mut number = 0;
    loop {
        // A line is read up to the size limit and no further: the rest of a longer one is
        // skipped, not held in memory.
        let mut text = Vec::new();
        let Some(length) = read_line_bounded(input.as_mut(), &mut text, limits.max_payload_bytes)
            .context("cannot read the input")?
        else {
            break;
        };
        number += 1;
        let line = Line { number, text };
        if length <= limits.max_payload_bytes && line.text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        tally.lines += 1;
        if length > limits.max_payload_bytes {
            let error = ValidationError::new(
                ErrorClass::PayloadTooLarge,
                "record",
                format!(
                    "line is {length} bytes, the limit is {} (--max-payload-bytes); \
                     the rejects file keeps its first {REJECTED_PREFIX} bytes",
                    limits.max_payload_bytes
                ),
            );
            let shown = Line {
                number,
                text: line.text[..line.text.len().min(REJECTED_PREFIX)].to_vec(),
            };
            rejects.report(&shown, &error, &mut tally)?;
            continue;
        }
        let message = Message {
            payload: &line.text,
            ..Message::default()
        };
        let policy = ValidationPolicy::at(Utc::now());
        let checked =
            patron_codec::decode(&message, &limits).and_then(|raw| validate_subject(raw, &policy));
        match checked {
            Ok((event, None)) => pending.push((event, line)),
            Ok((mut event, Some(identity))) => match customer_of(&*store, &identity).await? {
                Ok(customer) => {
                    event.customer_id = customer;
                    pending.push((event, line));
                }
                Err(error) => rejects.report(&line, &error, &mut tally)?,
            },
            Err(error) => rejects.report(&line, &error, &mut tally)?,
        }
        if pending.len() >= batch_size {
            flush(&*store, &mut pending, &mut tally, &mut rejects).await?;
        }
    }
    flush(&*store, &mut pending, &mut tally, &mut rejects).await?;
    let head = store.head().await?;
    tracing::info!(
        lines = tally.lines,
        appended = tally.appended,
        duplicates = tally.duplicates,
        rejected = tally.rejected,
        head = head.0,
        "import finished"
    );
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "read {} records: {} appended, {} already stored, {} rejected; the log now ends at position {}",
        tally.lines, tally.appended, tally.duplicates, tally.rejected, head
    )?;
    Ok(ExitCode::SUCCESS)
}

/// How much of a line too long to import the rejects file shows.
const REJECTED_PREFIX: usize = 1024;

/// Reads the next line (without its `\n`) into `text`, keeping at most `max` bytes of it; returns
/// its whole length (more than `max`: the rest was read past, not kept), or `None` at the end of
/// the input.
fn read_line_bounded(
    input: &mut dyn BufRead,
    text: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<usize>> {
    text.clear();
    let mut length = 0;
    let mut read_any = false;
    loop {
        let available = match input.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            return Ok(read_any.then_some(length));
        }
        read_any = true;
        let end = available.iter().position(|&b| b == b'\n');
        let chunk = &available[..end.unwrap_or(available.len())];
        let room = max.saturating_add(1).saturating_sub(text.len());
        text.extend_from_slice(&chunk[..chunk.len().min(room)]);
        length += chunk.len();
        let used = end.map_or(available.len(), |end| end + 1);
        input.consume(used);
        if end.is_some() {
            return Ok(Some(length));
        }
    }
}

/// The customer holding `identity` (a new provisional one if nobody does): the outer error when
/// the store cannot be reached, the inner one when the identifier cannot be resolved.
async fn customer_of(
    store: &dyn EventStore,
    identity: &patron_domain::Identity,
) -> anyhow::Result<Result<CustomerId, ValidationError>> {
    match store.resolve_identity(identity).await {
        Ok(customer) => Ok(Ok(customer)),
        Err(error) if error.is_transient() => {
            Err(error).context("cannot resolve a customer identifier")
        }
        Err(error) => Ok(Err(ValidationError::new(
            ErrorClass::InvalidField,
            "identity",
            format!("the customer could not be resolved: {error}"),
        ))),
    }
}

/// Appends the pending events. Events whose id is already taken by different content are
/// rejected and the rest appended.
async fn flush(
    store: &dyn EventStore,
    pending: &mut Vec<(Event, Line)>,
    tally: &mut Tally,
    rejects: &mut Rejects,
) -> anyhow::Result<()> {
    let (mut batch, mut lines) = AppendBatch::grouped(pending.drain(..));
    while batch.event_count() > 0 {
        match store.append(&batch).await {
            Ok(receipt) => {
                tally.appended += receipt.appended;
                tally.duplicates += receipt.duplicates;
                return Ok(());
            }
            Err(StoreError::DuplicateEventIds(conflicts)) => {
                let taken = batch
                    .set_aside(&mut lines, &conflicts)
                    .map_err(|error| anyhow::anyhow!(error))?;
                for (_, line, conflict) in taken {
                    let error = ValidationError::new(
                        ErrorClass::DuplicateEventIdConflict,
                        "event_id",
                        format!("{conflict}; an event imported again must carry the same content"),
                    );
                    rejects.report(&line, &error, tally)?;
                }
            }
            Err(error) => {
                return Err(error)
                    .context("append failed (has `patron migrate` been run on this database?)");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Every line with its length and what was kept, reading with a small buffer so that lines
    /// span several reads.
    fn lines(input: &[u8], max: usize) -> Vec<(usize, Vec<u8>)> {
        let mut reader = BufReader::with_capacity(4, input);
        let mut out = Vec::new();
        let mut text = Vec::new();
        while let Some(length) = read_line_bounded(&mut reader, &mut text, max).unwrap() {
            out.push((length, text.clone()));
        }
        out
    }

    #[test]
    fn lines_are_read_whole_up_to_the_limit() {
        assert_eq!(
            lines(b"one\ntwo two\n\nlast", 100),
            vec![
                (3, b"one".to_vec()),
                (7, b"two two".to_vec()),
                (0, Vec::new()),
                (4, b"last".to_vec()),
            ]
        );
        assert_eq!(lines(b"", 100), Vec::<(usize, Vec<u8>)>::new());
        assert_eq!(lines(b"x\n", 100), vec![(1, b"x".to_vec())]);
    }

    #[test]
    fn a_longer_line_is_measured_not_kept() {
        let mut input = vec![b'a'; 10_000];
        input.extend_from_slice(b"\nnext\n");
        let got = lines(&input, 16);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, 10_000, "its whole length");
        assert!(got[0].1.len() <= 17, "kept {} bytes", got[0].1.len());
        assert_eq!(got[1], (4, b"next".to_vec()), "the next line is intact");
        // Exactly at the limit is kept whole.
        assert_eq!(lines(b"abcd\n", 4), vec![(4, b"abcd".to_vec())]);
    }
}
