//! The load of the soak: calls issued on an open-loop schedule with their latencies, live
//! events produced at a fixed rate, KPI and listing calls in turn, and lifecycle watch streams
//! that check every change arrives once and in order.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use patron_domain::ValidationPolicy;
use patron_kafka::Producer;
use patron_kafka::testing::TestRecord;
use patron_proto::api::v1::customer_service_client::CustomerServiceClient;
use patron_proto::api::v1::kpi_service_client::KpiServiceClient;
use patron_proto::api::v1::{
    DayRangeRequest, ListCustomersRequest, MonthRangeRequest, WatchLifecycleChangesRequest,
};
use patron_proto::lifecycle::v1::Stage;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::{INPUT, TOKEN};

/// A call without an answer after this long counts as an error.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Live events are produced in ticks of this length.
pub(crate) const PRODUCE_TICK: Duration = Duration::from_millis(10);

/// What one kind of call did.
#[derive(Default)]
pub(crate) struct Stats {
    /// Latency from the scheduled time, in microseconds, of every call that succeeded.
    pub(crate) latencies_us: Vec<u64>,
    pub(crate) errors: u64,
    pub(crate) first_errors: Vec<String>,
    pub(crate) last_done: Option<Instant>,
}

pub(crate) type Shared = Arc<Mutex<Stats>>;

impl Stats {
    pub(crate) fn record(&mut self, latency: Duration, result: Result<(), String>) {
        match result {
            Ok(()) => self
                .latencies_us
                .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX)),
            Err(error) => {
                self.errors += 1;
                if self.first_errors.len() < 5 {
                    self.first_errors.push(error);
                }
            }
        }
        self.last_done = Some(Instant::now());
    }
}

/// The `q` quantile of sorted latencies, in milliseconds.
pub(crate) fn quantile_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

pub(crate) fn authorized<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// Issues `call(k)` at `start + k / rate` for every slot before `end` whatever the earlier calls
/// are doing (open loop), records each call's latency from its scheduled time, and waits for the
/// calls in flight at the end. Returns how many calls were issued.
pub(crate) async fn pace<F, Fut>(
    rate: f64,
    start: Instant,
    end: Instant,
    stats: Shared,
    call: F,
) -> u64
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    if rate <= 0.0 {
        return 0;
    }
    let mut calls = JoinSet::new();
    let mut k = 0u64;
    loop {
        let scheduled = start + Duration::from_secs_f64(k as f64 / rate);
        if scheduled >= end {
            break;
        }
        tokio::time::sleep_until(scheduled.into()).await;
        let (future, stats) = (call(k), stats.clone());
        calls.spawn(async move {
            let result = tokio::time::timeout(CALL_TIMEOUT, future)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {CALL_TIMEOUT:?}")));
            stats.lock().unwrap().record(scheduled.elapsed(), result);
        });
        while let Some(done) = calls.try_join_next() {
            done.expect("a call task panicked");
        }
        k += 1;
    }
    while let Some(done) = calls.join_next().await {
        done.expect("a call task panicked");
    }
    k
}

/// The demo generator's records as Kafka records.
pub(crate) fn to_kafka(records: Vec<patron_demo::DemoRecord>) -> Vec<TestRecord> {
    records
        .into_iter()
        .map(|r| TestRecord {
            key: Some(r.key.into_bytes()),
            headers: vec![("content-type".into(), r.content_type.as_bytes().to_vec())],
            payload: r.payload,
        })
        .collect()
}

/// Produces live events at `rate` per second until `end`: each tick's records are sent at the
/// tick's scheduled time whatever earlier sends are doing, and acknowledged by the broker.
/// Returns the id of every event produced (all valid).
pub(crate) async fn produce_live(
    producer: Arc<Producer>,
    mut generator: patron_demo::Generator,
    rate: f64,
    (start, end): (Instant, Instant),
    stats: Shared,
    produced: Arc<AtomicU64>,
) -> HashSet<uuid::Uuid> {
    let mut ids = HashSet::new();
    let mut sends = JoinSet::new();
    let mut due_total = 0u64;
    let mut tick = 1u32;
    loop {
        let scheduled = start + PRODUCE_TICK * tick;
        if scheduled > end || rate <= 0.0 {
            break;
        }
        tokio::time::sleep_until(scheduled.into()).await;
        let due = ((PRODUCE_TICK * tick).as_secs_f64() * rate).floor() as u64 - due_total;
        tick += 1;
        if due == 0 {
            continue;
        }
        due_total += due;
        let now = Utc::now();
        let records = generator.live(due as usize, now);
        let events = patron_demo::into_events(records.clone(), &ValidationPolicy::at(now));
        assert_eq!(events.len(), records.len(), "live demo events are valid");
        for event in events {
            assert!(
                ids.insert(event.event_id),
                "event id {} twice",
                event.event_id
            );
        }
        let (records, producer) = (to_kafka(records), producer.clone());
        let (stats, produced) = (stats.clone(), produced.clone());
        sends.spawn(async move {
            let result = tokio::time::timeout(CALL_TIMEOUT, producer.send_all(INPUT, &records))
                .await
                .map_err(|_| format!("no acknowledgement within {CALL_TIMEOUT:?}"))
                .and_then(|sent| sent.map_err(|e| e.to_string()));
            if result.is_ok() {
                produced.fetch_add(records.len() as u64, Ordering::SeqCst);
            }
            stats.lock().unwrap().record(scheduled.elapsed(), result);
        });
        while let Some(done) = sends.try_join_next() {
            done.expect("a send task panicked");
        }
    }
    while let Some(done) = sends.join_next().await {
        done.expect("a send task panicked");
    }
    ids
}

/// What one watch stream saw.
#[derive(Debug, Default)]
pub(crate) struct Watched {
    pub(crate) last: u64,
    pub(crate) received: u64,
    pub(crate) opens: u64,
    pub(crate) errors: Vec<String>,
    /// Changes that did not follow the previous one (a gap or a repeat).
    pub(crate) out_of_order: Vec<String>,
}

/// Follows the lifecycle changes from the first one: resumes from the last change seen after an
/// error, and (with `reopen`) drops and reopens the stream that often. Ends once it has seen the
/// outbox id `done` is set to.
pub(crate) async fn follow_changes(
    channel: Channel,
    reopen: Option<Duration>,
    mut done: watch::Receiver<Option<u64>>,
    opens: Shared,
) -> Watched {
    let mut client = CustomerServiceClient::new(channel);
    let mut seen = Watched::default();
    loop {
        let finished = |seen: &Watched, done: &watch::Receiver<Option<u64>>| {
            done.borrow().is_some_and(|head| seen.last >= head)
        };
        if finished(&seen, &done) {
            return seen;
        }
        let opened = Instant::now();
        let mut request = authorized(WatchLifecycleChangesRequest {
            after_outbox_id: seen.last,
            to_stages: Vec::new(),
            ..Default::default()
        });
        // A stream lives longer than a call's deadline.
        request.metadata_mut().remove("grpc-timeout");
        let answer = tokio::time::timeout(CALL_TIMEOUT, client.watch_lifecycle_changes(request))
            .await
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer")));
        seen.opens += 1;
        let mut stream = match answer {
            Ok(answer) => {
                opens.lock().unwrap().record(opened.elapsed(), Ok(()));
                answer.into_inner()
            }
            Err(status) => {
                let error = format!("open after {}: {status}", seen.last);
                opens
                    .lock()
                    .unwrap()
                    .record(opened.elapsed(), Err(error.clone()));
                seen.errors.push(error);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let reopen_at = reopen.map(|every| tokio::time::Instant::now() + every);
        loop {
            tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(change)) => {
                        if change.outbox_id != seen.last + 1 {
                            seen.out_of_order.push(format!("{} after {}", change.outbox_id, seen.last));
                        }
                        seen.last = seen.last.max(change.outbox_id);
                        seen.received += 1;
                    }
                    Ok(None) => {
                        seen.errors.push(format!("the stream ended after {}", seen.last));
                        break;
                    }
                    Err(status) => {
                        seen.errors.push(format!("stream after {}: {status}", seen.last));
                        break;
                    }
                },
                () = async {
                    match reopen_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => break,
                changed = done.changed() => {
                    if changed.is_err() {
                        return seen;
                    }
                }
            }
            if finished(&seen, &done) {
                return seen;
            }
        }
    }
}

/// One KPI query, the `k`-th kind in turn.
pub(crate) async fn kpi_call(mut client: KpiServiceClient<Channel>, k: u64) -> Result<(), String> {
    let today = Utc::now().date_naive();
    let days = DayRangeRequest {
        from_day: (today - TimeDelta::days(30)).format("%Y-%m-%d").to_string(),
        to_day: today.format("%Y-%m-%d").to_string(),
        min_position: 0,
    };
    let months = MonthRangeRequest {
        from_month: (today - TimeDelta::days(365)).format("%Y-%m").to_string(),
        to_month: today.format("%Y-%m").to_string(),
        min_position: 0,
    };
    let result = match k % 7 {
        0 => client.stage_distribution(authorized(days)).await.map(drop),
        1 => client.stage_flows(authorized(days)).await.map(drop),
        2 => client.cohort_retention(authorized(months)).await.map(drop),
        3 => client.revenue_by_tier(authorized(months)).await.map(drop),
        4 => client.nps(authorized(months)).await.map(drop),
        5 => client.csat(authorized(months)).await.map(drop),
        _ => client.cac_by_channel(authorized(months)).await.map(drop),
    };
    result.map_err(|status| format!("KPI query {}: {status}", k % 7))
}

/// One `ListCustomers` page, filters and page size in turn.
pub(crate) async fn list_call(
    mut client: CustomerServiceClient<Channel>,
    k: u64,
) -> Result<(), String> {
    let stages = [
        Stage::Unspecified,
        Stage::New,
        Stage::Active,
        Stage::Loyal,
        Stage::AtRisk,
    ];
    let tiers = ["", "A", "B", "C"];
    let request = ListCustomersRequest {
        stage: stages[(k % 5) as usize] as i32,
        tier: tiers[(k / 5 % 4) as usize].into(),
        page_size: [10, 50, 200][(k % 3) as usize],
        ..Default::default()
    };
    let page = client
        .list_customers(authorized(request))
        .await
        .map_err(|status| format!("ListCustomers {k}: {status}"))?
        .into_inner();
    if page
        .customers
        .windows(2)
        .all(|w| w[0].customer_id < w[1].customer_id)
    {
        Ok(())
    } else {
        Err(format!(
            "ListCustomers {k}: a page out of customer id order"
        ))
    }
}
