//! Identity resolution on PostgreSQL and SQLite: `identities_linked` claims identifiers and,
//! when one is held by another customer, appends a `customers_merged` event right after the link;
//! merges are bounded per identifier kind and cluster, blocked after an unmerge, and events that
//! name only an identifier resolve to the customer holding it (or a provisional one).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use patron_domain::{CustomerId, Event, EventBody, Identity, IdentityKind};
use patron_privacy::MasterKey;
use patron_store::{AppendBatch, EventStore, Position, RecordedEvent};
use patron_store_sql::SqlEventStore;

fn id(n: u32) -> uuid::Uuid {
    uuid::Uuid::from_u128(0x1de7_0000_0000_4000_8000_0000_0000_0000 + u128::from(n))
}

fn event(n: u32, customer: &str, event_type: &str, payload: &str) -> Event {
    Event {
        event_id: id(n),
        customer_id: CustomerId::parse(customer).unwrap(),
        occurred_at: Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
            + TimeDelta::hours(n.into()),
        source: "crm".into(),
        body: EventBody::from_payload_str(event_type, payload).unwrap(),
    }
}

fn link(n: u32, customer: &str, identities: &[(&str, &str)]) -> Event {
    let identities: Vec<serde_json::Value> = identities
        .iter()
        .map(|(kind, value)| serde_json::json!({"kind": kind, "value": value}))
        .collect();
    let payload = serde_json::json!({"identities": identities, "evidence": "login"});
    event(n, customer, "identities_linked", &payload.to_string())
}

fn unmerge(n: u32, customer: &str, merged: &str) -> Event {
    let payload = serde_json::json!({"merged_customer_id": merged, "reason": "two people"});
    event(n, customer, "customers_unmerged", &payload.to_string())
}

fn identity(kind: &str, value: &str) -> Identity {
    Identity {
        kind: IdentityKind::from_name(kind),
        value: value.into(),
    }
}

fn customer(id: &str) -> CustomerId {
    CustomerId::parse(id).unwrap()
}

async fn append(store: &dyn EventStore, events: Vec<Event>) -> patron_store::AppendReceipt {
    store
        .append(&AppendBatch::from_events(events))
        .await
        .expect("append")
}

async fn log(store: &dyn EventStore) -> Vec<RecordedEvent> {
    store.read_all(Position::ZERO, 10_000).await.expect("read")
}

/// The merges in the log: (survivor, merged, kind, link event), in log order.
async fn merges(store: &dyn EventStore) -> Vec<(String, String, String, uuid::Uuid)> {
    log(store)
        .await
        .into_iter()
        .filter_map(|r| match r.event.body {
            EventBody::CustomersMerged(m) => Some((
                r.event.customer_id.to_string(),
                m.merged_customer_id.to_string(),
                m.identity_kind.as_str().to_owned(),
                m.link_event_id,
            )),
            _ => None,
        })
        .collect()
}

async fn links_claim_and_merge(sql: SqlEventStore) {
    let store = sql.into_dyn();
    let store = store.as_ref();
    append(
        store,
        vec![link(
            1,
            "c-1",
            &[("email", "ada@example.com"), ("phone", "+44 7700 900123")],
        )],
    )
    .await;
    assert!(merges(store).await.is_empty(), "nothing held them before");

    // Another spelling of the same email, linked to c-2: c-1 is merged into c-2, right after the
    // link, with the link as evidence.
    let receipt = append(
        store,
        vec![link(2, "c-2", &[("email", "  ADA@Example.com ")])],
    )
    .await;
    assert_eq!(
        receipt.appended, 1,
        "the merge is not one of the batch's events"
    );
    let all = log(store).await;
    let at = all.iter().position(|r| r.event.event_id == id(2)).unwrap();
    let EventBody::CustomersMerged(merge) = &all[at + 1].event.body else {
        panic!("the merge follows its link: {:?}", all[at + 1]);
    };
    assert_eq!(all[at + 1].event.customer_id, customer("c-2"));
    assert_eq!(merge.merged_customer_id, customer("c-1"));
    assert_eq!(merge.link_event_id, id(2));
    assert_eq!(merge.identity_kind, IdentityKind::Email);
    assert_eq!(merge.evidence.as_deref(), Some("login"));
    assert_eq!(receipt.last_position, Some(all[at + 1].position));
    let positions: Vec<u64> = all.iter().map(|r| r.position.0).collect();
    assert_eq!(
        positions,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "gapless"
    );
    assert_eq!(
        all[at + 1].version,
        2,
        "the merge is the survivor's next version"
    );

    // Redelivery of the link is a duplicate and merges nothing again.
    let again = append(
        store,
        vec![link(2, "c-2", &[("email", "  ADA@Example.com ")])],
    )
    .await;
    assert_eq!((again.appended, again.duplicates), (0, 1));
    assert_eq!(merges(store).await.len(), 1);

    // c-1's phone, linked to c-3: the whole cluster (root c-2) joins c-3.
    append(
        store,
        vec![link(3, "c-3", &[("phone", "+44 (7700) 900-123")])],
    )
    .await;
    assert_eq!(
        merges(store).await,
        vec![
            ("c-2".into(), "c-1".into(), "email".into(), id(2)),
            ("c-3".into(), "c-2".into(), "phone".into(), id(3)),
        ]
    );
    // Every identifier of the cluster resolves to its root.
    for (kind, value) in [("email", "ada@example.com"), ("phone", "+447700900123")] {
        assert_eq!(
            store
                .resolve_identity(&identity(kind, value))
                .await
                .unwrap(),
            customer("c-3"),
            "{kind}"
        );
    }
    // Linking an identifier the cluster already holds changes nothing.
    append(store, vec![link(4, "c-1", &[("email", "ada@example.com")])]).await;
    assert_eq!(merges(store).await.len(), 2);
}

async fn provisional_customers(sql: SqlEventStore) {
    let store = sql.into_dyn();
    let store = store.as_ref();
    let device = identity("device_id", "dev-9f2c");
    let first = store.resolve_identity(&device).await.unwrap();
    assert!(first.is_provisional(), "{first}");
    assert!(first.as_str().starts_with("~device_id:"), "{first}");
    assert!(
        !first.as_str().contains("dev-9f2c"),
        "no identifier in the id: {first}"
    );
    assert_eq!(
        store.resolve_identity(&device).await.unwrap(),
        first,
        "stable"
    );

    // The provisional customer links a known customer's email: the named customer survives.
    append(
        store,
        vec![link(1, "c-7", &[("email", "grace@example.com")])],
    )
    .await;
    append(
        store,
        vec![link(2, first.as_str(), &[("email", "grace@example.com")])],
    )
    .await;
    assert_eq!(
        merges(store).await,
        vec![("c-7".into(), first.to_string(), "email".into(), id(2))]
    );
    assert_eq!(
        store.resolve_identity(&device).await.unwrap(),
        customer("c-7")
    );

    // A named customer links a device nobody has seen before: claimed, no provisional customer.
    append(store, vec![link(3, "c-8", &[("device_id", "dev-77aa")])]).await;
    assert_eq!(
        store
            .resolve_identity(&identity("device_id", "dev-77aa"))
            .await
            .unwrap(),
        customer("c-8")
    );
}

async fn merges_are_bounded(sql: SqlEventStore) {
    let store = sql.into_dyn();
    let store = store.as_ref();
    // One WeChat UnionID per customer: the second is not claimed.
    append(
        store,
        vec![link(
            1,
            "c-1",
            &[("wechat_unionid", "u-1"), ("wechat_unionid", "u-2")],
        )],
    )
    .await;
    assert_eq!(
        store
            .resolve_identity(&identity("wechat_unionid", "u-1"))
            .await
            .unwrap(),
        customer("c-1")
    );
    assert!(
        store
            .resolve_identity(&identity("wechat_unionid", "u-2"))
            .await
            .unwrap()
            .is_provisional(),
        "u-2 was past the limit and stayed unclaimed"
    );
    // Two customers with a UnionID each: a link of c-1's to c-2 would give one customer two.
    append(store, vec![link(2, "c-2", &[("wechat_unionid", "u-3")])]).await;
    append(store, vec![link(3, "c-2", &[("wechat_unionid", "u-1")])]).await;
    assert!(
        merges(store).await.is_empty(),
        "refused: {:?}",
        merges(store).await
    );

    // A shared device fuses at most the cluster limit of customers.
    let mut batch = Vec::new();
    for n in 0..40u32 {
        batch.push(link(
            100 + n,
            &format!("s-{n}"),
            &[("device_id", "kiosk-1")],
        ));
    }
    append(store, batch).await;
    let fused = merges(store).await.len();
    assert_eq!(
        fused, 31,
        "32 customers in one cluster at most, got {fused} merges"
    );
}

async fn unmerge_splits_and_blocks(sql: SqlEventStore) {
    let store = sql.into_dyn();
    let store = store.as_ref();
    append(
        store,
        vec![link(1, "c-1", &[("email", "shared@example.com")])],
    )
    .await;
    // In one batch: the link that merges c-1 into c-2, then the unmerge. The merge is stored
    // between them, so a reader of the log sees merge then unmerge, as the index did.
    append(
        store,
        vec![
            link(2, "c-2", &[("email", "shared@example.com")]),
            unmerge(3, "c-2", "c-1"),
        ],
    )
    .await;
    let types: Vec<String> = log(store)
        .await
        .iter()
        .map(|r| r.event.event_type().to_string())
        .collect();
    assert_eq!(
        types,
        [
            "identities_linked",
            "identities_linked",
            "customers_merged",
            "customers_unmerged"
        ]
    );
    assert_eq!(
        store
            .resolve_identity(&identity("email", "shared@example.com"))
            .await
            .unwrap(),
        customer("c-1"),
        "split off again: the email is c-1's, who claimed it"
    );
    // Linking them again does not merge them again.
    append(
        store,
        vec![link(4, "c-2", &[("email", "shared@example.com")])],
    )
    .await;
    assert_eq!(merges(store).await.len(), 1);
    // An unmerge of a customer not merged into this one changes nothing.
    append(store, vec![link(5, "c-3", &[("phone", "+1 555 0100")])]).await;
    append(store, vec![link(6, "c-4", &[("phone", "+1 555 0100")])]).await;
    append(store, vec![unmerge(7, "c-2", "c-3")]).await;
    assert_eq!(
        store
            .resolve_identity(&identity("phone", "+15550100"))
            .await
            .unwrap(),
        customer("c-4")
    );
}

async fn erasure_forgets_identifiers(sql: SqlEventStore) {
    let master = Arc::new(MasterKey::generate().unwrap());
    let sql = sql.with_master_key(Some(master));
    let raw = sql.clone();
    let store = sql.into_dyn();
    let store = store.as_ref();
    append(
        store,
        vec![link(1, "c-1", &[("email", "erase.me@example.com")])],
    )
    .await;
    let digests: Vec<String> = match &raw {
        SqlEventStore::Postgres(s) => {
            sqlx::query_scalar("SELECT kind || ':' || digest || ':' || customer_id FROM identities")
                .fetch_all(s.pool())
                .await
        }
        SqlEventStore::Sqlite(s) => {
            sqlx::query_scalar("SELECT kind || ':' || digest || ':' || customer_id FROM identities")
                .fetch_all(s.pool())
                .await
        }
    }
    .unwrap();
    assert_eq!(digests.len(), 1);
    assert!(!digests[0].contains("erase.me"), "{digests:?}");
    append(
        store,
        vec![event(
            2,
            "c-1",
            "erasure_requested",
            r#"{"reason":"GDPR art. 17"}"#,
        )],
    )
    .await;
    assert!(
        store
            .resolve_identity(&identity("email", "erase.me@example.com"))
            .await
            .unwrap()
            .is_provisional(),
        "the erased customer's identifiers lead nowhere"
    );
}

macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let (store, _dir) = patron_store_sql::testing::fresh_sqlite().await;
                    super::$scenario(patron_store_sql::SqlEventStore::Sqlite(store)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let store = patron_store_sql::testing::fresh_postgres().await;
                    super::$scenario(patron_store_sql::SqlEventStore::Postgres(store)).await;
                }
            )*
        }
    };
}

on_both!(
    links_claim_and_merge,
    provisional_customers,
    merges_are_bounded,
    unmerge_splits_and_blocks,
    erasure_forgets_identifiers,
);
