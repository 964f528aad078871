//! Unit tests. Reference values come from mpmath at 50 significant digits (formulas written
//! out from the papers, not from any library); each block says how.

mod bgnbd;
mod clv;
mod fit;
mod gamma_gamma;
mod special;
mod summary;

/// Asserts `actual` is within `rel` relative error of `expected`.
#[track_caller]
fn assert_close(actual: f64, expected: f64, rel: f64, what: &str) {
    let error = ((actual - expected) / expected).abs();
    assert!(
        error <= rel,
        "{what}: expected {expected:e}, got {actual:e} (relative error {error:e} > {rel:e})"
    );
}
