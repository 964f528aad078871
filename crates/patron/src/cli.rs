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
    /// while the database or the Kafka brokers are unreachable) over HTTP on this address, e.g.
    /// `0.0.0.0:9464`.
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

    /// The master key of the personal data in the event store.
    #[command(flatten)]
    pub(crate) privacy: PrivacyArgs,
}

/// The master key that protects personal data.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Personal data")]
pub(crate) struct PrivacyArgs {
    /// File holding the master key (32 bytes, standard base64), e.g. a mounted Kubernetes
    /// secret. Personal data in the event store is encrypted under per-customer keys, which are
    /// stored wrapped under this key. With an embedded `sqlite://` database and no key given,
    /// `master.key` beside the database file is used, and created on first use.
    #[arg(long, env = "PATRON_MASTER_KEY_FILE", global = true)]
    pub(crate) master_key_file: Option<PathBuf>,

    /// The master key itself (32 bytes, standard base64); prefer `--master-key-file`.
    #[arg(
        long,
        env = "PATRON_MASTER_KEY",
        global = true,
        hide_env_values = true,
        conflicts_with = "master_key_file"
    )]
    pub(crate) master_key: Option<String>,
}

impl PrivacyArgs {
    /// The configured master key; for an embedded SQLite database without one, the key file
    /// beside the database (created with a new random key when missing). `None` when no key is
    /// configured for a server database.
    pub(crate) fn resolve(
        &self,
        database_url: &str,
    ) -> anyhow::Result<Option<patron_privacy::MasterKey>> {
        use anyhow::Context as _;
        if let Some(text) = &self.master_key {
            return Ok(Some(
                patron_privacy::MasterKey::from_base64(text).context("--master-key")?,
            ));
        }
        if let Some(path) = &self.master_key_file {
            return Ok(Some(patron_privacy::MasterKey::from_file(path)?));
        }
        let Some(db_path) = database_url.strip_prefix("sqlite://") else {
            return Ok(None);
        };
        let db_path = db_path.split('?').next().unwrap_or(db_path);
        if db_path.is_empty() || db_path.starts_with(':') {
            // In-memory databases live as long as the process: so does their key.
            return Ok(Some(patron_privacy::MasterKey::generate()?));
        }
        let key_path = std::path::Path::new(db_path).with_file_name("master.key");
        if key_path.exists() {
            return Ok(Some(patron_privacy::MasterKey::from_file(&key_path)?));
        }
        let key = patron_privacy::MasterKey::generate()?;
        write_secret_file(&key_path, key.to_base64().as_bytes())
            .with_context(|| format!("cannot create the master key file {}", key_path.display()))?;
        tracing::info!(path = %key_path.display(), key_id = %key.id(), "created a new master key");
        Ok(Some(key))
    }
}

/// Creates `path` readable by its owner only, failing if it already exists.
fn write_secret_file(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Logging and tracing.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logging and tracing")]
pub(crate) struct LogArgs {
    /// Log filter, in `tracing` syntax (e.g. `info`, `patron=debug,sqlx=warn`). Logs go to stderr.
    #[arg(long, env = "PATRON_LOG", default_value = "info", global = true)]
    pub(crate) log: String,

    /// Log format.
    #[arg(long, env = "PATRON_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub(crate) log_format: LogFormat,

    /// Export spans over OTLP/gRPC to this collector, e.g. `http://otel-collector:4317`
    /// (unset: no export). Spans continue a caller's W3C `traceparent`.
    #[arg(long, env = "PATRON_OTLP_ENDPOINT", global = true)]
    pub(crate) otlp_endpoint: Option<String>,

    /// The `service.name` exported spans carry.
    #[arg(
        long,
        env = "PATRON_OTLP_SERVICE_NAME",
        default_value = "patron",
        global = true
    )]
    pub(crate) otlp_service_name: String,
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
    /// Check the stage histories of the active read models against the event store: count
    /// inactivity transitions contradicted by a purchase between the `last_purchase_at` they
    /// quote and the transition, and histories that differ from folding the customer's events
    /// one by one in event-time order. Both counts must be 0 (exit status 1 otherwise).
    CheckHistories,
    /// List the source partitions ingest reports as read behind their end — what holds the
    /// projector's watermark back — as JSON lines; `patron sources release` lets go of
    /// partitions that will not be read again (a topic no longer consumed).
    Sources(SourcesCommand),
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
    /// replay sees the same ticks. Several instances may run on one database: one is active,
    /// the others stand by and take over when it stops or dies.
    Project(ProjectArgs),
    /// Publish lifecycle changes from the outbox to Kafka (protobuf `patron.lifecycle.v1`,
    /// key = customer id), at least once and in order per customer.
    Relay(RelayArgs),
    /// Rebuild the read models from position zero into a new generation and swap it in; queries
    /// and a running projector carry on meanwhile. Needed after changing the lifecycle rules.
    Rebuild(RebuildArgs),
    /// Fit the predictive CLV models (BG/NBD and Gamma-Gamma) on the active read models and store
    /// a new model version with every buyer's predictions (probability alive, expected purchases,
    /// spend, revenue and CLV over the horizon).
    ///
    /// Customers are evaluated at the read models' watermark (event time). A fit that is rejected
    /// (too few customers, no repeat purchase, no convergence) is recorded with its reason, keeps
    /// the model version in force, and exits with status 1 and the reason. Prints the stored
    /// model as JSON.
    Fit(FitArgs),
    /// Serve the gRPC API (customer queries over the read models), with grpc.health.v1 health
    /// checking and server reflection, so grpcurl works with no proto files. Every call but
    /// health and reflection needs `authorization: Bearer <token>`.
    Api(ApiArgs),
    /// Run ingest, the projector, the relay and the API in one process (against PostgreSQL and a
    /// real Kafka in production). SIGTERM stops them all: ingest commits the batch in hand,
    /// the projector its page, the API drains.
    Serve(Box<ServeArgs>),
    /// Print the configuration reference (every option, its variable and default) as Markdown.
    #[command(hide = true)]
    ConfigReference,
    /// Print the lifecycle rules in force (the defaults, or `--rules`), as TOML, after checking
    /// them; `patron rules diff --rules FILE` previews what those rules would change.
    Rules(RulesCommand),
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
    #[arg(long, env = "PATRON_RULES", global = true)]
    pub(crate) rules: Option<PathBuf>,
}

/// `patron rules`: print the rules, or preview a change of rules.
#[derive(Debug, Args)]
pub(crate) struct RulesCommand {
    #[command(flatten)]
    pub(crate) rules: RulesArgs,
    #[command(subcommand)]
    pub(crate) action: Option<RulesAction>,
}

/// What `patron rules` does besides printing the rules.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum RulesAction {
    /// Preview, changing nothing, what `patron rebuild --rules FILE` would change: folds the
    /// whole log with the active read models' rules and with `--rules`, and prints how many
    /// customers would change stage (from → to), which transitions would disappear and appear
    /// (by rule), with examples.
    Diff(RulesDiffArgs),
}

/// Options of `patron rules diff`.
#[derive(Debug, Args)]
pub(crate) struct RulesDiffArgs {
    /// How many customers to show as examples.
    #[arg(long, env = "PATRON_RULES_DIFF_EXAMPLES", default_value_t = 5)]
    pub(crate) examples: usize,
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

    /// Serve TLS with this certificate chain (PEM file); needs `--api-tls-key`.
    #[arg(long, env = "PATRON_API_TLS_CERT", requires = "api_tls_key")]
    pub(crate) api_tls_cert: Option<PathBuf>,

    /// The private key (PEM file) of `--api-tls-cert`.
    #[arg(long, env = "PATRON_API_TLS_KEY", requires = "api_tls_cert")]
    pub(crate) api_tls_key: Option<PathBuf>,

    /// Mutual TLS: admit only clients whose certificate chains to these CA certificates (PEM
    /// file). Needs `--api-tls-cert`; bearer tokens are still required.
    #[arg(long, env = "PATRON_API_TLS_CLIENT_CA", requires = "api_tls_cert")]
    pub(crate) api_tls_client_ca: Option<PathBuf>,

    /// Keep up to this many customers cached for GetCustomer (0: no cache). Entries are dropped
    /// exactly when the projector changes them (it records each commit's customers), so reads
    /// stay as fresh as the refresh interval, and requests with `min_position` never see older
    /// data than asked for.
    #[arg(long, env = "PATRON_API_CACHE_CUSTOMERS", default_value_t = 50_000)]
    pub(crate) api_cache_customers: usize,

    /// How often the cache reads the projector's change records (e.g. `100ms`).
    #[arg(long, env = "PATRON_API_CACHE_REFRESH", default_value = "100ms",
          value_parser = humantime::parse_duration)]
    pub(crate) api_cache_refresh: std::time::Duration,

    #[command(flatten)]
    pub(crate) clv: ClvArgs,
}

impl ApiArgs {
    /// The API's configuration, with the TLS files read.
    pub(crate) fn config(&self) -> anyhow::Result<patron_api::ApiConfig> {
        use anyhow::Context as _;
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path)
                .with_context(|| format!("cannot read the {what} {}", path.display()))
        };
        let mut config = patron_api::ApiConfig::new(self.api_listen, self.api_tokens.clone());
        config.fit = self.clv.config();
        config.cache = patron_api::CacheConfig {
            capacity: self.api_cache_customers,
            refresh: self.api_cache_refresh,
        };
        if let (Some(certificate), Some(key)) = (&self.api_tls_cert, &self.api_tls_key) {
            config.tls = Some(patron_api::TlsConfig {
                certificate: read(certificate, "certificate (--api-tls-cert)")?,
                key: read(key, "private key (--api-tls-key)")?,
                client_ca: self
                    .api_tls_client_ca
                    .as_ref()
                    .map(|ca| read(ca, "client CA (--api-tls-client-ca)"))
                    .transpose()?,
            });
        }
        Ok(config)
    }
}

/// What a predictive-CLV fit predicts.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Predictive CLV")]
pub(crate) struct ClvArgs {
    /// Predict purchases, revenue and CLV over this many days after the evaluation time.
    #[arg(long, env = "PATRON_CLV_HORIZON_DAYS", default_value_t = 365,
          value_parser = clap::value_parser!(u32).range(1..=36_525))]
    pub(crate) clv_horizon_days: u32,

    /// Annual discount rate of the CLV (0.1 = 10 % a year), compounded monthly.
    #[arg(long, env = "PATRON_CLV_DISCOUNT_RATE", default_value_t = 0.10,
          value_parser = parse_discount_rate)]
    pub(crate) clv_discount_rate: f64,

    /// Fewest customers with a purchase for a fit to be attempted.
    #[arg(long, env = "PATRON_CLV_MIN_CUSTOMERS", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(2..))]
    pub(crate) clv_min_customers: u32,
}

impl ClvArgs {
    /// The fit configuration.
    pub(crate) fn config(&self) -> patron_projector::clv::FitConfig {
        patron_projector::clv::FitConfig {
            horizon_days: self.clv_horizon_days,
            annual_discount_rate: self.clv_discount_rate,
            min_customers: usize::try_from(self.clv_min_customers).unwrap_or(usize::MAX),
        }
    }
}

/// A discount rate: a finite number above -1.
fn parse_discount_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|e| format!("not a number ({e}); e.g. 0.1 for 10 % a year"))?;
    if rate.is_finite() && rate > -1.0 {
        Ok(rate)
    } else {
        Err(format!(
            "must be finite and above -1 (0.1 = 10 % a year), got {rate}"
        ))
    }
}

/// How `patron fit` fits.
#[derive(Debug, Args)]
pub(crate) struct FitArgs {
    #[command(flatten)]
    pub(crate) clv: ClvArgs,
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
    /// Fit the predictive CLV models this often (and as soon as the active read models have no
    /// predictions, e.g. after a rebuild).
    #[arg(long, env = "PATRON_FIT_INTERVAL", default_value = "24h",
          value_parser = humantime::parse_duration)]
    pub(crate) fit_interval: std::time::Duration,
}

impl Command {
    /// The subcommand's name, as typed.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Migrate => "migrate",
            Self::Import(_) => "import",
            Self::Events(_) => "events",
            Self::CheckHistories => "check-histories",
            Self::Sources(_) => "sources",
            Self::Ingest(_) => "ingest",
            Self::Project(_) => "project",
            Self::Relay(_) => "relay",
            Self::Rebuild(_) => "rebuild",
            Self::Fit(_) => "fit",
            Self::Api(_) => "api",
            Self::Serve(_) => "serve",
            Self::ConfigReference => "config-reference",
            Self::Rules(_) => "rules",
            Self::Dev(_) => "dev",
        }
    }

    /// The brokers this command talks to, when it talks to a broker of the user's (readiness
    /// checks them). `dev` runs its own in the process.
    pub(crate) fn kafka(&self) -> Option<patron_kafka::KafkaSettings> {
        match self {
            Self::Ingest(args) => Some(args.kafka.settings()),
            Self::Serve(args) => Some(args.ingest.kafka.settings()),
            Self::Relay(args) => Some(args.kafka.settings()),
            _ => None,
        }
    }
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

    /// Publish no corrections at the swap: lifecycle records published before that the new
    /// read models no longer hold stay as they were (not retracted), and how many customers that
    /// leaves different is printed. By default they are retracted and the new records published.
    #[arg(long, env = "PATRON_REBUILD_NO_CORRECTIONS")]
    pub(crate) no_corrections: bool,
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

impl KafkaArgs {
    /// The client settings these options describe.
    pub(crate) fn settings(&self) -> patron_kafka::KafkaSettings {
        patron_kafka::KafkaSettings {
            brokers: self.kafka_brokers.clone(),
            options: self.kafka_options.clone(),
        }
    }
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

    /// Static group membership: this member's stable id (`group.instance.id`), e.g. the pod's
    /// name. A member restarted under the same id takes its partitions back at once instead of
    /// waiting for its old session to time out. Unset: dynamic membership.
    #[arg(long, env = "PATRON_INGEST_GROUP_INSTANCE_ID")]
    pub(crate) group_instance_id: Option<String>,

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

    /// Largest accepted record, in bytes (key, headers and payload); larger ones are
    /// dead-lettered.
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

    /// Largest accepted line, in bytes; a longer one is rejected without being held in memory.
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

    /// `json`: each event as stored, with its position and version. `cloudevents`: CloudEvents
    /// JSON documents that `patron import` reads (an export; Patron's own `$…` streams and the
    /// `customers_merged` events the store writes are left out, and personal data is in clear).
    #[arg(long, value_enum, default_value_t = EventsFormat::Json)]
    pub(crate) format: EventsFormat,
}

/// `patron sources`: list the partitions behind, or release some.
#[derive(Debug, Args)]
pub(crate) struct SourcesCommand {
    #[command(subcommand)]
    pub(crate) action: Option<SourcesAction>,
}

/// What `patron sources` does besides listing.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SourcesAction {
    /// Report partitions as no longer behind (a `source_progress` event in the `$sources`
    /// stream), so that they stop holding the watermark: for a topic, or one partition of it,
    /// that no ingest will read again. A partition still consumed is reported behind again by
    /// its ingest when it next reads it behind its end.
    Release(SourcesReleaseArgs),
}

/// Options of `patron sources release`.
#[derive(Debug, Args)]
pub(crate) struct SourcesReleaseArgs {
    /// The topic whose partitions to release.
    #[arg(long, env = "PATRON_SOURCES_TOPIC")]
    pub(crate) topic: String,

    /// Only this partition (otherwise every partition of the topic reported behind).
    #[arg(long, env = "PATRON_SOURCES_PARTITION")]
    pub(crate) partition: Option<i32>,
}

/// How `patron events` prints events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum EventsFormat {
    /// As stored.
    Json,
    /// As CloudEvents, for `patron import`.
    Cloudevents,
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
                    || (path == "patron events"
                        && matches!(id, "customer" | "after" | "limit" | "format"));
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

    #[test]
    #[allow(clippy::unwrap_used)]
    fn master_key_is_configured_or_kept_beside_an_embedded_database() {
        let dir = std::env::temp_dir().join(format!("patron-cli-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let url = format!("sqlite://{}/patron.db", dir.display());
        let none = super::PrivacyArgs {
            master_key_file: None,
            master_key: None,
        };
        let created = none.resolve(&url).unwrap().unwrap();
        let again = none.resolve(&url).unwrap().unwrap();
        assert_eq!(created.id(), again.id(), "the key file is reused");
        assert!(dir.join("master.key").exists());
        assert!(none.resolve("postgres://127.0.0.1/test").unwrap().is_none());

        let given = super::PrivacyArgs {
            master_key_file: None,
            master_key: Some(created.to_base64().to_string()),
        };
        assert_eq!(
            given.resolve("postgres://x/y").unwrap().unwrap().id(),
            created.id()
        );
        let from_file = super::PrivacyArgs {
            master_key_file: Some(dir.join("master.key")),
            master_key: None,
        };
        assert_eq!(
            from_file.resolve("postgres://x/y").unwrap().unwrap().id(),
            created.id()
        );
        let bad = super::PrivacyArgs {
            master_key_file: None,
            master_key: Some("short".into()),
        };
        assert!(bad.resolve("postgres://x/y").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
