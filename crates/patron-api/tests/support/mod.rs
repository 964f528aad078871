//! Read models filled by the real projector from seeded demo traffic, and a real server on them.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use patron_api::{ApiConfig, SqlReadModels};
use patron_codec::{Limits, Message};
use patron_domain::{Event, ValidationPolicy};
use patron_lifecycle::Rules;
use patron_projector::{LiveProjection, ProjectorConfig};
use patron_store::{AppendBatch, EventStore, ExpectedVersion};
use patron_store_sql::SqlEventStore;
use patron_store_sql::testing::{fresh_postgres, fresh_sqlite};
use tokio::sync::oneshot;

pub(crate) const TOKEN: &str = "test-token-1";

pub(crate) fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
}

/// A year of seeded demo traffic from `customers` customers, as validated events.
pub(crate) fn demo_year(customers: usize) -> Vec<Event> {
    let mut generator = patron_demo::Generator::new(7, customers, start());
    let policy = ValidationPolicy::at(start() + TimeDelta::days(400));
    patron_demo::into_events(generator.until(start() + TimeDelta::days(365)), &policy)
}

/// A database on either backend.
pub(crate) struct Db {
    pub(crate) sql: SqlEventStore,
    _guard: Option<tempfile::TempDir>,
}

impl Db {
    pub(crate) async fn postgres() -> Self {
        Self {
            sql: SqlEventStore::Postgres(fresh_postgres().await),
            _guard: None,
        }
    }

    pub(crate) async fn sqlite() -> Self {
        let (store, guard) = fresh_sqlite().await;
        Self {
            sql: SqlEventStore::Sqlite(store),
            _guard: Some(guard),
        }
    }

    /// Appends a year of demo traffic and projects it to the head of the log.
    pub(crate) async fn fill(&self, customers: usize) {
        self.append(&demo_year(customers)).await;
        self.project().await;
    }

    /// Appends events, 97 to a batch, and returns the head position.
    pub(crate) async fn append(&self, events: &[Event]) -> u64 {
        let store = self.sql.clone().into_dyn();
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
        store.head().await.expect("head").0
    }

    /// Projects the log to its head, as `patron project` does (resuming the active generation).
    pub(crate) async fn project(&self) {
        let store = self.sql.clone().into_dyn();
        let mut config = ProjectorConfig::new(Rules::default(), Rules::example_toml());
        config.batch = 500;
        let mut live = LiveProjection::open(store.clone(), self.sql.read_models(), config)
            .await
            .expect("open the projection");
        while !live.step().await.expect("projector step").caught_up {}
    }

    /// Strings from a one-column query of the database.
    pub(crate) async fn strings(&self, query: &str) -> Vec<String> {
        match &self.sql {
            SqlEventStore::Postgres(s) => sqlx::query_scalar(query).fetch_all(s.pool()).await,
            SqlEventStore::Sqlite(s) => sqlx::query_scalar(query).fetch_all(s.pool()).await,
        }
        .unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    /// Integers from a one-column query of the database.
    pub(crate) async fn integers(&self, query: &str) -> Vec<i64> {
        match &self.sql {
            SqlEventStore::Postgres(s) => sqlx::query_scalar(query).fetch_all(s.pool()).await,
            SqlEventStore::Sqlite(s) => sqlx::query_scalar(query).fetch_all(s.pool()).await,
        }
        .unwrap_or_else(|e| panic!("{query}: {e}"))
    }
}

/// A visit by `customer` at `at`, decoded and validated like any producer's event.
pub(crate) fn visit(customer: &str, at: DateTime<Utc>) -> Event {
    cloud_event(
        customer,
        at,
        "interaction",
        r#"{"channel":"web","kind":"visit"}"#,
    )
}

/// A `patron.{kind}.v1` CloudEvent with `data`, decoded and validated like any producer's.
pub(crate) fn cloud_event(customer: &str, at: DateTime<Utc>, kind: &str, data: &str) -> Event {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let json = format!(
        r#"{{"specversion":"1.0","id":"00000000-0000-4000-8000-{n:012}","source":"test","type":"patron.{kind}.v1","subject":"{customer}","time":"{}","datacontenttype":"application/json","data":{data}}}"#,
        at.to_rfc3339()
    );
    let message = Message {
        content_type: Some("application/cloudevents+json"),
        headers: &[],
        key: None,
        payload: json.as_bytes(),
    };
    let raw = patron_codec::decode(&message, &Limits::default()).expect("decode a test event");
    patron_domain::validate(raw, &ValidationPolicy::at(at + TimeDelta::days(1)))
        .expect("a valid test event")
}

/// A running API server; stops when dropped.
pub(crate) struct Running {
    pub(crate) address: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl Running {
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub(crate) async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .expect("connect to the test server")
    }
}

/// Starts the API on 127.0.0.1:0 over the database's read models.
pub(crate) async fn start_server(db: &Db) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let config = ApiConfig::new(address, vec![TOKEN.into(), "other-token".into()]);
    let models = Arc::new(SqlReadModels::new(db.sql.clone()));
    tokio::spawn(async move {
        patron_api::serve_on(listener, config, models, async {
            let _ = stopped.await;
        })
        .await
        .expect("server runs");
    });
    Running {
        address,
        _stop: stop,
    }
}

/// Adds `authorization: Bearer <token>` to every call (any token, even a wrong or empty one).
#[derive(Clone, Copy)]
pub(crate) struct Bearer(pub(crate) &'static str);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let value = format!("Bearer {}", self.0);
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("ascii header"));
        Ok(request)
    }
}

/// Rows of any query, on either backend.
pub(crate) async fn fetch<T>(db: &Db, query: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + Send
        + Unpin,
{
    match &db.sql {
        SqlEventStore::Postgres(s) => sqlx::query_as(query).fetch_all(s.pool()).await,
        SqlEventStore::Sqlite(s) => sqlx::query_as(query).fetch_all(s.pool()).await,
    }
    .unwrap_or_else(|e| panic!("{query}: {e}"))
}

/// Every stored event, in position order.
pub(crate) async fn all_events(db: &Db) -> Vec<patron_store::RecordedEvent> {
    let store = db.sql.clone().into_dyn();
    let mut events = Vec::new();
    loop {
        let after = events.last().map_or(
            patron_store::Position(0),
            |e: &patron_store::RecordedEvent| e.position,
        );
        let page = store.read_all(after, 1000).await.expect("read the log");
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}
