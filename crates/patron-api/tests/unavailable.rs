//! A database outage: health says NOT_SERVING and queries fail with a generic UNAVAILABLE.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use patron_api::model::{CustomerDetail, CustomerPage, CustomerQuery};
use patron_api::{ApiConfig, ApiError, ReadModels};
use patron_proto::api::v1 as pb;
use patron_proto::api::v1::customer_service_client::CustomerServiceClient;
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

    let mut client =
        CustomerServiceClient::with_interceptor(channel, |mut r: tonic::Request<()>| {
            r.metadata_mut()
                .insert("authorization", "Bearer t".parse().unwrap());
            Ok(r)
        });
    let status = client
        .get_customer(pb::GetCustomerRequest {
            customer_id: "c-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        !status.message().contains("db.internal") && !status.message().contains("patron_admin"),
        "no internal detail leaks: {status:?}"
    );
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
