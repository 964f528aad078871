//! `GetCustomer` over loopback gRPC at a fixed concurrency, against the raw rate of the
//! equivalent primary-key `SELECT` on the same database at the same concurrency, in the same run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use patron_proto::api::v1::GetCustomerRequest;
use sqlx::postgres::PgPoolOptions;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;

/// Concurrent requests in flight (HTTP/2 streams over one connection; pool connections for SQL).
const CONCURRENCY: usize = 64;
/// How long each side is measured.
const DURATION: Duration = Duration::from_secs(10);
const TOKEN: &str = "bench-token";

/// What the load generator reads of a `GetCustomerResponse`: the customer's id. prost skips the
/// rest of the message without building it, so decoding answers (dozens of history entries with
/// their facts) does not take the cores from the server being measured; every byte is still
/// received and framed.
#[derive(Clone, PartialEq, prost::Message)]
struct Answer {
    #[prost(message, optional, tag = "1")]
    customer: Option<AnswerCustomer>,
}

/// `Customer.customer_id` alone.
#[derive(Clone, PartialEq, prost::Message)]
struct AnswerCustomer {
    #[prost(string, tag = "1")]
    customer_id: String,
}

/// Latencies in microseconds of every request, and requests per second.
struct Measured {
    rate: f64,
    latencies: Vec<u64>,
}

impl Measured {
    fn percentile(&self, p_thousandths: usize) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        // Nearest rank, in integers: p is given in thousandths.
        let last = self.latencies.len() - 1;
        let index = last * p_thousandths / 1000;
        self.latencies[index.min(last)] as f64 / 1000.0
    }
}

/// Runs `CONCURRENCY` loops of `call` for `DURATION`; `call` gets the loop's request number.
async fn measure<F, Fut>(call: F) -> anyhow::Result<Measured>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..CONCURRENCY {
        let call = call.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut n = worker;
            while started.elapsed() < DURATION {
                let one = Instant::now();
                call(n).await?;
                latencies.push(u64::try_from(one.elapsed().as_micros()).unwrap_or(u64::MAX));
                n += CONCURRENCY;
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok(Measured {
        rate: latencies.len() as f64 / elapsed,
        latencies,
    })
}

/// Options of the stand-alone API benchmark.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// At least this many demo events are stored and projected before the API is measured.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
}

/// Stores and projects demo events into a scratch database, then measures the API over it.
pub(crate) async fn run_alone(url: &str, args: Args) -> anyhow::Result<()> {
    let patron = std::env::current_exe()?
        .parent()
        .context("bench binary directory")?
        .join("patron");
    let demo = crate::rebuild::enough_demo(args.events);
    crate::rebuild::in_scratch_database(url, |db_url| async move {
        let mut out = std::io::stdout();
        crate::rebuild::store_and_project(&db_url, &patron, &demo, &mut out).await?;
        run(&db_url, &patron, &mut out).await
    })
    .await
}

/// Measures both sides against the read models in `db_url` (already projected).
pub(crate) async fn run(
    db_url: &str,
    patron: &Path,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(CONCURRENCY)?)
        .connect(db_url)
        .await?;
    let generation: i64 = sqlx::query_scalar("SELECT generation FROM projection_active")
        .fetch_one(&pool)
        .await?;
    let ids: Arc<Vec<String>> = Arc::new(
        sqlx::query_scalar(
            "SELECT customer_id FROM customers WHERE generation = $1 ORDER BY customer_id",
        )
        .bind(generation)
        .fetch_all(&pool)
        .await?,
    );
    anyhow::ensure!(!ids.is_empty(), "no customers to query");

    let raw = {
        let (pool, ids) = (pool.clone(), ids.clone());
        measure(move |n| {
            let (pool, id) = (pool.clone(), ids[n % ids.len()].clone());
            async move {
                let row: Option<(String, Option<String>, i64, String)> = sqlx::query_as(
                    "SELECT customer_id, stage, net_revenue_minor, state FROM customers \
                     WHERE generation = $1 AND customer_id = $2",
                )
                .bind(generation)
                .bind(id)
                .fetch_optional(&pool)
                .await?;
                anyhow::ensure!(row.is_some(), "customer missing");
                Ok(())
            }
        })
        .await?
    };

    // The server gets the connections the baseline used (PostgreSQL's limit is often 100).
    pool.close().await;
    // Without the customer cache every call reads the database; with it (the default), after
    // one pass over every customer, calls are answered from memory.
    let uncached = serve_and_measure(db_url, patron, &ids, Some(0)).await?;
    let cached = serve_and_measure(db_url, patron, &ids, None).await?;

    writeln!(
        out,
        "GetCustomer over loopback gRPC, {CONCURRENCY} concurrent requests, {} s each",
        DURATION.as_secs()
    )?;
    writeln!(
        out,
        "raw primary-key SELECT (sqlx, {CONCURRENCY} connections): {:>8.0} queries/s   p50 {:.2} ms   p99 {:.2} ms",
        raw.rate,
        raw.percentile(500),
        raw.percentile(990)
    )?;
    for (label, api) in [("cache off:", &uncached), ("default cache, warm:", &cached)] {
        writeln!(
            out,
            "patron api GetCustomer, {label:<21}{:>8.0} calls/s     p50 {:.2} ms   p99 {:.2} ms   ratio {:.2}  (targets: ratio ≥ 0.50, p99 < 5 ms)",
            api.rate,
            api.percentile(500),
            api.percentile(990),
            api.rate / raw.rate
        )?;
    }
    Ok(())
}

/// Starts `patron api` with a customer cache of `cache` entries (`None`: the default size, and
/// every customer is read once first, filling the cache), then measures GetCustomer.
async fn serve_and_measure(
    db_url: &str,
    patron: &Path,
    ids: &Arc<Vec<String>>,
    cache: Option<usize>,
) -> anyhow::Result<Measured> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut server = Command::new(patron);
    server.args([
        "api",
        "--api-listen",
        &format!("127.0.0.1:{port}"),
        "--api-token",
        TOKEN,
    ]);
    match cache {
        Some(size) => server.args(["--api-cache-customers", &size.to_string()]),
        None => server.env_remove("PATRON_API_CACHE_CUSTOMERS"),
    };
    let mut server = server
        .env("PATRON_DATABASE_URL", db_url)
        .env("PATRON_DATABASE_MAX_CONNECTIONS", CONCURRENCY.to_string())
        .env("PATRON_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("start patron api")?;
    let result = async {
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let channel = loop {
            match tonic::transport::Endpoint::from_shared(endpoint.clone())?
                .connect()
                .await
            {
                Ok(channel) => break channel,
                Err(error) => {
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "patron api did not start: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let bearer: MetadataValue<_> = format!("Bearer {TOKEN}").parse()?;
        let call = {
            let ids = ids.clone();
            move |n: usize| {
                let mut client = tonic::client::Grpc::new(channel.clone());
                let id = ids[n % ids.len()].clone();
                let mut request = tonic::Request::new(GetCustomerRequest {
                    customer_id: id.clone(),
                    min_position: 0,
                });
                request
                    .metadata_mut()
                    .insert("authorization", bearer.clone());
                async move {
                    client.ready().await?;
                    let codec = tonic_prost::ProstCodec::<GetCustomerRequest, Answer>::default();
                    let path =
                        PathAndQuery::from_static("/patron.api.v1.CustomerService/GetCustomer");
                    let answer = client.unary(request, path, codec).await?.into_inner();
                    anyhow::ensure!(
                        answer.customer.map(|c| c.customer_id) == Some(id),
                        "GetCustomer answered for another customer"
                    );
                    Ok(())
                }
            }
        };
        if cache.is_none() {
            // The cache fills only once it has read the change feed (every 100 ms).
            tokio::time::sleep(Duration::from_millis(500)).await;
            for n in 0..ids.len() {
                call(n).await?;
            }
        }
        measure(call).await
    }
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    result
}
