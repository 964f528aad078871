use super::assert_close;
use crate::{ClvError, GammaGammaParams, SpendObservation};

const PUBLISHED: GammaGammaParams = GammaGammaParams {
    p: 6.25,
    q: 3.74,
    gamma: 15.44,
};

#[test]
fn log_likelihood_matches_mpmath() {
    // mpmath: lgamma(px+q) - lgamma(px) - lgamma(q) + q ln g + (px-1) ln m + px ln x
    //         - (px+q) ln(g + x m), at 50 digits.
    let cases = [
        (1, 11.77, -3.7377096787408397),
        (2, 22.345, -3.551189164139951),
        (7, 43.5, -4.502445870294293),
        (20, 5.0, -10.457592667876332),
    ];
    for (x, mean, expected) in cases {
        let got = PUBLISHED.log_likelihood(&SpendObservation::new(x, mean).unwrap());
        assert_close(
            got,
            expected,
            1e-13,
            &format!("Gamma-Gamma LL at x={x}, mean={mean}"),
        );
    }
}

#[test]
fn expected_spend_is_the_credibility_weighted_mean() {
    // By hand: p(g + x m)/(px + q - 1) = 6.25 (15.44 + 2·22.345)/(12.5 + 2.74) = 375.8125/15.24.
    let got = PUBLISHED.conditional_expected_spend(2, 22.345).unwrap();
    assert_close(got, 375.8125 / 15.24, 1e-15, "E[Z | x=2, mean=22.345]");
    // Population mean pg/(q-1) = 6.25·15.44/2.74 = 96.5/2.74.
    let population = PUBLISHED.population_mean_spend().unwrap();
    assert_close(population, 96.5 / 2.74, 1e-15, "population mean spend");
    assert_eq!(
        PUBLISHED.conditional_expected_spend(0, 1e9).unwrap(),
        population
    );
    // The weight on the customer's own mean grows with x.
    let many = PUBLISHED.conditional_expected_spend(200, 22.345).unwrap();
    assert!((many - 22.345).abs() < (got - 22.345).abs());
}

#[test]
fn expected_spend_is_undefined_for_heavy_tails() {
    let heavy = GammaGammaParams {
        p: 0.1,
        q: 0.5,
        gamma: 10.0,
    };
    assert!(matches!(
        heavy.population_mean_spend(),
        Err(ClvError::Undefined(_))
    ));
    assert!(matches!(
        heavy.conditional_expected_spend(2, 5.0),
        Err(ClvError::Undefined(_))
    ));
    assert!(
        heavy.conditional_expected_spend(10, 5.0).is_ok(),
        "px + q = 1.5 > 1"
    );
}

#[test]
fn invalid_inputs_are_rejected() {
    assert!(SpendObservation::new(0, 10.0).is_err());
    assert!(SpendObservation::new(1, 0.0).is_err());
    assert!(SpendObservation::new(1, f64::NAN).is_err());
    assert!(PUBLISHED.conditional_expected_spend(1, -1.0).is_err());
    let bad = GammaGammaParams {
        p: -1.0,
        ..PUBLISHED
    };
    assert!(matches!(bad.validate(), Err(ClvError::InvalidParams(_))));
}
