//! Operational HTTP endpoints, when `--metrics-listen` is set: Prometheus metrics at `/metrics`,
//! liveness at `/livez` (the process serves HTTP) and readiness at `/readyz` (the database
//! answers within two seconds, and so does a Kafka broker for the commands that use one).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use patron_kafka::{BrokerProbe, KafkaSettings};
use patron_store::EventStore;
use std::sync::Arc;
use tokio::sync::OnceCell;

use crate::cli::DatabaseArgs;

/// Latency buckets (seconds) for every histogram: 1 ms to 30 s.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How long each dependency has to answer a readiness check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Endpoints {
    metrics: PrometheusHandle,
    database: DatabaseArgs,
    store: Arc<OnceCell<Arc<dyn EventStore>>>,
    brokers: Option<BrokerProbe>,
}

/// Installs the Prometheus recorder (every `metrics::…!` call from then on is exported) and
/// serves the endpoints on `listen` in the background.
pub(crate) async fn start(
    listen: SocketAddr,
    database: &DatabaseArgs,
    kafka: Option<KafkaSettings>,
) -> anyhow::Result<()> {
    let metrics = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .context("metrics buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let endpoints = Endpoints {
        metrics,
        database: database.clone(),
        store: Arc::new(OnceCell::new()),
        brokers: kafka
            .map(|settings| BrokerProbe::new(&settings))
            .transpose()
            .context("cannot create the Kafka client that readiness uses")?,
    };
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(endpoints);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (--metrics-listen)"))?;
    tracing::info!(%listen, "metrics, liveness and readiness served over HTTP");
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics endpoint stopped");
        }
    });
    Ok(())
}

async fn render(State(endpoints): State<Endpoints>) -> String {
    endpoints.metrics.render()
}

async fn ready(State(endpoints): State<Endpoints>) -> (StatusCode, &'static str) {
    let database = async {
        let store = endpoints
            .store
            .get_or_try_init(|| async {
                let mut database = endpoints.database.clone();
                database.database_max_connections = 1;
                crate::commands::open_store(&database)
                    .await
                    .map(patron_store_sql::SqlEventStore::into_dyn)
            })
            .await?;
        store.head().await.map_err(anyhow::Error::from)
    };
    match tokio::time::timeout(CHECK_TIMEOUT, database).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "not ready: the database does not answer");
            return (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n");
        }
        Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, "database too slow\n"),
    }
    if let Some(brokers) = &endpoints.brokers
        && let Err(error) = brokers.check(CHECK_TIMEOUT).await
    {
        tracing::warn!(%error, "not ready: no Kafka broker answers");
        return (StatusCode::SERVICE_UNAVAILABLE, "kafka unavailable\n");
    }
    (StatusCode::OK, "ready\n")
}
