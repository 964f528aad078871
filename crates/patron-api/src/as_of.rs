//! "As of" queries: a customer as they were at a past event time, folded from their stream.
//!
//! Only the customer's own events with `occurred_at <= as_of` are folded (in stream order, as
//! the projector applied them), then event time is advanced to `as_of` so that transitions
//! caused by silence up to then fire too. The lifecycle and value folds depend on the
//! customer's events and the watermark alone, so at the live watermark this gives the live
//! stage and value. RFM scores and the value tier rank a customer against the whole population
//! and are not reconstructed: they are left empty.

use chrono::{DateTime, Utc};
use patron_domain::{Currency, CustomerId};
use patron_projector::{CustomerView, Projection};

use crate::error::ApiError;
use crate::model::{CustomerDetail, CustomerRow, HistoryRow, Snapshot};
use crate::read_models::ReadModels;

/// Events read from the stream per round trip.
const PAGE: usize = 1_000;

/// The customer at `as_of`; `NotFound` when they had no event by then.
pub(crate) async fn customer_as_of(
    models: &dyn ReadModels,
    customer_id: &CustomerId,
    as_of: DateTime<Utc>,
) -> Result<CustomerDetail, ApiError> {
    let not_found =
        || ApiError::NotFound(format!("customer {:?} at {as_of}", customer_id.as_str()));
    let Some((snapshot, rules)) = models.active().await? else {
        return Err(not_found());
    };
    let currency = Currency::from_code(&rules.currency)
        .map_err(|error| ApiError::Internal(format!("rules currency: {error}")))?;
    let mut projection = Projection::new();
    let mut version = 0;
    loop {
        let page = models.stream(customer_id, version, PAGE).await?;
        let Some(last) = page.last() else { break };
        version = last.version;
        let until: Vec<_> = page
            .into_iter()
            .filter(|event| event.event.occurred_at <= as_of)
            .collect();
        projection.apply_page(&until, &rules, currency);
    }
    projection.tick(as_of, &rules);
    let view = projection.customer(customer_id).ok_or_else(not_found)?;
    Ok(detail(
        customer_id,
        view,
        Snapshot {
            watermark: Some(as_of),
            ..snapshot
        },
    ))
}

/// The folded view as read-model rows, so that it converts like a live customer.
fn detail(customer_id: &CustomerId, view: &CustomerView, snapshot: Snapshot) -> CustomerDetail {
    let value = &view.value;
    let lifecycle = &view.lifecycle;
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let customer = CustomerRow {
        customer_id: customer_id.as_str().to_owned(),
        stage: lifecycle.stage.map(|stage| stage.as_str().to_owned()),
        stage_since: lifecycle.since,
        orders: count(value.orders),
        refunds: count(value.refunds),
        gross_revenue_minor: value.gross_revenue_minor,
        refunded_minor: value.refunded_minor,
        net_revenue_minor: value.net_revenue_minor(),
        average_order_minor: value.average_order_value(),
        first_purchase_at: value.first_purchase_at,
        last_purchase_at: value.last_purchase_at,
        last_event_at: lifecycle.last_event_at,
        rfm_r: None,
        rfm_f: None,
        rfm_m: None,
        rfm_segment: None,
        tier: None,
        consents: (!view.consents.is_empty())
            .then(|| serde_json::to_string(&view.consents).ok())
            .flatten(),
        merged_into: view.merged_into.as_ref().map(|c| c.as_str().to_owned()),
    };
    let history = lifecycle
        .history
        .iter()
        .enumerate()
        .map(|(seq, transition)| HistoryRow {
            seq: i32::try_from(seq).unwrap_or(i32::MAX),
            from_stage: transition.from.map(|stage| stage.as_str().to_owned()),
            to_stage: transition.to.as_str().to_owned(),
            entered_at: transition.at,
            rule: transition.rule.clone(),
            facts: serde_json::to_string(&transition.facts).unwrap_or_else(|_| "{}".into()),
        })
        .collect();
    CustomerDetail {
        snapshot,
        customer,
        history,
        // Predictions are population figures as of a fit, not reconstructed for a past time.
        prediction: None,
    }
}
