//! The gRPC server: the query services (customers, KPIs, events) behind bearer auth, plus
//! health and reflection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use patron_projector::clv::{FitConfig, Fitter};
use patron_proto::api::v1::admin_service_server::AdminServiceServer;
use patron_proto::api::v1::customer_service_server::CustomerServiceServer;
use patron_proto::api::v1::event_store_service_server::EventStoreServiceServer;
use patron_proto::api::v1::kpi_service_server::KpiServiceServer;
use patron_store::EventStore;
use patron_store_sql::SqlEventStore;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::admin::AdminApi;
use crate::auth::BearerAuth;
use crate::cache::{CacheConfig, CachedReadModels};
use crate::customers::CustomerApi;
use crate::error::ApiError;
use crate::events::EventStoreApi;
use crate::kpi::KpiApi;
use crate::read_models::{ReadModels, SqlReadModels};
use crate::telemetry::RequestTelemetryLayer;

/// The fully-qualified name health reports the customer service under.
pub const CUSTOMER_SERVICE: &str = "patron.api.v1.CustomerService";
/// The fully-qualified name health reports the event store service under.
pub const EVENT_STORE_SERVICE: &str = "patron.api.v1.EventStoreService";
/// The fully-qualified name health reports the KPI service under.
pub const KPI_SERVICE: &str = "patron.api.v1.KpiService";
/// The fully-qualified name health reports the admin service under.
pub const ADMIN_SERVICE: &str = "patron.api.v1.AdminService";

/// How the API serves.
#[derive(Clone)]
pub struct ApiConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Bearer tokens admitted (secrets: never logged). At least one is required.
    pub tokens: Vec<String>,
    /// How often the database is pinged to report health.
    pub health_interval: Duration,
    /// How often a lifecycle watch stream polls the outbox when it has nothing to send.
    pub watch_poll: Duration,
    /// TLS, and with a client CA mutual TLS; plaintext when `None`.
    pub tls: Option<TlsConfig>,
    /// What AdminService/FitModel fits when [`serve`] builds the fitter.
    pub fit: FitConfig,
    /// The fitter behind AdminService (built by [`serve`] from `fit` when `None`; without one,
    /// its calls are UNIMPLEMENTED).
    pub fitter: Option<Arc<Fitter>>,
    /// The `GetCustomer` cache (off with a capacity of 0, the default here).
    pub cache: CacheConfig,
    /// The event log AdminService/EraseCustomer appends to (set by [`serve`] when `None`;
    /// without one, that call is UNIMPLEMENTED).
    pub log: Option<Arc<dyn EventStore>>,
}

/// The server's certificate and key, and optionally the CA that client certificates must be
/// signed by (mutual TLS: a client without such a certificate cannot connect). Bearer tokens are
/// required either way.
#[derive(Clone)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM.
    pub certificate: Vec<u8>,
    /// The server's private key, PEM (a secret: never logged).
    pub key: Vec<u8>,
    /// CA certificates (PEM) client certificates must chain to; `None` asks for none.
    pub client_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field(
                "certificate",
                &format_args!("<{} bytes>", self.certificate.len()),
            )
            .field("key", &format_args!("<redacted>"))
            .field("mutual", &self.client_ca.is_some())
            .finish()
    }
}

impl TlsConfig {
    fn server_config(&self) -> ServerTlsConfig {
        let config =
            ServerTlsConfig::new().identity(Identity::from_pem(&self.certificate, &self.key));
        match &self.client_ca {
            Some(ca) => config.client_ca_root(Certificate::from_pem(ca)),
            None => config,
        }
    }
}

impl ApiConfig {
    /// Listens on `listen`, admits `tokens`, pings the database every 5 seconds.
    pub fn new(listen: SocketAddr, tokens: Vec<String>) -> Self {
        Self {
            listen,
            tokens,
            health_interval: Duration::from_secs(5),
            watch_poll: Duration::from_millis(200),
            tls: None,
            fit: FitConfig::default(),
            fitter: None,
            cache: CacheConfig::default(),
            log: None,
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("listen", &self.listen)
            .field("tokens", &format_args!("<{} redacted>", self.tokens.len()))
            .field("health_interval", &self.health_interval)
            .field("watch_poll", &self.watch_poll)
            .field("tls", &self.tls)
            .field("fit", &self.fit)
            .field("fitter", &self.fitter.is_some())
            .field("cache", &self.cache)
            .field("log", &self.log.is_some())
            .finish()
    }
}

/// Serves the API over `store`'s read models on `config.listen` until `shutdown` completes.
pub async fn serve(
    mut config: ApiConfig,
    store: SqlEventStore,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ApiError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|error| ApiError::Serve(format!("bind {}: {error}", config.listen)))?;
    if config.fitter.is_none() {
        let fitter = Fitter::new(store.read_models(), store.clv_store(), config.fit)
            .map_err(|error| ApiError::Serve(error.to_string()))?
            .with_log(store.clone().into_dyn());
        config.fitter = Some(Arc::new(fitter));
    }
    if config.log.is_none() {
        config.log = Some(store.clone().into_dyn());
    }
    serve_on(
        listener,
        config,
        Arc::new(SqlReadModels::new(store)),
        shutdown,
    )
    .await
}

/// Serves the API over `models` on an already bound listener (`config.listen` is ignored) until
/// `shutdown` completes. Health reports NOT_SERVING while `models` cannot reach the database.
pub async fn serve_on(
    listener: TcpListener,
    config: ApiConfig,
    models: Arc<dyn ReadModels>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ApiError> {
    check_tokens(&config.tokens)?;
    let address = listener.local_addr().ok();
    let (reporter, health) = tonic_health::server::health_reporter();
    report(&reporter, probe(models.as_ref()).await).await;
    let pinger = tokio::spawn(watch_database(
        reporter,
        models.clone(),
        config.health_interval,
    ));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(patron_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|error| ApiError::Serve(format!("reflection: {error}")))?;
    // The pre-standard v1alpha service too: older grpcurl and the grpcio reflection client ask it.
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(patron_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|error| ApiError::Serve(format!("reflection: {error}")))?;
    let auth = BearerAuth::new(&config.tokens);
    let customer_api = CustomerApi::new(CachedReadModels::wrap(models.clone(), config.cache))
        .with_watch_poll(config.watch_poll);
    let customers = CustomerServiceServer::with_interceptor(customer_api, auth.clone());
    let kpis = KpiServiceServer::with_interceptor(KpiApi::new(models.clone()), auth.clone());
    let admin = AdminServiceServer::with_interceptor(
        AdminApi::new(config.fitter.clone()).with_log(config.log.clone()),
        auth.clone(),
    );
    let events = EventStoreServiceServer::with_interceptor(EventStoreApi::new(models), auth);
    let mut builder = Server::builder();
    if let Some(tls) = &config.tls {
        builder = builder
            .tls_config(tls.server_config())
            .map_err(|error| ApiError::Serve(format!("TLS configuration: {error}")))?;
    }
    tracing::info!(
        address = ?address,
        tls = config.tls.is_some(),
        mutual_tls = config.tls.as_ref().is_some_and(|tls| tls.client_ca.is_some()),
        "gRPC API listening"
    );
    let result = builder
        .layer(RequestTelemetryLayer)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(customers)
        .add_service(kpis)
        .add_service(events)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await;
    pinger.abort();
    result.map_err(|error| ApiError::Serve(error.to_string()))
}

/// Refuses to serve with no bearer token, or with one that is empty or holds whitespace or
/// control characters: an empty token beside real ones (`PATRON_API_TOKENS=a,,b`) would admit
/// `Bearer ` with nothing after it, and a token with a space cannot be presented in a header.
fn check_tokens(tokens: &[String]) -> Result<(), ApiError> {
    if tokens.is_empty() {
        return Err(ApiError::Serve(
            "no bearer token configured: the API refuses to run unauthenticated".into(),
        ));
    }
    if let Some(index) = tokens
        .iter()
        .position(|t| t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(ApiError::Serve(format!(
            "bearer token {} of {} is empty or holds whitespace or control characters; \
             check PATRON_API_TOKENS (comma-separated, no empty entries)",
            index + 1,
            tokens.len()
        )));
    }
    Ok(())
}

/// Accepted connections with `TCP_NODELAY` set. tonic sets it only on listeners it binds itself;
/// without it each response's trailing HTTP/2 frames wait for the client's delayed ACK (tens of
/// milliseconds per call on an otherwise idle connection).
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)))
}

/// SERVING when the database answers.
async fn probe(models: &dyn ReadModels) -> ServingStatus {
    match models.ping().await {
        Ok(()) => ServingStatus::Serving,
        Err(error) => {
            tracing::warn!(%error, "read models unreachable: health is NOT_SERVING");
            ServingStatus::NotServing
        }
    }
}

/// Sets the overall status ("") and the customer service's.
async fn report(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(CUSTOMER_SERVICE, status).await;
    reporter.set_service_status(KPI_SERVICE, status).await;
    reporter.set_service_status(ADMIN_SERVICE, status).await;
    reporter
        .set_service_status(EVENT_STORE_SERVICE, status)
        .await;
}

/// Pings the database every `interval` and reports changes of health.
async fn watch_database(reporter: HealthReporter, models: Arc<dyn ReadModels>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        ticker.tick().await;
        // A probe that panics says the database is not known to be reachable: not serving,
        // and the watch goes on (a dead watch would leave the last status up for ever).
        let once = std::panic::AssertUnwindSafe(probe(models.as_ref()));
        let status = match tokio::time::timeout(interval, futures::FutureExt::catch_unwind(once))
            .await
        {
            Ok(Ok(status)) => status,
            Ok(Err(_)) => {
                tracing::error!("health: the database probe panicked; not serving");
                metrics::counter!("patron_api_task_panics_total", "task" => "health").increment(1);
                ServingStatus::NotServing
            }
            Err(_) => ServingStatus::NotServing,
        };
        if last != Some(status) {
            report(&reporter, status).await;
            last = Some(status);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut incoming = incoming(listener);
        let _client = tokio::net::TcpStream::connect(address).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY is not set");
    }

    /// Read models whose `ping` answers, then panics once `panicking` is set.
    struct Flaky {
        panicking: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl ReadModels for Flaky {
        async fn customer(
            &self,
            _: &str,
        ) -> Result<Option<crate::model::CustomerDetail>, ApiError> {
            unimplemented!()
        }
        async fn customers(
            &self,
            _: &crate::model::CustomerQuery,
        ) -> Result<crate::model::CustomerPage, ApiError> {
            unimplemented!()
        }
        async fn ping(&self) -> Result<(), ApiError> {
            if self.panicking.load(std::sync::atomic::Ordering::SeqCst) {
                panic!("injected: the database probe panics");
            }
            Ok(())
        }
        async fn kpis(
            &self,
            _: &crate::model::KpiQuery,
        ) -> Result<crate::model::KpiRows, ApiError> {
            unimplemented!()
        }
        async fn position(&self) -> Result<u64, ApiError> {
            unimplemented!()
        }
        async fn outbox(&self, _: i64, _: u32) -> Result<Vec<crate::model::OutboxRow>, ApiError> {
            unimplemented!()
        }
        async fn active(
            &self,
        ) -> Result<Option<(crate::model::Snapshot, patron_lifecycle::Rules)>, ApiError> {
            unimplemented!()
        }
        async fn stream(
            &self,
            _: &patron_domain::CustomerId,
            _: u64,
            _: usize,
        ) -> Result<Vec<patron_store::RecordedEvent>, ApiError> {
            unimplemented!()
        }
        fn event_store(&self) -> Option<Arc<dyn EventStore>> {
            None
        }
    }

    /// A probe that panics turns health to NOT_SERVING and the watch goes on: health serves
    /// again once the probe answers.
    #[tokio::test]
    async fn a_panicking_probe_is_not_serving_and_the_watch_goes_on() {
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_server::Health as _;
        let (reporter, _) = tonic_health::server::health_reporter();
        let health = tonic_health::server::HealthService::from_health_reporter(reporter.clone());
        let models = Arc::new(Flaky {
            panicking: std::sync::atomic::AtomicBool::new(false),
        });
        let watch = tokio::spawn(watch_database(
            reporter,
            models.clone(),
            Duration::from_millis(10),
        ));
        let status = || async {
            health
                .check(tonic::Request::new(HealthCheckRequest {
                    service: String::new(),
                }))
                .await
                .map(|r| r.into_inner().status)
                .unwrap_or(-1)
        };
        let until = |wanted: ServingStatus| async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let now = status().await;
                if now == wanted as i32 {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "health stayed {now}, wanted {wanted:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        until(ServingStatus::Serving).await;
        models
            .panicking
            .store(true, std::sync::atomic::Ordering::SeqCst);
        until(ServingStatus::NotServing).await;
        models
            .panicking
            .store(false, std::sync::atomic::Ordering::SeqCst);
        until(ServingStatus::Serving).await;
        assert!(!watch.is_finished());
        watch.abort();
    }

    fn tokens(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn real_tokens_pass() {
        assert!(check_tokens(&tokens(&["s3cret", "another-one"])).is_ok());
    }

    #[test]
    fn no_token_an_empty_one_or_one_with_spaces_is_refused() {
        for bad in [
            tokens(&[]),
            tokens(&[""]),
            tokens(&["s3cret", ""]),
            tokens(&["s3cret", " "]),
            tokens(&["with space"]),
            tokens(&["tab\there"]),
        ] {
            let error = check_tokens(&bad).expect_err("refused");
            assert!(error.to_string().contains("token"), "{bad:?}: {error}");
        }
    }
}
