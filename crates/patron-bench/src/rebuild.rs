//! Projection and rebuild rates over at least a million stored events of realistic demo traffic
//! (customers with habits: purchases, refunds, visits, feedback, acquisitions), stored in event
//! time order, against the ingest rate measured in the same run.
//!
//! The real commands run: `patron project` from nothing to the head (the live projector), then
//! `patron rebuild`, which folds the whole log into a new generation and swaps it in for the one
//! the projector built (what an operator does after a rules change). Then the live projector
//! again, over the same events with about one in ten stored late (up to 30 days of event time
//! after its place): each late event re-folds its customer from its stream and publishes the
//! corrections, and that rate is printed beside the rate with none.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{TimeDelta, Utc};
use patron_domain::{Event, ValidationPolicy};
use patron_store::{AppendBatch, EventStore, ExpectedVersion, StreamAppend};
use patron_store_sql::{ConnectOptions, PgEventStore};
use sqlx::{Connection, Executor, PgConnection};

use crate::ingest::peak_rss_mib;

/// Two years of demo traffic from `customers` customers, validated, in event time order.
fn demo(customers: usize) -> Vec<Event> {
    let now = Utc::now();
    let mut generator = patron_demo::Generator::new(2024, customers, now - TimeDelta::days(730));
    let policy = ValidationPolicy::at(now);
    let mut events = patron_demo::into_events(generator.until(now), &policy);
    // The generator emits a customer's later refunds and answers with the purchase: sorted, the
    // log is in event-time order (the late-event measurement then moves some on purpose).
    events.sort_by_key(|e| (e.occurred_at, e.event_id));
    events
}

/// At least `events` demo events (more customers until there are enough).
pub(crate) fn enough_demo(events: usize) -> Vec<Event> {
    let sample = demo(500).len().max(1);
    let mut customers = (events * 500 / sample).max(1) + 1;
    loop {
        let all = demo(customers);
        if all.len() >= events {
            return all;
        }
        customers += customers / 10 + 1;
    }
}

async fn checkpoint(db: &mut PgConnection) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT g.checkpoint FROM projection_generations g JOIN projection_active a USING (generation)",
    )
    .fetch_optional(db)
    .await
    .ok()
    .flatten()
}

pub(crate) async fn run(
    url: &str,
    patron: &Path,
    events: usize,
    ingest_rate: f64,
) -> anyhow::Result<()> {
    let demo = enough_demo(events);
    let in_order = in_scratch_database(url, |db_url| {
        let demo = &demo;
        async move { measure(&db_url, patron, demo, ingest_rate, &mut std::io::stdout()).await }
    })
    .await?;
    let late = with_late(&demo);
    let late_elapsed = in_scratch_database(url, |db_url| {
        let late = &late;
        async move { store_and_project(&db_url, patron, late, &mut std::io::sink()).await }
    })
    .await?;
    let count = demo.len() as f64;
    let (rate, late_rate) = (
        count / in_order.as_secs_f64(),
        count / late_elapsed.as_secs_f64(),
    );
    use std::io::Write as _;
    writeln!(
        std::io::stdout(),
        "patron project, the same events, {:.1} % stored late (1-30 days): {late_rate:>10.0} events/s   ratio to in order ({rate:.0} events/s) {:.2}",
        100.0 * late_count(&demo) as f64 / count,
        late_rate / rate
    )?;
    Ok(())
}

/// Whether the demo event at `index` is one of the late ones (about one in ten, fixed).
fn is_late(index: usize) -> bool {
    // A fixed mix of the index: the same events are late in every run.
    (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58 < 6
}

/// How many events [`with_late`] holds back.
fn late_count(demo: &[Event]) -> usize {
    (0..demo.len()).filter(|&i| is_late(i)).count()
}

/// The same events (in event-time order) with about one in ten stored late: at the place in the
/// log where event time has reached 1 to 30 days after its own.
fn with_late(demo: &[Event]) -> Vec<Event> {
    let mut keyed: Vec<(chrono::DateTime<Utc>, usize, &Event)> = demo
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let delay = if is_late(i) {
                let days = 1 + (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D) % 30;
                TimeDelta::days(i64::try_from(days).unwrap_or(30))
            } else {
                TimeDelta::zero()
            };
            (event.occurred_at + delay, i, event)
        })
        .collect();
    keyed.sort_by_key(|(arrives, i, _)| (*arrives, *i));
    keyed.into_iter().map(|(_, _, e)| e.clone()).collect()
}

/// Runs `body` with the URL of a new, empty database on the server of `url`, and drops the
/// database afterwards (also when `body` fails).
pub(crate) async fn in_scratch_database<F, Fut, T>(url: &str, body: F) -> anyhow::Result<T>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut admin = PgConnection::connect(url).await?;
    let database = format!("patron_bench_{}", std::process::id());
    admin
        .execute(format!("DROP DATABASE IF EXISTS {database}").as_str())
        .await?;
    admin
        .execute(format!("CREATE DATABASE {database}").as_str())
        .await?;
    let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
    let result = body(format!("{base}/{database}")).await;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)").as_str())
        .await?;
    result
}

/// Stores `demo` in the (empty) database at `db_url`, then runs `patron project` from nothing
/// to the head and returns how long that took.
pub(crate) async fn store_and_project(
    db_url: &str,
    patron: &Path,
    demo: &[Event],
    out: &mut impl std::io::Write,
) -> anyhow::Result<Duration> {
    let store = PgEventStore::connect(&ConnectOptions::new(db_url)).await?;
    store.migrate().await?;
    for chunk in demo.chunks(5_000) {
        let batch = AppendBatch {
            streams: chunk
                .iter()
                .map(|event| StreamAppend {
                    customer_id: event.customer_id.clone(),
                    expected: ExpectedVersion::Any,
                    events: vec![event.clone()],
                })
                .collect(),
            offsets: Vec::new(),
        };
        store.append(&batch).await?;
    }
    let target = i64::try_from(demo.len())?;
    let customers = demo
        .iter()
        .map(|e| &e.customer_id)
        .collect::<std::collections::HashSet<_>>()
        .len();
    writeln!(
        out,
        "stored {} demo events of {customers} customers (two years, event time order)",
        demo.len()
    )?;
    let log = std::env::var("PATRON_LOG").unwrap_or_else(|_| "warn".into());

    // The live projector from nothing to the head (no ticks: the log stays as stored).
    let projector = Command::new(patron)
        .args([
            "project",
            "--tick-interval",
            "100000h",
            "--batch-size",
            "5000",
        ])
        .env("PATRON_DATABASE_URL", db_url)
        .env("PATRON_LOG", &log)
        .stdout(Stdio::null())
        .spawn()?;
    let mut db = PgConnection::connect(db_url).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(1800);
    while checkpoint(&mut db).await < Some(target) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the projector did not finish in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let project_elapsed = started.elapsed();
    let _ = Command::new("kill")
        .args(["-TERM", &projector.id().to_string()])
        .status();
    let _ = projector.wait_with_output();
    drop(db);
    Ok(project_elapsed)
}

/// Projects and rebuilds `demo`; returns how long the live projector took.
async fn measure(
    db_url: &str,
    patron: &Path,
    demo: &[Event],
    ingest_rate: f64,
    out: &mut impl std::io::Write,
) -> anyhow::Result<Duration> {
    let project_elapsed = store_and_project(db_url, patron, demo, out).await?;
    let target = demo.len();
    let log = std::env::var("PATRON_LOG").unwrap_or_else(|_| "warn".into());

    let started = Instant::now();
    let rebuild = Command::new(patron)
        .args(["rebuild"])
        .env("PATRON_DATABASE_URL", db_url)
        .env("PATRON_LOG", &log)
        .stdout(Stdio::null())
        .spawn()
        .context("start patron rebuild")?;
    let pid = rebuild.id();
    let sampler = std::thread::spawn(move || {
        let mut peak = None;
        while let Some(mib) = peak_rss_mib(pid) {
            peak = Some(mib);
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    });
    let status = rebuild.wait_with_output()?.status;
    let rebuild_elapsed = started.elapsed();
    let rss = sampler.join().ok().flatten();
    anyhow::ensure!(status.success(), "patron rebuild failed");

    let events = target as f64;
    let project_rate = events / project_elapsed.as_secs_f64();
    let rebuild_rate = events / rebuild_elapsed.as_secs_f64();
    writeln!(
        out,
        "patron project (live projector, 0 → head):     {project_rate:>10.0} events/s   ratio to ingest {:.2}",
        project_rate / ingest_rate
    )?;
    writeln!(
        out,
        "patron rebuild (whole command, swap included): {rebuild_rate:>10.0} events/s   ratio to ingest {:.2}  (target ≥ 3.00)",
        rebuild_rate / ingest_rate
    )?;
    if let Some(mib) = rss {
        writeln!(
            out,
            "peak RSS of the rebuild process (sampled): {mib:.0} MiB"
        )?;
    }
    // The API over the read models just rebuilt.
    crate::api::run(db_url, patron, out).await?;
    Ok(project_elapsed)
}

/// Options of the stand-alone projection benchmark.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// At least this many demo events are stored, then projected and rebuilt.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// The ingest rate (events/s) to compare with; `patron-bench ingest` measures it in the same
    /// run and passes it on.
    #[arg(long)]
    ingest_rate: f64,
}

/// The projection and rebuild measurement alone, against a given ingest rate.
pub(crate) async fn run_alone(url: &str, args: Args) -> anyhow::Result<()> {
    let patron = std::env::current_exe()?
        .parent()
        .context("bench binary directory")?
        .join("patron");
    run(url, &patron, args.events, args.ingest_rate).await
}
