//! The `patron` command end to end, on both backends: migrate, import (with bad lines, a re-run,
//! conflicting ids and events naming only an identifier), read back.

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

/// One CloudEvents JSON line: a purchase of `minor` cents, for `subject` (`Ok`: a customer id,
/// `Err`: an email address the customer is known by).
fn purchase(id: u32, subject: Result<&str, &str>, minor: i64) -> String {
    let mut event = serde_json::json!({
        "specversion": "1.0", "id": format!("7e57c0de-0000-4000-8000-{id:012}"),
        "source": "backfill", "type": "patron.purchase.v1", "time": "2026-02-01T10:00:00Z",
        "data": {"order_id": format!("o-{id}"), "amount": {"minor_units": minor, "currency": "EUR"}},
    });
    match subject {
        Ok(customer) => event["subject"] = customer.into(),
        Err(email) => {
            event["identitykind"] = "email".into();
            event["identityvalue"] = email.into();
        }
    }
    event.to_string()
}

/// A backfill run again with one event's content changed: that line is rejected (listed in
/// `--rejects`), the lines after it in the same batch are still appended, and the stored event
/// keeps its first content. Events naming only an identifier go to the customer holding it, or
/// to a new provisional customer.
fn import_rejects_conflicts_and_resolves_identifiers(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, lines: &[String]| {
        let path = dir.path().join(name);
        std::fs::write(&path, lines.join("\n")).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let link = serde_json::json!({
        "specversion": "1.0", "id": "7e57c0de-0000-4000-8000-000000000001", "source": "login",
        "type": "patron.identities_linked.v1", "subject": "c-1", "time": "2026-01-31T10:00:00Z",
        "data": {"identities": [{"kind": "email", "value": "Ann@Example.com"}], "evidence": "login"},
    })
    .to_string();
    let first = write("first.jsonl", &[link, purchase(2, Ok("c-1"), 1_000)]);
    let second = write(
        "second.jsonl",
        &[
            purchase(2, Ok("c-1"), 2_000),
            purchase(3, Err(" ann@example.com"), 3_000),
            // Over --max-payload-bytes (256 KiB): rejected, not read into memory whole.
            "x".repeat(300 * 1024),
            purchase(4, Ok("c-2"), 4_000),
            purchase(5, Err("new@example.com"), 5_000),
        ],
    );
    patron(url, &["migrate"]).success();
    patron(url, &["import", &first]).success();
    let rejects = dir.path().join("rejects.jsonl");
    let run = patron(
        url,
        &["import", &second, "--rejects", rejects.to_str().unwrap()],
    )
    .success();
    assert!(
        run.stdout()
            .contains("read 5 records: 3 appended, 0 already stored, 2 rejected"),
        "{}",
        run.stdout()
    );
    let rejected: Vec<Value> = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    // The oversized line is rejected as it is read, the conflict when its batch is appended.
    let (rejected, large): (Vec<Value>, Vec<Value>) =
        rejected.into_iter().partition(|r| r["line"] != 3);
    assert_eq!(large[0]["error_class"], "payload_too_large");
    assert_eq!(large[0]["record"].as_str().map(str::len), Some(1024));
    assert!(
        large[0]["reason"]
            .as_str()
            .unwrap()
            .contains("line is 307200 bytes"),
        "{large:?}"
    );
    assert_eq!(rejected[0]["line"], 1);
    assert_eq!(rejected[0]["error_class"], "duplicate_event_id_conflict");
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .contains("7e57c0de-0000-4000-8000-000000000002"),
        "{rejected:?}"
    );

    let events: Vec<Value> = patron(url, &["events", "--limit", "100"])
        .success()
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |n: u32| {
        let id = format!("7e57c0de-0000-4000-8000-{n:012}");
        events
            .iter()
            .find(|e| e["event_id"] == id.as_str())
            .unwrap_or_else(|| panic!("event {n} is not stored: {events:?}"))
    };
    assert_eq!(events.len(), 5, "{events:?}");
    assert_eq!(of(2)["customer_id"], "c-1");
    assert_eq!(
        of(2)["data"]["amount"]["minor_units"],
        1_000,
        "first content kept"
    );
    assert_eq!(of(3)["customer_id"], "c-1", "the email's holder");
    assert_eq!(of(4)["customer_id"], "c-2");
    let provisional = of(5)["customer_id"].as_str().unwrap();
    assert!(provisional.starts_with("~email:"), "{provisional}");
}

#[test]
fn sqlite_import_rejects_conflicts_and_resolves_identifiers() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());
    import_rejects_conflicts_and_resolves_identifiers(&url);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_import_rejects_conflicts_and_resolves_identifiers() {
    let db = PgDatabase::create().await;
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || import_rejects_conflicts_and_resolves_identifiers(&url))
        .await
        .unwrap();
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
