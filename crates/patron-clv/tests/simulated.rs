//! Fitting BG/NBD on customers drawn from the model recovers the parameters they were drawn
//! with, and a million customers fit quickly.

use std::time::Instant;

use patron_clv::{BgNbdParams, fit_bgnbd, simulate};

/// CDNOW-like parameters (FHL 2005), in weeks.
const TRUTH: BgNbdParams = BgNbdParams {
    r: 0.243,
    alpha: 4.414,
    a: 0.793,
    b: 2.426,
};

#[test]
fn simulation_is_reproducible_from_its_seed() {
    let first = simulate(&TRUTH, 1_000, 52.0, 42).unwrap();
    assert_eq!(first, simulate(&TRUTH, 1_000, 52.0, 42).unwrap());
    assert_ne!(first, simulate(&TRUTH, 1_000, 52.0, 43).unwrap());
    assert!(first.iter().all(|c| c.age == 52.0 && c.recency <= c.age));
}

#[test]
fn simulated_purchases_match_the_closed_form_mean() {
    // E[X(T)] from FHL 2005 eq. 9 against the average of 50,000 draws (sd of X is about 3,
    // so the standard error of the mean is about 0.014).
    let customers = simulate(&TRUTH, 50_000, 52.0, 3).unwrap();
    let mean = customers
        .iter()
        .map(|c| f64::from(c.frequency))
        .sum::<f64>()
        / 50000.0;
    let expected = TRUTH.expected_purchases_new(52.0).unwrap();
    assert!(
        (mean - expected).abs() < 0.06,
        "simulated mean {mean} vs closed form {expected}"
    );
}

/// Asserts `fitted` is within `tolerance` (relative) of the true value.
fn assert_recovered(name: &str, fitted: f64, truth: f64, tolerance: f64) {
    let error = (fitted - truth).abs() / truth;
    assert!(
        error <= tolerance,
        "{name}: fitted {fitted} should be within {:.0}% of {truth} (off by {:.1}%)",
        tolerance * 100.0,
        error * 100.0
    );
}

#[test]
fn fitting_50000_simulated_customers_recovers_the_parameters() {
    // 78 weeks of history each. Over seeds 1-6 the estimates scatter with standard deviations
    // of about 1.3% (r), 1.5% (alpha), 2% (a) and 2.7% (b); the tolerances are 4-6 of those.
    let customers = simulate(&TRUTH, 50_000, 78.0, 1).unwrap();
    let report = fit_bgnbd(&customers).expect("the fit converges");
    let BgNbdParams { r, alpha, a, b } = report.params;
    assert_recovered("r", r, TRUTH.r, 0.06);
    assert_recovered("alpha", alpha, TRUTH.alpha, 0.08);
    assert_recovered("a", a, TRUTH.a, 0.12);
    assert_recovered("b", b, TRUTH.b, 0.15);
    assert!(report.converged && report.gradient_norm <= 1e-7);
}

#[test]
#[ignore = "timing benchmark; run with --release -- --ignored --nocapture"]
fn fit_one_million_customers() {
    let start = Instant::now();
    let customers = simulate(&TRUTH, 1_000_000, 78.0, 2024).unwrap();
    let simulated = start.elapsed();
    let start = Instant::now();
    let report = fit_bgnbd(&customers).expect("the fit converges");
    let fitted = start.elapsed();
    println!("simulated 1,000,000 customers in {simulated:?}; fitted in {fitted:?}: {report:#?}");
    let BgNbdParams { r, alpha, a, b } = report.params;
    // A million customers pin the parameters down about 4.5 times tighter than 50,000.
    assert_recovered("r", r, TRUTH.r, 0.02);
    assert_recovered("alpha", alpha, TRUTH.alpha, 0.03);
    assert_recovered("a", a, TRUTH.a, 0.04);
    assert_recovered("b", b, TRUTH.b, 0.05);
}
