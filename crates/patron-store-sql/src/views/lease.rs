//! The projector lease ([`Lease`]) on each backend: which projector instance is the active one;
//! and, the same way, each relay's lease: which relay instance publishes under a relay name.
//!
//! - PostgreSQL: a session advisory lock, taken with `pg_try_advisory_lock` on a connection of its
//!   own, held for as long as the leadership. The server frees it the moment that session ends,
//!   however its holder died, so a standby takes over at its next attempt. The lock is keyed by
//!   the schema, so databases sharing a server (or schemas sharing a database) do not contend.
//! - SQLite: a row in `projector_lease` (owner, expiry), pushed on by the holder's renewals and
//!   taken over by another instance once expired. Every process on a SQLite file shares the
//!   machine's clock.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use patron_projector::{Lease, ReadModelError};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::sqlite::SqlitePool;
use sqlx::{Connection, Postgres};

use crate::error::map;

fn db(error: sqlx::Error) -> ReadModelError {
    ReadModelError::Store(map(error))
}

/// The first key of the PostgreSQL advisory lock ("patr"), the second is a hash of the schema.
const LOCK_CLASS: i32 = 0x7061_7472;
/// The first key of a relay's advisory lock ("rely"), the second a hash of schema and relay.
const RELAY_LOCK_CLASS: i32 = 0x7265_6c79;

/// What a lease is for.
#[derive(Debug, Clone)]
pub(crate) enum Role {
    /// The active projector of the database.
    Projector,
    /// The relay publishing under this name.
    Relay(String),
}

impl Role {
    /// The `application_name` of the session holding the lock, so that `pg_stat_activity`
    /// shows which instance is active.
    fn application_name(&self, owner: &str) -> String {
        match self {
            Role::Projector => format!("patron projector {owner}"),
            Role::Relay(relay) => format!("patron relay {relay} {owner}"),
        }
    }
}

/// Takes the PostgreSQL lock on a connection of the pool, which then leaves the pool for as long
/// as the lease lasts.
pub(crate) async fn pg_try_lead(
    pool: &PgPool,
    role: Role,
    owner: &str,
) -> Result<Option<Box<dyn Lease>>, ReadModelError> {
    let mut connection: PoolConnection<Postgres> = pool.acquire().await.map_err(db)?;
    let (class, name) = match &role {
        Role::Projector => (LOCK_CLASS, String::new()),
        Role::Relay(relay) => (RELAY_LOCK_CLASS, format!("/{relay}")),
    };
    let taken: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_lock($1, hashtext(coalesce(current_schema(), '') || $2))",
    )
    .bind(class)
    .bind(name)
    .fetch_one(&mut *connection)
    .await
    .map_err(db)?;
    if !taken {
        return Ok(None);
    }
    let mut connection = connection.detach();
    sqlx::query("SELECT set_config('application_name', $1, false)")
        .bind(role.application_name(owner))
        .execute(&mut connection)
        .await
        .map_err(db)?;
    Ok(Some(Box::new(PgLease { connection })))
}

/// The session that holds the lock.
struct PgLease {
    connection: PgConnection,
}

#[async_trait]
impl Lease for PgLease {
    async fn renew(&mut self) -> Result<bool, ReadModelError> {
        // A session lock lasts as long as its session: the session answering is the lock held.
        self.connection.ping().await.map_err(db)?;
        Ok(true)
    }

    async fn release(self: Box<Self>) -> Result<(), ReadModelError> {
        // Ending the session frees the lock.
        self.connection.close().await.map_err(db)
    }
}

fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Takes the SQLite lease row when free, expired, or already this owner's: the projector's
/// (`projector_lease`) or a relay's (`relay_lease`, by relay name).
pub(crate) async fn sqlite_try_lead(
    pool: &SqlitePool,
    role: Role,
    owner: &str,
    ttl: Duration,
) -> Result<Option<Box<dyn Lease>>, ReadModelError> {
    let now = now_millis();
    let statement = match role {
        Role::Projector => {
            "INSERT INTO projector_lease (singleton, owner, expires_at) VALUES (1, ?1, ?2) \
             ON CONFLICT (singleton) DO UPDATE SET owner = excluded.owner, \
                expires_at = excluded.expires_at \
             WHERE projector_lease.owner = excluded.owner OR projector_lease.expires_at <= ?3"
        }
        Role::Relay(_) => {
            "INSERT INTO relay_lease (relay, owner, expires_at) VALUES (?4, ?1, ?2) \
             ON CONFLICT (relay) DO UPDATE SET owner = excluded.owner, \
                expires_at = excluded.expires_at \
             WHERE relay_lease.owner = excluded.owner OR relay_lease.expires_at <= ?3"
        }
    };
    let relay = match &role {
        Role::Projector => String::new(),
        Role::Relay(relay) => relay.clone(),
    };
    let taken = sqlx::query(statement)
        .bind(owner)
        .bind(now.saturating_add(millis(ttl)))
        .bind(now)
        .bind(&relay)
        .execute(pool)
        .await
        .map_err(db)?
        .rows_affected()
        == 1;
    Ok(taken.then(|| {
        Box::new(SqliteLease {
            pool: pool.clone(),
            role,
            owner: owner.to_owned(),
            ttl,
        }) as Box<dyn Lease>
    }))
}

/// The SQLite lease row held by `owner`.
struct SqliteLease {
    pool: SqlitePool,
    role: Role,
    owner: String,
    ttl: Duration,
}

impl SqliteLease {
    /// The statements that renew (`?1` owner, `?2` expiry, `?3` relay) and release (`?1`
    /// owner, `?2` relay) this lease's row, and the relay name (empty for the projector).
    fn statements(&self) -> (&'static str, &'static str, &str) {
        match &self.role {
            Role::Projector => (
                "UPDATE projector_lease SET expires_at = ?2 WHERE owner = ?1",
                "DELETE FROM projector_lease WHERE owner = ?1",
                "",
            ),
            Role::Relay(relay) => (
                "UPDATE relay_lease SET expires_at = ?2 WHERE owner = ?1 AND relay = ?3",
                "DELETE FROM relay_lease WHERE owner = ?1 AND relay = ?2",
                relay.as_str(),
            ),
        }
    }
}

#[async_trait]
impl Lease for SqliteLease {
    async fn renew(&mut self) -> Result<bool, ReadModelError> {
        // Still ours, even if it expired meanwhile, when no one took it over.
        let (renew, _, relay) = self.statements();
        let renewed = sqlx::query(renew)
            .bind(&self.owner)
            .bind(now_millis().saturating_add(millis(self.ttl)))
            .bind(relay)
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected();
        Ok(renewed == 1)
    }

    async fn release(self: Box<Self>) -> Result<(), ReadModelError> {
        let (_, release, relay) = self.statements();
        sqlx::query(release)
            .bind(&self.owner)
            .bind(relay)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db)
    }
}
