//! `patron dev`: the whole flow that exists so far, on one machine with nothing installed.
//!
//! An embedded Kafka (librdkafka's mock cluster, on a loopback port any client can use), a
//! generator of demo traffic producing to it (a year of history, then live events), the ingest
//! consumer appending into the SQLite event store in `./data`, the projector maintaining the
//! read models, and the relay publishing lifecycle changes to `patron.lifecycle.v1` on the
//! embedded Kafka. Ctrl-C stops it cleanly;
//! running it again resumes from the stored state (the history is generated from a fixed seed, so
//! its events are recognised as already stored).

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use patron_demo::{DemoRecord, Generator};
use patron_ingest::Settings;
use patron_kafka::{
    DEFAULT_LIFECYCLE_TOPIC, EmbeddedKafka, IngestConsumer, IngestOptions, KafkaDeadLetters,
    KafkaLifecyclePublisher, KafkaSettings, OutboundRecord, Producer,
};
use patron_projector::{RelayConfig, SystemClock};
use patron_store_sql::redact;
use tokio::sync::watch;

use crate::cli::{DatabaseArgs, DevArgs};

const TOPIC: &str = "customer-events";

fn outbound(records: Vec<DemoRecord>) -> Vec<OutboundRecord> {
    records
        .into_iter()
        .map(|r| OutboundRecord {
            key: Some(r.key.into_bytes()),
            headers: vec![("content-type".into(), r.content_type.as_bytes().to_vec())],
            payload: r.payload,
        })
        .collect()
}

/// When the demo history ends: for a database file, the instant kept in `demo-history.end`
/// beside it (written on the first run), so every run generates the same history; otherwise
/// `now`.
fn history_end(database_url: &str, now: DateTime<Utc>) -> DateTime<Utc> {
    let Some(db_path) = database_url.strip_prefix("sqlite://") else {
        return now;
    };
    let db_path = db_path.split('?').next().unwrap_or(db_path);
    if db_path.is_empty() || db_path.starts_with(':') {
        return now;
    }
    let path = std::path::Path::new(db_path).with_file_name("demo-history.end");
    if let Ok(text) = std::fs::read_to_string(&path) {
        match DateTime::parse_from_rfc3339(text.trim()) {
            Ok(end) => return end.with_timezone(&Utc),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "unreadable demo history end; using now")
            }
        }
    }
    if let Err(error) = std::fs::write(&path, now.to_rfc3339()) {
        tracing::warn!(path = %path.display(), %error, "cannot keep the demo history end");
    }
    now
}

pub(crate) async fn run(database: &DatabaseArgs, args: DevArgs) -> anyhow::Result<ExitCode> {
    let shutdown = super::shutdown_signal();
    let config = super::rules::projector_config(&crate::cli::RulesArgs { rules: None })?;
    let store = super::open_store(database).await?;
    store.migrate().await.context("migration failed")?;
    let models = store.read_models();
    let api_store = store.clone();
    let api_listener = tokio::net::TcpListener::bind(args.api_listen)
        .await
        .with_context(|| format!("cannot listen on {} (--api-listen)", args.api_listen))?;
    let api_address = api_listener.local_addr()?;
    let store = store.into_dyn();

    let kafka = EmbeddedKafka::start().context("cannot start the embedded Kafka")?;
    kafka.create_topic(TOPIC, 4)?;
    kafka.create_topic(&format!("{TOPIC}.dlq"), 1)?;
    kafka.create_topic(DEFAULT_LIFECYCLE_TOPIC, 4)?;
    let settings = KafkaSettings::new(kafka.bootstrap());
    let head = store.head().await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "patron dev — demo traffic → Kafka → ingest → event store → projector → read models → relay → Kafka"
        )?;
        writeln!(
            out,
            "  event store   {} (events stored so far: {head})",
            redact(&database.database_url)
        )?;
        writeln!(
            out,
            "  kafka         {} (embedded; topics {TOPIC}, {TOPIC}.dlq, {DEFAULT_LIFECYCLE_TOPIC})",
            kafka.bootstrap()
        )?;
        let (api, token) = (api_address, &args.api_token);
        writeln!(out, "  gRPC API      {api} (bearer token: {token})")?;
        writeln!(out, "  try, in another terminal:")?;
        writeln!(out, "    grpcurl -plaintext {api} list")?;
        writeln!(
            out,
            "    grpcurl -plaintext -H 'authorization: Bearer {token}' -d '{{\"customer_id\": \"demo-0003\"}}' {api} patron.api.v1.CustomerService/GetCustomer"
        )?;
        writeln!(
            out,
            "    grpcurl -plaintext -H 'authorization: Bearer {token}' -d '{{\"stage\": \"STAGE_AT_RISK\", \"page_size\": 5}}' {api} patron.api.v1.CustomerService/ListCustomers"
        )?;
        writeln!(out, "  and:")?;
        writeln!(out, "    ./target/debug/patron events --limit 5")?;
        writeln!(
            out,
            "    ./target/debug/patron events --customer demo-0000 --limit 10"
        )?;
        writeln!(
            out,
            "    kcat -b {} -t {TOPIC}.dlq -C -J -c 1     # a dead letter and its headers",
            kafka.bootstrap()
        )?;
        writeln!(
            out,
            "    kcat -b {} -t {DEFAULT_LIFECYCLE_TOPIC} -C -c 5   # lifecycle changes (protobuf)",
            kafka.bootstrap()
        )?;
        writeln!(
            out,
            "    sqlite3 data/patron.db \"select stage, count(*) from customers group by 1\""
        )?;
        writeln!(
            out,
            "  Ctrl-C stops; running again resumes from the stored state."
        )?;
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let producer = Producer::new(&settings)?;
    let customers = usize::try_from(args.customers).unwrap_or(200);
    let rate = args.rate;
    let end = history_end(&database.database_url, Utc::now());
    let generator = tokio::spawn(async move {
        let now = Utc::now();
        // The same seed and the same end give the same history, content included: a later run
        // re-sends events the store recognises as already stored (an id re-sent with other
        // content would be dead-lettered as a conflict).
        let mut history = Generator::new(
            args.seed,
            customers,
            end - TimeDelta::days(args.history_days),
        );
        let backlog = outbound(history.until(end));
        tracing::info!(
            records = backlog.len(),
            days = args.history_days,
            "producing the demo history"
        );
        for chunk in backlog.chunks(5_000) {
            producer.send_all(TOPIC, chunk).await?;
        }
        // Live traffic gets a fresh seed: new events each run.
        let seed = u64::try_from(Utc::now().timestamp_nanos_opt().unwrap_or(1)).unwrap_or(1);
        let mut live = Generator::new(seed, customers, now);
        let mut stop = stop_rx;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tick.tick() => producer.send_all(TOPIC, &outbound(live.live(rate, Utc::now()))).await?,
            }
        }
        anyhow::Ok(())
    });

    let dead_letters = Arc::new(KafkaDeadLetters::new(&settings, ".dlq")?);
    // The embedded broker starts empty each run, so offsets of earlier runs mean nothing: each
    // run is a consumer group of its own, reading the new topic from its beginning.
    let group = format!("patron-dev-{}", Utc::now().timestamp());
    let mut options = IngestOptions::new(group.clone(), vec![TOPIC.into()]);
    options.batch_size = 2_000;
    let consumer = IngestConsumer::new(
        &settings,
        options,
        Settings::new(group),
        Arc::clone(&store),
        dead_letters,
    )?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let ingest = tokio::spawn(consumer.run(async {
        let _ = done_rx.await;
    }));

    let projector = {
        let (store, models, mut stop) =
            (Arc::clone(&store), Arc::clone(&models), stop_tx.subscribe());
        tokio::spawn(patron_projector::run(
            store,
            models,
            config,
            Arc::new(SystemClock),
            async move {
                let _ = stop.changed().await;
            },
        ))
    };
    let relay = {
        let publisher = KafkaLifecyclePublisher::new(&settings, DEFAULT_LIFECYCLE_TOPIC)?;
        // The embedded broker starts empty each run: publish the whole outbox to it again.
        let config = RelayConfig::new(format!("dev-{}", Utc::now().timestamp()));
        let mut stop = stop_tx.subscribe();
        tokio::spawn(patron_projector::run_relay(
            Arc::clone(&models),
            Arc::new(publisher),
            config,
            async move {
                let _ = stop.changed().await;
            },
        ))
    };

    let api = {
        let mut config = patron_api::ApiConfig::new(args.api_listen, vec![args.api_token.clone()]);
        config.cache.capacity = 10_000;
        // FitModel on the admin service; demo traffic is usually rejected (see the README).
        config.fitter = patron_projector::clv::Fitter::new(
            api_store.read_models(),
            api_store.clv_store(),
            config.fit,
        )
        .ok()
        .map(|fitter| Arc::new(fitter.with_log(api_store.clone().into_dyn())));
        config.log = Some(api_store.clone().into_dyn());
        let models = Arc::new(patron_api::SqlReadModels::new(api_store));
        let mut stop = stop_tx.subscribe();
        tokio::spawn(patron_api::serve_on(
            api_listener,
            config,
            models,
            async move {
                let _ = stop.changed().await;
            },
        ))
    };

    let progress = {
        let (store, models) = (Arc::clone(&store), Arc::clone(&models));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            let mut last = None;
            loop {
                tick.tick().await;
                let projected = models.active_generation().await.ok().flatten();
                if let Ok(head) = store.head().await
                    && last != Some((head, projected.as_ref().map(|g| g.checkpoint)))
                {
                    tracing::info!(
                        events_stored = head.0,
                        events_projected = projected.as_ref().map_or(0, |g| g.checkpoint.0),
                        "progress"
                    );
                    last = Some((head, projected.map(|g| g.checkpoint)));
                }
            }
        })
    };

    shutdown.await;
    let _ = stop_tx.send(true);
    match generator.await {
        Ok(Err(error)) => tracing::warn!(%error, "the demo traffic generator stopped"),
        Err(error) => tracing::warn!(%error, "the demo traffic generator failed"),
        Ok(Ok(())) => {}
    }
    let _ = done_tx.send(());
    match api.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "the API stopped with an error"),
        Err(error) => tracing::warn!(%error, "the API task failed"),
    }
    for (name, task) in [
        (
            "projector",
            projector.await.map(|r| r.map_err(anyhow::Error::from)),
        ),
        ("relay", relay.await.map(|r| r.map_err(anyhow::Error::from))),
    ] {
        match task {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "the {name} stopped with an error"),
            Err(error) => tracing::warn!(%error, "the {name} task failed"),
        }
    }
    let summary = ingest
        .await
        .context("the consumer task failed")?
        .context("ingestion stopped")?;
    progress.abort();
    let head = store.head().await?;
    writeln!(
        std::io::stdout().lock(),
        "stopped: this run stored {} new events ({} already stored, {} dead letters); the store holds {head}",
        summary.appended,
        summary.duplicates,
        summary.dead_letters
    )?;
    Ok(ExitCode::SUCCESS)
}
