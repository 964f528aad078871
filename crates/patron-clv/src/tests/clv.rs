use super::assert_close;
use crate::{
    BgNbdParams, ClvError, GammaGammaParams, Horizon, Observation, clv,
    discounted_expected_purchases, to_minor_units,
};

const BG: BgNbdParams = BgNbdParams {
    r: 0.243,
    alpha: 4.414,
    a: 0.793,
    b: 2.426,
};
const GG: GammaGammaParams = GammaGammaParams {
    p: 6.25,
    q: 3.74,
    gamma: 15.44,
};

#[test]
fn clv_matches_mpmath() {
    // mpmath at 50 digits: 12 periods of 4 weeks at 10% a year (13 periods a year), customer
    // (x=2, t_x=30.43, T=38.86) with mean spend 22.345; d = 1.1^(1/13) - 1,
    // m = p(γ + x z̄)/(px + q - 1), CLV = m Σ_k (E[Y(4k)] - E[Y(4k-4)]) / (1+d)^k.
    let horizon = Horizon::with_annual_rate(12, 4.0, 0.10, 13.0).unwrap();
    assert_close(
        horizon.discount_rate,
        0.0073584939232284935,
        1e-13,
        "per-period rate",
    );
    let customer = Observation::new(2, 30.43, 38.86).unwrap();
    let purchases = discounted_expected_purchases(&BG, &customer, &horizon).unwrap();
    assert_close(purchases, 1.3959353848298395, 1e-12, "discounted purchases");
    let value = clv(&BG, &GG, &customer, 22.345, &horizon).unwrap();
    assert_close(value, 34.423226168724675, 1e-12, "CLV");
}

#[test]
fn undiscounted_clv_telescopes_to_the_whole_horizon() {
    let customer = Observation::new(5, 20.0, 32.0).unwrap();
    let horizon = Horizon::new(10, 5.2, 0.0).unwrap();
    let value = clv(&BG, &GG, &customer, 40.0, &horizon).unwrap();
    let whole = GG.conditional_expected_spend(5, 40.0).unwrap()
        * BG.expected_purchases(52.0, &customer).unwrap();
    assert_close(value, whole, 1e-13, "undiscounted CLV");
    let discounted = clv(
        &BG,
        &GG,
        &customer,
        40.0,
        &Horizon::new(10, 5.2, 0.02).unwrap(),
    )
    .unwrap();
    assert!(discounted < value, "discounting lowers the value");
}

#[test]
fn a_customer_without_repeats_is_valued_at_the_population_mean_spend() {
    let customer = Observation::new(0, 0.0, 10.0).unwrap();
    let horizon = Horizon::new(4, 13.0, 0.0).unwrap();
    let value = clv(&BG, &GG, &customer, 0.0, &horizon).unwrap();
    let expected =
        GG.population_mean_spend().unwrap() * BG.expected_purchases(52.0, &customer).unwrap();
    assert_close(value, expected, 1e-13, "CLV of a one-time buyer");
    assert_eq!(
        clv(
            &BG,
            &GG,
            &customer,
            0.0,
            &Horizon::new(0, 1.0, 0.0).unwrap()
        )
        .unwrap(),
        0.0
    );
}

#[test]
fn horizons_are_checked() {
    assert!(matches!(
        Horizon::new(4, 0.0, 0.1),
        Err(ClvError::InvalidArgument(_))
    ));
    assert!(matches!(
        Horizon::new(4, 1.0, -1.0),
        Err(ClvError::InvalidArgument(_))
    ));
    assert!(matches!(
        Horizon::with_annual_rate(4, 1.0, 0.1, 0.0),
        Err(ClvError::InvalidArgument(_))
    ));
    let h = Horizon::with_annual_rate(12, 1.0, 0.0, 12.0).unwrap();
    assert_eq!(h.discount_rate, 0.0);
}

#[test]
fn predicted_amounts_round_half_away_from_zero_into_minor_units() {
    assert_eq!(to_minor_units(1234.5).unwrap(), 1235);
    assert_eq!(to_minor_units(1234.49).unwrap(), 1234);
    assert_eq!(to_minor_units(-2.5).unwrap(), -3);
    assert_eq!(to_minor_units(0.0).unwrap(), 0);
    assert_eq!(to_minor_units(-9.223372036854776e+18).unwrap(), i64::MIN);
    assert!(matches!(
        to_minor_units(9.3e18),
        Err(ClvError::OutOfRange(_))
    ));
    assert!(matches!(
        to_minor_units(f64::NAN),
        Err(ClvError::OutOfRange(_))
    ));
    assert!(matches!(
        to_minor_units(f64::INFINITY),
        Err(ClvError::OutOfRange(_))
    ));
}
