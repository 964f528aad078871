//! The SQL of the population, read-your-writes and watch queries, and the event store reads.

use patron_domain::CustomerId;
use patron_store::{EventStore, RecordedEvent};
use patron_store_sql::SqlEventStore;

use super::SqlReadModels;
use crate::error::ApiError;
use crate::model::{KpiColumn, KpiQuery, KpiRow, KpiRows, OutboxRow};

const KPIS_BY_PERIOD: &str = "SELECT period, dim1, dim2, value FROM kpis \
     WHERE generation = $1 AND metric = $2 AND period >= $3 AND period <= $4";

const KPIS_BY_DIM1: &str = "SELECT period, dim1, dim2, value FROM kpis \
     WHERE generation = $1 AND metric = $2 AND dim1 >= $3 AND dim1 <= $4";

const CHECKPOINT: &str = "SELECT g.checkpoint FROM projection_active a \
     JOIN projection_generations g ON g.generation = a.generation";

const OUTBOX: &str = "SELECT id, dedupe_key, customer_id, seq, from_stage, to_stage, occurred_at, \
     rule, CAST(facts AS TEXT) AS facts, position, consent, retracts, historical FROM outbox \
     WHERE id > $1 \
     ORDER BY id LIMIT $2";

impl SqlReadModels {
    pub(super) async fn kpi_rows(&self, query: &KpiQuery) -> Result<KpiRows, ApiError> {
        let Some(snapshot) = self.snapshot().await? else {
            return Ok(KpiRows {
                snapshot: None,
                rows: Vec::new(),
            });
        };
        let sql = match query.column {
            KpiColumn::Period => KPIS_BY_PERIOD,
            KpiColumn::Dim1 => KPIS_BY_DIM1,
        };
        let rows: Vec<KpiRow> = on_pool!(&self.store, |pool| {
            sqlx::query_as(sql)
                .bind(snapshot.generation)
                .bind(query.metric)
                .bind(&query.from)
                .bind(&query.to)
                .fetch_all(pool)
                .await?
        });
        Ok(KpiRows {
            snapshot: Some(snapshot),
            rows,
        })
    }

    pub(super) async fn checkpoint(&self) -> Result<u64, ApiError> {
        let checkpoint: Option<i64> = on_pool!(&self.store, |pool| {
            sqlx::query_scalar(CHECKPOINT).fetch_optional(pool).await?
        });
        Ok(checkpoint.and_then(|c| u64::try_from(c).ok()).unwrap_or(0))
    }

    pub(super) async fn outbox_rows(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, ApiError> {
        Ok(on_pool!(&self.store, |pool| {
            sqlx::query_as(OUTBOX)
                .bind(after_id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        }))
    }

    pub(super) async fn stream_page(
        &self,
        customer_id: &CustomerId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, ApiError> {
        let events = match &self.store {
            SqlEventStore::Postgres(store) => {
                store.read_stream(customer_id, after_version, limit).await
            }
            SqlEventStore::Sqlite(store) => {
                store.read_stream(customer_id, after_version, limit).await
            }
        };
        Ok(events?)
    }
}
