//! Consent through the API on SQLite and PostgreSQL: a customer's answers on `GetCustomer`,
//! marketing audiences with `ListCustomers { consent_purpose }` (exact purpose, across pages),
//! the watch stream marked and filtered per purpose, and bad purposes refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use patron_proto::api::v1 as pb;
use patron_proto::api::v1::customer_service_client::CustomerServiceClient;
use support::{Bearer, Db, TOKEN, cloud_event, start, start_server};
use tonic::Code;

fn consent(
    customer: &str,
    at: DateTime<Utc>,
    purpose: &str,
    granted: bool,
) -> patron_domain::Event {
    cloud_event(
        customer,
        at,
        "consent_changed",
        &format!(r#"{{"purpose":"{purpose}","granted":{granted}}}"#),
    )
}

async fn consent_through_the_api(db: Db) {
    let day = |n: i64| start() + TimeDelta::days(n);
    let mut events = support::demo_year(12);
    events.extend([
        consent("demo-0000", day(10), "news_letter", true),
        // Granted, then withdrawn.
        consent("demo-0001", day(10), "news_letter", true),
        consent("demo-0001", day(20), "news_letter", false),
        // A purpose that `news_letter` as a LIKE pattern would match unescaped.
        consent("demo-0002", day(10), "newsxletter", true),
        consent("demo-0003", day(10), "sms", true),
        // Granted; a late answer from before does not overrule it.
        consent("demo-0004", day(30), "news_letter", true),
        consent("demo-0004", day(5), "news_letter", false),
        // A customer known only from the consent answer.
        consent("lead-1", day(40), "news_letter", true),
    ]);
    db.append(&events).await;
    db.project().await;

    let server = start_server(&db).await;
    let mut client = CustomerServiceClient::with_interceptor(server.channel().await, Bearer(TOKEN));

    // The audience: exactly those who granted the purpose, the same across pages of one.
    let audience = ["demo-0000", "demo-0004", "lead-1"];
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_customers(pb::ListCustomersRequest {
                consent_purpose: "news_letter".into(),
                page_size: 1,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("list an audience")
            .into_inner();
        listed.extend(page.customers.into_iter().map(|c| c.customer_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed, audience);
    // Combined with another filter: only the prospect among them.
    let prospects = client
        .list_customers(pb::ListCustomersRequest {
            consent_purpose: "news_letter".into(),
            stage: patron_proto::lifecycle::v1::Stage::Prospect as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = prospects
        .customers
        .iter()
        .map(|c| c.customer_id.as_str())
        .collect();
    assert_eq!(ids, ["lead-1"]);

    // Each customer's answers, by purpose.
    let answers = |customer: pb::Customer| -> Vec<(String, bool, i64)> {
        customer
            .consents
            .into_iter()
            .filter(|c| c.purpose == "news_letter")
            .map(|c| (c.purpose, c.granted, c.changed_at.unwrap().seconds))
            .collect()
    };
    let get = |id: &'static str| {
        let mut client = client.clone();
        async move {
            client
                .get_customer(pb::GetCustomerRequest {
                    customer_id: id.into(),
                    ..Default::default()
                })
                .await
                .expect("get a customer")
                .into_inner()
                .customer
                .unwrap()
        }
    };
    assert_eq!(
        answers(get("demo-0001").await),
        [("news_letter".to_owned(), false, day(20).timestamp())]
    );
    assert_eq!(
        answers(get("demo-0004").await),
        [("news_letter".to_owned(), true, day(30).timestamp())]
    );
    assert!(get("demo-0005").await.consents.is_empty(), "never asked");
    let demo = get("demo-0000").await.consents;
    assert!(
        demo.iter()
            .any(|c| c.purpose == "marketing_email" && c.granted),
        "the demo's sign-up consent: {demo:?}"
    );

    // The watch stream: every change is marked; with a purpose, only consenting customers'.
    let outbox = db
        .integers("SELECT COUNT(*) FROM outbox")
        .await
        .first()
        .copied()
        .unwrap();
    let mut all = client
        .watch_lifecycle_changes(pb::WatchLifecycleChangesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut marked = BTreeSet::new();
    for _ in 0..outbox {
        let change = tokio::time::timeout(Duration::from_secs(30), all.message())
            .await
            .expect("a change in time")
            .unwrap()
            .unwrap();
        if change.consent.get("news_letter") == Some(&true) {
            marked.insert(change.outbox_id);
        }
    }
    assert!(!marked.is_empty(), "some changes fired with consent given");
    let mut consenting = client
        .watch_lifecycle_changes(pb::WatchLifecycleChangesRequest {
            consent_purpose: "news_letter".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut filtered = BTreeSet::new();
    for _ in 0..marked.len() {
        let change = tokio::time::timeout(Duration::from_secs(30), consenting.message())
            .await
            .expect("a change in time")
            .unwrap()
            .unwrap();
        assert_eq!(change.consent.get("news_letter"), Some(&true));
        filtered.insert(change.outbox_id);
    }
    assert_eq!(filtered, marked);
    assert!(
        tokio::time::timeout(Duration::from_millis(600), consenting.message())
            .await
            .is_err(),
        "nothing else comes"
    );

    // Bad purposes are refused, naming the field.
    for purpose in ["Marketing", "marketing email", "%", &"x".repeat(65)] {
        let status = client
            .list_customers(pb::ListCustomersRequest {
                consent_purpose: purpose.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{purpose}");
        assert!(
            status.message().starts_with("consent_purpose:"),
            "{status:?}"
        );
        let status = client
            .watch_lifecycle_changes(pb::WatchLifecycleChangesRequest {
                consent_purpose: purpose.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{purpose}");
    }
}

#[tokio::test]
async fn sqlite_consent_through_the_api() {
    consent_through_the_api(Db::sqlite().await).await;
}

#[tokio::test]
async fn postgres_consent_through_the_api() {
    consent_through_the_api(Db::postgres().await).await;
}
