//! `patron ingest`: Kafka → event store.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use patron_codec::Limits;
use patron_ingest::Settings;
use patron_kafka::{IngestConsumer, IngestOptions, KafkaDeadLetters};

use crate::cli::{DatabaseArgs, IngestArgs};

pub(crate) async fn run(database: &DatabaseArgs, args: IngestArgs) -> anyhow::Result<ExitCode> {
    let shutdown = super::shutdown_signal();
    let store = super::open_store(database).await?.into_dyn();
    let consumer = consumer(&args, store).await?;
    // The consumer blocks in place briefly during rebalances: it must run on a runtime worker.
    let summary = tokio::spawn(consumer.run(shutdown))
        .await
        .context("the consumer task failed")?
        .context("ingestion stopped")?;
    tracing::info!(
        batches = summary.batches,
        appended = summary.appended,
        duplicates = summary.duplicates,
        dead_letters = summary.dead_letters,
        "ingest stopped cleanly"
    );
    Ok(ExitCode::SUCCESS)
}

/// The configured consumer (with its dead-letter producer), appending to `store`. Fails when a
/// dead-letter topic does not exist and the broker will not create it: letters that can never be
/// delivered would otherwise pause ingest for good at the first bad record.
pub(crate) async fn consumer(
    args: &IngestArgs,
    store: Arc<dyn patron_store::EventStore>,
) -> anyhow::Result<IngestConsumer> {
    let kafka = args.kafka.settings();
    let dead_letters = Arc::new(
        KafkaDeadLetters::new(&kafka, args.dead_letter_suffix.clone())
            .context("cannot create the dead-letter producer")?,
    );
    dead_letters
        .check_topics(&args.topics, std::time::Duration::from_secs(30))
        .await
        .context("the dead-letter topics are not usable")?;
    let mut options = IngestOptions::new(args.group.clone(), args.topics.clone());
    options.batch_size = usize::try_from(args.batch_size).unwrap_or(5000);
    options.batch_max_delay = args.batch_max_delay;
    options.retry_max_delay = args.retry_max_delay;
    options.instance_id.clone_from(&args.group_instance_id);
    let mut settings = Settings::new(args.group.clone());
    settings.limits = Limits {
        max_payload_bytes: args.max_payload_bytes,
    };
    IngestConsumer::new(&kafka, options, settings, store, dead_letters)
        .context("cannot create the Kafka consumer")
}
