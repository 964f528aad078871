//! Patron's projector core: folds the event log into read models and an outbox.
//!
//! A [`Projection`] keeps, per customer, a [`CustomerView`] (lifecycle from `patron-lifecycle`,
//! value from `patron-value`), the event-time watermark and the checkpoint (last applied
//! position). Events are read in position order, but each customer is folded in event-time
//! order: a late event re-folds its customer from its stream and publishes the difference as
//! corrections. Time-driven transitions fire from the watermark (the latest evidence of time in
//! the log less an allowed lateness), never from a wall clock, so a rebuild from position zero
//! yields exactly the views and outbox that live processing yielded, whatever the page sizes,
//! and every customer's history is the fold of its events in event-time order whatever order
//! they arrived in. Every transition becomes an [`OutboxEntry`] with a dedupe key that is stable
//! across replays. An adapter calls [`catch_up`] (or [`Projection::apply`] itself) and writes
//! the resulting [`Changes`] (views, outbox and checkpoint) in one transaction.
//!
//! Customers found to be one (`customers_merged`, written by the store) are projected as one:
//! the survivor's view combines everyone's, the merged customer's view is frozen with
//! [`CustomerView::merged_into`] set, and `customers_unmerged` splits them again (see
//! [`Projection`]).
//!
//! There is no SQL and no I/O here besides the [`EventStore`] port.

pub mod clv;
pub mod consent;
pub mod kpi;
mod leader;
pub mod p_alive;
mod port;
mod projection;
mod purchases;
mod rebuild;
mod reconcile;
mod relay;
mod runner;
mod scores;

pub use consent::Consents;
pub use kpi::{CustomerKpi, KpiKey, MonthActivity};
pub use port::{
    Generation, GenerationId, Lease, OutboxRecord, Publish, ReadModelError, ReadModelStore,
    Snapshot,
};
pub use projection::{
    Changes, CustomerView, LogStreams, NeedsStream, OutboxEntry, Projection, SourceHold, Streams,
    net_records,
};
pub use purchases::Purchases;
pub use rebuild::{Corrections, RebuildOptions, RebuildProgress, RebuildReport, rebuild};
pub use relay::{LifecyclePublisher, PublishError, RelayConfig, RelayError, relay_once, run_relay};
pub use runner::{
    Clock, LiveProjection, ProjectorConfig, Step, SystemClock, restore_from_log, run,
    sources_behind,
};
pub use scores::Scores;

use std::collections::HashMap;

use patron_domain::{Currency, CustomerId};
use patron_lifecycle::Rules;
use patron_store::{EventStore, RecordedEvent, StoreError};

/// Applies a page to `projection`, reading from `store` the stream of every customer that a
/// late event re-folds (see [`Projection::apply_page`]); returns how many events were new.
pub async fn apply_page_from(
    projection: &mut Projection,
    store: &dyn EventStore,
    page: &[RecordedEvent],
    rules: &Rules,
    currency: Currency,
) -> Result<usize, StoreError> {
    let Some(last) = page.last().map(|event| event.position) else {
        return Ok(0);
    };
    let mut streams: HashMap<CustomerId, Vec<RecordedEvent>> = HashMap::new();
    // One read for the customers already known to be late; those that become late within the
    // page are read one by one below.
    let candidates = projection.late_candidates(page);
    read_streams_into(store, &candidates, last, &mut streams).await?;
    let mut applied = 0;
    loop {
        match projection.apply_page(page, rules, currency, &streams) {
            Ok(n) => return Ok(applied + n),
            Err(needs) => {
                applied += needs.applied;
                let customer = std::slice::from_ref(&needs.customer_id);
                read_streams_into(store, customer, last, &mut streams).await?;
            }
        }
    }
}

/// Reads the streams of `customers` up to `up_to` into `streams` (an empty one for a customer
/// without events, so that it is not read again).
async fn read_streams_into(
    store: &dyn EventStore,
    customers: &[CustomerId],
    up_to: patron_store::Position,
    streams: &mut HashMap<CustomerId, Vec<RecordedEvent>>,
) -> Result<(), StoreError> {
    if customers.is_empty() {
        return Ok(());
    }
    for customer in customers {
        streams.entry(customer.clone()).or_default();
    }
    for event in store.read_streams(customers, up_to).await? {
        let stream = streams.entry(event.event.customer_id.clone()).or_default();
        stream.push(event);
    }
    Ok(())
}

/// Applies every event after the projection's checkpoint, reading `batch` events per page
/// (at least 1) until the store has no more, and returns the changes since the last take.
pub async fn catch_up(
    projection: &mut Projection,
    store: &dyn EventStore,
    rules: &Rules,
    currency: Currency,
    batch: usize,
) -> Result<Changes, StoreError> {
    let batch = batch.max(1);
    loop {
        let page = store.read_all(projection.checkpoint(), batch).await?;
        if page.is_empty() {
            break;
        }
        let before = projection.checkpoint();
        apply_page_from(projection, store, &page, rules, currency).await?;
        // A conforming store only returns positions after the checkpoint; this guards the loop
        // against one that does not.
        if projection.checkpoint() == before {
            break;
        }
    }
    Ok(projection.take_changes())
}
