//! `patron rebuild`: fold the whole log into a new generation of read models and swap it in.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use patron_projector::{RebuildOptions, RebuildProgress};

use crate::cli::{DatabaseArgs, RebuildArgs};
use crate::commands::{open_store, rules};

pub(crate) async fn run(database: &DatabaseArgs, args: RebuildArgs) -> anyhow::Result<ExitCode> {
    let config = rules::projector_config(&args.rules)?;
    let store = open_store(database).await?;
    let models = store.read_models();
    let options = RebuildOptions {
        page: usize::try_from(args.page_size).unwrap_or(50_000),
        corrections: !args.no_corrections,
        ..RebuildOptions::default()
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "rebuilding {bar:40} {pos}/{len} events ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut progress = |p: RebuildProgress| {
        if let Some(bar) = &bar {
            bar.set_length(p.head.0.max(p.position.0));
            bar.set_position(p.position.0);
        }
    };
    let report = tracing::Instrument::instrument(
        patron_projector::rebuild(store.into_dyn(), models, &config, options, &mut progress),
        tracing::info_span!("rebuild", page_size = options.page),
    )
    .await?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let seconds = report.elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        report.events as f64 / seconds
    } else {
        0.0
    };
    tracing::info!(
        generation = report.generation,
        replaced = ?report.replaced,
        events = report.events,
        customers = report.customers,
        checkpoint = report.checkpoint.0,
        seconds = format!("{seconds:.2}"),
        events_per_second = format!("{rate:.0}"),
        reading_seconds = format!("{:.2}", report.reading.as_secs_f64()),
        folding_seconds = format!("{:.2}", report.folding.as_secs_f64()),
        writing_seconds = format!("{:.2}", report.writing.as_secs_f64()),
        "rebuild complete: the new read models are live"
    );
    let c = report.corrections;
    let line = if c.published {
        format!(
            "lifecycle records: {} customers corrected ({} retractions, {} records published)",
            c.customers, c.retractions, c.records
        )
    } else {
        format!(
            "lifecycle records: no correction published (--no-corrections); {} customers' \
             published records differ from the new read models ({} retractions and {} records \
             would correct them)",
            c.customers, c.retractions, c.records
        )
    };
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
