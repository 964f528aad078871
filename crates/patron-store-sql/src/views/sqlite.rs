//! Read models in SQLite. Writes run in `BEGIN IMMEDIATE` transactions (one writer at a time),
//! so commits, outbox ids and the swap of a rebuild are serialised. Rows travel to SQLite as one
//! JSON array per statement; timestamps are stored as RFC 3339 text.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use patron_projector::{
    Changes, Generation, GenerationId, Lease, OutboxEntry, OutboxRecord, Publish, ReadModelError,
    ReadModelStore, Snapshot,
};
use patron_store::Position;
use serde_json::{Value, json};
use sqlx::sqlite::SqlitePool;
use sqlx::{Sqlite, Transaction};

use super::{
    ACTIVE, BUILDING, CHANGES_KEPT, CHANGES_LISTED, CustomerRow, OutboxRow, RETIRED, attach_counts,
    consent_json, facts_json, history_changes, position, seq, view,
};
use crate::error::map;
use crate::row::{limit, to_i64};

/// Read models in SQLite, beside the event store.
#[derive(Clone)]
pub struct SqliteReadModels {
    pool: SqlitePool,
}

impl SqliteReadModels {
    /// Read models on an existing pool (normally the event store's).
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// The pool, for queries.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn begin(&self) -> Result<Tx, ReadModelError> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)
    }
}

fn db(error: sqlx::Error) -> ReadModelError {
    ReadModelError::Store(map(error))
}

type Tx = Transaction<'static, Sqlite>;

fn time(text: Option<String>) -> Result<Option<DateTime<Utc>>, ReadModelError> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(&t)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| ReadModelError::Corrupt(format!("timestamp {t:?}: {e}")))
    })
    .transpose()
}

async fn lock(
    tx: &mut Tx,
    generation: GenerationId,
    expected: Position,
) -> Result<(Option<(GenerationId, i64)>, String), ReadModelError> {
    let active: Option<(i64, i64)> =
        sqlx::query_as("SELECT generation, outbox_head FROM projection_active")
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?;
    let row: Option<(i64, String)> = sqlx::query_as(
        "SELECT checkpoint, status FROM projection_generations WHERE generation = ?1",
    )
    .bind(generation)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db)?;
    let Some((checkpoint, status)) = row else {
        return Err(ReadModelError::Superseded(generation));
    };
    if status == RETIRED {
        return Err(ReadModelError::Superseded(generation));
    }
    let actual = position(checkpoint)?;
    if actual != expected {
        return Err(ReadModelError::Conflict {
            generation,
            expected,
            actual,
        });
    }
    Ok((active, status))
}

async fn run(
    tx: &mut Tx,
    sql: &str,
    rows: Vec<Value>,
    generation: GenerationId,
) -> Result<(), ReadModelError> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(sql)
        .bind(Value::Array(rows).to_string())
        .bind(generation)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

async fn write(
    tx: &mut Tx,
    generation: GenerationId,
    changes: &Changes,
) -> Result<(), ReadModelError> {
    let customers = changes
        .customers
        .iter()
        .map(|(id, view)| {
            let r = CustomerRow::new(id, view)?;
            let rfm = r.rfm.map_or([None; 3], |s| s.map(Some));
            Ok(json!([
                r.customer_id,
                r.stage,
                r.stage_since,
                r.orders,
                r.refunds,
                r.gross_revenue_minor,
                r.refunded_minor,
                r.net_revenue_minor,
                r.average_order_minor,
                r.first_purchase_at,
                r.last_purchase_at,
                r.last_event_at,
                rfm[0],
                rfm[1],
                rfm[2],
                r.segment,
                r.tier,
                r.state,
                r.consented,
                r.consents,
                r.merged_into
            ]))
        })
        .collect::<Result<Vec<_>, ReadModelError>>()?;
    run(
        tx,
        "INSERT INTO customers (generation, customer_id, stage, stage_since, orders, refunds, \
            gross_revenue_minor, refunded_minor, net_revenue_minor, average_order_minor, \
            first_purchase_at, last_purchase_at, last_event_at, rfm_r, rfm_f, rfm_m, rfm_segment, \
            tier, state, consented, consents, merged_into) \
         SELECT ?2, value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
            value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 11, \
            value ->> 12, value ->> 13, value ->> 14, value ->> 15, value ->> 16, value ->> 17, \
            value ->> 18, value ->> 19, value ->> 20 \
         FROM json_each(?1) WHERE true \
         ON CONFLICT (generation, customer_id) DO UPDATE SET stage = excluded.stage, \
            stage_since = excluded.stage_since, orders = excluded.orders, refunds = excluded.refunds, \
            gross_revenue_minor = excluded.gross_revenue_minor, refunded_minor = excluded.refunded_minor, \
            net_revenue_minor = excluded.net_revenue_minor, \
            average_order_minor = excluded.average_order_minor, \
            first_purchase_at = excluded.first_purchase_at, last_purchase_at = excluded.last_purchase_at, \
            last_event_at = excluded.last_event_at, rfm_r = excluded.rfm_r, rfm_f = excluded.rfm_f, \
            rfm_m = excluded.rfm_m, rfm_segment = excluded.rfm_segment, tier = excluded.tier, \
            state = excluded.state, consented = excluded.consented, \
            consents = excluded.consents, merged_into = excluded.merged_into",
        customers,
        generation,
    )
    .await?;
    insert_history(tx, generation, &changes.outbox).await?;
    let kpis = changes
        .kpis
        .iter()
        .map(|(k, v)| json!([k.metric, k.period, k.dim1, k.dim2, v]));
    run(
        tx,
        "INSERT INTO kpis (generation, metric, period, dim1, dim2, value) \
         SELECT ?2, value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 \
         FROM json_each(?1) WHERE true \
         ON CONFLICT (generation, metric, period, dim1, dim2) DO UPDATE SET value = \
             CASE WHEN excluded.value > 0 AND value > 9223372036854775807 - excluded.value \
                      THEN 9223372036854775807 \
                  WHEN excluded.value < 0 AND value < (-9223372036854775807 - 1) - excluded.value \
                      THEN -9223372036854775807 - 1 \
                  ELSE value + excluded.value END",
        kpis.collect(),
        generation,
    )
    .await?;
    sqlx::query(
        "UPDATE projection_generations SET checkpoint = ?2, watermark = ?3, scored_at = ?4, \
            updated_at = ?5, latest_evidence = ?6 WHERE generation = ?1",
    )
    .bind(generation)
    .bind(to_i64(changes.checkpoint.0))
    .bind(
        changes
            .watermark
            .map(|t| json!(t).as_str().map(str::to_owned)),
    )
    .bind(
        changes
            .scored_at
            .map(|t| json!(t).as_str().map(str::to_owned)),
    )
    .bind(json!(Utc::now()).as_str().map(str::to_owned))
    .bind(
        changes
            .latest_evidence
            .map(|t| json!(t).as_str().map(str::to_owned)),
    )
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

/// Inserts stage-history rows of `generation` (rows already there are kept).
async fn insert_history(
    tx: &mut Tx,
    generation: GenerationId,
    entries: &[OutboxEntry],
) -> Result<(), ReadModelError> {
    let (deleted, rows) = history_changes(entries);
    if !deleted.is_empty() {
        sqlx::query(
            "DELETE FROM stage_history WHERE generation = ?2 AND (customer_id, seq) IN \
                (SELECT value ->> 0, value ->> 1 FROM json_each(?1))",
        )
        .bind(json!(deleted).to_string())
        .bind(generation)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    }
    let history = rows.into_iter().map(|e| {
        json!([
            e.customer_id.as_str(),
            seq(e),
            e.transition.from.map(|s| s.as_str()),
            e.transition.to.as_str(),
            e.transition.at,
            e.transition.rule,
            facts_json(e),
            to_i64(e.position.0)
        ])
    });
    run(
        tx,
        "INSERT INTO stage_history (generation, customer_id, seq, from_stage, to_stage, entered_at, \
            rule, facts, position) \
         SELECT ?2, value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
            value ->> 6, value ->> 7 FROM json_each(?1) WHERE true \
         ON CONFLICT (generation, customer_id, seq) DO NOTHING",
        history.collect(),
        generation,
    )
    .await
}

async fn append_outbox<'a>(
    tx: &mut Tx,
    head: i64,
    entries: impl Iterator<Item = &'a OutboxEntry>,
) -> Result<i64, ReadModelError> {
    let mut next = head;
    let rows: Vec<Value> = entries
        .map(|e| {
            next += 1;
            json!([
                next,
                e.dedupe_key,
                e.customer_id.as_str(),
                seq(e),
                e.transition.from.map(|s| s.as_str()),
                e.transition.to.as_str(),
                e.transition.at,
                e.transition.rule,
                facts_json(e),
                to_i64(e.position.0),
                Utc::now(),
                consent_json(e),
                e.retracts,
                e.historical
            ])
        })
        .collect();
    if rows.is_empty() {
        return Ok(head);
    }
    sqlx::query(
        "INSERT INTO outbox (id, dedupe_key, customer_id, seq, from_stage, to_stage, occurred_at, \
            rule, facts, position, created_at, consent, retracts, historical) \
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
            value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 11, \
            value ->> 12, value ->> 13 \
         FROM json_each(?1) WHERE true ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(Value::Array(rows).to_string())
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    sqlx::query("UPDATE projection_active SET outbox_head = ?1")
        .bind(next)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(next)
}

/// Records which customers a commit of the active generation wrote (for API caches), and
/// prunes the record that falls out of the kept window.
async fn record_changes(
    tx: &mut Tx,
    generation: GenerationId,
    changes: &Changes,
) -> Result<(), ReadModelError> {
    if changes.customers.is_empty() {
        return Ok(());
    }
    let ids: Option<String> = (changes.customers.len() <= CHANGES_LISTED).then(|| {
        Value::from(
            changes
                .customers
                .iter()
                .map(|(id, _)| Value::from(id.as_str()))
                .collect::<Vec<_>>(),
        )
        .to_string()
    });
    let (id,): (i64,) = sqlx::query_as(
        "UPDATE projection_active SET changes_head = changes_head + 1 RETURNING changes_head",
    )
    .fetch_one(&mut **tx)
    .await
    .map_err(db)?;
    sqlx::query(
        "INSERT INTO customer_changes (id, generation, position, customer_ids) \
         VALUES (?1, ?2, ?3, ?4)",
    )
    .bind(id)
    .bind(generation)
    .bind(to_i64(changes.checkpoint.0))
    .bind(ids)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    sqlx::query("DELETE FROM customer_changes WHERE id = ?1")
        .bind(id - CHANGES_KEPT)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

#[async_trait]
impl ReadModelStore for SqliteReadModels {
    async fn try_lead(
        &self,
        owner: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<Box<dyn Lease>>, ReadModelError> {
        super::lease::sqlite_try_lead(&self.pool, super::lease::Role::Projector, owner, ttl).await
    }

    async fn try_lead_relay(
        &self,
        relay: &str,
        owner: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<Box<dyn Lease>>, ReadModelError> {
        let role = super::lease::Role::Relay(relay.to_owned());
        super::lease::sqlite_try_lead(&self.pool, role, owner, ttl).await
    }

    async fn active_generation(&self) -> Result<Option<Generation>, ReadModelError> {
        type Row = (
            i64,
            String,
            i64,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let row: Option<Row> = sqlx::query_as(
            "SELECT g.generation, g.rules, g.checkpoint, g.watermark, g.scored_at, \
                g.latest_evidence \
             FROM projection_active a JOIN projection_generations g USING (generation)",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|(id, rules, checkpoint, watermark, scored_at, latest)| {
            Ok(Generation {
                id,
                rules,
                checkpoint: position(checkpoint)?,
                watermark: time(watermark)?,
                latest_evidence: time(latest)?,
                scored_at: time(scored_at)?,
            })
        })
        .transpose()
    }

    async fn create_generation(&self, rules: &str) -> Result<Generation, ReadModelError> {
        let mut tx = self.begin().await?;
        let now = json!(Utc::now());
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO projection_generations (generation, rules, status, created_at, updated_at) \
             SELECT coalesce(max(generation), 0) + 1, ?1, ?2, ?3, ?3 FROM projection_generations \
             RETURNING generation",
        )
        .bind(rules)
        .bind(BUILDING)
        .bind(now.as_str().map(str::to_owned))
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Generation {
            id,
            rules: rules.to_owned(),
            checkpoint: Position::ZERO,
            watermark: None,
            latest_evidence: None,
            scored_at: None,
        })
    }

    async fn load(&self, generation: GenerationId) -> Result<Snapshot, ReadModelError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT customer_id, state FROM customers WHERE generation = ?1")
                .bind(generation)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        let mut customers: Vec<_> = rows
            .into_iter()
            .map(|(id, state)| view(id, &state))
            .collect::<Result<_, _>>()?;
        let counts: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT customer_id, count(*), max(seq) FROM stage_history \
             WHERE generation = ?1 GROUP BY customer_id",
        )
        .bind(generation)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        attach_counts(&mut customers, counts)?;
        Ok(Snapshot { customers })
    }

    async fn commit(
        &self,
        generation: GenerationId,
        expected: Position,
        changes: &Changes,
    ) -> Result<(), ReadModelError> {
        let mut tx = self.begin().await?;
        let (active, status) = lock(&mut tx, generation, expected).await?;
        write(&mut tx, generation, changes).await?;
        match active {
            Some((id, head)) if id == generation && status == ACTIVE => {
                append_outbox(&mut tx, head, changes.outbox.iter()).await?;
                record_changes(&mut tx, generation, changes).await?;
            }
            _ if status == ACTIVE => return Err(ReadModelError::Superseded(generation)),
            _ => {}
        }
        tx.commit().await.map_err(db)
    }

    async fn activate(
        &self,
        generation: GenerationId,
        expected: Position,
        changes: &Changes,
        publish: Publish<'_>,
    ) -> Result<Option<GenerationId>, ReadModelError> {
        let mut tx = self.begin().await?;
        let (active, _) = lock(&mut tx, generation, expected).await?;
        write(&mut tx, generation, changes).await?;
        let previous = match active {
            Some((old, head)) => {
                let (old_checkpoint,): (i64,) = sqlx::query_as(
                    "SELECT checkpoint FROM projection_generations WHERE generation = ?1",
                )
                .bind(old)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
                let old_checkpoint = position(old_checkpoint)?;
                let entries = super::to_publish(publish, head, old_checkpoint)?;
                append_outbox(&mut tx, head, entries.into_iter()).await?;
                sqlx::query("UPDATE projection_generations SET status = ?2 WHERE generation = ?1")
                    .bind(old)
                    .bind(RETIRED)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                sqlx::query("UPDATE projection_active SET generation = ?1")
                    .bind(generation)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                Some(old)
            }
            None => {
                sqlx::query("INSERT INTO projection_active (singleton, generation) VALUES (1, ?1)")
                    .bind(generation)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                let entries = match publish {
                    Publish::Held(entries) | Publish::Corrections { entries, .. } => entries,
                };
                append_outbox(&mut tx, 0, entries.iter()).await?;
                None
            }
        };
        sqlx::query("UPDATE projection_generations SET status = ?2 WHERE generation = ?1")
            .bind(generation)
            .bind(ACTIVE)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(previous.filter(|old| *old != generation))
    }

    async fn write_history(
        &self,
        generation: GenerationId,
        entries: &[OutboxEntry],
    ) -> Result<(), ReadModelError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM projection_generations WHERE generation = ?1")
                .bind(generation)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        if status.as_deref() != Some(BUILDING) {
            return Err(ReadModelError::Superseded(generation));
        }
        insert_history(&mut tx, generation, entries).await?;
        tx.commit().await.map_err(db)
    }

    async fn drop_generation(&self, generation: GenerationId) -> Result<(), ReadModelError> {
        let mut tx = self.begin().await?;
        let status: Option<(String,)> =
            sqlx::query_as("SELECT status FROM projection_generations WHERE generation = ?1")
                .bind(generation)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        if status.is_some_and(|(s,)| s == ACTIVE) {
            return Err(ReadModelError::Corrupt(format!(
                "generation {generation} is active and cannot be dropped"
            )));
        }
        for table in [
            "customers",
            "stage_history",
            "kpis",
            "projection_generations",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE generation = ?1"))
                .bind(generation)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn outbox_after(
        &self,
        after: i64,
        max: usize,
    ) -> Result<Vec<OutboxRecord>, ReadModelError> {
        type Row = (
            i64,
            String,
            String,
            i32,
            Option<String>,
            String,
            String,
            String,
            String,
            i64,
            Option<String>,
            Option<String>,
            bool,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, dedupe_key, customer_id, seq, from_stage, to_stage, occurred_at, rule, facts, \
                position, consent, retracts, historical FROM outbox WHERE id > ?1 ORDER BY id \
             LIMIT ?2",
        )
        .bind(after)
        .bind(limit(max))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(
                |(
                    id,
                    dedupe_key,
                    customer_id,
                    seq,
                    from_stage,
                    to_stage,
                    at,
                    rule,
                    facts,
                    position,
                    consent,
                    retracts,
                    historical,
                )| {
                    let occurred_at = time(Some(at))?.unwrap_or_default();
                    OutboxRow {
                        id,
                        dedupe_key,
                        customer_id,
                        seq,
                        from_stage,
                        to_stage,
                        occurred_at,
                        rule,
                        facts,
                        position,
                        consent,
                        retracts,
                        historical,
                    }
                    .decode()
                },
            )
            .collect()
    }

    async fn relay_offset(&self, relay: &str) -> Result<i64, ReadModelError> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT last_id FROM relay_offsets WHERE relay = ?1")
                .bind(relay)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(row.map_or(0, |(id,)| id))
    }

    async fn set_relay_offset(&self, relay: &str, id: i64) -> Result<(), ReadModelError> {
        sqlx::query(
            "INSERT INTO relay_offsets (relay, last_id, updated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (relay) DO UPDATE SET last_id = max(last_id, excluded.last_id), \
                updated_at = excluded.updated_at",
        )
        .bind(relay)
        .bind(id)
        .bind(json!(Utc::now()).as_str().map(str::to_owned))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }
}
