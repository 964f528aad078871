//! `patron import`: a backfill from CloudEvents JSON lines, validated like any inbound event.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::Utc;
use patron_codec::{Limits, Message};
use patron_domain::{Event, ValidationError, ValidationPolicy, validate};
use patron_store::{AppendBatch, EventStore};
use serde_json::json;

use crate::cli::{DatabaseArgs, ImportArgs};

#[derive(Default)]
struct Tally {
    lines: u64,
    appended: u64,
    duplicates: u64,
    rejected: u64,
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
    let mut rejects = args
        .rejects
        .as_ref()
        .map(|path| File::create(path).with_context(|| format!("cannot create {}", path.display())))
        .transpose()?;
    let limits = Limits {
        max_payload_bytes: args.max_payload_bytes,
    };
    let batch_size = usize::try_from(args.batch_size).unwrap_or(1000);

    let mut tally = Tally::default();
    let mut batch: Vec<Event> = Vec::with_capacity(batch_size);
    for (index, line) in input.split(b'\n').enumerate() {
        let line_number = index + 1;
        let line = line.context("cannot read the input")?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        tally.lines += 1;
        let message = Message {
            payload: &line,
            ..Message::default()
        };
        let policy = ValidationPolicy::at(Utc::now());
        match patron_codec::decode(&message, &limits).and_then(|raw| validate(raw, &policy)) {
            Ok(event) => batch.push(event),
            Err(error) => {
                tally.rejected += 1;
                report_reject(line_number, &line, &error, rejects.as_mut())?;
            }
        }
        if batch.len() >= batch_size {
            flush(&*store, &mut batch, &mut tally).await?;
        }
    }
    flush(&*store, &mut batch, &mut tally).await?;
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

async fn flush(
    store: &dyn EventStore,
    batch: &mut Vec<Event>,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let receipt = store
        .append(&AppendBatch::from_events(batch.drain(..)))
        .await
        .context("append failed (has `patron migrate` been run on this database?)")?;
    tally.appended += receipt.appended;
    tally.duplicates += receipt.duplicates;
    Ok(())
}

fn report_reject(
    line_number: usize,
    line: &[u8],
    error: &ValidationError,
    rejects: Option<&mut File>,
) -> anyhow::Result<()> {
    tracing::warn!(line = line_number, class = %error.class, "rejected: {error}");
    if let Some(file) = rejects {
        let record = json!({
            "line": line_number,
            "error_class": error.class.as_str(),
            "field": error.field,
            "reason": error.message,
            "record": String::from_utf8_lossy(line),
        });
        writeln!(file, "{record}").context("cannot write the rejects file")?;
    }
    Ok(())
}
