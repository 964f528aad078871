//! Identity resolution through the API on SQLite and PostgreSQL: two customers linked by a
//! shared email become one (the merged one points to the survivor, lists leave it out, the
//! survivor's figures are the sum, also as of a time after the merge), and
//! AdminService/UnmergeCustomer splits them again, each with exactly the figures of its own
//! events.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use patron_api::{ApiConfig, SqlReadModels};
use patron_proto::api::v1 as pb;
use patron_proto::api::v1::admin_service_client::AdminServiceClient;
use patron_proto::api::v1::customer_service_client::CustomerServiceClient;
use support::{Bearer, Db, TOKEN, cloud_event, start};
use tokio::sync::oneshot;
use tonic::Code;

type Customers = CustomerServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
>;

/// (orders, net revenue, merged into) of a customer.
async fn figures(client: &mut Customers, id: &str) -> (i64, i64, String) {
    let customer = client
        .get_customer(pb::GetCustomerRequest {
            customer_id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{id}: {e}"))
        .into_inner()
        .customer
        .expect("a customer");
    let value = customer.value.expect("value");
    (value.orders, value.net_revenue_minor, customer.merged_into)
}

/// (orders, net revenue, merged into) of a customer at a past event time (GetCustomerAsOf).
async fn figures_as_of(client: &mut Customers, id: &str, at: DateTime<Utc>) -> (i64, i64, String) {
    let customer = client
        .get_customer_as_of(pb::GetCustomerAsOfRequest {
            customer_id: id.into(),
            as_of: Some(prost_types::Timestamp {
                seconds: at.timestamp(),
                nanos: 0,
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("{id} at {at}: {e}"))
        .into_inner()
        .customer
        .expect("a customer");
    let value = customer.value.expect("value");
    (value.orders, value.net_revenue_minor, customer.merged_into)
}

async fn listed(client: &mut Customers) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_customers(pb::ListCustomersRequest {
                page_size: 7,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.customers.into_iter().map(|c| c.customer_id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        token = page.next_page_token;
    }
}

async fn merge_and_unmerge_through_the_api(db: Db) {
    db.fill(12).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut config = ApiConfig::new(listener.local_addr().unwrap(), vec![TOKEN.into()]);
    config.log = Some(db.sql.clone().into_dyn());
    let (_stop, stopped) = oneshot::channel::<()>();
    let models = Arc::new(SqlReadModels::new(db.sql.clone()));
    tokio::spawn(patron_api::serve_on(listener, config, models, async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = AdminServiceClient::with_interceptor(channel.clone(), Bearer(TOKEN));
    let mut customers = CustomerServiceClient::with_interceptor(channel, Bearer(TOKEN));

    let (one, two) = ("demo-0001", "demo-0002");
    let before_one = figures(&mut customers, one).await;
    let before_two = figures(&mut customers, two).await;
    assert!(
        before_one.0 > 0 && before_two.0 > 0,
        "{before_one:?} {before_two:?}"
    );
    let everyone = listed(&mut customers).await;
    assert!(everyone.contains(one) && everyone.contains(two));

    // The same email, in two spellings, linked to both: `one` is merged into `two`.
    let at = start() + TimeDelta::days(370);
    let link = |customer: &str, email: &str, at| {
        cloud_event(
            customer,
            at,
            "identities_linked",
            &format!(
                r#"{{"identities":[{{"kind":"email","value":"{email}"}}],"evidence":"login"}}"#
            ),
        )
    };
    db.append(&[
        link(one, "kim@example.com", at),
        link(two, "Kim@Example.com", at + TimeDelta::hours(1)),
    ])
    .await;
    db.project().await;
    let merged = figures(&mut customers, one).await;
    assert_eq!(merged.2, two, "points to the customer it was merged into");
    let survivor = figures(&mut customers, two).await;
    assert_eq!(
        (survivor.0, survivor.1, survivor.2.as_str()),
        (before_one.0 + before_two.0, before_one.1 + before_two.1, ""),
        "the survivor holds both"
    );
    let now_listed = listed(&mut customers).await;
    assert!(
        !now_listed.contains(one),
        "a merged customer is not listed twice"
    );
    assert_eq!(now_listed.len(), everyone.len() - 1);

    // As of a time after the merge, the survivor holds both and the merged one points to it; as
    // of a time before it, each had its own.
    let after = at + TimeDelta::hours(2);
    assert_eq!(figures_as_of(&mut customers, two, after).await, survivor);
    assert_eq!(figures_as_of(&mut customers, one, after).await.2, two);
    let before = at - TimeDelta::minutes(1);
    assert_eq!(figures_as_of(&mut customers, two, before).await, before_two);
    assert_eq!(figures_as_of(&mut customers, one, before).await, before_one);

    // An operator splits them again: each has its own figures, as before the merge.
    let request = pb::UnmergeCustomerRequest {
        customer_id: two.into(),
        merged_customer_id: one.into(),
        reason: "two people sharing a family email".into(),
        event_id: "6f1c1d8e-0000-4000-8000-0000000a11ce".into(),
    };
    // `two` is not merged into `one`: the operator named them the wrong way round.
    let status = admin
        .unmerge_customer(pb::UnmergeCustomerRequest {
            customer_id: one.into(),
            merged_customer_id: two.into(),
            reason: "wrong way round".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("not merged"), "{status:?}");
    let status = admin
        .unmerge_customer(pb::UnmergeCustomerRequest {
            customer_id: "demo-0005".into(),
            merged_customer_id: one.into(),
            reason: "wrong customer".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("merged into demo-0002"),
        "{status:?}"
    );
    let response = admin
        .unmerge_customer(request.clone())
        .await
        .unwrap()
        .into_inner();
    let again = admin.unmerge_customer(request).await.unwrap().into_inner();
    assert_eq!(
        (again.event_id, again.position),
        (response.event_id, response.position),
        "a retried call is stored once"
    );
    db.project().await;
    assert_eq!(figures(&mut customers, one).await, before_one);
    assert_eq!(figures(&mut customers, two).await, before_two);
    assert_eq!(listed(&mut customers).await, everyone);
    let now = Utc::now() + TimeDelta::minutes(1);
    assert_eq!(figures_as_of(&mut customers, one, now).await, before_one);
    assert_eq!(figures_as_of(&mut customers, two, now).await, before_two);

    for (request, code, field) in [
        (
            pb::UnmergeCustomerRequest {
                customer_id: "nobody".into(),
                merged_customer_id: one.into(),
                reason: "r".into(),
                ..Default::default()
            },
            Code::NotFound,
            "",
        ),
        (
            pb::UnmergeCustomerRequest {
                customer_id: two.into(),
                merged_customer_id: two.into(),
                reason: "r".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "merged_customer_id",
        ),
        (
            pb::UnmergeCustomerRequest {
                customer_id: two.into(),
                merged_customer_id: one.into(),
                reason: " ".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "reason",
        ),
        (
            pb::UnmergeCustomerRequest {
                customer_id: two.into(),
                merged_customer_id: "$clock".into(),
                reason: "r".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "merged_customer_id",
        ),
    ] {
        let status = admin.unmerge_customer(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().starts_with(field), "{status:?}");
    }
}

#[tokio::test]
async fn sqlite_merge_and_unmerge_through_the_api() {
    merge_and_unmerge_through_the_api(Db::sqlite().await).await;
}

#[tokio::test]
async fn postgres_merge_and_unmerge_through_the_api() {
    merge_and_unmerge_through_the_api(Db::postgres().await).await;
}
