//! Lifecycle histories do not depend on the path events come by. The demo history through
//! `patron dev` — an embedded Kafka topic of four partitions, consumed in batches, projected
//! live — and the same events exported (`patron events --format cloudevents`), sorted by event
//! time and imported one per append into a fresh store, then projected (`patron rebuild`), give
//! the same stage history for every customer. `patron check-histories` finds no inactivity
//! transition contradicted by a purchase, and no history that differs from the event-time fold,
//! in either store. `patron rules diff` predicts exactly what a rebuild with other rules then
//! changes, and the rebuild corrects the published records of exactly those customers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::process::Command;
use std::time::{Duration, Instant};

use patron_e2e::{interrupt, patron, patron_bin};

/// Runs one query returning text rows against a SQLite store.
fn rows(url: &str, query: &str) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let Ok(pool) = sqlx::SqlitePool::connect(url).await else {
            return Vec::new();
        };
        let rows = sqlx::query_scalar(query)
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
        pool.close().await;
        rows
    })
}

/// `(events stored, position projected)`.
fn progress(url: &str) -> (String, String) {
    let head = rows(
        url,
        "SELECT CAST(coalesce(max(position), 0) AS TEXT) FROM events",
    );
    let projected = rows(
        url,
        "SELECT CAST(g.checkpoint AS TEXT) FROM projection_generations g \
         JOIN projection_active a USING (generation)",
    );
    (
        head.into_iter().next().unwrap_or_default(),
        projected.into_iter().next().unwrap_or_default(),
    )
}

/// Runs `patron dev` without live traffic until its whole history is stored and projected (the
/// store stops growing and the projector has caught up), then interrupts it.
fn run_dev_history(url: &str) {
    let logs = tempfile::tempdir().unwrap();
    let stderr_path = logs.path().join("stderr");
    let mut child = Command::new(patron_bin())
        .args([
            "dev",
            "--customers",
            "80",
            "--history-days",
            "365",
            "--rate",
            "0",
        ])
        .env("PATRON_DATABASE_URL", url)
        .env("PATRON_DEV_API_LISTEN", "127.0.0.1:0")
        .stdout(File::create(logs.path().join("stdout")).unwrap())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn()
        .expect("start patron dev");
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut last = (String::new(), String::new());
    let mut steady_since = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "patron dev exited early: {status}\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "patron dev did not store and project its history in 240 s: {last:?}"
        );
        let now = progress(url);
        let caught_up = !now.0.is_empty() && now.0 != "0" && now.0 == now.1;
        if now != last || !caught_up {
            steady_since = Instant::now();
            last = now;
        } else if steady_since.elapsed() > Duration::from_secs(4) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(interrupt(&mut child).success(), "Ctrl-C stops patron dev");
}

/// The active generation's stage history, one row per transition, up to `until` (RFC 3339
/// text compared as SQLite stores it), and the watermark.
fn history(url: &str) -> (Vec<String>, String) {
    let watermark = rows(
        url,
        "SELECT g.watermark FROM projection_generations g JOIN projection_active a USING (generation)",
    )
    .pop()
    .expect("a watermark");
    let history = rows(
        url,
        "SELECT h.customer_id || '|' || h.seq || '|' || coalesce(h.from_stage, '-') || '|' || \
            h.to_stage || '|' || h.entered_at || '|' || h.rule || '|' || h.facts \
         FROM stage_history h JOIN projection_active a USING (generation) \
         ORDER BY h.customer_id, h.seq",
    );
    (history, watermark)
}

/// The entry time of a history row (its fifth field).
fn entered_at(row: &str) -> chrono::DateTime<chrono::Utc> {
    let text = row.split('|').nth(4).unwrap();
    text.parse()
        .unwrap_or_else(|e| panic!("entered_at {text:?}: {e}"))
}

#[test]
fn kafka_partitions_and_an_ordered_import_give_the_same_histories() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("kafka")).unwrap();
    std::fs::create_dir_all(dir.path().join("import")).unwrap();
    let via_kafka = format!("sqlite://{}", dir.path().join("kafka/patron.db").display());
    let via_import = format!("sqlite://{}", dir.path().join("import/patron.db").display());
    run_dev_history(&via_kafka);

    // Export, sort by event time (then id), import one event per append, project.
    let export = patron(
        &via_kafka,
        &["events", "--format", "cloudevents", "--limit", "10000000"],
    )
    .success()
    .stdout();
    let mut lines: Vec<(chrono::DateTime<chrono::Utc>, String, &str)> = export
        .lines()
        .map(|line| {
            let doc: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = |key: &str| doc[key].as_str().unwrap().to_owned();
            (text("time").parse().unwrap(), text("id"), line)
        })
        .collect();
    assert!(
        lines.len() > 1_000,
        "a year of demo history: {}",
        lines.len()
    );
    lines.sort();
    let sorted: String = lines
        .iter()
        .map(|(_, _, line)| format!("{line}\n"))
        .collect();
    let file = dir.path().join("sorted.jsonl");
    std::fs::write(&file, sorted).unwrap();
    patron(&via_import, &["migrate"]).success();
    let file_arg = file.display().to_string();
    patron(&via_import, &["import", &file_arg, "--batch-size", "1"]).success();
    patron(&via_import, &["rebuild"]).success();

    let (kafka_rows, kafka_watermark) = history(&via_kafka);
    let (import_rows, import_watermark) = history(&via_import);
    // Both stores hold the same events; the live projector may also have ticked past the last
    // event. Transitions up to the earlier watermark are what both have seen time reach.
    let until = [&kafka_watermark, &import_watermark]
        .into_iter()
        .map(|w| w.parse::<chrono::DateTime<chrono::Utc>>().unwrap())
        .min()
        .unwrap();
    let upto = |rows: &[String]| -> Vec<String> {
        rows.iter()
            .filter(|row| entered_at(row) <= until)
            .cloned()
            .collect()
    };
    let (a, b) = (upto(&kafka_rows), upto(&import_rows));
    assert!(
        a.len() > 300 && a.len() * 10 >= kafka_rows.len() * 9,
        "enough transitions to compare: {} of {}",
        a.len(),
        kafka_rows.len()
    );
    let first_difference = a.iter().zip(&b).find(|(x, y)| x != y);
    assert!(
        a == b,
        "stage histories differ between the Kafka path and the ordered import \
         ({} and {} rows up to {until}); first difference: {first_difference:?}",
        a.len(),
        b.len()
    );
    // Ingest reported the partitions it read behind their end, so the watermark waited for the
    // slower ones instead of firing transitions their events then disproved; every partition
    // was read to its end, so none holds event time now.
    let kafka_corrections = rows(
        &via_kafka,
        "SELECT CAST(count(*) AS TEXT) FROM outbox WHERE retracts IS NOT NULL",
    );
    let published = rows(&via_kafka, "SELECT CAST(count(*) AS TEXT) FROM outbox");
    println!("retractions published on the Kafka path: {kafka_corrections:?} of {published:?}");
    assert_eq!(
        kafka_corrections,
        ["0"],
        "four partitions read at different speeds, their progress reported, need no correction"
    );
    let behind = patron(&via_kafka, &["sources"]).success().stdout();
    assert_eq!(behind, "", "no partition is left behind");
    let corrections = rows(
        &via_import,
        "SELECT CAST(count(*) AS TEXT) FROM outbox WHERE retracts IS NOT NULL",
    );
    assert_eq!(
        corrections,
        ["0"],
        "events imported in time order need no correction"
    );

    rules_diff_predicts_the_rebuild(&via_import, dir.path());

    for url in [&via_kafka, &via_import] {
        let out = patron(url, &["check-histories"]).success().stdout();
        assert!(
            out.contains("contradicted inactivity transitions: 0")
                && out.contains("histories that differ from the event-time fold: 0"),
            "{url}: {out}"
        );
    }
}

/// Per customer: current stage, and the whole history as one text.
fn stages_and_histories(url: &str) -> std::collections::BTreeMap<String, (String, String)> {
    let stages = rows(
        url,
        "SELECT c.customer_id || '|' || coalesce(c.stage, '-') FROM customers c \
         JOIN projection_active a USING (generation)",
    );
    let (history, _) = history(url);
    let mut out = std::collections::BTreeMap::new();
    for row in stages {
        let (id, stage) = row.split_once('|').unwrap();
        out.insert(id.to_owned(), (stage.to_owned(), String::new()));
    }
    for row in history {
        let id = row.split('|').next().unwrap().to_owned();
        // Compare transitions by stage, time and rule (the index and facts come along).
        let fields: Vec<&str> = row.split('|').collect();
        let entry = out.entry(id).or_default();
        entry.1.push_str(&format!(
            "{}>{}@{}:{};",
            fields[2], fields[3], fields[4], fields[5]
        ));
    }
    out
}

/// The number after `label: ` in `text`.
fn count_after(text: &str, label: &str) -> usize {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{label}: ")))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"))
}

/// `patron rules diff` changes nothing, and its counts are what `patron rebuild` with the same
/// rules then changes in the read models.
fn rules_diff_predicts_the_rebuild(url: &str, dir: &std::path::Path) {
    let looser = dir.join("looser.toml");
    std::fs::write(
        &looser,
        "at_risk_gap_multiple_percent = 300\nchurn_gap_multiple_percent = 600\n",
    )
    .unwrap();
    let looser = looser.display().to_string();
    let before = stages_and_histories(url);
    let preview = patron(url, &["rules", "diff", "--rules", &looser])
        .success()
        .stdout();
    assert_eq!(
        stages_and_histories(url),
        before,
        "the preview changes nothing"
    );
    let rebuild = patron(url, &["rebuild", "--rules", &looser])
        .success()
        .stderr();
    let after = stages_and_histories(url);
    let stage_changes = before
        .iter()
        .filter(|(id, (stage, _))| after.get(*id).map(|a| &a.0) != Some(stage))
        .count();
    let history_changes = before
        .iter()
        .filter(|(id, (_, history))| after.get(*id).map(|a| &a.1) != Some(history))
        .count();
    assert!(stage_changes > 0, "looser rules change some stages");
    assert_eq!(
        count_after(&preview, "customers whose current stage changes"),
        stage_changes,
        "{preview}"
    );
    assert_eq!(
        count_after(&preview, "customers whose history changes"),
        history_changes,
        "{preview}"
    );
    // The rebuild published the difference: one correction per customer whose history changed.
    assert_eq!(
        count_after(&rebuild, "lifecycle records"),
        history_changes,
        "{rebuild}"
    );
}

/// `patron sources` lists what the log says is behind; `patron sources release` lets go of a
/// topic no ingest will read again, and refuses to release what is not behind.
#[test]
fn sources_lists_partitions_behind_and_releases_them() {
    use patron_domain::{CustomerId, Event, EventBody, PartitionProgress, SourceProgress};
    use patron_store::{AppendBatch, EventStore as _, ExpectedVersion};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (store, dir) = runtime.block_on(patron_store_sql::testing::fresh_sqlite());
    let url = format!("sqlite://{}", dir.path().join("events.db").display());
    let hold = |topic: &str, partition: i32, day: Option<u32>| PartitionProgress {
        topic: topic.into(),
        partition,
        read_to: day.map(|d| format!("2026-03-{d:02}T00:00:00Z").parse().unwrap()),
        behind: true,
    };
    let event = Event {
        event_id: uuid::Uuid::now_v7(),
        customer_id: CustomerId::sources(),
        occurred_at: chrono::Utc::now(),
        source: "patron-ingest".into(),
        body: EventBody::SourceProgress(SourceProgress {
            partitions: vec![
                hold("gone", 0, Some(3)),
                hold("gone", 1, None),
                hold("kept", 0, Some(5)),
            ],
        }),
    };
    let batch = AppendBatch::single(CustomerId::sources(), ExpectedVersion::Any, vec![event]);
    runtime.block_on(store.append(&batch)).unwrap();
    drop(store);

    let listed = patron(&url, &["sources"]).success().stdout();
    let lines: Vec<serde_json::Value> = listed
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(
        lines,
        vec![
            serde_json::json!({"topic": "gone", "partition": 0, "read_to": "2026-03-03T00:00:00Z"}),
            serde_json::json!({"topic": "gone", "partition": 1, "read_to": null}),
            serde_json::json!({"topic": "kept", "partition": 0, "read_to": "2026-03-05T00:00:00Z"}),
        ]
    );
    patron(&url, &["sources", "release", "--topic", "gone"]).success();
    let listed = patron(&url, &["sources"]).success().stdout();
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.contains("\"kept\""), "{listed}");
    let refused = patron(&url, &["sources", "release", "--topic", "gone"]);
    assert!(!refused.output.status.success(), "nothing to release");
    assert!(
        refused.stderr().contains("is reported behind"),
        "{}",
        refused.stderr()
    );
    patron(
        &url,
        &["sources", "release", "--topic", "kept", "--partition", "0"],
    )
    .success();
    assert_eq!(patron(&url, &["sources"]).success().stdout(), "");
}
