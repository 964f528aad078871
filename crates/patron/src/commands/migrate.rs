//! `patron migrate`.

use std::process::ExitCode;

use anyhow::Context as _;
use patron_store_sql::redact;

use crate::cli::DatabaseArgs;

pub(crate) async fn run(database: &DatabaseArgs) -> anyhow::Result<ExitCode> {
    let store = super::open_store(database).await?;
    let applied = store.migrate().await.context("migration failed")?;
    tracing::info!(
        backend = store.backend(),
        database = %redact(&database.database_url),
        applied,
        "schema is up to date"
    );
    Ok(ExitCode::SUCCESS)
}
