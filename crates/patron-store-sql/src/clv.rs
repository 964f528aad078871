//! Predictive-CLV storage: [`patron_projector::clv::ClvStore`] on PostgreSQL and SQLite, in the
//! same database as the read models. Schema: `migrations/<backend>/0003_clv.sql`.
//!
//! Storing a model locks the active generation (`FOR SHARE` on PostgreSQL, `BEGIN IMMEDIATE` on
//! SQLite), so a rebuild cannot swap generations between the check and the write: predictions
//! are only ever written for the generation that is active when they commit. The same
//! transaction deletes every older prediction, including those of retired generations.

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use patron_clv::{BgNbdParams, GammaGammaParams, PurchaseSummary};
use patron_domain::CustomerId;
use patron_projector::clv::{ClvStore, FitFailure, FittedModel, ModelVersion, Prediction};
use patron_projector::{GenerationId, Purchases, ReadModelError};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

use crate::error::map;

/// Model versions and predictions on either backend.
#[derive(Clone)]
pub enum SqlClvStore {
    /// PostgreSQL.
    Postgres(PgPool),
    /// SQLite.
    Sqlite(SqlitePool),
}

fn db(error: sqlx::Error) -> ReadModelError {
    ReadModelError::Store(map(error))
}

/// The part of a stored view a fit reads.
#[derive(Deserialize)]
struct StoredPurchases {
    #[serde(default)]
    purchases: Purchases,
}

fn summary(
    customer_id: String,
    state: &str,
) -> Result<(CustomerId, PurchaseSummary), ReadModelError> {
    let id = CustomerId::parse(&customer_id)
        .map_err(|e| ReadModelError::Corrupt(format!("customer id {customer_id:?}: {e}")))?;
    let stored: StoredPurchases = serde_json::from_str(state)
        .map_err(|e| ReadModelError::Corrupt(format!("view of {customer_id}: {e}")))?;
    Ok((id, stored.purchases.summary))
}

fn text_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, ReadModelError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| ReadModelError::Corrupt(format!("timestamp {text:?}: {e}")))
}

fn count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn uncount(value: i64, what: &str) -> Result<u64, ReadModelError> {
    u64::try_from(value).map_err(|_| ReadModelError::Corrupt(format!("negative {what} {value}")))
}

/// `clv_models` columns after `version`, `fitted_at` and `evaluated_at`, in this order.
const MODEL_COLUMNS: &str = "version, fitted_at, evaluated_at, generation, customers, \
     repeat_buyers, bgnbd_r, bgnbd_alpha, bgnbd_a, bgnbd_b, bgnbd_log_likelihood, gg_p, gg_q, \
     gg_gamma, spend_note, horizon_days, annual_discount_rate";

/// A `clv_models` row, times decoded per backend.
type ModelRow = (
    i64,
    i64,
    i64,
    f64,
    f64,
    f64,
    f64,
    f64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<String>,
    i32,
    f64,
);

fn decode_model(
    version: i64,
    fitted_at: DateTime<Utc>,
    evaluated_at: DateTime<Utc>,
    row: ModelRow,
) -> Result<ModelVersion, ReadModelError> {
    let (
        generation,
        customers,
        repeat_buyers,
        r,
        alpha,
        a,
        b,
        ll,
        p,
        q,
        gamma,
        note,
        horizon,
        rate,
    ) = row;
    let gamma_gamma = match (p, q, gamma) {
        (Some(p), Some(q), Some(gamma)) => Some(GammaGammaParams { p, q, gamma }),
        _ => None,
    };
    Ok(ModelVersion {
        version,
        model: FittedModel {
            fitted_at,
            generation,
            evaluated_at,
            customers: uncount(customers, "customer count")?,
            repeat_buyers: uncount(repeat_buyers, "repeat buyer count")?,
            bgnbd: BgNbdParams { r, alpha, a, b },
            bgnbd_log_likelihood: ll,
            gamma_gamma,
            spend_note: note,
            horizon_days: u32::try_from(horizon)
                .map_err(|_| ReadModelError::Corrupt(format!("horizon of {horizon} days")))?,
            annual_discount_rate: rate,
        },
    })
}

/// Not the active generation any more (or none is active).
fn superseded(generation: GenerationId, active: Option<i64>) -> Result<(), ReadModelError> {
    if active == Some(generation) {
        Ok(())
    } else {
        Err(ReadModelError::Superseded(generation))
    }
}

#[async_trait]
impl ClvStore for SqlClvStore {
    async fn purchase_summaries(
        &self,
        generation: GenerationId,
    ) -> Result<Vec<(CustomerId, PurchaseSummary)>, ReadModelError> {
        // Customers without an order have an empty summary: not worth parsing. A merged
        // customer's purchases are in the customer it was merged into.
        const SQL: &str = "SELECT customer_id, state FROM customers \
             WHERE generation = $1 AND orders > 0 AND merged_into IS NULL";
        let rows: Vec<(String, String)> = match self {
            Self::Postgres(pool) => sqlx::query_as(SQL).bind(generation).fetch_all(pool).await,
            Self::Sqlite(pool) => sqlx::query_as(SQL).bind(generation).fetch_all(pool).await,
        }
        .map_err(db)?;
        rows.into_iter()
            .map(|(id, state)| summary(id, &state))
            .collect()
    }

    async fn latest_model(&self) -> Result<Option<ModelVersion>, ReadModelError> {
        match self {
            Self::Postgres(pool) => {
                let sql =
                    format!("SELECT {MODEL_COLUMNS} FROM clv_models ORDER BY version DESC LIMIT 1");
                let row: Option<sqlx::postgres::PgRow> =
                    sqlx::query(&sql).fetch_optional(pool).await.map_err(db)?;
                let Some(row) = row else { return Ok(None) };
                use sqlx::Row as _;
                let version: i64 = row.try_get(0).map_err(db)?;
                let fitted_at: DateTime<Utc> = row.try_get(1).map_err(db)?;
                let evaluated_at: DateTime<Utc> = row.try_get(2).map_err(db)?;
                let rest = model_rest_pg(&row)?;
                decode_model(version, fitted_at, evaluated_at, rest).map(Some)
            }
            Self::Sqlite(pool) => {
                let sql =
                    format!("SELECT {MODEL_COLUMNS} FROM clv_models ORDER BY version DESC LIMIT 1");
                let row: Option<sqlx::sqlite::SqliteRow> =
                    sqlx::query(&sql).fetch_optional(pool).await.map_err(db)?;
                let Some(row) = row else { return Ok(None) };
                use sqlx::Row as _;
                let version: i64 = row.try_get(0).map_err(db)?;
                let fitted_at: String = row.try_get(1).map_err(db)?;
                let evaluated_at: String = row.try_get(2).map_err(db)?;
                let rest = model_rest_sqlite(&row)?;
                decode_model(
                    version,
                    parse_time(&fitted_at)?,
                    parse_time(&evaluated_at)?,
                    rest,
                )
                .map(Some)
            }
        }
    }

    async fn store_model(
        &self,
        model: &FittedModel,
        predictions: &[Prediction],
    ) -> Result<i64, ReadModelError> {
        let gg = model.gamma_gamma;
        let b = &model.bgnbd;
        match self {
            Self::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(db)?;
                let active: Option<i64> =
                    sqlx::query_scalar("SELECT generation FROM projection_active FOR SHARE")
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db)?;
                superseded(model.generation, active)?;
                let version: i64 = sqlx::query_scalar(
                    "INSERT INTO clv_models (version, fitted_at, evaluated_at, generation, \
                        customers, repeat_buyers, bgnbd_r, bgnbd_alpha, bgnbd_a, bgnbd_b, \
                        bgnbd_log_likelihood, gg_p, gg_q, gg_gamma, spend_note, horizon_days, \
                        annual_discount_rate) \
                     SELECT coalesce(max(version), 0) + 1, $1, $2, $3, $4, $5, $6, $7, $8, $9, \
                        $10, $11, $12, $13, $14, $15, $16 FROM clv_models RETURNING version",
                )
                .bind(model.fitted_at)
                .bind(model.evaluated_at)
                .bind(model.generation)
                .bind(count(model.customers))
                .bind(count(model.repeat_buyers))
                .bind(b.r)
                .bind(b.alpha)
                .bind(b.a)
                .bind(b.b)
                .bind(model.bgnbd_log_likelihood)
                .bind(gg.map(|g| g.p))
                .bind(gg.map(|g| g.q))
                .bind(gg.map(|g| g.gamma))
                .bind(model.spend_note.as_deref())
                .bind(i32::try_from(model.horizon_days).unwrap_or(i32::MAX))
                .bind(model.annual_discount_rate)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
                sqlx::query("DELETE FROM clv_predictions")
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                for chunk in predictions.chunks(50_000) {
                    sqlx::query(
                        "INSERT INTO clv_predictions (generation, model_version, customer_id, \
                            p_alive, expected_purchases, expected_spend_minor, \
                            expected_revenue_minor, clv_minor) \
                         SELECT $1, $2, * FROM UNNEST($3::text[], $4::float8[], $5::float8[], \
                            $6::int8[], $7::int8[], $8::int8[])",
                    )
                    .bind(model.generation)
                    .bind(version)
                    .bind(
                        chunk
                            .iter()
                            .map(|p| p.customer_id.as_str())
                            .collect::<Vec<_>>(),
                    )
                    .bind(chunk.iter().map(|p| p.p_alive).collect::<Vec<_>>())
                    .bind(
                        chunk
                            .iter()
                            .map(|p| p.expected_purchases)
                            .collect::<Vec<_>>(),
                    )
                    .bind(
                        chunk
                            .iter()
                            .map(|p| p.expected_spend_minor)
                            .collect::<Vec<_>>(),
                    )
                    .bind(
                        chunk
                            .iter()
                            .map(|p| p.expected_revenue_minor)
                            .collect::<Vec<_>>(),
                    )
                    .bind(chunk.iter().map(|p| p.clv_minor).collect::<Vec<_>>())
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                }
                tx.commit().await.map_err(db)?;
                Ok(version)
            }
            Self::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
                let active: Option<i64> =
                    sqlx::query_scalar("SELECT generation FROM projection_active")
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db)?;
                superseded(model.generation, active)?;
                let version: i64 = sqlx::query_scalar(
                    "INSERT INTO clv_models (version, fitted_at, evaluated_at, generation, \
                        customers, repeat_buyers, bgnbd_r, bgnbd_alpha, bgnbd_a, bgnbd_b, \
                        bgnbd_log_likelihood, gg_p, gg_q, gg_gamma, spend_note, horizon_days, \
                        annual_discount_rate) \
                     SELECT coalesce(max(version), 0) + 1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
                        ?10, ?11, ?12, ?13, ?14, ?15, ?16 FROM clv_models RETURNING version",
                )
                .bind(text_time(model.fitted_at))
                .bind(text_time(model.evaluated_at))
                .bind(model.generation)
                .bind(count(model.customers))
                .bind(count(model.repeat_buyers))
                .bind(b.r)
                .bind(b.alpha)
                .bind(b.a)
                .bind(b.b)
                .bind(model.bgnbd_log_likelihood)
                .bind(gg.map(|g| g.p))
                .bind(gg.map(|g| g.q))
                .bind(gg.map(|g| g.gamma))
                .bind(model.spend_note.as_deref())
                .bind(i64::from(model.horizon_days))
                .bind(model.annual_discount_rate)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
                sqlx::query("DELETE FROM clv_predictions")
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                for chunk in predictions.chunks(20_000) {
                    let rows: Vec<Value> = chunk
                        .iter()
                        .map(|p| {
                            json!([
                                p.customer_id.as_str(),
                                p.p_alive,
                                p.expected_purchases,
                                p.expected_spend_minor,
                                p.expected_revenue_minor,
                                p.clv_minor
                            ])
                        })
                        .collect();
                    sqlx::query(
                        "INSERT INTO clv_predictions (generation, model_version, customer_id, \
                            p_alive, expected_purchases, expected_spend_minor, \
                            expected_revenue_minor, clv_minor) \
                         SELECT ?2, ?3, value ->> 0, value ->> 1, value ->> 2, value ->> 3, \
                            value ->> 4, value ->> 5 FROM json_each(?1)",
                    )
                    .bind(Value::Array(rows).to_string())
                    .bind(model.generation)
                    .bind(version)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                }
                tx.commit().await.map_err(db)?;
                Ok(version)
            }
        }
    }

    async fn record_failure(&self, failure: &FitFailure) -> Result<(), ReadModelError> {
        const SQL: &str = "INSERT INTO clv_fit_failures (attempted_at, generation, evaluated_at, \
             customers, reason) VALUES ($1, $2, $3, $4, $5)";
        match self {
            Self::Postgres(pool) => sqlx::query(SQL)
                .bind(failure.attempted_at)
                .bind(failure.generation)
                .bind(failure.evaluated_at)
                .bind(count(failure.customers))
                .bind(&failure.reason)
                .execute(pool)
                .await
                .map(|_| ()),
            Self::Sqlite(pool) => sqlx::query(SQL)
                .bind(text_time(failure.attempted_at))
                .bind(failure.generation)
                .bind(failure.evaluated_at.map(text_time))
                .bind(count(failure.customers))
                .bind(&failure.reason)
                .execute(pool)
                .await
                .map(|_| ()),
        }
        .map_err(db)?;
        Ok(())
    }

    async fn prediction_count(&self, generation: GenerationId) -> Result<u64, ReadModelError> {
        const SQL: &str = "SELECT count(*) FROM clv_predictions WHERE generation = $1";
        let n: i64 = match self {
            Self::Postgres(pool) => {
                sqlx::query_scalar(SQL)
                    .bind(generation)
                    .fetch_one(pool)
                    .await
            }
            Self::Sqlite(pool) => {
                sqlx::query_scalar(SQL)
                    .bind(generation)
                    .fetch_one(pool)
                    .await
            }
        }
        .map_err(db)?;
        uncount(n, "prediction count")
    }
}

macro_rules! model_rest {
    ($name:ident, $row:ty, $horizon:ty) => {
        /// The columns of a `clv_models` row after the version and the two times.
        fn $name(row: &$row) -> Result<ModelRow, ReadModelError> {
            use sqlx::Row as _;
            let horizon: $horizon = row.try_get(15).map_err(db)?;
            Ok((
                row.try_get(3).map_err(db)?,
                row.try_get(4).map_err(db)?,
                row.try_get(5).map_err(db)?,
                row.try_get(6).map_err(db)?,
                row.try_get(7).map_err(db)?,
                row.try_get(8).map_err(db)?,
                row.try_get(9).map_err(db)?,
                row.try_get(10).map_err(db)?,
                row.try_get(11).map_err(db)?,
                row.try_get(12).map_err(db)?,
                row.try_get(13).map_err(db)?,
                row.try_get(14).map_err(db)?,
                i32::try_from(horizon)
                    .map_err(|_| ReadModelError::Corrupt(format!("horizon {horizon}")))?,
                row.try_get(16).map_err(db)?,
            ))
        }
    };
}
model_rest!(model_rest_sqlite, sqlx::sqlite::SqliteRow, i64);
model_rest!(model_rest_pg, sqlx::postgres::PgRow, i32);
