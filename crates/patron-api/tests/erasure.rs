//! AdminService/EraseCustomer on SQLite and PostgreSQL, over a store that seals personal data:
//! the customer's personal data is gone from every event the API serves, the erasure itself is in
//! the customer's stream with its reason, a retried call is stored once, and bad calls are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use chrono::TimeDelta;
use patron_api::{ApiConfig, SqlReadModels};
use patron_proto::api::v1 as pb;
use patron_proto::api::v1::admin_service_client::AdminServiceClient;
use patron_proto::api::v1::event_store_service_client::EventStoreServiceClient;
use support::{Bearer, Db, TOKEN, cloud_event, start};
use tokio::sync::oneshot;
use tonic::Code;

const EMAIL: &str = "grace.hopper@example.com";

async fn erase_through_the_api(db: Db) {
    let master = Arc::new(patron_privacy::MasterKey::generate().unwrap());
    let sealed = db.sql.clone().with_master_key(Some(master));
    let at = start() + TimeDelta::days(3);
    let events = [
        cloud_event(
            "c-7",
            at,
            "profile_updated",
            &format!(r#"{{"traits":{{"email":"{EMAIL}"}}}}"#),
        ),
        cloud_event(
            "c-7",
            at,
            "feedback",
            r#"{"nps":10,"comment":"ask for Grace"}"#,
        ),
    ];
    let log = sealed.clone().into_dyn();
    let mut batch = patron_store::AppendBatch::default();
    for event in &events {
        batch.streams.push(patron_store::StreamAppend {
            customer_id: event.customer_id.clone(),
            expected: patron_store::ExpectedVersion::Any,
            events: vec![event.clone()],
        });
    }
    log.append(&batch).await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut config = ApiConfig::new(listener.local_addr().unwrap(), vec![TOKEN.into()]);
    config.log = Some(log);
    let (_stop, stopped) = oneshot::channel::<()>();
    let models = Arc::new(SqlReadModels::new(sealed));
    tokio::spawn(patron_api::serve_on(listener, config, models, async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = AdminServiceClient::with_interceptor(channel.clone(), Bearer(TOKEN));
    let mut events_api = EventStoreServiceClient::with_interceptor(channel, Bearer(TOKEN));
    let stream = |events_api: &mut EventStoreServiceClient<_>| {
        let mut client = events_api.clone();
        async move {
            let response = client
                .get_customer_events(pb::GetCustomerEventsRequest {
                    customer_id: "c-7".into(),
                    ..Default::default()
                })
                .await
                .expect("read the stream")
                .into_inner();
            format!("{:?}", response.events)
        }
    };
    assert!(
        stream(&mut events_api).await.contains(EMAIL),
        "readable before"
    );

    let id = "6f1c1d8e-0000-4000-8000-00000000e7a5";
    let request = || pb::EraseCustomerRequest {
        customer_id: "c-7".into(),
        reason: "GDPR art. 17 request #42".into(),
        event_id: id.into(),
    };
    let erased = admin.erase_customer(request()).await.unwrap().into_inner();
    assert_eq!(erased.event_id, id);
    assert_eq!(erased.position, 3);
    let after = stream(&mut events_api).await;
    assert!(
        !after.contains(EMAIL) && !after.contains("Grace"),
        "{after}"
    );
    assert!(
        after.contains("GDPR art. 17 request #42"),
        "the audit trail: {after}"
    );
    assert!(after.contains("patron-admin"), "{after}");
    // A retry is stored once and answers the same.
    let again = admin.erase_customer(request()).await.unwrap().into_inner();
    assert_eq!((again.event_id.as_str(), again.position), (id, 3));

    for (request, code, field) in [
        (
            pb::EraseCustomerRequest {
                customer_id: "nobody".into(),
                reason: "r".into(),
                ..Default::default()
            },
            Code::NotFound,
            "",
        ),
        (
            pb::EraseCustomerRequest {
                customer_id: "c-7".into(),
                reason: " ".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "reason:",
        ),
        (
            pb::EraseCustomerRequest {
                customer_id: "c-7".into(),
                reason: "r".into(),
                event_id: "not-a-uuid".into(),
            },
            Code::InvalidArgument,
            "event_id:",
        ),
        (
            pb::EraseCustomerRequest {
                customer_id: "$clv".into(),
                reason: "r".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "customer_id:",
        ),
    ] {
        let status = admin.erase_customer(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().starts_with(field), "{status:?}");
    }
}

#[tokio::test]
async fn sqlite_erase_customer() {
    erase_through_the_api(Db::sqlite().await).await;
}

#[tokio::test]
async fn postgres_erase_customer() {
    erase_through_the_api(Db::postgres().await).await;
}
