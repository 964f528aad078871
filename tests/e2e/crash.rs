//! Crash test: realistic demo traffic flows from Kafka through `patron ingest`, `patron project`
//! and `patron relay` into PostgreSQL and the lifecycle topic while a random one of the three
//! processes is killed with SIGKILL at random moments and restarted each time. At the end:
//!
//! - the store holds every valid produced event exactly once, each equal to what was produced
//!   (compared event by event, by id), and nothing else but the projector's ticks;
//! - the read models equal a fresh `patron rebuild` of the same log (every customer row with its
//!   stored view, the stage history with reasons, every KPI counter);
//! - the lifecycle topic holds every transition of every customer's stage history at least once,
//!   and per customer no transition was published before the one preceding it (no gap).
//!
//! A second test runs several consumers sharing the partitions, three projectors (one active, two
//! standing by) and two relays on the same outbox, with kills on top, every other one aimed at the
//! active projector.
//!
//! Figures are printed in a table. `make test` runs a bounded form (on the Kafka mock cluster);
//! `make reliability` runs it at full size: `PATRON_CRASH_EVENTS` (at least this many events,
//! default 20,000 here) and `PATRON_CRASH_KILLS` (default 8).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap
)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use patron_domain::{Event, ValidationPolicy};
use patron_e2e::{Lcg, PgDatabase, patron, patron_bin};
use patron_kafka::testing::{MockKafka, TestRecord, high_watermarks, produce, read_topic};
use patron_proto::lifecycle::v1::{LifecycleChanged, Stage as LifecycleStage};
use patron_store::{EventStore, Position};
use patron_store_sql::{ConnectOptions, PgEventStore};
use prost::Message as _;
use sqlx::{Connection, PgConnection};

const INPUT: &str = "customer-events";
const LIFECYCLE: &str = "patron.lifecycle.v1";
const PARTITIONS: i32 = 4;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Demo traffic of enough customers for at least `events` valid events, two years up to now.
fn traffic(events: u64) -> (Vec<TestRecord>, Vec<Event>) {
    let now = Utc::now();
    let mut customers = (events / 40).max(10) as usize;
    loop {
        let records =
            patron_demo::Generator::new(7, customers, now - TimeDelta::days(730)).until(now);
        let valid = patron_demo::into_events(records.clone(), &ValidationPolicy::at(now));
        if valid.len() as u64 >= events {
            let records = records
                .into_iter()
                .map(|r| TestRecord {
                    key: Some(r.key.into_bytes()),
                    headers: vec![("content-type".into(), r.content_type.as_bytes().to_vec())],
                    payload: r.payload,
                })
                .collect();
            return (records, valid);
        }
        customers += customers / 4 + 1;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Ingest,
    Project,
    Relay,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ingest => "ingest",
            Kind::Project => "project",
            Kind::Relay => "relay",
        }
    }
}

/// A running service process, killed if the test ends (or panics) first.
struct Service {
    kind: Kind,
    child: Child,
    log: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(kind: Kind, url: &str, bootstrap: &str, logs: &Path, run: usize) -> Service {
    let log = logs.join(format!("{}-{run}.log", kind.name()));
    let mut command = Command::new(patron_bin());
    match kind {
        Kind::Ingest => command
            .args(["ingest", "--kafka-brokers", bootstrap, "--topics", INPUT])
            .args(["--group", "crash-ingest", "--batch-size", "500"])
            .args(["--batch-max-delay", "20ms"])
            // A killed member stays in the group until its session times out: keep that short.
            .args(["--kafka-option", "session.timeout.ms=6000"])
            .args(["--kafka-option", "max.poll.interval.ms=10000"]),
        Kind::Project => command.args(["project", "--batch-size", "1000", "--poll", "50ms"]),
        Kind::Relay => command.args([
            "relay",
            "--kafka-brokers",
            bootstrap,
            "--lifecycle-topic",
            LIFECYCLE,
        ]),
    };
    let child = command
        .env("PATRON_DATABASE_URL", url)
        .env("PATRON_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("start patron {}: {e}", kind.name()));
    Service { kind, child, log }
}

/// The index in `services` of the active projector: the process whose session holds the
/// projector lease (its `application_name` is `patron projector PID@HOST:NONCE`).
async fn active_projector(db: &mut PgConnection, services: &[Service]) -> Option<usize> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE 'patron projector %'",
    )
    .fetch_all(db)
    .await
    .unwrap();
    let pids: Vec<u32> = names
        .iter()
        .filter_map(|name| {
            let owner = name.strip_prefix("patron projector ")?;
            owner.split('@').next()?.parse().ok()
        })
        .collect();
    services
        .iter()
        .position(|s| s.kind == Kind::Project && pids.contains(&s.child.id()))
}

async fn scalar(db: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar::<_, Option<i64>>(sql)
        .fetch_one(db)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// Stored customer events (ticks excluded), the log head, the projected checkpoint, the outbox
/// head and the relay's offset.
async fn progress(db: &mut PgConnection) -> [i64; 5] {
    [
        scalar(db, "SELECT count(*) FROM events WHERE customer_id NOT LIKE '$%'").await,
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

/// Every read-model row of the active generation, as text, in a stable order.
async fn read_models(db: &mut PgConnection) -> Vec<String> {
    let mut rows = Vec::new();
    for sql in [
        "SELECT concat_ws('|', customer_id, stage, stage_since, orders, refunds, gross_revenue_minor, \
         refunded_minor, net_revenue_minor, average_order_minor, first_purchase_at, last_purchase_at, \
         last_event_at, rfm_r, rfm_f, rfm_m, rfm_segment, tier, state) FROM customers \
         WHERE generation = (SELECT generation FROM projection_active) ORDER BY customer_id",
        "SELECT concat_ws('|', customer_id, seq, from_stage, to_stage, entered_at, rule, facts) \
         FROM stage_history WHERE generation = (SELECT generation FROM projection_active) \
         ORDER BY customer_id, seq",
        // A counter at zero says what a missing one says: live commits keep a row whose deltas
        // cancelled out across pages, a rebuild never writes it.
        "SELECT concat_ws('|', metric, period, dim1, dim2, value) FROM kpis \
         WHERE generation = (SELECT generation FROM projection_active) AND value <> 0 \
         ORDER BY metric, period, dim1, dim2",
    ] {
        let part: Vec<String> = sqlx::query_scalar(sql).fetch_all(&mut *db).await.unwrap();
        rows.push(format!("-- {} rows", part.len()));
        rows.extend(part);
    }
    rows
}

/// How many of each service run at once.
#[derive(Debug, Clone, Copy)]
struct Fleet {
    ingest: usize,
    project: usize,
    relay: usize,
}

impl Fleet {
    const ONE_EACH: Fleet = Fleet {
        ingest: 1,
        project: 1,
        relay: 1,
    };

    fn kinds(self) -> Vec<Kind> {
        let mut kinds = vec![Kind::Ingest; self.ingest];
        kinds.extend(vec![Kind::Project; self.project]);
        kinds.extend(vec![Kind::Relay; self.relay]);
        kinds
    }
}

/// Produces `records` while ingest consumes them, keeping at most `BACKLOG` records unconsumed:
/// the mock cluster keeps only 5 MB per partition and drops older records beyond that, as a
/// broker's retention would. Consumed = the offsets ingest stored with its events.
async fn produce_paced(bootstrap: String, url: String, records: Vec<TestRecord>) {
    const CHUNK: usize = 2_000;
    const BACKLOG: i64 = 20_000;
    let mut db = PgConnection::connect(&url).await.unwrap();
    let mut produced = 0i64;
    for chunk in records.chunks(CHUNK) {
        loop {
            let consumed = scalar(
                &mut db,
                &format!(
                    "SELECT CAST(sum(next_offset) AS BIGINT) FROM source_offsets WHERE topic = '{INPUT}'"
                ),
            )
            .await;
            if produced - consumed <= BACKLOG {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        produce(&bootstrap, INPUT, chunk).await;
        produced += chunk.len() as i64;
    }
}

/// A TCP proxy in front of PostgreSQL that can play an outage: every connection through it is
/// cut and new ones are refused until it is restored. The services reach the database through
/// it; the test's own checks connect directly.
struct DatabaseProxy {
    port: u16,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl DatabaseProxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (accepting, tasks) = (up.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accepting.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused, as good as
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tasks.lock().unwrap().push(task);
            }
        });
        Self {
            port,
            up,
            connections,
        }
    }

    /// The database URL through the proxy.
    fn url(&self, direct: &str) -> String {
        let (base, name) = direct.rsplit_once('/').unwrap();
        let (scheme_user, _) = base.rsplit_once('@').unwrap();
        format!("{scheme_user}@127.0.0.1:{}/{name}", self.port)
    }

    fn outage(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

async fn crash_test(bootstrap: &str, events: u64, kills: usize, fleet: Fleet, outages: usize) {
    let started = Instant::now();
    let (records, valid) = traffic(events);
    let db_guard = PgDatabase::create().await;
    let direct = db_guard.url.clone();
    patron(&direct, &["migrate"]).success();
    let mut db = PgConnection::connect(&direct).await.unwrap();
    let producer = tokio::spawn(produce_paced(
        bootstrap.to_owned(),
        direct.clone(),
        records.clone(),
    ));
    let upstream = direct
        .rsplit_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .and_then(|(host, _)| std::net::ToSocketAddrs::to_socket_addrs(host).ok())
        .and_then(|mut addresses| addresses.next())
        .expect("host:port in the test database URL");
    let proxy = DatabaseProxy::start(upstream).await;
    // The services see the database through the proxy (outages are played there).
    let url = proxy.url(&direct);
    let logs = tempfile::tempdir().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("crash schedule seed: {seed}");
    let mut rng = Lcg(seed);

    let mut runs = 0;
    let mut services: Vec<Service> = fleet
        .kinds()
        .into_iter()
        .map(|kind| {
            runs += 1;
            spawn(kind, &url, bootstrap, logs.path(), runs)
        })
        .collect();
    let mut killed: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut killed_while_ingesting = 0;
    let mut killed_active_projector = 0;
    for kill in 0..kills {
        tokio::time::sleep(Duration::from_millis(150 + rng.next(600))).await;
        // With standby projectors, every other kill is aimed at the active one (a standby must
        // take over); the others hit any service.
        let aimed = if fleet.project > 1 && kill % 2 == 0 {
            active_projector(&mut db, &services).await
        } else {
            None
        };
        let victim = aimed.unwrap_or_else(|| rng.next(services.len() as u64) as usize);
        let mut service = services.swap_remove(victim);
        if let Some(status) = service.child.try_wait().unwrap() {
            let log = std::fs::read_to_string(&service.log).unwrap_or_default();
            panic!(
                "patron {} exited on its own ({status}):\n{log}",
                service.kind.name()
            );
        }
        service.child.kill().expect("SIGKILL");
        service.child.wait().unwrap();
        *killed.entry(service.kind).or_default() += 1;
        if aimed.is_some() {
            killed_active_projector += 1;
        }
        if progress(&mut db).await[0] < valid.len() as i64 {
            killed_while_ingesting += 1;
        }
        runs += 1;
        services.push(spawn(service.kind, &url, bootstrap, logs.path(), runs));
    }

    // Database outages mid-stream: everything pauses (nothing is stored while it lasts, no
    // service gives up), then resumes by itself when the database is back.
    let mut paused_at = Vec::new();
    for _ in 0..outages {
        // Cut only once ingest made progress since the last outage (or has stored everything).
        let last = paused_at.last().copied().unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let stored = progress(&mut db).await[0];
            if stored > last || stored == valid.len() as i64 {
                break;
            }
            assert!(Instant::now() < deadline, "no progress before the outage");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.next(300))).await;
        proxy.outage();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let during = progress(&mut db).await[0];
        tokio::time::sleep(Duration::from_secs(4)).await;
        let after = progress(&mut db).await[0];
        assert_eq!(
            during, after,
            "nothing is stored while the database is away"
        );
        for service in &mut services {
            assert!(
                service.child.try_wait().unwrap().is_none(),
                "patron {} gave up during the outage:\n{}",
                service.kind.name(),
                std::fs::read_to_string(&service.log).unwrap_or_default()
            );
        }
        paused_at.push(during);
        proxy.restore();
    }

    producer.await.unwrap();

    // Let the survivors finish: everything ingested, projected and relayed.
    let deadline = Instant::now() + Duration::from_secs(600);
    let done = loop {
        let [stored, head, checkpoint, outbox, relayed] = progress(&mut db).await;
        if stored == valid.len() as i64 && checkpoint == head && relayed == outbox {
            break [stored, head, checkpoint, outbox, relayed];
        }
        for service in &mut services {
            if let Some(status) = service.child.try_wait().unwrap() {
                panic!(
                    "patron {} exited on its own ({status}):\n{}",
                    service.kind.name(),
                    std::fs::read_to_string(&service.log).unwrap_or_default()
                );
            }
        }
        assert!(
            Instant::now() < deadline,
            "not finished: stored {stored}/{}, projected {checkpoint}/{head}, relayed {relayed}/{outbox}",
            valid.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for service in &mut services {
        let pid = service.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = service.child.wait().unwrap();
        assert!(
            status.success(),
            "SIGTERM stops patron {} cleanly: {status}\n{}",
            service.kind.name(),
            std::fs::read_to_string(&service.log).unwrap_or_default()
        );
    }

    // 1. Every valid event exactly once, as produced.
    let store = PgEventStore::connect(&ConnectOptions::new(&url))
        .await
        .unwrap();
    let mut stored: HashMap<uuid::Uuid, Event> = HashMap::new();
    let mut ticks = 0;
    let mut after = Position(0);
    loop {
        let page = store.read_all(after, 10_000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        for recorded in page {
            if recorded.event.customer_id.is_reserved() {
                ticks += 1;
                continue;
            }
            let id = recorded.event.event_id;
            assert!(
                stored.insert(id, recorded.event).is_none(),
                "event {id} stored twice"
            );
        }
    }
    assert_eq!(stored.len(), valid.len(), "every valid event is stored");
    for event in &valid {
        let kept = stored
            .get(&event.event_id)
            .unwrap_or_else(|| panic!("event {} was lost", event.event_id));
        assert_eq!(kept, event, "event {} stored as produced", event.event_id);
    }

    // 2. The read models equal a fresh rebuild of the log.
    let live = read_models(&mut db).await;
    patron(&url, &["rebuild"]).success();
    let rebuilt = read_models(&mut db).await;
    if live != rebuilt {
        let only = |a: &[String], b: &[String]| {
            let b: std::collections::HashSet<&String> = b.iter().collect();
            a.iter()
                .filter(|row| !b.contains(row))
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "live and rebuilt read models differ ({} and {} rows)\nonly live:\n{}\nonly rebuilt:\n{}",
            live.len(),
            rebuilt.len(),
            only(&live, &rebuilt),
            only(&rebuilt, &live)
        );
    }

    // 3. Every transition on the lifecycle topic, at least once, none before its predecessor.
    let on_topic: i64 = high_watermarks(bootstrap, LIFECYCLE, PARTITIONS)
        .iter()
        .sum();
    let messages = read_topic(
        bootstrap,
        LIFECYCLE,
        on_topic as usize,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(messages.len() as i64, on_topic, "the whole topic was read");
    let history: Vec<(String, i32, String)> = sqlx::query_as(
        "SELECT customer_id, seq, to_stage FROM stage_history \
         WHERE generation = (SELECT generation FROM projection_active) ORDER BY customer_id, seq",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let mut stored_history: HashMap<String, Vec<i32>> = HashMap::new();
    for (customer, _, to) in &history {
        let stage = LifecycleStage::from_str_name(&format!("STAGE_{}", to.to_uppercase()))
            .unwrap_or_else(|| panic!("stage {to}"));
        stored_history
            .entry(customer.clone())
            .or_default()
            .push(stage as i32);
    }
    // Per customer, in topic order: the records that still hold (retractions applied), each
    // first publication checked against it — a transition must be the next of the history, a
    // retraction must withdraw the newest record still holding — and repeats counted.
    let mut net: HashMap<String, Vec<(u64, String, i32)>> = HashMap::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut by_partition = messages.clone();
    by_partition.sort_by_key(|m| (m.partition, m.offset));
    let mut redelivered = 0;
    let mut retractions = 0;
    for message in &by_partition {
        let change = LifecycleChanged::decode(message.payload.as_slice()).unwrap();
        let key = String::from_utf8(message.key.clone().unwrap_or_default()).unwrap();
        assert_eq!(key, change.customer_id, "keyed by customer");
        if !seen.insert(change.dedupe_id.clone()) {
            redelivered += 1;
            continue;
        }
        let records = net.entry(change.customer_id.clone()).or_default();
        if change.retracts_dedupe_id.is_empty() {
            assert_eq!(
                change.sequence,
                records.len() as u64,
                "{}: transition {} ({}) published right after the {} still holding (in order, no gap)",
                change.customer_id,
                change.sequence,
                change.dedupe_id,
                records.len()
            );
            records.push((change.sequence, change.dedupe_id.clone(), change.to_stage));
        } else {
            retractions += 1;
            let newest = records.pop().map(|(_, id, _)| id);
            assert_eq!(
                newest.as_deref(),
                Some(change.retracts_dedupe_id.as_str()),
                "{}: a retraction withdraws the newest record still holding",
                change.customer_id
            );
        }
    }
    println!("retractions published: {retractions}");
    for (customer, stages) in &stored_history {
        let published: Vec<i32> = net
            .get(customer)
            .map(|records| records.iter().map(|(_, _, to)| *to).collect())
            .unwrap_or_default();
        assert_eq!(
            &published, stages,
            "{customer}: the records on the topic, retractions applied, are its stage history"
        );
    }
    let highest = &net;
    let lengths = &stored_history;
    assert_eq!(
        highest.len(),
        lengths.len(),
        "no transition of an unknown customer"
    );

    let kills_total: usize = killed.values().sum();
    println!();
    println!(
        "| crash test: {} ingest, {} project, {} relay at once | |",
        fleet.ingest, fleet.project, fleet.relay
    );
    println!("|---|---|");
    println!("| records produced (incl. malformed) | {} |", records.len());
    println!("| valid events stored, exactly once | {} |", stored.len());
    println!("| ticks appended by the projector | {ticks} |");
    println!(
        "| kills (SIGKILL) | {kills_total}: {} ({killed_while_ingesting} while ingesting, {killed_active_projector} aimed at the active projector) |",
        killed
            .iter()
            .map(|(kind, n)| format!("{} {n}", kind.name()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| customers / transitions | {} / {} |",
        lengths.len(),
        history.len()
    );
    println!(
        "| lifecycle messages (redelivered) | {} ({redelivered}) |",
        messages.len()
    );
    println!(
        "| read models = rebuild | {} rows equal |",
        live.len().saturating_sub(3)
    );
    println!(
        "| log head / checkpoint / outbox / relayed | {} / {} / {} / {} |",
        done[1], done[2], done[3], done[4]
    );
    if !paused_at.is_empty() {
        println!(
            "| database outages (5 s each; events stored when cut) | {} ({paused_at:?}) |",
            paused_at.len()
        );
    }
    println!("| elapsed | {:.1} s |", started.elapsed().as_secs_f64());
    assert!(
        kills_total >= kills,
        "{kills_total} kills happened, {kills} were planned"
    );
    if fleet.project > 1 && kills > 0 {
        assert!(
            killed_active_projector > 0,
            "the active projector was killed at least once"
        );
    }
}

/// A mock cluster with the input, dead-letter and lifecycle topics.
fn cluster() -> MockKafka {
    let kafka = MockKafka::start_for_test(1);
    kafka.create_topic(INPUT, PARTITIONS).unwrap();
    kafka.create_topic(&format!("{INPUT}.dlq"), 1).unwrap();
    kafka.create_topic(LIFECYCLE, PARTITIONS).unwrap();
    kafka
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_lose_nothing_duplicate_nothing_and_skip_nothing() {
    let kafka = cluster();
    let events = env_or("PATRON_CRASH_EVENTS", 20_000);
    let kills = env_or("PATRON_CRASH_KILLS", 8) as usize;
    crash_test(&kafka.bootstrap(), events, kills, Fleet::ONE_EACH, 0).await;
}

/// Concurrency: three ingest consumers sharing the partitions, three projectors on one database
/// (one active, two hot standbys that take over when it dies) and two relays on the same outbox,
/// with kills on top, every other one aimed at the active projector. Still nothing lost, nothing
/// applied twice, nothing skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_services_lose_nothing_duplicate_nothing_and_skip_nothing() {
    let kafka = cluster();
    let events = env_or("PATRON_CRASH_EVENTS", 20_000);
    let kills = env_or("PATRON_CRASH_KILLS", 8) as usize;
    let fleet = Fleet {
        ingest: 3,
        project: 3,
        relay: 2,
    };
    crash_test(&kafka.bootstrap(), events, kills / 2, fleet, 0).await;
}

/// Outages: the database disappears twice mid-stream (every connection cut, new ones refused)
/// for five seconds; ingest, projector and relay pause and resume by themselves, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outages_pause_everything_and_lose_nothing() {
    let kafka = cluster();
    let events = env_or("PATRON_CRASH_EVENTS", 20_000);
    crash_test(&kafka.bootstrap(), events, 0, Fleet::ONE_EACH, 2).await;
}
