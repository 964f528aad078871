//! "As of" queries: a customer as they were at a past event time, folded from their stream.
//!
//! The events with `occurred_at <= as_of` of the customer's merge group, and the
//! probability-alive model events (`$clv`) dated by then, are folded as the projector folds them
//! (read in log order, each customer in event-time order), then event time is advanced to
//! `as_of` — but no further than the read models' watermark, the time proven to have passed — so
//! that transitions caused by silence (or a falling probability alive) up to then fire too; "as
//! of now" is the live customer. The group is the customer, or the customer
//! it is merged into now (and that one's, up the chain), with every customer merged into it
//! (`customers_merged` events in the streams, down the chain): a survivor at a time after a merge
//! holds the merged customer's figures, and a merged customer points to its survivor, as live.
//! The lifecycle and value folds depend on these events and the watermark alone, so at the live
//! watermark this gives the live stage and value. RFM scores and the value tier rank a customer
//! against the whole population and are not reconstructed: they are left empty.
//!
//! A merge that was undone no longer links the two customers in the identity index: a customer
//! split off again is folded on its own, also at a time when it was merged.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use patron_domain::{Currency, CustomerId, EventBody};
use patron_lifecycle::Transition;
use patron_projector::{CustomerView, LogStreams, Projection, net_records};
use patron_store::RecordedEvent;

use crate::error::ApiError;
use crate::model::{CustomerDetail, CustomerRow, HistoryRow, Snapshot};
use crate::read_models::ReadModels;

/// Events read from the stream per round trip.
const PAGE: usize = 1_000;
/// Most customers folded together: the identity index keeps merge groups at 32.
const MAX_GROUP: usize = 64;

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
    let mut events = group_events(models, customer_id, as_of).await?;
    // Log order across the group's streams: the order the projector applied them in; a late
    // event re-folds its customer in event-time order, from these same events.
    events.sort_unstable_by_key(|event| event.position);
    let mut projection = Projection::new();
    projection
        .apply_page(&events, &rules, currency, &LogStreams(&events))
        .map_err(|needs| ApiError::Internal(format!("no stream for {}", needs.customer_id)))?;
    // Time advances to `as_of`, but no further than the read models have proven it has passed:
    // "as of now" is the live customer, not a guess at transitions the watermark has not
    // reached yet.
    let until = snapshot
        .watermark
        .map_or(as_of, |watermark| watermark.min(as_of));
    projection.tick(until, &rules);
    // Views keep only the length of their stage history; the transitions are the projection's
    // outbox, in the order they fired, less those retracted since.
    let history: Vec<Transition> = net_records(projection.take_transitions())
        .into_iter()
        .filter(|entry| &entry.customer_id == customer_id)
        .map(|entry| entry.transition)
        .collect();
    let view = projection.customer(customer_id).ok_or_else(not_found)?;
    Ok(detail(
        customer_id,
        view,
        &history,
        Snapshot {
            watermark: Some(until),
            ..snapshot
        },
    ))
}

/// The events up to `as_of` of every customer in `customer_id`'s merge group (see the module
/// documentation).
async fn group_events(
    models: &dyn ReadModels,
    customer_id: &CustomerId,
    as_of: DateTime<Utc>,
) -> Result<Vec<RecordedEvent>, ApiError> {
    let mut root = customer_id.clone();
    if let Some(store) = models.event_store() {
        for _ in 0..MAX_GROUP {
            match store.merged_into(&root).await? {
                Some(parent) => root = parent,
                None => break,
            }
        }
    }
    let mut events = Vec::new();
    let mut seen = HashSet::from([root.clone()]);
    let mut pending = vec![root];
    while let Some(member) = pending.pop() {
        let mut version = 0;
        loop {
            let page = models.stream(&member, version, PAGE).await?;
            let Some(last) = page.last() else { break };
            version = last.version;
            for event in page {
                // Members merged after `as_of` too: the customer asked for may be one of them.
                if let EventBody::CustomersMerged(merged) = &event.event.body
                    && seen.len() < MAX_GROUP
                    && seen.insert(merged.merged_customer_id.clone())
                {
                    pending.push(merged.merged_customer_id.clone());
                }
                if event.event.occurred_at <= as_of {
                    events.push(event);
                }
            }
        }
    }
    // The probability-alive models in force by then: the fold puts each in force at its place
    // in the log, as the projector did.
    let models_stream = CustomerId::clv();
    let mut version = 0;
    loop {
        let page = models.stream(&models_stream, version, PAGE).await?;
        let Some(last) = page.last() else { break };
        version = last.version;
        events.extend(page.into_iter().filter(|e| e.event.occurred_at <= as_of));
    }
    Ok(events)
}

/// The folded view as read-model rows, so that it converts like a live customer.
fn detail(
    customer_id: &CustomerId,
    view: &CustomerView,
    history: &[Transition],
    snapshot: Snapshot,
) -> CustomerDetail {
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
    let history = history
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
