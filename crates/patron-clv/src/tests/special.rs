use super::assert_close;
use crate::ClvError;
use crate::special::hyp2f1;

/// `mpmath.hyp2f1(a, b, c, z)` at 50 digits.
const CASES: [(f64, f64, f64, f64, f64); 7] = [
    // 2F1(1, 1; 2; z) = -ln(1 - z)/z, so 2 ln 2 at z = 1/2.
    (1.0, 1.0, 2.0, 0.5, 1.3862943611198906),
    (0.243, 2.426, 2.219, 0.3, 1.100518533085473),
    // b = -3: a polynomial, the series stops by itself.
    (2.5, -3.0, 1.5, 0.7, -0.09900000000000002),
    (0.5, 0.5, 1.5, 0.99, 1.4780376623747749),
    (3.2, 1.7, 0.4, 0.9, 332336.56770741363),
    (-2.5, 0.7, 3.1, 0.95, 0.6076446471554935),
    // Large parameters at z = 0.999: tens of thousands of terms and a sum past 1e59.
    (10.0, 12.0, 3.0, 0.999, 8.80910364816259e59),
];

#[test]
fn hyp2f1_matches_mpmath() {
    for (a, b, c, z, expected) in CASES {
        let got = hyp2f1(a, b, c, z).unwrap();
        assert_close(got, expected, 1e-13, &format!("2F1({a}, {b}; {c}; {z})"));
    }
}

#[test]
fn hyp2f1_on_a_negative_argument_is_still_close() {
    // Alternating terms cancel a little; mpmath: 0.6313657463763159.
    let got = hyp2f1(1.5, 2.5, 4.0, -0.6).unwrap();
    assert_close(got, 0.6313657463763159, 1e-12, "2F1(1.5, 2.5; 4; -0.6)");
}

#[test]
fn hyp2f1_at_zero_is_one() {
    assert_eq!(hyp2f1(0.3, 4.0, 2.0, 0.0).unwrap(), 1.0);
}

#[test]
fn hyp2f1_rejects_poles_and_arguments_outside_the_unit_disc() {
    assert!(matches!(
        hyp2f1(1.0, 1.0, 0.0, 0.5),
        Err(ClvError::InvalidArgument(_))
    ));
    assert!(matches!(
        hyp2f1(1.0, 1.0, -2.0, 0.5),
        Err(ClvError::InvalidArgument(_))
    ));
    assert!(matches!(
        hyp2f1(1.0, 1.0, 2.0, 1.0),
        Err(ClvError::InvalidArgument(_))
    ));
    assert!(matches!(
        hyp2f1(1.0, 1.0, 2.0, f64::NAN),
        Err(ClvError::InvalidArgument(_))
    ));
}

#[test]
fn hyp2f1_gives_up_rather_than_returning_a_truncated_sum() {
    // z within 1e-9 of 1 would need billions of terms.
    assert!(matches!(
        hyp2f1(1.0, 1.0, 2.0, 1.0 - 1e-9),
        Err(ClvError::SeriesDiverged(_))
    ));
}
