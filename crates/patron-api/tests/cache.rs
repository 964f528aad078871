//! The GetCustomer cache over real read models, on SQLite and PostgreSQL: customers the
//! projector writes are dropped from the cache (its commits record them), a request with
//! `min_position` never gets older data than asked for, and a rebuild drops everything.
//!
//! The database is changed behind the projector's back (a direct UPDATE, which records no
//! change) to tell a cached answer from a fresh one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use patron_api::{CacheConfig, CachedReadModels, ReadModels, SqlReadModels};
use patron_lifecycle::Rules;
use patron_projector::{ProjectorConfig, RebuildOptions, rebuild};
use patron_store_sql::SqlEventStore;
use support::{Db, visit};

async fn execute(db: &Db, sql: &str) {
    match &db.sql {
        SqlEventStore::Postgres(s) => sqlx::query(sql).execute(s.pool()).await.map(|_| ()),
        SqlEventStore::Sqlite(s) => sqlx::query(sql).execute(s.pool()).await.map(|_| ()),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Changes a customer's order count without the projector: no change record.
async fn tamper(db: &Db, customer: &str) {
    execute(
        db,
        &format!("UPDATE customers SET orders = orders + 1000 WHERE customer_id = '{customer}'"),
    )
    .await;
}

/// The customer as GetCustomer answers it (what the cache holds).
async fn answer(
    models: &dyn ReadModels,
    customer: &str,
    min_position: u64,
) -> patron_proto::api::v1::Customer {
    models
        .customer_on_wire(customer, min_position)
        .await
        .unwrap()
        .unwrap()
}

async fn orders(models: &dyn ReadModels, customer: &str, min_position: u64) -> i64 {
    answer(models, customer, min_position)
        .await
        .value
        .unwrap()
        .orders
}

async fn last_event(models: &dyn ReadModels, customer: &str, min_position: u64) -> DateTime<Utc> {
    let at = answer(models, customer, min_position)
        .await
        .last_event_at
        .unwrap();
    DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).unwrap()).unwrap()
}

/// Waits until the cache serves what it read (its feed applied once, so inserts are kept): one
/// probe customer at a time is read, tampered with and read again, until one answers from the
/// cache. A probe whose tampered row got cached (read before the cache was live) stays so, which
/// is why each attempt takes the next probe.
async fn until_live(models: &dyn ReadModels, db: &Db, inner: &dyn ReadModels, probes: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for probe in probes.iter().cycle() {
        let truth = orders(inner, probe, 0).await;
        let _ = orders(models, probe, 0).await;
        tamper(db, probe).await;
        let answer = orders(models, probe, 0).await;
        execute(
            db,
            &format!("UPDATE customers SET orders = {truth} WHERE customer_id = '{probe}'"),
        )
        .await;
        if answer == truth {
            return;
        }
        assert!(Instant::now() < deadline, "the cache never went live");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads `customer` until the answer is served from the cache (the tampered count does not
/// show), or fails after a few seconds. Call once the cache is live ([`until_live`]): before,
/// the tampered row itself can be cached, and then never shows the truth again.
async fn until_cached(models: &dyn ReadModels, db: &Db, customer: &str, truth: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Read (and so insert) the true value, then tamper and look again.
        execute(
            db,
            &format!("UPDATE customers SET orders = {truth} WHERE customer_id = '{customer}'"),
        )
        .await;
        let _ = orders(models, customer, 0).await;
        tamper(db, customer).await;
        if orders(models, customer, 0).await == truth {
            return;
        }
        assert!(Instant::now() < deadline, "{customer} never got cached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn cache_follows_the_projector(db: Db) {
    db.fill(30).await;
    let inner: Arc<dyn ReadModels> = Arc::new(SqlReadModels::new(db.sql.clone()));
    let models = CachedReadModels::wrap(
        inner.clone(),
        CacheConfig {
            capacity: 1_000,
            refresh: Duration::from_millis(20),
        },
    );
    let ids = db
        .strings("SELECT customer_id FROM customers ORDER BY net_revenue_minor DESC, customer_id")
        .await;
    let (x, y) = (ids[0].clone(), ids[1].clone());
    let x_orders = orders(inner.as_ref(), &x, 0).await;
    let y_orders = orders(inner.as_ref(), &y, 0).await;
    until_live(models.as_ref(), &db, inner.as_ref(), &ids[2..]).await;
    until_cached(models.as_ref(), &db, &x, x_orders).await;
    until_cached(models.as_ref(), &db, &y, y_orders).await;
    assert_eq!(orders(inner.as_ref(), &x, 0).await, x_orders + 1000);

    // The projector writes x (not y): x's row is rewritten from its view, and recorded. Only
    // the change feed can make the cache let go of x's old answer (nothing else reads it).
    let before = last_event(models.as_ref(), &x, 0).await;
    let at = before + chrono::TimeDelta::days(1);
    let head = db.append(&[visit(&x, at)]).await;
    db.project().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while last_event(models.as_ref(), &x, 0).await != at {
        assert!(
            Instant::now() < deadline,
            "x was never dropped from the cache"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        orders(models.as_ref(), &x, 0).await,
        x_orders,
        "x read afresh"
    );
    // The feed is applied up to the visit now. y was not written: it is still answered from
    // memory, not from the tampered row.
    assert_eq!(orders(models.as_ref(), &y, head).await, y_orders);

    // Read-your-writes: asked for a position, the answer is at least that fresh at once.
    let later = at + chrono::TimeDelta::hours(1);
    let head = db.append(&[visit(&x, later)]).await;
    db.project().await;
    assert_eq!(last_event(models.as_ref(), &x, head).await, later);

    // A rebuild swaps in a new generation: everything is dropped.
    let store = db.sql.clone().into_dyn();
    let config = ProjectorConfig::new(Rules::default(), Rules::example_toml());
    rebuild(
        store,
        db.sql.read_models(),
        &config,
        RebuildOptions::default(),
        &mut |_| {},
    )
    .await
    .unwrap();
    tamper(&db, &y).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while orders(models.as_ref(), &y, 0).await != y_orders + 1000 {
        assert!(
            Instant::now() < deadline,
            "the rebuild did not drop the cache"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_follows_the_projector_on_sqlite() {
    cache_follows_the_projector(Db::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_follows_the_projector_on_postgres() {
    cache_follows_the_projector(Db::postgres().await).await;
}
