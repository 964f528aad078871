//! SQL backends of the event store: PostgreSQL (production) and SQLite (embedded default).
//!
//! Both implement [`patron_store::EventStore`] and pass its contract suite. Schema changes live
//! in `migrations/<backend>/*.sql`, embedded in the binary and applied by [`SqlEventStore::migrate`]
//! (`patron migrate`). Every sqlx error is mapped to a [`patron_store::StoreError`] in one place,
//! [`error::map`].

mod clv;
mod error;
mod identity;
mod postgres;
mod row;
mod sealing;
mod sqlite;
mod views;

#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

use patron_store::{EventStore, StoreError};

pub use clv::SqlClvStore;
pub use postgres::PgEventStore;
pub use sqlite::SqliteEventStore;
pub use views::{PgReadModels, SqliteReadModels};

/// How to open a database.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `postgres://…` or `sqlite://path` (`sqlite:` URLs create the file when missing).
    pub url: String,
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// How long to keep trying to get a connection before giving up.
    pub connect_timeout: std::time::Duration,
}

impl ConnectOptions {
    /// Options for a URL with a pool of up to 8 connections.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 8,
            connect_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// An event store on either SQL backend, chosen by URL scheme.
#[derive(Clone)]
pub enum SqlEventStore {
    /// PostgreSQL.
    Postgres(PgEventStore),
    /// SQLite.
    Sqlite(SqliteEventStore),
}

impl SqlEventStore {
    /// Connects to the database the URL names (`postgres://`, `postgresql://` or `sqlite:`).
    pub async fn connect(options: &ConnectOptions) -> Result<Self, StoreError> {
        let url = options.url.as_str();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(PgEventStore::connect(options).await?))
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(SqliteEventStore::connect(options).await?))
        } else {
            Err(StoreError::InvalidAppend(format!(
                "unsupported database URL {:?}: expected postgres://… or sqlite:…",
                redact(url)
            )))
        }
    }

    /// Applies every embedded migration not yet applied; returns how many were applied.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        match self {
            Self::Postgres(store) => store.migrate().await,
            Self::Sqlite(store) => store.migrate().await,
        }
    }

    /// The backend's name, for logs.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// Seals personal data under per-customer keys wrapped by `master` (see the sealing
    /// module's docs); `None` stores it as sent. Reading sealed data needs the same master key.
    pub fn with_master_key(self, master: Option<Arc<patron_privacy::MasterKey>>) -> Self {
        match self {
            Self::Postgres(store) => Self::Postgres(store.with_master_key(master)),
            Self::Sqlite(store) => Self::Sqlite(store.with_master_key(master)),
        }
    }

    /// The read models in the same database (the same connection pool).
    pub fn read_models(&self) -> Arc<dyn patron_projector::ReadModelStore> {
        match self {
            Self::Postgres(store) => Arc::new(PgReadModels::new(store.pool().clone())),
            Self::Sqlite(store) => Arc::new(SqliteReadModels::new(store.pool().clone())),
        }
    }

    /// Predictive-CLV model versions and predictions in the same database.
    pub fn clv_store(&self) -> Arc<dyn patron_projector::clv::ClvStore> {
        match self {
            Self::Postgres(store) => Arc::new(SqlClvStore::Postgres(store.pool().clone())),
            Self::Sqlite(store) => Arc::new(SqlClvStore::Sqlite(store.pool().clone())),
        }
    }

    /// The store as a shareable trait object.
    pub fn into_dyn(self) -> Arc<dyn EventStore> {
        match self {
            Self::Postgres(store) => Arc::new(store),
            Self::Sqlite(store) => Arc::new(store),
        }
    }
}

/// A URL with any password replaced, safe to print.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact("sqlite://data/p.db"), "sqlite://data/p.db");
    }
}
