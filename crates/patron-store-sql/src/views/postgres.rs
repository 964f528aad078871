//! Read models in PostgreSQL. Every write of the active generation locks `projection_active`
//! first (then the generation row), so commits, outbox ids and the swap of a rebuild are
//! serialised; queries never lock.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use patron_projector::{
    Changes, Generation, GenerationId, Lease, OutboxEntry, OutboxRecord, Publish, ReadModelError,
    ReadModelStore, Snapshot,
};
use patron_store::Position;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};

use super::copy::CopyRows;
use super::{
    ACTIVE, BUILDING, CHANGES_KEPT, CHANGES_LISTED, CustomerRow, OutboxRow, RETIRED, attach_counts,
    consent_json, facts_json, history_changes, position, seq, view,
};
use crate::error::map;
use crate::row::{limit, to_i64};

/// Read models in PostgreSQL, beside the event store.
#[derive(Clone)]
pub struct PgReadModels {
    pool: PgPool,
}

impl PgReadModels {
    /// Read models on an existing pool (normally the event store's).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool, for queries.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn db(error: sqlx::Error) -> ReadModelError {
    ReadModelError::Store(map(error))
}

type Tx = Transaction<'static, Postgres>;

/// Locks the active pointer (when there is one) and the generation; checks the generation is at
/// `expected`; returns the active generation and outbox head.
async fn lock(
    tx: &mut Tx,
    generation: GenerationId,
    expected: Position,
) -> Result<(Option<(GenerationId, i64)>, String), ReadModelError> {
    let active: Option<(i64, i64)> = sqlx::query_as(
        "SELECT generation, outbox_head FROM projection_active WHERE singleton FOR UPDATE",
    )
    .fetch_optional(&mut **tx)
    .await
    .map_err(db)?;
    let row: Option<(i64, String)> = sqlx::query_as(
        "SELECT checkpoint, status FROM projection_generations WHERE generation = $1 FOR UPDATE",
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

/// Writes a generation being built with binary `COPY`: customers written by an earlier flush of
/// the same rebuild are deleted first (a probe each; none when the generation is still empty, at
/// position zero), every stage-history row is new.
async fn bulk_write(
    tx: &mut Tx,
    generation: GenerationId,
    expected: Position,
    changes: &Changes,
) -> Result<(), ReadModelError> {
    if !changes.customers.is_empty() {
        if expected != Position::ZERO {
            let ids: Vec<&str> = changes
                .customers
                .iter()
                .map(|(id, _)| id.as_str())
                .collect();
            sqlx::query("DELETE FROM customers WHERE generation = $1 AND customer_id = ANY($2)")
                .bind(generation)
                .bind(ids)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
        }
        copy_each(
            tx,
            "COPY customers (generation, customer_id, stage, stage_since, orders, refunds, \
                gross_revenue_minor, refunded_minor, net_revenue_minor, average_order_minor, \
                first_purchase_at, last_purchase_at, last_event_at, rfm_r, rfm_f, rfm_m, \
                rfm_segment, tier, state, consented, consents, merged_into) \
                FROM STDIN (FORMAT binary)",
            &changes.customers,
            |rows, (id, view)| {
                let r = CustomerRow::new(id, view)?;
                let rfm = |i: usize| r.rfm.map(|s| s[i]);
                rows.row(22)
                    .int8(Some(generation))
                    .text(Some(&r.customer_id))
                    .text(r.stage)
                    .time(r.stage_since)
                    .int8(Some(r.orders))
                    .int8(Some(r.refunds))
                    .int8(Some(r.gross_revenue_minor))
                    .int8(Some(r.refunded_minor))
                    .int8(Some(r.net_revenue_minor))
                    .int8(r.average_order_minor)
                    .time(r.first_purchase_at)
                    .time(r.last_purchase_at)
                    .time(r.last_event_at)
                    .int2(rfm(0))
                    .int2(rfm(1))
                    .int2(rfm(2))
                    .text(r.segment)
                    .text(r.tier)
                    .text(Some(&r.state))
                    .text(r.consented.as_deref())
                    .text(r.consents.as_deref())
                    .text(r.merged_into.as_deref());
                Ok(())
            },
        )
        .await?;
    }
    copy_history(tx, generation, &changes.outbox).await?;
    write_kpis_and_checkpoint(tx, generation, changes).await
}

/// Writes stage-history rows of `generation` with `COPY`.
async fn copy_history(
    tx: &mut Tx,
    generation: GenerationId,
    entries: &[OutboxEntry],
) -> Result<(), ReadModelError> {
    let (deleted, rows) = history_changes(entries);
    delete_history(tx, generation, &deleted).await?;
    copy_each(
        tx,
        "COPY stage_history (generation, customer_id, seq, from_stage, to_stage, entered_at, \
            rule, facts, position) FROM STDIN (FORMAT binary)",
        &rows,
        |rows, e| {
            rows.row(9)
                .int8(Some(generation))
                .text(Some(e.customer_id.as_str()))
                .int4(seq(e))
                .text(e.transition.from.map(|s| s.as_str()))
                .text(Some(e.transition.to.as_str()))
                .time(Some(e.transition.at))
                .text(Some(&e.transition.rule))
                .jsonb(&facts_json(e))
                .int8(Some(to_i64(e.position.0)));
            Ok(())
        },
    )
    .await
}

/// Deletes the stage-history rows that retractions remove.
async fn delete_history(
    tx: &mut Tx,
    generation: GenerationId,
    deleted: &[(&str, i32)],
) -> Result<(), ReadModelError> {
    if deleted.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "DELETE FROM stage_history WHERE generation = $1 AND (customer_id, seq) IN \
            (SELECT * FROM UNNEST($2::text[], $3::int4[]))",
    )
    .bind(generation)
    .bind(deleted.iter().map(|(c, _)| *c).collect::<Vec<_>>())
    .bind(deleted.iter().map(|(_, s)| *s).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

/// About this many bytes of rows go in one message, so that PostgreSQL parses one piece while
/// the next is being built.
const COPY_PIECE: usize = 1 << 20;

/// `COPY`s one row per item (`row` appends it), sending the data in pieces as it is built.
async fn copy_each<T>(
    tx: &mut Tx,
    statement: &str,
    items: &[T],
    mut row: impl FnMut(&mut CopyRows, &T) -> Result<(), ReadModelError>,
) -> Result<(), ReadModelError> {
    if items.is_empty() {
        return Ok(());
    }
    let mut copy = tx.copy_in_raw(statement).await.map_err(db)?;
    let mut rows = CopyRows::new();
    for item in items {
        let sent = match row(&mut rows, item) {
            Err(error) => Err(error),
            Ok(()) if rows.pending() >= COPY_PIECE => {
                copy.send(rows.take_piece()).await.map(|_| ()).map_err(db)
            }
            Ok(()) => Ok(()),
        };
        if let Err(error) = sent {
            let _ = copy.abort("a row could not be written").await;
            return Err(error);
        }
    }
    if let Err(error) = copy.send(rows.into_bytes()).await {
        let _ = copy.abort("send failed").await;
        return Err(db(error));
    }
    copy.finish().await.map(|_| ()).map_err(db)
}

/// Writes views, stage history, KPI deltas and the checkpoint of `generation`.
async fn write(
    tx: &mut Tx,
    generation: GenerationId,
    changes: &Changes,
) -> Result<(), ReadModelError> {
    if !changes.customers.is_empty() {
        let rows = changes
            .customers
            .iter()
            .map(|(id, view)| CustomerRow::new(id, view))
            .collect::<Result<Vec<_>, _>>()?;
        let col = |f: fn(&CustomerRow) -> Option<i16>| rows.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO customers AS c (generation, customer_id, stage, stage_since, orders, refunds, \
                gross_revenue_minor, refunded_minor, net_revenue_minor, average_order_minor, \
                first_purchase_at, last_purchase_at, last_event_at, rfm_r, rfm_f, rfm_m, \
                rfm_segment, tier, state, consented, consents, merged_into) \
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::timestamptz[], $5::int8[], \
                $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::timestamptz[], \
                $12::timestamptz[], $13::timestamptz[], $14::int2[], $15::int2[], $16::int2[], \
                $17::text[], $18::text[], $19::text[], $20::text[], $21::text[], $22::text[]) \
             ON CONFLICT (generation, customer_id) DO UPDATE SET stage = excluded.stage, \
                stage_since = excluded.stage_since, orders = excluded.orders, \
                refunds = excluded.refunds, gross_revenue_minor = excluded.gross_revenue_minor, \
                refunded_minor = excluded.refunded_minor, net_revenue_minor = excluded.net_revenue_minor, \
                average_order_minor = excluded.average_order_minor, \
                first_purchase_at = excluded.first_purchase_at, \
                last_purchase_at = excluded.last_purchase_at, last_event_at = excluded.last_event_at, \
                rfm_r = excluded.rfm_r, rfm_f = excluded.rfm_f, rfm_m = excluded.rfm_m, \
                rfm_segment = excluded.rfm_segment, tier = excluded.tier, state = excluded.state, \
                consented = excluded.consented, consents = excluded.consents, \
                merged_into = excluded.merged_into",
        )
        .bind(generation)
        .bind(rows.iter().map(|r| r.customer_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.stage).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.stage_since).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.orders).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.refunds).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.gross_revenue_minor).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.refunded_minor).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.net_revenue_minor).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.average_order_minor).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.first_purchase_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.last_purchase_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.last_event_at).collect::<Vec<_>>())
        .bind(col(|r| r.rfm.map(|s| s[0])))
        .bind(col(|r| r.rfm.map(|s| s[1])))
        .bind(col(|r| r.rfm.map(|s| s[2])))
        .bind(rows.iter().map(|r| r.segment).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.tier).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.state.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.consented.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.consents.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.merged_into.as_deref()).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    }
    let (deleted, rows) = history_changes(&changes.outbox);
    delete_history(tx, generation, &deleted).await?;
    if !rows.is_empty() {
        let columns = TransitionColumns::new(rows.into_iter());
        let query = sqlx::query(
            "INSERT INTO stage_history (generation, customer_id, seq, from_stage, to_stage, \
                entered_at, rule, facts, position) \
             SELECT $1, * FROM UNNEST($2::text[], $3::int4[], $4::text[], $5::text[], \
                $6::timestamptz[], $7::text[], $8::jsonb[], $9::int8[]) \
             ON CONFLICT (generation, customer_id, seq) DO NOTHING",
        )
        .bind(generation);
        columns.bind(query).execute(&mut **tx).await.map_err(db)?;
    }
    write_kpis_and_checkpoint(tx, generation, changes).await
}

async fn write_kpis_and_checkpoint(
    tx: &mut Tx,
    generation: GenerationId,
    changes: &Changes,
) -> Result<(), ReadModelError> {
    if !changes.kpis.is_empty() {
        let kpis = &changes.kpis;
        sqlx::query(
            "INSERT INTO kpis AS k (generation, metric, period, dim1, dim2, value) \
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::int8[]) \
             ON CONFLICT (generation, metric, period, dim1, dim2) \
             DO UPDATE SET value = LEAST(GREATEST(k.value::numeric + excluded.value, \
                 -9223372036854775808), 9223372036854775807)::int8",
        )
        .bind(generation)
        .bind(kpis.keys().map(|k| k.metric).collect::<Vec<_>>())
        .bind(kpis.keys().map(|k| k.period.as_str()).collect::<Vec<_>>())
        .bind(kpis.keys().map(|k| k.dim1.as_str()).collect::<Vec<_>>())
        .bind(kpis.keys().map(|k| k.dim2.as_str()).collect::<Vec<_>>())
        .bind(kpis.values().copied().collect::<Vec<_>>())
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    }
    sqlx::query(
        "UPDATE projection_generations SET checkpoint = $2, watermark = $3, scored_at = $4, \
            updated_at = now(), latest_evidence = $5 WHERE generation = $1",
    )
    .bind(generation)
    .bind(to_i64(changes.checkpoint.0))
    .bind(changes.watermark)
    .bind(changes.scored_at)
    .bind(changes.latest_evidence)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

/// The columns a transition has both in `stage_history` and in `outbox`, as arrays for `UNNEST`
/// (bound in that order: customer, seq, from, to, time, rule, facts, position).
struct TransitionColumns<'a> {
    customer_id: Vec<&'a str>,
    seq: Vec<i32>,
    from: Vec<Option<&'static str>>,
    to: Vec<&'static str>,
    at: Vec<DateTime<Utc>>,
    rule: Vec<&'a str>,
    facts: Vec<String>,
    position: Vec<i64>,
}

impl<'a> TransitionColumns<'a> {
    fn new(entries: impl Iterator<Item = &'a OutboxEntry>) -> Self {
        let mut columns = Self {
            customer_id: Vec::new(),
            seq: Vec::new(),
            from: Vec::new(),
            to: Vec::new(),
            at: Vec::new(),
            rule: Vec::new(),
            facts: Vec::new(),
            position: Vec::new(),
        };
        for e in entries {
            columns.customer_id.push(e.customer_id.as_str());
            columns.seq.push(seq(e));
            columns.from.push(e.transition.from.map(|s| s.as_str()));
            columns.to.push(e.transition.to.as_str());
            columns.at.push(e.transition.at);
            columns.rule.push(&e.transition.rule);
            columns.facts.push(facts_json(e));
            columns.position.push(to_i64(e.position.0));
        }
        columns
    }

    fn bind<'q>(
        self,
        query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>
    where
        'a: 'q,
    {
        query
            .bind(self.customer_id)
            .bind(self.seq)
            .bind(self.from)
            .bind(self.to)
            .bind(self.at)
            .bind(self.rule)
            .bind(self.facts)
            .bind(self.position)
    }
}

/// Appends entries to the outbox after `head`, skipping known dedupe keys; returns the new head.
async fn append_outbox<'a>(
    tx: &mut Tx,
    head: i64,
    entries: impl ExactSizeIterator<Item = &'a OutboxEntry> + Clone,
) -> Result<i64, ReadModelError> {
    let count = i64::try_from(entries.len()).unwrap_or(i64::MAX);
    if count == 0 {
        return Ok(head);
    }
    let query = sqlx::query(
        "INSERT INTO outbox (id, dedupe_key, customer_id, seq, from_stage, to_stage, occurred_at, \
            rule, facts, position, consent, retracts, historical) \
         SELECT $1 + n, dedupe_key, customer_id, seq, from_stage, to_stage, occurred_at, rule, \
            facts, position, consent, retracts, historical \
         FROM UNNEST($2::text[], $11::text[], $12::text[], $13::bool[], $3::text[], $4::int4[], \
            $5::text[], $6::text[], $7::timestamptz[], $8::text[], $9::jsonb[], $10::int8[]) \
            WITH ORDINALITY \
            AS e (dedupe_key, consent, retracts, historical, customer_id, seq, from_stage, \
                  to_stage, occurred_at, rule, facts, position, n) \
         ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(head)
    .bind(
        entries
            .clone()
            .map(|e| e.dedupe_key.as_str())
            .collect::<Vec<_>>(),
    );
    let consent: Vec<Option<String>> = entries.clone().map(consent_json).collect();
    let retracts: Vec<Option<&str>> = entries.clone().map(|e| e.retracts.as_deref()).collect();
    let historical: Vec<bool> = entries.clone().map(|e| e.historical).collect();
    TransitionColumns::new(entries)
        .bind(query)
        .bind(consent)
        .bind(retracts)
        .bind(historical)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    let head = head.saturating_add(count);
    sqlx::query("UPDATE projection_active SET outbox_head = $1 WHERE singleton")
        .bind(head)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(head)
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
    let ids: Option<Vec<&str>> = (changes.customers.len() <= CHANGES_LISTED).then(|| {
        changes
            .customers
            .iter()
            .map(|(id, _)| id.as_str())
            .collect()
    });
    let (id,): (i64,) = sqlx::query_as(
        "WITH head AS (UPDATE projection_active SET changes_head = changes_head + 1 \
            WHERE singleton RETURNING changes_head) \
         INSERT INTO customer_changes (id, generation, position, customer_ids) \
         SELECT changes_head, $1, $2, $3 FROM head RETURNING id",
    )
    .bind(generation)
    .bind(to_i64(changes.checkpoint.0))
    .bind(ids)
    .fetch_one(&mut **tx)
    .await
    .map_err(db)?;
    sqlx::query("DELETE FROM customer_changes WHERE id = $1")
        .bind(id - CHANGES_KEPT)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

#[async_trait]
impl ReadModelStore for PgReadModels {
    async fn try_lead(
        &self,
        owner: &str,
        _ttl: std::time::Duration,
    ) -> Result<Option<Box<dyn Lease>>, ReadModelError> {
        super::lease::pg_try_lead(&self.pool, super::lease::Role::Projector, owner).await
    }

    async fn try_lead_relay(
        &self,
        relay: &str,
        owner: &str,
        _ttl: std::time::Duration,
    ) -> Result<Option<Box<dyn Lease>>, ReadModelError> {
        let role = super::lease::Role::Relay(relay.to_owned());
        super::lease::pg_try_lead(&self.pool, role, owner).await
    }

    async fn active_generation(&self) -> Result<Option<Generation>, ReadModelError> {
        type Time = Option<chrono::DateTime<Utc>>;
        let row: Option<(i64, String, i64, Time, Time, Time)> = sqlx::query_as(
            "SELECT g.generation, g.rules, g.checkpoint, g.watermark, g.scored_at, \
                    g.latest_evidence \
                 FROM projection_active a JOIN projection_generations g USING (generation)",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(
            |(id, rules, checkpoint, watermark, scored_at, latest_evidence)| {
                Ok(Generation {
                    id,
                    rules,
                    checkpoint: position(checkpoint)?,
                    watermark,
                    latest_evidence,
                    scored_at,
                })
            },
        )
        .transpose()
    }

    async fn create_generation(&self, rules: &str) -> Result<Generation, ReadModelError> {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO projection_generations (generation, rules, status) \
             SELECT coalesce(max(generation), 0) + 1, $1, $2 FROM projection_generations \
             RETURNING generation",
        )
        .bind(rules)
        .bind(BUILDING)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
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
            sqlx::query_as("SELECT customer_id, state FROM customers WHERE generation = $1")
                .bind(generation)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        let mut customers: Vec<_> = rows
            .into_iter()
            .map(|(id, state)| view(id, &state))
            .collect::<Result<_, _>>()?;
        let counts: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT customer_id, count(*), CAST(max(seq) AS BIGINT) FROM stage_history \
             WHERE generation = $1 GROUP BY customer_id",
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
        let mut tx = self.pool.begin().await.map_err(db)?;
        let (active, status) = lock(&mut tx, generation, expected).await?;
        if status == BUILDING {
            bulk_write(&mut tx, generation, expected, changes).await?;
        } else {
            write(&mut tx, generation, changes).await?;
        }
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
        let mut tx = self.pool.begin().await.map_err(db)?;
        let (active, status) = lock(&mut tx, generation, expected).await?;
        if status == BUILDING {
            bulk_write(&mut tx, generation, expected, changes).await?;
        } else {
            write(&mut tx, generation, changes).await?;
        }
        let previous = match active {
            Some((old, head)) => {
                let (old_checkpoint,): (i64,) = sqlx::query_as(
                    "SELECT checkpoint FROM projection_generations WHERE generation = $1",
                )
                .bind(old)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
                let old_checkpoint = position(old_checkpoint)?;
                let entries = super::to_publish(publish, head, old_checkpoint)?;
                append_outbox(&mut tx, head, entries.into_iter()).await?;
                sqlx::query("UPDATE projection_generations SET status = $2 WHERE generation = $1")
                    .bind(old)
                    .bind(RETIRED)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                sqlx::query("UPDATE projection_active SET generation = $1 WHERE singleton")
                    .bind(generation)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                Some(old)
            }
            None => {
                sqlx::query(
                    "INSERT INTO projection_active (singleton, generation) VALUES (true, $1)",
                )
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
        sqlx::query("UPDATE projection_generations SET status = $2 WHERE generation = $1")
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
        let mut tx = self.pool.begin().await.map_err(db)?;
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM projection_generations WHERE generation = $1 FOR SHARE",
        )
        .bind(generation)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        if status.as_deref() != Some(BUILDING) {
            return Err(ReadModelError::Superseded(generation));
        }
        copy_history(&mut tx, generation, entries).await?;
        tx.commit().await.map_err(db)
    }

    async fn drop_generation(&self, generation: GenerationId) -> Result<(), ReadModelError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let (status,): (String,) = sqlx::query_as(
            "SELECT status FROM projection_generations WHERE generation = $1 FOR UPDATE",
        )
        .bind(generation)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .unwrap_or((RETIRED.to_owned(),));
        if status == ACTIVE {
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
            sqlx::query(&format!("DELETE FROM {table} WHERE generation = $1"))
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
        let rows: Vec<(
            i64,
            String,
            String,
            i32,
            Option<String>,
            String,
            chrono::DateTime<Utc>,
            String,
            String,
            i64,
            Option<String>,
            Option<String>,
            bool,
        )> = sqlx::query_as(
            "SELECT id, dedupe_key, customer_id, seq, from_stage, to_stage, occurred_at, rule, \
                    facts::text, position, consent, retracts, historical FROM outbox \
             WHERE id > $1 ORDER BY id LIMIT $2",
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
                    occurred_at,
                    rule,
                    facts,
                    position,
                    consent,
                    retracts,
                    historical,
                )| {
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
            sqlx::query_as("SELECT last_id FROM relay_offsets WHERE relay = $1")
                .bind(relay)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(row.map_or(0, |(id,)| id))
    }

    async fn set_relay_offset(&self, relay: &str, id: i64) -> Result<(), ReadModelError> {
        sqlx::query(
            "INSERT INTO relay_offsets (relay, last_id) VALUES ($1, $2) \
             ON CONFLICT (relay) DO UPDATE SET last_id = greatest(relay_offsets.last_id, excluded.last_id), \
                updated_at = now()",
        )
        .bind(relay)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }
}
