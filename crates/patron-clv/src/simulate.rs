//! Seeded synthetic customers drawn from the BG/NBD generative process, for tests and
//! benchmarks of the fit.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution, Exp, Gamma};

use crate::bgnbd::BgNbdParams;
use crate::error::{ClvError, Result};
use crate::observation::Observation;

/// Draws `customers` histories observed for `age` time units each after their first purchase.
///
/// Per customer: `λ ~ Gamma(shape r, rate α)`, `p ~ Beta(a, b)`; from the first purchase at
/// time 0, purchases follow a Poisson process with rate `λ`, and after each repeat purchase the
/// customer drops out with probability `p` (never right after the first purchase, as in FHL
/// 2005). Purchases after `age` are not observed. The same seed gives the same customers with
/// the same `rand` version.
pub fn simulate(
    params: &BgNbdParams,
    customers: usize,
    age: f64,
    seed: u64,
) -> Result<Vec<Observation>> {
    params.validate()?;
    if !(age.is_finite() && age >= 0.0) {
        return Err(ClvError::InvalidArgument(format!(
            "age must be finite and non-negative, got {age}"
        )));
    }
    let invalid = |e: &dyn std::fmt::Display| ClvError::InvalidParams(e.to_string());
    let rate = Gamma::new(params.r, 1.0 / params.alpha).map_err(|e| invalid(&e))?;
    let dropout = Beta::new(params.a, params.b).map_err(|e| invalid(&e))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(customers);
    for _ in 0..customers {
        let lambda: f64 = rate.sample(&mut rng);
        let p: f64 = dropout.sample(&mut rng);
        let (mut frequency, mut recency) = (0_u32, 0.0);
        // A rate that underflows to 0 means no purchase ever; Exp rejects it.
        if let Ok(gap) = Exp::new(lambda)
            && lambda > 0.0
        {
            let mut now = 0.0;
            loop {
                now += gap.sample(&mut rng);
                if now > age {
                    break;
                }
                frequency = frequency.saturating_add(1);
                recency = now;
                if rng.random_bool(p) {
                    break;
                }
            }
        }
        out.push(Observation {
            frequency,
            recency,
            age,
        });
    }
    Ok(out)
}
