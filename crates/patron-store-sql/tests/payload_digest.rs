//! The stored payload digest (migration 0008) on both SQL backends: what is stored is the event's
//! digest, and events stored before digests were kept (NULL) stay idempotent under their id.
//! The conflict rules themselves are in the store contract suite.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use patron_domain::{EventBody, EventDigest, Money};
use patron_store::contract::{customer, purchase};
use patron_store::{AppendBatch, EventStore, Position, StoreError};

fn altered(event: &patron_domain::Event) -> patron_domain::Event {
    let mut other = event.clone();
    if let EventBody::Purchase(p) = &mut other.body {
        p.amount = Money::new(p.amount.minor_units + 1, p.amount.currency).unwrap();
    }
    other
}

/// Appends one event, checks the stored digest through `read_digest`, then forgets it
/// (`forget`, as for a row written before migration 0008) and checks that other content under
/// the same id is then acknowledged as a duplicate, while a fresh conflict is still refused.
async fn digests_are_stored_and_null_means_equal<S, R, F>(store: S, read_digest: R, forget: F)
where
    S: EventStore,
    R: AsyncFn(uuid::Uuid) -> Option<EventDigest>,
    F: AsyncFn(uuid::Uuid),
{
    let ada = customer("ada");
    let (old, new) = (purchase(&ada, 100), purchase(&ada, 200));
    store
        .append(&AppendBatch::from_events(vec![old.clone(), new.clone()]))
        .await
        .unwrap();
    assert_eq!(
        read_digest(old.event_id).await,
        Some(old.digest()),
        "the stored digest is the event's"
    );
    forget(old.event_id).await;
    let receipt = store
        .append(&AppendBatch::from_events(vec![altered(&old)]))
        .await
        .expect("an event stored without a digest counts as the same content");
    assert_eq!((receipt.appended, receipt.duplicates), (0, 1));
    match store
        .append(&AppendBatch::from_events(vec![altered(&new)]))
        .await
    {
        Err(StoreError::DuplicateEventIds(conflicts)) => {
            assert_eq!(conflicts.len(), 1);
            assert_eq!(conflicts[0].event_id, new.event_id);
        }
        other => panic!("an event with a digest still conflicts, got {other:?}"),
    }
    assert_eq!(store.head().await.unwrap(), Position(2));
    let stored = store.read_all(Position::ZERO, 10).await.unwrap();
    assert_eq!(stored[0].event, old, "the first content stays");
}

#[tokio::test]
async fn postgres_stores_digests_and_treats_null_as_equal() {
    let store = patron_store_sql::testing::fresh_postgres().await;
    let pool = store.pool().clone();
    let read_pool = pool.clone();
    digests_are_stored_and_null_means_equal(
        store,
        async |id| {
            let bytes: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT payload_digest FROM events WHERE event_id = $1")
                    .bind(id)
                    .fetch_one(&read_pool)
                    .await
                    .unwrap();
            bytes.map(|b| EventDigest::from_slice(&b).expect("32 bytes"))
        },
        async |id| {
            sqlx::query("UPDATE events SET payload_digest = NULL WHERE event_id = $1")
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn sqlite_stores_digests_and_treats_null_as_equal() {
    let (store, _dir) = patron_store_sql::testing::fresh_sqlite().await;
    let pool = store.pool().clone();
    let read_pool = pool.clone();
    digests_are_stored_and_null_means_equal(
        store,
        async |id| {
            let hex: Option<String> =
                sqlx::query_scalar("SELECT payload_digest FROM events WHERE event_id = ?1")
                    .bind(id.to_string())
                    .fetch_one(&read_pool)
                    .await
                    .unwrap();
            hex.map(|h| EventDigest::from_hex(&h).expect("64 hex digits"))
        },
        async |id| {
            sqlx::query("UPDATE events SET payload_digest = NULL WHERE event_id = ?1")
                .bind(id.to_string())
                .execute(&pool)
                .await
                .unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn postgres_refuses_a_digest_of_the_wrong_length() {
    let store = patron_store_sql::testing::fresh_postgres().await;
    let ada = customer("ada");
    store
        .append(&AppendBatch::from_events(vec![purchase(&ada, 1)]))
        .await
        .unwrap();
    let result = sqlx::query("UPDATE events SET payload_digest = '\\x0102'::bytea")
        .execute(store.pool())
        .await;
    assert!(
        result.is_err(),
        "the check constraint keeps digests at 32 bytes"
    );
}
