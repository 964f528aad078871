//! The API end to end: a real tonic server on real read models (SQLite and PostgreSQL), queried
//! with the generated client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use patron_proto::api::v1 as pb;
use patron_proto::api::v1::customer_service_client::CustomerServiceClient;
use patron_proto::lifecycle::v1::Stage as PbStage;
use support::{Bearer, Db, TOKEN, start_server};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const ACTIVE: &str = "(SELECT generation FROM projection_active)";

type Client = CustomerServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
>;

async fn connect(running: &support::Running, token: &'static str) -> Client {
    CustomerServiceClient::with_interceptor(running.channel().await, Bearer(token))
}

/// Walks every page of a listing; asserts that no customer comes twice.
async fn walk(client: &mut Client, request: pb::ListCustomersRequest) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut request = request;
    loop {
        let page = client
            .list_customers(request.clone())
            .await
            .unwrap_or_else(|status| panic!("page {pages}: {status:?}"))
            .into_inner();
        pages += 1;
        assert!(page.customers.len() <= request.page_size as usize);
        ids.extend(page.customers.into_iter().map(|c| c.customer_id));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a customer came twice: {ids:?}");
    (ids, pages)
}

async fn api_answers_from_the_read_models(db: Db) {
    db.fill(60).await;
    let running = start_server(&db).await;
    let mut client = connect(&running, TOKEN).await;

    // GetCustomer equals the row, and the history is complete and chained.
    let id = db
        .strings(&format!(
            "SELECT customer_id FROM customers WHERE generation = {ACTIVE} AND orders > 1 \
             ORDER BY customer_id LIMIT 1"
        ))
        .await
        .remove(0);
    let customer = client
        .get_customer(pb::GetCustomerRequest {
            customer_id: id.clone(),
            ..Default::default()
        })
        .await
        .expect("get an existing customer")
        .into_inner()
        .customer
        .expect("a customer");
    let row = db
        .integers(&format!(
            "SELECT orders FROM customers WHERE generation = {ACTIVE} AND customer_id = '{id}' \
             UNION ALL SELECT net_revenue_minor FROM customers WHERE generation = {ACTIVE} \
             AND customer_id = '{id}' UNION ALL SELECT gross_revenue_minor FROM customers \
             WHERE generation = {ACTIVE} AND customer_id = '{id}' UNION ALL SELECT count(*) \
             FROM stage_history WHERE generation = {ACTIVE} AND customer_id = '{id}'"
        ))
        .await;
    let value = customer.value.clone().expect("value");
    assert_eq!(
        vec![
            value.orders,
            value.net_revenue_minor,
            value.gross_revenue_minor
        ],
        row[..3].to_vec(),
        "orders, net and gross revenue as in the read model"
    );
    assert_eq!(
        customer.stage_history.len() as i64,
        row[3],
        "one entry per transition"
    );
    let stage = db
        .strings(&format!(
            "SELECT stage FROM customers WHERE generation = {ACTIVE} AND customer_id = '{id}'"
        ))
        .await
        .remove(0);
    assert_eq!(
        PbStage::try_from(customer.stage)
            .unwrap()
            .as_str_name()
            .to_lowercase(),
        format!("stage_{stage}")
    );
    let history = &customer.stage_history;
    assert_eq!(history.last().map(|h| h.to_stage), Some(customer.stage));
    assert!(
        history.last().unwrap().exited_at.is_none(),
        "the current stage is open"
    );
    for pair in history.windows(2) {
        assert_eq!(
            pair[0].exited_at, pair[1].entered_at,
            "a stay ends when the next begins"
        );
        assert_eq!(pair[0].to_stage, pair[1].from_stage);
    }
    assert!(!value.currency.is_empty(), "amounts name their currency");

    // Unknown and invalid ids.
    let status = client
        .get_customer(pb::GetCustomerRequest {
            customer_id: "nobody-here".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = client
        .get_customer(pb::GetCustomerRequest {
            customer_id: " ".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("customer_id:"), "{status:?}");

    // Listing by the most common stage, 7 at a time, returns exactly what SQL returns.
    let stage = db
        .strings(&format!(
            "SELECT stage FROM customers WHERE generation = {ACTIVE} AND stage IS NOT NULL \
             GROUP BY stage ORDER BY count(*) DESC, stage LIMIT 1"
        ))
        .await
        .remove(0);
    let wire_stage = PbStage::from_str_name(&format!("STAGE_{}", stage.to_uppercase())).unwrap();
    let request = pb::ListCustomersRequest {
        stage: wire_stage as i32,
        page_size: 7,
        ..Default::default()
    };
    let (ids, pages) = walk(&mut client, request.clone()).await;
    let expected = db
        .strings(&format!(
            "SELECT customer_id FROM customers WHERE generation = {ACTIVE} AND stage = '{stage}'"
        ))
        .await;
    assert!(
        expected.len() > 7,
        "enough {stage} customers for two pages: {}",
        expected.len()
    );
    assert!(pages >= 2);
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>(),
        expected.iter().collect::<BTreeSet<_>>(),
        "the pages together are the {stage} customers"
    );

    // Stage plus a minimum value.
    let min = db
        .integers(&format!(
            "SELECT net_revenue_minor FROM customers WHERE generation = {ACTIVE} \
             ORDER BY net_revenue_minor DESC LIMIT 1 OFFSET 20"
        ))
        .await
        .remove(0);
    let (ids, _) = walk(
        &mut client,
        pb::ListCustomersRequest {
            min_net_revenue_minor: Some(min),
            ..request.clone()
        },
    )
    .await;
    let expected = db
        .strings(&format!(
            "SELECT customer_id FROM customers WHERE generation = {ACTIVE} AND stage = '{stage}' \
             AND net_revenue_minor >= {min} ORDER BY customer_id"
        ))
        .await;
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>(),
        expected.iter().collect::<BTreeSet<_>>()
    );

    // Invalid listings.
    let first = client
        .list_customers(request.clone())
        .await
        .unwrap()
        .into_inner();
    let cases = [
        (
            pb::ListCustomersRequest {
                page_size: 10_000,
                ..request.clone()
            },
            "page_size:",
        ),
        (
            pb::ListCustomersRequest {
                page_token: "garbage!".into(),
                ..request.clone()
            },
            "page_token:",
        ),
        (
            pb::ListCustomersRequest {
                page_token: first.next_page_token.clone(),
                tier: "A".into(),
                ..request.clone()
            },
            "page_token: was issued for different filters",
        ),
        (
            pb::ListCustomersRequest {
                tier: "D".into(),
                ..request.clone()
            },
            "tier:",
        ),
    ];
    for (bad, message) in cases {
        let status = client.list_customers(bad.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
        assert!(status.message().starts_with(message), "{bad:?}: {status:?}");
    }

    // Authentication.
    for token in ["wrong-token", ""] {
        let mut stranger = connect(&running, token).await;
        let status = stranger.list_customers(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "token {token:?}");
    }
    let mut anonymous = CustomerServiceClient::new(running.channel().await);
    let status = anonymous
        .get_customer(pb::GetCustomerRequest {
            customer_id: id,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut second = client_other(&running).await;
    second
        .list_customers(request)
        .await
        .expect("every configured token is admitted");

    // Health needs no token.
    let mut health = HealthClient::new(running.channel().await);
    for service in [
        "",
        patron_api::CUSTOMER_SERVICE,
        patron_api::KPI_SERVICE,
        patron_api::EVENT_STORE_SERVICE,
    ] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32, "{service:?}");
    }
}

async fn client_other(running: &support::Running) -> Client {
    connect(running, "other-token").await
}

#[tokio::test]
async fn sqlite_api() {
    api_answers_from_the_read_models(Db::sqlite().await).await;
}

#[tokio::test]
async fn postgres_api() {
    api_answers_from_the_read_models(Db::postgres().await).await;
}
