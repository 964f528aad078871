//! RFM quintile scores: hand-computed examples, the tie rule and order independence.

use super::shuffled;
use crate::{Rfm, RfmInput, rfm_scores};

/// An RFM input.
fn input(recency_days: i64, frequency: u64, monetary_minor: i64) -> RfmInput {
    RfmInput {
        recency_days,
        frequency,
        monetary_minor,
    }
}

/// Scores as `(key, "rfm")` strings, e.g. `("a", "531")`, for compact expectations.
fn compact(scores: &[(&'static str, Rfm)]) -> Vec<(&'static str, String)> {
    scores
        .iter()
        .map(|(key, s)| (*key, format!("{}{}{}", s.r, s.f, s.m)))
        .collect()
}

#[test]
fn five_distinct_customers_score_one_to_five_on_each_dimension() {
    let population = [
        ("a", input(40, 3, 500)),
        ("b", input(10, 1, 100)),
        ("c", input(30, 5, 300)),
        ("d", input(0, 2, 200)),
        ("e", input(20, 4, 400)),
    ];
    let scores = rfm_scores(&population);
    let expected = [
        ("a", "135"), // most days ago, 3rd in orders, highest spend
        ("b", "411"),
        ("c", "253"),
        ("d", "522"), // most recent
        ("e", "344"),
    ];
    let expected: Vec<(&str, String)> = expected
        .iter()
        .map(|(k, s)| (*k, (*s).to_owned()))
        .collect();
    assert_eq!(compact(&scores), expected);
}

#[test]
fn quintiles_follow_the_count_of_strictly_worse_customers() {
    // n = 7 distinct frequencies: 1 + floor(5w/7) for w = 0..6 is 1,1,2,3,3,4,5.
    let population: Vec<(u32, RfmInput)> = (0..7u32)
        .map(|k| (k, input(0, u64::from(k) + 1, 0)))
        .collect();
    let f: Vec<u8> = rfm_scores(&population).iter().map(|(_, s)| s.f).collect();
    assert_eq!(f, [1, 1, 2, 3, 3, 4, 5], "frequency scores of 1..=7 orders");

    // n = 10: two customers per quintile.
    let population: Vec<(u32, RfmInput)> = (0..10u32)
        .map(|k| (k, input(i64::from(k) * 3, 1, i64::from(k) * 100 - 450)))
        .collect();
    let scores = rfm_scores(&population);
    let r: Vec<u8> = scores.iter().map(|(_, s)| s.r).collect();
    let m: Vec<u8> = scores.iter().map(|(_, s)| s.m).collect();
    assert_eq!(r, [5, 5, 4, 4, 3, 3, 2, 2, 1, 1], "fewer days is better");
    assert_eq!(
        m,
        [1, 1, 2, 2, 3, 3, 4, 4, 5, 5],
        "negative net ranks lowest"
    );
    assert!(
        scores.iter().all(|(_, s)| s.f == 1),
        "everyone has 1 order, so nobody beats anybody: {scores:?}"
    );
}

#[test]
fn ties_take_the_score_of_the_first_of_the_tie() {
    let population = [
        ("a", input(7, 1, 100)),
        ("b", input(7, 1, 100)),
        ("c", input(7, 1, 300)),
        ("d", input(7, 2, 300)),
        ("e", input(7, 5, 500)),
    ];
    let scores = rfm_scores(&population);
    let expected = [
        ("a", "111"),
        ("b", "111"),
        ("c", "113"), // 2 customers spent less: 1 + floor(10/5) = 3, like d
        ("d", "143"), // 3 customers have fewer orders: 1 + floor(15/5) = 4
        ("e", "155"),
    ];
    let expected: Vec<(&str, String)> = expected
        .iter()
        .map(|(k, s)| (*k, (*s).to_owned()))
        .collect();
    assert_eq!(
        compact(&scores),
        expected,
        "all recency equal, so all r = 1"
    );

    // Nine one-time buyers and one repeat buyer: only the repeat buyer earns a score.
    let mut population: Vec<(u32, RfmInput)> = (0..9u32).map(|k| (k, input(5, 1, 10))).collect();
    population.push((9, input(5, 3, 10)));
    let f: Vec<u8> = rfm_scores(&population).iter().map(|(_, s)| s.f).collect();
    assert_eq!(
        f,
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 5],
        "beats 9 of 10: 1 + floor(45/10)"
    );
}

#[test]
fn scores_do_not_depend_on_input_order() {
    // 40 customers with many ties: values drawn from small ranges.
    let population: Vec<(String, RfmInput)> = (0..40u64)
        .map(|k| {
            let mix = k.wrapping_mul(2_654_435_761) % 1_000;
            let recency = i64::try_from(mix % 9).unwrap() * 10;
            let monetary = i64::try_from(mix % 13).unwrap() * 250 - 500;
            (format!("c-{k:02}"), input(recency, 1 + mix % 4, monetary))
        })
        .collect();
    let expected = rfm_scores(&population);
    assert_eq!(expected.len(), 40);
    let keys: Vec<&String> = expected.iter().map(|(k, _)| k).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "result sorted by key");
    for seed in 1..=10 {
        assert_eq!(
            rfm_scores(&shuffled(&population, seed)),
            expected,
            "seed {seed}"
        );
    }
    // Equal inputs, equal scores, whoever they belong to.
    for (i, (key_a, a)) in population.iter().enumerate() {
        for (key_b, b) in &population[i + 1..] {
            if a == b {
                let score = |key: &String| expected.iter().find(|(k, _)| k == key).unwrap().1;
                assert_eq!(score(key_a), score(key_b), "{key_a} and {key_b} tie");
            }
        }
    }
}

#[test]
fn empty_single_and_uniform_populations() {
    assert!(rfm_scores::<u8>(&[]).is_empty(), "nothing to score");
    assert_eq!(
        rfm_scores(&[("only", input(3, 2, 900))]),
        [("only", Rfm { r: 1, f: 1, m: 1 })],
        "a lone customer beats nobody"
    );
    let uniform: Vec<(u8, RfmInput)> = (0..6).map(|k| (k, input(4, 2, 50))).collect();
    assert!(
        rfm_scores(&uniform)
            .iter()
            .all(|(_, s)| *s == Rfm { r: 1, f: 1, m: 1 }),
        "all equal, all 1"
    );
}

#[test]
fn duplicate_keys_are_scored_separately_and_deterministically() {
    let population = [
        ("x", input(1, 9, 9)),
        ("y", input(5, 5, 5)),
        ("x", input(9, 1, 1)),
    ];
    let expected = rfm_scores(&population);
    assert_eq!(
        compact(&expected),
        [
            ("x", "444".to_owned()),
            ("x", "111".to_owned()),
            ("y", "222".to_owned())
        ],
        "n = 3 scores 1, 2, 4 (1 + floor(5w/3)); duplicates ordered by input: recency 1 before 9"
    );
    for seed in 1..=5 {
        assert_eq!(
            rfm_scores(&shuffled(&population, seed)),
            expected,
            "seed {seed}"
        );
    }
}
