//! The live side of the API on SQLite and PostgreSQL: the lifecycle watch stream (follow,
//! resume, filter), read-your-writes with `min_position`, and "as of" reconstruction.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use patron_domain::{CustomerId, EventBody};
use patron_proto::api::v1 as pb;
use patron_proto::api::v1::customer_service_client::CustomerServiceClient;
use patron_proto::lifecycle::v1::{LifecycleChanged, Stage as PbStage};
use support::{Bearer, Db, TOKEN, fetch, start_server, visit};
use tonic::{Code, Streaming};

type Client = CustomerServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
>;

/// Outbox ids (all, or into the given stages), by id.
async fn outbox_ids(db: &Db, stages: &[&str]) -> Vec<i64> {
    let filter = if stages.is_empty() {
        String::new()
    } else {
        format!("WHERE to_stage IN ('{}')", stages.join("','"))
    };
    db.integers(&format!("SELECT id FROM outbox {filter} ORDER BY id"))
        .await
}

async fn watch(client: &mut Client, after: i64, stages: &[PbStage]) -> Streaming<LifecycleChanged> {
    client
        .watch_lifecycle_changes(pb::WatchLifecycleChangesRequest {
            after_outbox_id: u64::try_from(after).unwrap(),
            to_stages: stages.iter().map(|s| *s as i32).collect(),
            ..Default::default()
        })
        .await
        .expect("start a watch")
        .into_inner()
}

/// The next `n` messages' outbox ids (each within 30 s).
async fn next_ids(stream: &mut Streaming<LifecycleChanged>, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    while ids.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .unwrap_or_else(|_| panic!("message {} of {n} did not come", ids.len()))
            .expect("the stream stays healthy")
            .expect("the stream stays open");
        ids.push(i64::try_from(message.outbox_id).unwrap());
    }
    ids
}

async fn live_queries(db: Db) {
    let events = support::demo_year(40);
    let split = events.len() / 2;
    db.append(&events[..split]).await;
    db.project().await;
    let running = start_server(&db).await;
    let mut client: Client =
        CustomerServiceClient::with_interceptor(running.channel().await, Bearer(TOKEN));

    // A watch from the start gets the outbox so far, then what the projector commits next.
    let mut all = watch(&mut client, 0, &[]).await;
    let first = outbox_ids(&db, &[]).await;
    assert!(
        first.len() > 20,
        "transitions in the first half: {}",
        first.len()
    );
    assert_eq!(
        next_ids(&mut all, first.len()).await,
        first,
        "the outbox so far, in order"
    );

    // Read-your-writes: the second half is appended, not projected yet.
    let head = db.append(&events[split..]).await;
    let some = events[split].customer_id.as_str().to_owned();
    let mut waiting = client.clone();
    let mut request = tonic::Request::new(pb::GetCustomerRequest {
        customer_id: some.clone(),
        min_position: head,
    });
    request.set_timeout(Duration::from_millis(300));
    let status = waiting.get_customer(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("min_position: the read models reached position"),
        "{status:?}"
    );
    let request = pb::GetCustomerRequest {
        customer_id: some,
        min_position: head,
    };
    let (answer, ()) = tokio::join!(waiting.get_customer(request), db.project());
    let customer = answer
        .expect("answered once projected")
        .into_inner()
        .customer
        .unwrap();
    let latest = events
        .iter()
        .filter(|e| e.customer_id.as_str() == customer.customer_id)
        .map(|e| e.occurred_at.timestamp())
        .max()
        .unwrap();
    assert_eq!(
        customer.last_event_at.map(|t| t.seconds),
        Some(latest),
        "the answer includes the events appended before the call"
    );

    // The watch follows the projector's new commits without a gap.
    let everything = outbox_ids(&db, &[]).await;
    let rest = next_ids(&mut all, everything.len() - first.len()).await;
    assert_eq!(
        rest,
        everything[first.len()..].to_vec(),
        "then every later commit"
    );

    // Resuming from a mid id gives exactly the rest; a stage filter only those stages.
    let mid = everything[everything.len() / 2];
    let mut resumed = watch(&mut client, mid, &[]).await;
    let expected: Vec<i64> = everything.iter().copied().filter(|id| *id > mid).collect();
    assert_eq!(next_ids(&mut resumed, expected.len()).await, expected);
    let mut filtered = watch(&mut client, 0, &[PbStage::Churned, PbStage::Prospect]).await;
    let expected = outbox_ids(&db, &["churned", "prospect"]).await;
    assert!(
        expected.len() < everything.len(),
        "the filter leaves some out"
    );
    assert_eq!(next_ids(&mut filtered, expected.len()).await, expected);

    // One more transition (a new prospect) is the next message of every stream: nothing
    // duplicated or left over before it.
    let watermark = events.iter().map(|e| e.occurred_at).max().unwrap();
    db.append(&[visit("c-watch-new", watermark)]).await;
    db.project().await;
    let newest = *outbox_ids(&db, &[]).await.last().unwrap();
    assert!(
        newest > *everything.last().unwrap(),
        "the visit made a prospect"
    );
    for stream in [&mut all, &mut resumed, &mut filtered] {
        assert_eq!(next_ids(stream, 1).await, vec![newest]);
    }

    // Invalid watch requests.
    let status = client
        .watch_lifecycle_changes(pb::WatchLifecycleChangesRequest {
            after_outbox_id: 0,
            to_stages: vec![0],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("to_stages:"), "{status:?}");

    as_of(&db, &mut client).await;
    as_of_follows_the_model(&db, &mut client).await;
}

/// With a probability-alive model in the log, "as of" the watermark gives every customer the
/// live stage and history, including the transitions the model caused.
async fn as_of_follows_the_model(db: &Db, client: &mut Client) {
    // Dated at the read models' watermark, as `patron fit` dates the models it appends.
    let fitted_at: DateTime<Utc> = fetch::<(DateTime<Utc>,)>(
        db,
        "SELECT g.watermark FROM projection_generations g \
         JOIN projection_active a ON a.generation = g.generation",
    )
    .await
    .remove(0)
    .0;
    let model = patron_domain::Event {
        event_id: uuid::Uuid::from_u128(77),
        customer_id: CustomerId::clv(),
        occurred_at: fitted_at,
        source: "patron-fit".into(),
        body: EventBody::ModelFitted(patron_domain::ModelFitted {
            version: 1,
            time_unit: "weeks".into(),
            r: "0.243".into(),
            alpha: "4.414".into(),
            a: "2.0".into(),
            b: "2.4".into(),
        }),
    };
    db.append(&[model]).await;
    db.project().await;
    let by_model = db
        .integers(
            "SELECT count(*) FROM stage_history WHERE rule LIKE 'p_alive%' \
             AND generation = (SELECT generation FROM projection_active)",
        )
        .await;
    assert!(by_model[0] > 0, "the model moved some customers");
    let rows: Vec<(String, DateTime<Utc>, DateTime<Utc>)> = fetch(
        db,
        "SELECT c.customer_id, c.last_event_at, g.watermark FROM customers c \
         JOIN projection_active a ON a.generation = c.generation \
         JOIN projection_generations g ON g.generation = a.generation ORDER BY 1",
    )
    .await;
    let mut compared = 0;
    for (id, last_event, watermark) in rows {
        // Events after the watermark are folded live but not "as of" it.
        if last_event > watermark {
            continue;
        }
        same_as_live(client, &id, watermark, "as of the watermark").await;
        compared += 1;
    }
    assert!(compared > 20, "customers compared: {compared}");

    // As of now: every customer is the live one (time is not advanced past the watermark).
    let ids = db
        .strings(
            "SELECT customer_id FROM customers \
             WHERE generation = (SELECT generation FROM projection_active) ORDER BY 1",
        )
        .await;
    let now = Utc::now();
    for id in ids {
        same_as_live(client, &id, now, "as of now").await;
    }
}

/// The customer as `GetCustomer` answers now.
async fn live_customer(client: &mut Client, id: &str) -> pb::Customer {
    client
        .get_customer(pb::GetCustomerRequest {
            customer_id: id.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap()
}

/// Asserts that the customer as of `at` has the live stage and history.
async fn same_as_live(client: &mut Client, id: &str, at: DateTime<Utc>, what: &str) {
    let live = live_customer(client, id).await;
    let then = client
        .get_customer_as_of(pb::GetCustomerAsOfRequest {
            customer_id: id.to_owned(),
            as_of: Some(prost_types::Timestamp {
                seconds: at.timestamp(),
                nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    let brief = |h: &[pb::StageHistoryEntry]| -> Vec<String> {
        h.iter()
            .map(|e| {
                let at = e.entered_at.as_ref().map_or(0, |t| t.seconds);
                format!("{}@{at}:{}", e.to_stage, e.rule)
            })
            .collect()
    };
    assert!(
        then.stage == live.stage && then.stage_history == live.stage_history,
        "{id}: {what}, the live stage and history\nas of: {:?}\nlive:  {:?}",
        brief(&then.stage_history),
        brief(&live.stage_history)
    );
}

/// As of the watermark, the fold equals the live read model; at a mid time, the history up to
/// then and the value of the events up to then.
async fn as_of(db: &Db, client: &mut Client) {
    let (id, watermark): (String, DateTime<Utc>) = fetch::<(String, DateTime<Utc>)>(
        db,
        "SELECT h.customer_id, g.watermark FROM stage_history h \
         JOIN projection_active a ON a.generation = h.generation \
         JOIN projection_generations g ON g.generation = a.generation \
         GROUP BY h.customer_id, g.watermark ORDER BY count(*) DESC, h.customer_id LIMIT 1",
    )
    .await
    .remove(0);
    let live = live_customer(client, &id).await;
    let at = |when: DateTime<Utc>| pb::GetCustomerAsOfRequest {
        customer_id: id.clone(),
        as_of: Some(prost_types::Timestamp {
            seconds: when.timestamp(),
            nanos: i32::try_from(when.timestamp_subsec_nanos()).unwrap(),
        }),
    };
    let now = client
        .get_customer_as_of(at(watermark))
        .await
        .unwrap()
        .into_inner();
    let now = now.customer.unwrap();
    assert_eq!(now.stage, live.stage, "the stage at the watermark");
    assert_eq!(now.stage_since, live.stage_since);
    assert_eq!(now.stage_history, live.stage_history, "the whole history");
    let (now_value, live_value) = (now.value.unwrap(), live.value.unwrap());
    assert_eq!(now_value, live_value, "the value at the watermark");
    assert!(
        now.rfm.is_none() && now.tier.is_empty(),
        "population scores are not rebuilt"
    );

    // Just before the middle transition: the history before it, the value of the events so far.
    let history = &live.stage_history;
    assert!(
        history.len() >= 3,
        "a customer with a history: {}",
        history.len()
    );
    let k = history.len() / 2;
    let entered = history[k].entered_at.unwrap();
    let then = DateTime::from_timestamp(entered.seconds, 0).unwrap() - TimeDelta::seconds(1);
    let past = client
        .get_customer_as_of(at(then))
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    let before: Vec<_> = history
        .iter()
        .filter(|h| h.entered_at.as_ref().unwrap().seconds <= then.timestamp())
        .collect();
    assert_eq!(
        past.stage_history.len(),
        before.len(),
        "transitions up to then"
    );
    assert_eq!(
        past.stage,
        before.last().unwrap().to_stage,
        "the stage then"
    );
    let stream = db
        .sql
        .clone()
        .into_dyn()
        .read_stream(&CustomerId::parse(&id).unwrap(), 0, 10_000)
        .await
        .unwrap();
    let (mut orders, mut net) = (0, 0);
    for recorded in stream.iter().filter(|e| e.event.occurred_at <= then) {
        match &recorded.event.body {
            EventBody::Purchase(p) if p.amount.currency.code() == "USD" => {
                orders += 1;
                net += p.amount.minor_units;
            }
            EventBody::Refund(r) if r.amount.currency.code() == "USD" => {
                net -= r.amount.minor_units
            }
            _ => {}
        }
    }
    let value = past.value.unwrap();
    assert_eq!(
        (value.orders, value.net_revenue_minor),
        (orders, net),
        "value then"
    );

    // Before the first event the customer did not exist; as_of is required.
    let first = stream[0].event.occurred_at - TimeDelta::seconds(1);
    let status = client.get_customer_as_of(at(first)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = client
        .get_customer_as_of(pb::GetCustomerAsOfRequest {
            customer_id: id.clone(),
            as_of: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "as_of: required")
    );
}

#[tokio::test]
async fn sqlite_live() {
    live_queries(Db::sqlite().await).await;
}

#[tokio::test]
async fn postgres_live() {
    live_queries(Db::postgres().await).await;
}
