//! `patron check-histories`: checks the active read models' stage histories against the event
//! store, independently of the projector.
//!
//! Two checks, for every customer:
//! * an inactivity or probability-alive transition (`at_risk`, `churned` by silence) whose
//!   customer bought between the `last_purchase_at` it quotes and the transition is
//!   *contradicted*: the silence it reports did not happen;
//! * the stored history must equal the customer's events folded one by one in event-time order
//!   (ties by event id) with the lifecycle engine, advanced to the read models' watermark.
//!   Customers in a merged group, and every customer once a probability-alive model is in the
//!   log, are counted apart (their histories depend on more than their own stream).
//!
//! Exits with status 1 when either count is not zero.

use std::collections::HashMap;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use patron_api::model::{CustomerFilter, CustomerQuery};
use patron_api::{ReadModels as _, SqlReadModels};
use patron_domain::{CustomerId, Event, EventBody};
use patron_lifecycle::{CustomerLifecycle, Rules, Transition, rule};
use patron_store::{EventStore, Position};

use crate::cli::DatabaseArgs;

/// Customers read per listing page.
const PAGE: u32 = 500;

pub(crate) async fn run(database: &DatabaseArgs) -> anyhow::Result<ExitCode> {
    let store = super::open_store(database).await?;
    let events = store.clone().into_dyn();
    let models = SqlReadModels::new(store);
    let Some((snapshot, rules)) = models.active().await? else {
        anyhow::bail!("no read models yet: run `patron project` or `patron rebuild` first");
    };
    let watermark = snapshot.watermark;
    let modelled = has_model(events.as_ref()).await?;
    let mut report = Report::default();
    let mut after: Option<String> = None;
    loop {
        let page = models
            .customers(&CustomerQuery {
                filter: CustomerFilter::default(),
                after: after.clone(),
                limit: PAGE,
            })
            .await?;
        let Some(last) = page.customers.last() else {
            break;
        };
        after = Some(last.customer_id.clone());
        // The page's streams in one read, up to what the read models have applied.
        let ids = page
            .customers
            .iter()
            .map(|row| {
                CustomerId::parse(&row.customer_id).map_err(|reason| {
                    anyhow::anyhow!("customer id {:?}: {reason}", row.customer_id)
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut streams: HashMap<CustomerId, Vec<Event>> = HashMap::new();
        for recorded in events
            .read_streams(&ids, Position(snapshot.checkpoint))
            .await
            .context("cannot read the event store")?
        {
            let stream = streams
                .entry(recorded.event.customer_id.clone())
                .or_default();
            stream.push(recorded.event);
        }
        for (row, id) in page.customers.iter().zip(&ids) {
            let Some(detail) = models.customer(&row.customer_id).await? else {
                continue;
            };
            let stream = streams.remove(id).unwrap_or_default();
            let history: Vec<Stored> = detail
                .history
                .iter()
                .map(|h| Stored {
                    to: h.to_stage.clone(),
                    at: h.entered_at,
                    rule: h.rule.clone(),
                    last_purchase_at: serde_json::from_str::<serde_json::Value>(&h.facts)
                        .ok()
                        .and_then(|facts| facts["last_purchase_at"].as_str().map(str::to_owned))
                        .and_then(|t| t.parse().ok()),
                })
                .collect();
            let own: Vec<&Event> = stream.iter().collect();
            report.customers += 1;
            report.contradicted += contradicted(&history, &own);
            let grouped = row.merged_into.is_some()
                || own.iter().any(|e| {
                    matches!(
                        e.body,
                        EventBody::CustomersMerged(_) | EventBody::CustomersUnmerged(_)
                    )
                });
            if grouped || modelled {
                report.not_folded += 1;
            } else if !same(&history, &fold(&own, watermark, &rules)) {
                report.differ += 1;
                if report.examples.len() < 5 {
                    report.examples.push(id.to_string());
                }
            }
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "customers checked: {}", report.customers)?;
    writeln!(
        out,
        "contradicted inactivity transitions: {}",
        report.contradicted
    )?;
    writeln!(
        out,
        "histories that differ from the event-time fold: {}{}",
        report.differ,
        if report.examples.is_empty() {
            String::new()
        } else {
            format!(" (e.g. {})", report.examples.join(", "))
        }
    )?;
    if report.not_folded > 0 {
        writeln!(
            out,
            "not compared with the fold: {} (merged customers, or a probability-alive model in the log)",
            report.not_folded
        )?;
    }
    Ok(if report.contradicted == 0 && report.differ == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Default)]
struct Report {
    customers: u64,
    contradicted: u64,
    differ: u64,
    not_folded: u64,
    examples: Vec<String>,
}

/// A stored transition, as far as the checks need it.
struct Stored {
    to: String,
    at: DateTime<Utc>,
    rule: String,
    last_purchase_at: Option<DateTime<Utc>>,
}

/// Transitions caused by silence whose customer bought between the last purchase they quote
/// and the transition.
fn contradicted(history: &[Stored], events: &[&Event]) -> u64 {
    let silence = [
        rule::INACTIVITY_AT_RISK,
        rule::INACTIVITY_CHURN,
        rule::P_ALIVE_AT_RISK,
        rule::P_ALIVE_CHURN,
    ];
    let count = history
        .iter()
        .filter(|t| silence.contains(&t.rule.as_str()))
        .filter(|t| {
            t.last_purchase_at.is_some_and(|last| {
                events.iter().any(|e| {
                    matches!(e.body, EventBody::Purchase(_))
                        && e.occurred_at > last
                        && e.occurred_at < t.at
                })
            })
        })
        .count();
    u64::try_from(count).unwrap_or(u64::MAX)
}

/// The customer's events folded one by one in event-time order, advanced to the watermark.
fn fold(events: &[&Event], watermark: Option<DateTime<Utc>>, rules: &Rules) -> Vec<Transition> {
    let mut sorted: Vec<&Event> = events
        .iter()
        .copied()
        .filter(|e| !matches!(e.body, EventBody::Unknown(_) | EventBody::Tick(_)))
        .collect();
    sorted.sort_by_key(|e| (e.occurred_at, e.event_id));
    let mut state = CustomerLifecycle::new();
    let mut history = Vec::new();
    for event in sorted {
        history.extend(patron_lifecycle::apply(&mut state, event, rules));
    }
    if let Some(watermark) = watermark {
        history.extend(patron_lifecycle::advance(&mut state, watermark, rules));
    }
    history
}

/// Whether the stored history is the fold's (stage, time and rule of every transition).
fn same(stored: &[Stored], folded: &[Transition]) -> bool {
    stored.len() == folded.len()
        && stored
            .iter()
            .zip(folded)
            .all(|(s, f)| s.to == f.to.as_str() && s.at == f.at && s.rule == f.rule)
}

/// Whether the log holds a probability-alive model (the `$clv` stream has an event).
async fn has_model(store: &dyn EventStore) -> anyhow::Result<bool> {
    Ok(store.stream_version(&CustomerId::clv()).await? > 0)
}
