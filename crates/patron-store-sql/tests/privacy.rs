//! Personal data in the event store on PostgreSQL and SQLite: sealed under per-customer keys
//! (nothing personal in the stored bytes), read back whole with the master key, an error without
//! it, and erased for good by an `erasure_requested` event — also against redelivery, for reads
//! from position zero (what a rebuild does), and, on SQLite, in the bytes of the database files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use patron_domain::{CustomerId, Event, EventBody};
use patron_privacy::MasterKey;
use patron_store::{AppendBatch, EventStore, ExpectedVersion, StreamAppend};
use patron_store_sql::SqlEventStore;
use patron_store_sql::testing::{fresh_postgres, fresh_sqlite};
use serde_json::Value;

const EMAIL: &str = "ada.lovelace@example.com";
const PHONE: &str = "7700 900123";
const NAME: &str = "Lovelace";
const OTHER: &str = "the other customer's remark";

fn event(n: u32, customer: &str, event_type: &str, payload: &str) -> Event {
    Event {
        event_id: uuid::Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0000 + u128::from(n)),
        customer_id: CustomerId::parse(customer).unwrap(),
        occurred_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
            + TimeDelta::hours(n.into()),
        source: "crm".into(),
        body: EventBody::from_payload_str(event_type, payload).unwrap(),
    }
}

/// Ada's personal data in every kind of event that carries some, a purchase, and another
/// customer's feedback.
fn history() -> Vec<Event> {
    vec![
        event(
            1,
            "c-1",
            "profile_updated",
            &format!(r#"{{"traits":{{"email":"{EMAIL}","name":"Ada {NAME}"}}}}"#),
        ),
        event(
            2,
            "c-1",
            "feedback",
            &format!(r#"{{"nps":9,"comment":"call me on +44 {PHONE}"}}"#),
        ),
        event(
            3,
            "c-1",
            "identities_linked",
            &format!(
                r#"{{"identities":[{{"kind":"email","value":"{EMAIL}"}}],"evidence":"login"}}"#
            ),
        ),
        event(
            4,
            "c-1",
            "purchase",
            r#"{"order_id":"o-1","amount":{"minor_units":4999,"currency":"EUR"}}"#,
        ),
        event(
            5,
            "c-2",
            "feedback",
            &format!(r#"{{"csat":4,"comment":"{OTHER}"}}"#),
        ),
    ]
}

async fn append(store: &dyn EventStore, events: &[Event]) -> patron_store::AppendReceipt {
    let mut batch = AppendBatch::default();
    for e in events {
        batch.streams.push(StreamAppend {
            customer_id: e.customer_id.clone(),
            expected: ExpectedVersion::Any,
            events: vec![e.clone()],
        });
    }
    store.append(&batch).await.expect("append")
}

async fn strings(sql: &SqlEventStore, query: &str) -> Vec<String> {
    match sql {
        SqlEventStore::Postgres(s) => sqlx::query_scalar(query).fetch_all(s.pool()).await,
        SqlEventStore::Sqlite(s) => sqlx::query_scalar(query).fetch_all(s.pool()).await,
    }
    .unwrap_or_else(|e| panic!("{query}: {e}"))
}

async fn wrapped_key(sql: &SqlEventStore, customer: &str) -> Vec<Vec<u8>> {
    let query = format!("SELECT wrapped_key FROM customer_keys WHERE customer_id = '{customer}'");
    match sql {
        SqlEventStore::Postgres(s) => sqlx::query_scalar(&query).fetch_all(s.pool()).await,
        SqlEventStore::Sqlite(s) => sqlx::query_scalar(&query).fetch_all(s.pool()).await,
    }
    .unwrap()
}

async fn stored_payloads(sql: &SqlEventStore) -> String {
    strings(
        sql,
        "SELECT CAST(payload AS TEXT) FROM events ORDER BY position",
    )
    .await
    .join("\n")
}

async fn payload_of(store: &dyn EventStore, customer: &str, version: u64) -> Value {
    let events = store
        .read_stream(&CustomerId::parse(customer).unwrap(), version - 1, 1)
        .await
        .expect("read the stream");
    events[0].event.body.to_payload()
}

async fn sealed_then_erased(sql: SqlEventStore, files: Option<std::path::PathBuf>) {
    let master = Arc::new(MasterKey::generate().unwrap());
    let sealed = sql.clone().with_master_key(Some(master.clone()));
    let store = sealed.clone().into_dyn();
    append(store.as_ref(), &history()).await;

    // Nothing personal is stored in the clear; the scores and amounts are.
    let stored = stored_payloads(&sql).await;
    for secret in [EMAIL, PHONE, NAME, OTHER] {
        assert!(!stored.contains(secret), "{secret} stored in the clear");
    }
    // (PostgreSQL prints jsonb with a space after each colon.)
    assert!(
        stored.contains("$sealed") && stored.contains("4999") && stored.contains("\"nps\""),
        "{stored}"
    );
    assert_eq!(
        strings(&sql, "SELECT customer_id FROM customer_keys ORDER BY 1").await,
        ["c-1", "c-2"]
    );
    // With the master key, events read back as they were sent.
    for (n, original) in history().iter().take(4).enumerate() {
        let version = u64::try_from(n + 1).unwrap();
        assert_eq!(
            payload_of(store.as_ref(), "c-1", version).await,
            original.body.to_payload()
        );
    }
    // Without it (or with another one), reading is an error, never a silent erasure.
    for wrong in [None, Some(Arc::new(MasterKey::generate().unwrap()))] {
        let blind = sql.clone().with_master_key(wrong).into_dyn();
        let error = blind
            .read_stream(&CustomerId::parse("c-1").unwrap(), 0, 10)
            .await
            .expect_err("sealed data without its master key");
        assert!(error.to_string().contains("master key"), "{error}");
    }
    let old_key = wrapped_key(&sql, "c-1").await;
    assert_eq!(old_key.len(), 1);

    // The erasure.
    let erasure = event(
        6,
        "c-1",
        "erasure_requested",
        r#"{"reason":"customer request #123"}"#,
    );
    append(store.as_ref(), std::slice::from_ref(&erasure)).await;
    assert_eq!(
        strings(&sql, "SELECT customer_id FROM customer_keys ORDER BY 1").await,
        ["c-2"],
        "the key is destroyed"
    );
    let profile = payload_of(store.as_ref(), "c-1", 1).await;
    assert_eq!(profile["traits"], serde_json::json!({}));
    assert_eq!(profile["$erased"], true);
    let feedback = payload_of(store.as_ref(), "c-1", 2).await;
    assert_eq!(feedback["nps"], 9, "non-personal facts stay");
    assert!(feedback.get("comment").is_none() && feedback["$erased"] == true);
    assert_eq!(
        payload_of(store.as_ref(), "c-1", 3).await["identities"],
        serde_json::json!([])
    );
    assert_eq!(
        payload_of(store.as_ref(), "c-1", 4).await["amount"]["minor_units"],
        4999
    );
    assert_eq!(
        payload_of(store.as_ref(), "c-2", 1).await["comment"],
        OTHER,
        "other customers keep theirs"
    );
    // The erasure itself stays in the log: the audit trail.
    assert_eq!(
        payload_of(store.as_ref(), "c-1", 5).await["reason"],
        "customer request #123"
    );
    let stored = stored_payloads(&sql).await;
    for secret in [EMAIL, PHONE, NAME] {
        assert!(
            !stored.contains(secret),
            "{secret} stored after the erasure"
        );
    }
    assert_eq!(
        strings(
            &sql,
            "SELECT CAST(position AS TEXT) FROM events WHERE customer_id = 'c-1' \
             AND payload_digest IS NOT NULL ORDER BY position",
        )
        .await,
        ["4", "6"],
        "the digests of erased content are forgotten (they would confirm a guess)"
    );

    // The database files hold neither the personal data nor the destroyed key (scanned before
    // anything else is written over the freed space).
    if let Some(dir) = &files {
        let secrets = [
            EMAIL.as_bytes(),
            PHONE.as_bytes(),
            NAME.as_bytes(),
            &old_key[0],
        ];
        assert_not_in_files(&sql, dir, &secrets).await;
    }

    // Redelivered from Kafka, the erased events are recognised as stored: nothing comes back.
    let receipt = append(store.as_ref(), &history()[..3]).await;
    assert_eq!((receipt.appended, receipt.duplicates), (0, 3));
    assert_eq!(
        payload_of(store.as_ref(), "c-1", 1).await["traits"],
        serde_json::json!({})
    );

    // Later events of the customer get a new key and read back.
    let later = event(7, "c-1", "feedback", r#"{"nps":10,"comment":"back again"}"#);
    append(store.as_ref(), &[later]).await;
    assert_eq!(
        payload_of(store.as_ref(), "c-1", 6).await["comment"],
        "back again"
    );
    let new_key = wrapped_key(&sql, "c-1").await;
    assert_ne!(new_key, old_key);

    // A read of the whole log (what a rebuild does) sees the erased events, erased.
    let all = store
        .read_all(patron_store::Position::ZERO, 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 7);
    assert!(
        all.iter().map(|e| e.position.0).eq(1..=7),
        "sealed and plain rows come back in log order"
    );
    assert_eq!(
        all[4].event.body.to_payload()["comment"],
        OTHER,
        "a sealed row read with the page opens"
    );
    let text = format!("{:?}", all);
    for secret in [EMAIL, PHONE, NAME] {
        assert!(!text.contains(secret), "{secret} in a replay");
    }
}

/// Checkpoints the SQLite WAL, then asserts that no file in `dir` holds any of `needles`.
async fn assert_not_in_files(sql: &SqlEventStore, dir: &std::path::Path, needles: &[&[u8]]) {
    let SqlEventStore::Sqlite(s) = sql else {
        unreachable!("only SQLite's files are scanned")
    };
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(s.pool())
        .await
        .unwrap();
    let mut scanned = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        scanned += bytes.len();
        for needle in needles {
            assert!(
                !contains(&bytes, needle),
                "{:?} in {}",
                String::from_utf8_lossy(needle),
                path.display()
            );
        }
    }
    assert!(scanned > 10_000, "the files were scanned: {scanned} bytes");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn sqlite_personal_data_is_sealed_and_erasure_destroys_it() {
    let (store, dir) = fresh_sqlite().await;
    let path = dir.path().to_path_buf();
    sealed_then_erased(SqlEventStore::Sqlite(store), Some(path)).await;
}

#[tokio::test]
async fn postgres_personal_data_is_sealed_and_erasure_destroys_it() {
    sealed_then_erased(SqlEventStore::Postgres(fresh_postgres().await), None).await;
}

/// Without a master key personal data is stored as sent, and an erasure scrubs it in place.
async fn unsealed_erasure(sql: SqlEventStore, files: Option<std::path::PathBuf>) {
    let store = sql.clone().into_dyn();
    append(store.as_ref(), &history()).await;
    assert!(stored_payloads(&sql).await.contains(EMAIL));
    append(
        store.as_ref(),
        &[event(6, "c-1", "erasure_requested", "{}")],
    )
    .await;
    let stored = stored_payloads(&sql).await;
    for secret in [EMAIL, PHONE, NAME] {
        assert!(
            !stored.contains(secret),
            "{secret} stored after the erasure"
        );
    }
    assert!(stored.contains(OTHER), "other customers keep theirs");
    assert_eq!(payload_of(store.as_ref(), "c-1", 2).await["$erased"], true);
    if let Some(dir) = &files {
        let secrets = [EMAIL.as_bytes(), PHONE.as_bytes(), NAME.as_bytes()];
        assert_not_in_files(&sql, dir, &secrets).await;
    }
}

#[tokio::test]
async fn sqlite_erasure_without_a_master_key_scrubs_in_place() {
    let (store, dir) = fresh_sqlite().await;
    let path = dir.path().to_path_buf();
    unsealed_erasure(SqlEventStore::Sqlite(store), Some(path)).await;
}

#[tokio::test]
async fn postgres_erasure_without_a_master_key_scrubs_in_place() {
    unsealed_erasure(SqlEventStore::Postgres(fresh_postgres().await), None).await;
}
