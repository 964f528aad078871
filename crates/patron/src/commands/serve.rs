//! `patron serve`: every service in one process.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use patron_kafka::KafkaLifecyclePublisher;
use patron_projector::clv::Fitter;
use patron_projector::{RelayConfig, SystemClock};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cli::{DatabaseArgs, ServeArgs};
use crate::commands::{ingest, open_store, relay, rules, shutdown_signal};

/// Completes when `stop` is set.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

pub(crate) async fn run(database: &DatabaseArgs, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_signal();
    let config = rules::projector_config(&args.rules)?;
    let sql = open_store(database).await?;
    let store = sql.clone().into_dyn();
    let models = sql.read_models();
    let kafka = args.ingest.kafka.settings();
    let consumer = ingest::consumer(&args.ingest, store.clone()).await?;
    let publisher = KafkaLifecyclePublisher::new(&kafka, &args.lifecycle_topic)
        .context("cannot create the lifecycle producer")?;
    let mut api = args.api.config()?;
    let fitter = Arc::new(
        Fitter::new(models.clone(), sql.clv_store(), args.api.clv.config())?
            .with_log(store.clone()),
    );
    api.fitter = Some(fitter.clone());

    let (stop_tx, stop) = watch::channel(false);
    let mut services: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    services.spawn({
        let stop = stopped(stop.clone());
        async move {
            (
                "ingest",
                consumer.run(stop).await.map(|_| ()).map_err(Into::into),
            )
        }
    });
    let projector_active = config.active.clone();
    services.spawn({
        let (store, models, stop) = (store.clone(), models.clone(), stopped(stop.clone()));
        async move {
            let clock = Arc::new(SystemClock);
            let result = patron_projector::run(store, models, config, clock, stop).await;
            ("projector", result.map_err(Into::into))
        }
    });
    services.spawn({
        let (models, stop) = (models.clone(), stopped(stop.clone()));
        let relay_config = RelayConfig::new(relay::relay_name(&args.lifecycle_topic));
        async move {
            let result =
                patron_projector::run_relay(models, Arc::new(publisher), relay_config, stop).await;
            ("relay", result.map_err(Into::into))
        }
    });
    services.spawn({
        let stop = stopped(stop.clone());
        let (interval, clock) = (args.fit_interval, Arc::new(SystemClock));
        let check = interval.min(std::time::Duration::from_secs(60));
        async move {
            // Only the replica whose projector is active fits (the others' would race it).
            let only_while = Some(projector_active);
            patron_projector::clv::run_fitter(fitter, interval, check, clock, only_while, stop)
                .await;
            ("fitter", Ok(()))
        }
    });
    services.spawn({
        let stop = stopped(stop.clone());
        async move {
            (
                "api",
                patron_api::serve(api, sql, stop).await.map_err(Into::into),
            )
        }
    });
    tracing::info!(listen = %args.api.api_listen, "serving: ingest, projector, relay, CLV fits, API");

    // Run until a signal, or until a service stops on its own (then stop the others too).
    let mut failure = None;
    tokio::select! {
        () = shutdown => {}
        Some(done) = services.join_next() => {
            let (name, result) = done.context("a service task panicked")?;
            tracing::error!(service = name, "a service stopped; stopping the others");
            failure = Some(result.err().unwrap_or_else(|| anyhow::anyhow!("{name} stopped unexpectedly")).context(name));
        }
    }
    let _ = stop_tx.send(true);
    while let Some(done) = services.join_next().await {
        let (name, result) = done.context("a service task panicked")?;
        if let Err(error) = result {
            tracing::error!(service = name, error = %format!("{error:#}"), "stopped with an error");
            failure.get_or_insert(error.context(name));
        }
    }
    match failure {
        Some(error) => Err(error),
        None => {
            tracing::info!("all services stopped cleanly");
            Ok(ExitCode::SUCCESS)
        }
    }
}
