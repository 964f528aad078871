use super::assert_close;
use crate::{BgNbdParams, ClvError, Observation};

/// The published CDNOW estimates (FHL 2005), rounded as printed.
const CDNOW: BgNbdParams = BgNbdParams {
    r: 0.243,
    alpha: 4.414,
    a: 0.793,
    b: 2.426,
};

fn obs(x: u32, t_x: f64, t: f64) -> Observation {
    Observation::new(x, t_x, t).unwrap()
}

/// `(x, t_x, T, ln L, P(alive))` at [`CDNOW`], from mpmath at 50 digits:
/// `ln L = lgamma(r+x) - lgamma(r) + r ln α + lgamma(a+b) + lgamma(b+x) - lgamma(b)
///        - lgamma(a+b+x) + ln((α+T)^-(r+x) + [x>0] a/(b+x-1) (α+t_x)^-(r+x))` and
/// `P(alive) = 1/(1 + [x>0] a/(b+x-1) ((α+T)/(α+t_x))^(r+x))`.
const LIKELIHOOD_CASES: [(u32, f64, f64, f64, f64); 6] = [
    (0, 0.0, 38.86, -0.5547132764381585, 1.0),
    (2, 30.43, 38.86, -9.45860630706627, 0.726578570080673),
    (1, 1.71, 38.86, -4.469093275032589, 0.2121009853773791),
    (5, 20.0, 32.0, -16.468659482543398, 0.4990377163021962),
    (12, 36.5, 37.0, -29.821249790304435, 0.9358609374914966),
    (50, 30.0, 39.0, -39.8650646067533, 0.0005526112463940783),
];

#[test]
fn log_likelihood_and_probability_alive_match_mpmath() {
    for (x, t_x, t, ll, alive) in LIKELIHOOD_CASES {
        let c = obs(x, t_x, t);
        assert_close(
            CDNOW.log_likelihood(&c),
            ll,
            1e-13,
            &format!("ln L at {c:?}"),
        );
        assert_close(
            CDNOW.probability_alive(&c),
            alive,
            1e-13,
            &format!("P(alive) at {c:?}"),
        );
    }
}

/// `E[Y(t) | x, t_x, T]` at [`CDNOW`] for horizons 1, 39, 52 and 520 weeks, from mpmath:
/// `(a+b+x-1)/(a-1) (1 - ((α+T)/(α+T+t))^(r+x) hyp2f1(r+x, b+x, a+b+x-1, t/(α+T+t)))
///  · P(alive)`, cross-checked there against direct quadrature of
/// `E_p[(1 - (1 + p t/(α+T))^-(r+x))/p]` over `p ~ Beta(a, b+x)` (agreement to 1e-40).
const EXPECTED_CASES: [(u32, f64, f64, [f64; 4]); 6] = [
    (
        0,
        0.0,
        38.86,
        [
            0.005595657889484052,
            0.19509805201126265,
            0.2520730222824589,
            1.4645477714482396,
        ],
    ),
    (
        2,
        30.43,
        38.86,
        [
            0.037447969741732264,
            1.2260281747671444,
            1.558720806432088,
            7.319313811711105,
        ],
    ),
    (
        1,
        1.71,
        38.86,
        [
            0.006062951798282893,
            0.20318698707975405,
            0.25982346486862246,
            1.3074184508243556,
        ],
    ),
    (
        5,
        20.0,
        32.0,
        [
            0.07126625202156156,
            2.186641975883614,
            2.740965137122914,
            11.28016917737803,
        ],
    ),
    (
        12,
        36.5,
        37.0,
        [
            0.2743874806383172,
            8.394639969275724,
            10.51325347574297,
            42.801337494630445,
        ],
    ),
    (
        50,
        30.0,
        39.0,
        [
            0.000633986159386211,
            0.019183251474554765,
            0.023970760772494992,
            0.09582435313563176,
        ],
    ),
];

#[test]
fn conditional_expected_purchases_match_mpmath() {
    for (x, t_x, t, expected) in EXPECTED_CASES {
        let c = obs(x, t_x, t);
        for (horizon, want) in [1.0, 39.0, 52.0, 520.0].into_iter().zip(expected) {
            let got = CDNOW.expected_purchases(horizon, &c).unwrap();
            assert_close(got, want, 1e-12, &format!("E[Y({horizon})] at {c:?}"));
        }
    }
}

#[test]
fn unconditional_expected_purchases_match_mpmath() {
    // mpmath: (a+b-1)/(a-1) (1 - (α/(α+t))^r hyp2f1(r, b, a+b-1, t/(α+t))).
    let cases = [
        (1.0, 0.05326789117165828),
        (39.0, 1.196723193320817),
        (78.0, 1.8605190579427686),
        (1000.0, 6.580391613738232),
    ];
    for (t, want) in cases {
        let got = CDNOW.expected_purchases_new(t).unwrap();
        assert_close(got, want, 1e-12, &format!("E[X({t})]"));
    }
    assert_eq!(CDNOW.expected_purchases_new(0.0).unwrap(), 0.0);
}

#[test]
fn expected_purchases_are_accurate_across_parameter_regions() {
    // mpmath as above (and quadrature); each case exercises another branch of the evaluation.
    let cases = [
        // a > 1: Euler form with positive terms.
        (
            (0.5, 10.0, 2.5, 4.0),
            (3, 15.0, 40.0),
            26.0,
            0.2439202341609403,
        ),
        // r large, a+b-1-r < -1: original form with a rescaled positive series.
        (
            (25.0, 3.0, 0.6, 1.2),
            (4, 20.0, 30.0),
            52.0,
            0.0038332712483268323,
        ),
        (
            (25.0, 3.0, 0.6, 1.2),
            (0, 0.0, 30.0),
            52.0,
            8.993586961312182,
        ),
        // a + b < 1 and x = 0: c < 0.
        (
            (0.8, 6.0, 0.3, 0.5),
            (0, 0.0, 10.0),
            30.0,
            1.053204116726364,
        ),
        // a close to 1.
        (
            (1.3, 2.0, 1.02, 3.0),
            (2, 5.0, 9.0),
            100.0,
            4.394864706269472,
        ),
        // x = 300: (1-z)^(r+x) alone would underflow.
        (
            (0.243, 4.414, 0.793, 2.426),
            (300, 38.0, 38.86),
            52.0,
            123.34396145258687,
        ),
        // A horizon 10,000 times the age: z = 0.9991.
        (
            (0.243, 4.414, 0.793, 2.426),
            (0, 0.0, 0.5),
            5000.0,
            11.554130806823846,
        ),
    ];
    for ((r, alpha, a, b), (x, t_x, t), horizon, want) in cases {
        let params = BgNbdParams { r, alpha, a, b };
        let got = params.expected_purchases(horizon, &obs(x, t_x, t)).unwrap();
        assert_close(
            got,
            want,
            1e-11,
            &format!("E[Y({horizon})] at {params:?}, x={x}"),
        );
    }
}

#[test]
fn removable_singularities_are_exact() {
    // a = 1 exactly: (a+b+x-1)/(a-1) · (1 - ...) is 0/0; the limit (mpmath: quadrature over
    // p ~ Beta(1, b+x), and the 2F1 form at a = 1 + 1e-30) is 1.0636916676510066.
    let a_is_one = BgNbdParams {
        r: 0.7,
        alpha: 5.0,
        a: 1.0,
        b: 2.0,
    };
    let got = a_is_one
        .expected_purchases(26.0, &obs(3, 10.0, 20.0))
        .unwrap();
    assert_close(got, 1.0636916676510066, 1e-13, "E[Y] at a = 1");
    // a + b = 1 with x = 0: c = 0 is a pole of 2F1 but not of E[Y]; mpmath limit
    // 1.015691605463645.
    let c_is_zero = BgNbdParams {
        r: 0.8,
        alpha: 6.0,
        a: 0.4,
        b: 0.6,
    };
    let got = c_is_zero
        .expected_purchases(30.0, &obs(0, 0.0, 10.0))
        .unwrap();
    assert_close(got, 1.015691605463645, 1e-12, "E[Y] at a + b = 1");
}

#[test]
fn short_horizons_keep_relative_accuracy() {
    // E[Y(t)] ≈ t · P(alive) · E[λ | x, T] = t · P(alive) · (r+x)/(α+T) as t → 0.
    let c = obs(2, 30.43, 38.86);
    let t = 1e-9;
    let rate = (CDNOW.r + 2.0) / (CDNOW.alpha + 38.86) * CDNOW.probability_alive(&c);
    assert_close(
        CDNOW.expected_purchases(t, &c).unwrap() / t,
        rate,
        1e-6,
        "slope at t = 0",
    );
}

#[test]
fn invalid_inputs_are_rejected() {
    assert!(
        Observation::new(0, 1.0, 5.0).is_err(),
        "t_x > 0 without repeats"
    );
    assert!(Observation::new(2, 6.0, 5.0).is_err(), "t_x > T");
    assert!(Observation::new(2, f64::INFINITY, 5.0).is_err());
    let c = obs(1, 1.0, 2.0);
    assert!(matches!(
        CDNOW.expected_purchases(-1.0, &c),
        Err(ClvError::InvalidArgument(_))
    ));
    let bad = BgNbdParams {
        alpha: 0.0,
        ..CDNOW
    };
    assert!(matches!(
        bad.expected_purchases(1.0, &c),
        Err(ClvError::InvalidParams(_))
    ));
}
