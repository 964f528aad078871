//! The segment rule table.

use crate::{Rfm, segment};

/// Scores from a compact `rfm` number, e.g. `rfm(534)`.
fn rfm(digits: u16) -> Rfm {
    let digit = |d: u16| u8::try_from(d % 10).unwrap();
    Rfm {
        r: digit(digits / 100),
        f: digit(digits / 10),
        m: digit(digits),
    }
}

#[test]
fn each_row_of_the_table_has_an_example() {
    let cases = [
        (555, segment::CHAMPIONS),
        (444, segment::CHAMPIONS),
        (453, segment::LOYAL),
        (341, segment::LOYAL),
        (355, segment::LOYAL),
        (515, segment::NEW),
        (411, segment::NEW),
        (525, segment::POTENTIAL_LOYALISTS),
        (432, segment::POTENTIAL_LOYALISTS),
        (155, segment::CANT_LOSE_THEM),
        (244, segment::CANT_LOSE_THEM),
        (243, segment::AT_RISK),
        (135, segment::AT_RISK),
        (333, segment::NEED_ATTENTION),
        (311, segment::NEED_ATTENTION),
        (225, segment::HIBERNATING),
        (211, segment::HIBERNATING),
        (125, segment::LOST),
        (111, segment::LOST),
    ];
    for (digits, expected) in cases {
        assert_eq!(rfm(digits).segment(), expected, "scores {digits}");
    }
}

#[test]
fn every_score_combination_has_exactly_one_listed_segment_and_all_are_used() {
    let mut used = std::collections::BTreeSet::new();
    for r in 1..=5 {
        for f in 1..=5 {
            for m in 1..=5 {
                let name = Rfm { r, f, m }.segment();
                assert!(
                    segment::ALL.contains(&name),
                    "{r}{f}{m} gave unlisted {name}"
                );
                used.insert(name);
            }
        }
    }
    assert_eq!(
        used.len(),
        segment::ALL.len(),
        "every segment is reachable: {used:?}"
    );
}

#[test]
fn out_of_range_scores_count_as_the_nearer_end() {
    for (odd, clamped) in [
        (rfm(0), rfm(111)),
        (rfm(909), rfm(515)),
        (rfm(99), rfm(155)),
    ] {
        assert_eq!(odd.segment(), clamped.segment(), "{odd:?} like {clamped:?}");
    }
}
