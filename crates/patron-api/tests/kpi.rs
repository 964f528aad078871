//! KpiService end to end on SQLite and PostgreSQL: every answer is checked against the read
//! models' own rows (stage history, customers) or against the event store, not against `kpis`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use patron_domain::EventBody;
use patron_proto::api::v1 as pb;
use patron_proto::api::v1::kpi_service_client::KpiServiceClient;
use patron_proto::lifecycle::v1::Stage as PbStage;
use support::{Bearer, Db, TOKEN, all_events, fetch, start_server};
use tonic::Code;

const ACTIVE: &str = "(SELECT generation FROM projection_active)";

type Client = KpiServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
>;

fn wire(stage: Option<&str>) -> i32 {
    match stage {
        None | Some("none") => 0,
        Some(name) => PbStage::from_str_name(&format!("STAGE_{}", name.to_uppercase()))
            .unwrap_or_else(|| panic!("stage {name}")) as i32,
    }
}

fn day(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

fn month(at: DateTime<Utc>) -> String {
    at.format("%Y-%m").to_string()
}

fn months(from: &str, to: &str) -> pb::MonthRangeRequest {
    pb::MonthRangeRequest {
        from_month: from.into(),
        to_month: to.into(),
        min_position: 0,
    }
}

fn days(from: &str, to: &str) -> pb::DayRangeRequest {
    pb::DayRangeRequest {
        from_day: from.into(),
        to_day: to.into(),
        min_position: 0,
    }
}

/// (customer, seq, from, to, entered_at) of the active generation's stage history.
type History = Vec<(String, i32, Option<String>, String, DateTime<Utc>)>;

async fn kpis_match_the_read_models(db: Db) {
    // The demo traffic has no CSAT answers: add some, by buyers and prospects alike.
    let mut events = support::demo_year(60);
    let csat: Vec<_> = events
        .iter()
        .step_by(37)
        .enumerate()
        .map(|(i, e)| {
            let data = format!(r#"{{"csat":{}}}"#, i % 5 + 1);
            support::cloud_event(e.customer_id.as_str(), e.occurred_at, "feedback", &data)
        })
        .collect();
    events.extend(csat);
    events.sort_by_key(|e| e.occurred_at);
    db.append(&events).await;
    db.project().await;
    let running = start_server(&db).await;
    let mut client: Client =
        KpiServiceClient::with_interceptor(running.channel().await, Bearer(TOKEN));
    let history: History = fetch(
        &db,
        &format!(
            "SELECT customer_id, seq, from_stage, to_stage, entered_at FROM stage_history \
             WHERE generation = {ACTIVE}"
        ),
    )
    .await;
    assert!(history.len() > 100, "enough transitions: {}", history.len());
    let first = history.iter().map(|h| h.4).min().unwrap();
    let last = history.iter().map(|h| h.4).max().unwrap();

    // Flows over the whole history are the stage history grouped by day and move.
    let flows = client
        .stage_flows(days(&day(first), &day(last)))
        .await
        .expect("stage flows")
        .into_inner()
        .flows;
    let mut expected: BTreeMap<(String, i32, i32), i64> = BTreeMap::new();
    for (_, _, from, to, at) in &history {
        *expected
            .entry((day(*at), wire(from.as_deref()), wire(Some(to))))
            .or_default() += 1;
    }
    let got: BTreeMap<(String, i32, i32), i64> = flows
        .iter()
        .map(|f| ((f.day.clone(), f.from_stage, f.to_stage), f.count))
        .collect();
    assert_eq!(got, expected, "flows = stage history by day");

    // Distribution on each of 15 mid-year days, and on the last day, from the history alone.
    let mid = first + (last - first) / 2;
    let (from, to) = (day(mid), day(mid + TimeDelta::days(14)));
    for (from, to) in [(from, to), (day(last), day(last))] {
        let answer = client
            .stage_distribution(days(&from, &to))
            .await
            .expect("stage distribution")
            .into_inner()
            .days;
        assert_eq!(answer.first().map(|d| d.day.clone()), Some(from.clone()));
        assert_eq!(answer.last().map(|d| d.day.clone()), Some(to.clone()));
        for distribution in answer {
            let mut current: BTreeMap<&str, (i32, &str)> = BTreeMap::new();
            for (customer, seq, _, stage, at) in &history {
                if day(*at) <= distribution.day
                    && current.get(customer.as_str()).is_none_or(|(s, _)| s < seq)
                {
                    current.insert(customer, (*seq, stage));
                }
            }
            let mut expected = [0_i64; 8];
            for (_, stage) in current.values() {
                expected[wire(Some(stage)) as usize] += 1;
            }
            let got: Vec<i64> = distribution.stages.iter().map(|s| s.count).collect();
            assert_eq!(
                got,
                expected[1..].to_vec(),
                "distribution on {}",
                distribution.day
            );
        }
    }
    let by_stage: Vec<(String, i64)> = fetch(
        &db,
        &format!(
            "SELECT stage, count(*) FROM customers WHERE generation = {ACTIVE} \
             AND stage IS NOT NULL GROUP BY stage"
        ),
    )
    .await;
    let last_day = client
        .stage_distribution(days(&day(last), &day(last)))
        .await
        .unwrap()
        .into_inner()
        .days
        .remove(0);
    for (stage, count) in by_stage {
        let got = last_day
            .stages
            .iter()
            .find(|s| s.stage == wire(Some(&stage)))
            .unwrap();
        assert_eq!(
            got.count, count,
            "{stage} on the last day = the customers table"
        );
    }

    // Independent computations from the event store.
    let events = all_events(&db).await;
    let range = (month(first - TimeDelta::days(62)), month(last));
    let in_range = |at: DateTime<Utc>| month(at) >= range.0 && month(at) <= range.1;
    let mut buys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let (mut promoters, mut detractors, mut nps_answers) = (0, 0, 0);
    let (mut csat_sum, mut csat_answers) = (0_i64, 0_i64);
    let mut channels: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for recorded in &events {
        let event = &recorded.event;
        let at = event.occurred_at;
        match &event.body {
            EventBody::Purchase(p) if p.amount.currency.code() == "USD" => {
                buys.entry(event.customer_id.as_str().to_owned())
                    .or_default()
                    .insert(month(at));
            }
            EventBody::Feedback(f) if in_range(at) => {
                if let Some(nps) = f.nps {
                    nps_answers += 1;
                    promoters += i64::from(nps >= 9);
                    detractors += i64::from(nps <= 6);
                }
                if let Some(csat) = f.csat {
                    csat_answers += 1;
                    csat_sum += i64::from(csat);
                }
            }
            EventBody::Acquired(a) if in_range(at) => {
                let slot = channels.entry(a.channel.clone()).or_default();
                slot.0 += 1;
                slot.1 += a
                    .cost
                    .filter(|c| c.currency.code() == "USD")
                    .map_or(0, |c| c.minor_units);
            }
            _ => {}
        }
    }

    // Cohorts: members by first purchase month (customers table), buyers per month (events).
    let customers: Vec<(String, Option<DateTime<Utc>>, Option<String>)> = fetch(
        &db,
        &format!(
            "SELECT customer_id, first_purchase_at, stage FROM customers \
             WHERE generation = {ACTIVE}"
        ),
    )
    .await;
    let cohorts = client
        .cohort_retention(months(&range.0, &range.1))
        .await
        .expect("cohort retention")
        .into_inner()
        .cohorts;
    let buyers = customers.iter().filter(|c| c.1.is_some()).count() as i64;
    assert!(buyers > 10, "enough buyers: {buyers}");
    assert_eq!(
        cohorts.iter().map(|c| c.size).sum::<i64>(),
        buyers,
        "every buyer in one cohort"
    );
    for cohort in &cohorts {
        let members: Vec<_> = customers
            .iter()
            .filter(|c| c.1.map(month).as_deref() == Some(cohort.cohort_month.as_str()))
            .collect();
        assert_eq!(
            cohort.size,
            members.len() as i64,
            "size of {}",
            cohort.cohort_month
        );
        let churned = members
            .iter()
            .filter(|c| c.2.as_deref() == Some("churned"))
            .count();
        assert_eq!(
            cohort.churned, churned as i64,
            "churned of {}",
            cohort.cohort_month
        );
        let mut active: BTreeMap<String, i64> = BTreeMap::new();
        for member in &members {
            for m in buys.get(&member.0).into_iter().flatten() {
                *active.entry(m.clone()).or_default() += 1;
            }
        }
        let got: BTreeMap<String, i64> = cohort
            .months
            .iter()
            .map(|m| (m.month.clone(), m.active))
            .collect();
        assert_eq!(got, active, "active months of {}", cohort.cohort_month);
        let first = &cohort.months[0];
        assert_eq!(
            (first.month_offset, first.retention_bp),
            (0, 10_000),
            "all buy in month 0"
        );
    }

    // NPS and CSAT totals; the stages add up to the total.
    let nps = client
        .nps(months(&range.0, &range.1))
        .await
        .unwrap()
        .into_inner();
    let total = nps.total.unwrap();
    assert!(nps_answers > 0, "the demo has NPS answers");
    assert_eq!(
        (total.promoters, total.detractors, total.responses),
        (promoters, detractors, nps_answers)
    );
    assert_eq!(
        total.nps_bp,
        (promoters - detractors) * 10_000 / nps_answers
    );
    assert_eq!(
        nps.stages.iter().map(|s| s.responses).sum::<i64>(),
        nps_answers
    );
    let csat = client
        .csat(months(&range.0, &range.1))
        .await
        .unwrap()
        .into_inner();
    let total = csat.total.unwrap();
    assert!(csat_answers > 0, "the demo has CSAT answers");
    assert_eq!((total.responses, total.score_sum), (csat_answers, csat_sum));
    assert_eq!(total.average_centi, csat_sum * 100 / csat_answers);
    assert_eq!(
        csat.stages.iter().map(|s| s.score_sum).sum::<i64>(),
        csat_sum
    );

    // CAC per channel.
    let cac = client
        .cac_by_channel(months(&range.0, &range.1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cac.currency, "USD");
    let got: BTreeMap<String, (i64, i64)> = cac
        .channels
        .iter()
        .map(|c| (c.channel.clone(), (c.acquired, c.cost_minor)))
        .collect();
    assert_eq!(got, channels, "acquisitions and cost per channel");
    for channel in &cac.channels {
        assert_eq!(
            channel.cac_minor,
            Some(channel.cost_minor / channel.acquired)
        );
    }

    // Revenue by tier over all months is the customers' net revenue by tier.
    let tiers: Vec<(Option<String>, i64)> = fetch(
        &db,
        &format!(
            "SELECT tier, CAST(SUM(net_revenue_minor) AS BIGINT) FROM customers \
             WHERE generation = {ACTIVE} AND orders + refunds > 0 GROUP BY tier"
        ),
    )
    .await;
    let revenue = client
        .revenue_by_tier(months(&range.0, &range.1))
        .await
        .unwrap()
        .into_inner();
    let got: BTreeMap<String, i64> = revenue
        .tiers
        .iter()
        .map(|t| (t.tier.clone(), t.revenue_minor))
        .collect();
    let expected: BTreeMap<String, i64> = tiers
        .into_iter()
        .map(|(tier, sum)| (tier.unwrap_or_default(), sum))
        .filter(|(_, sum)| *sum != 0)
        .collect();
    assert_eq!(
        got.into_iter()
            .filter(|(_, v)| *v != 0)
            .collect::<BTreeMap<_, _>>(),
        expected
    );

    // A range before any data is empty, not an error.
    let empty = client
        .cohort_retention(months("1999-01", "1999-12"))
        .await
        .unwrap();
    assert!(empty.into_inner().cohorts.is_empty());
    let before = client
        .stage_distribution(days("1999-01-01", "1999-01-01"))
        .await
        .unwrap();
    assert!(
        before.into_inner().days[0]
            .stages
            .iter()
            .all(|s| s.count == 0)
    );

    // Invalid ranges name the field and the problem.
    let status = client
        .stage_flows(days("2025-02-01", "2025-01-01"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "to_day: 2025-01-01 is before from_day 2025-02-01"
    );
    let status = client.nps(months("2025-1", "2025-02")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "from_month: expected YYYY-MM, got \"2025-1\""
    );
    let status = client
        .stage_distribution(days("2000-01-01", "2030-01-01"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("to_day: the range spans"),
        "{status:?}"
    );

    // Unauthenticated callers are refused.
    let mut anonymous = KpiServiceClient::new(running.channel().await);
    let status = anonymous
        .nps(months("2025-01", "2025-02"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn sqlite_kpis() {
    kpis_match_the_read_models(Db::sqlite().await).await;
}

#[tokio::test]
async fn postgres_kpis() {
    kpis_match_the_read_models(Db::postgres().await).await;
}
