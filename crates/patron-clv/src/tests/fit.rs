use crate::objective::{BgNbdData, GammaGammaData, Objective};
use crate::{
    BgNbdParams, ClvError, FitOptions, GammaGammaParams, Observation, SpendObservation, fit_bgnbd,
    fit_bgnbd_with, fit_gamma_gamma, simulate,
};

fn customers() -> Vec<Observation> {
    let truth = BgNbdParams {
        r: 0.8,
        alpha: 6.0,
        a: 0.6,
        b: 2.5,
    };
    simulate(&truth, 3_000, 39.0, 11).unwrap()
}

/// Central finite differences of the objective, to check its analytic gradient.
fn numeric_gradient<const N: usize, O: Objective<N>>(objective: &O, theta: [f64; N]) -> [f64; N] {
    let h = 1e-6;
    std::array::from_fn(|i| {
        let (mut up, mut down) = (theta, theta);
        up[i] += h;
        down[i] -= h;
        (objective.evaluate(&up).0 - objective.evaluate(&down).0) / (2.0 * h)
    })
}

#[test]
fn bgnbd_objective_is_the_mean_negative_log_likelihood_with_its_exact_gradient() {
    let data = customers();
    let objective = BgNbdData::new(&data).unwrap();
    let params = BgNbdParams {
        r: 0.5,
        alpha: 3.0,
        a: 1.4,
        b: 0.9,
    };
    let theta = [params.r, params.alpha, params.a, params.b].map(f64::ln);
    let (cost, gradient) = objective.evaluate(&theta);
    let reference = -params.total_log_likelihood(&data) / data.len() as f64;
    assert!(
        (cost - reference).abs() < 1e-12,
        "cost {cost} vs per-customer {reference}"
    );
    let numeric = numeric_gradient(&objective, theta);
    for (i, (g, n)) in gradient.iter().zip(numeric).enumerate() {
        assert!((g - n).abs() < 1e-7, "d/dθ{i}: analytic {g} vs numeric {n}");
    }
}

#[test]
fn gamma_gamma_objective_is_the_mean_negative_log_likelihood_with_its_exact_gradient() {
    let data: Vec<SpendObservation> = (1..400_u32)
        .map(|i| SpendObservation::new(1 + i % 9, 500.0 + f64::from(i * 37 % 2_000)).unwrap())
        .collect();
    let objective = GammaGammaData::new(&data).unwrap();
    let params = GammaGammaParams {
        p: 3.0,
        q: 2.5,
        gamma: 700.0,
    };
    let theta = [params.p, params.q, params.gamma].map(f64::ln);
    let (cost, gradient) = objective.evaluate(&theta);
    let reference = -params.total_log_likelihood(&data) / data.len() as f64;
    assert!(
        (cost - reference).abs() < 1e-12,
        "cost {cost} vs per-customer {reference}"
    );
    let numeric = numeric_gradient(&objective, theta);
    for (i, (g, n)) in gradient.iter().zip(numeric).enumerate() {
        assert!((g - n).abs() < 1e-7, "d/dθ{i}: analytic {g} vs numeric {n}");
    }
}

#[test]
fn identical_customers_are_merged_without_changing_the_fit() {
    let data = customers();
    let doubled: Vec<Observation> = data.iter().chain(data.iter()).copied().collect();
    let once = fit_bgnbd(&data).unwrap();
    let twice = fit_bgnbd(&doubled).unwrap();
    assert_eq!(twice.distinct_inputs, once.distinct_inputs);
    assert_eq!(twice.customers, 2 * once.customers);
    assert!((twice.log_likelihood - 2.0 * once.log_likelihood).abs() < 1e-6);
    assert!(
        (twice.params.r - once.params.r).abs() < 1e-6,
        "{:?} vs {:?}",
        twice.params,
        once.params
    );
}

#[test]
fn a_fit_that_runs_out_of_iterations_is_an_error() {
    let options = FitOptions {
        max_iterations: 2,
        ..FitOptions::default()
    };
    match fit_bgnbd_with(&customers(), None, &options) {
        Err(ClvError::NotConverged { iterations, reason }) => {
            assert_eq!(iterations, 2);
            assert!(
                reason.contains("gradient norm"),
                "reason should say why: {reason}"
            );
        }
        other => panic!("expected NotConverged, got {other:?}"),
    }
}

#[test]
fn a_warm_start_converges_to_the_same_optimum() {
    let data = customers();
    let cold = fit_bgnbd(&data).unwrap();
    let warm = fit_bgnbd_with(&data, Some(&cold.params), &FitOptions::default()).unwrap();
    assert!(
        warm.iterations <= 2,
        "starting at the optimum needs no work: {}",
        warm.iterations
    );
    assert!((warm.log_likelihood - cold.log_likelihood).abs() < 1e-8);
}

#[test]
fn bad_inputs_are_reported_with_their_position() {
    assert_eq!(fit_bgnbd(&[]), Err(ClvError::NoData));
    assert_eq!(fit_gamma_gamma(&[]), Err(ClvError::NoData));
    let mut data = customers();
    data[17].recency = data[17].age + 1.0;
    match fit_bgnbd(&data) {
        Err(ClvError::InvalidObservation { index, .. }) => assert_eq!(index, 17),
        other => panic!("expected InvalidObservation at 17, got {other:?}"),
    }
    let spend = [SpendObservation {
        frequency: 0,
        mean_spend: 3.0,
    }];
    assert!(matches!(
        fit_gamma_gamma(&spend),
        Err(ClvError::InvalidObservation { index: 0, .. })
    ));
}

#[test]
fn customers_who_never_came_back_do_not_identify_the_dropout_process() {
    // Without a single repeat purchase the likelihood does not depend on a and b and keeps
    // improving towards r/α → 0: no parameters to report.
    let data = vec![Observation::new(0, 0.0, 10.0).unwrap(); 50];
    assert!(
        matches!(fit_bgnbd(&data), Err(ClvError::Unidentified(_))),
        "a fit without repeat purchases must be refused"
    );
}
