//! `patron api`: the gRPC API.

use std::process::ExitCode;

use crate::cli::{ApiArgs, DatabaseArgs};
use crate::commands::{open_store, shutdown_signal};

pub(crate) async fn run(database: &DatabaseArgs, args: ApiArgs) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_signal();
    let store = open_store(database).await?;
    let config = args.config()?;
    tracing::info!(listen = %args.api_listen, backend = store.backend(), "API serving");
    patron_api::serve(config, store, shutdown).await?;
    tracing::info!("API stopped");
    Ok(ExitCode::SUCCESS)
}
