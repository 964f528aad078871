//! The SQLite event store: the embedded default, nothing to install.
//!
//! Ordering: appends run in `BEGIN IMMEDIATE` transactions, so SQLite admits one writer at a
//! time (across processes too; others wait up to the busy timeout). Positions are assigned as
//! `max(position) + 1` inside that transaction: gapless and in commit order.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable as _};
use chrono::{DateTime, Utc};
use patron_domain::{CustomerId, EventDigest, Identity};
use patron_privacy::MasterKey;
use patron_store::{
    AppendBatch, AppendReceipt, EventStore, PlannedEvent, Position, RecordedEvent, SourceOffset,
    StoreError, StoredDigests, plan_append,
};
use serde_json::json;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use uuid::Uuid;

use crate::ConnectOptions;
use crate::error::{self, map};
use crate::identity;
use crate::row::{EventRow, limit, to_i64};
use crate::sealing::{self, KeyChanges, PageKeys};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const SELECT_EVENTS: &str = "SELECT position, event_id, customer_id, version, event_type, \
     occurred_at, recorded_at, source, payload FROM events";

type Row = (
    i64,
    String,
    String,
    i64,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    String,
    String,
);

fn decode(row: Row, keys: &PageKeys) -> Result<RecordedEvent, StoreError> {
    let (
        position,
        event_id,
        customer_id,
        version,
        event_type,
        occurred_at,
        recorded_at,
        source,
        payload,
    ) = row;
    let corrupt = |reason: String| StoreError::Corrupt {
        position: Position(u64::try_from(position).unwrap_or(0)),
        reason,
    };
    EventRow {
        position,
        event_id: Uuid::parse_str(&event_id).map_err(|e| corrupt(format!("event_id: {e}")))?,
        customer_id: &customer_id,
        version,
        event_type: &event_type,
        occurred_at,
        recorded_at,
        source: &source,
        payload: &payload,
    }
    .decode(keys)
}

/// An event store in a SQLite file.
#[derive(Clone)]
pub struct SqliteEventStore {
    pool: SqlitePool,
    /// Seals personal data when set (see [`crate::sealing`]).
    master: Option<Arc<MasterKey>>,
}

impl SqliteEventStore {
    /// Opens (creating when missing) the database file the `sqlite:` URL names, in WAL mode.
    pub async fn connect(options: &ConnectOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str(&options.url)
            .map_err(|e| StoreError::InvalidAppend(format!("invalid SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true)
            // Deleted content (an erased customer's key, scrubbed payloads) is overwritten with
            // zeros rather than left in free pages of the file.
            .pragma("secure_delete", "on");
        if let Some(dir) = connect
            .get_filename()
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        }
        // While another process creates the file or switches it to WAL, opening it reports
        // "database is locked" (setting the journal mode does not wait out the busy timeout):
        // retry that briefly instead of failing at once.
        let open = || {
            SqlitePoolOptions::new()
                .max_connections(options.max_connections.max(1))
                .acquire_timeout(options.connect_timeout)
                .connect_with(connect.clone())
        };
        let pool = open
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(20))
                    .with_max_delay(Duration::from_millis(500))
                    .with_max_times(10),
            )
            .when(error::is_busy)
            .await
            .map_err(map)?;
        Ok(Self { pool, master: None })
    }

    /// Seals personal data under per-customer keys wrapped by `master` from now on (and opens
    /// what was sealed); without one, personal data is stored as sent. See [`crate::sealing`].
    pub fn with_master_key(mut self, master: Option<Arc<MasterKey>>) -> Self {
        self.master = master;
        self
    }

    /// Decodes the rows of one read, opening sealed personal data.
    async fn decode_page(&self, rows: Vec<Row>) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut customers: Vec<&str> = rows
            .iter()
            .filter(|row| sealing::may_be_sealed(&row.4, &row.8))
            .map(|row| row.2.as_str())
            .collect();
        let keys = if customers.is_empty() {
            PageKeys::default()
        } else {
            customers.sort_unstable();
            customers.dedup();
            let stored = stored_keys(&self.pool, &customers).await?;
            PageKeys::from_stored(self.master.as_deref(), stored)?
        };
        rows.into_iter().map(|row| decode(row, &keys)).collect()
    }

    /// The underlying pool (for read models that live in the same database).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Applies pending migrations; returns how many were applied.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let before = applied(&self.pool).await;
        MIGRATOR.run(&self.pool).await.map_err(error::migrate)?;
        Ok(applied(&self.pool).await.saturating_sub(before))
    }
}

async fn applied(pool: &SqlitePool) -> usize {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .map_or(0, |n| usize::try_from(n).unwrap_or(0))
}

async fn append_events(
    tx: &mut Transaction<'static, Sqlite>,
    batch: &AppendBatch,
    master: Option<&Arc<MasterKey>>,
) -> Result<AppendReceipt, StoreError> {
    let head: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
        .fetch_one(&mut **tx)
        .await
        .map_err(map)?;
    let head = Position(u64::try_from(head).unwrap_or(0));
    let ids: Vec<String> = batch.event_ids().iter().map(Uuid::to_string).collect();
    // Digests are kept as hex text here (NULL for events stored before they were kept).
    let stored: StoredDigests = sqlx::query_as::<_, (String, Option<String>)>(
        "SELECT event_id, payload_digest FROM events \
         WHERE event_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(json!(ids).to_string())
    .fetch_all(&mut **tx)
    .await
    .map_err(map)?
    .into_iter()
    .filter_map(|(id, digest)| Some((Uuid::parse_str(&id).ok()?, digest)))
    .map(|(id, digest)| {
        let digest = digest
            .map(|hex| {
                EventDigest::from_hex(&hex).ok_or_else(|| {
                    StoreError::Backend(
                        format!("stored payload digest of event {id} is not 64 hex digits").into(),
                    )
                })
            })
            .transpose()?;
        Ok((id, digest))
    })
    .collect::<Result<_, StoreError>>()?;
    let customers: Vec<String> = batch
        .customer_ids()
        .into_iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    let mut versions = stream_versions(tx, &customers).await?;

    let plan = plan_append(batch, &stored, &versions, head)?;
    let merges = identity::index_events(
        &mut identity::SqliteIndex(tx),
        &identity::Digester::new(master.cloned()),
        &plan.events,
    )
    .await?;
    let survivors = identity::unversioned(&merges, &versions);
    if !survivors.is_empty() {
        versions.extend(stream_versions(tx, &survivors).await?);
    }
    let mut events = identity::interleave(plan.events, &merges, &versions);
    let receipt = AppendReceipt {
        appended: (events.len() - merges.len()) as u64,
        duplicates: plan.duplicates,
        last_position: events.last().map(|e| e.position),
    };
    if !events.is_empty() {
        let keys = seal(tx, &mut events, master).await?;
        let recorded_at = Utc::now();
        // One statement for the whole batch: rows travel as a JSON array and SQLite unpacks them.
        let rows: Vec<serde_json::Value> = events
            .iter()
            .map(|p| {
                let e = &p.event;
                json!([
                    to_i64(p.position.0),
                    e.event_id.to_string(),
                    e.customer_id.as_str(),
                    to_i64(p.version),
                    e.event_type().as_str(),
                    e.occurred_at,
                    recorded_at,
                    e.source,
                    p.payload,
                    p.digest.to_hex(),
                ])
            })
            .collect();
        sqlx::query(
            "INSERT INTO events (position, event_id, customer_id, version, event_type, \
                                 occurred_at, recorded_at, source, payload, payload_digest) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
                    value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9 \
             FROM json_each(?1)",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .execute(&mut **tx)
        .await
        .map_err(map)?;
        apply_key_changes(tx, &keys, master).await?;
    }
    write_offsets(tx, &batch.offsets).await?;
    Ok(receipt)
}

/// The current version of each of `customers`' streams that has events.
async fn stream_versions(
    tx: &mut Transaction<'static, Sqlite>,
    customers: &[String],
) -> Result<HashMap<CustomerId, u64>, StoreError> {
    Ok(sqlx::query_as::<_, (String, i64)>(
        "SELECT customer_id, max(version) FROM events \
         WHERE customer_id IN (SELECT value FROM json_each(?1)) GROUP BY customer_id",
    )
    .bind(json!(customers).to_string())
    .fetch_all(&mut **tx)
    .await
    .map_err(map)?
    .into_iter()
    .filter_map(|(c, v)| Some((CustomerId::parse(&c).ok()?, u64::try_from(v).ok()?)))
    .collect())
}

/// Seals the personal data of the planned events (see [`crate::sealing`]) with their customers'
/// keys, read inside the write transaction; returns the key changes to write after the events.
async fn seal(
    tx: &mut Transaction<'static, Sqlite>,
    events: &mut [PlannedEvent<'_>],
    master: Option<&Arc<MasterKey>>,
) -> Result<KeyChanges, StoreError> {
    let customers = match master {
        Some(_) => sealing::personal_customers(events),
        None => Vec::new(),
    };
    let stored = if customers.is_empty() {
        Vec::new()
    } else {
        stored_keys(&mut **tx, &customers).await?
    };
    sealing::seal_batch(master, events, stored)
}

/// The wrapped data keys stored for `customers` (those that have one).
async fn stored_keys<'e, S: serde::Serialize>(
    executor: impl sqlx::SqliteExecutor<'e>,
    customers: &[S],
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    sqlx::query_as(
        "SELECT customer_id, wrapped_key FROM customer_keys \
         WHERE customer_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(json!(customers).to_string())
    .fetch_all(executor)
    .await
    .map_err(map)
}

/// Erasures first — the customer's earlier personal data scrubbed in place, its digests
/// forgotten, its key deleted — then the new keys.
async fn apply_key_changes(
    tx: &mut Transaction<'static, Sqlite>,
    changes: &KeyChanges,
    master: Option<&Arc<MasterKey>>,
) -> Result<(), StoreError> {
    for (customer_id, position) in &changes.erased {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT position, event_type, payload FROM events \
             WHERE customer_id = ?1 AND position < ?2 \
               AND event_type IN (SELECT value FROM json_each(?3))",
        )
        .bind(customer_id)
        .bind(position)
        .bind(json!(sealing::personal_types()).to_string())
        .fetch_all(&mut **tx)
        .await
        .map_err(map)?;
        for (at, event_type, payload) in rows {
            if let Some(scrubbed) = sealing::scrub(&event_type, &payload)? {
                sqlx::query(
                    "UPDATE events SET payload = ?2, payload_digest = NULL WHERE position = ?1",
                )
                .bind(at)
                .bind(scrubbed)
                .execute(&mut **tx)
                .await
                .map_err(map)?;
            }
        }
        sqlx::query("DELETE FROM customer_keys WHERE customer_id = ?1")
            .bind(customer_id)
            .execute(&mut **tx)
            .await
            .map_err(map)?;
    }
    if let Some(master) = master {
        for (customer_id, wrapped) in &changes.created {
            sqlx::query(
                "INSERT INTO customer_keys (customer_id, wrapped_key, master_key_id) \
                 VALUES (?1, ?2, ?3)",
            )
            .bind(customer_id)
            .bind(wrapped)
            .bind(master.id())
            .execute(&mut **tx)
            .await
            .map_err(map)?;
        }
    }
    Ok(())
}

async fn write_offsets(
    tx: &mut Transaction<'static, Sqlite>,
    offsets: &[SourceOffset],
) -> Result<(), StoreError> {
    let now = Utc::now();
    for offset in offsets {
        sqlx::query(
            "INSERT INTO source_offsets (consumer, topic, partition, next_offset, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (consumer, topic, partition) DO UPDATE \
               SET next_offset = max(next_offset, excluded.next_offset), updated_at = excluded.updated_at",
        )
        .bind(&offset.consumer)
        .bind(&offset.topic)
        .bind(offset.partition)
        .bind(offset.next_offset)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(map)?;
    }
    Ok(())
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn append(&self, batch: &AppendBatch) -> Result<AppendReceipt, StoreError> {
        batch.check()?;
        // IMMEDIATE takes the write lock up front: no deadlock-prone read-to-write upgrade.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(map)?;
        let receipt = append_events(&mut tx, batch, self.master.as_ref()).await?;
        tx.commit().await.map_err(map)?;
        Ok(receipt)
    }

    async fn read_all(
        &self,
        after: Position,
        limit_to: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query_as::<_, Row>(&format!(
            "{SELECT_EVENTS} WHERE position > ?1 ORDER BY position LIMIT ?2"
        ))
        .bind(to_i64(after.0))
        .bind(limit(limit_to))
        .fetch_all(&self.pool)
        .await
        .map_err(map)?;
        self.decode_page(rows).await
    }

    async fn read_stream(
        &self,
        customer_id: &CustomerId,
        after_version: u64,
        limit_to: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query_as::<_, Row>(&format!(
            "{SELECT_EVENTS} WHERE customer_id = ?1 AND version > ?2 ORDER BY version LIMIT ?3"
        ))
        .bind(customer_id.as_str())
        .bind(to_i64(after_version))
        .bind(limit(limit_to))
        .fetch_all(&self.pool)
        .await
        .map_err(map)?;
        self.decode_page(rows).await
    }

    async fn read_streams(
        &self,
        customers: &[CustomerId],
        up_to: Position,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if customers.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = customers.iter().map(CustomerId::as_str).collect();
        let rows = sqlx::query_as::<_, Row>(&format!(
            "{SELECT_EVENTS} WHERE customer_id IN (SELECT value FROM json_each(?1)) \
             AND position <= ?2 ORDER BY position"
        ))
        .bind(serde_json::json!(ids).to_string())
        .bind(to_i64(up_to.0))
        .fetch_all(&self.pool)
        .await
        .map_err(map)?;
        self.decode_page(rows).await
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
            .fetch_one(&self.pool)
            .await
            .map_err(map)?;
        Ok(Position(u64::try_from(head).unwrap_or(0)))
    }

    async fn stream_version(&self, customer_id: &CustomerId) -> Result<u64, StoreError> {
        let version: i64 = sqlx::query_scalar(
            "SELECT coalesce(max(version), 0) FROM events WHERE customer_id = ?1",
        )
        .bind(customer_id.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(map)?;
        Ok(u64::try_from(version).unwrap_or(0))
    }

    async fn resolve_identity(&self, identity: &Identity) -> Result<CustomerId, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(map)?;
        let digester = identity::Digester::new(self.master.clone());
        let customer =
            identity::resolve(&mut identity::SqliteIndex(&mut tx), &digester, identity).await?;
        tx.commit().await.map_err(map)?;
        Ok(customer)
    }

    async fn merged_into(&self, customer: &CustomerId) -> Result<Option<CustomerId>, StoreError> {
        let mut connection = self.pool.acquire().await.map_err(map)?;
        identity::parent(&mut identity::SqliteIndex(&mut connection), customer).await
    }

    async fn source_offsets(&self, consumer: &str) -> Result<Vec<SourceOffset>, StoreError> {
        Ok(sqlx::query_as::<_, (String, String, i32, i64)>(
            "SELECT consumer, topic, partition, next_offset FROM source_offsets \
             WHERE consumer = ?1 ORDER BY topic, partition",
        )
        .bind(consumer)
        .fetch_all(&self.pool)
        .await
        .map_err(map)?
        .into_iter()
        .map(|(consumer, topic, partition, next_offset)| SourceOffset {
            consumer,
            topic,
            partition,
            next_offset,
        })
        .collect())
    }
}
