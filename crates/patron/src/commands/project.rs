//! `patron project`: the live projector.

use std::process::ExitCode;
use std::sync::Arc;

use patron_projector::SystemClock;

use crate::cli::{DatabaseArgs, ProjectArgs};
use crate::commands::{open_store, rules, shutdown_signal};

pub(crate) async fn run(database: &DatabaseArgs, args: ProjectArgs) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_signal();
    let mut config = rules::projector_config(&args.rules)?;
    config.batch = usize::try_from(args.batch_size).unwrap_or(2000);
    config.idle_poll = args.poll;
    config.tick_interval = args.tick_interval;
    let store = open_store(database).await?;
    tracing::info!(backend = store.backend(), "projector starting");
    let models = store.read_models();
    patron_projector::run(
        store.into_dyn(),
        models,
        config,
        Arc::new(SystemClock),
        shutdown,
    )
    .await?;
    tracing::info!("projector stopped");
    Ok(ExitCode::SUCCESS)
}
