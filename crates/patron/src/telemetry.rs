//! Logs and traces: `tracing` events to stderr (text or JSON lines, filtered by `--log`), and,
//! when `--otlp-endpoint` is set, Patron's spans exported over OTLP/gRPC in batches.
//!
//! The spans follow the flow: `ingest.decode`, `ingest.batch` and `ingest.commit` per consumed
//! batch, `projector.page` per projected page, `relay.publish` per published outbox batch,
//! `rebuild` for a rebuild, and `grpc.request` per API call (continuing the caller's trace
//! when the request carries a W3C `traceparent`).

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::cli::{LogArgs, LogFormat};

/// The crates whose spans are exported (at `info` and above): Patron's own.
const TRACED: &[&str] = &[
    "patron",
    "patron_api",
    "patron_ingest",
    "patron_kafka",
    "patron_projector",
    "patron_store_sql",
];

/// The installed exporter, flushed and stopped by [`Telemetry::shutdown`].
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered (waiting at most a few seconds for the collector).
    pub(crate) fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            eprintln!("warning: not every span was exported: {error}");
        }
    }
}

/// Installs the global subscriber. Must run inside the Tokio runtime (the OTLP exporter's
/// channel lives on it).
pub(crate) fn init(args: &LogArgs, command: &str) -> anyhow::Result<Telemetry> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .with_context(|| format!("--log {:?} is not a valid filter", args.log))?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match args.log_format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let (otel, provider) = match &args.otlp_endpoint {
        Some(endpoint) => {
            let provider = provider(endpoint, &args.otlp_service_name, command)?;
            let tracer = provider.tracer("patron");
            let traced = TRACED.iter().fold(Targets::new(), |targets, target| {
                targets.with_target(*target, Level::INFO)
            });
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(traced);
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()
        .context("cannot install the log subscriber")?;
    if let Some(endpoint) = &args.otlp_endpoint {
        tracing::info!(%endpoint, "exporting spans over OTLP");
    }
    Ok(Telemetry { provider })
}

/// A tracer provider batching spans to the OTLP/gRPC collector at `endpoint`.
fn provider(endpoint: &str, service: &str, command: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()
        .with_context(|| format!("cannot export spans to {endpoint} (--otlp-endpoint)"))?;
    let resource = Resource::builder()
        .with_service_name(service.to_owned())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("patron.command", command.to_owned()),
        ])
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
