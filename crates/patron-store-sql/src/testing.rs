//! Test helpers: a fresh, isolated store per test on either backend.
//!
//! PostgreSQL tests each get their own schema in the database named by
//! `PATRON_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`), so they can run
//! in parallel; schemas older than an hour are dropped on the way. SQLite tests get a file in a
//! temporary directory that is removed with the returned guard.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection};

use crate::{ConnectOptions, PgEventStore, SqliteEventStore};

/// The default test database.
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The PostgreSQL URL tests use.
pub fn postgres_url() -> String {
    std::env::var("PATRON_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.into())
}

/// Creates an empty schema and returns sqlx options whose `search_path` points at it.
pub async fn fresh_postgres_schema() -> PgConnectOptions {
    let url = postgres_url();
    let mut admin = PgConnection::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is needed for this test and is not reachable at {url}: {e}\n\
             Start one (e.g. `make postgres` prints how) or set PATRON_TEST_DATABASE_URL."
        )
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    // Sweep schemas that earlier (possibly crashed) runs left behind.
    let stale: Vec<String> = sqlx::query_scalar(
        "SELECT nspname FROM pg_namespace WHERE nspname ~ '^patron_t_[0-9]+_' \
         AND split_part(nspname, '_', 3)::bigint < $1",
    )
    .bind(i64::try_from(now).unwrap_or(i64::MAX) - 3600)
    .fetch_all(&mut admin)
    .await
    .expect("list stale test schemas");
    for schema in stale {
        let _ = admin
            .execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
            .await;
    }
    let schema = format!("patron_t_{now}_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .expect("create test schema");
    PgConnectOptions::from_str(&url)
        .expect("valid test database URL")
        .options([("search_path", schema.as_str())])
}

/// A migrated PostgreSQL event store in a schema of its own.
pub async fn fresh_postgres() -> PgEventStore {
    let store = PgEventStore::connect_with(fresh_postgres_schema().await, 16)
        .await
        .expect("connect to the test schema");
    store.migrate().await.expect("migrate the test schema");
    store
}

/// A migrated SQLite event store in a temporary directory (removed when the guard drops).
pub async fn fresh_sqlite() -> (SqliteEventStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("events.db").display());
    let store = SqliteEventStore::connect(&ConnectOptions::new(url))
        .await
        .expect("open the test database");
    store.migrate().await.expect("migrate the test database");
    (store, dir)
}
