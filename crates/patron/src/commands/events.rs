//! `patron events`: stored events as JSON lines.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;
use patron_domain::{CustomerId, EventBody};
use patron_store::{Position, RecordedEvent};
use serde_json::json;

use crate::cli::{DatabaseArgs, EventsArgs, EventsFormat};

/// Events fetched per store read.
const PAGE: usize = 500;

pub(crate) async fn run(database: &DatabaseArgs, args: EventsArgs) -> anyhow::Result<ExitCode> {
    let store = super::open_store(database).await?.into_dyn();
    let customer = args
        .customer
        .as_deref()
        .map(CustomerId::parse)
        .transpose()
        .map_err(|reason| anyhow::anyhow!("--customer {reason}"))?;
    let mut out = std::io::stdout().lock();
    let mut after = args.after;
    let mut remaining = args.limit;
    while remaining > 0 {
        let want = remaining.min(PAGE);
        let page = match &customer {
            Some(customer) => store.read_stream(customer, after, want).await,
            None => store.read_all(Position(after), want).await,
        }
        .context("cannot read events (has `patron migrate` been run on this database?)")?;
        let Some(last) = page.last() else { break };
        after = if customer.is_some() {
            last.version
        } else {
            last.position.0
        };
        remaining -= page.len();
        for event in &page {
            let line = match args.format {
                EventsFormat::Json => to_json(event),
                EventsFormat::Cloudevents => match to_cloudevent(event) {
                    Some(line) => line,
                    None => continue,
                },
            };
            if let Err(e) = writeln!(out, "{line}") {
                // A closed pipe (`patron events | head`) is a normal way to stop.
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(ExitCode::SUCCESS);
                }
                return Err(e.into());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The event as a CloudEvents JSON document that `patron import` reads back as the same event;
/// `None` for events producers cannot send (Patron's own streams, store-written merges).
fn to_cloudevent(recorded: &RecordedEvent) -> Option<serde_json::Value> {
    let event = &recorded.event;
    if event.customer_id.is_reserved() || matches!(event.body, EventBody::CustomersMerged(_)) {
        return None;
    }
    Some(json!({
        "specversion": "1.0",
        "id": event.event_id,
        "source": event.source,
        "type": format!("patron.{}.v1", event.event_type().as_str()),
        "subject": event.customer_id,
        "time": event.occurred_at,
        "datacontenttype": "application/json",
        "data": event.body.to_payload(),
    }))
}

fn to_json(recorded: &RecordedEvent) -> serde_json::Value {
    let event = &recorded.event;
    json!({
        "position": recorded.position.0,
        "version": recorded.version,
        "recorded_at": recorded.recorded_at,
        "event_id": event.event_id,
        "customer_id": event.customer_id,
        "type": event.event_type().as_str(),
        "occurred_at": event.occurred_at,
        "source": event.source,
        "data": event.body.to_payload(),
    })
}
