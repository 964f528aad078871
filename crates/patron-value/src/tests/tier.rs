//! A/B/C tiers: hand-computed examples and the boundary customer.

use super::shuffled;
use crate::{DEFAULT_A_SHARE_PERCENT, DEFAULT_B_SHARE_PERCENT, Tier, abc_tiers};

/// Tiers with the default 80/15 shares.
fn tiers<K: Ord + Clone>(population: &[(K, i64)]) -> Vec<(K, Tier)> {
    abc_tiers(population, DEFAULT_A_SHARE_PERCENT, DEFAULT_B_SHARE_PERCENT)
}

#[test]
fn tiers_by_cumulative_share_in_rank_order() {
    let population = [
        ("g", -50),
        ("d", 60),
        ("a", 500),
        ("f", 0),
        ("c", 100),
        ("e", 40),
        ("b", 300),
    ];
    // Total of positive revenue: 1000. Share before each: a 0%, b 50%, c 80%, d 90%, e 96%.
    assert_eq!(
        tiers(&population),
        [
            ("a", Tier::A),
            ("b", Tier::A), // 50% before, 80% after
            ("c", Tier::B), // exactly 80% before: no longer A
            ("d", Tier::B), // 90% before
            ("e", Tier::C), // 96% before ≥ 95%
            ("f", Tier::C), // zero revenue
            ("g", Tier::C), // negative, and not subtracted from the total
        ]
    );
}

#[test]
fn the_boundary_customer_stays_in_the_higher_tier() {
    // Total 1000. Share before: w 0%, x 70% (crosses 80%), y 85%, z 95% (exactly).
    let population = [("w", 700), ("x", 150), ("y", 100), ("z", 50)];
    assert_eq!(
        tiers(&population),
        [
            ("w", Tier::A),
            ("x", Tier::A),
            ("y", Tier::B),
            ("z", Tier::C)
        ]
    );
    // One unit less for y puts z's start just below 95%: z is B.
    let population = [("w", 700), ("x", 150), ("y", 99), ("z", 50)];
    let got = tiers(&population);
    assert_eq!(got[3], ("z", Tier::B), "949/999 < 95%: {got:?}");
}

#[test]
fn the_top_customer_is_always_a() {
    assert_eq!(
        tiers(&[("whale", 900), ("minnow", 100)]),
        [("whale", Tier::A), ("minnow", Tier::B)],
        "nothing before the whale; 90% before the minnow"
    );
    assert_eq!(tiers(&[("only", 1)]), [("only", Tier::A)]);
    assert_eq!(
        abc_tiers(&[("only", 1)], 0, 0),
        [("only", Tier::C)],
        "no A or B share at all"
    );
}

#[test]
fn equal_revenues_are_ranked_by_key() {
    // Total 400; share before: a 0%, b 25%, c 50%, d 75%. With 40/15: a, b A; c B; d C.
    let population = [("d", 100), ("b", 100), ("c", 100), ("a", 100)];
    assert_eq!(
        abc_tiers(&population, 40, 15),
        [
            ("a", Tier::A),
            ("b", Tier::A),
            ("c", Tier::B),
            ("d", Tier::C)
        ]
    );
}

#[test]
fn no_positive_revenue_means_all_c_and_empty_means_empty() {
    assert!(tiers::<u8>(&[]).is_empty());
    assert_eq!(
        tiers(&[(1u8, 0), (2, -10), (3, 0)]),
        [(1, Tier::C), (3, Tier::C), (2, Tier::C)],
        "zero before negative, ties by key"
    );
}

#[test]
fn shares_above_100_count_as_100() {
    let population = [("a", 5), ("b", 3), ("c", 2)];
    let all_a = [("a", Tier::A), ("b", Tier::A), ("c", Tier::A)];
    assert_eq!(abc_tiers(&population, 100, 0), all_a);
    assert_eq!(abc_tiers(&population, 250, 0), all_a);
    // 50/90: A up to 50%, B up to 100%.
    assert_eq!(
        abc_tiers(&population, 50, 90),
        [("a", Tier::A), ("b", Tier::B), ("c", Tier::B)]
    );
}

#[test]
fn huge_revenues_do_not_overflow() {
    let population = [(1u8, i64::MAX), (2, i64::MAX), (3, i64::MAX), (4, i64::MAX)];
    assert_eq!(
        abc_tiers(&population, 40, 15),
        [(1, Tier::A), (2, Tier::A), (3, Tier::B), (4, Tier::C)],
        "0%, 25%, 50%, 75% of 4 * i64::MAX before each, with 40/15"
    );
}

#[test]
fn tiers_do_not_depend_on_input_order() {
    let population: Vec<(u32, i64)> = (0..30u32)
        .map(|k| (k, i64::from((k * 37) % 11) * 1_000 - 2_000))
        .collect();
    let expected = tiers(&population);
    assert!(
        expected.iter().any(|(_, t)| *t == Tier::A) && expected.iter().any(|(_, t)| *t == Tier::B),
        "the example reaches every tier: {expected:?}"
    );
    for seed in 1..=10 {
        assert_eq!(tiers(&shuffled(&population, seed)), expected, "seed {seed}");
    }
}
