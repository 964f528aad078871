//! `patron relay`: outbox → Kafka lifecycle topic.

use std::process::ExitCode;
use std::sync::Arc;

use patron_kafka::KafkaLifecyclePublisher;
use patron_projector::RelayConfig;

use crate::cli::{DatabaseArgs, RelayArgs};
use crate::commands::{open_store, shutdown_signal};

/// The relay's name: its offset in the outbox is stored per destination topic.
pub(crate) fn relay_name(topic: &str) -> String {
    format!("kafka:{topic}")
}

pub(crate) async fn run(database: &DatabaseArgs, args: RelayArgs) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_signal();
    let store = open_store(database).await?;
    let settings = args.kafka.settings();
    let publisher = KafkaLifecyclePublisher::new(&settings, &args.lifecycle_topic)?;
    let mut config = RelayConfig::new(relay_name(&args.lifecycle_topic));
    config.batch = usize::try_from(args.batch_size).unwrap_or(500);
    tracing::info!(topic = %args.lifecycle_topic, "relay starting");
    patron_projector::run_relay(store.read_models(), Arc::new(publisher), config, shutdown).await?;
    tracing::info!("relay stopped");
    Ok(ExitCode::SUCCESS)
}
