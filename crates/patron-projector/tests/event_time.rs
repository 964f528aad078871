//! Lifecycle histories are a function of each customer's events in event-time order, never of
//! the order they arrive in.
//!
//! Generated populations (customers with habits, two years of purchases, visits, survey answers
//! and refunds) are delivered in many arrival orders — one event per append in time order,
//! import-sized batches, random shuffles, four partitions read at different speeds with lags of
//! up to 90 days, events late by months, re-sent duplicates — and projected with several page
//! sizes. The oracle is written here, apart from the projector: each customer's events sorted by
//! time (then id) and folded one by one with the lifecycle engine, then advanced to the same
//! final time. Every arrival order must give the oracle's stage histories (in the views and as
//! the net of the published records, retractions applied), and the same KPI counters, which for
//! stage flows and NPS by stage at answer time are recomputed from the oracle too.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Generated times are days as fractions, a few years of seconds: far inside i64.
#![allow(clippy::cast_possible_truncation)]

mod support;

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use patron_domain::{CustomerId, Event, EventBody, PartitionProgress, SourceProgress, Tick};
use patron_lifecycle::{CustomerLifecycle, Rules, Stage, Transition};
use patron_projector::{KpiKey, OutboxEntry, Projection, catch_up, kpi, net_records};
use patron_store::contract::customer;
use patron_store::{AppendBatch, EventStore, ExpectedVersion, InMemoryEventStore, StreamAppend};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use support::*;

/// The first instant of the generated history.
fn origin() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
}

/// A tick at this time ends every log, so all projections end at the same watermark (and score
/// the whole population on the same day).
fn the_end() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
}

/// A population of `customers` with habits over two years, in time order.
fn population(rng: &mut StdRng, customers: usize) -> Vec<Event> {
    let mut script = Script::default();
    let horizon = 730;
    for c in 0..customers {
        let who = format!("c{c:03}");
        let at = |day: f64| origin() + TimeDelta::seconds((day * 86_400.0) as i64);
        let mut t = rng.random_range(0.0..300.0);
        script.visit(&who, at(t - 1.0));
        let gap = [5.0, 12.0, 25.0, 45.0, 90.0][rng.random_range(0..5)];
        // Some stop buying for good, some come back after a long silence.
        let stop = if rng.random_bool(0.5) {
            rng.random_range(t..f64::from(horizon))
        } else {
            f64::from(horizon)
        };
        let comeback = rng
            .random_bool(0.3)
            .then(|| stop + rng.random_range(100.0..250.0));
        let one_off = rng.random_bool(0.15);
        while t < f64::from(horizon) {
            if t < stop || comeback.is_some_and(|back| t >= back) {
                let index = script.len();
                script.purchase(&who, at(t), rng.random_range(500..40_000));
                if rng.random_bool(0.05) {
                    script.refund_order(&who, at(t + 2.0), index, 500);
                }
                if one_off {
                    break;
                }
            }
            if rng.random_bool(0.3) {
                script.visit(&who, at(t + rng.random_range(0.0..gap)));
            }
            if rng.random_bool(0.15) {
                let nps = rng.random_range(0..=10);
                script.feedback(&who, at(t + rng.random_range(0.0..gap)), nps, 3);
            }
            t += gap * rng.random_range(0.5..1.5);
        }
    }
    let mut events = script.into_events();
    events.retain(|e| e.occurred_at >= origin());
    events.sort_by_key(|e| (e.occurred_at, e.event_id));
    events
}

/// How the events reach the store: the order, and how many per append.
struct Arrival {
    name: String,
    events: Vec<Event>,
    batch: usize,
    /// Whether the watermark can know enough that nothing published needs correcting: events
    /// in time order, or partitions whose progress ingest reports.
    needs_no_correction: bool,
}

/// Four partitions (by customer) read at different speeds, no partition more than `max_lag`
/// behind the furthest one read, with about 2 % of records delivered twice. With `progress`,
/// what ingest reports goes with them, as it does: a hold on every partition before anything
/// is read (they are assigned with records to read), and after each fetch the fetched
/// partition's progress (its latest event time, and whether records are left in it).
fn partitions(
    rng: &mut StdRng,
    sorted: &[Event],
    max_lag: TimeDelta,
    progress: bool,
) -> Vec<Event> {
    let mut queues: Vec<std::collections::VecDeque<Event>> = vec![Default::default(); 4];
    for event in sorted {
        let p = event
            .customer_id
            .as_str()
            .bytes()
            .map(usize::from)
            .sum::<usize>()
            % 4;
        queues[p].push_back(event.clone());
    }
    let weights = [1.0, 2.0, 5.0, 12.0];
    let mut out: Vec<Event> = Vec::new();
    let mut reports = 0_u128;
    let mut report = |out: &mut Vec<Event>, partitions: Vec<PartitionProgress>| {
        reports += 1;
        out.push(Event {
            event_id: uuid::Uuid::from_u128((1 << 100) + reports),
            customer_id: CustomerId::sources(),
            occurred_at: the_end(),
            source: "patron-ingest".into(),
            body: EventBody::SourceProgress(SourceProgress { partitions }),
        });
    };
    let progress_of =
        |partition: usize, read_to: Option<DateTime<Utc>>, behind: bool| PartitionProgress {
            topic: "customer-events".into(),
            partition: i32::try_from(partition).unwrap(),
            read_to,
            behind,
        };
    if progress {
        report(
            &mut out,
            (0..4).map(|p| progress_of(p, None, true)).collect(),
        );
    }
    let mut furthest = origin();
    while queues.iter().any(|q| !q.is_empty()) {
        let lagging = (0..4).find(|&p| {
            queues[p]
                .front()
                .is_some_and(|e| furthest - e.occurred_at > max_lag)
        });
        let p = lagging.unwrap_or_else(|| {
            loop {
                let total: f64 = weights.iter().sum();
                let mut pick = rng.random_range(0.0..total);
                let mut chosen = 0;
                for (i, w) in weights.iter().enumerate() {
                    if pick < *w {
                        chosen = i;
                        break;
                    }
                    pick -= w;
                }
                if !queues[chosen].is_empty() {
                    break chosen;
                }
            }
        });
        // A fetch hands over several records of one partition.
        for _ in 0..rng.random_range(1..40) {
            let Some(event) = queues[p].pop_front() else {
                break;
            };
            furthest = furthest.max(event.occurred_at);
            if rng.random_bool(0.02) {
                out.push(event.clone());
            }
            out.push(event);
        }
        if progress {
            let read_to = out
                .iter()
                .rev()
                .find(|e| !e.customer_id.is_reserved())
                .map(|e| e.occurred_at);
            let behind = !queues[p].is_empty();
            report(&mut out, vec![progress_of(p, read_to, behind)]);
        }
    }
    out
}

/// The arrival orders every population is delivered in.
fn arrivals(rng: &mut StdRng, sorted: &[Event]) -> Vec<Arrival> {
    let mut shuffled = sorted.to_vec();
    shuffled.shuffle(rng);
    // About a tenth of the events held back by one to five months of event time.
    let mut late: Vec<(DateTime<Utc>, Event)> = sorted
        .iter()
        .map(|e| {
            let delay = if rng.random_bool(0.1) {
                TimeDelta::days(rng.random_range(30..150))
            } else {
                TimeDelta::zero()
            };
            (e.occurred_at + delay, e.clone())
        })
        .collect();
    late.sort_by_key(|(arrives, e)| (*arrives, e.event_id));
    let late: Vec<Event> = late.into_iter().map(|(_, e)| e).collect();
    let mut backfill = sorted.to_vec();
    backfill.reverse();
    vec![
        Arrival {
            name: "time order, one per append".into(),
            events: sorted.to_vec(),
            batch: 1,
            needs_no_correction: true,
        },
        Arrival {
            name: "time order, import batches of 500".into(),
            events: sorted.to_vec(),
            batch: 500,
            needs_no_correction: false,
        },
        Arrival {
            name: "random shuffle, batches of 100".into(),
            events: shuffled,
            batch: 100,
            needs_no_correction: false,
        },
        Arrival {
            name: "four partitions, lag up to 90 days, duplicates".into(),
            events: partitions(rng, sorted, TimeDelta::days(90), false),
            batch: 250,
            needs_no_correction: false,
        },
        Arrival {
            name: "four partitions, lag up to 90 days, duplicates, progress reported".into(),
            events: partitions(rng, sorted, TimeDelta::days(90), true),
            batch: 250,
            needs_no_correction: true,
        },
        Arrival {
            name: "a tenth late by 1-5 months, batches of 37".into(),
            events: late,
            batch: 37,
            needs_no_correction: false,
        },
        Arrival {
            name: "newest first, batches of 1000".into(),
            events: backfill,
            batch: 1000,
            needs_no_correction: false,
        },
    ]
}

/// What a projection of one arrival order ended with.
struct Projected {
    projection: Projection,
    outbox: Vec<OutboxEntry>,
    kpis: BTreeMap<KpiKey, i64>,
}

async fn project(arrival: &Arrival, page: usize) -> Projected {
    let store = InMemoryEventStore::new();
    for batch in arrival.events.chunks(arrival.batch) {
        // As ingest stores them: progress read before a batch's first event (a hold) before
        // its events, the rest (updates) after them.
        let is_progress = |e: &Event| e.customer_id == CustomerId::sources();
        let leading = batch.iter().take_while(|e| is_progress(e)).count();
        let (hold, rest) = batch.split_at(leading);
        let (update, events): (Vec<Event>, Vec<Event>) =
            rest.iter().cloned().partition(is_progress);
        let progress = |events: Vec<Event>| StreamAppend {
            customer_id: CustomerId::sources(),
            expected: ExpectedVersion::Any,
            events,
        };
        let mut append = AppendBatch::from_events(events);
        if !hold.is_empty() {
            append.streams.insert(0, progress(hold.to_vec()));
        }
        if !update.is_empty() {
            append.streams.push(progress(update));
        }
        store.append(&append).await.unwrap();
    }
    let tick = Event {
        event_id: uuid::Uuid::from_u128(u128::MAX),
        customer_id: CustomerId::clock(),
        occurred_at: the_end(),
        source: "patron".into(),
        body: EventBody::Tick(Tick {}),
    };
    let batch = AppendBatch::single(CustomerId::clock(), ExpectedVersion::Any, vec![tick]);
    store.append(&batch).await.unwrap();
    let rules = Rules::default();
    let mut projection = Projection::new();
    let mut outbox = Vec::new();
    let mut kpis = BTreeMap::new();
    let changes = catch_up(&mut projection, &store, &rules, usd(), page)
        .await
        .unwrap();
    outbox.extend(changes.outbox);
    add_kpis(&mut kpis, changes.kpis);
    Projected {
        projection,
        outbox,
        kpis,
    }
}

/// The oracle: one customer's events folded one by one in event-time order (ties by id), then
/// advanced to `until`. Returns the state, the history, and the stage after each event.
fn oracle(
    events: &[&Event],
    until: DateTime<Utc>,
) -> (CustomerLifecycle, Vec<Transition>, Vec<Option<Stage>>) {
    let rules = Rules::default();
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| (e.occurred_at, e.event_id));
    let mut state = CustomerLifecycle::new();
    let mut history = Vec::new();
    let mut stages = Vec::new();
    for event in &sorted {
        history.extend(patron_lifecycle::apply(&mut state, event, &rules));
        stages.push(state.stage);
    }
    history.extend(patron_lifecycle::advance(&mut state, until, &rules));
    (state, history, stages)
}

/// The oracle's stage-flow and NPS counters, recomputed from raw events and oracle histories.
fn oracle_kpis(events: &[Event], until: DateTime<Utc>) -> BTreeMap<KpiKey, i64> {
    let mut by_customer: BTreeMap<&CustomerId, Vec<&Event>> = BTreeMap::new();
    for event in events {
        by_customer
            .entry(&event.customer_id)
            .or_default()
            .push(event);
    }
    let mut out: BTreeMap<KpiKey, i64> = BTreeMap::new();
    let mut add = |key: KpiKey| *out.entry(key).or_insert(0) += 1;
    for events in by_customer.values() {
        let (_, history, stages) = oracle(events, until);
        for t in &history {
            add(KpiKey {
                metric: kpi::STAGE_FLOW,
                period: kpi::day(t.at),
                dim1: t.from.map_or("none", Stage::as_str).to_owned(),
                dim2: t.to.as_str().to_owned(),
            });
        }
        let mut sorted = events.clone();
        sorted.sort_by_key(|e| (e.occurred_at, e.event_id));
        for (event, stage) in sorted.iter().zip(stages) {
            if let EventBody::Feedback(feedback) = &event.body
                && let Some(nps) = feedback.nps
            {
                let bucket = match nps {
                    9.. => "promoter",
                    7..=8 => "passive",
                    _ => "detractor",
                };
                add(KpiKey {
                    metric: kpi::NPS,
                    period: kpi::month(event.occurred_at),
                    dim1: stage.map_or("none", Stage::as_str).to_owned(),
                    dim2: bucket.to_owned(),
                });
            }
        }
    }
    out
}

/// The counters whose values differ, with both values.
fn differences(a: &BTreeMap<KpiKey, i64>, b: &BTreeMap<KpiKey, i64>) -> Vec<(KpiKey, i64, i64)> {
    a.keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter_map(|k| {
            let (x, y) = (
                a.get(k).copied().unwrap_or(0),
                b.get(k).copied().unwrap_or(0),
            );
            (x != y).then(|| (k.clone(), x, y))
        })
        .collect()
}

fn only(kpis: &BTreeMap<KpiKey, i64>, metrics: &[&str]) -> BTreeMap<KpiKey, i64> {
    kpis.iter()
        .filter(|(k, _)| metrics.contains(&k.metric))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// Checks one projection against the oracle; `what` names it in failures.
fn check_against_oracle(sorted: &[Event], projected: &Projected, what: &str) {
    let (_, mismatches) = projected.projection.refold_counts();
    assert_eq!(
        mismatches, 0,
        "{what}: a re-fold found a view that was not the log's"
    );
    let mut by_customer: BTreeMap<&CustomerId, Vec<&Event>> = BTreeMap::new();
    for event in sorted {
        by_customer
            .entry(&event.customer_id)
            .or_default()
            .push(event);
    }
    let net = net_records(projected.outbox.iter().cloned());
    let until = projected.projection.watermark().unwrap();
    assert_eq!(until, the_end() - Rules::default().allowed_lateness());
    for (customer, events) in &by_customer {
        let (state, history, _) = oracle(events, until);
        let view = projected
            .projection
            .customer(customer)
            .unwrap_or_else(|| panic!("{what}: {customer} has no view"));
        assert_eq!(
            (view.lifecycle.stage, view.lifecycle.since),
            (state.stage, state.since),
            "{what}: {customer}'s stage differs from the event-time fold"
        );
        assert_eq!(
            view.lifecycle.transitions(),
            history.len(),
            "{what}: {customer}'s history length"
        );
        let mut published: Vec<&OutboxEntry> =
            net.iter().filter(|e| e.customer_id == **customer).collect();
        published.sort_by_key(|e| e.seq);
        let seqs: Vec<usize> = published.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (0..history.len()).collect::<Vec<_>>(),
            "{what}: {customer}'s net published records are its history, once each"
        );
        let transitions: Vec<&Transition> = published.iter().map(|e| &e.transition).collect();
        assert_eq!(
            transitions,
            history.iter().collect::<Vec<_>>(),
            "{what}: {customer}'s net published history differs from the event-time fold"
        );
    }
    let metrics = [kpi::STAGE_FLOW, kpi::NPS];
    let differences = differences(
        &only(&projected.kpis, &metrics),
        &oracle_kpis(sorted, until),
    );
    assert!(
        differences.is_empty(),
        "{what}: stage flows and NPS by stage differ from the oracle's (projected, oracle): \
         {differences:?}"
    );
}

#[tokio::test]
async fn every_arrival_order_gives_the_event_time_fold() {
    let mut unreported_corrections = 0;
    for seed in 0..4_u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let sorted = population(&mut rng, 24);
        let mut baseline: Option<BTreeMap<KpiKey, i64>> = None;
        for arrival in arrivals(&mut rng, &sorted) {
            for page in [1_usize, 64, 10_000] {
                let what = format!("seed {seed}, {}, pages of {page}", arrival.name);
                let projected = project(&arrival, page).await;
                check_against_oracle(&sorted, &projected, &what);
                let corrections = projected
                    .outbox
                    .iter()
                    .filter(|e| e.retracts.is_some())
                    .count();
                if arrival.needs_no_correction {
                    assert_eq!(
                        corrections, 0,
                        "{what}: events in time order, or partitions whose progress is \
                         reported, need no correction"
                    );
                }
                if arrival.name == "four partitions, lag up to 90 days, duplicates" {
                    unreported_corrections += corrections;
                }
                match &baseline {
                    None => baseline = Some(projected.kpis.clone()),
                    Some(kpis) => {
                        let differences = differences(&projected.kpis, kpis);
                        assert!(
                            differences.is_empty(),
                            "{what}: KPI counters differ from time order's: {differences:?}"
                        );
                    }
                }
            }
        }
    }
    // The same partitioned arrival without progress reports does need corrections: what the
    // reports spare is real.
    assert!(
        unreported_corrections > 0,
        "partitions read at different speeds, unreported, publish corrections"
    );
}

#[tokio::test]
async fn a_late_purchase_retracts_the_churn_it_disproves_and_publishes_the_replacement() {
    let mut s = Script::default();
    // A weekly buyer whose purchases of March arrive only after the watermark passed them.
    for week in 0..8 {
        s.purchase("weekly", plus_days(day(1, 6), 7 * week), 4_000);
    }
    let march: Vec<i64> = (0..4).map(|w| 56 + 7 * w).collect();
    for offset in &march {
        s.purchase("weekly", plus_days(day(1, 6), *offset), 4_000);
    }
    s.visit("other", day(6, 1));
    let mut log = s.into_log();
    // Move the March purchases after the other customer's visit in June.
    let late: Vec<Event> = log.drain(8..12).collect();
    log.extend(late);
    let store = store_with(&log).await;
    let out = replay(&store, 3).await;

    let retractions: Vec<&OutboxEntry> =
        out.outbox.iter().filter(|e| e.retracts.is_some()).collect();
    assert!(
        retractions
            .iter()
            .any(|e| e.transition.to == Stage::Churned && e.customer_id == customer("weekly")),
        "the churn published before the March purchases arrived is retracted: {retractions:?}"
    );
    for retraction in &retractions {
        let key = retraction.retracts.as_deref().unwrap();
        let original = out
            .outbox
            .iter()
            .find(|e| e.dedupe_key == key)
            .unwrap_or_else(|| panic!("a retraction names a published record: {key}"));
        assert_eq!(original.transition, retraction.transition);
        assert_eq!(original.seq, retraction.seq);
    }
    let keys: std::collections::HashSet<&str> =
        out.outbox.iter().map(|e| e.dedupe_key.as_str()).collect();
    assert_eq!(keys.len(), out.outbox.len(), "dedupe keys are unique");
    // The net history is the one the events give in time order.
    let mut sorted = log.clone();
    sorted.sort_by_key(|e| (e.occurred_at, e.event_id));
    let weekly: Vec<&Event> = sorted
        .iter()
        .filter(|e| e.customer_id == customer("weekly"))
        .collect();
    let (_, history, _) = oracle(&weekly, out.watermark.unwrap());
    let net: Vec<Transition> = net_records(out.outbox.iter().cloned())
        .into_iter()
        .filter(|e| e.customer_id == customer("weekly"))
        .map(|e| e.transition)
        .collect();
    assert_eq!(net, history);
    let last_purchase = plus_days(day(1, 6), 77);
    assert!(
        !history
            .iter()
            .any(|t| t.to == Stage::Churned && t.at < last_purchase),
        "no churn while the customer was buying weekly: {history:?}"
    );
}

#[tokio::test]
async fn a_future_dated_event_moves_no_other_customer() {
    let now = Utc::now();
    let rules = Rules::default();
    // A customer whose at-risk deadline falls twelve hours from now.
    let mut s = Script::default();
    let gap = TimeDelta::days(10);
    let last = now - gap * 2 + TimeDelta::hours(12);
    s.purchase("steady", last - gap * 2, 4_000);
    s.purchase("steady", last - gap, 4_000);
    s.purchase("steady", last, 4_000);
    s.visit("clock", now - TimeDelta::minutes(5));
    let honest = s.into_log();
    let mut skewed = honest.clone();
    let mut future = honest[3].clone();
    future.event_id = uuid::Uuid::from_u128(99);
    future.customer_id = customer("skewed");
    future.occurred_at = now + TimeDelta::hours(23);
    skewed.push(future);

    let mut outcomes = Vec::new();
    for log in [&honest, &skewed] {
        // The in-memory store stamps each event with the moment it is appended.
        let store = InMemoryEventStore::new();
        append_each(&store, log).await;
        let mut projection = Projection::new();
        catch_up(&mut projection, &store, &rules, usd(), 100)
            .await
            .unwrap();
        let view = projection.customer(&customer("steady")).unwrap().clone();
        outcomes.push((view.lifecycle.stage, projection.watermark()));
    }
    assert_eq!(outcomes[0].0, Some(Stage::Active), "not at risk yet");
    assert_eq!(
        outcomes[1].0, outcomes[0].0,
        "an event dated 23 hours ahead moved another customer"
    );
    assert!(
        outcomes[1].1 <= Some(Utc::now()),
        "the watermark never passes the store's clock"
    );
}
