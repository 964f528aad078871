//! A/B/C value tiers by cumulative share of net revenue (Pareto / ABC analysis).

use std::cmp::Reverse;

use serde::{Deserialize, Serialize};

/// The usual share of revenue, in percent, that the A customers make.
pub const DEFAULT_A_SHARE_PERCENT: u8 = 80;
/// The usual share of revenue, in percent, that the B customers make on top of the A customers'.
pub const DEFAULT_B_SHARE_PERCENT: u8 = 15;

/// A customer's value tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Tier {
    /// The top customers, who together make the first `a_share` of revenue.
    A,
    /// The next customers, up to `a_share + b_share` of revenue.
    B,
    /// Everyone else, including every customer with zero or negative net revenue.
    C,
}

impl Tier {
    /// The stable name: `A`, `B` or `C`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Tier::A => "A",
            Tier::B => "B",
            Tier::C => "C",
        }
    }
}

/// Tiers every customer of `population` (key, net revenue in minor units) by cumulative revenue
/// share; the result is in rank order: net revenue descending, ties by key ascending.
///
/// The rule: `total` is the sum of the positive net revenues. Walking the ranking, each customer
/// with positive revenue has a `before`: the revenue of the customers ranked above it. It is
/// **A** if `before × 100 < total × a_share_percent`, else **B** if
/// `before × 100 < total × (a_share_percent + b_share_percent)`, else **C**. Customers with
/// zero or negative revenue are always C and do not count in `total`. Arithmetic is exact
/// (`i128`), never a float.
///
/// So the boundary customer, whose own revenue carries the cumulative share past a threshold,
/// stays in the higher tier: with shares 80/15, a customer taking the cumulative share from 70%
/// to 85% is A, and the next one (starting at 85%) is B. The top paying customer is always A,
/// however dominant. Equal revenues straddling a threshold are separated by key. Shares above
/// 100 (alone or together) count as 100.
pub fn abc_tiers<K: Ord + Clone>(
    population: &[(K, i64)],
    a_share_percent: u8,
    b_share_percent: u8,
) -> Vec<(K, Tier)> {
    let a_share = i128::from(a_share_percent.min(100));
    let ab_share = (i128::from(a_share_percent) + i128::from(b_share_percent)).min(100);
    let mut ranked: Vec<&(K, i64)> = population.iter().collect();
    ranked.sort_by(|x, y| (Reverse(x.1), &x.0).cmp(&(Reverse(y.1), &y.0)));
    let total: i128 = ranked
        .iter()
        .map(|(_, revenue)| i128::from(*revenue).max(0))
        .sum();
    let mut cumulative: i128 = 0;
    ranked
        .into_iter()
        .map(|(key, revenue)| {
            let tier = if *revenue <= 0 {
                Tier::C
            } else {
                let before = cumulative;
                cumulative += i128::from(*revenue);
                if before * 100 < total * a_share {
                    Tier::A
                } else if before * 100 < total * ab_share {
                    Tier::B
                } else {
                    Tier::C
                }
            };
            (key.clone(), tier)
        })
        .collect()
}
