//! The read models on PostgreSQL and SQLite: live projection, restart, rebuild and swap, ticks,
//! the outbox and the relay, several projector instances (one active, standbys taking over).
//! Every test runs against both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use patron_domain::{Event, ValidationPolicy};
use patron_lifecycle::{Rules, Stage};
use patron_projector::{
    Changes, Generation, GenerationId, Lease, LifecyclePublisher, LiveProjection, OutboxEntry,
    OutboxRecord, ProjectorConfig, PublishError, ReadModelError, ReadModelStore, RebuildOptions,
    RelayConfig, Snapshot, SystemClock, rebuild, relay_once, run_relay,
};
use patron_store::{AppendBatch, EventStore, ExpectedVersion};
use patron_store_sql::SqlEventStore;
use patron_store_sql::testing::{fresh_postgres, fresh_sqlite};

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
}

/// A year of seeded demo traffic from `customers` customers, as validated events in time order.
fn demo_year(customers: usize) -> Vec<Event> {
    demo_year_seeded(7, customers)
}

/// `events` with consent answers mixed in, in time order: every third customer grants
/// `news_letter` on its first event's day, every fifth withdraws it 100 days later, every
/// seventh grants `sms` 50 days in; at the very end of the log come late `sms` withdrawals dated
/// 40 days in, which must change nothing.
fn with_consents(mut events: Vec<Event>) -> Vec<Event> {
    let mut first_seen = std::collections::BTreeMap::new();
    for event in &events {
        first_seen
            .entry(event.customer_id.clone())
            .or_insert(event.occurred_at);
    }
    let consent = |customer: &patron_domain::CustomerId, at, purpose: &str, granted| Event {
        event_id: uuid::Uuid::new_v4(),
        customer_id: customer.clone(),
        occurred_at: at,
        source: "crm".into(),
        body: patron_domain::EventBody::ConsentChanged(patron_domain::ConsentChanged {
            purpose: purpose.into(),
            granted,
            extra: Default::default(),
        }),
    };
    let mut late = Vec::new();
    for (n, (customer, first)) in first_seen.iter().enumerate() {
        if n % 3 == 0 {
            events.push(consent(customer, *first, "news_letter", true));
        }
        if n % 5 == 0 {
            let withdrawn = *first + TimeDelta::days(100);
            events.push(consent(customer, withdrawn, "news_letter", false));
        }
        if n % 7 == 0 {
            events.push(consent(customer, *first + TimeDelta::days(50), "sms", true));
            late.push(consent(
                customer,
                *first + TimeDelta::days(40),
                "sms",
                false,
            ));
        }
    }
    events.sort_by_key(|event| event.occurred_at);
    events.extend(late);
    events
}

/// `events` with identities linked mid-year, in time order: demo-0003 and demo-0010 share an
/// email (demo-0003 merges into demo-0010), demo-0030 then links a phone of demo-0010 (the two
/// merge into demo-0030), demo-0020 and demo-0021 share an email (demo-0020 merges into
/// demo-0021) and are split again later.
fn with_identities(mut events: Vec<Event>) -> Vec<Event> {
    let event = |customer: &str, day: i64, event_type: &str, payload: String| Event {
        event_id: uuid::Uuid::new_v4(),
        customer_id: patron_domain::CustomerId::parse(customer).unwrap(),
        occurred_at: start() + TimeDelta::days(day),
        source: "crm".into(),
        body: patron_domain::EventBody::from_payload_str(event_type, &payload).unwrap(),
    };
    let link = |customer: &str, day: i64, kind: &str, value: &str| {
        let payload = format!(r#"{{"identities":[{{"kind":"{kind}","value":"{value}"}}]}}"#);
        event(customer, day, "identities_linked", payload)
    };
    events.extend([
        link("demo-0003", 120, "email", "pat@example.com"),
        link("demo-0010", 121, "email", "PAT@example.com"),
        link("demo-0010", 122, "phone", "+1 555 0101"),
        link("demo-0030", 200, "phone", "+15550101"),
        link("demo-0020", 150, "email", "sam@example.com"),
        link("demo-0021", 151, "email", "sam@example.com"),
        event(
            "demo-0021",
            250,
            "customers_unmerged",
            r#"{"merged_customer_id":"demo-0020","reason":"two people"}"#.into(),
        ),
    ]);
    events.sort_by_key(|event| event.occurred_at);
    events
}

/// Like [`demo_year`] from another seed: the same customer ids, fresh event ids.
fn demo_year_seeded(seed: u64, customers: usize) -> Vec<Event> {
    let mut generator = patron_demo::Generator::new(seed, customers, start());
    let policy = ValidationPolicy::at(start() + TimeDelta::days(400));
    patron_demo::into_events(generator.until(start() + TimeDelta::days(365)), &policy)
}

async fn append(store: &dyn EventStore, events: &[Event]) {
    for chunk in events.chunks(97) {
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
    let rules = Rules::default();
    let mut config = ProjectorConfig::new(rules, Rules::example_toml());
    config.batch = 250;
    config
}

/// A database with both stores.
struct Db {
    sql: SqlEventStore,
    _guard: Option<tempfile::TempDir>,
}

impl Db {
    async fn postgres() -> Self {
        Self {
            sql: SqlEventStore::Postgres(fresh_postgres().await),
            _guard: None,
        }
    }

    async fn sqlite() -> Self {
        let (store, guard) = fresh_sqlite().await;
        Self {
            sql: SqlEventStore::Sqlite(store),
            _guard: Some(guard),
        }
    }

    fn store(&self) -> Arc<dyn EventStore> {
        self.sql.clone().into_dyn()
    }

    fn models(&self) -> Arc<dyn ReadModelStore> {
        self.sql.read_models()
    }

    /// The active generation's tables as sorted text rows (what a rebuild must reproduce).
    async fn dump(&self) -> Vec<String> {
        let generation = self
            .models()
            .active_generation()
            .await
            .unwrap()
            .expect("an active generation")
            .id;
        let queries = [
            "SELECT customer_id || '|' || coalesce(stage, '-') || '|' || orders || '|' || \
                net_revenue_minor || '|' || coalesce(average_order_minor, -1) || '|' || \
                coalesce(rfm_segment, '-') || '|' || coalesce(tier, '-') || '|' || \
                coalesce(rfm_r * 100 + rfm_f * 10 + rfm_m, 0) || '|' || CAST(state AS TEXT) || \
                '|' || coalesce(consented, '-') || '|' || coalesce(consents, '-') || '|' || \
                coalesce(merged_into, '-') \
             FROM customers WHERE generation = G ORDER BY customer_id",
            "SELECT customer_id || '|' || seq || '|' || coalesce(from_stage, '-') || '|' || \
                to_stage || '|' || CAST(entered_at AS TEXT) || '|' || rule || '|' || \
                CAST(facts AS TEXT) || '|' || position \
             FROM stage_history WHERE generation = G ORDER BY customer_id, seq",
            "SELECT metric || '|' || period || '|' || dim1 || '|' || dim2 || '|' || value \
             FROM kpis WHERE generation = G AND value <> 0 ORDER BY metric, period, dim1, dim2",
        ];
        let mut rows = Vec::new();
        for query in queries {
            let query = query.replace('G', &generation.to_string());
            let part: Vec<String> = match &self.sql {
                SqlEventStore::Postgres(s) => sqlx::query_scalar(&query)
                    .fetch_all(s.pool())
                    .await
                    .unwrap(),
                SqlEventStore::Sqlite(s) => sqlx::query_scalar(&query)
                    .fetch_all(s.pool())
                    .await
                    .unwrap(),
            };
            assert!(!part.is_empty(), "no rows from {query}");
            rows.extend(part);
        }
        rows
    }

    /// Strings from a one-column query.
    async fn strings(&self, query: &str) -> Vec<String> {
        match &self.sql {
            SqlEventStore::Postgres(s) => sqlx::query_scalar(query).fetch_all(s.pool()).await,
            SqlEventStore::Sqlite(s) => sqlx::query_scalar(query).fetch_all(s.pool()).await,
        }
        .unwrap()
    }

    /// The customers of the active generation who granted `purpose`, by id.
    async fn granted(&self, purpose: &str) -> Vec<String> {
        self.strings(&format!(
            "SELECT customer_id FROM customers WHERE generation = \
             (SELECT generation FROM projection_active) AND consented LIKE '% {purpose} %' \
             ORDER BY customer_id"
        ))
        .await
    }

    /// Every outbox record, in id order.
    async fn outbox(&self) -> Vec<OutboxRecord> {
        self.models().outbox_after(0, 1_000_000).await.unwrap()
    }

    /// `customer:seq` of every stage history row of the active generation.
    async fn history_keys(&self) -> Vec<String> {
        let query = "SELECT customer_id || ':' || seq FROM stage_history WHERE generation = \
                     (SELECT generation FROM projection_active) ORDER BY 1";
        match &self.sql {
            SqlEventStore::Postgres(s) => sqlx::query_scalar(query).fetch_all(s.pool()).await,
            SqlEventStore::Sqlite(s) => sqlx::query_scalar(query).fetch_all(s.pool()).await,
        }
        .unwrap()
    }
}

/// `customer:seq` of every outbox record that still holds once retractions are applied, sorted.
fn net_keys(outbox: &[OutboxRecord]) -> Vec<String> {
    let net = patron_projector::net_records(outbox.iter().map(|r| r.entry.clone()));
    let mut keys: Vec<String> = net
        .iter()
        .map(|e| format!("{}:{}", e.customer_id, e.seq))
        .collect();
    keys.sort();
    let unique = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), unique, "each transition holds once");
    keys
}

async fn catch_up(live: &mut LiveProjection) {
    loop {
        let step = live.step().await.expect("projector step");
        if step.caught_up {
            return;
        }
    }
}

/// Live projection in chunks with a restart half-way, then a rebuild: the rebuilt tables equal
/// the live ones, and the outbox holds every transition exactly once, in commit order.
async fn rebuild_equals_live(db: Db) {
    let events = with_consents(with_identities(demo_year(60)));
    let (first, second) = events.split_at(events.len() / 2);
    let store = db.store();
    append(store.as_ref(), first).await;
    let mut live = LiveProjection::open(store.clone(), db.models(), config())
        .await
        .unwrap();
    catch_up(&mut live).await;
    append(store.as_ref(), second).await;
    // A restart: the projection resumes from what was committed.
    let mut live = LiveProjection::open(store.clone(), db.models(), config())
        .await
        .unwrap();
    catch_up(&mut live).await;
    assert_eq!(live.projection().checkpoint(), store.head().await.unwrap());
    let live_tables = db.dump().await;
    let outbox = db.outbox().await;

    // Identities linked: two merges in force (one a chain), the split one on its own again.
    assert_eq!(
        db.strings(
            "SELECT customer_id || '>' || merged_into FROM customers WHERE generation = \
             (SELECT generation FROM projection_active) AND merged_into IS NOT NULL \
             ORDER BY customer_id"
        )
        .await,
        ["demo-0003>demo-0010", "demo-0010>demo-0030"]
    );
    let merges = store
        .read_all(patron_store::Position::ZERO, 1_000_000)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.event.event_type().as_str() == "customers_merged")
        .count();
    assert_eq!(
        merges, 3,
        "the store appended one merge per shared identifier"
    );

    // Consent is projected: the latest answer by event time, the late withdrawals ignored.
    let customers: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e.customer_id.as_str()).collect();
    let expect = |keep: fn(usize) -> bool| -> Vec<String> {
        customers
            .iter()
            .enumerate()
            .filter(|(n, _)| keep(*n))
            .map(|(_, id)| (*id).to_owned())
            .collect()
    };
    let letter = expect(|n| n % 3 == 0 && n % 5 != 0);
    assert!(letter.len() > 5, "{letter:?}");
    assert_eq!(db.granted("news_letter").await, letter);
    // The demo's own sign-up consent: two customers in three.
    let signed_up: Vec<String> = customers
        .iter()
        .filter(|id| id.trim_start_matches("demo-").parse::<usize>().unwrap() % 3 != 2)
        .map(|id| (*id).to_owned())
        .collect();
    assert_eq!(db.granted("marketing_email").await, signed_up);
    assert_eq!(db.granted("sms").await, expect(|n| n % 7 == 0));
    for granted in [true, false] {
        assert!(
            outbox
                .iter()
                .any(|r| r.entry.consent.get("news_letter") == Some(&granted)),
            "the outbox marks transitions with consent (granted: {granted})"
        );
    }
    assert!(
        outbox.len() > 100,
        "a year of 60 customers fires many transitions: {}",
        outbox.len()
    );

    let mut progress = 0;
    let options = RebuildOptions {
        page: 333,
        flush_every: 1_000,
        corrections: true,
    };
    let report = rebuild(store.clone(), db.models(), &config(), options, &mut |_| {
        progress += 1
    })
    .await
    .unwrap();
    assert!(progress > 3, "progress is reported");
    assert_eq!(report.replaced, Some(live.generation().id));
    assert_eq!(
        report.events,
        u64::try_from(events.len() + merges).unwrap(),
        "every event, and the merges the store appended"
    );
    assert_eq!(
        db.dump().await,
        live_tables,
        "rebuilt read models equal the live ones"
    );
    assert_eq!(
        db.outbox().await,
        outbox,
        "a rebuild publishes nothing already published"
    );

    assert_eq!(
        net_keys(&outbox),
        db.history_keys().await,
        "every transition is in the outbox once, retractions applied"
    );
    assert!(outbox.windows(2).all(|w| w[0].id < w[1].id), "ids increase");

    // The superseded live projector notices on its next commit and resumes on the new one.
    // Fresh ids: re-offering stored ids with other content would be refused as a conflict.
    let more = demo_year_seeded(8, 61).split_off(events.len().min(100));
    append(store.as_ref(), &more[..more.len().min(200)]).await;
    let error = live
        .step()
        .await
        .expect_err("the old generation is retired");
    assert!(matches!(error, ReadModelError::Superseded(_)), "{error}");
    let mut live = LiveProjection::open(store.clone(), db.models(), config())
        .await
        .unwrap();
    assert_eq!(live.generation().id, report.generation);
    catch_up(&mut live).await;
    assert_eq!(live.projection().checkpoint(), store.head().await.unwrap());
}

/// A second projector on the same generation is refused instead of double-applying.
async fn two_projectors_conflict(db: Db) {
    let store = db.store();
    let events = demo_year(10);
    append(store.as_ref(), &events[..events.len() / 2]).await;
    let mut one = LiveProjection::open(store.clone(), db.models(), config())
        .await
        .unwrap();
    let mut two = LiveProjection::open(store.clone(), db.models(), config())
        .await
        .unwrap();
    one.step().await.unwrap();
    let error = two
        .step()
        .await
        .expect_err("the checkpoint moved under the second projector");
    assert!(matches!(error, ReadModelError::Conflict { .. }), "{error}");
}

/// Rules other than the active generation's are refused with an actionable message.
async fn changed_rules_are_refused(db: Db) {
    let store = db.store();
    LiveProjection::open(store.clone(), db.models(), config())
        .await
        .unwrap();
    let rules = Rules {
        honeymoon_days: 45,
        ..Rules::default()
    };
    let changed = ProjectorConfig::new(rules, "honeymoon_days = 45");
    let error = LiveProjection::open(store, db.models(), changed)
        .await
        .err()
        .expect("changed rules are refused");
    assert!(error.to_string().contains("patron rebuild"), "{error}");

    // Text that reads as the same rules is no change: e.g. a generation recorded before the
    // probability-alive keys existed (they take their defaults), or a reformatted file.
    let older_text: String = Rules::example_toml()
        .lines()
        .filter(|line| !line.starts_with("p_alive"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_ne!(older_text.trim(), Rules::example_toml().trim());
    let older = ProjectorConfig::new(Rules::default(), older_text);
    LiveProjection::open(db.store(), db.models(), older)
        .await
        .expect("the same rules, written without the newer keys");
}

/// The published lifecycle, net of retractions, per customer: `customer:seq:from:to:rule`.
async fn net_published(db: &Db) -> BTreeSet<String> {
    let entries = db.outbox().await.into_iter().map(|r| r.entry);
    patron_projector::net_records(entries)
        .iter()
        .map(|e| {
            let t = &e.transition;
            let from = t.from.map_or("-", |s| s.as_str());
            format!(
                "{}:{}:{from}:{}:{}",
                e.customer_id,
                e.seq,
                t.to.as_str(),
                t.rule
            )
        })
        .collect()
}

/// The active read models' stage histories, in the form of [`net_published`].
async fn active_histories(db: &Db) -> BTreeSet<String> {
    let query = "SELECT customer_id || ':' || seq || ':' || coalesce(from_stage, '-') || ':' || \
                 to_stage || ':' || rule FROM stage_history \
                 WHERE generation = (SELECT generation FROM projection_active)";
    let rows: Vec<String> = match &db.sql {
        SqlEventStore::Postgres(s) => sqlx::query_scalar(query).fetch_all(s.pool()).await,
        SqlEventStore::Sqlite(s) => sqlx::query_scalar(query).fetch_all(s.pool()).await,
    }
    .unwrap();
    rows.into_iter().collect()
}

/// A rebuild with other rules publishes the difference: afterwards, and after new events, the
/// published lifecycle net of retractions is every customer's stage history in the new read
/// models. (The same index under other rules is another transition: its dedupe key must not be
/// taken for a repeat of the old generation's.) With `corrections: false`, nothing is retracted
/// and the report says how many customers that leaves different.
async fn rules_change_then_new_events_publish_every_transition(db: Db) {
    let events = demo_year(40);
    let (first, second) = events.split_at(events.len() * 2 / 3);
    let store = db.store();
    append(store.as_ref(), first).await;
    let mut live = LiveProjection::open(store.clone(), db.models(), config())
        .await
        .unwrap();
    catch_up(&mut live).await;
    let swapped_at = store.head().await.unwrap();
    // Looser rules: fewer transitions, so the new generation's next indices were used by the
    // old one.
    let rules = Rules {
        at_risk_gap_multiple_percent: 350,
        churn_gap_multiple_percent: 700,
        ..Rules::default()
    };
    let strict = ProjectorConfig::new(
        rules,
        "at_risk_gap_multiple_percent = 350\nchurn_gap_multiple_percent = 700",
    );
    assert_eq!(net_published(&db).await, active_histories(&db).await);
    // Without corrections first: counted, not published.
    let before = db.outbox().await.len();
    let quiet = RebuildOptions {
        corrections: false,
        ..RebuildOptions::default()
    };
    let report = rebuild(store.clone(), db.models(), &strict, quiet, &mut |_| {})
        .await
        .unwrap();
    let c = report.corrections;
    assert!(
        !c.published && c.customers > 0 && c.retractions > 0,
        "{c:?}"
    );
    assert_eq!(db.outbox().await.len(), before, "nothing published");
    assert_ne!(net_published(&db).await, active_histories(&db).await);
    // With corrections (the default): the published lifecycle becomes the new histories.
    let rebuild_strict = async || {
        rebuild(
            store.clone(),
            db.models(),
            &strict,
            RebuildOptions::default(),
            &mut |_| {},
        )
        .await
        .unwrap()
        .corrections
    };
    // The first swap is refused as if a live projector had published meanwhile: the corrections
    // are made again, from views mostly already written (small flushes).
    let watched = Watched::new(db.models());
    watched.outbox_moves.store(1, Ordering::SeqCst);
    let small_flushes = RebuildOptions {
        page: 97,
        flush_every: 200,
        ..RebuildOptions::default()
    };
    let d = rebuild(
        store.clone(),
        watched.clone(),
        &strict,
        small_flushes,
        &mut |_| {},
    )
    .await
    .unwrap()
    .corrections;
    assert_eq!(
        watched.outbox_moves.load(Ordering::SeqCst),
        0,
        "the refusal happened"
    );
    assert!(d.published, "{d:?}");
    assert_eq!(
        (d.customers, d.retractions, d.records),
        (c.customers, c.retractions, c.records),
        "what was counted is what is published"
    );
    assert_eq!(db.outbox().await.len(), before + d.retractions + d.records);
    assert_eq!(net_published(&db).await, active_histories(&db).await);
    // A rebuild with the same rules has nothing to correct.
    let again = rebuild_strict().await;
    assert_eq!(again.customers, 0, "{again:?}");
    // A purchase arriving late, the day before an inactivity transition the swap republished:
    // the live projector retracts that record by the key consumers hold (the new read models
    // adopted the published keys).
    let outbox = db.outbox().await;
    let republished = outbox[before..]
        .iter()
        .map(|r| &r.entry)
        .find(|e| e.retracts.is_none() && e.transition.rule.starts_with("inactivity"))
        .expect("the swap republished an inactivity transition");
    let mut late = events
        .iter()
        .find(|e| {
            e.customer_id == republished.customer_id
                && matches!(e.body, patron_domain::EventBody::Purchase(_))
        })
        .expect("the customer bought")
        .clone();
    late.event_id = uuid::Uuid::now_v7();
    late.occurred_at = republished.transition.at - TimeDelta::days(1);
    if let patron_domain::EventBody::Purchase(purchase) = &mut late.body {
        purchase.order_id = format!("{}-late", purchase.order_id);
    }
    append(store.as_ref(), &[late]).await;
    append(store.as_ref(), second).await;
    let mut live = LiveProjection::open(store.clone(), db.models(), strict)
        .await
        .unwrap();
    catch_up(&mut live).await;

    let query = "SELECT customer_id || ':' || seq || ':' || to_stage FROM stage_history \
                 WHERE generation = (SELECT generation FROM projection_active) AND position > ";
    let query = format!("{query}{}", swapped_at.0);
    let fresh: Vec<String> = match &db.sql {
        SqlEventStore::Postgres(s) => sqlx::query_scalar(&query).fetch_all(s.pool()).await,
        SqlEventStore::Sqlite(s) => sqlx::query_scalar(&query).fetch_all(s.pool()).await,
    }
    .unwrap();
    assert!(
        fresh.len() > 20,
        "the new events made transitions: {}",
        fresh.len()
    );
    let published: HashSet<String> = db
        .outbox()
        .await
        .iter()
        .filter(|r| r.entry.retracts.is_none())
        .map(|r| {
            format!(
                "{}:{}:{}",
                r.entry.customer_id,
                r.entry.seq,
                r.entry.transition.to.as_str()
            )
        })
        .collect();
    let missing: Vec<&String> = fresh.iter().filter(|t| !published.contains(*t)).collect();
    assert!(
        missing.is_empty(),
        "transitions made after the swap but never published: {missing:?}"
    );
    assert_eq!(
        net_published(&db).await,
        active_histories(&db).await,
        "after new events, the published lifecycle is still the read models' histories"
    );
    let key = &republished.dedupe_key;
    assert!(
        db.outbox()
            .await
            .iter()
            .any(|r| r.entry.retracts.as_deref() == Some(key.as_str())),
        "the late purchase retracted the republished {key}"
    );
}

/// A tick appended when the log is quiet moves silent customers on, and a rebuild sees it too.
async fn ticks_drive_time_and_replay(db: Db) {
    let store = db.store();
    let events = demo_year(20);
    append(store.as_ref(), &events).await;
    let mut live = LiveProjection::open(store.clone(), db.models(), config())
        .await
        .unwrap();
    catch_up(&mut live).await;
    let before = db.outbox().await.len();
    // Far on in event time, but not past the store's clock: time a tick can prove.
    let far = live.projection().watermark().unwrap() + TimeDelta::days(300);
    assert!(far < Utc::now(), "the test's year lies in the past");
    assert!(
        live.tick_if_quiet(far).await.unwrap(),
        "event time lags: a tick is appended"
    );
    catch_up(&mut live).await;
    assert_eq!(
        live.projection().watermark(),
        Some(far - config().rules.allowed_lateness()),
        "the watermark is the tick's time less the allowed lateness"
    );
    let after = db.outbox().await;
    assert!(
        after.len() > before,
        "silence moved customers to at_risk or churned"
    );
    for (id, view) in live.projection().customers() {
        if view.value.orders > 0 {
            let stage = view.lifecycle.stage;
            assert!(
                matches!(stage, Some(Stage::AtRisk | Stage::Churned)),
                "{id} bought, then 300 days of silence: at risk or churned, not {stage:?}"
            );
        }
    }
    assert!(
        !live.tick_if_quiet(far).await.unwrap(),
        "no tick while event time is current"
    );
    let tables = db.dump().await;
    rebuild(
        store,
        db.models(),
        &config(),
        RebuildOptions::default(),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(db.dump().await, tables, "a rebuild replays the tick");
}

/// Publishes into a vector; fails when told to.
#[derive(Default)]
struct Recorder {
    published: Mutex<Vec<OutboxRecord>>,
    fail: Mutex<bool>,
}

#[async_trait]
impl LifecyclePublisher for Recorder {
    async fn publish(&self, records: &[OutboxRecord]) -> Result<(), PublishError> {
        if *self.fail.lock().unwrap() {
            return Err(PublishError("broker down".into()));
        }
        self.published.lock().unwrap().extend_from_slice(records);
        Ok(())
    }
}

/// The relay publishes the outbox in order, remembers where it stopped, and resends a failed
/// batch whole.
async fn relay_publishes_in_order_at_least_once(db: Db) {
    let store = db.store();
    append(store.as_ref(), &demo_year(15)).await;
    let mut live = LiveProjection::open(store.clone(), db.models(), config())
        .await
        .unwrap();
    catch_up(&mut live).await;
    let models = db.models();
    let publisher = Recorder::default();
    let mut relay = RelayConfig::new("test");
    relay.batch = 40;
    *publisher.fail.lock().unwrap() = true;
    relay_once(models.as_ref(), &publisher, &relay)
        .await
        .expect_err("publishing fails");
    assert_eq!(
        models.relay_offset("test").await.unwrap(),
        0,
        "nothing acknowledged"
    );
    *publisher.fail.lock().unwrap() = false;
    while relay_once(models.as_ref(), &publisher, &relay)
        .await
        .unwrap()
        > 0
    {}
    let outbox = db.outbox().await;
    assert_eq!(
        *publisher.published.lock().unwrap(),
        outbox,
        "everything, in outbox order"
    );
    assert_eq!(
        models.relay_offset("test").await.unwrap(),
        outbox.last().unwrap().id
    );
}

/// Two relays of one name on one outbox: one publishes, the other stands by, so every record is
/// published once, in outbox order; when the first stops, the second takes over from the stored
/// offset.
async fn two_relays_publish_each_record_once(db: Db) {
    let store = db.store();
    let events = demo_year(20);
    let (first, second) = events.split_at(events.len() / 2);
    append(store.as_ref(), first).await;
    let mut live = LiveProjection::open(store.clone(), db.models(), config())
        .await
        .unwrap();
    catch_up(&mut live).await;
    let relay = |owner: &str| {
        let mut config = RelayConfig::new("pair");
        config.batch = 25;
        config.owner = owner.to_owned();
        config.lease_ttl = Duration::from_millis(400);
        config.standby_poll = Duration::from_millis(20);
        config.idle_poll = Duration::from_millis(20);
        config
    };
    let (a, b) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    let (stop_a, stopped_a) = tokio::sync::oneshot::channel::<()>();
    let (stop_b, stopped_b) = tokio::sync::oneshot::channel::<()>();
    let run_a = tokio::spawn(run_relay(db.models(), a.clone(), relay("a"), async {
        let _ = stopped_a.await;
    }));
    let run_b = tokio::spawn(run_relay(db.models(), b.clone(), relay("b"), async {
        let _ = stopped_b.await;
    }));
    let published = |r: &Recorder| r.published.lock().unwrap().len();
    let outbox = db.outbox().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while published(&a) + published(&b) < outbox.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "the outbox was not relayed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (leader, standby, stop_leader, run_leader, stop_standby, run_standby) = if published(&a) > 0
    {
        (a, b, stop_a, run_a, stop_b, run_b)
    } else {
        (b, a, stop_b, run_b, stop_a, run_a)
    };
    assert_eq!(
        *leader.published.lock().unwrap(),
        outbox,
        "one relay published everything, once, in outbox order"
    );
    assert_eq!(published(&standby), 0, "the other stood by");

    // The leader stops (letting go); the standby takes over from the stored offset.
    let _ = stop_leader.send(());
    run_leader.await.unwrap().unwrap();
    append(store.as_ref(), second).await;
    catch_up(&mut live).await;
    let outbox = db.outbox().await;
    let before = published(&leader);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while before + published(&standby) < outbox.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "the standby did not take over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut all = leader.published.lock().unwrap().clone();
    all.extend(standby.published.lock().unwrap().iter().cloned());
    assert_eq!(all, outbox, "together: everything once, in outbox order");
    let _ = stop_standby.send(());
    run_standby.await.unwrap().unwrap();
}

/// A projector instance's view of the read models: counts what it committed, the commits
/// refused by the fence, and its attempts to take the lease.
struct Watched {
    inner: Arc<dyn ReadModelStore>,
    commits: AtomicUsize,
    conflicts: AtomicUsize,
    standing_by: AtomicUsize,
    /// Activations with corrections to refuse as if a live projector had published meanwhile.
    outbox_moves: AtomicUsize,
}

impl Watched {
    fn new(inner: Arc<dyn ReadModelStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            commits: AtomicUsize::new(0),
            conflicts: AtomicUsize::new(0),
            standing_by: AtomicUsize::new(0),
            outbox_moves: AtomicUsize::new(0),
        })
    }

    fn commits(&self) -> usize {
        self.commits.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ReadModelStore for Watched {
    async fn try_lead(
        &self,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Box<dyn Lease>>, ReadModelError> {
        let lease = self.inner.try_lead(owner, ttl).await?;
        if lease.is_none() {
            self.standing_by.fetch_add(1, Ordering::SeqCst);
        }
        Ok(lease)
    }
    async fn try_lead_relay(
        &self,
        relay: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Box<dyn Lease>>, ReadModelError> {
        self.inner.try_lead_relay(relay, owner, ttl).await
    }
    async fn active_generation(&self) -> Result<Option<Generation>, ReadModelError> {
        self.inner.active_generation().await
    }
    async fn create_generation(&self, rules: &str) -> Result<Generation, ReadModelError> {
        self.inner.create_generation(rules).await
    }
    async fn load(&self, generation: GenerationId) -> Result<Snapshot, ReadModelError> {
        self.inner.load(generation).await
    }
    async fn commit(
        &self,
        generation: GenerationId,
        expected: patron_store::Position,
        changes: &Changes,
    ) -> Result<(), ReadModelError> {
        let result = self.inner.commit(generation, expected, changes).await;
        match &result {
            Ok(()) => self.commits.fetch_add(1, Ordering::SeqCst),
            Err(ReadModelError::Conflict { .. }) => self.conflicts.fetch_add(1, Ordering::SeqCst),
            Err(_) => 0,
        };
        result
    }
    async fn activate(
        &self,
        generation: GenerationId,
        expected: patron_store::Position,
        changes: &Changes,
        publish: patron_projector::Publish<'_>,
    ) -> Result<Option<GenerationId>, ReadModelError> {
        if let patron_projector::Publish::Corrections { outbox_head, .. } = publish
            && self
                .outbox_moves
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(ReadModelError::OutboxMoved {
                expected: outbox_head,
                actual: outbox_head,
            });
        }
        self.inner
            .activate(generation, expected, changes, publish)
            .await
    }
    async fn write_history(
        &self,
        generation: GenerationId,
        entries: &[OutboxEntry],
    ) -> Result<(), ReadModelError> {
        self.inner.write_history(generation, entries).await
    }
    async fn drop_generation(&self, generation: GenerationId) -> Result<(), ReadModelError> {
        self.inner.drop_generation(generation).await
    }
    async fn outbox_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRecord>, ReadModelError> {
        self.inner.outbox_after(after, limit).await
    }
    async fn relay_offset(&self, relay: &str) -> Result<i64, ReadModelError> {
        self.inner.relay_offset(relay).await
    }
    async fn set_relay_offset(&self, relay: &str, id: i64) -> Result<(), ReadModelError> {
        self.inner.set_relay_offset(relay, id).await
    }
}

/// A live projector instance (`patron_projector::run`) in a task of its own.
struct Instance {
    models: Arc<Watched>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ReadModelError>>,
    /// The instance's own connections, as a process of its own would have.
    sql: SqlEventStore,
    /// Whether it says it is the active projector.
    active: Arc<std::sync::atomic::AtomicBool>,
}

impl Instance {
    async fn start(db: &Db) -> Self {
        let sql = match (&db.sql, &db._guard) {
            // A pool of its own on the same file: killing the instance closes its connections,
            // as the death of its process would (an aborted task's connection returned to a
            // shared pool could keep a half-begun write transaction, and with it the lock).
            (SqlEventStore::Sqlite(_), Some(dir)) => {
                let url = format!("sqlite://{}", dir.path().join("events.db").display());
                SqlEventStore::connect(&patron_store_sql::ConnectOptions::new(url))
                    .await
                    .expect("open the test database again")
            }
            (sql, _) => sql.clone(),
        };
        let models = Watched::new(sql.read_models());
        let mut config = config();
        config.idle_poll = Duration::from_millis(20);
        config.standby_poll = Duration::from_millis(50);
        config.lease_ttl = Duration::from_secs(2);
        // No ticks: the log changes only when the test appends.
        config.tick_interval = Duration::MAX;
        let active = config.active.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(patron_projector::run(
            sql.clone().into_dyn(),
            models.clone(),
            config,
            Arc::new(SystemClock),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            models,
            stop: Some(stop),
            task,
            sql,
            active,
        }
    }

    /// Stops it as SIGKILL would: mid-work, without letting go of the lease; its SQLite
    /// connections close (PostgreSQL ones are shared with the test, which rolls back what an
    /// aborted transaction left).
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
        if let SqlEventStore::Sqlite(store) = &self.sql {
            store.pool().close().await;
        }
    }

    /// Stops it cleanly (it lets go of the lease).
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task
            .await
            .expect("the projector task ends")
            .expect("the projector stops without error");
    }
}

/// Waits until the active generation's checkpoint is the head of the log.
async fn projected_to_head(db: &Db, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let head = db.store().head().await.unwrap();
    loop {
        let active = db.models().active_generation().await.unwrap();
        if active.is_some_and(|g| g.checkpoint == head) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not projected to the head {head:?} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whichever of two instances has committed, and the other (which must not have).
fn split_active(a: Instance, b: Instance, when: &str) -> (Instance, Instance) {
    let (active, other) = if a.models.commits() > 0 {
        (a, b)
    } else {
        (b, a)
    };
    assert!(active.models.commits() > 0, "{when}: one instance projects");
    assert_eq!(
        other.models.commits(),
        0,
        "{when}: the other one never commits"
    );
    assert!(
        other.models.standing_by.load(Ordering::SeqCst) > 0,
        "{when}: the other one stood by"
    );
    // What gates the work only the active instance does (scheduled CLV fits).
    assert!(
        active.active.load(Ordering::SeqCst),
        "{when}: the active one knows"
    );
    assert!(
        !other.active.load(Ordering::SeqCst),
        "{when}: the standby knows"
    );
    (active, other)
}

/// Two instances on one database: one projects, the other stands by (and never commits). Killed
/// mid-stream, the active one is replaced by a standby, which goes on from the checkpoint; a
/// rebuild swaps in under it; a clean stop hands over at once. The read models equal a fresh
/// rebuild and the outbox holds every transition exactly once.
async fn one_projector_is_active_and_a_standby_takes_over(db: Db) {
    let store = db.store();
    let events = demo_year(40);
    let cut: Vec<usize> = (0..=7).map(|i| i * events.len() / 7).collect();
    let chunk = |i: usize| &events[cut[i]..cut[i + 1]];
    append(store.as_ref(), chunk(0)).await;
    let (one, two) = (Instance::start(&db).await, Instance::start(&db).await);
    projected_to_head(&db, "first chunk").await;
    for i in 1..3 {
        append(store.as_ref(), chunk(i)).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    projected_to_head(&db, "three chunks").await;
    let (active, standby) = split_active(one, two, "two instances");
    assert_eq!(
        active.models.conflicts.load(Ordering::SeqCst),
        0,
        "no commit of the active instance was refused"
    );

    // The active instance dies (as by SIGKILL) while events arrive; a standby takes over.
    let appending = {
        let (store, events) = (store.clone(), chunk(3).to_vec());
        tokio::spawn(async move { append(store.as_ref(), &events).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    active.kill().await;
    let standby_commits = standby.models.commits();
    let three = Instance::start(&db).await;
    appending.await.unwrap();
    projected_to_head(&db, "after the takeover").await;
    assert_eq!(standby_commits, 0, "the standby did not commit before");
    let (active, standby) = split_active(standby, three, "after the kill");

    // A rebuild swaps in under the active instance, which reloads and goes on.
    let report = rebuild(
        store.clone(),
        db.models(),
        &config(),
        RebuildOptions::default(),
        &mut |_| {},
    )
    .await
    .unwrap();
    for i in 4..6 {
        append(store.as_ref(), chunk(i)).await;
    }
    projected_to_head(&db, "after the rebuild").await;
    let generation = db.models().active_generation().await.unwrap().unwrap();
    assert_eq!(
        generation.id, report.generation,
        "the rebuilt generation is live"
    );
    assert_eq!(standby.models.commits(), 0, "the standby still stands by");

    // A clean stop lets go at once; the standby takes over.
    active.stop().await;
    append(store.as_ref(), chunk(6)).await;
    projected_to_head(&db, "after a clean stop").await;
    assert!(standby.models.commits() > 0, "the standby took over");
    standby.stop().await;

    let live = db.dump().await;
    let outbox = db.outbox().await;
    let mut keys: Vec<String> = outbox.iter().map(|r| r.entry.dedupe_key.clone()).collect();
    keys.sort();
    let unique = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), unique, "no record is in the outbox twice");
    assert_eq!(
        net_keys(&outbox),
        db.history_keys().await,
        "every transition of the stage history is in the outbox once, retractions applied"
    );
    rebuild(
        store.clone(),
        db.models(),
        &config(),
        RebuildOptions::default(),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(
        db.dump().await,
        live,
        "the read models after takeovers equal a fresh rebuild"
    );
}

/// KPI sums saturate at the bounds of a 64-bit integer, the same on both backends (PostgreSQL
/// would refuse the row and stop the projector for good; SQLite would turn the sum into a float
/// that no read can take back).
async fn kpi_sums_saturate_at_the_bounds(db: Db) {
    let live = LiveProjection::open(db.store(), db.models(), config())
        .await
        .unwrap();
    let generation = live.generation().id;
    let models = db.models();
    let key = |dim: &str| patron_projector::KpiKey {
        metric: patron_projector::kpi::STAGE_FLOW,
        period: "2026-01-01".into(),
        dim1: dim.into(),
        dim2: String::new(),
    };
    let deltas: [(&str, i64); 6] = [
        ("high", i64::MAX - 5),
        ("high", 10),
        ("high", -10),
        ("low", i64::MIN + 5),
        ("low", -10),
        ("low", 3),
    ];
    for (dim, delta) in deltas {
        let changes = Changes {
            kpis: [(key(dim), delta)].into_iter().collect(),
            ..Changes::default()
        };
        models
            .commit(generation, patron_store::Position::ZERO, &changes)
            .await
            .unwrap_or_else(|e| panic!("adding {delta} to {dim}: {e}"));
    }
    let sql = &db.sql;
    let value = |dim: &'static str| {
        let query =
            format!("SELECT value FROM kpis WHERE generation = {generation} AND dim1 = '{dim}'");
        async move {
            match sql {
                SqlEventStore::Postgres(s) => {
                    sqlx::query_scalar::<_, i64>(&query)
                        .fetch_one(s.pool())
                        .await
                }
                SqlEventStore::Sqlite(s) => {
                    sqlx::query_scalar::<_, i64>(&query)
                        .fetch_one(s.pool())
                        .await
                }
            }
            .unwrap()
        }
    };
    assert_eq!(
        value("high").await,
        i64::MAX - 10,
        "saturated at the top, then 10 less"
    );
    assert_eq!(
        value("low").await,
        i64::MIN + 3,
        "saturated at the bottom, then 3 more"
    );
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Db::postgres().await).await; })*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Db::sqlite().await).await; })*
        }
    };
}

on_both_backends!(
    rebuild_equals_live,
    one_projector_is_active_and_a_standby_takes_over,
    two_projectors_conflict,
    changed_rules_are_refused,
    rules_change_then_new_events_publish_every_transition,
    ticks_drive_time_and_replay,
    relay_publishes_in_order_at_least_once,
    two_relays_publish_each_record_once,
    kpi_sums_saturate_at_the_bounds,
);
