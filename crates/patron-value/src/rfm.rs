//! RFM scoring: recency, frequency and monetary quintiles over the population of buyers.

use serde::{Deserialize, Serialize};

use crate::segment;

/// One customer's raw RFM figures, as [`crate::CustomerValue::rfm_input`] computes them at a
/// given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RfmInput {
    /// Whole days since the latest purchase (fewer is better).
    pub recency_days: i64,
    /// Number of purchases (more is better).
    pub frequency: u64,
    /// Net revenue in minor units of the reporting currency (more is better).
    pub monetary_minor: i64,
}

/// A customer's RFM quintile scores, each 1–5 with 5 the best.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rfm {
    /// Recency score: 5 for the most recent buyers.
    pub r: u8,
    /// Frequency score: 5 for the most frequent buyers.
    pub f: u8,
    /// Monetary score: 5 for the highest net revenue.
    pub m: u8,
}

impl Rfm {
    /// The named segment of these scores, one of [`segment::ALL`], by the rule table in
    /// [`segment`] (first match wins).
    pub fn segment(&self) -> &'static str {
        let Rfm { r, f, m } = *self;
        if r >= 4 && f >= 4 && m >= 4 {
            segment::CHAMPIONS
        } else if r >= 3 && f >= 4 {
            segment::LOYAL
        } else if r >= 4 && f <= 1 {
            segment::NEW
        } else if r >= 4 {
            segment::POTENTIAL_LOYALISTS
        } else if r <= 2 && f >= 4 && m >= 4 {
            segment::CANT_LOSE_THEM
        } else if r <= 2 && f >= 3 {
            segment::AT_RISK
        } else if r >= 3 {
            segment::NEED_ATTENTION
        } else if r >= 2 {
            segment::HIBERNATING
        } else {
            segment::LOST
        }
    }
}

/// Scores every customer of `population` 1–5 on recency, frequency and monetary value, as
/// quintiles over the population, 5 the best (fewest days since the latest purchase, most
/// orders, highest net revenue).
///
/// The rule, per dimension: with `n` customers, a customer of whom `w` others have a strictly
/// worse value scores `1 + ⌊5·w / n⌋`. That is, customers are ranked worst to best and take the
/// quintile of their position, and tied customers all take the position of the first of their
/// tie (the worst-ranked), so equal values always get equal scores and a score is only earned
/// by beating other customers: when 90% of buyers have one order, they all score f = 1. Five
/// customers with distinct values score exactly 1, 2, 3, 4 and 5; a lone customer, or a
/// population where everyone is equal, scores 1.
///
/// Customers with no purchases must be left out by the caller (they have no recency; see
/// [`crate::CustomerValue::rfm_input`]), or they would push every buyer's scores up. Keys are
/// expected to be unique; duplicates are scored as separate customers. The result is sorted by
/// key (then by input), so it does not depend on the order of `population`. Time does not enter
/// here: it went into each input's `recency_days`.
pub fn rfm_scores<K: Ord + Clone>(population: &[(K, RfmInput)]) -> Vec<(K, Rfm)> {
    let n = population.len();
    let recency = sorted(population, |input| input.recency_days);
    let frequency = sorted(population, |input| input.frequency);
    let monetary = sorted(population, |input| input.monetary_minor);
    let mut scored: Vec<(K, RfmInput, Rfm)> = population
        .iter()
        .map(|(key, input)| {
            // Worse recency is more days; worse frequency and monetary are smaller values.
            let worse_r = n - recency.partition_point(|&days| days <= input.recency_days);
            let worse_f = frequency.partition_point(|&orders| orders < input.frequency);
            let worse_m = monetary.partition_point(|&minor| minor < input.monetary_minor);
            let rfm = Rfm {
                r: quintile(worse_r, n),
                f: quintile(worse_f, n),
                m: quintile(worse_m, n),
            };
            (key.clone(), *input, rfm)
        })
        .collect();
    scored.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    scored.into_iter().map(|(key, _, rfm)| (key, rfm)).collect()
}

/// One dimension of the population's inputs, sorted ascending.
fn sorted<K, T: Ord>(population: &[(K, RfmInput)], field: impl Fn(&RfmInput) -> T) -> Vec<T> {
    let mut values: Vec<T> = population.iter().map(|(_, input)| field(input)).collect();
    values.sort_unstable();
    values
}

/// `1 + ⌊5·worse / n⌋`, for `worse < n`: the 1–5 quintile of a customer beating `worse` others.
fn quintile(worse: usize, n: usize) -> u8 {
    // usize -> u128 is lossless; worse < n keeps the quotient in 0..=4.
    let index = (5 * worse as u128) / (n.max(1) as u128);
    match index {
        0 => 1,
        1 => 2,
        2 => 3,
        3 => 4,
        _ => 5,
    }
}
