//! Test helpers: a fresh, isolated store per test on either backend.
//!
//! PostgreSQL tests each get their own schema in the database named by
//! `PATRON_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`), so they can run
//! in parallel; schemas older than an hour are dropped on the way. SQLite tests get a file in a
//! temporary directory that is removed with the returned guard.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection};

use crate::{ConnectOptions, PgEventStore, SqliteEventStore};

/// The default test database.
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The PostgreSQL URL tests use.
pub fn postgres_url() -> String {
    std::env::var("PATRON_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.into())
}

/// Creates an empty schema and returns sqlx options whose `search_path` points at it.
pub async fn fresh_postgres_schema() -> PgConnectOptions {
    let url = postgres_url();
    let mut admin = PgConnection::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is needed for this test and is not reachable at {url}: {e}\n\
             Start one (e.g. `make postgres` prints how) or set PATRON_TEST_DATABASE_URL."
        )
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    // Sweep schemas that earlier (possibly crashed) runs left behind.
    let stale: Vec<String> = sqlx::query_scalar(
        "SELECT nspname FROM pg_namespace WHERE nspname ~ '^patron_t_[0-9]+_' \
         AND split_part(nspname, '_', 3)::bigint < $1",
    )
    .bind(i64::try_from(now).unwrap_or(i64::MAX) - 3600)
    .fetch_all(&mut admin)
    .await
    .expect("list stale test schemas");
    for schema in stale {
        let _ = admin
            .execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
            .await;
    }
    let schema = format!("patron_t_{now}_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .expect("create test schema");
    PgConnectOptions::from_str(&url)
        .expect("valid test database URL")
        .options([("search_path", schema.as_str())])
}

/// A migrated PostgreSQL event store in a schema of its own.
pub async fn fresh_postgres() -> PgEventStore {
    let store = PgEventStore::connect_with(fresh_postgres_schema().await, 16)
        .await
        .expect("connect to the test schema");
    store.migrate().await.expect("migrate the test schema");
    store
}

/// A migrated SQLite event store in a temporary directory (removed when the guard drops).
pub async fn fresh_sqlite() -> (SqliteEventStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("events.db").display());
    let store = SqliteEventStore::connect(&ConnectOptions::new(url))
        .await
        .expect("open the test database");
    store.migrate().await.expect("migrate the test database");
    (store, dir)
}

/// Purchases of `customers` customers drawn (seeded) from a BG/NBD population
/// (r = 0.25, α = 4 weeks, a = 0.8, b = 2.5), in time order from `start`: twelve monthly
/// cohorts, each customer's repeat purchases spread evenly up to its last one, amounts (USD) that
/// vary between and within customers. Demo traffic does not look like BG/NBD (its maximum
/// likelihood lies on the boundary, with no dropout), so tests of fitting use this.
pub fn clv_population(
    customers: usize,
    start: chrono::DateTime<chrono::Utc>,
    seed: u64,
) -> Vec<patron_domain::Event> {
    use chrono::TimeDelta;
    use patron_domain::{Currency, CustomerId, Event, EventBody, Money, Purchase};

    let truth = patron_clv::BgNbdParams {
        r: 0.25,
        alpha: 4.0,
        a: 0.8,
        b: 2.5,
    };
    let usd = Currency::from_code("USD").expect("USD is a currency");
    let mut events = Vec::new();
    let cohorts = 12;
    for cohort in 0..cohorts {
        let first = start + TimeDelta::days(30 * cohort as i64);
        let age_days = 365 - 30 * cohort as i64;
        let size = customers / cohorts + usize::from(cohort < customers % cohorts);
        let drawn = patron_clv::simulate(&truth, size, age_days as f64 / 7.0, seed + cohort as u64)
            .expect("valid simulation parameters");
        for (k, c) in drawn.iter().enumerate() {
            let i = (k * cohorts + cohort) as i64;
            let id = CustomerId::parse(&format!("s-{i:06}")).expect("a valid customer id");
            #[expect(clippy::cast_possible_truncation, reason = "days within a year")]
            let last = ((c.recency * 7.0).round() as i64).min(age_days);
            let repeats = i64::from(c.frequency).min(last);
            let scale = 1_000 + (i * 7_919) % 9_000;
            for n in 0..=repeats {
                let day = if n == 0 { 0 } else { last * n / repeats };
                let amount = if n == 0 {
                    2_000
                } else {
                    scale * (50 + (i * 31 + n * 17) % 100) / 100
                };
                let n_events = events.len() as u128;
                events.push(Event {
                    event_id: uuid::Uuid::from_u128((u128::from(seed) << 64) | n_events),
                    customer_id: id.clone(),
                    occurred_at: first + TimeDelta::days(day) + TimeDelta::hours(10),
                    source: "clv-population".into(),
                    body: EventBody::Purchase(Purchase {
                        order_id: format!("{id}-{n}"),
                        amount: Money::new(amount, usd).expect("a valid amount"),
                        items: Vec::new(),
                        extra: Default::default(),
                    }),
                });
            }
        }
    }
    events.sort_by(|x, y| {
        (x.occurred_at, x.customer_id.as_str()).cmp(&(y.occurred_at, y.customer_id.as_str()))
    });
    events
}
