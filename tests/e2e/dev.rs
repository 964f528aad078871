//! `patron dev` (what `make run` runs): starts with nothing but the binary, stores demo traffic,
//! projects it into read models, serves the API, stops cleanly on Ctrl-C (SIGINT), and resumes
//! from the stored state when run again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::process::Command;
use std::time::Duration;

use patron_e2e::{interrupt, patron, patron_bin};

/// Events in the store; 0 while `patron dev` has not created the schema yet.
fn stored(url: &str) -> usize {
    let run = patron(url, &["events", "--limit", "1000000"]);
    if run.output.status.success() {
        run.stdout().lines().count()
    } else {
        0
    }
}

/// Customers in the active read models (0 before the projector's first commit).
fn projected_customers(url: &str) -> i64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let Ok(pool) = sqlx::SqlitePool::connect(url).await else {
            return 0;
        };
        let count = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM customers WHERE generation = \
             (SELECT generation FROM projection_active)",
        )
        .fetch_one(&pool)
        .await
        .unwrap_or(0);
        pool.close().await;
        count
    })
}

/// Runs `patron dev` until `enough` events are stored and projected customers appear, then
/// interrupts it; returns its stdout.
fn run_dev(url: &str, enough: usize) -> String {
    let logs = tempfile::tempdir().unwrap();
    let stdout_path = logs.path().join("stdout");
    let stderr_path = logs.path().join("stderr");
    let mut child = Command::new(patron_bin())
        .args(["dev", "--customers", "30", "--history-days", "120"])
        .env("PATRON_DATABASE_URL", url)
        .env("PATRON_DEV_API_LISTEN", "127.0.0.1:0")
        .env("PATRON_LOG", "info")
        .stdout(File::create(&stdout_path).unwrap())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn()
        .expect("start patron dev");
    let report = |what: &str| -> String {
        format!(
            "{what}\nstdout:\n{}\nstderr (end):\n{}",
            std::fs::read_to_string(&stdout_path).unwrap_or_default(),
            tail(
                &std::fs::read_to_string(&stderr_path).unwrap_or_default(),
                30
            )
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    // The banner is printed once the schema exists: only then is the store polled.
    while !std::fs::read_to_string(&stdout_path)
        .unwrap_or_default()
        .contains("patron dev")
    {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{}", report(&format!("patron dev exited early: {status}")));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            report("no banner")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    while stored(url) < enough || projected_customers(url) == 0 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{}", report(&format!("patron dev exited early: {status}")));
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "{}",
                report(&format!(
                    "patron dev stored fewer than {enough} events (or projected none) in 120 s"
                ))
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = interrupt(&mut child);
    assert!(
        status.success(),
        "{}",
        report(&format!("Ctrl-C stops patron dev cleanly: {status}"))
    );
    std::fs::read_to_string(&stdout_path).unwrap()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn dev_stores_demo_traffic_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());
    let first = run_dev(&url, 200);
    assert!(first.contains("kafka"), "prints where Kafka is: {first}");
    assert_eq!(
        first.matches("grpcurl").count(),
        3,
        "prints three grpcurl commands: {first}"
    );
    assert!(
        projected_customers(&url) > 0,
        "the projector wrote read models"
    );
    assert!(
        first.contains("stopped: this run stored"),
        "prints a summary: {first}"
    );
    let after_first = stored(&url);

    let second = run_dev(&url, after_first + 1);
    // "stopped: this run stored N new events (M already stored, D dead letters); …"
    let already: usize = second
        .lines()
        .find(|l| l.starts_with("stopped:"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("summary line not found: {second}"));
    assert!(
        already > 0,
        "the seeded history is recognised as stored: {second}"
    );
    assert!(
        stored(&url) > after_first,
        "the second run adds live events"
    );
}
