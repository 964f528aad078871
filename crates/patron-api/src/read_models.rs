//! The query layer: a small trait over the read models, and its SQL implementation.
//!
//! PostgreSQL and SQLite share the SQL text (both take `$n` placeholders and `CAST(… AS TEXT)`);
//! each query is run on whichever pool the store has. Every query reads the active generation.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use patron_store_sql::SqlEventStore;

use patron_domain::CustomerId;
use patron_lifecycle::Rules;
use std::sync::Arc;

use patron_store::{EventStore, RecordedEvent};

use crate::error::ApiError;
use crate::model::{
    CustomerDetail, CustomerPage, CustomerQuery, CustomerRow, HistoryRow, KpiQuery, KpiRows,
    OutboxRow, Snapshot,
};

/// Read access to the read models, as the API needs it.
#[async_trait]
pub trait ReadModels: Send + Sync + 'static {
    /// One customer of the active generation with its history; `None` when unknown.
    async fn customer(&self, customer_id: &str) -> Result<Option<CustomerDetail>, ApiError>;
    /// Customers matching the query, by id.
    async fn customers(&self, query: &CustomerQuery) -> Result<CustomerPage, ApiError>;
    /// Succeeds when the database answers.
    async fn ping(&self) -> Result<(), ApiError>;
    /// KPI counters of the active generation.
    async fn kpis(&self, query: &KpiQuery) -> Result<KpiRows, ApiError>;
    /// The event log position the active generation has applied (0 before the first run).
    async fn position(&self) -> Result<u64, ApiError>;
    /// Up to `limit` outbox rows with an id greater than `after_id`, by id.
    async fn outbox(&self, after_id: i64, limit: u32) -> Result<Vec<OutboxRow>, ApiError>;
    /// The active generation and the lifecycle rules it was built with.
    async fn active(&self) -> Result<Option<(Snapshot, Rules)>, ApiError>;
    /// Up to `limit` events of a customer's stream after a version, in version order.
    async fn stream(
        &self,
        customer_id: &CustomerId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, ApiError>;
    /// The event store behind the read models, for the raw-event queries (none when there is
    /// no store to read).
    fn event_store(&self) -> Option<Arc<dyn EventStore>>;
}

/// [`ReadModels`] over the store's database.
#[derive(Clone)]
pub struct SqlReadModels {
    store: SqlEventStore,
}

impl SqlReadModels {
    /// The read models in the store's database (sharing its pool).
    pub fn new(store: SqlEventStore) -> Self {
        Self { store }
    }
}

/// Runs `$body` with `$pool` bound to the backend's pool (the body is compiled once per backend).
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store {
            SqlEventStore::Postgres(store) => {
                let $pool = store.pool();
                $body
            }
            SqlEventStore::Sqlite(store) => {
                let $pool = store.pool();
                $body
            }
        }
    };
}

mod queries;

const SNAPSHOT: &str = "SELECT a.generation, g.rules, g.watermark FROM projection_active a \
     JOIN projection_generations g ON g.generation = a.generation";

const CUSTOMER_COLUMNS: &str = "customer_id, stage, stage_since, orders, refunds, \
     gross_revenue_minor, refunded_minor, net_revenue_minor, average_order_minor, \
     first_purchase_at, last_purchase_at, last_event_at, rfm_r, rfm_f, rfm_m, rfm_segment, tier";

const HISTORY: &str = "SELECT seq, from_stage, to_stage, entered_at, rule, \
     CAST(facts AS TEXT) AS facts FROM stage_history \
     WHERE generation = $1 AND customer_id = $2 ORDER BY seq";

type SnapshotRow = (i64, String, Option<DateTime<Utc>>);

impl SqlReadModels {
    async fn snapshot(&self) -> Result<Option<Snapshot>, ApiError> {
        Ok(self
            .active_generation()
            .await?
            .map(|(snapshot, _)| snapshot))
    }

    async fn active_generation(&self) -> Result<Option<(Snapshot, Rules)>, ApiError> {
        let row: Option<SnapshotRow> = on_pool!(&self.store, |pool| {
            sqlx::query_as(SNAPSHOT).fetch_optional(pool).await?
        });
        let Some((generation, rules, watermark)) = row else {
            return Ok(None);
        };
        let rules = patron_lifecycle::Rules::from_toml_str(&rules).map_err(|error| {
            ApiError::Internal(format!("rules of generation {generation}: {error}"))
        })?;
        let snapshot = Snapshot {
            generation,
            currency: rules.currency.clone(),
            watermark,
        };
        Ok(Some((snapshot, rules)))
    }
}

/// The listing's SQL: one condition per present filter, numbered placeholders in bind order.
fn list_sql(query: &CustomerQuery) -> String {
    let mut sql = format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE generation = $1");
    let mut n = 1;
    let mut condition = |sql: &mut String, column: &str| {
        n += 1;
        sql.push_str(&format!(" AND {column} ${n}"));
    };
    let filter = &query.filter;
    if filter.stage.is_some() {
        condition(&mut sql, "stage =");
    }
    if filter.tier.is_some() {
        condition(&mut sql, "tier =");
    }
    if filter.rfm_segment.is_some() {
        condition(&mut sql, "rfm_segment =");
    }
    if filter.min_net_revenue_minor.is_some() {
        condition(&mut sql, "net_revenue_minor >=");
    }
    if query.after.is_some() {
        condition(&mut sql, "customer_id >");
    }
    n += 1;
    sql.push_str(&format!(" ORDER BY customer_id LIMIT ${n}"));
    sql
}

#[async_trait]
impl ReadModels for SqlReadModels {
    async fn customer(&self, customer_id: &str) -> Result<Option<CustomerDetail>, ApiError> {
        let Some(snapshot) = self.snapshot().await? else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE generation = $1 AND customer_id = $2"
        );
        let generation = snapshot.generation;
        let (customer, history): (Option<CustomerRow>, Vec<HistoryRow>) =
            on_pool!(&self.store, |pool| {
                let customer = sqlx::query_as(&sql)
                    .bind(generation)
                    .bind(customer_id)
                    .fetch_optional(pool)
                    .await?;
                let history = sqlx::query_as(HISTORY)
                    .bind(generation)
                    .bind(customer_id)
                    .fetch_all(pool)
                    .await?;
                (customer, history)
            });
        Ok(customer.map(|customer| CustomerDetail {
            snapshot,
            customer,
            history,
        }))
    }

    async fn customers(&self, query: &CustomerQuery) -> Result<CustomerPage, ApiError> {
        let Some(snapshot) = self.snapshot().await? else {
            return Ok(CustomerPage {
                snapshot: None,
                customers: Vec::new(),
            });
        };
        let sql = list_sql(query);
        let filter = &query.filter;
        let customers: Vec<CustomerRow> = on_pool!(&self.store, |pool| {
            let mut q = sqlx::query_as(&sql).bind(snapshot.generation);
            if let Some(stage) = &filter.stage {
                q = q.bind(stage);
            }
            if let Some(tier) = &filter.tier {
                q = q.bind(tier);
            }
            if let Some(segment) = &filter.rfm_segment {
                q = q.bind(segment);
            }
            if let Some(min) = filter.min_net_revenue_minor {
                q = q.bind(min);
            }
            if let Some(after) = &query.after {
                q = q.bind(after);
            }
            q.bind(i64::from(query.limit)).fetch_all(pool).await?
        });
        Ok(CustomerPage {
            snapshot: Some(snapshot),
            customers,
        })
    }

    async fn ping(&self) -> Result<(), ApiError> {
        on_pool!(&self.store, |pool| {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    async fn kpis(&self, query: &KpiQuery) -> Result<KpiRows, ApiError> {
        self.kpi_rows(query).await
    }

    async fn position(&self) -> Result<u64, ApiError> {
        self.checkpoint().await
    }

    async fn outbox(&self, after_id: i64, limit: u32) -> Result<Vec<OutboxRow>, ApiError> {
        self.outbox_rows(after_id, limit).await
    }

    async fn active(&self) -> Result<Option<(Snapshot, Rules)>, ApiError> {
        self.active_generation().await
    }

    async fn stream(
        &self,
        customer_id: &CustomerId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, ApiError> {
        self.stream_page(customer_id, after_version, limit).await
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        Some(self.store.clone().into_dyn())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CustomerFilter;

    #[test]
    fn placeholders_follow_the_present_filters() {
        let query = CustomerQuery {
            filter: CustomerFilter {
                stage: Some("at_risk".into()),
                min_net_revenue_minor: Some(10),
                ..CustomerFilter::default()
            },
            after: Some("c-9".into()),
            limit: 8,
        };
        let sql = list_sql(&query);
        assert!(
            sql.ends_with(
                "generation = $1 AND stage = $2 AND net_revenue_minor >= $3 \
                 AND customer_id > $4 ORDER BY customer_id LIMIT $5"
            ),
            "{sql}"
        );
    }
}
