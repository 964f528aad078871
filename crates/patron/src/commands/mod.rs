//! One module per subcommand.

pub(crate) mod events;
pub(crate) mod import;
pub(crate) mod ingest;
pub(crate) mod migrate;

use anyhow::Context as _;
use patron_store_sql::{ConnectOptions, SqlEventStore, redact};

use crate::cli::DatabaseArgs;

/// Opens the configured event store.
pub(crate) async fn open_store(database: &DatabaseArgs) -> anyhow::Result<SqlEventStore> {
    let options = ConnectOptions {
        url: database.database_url.clone(),
        max_connections: database.database_max_connections,
        connect_timeout: database.database_connect_timeout,
    };
    SqlEventStore::connect(&options).await.with_context(|| {
        format!(
            "cannot open the event store at {}",
            redact(&database.database_url)
        )
    })
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; Ctrl-C still stops");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
