//! Predictive CLV over the SQL read models: fits store versions with predictions, a rejected fit
//! keeps the previous version, and a rebuilt generation gets its own predictions. Both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use patron_clv::TimeUnit;
use patron_domain::{Event, ValidationPolicy};
use patron_lifecycle::Rules;
use patron_projector::clv::{ClvStore, FitConfig, FitError, fit_and_store};
use patron_projector::{LiveProjection, ProjectorConfig, ReadModelStore, RebuildOptions, rebuild};
use patron_store::{AppendBatch, EventStore, ExpectedVersion};
use patron_store_sql::SqlEventStore;
use patron_store_sql::testing::{clv_population, fresh_postgres, fresh_sqlite};

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
}

fn demo_year(customers: usize) -> Vec<Event> {
    let mut generator = patron_demo::Generator::new(7, customers, start());
    let policy = ValidationPolicy::at(start() + TimeDelta::days(400));
    patron_demo::into_events(generator.until(start() + TimeDelta::days(365)), &policy)
}

/// Demo traffic and BG/NBD-like buyers together.
fn history() -> Vec<Event> {
    let mut events = demo_year(40);
    events.extend(clv_population(600, start(), 3));
    events.sort_by_key(|e| e.occurred_at);
    events
}

async fn append(store: &dyn EventStore, events: &[Event]) {
    for chunk in events.chunks(200) {
        let mut batch = AppendBatch::default();
        for event in chunk {
            batch.streams.push(patron_store::StreamAppend {
                customer_id: event.customer_id.clone(),
                expected: ExpectedVersion::Any,
                events: vec![event.clone()],
            });
        }
        store.append(&batch).await.expect("append demo events");
    }
}

fn config() -> ProjectorConfig {
    let mut config = ProjectorConfig::new(Rules::default(), Rules::example_toml());
    config.batch = 1_000;
    config
}

/// `(customer, model_version, p_alive, expected_purchases, clv_minor)` of a generation.
type Row = (String, i64, f64, f64, Option<i64>);

async fn predictions(sql: &SqlEventStore, generation: i64) -> Vec<Row> {
    const SQL: &str = "SELECT customer_id, model_version, p_alive, expected_purchases, clv_minor \
         FROM clv_predictions WHERE generation = $1 ORDER BY customer_id";
    match sql {
        SqlEventStore::Postgres(s) => {
            sqlx::query_as(SQL)
                .bind(generation)
                .fetch_all(s.pool())
                .await
        }
        SqlEventStore::Sqlite(s) => {
            sqlx::query_as(SQL)
                .bind(generation)
                .fetch_all(s.pool())
                .await
        }
    }
    .unwrap()
}

async fn failures(sql: &SqlEventStore) -> Vec<String> {
    const SQL: &str = "SELECT reason FROM clv_fit_failures ORDER BY id";
    match sql {
        SqlEventStore::Postgres(s) => sqlx::query_scalar(SQL).fetch_all(s.pool()).await,
        SqlEventStore::Sqlite(s) => sqlx::query_scalar(SQL).fetch_all(s.pool()).await,
    }
    .unwrap()
}

/// The `model_version` fact of every stored probability-alive transition (any generation).
async fn p_alive_transitions(sql: &SqlEventStore) -> Vec<String> {
    const SQL: &str = "SELECT CAST(facts AS TEXT) FROM stage_history WHERE rule LIKE 'p_alive%'";
    let facts: Vec<String> = match sql {
        SqlEventStore::Postgres(s) => sqlx::query_scalar(SQL).fetch_all(s.pool()).await,
        SqlEventStore::Sqlite(s) => sqlx::query_scalar(SQL).fetch_all(s.pool()).await,
    }
    .unwrap();
    facts
        .iter()
        .map(|text| {
            let facts: serde_json::Value = serde_json::from_str(text).unwrap();
            facts["model_version"].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn fits_store_versions_and_a_rejected_fit_keeps_the_previous_one(sql: SqlEventStore) {
    let store: Arc<dyn EventStore> = sql.clone().into_dyn();
    let models: Arc<dyn ReadModelStore> = sql.read_models();
    let clv: Arc<dyn ClvStore> = sql.clv_store();
    let fit = FitConfig::default();
    let now = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();

    // Nothing to fit yet: rejected, recorded, no version.
    let error = fit_and_store(models.as_ref(), clv.as_ref(), &fit, now)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, FitError::Rejected { kept: None, reason } if reason.contains("no read models")),
        "{error}"
    );
    assert_eq!(failures(&sql).await.len(), 1);
    assert!(clv.latest_model().await.unwrap().is_none());

    append(store.as_ref(), &history()).await;
    let mut live = LiveProjection::open(store.clone(), models.clone(), config())
        .await
        .unwrap();
    while !live.step().await.unwrap().caught_up {}
    let generation = live.generation().id;
    let watermark = live.projection().watermark().unwrap();
    let buyers: Vec<_> = live
        .projection()
        .customers()
        .iter()
        .filter(|(_, view)| !view.purchases.summary.is_empty())
        .map(|(id, view)| (id.clone(), view.purchases.summary.clone()))
        .collect();
    assert!(buyers.len() > 600, "{} buyers", buyers.len());

    let first = fit_and_store(models.as_ref(), clv.as_ref(), &fit, now)
        .await
        .unwrap();
    assert_eq!(first.version, 1);
    assert_eq!(first.model.generation, generation);
    assert_eq!(
        first.model.evaluated_at, watermark,
        "evaluated at the watermark"
    );
    assert_eq!(first.model.customers, buyers.len() as u64);
    assert_eq!(
        clv.latest_model().await.unwrap().as_ref(),
        Some(&first),
        "stored as returned"
    );
    let rows = predictions(&sql, generation).await;
    assert_eq!(rows.len(), buyers.len(), "one prediction per buyer");
    assert!(
        rows.iter().all(|row| row.1 == 1),
        "every prediction says version 1"
    );
    // Each stored probability is the model's, recomputed here from the customer's summary.
    let at = watermark.date_naive();
    for ((id, summary), row) in buyers.iter().zip(&rows) {
        assert_eq!(id.as_str(), row.0);
        let observation = summary.observation(at, TimeUnit::Weeks).unwrap();
        let p_alive = first.model.bgnbd.probability_alive(&observation);
        assert!(
            (p_alive - row.2).abs() < 1e-12,
            "{id}: {p_alive} vs {}",
            row.2
        );
        let expected = first
            .model
            .bgnbd
            .expected_purchases(f64::from(fit.horizon_days) / 7.0, &observation)
            .unwrap();
        assert!((expected - row.3).abs() < 1e-9 * expected.max(1.0), "{id}");
    }
    if first.model.gamma_gamma.is_some() {
        assert!(rows.iter().all(|row| row.4.is_some()), "a CLV for everyone");
    } else {
        assert!(
            first.model.spend_note.is_some(),
            "says why there is no spend model"
        );
    }

    let second = fit_and_store(
        models.as_ref(),
        clv.as_ref(),
        &fit,
        now + TimeDelta::hours(1),
    )
    .await
    .unwrap();
    assert_eq!(second.version, 2);
    let rows = predictions(&sql, generation).await;
    assert_eq!(rows.len(), buyers.len());
    assert!(
        rows.iter().all(|row| row.1 == 2),
        "predictions now say version 2"
    );

    // Asking for more customers than there are: rejected with the reason, version 2 stays.
    let strict = FitConfig {
        min_customers: 100_000,
        ..fit
    };
    let error = fit_and_store(models.as_ref(), clv.as_ref(), &strict, now)
        .await
        .unwrap_err();
    let FitError::Rejected { reason, kept } = &error else {
        panic!("expected a rejection, got {error}");
    };
    assert_eq!(*kept, Some(2));
    assert!(reason.contains("at least 100000"), "{reason}");
    assert!(
        error.to_string().contains("model version 2 stays in force"),
        "{error}"
    );
    assert_eq!(failures(&sql).await.last(), Some(reason));
    assert_eq!(
        clv.latest_model().await.unwrap().map(|m| m.version),
        Some(2)
    );
    assert!(
        predictions(&sql, generation)
            .await
            .iter()
            .all(|row| row.1 == 2)
    );

    // A rebuild swaps in a generation without predictions; the next fit predicts for it and
    // drops the old generation's.
    let report = rebuild(
        store,
        models.clone(),
        &config(),
        RebuildOptions::default(),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_ne!(report.generation, generation);
    assert_eq!(clv.prediction_count(report.generation).await.unwrap(), 0);
    let third = fit_and_store(models.as_ref(), clv.as_ref(), &fit, now)
        .await
        .unwrap();
    assert_eq!(
        (third.version, third.model.generation),
        (3, report.generation)
    );
    assert_eq!(
        third.model.bgnbd, second.model.bgnbd,
        "the rebuilt generation holds the same summaries, so the same fit"
    );
    assert_eq!(
        clv.prediction_count(report.generation).await.unwrap(),
        buyers.len() as u64
    );
    assert!(
        predictions(&sql, generation).await.is_empty(),
        "old predictions are gone"
    );
}

#[tokio::test]
async fn sqlite_fits_store_versions_and_a_rejected_fit_keeps_the_previous_one() {
    let (store, _guard) = fresh_sqlite().await;
    fits_store_versions_and_a_rejected_fit_keeps_the_previous_one(SqlEventStore::Sqlite(store))
        .await;
}

#[tokio::test]
async fn postgres_fits_store_versions_and_a_rejected_fit_keeps_the_previous_one() {
    let store = fresh_postgres().await;
    fits_store_versions_and_a_rejected_fit_keeps_the_previous_one(SqlEventStore::Postgres(store))
        .await;
}

async fn catch_up(live: &mut LiveProjection) {
    loop {
        if live.step().await.expect("projector step").caught_up {
            return;
        }
    }
}

/// `patron fit` appends a `model_fitted` event: the projector follows it (repeat buyers whose
/// probability alive is below the thresholds go at risk / churned, as the stored predictions
/// say), a restarted projector finds the model again in the log, and a rebuild reproduces the
/// same read models.
async fn a_fit_moves_customers_through_the_log_and_a_rebuild_reproduces_it(sql: SqlEventStore) {
    use patron_domain::{CustomerId, EventBody};
    use patron_lifecycle::Stage;
    use patron_projector::clv::Fitter;

    let store: Arc<dyn EventStore> = sql.clone().into_dyn();
    let models: Arc<dyn ReadModelStore> = sql.read_models();
    append(store.as_ref(), &history()).await;
    let mut live = LiveProjection::open(store.clone(), models.clone(), config())
        .await
        .unwrap();
    catch_up(&mut live).await;
    assert_eq!(
        p_alive_transitions(&sql).await,
        Vec::<String>::new(),
        "no model event yet: inactivity rules only"
    );

    let fitter = Fitter::new(models.clone(), sql.clv_store(), FitConfig::default())
        .unwrap()
        .with_log(store.clone());
    let fitted = fitter
        .fit(Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap())
        .await
        .expect("the population fits");

    // The event, read back from the store, carries the exact parameters.
    let stream = store.read_stream(&CustomerId::clv(), 0, 10).await.unwrap();
    assert_eq!(stream.len(), 1);
    assert_eq!(stream[0].event.occurred_at, fitted.model.evaluated_at);
    let EventBody::ModelFitted(event) = &stream[0].event.body else {
        panic!("not a model event: {:?}", stream[0].event);
    };
    assert_eq!(event.version, fitted.version);
    let (r, alpha, a, b) = event.parameters().unwrap();
    let p = fitted.model.bgnbd;
    assert_eq!(
        [r, alpha, a, b].map(f64::to_bits),
        [p.r, p.alpha, p.a, p.b].map(f64::to_bits)
    );

    catch_up(&mut live).await;
    let model = live
        .projection()
        .model()
        .copied()
        .expect("the model is in force");
    assert_eq!(
        (model.version, model.params),
        (fitted.version, fitted.model.bgnbd)
    );

    // Stages agree with the stored predictions (same model, same evaluation day).
    let rows = predictions(&sql, fitted.model.generation).await;
    assert!(!rows.is_empty());
    let (mut at_risk, mut churned) = (0, 0);
    for (id, _, p_alive, _, _) in &rows {
        let view = live
            .projection()
            .customer(&CustomerId::parse(id).unwrap())
            .unwrap();
        if view.purchases.summary.frequency() == 0 {
            assert!(view.lifecycle.p_alive.is_none(), "{id}: no repeat purchase");
            continue;
        }
        let schedule = view.lifecycle.p_alive.as_ref().expect("a repeat buyer");
        assert_eq!(schedule.model_version, fitted.version);
        let stage = view.lifecycle.stage.unwrap();
        if *p_alive < 0.1 {
            assert_eq!(stage, Stage::Churned, "{id}: p_alive {p_alive}");
            churned += 1;
        } else if *p_alive < 0.5 {
            assert!(
                matches!(stage, Stage::AtRisk | Stage::Churned),
                "{id}: p_alive {p_alive}, {stage:?}"
            );
            at_risk += 1;
        }
    }
    assert!(
        at_risk > 0 && churned > 0,
        "{at_risk} at risk, {churned} churned"
    );

    // A quiet year later (a tick), buyers still active at the fit fall below the thresholds:
    // the model's rules move them, not inactivity.
    let tick = Event {
        event_id: uuid::Uuid::now_v7(),
        customer_id: CustomerId::clock(),
        occurred_at: fitted.model.evaluated_at + TimeDelta::days(365),
        source: "test".into(),
        body: EventBody::Tick(patron_domain::Tick {}),
    };
    append(store.as_ref(), &[tick]).await;
    catch_up(&mut live).await;
    let moved = p_alive_transitions(&sql).await;
    assert!(!moved.is_empty(), "the model moved customers");
    for version in moved {
        assert_eq!(version, fitted.version.to_string());
    }

    // A restart finds the model in the log; a rebuild reproduces the read models.
    let reopened = LiveProjection::open(store.clone(), models.clone(), config())
        .await
        .unwrap();
    assert_eq!(reopened.projection().model(), Some(&model));
    let live_views = reopened.projection().customers().clone();
    let report = rebuild(
        store.clone(),
        models.clone(),
        &config(),
        RebuildOptions {
            page: 97,
            flush_every: 500,
            ..RebuildOptions::default()
        },
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_ne!(report.generation, fitted.model.generation);
    let rebuilt = LiveProjection::open(store, models, config()).await.unwrap();
    assert_eq!(rebuilt.generation().id, report.generation);
    assert_eq!(rebuilt.projection().model(), Some(&model));
    assert!(
        rebuilt.projection().customers() == &live_views,
        "rebuilt views and stage histories equal the live ones"
    );
}

#[tokio::test]
async fn sqlite_a_fit_moves_customers_through_the_log_and_a_rebuild_reproduces_it() {
    let (store, _guard) = fresh_sqlite().await;
    a_fit_moves_customers_through_the_log_and_a_rebuild_reproduces_it(SqlEventStore::Sqlite(store))
        .await;
}

#[tokio::test]
async fn postgres_a_fit_moves_customers_through_the_log_and_a_rebuild_reproduces_it() {
    let store = fresh_postgres().await;
    a_fit_moves_customers_through_the_log_and_a_rebuild_reproduces_it(SqlEventStore::Postgres(
        store,
    ))
    .await;
}
