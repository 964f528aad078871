//! The projector's fold alone, in memory: what a rebuild does per event once the page is read,
//! without the database. A rebuild cannot be faster than this; profiling it shows where the fold
//! spends its time (`perf record target/release/patron-bench fold`).

use std::io::Write as _;
use std::time::Instant;

use chrono::Utc;
use patron_domain::Currency;
use patron_lifecycle::Rules;
use patron_projector::Projection;
use patron_store::{Position, RecordedEvent};
use std::collections::HashMap;

/// Options of the fold benchmark.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// At least this many demo events are folded.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Events per page, as the rebuild reads them.
    #[arg(long, default_value_t = 50_000)]
    page: usize,
    /// Folds the same events this many times (the best run is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let demo = crate::rebuild::enough_demo(args.events);
    let recorded_at = Utc::now();
    let log: Vec<RecordedEvent> = demo
        .into_iter()
        .zip(1u64..)
        .map(|(event, position)| RecordedEvent {
            position: Position(position),
            version: 0,
            recorded_at,
            event,
        })
        .collect();
    let mut streams: HashMap<patron_domain::CustomerId, Vec<RecordedEvent>> = HashMap::new();
    for event in &log {
        let stream = streams.entry(event.event.customer_id.clone()).or_default();
        stream.push(event.clone());
    }
    let rules = Rules::default();
    let currency = Currency::from_code(&rules.currency)?;
    let mut best = f64::MAX;
    let mut customers = 0;
    let mut transitions = 0;
    let mut state_bytes = 0;
    let mut serializing = f64::MAX;
    let mut refolds = (0, 0);
    for _ in 0..args.runs.max(1) {
        let started = Instant::now();
        let mut projection = Projection::new();
        for page in log.chunks(args.page.max(1)) {
            projection
                .apply_page(page, &rules, currency, &streams)
                .map_err(|needs| anyhow::anyhow!("no stream for {}", needs.customer_id))?;
        }
        refolds = projection.refold_counts();
        let changes = projection.into_changes();
        best = best.min(started.elapsed().as_secs_f64());
        customers = changes.customers.len();
        transitions = changes.outbox.len();
        // What writing the views costs before any database sees them: their JSON state.
        let started = Instant::now();
        state_bytes = changes
            .customers
            .iter()
            .map(|(_, view)| serde_json::to_string(view).map_or(0, |json| json.len()))
            .sum::<usize>();
        serializing = serializing.min(started.elapsed().as_secs_f64());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "in-memory fold of {} demo events of {customers} customers (pages of {}): {:.0} events/s (best of {})",
        log.len(),
        args.page,
        log.len() as f64 / best,
        args.runs.max(1)
    )?;
    writeln!(
        out,
        "{transitions} transitions ({} late events re-folded their customer); the views' JSON: {:.1} MiB in {serializing:.2} s",
        refolds.0,
        state_bytes as f64 / 1_048_576.0
    )?;
    Ok(())
}
