//! The contract every [`EventStore`] backend must pass, written once and run against each.
//!
//! A backend's tests invoke [`event_store_contract!`](crate::event_store_contract) with an
//! expression that yields a fresh, empty store; the macro expands to one `#[tokio::test]` per
//! guarantee. Each test panics with a message saying what was expected.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    missing_docs
)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{TimeZone, Utc};
use patron_domain::{
    Currency, CustomerId, Event, EventBody, Interaction, InteractionKind, Money, Purchase,
};
use uuid::Uuid;

use crate::{
    AppendBatch, EventIdConflict, EventStore, ExpectedVersion, Position, RecordedEvent,
    SourceOffset, StoreError, StreamAppend,
};

/// Expands to one test per contract guarantee, each run against a fresh store from `$fresh`
/// (an expression evaluating to a future of the store, e.g. `async { MyStore::new() }`).
#[macro_export]
macro_rules! event_store_contract {
    ($fresh:expr) => {
        $crate::event_store_contract!(@tests $fresh;
            append_then_read_back,
            a_stream_twice_in_a_batch_keeps_batch_order,
            text_survives_storage,
            idempotent_by_event_id,
            duplicates_within_a_batch_are_stored_once,
            reused_id_with_different_content_is_refused_precisely,
            reused_id_within_a_batch_is_refused_precisely,
            batch_is_atomic,
            invalid_batch_writes_nothing,
            offsets_commit_with_events,
            offsets_never_move_backwards,
            expected_version_is_checked,
            concurrent_appends_exactly_one_wins,
            read_stream_pages_in_order,
            read_all_pages_in_order,
            read_streams_reads_the_named_streams_up_to_a_position,
            concurrent_writers_never_skip,
        );
    };
    (@tests $fresh:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let store = $fresh.await;
                $crate::contract::$name(store).await;
            }
        )*
    };
}

/// A customer id for tests.
pub fn customer(name: &str) -> CustomerId {
    CustomerId::parse(name).expect("test customer ids are valid")
}

/// A purchase of `minor_units` EUR by `customer`, with a fresh event id.
pub fn purchase(customer_id: &CustomerId, minor_units: i64) -> Event {
    let eur = Currency::from_code("EUR").expect("EUR is ISO 4217");
    Event {
        event_id: Uuid::new_v4(),
        customer_id: customer_id.clone(),
        occurred_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
        source: "contract-test".into(),
        body: EventBody::Purchase(Purchase {
            order_id: format!("o-{minor_units}"),
            amount: Money::new(minor_units, eur).expect("test amounts are in range"),
            items: Vec::new(),
            extra: serde_json::Map::from_iter([("note".to_owned(), "kept".into())]),
        }),
    }
}

/// A visit by `customer`, with a fresh event id.
pub fn visit(customer_id: &CustomerId) -> Event {
    Event {
        event_id: Uuid::new_v4(),
        customer_id: customer_id.clone(),
        occurred_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 6).unwrap(),
        source: "contract-test".into(),
        body: EventBody::Interaction(Interaction {
            channel: "web".into(),
            kind: InteractionKind::Visit,
            extra: serde_json::Map::new(),
        }),
    }
}

async fn read_everything<S: EventStore>(store: &S) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut after = Position::ZERO;
    loop {
        let page = store.read_all(after, 97).await.expect("read_all succeeds");
        let Some(last) = page.last() else { break };
        after = last.position;
        all.extend(page);
    }
    all
}

fn ids(events: &[RecordedEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event.event_id).collect()
}

fn offset(consumer: &str, partition: i32, next_offset: i64) -> SourceOffset {
    SourceOffset {
        consumer: consumer.into(),
        topic: "customer-events".into(),
        partition,
        next_offset,
    }
}

pub async fn append_then_read_back<S: EventStore>(store: S) {
    let ada = customer("ada");
    let events = vec![purchase(&ada, 1999), visit(&ada)];
    let receipt = store
        .append(&AppendBatch::single(
            ada.clone(),
            ExpectedVersion::NoStream,
            events.clone(),
        ))
        .await
        .expect("first append to a new stream succeeds");
    assert_eq!(receipt.appended, 2, "both events are new");
    assert_eq!(receipt.duplicates, 0);
    assert_eq!(
        receipt.last_position,
        Some(Position(2)),
        "positions start at 1"
    );
    assert_eq!(store.head().await.unwrap(), Position(2));
    assert_eq!(store.stream_version(&ada).await.unwrap(), 2);
    assert_eq!(store.stream_version(&customer("nobody")).await.unwrap(), 0);

    let stream = store.read_stream(&ada, 0, 10).await.unwrap();
    let read: Vec<&Event> = stream.iter().map(|r| &r.event).collect();
    assert_eq!(
        read,
        events.iter().collect::<Vec<_>>(),
        "events read back exactly as written"
    );
    assert_eq!(
        stream
            .iter()
            .map(|r| (r.position.0, r.version))
            .collect::<Vec<_>>(),
        vec![(1, 1), (2, 2)],
        "positions and versions follow append order"
    );
    assert!(
        store
            .read_stream(&customer("nobody"), 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A batch may name one stream more than once (ingest puts its source progress first and last):
/// positions follow the batch's order and the stream's versions go on from one part to the next.
pub async fn a_stream_twice_in_a_batch_keeps_batch_order<S: EventStore>(store: S) {
    let (ada, bob) = (customer("ada"), customer("bob"));
    let part = |customer_id: &CustomerId, events: Vec<Event>| StreamAppend {
        customer_id: customer_id.clone(),
        expected: ExpectedVersion::Any,
        events,
    };
    let (first, middle, last) = (visit(&ada), purchase(&bob, 500), visit(&ada));
    let batch = AppendBatch {
        streams: vec![
            part(&ada, vec![first.clone()]),
            part(&bob, vec![middle.clone()]),
            part(&ada, vec![last.clone()]),
        ],
        offsets: Vec::new(),
    };
    let receipt = store.append(&batch).await.expect("the batch is stored");
    assert_eq!(receipt.appended, 3);
    let all = read_everything(&store).await;
    assert_eq!(
        all.iter()
            .map(|r| (r.event.event_id, r.position.0, r.version))
            .collect::<Vec<_>>(),
        vec![
            (first.event_id, 1, 1),
            (middle.event_id, 2, 1),
            (last.event_id, 3, 2)
        ],
        "positions in batch order, versions consecutive per stream"
    );
    assert_eq!(store.stream_version(&ada).await.unwrap(), 2);
}

pub async fn text_survives_storage<S: EventStore>(store: S) {
    let who = customer("客户-42 \\ 'quoted'");
    let mut event = purchase(&who, 1);
    event.source = "shop\twith\ttabs\\and\\backslashes".into();
    if let EventBody::Purchase(p) = &mut event.body {
        p.extra.insert(
            "note".into(),
            "line one\nline two\r\n\"quoted\" \\N tab\t emoji 🎉 \u{7f}".into(),
        );
    }
    store
        .append(&AppendBatch::from_events(vec![event.clone()]))
        .await
        .expect("any valid text can be stored");
    let back = store.read_stream(&who, 0, 10).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].event, event, "text reads back byte for byte");
}

pub async fn idempotent_by_event_id<S: EventStore>(store: S) {
    let ada = customer("ada");
    let first = vec![purchase(&ada, 100), purchase(&ada, 200)];
    store
        .append(&AppendBatch::single(
            ada.clone(),
            ExpectedVersion::NoStream,
            first.clone(),
        ))
        .await
        .unwrap();
    // The producer re-sends the same events, with the same (now stale) expectation.
    let retry = store
        .append(&AppendBatch::single(
            ada.clone(),
            ExpectedVersion::NoStream,
            first.clone(),
        ))
        .await
        .expect("re-sending committed events is acknowledged, not a conflict");
    assert_eq!((retry.appended, retry.duplicates), (0, 2), "{retry:?}");
    assert_eq!(retry.last_position, None);
    // A partly new batch stores only the new event, at the next version.
    let third = purchase(&ada, 300);
    let mixed = store
        .append(&AppendBatch::single(
            ada.clone(),
            ExpectedVersion::Any,
            vec![first[1].clone(), third.clone()],
        ))
        .await
        .unwrap();
    assert_eq!((mixed.appended, mixed.duplicates), (1, 1), "{mixed:?}");
    let stream = store.read_stream(&ada, 0, 10).await.unwrap();
    assert_eq!(
        ids(&stream),
        vec![first[0].event_id, first[1].event_id, third.event_id],
        "each event stored once"
    );
    assert_eq!(stream[2].version, 3);
    assert_eq!(store.head().await.unwrap(), Position(3));
}

pub async fn duplicates_within_a_batch_are_stored_once<S: EventStore>(store: S) {
    let ada = customer("ada");
    let event = purchase(&ada, 100);
    let receipt = store
        .append(&AppendBatch::from_events(vec![
            event.clone(),
            event.clone(),
            visit(&ada),
        ]))
        .await
        .unwrap();
    assert_eq!(
        (receipt.appended, receipt.duplicates),
        (2, 1),
        "{receipt:?}"
    );
    assert_eq!(read_everything(&store).await.len(), 2);
}

/// The same event with its amount changed: same id, different content.
fn altered(event: &Event) -> Event {
    let mut other = event.clone();
    if let EventBody::Purchase(p) = &mut other.body {
        p.amount = Money::new(p.amount.minor_units + 1, p.amount.currency)
            .expect("test amounts are in range");
    }
    other
}

fn expect_conflicts(result: Result<crate::AppendReceipt, StoreError>) -> Vec<EventIdConflict> {
    match result {
        Err(StoreError::DuplicateEventIds(conflicts)) => conflicts,
        other => panic!("expected StoreError::DuplicateEventIds, got {other:?}"),
    }
}

pub async fn reused_id_with_different_content_is_refused_precisely<S: EventStore>(store: S) {
    let (ada, bob) = (customer("ada"), customer("bob"));
    let original = purchase(&ada, 100);
    let resent = purchase(&bob, 7);
    store
        .append(&AppendBatch::from_events(vec![
            original.clone(),
            resent.clone(),
        ]))
        .await
        .unwrap();
    let imposter = altered(&original);
    let (new_ada, new_bob) = (visit(&ada), purchase(&bob, 8));
    let batch = AppendBatch {
        streams: vec![
            StreamAppend {
                customer_id: bob.clone(),
                expected: ExpectedVersion::Any,
                // A redelivery (same content) beside a new event: both fine.
                events: vec![resent.clone(), new_bob.clone()],
            },
            StreamAppend {
                customer_id: ada.clone(),
                expected: ExpectedVersion::Any,
                events: vec![new_ada.clone(), imposter.clone()],
            },
        ],
        offsets: vec![offset("ingest", 0, 9)],
    };
    let conflicts = expect_conflicts(store.append(&batch).await);
    assert_eq!(
        conflicts,
        vec![EventIdConflict {
            stream: 1,
            index: 1,
            event_id: original.event_id,
            kept: original.digest(),
            offered: imposter.digest(),
        }],
        "exactly the event reusing a stored id with other content, located in the batch"
    );
    assert_eq!(
        store.head().await.unwrap(),
        Position(2),
        "a refused batch writes nothing"
    );
    assert!(
        store.source_offsets("ingest").await.unwrap().is_empty(),
        "nor its offsets"
    );

    // Without the conflicting event the rest appends; the redelivery is still a duplicate.
    let mut rest = batch.clone();
    rest.streams[1].events.remove(1);
    let receipt = store
        .append(&rest)
        .await
        .expect("the batch without its conflicting event appends");
    assert_eq!(
        (receipt.appended, receipt.duplicates),
        (2, 1),
        "{receipt:?}"
    );
    let stored = read_everything(&store).await;
    assert_eq!(
        ids(&stored),
        vec![
            original.event_id,
            resent.event_id,
            new_bob.event_id,
            new_ada.event_id
        ]
    );
    assert_eq!(
        stored[0].event, original,
        "the stored event keeps its first content"
    );
    assert_eq!(
        store.source_offsets("ingest").await.unwrap(),
        vec![offset("ingest", 0, 9)]
    );
    // The original content, re-sent alone with a stale expectation, is still a duplicate.
    let again = store
        .append(&AppendBatch::single(
            ada.clone(),
            ExpectedVersion::NoStream,
            vec![original.clone()],
        ))
        .await
        .expect("a redelivery of the stored content is acknowledged");
    assert_eq!((again.appended, again.duplicates), (0, 1));
}

pub async fn reused_id_within_a_batch_is_refused_precisely<S: EventStore>(store: S) {
    let ada = customer("ada");
    let first = purchase(&ada, 100);
    let other = visit(&ada);
    let imposter = altered(&first);
    let batch = AppendBatch::from_events(vec![
        first.clone(),
        other.clone(),
        imposter.clone(),
        first.clone(),
    ]);
    let conflicts = expect_conflicts(store.append(&batch).await);
    assert_eq!(
        conflicts,
        vec![EventIdConflict {
            stream: 0,
            index: 2,
            event_id: first.event_id,
            kept: first.digest(),
            offered: imposter.digest(),
        }],
        "the later event with other content conflicts; the repeat of the first does not"
    );
    assert_eq!(store.head().await.unwrap(), Position::ZERO);
    let mut rest = batch.clone();
    rest.streams[0].events.remove(2);
    let receipt = store.append(&rest).await.unwrap();
    assert_eq!(
        (receipt.appended, receipt.duplicates),
        (2, 1),
        "{receipt:?}"
    );
    let stored = read_everything(&store).await;
    assert_eq!(ids(&stored), vec![first.event_id, other.event_id]);
    assert_eq!(stored[0].event, first);
}

pub async fn batch_is_atomic<S: EventStore>(store: S) {
    let (ada, bob) = (customer("ada"), customer("bob"));
    store
        .append(&AppendBatch::single(
            bob.clone(),
            ExpectedVersion::Any,
            vec![visit(&bob)],
        ))
        .await
        .unwrap();
    // Ada's part is fine, Bob's expectation is wrong: nothing of the batch may be stored,
    // not even its offsets.
    let batch = AppendBatch {
        streams: vec![
            StreamAppend {
                customer_id: ada.clone(),
                expected: ExpectedVersion::NoStream,
                events: vec![purchase(&ada, 1), purchase(&ada, 2)],
            },
            StreamAppend {
                customer_id: bob.clone(),
                expected: ExpectedVersion::NoStream,
                events: vec![visit(&bob)],
            },
        ],
        offsets: vec![offset("ingest", 0, 42)],
    };
    let err = store
        .append(&batch)
        .await
        .expect_err("bob's stream exists: the batch must fail");
    match err {
        StoreError::Conflict {
            customer_id,
            actual,
            ..
        } => {
            assert_eq!((customer_id, actual), (bob.clone(), 1));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        store.head().await.unwrap(),
        Position(1),
        "no event of a failed batch is stored"
    );
    assert_eq!(store.stream_version(&ada).await.unwrap(), 0);
    assert!(
        store.source_offsets("ingest").await.unwrap().is_empty(),
        "offsets of a failed batch are not stored"
    );
}

pub async fn invalid_batch_writes_nothing<S: EventStore>(store: S) {
    let (ada, bob) = (customer("ada"), customer("bob"));
    let batch = AppendBatch::single(
        ada.clone(),
        ExpectedVersion::Any,
        vec![purchase(&ada, 1), visit(&bob)],
    );
    let err = store
        .append(&batch)
        .await
        .expect_err("bob's event in ada's stream is refused");
    assert!(matches!(err, StoreError::InvalidAppend(_)), "got {err:?}");
    assert_eq!(store.head().await.unwrap(), Position::ZERO);
}

pub async fn offsets_commit_with_events<S: EventStore>(store: S) {
    let ada = customer("ada");
    let batch = AppendBatch::from_events(vec![purchase(&ada, 5)]).with_offsets(vec![
        offset("ingest", 0, 10),
        offset("ingest", 1, 7),
        offset("other", 0, 3),
    ]);
    store.append(&batch).await.unwrap();
    let mut stored = store.source_offsets("ingest").await.unwrap();
    stored.sort_by_key(|o| o.partition);
    assert_eq!(
        stored,
        vec![offset("ingest", 0, 10), offset("ingest", 1, 7)]
    );
    // A batch of only dead letters still moves the offsets.
    store
        .append(&AppendBatch::default().with_offsets(vec![offset("ingest", 0, 11)]))
        .await
        .unwrap();
    let stored = store.source_offsets("ingest").await.unwrap();
    assert!(
        stored.contains(&offset("ingest", 0, 11)),
        "offset-only batch stored: {stored:?}"
    );
    assert_eq!(store.head().await.unwrap(), Position(1));
}

pub async fn offsets_never_move_backwards<S: EventStore>(store: S) {
    store
        .append(&AppendBatch::default().with_offsets(vec![offset("ingest", 0, 100)]))
        .await
        .unwrap();
    store
        .append(&AppendBatch::default().with_offsets(vec![offset("ingest", 0, 40)]))
        .await
        .unwrap();
    assert_eq!(
        store.source_offsets("ingest").await.unwrap(),
        vec![offset("ingest", 0, 100)],
        "a stale writer must not rewind the offset"
    );
}

pub async fn expected_version_is_checked<S: EventStore>(store: S) {
    let ada = customer("ada");
    let append = |expected, event| {
        let store = &store;
        let batch = AppendBatch::single(ada.clone(), expected, vec![event]);
        async move { store.append(&batch).await }
    };
    append(ExpectedVersion::Exact(0), purchase(&ada, 1))
        .await
        .expect("exact 0 on a new stream");
    append(ExpectedVersion::Exact(1), purchase(&ada, 2))
        .await
        .expect("exact 1 after one event");
    for (expected, what) in [
        (ExpectedVersion::Exact(1), "a stale version"),
        (ExpectedVersion::Exact(7), "a future version"),
        (ExpectedVersion::NoStream, "no stream, when it exists"),
    ] {
        match append(expected, purchase(&ada, 3)).await {
            Err(StoreError::Conflict { actual: 2, .. }) => {}
            other => panic!("{what} must conflict at version 2, got {other:?}"),
        }
    }
    append(ExpectedVersion::Any, purchase(&ada, 4))
        .await
        .expect("any always appends");
    assert_eq!(store.stream_version(&ada).await.unwrap(), 3);
}

pub async fn concurrent_appends_exactly_one_wins<S: EventStore>(store: S) {
    let store = Arc::new(store);
    for round in 0..20 {
        let who = customer(&format!("race-{round}"));
        store
            .append(&AppendBatch::single(
                who.clone(),
                ExpectedVersion::NoStream,
                vec![visit(&who)],
            ))
            .await
            .unwrap();
        let contenders: Vec<_> = (0..2)
            .map(|i| {
                let store = Arc::clone(&store);
                let who = who.clone();
                tokio::spawn(async move {
                    let events = vec![purchase(&who, i), purchase(&who, i + 10)];
                    store
                        .append(&AppendBatch::single(who, ExpectedVersion::Exact(1), events))
                        .await
                })
            })
            .collect();
        let mut wins = 0;
        let mut conflicts = 0;
        for contender in contenders {
            match contender.await.expect("append task does not panic") {
                Ok(_) => wins += 1,
                Err(StoreError::Conflict { actual: 3, .. }) => conflicts += 1,
                Err(other) => panic!("the loser must get a conflict at version 3, got {other:?}"),
            }
        }
        assert_eq!(
            (wins, conflicts),
            (1, 1),
            "round {round}: exactly one append wins"
        );
        assert_eq!(
            store.stream_version(&who).await.unwrap(),
            3,
            "round {round}"
        );
    }
}

pub async fn read_stream_pages_in_order<S: EventStore>(store: S) {
    let (ada, bob) = (customer("ada"), customer("bob"));
    let mut written = Vec::new();
    for i in 0..25 {
        let event = purchase(&ada, i);
        written.push(event.event_id);
        // Interleave another stream so that positions and versions differ.
        store
            .append(&AppendBatch::from_events(vec![event, visit(&bob)]))
            .await
            .unwrap();
    }
    let mut read = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_stream(&ada, after, 7).await.unwrap();
        assert!(page.len() <= 7, "a page holds at most the limit");
        let Some(last) = page.last() else { break };
        for (i, e) in page.iter().enumerate() {
            assert_eq!(e.version, after + 1 + i as u64, "versions are consecutive");
            assert_eq!(e.event.customer_id, ada, "only ada's events");
        }
        after = last.version;
        read.extend(ids(&page));
    }
    assert_eq!(read, written, "the stream reads back in append order");
}

pub async fn read_streams_reads_the_named_streams_up_to_a_position<S: EventStore>(store: S) {
    let (ada, bob, cy) = (customer("ada"), customer("bob"), customer("cy"));
    for i in 0..20 {
        store
            .append(&AppendBatch::from_events(vec![
                purchase(&ada, i),
                visit(&bob),
                purchase(&cy, i),
            ]))
            .await
            .unwrap();
    }
    let all = store.read_all(Position::ZERO, 1_000).await.unwrap();
    let up_to = all[40].position;
    let read = store
        .read_streams(&[cy.clone(), ada.clone(), customer("nobody")], up_to)
        .await
        .unwrap();
    // The oracle: the whole log, filtered.
    let expected: Vec<_> = all
        .iter()
        .filter(|e| {
            (e.event.customer_id == ada || e.event.customer_id == cy) && e.position <= up_to
        })
        .collect();
    assert_eq!(
        read.iter().collect::<Vec<_>>(),
        expected,
        "exactly the named streams' events up to the position, in position order"
    );
    assert!(
        store.read_streams(&[], up_to).await.unwrap().is_empty(),
        "no stream named, nothing read"
    );
}

pub async fn read_all_pages_in_order<S: EventStore>(store: S) {
    let mut written = Vec::new();
    for i in 0..10 {
        let events: Vec<Event> = (0..i + 1)
            .map(|j| purchase(&customer(&format!("c{j}")), j))
            .collect();
        written.extend(events.iter().map(|e| e.event_id));
        store
            .append(&AppendBatch::from_events(events))
            .await
            .unwrap();
    }
    let all = read_everything(&store).await;
    assert_eq!(
        ids(&all),
        written,
        "the global log reads back in append order"
    );
    let positions: Vec<u64> = all.iter().map(|e| e.position.0).collect();
    assert_eq!(
        positions,
        (1..=written.len() as u64).collect::<Vec<_>>(),
        "positions are gapless"
    );
    let tail = store.read_all(Position(50), 1000).await.unwrap();
    assert_eq!(
        ids(&tail),
        written[50..].to_vec(),
        "reading after a position starts right after it"
    );
    assert!(
        store.read_all(Position(55), 10).await.unwrap().is_empty(),
        "nothing after the head"
    );
}

/// Many writers commit concurrently (and so, on a database, possibly out of position order)
/// while a reader follows the log from the last position it saw. The reader must end up with
/// exactly what a full scan finds: nothing skipped, nothing twice.
pub async fn concurrent_writers_never_skip<S: EventStore>(store: S) {
    const WRITERS: u64 = 8;
    const BATCHES: u64 = 30;
    let store = Arc::new(store);
    let done = Arc::new(AtomicBool::new(false));

    let reader = {
        let store = Arc::clone(&store);
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut seen: Vec<RecordedEvent> = Vec::new();
            let mut after = Position::ZERO;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let page = store.read_all(after, 64).await.expect("reader reads");
                match page.last() {
                    Some(last) => {
                        after = last.position;
                        seen.extend(page);
                    }
                    // Only stop once the writers are done and the head has been reached.
                    None if finished && store.head().await.expect("head") == after => break,
                    None => tokio::task::yield_now().await,
                }
            }
            seen
        })
    };

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut rng = w * 7919 + 17;
                let mut written = 0u64;
                for _ in 0..BATCHES {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let size = 1 + rng % 24;
                    let events: Vec<Event> = (0..size)
                        .map(|i| purchase(&customer(&format!("c{}", (rng + i) % 40)), i as i64))
                        .collect();
                    let receipt = store
                        .append(&AppendBatch::from_events(events))
                        .await
                        .expect("unconditional appends always succeed");
                    written += receipt.appended;
                }
                written
            })
        })
        .collect();
    let mut written = 0;
    for writer in writers {
        written += writer.await.expect("writer does not panic");
    }
    done.store(true, Ordering::SeqCst);
    let followed = reader.await.expect("reader does not panic");

    let scanned = read_everything(&*store).await;
    assert_eq!(
        scanned.len() as u64,
        written,
        "a full scan finds every appended event"
    );
    let followed_positions: Vec<u64> = followed.iter().map(|e| e.position.0).collect();
    let scanned_positions: Vec<u64> = scanned.iter().map(|e| e.position.0).collect();
    assert_eq!(
        followed_positions.len(),
        scanned_positions.len(),
        "the following reader saw {} events, a full scan {}: it skipped some",
        followed_positions.len(),
        scanned_positions.len()
    );
    assert_eq!(
        ids(&followed),
        ids(&scanned),
        "the following reader saw exactly the full scan"
    );
    assert_eq!(
        scanned_positions,
        (1..=written).collect::<Vec<_>>(),
        "positions are gapless and strictly increasing"
    );
    let distinct: HashSet<Uuid> = ids(&scanned).into_iter().collect();
    assert_eq!(distinct.len() as u64, written, "no event stored twice");
}

/// A store together with something that must live as long as it (e.g. a temporary directory).
pub struct WithGuard<S, G>(pub S, pub G);

#[async_trait::async_trait]
impl<S: EventStore, G: Send + Sync + 'static> EventStore for WithGuard<S, G> {
    async fn append(&self, batch: &AppendBatch) -> Result<crate::AppendReceipt, StoreError> {
        self.0.append(batch).await
    }
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.0.read_all(after, limit).await
    }
    async fn read_stream(
        &self,
        customer_id: &CustomerId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.0.read_stream(customer_id, after_version, limit).await
    }
    async fn head(&self) -> Result<Position, StoreError> {
        self.0.head().await
    }
    async fn stream_version(&self, customer_id: &CustomerId) -> Result<u64, StoreError> {
        self.0.stream_version(customer_id).await
    }
    async fn source_offsets(&self, consumer: &str) -> Result<Vec<SourceOffset>, StoreError> {
        self.0.source_offsets(consumer).await
    }
}
