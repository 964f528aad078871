//! `patron dev` (what `make run` runs): starts with nothing but the binary, stores demo traffic,
//! stops cleanly on Ctrl-C (SIGINT), and resumes from the stored state when run again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use patron_e2e::{patron, patron_bin};

/// Events in the store; 0 while `patron dev` has not created the schema yet.
fn stored(url: &str) -> usize {
    let run = patron(url, &["events", "--limit", "1000000"]);
    if run.output.status.success() {
        run.stdout().lines().count()
    } else {
        0
    }
}

/// Runs `patron dev` until `enough` events are stored, then interrupts it; returns its stdout.
fn run_dev(url: &str, enough: usize) -> String {
    let mut child = Command::new(patron_bin())
        .args(["dev", "--customers", "30", "--history-days", "120"])
        .env("PATRON_DATABASE_URL", url)
        .env("PATRON_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start patron dev");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while stored(url) < enough {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("patron dev stored fewer than {enough} events in 90 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "Ctrl-C stops patron dev cleanly: {}",
        output.status
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn dev_stores_demo_traffic_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());
    let first = run_dev(&url, 200);
    assert!(first.contains("kafka"), "prints where Kafka is: {first}");
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
