//! Special functions the closed forms need: the Gauss hypergeometric series and stable
//! log/exp helpers.
//!
//! `ln Γ` and `ψ` come from `statrs`; the hypergeometric series is summed here because no
//! well-kept pure-Rust crate provides it (GSL bindings need a C library, `mathru` pulls BLAS).

use crate::error::{ClvError, Result};

/// Relative accuracy the series aims for: the bound on the remaining tail, not an estimate.
const SERIES_TOLERANCE: f64 = f64::EPSILON;

/// Terms a series may use before it is declared too slow (|z| within about 4e-5 of 1).
const MAX_TERMS: u32 = 1_000_000;

/// Running sums are divided by this whenever they exceed it, so that huge sums do not overflow.
const RESCALE: f64 = 1e250;

/// A sum held as `value · e^ln_scale`, so that it can exceed `f64::MAX`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScaledSum {
    pub(crate) value: f64,
    pub(crate) ln_scale: f64,
}

impl ScaledSum {
    /// The sum as a plain float (infinite when it does not fit).
    pub(crate) fn to_f64(self) -> f64 {
        if self.ln_scale == 0.0 {
            self.value
        } else {
            self.value * self.ln_scale.exp()
        }
    }

    /// The natural log of the sum, which must be positive.
    pub(crate) fn ln(self) -> f64 {
        self.value.ln() + self.ln_scale
    }
}

/// The reduced tail `V = Σ_{n≥1} (a)_n (b+1)_{n-1} zⁿ / ((c+1)_{n-1} n!)`, with
/// `₂F₁(a, b; c; z) = 1 + (b/c)·V`.
///
/// Dividing out the first `b` and `c` factors keeps `V` finite where `₂F₁ − 1` is `0/0` in
/// disguise (`b → 0`, which is `a → 1` in BG/NBD, and `c → 0`), and summing the tail directly
/// keeps full relative accuracy when `₂F₁` is close to 1.
///
/// Convergence: the series converges for every real `a, b, c` (with `c + 1` not a non-positive
/// integer) when `|z| < 1`, geometrically with ratio `→ |z|`. Once `n > max(-a, -b, -c)` every
/// later factor is positive, and the ratio of consecutive terms is then bounded for all later
/// terms by `ρ = |z|·(1 + |a+b-c-1|/(c+n) + |ab-c|/((c+n)(n+1)))`, so the rest of the series is
/// at most `|termₙ|·ρ/(1-ρ)`; summing stops when that bound is below `ε·|sum|`. For `z ≥ 0`
/// the terms past that point share one sign, so there is no cancellation among them.
pub(crate) fn reduced_tail(a: f64, b: f64, c: f64, z: f64) -> Result<ScaledSum> {
    if ![a, b, c, z].iter().all(|v| v.is_finite()) || z.abs() >= 1.0 {
        return Err(ClvError::InvalidArgument(format!(
            "hypergeometric series needs finite parameters and |z| < 1 (a={a}, b={b}, c={c}, z={z})"
        )));
    }
    if c + 1.0 <= 0.0 && (c + 1.0).fract() == 0.0 {
        return Err(ClvError::InvalidArgument(format!(
            "hypergeometric series has a pole at c={c}"
        )));
    }
    let kappa = (a + b - c - 1.0).abs();
    let mu = (a * b - c).abs();
    // Past this n, every factor a+n, b+n, c+n is positive.
    let signs_settle_after = -(a.min(b).min(c).min(0.0));
    let mut term = a * z;
    let mut sum = ScaledSum {
        value: term,
        ln_scale: 0.0,
    };
    for n in 1..MAX_TERMS {
        if term == 0.0 {
            return Ok(sum);
        }
        let nf = f64::from(n);
        if nf > signs_settle_after {
            let rho = z.abs() * (1.0 + kappa / (c + nf) + mu / ((c + nf) * (nf + 1.0)));
            if rho < 1.0 && term.abs() * rho / (1.0 - rho) <= SERIES_TOLERANCE * sum.value.abs() {
                return Ok(sum);
            }
        }
        term *= (a + nf) * (b + nf) * z / ((c + nf) * (nf + 1.0));
        sum.value += term;
        if sum.value.abs() > RESCALE {
            sum.value /= RESCALE;
            term /= RESCALE;
            sum.ln_scale += RESCALE.ln();
        }
    }
    Err(ClvError::SeriesDiverged(format!(
        "2F1 series (a={a}, b={b}, c={c}, z={z}) needs more than {MAX_TERMS} terms"
    )))
}

/// The Gauss hypergeometric function `₂F₁(a, b; c; z)` for `|z| < 1`, by its power series.
///
/// `c` must not be zero or a negative integer (a pole). Accurate to a few ulps for `0 ≤ z < 1`
/// once the terms settle to one sign (see the module's convergence note); for `z` near `-1`
/// the alternating terms can cancel. The cost grows like `1/(1-|z|)` terms.
pub fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> Result<f64> {
    if c <= 0.0 && c.fract() == 0.0 {
        return Err(ClvError::InvalidArgument(format!(
            "2F1 has a pole at c={c}"
        )));
    }
    let tail = reduced_tail(a, b, c, z)?;
    Ok(1.0 + b / c * tail.to_f64())
}

/// `ln(1 + eʸ)` without overflow for large `y` or loss of accuracy for very negative `y`.
pub(crate) fn softplus(y: f64) -> f64 {
    if y > 0.0 {
        y + (-y).exp().ln_1p()
    } else {
        y.exp().ln_1p()
    }
}

/// `ln(1 + k·u)/k`, continuous at `k = 0` (where it is `u`).
pub(crate) fn ln1p_over(k: f64, u: f64) -> f64 {
    if k == 0.0 { u } else { (k * u).ln_1p() / k }
}

/// `(eᵏᵍ − 1)/k`, continuous at `k = 0` (where it is `g`).
pub(crate) fn expm1_over(k: f64, g: f64) -> f64 {
    if k == 0.0 { g } else { (k * g).exp_m1() / k }
}
