//! The PostgreSQL commit fence, shown deterministically: while one append holds its positions
//! uncommitted, a second append cannot commit, so no reader can see a later position first.
//! Without the fence the second append would commit and become visible while the first is held,
//! and this test would fail.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use patron_store::contract::{customer, purchase};
use patron_store::{AppendBatch, EventStore, Position};
use tokio::sync::oneshot;

/// Waits until some backend is blocked on the fence row, or `append` finishes (which, while the
/// first append is held, means the fence did not hold).
async fn blocked_on_fence(store: &patron_store_sql::PgEventStore) -> bool {
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND query LIKE '%event_log_head FOR UPDATE%'",
        )
        .fetch_one(store.pool())
        .await
        .expect("query pg_stat_activity");
        if waiting > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_later_append_cannot_become_visible_before_an_earlier_one() {
    let store = patron_store_sql::testing::fresh_postgres().await;
    let (ada, bob) = (customer("ada"), customer("bob"));
    let first = AppendBatch::from_events(vec![purchase(&ada, 1), purchase(&ada, 2)]);
    let second = AppendBatch::from_events(vec![purchase(&bob, 3)]);

    let (held_tx, held_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let holder = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append_with_pause(&first, async move {
                    let _ = held_tx.send(());
                    let _ = release_rx.await;
                })
                .await
        })
    };
    held_rx
        .await
        .expect("the first append reaches its commit point");

    let mut later = {
        let store = store.clone();
        tokio::spawn(async move { store.append(&second).await })
    };
    tokio::select! {
        _ = blocked_on_fence(&store) => {}
        done = &mut later => panic!(
            "the second append committed while the first still held positions 1-2: {done:?}"
        ),
    }
    assert!(
        store.read_all(Position::ZERO, 10).await.unwrap().is_empty(),
        "nothing is visible while the first append is uncommitted"
    );

    release_tx.send(()).expect("release the first append");
    let first = holder.await.unwrap().expect("first append commits");
    let second = later
        .await
        .unwrap()
        .expect("second append commits after it");
    assert_eq!(first.last_position, Some(Position(2)));
    assert_eq!(
        second.last_position,
        Some(Position(3)),
        "the later append gets the later position"
    );
    let all = store.read_all(Position::ZERO, 10).await.unwrap();
    let owners: Vec<&str> = all.iter().map(|e| e.event.customer_id.as_str()).collect();
    assert_eq!(owners, vec!["ada", "ada", "bob"]);
}
