//! A database outage: health says NOT_SERVING and queries fail with a generic UNAVAILABLE.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use patron_api::model::{
    CustomerDetail, CustomerPage, CustomerQuery, KpiQuery, KpiRows, OutboxRow, Snapshot,
};
use patron_api::{ApiConfig, ApiError, ReadModels};
use patron_domain::CustomerId;
use patron_lifecycle::Rules;
use patron_proto::api::v1 as pb;
use patron_proto::api::v1::customer_service_client::CustomerServiceClient;
use patron_proto::api::v1::kpi_service_client::KpiServiceClient;
use patron_store::RecordedEvent;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Read models whose database never answers.
struct Down;

fn down() -> ApiError {
    ApiError::Unavailable("connection refused to db.internal:5432 as patron_admin".into())
}

#[async_trait]
impl ReadModels for Down {
    async fn customer(&self, _: &str) -> Result<Option<CustomerDetail>, ApiError> {
        Err(down())
    }
    async fn customers(&self, _: &CustomerQuery) -> Result<CustomerPage, ApiError> {
        Err(down())
    }
    async fn ping(&self) -> Result<(), ApiError> {
        Err(down())
    }
    async fn kpis(&self, _: &KpiQuery) -> Result<KpiRows, ApiError> {
        Err(down())
    }
    async fn position(&self) -> Result<u64, ApiError> {
        Err(down())
    }
    async fn outbox(&self, _: i64, _: u32) -> Result<Vec<OutboxRow>, ApiError> {
        Err(down())
    }
    async fn active(&self) -> Result<Option<(Snapshot, Rules)>, ApiError> {
        Err(down())
    }
    async fn stream(
        &self,
        _: &CustomerId,
        _: u64,
        _: usize,
    ) -> Result<Vec<RecordedEvent>, ApiError> {
        Err(down())
    }
    fn event_store(&self) -> Option<Arc<dyn patron_store::EventStore>> {
        None
    }
}

#[tokio::test]
async fn outage_is_not_serving_and_unavailable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let config = ApiConfig::new(address, vec!["t".into()]);
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(patron_api::serve_on(
        listener,
        config,
        Arc::new(Down),
        async {
            let _ = stopped.await;
        },
    ));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to the test server");
    let answer = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers during an outage")
        .into_inner();
    assert_eq!(answer.status, ServingStatus::NotServing as i32);

    let bearer = |mut r: tonic::Request<()>| {
        r.metadata_mut()
            .insert("authorization", "Bearer t".parse().unwrap());
        Ok(r)
    };
    let mut client = CustomerServiceClient::with_interceptor(channel.clone(), bearer);
    let mut kpis = KpiServiceClient::with_interceptor(channel, bearer);
    let statuses = [
        client
            .get_customer(pb::GetCustomerRequest {
                customer_id: "c-1".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        client
            .get_customer(pb::GetCustomerRequest {
                customer_id: "c-1".into(),
                min_position: 5,
            })
            .await
            .unwrap_err(),
        kpis.revenue_by_tier(pb::MonthRangeRequest {
            from_month: "2025-01".into(),
            to_month: "2025-02".into(),
            min_position: 0,
        })
        .await
        .unwrap_err(),
    ];
    for status in statuses {
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(
            !status.message().contains("db.internal") && !status.message().contains("patron_admin"),
            "no internal detail leaks: {status:?}"
        );
    }
}

#[tokio::test]
async fn refuses_to_run_without_tokens() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = ApiConfig::new(listener.local_addr().unwrap(), vec![" ".into()]);
    let error = patron_api::serve_on(listener, config, Arc::new(Down), std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(error, ApiError::Serve(_)), "{error}");
}
