//! `patron serve` end to end on the Kafka mock cluster and SQLite: records produced to the input
//! topic are ingested, projected into read models, their lifecycle changes relayed to the
//! lifecycle topic, the metrics and readiness endpoints answer, and SIGTERM stops everything
//! cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use patron_e2e::{patron, patron_bin};
use patron_kafka::testing::{MockKafka, TestRecord, produce, read_topic};

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.1 GET; returns the status line and the body.
fn get(port: u16, path: &str) -> Option<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.lines().next()?.to_owned();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Purchases by 20 customers, three each, a week apart, as CloudEvents JSON.
fn records() -> Vec<TestRecord> {
    let mut out = Vec::new();
    for week in 0..3 {
        for c in 0..20 {
            let customer = format!("s-{c:02}");
            let body = serde_json::json!({
                "specversion": "1.0", "id": uuid::Uuid::new_v4().to_string(), "source": "shop",
                "type": "patron.purchase.v1", "subject": customer,
                "time": format!("2026-10-{:02}T10:00:00Z", 1 + 7 * week),
                "data": {"order_id": format!("o-{c}-{week}"), "amount": {"minor_units": 5000, "currency": "USD"}}
            });
            out.push(TestRecord {
                key: Some(customer.into_bytes()),
                headers: vec![(
                    "content-type".into(),
                    b"application/cloudevents+json".to_vec(),
                )],
                payload: body.to_string().into_bytes(),
            });
        }
    }
    out
}

async fn customers(url: &str) -> i64 {
    let Ok(pool) = sqlx::SqlitePool::connect(url).await else {
        return 0;
    };
    let count = sqlx::query_scalar(
        "SELECT count(*) FROM customers WHERE generation = (SELECT generation FROM projection_active)",
    )
    .fetch_one(&pool)
    .await
    .unwrap_or(0);
    pool.close().await;
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_every_service_and_stops_cleanly() {
    let kafka = MockKafka::start_for_test(1);
    kafka.create_topic("customer-events", 2).unwrap();
    kafka.create_topic("customer-events.dlq", 1).unwrap();
    kafka.create_topic("patron.lifecycle.v1", 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());
    patron(&url, &["migrate"]).success();
    produce(&kafka.bootstrap(), "customer-events", &records()).await;

    let (api, metrics) = (free_port(), free_port());
    let mut child = Command::new(patron_bin())
        .args([
            "serve",
            "--kafka-brokers",
            &kafka.bootstrap(),
            "--group",
            &format!("serve-{}", std::process::id()),
            "--api-listen",
            &format!("127.0.0.1:{api}"),
            "--api-token",
            "t0ken",
            "--metrics-listen",
            &format!("127.0.0.1:{metrics}"),
        ])
        .env("PATRON_DATABASE_URL", &url)
        .env("PATRON_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let started = Instant::now();
    while customers(&url).await < 20 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("patron serve exited early: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "20 customers were not projected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let changes = read_topic(
        &kafka.bootstrap(),
        "patron.lifecycle.v1",
        40,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        changes.len() >= 40,
        "prospect and new for each of 20 customers: {}",
        changes.len()
    );

    let (status, body) = get(metrics, "/readyz").expect("readiness answers");
    assert!(status.contains("200"), "{status}: {body}");
    let (status, _) = get(metrics, "/livez").expect("liveness answers");
    assert!(status.contains("200"), "{status}");
    let (_, body) = get(metrics, "/metrics").expect("metrics answer");
    for metric in [
        "patron_ingest_events_total",
        "patron_projection_checkpoint",
        "patron_relay_published_total",
    ] {
        assert!(body.contains(metric), "{metric} is exported:\n{body}");
    }
    assert!(
        TcpStream::connect(("127.0.0.1", api)).is_ok(),
        "the API listens"
    );

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "SIGTERM stops every service cleanly: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
