//! `patron project`, `patron rebuild` and `--rules` end to end, on both backends: the projector
//! catches up and stops cleanly on SIGTERM, a rebuild reproduces its read models exactly, and
//! rules are checked at start. Two projectors on one database: the standby takes over from the
//! active one killed by SIGKILL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use patron_e2e::{PgDatabase, example_events, patron, patron_bin};

/// Runs one query returning text rows against either backend.
async fn rows(url: &str, query: &str) -> Vec<String> {
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let rows = sqlx::query_scalar(query).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let rows = sqlx::query_scalar(query).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    }
}

/// The active read models, as text rows.
async fn read_models(url: &str) -> Vec<String> {
    let mut all = rows(
        url,
        "SELECT c.customer_id || '|' || coalesce(c.stage, '-') || '|' || c.orders || '|' || \
            c.net_revenue_minor || '|' || coalesce(c.tier, '-') || '|' || CAST(c.state AS TEXT) \
         FROM customers c JOIN projection_active a USING (generation) ORDER BY 1",
    )
    .await;
    all.extend(
        rows(
            url,
            "SELECT k.metric || '|' || k.period || '|' || k.dim1 || '|' || k.dim2 || '|' || k.value \
             FROM kpis k JOIN projection_active a USING (generation) WHERE k.value <> 0 ORDER BY 1",
        )
        .await,
    );
    all
}

async fn projected(url: &str) -> Option<String> {
    if rows(url, "SELECT CAST(count(*) AS TEXT) FROM projection_active").await != ["1"] {
        return None;
    }
    rows(
        url,
        "SELECT CAST(g.checkpoint AS TEXT) FROM projection_generations g \
         JOIN projection_active a USING (generation)",
    )
    .await
    .pop()
}

async fn project_then_rebuild(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    patron(url, &["migrate"]).success();
    let examples = example_events();
    patron(url, &["import", examples.to_str().unwrap()]).success();
    let head: u64 = rows(url, "SELECT CAST(max(position) AS TEXT) FROM events").await[0]
        .parse()
        .unwrap();

    let child = Command::new(patron_bin())
        // No ticks: a tick appended just before SIGTERM but not yet projected would make the
        // rebuild (which sees it) differ from the stopped projector. Ticks have their own tests.
        .args(["project", "--poll", "20ms", "--tick-interval", "100000h"])
        .env("PATRON_DATABASE_URL", url)
        .env("PATRON_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while projected(url).await.and_then(|p| p.parse::<u64>().ok()) < Some(head) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the projector did not reach position {head}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "SIGTERM stops the projector cleanly: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let live = read_models(url).await;
    assert!(live.len() > 10, "read models were written: {live:?}");

    patron(url, &["rebuild"]).success();
    assert_eq!(
        read_models(url).await,
        live,
        "the rebuild reproduces the live read models"
    );

    // Invalid rules are refused with the field named; changed rules need a rebuild.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "honeymoon_days = -3\n").unwrap();
    let run = patron(url, &["project", "--rules", bad.to_str().unwrap()]);
    assert!(!run.output.status.success());
    assert!(run.stderr().contains("honeymoon_days"), "{}", run.stderr());
    let changed = dir.path().join("changed.toml");
    std::fs::write(&changed, "honeymoon_days = 45\n").unwrap();
    let run = patron(url, &["project", "--rules", changed.to_str().unwrap()]);
    assert!(
        !run.output.status.success(),
        "changed rules without a rebuild are refused"
    );
    assert!(run.stderr().contains("patron rebuild"), "{}", run.stderr());
    patron(url, &["rebuild", "--rules", changed.to_str().unwrap()]).success();
    assert_eq!(
        rows(
            url,
            "SELECT CAST(count(*) AS TEXT) FROM projection_generations"
        )
        .await,
        ["1"],
        "replaced generations are deleted"
    );
}

fn start_projector(url: &str) -> Child {
    Command::new(patron_bin())
        // No ticks: the log changes only by the import (see `project_then_rebuild`).
        .args(["project", "--poll", "20ms", "--tick-interval", "100000h"])
        .env("PATRON_DATABASE_URL", url)
        .env("PATRON_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The process id of the active projector: from the lease row (SQLite) or the session holding
/// the lock (PostgreSQL), whose owner reads `PID@HOST:NONCE`.
async fn active_projector(url: &str) -> Option<u32> {
    let query = if url.starts_with("sqlite:") {
        "SELECT owner FROM projector_lease"
    } else {
        "SELECT substr(application_name, 18) FROM pg_stat_activity \
         WHERE application_name LIKE 'patron projector %'"
    };
    let owners = rows(url, query).await;
    owners.first()?.split('@').next()?.parse().ok()
}

/// Two `patron project` processes: one becomes active, the other stands by. The active one is
/// killed (SIGKILL, so it lets go of nothing); events imported afterwards are projected by the
/// standby, and the read models equal a rebuild.
async fn standby_takes_over_from_a_killed_projector(url: &str) {
    patron(url, &["migrate"]).success();
    let mut children = vec![start_projector(url), start_projector(url)];
    let started = Instant::now();
    let active = loop {
        if let Some(pid) = active_projector(url).await
            && projected(url).await.is_some()
        {
            break pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no projector became active"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let index = children
        .iter()
        .position(|child| child.id() == active)
        .expect("the active projector is one of the two");
    let mut killed = children.swap_remove(index);
    killed.kill().unwrap();
    killed.wait().unwrap();
    let standby = children.pop().unwrap();

    let examples = example_events();
    patron(url, &["import", examples.to_str().unwrap()]).success();
    let head: u64 = rows(url, "SELECT CAST(max(position) AS TEXT) FROM events").await[0]
        .parse()
        .unwrap();
    // SQLite: the killed instance's lease expires first (10 s).
    while projected(url).await.and_then(|p| p.parse::<u64>().ok()) < Some(head) {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the standby did not take over and reach position {head}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        active_projector(url).await,
        Some(standby.id()),
        "the standby is the active projector now"
    );
    let status = Command::new("kill")
        .args(["-TERM", &standby.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = standby.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "SIGTERM stops the standby cleanly: {log}"
    );
    assert!(
        log.contains("standing by") && log.contains("now the active projector"),
        "the standby logged standing by, then taking over: {log}"
    );
    let live = read_models(url).await;
    assert!(live.len() > 10, "read models were written: {live:?}");
    patron(url, &["rebuild"]).success();
    assert_eq!(
        read_models(url).await,
        live,
        "the rebuild reproduces what the standby projected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());
    standby_takes_over_from_a_killed_projector(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_on_postgres() {
    let db = PgDatabase::create().await;
    standby_takes_over_from_a_killed_projector(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_then_rebuild_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());
    project_then_rebuild(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_then_rebuild_on_postgres() {
    let db = PgDatabase::create().await;
    project_then_rebuild(&db.url).await;
}
