//! End-to-end ingest rate: records already in a Kafka topic, consumed by the real `patron ingest`
//! process into PostgreSQL, against a raw insert of identical rows measured in the same run; then
//! the projection and rebuild rates (see `rebuild.rs`), against that ingest rate.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use patron_kafka::testing::{TestRecord, create_topic, produce};
use sqlx::{Connection, Executor, PgConnection};

use crate::store::{purchase, raw_rate};

/// Options of the ingest benchmark.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Kafka-compatible broker to produce to and consume from (`make bench` starts one).
    #[arg(
        long,
        env = "PATRON_BENCH_KAFKA_BROKERS",
        default_value = "127.0.0.1:19092"
    )]
    brokers: String,
    /// Events produced, then ingested.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Distinct customers the events are spread over.
    #[arg(long, default_value_t = 10_000)]
    customers: usize,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
}

/// A protobuf record (the canonical wire format) carrying the same event the store benchmark
/// appends, with event times spread evenly over the year before `end`.
fn record(
    n: usize,
    events: usize,
    customers: usize,
    end: DateTime<Utc>,
) -> anyhow::Result<TestRecord> {
    use patron_proto::events::v1 as pb;
    use prost::Message as _;
    let mut event = purchase(n % customers, n)?;
    let year = TimeDelta::days(365).num_seconds();
    let offset = year * i64::try_from(n)? / i64::try_from(events.max(1))?;
    event.occurred_at = end - TimeDelta::seconds(year - offset);
    let money = |minor_units: i64| pb::Money {
        minor_units,
        currency: "USD".into(),
    };
    let message = pb::CustomerEvent {
        identity: None,
        event_id: event.event_id.to_string(),
        customer_id: event.customer_id.as_str().to_owned(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: event.occurred_at.timestamp(),
            nanos: i32::try_from(event.occurred_at.timestamp_subsec_nanos()).unwrap_or(0),
        }),
        source: event.source.clone(),
        extra: None,
        body: Some(pb::customer_event::Body::Purchase(pb::Purchase {
            order_id: format!("o-{n}"),
            amount: Some(money(2599)),
            items: vec![pb::LineItem {
                sku: "tea".into(),
                quantity: 2,
                unit_price: Some(money(1299)),
            }],
        })),
    };
    Ok(TestRecord {
        key: Some(event.customer_id.as_str().as_bytes().to_vec()),
        headers: vec![("content-type".into(), b"application/protobuf".to_vec())],
        payload: message.encode_to_vec(),
    })
}

pub(crate) fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

async fn head(db: &mut PgConnection) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT position FROM event_log_head")
        .fetch_one(db)
        .await?)
}

pub(crate) async fn run(url: &str, args: Args) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let patron = std::env::current_exe()?
        .parent()
        .context("bench binary directory")?
        .join("patron");
    anyhow::ensure!(
        patron.exists(),
        "{} is missing: cargo build --release -p patron",
        patron.display()
    );

    let topic = format!("bench-{}", uuid::Uuid::new_v4().simple());
    create_topic(&args.brokers, &topic, args.partitions).await;
    let produce_started = Instant::now();
    let end = Utc::now();
    for start in (0..args.events).step_by(50_000) {
        let chunk: Vec<TestRecord> = (start..(start + 50_000).min(args.events))
            .map(|n| record(n, args.events, args.customers, end))
            .collect::<anyhow::Result<_>>()?;
        produce(&args.brokers, &topic, &chunk).await;
    }
    writeln!(
        out,
        "produced {} events to {topic} in {:.1} s",
        args.events,
        produce_started.elapsed().as_secs_f64()
    )?;

    // The broker's own read rate, for context: a plain consumer reading the whole topic.
    let broker_rate = patron_kafka::testing::read_rate(
        &args.brokers,
        &topic,
        args.events,
        Duration::from_secs(600),
    )
    .await;
    writeln!(
        out,
        "plain consumer read of the topic:              {broker_rate:>10.0} records/s"
    )?;

    let mut admin = PgConnection::connect(url).await?;
    let database = format!("patron_bench_ingest_{}", std::process::id());
    admin
        .execute(format!("DROP DATABASE IF EXISTS {database}").as_str())
        .await?;
    admin
        .execute(format!("CREATE DATABASE {database}").as_str())
        .await?;
    let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
    let db_url = format!("{base}/{database}");
    let status = Command::new(&patron)
        .args(["migrate"])
        .env("PATRON_DATABASE_URL", &db_url)
        .status()?;
    anyhow::ensure!(status.success(), "patron migrate failed");

    let mut child = Command::new(&patron)
        .args([
            "ingest",
            "--kafka-brokers",
            &args.brokers,
            "--topics",
            &topic,
            "--group",
            &topic,
        ])
        .env("PATRON_DATABASE_URL", &db_url)
        .env(
            "PATRON_LOG",
            std::env::var("PATRON_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .spawn()?;
    let mut db = PgConnection::connect(&db_url).await?;
    let target = i64::try_from(args.events)?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    // Time from the first committed batch (the group join is not ingest work) to the last.
    let (first_at, first_head) = loop {
        let h = head(&mut db).await?;
        if h > 0 {
            break (Instant::now(), h);
        }
        anyhow::ensure!(Instant::now() < deadline, "ingest stored nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    loop {
        if head(&mut db).await? >= target {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "ingest did not finish in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = first_at.elapsed();
    let rss = peak_rss_mib(child.id());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    drop(db);
    admin
        .execute(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)").as_str())
        .await?;

    let rate = (target - first_head) as f64 / elapsed.as_secs_f64();
    let payload = purchase(0, 0)?.body.to_payload_string();
    let raw = raw_rate(url, args.events, args.customers, &payload).await?;
    writeln!(
        out,
        "end-to-end ingest (Kafka → decode → validate → append + offsets), {} events",
        args.events
    )?;
    writeln!(
        out,
        "raw INSERT … SELECT generate_series, same rows: {raw:>10.0} rows/s"
    )?;
    writeln!(
        out,
        "patron ingest:                                 {rate:>10.0} events/s   ratio {:.2}  (target ≥ 0.50)",
        rate / raw
    )?;
    match rss {
        Some(mib) => writeln!(
            out,
            "peak RSS of the ingest process: {mib:.0} MiB  (target < 300 MiB)"
        )?,
        None => writeln!(
            out,
            "peak RSS of the ingest process: unavailable (no /proc)"
        )?,
    }
    drop(out);
    crate::rebuild::run(url, &patron, args.events, rate).await?;
    Ok(())
}
