//! A cache of `GetCustomer` answers, kept exact by the projector's change feed.
//!
//! Every commit of the active generation records which customers it wrote
//! (`customer_changes`, ids gapless and in commit order). A background task reads the feed every
//! `refresh` and drops exactly those customers; it drops everything when the active generation or
//! the CLV model version changes, when the feed has a hole (the task fell further behind than the
//! feed keeps), or when the database cannot be read.
//!
//! Correctness rests on two rules:
//!
//! - **Serve** a cached customer only for a request whose `min_position` the feed has been applied
//!   up to (`valid_through`); anything the feed has not reached goes to the database.
//! - **Insert** a customer read from the database only if it was read at a checkpoint at least
//!   `valid_through`, under the same generation and model as the feed state, and no reset happened
//!   while it was read (an epoch counter). Then every later change to it is still ahead in the
//!   feed and will drop it.
//!
//! Entries are answers as they go on the wire, converted once when read from the database. A
//! served customer is measured to the feed's watermark: nothing changed it since it was read, so
//! its state at the newer position is the same, and tenure and time in stage are re-measured to
//! the newer watermark as a fresh read would ([`Measures`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use patron_domain::CustomerId;
use patron_lifecycle::Rules;
use patron_proto::api::v1 as pb;
use patron_store::{EventStore, RecordedEvent};

use crate::convert::{self, Measures};
use crate::error::ApiError;
use crate::model::{
    ChangeHead, CustomerDetail, CustomerPage, CustomerQuery, Forecast, KpiQuery, KpiRows,
    OutboxRow, Snapshot,
};
use crate::read_models::ReadModels;

/// How the customer cache behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most customers kept (0 turns the cache off).
    pub capacity: usize,
    /// How often the change feed is read.
    pub refresh: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            capacity: 0,
            refresh: Duration::from_millis(100),
        }
    }
}

#[derive(Default)]
struct State {
    /// Bumped by every reset: a read that started under another epoch is not inserted.
    epoch: u64,
    /// What the feed has been applied up to; `None`: nothing is served or inserted.
    head: Option<ChangeHead>,
    entries: HashMap<String, Arc<Entry>>,
}

/// A cached customer: the answer as converted when it was read, and what to re-measure in it.
struct Entry {
    wire: pb::Customer,
    measures: Measures,
}

impl State {
    fn reset(&mut self, head: Option<ChangeHead>, reason: &'static str) {
        tracing::debug!(reason, "customer cache dropped");
        self.epoch = self.epoch.wrapping_add(1);
        self.entries.clear();
        self.head = head;
        metrics::counter!("patron_api_cache_resets_total").increment(1);
    }
}

/// [`ReadModels`] with `GetCustomer` answers cached; everything else goes to the inner read
/// models.
pub struct CachedReadModels {
    inner: Arc<dyn ReadModels>,
    state: Arc<Mutex<State>>,
    capacity: usize,
    refresher: tokio::task::JoinHandle<()>,
}

impl Drop for CachedReadModels {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state is consistent after every statement: a panic elsewhere cannot leave it torn.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl CachedReadModels {
    /// Wraps `inner` and starts reading its change feed (on the current tokio runtime). With a
    /// capacity of 0, returns `inner` unchanged.
    pub fn wrap(inner: Arc<dyn ReadModels>, config: CacheConfig) -> Arc<dyn ReadModels> {
        if config.capacity == 0 {
            return inner;
        }
        let state = Arc::new(Mutex::new(State::default()));
        let refresher = tokio::spawn(refresh(
            inner.clone(),
            Arc::downgrade(&state),
            config.refresh,
        ));
        Arc::new(Self {
            inner,
            state,
            capacity: config.capacity,
            refresher,
        })
    }

    /// The cached answer for `customer_id`, measured to the feed's watermark; otherwise the
    /// epoch to insert a database read under.
    fn cached(&self, customer_id: &str, min_position: u64) -> Result<pb::Customer, u64> {
        let (entry, watermark) = {
            let state = lock(&self.state);
            match (&state.head, state.entries.get(customer_id)) {
                (Some(head), Some(entry)) if head.checkpoint >= min_position => {
                    (entry.clone(), head.watermark)
                }
                _ => return Err(state.epoch),
            }
        };
        // Copied outside the lock: concurrent hits contend only for the lookup.
        let mut wire = entry.wire.clone();
        entry.measures.apply(&mut wire, watermark);
        Ok(wire)
    }

    /// Caches `wire`, the conversion of `detail`, if the read is fresh enough (see the module
    /// documentation).
    fn insert(&self, epoch: u64, detail: &CustomerDetail, wire: &pb::Customer) {
        let mut state = lock(&self.state);
        let fresh = state.epoch == epoch
            && state.head.as_ref().is_some_and(|head| {
                head.generation == detail.snapshot.generation
                    && detail.snapshot.checkpoint >= head.checkpoint
            });
        if !fresh {
            return;
        }
        if state.entries.len() >= self.capacity
            && !state.entries.contains_key(&detail.customer.customer_id)
        {
            // Evict an arbitrary entry: the map's iteration order is randomly keyed.
            if let Some(victim) = state.entries.keys().next().cloned() {
                state.entries.remove(&victim);
            }
        }
        state.entries.insert(
            detail.customer.customer_id.clone(),
            Arc::new(Entry {
                wire: wire.clone(),
                measures: Measures::of(detail),
            }),
        );
        metrics::gauge!("patron_api_cache_customers").set(state.entries.len() as f64);
    }
}

/// Applies the change feed every `refresh` until the cache is dropped.
async fn refresh(
    inner: Arc<dyn ReadModels>,
    state: std::sync::Weak<Mutex<State>>,
    every: Duration,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        // A panic in one refresh must not end the task: the cache would then serve what it
        // holds for ever, however the customers change. It is dropped instead, and the next
        // tick reads the feed afresh.
        let once = std::panic::AssertUnwindSafe(refresh_once(inner.as_ref(), &state));
        match futures::FutureExt::catch_unwind(once).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "customer cache: cannot read the change feed; cache dropped");
                lock(&state).reset(None, "the change feed cannot be read");
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(%message, "customer cache: the refresh panicked; cache dropped");
                metrics::counter!("patron_api_task_panics_total", "task" => "customer_cache")
                    .increment(1);
                lock(&state).reset(None, "the refresh panicked");
            }
        }
    }
}

async fn refresh_once(inner: &dyn ReadModels, state: &Mutex<State>) -> Result<(), ApiError> {
    let new = inner.change_head().await?;
    let old = lock(state).head.clone();
    let (Some(old), Some(new)) = (old, new.clone()) else {
        let mut state = lock(state);
        if state.head != new {
            state.reset(new, "active generation appeared or went");
        }
        return Ok(());
    };
    if old.generation != new.generation
        || old.model_version != new.model_version
        || new.changes_head < old.changes_head
    {
        lock(state).reset(Some(new), "new generation or model");
        return Ok(());
    }
    let records = if new.changes_head > old.changes_head {
        inner.changes(old.changes_head, new.changes_head).await?
    } else {
        Vec::new()
    };
    let mut state = lock(state);
    let contiguous = records
        .iter()
        .zip(old.changes_head + 1..)
        .all(|(record, expected)| record.id == expected)
        && i64::try_from(records.len()).ok() == Some(new.changes_head - old.changes_head);
    if !contiguous || state.head.as_ref() != Some(&old) {
        state.reset(Some(new), "a hole in the change feed");
        return Ok(());
    }
    for record in records {
        match record.customer_ids {
            Some(ids) => {
                for id in ids {
                    state.entries.remove(&id);
                }
            }
            None => {
                state.reset(Some(new.clone()), "too many changes to list");
                return Ok(());
            }
        }
    }
    metrics::gauge!("patron_api_cache_customers").set(state.entries.len() as f64);
    state.head = Some(new);
    Ok(())
}

#[async_trait]
impl ReadModels for CachedReadModels {
    async fn customer(&self, customer_id: &str) -> Result<Option<CustomerDetail>, ApiError> {
        self.inner.customer(customer_id).await
    }

    async fn customer_on_wire(
        &self,
        customer_id: &str,
        min_position: u64,
    ) -> Result<Option<pb::Customer>, ApiError> {
        let epoch = match self.cached(customer_id, min_position) {
            Ok(wire) => {
                metrics::counter!("patron_api_cache_hits_total").increment(1);
                return Ok(Some(wire));
            }
            Err(epoch) => epoch,
        };
        metrics::counter!("patron_api_cache_misses_total").increment(1);
        let Some(detail) = self.inner.customer(customer_id).await? else {
            return Ok(None);
        };
        let wire = convert::customer_detail(&detail)?;
        self.insert(epoch, &detail, &wire);
        Ok(Some(wire))
    }

    async fn customers(&self, query: &CustomerQuery) -> Result<CustomerPage, ApiError> {
        self.inner.customers(query).await
    }

    async fn ping(&self) -> Result<(), ApiError> {
        self.inner.ping().await
    }

    async fn kpis(&self, query: &KpiQuery) -> Result<KpiRows, ApiError> {
        self.inner.kpis(query).await
    }

    async fn position(&self) -> Result<u64, ApiError> {
        self.inner.position().await
    }

    async fn outbox(&self, after_id: i64, limit: u32) -> Result<Vec<OutboxRow>, ApiError> {
        self.inner.outbox(after_id, limit).await
    }

    async fn active(&self) -> Result<Option<(Snapshot, Rules)>, ApiError> {
        self.inner.active().await
    }

    async fn stream(
        &self,
        customer_id: &CustomerId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, ApiError> {
        self.inner.stream(customer_id, after_version, limit).await
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        self.inner.event_store()
    }

    async fn forecast_by_tier(&self) -> Result<Forecast, ApiError> {
        self.inner.forecast_by_tier().await
    }

    async fn change_head(&self) -> Result<Option<ChangeHead>, ApiError> {
        self.inner.change_head().await
    }

    async fn changes(
        &self,
        after_id: i64,
        up_to: i64,
    ) -> Result<Vec<crate::model::ChangeRecord>, ApiError> {
        self.inner.changes(after_id, up_to).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::model::{ChangeRecord, CustomerRow, HistoryRow};
    use chrono::{DateTime, TimeDelta, Utc};

    /// Read models whose every answer the test sets, counting customer reads.
    #[derive(Default)]
    struct Scripted {
        world: Mutex<World>,
    }

    #[derive(Default)]
    struct World {
        /// The database: customer → orders, and the generation's checkpoint.
        orders: HashMap<String, i64>,
        generation: i64,
        checkpoint: u64,
        model_version: Option<i64>,
        records: Vec<ChangeRecord>,
        reads: usize,
        down: bool,
        /// The next read of the change feed panics.
        panic_next: bool,
        /// Event time the projection has reached.
        watermark: Option<DateTime<Utc>>,
    }

    impl World {
        /// A projector commit that writes `ids`.
        fn commit(&mut self, ids: &[(&str, i64)]) {
            self.checkpoint += 10;
            for (id, orders) in ids {
                self.orders.insert((*id).to_owned(), *orders);
            }
            let id = self.records.last().map_or(1, |r| r.id + 1);
            self.records.push(ChangeRecord {
                id,
                customer_ids: Some(ids.iter().map(|(c, _)| (*c).to_owned()).collect()),
            });
        }
    }

    fn detail(id: &str, orders: i64, generation: i64, checkpoint: u64) -> CustomerDetail {
        CustomerDetail {
            snapshot: Snapshot {
                generation,
                currency: "EUR".into(),
                watermark: None,
                checkpoint,
            },
            customer: CustomerRow {
                customer_id: id.into(),
                stage: None,
                stage_since: None,
                orders,
                refunds: 0,
                gross_revenue_minor: 0,
                refunded_minor: 0,
                net_revenue_minor: 0,
                average_order_minor: None,
                first_purchase_at: Some(first_purchase()),
                last_purchase_at: None,
                last_event_at: None,
                rfm_r: None,
                rfm_f: None,
                rfm_m: None,
                rfm_segment: None,
                tier: None,
                consents: None,
                merged_into: None,
            },
            history: vec![HistoryRow {
                seq: 0,
                from_stage: None,
                to_stage: "new".into(),
                entered_at: first_purchase(),
                rule: "first_purchase".into(),
                facts: r#"{"orders":"1"}"#.into(),
            }],
            prediction: None,
        }
    }

    fn first_purchase() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    #[async_trait]
    impl ReadModels for Scripted {
        async fn customer(&self, id: &str) -> Result<Option<CustomerDetail>, ApiError> {
            let mut world = self.world.lock().unwrap();
            world.reads += 1;
            Ok(world.orders.get(id).map(|orders| {
                let mut detail = detail(id, *orders, world.generation, world.checkpoint);
                detail.snapshot.watermark = world.watermark;
                detail
            }))
        }
        async fn customers(&self, _: &CustomerQuery) -> Result<CustomerPage, ApiError> {
            unreachable!()
        }
        async fn ping(&self) -> Result<(), ApiError> {
            Ok(())
        }
        async fn kpis(&self, _: &KpiQuery) -> Result<KpiRows, ApiError> {
            unreachable!()
        }
        async fn position(&self) -> Result<u64, ApiError> {
            Ok(self.world.lock().unwrap().checkpoint)
        }
        async fn outbox(&self, _: i64, _: u32) -> Result<Vec<OutboxRow>, ApiError> {
            unreachable!()
        }
        async fn active(&self) -> Result<Option<(Snapshot, Rules)>, ApiError> {
            unreachable!()
        }
        async fn stream(
            &self,
            _: &CustomerId,
            _: u64,
            _: usize,
        ) -> Result<Vec<RecordedEvent>, ApiError> {
            unreachable!()
        }
        fn event_store(&self) -> Option<Arc<dyn EventStore>> {
            None
        }
        async fn change_head(&self) -> Result<Option<ChangeHead>, ApiError> {
            let mut world = self.world.lock().unwrap();
            if std::mem::take(&mut world.panic_next) {
                drop(world);
                panic!("injected: the change feed read panics");
            }
            if world.down {
                return Err(ApiError::Unavailable("down".into()));
            }
            Ok(Some(ChangeHead {
                generation: world.generation,
                checkpoint: world.checkpoint,
                watermark: world.watermark,
                changes_head: world.records.last().map_or(0, |r| r.id),
                model_version: world.model_version,
            }))
        }
        async fn changes(&self, after: i64, up_to: i64) -> Result<Vec<ChangeRecord>, ApiError> {
            let world = self.world.lock().unwrap();
            Ok(world
                .records
                .iter()
                .filter(|r| r.id > after && r.id <= up_to)
                .cloned()
                .collect())
        }
    }

    /// A cache without its background task: the test applies the feed itself.
    fn cache(inner: &Arc<Scripted>) -> CachedReadModels {
        CachedReadModels {
            inner: inner.clone(),
            state: Arc::new(Mutex::new(State::default())),
            capacity: 2,
            refresher: tokio::spawn(async {}),
        }
    }

    async fn orders(cache: &CachedReadModels, id: &str, min_position: u64) -> i64 {
        cache
            .customer_on_wire(id, min_position)
            .await
            .unwrap()
            .unwrap()
            .value
            .unwrap()
            .orders
    }

    fn insert(cache: &CachedReadModels, epoch: u64, detail: &CustomerDetail) {
        cache.insert(epoch, detail, &convert::customer_detail(detail).unwrap());
    }

    fn reads(inner: &Scripted) -> usize {
        inner.world.lock().unwrap().reads
    }

    async fn apply(cache: &CachedReadModels) {
        refresh_once(cache.inner.as_ref(), &cache.state)
            .await
            .unwrap();
    }

    /// The background refresher survives a panic: a customer changed after it is not served
    /// stale from the cache.
    #[tokio::test]
    async fn a_panicking_refresh_leaves_the_cache_refreshing() {
        let inner = Arc::new(Scripted::default());
        inner.world.lock().unwrap().commit(&[("a", 1)]);
        let cache = CachedReadModels::wrap(
            inner.clone(),
            CacheConfig {
                capacity: 10,
                refresh: Duration::from_millis(10),
            },
        );
        let orders = |cache: Arc<dyn ReadModels>| async move {
            cache
                .customer_on_wire("a", 0)
                .await
                .unwrap()
                .unwrap()
                .value
                .unwrap()
                .orders
        };
        // Cached once the feed was read.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            assert_eq!(orders(cache.clone()).await, 1);
            let before = reads(&inner);
            assert_eq!(orders(cache.clone()).await, 1);
            if reads(&inner) == before {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "never cached");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        inner.world.lock().unwrap().panic_next = true;
        while inner.world.lock().unwrap().panic_next {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        inner.world.lock().unwrap().commit(&[("a", 2)]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while orders(cache.clone()).await != 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "served stale after the refresh panicked"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn changed_customers_are_dropped_and_others_stay_cached() {
        let inner = Arc::new(Scripted::default());
        inner.world.lock().unwrap().commit(&[("a", 1), ("b", 1)]);
        let cache = cache(&inner);
        // Before the feed is read nothing is cached.
        assert_eq!(orders(&cache, "a", 0).await, 1);
        assert_eq!(orders(&cache, "a", 0).await, 1);
        assert_eq!(reads(&inner), 2);
        apply(&cache).await;
        assert_eq!(orders(&cache, "a", 0).await, 1);
        assert_eq!(orders(&cache, "b", 0).await, 1);
        assert_eq!(reads(&inner), 4);
        assert_eq!(orders(&cache, "a", 0).await, 1);
        assert_eq!(orders(&cache, "b", 0).await, 1);
        assert_eq!(reads(&inner), 4, "served from the cache");

        inner.world.lock().unwrap().commit(&[("a", 2)]);
        // The feed is not applied yet: a request that asks for the new position reads the
        // database, one that does not may get the cached value.
        let head = inner.world.lock().unwrap().checkpoint;
        assert_eq!(orders(&cache, "a", head).await, 2);
        assert_eq!(reads(&inner), 5);
        apply(&cache).await;
        assert_eq!(orders(&cache, "a", 0).await, 2, "a was dropped");
        assert_eq!(orders(&cache, "b", head).await, 1, "b is still valid");
        assert_eq!(reads(&inner), 6);
        assert_eq!(orders(&cache, "a", head).await, 2);
        assert_eq!(reads(&inner), 6);
        // Unknown customers are not cached.
        assert!(cache.customer_on_wire("zz", 0).await.unwrap().is_none());
        assert!(cache.customer_on_wire("zz", 0).await.unwrap().is_none());
        assert_eq!(reads(&inner), 8);
    }

    #[tokio::test]
    async fn a_cached_customer_is_measured_to_the_watermark_of_the_feed() {
        let inner = Arc::new(Scripted::default());
        let start = first_purchase() + TimeDelta::days(3);
        {
            let mut world = inner.world.lock().unwrap();
            world.watermark = Some(start);
            world.commit(&[("a", 1)]);
        }
        let cache = cache(&inner);
        apply(&cache).await;
        let fresh = |inner: &Scripted| {
            let world = inner.world.lock().unwrap();
            let mut detail = detail("a", 1, world.generation, world.checkpoint);
            detail.snapshot.watermark = world.watermark;
            convert::customer_detail(&detail).unwrap()
        };
        let first = cache.customer_on_wire("a", 0).await.unwrap().unwrap();
        assert_eq!(first, fresh(&inner));
        // Time passes; another customer changes, "a" does not and stays cached.
        {
            let mut world = inner.world.lock().unwrap();
            world.watermark = Some(start + TimeDelta::days(40));
            world.commit(&[("b", 1)]);
        }
        apply(&cache).await;
        let before = reads(&inner);
        let later = cache.customer_on_wire("a", 0).await.unwrap().unwrap();
        assert_eq!(reads(&inner), before, "served from the cache");
        assert_eq!(later, fresh(&inner));
        assert_eq!(later.value.unwrap().tenure_days, 43);
        assert_eq!(later.stage_history[0].seconds_in_stage, 43 * 86_400);
    }

    #[tokio::test]
    async fn a_read_older_than_the_applied_feed_is_not_inserted() {
        let inner = Arc::new(Scripted::default());
        inner.world.lock().unwrap().commit(&[("a", 1)]);
        let cache = cache(&inner);
        apply(&cache).await;
        // A read that happened at the old checkpoint, inserted after the feed moved past a
        // change to it, would be stale: the insert must be refused.
        let epoch = cache.cached("a", 0).unwrap_err();
        let stale = detail("a", 1, 0, inner.world.lock().unwrap().checkpoint);
        inner.world.lock().unwrap().commit(&[("a", 2)]);
        apply(&cache).await;
        insert(&cache, epoch, &stale);
        assert_eq!(orders(&cache, "a", 0).await, 2);
        // And a read that started before a reset is refused too.
        let epoch = cache.cached("b", 0).unwrap_err();
        inner.world.lock().unwrap().model_version = Some(1);
        apply(&cache).await;
        let head = inner.world.lock().unwrap().checkpoint;
        insert(&cache, epoch, &detail("b", 9, 0, head));
        inner.world.lock().unwrap().orders.insert("b".into(), 3);
        assert_eq!(orders(&cache, "b", 0).await, 3);
    }

    #[tokio::test]
    async fn everything_is_dropped_on_a_new_generation_model_hole_or_outage() {
        let inner = Arc::new(Scripted::default());
        inner.world.lock().unwrap().commit(&[("a", 1)]);
        let cache = cache(&inner);
        apply(&cache).await;
        let cached = |cache: &CachedReadModels| lock(&cache.state).entries.len();

        let fill = async |cache: &CachedReadModels| {
            orders(cache, "a", 0).await;
            assert_eq!(cached(cache), 1);
        };
        fill(&cache).await;
        inner.world.lock().unwrap().generation = 2;
        apply(&cache).await;
        assert_eq!(cached(&cache), 0, "new generation");

        fill(&cache).await;
        inner.world.lock().unwrap().model_version = Some(7);
        apply(&cache).await;
        assert_eq!(cached(&cache), 0, "new model version");

        fill(&cache).await;
        {
            // Two commits, the first of which was pruned before the cache read it.
            let mut world = inner.world.lock().unwrap();
            world.commit(&[("x", 1)]);
            world.commit(&[("y", 1)]);
            let len = world.records.len();
            world.records.remove(len - 2);
        }
        apply(&cache).await;
        assert_eq!(cached(&cache), 0, "a hole in the feed");

        fill(&cache).await;
        {
            let mut world = inner.world.lock().unwrap();
            world.commit(&[]);
            world.records.last_mut().unwrap().customer_ids = None;
        }
        apply(&cache).await;
        assert_eq!(cached(&cache), 0, "too many to list");

        fill(&cache).await;
        inner.world.lock().unwrap().down = true;
        assert!(
            refresh_once(cache.inner.as_ref(), &cache.state)
                .await
                .is_err()
        );
        // The background task resets on error; do what it does.
        lock(&cache.state).reset(None, "test");
        assert_eq!(cached(&cache), 0);
        inner.world.lock().unwrap().orders.insert("a".into(), 5);
        assert_eq!(
            orders(&cache, "a", 0).await,
            5,
            "nothing served without a feed"
        );
    }

    #[tokio::test]
    async fn capacity_is_bounded() {
        let inner = Arc::new(Scripted::default());
        inner
            .world
            .lock()
            .unwrap()
            .commit(&[("a", 1), ("b", 1), ("c", 1)]);
        let cache = cache(&inner);
        apply(&cache).await;
        for id in ["a", "b", "c", "a", "b", "c"] {
            orders(&cache, id, 0).await;
            assert!(lock(&cache.state).entries.len() <= 2);
        }
    }
}
