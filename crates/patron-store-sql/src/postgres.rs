//! The PostgreSQL event store.
//!
//! Ordering: every append locks the single `event_log_head` row before anything else and writes
//! the new head just before it commits. Appends therefore commit strictly one after another, in
//! position order, and positions are gapless. A reader following `position > P` can never skip a
//! late-committing event, because no transaction holding a smaller position can still be open
//! once a larger one is visible. The price is that appends serialise; batching (hundreds to
//! thousands of events per append) keeps throughput near raw insert speed.

use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt as _;
use patron_domain::{CustomerId, EventDigest, Identity};
use patron_privacy::MasterKey;
use patron_store::{
    AppendBatch, AppendReceipt, EventStore, PlannedEvent, Position, RecordedEvent, SourceOffset,
    StoreError, StoredDigests, plan_append,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row as _, Transaction};
use uuid::Uuid;

use crate::ConnectOptions;
use crate::error::{self, map};
use crate::identity;
use crate::row::{EventRow, limit, to_i64};
use crate::sealing::{self, KeyChanges, PageKeys};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

// The payload is read as text: it is parsed once, straight into the body of its type.
const SELECT_EVENTS: &str = "SELECT position, event_id, customer_id, version, event_type, \
     occurred_at, recorded_at, source, payload::text FROM events";

/// Decodes one `events` row, borrowing its text columns (no per-column `String`s).
fn decode(row: &PgRow, keys: &PageKeys) -> Result<RecordedEvent, StoreError> {
    EventRow {
        position: row.try_get(0).map_err(map)?,
        event_id: row.try_get(1).map_err(map)?,
        customer_id: row.try_get(2).map_err(map)?,
        version: row.try_get(3).map_err(map)?,
        event_type: row.try_get(4).map_err(map)?,
        occurred_at: row.try_get(5).map_err(map)?,
        recorded_at: row.try_get(6).map_err(map)?,
        source: row.try_get(7).map_err(map)?,
        payload: row.try_get(8).map_err(map)?,
    }
    .decode(keys)
}

/// Whether a stored row's payload may hold sealed personal data.
fn may_be_sealed(row: &PgRow) -> Result<bool, StoreError> {
    let event_type: &str = row.try_get(4).map_err(map)?;
    let payload: &str = row.try_get(8).map_err(map)?;
    Ok(sealing::may_be_sealed(event_type, payload))
}

/// The wrapped data keys stored for `customers` (those that have one).
async fn stored_keys<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    customers: Vec<&str>,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    sqlx::query_as("SELECT customer_id, wrapped_key FROM customer_keys WHERE customer_id = ANY($1)")
        .bind(customers)
        .fetch_all(executor)
        .await
        .map_err(map)
}

/// An event store in PostgreSQL.
#[derive(Clone)]
pub struct PgEventStore {
    pool: PgPool,
    /// Seals personal data when set (see [`crate::sealing`]).
    master: Option<Arc<MasterKey>>,
}

impl PgEventStore {
    /// Connects with a pool; fails if the database cannot be reached.
    pub async fn connect(options: &ConnectOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(&options.url)
            .map_err(|e| StoreError::InvalidAppend(format!("invalid PostgreSQL URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.connect_timeout)
            .connect_with(connect)
            .await
            .map_err(map)?;
        Ok(Self { pool, master: None })
    }

    /// Connects with explicit sqlx options (e.g. a `search_path` for an isolated schema).
    pub async fn connect_with(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(map)?;
        Ok(Self { pool, master: None })
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool, master: None }
    }

    /// Seals personal data under per-customer keys wrapped by `master` from now on (and opens
    /// what was sealed); without one, personal data is stored as sent. See [`crate::sealing`].
    pub fn with_master_key(mut self, master: Option<Arc<MasterKey>>) -> Self {
        self.master = master;
        self
    }

    /// Decodes rows as they arrive. Rows with sealed personal data (few) wait until the page is
    /// read, for one lookup of their customers' keys, and are then put back in their places.
    async fn fetch_events(
        &self,
        query: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
        capacity: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let plain = PageKeys::default();
        // Pages are often full: reserve for one, but not absurdly much for a huge limit.
        let mut events = Vec::with_capacity(capacity.min(100_000));
        // (index in the page, row) of each row that waits for its key.
        let mut sealed: Vec<(usize, PgRow)> = Vec::new();
        {
            let mut rows = query.fetch(&self.pool);
            while let Some(row) = rows.try_next().await.map_err(map)? {
                if may_be_sealed(&row)? {
                    sealed.push((events.len() + sealed.len(), row));
                } else {
                    events.push(decode(&row, &plain)?);
                }
            }
        }
        if sealed.is_empty() {
            return Ok(events);
        }
        let mut customers: Vec<&str> = sealed
            .iter()
            .map(|(_, row)| row.try_get(2).map_err(map))
            .collect::<Result<_, _>>()?;
        customers.sort_unstable();
        customers.dedup();
        let stored = stored_keys(&self.pool, customers).await?;
        let keys = PageKeys::from_stored(self.master.as_deref(), stored)?;
        let mut page = Vec::with_capacity(events.len() + sealed.len());
        let mut events = events.into_iter();
        for (index, row) in &sealed {
            page.extend(events.by_ref().take(index - page.len()));
            page.push(decode(row, &keys)?);
        }
        page.extend(events);
        Ok(page)
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
        batch: &AppendBatch,
        before_commit: F,
    ) -> Result<AppendReceipt, StoreError> {
        batch.check()?;
        let mut tx = self.pool.begin().await.map_err(map)?;
        let receipt = if batch.streams.iter().all(|s| s.events.is_empty()) {
            // Offsets only (e.g. a batch of dead letters): no positions, so no fence needed.
            AppendReceipt::default()
        } else {
            // Most batches carry no event stored before, so insert straight away and let the
            // unique index find duplicates; only if it does, start over and filter them first.
            let master = self.master.as_ref();
            match append_events(&mut tx, batch, Dedupe::Optimistic, master).await {
                Err(Attempt::Duplicates) => {
                    tx.rollback().await.map_err(map)?;
                    tx = self.pool.begin().await.map_err(map)?;
                    append_events(&mut tx, batch, Dedupe::Filter, master)
                        .await
                        .map_err(Attempt::into_store_error)?
                }
                other => other.map_err(Attempt::into_store_error)?,
            }
        };
        write_offsets(&mut tx, &batch.offsets).await?;
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

/// How an append treats event ids that may already be stored.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dedupe {
    /// Assume none are; the unique index reports it if one is.
    Optimistic,
    /// Look them up first and leave them out.
    Filter,
}

/// Why one attempt at an append failed.
enum Attempt {
    /// An optimistic attempt hit an event id that is already stored, or a version conflict that
    /// stored duplicates might explain: try again, filtering duplicates first.
    Duplicates,
    /// Anything else.
    Failed(StoreError),
}

impl Attempt {
    fn into_store_error(self) -> StoreError {
        match self {
            Attempt::Failed(error) => error,
            // Cannot happen with `Dedupe::Filter` under the fence; report it rather than loop.
            Attempt::Duplicates => {
                StoreError::Backend("duplicate event id after de-duplication".into())
            }
        }
    }
}

impl From<StoreError> for Attempt {
    fn from(error: StoreError) -> Self {
        Attempt::Failed(error)
    }
}

async fn append_events(
    tx: &mut Transaction<'static, Postgres>,
    batch: &AppendBatch,
    dedupe: Dedupe,
    master: Option<&Arc<MasterKey>>,
) -> Result<AppendReceipt, Attempt> {
    // The fence: from here to commit, no other append can run.
    let head: i64 = sqlx::query_scalar("SELECT position FROM event_log_head FOR UPDATE")
        .fetch_one(&mut **tx)
        .await
        .map_err(map)?;
    let head = Position(u64::try_from(head).unwrap_or(0));

    let stored: StoredDigests = match dedupe {
        Dedupe::Optimistic => StoredDigests::new(),
        // Only the ids that collided come back: their digests tell redeliveries from conflicts.
        Dedupe::Filter => sqlx::query_as::<_, (Uuid, Option<Vec<u8>>)>(
            "SELECT event_id, payload_digest FROM events WHERE event_id = ANY($1)",
        )
        .bind(batch.event_ids())
        .fetch_all(&mut **tx)
        .await
        .map_err(map)?
        .into_iter()
        .map(|(id, digest)| Ok((id, digest.map(|d| stored_digest(id, &d)).transpose()?)))
        .collect::<Result<_, StoreError>>()?,
    };
    let customers: Vec<String> = batch
        .customer_ids()
        .into_iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    let mut versions = stream_versions(tx, customers).await?;

    let plan = match plan_append(batch, &stored, &versions, head) {
        // A stale expectation may just be a retry of events already stored, and an id repeated
        // in the batch may be stored too (then the stored content is the one to compare with):
        // look before failing.
        Err(StoreError::Conflict { .. } | StoreError::DuplicateEventIds(_))
            if dedupe == Dedupe::Optimistic =>
        {
            return Err(Attempt::Duplicates);
        }
        other => other?,
    };
    let merges = identity::index_events(
        &mut identity::PgIndex(tx),
        &identity::Digester::new(master.cloned()),
        &plan.events,
    )
    .await?;
    let survivors = identity::unversioned(&merges, &versions);
    if !survivors.is_empty() {
        versions.extend(stream_versions(tx, survivors).await?);
    }
    let mut events = identity::interleave(plan.events, &merges, &versions);
    let receipt = AppendReceipt {
        appended: (events.len() - merges.len()) as u64,
        duplicates: plan.duplicates,
        last_position: events.last().map(|e| e.position),
    };
    if events.is_empty() {
        return Ok(receipt);
    }
    let keys = seal(tx, &mut events, master).await?;
    // COPY is PostgreSQL's bulk path: far less per-row work than INSERT … SELECT FROM UNNEST.
    let mut rows = CopyRows::new(events.len());
    for planned in &events {
        rows.row(planned);
    }
    let inserted = copy_events(tx, rows.finish()).await;
    let inserted = match inserted {
        Ok(()) => sqlx::query("UPDATE event_log_head SET position = $1")
            .bind(to_i64(events.last().map_or(head, |e| e.position).0))
            .execute(&mut **tx)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    match inserted {
        Ok(()) => {}
        Err(e) if error::is_duplicate_event(&e) => return Err(Attempt::Duplicates),
        Err(e) => return Err(Attempt::Failed(map(e))),
    }
    apply_key_changes(tx, &keys, master).await?;
    Ok(receipt)
}

/// The current version of each of `customers`' streams that has events.
async fn stream_versions(
    tx: &mut Transaction<'static, Postgres>,
    customers: Vec<String>,
) -> Result<HashMap<CustomerId, u64>, StoreError> {
    Ok(sqlx::query_as::<_, (String, i64)>(
        // One backward index probe per stream on (customer_id, version), not a scan of its events.
        "SELECT c.customer_id, v.version FROM UNNEST($1::text[]) AS c(customer_id) \
         CROSS JOIN LATERAL (SELECT max(version) AS version FROM events e \
                             WHERE e.customer_id = c.customer_id) v \
         WHERE v.version IS NOT NULL",
    )
    .bind(customers)
    .fetch_all(&mut **tx)
    .await
    .map_err(map)?
    .into_iter()
    .filter_map(|(c, v)| Some((CustomerId::parse(&c).ok()?, u64::try_from(v).ok()?)))
    .collect())
}

/// Seals the personal data of the planned events (see [`crate::sealing`]) with their customers'
/// keys, read under the fence; returns the key changes to write after the events.
async fn seal(
    tx: &mut Transaction<'static, Postgres>,
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
        stored_keys(&mut **tx, customers.iter().map(String::as_str).collect()).await?
    };
    sealing::seal_batch(master, events, stored)
}

/// Erasures first — the customer's earlier personal data scrubbed in place, its digests
/// forgotten, its key deleted — then the new keys.
async fn apply_key_changes(
    tx: &mut Transaction<'static, Postgres>,
    changes: &KeyChanges,
    master: Option<&Arc<MasterKey>>,
) -> Result<(), StoreError> {
    for (customer_id, position) in &changes.erased {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT position, event_type, payload::text FROM events \
             WHERE customer_id = $1 AND position < $2 AND event_type = ANY($3)",
        )
        .bind(customer_id)
        .bind(position)
        .bind(sealing::personal_types())
        .fetch_all(&mut **tx)
        .await
        .map_err(map)?;
        for (at, event_type, payload) in rows {
            if let Some(scrubbed) = sealing::scrub(&event_type, &payload)? {
                sqlx::query(
                    "UPDATE events SET payload = $2::jsonb, payload_digest = NULL \
                     WHERE position = $1",
                )
                .bind(at)
                .bind(scrubbed)
                .execute(&mut **tx)
                .await
                .map_err(map)?;
            }
        }
        sqlx::query("DELETE FROM customer_keys WHERE customer_id = $1")
            .bind(customer_id)
            .execute(&mut **tx)
            .await
            .map_err(map)?;
    }
    if let (Some(master), false) = (master, changes.created.is_empty()) {
        let (customers, wrapped): (Vec<&str>, Vec<&[u8]>) = changes
            .created
            .iter()
            .map(|(c, w)| (c.as_str(), w.as_slice()))
            .unzip();
        sqlx::query(
            "INSERT INTO customer_keys (customer_id, wrapped_key, master_key_id) \
             SELECT c, w, $3 FROM UNNEST($1::text[], $2::bytea[]) AS k(c, w)",
        )
        .bind(customers)
        .bind(wrapped)
        .bind(master.id())
        .execute(&mut **tx)
        .await
        .map_err(map)?;
    }
    Ok(())
}

/// A stored digest, which must be 32 bytes (the column's check constraint says so too).
fn stored_digest(event_id: Uuid, bytes: &[u8]) -> Result<EventDigest, StoreError> {
    EventDigest::from_slice(bytes).ok_or_else(|| {
        StoreError::Backend(
            format!(
                "stored payload digest of event {event_id} has {} bytes, not 32",
                bytes.len()
            )
            .into(),
        )
    })
}

async fn copy_events(
    tx: &mut Transaction<'static, Postgres>,
    rows: Vec<u8>,
) -> Result<(), sqlx::Error> {
    let mut copy = tx
        .copy_in_raw(
            "COPY events (position, event_id, customer_id, version, event_type, occurred_at, source, \
                          payload, payload_digest) \
             FROM STDIN (FORMAT binary)",
        )
        .await?;
    if let Err(e) = copy.send(rows).await {
        let _ = copy.abort("send failed").await;
        return Err(e);
    }
    copy.finish().await.map(|_| ())
}

/// The header of PostgreSQL's binary COPY format: signature, flags, header-extension length.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The trailer: a field count of -1.
const COPY_TRAILER: &[u8] = &(-1i16).to_be_bytes();
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Encodes rows in COPY's binary format, which spares the server from parsing numbers, UUIDs
/// and timestamps out of text.
struct CopyRows(Vec<u8>);

impl CopyRows {
    fn new(rows: usize) -> Self {
        let mut buf = Vec::with_capacity(COPY_HEADER.len() + rows * 320);
        buf.extend_from_slice(COPY_HEADER);
        Self(buf)
    }

    fn field(&mut self, bytes: &[u8]) {
        // Fields are far below 2 GiB: payloads are bounded at ingest.
        let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(bytes);
    }

    fn row(&mut self, planned: &PlannedEvent<'_>) {
        let event = planned.event;
        self.0.extend_from_slice(&9i16.to_be_bytes());
        self.field(&to_i64(planned.position.0).to_be_bytes());
        self.field(event.event_id.as_bytes());
        self.field(event.customer_id.as_str().as_bytes());
        self.field(&to_i64(planned.version).to_be_bytes());
        self.field(event.event_type().as_str().as_bytes());
        let micros = event.occurred_at.timestamp_micros() - PG_EPOCH_MICROS;
        self.field(&micros.to_be_bytes());
        self.field(event.source.as_bytes());
        // jsonb's binary form: a version byte (1), then the JSON text.
        let payload = &planned.payload;
        let len = i32::try_from(payload.len() + 1).unwrap_or(i32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.push(1);
        self.0.extend_from_slice(payload.as_bytes());
        self.field(planned.digest.as_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(COPY_TRAILER);
        self.0
    }
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
    async fn append(&self, batch: &AppendBatch) -> Result<AppendReceipt, StoreError> {
        self.append_with_pause(batch, std::future::ready(())).await
    }

    async fn read_all(
        &self,
        after: Position,
        limit_to: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!("{SELECT_EVENTS} WHERE position > $1 ORDER BY position LIMIT $2");
        let query = sqlx::query(&sql)
            .bind(to_i64(after.0))
            .bind(limit(limit_to));
        self.fetch_events(query, limit_to).await
    }

    async fn read_stream(
        &self,
        customer_id: &CustomerId,
        after_version: u64,
        limit_to: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "{SELECT_EVENTS} WHERE customer_id = $1 AND version > $2 ORDER BY version LIMIT $3"
        );
        let query = sqlx::query(&sql)
            .bind(customer_id.as_str())
            .bind(to_i64(after_version))
            .bind(limit(limit_to));
        self.fetch_events(query, limit_to).await
    }

    async fn read_streams(
        &self,
        customers: &[CustomerId],
        up_to: Position,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if customers.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "{SELECT_EVENTS} WHERE customer_id = ANY($1) AND position <= $2 ORDER BY position"
        );
        let ids: Vec<&str> = customers.iter().map(CustomerId::as_str).collect();
        let query = sqlx::query(&sql).bind(ids).bind(to_i64(up_to.0));
        self.fetch_events(query, customers.len().saturating_mul(16))
            .await
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

    async fn resolve_identity(&self, identity: &Identity) -> Result<CustomerId, StoreError> {
        let mut tx = self.pool.begin().await.map_err(map)?;
        let digester = identity::Digester::new(self.master.clone());
        let customer =
            identity::resolve(&mut identity::PgIndex(&mut tx), &digester, identity).await?;
        tx.commit().await.map_err(map)?;
        Ok(customer)
    }

    async fn merged_into(&self, customer: &CustomerId) -> Result<Option<CustomerId>, StoreError> {
        let mut connection = self.pool.acquire().await.map_err(map)?;
        identity::parent(&mut identity::PgIndex(&mut connection), customer).await
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
