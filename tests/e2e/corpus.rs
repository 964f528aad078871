//! The hostile-record corpus (`tests/corpus/hostile/`) through the real `patron ingest`.
//!
//! Every corpus record is produced, interleaved with valid events in all three formats, to a
//! topic of librdkafka's mock cluster; `patron ingest` consumes it into SQLite and into
//! PostgreSQL. Each hostile record must land on the dead-letter topic exactly once, with the
//! manifest's class and its original key, headers and bytes; every valid event must be stored
//! exactly once with the content produced; nothing else may be stored or dead-lettered.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_possible_truncation
)]

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use patron_codec::Message;
use patron_domain::{
    Currency, CustomerId, ErrorClass, Event, EventBody, Interaction, InteractionKind, LineItem,
    Money, Purchase, ValidationPolicy,
};
use patron_e2e::{Lcg, PgDatabase, patron, patron_bin};
use patron_ingest::dead_letter_headers as h;
use patron_kafka::testing::{MockKafka, ReadRecord, TestRecord, high_watermarks, read_topic};
use patron_store::{EventStore, Position};
use patron_store_sql::{ConnectOptions, SqlEventStore};
use prost::Message as _;
use serde::Deserialize;

const TOPIC: &str = "customer-events";
const DLQ: &str = "customer-events.dlq";
const GROUP: &str = "corpus";

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus/hostile")
}

/// Files in the corpus directory that are not records.
const NOT_RECORDS: [&str; 3] = ["manifest.toml", "README.md", "generate.py"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    record: Vec<Entry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    file: String,
    content_type: Option<String>,
    key: Option<String>,
    key_hex: Option<String>,
    #[serde(default)]
    headers: Vec<Header>,
    expect: String,
    event_id: Option<String>,
    why: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    name: String,
    value: Option<String>,
    hex: Option<String>,
}

/// What must become of a record.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    DeadLetter(&'static str),
    Stored,
    Duplicate,
}

const CLASSES: [ErrorClass; 10] = [
    ErrorClass::Undecodable,
    ErrorClass::UnsupportedContentType,
    ErrorClass::PayloadTooLarge,
    ErrorClass::MissingField,
    ErrorClass::InvalidField,
    ErrorClass::NegativeAmount,
    ErrorClass::InvalidAmount,
    ErrorClass::UnknownCurrency,
    ErrorClass::TimestampOutOfRange,
    ErrorClass::DuplicateEventIdConflict,
];

fn unhex(text: &str) -> Vec<u8> {
    assert!(
        text.len().is_multiple_of(2),
        "hex {text:?} has an odd length"
    );
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digits"))
        .collect()
}

/// One corpus record, ready to produce.
#[derive(Debug, Clone)]
struct CorpusRecord {
    entry: Entry,
    expect: Expect,
    record: TestRecord,
}

fn load_corpus() -> Vec<CorpusRecord> {
    let dir = corpus_dir();
    let text = std::fs::read_to_string(dir.join("manifest.toml")).expect("read manifest.toml");
    let manifest: Manifest = toml::from_str(&text).expect("manifest.toml parses");
    manifest
        .record
        .into_iter()
        .map(|entry| {
            let expect = match entry.expect.as_str() {
                "stored" => Expect::Stored,
                "duplicate" => Expect::Duplicate,
                class => Expect::DeadLetter(
                    CLASSES
                        .iter()
                        .map(ErrorClass::as_str)
                        .find(|c| *c == class)
                        .unwrap_or_else(|| {
                            panic!("{}: {class:?} is not a dead-letter class", entry.file)
                        }),
                ),
            };
            let names_its_id = matches!(
                expect,
                Expect::Stored
                    | Expect::Duplicate
                    | Expect::DeadLetter("duplicate_event_id_conflict")
            );
            assert_eq!(
                entry.event_id.is_some(),
                names_its_id,
                "{}: stored, duplicate and conflicting records name their event_id, others do not",
                entry.file
            );
            assert!(
                !entry.why.is_empty(),
                "{}: say why it is hostile",
                entry.file
            );
            let payload = std::fs::read(dir.join(&entry.file)).unwrap_or_else(|e| {
                panic!("the manifest lists {}, which is missing: {e}", entry.file)
            });
            let key = match (&entry.key, &entry.key_hex) {
                (Some(_), Some(_)) => panic!("{}: key or key_hex, not both", entry.file),
                (Some(key), None) => Some(key.as_bytes().to_vec()),
                (None, Some(hex)) => Some(unhex(hex)),
                (None, None) => None,
            };
            let mut headers = Vec::new();
            if let Some(ct) = &entry.content_type {
                headers.push(("content-type".to_owned(), ct.as_bytes().to_vec()));
            }
            for header in &entry.headers {
                let value = match (&header.value, &header.hex) {
                    (Some(v), None) => v.as_bytes().to_vec(),
                    (None, Some(hex)) => unhex(hex),
                    _ => panic!("{}: header {} needs value or hex", entry.file, header.name),
                };
                headers.push((header.name.clone(), value));
            }
            CorpusRecord {
                expect,
                record: TestRecord {
                    key,
                    headers,
                    payload,
                },
                entry,
            }
        })
        .collect()
}

#[test]
fn the_manifest_covers_every_file_and_every_class() {
    let corpus = load_corpus();
    let listed: Vec<&str> = corpus.iter().map(|c| c.entry.file.as_str()).collect();
    let unique: BTreeSet<&str> = listed.iter().copied().collect();
    assert_eq!(unique.len(), listed.len(), "a file is listed twice");
    let present: BTreeSet<String> = std::fs::read_dir(corpus_dir())
        .expect("read the corpus directory")
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| !NOT_RECORDS.contains(&name.as_str()))
        .collect();
    let listed: BTreeSet<String> = unique.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        present.difference(&listed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "files in tests/corpus/hostile that manifest.toml does not list"
    );
    assert_eq!(
        listed.difference(&present).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "files manifest.toml lists that do not exist"
    );
    let expected: BTreeSet<&str> = corpus
        .iter()
        .filter_map(|c| match c.expect {
            Expect::DeadLetter(class) => Some(class),
            _ => None,
        })
        .collect();
    for class in CLASSES {
        assert!(
            expected.contains(class.as_str()),
            "no corpus record exercises the class {class}"
        );
    }
    // A duplicate or a conflict needs its original earlier in the manifest (the production order).
    for (i, c) in corpus.iter().enumerate() {
        if matches!(
            c.expect,
            Expect::Duplicate | Expect::DeadLetter("duplicate_event_id_conflict")
        ) {
            assert!(
                corpus[..i]
                    .iter()
                    .any(|o| o.expect == Expect::Stored && o.entry.event_id == c.entry.event_id),
                "{}: no stored record with its event_id comes before it",
                c.entry.file
            );
        }
    }
    for what in [Expect::Stored, Expect::Duplicate] {
        assert!(
            corpus.iter().any(|c| c.expect == what),
            "no corpus record is expected to be {what:?}"
        );
    }
}

/// A valid event of one of several shapes, for customer `customer`.
fn valid_event(n: u64, customer: &str, rng: &mut Lcg) -> Event {
    let eur = Currency::from_code("EUR").unwrap();
    let body = match n % 3 {
        0 | 1 => EventBody::Purchase(Purchase {
            order_id: format!("o-{n}"),
            amount: Money::new(100 + rng.next(100_000) as i64, eur).unwrap(),
            items: vec![LineItem {
                sku: format!("sku-{}", n % 7),
                quantity: 1 + rng.next(3) as u32,
                unit_price: None,
                extra: serde_json::Map::new(),
            }],
            extra: serde_json::Map::new(),
        }),
        _ => EventBody::Interaction(Interaction {
            channel: "web".into(),
            kind: InteractionKind::Visit,
            extra: serde_json::Map::new(),
        }),
    };
    Event {
        event_id: uuid::Uuid::new_v4(),
        customer_id: CustomerId::parse(customer).unwrap(),
        occurred_at: Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
            + chrono::TimeDelta::seconds(n as i64),
        source: "corpus-test".into(),
        body,
    }
}

/// The event as a record, in one of the three formats.
fn valid_record(event: &Event, format: u64) -> TestRecord {
    let key = Some(event.customer_id.as_str().as_bytes().to_vec());
    let ce_type = format!("patron.{}.v1", event.event_type());
    let time = event.occurred_at.to_rfc3339();
    match format % 3 {
        0 => TestRecord {
            key,
            headers: vec![("content-type".into(), b"application/protobuf".to_vec())],
            payload: patron_codec::to_proto(event).encode_to_vec(),
        },
        1 => TestRecord {
            key,
            headers: vec![(
                "content-type".into(),
                b"application/cloudevents+json".to_vec(),
            )],
            payload: serde_json::json!({
                "specversion": "1.0", "id": event.event_id.to_string(), "source": event.source,
                "type": ce_type, "subject": event.customer_id.as_str(), "time": time,
                "data": event.body.to_payload(),
            })
            .to_string()
            .into_bytes(),
        },
        _ => TestRecord {
            key,
            headers: [
                ("content-type", "application/json".to_owned()),
                ("ce_specversion", "1.0".to_owned()),
                ("ce_id", event.event_id.to_string()),
                ("ce_source", event.source.clone()),
                ("ce_type", ce_type),
                ("ce_subject", event.customer_id.as_str().to_owned()),
                ("ce_time", time),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_bytes()))
            .collect(),
            payload: event.body.to_payload_string().into_bytes(),
        },
    }
}

/// What a corpus record expected to be stored decodes to (the codec and validation at work, as
/// in ingest; the point here is that the store then holds exactly that).
fn decoded(record: &TestRecord) -> Event {
    let headers: Vec<(&str, &[u8])> = record
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    let message = Message {
        content_type: None,
        headers: &headers,
        key: record.key.as_deref(),
        payload: &record.payload,
    };
    let raw = patron_codec::decode(&message, &patron_codec::Limits::default()).expect("decodes");
    patron_domain::validate(raw, &ValidationPolicy::at(Utc::now())).expect("valid")
}

/// A running `patron ingest`, killed if the test ends (or panics) first.
struct Ingest(Child);

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

async fn corpus_through_ingest(url: &str) {
    let corpus = load_corpus();
    let kafka = MockKafka::start_for_test(1);
    kafka.create_topic(TOPIC, 4).expect("create the topic");
    kafka
        .create_topic(DLQ, 1)
        .expect("create the dead-letter topic");

    // Valid events around and between the hostile records, some on the hostile records' key
    // (so in their partition, right before and after them).
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed: {seed}");
    let mut rng = Lcg(seed);
    let mut valid: Vec<Event> = Vec::new();
    let mut all: Vec<TestRecord> = Vec::new();
    let mut n = 0;
    let mut add_valid = |all: &mut Vec<TestRecord>, valid: &mut Vec<Event>, rng: &mut Lcg| {
        let customer = if n % 4 == 0 {
            "c-hostile".to_owned()
        } else {
            format!("c-{}", rng.next(25))
        };
        let event = valid_event(n, &customer, rng);
        all.push(valid_record(&event, n));
        valid.push(event);
        n += 1;
    };
    for hostile in &corpus {
        for _ in 0..1 + rng.next(4) {
            add_valid(&mut all, &mut valid, &mut rng);
        }
        all.push(hostile.record.clone());
    }
    for _ in 0..20 {
        add_valid(&mut all, &mut valid, &mut rng);
    }
    patron_kafka::testing::produce(&kafka.bootstrap(), TOPIC, &all).await;
    let produced = high_watermarks(&kafka.bootstrap(), TOPIC, 4);
    assert_eq!(
        produced.iter().sum::<i64>(),
        all.len() as i64,
        "every record was produced"
    );

    patron(url, &["migrate"]).success();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("ingest.log");
    let mut ingest = Command::new(patron_bin())
        .args([
            "ingest",
            "--kafka-brokers",
            &kafka.bootstrap(),
            "--topics",
            TOPIC,
        ])
        .args([
            "--group",
            GROUP,
            "--batch-size",
            "64",
            "--batch-max-delay",
            "20ms",
        ])
        .env("PATRON_DATABASE_URL", url)
        .env("PATRON_LOG", "info")
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .map(Ingest)
        .expect("start patron ingest");

    let store = SqlEventStore::connect(&ConnectOptions::new(url))
        .await
        .expect("open the store")
        .into_dyn();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let stored: Vec<i64> = store
            .source_offsets(GROUP)
            .await
            .unwrap()
            .iter()
            .map(|o| o.next_offset)
            .collect();
        if stored.iter().sum::<i64>() == all.len() as i64 {
            assert_eq!(
                stored, produced,
                "the stored offsets reach every partition's end"
            );
            break;
        }
        if let Ok(Some(status)) = ingest.0.try_wait() {
            panic!(
                "patron ingest exited ({status}); its log ends with:\n{}",
                log_tail(&log)
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingest did not consume every record in time ({stored:?} of {produced:?}); its log \
             ends with:\n{}",
            log_tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = ingest.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = ingest.0.wait().unwrap();
    assert!(
        status.success(),
        "ingest survives the corpus and stops cleanly on SIGTERM, got {status}; log:\n{}",
        log_tail(&log)
    );

    // The store: every valid event once, as produced, and the corpus's stored ones; nothing else.
    let mut stored: HashMap<uuid::Uuid, Event> = HashMap::new();
    let mut after = Position::ZERO;
    loop {
        let page = store.read_all(after, 500).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        // Patron's own streams (the source progress ingest reports) are not customer events.
        for recorded in page
            .into_iter()
            .filter(|r| !r.event.customer_id.is_reserved())
        {
            let id = recorded.event.event_id;
            assert!(
                stored.insert(id, recorded.event).is_none(),
                "event {id} is stored twice"
            );
        }
    }
    let mut expected: HashMap<uuid::Uuid, Event> =
        valid.into_iter().map(|e| (e.event_id, e)).collect();
    for c in corpus.iter().filter(|c| c.expect == Expect::Stored) {
        let event = decoded(&c.record);
        assert_eq!(
            Some(event.event_id.to_string()).as_ref(),
            c.entry.event_id.as_ref(),
            "{}: the manifest's event_id",
            c.entry.file
        );
        expected.insert(event.event_id, event);
    }
    for c in corpus.iter().filter(|c| c.expect == Expect::Duplicate) {
        let id: uuid::Uuid = c.entry.event_id.as_deref().unwrap().parse().unwrap();
        assert_eq!(
            expected.get(&id),
            Some(&decoded(&c.record)),
            "{}: a duplicate carries the same content as the stored event",
            c.entry.file
        );
    }
    let missing: Vec<_> = expected
        .keys()
        .filter(|id| !stored.contains_key(id))
        .collect();
    assert!(missing.is_empty(), "valid events not stored: {missing:?}");
    let unexpected: Vec<_> = stored
        .keys()
        .filter(|id| !expected.contains_key(id))
        .collect();
    assert!(
        unexpected.is_empty(),
        "events stored that should not be: {unexpected:?}"
    );
    for (id, event) in &expected {
        assert_eq!(&stored[id], event, "event {id} is stored as produced");
    }

    // The dead-letter topic: each hostile record once, with its class and original bytes.
    let hostile: Vec<&CorpusRecord> = corpus
        .iter()
        .filter(|c| matches!(c.expect, Expect::DeadLetter(_)))
        .collect();
    let mut letters = read_topic(
        &kafka.bootstrap(),
        DLQ,
        hostile.len(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        high_watermarks(&kafka.bootstrap(), DLQ, 1),
        vec![hostile.len() as i64],
        "exactly one dead letter per hostile record, nothing else dead-lettered"
    );
    assert_eq!(
        letters.len(),
        hostile.len(),
        "every dead letter can be read"
    );
    let mut seen_offsets = BTreeSet::new();
    for c in hostile {
        let Expect::DeadLetter(class) = c.expect else {
            unreachable!()
        };
        let is_it = |l: &ReadRecord| {
            l.payload == c.record.payload
                && l.key == c.record.key
                && l.headers.starts_with(&c.record.headers)
        };
        let matching: Vec<usize> = (0..letters.len()).filter(|&i| is_it(&letters[i])).collect();
        assert_eq!(
            matching.len(),
            1,
            "{} ({}): expected exactly one dead letter with its key, headers and bytes, found {}",
            c.entry.file,
            c.entry.why,
            matching.len()
        );
        let letter = letters.swap_remove(matching[0]);
        assert_eq!(
            letter.header(h::ERROR_CLASS).as_deref(),
            Some(class),
            "{} ({}): the dead-letter class; reason: {:?}",
            c.entry.file,
            c.entry.why,
            letter.header(h::ERROR_REASON)
        );
        assert_eq!(letter.header(h::ORIGINAL_TOPIC).as_deref(), Some(TOPIC));
        let partition: i32 = letter
            .header(h::ORIGINAL_PARTITION)
            .unwrap()
            .parse()
            .unwrap();
        let offset: i64 = letter.header(h::ORIGINAL_OFFSET).unwrap().parse().unwrap();
        assert!(
            (0..4).contains(&partition) && (0..produced[partition as usize]).contains(&offset),
            "{}: original partition {partition} and offset {offset} exist",
            c.entry.file
        );
        assert!(
            seen_offsets.insert((partition, offset)),
            "{}: two dead letters name {partition}/{offset}",
            c.entry.file
        );
        assert!(
            letter.header(h::ERROR_FIELD).is_some_and(|f| !f.is_empty())
                && letter
                    .header(h::ERROR_REASON)
                    .is_some_and(|r| !r.is_empty()),
            "{}: the error field and a readable reason",
            c.entry.file
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus_is_dead_lettered_and_nothing_else_is_affected_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());
    corpus_through_ingest(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus_is_dead_lettered_and_nothing_else_is_affected_postgres() {
    let db = PgDatabase::create().await;
    corpus_through_ingest(&db.url).await;
}
