//! `patron sources`: the source partitions ingest reports read behind their end (what holds the
//! projector's watermark back), and releasing those that will not be read again.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::Utc;
use patron_domain::{CustomerId, Event, EventBody, PartitionProgress, SourceProgress};
use patron_projector::sources_behind;
use patron_store::{AppendBatch, ExpectedVersion};
use serde_json::json;
use uuid::Uuid;

use crate::cli::{DatabaseArgs, SourcesReleaseArgs};

/// Prints each partition behind as a JSON line: topic, partition, and the latest event time read
/// from it (`null`: nothing yet).
pub(crate) async fn list(database: &DatabaseArgs) -> anyhow::Result<ExitCode> {
    let store = super::open_store(database).await?.into_dyn();
    let behind = sources_behind(store.as_ref())
        .await
        .context("cannot read the source progress (has `patron migrate` been run?)")?;
    let mut out = std::io::stdout().lock();
    for ((topic, partition), read_to) in behind.iter() {
        let line = json!({"topic": topic, "partition": partition, "read_to": read_to});
        writeln!(out, "{line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Reports the chosen partitions as no longer behind; fails, writing nothing, if none of them is.
pub(crate) async fn release(
    database: &DatabaseArgs,
    args: &SourcesReleaseArgs,
) -> anyhow::Result<ExitCode> {
    let store = super::open_store(database).await?.into_dyn();
    let behind = sources_behind(store.as_ref())
        .await
        .context("cannot read the source progress (has `patron migrate` been run?)")?;
    let partitions: Vec<PartitionProgress> = behind
        .iter()
        .filter(|((topic, partition), _)| {
            *topic == args.topic && args.partition.is_none_or(|p| p == *partition)
        })
        .map(|((topic, partition), read_to)| PartitionProgress {
            topic: topic.clone(),
            partition: *partition,
            read_to: *read_to,
            behind: false,
        })
        .collect();
    if partitions.is_empty() {
        anyhow::bail!(
            "no partition of topic {:?}{} is reported behind (`patron sources` lists them)",
            args.topic,
            args.partition
                .map(|p| format!(", partition {p},"))
                .unwrap_or_default()
        );
    }
    let released: Vec<String> = partitions
        .iter()
        .map(|p| format!("{}/{}", p.topic, p.partition))
        .collect();
    let event = Event {
        event_id: Uuid::now_v7(),
        customer_id: CustomerId::sources(),
        occurred_at: Utc::now(),
        source: "patron-sources".into(),
        body: EventBody::SourceProgress(SourceProgress { partitions }),
    };
    let batch = AppendBatch::single(CustomerId::sources(), ExpectedVersion::Any, vec![event]);
    store
        .append(&batch)
        .await
        .context("cannot append the release")?;
    #[allow(clippy::print_stderr)]
    {
        eprintln!("released {}", released.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
