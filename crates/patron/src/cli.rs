//! Command-line and environment configuration. Every option has a `PATRON_…` variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Patron: an event-sourced customer-lifecycle backend.
///
/// Patron stores customer events (purchases, refunds, interactions, feedback, profile changes)
/// in an append-only event store: PostgreSQL in production, SQLite embedded by default.
/// Every option can also be set through the environment variable shown with it.
#[derive(Debug, Parser)]
#[command(name = "patron", version, about, long_about)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) database: DatabaseArgs,
    #[command(flatten)]
    pub(crate) log: LogArgs,
    /// Serve Prometheus metrics (`/metrics`), liveness (`/livez`) and readiness (`/readyz`, false
    /// while the database is unreachable) over HTTP on this address, e.g. `0.0.0.0:9464`.
    #[arg(long, env = "PATRON_METRICS_LISTEN", global = true)]
    pub(crate) metrics_listen: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where the event store lives.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Database")]
pub(crate) struct DatabaseArgs {
    /// Event store database: `sqlite://PATH` (embedded; the file is created when missing) or
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`.
    #[arg(
        long,
        env = "PATRON_DATABASE_URL",
        default_value = "sqlite://data/patron.db",
        global = true,
        hide_env_values = true
    )]
    pub(crate) database_url: String,

    /// Most database connections to open.
    #[arg(
        long,
        env = "PATRON_DATABASE_MAX_CONNECTIONS",
        default_value_t = 8,
        global = true
    )]
    pub(crate) database_max_connections: u32,

    /// How long to keep trying to reach the database before giving up (e.g. `500ms`, `10s`).
    #[arg(long, env = "PATRON_DATABASE_CONNECT_TIMEOUT", default_value = "10s",
          value_parser = humantime::parse_duration, global = true)]
    pub(crate) database_connect_timeout: std::time::Duration,
}

/// Logging.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logging")]
pub(crate) struct LogArgs {
    /// Log filter, in `tracing` syntax (e.g. `info`, `patron=debug,sqlx=warn`). Logs go to stderr.
    #[arg(long, env = "PATRON_LOG", default_value = "info", global = true)]
    pub(crate) log: String,

    /// Log format.
    #[arg(long, env = "PATRON_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub(crate) log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create or upgrade the database schema. Safe to run any number of times.
    Migrate,
    /// Append events from a file of CloudEvents JSON lines (a backfill), validating each one.
    ///
    /// Valid events are appended in batches; events already stored (same `event_id`) are counted
    /// as duplicates, so an import can be re-run safely. Invalid lines are reported with their
    /// line number and reason (and written to `--rejects` when given); they never stop the import.
    Import(ImportArgs),
    /// Print stored events as JSON lines: one customer's stream, or the global log.
    Events(EventsArgs),
    /// Consume customer events from Kafka into the event store, effectively once.
    ///
    /// Records are decoded (protobuf, or CloudEvents JSON in structured or binary mode),
    /// validated and appended in batches; each batch's Kafka offsets are stored in the same
    /// transaction, and on every partition assignment consumption restarts from them. Records
    /// that fail go to `<topic><dead-letter-suffix>` with headers saying why. If the database is
    /// unreachable, consumption pauses and resumes when it is back. SIGTERM or Ctrl-C commits the
    /// batch in hand and exits.
    Ingest(IngestArgs),
    /// Project the event store into the read models (lifecycle stages with history and reasons,
    /// customer value, RFM and tiers, population KPIs) and the lifecycle outbox.
    ///
    /// Follows the log from the active read models' checkpoint; each page of changes commits
    /// with its checkpoint in one transaction. While the log is quiet it appends a tick (event
    /// time catching up with the clock), so customers become at risk or churned by silence and a
    /// replay sees the same ticks. Run one projector per database.
    Project(ProjectArgs),
    /// Publish lifecycle changes from the outbox to Kafka (protobuf `patron.lifecycle.v1`,
    /// key = customer id), at least once and in order per customer.
    Relay(RelayArgs),
    /// Rebuild the read models from position zero into a new generation and swap it in; queries
    /// and a running projector carry on meanwhile. Needed after changing the lifecycle rules.
    Rebuild(RebuildArgs),
    /// Serve the gRPC API (customer queries over the read models), with grpc.health.v1 health
    /// checking and server reflection, so grpcurl works with no proto files. Every call but
    /// health and reflection needs `authorization: Bearer <token>`.
    Api(ApiArgs),
    /// Run ingest, the projector, the relay and the API in one process (against PostgreSQL and a
    /// real Kafka in production). SIGTERM stops them all: ingest commits the batch in hand,
    /// the projector its page, the API drains.
    Serve(ServeArgs),
    /// Print the configuration reference (every option, its variable and default) as Markdown.
    #[command(hide = true)]
    ConfigReference,
    /// Print the lifecycle rules in force (the defaults, or `--rules`), as TOML, after checking
    /// them.
    Rules(RulesArgs),
    /// Run the whole flow on this machine, with nothing to install: an embedded Kafka, demo
    /// traffic (a year of history from customers with different habits, then live events, with
    /// the odd malformed record), ingest into the event store (SQLite in ./data by default), the
    /// projector, the relay (to `patron.lifecycle.v1` on the embedded Kafka) and the gRPC API.
    /// Ctrl-C stops; running again resumes from the stored state.
    Dev(DevArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// Demo customers.
    #[arg(long, env = "PATRON_DEV_CUSTOMERS", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) customers: u32,

    /// Days of history generated at start.
    #[arg(long, env = "PATRON_DEV_HISTORY_DAYS", default_value_t = 365,
          value_parser = clap::value_parser!(i64).range(0..=3650))]
    pub(crate) history_days: i64,

    /// Live events per second after the history.
    #[arg(long, env = "PATRON_DEV_RATE", default_value_t = 5)]
    pub(crate) rate: usize,

    /// Seed of the history (the same seed gives the same history, stored once).
    #[arg(long, env = "PATRON_DEV_SEED", default_value_t = 42)]
    pub(crate) seed: u64,

    /// Where the gRPC API listens.
    #[arg(long, env = "PATRON_DEV_API_LISTEN", default_value = "127.0.0.1:50051")]
    pub(crate) api_listen: std::net::SocketAddr,

    /// The bearer token the API accepts in dev.
    #[arg(long, env = "PATRON_DEV_API_TOKEN", default_value = "dev-token")]
    pub(crate) api_token: String,
}

/// Lifecycle rules.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Lifecycle rules")]
pub(crate) struct RulesArgs {
    /// A TOML file of lifecycle rules (`patron rules` prints the defaults, documented). Missing
    /// fields take their defaults; unknown fields and inconsistent values are refused at start.
    #[arg(long, env = "PATRON_RULES")]
    pub(crate) rules: Option<PathBuf>,
}

/// How the projector runs.
#[derive(Debug, Args)]
pub(crate) struct ProjectArgs {
    #[command(flatten)]
    pub(crate) rules: RulesArgs,

    /// Most events per transaction.
    #[arg(long, env = "PATRON_PROJECT_BATCH_SIZE", default_value_t = 2000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) batch_size: u32,

    /// How long to wait before looking for new events when caught up (e.g. `200ms`).
    #[arg(long, env = "PATRON_PROJECT_POLL", default_value = "200ms",
          value_parser = humantime::parse_duration)]
    pub(crate) poll: std::time::Duration,

    /// Append a tick when event time lags the clock by this much while the log is quiet.
    #[arg(long, env = "PATRON_PROJECT_TICK_INTERVAL", default_value = "60s",
          value_parser = humantime::parse_duration)]
    pub(crate) tick_interval: std::time::Duration,
}

/// How the relay runs.
#[derive(Debug, Args)]
pub(crate) struct RelayArgs {
    #[command(flatten)]
    pub(crate) kafka: KafkaArgs,

    /// The topic lifecycle changes are published to.
    #[arg(
        long,
        env = "PATRON_LIFECYCLE_TOPIC",
        default_value = "patron.lifecycle.v1"
    )]
    pub(crate) lifecycle_topic: String,

    /// Most records per publish.
    #[arg(long, env = "PATRON_RELAY_BATCH_SIZE", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) batch_size: u32,
}

/// How the API listens and whom it lets in.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "gRPC API")]
pub(crate) struct ApiArgs {
    /// Address to listen on (use `0.0.0.0:50051` in a container).
    #[arg(long, env = "PATRON_API_LISTEN", default_value = "127.0.0.1:50051")]
    pub(crate) api_listen: std::net::SocketAddr,

    /// Bearer tokens accepted (comma-separated in the variable); at least one is required.
    #[arg(
        long = "api-token",
        env = "PATRON_API_TOKENS",
        value_delimiter = ',',
        hide_env_values = true,
        required = true
    )]
    pub(crate) api_tokens: Vec<String>,
}

/// Everything `patron serve` runs, with the options of each service.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) ingest: IngestArgs,
    #[command(flatten)]
    pub(crate) rules: RulesArgs,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
    /// The topic lifecycle changes are published to.
    #[arg(
        long,
        env = "PATRON_LIFECYCLE_TOPIC",
        default_value = "patron.lifecycle.v1"
    )]
    pub(crate) lifecycle_topic: String,
}

/// How a rebuild runs.
#[derive(Debug, Args)]
pub(crate) struct RebuildArgs {
    #[command(flatten)]
    pub(crate) rules: RulesArgs,

    /// Events per read.
    #[arg(long, env = "PATRON_REBUILD_PAGE_SIZE", default_value_t = 50_000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) page_size: u32,
}

/// Where Kafka is.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Kafka")]
pub(crate) struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated.
    #[arg(long, env = "PATRON_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub(crate) kafka_brokers: String,

    /// Extra librdkafka client properties as KEY=VALUE (repeatable; comma-separated in the
    /// variable), e.g. `security.protocol=SASL_SSL`.
    #[arg(long = "kafka-option", env = "PATRON_KAFKA_OPTIONS", value_delimiter = ',',
          value_parser = parse_key_value)]
    pub(crate) kafka_options: Vec<(String, String)>,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

#[derive(Debug, Args)]
pub(crate) struct IngestArgs {
    #[command(flatten)]
    pub(crate) kafka: KafkaArgs,

    /// Topics to consume, comma-separated.
    #[arg(
        long,
        env = "PATRON_INGEST_TOPICS",
        value_delimiter = ',',
        default_value = "customer-events"
    )]
    pub(crate) topics: Vec<String>,

    /// Consumer group id (offsets are stored in the event store under this name).
    #[arg(long, env = "PATRON_INGEST_GROUP", default_value = "patron-ingest")]
    pub(crate) group: String,

    /// Suffix of the dead-letter topic of each consumed topic.
    #[arg(long, env = "PATRON_INGEST_DEAD_LETTER_SUFFIX", default_value = ".dlq")]
    pub(crate) dead_letter_suffix: String,

    /// Most records per batch (one database transaction).
    #[arg(long, env = "PATRON_INGEST_BATCH_SIZE", default_value_t = 5000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) batch_size: u32,

    /// Longest a record waits for its batch to fill (e.g. `100ms`).
    #[arg(long, env = "PATRON_INGEST_BATCH_MAX_DELAY", default_value = "100ms",
          value_parser = humantime::parse_duration)]
    pub(crate) batch_max_delay: std::time::Duration,

    /// Longest wait between retries while the database is unreachable (e.g. `10s`).
    #[arg(long, env = "PATRON_INGEST_RETRY_MAX_DELAY", default_value = "10s",
          value_parser = humantime::parse_duration)]
    pub(crate) retry_max_delay: std::time::Duration,

    /// Largest accepted record, in bytes; larger ones are dead-lettered.
    #[arg(long, env = "PATRON_MAX_PAYLOAD_BYTES", default_value_t = 256 * 1024)]
    pub(crate) max_payload_bytes: usize,
}

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The file to read, one CloudEvents JSON document per line; `-` reads standard input.
    pub(crate) file: PathBuf,

    /// Events per append transaction.
    #[arg(long, env = "PATRON_IMPORT_BATCH_SIZE", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) batch_size: u32,

    /// Also write rejected lines, with their reasons, to this file (JSON lines).
    #[arg(long, env = "PATRON_IMPORT_REJECTS")]
    pub(crate) rejects: Option<PathBuf>,

    /// Largest accepted line, in bytes.
    #[arg(long, env = "PATRON_MAX_PAYLOAD_BYTES", default_value_t = 256 * 1024)]
    pub(crate) max_payload_bytes: usize,
}

#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// Print this customer's stream (otherwise the global log).
    #[arg(long)]
    pub(crate) customer: Option<String>,

    /// Start after this position (global log) or version (customer stream).
    #[arg(long, default_value_t = 0)]
    pub(crate) after: u64,

    /// Print at most this many events.
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: usize,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn every_option_has_an_environment_variable() {
        fn check(command: &clap::Command, path: &str) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                let exempt = arg.is_positional()
                    || matches!(id, "help" | "version")
                    || (path == "patron events" && matches!(id, "customer" | "after" | "limit"));
                assert!(
                    exempt || arg.get_env().is_some(),
                    "`{path} --{id}` has no PATRON_ environment variable"
                );
            }
            for sub in command.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        check(&super::Cli::command(), "patron");
    }
}
