//! BG/NBD fit time on the CDNOW sample and on 1,000,000 customers drawn (seeded) from the model
//! fitted to it, next to Python `lifetimes` fitting the same data in the same run when a Python
//! with `lifetimes` is found (`PATRON_BENCH_PYTHON`, else `target/venv-clv/bin/python`, which
//! `make bench-clv` sets up).
//!
//! ```text
//! cargo run -p patron-clv --release --example bench_vs_lifetimes
//! ```

#![allow(clippy::print_stdout, clippy::expect_used)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use chrono::NaiveDate;
use patron_clv::{BgNbdParams, Observation, PurchaseSummary, TimeUnit, fit_bgnbd, simulate};

const CDNOW: &str = include_str!("../tests/data/CDNOW_sample.txt");
const SYNTHETIC_CUSTOMERS: usize = 1_000_000;
const SEED: u64 = 20_260_601;

/// The CDNOW calibration period's customers (FHL 2005: up to 1997-09-30, in weeks).
fn cdnow() -> Vec<Observation> {
    let mut by_customer: std::collections::BTreeMap<u32, PurchaseSummary> = Default::default();
    for line in CDNOW.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let customer: u32 = fields[1]
            .parse()
            .expect("the fixture's customer ids are numbers");
        let day = NaiveDate::parse_from_str(fields[2], "%Y%m%d").expect("YYYYMMDD in the fixture");
        // Spend does not enter BG/NBD.
        by_customer
            .entry(customer)
            .or_default()
            .record_purchase(day, 0)
            .expect("a zero amount is valid");
    }
    let end = NaiveDate::from_ymd_opt(1997, 9, 30).expect("a valid date");
    by_customer
        .values()
        .filter_map(|s| s.observation(end, TimeUnit::Weeks))
        .collect()
}

/// The fastest of `runs` fits, and the fit.
fn time_fit(customers: &[Observation], runs: usize) -> (f64, BgNbdParams) {
    let mut best = f64::INFINITY;
    let mut params = None;
    for _ in 0..runs {
        let started = Instant::now();
        let report = fit_bgnbd(customers).expect("the benchmark data fits");
        best = best.min(started.elapsed().as_secs_f64());
        params = Some(report.params);
    }
    (best, params.expect("at least one run"))
}

fn write_csv(path: &Path, customers: &[Observation]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "frequency,recency,T")?;
    for c in customers {
        writeln!(out, "{},{},{}", c.frequency, c.recency, c.age)?;
    }
    out.flush()
}

/// A Python with `lifetimes`, if there is one.
fn python(target: &Path) -> Option<PathBuf> {
    let candidate = std::env::var_os("PATRON_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| target.join("venv-clv/bin/python"));
    let works = Command::new(&candidate)
        .args(["-c", "import lifetimes"])
        .output()
        .is_ok_and(|out| out.status.success());
    works.then_some(candidate)
}

/// `lifetimes`' fit time and parameters on a CSV, or why there are none.
fn lifetimes(python: &Path, csv: &Path) -> Result<(f64, String), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lifetimes_fit.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(csv)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("unexpected output {line:?}: {e}"))?;
    let seconds = value["seconds"]
        .as_f64()
        .ok_or_else(|| format!("no time in {line:?}"))?;
    let p = &value["params"];
    let params = format!(
        "r={:.4} alpha={:.4} a={:.4} b={:.4}",
        p["r"].as_f64().unwrap_or(f64::NAN),
        p["alpha"].as_f64().unwrap_or(f64::NAN),
        p["a"].as_f64().unwrap_or(f64::NAN),
        p["b"].as_f64().unwrap_or(f64::NAN)
    );
    Ok((seconds, params))
}

fn describe(p: &BgNbdParams) -> String {
    format!(
        "r={:.4} alpha={:.4} a={:.4} b={:.4}",
        p.r, p.alpha, p.a, p.b
    )
}

fn main() -> std::io::Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("clv-bench");
    std::fs::create_dir_all(&dir)?;
    if cfg!(debug_assertions) {
        println!("note: a debug build; run with --release for meaningful times");
    }

    let cdnow = cdnow();
    let (cdnow_seconds, fitted) = time_fit(&cdnow, 5);
    // Every synthetic customer observed for the CDNOW calibration's longest age (39 weeks).
    let synthetic = simulate(&fitted, SYNTHETIC_CUSTOMERS, 39.0, SEED).expect("valid parameters");
    let (synthetic_seconds, refitted) = time_fit(&synthetic, 1);

    let python = python(&target);
    let rows = [
        ("CDNOW sample", &cdnow, cdnow_seconds, fitted),
        (
            "synthetic (seeded)",
            &synthetic,
            synthetic_seconds,
            refitted,
        ),
    ];
    println!("BG/NBD maximum-likelihood fit, wall time (Rust: best of runs, single thread)");
    for (name, customers, seconds, params) in rows {
        let csv = dir.join(format!("{}.csv", name.split(' ').next().unwrap_or("data")));
        write_csv(&csv, customers)?;
        println!(
            "{name:<20} {:>9} customers  patron-clv {seconds:>8.3} s  {}",
            customers.len(),
            describe(&params)
        );
        match &python {
            None => println!(
                "{:<20} lifetimes: no Python with `lifetimes` (set PATRON_BENCH_PYTHON or run make bench-clv)",
                ""
            ),
            Some(python) => match lifetimes(python, &csv) {
                Ok((theirs, their_params)) => println!(
                    "{:<20} {:>9}            lifetimes  {theirs:>8.3} s  {their_params}  -> patron-clv is {:.1}x faster",
                    "",
                    "",
                    theirs / seconds
                ),
                Err(why) => println!("{:<20} lifetimes failed: {why}", ""),
            },
        }
    }
    Ok(())
}
