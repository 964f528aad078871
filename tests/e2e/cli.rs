//! The `patron` command end to end, on both backends: migrate, import (with bad lines and a
//! re-run), read back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patron_e2e::{PgDatabase, example_events, patron};
use serde_json::Value;

fn count_valid_examples() -> usize {
    std::fs::read_to_string(example_events())
        .expect("read examples")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
        - 3 // the three deliberately bad lines at the end
}

fn import_and_read_back(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let examples = example_events();
    let examples = examples.to_str().unwrap();
    let valid = count_valid_examples();

    patron(url, &["migrate"]).success();
    patron(url, &["migrate"]).success(); // idempotent

    let rejects = dir.path().join("rejects.jsonl");
    let first = patron(
        url,
        &[
            "import",
            examples,
            "--batch-size",
            "50",
            "--rejects",
            rejects.to_str().unwrap(),
        ],
    )
    .success();
    assert!(
        first
            .stdout()
            .contains(&format!("{valid} appended, 0 already stored, 3 rejected")),
        "first import: {}",
        first.stdout()
    );
    let rejected: Vec<Value> = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let classes: Vec<&str> = rejected
        .iter()
        .map(|r| r["error_class"].as_str().unwrap())
        .collect();
    assert_eq!(
        classes,
        ["negative_amount", "invalid_amount", "invalid_field"]
    );

    let again = patron(url, &["import", examples]).success();
    assert!(
        again
            .stdout()
            .contains(&format!("0 appended, {valid} already stored, 3 rejected")),
        "re-import stores nothing twice: {}",
        again.stdout()
    );

    let log = patron(url, &["events", "--limit", "100000"])
        .success()
        .stdout();
    let events: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), valid, "every valid event is stored once");
    let positions: Vec<u64> = events
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(
        positions,
        (1..=valid as u64).collect::<Vec<_>>(),
        "gapless positions"
    );

    let stream = patron(url, &["events", "--customer", "c-1001"])
        .success()
        .stdout();
    let versions: Vec<u64> = stream
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .inspect(|e| assert_eq!(e["customer_id"], "c-1001"))
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert!(!versions.is_empty(), "c-1001 has events");
    assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());

    let paged = patron(url, &["events", "--after", "10", "--limit", "5"])
        .success()
        .stdout();
    let paged: Vec<u64> = paged
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["position"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(paged, vec![11, 12, 13, 14, 15]);
}

#[test]
fn sqlite_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}",
        dir.path().join("nested/dir/patron.db").display()
    );
    import_and_read_back(&url);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_end_to_end() {
    let db = PgDatabase::create().await;
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || import_and_read_back(&url))
        .await
        .unwrap();
}

#[test]
fn bad_configuration_fails_clearly() {
    let run = patron("mysql://localhost/x", &["migrate"]);
    assert!(!run.output.status.success());
    assert!(
        run.stderr().contains("unsupported database URL"),
        "{}",
        run.stderr()
    );

    let run = patron(
        "postgres://nobody:secret@127.0.0.1:1/none",
        &["migrate", "--database-connect-timeout", "500ms"],
    );
    assert!(
        !run.output.status.success(),
        "an unreachable database is an error"
    );
    assert!(
        run.stderr().contains("cannot open the event store"),
        "{}",
        run.stderr()
    );
    assert!(
        !run.stderr().contains("secret"),
        "the password is never printed: {}",
        run.stderr()
    );

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let run = patron(&url, &["import", "/nonexistent/file.jsonl"]);
    assert!(!run.output.status.success());
    assert!(
        run.stderr().contains("cannot open /nonexistent/file.jsonl"),
        "{}",
        run.stderr()
    );

    let run = patron(&url, &["events", "--customer", ""]);
    assert!(!run.output.status.success());
    assert!(
        run.stderr().contains("--customer must not be empty"),
        "{}",
        run.stderr()
    );
}
