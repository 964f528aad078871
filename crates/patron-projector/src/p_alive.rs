//! Probability-alive lifecycle rules: the fitted model the projection follows, and when each
//! repeat buyer's probability alive falls below the rules' thresholds.
//!
//! The model comes from the log, never from the `clv_models` table: Patron's fitter appends a
//! [`ModelFitted`] event to the reserved `$clv` stream when it accepts a fit, and the projection
//! takes the parameters from there at that event's position. So the stages it causes are a
//! function of the log alone and a rebuild reproduces them.
//!
//! For a customer with at least one repeat purchase day, BG/NBD's probability alive only falls
//! as time passes without a purchase (ages are whole UTC days since the first purchase, in weeks,
//! as in the fit). Each threshold therefore has a crossing: the first day it is below. Those
//! crossings are deadlines, found by bisection over days with the very function the predictions
//! use, and stored in the customer's [`PAliveSchedule`]; the lifecycle engine fires them like
//! inactivity deadlines. The schedule is recomputed when the customer's purchases change and when
//! a new model arrives.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use patron_clv::{BgNbdParams, Observation, PurchaseSummary};
use patron_domain::ModelFitted;
use patron_lifecycle::{PAliveCrossing, PAliveSchedule, Rules};

use crate::clv::TIME_UNIT;

/// How far ahead a crossing is looked for (100 years): beyond it, the threshold is never crossed.
const HORIZON_DAYS: i64 = 36_500;

/// The model in force in the projection: the latest valid [`ModelFitted`] event in the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FittedModel {
    /// The model version.
    pub version: i64,
    /// The BG/NBD parameters, in [`TIME_UNIT`].
    pub params: BgNbdParams,
}

impl FittedModel {
    /// The model an event announces; `None` for an event in another time unit or with
    /// parameters that are not finite positive numbers (such an event is ignored).
    pub fn from_event(event: &ModelFitted) -> Option<Self> {
        if event.time_unit != "weeks" {
            return None;
        }
        let (r, alpha, a, b) = event.parameters()?;
        let params = BgNbdParams { r, alpha, a, b };
        params.validate().ok()?;
        Some(Self {
            version: event.version,
            params,
        })
    }
}

/// The probability-alive schedule of a customer with `summary`, evaluated from `from` on
/// (normally the watermark); `None` when the rules are off or the customer has no repeat
/// purchase day (the inactivity rules govern then).
///
/// A threshold already crossed at `from` is crossed *at* `from`, so it fires at once.
pub(crate) fn schedule(
    summary: &PurchaseSummary,
    model: &FittedModel,
    from: DateTime<Utc>,
    rules: &Rules,
) -> Option<PAliveSchedule> {
    if !rules.p_alive {
        return None;
    }
    let frequency = summary.frequency();
    if frequency == 0 {
        return None;
    }
    let first = summary.first_purchase_day()?;
    let recency = TIME_UNIT.from_days(summary.recency_days()?);
    let p_alive = |day: NaiveDate| {
        model.params.probability_alive(&Observation {
            frequency,
            recency,
            age: TIME_UNIT.from_days((day - first).num_days()),
        })
    };
    let crossing = |percent: i64| crossing(&p_alive, from, percent);
    Some(PAliveSchedule {
        model_version: model.version,
        at_risk: crossing(rules.p_alive_at_risk_percent),
        churn: crossing(rules.p_alive_churn_percent),
    })
}

/// The first instant at or after `from` at which `p_alive` (by UTC day, non-increasing) is
/// below `percent` %.
fn crossing(
    p_alive: &impl Fn(NaiveDate) -> f64,
    from: DateTime<Utc>,
    percent: i64,
) -> Option<PAliveCrossing> {
    #[expect(
        clippy::cast_precision_loss,
        reason = "validated thresholds are 1 to 99"
    )]
    let threshold = percent as f64 / 100.0;
    let below = |day: NaiveDate| p_alive(day) < threshold;
    let start = from.date_naive();
    if below(start) {
        return Some(found(from, p_alive(start)));
    }
    // Bisection over whole days: `low` is not below, `high` is.
    let mut low = start;
    let mut high = start.checked_add_signed(TimeDelta::days(HORIZON_DAYS))?;
    if !below(high) {
        return None;
    }
    while (high - low).num_days() > 1 {
        let mid = low.checked_add_signed(TimeDelta::days((high - low).num_days() / 2))?;
        if below(mid) {
            high = mid;
        } else {
            low = mid;
        }
    }
    Some(found(
        high.and_time(chrono::NaiveTime::MIN).and_utc(),
        p_alive(high),
    ))
}

/// A crossing at `at` with probability `p`.
fn found(at: DateTime<Utc>, p: f64) -> PAliveCrossing {
    PAliveCrossing {
        at,
        p_alive: format!("{p:.4}"),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn model() -> FittedModel {
        // CDNOW's published BG/NBD fit, in weeks.
        FittedModel {
            version: 1,
            params: BgNbdParams {
                r: 0.243,
                alpha: 4.414,
                a: 0.793,
                b: 2.426,
            },
        }
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn crossings_are_the_first_days_below_each_threshold() {
        let mut summary = PurchaseSummary::new();
        for d in [day(2024, 1, 1), day(2024, 1, 15), day(2024, 2, 1)] {
            summary.record_purchase(d, 1_000).unwrap();
        }
        let model = model();
        let from = Utc.with_ymd_and_hms(2024, 2, 1, 12, 0, 0).unwrap();
        let rules = Rules::default();
        let schedule = schedule(&summary, &model, from, &rules).expect("a repeat buyer");
        assert_eq!(schedule.model_version, 1);
        let p = |d: NaiveDate| {
            model.params.probability_alive(
                &summary
                    .observation(d, TIME_UNIT)
                    .expect("purchases before d"),
            )
        };
        for (crossing, threshold) in [(&schedule.at_risk, 0.5), (&schedule.churn, 0.1)] {
            let crossing = crossing.as_ref().expect("crossed within 100 years");
            let d = crossing.at.date_naive();
            assert_eq!(crossing.at, d.and_time(chrono::NaiveTime::MIN).and_utc());
            assert!(p(d) < threshold, "below on the crossing day");
            assert!(
                p(d.pred_opt().unwrap()) >= threshold,
                "not below the day before"
            );
            assert_eq!(crossing.p_alive, format!("{:.4}", p(d)));
        }
        let at_risk = schedule.at_risk.unwrap().at;
        let churn = schedule.churn.unwrap().at;
        assert!(from < at_risk && at_risk < churn, "{at_risk} {churn}");
    }

    #[test]
    fn a_threshold_already_crossed_fires_at_once_and_one_off_buyers_have_none() {
        let mut summary = PurchaseSummary::new();
        summary.record_purchase(day(2020, 1, 1), 1_000).unwrap();
        let rules = Rules::default();
        let later = Utc.with_ymd_and_hms(2024, 6, 1, 9, 30, 0).unwrap();
        assert!(
            schedule(&summary, &model(), later, &rules).is_none(),
            "no repeat purchase day: inactivity rules"
        );
        summary.record_purchase(day(2020, 1, 8), 1_000).unwrap();
        let schedule = schedule(&summary, &model(), later, &rules).unwrap();
        assert_eq!(schedule.at_risk.unwrap().at, later);
        assert_eq!(schedule.churn.unwrap().at, later);
        let off = Rules {
            p_alive: false,
            ..Rules::default()
        };
        assert!(super::schedule(&summary, &model(), later, &off).is_none());
    }

    #[test]
    fn events_with_invalid_parameters_are_ignored() {
        let event = ModelFitted {
            version: 2,
            time_unit: "weeks".into(),
            r: "0.243".into(),
            alpha: "4.414".into(),
            a: "0.793".into(),
            b: "2.426".into(),
        };
        assert_eq!(
            FittedModel::from_event(&event),
            Some(model()).map(|m| FittedModel { version: 2, ..m })
        );
        let days = ModelFitted {
            time_unit: "days".into(),
            ..event.clone()
        };
        assert_eq!(FittedModel::from_event(&days), None);
        let nan = ModelFitted {
            alpha: "NaN".into(),
            ..event
        };
        assert_eq!(FittedModel::from_event(&nan), None);
    }
}
