//! The PostgreSQL event store.
//!
//! Ordering: every append locks the single `event_log_head` row before anything else and writes
//! the new head just before it commits. Appends therefore commit strictly one after another, in
//! position order, and positions are gapless. A reader following `position > P` can never skip a
//! late-committing event, because no transaction holding a smaller position can still be open
//! once a larger one is visible. The price is that appends serialise; batching (hundreds to
//! thousands of events per append) keeps throughput near raw insert speed.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use patron_domain::CustomerId;
use patron_store::{
    AppendBatch, AppendReceipt, EventStore, Position, RecordedEvent, SourceOffset, StoreError,
    plan_append,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::error::{self, map};
use crate::row::{EventRow, limit, to_i64};
use crate::ConnectOptions;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const SELECT_EVENTS: &str = "SELECT position, event_id, customer_id, version, event_type, \
     occurred_at, recorded_at, source, payload FROM events";

type Row = (i64, Uuid, String, i64, String, DateTime<Utc>, DateTime<Utc>, String, serde_json::Value);

fn decode(row: Row) -> Result<RecordedEvent, StoreError> {
    let (position, event_id, customer_id, version, event_type, occurred_at, recorded_at, source, payload) = row;
    EventRow {
        position,
        event_id,
        customer_id,
        version,
        event_type,
        occurred_at,
        recorded_at,
        source,
        payload,
    }
    .decode()
}

/// An event store in PostgreSQL.
#[derive(Clone)]
pub struct PgEventStore {
    pool: PgPool,
}

impl PgEventStore {
    /// Connects with a pool; fails if the database cannot be reached.
    pub async fn connect(options: &ConnectOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(&options.url).map_err(|e| {
            StoreError::InvalidAppend(format!("invalid PostgreSQL URL: {e}"))
        })?;
        Self::connect_with(connect, options.max_connections).await
    }

    /// Connects with explicit sqlx options (e.g. a `search_path` for an isolated schema).
    pub async fn connect_with(options: PgConnectOptions, max_connections: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(map)?;
        Ok(Self { pool })
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The underlying pool (for read models that live in the same database).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations; returns how many were applied.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let before = applied(&self.pool).await;
        MIGRATOR.run(&self.pool).await.map_err(error::migrate)?;
        Ok(applied(&self.pool).await.saturating_sub(before))
    }

    /// Appends like [`EventStore::append`] but awaits `before_commit` while still holding the
    /// fence, just before committing. Tests use it to hold a transaction open and show that no
    /// later append can become visible first.
    #[doc(hidden)]
    pub async fn append_with_pause<F: Future<Output = ()> + Send>(
        &self,
        batch: AppendBatch,
        before_commit: F,
    ) -> Result<AppendReceipt, StoreError> {
        batch.check()?;
        let mut tx = self.pool.begin().await.map_err(map)?;
        let receipt = if batch.streams.iter().all(|s| s.events.is_empty()) {
            // Offsets only (e.g. a batch of dead letters): no positions, so no fence needed.
            write_offsets(&mut tx, &batch.offsets).await?;
            AppendReceipt::default()
        } else {
            append_events(&mut tx, batch).await?
        };
        before_commit.await;
        tx.commit().await.map_err(map)?;
        Ok(receipt)
    }
}

async fn applied(pool: &PgPool) -> usize {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .map_or(0, |n| usize::try_from(n).unwrap_or(0))
}

async fn append_events(
    tx: &mut Transaction<'static, Postgres>,
    batch: AppendBatch,
) -> Result<AppendReceipt, StoreError> {
    // The fence: from here to commit, no other append can run.
    let head: i64 = sqlx::query_scalar("SELECT position FROM event_log_head FOR UPDATE")
        .fetch_one(&mut **tx)
        .await
        .map_err(map)?;
    let head = Position(u64::try_from(head).unwrap_or(0));

    let stored: HashSet<Uuid> = sqlx::query_scalar("SELECT event_id FROM events WHERE event_id = ANY($1)")
        .bind(batch.event_ids())
        .fetch_all(&mut **tx)
        .await
        .map_err(map)?
        .into_iter()
        .collect();
    let customers: Vec<String> = batch
        .customer_ids()
        .into_iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    let versions: HashMap<CustomerId, u64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT customer_id, max(version) FROM events WHERE customer_id = ANY($1) GROUP BY customer_id",
    )
    .bind(customers)
    .fetch_all(&mut **tx)
    .await
    .map_err(map)?
    .into_iter()
    .filter_map(|(c, v)| Some((CustomerId::parse(&c).ok()?, u64::try_from(v).ok()?)))
    .collect();

    let offsets = batch.offsets.clone();
    let plan = plan_append(batch, &stored, &versions, head)?;
    let receipt = AppendReceipt {
        appended: plan.events.len() as u64,
        duplicates: plan.duplicates,
        last_position: plan.events.last().map(|e| e.position),
    };

    if !plan.events.is_empty() {
        let n = plan.events.len();
        let mut positions = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        let mut customers = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut times = Vec::with_capacity(n);
        let mut sources = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        for planned in &plan.events {
            let event = &planned.event;
            positions.push(to_i64(planned.position.0));
            ids.push(event.event_id);
            customers.push(event.customer_id.as_str());
            versions.push(to_i64(planned.version));
            types.push(event.event_type().as_str().to_owned());
            times.push(event.occurred_at);
            sources.push(event.source.as_str());
            payloads.push(event.body.to_payload());
        }
        sqlx::query(
            "INSERT INTO events \
               (position, event_id, customer_id, version, event_type, occurred_at, source, payload) \
             SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], \
                                  $6::timestamptz[], $7::text[], $8::jsonb[])",
        )
        .bind(&positions)
        .bind(&ids)
        .bind(&customers)
        .bind(&versions)
        .bind(&types)
        .bind(&times)
        .bind(&sources)
        .bind(&payloads)
        .execute(&mut **tx)
        .await
        .map_err(map)?;
        sqlx::query("UPDATE event_log_head SET position = $1")
            .bind(to_i64(plan.last_position(head).0))
            .execute(&mut **tx)
            .await
            .map_err(map)?;
    }
    write_offsets(tx, &offsets).await?;
    Ok(receipt)
}

async fn write_offsets(
    tx: &mut Transaction<'static, Postgres>,
    offsets: &[SourceOffset],
) -> Result<(), StoreError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let consumers: Vec<&str> = offsets.iter().map(|o| o.consumer.as_str()).collect();
    let topics: Vec<&str> = offsets.iter().map(|o| o.topic.as_str()).collect();
    let partitions: Vec<i32> = offsets.iter().map(|o| o.partition).collect();
    let next: Vec<i64> = offsets.iter().map(|o| o.next_offset).collect();
    sqlx::query(
        "INSERT INTO source_offsets (consumer, topic, partition, next_offset) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int[], $4::bigint[]) \
         ON CONFLICT (consumer, topic, partition) DO UPDATE \
           SET next_offset = GREATEST(source_offsets.next_offset, EXCLUDED.next_offset), \
               updated_at = now()",
    )
    .bind(consumers)
    .bind(topics)
    .bind(partitions)
    .bind(next)
    .execute(&mut **tx)
    .await
    .map_err(map)?;
    Ok(())
}

#[async_trait]
impl EventStore for PgEventStore {
    async fn append(&self, batch: AppendBatch) -> Result<AppendReceipt, StoreError> {
        self.append_with_pause(batch, std::future::ready(())).await
    }

    async fn read_all(&self, after: Position, limit_to: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        sqlx::query_as::<_, Row>(&format!("{SELECT_EVENTS} WHERE position > $1 ORDER BY position LIMIT $2"))
            .bind(to_i64(after.0))
            .bind(limit(limit_to))
            .fetch_all(&self.pool)
            .await
            .map_err(map)?
            .into_iter()
            .map(decode)
            .collect()
    }

    async fn read_stream(
        &self,
        customer_id: &CustomerId,
        after_version: u64,
        limit_to: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        sqlx::query_as::<_, Row>(&format!(
            "{SELECT_EVENTS} WHERE customer_id = $1 AND version > $2 ORDER BY version LIMIT $3"
        ))
        .bind(customer_id.as_str())
        .bind(to_i64(after_version))
        .bind(limit(limit_to))
        .fetch_all(&self.pool)
        .await
        .map_err(map)?
        .into_iter()
        .map(decode)
        .collect()
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT position FROM event_log_head")
            .fetch_one(&self.pool)
            .await
            .map_err(map)?;
        Ok(Position(u64::try_from(head).unwrap_or(0)))
    }

    async fn stream_version(&self, customer_id: &CustomerId) -> Result<u64, StoreError> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM events WHERE customer_id = $1")
                .bind(customer_id.as_str())
                .fetch_one(&self.pool)
                .await
                .map_err(map)?;
        Ok(version.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
    }

    async fn source_offsets(&self, consumer: &str) -> Result<Vec<SourceOffset>, StoreError> {
        Ok(sqlx::query_as::<_, (String, String, i32, i64)>(
            "SELECT consumer, topic, partition, next_offset FROM source_offsets \
             WHERE consumer = $1 ORDER BY topic, partition",
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
