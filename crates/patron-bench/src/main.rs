//! `patron-bench`: throughput benchmarks, each printed as a ratio to a raw baseline measured on
//! the same machine in the same run (these machines are shared and noisy: absolute numbers vary,
//! ratios much less).

mod api;
mod fold;
mod ingest;
mod rebuild;
mod store;

use clap::{Parser, Subcommand};

/// The allocator `patron` itself runs with: the load generators and baselines here should not
/// be slowed by a weaker one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Patron benchmarks.
#[derive(Debug, Parser)]
struct Cli {
    /// PostgreSQL server to benchmark against; a scratch schema is created and dropped.
    #[arg(
        long,
        env = "PATRON_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Event store append throughput for batches of 1, 100 and 1,000 events, against a raw
    /// `INSERT … SELECT generate_series` of identical rows into an identical table.
    Store(store::Args),
    /// End-to-end ingest rate from a Kafka topic into PostgreSQL through `patron ingest`, and its
    /// peak memory, against a raw insert of identical rows; then the `rebuild` benchmark against
    /// the ingest rate just measured.
    Ingest(ingest::Args),
    /// `patron project` and `patron rebuild` rates over at least a million stored demo events,
    /// against a given ingest rate (`ingest` runs this with the rate it measured); then
    /// `GetCustomer` throughput and latency at 64 concurrent requests against the raw
    /// primary-key `SELECT` on the same read models.
    Rebuild(rebuild::Args),
    /// `GetCustomer` throughput and latency alone (the last part of `rebuild`): stores and
    /// projects demo events into a scratch database, then measures the API against the raw
    /// primary-key `SELECT` on the same read models.
    Api(api::Args),
    /// The projector's fold alone, in memory (no database): the ceiling of the rebuild rate, and
    /// the thing to profile.
    Fold(fold::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.bench {
        Bench::Store(args) => store::run(&cli.database_url, args).await,
        Bench::Ingest(args) => ingest::run(&cli.database_url, args).await,
        Bench::Rebuild(args) => rebuild::run_alone(&cli.database_url, args).await,
        Bench::Api(args) => api::run_alone(&cli.database_url, args).await,
        Bench::Fold(args) => fold::run(args),
    }
}
