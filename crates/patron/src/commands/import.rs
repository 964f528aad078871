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
    for (index, text) in input.split(b'\n').enumerate() {
        let line = Line {
            number: index + 1,
            text: text.context("cannot read the input")?,
        };
        if line.text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        tally.lines += 1;
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
