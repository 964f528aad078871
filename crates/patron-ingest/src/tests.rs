use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::TimeZone;
use patron_proto::events::v1 as pb;
use patron_store::faulty::FaultyStore;
use patron_store::{InMemoryEventStore, Position};
use prost::Message as _;

use super::*;

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc
        .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
        .unwrap()
}

fn json_record(
    partition: i32,
    offset: i64,
    id: u128,
    customer: &str,
    minor_units: i64,
) -> InboundRecord {
    let event_id = format!("{:032x}", id | (1 << 120));
    let payload = serde_json::json!({
        "specversion": "1.0", "id": event_id, "source": "shop", "type": "patron.purchase.v1",
        "subject": customer, "time": "2026-11-20T10:00:00Z",
        "data": {"order_id": format!("o-{id}"), "amount": {"minor_units": minor_units, "currency": "EUR"}}
    });
    InboundRecord {
        topic: "customer-events".into(),
        partition,
        offset,
        key: Some(customer.as_bytes().to_vec()),
        headers: vec![(
            "content-type".into(),
            b"application/cloudevents+json".to_vec(),
        )],
        payload: payload.to_string().into_bytes(),
    }
}

fn protobuf_record(partition: i32, offset: i64, id: u128, customer: &str) -> InboundRecord {
    let event = pb::CustomerEvent {
        identity: None,
        event_id: format!("{:032x}", id | (1 << 120)),
        customer_id: customer.into(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: 1_795_000_000,
            nanos: 0,
        }),
        source: "app".into(),
        extra: None,
        body: Some(pb::customer_event::Body::Interaction(pb::Interaction {
            channel: "app".into(),
            kind: "app_open".into(),
        })),
    };
    InboundRecord {
        topic: "customer-events".into(),
        partition,
        offset,
        key: Some(customer.as_bytes().to_vec()),
        headers: vec![("content-type".into(), b"application/protobuf".to_vec())],
        payload: event.encode_to_vec(),
    }
}

#[derive(Default)]
struct RecordingSink {
    letters: Mutex<Vec<DeadLetter>>,
    failures_left: AtomicUsize,
    /// Fails only the call with this number (1 = the first), once.
    fail_call: Option<usize>,
    calls: AtomicUsize,
}

#[async_trait]
impl DeadLetterSink for RecordingSink {
    async fn send(&self, letters: &[DeadLetter]) -> Result<(), SinkError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_call == Some(call) {
            return Err(SinkError("broker unreachable".into()));
        }
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SinkError("broker unreachable".into()));
        }
        self.letters.lock().unwrap().extend_from_slice(letters);
        Ok(())
    }
}

fn mixed_batch() -> Vec<InboundRecord> {
    let mut bad_json = json_record(0, 12, 3, "c-1", 100);
    bad_json.payload = b"{\"specversion\": \"1.0\", \"id\": ".to_vec();
    vec![
        json_record(0, 10, 1, "c-1", 1999),
        protobuf_record(1, 7, 2, "c-2"),
        json_record(0, 11, 4, "c-1", -5),
        bad_json,
        json_record(1, 8, 5, "c-3", 250),
    ]
}

#[test]
fn prepare_splits_events_from_dead_letters_and_covers_every_offset() {
    let prepared = prepare(mixed_batch(), &Settings::new("ingest"), now());
    assert_eq!(prepared.records, 5);
    assert_eq!(prepared.batch.event_count(), 3, "three valid records");
    let classes: Vec<ErrorClass> = prepared
        .dead_letters
        .iter()
        .map(|d| d.error.class)
        .collect();
    assert_eq!(
        classes,
        [ErrorClass::NegativeAmount, ErrorClass::Undecodable]
    );
    let offsets: Vec<(i32, i64)> = prepared
        .batch
        .offsets
        .iter()
        .map(|o| (o.partition, o.next_offset))
        .collect();
    assert_eq!(
        offsets,
        [(0, 13), (1, 9)],
        "next offsets follow the last record, valid or not"
    );
    assert!(
        prepared
            .batch
            .offsets
            .iter()
            .all(|o| o.consumer == "ingest")
    );
}

#[tokio::test]
async fn commit_stores_events_with_offsets_and_sends_dead_letters() {
    let store = Arc::new(InMemoryEventStore::new());
    let sink = Arc::new(RecordingSink::default());
    let ingestor = Ingestor::new(store.clone(), sink.clone());
    let mut prepared = prepare(mixed_batch(), &Settings::new("ingest"), now());
    let report = ingestor.commit(&mut prepared).await.unwrap();
    assert_eq!(
        (report.records, report.appended, report.duplicates),
        (5, 3, 0)
    );
    assert_eq!(report.last_position, Some(Position(3)));
    assert_eq!(store.head().await.unwrap(), Position(3));
    let stored: Vec<i64> = store
        .source_offsets("ingest")
        .await
        .unwrap()
        .iter()
        .map(|o| o.next_offset)
        .collect();
    assert_eq!(stored, [13, 9]);
    let letters = sink.letters.lock().unwrap();
    assert_eq!(letters.len(), 2);
    let headers = letters[0].headers();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
            .unwrap_or_else(|| panic!("dead letter lacks header {name}"))
    };
    assert_eq!(
        header(dead_letter_headers::ORIGINAL_TOPIC),
        "customer-events"
    );
    assert_eq!(header(dead_letter_headers::ORIGINAL_PARTITION), "0");
    assert_eq!(header(dead_letter_headers::ORIGINAL_OFFSET), "11");
    assert_eq!(header(dead_letter_headers::ERROR_CLASS), "negative_amount");
    assert_eq!(
        header(dead_letter_headers::ERROR_FIELD),
        "data.amount.minor_units"
    );
    assert!(header(dead_letter_headers::ERROR_REASON).contains("must not be negative"));
    assert_eq!(
        header("content-type"),
        "application/cloudevents+json",
        "original headers are kept"
    );
}

#[tokio::test]
async fn a_retried_commit_stores_once_and_sends_dead_letters_once() {
    let store = Arc::new(FaultyStore::new(InMemoryEventStore::new()).failing(2));
    let sink = Arc::new(RecordingSink::default());
    let ingestor = Ingestor::new(store.clone(), sink.clone());
    let mut prepared = prepare(mixed_batch(), &Settings::new("ingest"), now());
    for attempt in 0..2 {
        let err = ingestor
            .commit(&mut prepared)
            .await
            .expect_err("the store is down");
        assert!(
            err.is_transient(),
            "attempt {attempt}: an outage is transient: {err}"
        );
        assert!(
            store.source_offsets("ingest").await.unwrap().is_empty(),
            "no offsets while down"
        );
    }
    let report = ingestor
        .commit(&mut prepared)
        .await
        .expect("the store is back");
    assert_eq!(report.appended, 3);
    assert_eq!(
        sink.letters.lock().unwrap().len(),
        2,
        "dead letters delivered exactly once"
    );
    // Re-committing the same batch (e.g. after an unclear outcome) stores nothing twice.
    let again = ingestor.commit(&mut prepared).await.unwrap();
    assert_eq!((again.appended, again.duplicates), (0, 3));
}

#[tokio::test]
async fn undeliverable_dead_letters_hold_back_the_offsets() {
    let store = Arc::new(InMemoryEventStore::new());
    let sink = Arc::new(RecordingSink {
        failures_left: AtomicUsize::new(1),
        ..RecordingSink::default()
    });
    let ingestor = Ingestor::new(store.clone(), sink.clone());
    let mut prepared = prepare(mixed_batch(), &Settings::new("ingest"), now());
    let err = ingestor
        .commit(&mut prepared)
        .await
        .expect_err("dead-letter topic unreachable");
    assert!(err.is_transient());
    assert_eq!(
        store.head().await.unwrap(),
        Position::ZERO,
        "nothing stored before letters are safe"
    );
    assert!(store.source_offsets("ingest").await.unwrap().is_empty());
    ingestor.commit(&mut prepared).await.unwrap();
    assert_eq!(sink.letters.lock().unwrap().len(), 2);
}

fn classes(letters: &[DeadLetter]) -> Vec<(i64, ErrorClass)> {
    letters
        .iter()
        .map(|l| (l.record.offset, l.error.class))
        .collect()
}

async fn stored_amounts(store: &InMemoryEventStore) -> Vec<(String, i64)> {
    store
        .read_all(Position::ZERO, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| match r.event.body {
            patron_domain::EventBody::Purchase(p) => {
                (r.event.event_id.to_string(), p.amount.minor_units)
            }
            other => panic!("only purchases here, got {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn a_reused_id_with_other_content_is_dead_lettered_and_the_rest_stored() {
    let store = Arc::new(InMemoryEventStore::new());
    let sink = Arc::new(RecordingSink::default());
    let ingestor = Ingestor::new(store.clone(), sink.clone());
    let settings = Settings::new("ingest");
    let mut first = prepare(vec![json_record(0, 10, 1, "c-1", 1999)], &settings, now());
    ingestor.commit(&mut first).await.unwrap();

    let conflicting = json_record(0, 20, 1, "c-1", 2000);
    let mut undecodable = json_record(0, 23, 9, "c-1", 1);
    undecodable.payload = b"{".to_vec();
    let batch = vec![
        conflicting.clone(),
        json_record(0, 21, 6, "c-1", 5),
        // An exact redelivery of the stored event: acknowledged, not a conflict.
        json_record(0, 22, 1, "c-1", 1999),
        undecodable,
        json_record(1, 4, 7, "c-2", 70),
    ];
    let mut prepared = prepare(batch, &settings, now());
    let report = ingestor.commit(&mut prepared).await.unwrap();
    assert_eq!(
        (report.records, report.appended, report.duplicates),
        (5, 2, 1),
        "{report:?}"
    );
    assert_eq!(
        report.dead_letters,
        [
            ErrorClass::Undecodable,
            ErrorClass::DuplicateEventIdConflict
        ]
    );
    let letters = sink.letters.lock().unwrap().clone();
    assert_eq!(
        classes(&letters),
        [
            (23, ErrorClass::Undecodable),
            (20, ErrorClass::DuplicateEventIdConflict)
        ]
    );
    let letter = &letters[1];
    assert_eq!(
        letter.record, conflicting,
        "the original record, byte for byte"
    );
    assert_eq!(letter.error.field, "event_id");
    let headers = letter.headers();
    assert!(headers.contains(&(
        dead_letter_headers::ERROR_CLASS.to_owned(),
        b"duplicate_event_id_conflict".to_vec()
    )));
    assert!(headers.contains(&(
        dead_letter_headers::ORIGINAL_OFFSET.to_owned(),
        b"20".to_vec()
    )));
    let id = |n: u128| format!("{:032x}", n | (1 << 120));
    let ids = |n: u128| uuid_text(&id(n));
    assert_eq!(
        stored_amounts(&store).await,
        [(ids(1), 1999), (ids(6), 5), (ids(7), 70)],
        "the first content of id 1 stays; everything else valid is stored once"
    );
    let offsets: Vec<i64> = store
        .source_offsets("ingest")
        .await
        .unwrap()
        .iter()
        .map(|o| o.next_offset)
        .collect();
    assert_eq!(offsets, [24, 5], "offsets cover the conflicting record too");
}

fn uuid_text(simple: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &simple[0..8],
        &simple[8..12],
        &simple[12..16],
        &simple[16..20],
        &simple[20..32]
    )
}

#[tokio::test]
async fn a_reused_id_within_one_batch_keeps_the_first_and_dead_letters_the_other() {
    let store = Arc::new(InMemoryEventStore::new());
    let sink = Arc::new(RecordingSink::default());
    let ingestor = Ingestor::new(store.clone(), sink.clone());
    let batch = vec![
        json_record(0, 0, 3, "c-1", 300),
        json_record(0, 1, 3, "c-1", 301),
        json_record(0, 2, 3, "c-1", 300),
    ];
    let mut prepared = prepare(batch, &Settings::new("ingest"), now());
    let report = ingestor.commit(&mut prepared).await.unwrap();
    assert_eq!((report.appended, report.duplicates), (1, 1), "{report:?}");
    assert_eq!(
        classes(&sink.letters.lock().unwrap()),
        [(1, ErrorClass::DuplicateEventIdConflict)]
    );
    assert_eq!(
        stored_amounts(&store).await,
        [(uuid_text(&format!("{:032x}", 3u128 | (1 << 120))), 300)]
    );
}

#[tokio::test]
async fn conflict_letters_are_delivered_once_before_the_offsets_move() {
    let store = Arc::new(InMemoryEventStore::new());
    // Call 1 delivers the batch's undecodable record; call 2, the conflict letter, fails.
    let sink = Arc::new(RecordingSink {
        fail_call: Some(2),
        ..RecordingSink::default()
    });
    let ingestor = Ingestor::new(store.clone(), sink.clone());
    let settings = Settings::new("ingest");
    let mut first = prepare(vec![json_record(0, 0, 1, "c-1", 10)], &settings, now());
    ingestor.commit(&mut first).await.unwrap();

    let mut undecodable = json_record(0, 2, 9, "c-1", 1);
    undecodable.payload = b"{".to_vec();
    let batch = vec![
        json_record(0, 1, 1, "c-1", 11),
        undecodable,
        json_record(0, 3, 2, "c-1", 20),
    ];
    let mut prepared = prepare(batch, &settings, now());
    let err = ingestor
        .commit(&mut prepared)
        .await
        .expect_err("the conflict letter cannot be delivered");
    assert!(err.is_transient(), "{err}");
    assert_eq!(
        store.head().await.unwrap(),
        Position(1),
        "nothing stored while a letter is undelivered"
    );
    assert_eq!(
        store.source_offsets("ingest").await.unwrap()[0].next_offset,
        1,
        "the offsets wait for the letter"
    );
    let report = ingestor.commit(&mut prepared).await.unwrap();
    assert_eq!((report.appended, report.duplicates), (1, 0), "{report:?}");
    assert_eq!(
        classes(&sink.letters.lock().unwrap()),
        [
            (2, ErrorClass::Undecodable),
            (1, ErrorClass::DuplicateEventIdConflict)
        ],
        "each letter delivered exactly once"
    );
    assert_eq!(
        store.source_offsets("ingest").await.unwrap()[0].next_offset,
        4
    );
}

#[tokio::test]
async fn source_progress_is_stored_around_the_batch_and_counted_as_no_customer_event() {
    let store = Arc::new(InMemoryEventStore::new());
    let ingestor = Ingestor::new(store.clone(), Arc::new(RecordingSink::default()));
    let mut tracker = SourceTracker::new(vec!["customer-events".into()]);
    for partition in [0, 1] {
        tracker.read("customer-events", partition);
    }
    // Read three days after the events: a backlog, behind.
    let later = now() + chrono::TimeDelta::days(3);
    let mut prepared = prepare(mixed_batch(), &Settings::new("ingest"), later);
    prepared.progress = tracker.report(&prepared, later);
    assert_eq!(prepared.progress_events().len(), 2);
    let report = ingestor.commit(&mut prepared).await.unwrap();
    assert_eq!(
        (report.appended, report.duplicates),
        (3, 0),
        "progress events are not customer events"
    );
    let log = store.read_all(Position::ZERO, 100).await.unwrap();
    assert_eq!(log.len(), 5);
    let said = |event: &patron_store::RecordedEvent| {
        assert_eq!(
            event.event.customer_id,
            patron_domain::CustomerId::sources()
        );
        let patron_domain::EventBody::SourceProgress(progress) = &event.event.body else {
            panic!("a progress event: {event:?}");
        };
        progress
            .partitions
            .iter()
            .map(|p| (p.partition, p.read_to, p.behind))
            .collect::<Vec<_>>()
    };
    // Held first at what was known before (nothing), updated last to the latest event time.
    assert_eq!(said(&log[0]), vec![(0, None, true), (1, None, true)]);
    let time = chrono::Utc
        .with_ymd_and_hms(2026, 11, 20, 10, 0, 0)
        .unwrap();
    assert_eq!(
        said(&log[4]),
        vec![(0, Some(time), true), (1, Some(time), true)]
    );
    // A retried commit that finds everything stored counts no duplicate for them either.
    let again = ingestor.commit(&mut prepared).await.unwrap();
    assert_eq!((again.appended, again.duplicates), (0, 3));
    assert_eq!(store.read_all(Position::ZERO, 100).await.unwrap().len(), 5);
}
