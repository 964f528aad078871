//! The fitting objectives: mean negative log-likelihoods and their analytic gradients over
//! log-parameters, evaluated in one tight pass over aggregated data.
//!
//! Identical inputs are merged into one weighted row, rows are grouped by frequency so that
//! every `ln Γ`/`ψ` term that depends only on `x` is computed once per group, and rows are
//! sorted by age so that `ln(α+T)` is reused across a run of equal ages. An evaluation
//! allocates nothing.

use statrs::function::gamma::{digamma, ln_gamma};

use crate::error::{ClvError, Result};
use crate::observation::{Observation, SpendObservation};

/// A smooth objective over `N` log-parameters.
pub(crate) trait Objective<const N: usize> {
    /// The mean negative log-likelihood at `exp(theta)` and its gradient with respect to `theta`.
    fn evaluate(&self, theta: &[f64; N]) -> (f64, [f64; N]);

    /// The number of customers the mean is over.
    fn customers(&self) -> f64;
}

/// Rows sharing one frequency.
#[derive(Debug)]
struct Group {
    x: f64,
    rows: std::ops::Range<usize>,
    weight: f64,
}

/// BG/NBD data: weighted `(t_x, T)` rows grouped by `x`.
#[derive(Debug)]
pub(crate) struct BgNbdData {
    groups: Vec<Group>,
    recency: Vec<f64>,
    age: Vec<f64>,
    weight: Vec<f64>,
    total_weight: f64,
}

/// Sorts `keys`, merges equal neighbours into weights, and groups the result by frequency.
fn aggregate(mut keys: Vec<(u32, f64, f64)>) -> (Vec<Group>, Vec<(f64, f64, f64)>) {
    keys.sort_unstable_by(|l, r| {
        l.0.cmp(&r.0)
            .then(l.1.total_cmp(&r.1))
            .then(l.2.total_cmp(&r.2))
    });
    let mut rows: Vec<(f64, f64, f64)> = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut previous: Option<(u32, f64, f64)> = None;
    for key in keys {
        let (x, first, second) = key;
        if previous == Some(key) {
            if let Some(last) = rows.last_mut() {
                last.2 += 1.0;
            }
        } else {
            rows.push((first, second, 1.0));
        }
        match groups.last_mut() {
            Some(group) if previous.is_some_and(|p| p.0 == x) => {
                group.rows.end = rows.len();
                group.weight += 1.0;
            }
            _ => groups.push(Group {
                x: f64::from(x),
                rows: rows.len() - 1..rows.len(),
                weight: 1.0,
            }),
        }
        previous = Some(key);
    }
    (groups, rows)
}

impl BgNbdData {
    /// Checks and aggregates the observations.
    pub(crate) fn new(customers: &[Observation]) -> Result<Self> {
        if customers.is_empty() {
            return Err(ClvError::NoData);
        }
        let mut keys = Vec::with_capacity(customers.len());
        for (index, customer) in customers.iter().enumerate() {
            customer
                .check()
                .map_err(|reason| ClvError::InvalidObservation { index, reason })?;
            // Sorted by age first so that equal ages are adjacent within a frequency group.
            keys.push((customer.frequency, customer.age, customer.recency));
        }
        let (groups, rows) = aggregate(keys);
        Ok(Self {
            groups,
            age: rows.iter().map(|r| r.0).collect(),
            recency: rows.iter().map(|r| r.1).collect(),
            weight: rows.iter().map(|r| r.2).collect(),
            total_weight: customers.len() as f64,
        })
    }

    /// Distinct `(x, t_x, T)` rows after aggregation.
    pub(crate) fn distinct(&self) -> usize {
        self.weight.len()
    }
}

impl Objective<4> for BgNbdData {
    fn customers(&self) -> f64 {
        self.total_weight
    }

    fn evaluate(&self, theta: &[f64; 4]) -> (f64, [f64; 4]) {
        let [r, alpha, a, b] = theta.map(f64::exp);
        let (ln_alpha, ln_a) = (alpha.ln(), a.ln());
        let (lg_r, lg_b, lg_ab) = (ln_gamma(r), ln_gamma(b), ln_gamma(a + b));
        let (psi_r, psi_b, psi_ab) = (digamma(r), digamma(b), digamma(a + b));
        let (mut ll, mut d_r, mut d_alpha, mut d_a, mut d_b) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for group in &self.groups {
            let x = group.x;
            let rx = r + x;
            let head = ln_gamma(rx) - lg_r + r * ln_alpha + lg_ab + ln_gamma(b + x)
                - lg_b
                - ln_gamma(a + b + x);
            let (psi_rx, psi_bx, psi_abx) = (digamma(rx), digamma(b + x), digamma(a + b + x));
            ll += group.weight * head;
            d_r += group.weight * (psi_rx - psi_r + ln_alpha);
            d_alpha += group.weight * r / alpha;
            d_a += group.weight * (psi_ab - psi_abx);
            d_b += group.weight * (psi_ab + psi_bx - psi_b - psi_abx);
            // ln(a/(b+x−1)) is the log-odds offset of "dropped out after the last purchase".
            let dropped_offset = if x > 0.0 {
                ln_a - (b + x - 1.0).ln()
            } else {
                0.0
            };
            let (mut s_ll, mut s_r, mut s_alpha, mut s_dropped) = (0.0, 0.0, 0.0, 0.0);
            let (mut cached_age, mut ln_age) = (f64::NAN, 0.0);
            for i in group.rows.clone() {
                let (age, w) = (self.age[i], self.weight[i]);
                if age != cached_age {
                    cached_age = age;
                    ln_age = (alpha + age).ln();
                }
                let alive = -rx * ln_age;
                if x == 0.0 {
                    s_ll += w * alive;
                    s_r -= w * ln_age;
                    s_alpha -= w * rx / (alpha + age);
                    continue;
                }
                let recency = self.recency[i];
                let ln_recency = (alpha + recency).ln();
                let dropped = dropped_offset - rx * ln_recency;
                // share = e^dropped / (e^alive + e^dropped), from one exp.
                let e = (-(dropped - alive).abs()).exp();
                let share = if dropped > alive {
                    1.0 / (1.0 + e)
                } else {
                    e / (1.0 + e)
                };
                s_ll += w * (alive.max(dropped) + e.ln_1p());
                s_r -= w * ((1.0 - share) * ln_age + share * ln_recency);
                s_alpha -= w * rx * ((1.0 - share) / (alpha + age) + share / (alpha + recency));
                s_dropped += w * share;
            }
            ll += s_ll;
            d_r += s_r;
            d_alpha += s_alpha;
            if x > 0.0 {
                d_a += s_dropped / a;
                d_b -= s_dropped / (b + x - 1.0);
            }
        }
        let n = self.total_weight;
        (
            -ll / n,
            [
                -d_r * r / n,
                -d_alpha * alpha / n,
                -d_a * a / n,
                -d_b * b / n,
            ],
        )
    }
}

/// Gamma-Gamma data: weighted `(z̄, ln z̄)` rows grouped by `x`.
#[derive(Debug)]
pub(crate) struct GammaGammaData {
    groups: Vec<Group>,
    mean: Vec<f64>,
    ln_mean: Vec<f64>,
    weight: Vec<f64>,
    total_weight: f64,
}

impl GammaGammaData {
    /// Checks and aggregates the observations.
    pub(crate) fn new(customers: &[SpendObservation]) -> Result<Self> {
        if customers.is_empty() {
            return Err(ClvError::NoData);
        }
        let mut keys = Vec::with_capacity(customers.len());
        for (index, customer) in customers.iter().enumerate() {
            customer
                .check()
                .map_err(|reason| ClvError::InvalidObservation { index, reason })?;
            keys.push((customer.frequency, customer.mean_spend, 0.0));
        }
        let (groups, rows) = aggregate(keys);
        Ok(Self {
            groups,
            mean: rows.iter().map(|r| r.0).collect(),
            ln_mean: rows.iter().map(|r| r.0.ln()).collect(),
            weight: rows.iter().map(|r| r.2).collect(),
            total_weight: customers.len() as f64,
        })
    }

    /// Distinct `(x, z̄)` rows after aggregation.
    pub(crate) fn distinct(&self) -> usize {
        self.weight.len()
    }

    /// The mean of the customers' mean spends, a scale to start the fit from.
    pub(crate) fn average_mean(&self) -> f64 {
        let total: f64 = self.mean.iter().zip(&self.weight).map(|(m, w)| m * w).sum();
        total / self.total_weight
    }
}

impl Objective<3> for GammaGammaData {
    fn customers(&self) -> f64 {
        self.total_weight
    }

    fn evaluate(&self, theta: &[f64; 3]) -> (f64, [f64; 3]) {
        let [p, q, gamma] = theta.map(f64::exp);
        let (lg_q, psi_q, ln_gamma_scale) = (ln_gamma(q), digamma(q), gamma.ln());
        let (mut ll, mut d_p, mut d_q, mut d_gamma) = (0.0, 0.0, 0.0, 0.0);
        for group in &self.groups {
            let x = group.x;
            let px = p * x;
            let (psi_pxq, psi_px) = (digamma(px + q), digamma(px));
            let ln_x = x.ln();
            ll += group.weight
                * (ln_gamma(px + q) - ln_gamma(px) - lg_q + q * ln_gamma_scale + px * ln_x);
            d_p += group.weight * x * (psi_pxq - psi_px + ln_x);
            d_q += group.weight * (psi_pxq - psi_q + ln_gamma_scale);
            d_gamma += group.weight * q / gamma;
            let (mut s_ll, mut s_ln_mean, mut s_ln_total, mut s_inv_total) = (0.0, 0.0, 0.0, 0.0);
            for i in group.rows.clone() {
                let (w, ln_mean) = (self.weight[i], self.ln_mean[i]);
                let total = gamma + x * self.mean[i];
                let ln_total = total.ln();
                s_ll += w * ((px - 1.0) * ln_mean - (px + q) * ln_total);
                s_ln_mean += w * ln_mean;
                s_ln_total += w * ln_total;
                s_inv_total += w / total;
            }
            ll += s_ll;
            d_p += x * (s_ln_mean - s_ln_total);
            d_q -= s_ln_total;
            d_gamma -= (px + q) * s_inv_total;
        }
        let n = self.total_weight;
        (-ll / n, [-d_p * p / n, -d_q * q / n, -d_gamma * gamma / n])
    }
}
