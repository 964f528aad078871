//! Load soak: `patron serve` (ingest, projector, relay and API in one process) on PostgreSQL and
//! the Kafka mock cluster, driven over loopback for `PATRON_SOAK_SECONDS` by an open-loop mix at
//! fixed rates: live demo events produced to the input topic, `GetCustomer`, `ListCustomers` and
//! KPI queries, and lifecycle watch streams (some kept open the whole run, some reopened
//! periodically, resuming from the last change they saw). The server's resident memory is sampled
//! from /proc every second.
//!
//! Open loop: every call is issued at its scheduled time (`start + k / rate`) whatever the earlier
//! calls are doing, and its latency is measured from that scheduled time, so a stalled server
//! shows up as latency instead of as fewer calls (no coordinated omission).
//!
//! Before the timed run a year of demo history for `PATRON_SOAK_CUSTOMERS` customers (with the odd
//! malformed record) is produced and ingested, so the queries find customers with history; the
//! live events then go to the same customers, so the population is fixed. What still grows
//! legitimately is each customer's state: purchase days and order ids (for refunds and the CLV
//! models), consents, KPI months. Its size is read every second too (the stored views' JSON,
//! `customers.state`), and the RSS bound allows for it.
//!
//! At the end, always asserted: no query, produce or watch call failed; every produced valid event
//! is stored exactly once (by id) and every malformed one was dead-lettered; the read models, the
//! relay and every watch stream caught up with the log, each stream having seen every lifecycle
//! change once, in order. RSS growth after the warm-up (the first 20 % of the run, at most 60 s)
//! is asserted to stay within 10 % plus [`STATE_FACTOR`] times the growth of the stored views,
//! only for runs of at least 5 minutes; shorter runs print it.
//!
//! Rates (per second): `PATRON_SOAK_EVENTS` (500), `PATRON_SOAK_GETS` (200), `PATRON_SOAK_LISTS`
//! (20), `PATRON_SOAK_KPIS` (4); `PATRON_SOAK_WATCHERS` (4 long-lived streams),
//! `PATRON_SOAK_REOPENED` (2 streams reopened every `PATRON_SOAK_REOPEN_SECONDS`, 10).
//! `make test` runs 20 s; `make soak` runs 600 s in a release build.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss
)]

#[path = "soak/load.rs"]
mod load;

use std::collections::HashSet;
use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use load::{
    Shared, authorized, follow_changes, kpi_call, list_call, pace, produce_live, quantile_ms,
    to_kafka,
};
use patron_domain::ValidationPolicy;
use patron_e2e::{PgDatabase, patron, patron_bin};
use patron_kafka::testing::{MockKafka, TestRecord, high_watermarks};
use patron_kafka::{KafkaSettings, Producer};
use patron_proto::api::v1::GetCustomerRequest;
use patron_proto::api::v1::customer_service_client::CustomerServiceClient;
use patron_proto::api::v1::kpi_service_client::KpiServiceClient;
use patron_store::{EventStore, Position};
use patron_store_sql::{ConnectOptions, PgEventStore};
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

const INPUT: &str = "customer-events";
const LIFECYCLE: &str = "patron.lifecycle.v1";
const PARTITIONS: i32 = 4;
const TOKEN: &str = "soak-t0ken";
/// 32 bytes, standard base64: the master key that protects personal data.
const MASTER_KEY: &str = "cGF0cm9uLXNvYWstdGVzdC1tYXN0ZXIta2V5LTAwMDE=";
/// The long run from which RSS growth is asserted.
const ASSERT_RSS_FROM: Duration = Duration::from_secs(300);
/// Most RSS growth after the warm-up, in per cent, beside what the customers' state explains.
const RSS_GROWTH_LIMIT: f64 = 10.0;
/// Bytes of memory allowed per byte the stored views (`customers.state`, JSON) grew: the
/// projector holds every view, as maps of small strings and dates, and the API cache holds the
/// customers it serves; both take a few times the JSON's size.
const STATE_FACTOR: f64 = 3.0;

fn env_or(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The run's size and rates.
#[derive(Debug, Clone, Copy)]
struct Config {
    duration: Duration,
    events: f64,
    gets: f64,
    lists: f64,
    kpis: f64,
    watchers: usize,
    reopened: usize,
    reopen_every: Duration,
    customers: usize,
}

impl Config {
    fn from_env() -> Self {
        Self {
            duration: Duration::from_secs_f64(env_or("PATRON_SOAK_SECONDS", 20.0).max(5.0)),
            events: env_or("PATRON_SOAK_EVENTS", 500.0),
            gets: env_or("PATRON_SOAK_GETS", 200.0),
            lists: env_or("PATRON_SOAK_LISTS", 20.0),
            kpis: env_or("PATRON_SOAK_KPIS", 4.0),
            watchers: env_or("PATRON_SOAK_WATCHERS", 4.0) as usize,
            reopened: env_or("PATRON_SOAK_REOPENED", 2.0) as usize,
            reopen_every: Duration::from_secs_f64(
                env_or("PATRON_SOAK_REOPEN_SECONDS", 10.0).max(1.0),
            ),
            customers: env_or("PATRON_SOAK_CUSTOMERS", 500.0).max(10.0) as usize,
        }
    }

    /// The first 20 % of the run, at most 60 s: pools, caches and buffers fill up meanwhile.
    fn warm_up(&self) -> Duration {
        (self.duration / 5).min(Duration::from_secs(60))
    }
}

/// The `patron serve` process, killed if the test ends (or panics) first.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    #[track_caller]
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("patron serve exited ({status}):\n{}", self.log());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("VmRSS of process {pid}"))
}

/// The single value `sql` selects; 0 for no row or NULL.
async fn scalar(db: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar::<_, Option<i64>>(sql)
        .fetch_optional(db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .flatten()
        .unwrap_or(0)
}

/// One second of the run: time since the start, the server's RSS and the stored views' size
/// (KiB).
type Sample = (Duration, u64, u64);

/// The size of the active generation's stored views (`customers.state`), KiB.
async fn state_kib(db: &mut PgConnection) -> u64 {
    let bytes = scalar(
        db,
        "SELECT CAST(coalesce(sum(octet_length(state)), 0) AS BIGINT) FROM customers \
         WHERE generation = (SELECT generation FROM projection_active)",
    )
    .await;
    u64::try_from(bytes).unwrap_or(0) / 1024
}

/// Records ingest consumed (the offsets stored with the events), the log head, the projected
/// checkpoint, the outbox head and the relay's offset.
async fn progress(db: &mut PgConnection) -> [i64; 5] {
    [
        scalar(
            db,
            &format!(
                "SELECT CAST(sum(next_offset) AS BIGINT) FROM source_offsets WHERE topic = '{INPUT}'"
            ),
        )
        .await,
        scalar(db, "SELECT max(position) FROM events").await,
        scalar(
            db,
            "SELECT g.checkpoint FROM projection_generations g JOIN projection_active a USING (generation)",
        )
        .await,
        scalar(db, "SELECT outbox_head FROM projection_active").await,
        scalar(
            db,
            &format!("SELECT last_id FROM relay_offsets WHERE relay = 'kafka:{LIFECYCLE}'"),
        )
        .await,
    ]
}

/// Waits until ingest consumed `records`, the projector reached the log head and the relay the
/// outbox head; returns the final progress and how long it took.
async fn caught_up(
    db: &mut PgConnection,
    server: &mut Server,
    records: i64,
    within: Duration,
) -> ([i64; 5], Duration) {
    let started = Instant::now();
    loop {
        let now = progress(db).await;
        let [consumed, head, checkpoint, outbox, relayed] = now;
        if consumed == records && checkpoint == head && relayed == outbox {
            return (now, started.elapsed());
        }
        server.assert_running();
        assert!(
            started.elapsed() < within,
            "not caught up after {within:?}: consumed {consumed}/{records} records, projected \
             {checkpoint}/{head}, relayed {relayed}/{outbox} (the mock cluster drops records \
             beyond about 5 MiB per partition: a long ingest backlog loses them)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Produces `records` while ingest consumes them, keeping at most `BACKLOG` unconsumed: the mock
/// cluster keeps only about 5 MiB per partition.
async fn produce_preload(
    producer: &Producer,
    db: &mut PgConnection,
    server: &mut Server,
    records: &[TestRecord],
) {
    const CHUNK: usize = 2_000;
    const BACKLOG: i64 = 10_000;
    let mut produced = 0i64;
    for chunk in records.chunks(CHUNK) {
        while produced - progress(db).await[0] > BACKLOG {
            server.assert_running();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        producer
            .send_all(INPUT, chunk)
            .await
            .expect("produce the preload");
        produced += chunk.len() as i64;
    }
}

async fn connect(port: u16) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(channel) => return channel,
            Err(error) => {
                assert!(Instant::now() < deadline, "the API never listened: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_at_fixed_rates_keeps_every_event_and_memory_flat() {
    let config = Config::from_env();
    println!("soak configuration: {config:?}");
    let kafka = MockKafka::start_for_test(1);
    kafka.create_topic(INPUT, PARTITIONS).unwrap();
    kafka.create_topic(&format!("{INPUT}.dlq"), 1).unwrap();
    kafka.create_topic(LIFECYCLE, PARTITIONS).unwrap();
    let bootstrap = kafka.bootstrap();
    let database = PgDatabase::create().await;
    patron(&database.url, &["migrate"]).success();
    let mut db = PgConnection::connect(&database.url).await.unwrap();

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("serve.log");
    let mut server = Server {
        child: Command::new(patron_bin())
            .args(["serve", "--kafka-brokers", &bootstrap, "--topics", INPUT])
            .args(["--group", "soak", "--lifecycle-topic", LIFECYCLE])
            .args(["--api-listen", &format!("127.0.0.1:{port}")])
            .args(["--api-token", TOKEN])
            .env("PATRON_DATABASE_URL", &database.url)
            .env("PATRON_MASTER_KEY", MASTER_KEY)
            .env("PATRON_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("start patron serve"),
        log,
    };
    let pid = server.child.id();

    // Preload: a year of history for the customers, ingested and projected before the clock runs.
    let preload_started = Instant::now();
    let now = Utc::now();
    let mut generator =
        patron_demo::Generator::new(11, config.customers, now - TimeDelta::days(365));
    let history = generator.until(now);
    let valid_history = patron_demo::into_events(history.clone(), &ValidationPolicy::at(now));
    let history = to_kafka(history);
    let malformed = history.len() - valid_history.len();
    let mut customers: Vec<String> = valid_history
        .iter()
        .map(|e| e.customer_id.to_string())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    customers.sort();
    let mut expected: HashSet<uuid::Uuid> = valid_history.iter().map(|e| e.event_id).collect();
    assert_eq!(
        expected.len(),
        valid_history.len(),
        "preload ids are unique"
    );
    drop(valid_history);
    let producer = Arc::new(Producer::new(&KafkaSettings::new(bootstrap.clone())).unwrap());
    produce_preload(&producer, &mut db, &mut server, &history).await;
    caught_up(
        &mut db,
        &mut server,
        history.len() as i64,
        Duration::from_secs(900),
    )
    .await;
    let projected = scalar(
        &mut db,
        "SELECT count(*) FROM customers WHERE generation = (SELECT generation FROM projection_active)",
    )
    .await;
    assert_eq!(
        projected,
        customers.len() as i64,
        "every customer projected"
    );
    let preload_time = preload_started.elapsed();
    println!(
        "preload: {} records ({malformed} malformed) of {} customers in {:.1} s",
        history.len(),
        customers.len(),
        preload_time.as_secs_f64()
    );

    // The timed run.
    let queries = connect(port).await;
    let watches = connect(port).await;
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + config.duration;
    let produced = Arc::new(AtomicU64::new(history.len() as u64));
    let [produce_stats, get_stats, list_stats, kpi_stats, open_stats]: [Shared; 5] =
        Default::default();

    let (done_tx, done_rx) = watch::channel(None);
    let mut watchers = JoinSet::new();
    for n in 0..config.watchers + config.reopened {
        let reopen = (n >= config.watchers).then_some(config.reopen_every);
        watchers.spawn(follow_changes(
            watches.clone(),
            reopen,
            done_rx.clone(),
            open_stats.clone(),
        ));
    }

    // Every second of the run: the server's RSS, the ingest backlog and the projection backlog.
    let sampler = tokio::spawn({
        let (url, produced) = (database.url.clone(), produced.clone());
        async move {
            let mut db = PgConnection::connect(&url).await.unwrap();
            let mut samples: Vec<Sample> = Vec::new();
            let (mut ingest_backlog, mut projection_backlog) = (0i64, 0i64);
            let mut ticks = tokio::time::interval_at(start.into(), Duration::from_secs(1));
            while Instant::now() < end {
                ticks.tick().await;
                let rss = rss_kib(pid);
                let [consumed, head, checkpoint, ..] = progress(&mut db).await;
                let sent = produced.load(Ordering::SeqCst) as i64;
                ingest_backlog = ingest_backlog.max(sent - consumed);
                projection_backlog = projection_backlog.max(head - checkpoint);
                samples.push((start.elapsed(), rss, state_kib(&mut db).await));
            }
            (samples, ingest_backlog, projection_backlog)
        }
    });

    let producing = tokio::spawn(produce_live(
        producer.clone(),
        generator,
        config.events,
        (start, end),
        produce_stats.clone(),
        produced.clone(),
    ));
    let customers = Arc::new(customers);
    let gets = pace(config.gets, start, end, get_stats.clone(), |k| {
        let mut client = CustomerServiceClient::new(queries.clone());
        // A stride coprime with most populations walks every customer in a scrambled order.
        let customer = customers[(k as usize).wrapping_mul(7919) % customers.len()].clone();
        async move {
            let answer = client
                .get_customer(authorized(GetCustomerRequest {
                    customer_id: customer.clone(),
                    min_position: 0,
                }))
                .await
                .map_err(|status| format!("GetCustomer {customer}: {status}"))?;
            match answer.into_inner().customer {
                Some(found) if found.customer_id == customer => Ok(()),
                other => Err(format!("GetCustomer {customer} answered {other:?}")),
            }
        }
    });
    let lists = pace(config.lists, start, end, list_stats.clone(), |k| {
        list_call(CustomerServiceClient::new(queries.clone()), k)
    });
    let kpis = pace(config.kpis, start, end, kpi_stats.clone(), |k| {
        kpi_call(KpiServiceClient::new(queries.clone()), k)
    });
    let (issued_gets, issued_lists, issued_kpis) = tokio::join!(gets, lists, kpis);
    let live_ids = producing.await.unwrap();
    let load_time = start.elapsed();
    server.assert_running();
    let stored_during_load = scalar(
        &mut db,
        "SELECT count(*) FROM events WHERE customer_id NOT LIKE '$%'",
    )
    .await
        - expected.len() as i64;
    expected.extend(live_ids.iter().copied());
    let live = live_ids.len();
    drop(live_ids);

    // Everything ingested, projected and relayed; then every watch stream at the outbox head.
    let produced_total = produced.load(Ordering::SeqCst);
    assert_eq!(
        produced_total,
        (history.len() + live) as u64,
        "every record produced was acknowledged"
    );
    let (done, catch_up) = caught_up(
        &mut db,
        &mut server,
        produced_total as i64,
        Duration::from_secs(600),
    )
    .await;
    let outbox_head = u64::try_from(done[3]).unwrap();
    done_tx.send_replace(Some(outbox_head));
    let mut watched = Vec::new();
    while let Some(seen) = tokio::time::timeout(Duration::from_secs(120), watchers.join_next())
        .await
        .expect("every watch stream reaches the outbox head within 120 s")
    {
        watched.push(seen.unwrap());
    }
    let (samples, ingest_backlog, projection_backlog) = sampler.await.unwrap();
    assert!(samples.len() >= 5, "RSS sampled every second: {samples:?}");
    server.assert_running();

    // SIGTERM stops every service cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM {pid}");
    let exit = server.child.wait().unwrap();
    assert!(
        exit.success(),
        "SIGTERM stops patron serve cleanly: {exit}\n{}",
        server.log()
    );

    // Every produced valid event stored exactly once, nothing else but Patron's own streams.
    let store = PgEventStore::connect(&ConnectOptions::new(&database.url))
        .await
        .unwrap();
    let mut stored = HashSet::with_capacity(expected.len());
    let mut after = Position(0);
    loop {
        let page = store.read_all(after, 10_000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        for recorded in page {
            if recorded.event.customer_id.is_reserved() {
                continue;
            }
            let id = recorded.event.event_id;
            assert!(stored.insert(id), "event {id} stored twice");
            assert!(expected.contains(&id), "event {id} was never produced");
        }
    }
    assert_eq!(
        stored.len(),
        expected.len(),
        "every produced event is stored"
    );
    let dead_letters: i64 = high_watermarks(&bootstrap, &format!("{INPUT}.dlq"), 1)
        .iter()
        .sum();
    assert_eq!(
        dead_letters, malformed as i64,
        "every malformed record dead-lettered, once"
    );

    // Every watch stream saw every lifecycle change once, in order.
    for (n, seen) in watched.iter().enumerate() {
        assert!(
            seen.out_of_order.is_empty(),
            "watch stream {n}: changes out of order: {:?}",
            seen.out_of_order
        );
        assert!(
            seen.last >= outbox_head,
            "watch stream {n} reached the outbox head {outbox_head}: {}",
            seen.last
        );
        assert_eq!(
            seen.received, seen.last,
            "watch stream {n} saw every change up to its last one, once"
        );
    }

    // The tables.
    let secs = load_time.as_secs_f64();
    println!();
    println!(
        "| soak: patron serve, {:.0} s, open loop at fixed rates | target /s | achieved /s | calls | errors | p50 ms | p99 ms | max ms |",
        config.duration.as_secs_f64()
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut failures = Vec::new();
    for (name, target, achieved, issued, stats) in [
        (
            "produce: events (calls: 10 ms batches, acked)",
            config.events,
            Some(live as f64 / secs),
            0,
            &produce_stats,
        ),
        ("GetCustomer", config.gets, None, issued_gets, &get_stats),
        (
            "ListCustomers (filters in turn)",
            config.lists,
            None,
            issued_lists,
            &list_stats,
        ),
        (
            "KPI queries (7 kinds in turn)",
            config.kpis,
            None,
            issued_kpis,
            &kpi_stats,
        ),
        (
            "WatchLifecycleChanges opens (from the call)",
            0.0,
            None,
            0,
            &open_stats,
        ),
    ] {
        let mut stats = stats.lock().unwrap();
        stats.latencies_us.sort_unstable();
        let calls = stats.latencies_us.len() as u64 + stats.errors;
        // Calls still in flight when the clock stopped count over the time they took.
        let busy = stats
            .last_done
            .map_or(secs, |t| t.duration_since(start).as_secs_f64().max(secs));
        let achieved = achieved.unwrap_or(calls as f64 / busy);
        let target = if target > 0.0 {
            format!("{target:.0}")
        } else {
            "—".into()
        };
        println!(
            "| {name} | {target} | {achieved:.1} | {calls} | {} | {:.2} | {:.2} | {:.2} |",
            stats.errors,
            quantile_ms(&stats.latencies_us, 0.50),
            quantile_ms(&stats.latencies_us, 0.99),
            quantile_ms(&stats.latencies_us, 1.0),
        );
        if issued > 0 && calls != issued {
            failures.push(format!("{name}: {issued} issued, {calls} completed"));
        }
        if stats.errors > 0 {
            failures.push(format!(
                "{name}: {} errors, first: {:?}",
                stats.errors, stats.first_errors
            ));
        }
    }
    let warm_up = config.warm_up();
    // Medians of five one-second samples: RSS, and the stored views' size.
    let median = |window: &[Sample], pick: fn(&Sample) -> u64| {
        let mut values: Vec<u64> = window.iter().map(pick).collect();
        values.sort_unstable();
        values.get(values.len() / 2).copied().unwrap_or(0)
    };
    let rss: fn(&Sample) -> u64 = |sample| sample.1;
    let state: fn(&Sample) -> u64 = |sample| sample.2;
    let first_after = samples
        .iter()
        .position(|(at, ..)| *at >= warm_up)
        .unwrap_or(samples.len().saturating_sub(1));
    let warm = &samples[first_after..(first_after + 5).min(samples.len())];
    let last = &samples[samples.len().saturating_sub(5)..];
    let (baseline, end_rss) = (median(warm, rss), median(last, rss));
    let (state_then, state_end) = (median(warm, state), median(last, state));
    let max_rss = samples[first_after..].iter().map(rss).max().unwrap_or(0);
    let growth = (end_rss as f64 - baseline as f64) / baseline as f64 * 100.0;
    // What the customers' own state explains, as per cent of the baseline.
    let explained =
        STATE_FACTOR * state_end.saturating_sub(state_then) as f64 / baseline as f64 * 100.0;
    let limit = RSS_GROWTH_LIMIT + explained;
    let asserted = config.duration >= ASSERT_RSS_FROM;
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!();
    println!("| soak: ingest, projection, watch streams, memory | |");
    println!("|---|---|");
    println!(
        "| preload: records (malformed, dead-lettered) / customers / time | {} ({malformed}, {dead_letters}) / {} / {:.1} s |",
        history.len(),
        customers.len(),
        preload_time.as_secs_f64()
    );
    println!(
        "| live events: target / produced / stored during the run | {:.0}/s / {live} ({:.1}/s) / {stored_during_load} ({:.1}/s) |",
        config.events,
        live as f64 / secs,
        stored_during_load as f64 / secs
    );
    println!(
        "| every produced event stored exactly once (by id) | {} of {} |",
        stored.len(),
        expected.len()
    );
    println!(
        "| largest backlog: produced not yet ingested / stored not yet projected | {ingest_backlog} / {projection_backlog} events |"
    );
    println!(
        "| catch-up after the load stopped (ingest, projector, relay) | {:.1} s |",
        catch_up.as_secs_f64()
    );
    println!(
        "| log head / checkpoint / outbox head / relayed | {} / {} / {} / {} |",
        done[1], done[2], done[3], done[4]
    );
    println!(
        "| watch streams: long-lived / reopened every {:.0} s (opens) / changes each saw | {} / {} ({}) / {outbox_head}, in order, once |",
        config.reopen_every.as_secs_f64(),
        config.watchers,
        config.reopened,
        watched.iter().map(|w| w.opens).sum::<u64>()
    );
    println!(
        "| RSS of patron serve: after warm-up ({:.0} s) / end / max after warm-up | {:.1} / {:.1} / {:.1} MiB |",
        warm_up.as_secs_f64(),
        mib(baseline),
        mib(end_rss),
        mib(max_rss)
    );
    println!(
        "| stored views (customers.state): after warm-up / end | {:.1} / {:.1} MiB |",
        mib(state_then),
        mib(state_end)
    );
    println!(
        "| RSS growth after warm-up | {growth:+.1} % ({}) |",
        if asserted {
            format!(
                "asserted ≤ {RSS_GROWTH_LIMIT:.0} % + {STATE_FACTOR:.0} × the views' growth = {limit:.1} %"
            )
        } else {
            format!(
                "not asserted: runs shorter than {} s are too noisy",
                ASSERT_RSS_FROM.as_secs()
            )
        }
    );
    for (n, seen) in watched.iter().enumerate() {
        if !seen.errors.is_empty() {
            failures.push(format!("watch stream {n}: {:?}", seen.errors));
        }
    }
    assert!(failures.is_empty(), "calls failed: {failures:#?}");
    if asserted {
        assert!(
            growth <= limit,
            "RSS grew {growth:.1} % after the warm-up ({baseline} KiB to {end_rss} KiB), more than \
             {limit:.1} % (the stored views grew {state_then} KiB to {state_end} KiB)"
        );
    }
}
