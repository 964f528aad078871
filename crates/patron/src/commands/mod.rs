//! One module per subcommand.

pub(crate) mod api;
pub(crate) mod check;
pub(crate) mod dev;
pub(crate) mod events;
pub(crate) mod fit;
pub(crate) mod import;
pub(crate) mod ingest;
pub(crate) mod migrate;
pub(crate) mod project;
pub(crate) mod rebuild;
pub(crate) mod relay;
pub(crate) mod rules;
pub(crate) mod serve;
pub(crate) mod sources;

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
    let master = database
        .privacy
        .resolve(&database.database_url)?
        .map(std::sync::Arc::new);
    if master.is_none() {
        tracing::warn!(
            "no master key configured (--master-key-file): personal data is stored unencrypted; \
             erasure still scrubs it in place"
        );
    }
    let store = SqlEventStore::connect(&options).await.with_context(|| {
        format!(
            "cannot open the event store at {}",
            redact(&database.database_url)
        )
    })?;
    Ok(store.with_master_key(master))
}

/// A future that completes on SIGTERM or Ctrl-C (SIGINT). The handlers are installed when this
/// is called, not when the future is first polled, so call it first thing: a signal that comes
/// earlier would end the process without a clean shutdown.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (term, interrupt) {
                (Ok(mut term), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM received"),
                        _ = interrupt.recv() => tracing::info!("interrupt received"),
                    }
                }
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!(%error, "cannot listen for signals; falling back to Ctrl-C only");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
