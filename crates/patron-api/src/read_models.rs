//! The query layer: a small trait over the read models, and its SQL implementation.
//!
//! PostgreSQL and SQLite share the SQL text (both take `$n` placeholders and `CAST(… AS TEXT)`);
//! each query is run on whichever pool the store has. Every query reads the active generation.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use patron_store_sql::SqlEventStore;

use patron_domain::CustomerId;
use patron_lifecycle::Rules;
use patron_proto::api::v1 as pb;
use sqlx::{FromRow as _, Row as _};
use std::sync::{Arc, Mutex};

use patron_store::{EventStore, RecordedEvent};

use crate::convert;
use crate::error::ApiError;
use crate::model::{
    ChangeHead, ChangeRecord, CustomerDetail, CustomerPage, CustomerQuery, CustomerRow, Forecast,
    ForecastModel, HistoryRow, KpiQuery, KpiRows, OutboxRow, PredictionRow, Snapshot,
    TierForecastRow,
};

/// Read access to the read models, as the API needs it.
#[async_trait]
pub trait ReadModels: Send + Sync + 'static {
    /// One customer of the active generation with its history; `None` when unknown.
    async fn customer(&self, customer_id: &str) -> Result<Option<CustomerDetail>, ApiError>;
    /// One customer as `GetCustomer` answers it, read at a checkpoint of at least
    /// `min_position` (the caller has waited until the read models reached it, so a fresh read
    /// is one; a cache must not serve anything older); `None` when unknown.
    async fn customer_on_wire(
        &self,
        customer_id: &str,
        min_position: u64,
    ) -> Result<Option<pb::Customer>, ApiError> {
        let _ = min_position;
        self.customer(customer_id)
            .await?
            .map(|detail| convert::customer_detail(&detail))
            .transpose()
    }
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
    /// The active generation's predictions summed by tier (empty without predictions).
    async fn forecast_by_tier(&self) -> Result<Forecast, ApiError> {
        Ok(Forecast::default())
    }
    /// Where the active generation's change feed is; `None` without an active generation (or
    /// without a feed).
    async fn change_head(&self) -> Result<Option<ChangeHead>, ApiError> {
        Ok(None)
    }
    /// The change records with ids in `(after_id, up_to]`, by id (pruned ones are missing).
    async fn changes(&self, after_id: i64, up_to: i64) -> Result<Vec<ChangeRecord>, ApiError> {
        let _ = (after_id, up_to);
        Ok(Vec::new())
    }
}

/// [`ReadModels`] over the store's database.
#[derive(Clone)]
pub struct SqlReadModels {
    store: SqlEventStore,
    /// The rules of the generation last seen active, parsed once: a generation's rules never
    /// change, and a new generation (or one recreated under a reused id) has a new creation time.
    rules: Arc<Mutex<Option<CachedRules>>>,
}

/// Parsed rules, and the generation they belong to.
struct CachedRules {
    generation: i64,
    created_at: DateTime<Utc>,
    rules: Arc<Rules>,
}

impl SqlReadModels {
    /// The read models in the store's database (sharing its pool).
    pub fn new(store: SqlEventStore) -> Self {
        Self {
            store,
            rules: Arc::new(Mutex::new(None)),
        }
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

const SNAPSHOT: &str = "SELECT a.generation, g.watermark, g.created_at, g.checkpoint \
     FROM projection_active a JOIN projection_generations g ON g.generation = a.generation";

/// The change feed's head, with the checkpoint and watermark as of it (one statement, so they
/// agree) and the CLV model version in force.
const CHANGE_HEAD: &str = "SELECT a.generation, g.checkpoint, g.watermark, a.changes_head, \
     (SELECT max(version) FROM clv_models) AS model_version \
     FROM projection_active a JOIN projection_generations g ON g.generation = a.generation";

const CHANGES: &str = "SELECT id, customer_ids FROM customer_changes \
     WHERE id > $1 AND id <= $2 ORDER BY id";

const RULES: &str = "SELECT rules FROM projection_generations WHERE generation = $1";

const CUSTOMER_COLUMNS: &str = "customer_id, stage, stage_since, orders, refunds, \
     gross_revenue_minor, refunded_minor, net_revenue_minor, average_order_minor, \
     first_purchase_at, last_purchase_at, last_event_at, rfm_r, rfm_f, rfm_m, rfm_segment, tier, \
     consents, merged_into";

/// One customer with its history, and the active generation, in one round trip: one row per
/// history entry (customer columns repeated), a row of NULLs when the customer is unknown. The
/// generation comes from a scalar subquery, so PostgreSQL plans both lookups as primary-key
/// scans whatever its statistics say (joining `projection_active` instead let a fresh database's
/// planner pick sequential scans of the history).
const CUSTOMER_DETAIL: &str = "SELECT g.generation, g.watermark, g.created_at, g.checkpoint, \
     c.customer_id, c.stage, c.stage_since, c.orders, c.refunds, c.gross_revenue_minor, \
     c.refunded_minor, c.net_revenue_minor, c.average_order_minor, c.first_purchase_at, \
     c.last_purchase_at, c.last_event_at, c.rfm_r, c.rfm_f, c.rfm_m, c.rfm_segment, c.tier, \
     c.consents, c.merged_into, h.seq, h.from_stage, h.to_stage, h.entered_at, h.rule, CAST(h.facts AS TEXT) AS facts, \
     p.model_version, m.evaluated_at AS model_evaluated_at, m.horizon_days, p.p_alive, \
     p.expected_purchases, p.expected_spend_minor, p.expected_revenue_minor, p.clv_minor \
     FROM projection_generations g \
     LEFT JOIN customers c ON c.generation = g.generation AND c.customer_id = $1 \
     LEFT JOIN stage_history h ON h.generation = g.generation AND h.customer_id = c.customer_id \
     LEFT JOIN clv_predictions p ON p.generation = g.generation AND p.customer_id = c.customer_id \
     LEFT JOIN clv_models m ON m.version = p.model_version \
     WHERE g.generation = (SELECT generation FROM projection_active) \
     ORDER BY h.seq";

/// The active generation's predictions summed by the customers' current tier.
const FORECAST_BY_TIER: &str = "SELECT coalesce(c.tier, '') AS tier, p.model_version, \
     count(*) AS customers, sum(p.expected_purchases) AS expected_purchases, \
     CAST(sum(p.expected_revenue_minor) AS BIGINT) AS expected_revenue_minor, \
     CAST(sum(p.clv_minor) AS BIGINT) AS clv_minor, sum(p.p_alive) AS expected_active \
     FROM clv_predictions p JOIN customers c \
       ON c.generation = p.generation AND c.customer_id = p.customer_id \
     WHERE p.generation = $1 GROUP BY coalesce(c.tier, ''), p.model_version";

const FORECAST_MODEL: &str =
    "SELECT version, horizon_days, evaluated_at FROM clv_models WHERE version = $1";

type SnapshotRow = (i64, Option<DateTime<Utc>>, DateTime<Utc>, i64);

impl SqlReadModels {
    async fn snapshot(&self) -> Result<Option<Snapshot>, ApiError> {
        Ok(self
            .active_generation()
            .await?
            .map(|(snapshot, _)| snapshot))
    }

    async fn active_generation(&self) -> Result<Option<(Snapshot, Arc<Rules>)>, ApiError> {
        let row: Option<SnapshotRow> = on_pool!(&self.store, |pool| {
            sqlx::query_as(SNAPSHOT).fetch_optional(pool).await?
        });
        let Some((generation, watermark, created_at, checkpoint)) = row else {
            return Ok(None);
        };
        let rules = self.rules_of(generation, created_at).await?;
        let snapshot = Snapshot {
            generation,
            currency: rules.currency.clone(),
            watermark,
            checkpoint: unsigned(checkpoint),
        };
        Ok(Some((snapshot, rules)))
    }

    /// The rules of a generation, from the cache or read and parsed once.
    async fn rules_of(
        &self,
        generation: i64,
        created_at: DateTime<Utc>,
    ) -> Result<Arc<Rules>, ApiError> {
        if let Ok(cached) = self.rules.lock()
            && let Some(cached) = cached.as_ref()
            && cached.generation == generation
            && cached.created_at == created_at
        {
            return Ok(Arc::clone(&cached.rules));
        }
        let text: Option<String> = on_pool!(&self.store, |pool| {
            sqlx::query_scalar(RULES)
                .bind(generation)
                .fetch_optional(pool)
                .await?
        });
        let text = text.ok_or_else(|| {
            ApiError::Unavailable(format!("generation {generation} was replaced meanwhile"))
        })?;
        let rules = Arc::new(
            patron_lifecycle::Rules::from_toml_str(&text).map_err(|error| {
                ApiError::Internal(format!("rules of generation {generation}: {error}"))
            })?,
        );
        if let Ok(mut cached) = self.rules.lock() {
            *cached = Some(CachedRules {
                generation,
                created_at,
                rules: Arc::clone(&rules),
            });
        }
        Ok(rules)
    }
}

/// The listing's SQL: one condition per present filter, numbered placeholders in bind order.
fn list_sql(query: &CustomerQuery) -> String {
    // A merged customer is counted by the one it was merged into.
    let mut sql = format!(
        "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE generation = $1 AND merged_into IS NULL"
    );
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
    if filter.consent_purpose.is_some() {
        // ' a b ' holds exactly the granted purposes (see patron_projector::Consents); purpose
        // names are lowercase letters, digits and _ . : - (only _ needs escaping for LIKE).
        condition(&mut sql, "consented LIKE '% ' ||");
        sql.push_str(" || ' %' ESCAPE '\\'");
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
        type Decoded = (
            SnapshotRow,
            Option<CustomerRow>,
            Vec<HistoryRow>,
            Option<PredictionRow>,
        );
        let decoded: Option<Decoded> = on_pool!(&self.store, |pool| {
            let rows = sqlx::query(CUSTOMER_DETAIL)
                .bind(customer_id)
                .fetch_all(pool)
                .await?;
            let mut decoded: Option<Decoded> = None;
            for row in &rows {
                let (_, customer, history, _) = match &mut decoded {
                    Some(decoded) => decoded,
                    None => {
                        let snapshot = (
                            row.try_get("generation")?,
                            row.try_get("watermark")?,
                            row.try_get("created_at")?,
                            row.try_get("checkpoint")?,
                        );
                        let present: Option<String> = row.try_get("customer_id")?;
                        let customer = match present {
                            Some(_) => Some(CustomerRow::from_row(row)?),
                            None => None,
                        };
                        let version: Option<i64> = row.try_get("model_version")?;
                        let prediction = match version {
                            Some(model_version) => Some(PredictionRow {
                                model_version,
                                evaluated_at: row.try_get("model_evaluated_at")?,
                                horizon_days: row.try_get("horizon_days")?,
                                p_alive: row.try_get("p_alive")?,
                                expected_purchases: row.try_get("expected_purchases")?,
                                expected_spend_minor: row.try_get("expected_spend_minor")?,
                                expected_revenue_minor: row.try_get("expected_revenue_minor")?,
                                clv_minor: row.try_get("clv_minor")?,
                            }),
                            None => None,
                        };
                        decoded.insert((snapshot, customer, Vec::new(), prediction))
                    }
                };
                let seq: Option<i32> = row.try_get("seq")?;
                if customer.is_some() && seq.is_some() {
                    history.push(HistoryRow::from_row(row)?);
                }
            }
            decoded
        });
        let Some((
            (generation, watermark, created_at, checkpoint),
            Some(customer),
            history,
            prediction,
        )) = decoded
        else {
            return Ok(None);
        };
        let rules = self.rules_of(generation, created_at).await?;
        let snapshot = Snapshot {
            generation,
            currency: rules.currency.clone(),
            watermark,
            checkpoint: unsigned(checkpoint),
        };
        Ok(Some(CustomerDetail {
            snapshot,
            customer,
            history,
            prediction,
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
            if let Some(purpose) = &filter.consent_purpose {
                q = q.bind(purpose.replace('_', "\\_"));
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
        Ok(self
            .active_generation()
            .await?
            .map(|(snapshot, rules)| (snapshot, Rules::clone(&rules))))
    }

    async fn stream(
        &self,
        customer_id: &CustomerId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, ApiError> {
        self.stream_page(customer_id, after_version, limit).await
    }

    async fn change_head(&self) -> Result<Option<ChangeHead>, ApiError> {
        type Row = (i64, i64, Option<DateTime<Utc>>, i64, Option<i64>);
        let row: Option<Row> = on_pool!(&self.store, |pool| {
            sqlx::query_as(CHANGE_HEAD).fetch_optional(pool).await?
        });
        Ok(row.map(
            |(generation, checkpoint, watermark, changes_head, model_version)| ChangeHead {
                generation,
                checkpoint: unsigned(checkpoint),
                watermark,
                changes_head,
                model_version,
            },
        ))
    }

    async fn changes(&self, after_id: i64, up_to: i64) -> Result<Vec<ChangeRecord>, ApiError> {
        match &self.store {
            SqlEventStore::Postgres(store) => {
                let rows: Vec<(i64, Option<Vec<String>>)> = sqlx::query_as(CHANGES)
                    .bind(after_id)
                    .bind(up_to)
                    .fetch_all(store.pool())
                    .await
                    .map_err(ApiError::from)?;
                Ok(rows
                    .into_iter()
                    .map(|(id, customer_ids)| ChangeRecord { id, customer_ids })
                    .collect())
            }
            SqlEventStore::Sqlite(store) => {
                let rows: Vec<(i64, Option<String>)> = sqlx::query_as(CHANGES)
                    .bind(after_id)
                    .bind(up_to)
                    .fetch_all(store.pool())
                    .await
                    .map_err(ApiError::from)?;
                rows.into_iter()
                    .map(|(id, ids)| {
                        let customer_ids = ids
                            .map(|text| serde_json::from_str::<Vec<String>>(&text))
                            .transpose()
                            .map_err(|e| {
                                ApiError::Internal(format!("customer_changes {id}: {e}"))
                            })?;
                        Ok(ChangeRecord { id, customer_ids })
                    })
                    .collect()
            }
        }
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        Some(self.store.clone().into_dyn())
    }

    async fn forecast_by_tier(&self) -> Result<Forecast, ApiError> {
        let Some(snapshot) = self.snapshot().await? else {
            return Ok(Forecast::default());
        };
        let tiers: Vec<TierForecastRow> = on_pool!(&self.store, |pool| {
            sqlx::query_as(FORECAST_BY_TIER)
                .bind(snapshot.generation)
                .fetch_all(pool)
                .await?
        });
        // A fit replaces every prediction in one transaction, so they share one version.
        let model = match tiers.first() {
            Some(first) => on_pool!(&self.store, |pool| {
                sqlx::query_as::<_, ForecastModel>(FORECAST_MODEL)
                    .bind(first.model_version)
                    .fetch_optional(pool)
                    .await?
            }),
            None => None,
        };
        Ok(Forecast {
            snapshot: Some(snapshot),
            model,
            tiers,
        })
    }
}

/// A non-negative database integer (positions are checked `>= 0` by the schema).
fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
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
                "generation = $1 AND merged_into IS NULL AND stage = $2 \
                 AND net_revenue_minor >= $3 AND customer_id > $4 ORDER BY customer_id LIMIT $5"
            ),
            "{sql}"
        );
    }
}
