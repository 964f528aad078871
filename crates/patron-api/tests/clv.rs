//! Predictive CLV through the API: AdminService fits and reports the model, GetCustomer carries
//! the customer's predictions and version, KpiService/ForecastByTier sums them by tier. Both
//! backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use patron_api::{ApiConfig, SqlReadModels};
use patron_projector::clv::{FitConfig, Fitter};
use patron_proto::api::v1 as pb;
use patron_proto::api::v1::admin_service_client::AdminServiceClient;
use patron_proto::api::v1::customer_service_client::CustomerServiceClient;
use patron_proto::api::v1::kpi_service_client::KpiServiceClient;
use patron_store_sql::testing::clv_population;
use support::{Bearer, Db, TOKEN, fetch, start};
use tokio::sync::oneshot;
use tonic::Code;

/// The API on 127.0.0.1:0 with a fitter; stops when the sender drops.
async fn serve(db: &Db, config: FitConfig) -> (tonic::transport::Channel, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let mut api = ApiConfig::new(address, vec![TOKEN.into()]);
    let fitter = Fitter::new(db.sql.read_models(), db.sql.clv_store(), config).unwrap();
    api.fitter = Some(Arc::new(fitter));
    let models = Arc::new(SqlReadModels::new(db.sql.clone()));
    tokio::spawn(async move {
        patron_api::serve_on(listener, api, models, async {
            let _ = stopped.await;
        })
        .await
        .expect("server runs");
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (channel, stop)
}

/// `(customer, tier, model_version, p_alive, expected_purchases, expected_revenue, clv)` rows.
type Row = (
    String,
    Option<String>,
    i64,
    f64,
    f64,
    Option<i64>,
    Option<i64>,
);

async fn predictions_with_tiers(db: &Db) -> Vec<Row> {
    fetch(
        db,
        "SELECT p.customer_id, c.tier, p.model_version, p.p_alive, p.expected_purchases, \
            p.expected_revenue_minor, p.clv_minor \
         FROM clv_predictions p JOIN projection_active a ON a.generation = p.generation \
         JOIN customers c ON c.generation = p.generation AND c.customer_id = p.customer_id \
         ORDER BY p.customer_id",
    )
    .await
}

async fn predictions_are_served(db: Db) {
    let mut events = support::demo_year(30);
    events.extend(clv_population(500, start(), 5));
    events.sort_by_key(|e| e.occurred_at);
    db.append(&events).await;
    db.project().await;
    let (channel, _stop) = serve(&db, FitConfig::default()).await;
    let mut admin = AdminServiceClient::with_interceptor(channel.clone(), Bearer(TOKEN));
    let mut customers = CustomerServiceClient::with_interceptor(channel.clone(), Bearer(TOKEN));
    let mut kpis = KpiServiceClient::with_interceptor(channel.clone(), Bearer(TOKEN));
    let get = |id: &str| pb::GetCustomerRequest {
        customer_id: id.into(),
        min_position: 0,
    };

    // Before any fit: no model, no prediction, an empty forecast.
    let status = admin.get_model(pb::GetModelRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let customer = customers
        .get_customer(get("s-000001"))
        .await
        .unwrap()
        .into_inner();
    assert!(customer.customer.unwrap().prediction.is_none());
    let forecast = kpis
        .forecast_by_tier(pb::ForecastByTierRequest { min_position: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((forecast.model_version, forecast.tiers.len()), (0, 0));

    // Without a token: refused like every other call.
    let mut anonymous = AdminServiceClient::new(channel.clone());
    let status = anonymous
        .fit_model(pb::FitModelRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let fitted = admin
        .fit_model(pb::FitModelRequest {})
        .await
        .unwrap()
        .into_inner()
        .model
        .unwrap();
    assert_eq!(fitted.version, 1);
    assert_eq!(fitted.horizon_days, 365);
    let bgnbd = fitted.bgnbd.unwrap();
    assert!(bgnbd.r > 0.0 && bgnbd.alpha > 0.0 && bgnbd.log_likelihood < 0.0);
    assert!(fitted.gamma_gamma.is_some(), "{}", fitted.spend_note);
    let got = admin
        .get_model(pb::GetModelRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.model.as_ref(), Some(&fitted));

    let rows = predictions_with_tiers(&db).await;
    assert_eq!(rows.len() as u64, fitted.customers);
    for (id, _, version, p_alive, expected, revenue, clv) in rows.iter().step_by(41) {
        let customer = customers.get_customer(get(id)).await.unwrap().into_inner();
        let prediction = customer.customer.unwrap().prediction.expect("a prediction");
        assert_eq!(prediction.model_version, u64::try_from(*version).unwrap());
        assert_eq!(prediction.model_version, 1);
        assert_eq!(prediction.evaluated_at, fitted.evaluated_at);
        assert_eq!(prediction.horizon_days, 365);
        assert_eq!(prediction.p_alive, *p_alive);
        assert_eq!(prediction.expected_purchases, *expected);
        assert_eq!(prediction.expected_revenue_minor, *revenue);
        assert_eq!(prediction.clv_minor, *clv);
        assert!(prediction.expected_spend_minor.is_some());
    }

    // The forecast is the predictions summed by tier.
    let mut want: BTreeMap<String, (i64, f64, i64, i64)> = BTreeMap::new();
    for (_, tier, _, _, expected, revenue, clv) in &rows {
        let slot = want.entry(tier.clone().unwrap_or_default()).or_default();
        slot.0 += 1;
        slot.1 += expected;
        slot.2 += revenue.unwrap_or(0);
        slot.3 += clv.unwrap_or(0);
    }
    let forecast = kpis
        .forecast_by_tier(pb::ForecastByTierRequest { min_position: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(forecast.model_version, 1);
    assert_eq!(forecast.currency, "USD");
    assert_eq!(forecast.evaluated_at, fitted.evaluated_at);
    assert!(want.len() >= 3, "several tiers: {want:?}");
    let tiers: Vec<&str> = forecast.tiers.iter().map(|t| t.tier.as_str()).collect();
    assert_eq!(tiers, want.keys().map(String::as_str).collect::<Vec<_>>());
    for tier in &forecast.tiers {
        let (n, expected, revenue, clv) = want[&tier.tier];
        assert_eq!(tier.customers, n, "{}", tier.tier);
        assert!((tier.expected_purchases - expected).abs() < 1e-6 * expected.max(1.0));
        assert_eq!(
            (tier.expected_revenue_minor, tier.clv_minor),
            (revenue, clv)
        );
        assert!(tier.expected_active > 0.0 && tier.expected_active <= n as f64);
    }

    // A second fit is version 2, and the customers' predictions say so.
    let second = admin
        .fit_model(pb::FitModelRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.model.unwrap().version, 2);
    let customer = customers
        .get_customer(get(&rows[0].0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        customer.customer.unwrap().prediction.unwrap().model_version,
        2
    );
}

async fn a_rejected_fit_is_failed_precondition_with_the_reason(db: Db) {
    db.fill(12).await;
    let config = FitConfig {
        min_customers: 50,
        ..FitConfig::default()
    };
    let (channel, _stop) = serve(&db, config).await;
    let mut admin = AdminServiceClient::with_interceptor(channel, Bearer(TOKEN));
    let status = admin.fit_model(pb::FitModelRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("at least 50")
            && status.message().contains("no model is in force yet"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn sqlite_predictions_are_served() {
    predictions_are_served(Db::sqlite().await).await;
}

#[tokio::test]
async fn postgres_predictions_are_served() {
    predictions_are_served(Db::postgres().await).await;
}

#[tokio::test]
async fn sqlite_a_rejected_fit_is_failed_precondition_with_the_reason() {
    a_rejected_fit_is_failed_precondition_with_the_reason(Db::sqlite().await).await;
}

#[tokio::test]
async fn postgres_a_rejected_fit_is_failed_precondition_with_the_reason() {
    a_rejected_fit_is_failed_precondition_with_the_reason(Db::postgres().await).await;
}
