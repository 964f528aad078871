//! EventStoreService end to end on SQLite and PostgreSQL: pages of a stream and of the log,
//! each event decoding back to exactly the stored one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use chrono::{TimeZone, Utc};
use patron_domain::ValidationPolicy;
use patron_proto::api::v1 as pb;
use patron_proto::api::v1::event_store_service_client::EventStoreServiceClient;
use patron_store::Position;
use support::{Bearer, Db, TOKEN, all_events, cloud_event, start, start_server};
use tonic::Code;

fn decoded(stored: &pb::StoredEvent) -> patron_domain::Event {
    let raw = patron_codec::to_raw(stored.event.clone().expect("an event"));
    let policy = ValidationPolicy::at(Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap());
    patron_domain::validate(raw, &policy).expect("a stored event re-validates")
}

async fn events_come_back_as_stored(db: Db) {
    db.append(&support::demo_year(12)).await;
    let running = start_server(&db).await;
    let mut client =
        EventStoreServiceClient::with_interceptor(running.channel().await, Bearer(TOKEN));
    let store = db.sql.clone().into_dyn();

    // A customer's stream, 7 at a time.
    let log = all_events(&db).await;
    let mut sizes = std::collections::BTreeMap::new();
    for recorded in &log {
        *sizes.entry(recorded.event.customer_id.clone()).or_insert(0) += 1;
    }
    let id = sizes.into_iter().max_by_key(|(_, n)| *n).unwrap().0;
    let expected = store.read_stream(&id, 0, 100_000).await.unwrap();
    assert!(
        expected.len() > 7,
        "a stream of several pages: {}",
        expected.len()
    );
    let mut after = 0;
    let mut got = Vec::new();
    loop {
        let page = client
            .get_customer_events(pb::GetCustomerEventsRequest {
                customer_id: id.as_str().into(),
                after_version: after,
                page_size: 7,
            })
            .await
            .expect("a page of the stream")
            .into_inner();
        assert_eq!(page.stream_version, expected.len() as u64);
        assert!(page.events.len() <= 7);
        let Some(last) = page.events.last() else {
            break;
        };
        after = last.version;
        got.extend(page.events);
    }
    assert_eq!(got.len(), expected.len(), "every event once");
    for (wire, stored) in got.iter().zip(&expected) {
        assert_eq!(
            (wire.version, wire.position),
            (stored.version, stored.position.0)
        );
        assert_eq!(wire.event_type, stored.event.event_type().as_str());
        assert_eq!(decoded(wire), stored.event, "the event as stored");
    }

    // The global log, 500 at a time.
    let mut after = 0;
    let mut count = 0;
    loop {
        let page = client
            .read_events(pb::ReadEventsRequest {
                after_position: after,
                page_size: 500,
            })
            .await
            .expect("a page of the log")
            .into_inner();
        assert_eq!(page.head_position, store.head().await.unwrap().0);
        let Some(last) = page.events.last() else {
            break;
        };
        for (wire, stored) in page.events.iter().zip(&log[count..]) {
            assert_eq!(wire.position, stored.position.0);
            assert_eq!(decoded(wire), stored.event);
        }
        count += page.events.len();
        after = last.position;
    }
    assert_eq!(count, log.len());
    assert_eq!(Position(after), log.last().unwrap().position);

    // Errors.
    let cases = [
        (
            pb::GetCustomerEventsRequest {
                customer_id: "nobody-here".into(),
                ..Default::default()
            },
            Code::NotFound,
        ),
        (
            pb::GetCustomerEventsRequest {
                customer_id: "".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            pb::GetCustomerEventsRequest {
                customer_id: id.as_str().into(),
                page_size: 1001,
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
    ];
    for (request, code) in cases {
        let status = client
            .get_customer_events(request.clone())
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{request:?}: {status:?}");
    }
    let mut anonymous = EventStoreServiceClient::new(running.channel().await);
    let status = anonymous
        .read_events(pb::ReadEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn sqlite_events() {
    events_come_back_as_stored(Db::sqlite().await).await;
}

#[tokio::test]
async fn postgres_events() {
    events_come_back_as_stored(Db::postgres().await).await;
}

/// Events of about 16 KB each (a feedback comment of 4,096 four-byte characters): 600 of them
/// would be 9.6 MB in one page, over the 4 MiB a gRPC client accepts by default. Pages stop
/// short of that, hold at least one event, and paging still gives every event once, in order.
#[tokio::test]
async fn pages_stay_under_what_a_client_accepts() {
    use prost::Message as _;
    let db = Db::sqlite().await;
    let comment = "\u{1F600}".repeat(4096);
    let events: Vec<_> = (0..600)
        .map(|i| {
            cloud_event(
                "big-talker",
                start() + chrono::TimeDelta::minutes(i),
                "feedback",
                &format!(r#"{{"nps":7,"comment":"{comment}"}}"#),
            )
        })
        .collect();
    db.append(&events).await;
    let running = start_server(&db).await;
    // The client's default limit on what it receives (4 MiB) stays as it is.
    let mut client =
        EventStoreServiceClient::with_interceptor(running.channel().await, Bearer(TOKEN));

    let mut after = 0;
    let mut positions = Vec::new();
    let mut pages = 0;
    loop {
        let page = client
            .read_events(pb::ReadEventsRequest {
                after_position: after,
                page_size: 1000,
            })
            .await
            .expect("a page the client accepts")
            .into_inner();
        assert!(
            page.encoded_len() <= 4 * 1024 * 1024,
            "{}",
            page.encoded_len()
        );
        let Some(last) = page.events.last() else {
            break;
        };
        pages += 1;
        after = last.position;
        positions.extend(page.events.iter().map(|e| e.position));
    }
    let expected: Vec<u64> = all_events(&db).await.iter().map(|e| e.position.0).collect();
    assert_eq!(positions, expected, "every event once, in order");
    assert!(pages >= 3, "{pages} pages for 9.6 MB");

    let mut after = 0;
    let mut versions = Vec::new();
    loop {
        let page = client
            .get_customer_events(pb::GetCustomerEventsRequest {
                customer_id: "big-talker".into(),
                after_version: after,
                page_size: 1000,
            })
            .await
            .expect("a page of the stream the client accepts")
            .into_inner();
        let Some(last) = page.events.last() else {
            break;
        };
        assert!(page.events.len() < 600);
        after = last.version;
        versions.extend(page.events.iter().map(|e| e.version));
    }
    assert_eq!(versions, (1..=600).collect::<Vec<u64>>());
}
