//! Append throughput of the PostgreSQL event store versus raw inserts.

use std::io::Write as _;
use std::str::FromStr;
use std::time::Instant;

use anyhow::Context as _;
use chrono::Utc;
use patron_domain::{Currency, CustomerId, Event, EventBody, LineItem, Money, Purchase};
use patron_store::{AppendBatch, EventStore};
use patron_store_sql::PgEventStore;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

/// Options of the store benchmark.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Events appended in the 1,000-per-batch run (the 100 run uses a quarter, the 1 run 1/100).
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Distinct customers the events are spread over.
    #[arg(long, default_value_t = 10_000)]
    customers: usize,
    /// Repetitions of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

/// The purchase every benchmark row carries, so raw and store rows are identical in shape.
pub(crate) fn purchase(customer: usize, n: usize) -> anyhow::Result<Event> {
    let usd = Currency::from_code("USD")?;
    Ok(Event {
        event_id: Uuid::new_v4(),
        customer_id: CustomerId::parse(&format!("c-{customer}")).map_err(anyhow::Error::msg)?,
        occurred_at: Utc::now(),
        source: "bench".into(),
        body: EventBody::Purchase(Purchase {
            order_id: format!("o-{n}"),
            amount: Money::new(2599, usd)?,
            items: vec![LineItem {
                sku: "tea".into(),
                quantity: 2,
                unit_price: Some(Money::new(1299, usd)?),
                extra: serde_json::Map::new(),
            }],
            extra: serde_json::Map::new(),
        }),
    })
}

struct Scratch {
    admin: PgConnection,
    schema: String,
    options: PgConnectOptions,
}

impl Scratch {
    async fn new(url: &str, tag: &str) -> anyhow::Result<Self> {
        let mut admin = PgConnection::connect(url).await.with_context(|| {
            format!(
                "cannot connect to PostgreSQL at {}",
                patron_store_sql::redact(url)
            )
        })?;
        let schema = format!("patron_bench_{}_{tag}", std::process::id());
        admin
            .execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
            .await?;
        admin
            .execute(format!("CREATE SCHEMA {schema}").as_str())
            .await?;
        let options = PgConnectOptions::from_str(url)?.options([("search_path", schema.as_str())]);
        Ok(Self {
            admin,
            schema,
            options,
        })
    }

    async fn store(&self) -> anyhow::Result<PgEventStore> {
        let store = PgEventStore::connect_with(self.options.clone(), 4).await?;
        store.migrate().await?;
        Ok(store)
    }

    async fn drop(mut self) -> anyhow::Result<()> {
        self.admin
            .execute(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema).as_str())
            .await?;
        Ok(())
    }
}

pub(crate) fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Splits the payload's JSON around its order number, so SQL can build `o-<i>` per row.
fn payload_template(payload: &str) -> anyhow::Result<(String, String)> {
    let marker = "\"order_id\":\"o-0\"";
    let at = payload
        .find(marker)
        .context("the bench payload has an order id")?;
    let split = at + marker.len() - 1;
    Ok((payload[..split - 1].to_owned(), payload[split..].to_owned()))
}

pub(crate) async fn raw_rate(
    url: &str,
    rows: usize,
    customers: usize,
    payload: &str,
) -> anyhow::Result<f64> {
    let scratch = Scratch::new(url, "raw").await?;
    let store = scratch.store().await?;
    let pool = store.pool();
    sqlx::query("CREATE TABLE raw_events (LIKE events INCLUDING ALL)")
        .execute(pool)
        .await?;
    // The same rows the store writes: per-row ids, customers, times and payloads (the order id
    // differs per row, as in `purchase`), so the server parses each payload as it does for the store.
    let (head, tail) = payload_template(payload)?;
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO raw_events (position, event_id, customer_id, version, event_type, occurred_at, source, payload) \
         SELECT i, gen_random_uuid(), 'c-' || (i % $4), i, 'purchase', now() - i * interval '1 ms', 'bench', \
                ($1 || i || $2)::jsonb \
         FROM generate_series(1, $3) AS i",
    )
    .bind(head)
    .bind(tail)
    .bind(i64::try_from(rows)?)
    .bind(i64::try_from(customers)?)
    .execute(pool)
    .await?;
    let elapsed = started.elapsed();
    pool.close().await;
    scratch.drop().await?;
    Ok(rows as f64 / elapsed.as_secs_f64())
}

async fn store_rate(
    url: &str,
    events: usize,
    batch: usize,
    customers: usize,
) -> anyhow::Result<f64> {
    let scratch = Scratch::new(url, "store").await?;
    let store = scratch.store().await?;
    let mut batches = Vec::with_capacity(events / batch + 1);
    let mut pending = Vec::with_capacity(batch);
    for n in 0..events {
        pending.push(purchase(n % customers, n)?);
        if pending.len() == batch {
            batches.push(AppendBatch::from_events(std::mem::take(&mut pending)));
        }
    }
    if !pending.is_empty() {
        batches.push(AppendBatch::from_events(pending));
    }
    let started = Instant::now();
    let mut appended = 0;
    for b in batches {
        appended += store.append(&b).await?.appended;
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(
        appended == events as u64,
        "appended {appended} of {events} events"
    );
    store.pool().close().await;
    scratch.drop().await?;
    Ok(events as f64 / elapsed.as_secs_f64())
}

pub(crate) async fn run(url: &str, args: Args) -> anyhow::Result<()> {
    let payload = purchase(0, 0)?.body.to_payload_string();
    let repeat = args.repeat.max(1);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "event store append throughput (PostgreSQL, median of {repeat})"
    )?;

    let mut raw = Vec::new();
    for _ in 0..repeat {
        raw.push(raw_rate(url, args.events, args.customers, &payload).await?);
    }
    let raw = median(raw);
    writeln!(
        out,
        "raw INSERT … SELECT generate_series, {} rows: {:>10.0} rows/s",
        args.events, raw
    )?;
    writeln!(
        out,
        "{:>10} {:>10} {:>12} {:>14}",
        "batch", "events", "events/s", "ratio to raw"
    )?;
    for (batch, events) in [
        (1, args.events / 100),
        (100, args.events / 4),
        (1000, args.events),
    ] {
        let mut rates = Vec::new();
        for _ in 0..repeat {
            rates.push(store_rate(url, events.max(batch), batch, args.customers).await?);
        }
        let rate = median(rates);
        let target = if batch == 1000 {
            "  (target ≥ 0.50)"
        } else {
            ""
        };
        writeln!(
            out,
            "{batch:>10} {events:>10} {rate:>12.0} {:>14.2}{target}",
            rate / raw
        )?;
    }
    Ok(())
}
