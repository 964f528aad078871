//! KPI answers from counter rows: pure functions, no I/O.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use patron_proto::api::v1 as pb;

use crate::convert::stored_stage;
use crate::error::ApiError;
use crate::model::{Forecast, KpiRow};
use crate::range::{self, Days};

/// Basis points of `part / whole`, truncated toward zero; 0 when `whole` is 0.
pub(crate) fn basis_points(part: i64, whole: i64) -> i64 {
    if whole == 0 {
        return 0;
    }
    let bp = i128::from(part) * 10_000 / i128::from(whole);
    i64::try_from(bp).unwrap_or(if bp < 0 { i64::MIN } else { i64::MAX })
}

/// A stage dimension on the wire: `none` (no stage yet) is STAGE_UNSPECIFIED.
fn stage(name: &str) -> Result<i32, ApiError> {
    match name {
        "none" => Ok(0),
        name => stored_stage(Some(name)),
    }
}

/// Flows with a non-zero count, by day, from stage and to stage.
pub(crate) fn stage_flows(rows: &[KpiRow]) -> Result<Vec<pb::StageFlow>, ApiError> {
    let mut flows = rows
        .iter()
        .filter(|row| row.value != 0)
        .map(|row| {
            Ok(pb::StageFlow {
                day: row.period.clone(),
                from_stage: stage(&row.dim1)?,
                to_stage: stage(&row.dim2)?,
                count: row.value,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    flows.sort_by(|a, b| {
        (&a.day, a.from_stage, a.to_stage).cmp(&(&b.day, b.from_stage, b.to_stage))
    });
    Ok(flows)
}

/// Customers per stage at the end of every day of `days`, from every flow up to `days.to`
/// (`rows` must start at the beginning of time).
pub(crate) fn stage_distribution(
    rows: &[KpiRow],
    days: Days,
) -> Result<Vec<pb::DayDistribution>, ApiError> {
    let mut by_day: BTreeMap<&str, Vec<&KpiRow>> = BTreeMap::new();
    for row in rows {
        by_day.entry(row.period.as_str()).or_default().push(row);
    }
    // Indexed by wire stage; index 0 (no stage: not yet seen, or merged into another customer)
    // is not reported.
    let mut counts = [0_i64; 8];
    let first = range::day_text(days.from);
    for (_, rows) in by_day.range(..first.as_str()) {
        apply(&mut counts, rows)?;
    }
    let mut out = Vec::new();
    let mut day: NaiveDate = days.from;
    while day <= days.to {
        let text = range::day_text(day);
        if let Some(rows) = by_day.get(text.as_str()) {
            apply(&mut counts, rows)?;
        }
        out.push(pb::DayDistribution {
            day: text,
            stages: (1..counts.len())
                .map(|index| pb::StageCount {
                    stage: i32::try_from(index).unwrap_or(0),
                    count: counts[index],
                })
                .collect(),
        });
        let Some(next) = day.succ_opt() else { break };
        day = next;
    }
    Ok(out)
}

/// Moves the flows of `rows` into `counts`.
fn apply(counts: &mut [i64; 8], rows: &[&KpiRow]) -> Result<(), ApiError> {
    for row in rows {
        let (from, to) = (stage(&row.dim1)?, stage(&row.dim2)?);
        for (index, sign) in [(from, -1), (to, 1)] {
            let slot = usize::try_from(index)
                .ok()
                .and_then(|index| counts.get_mut(index))
                .ok_or_else(|| ApiError::Internal(format!("stage {index} out of range")))?;
            *slot = slot.saturating_add(sign * row.value);
        }
    }
    Ok(())
}

/// Cohorts from `cohort_size`, `cohort_active` and `cohort_churned` rows of the same cohorts.
pub(crate) fn cohorts(
    sizes: &[KpiRow],
    active: &[KpiRow],
    churned: &[KpiRow],
) -> Result<Vec<pb::Cohort>, ApiError> {
    let sum = |rows: &[KpiRow], key: fn(&KpiRow) -> &str| {
        let mut map: BTreeMap<String, i64> = BTreeMap::new();
        for row in rows {
            let slot = map.entry(key(row).to_owned()).or_default();
            *slot = slot.saturating_add(row.value);
        }
        map
    };
    let sizes = sum(sizes, |row| &row.period);
    let churned = sum(churned, |row| &row.period);
    let mut cohorts = Vec::new();
    for (cohort, size) in sizes.into_iter().filter(|(_, size)| *size > 0) {
        let start = range::month("cohort_month", &cohort)
            .map_err(|error| ApiError::Internal(format!("kpi cohort: {error}")))?;
        let mut months = Vec::new();
        for row in active
            .iter()
            .filter(|row| row.dim1 == cohort && row.value != 0)
        {
            let index = range::month("month", &row.period)
                .map_err(|error| ApiError::Internal(format!("kpi activity: {error}")))?;
            let Ok(month_offset) = u32::try_from(index - start) else {
                continue;
            };
            months.push(pb::CohortMonth {
                month_offset,
                month: row.period.clone(),
                active: row.value,
                retention_bp: basis_points(row.value, size),
            });
        }
        months.sort_by_key(|month| month.month_offset);
        let churned = churned.get(&cohort).copied().unwrap_or(0);
        cohorts.push(pb::Cohort {
            cohort_month: cohort,
            size,
            months,
            churned,
            churned_bp: basis_points(churned, size),
        });
    }
    Ok(cohorts)
}

/// NPS per stage at answer time and overall, from `nps` rows.
pub(crate) fn nps(rows: &[KpiRow]) -> Result<(Vec<pb::NpsRow>, pb::NpsRow), ApiError> {
    let mut stages: BTreeMap<i32, pb::NpsRow> = BTreeMap::new();
    let mut total = pb::NpsRow::default();
    for row in rows {
        let stage = stage(&row.dim1)?;
        let entry = stages.entry(stage).or_insert_with(|| pb::NpsRow {
            stage,
            ..pb::NpsRow::default()
        });
        for target in [&mut *entry, &mut total] {
            let bucket = match row.dim2.as_str() {
                "promoter" => &mut target.promoters,
                "passive" => &mut target.passives,
                "detractor" => &mut target.detractors,
                other => return Err(ApiError::Internal(format!("nps bucket {other:?}"))),
            };
            *bucket = bucket.saturating_add(row.value);
            target.responses = target.responses.saturating_add(row.value);
        }
    }
    let score = |row: &mut pb::NpsRow| {
        row.nps_bp = basis_points(row.promoters - row.detractors, row.responses);
    };
    let mut stages: Vec<_> = stages.into_values().collect();
    stages.iter_mut().for_each(score);
    score(&mut total);
    Ok((stages, total))
}

/// CSAT per stage at answer time and overall, from `csat` rows.
pub(crate) fn csat(rows: &[KpiRow]) -> Result<(Vec<pb::CsatRow>, pb::CsatRow), ApiError> {
    let mut stages: BTreeMap<i32, pb::CsatRow> = BTreeMap::new();
    let mut total = pb::CsatRow::default();
    for row in rows {
        let stage = stage(&row.dim1)?;
        let score: i64 = row
            .dim2
            .parse()
            .ok()
            .filter(|score| (1..=5).contains(score))
            .ok_or_else(|| ApiError::Internal(format!("csat score {:?}", row.dim2)))?;
        let entry = stages.entry(stage).or_insert_with(|| pb::CsatRow {
            stage,
            ..pb::CsatRow::default()
        });
        for target in [&mut *entry, &mut total] {
            target.responses = target.responses.saturating_add(row.value);
            target.score_sum = target.score_sum.saturating_add(score * row.value);
            if score >= 4 {
                target.satisfied = target.satisfied.saturating_add(row.value);
            }
        }
    }
    let finish = |row: &mut pb::CsatRow| {
        row.average_centi = basis_points(row.score_sum, row.responses) / 100;
        row.satisfied_bp = basis_points(row.satisfied, row.responses);
    };
    let mut stages: Vec<_> = stages.into_values().collect();
    stages.iter_mut().for_each(finish);
    finish(&mut total);
    Ok((stages, total))
}

/// Acquisitions and cost per channel (`acquired` and `acquisition_cost_minor` rows).
pub(crate) fn cac(acquired: &[KpiRow], cost: &[KpiRow]) -> Vec<pb::ChannelCac> {
    let mut channels: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for row in acquired {
        let slot = channels.entry(&row.dim1).or_default();
        slot.0 = slot.0.saturating_add(row.value);
    }
    for row in cost {
        let slot = channels.entry(&row.dim1).or_default();
        slot.1 = slot.1.saturating_add(row.value);
    }
    channels
        .into_iter()
        .map(|(channel, (acquired, cost_minor))| pb::ChannelCac {
            channel: channel.to_owned(),
            acquired,
            cost_minor,
            cac_minor: (acquired > 0).then(|| cost_minor / acquired),
        })
        .collect()
}

/// Net revenue per current tier (`revenue_minor` rows); `none` (not scored) becomes `""`.
pub(crate) fn revenue(rows: &[KpiRow]) -> Vec<pb::TierRevenue> {
    let mut tiers: BTreeMap<&str, i64> = BTreeMap::new();
    for row in rows {
        let tier = if row.dim1 == "none" { "" } else { &row.dim1 };
        let slot = tiers.entry(tier).or_default();
        *slot = slot.saturating_add(row.value);
    }
    tiers
        .into_iter()
        .map(|(tier, revenue_minor)| pb::TierRevenue {
            tier: tier.to_owned(),
            revenue_minor,
        })
        .collect()
}

/// The forecast by tier on the wire: tiers sorted ("" first, then A, B, C); model version 0 and
/// no tiers without predictions.
pub(crate) fn forecast(forecast: &Forecast) -> Result<pb::ForecastByTierResponse, ApiError> {
    let currency = forecast
        .snapshot
        .as_ref()
        .map(|s| s.currency.clone())
        .unwrap_or_default();
    let Some(model) = &forecast.model else {
        return Ok(pb::ForecastByTierResponse {
            currency,
            ..Default::default()
        });
    };
    let corrupt = |what: &str| ApiError::Internal(format!("clv forecast: {what}"));
    let mut tiers: Vec<pb::TierForecast> = forecast
        .tiers
        .iter()
        .filter(|row| row.model_version == model.version)
        .map(|row| pb::TierForecast {
            tier: row.tier.clone(),
            customers: row.customers,
            expected_purchases: row.expected_purchases,
            expected_revenue_minor: row.expected_revenue_minor.unwrap_or(0),
            clv_minor: row.clv_minor.unwrap_or(0),
            expected_active: row.expected_active,
        })
        .collect();
    if tiers.len() != forecast.tiers.len() {
        return Err(corrupt("predictions of more than one model version"));
    }
    tiers.sort_by(|x, y| x.tier.cmp(&y.tier));
    Ok(pb::ForecastByTierResponse {
        tiers,
        model_version: u64::try_from(model.version).map_err(|_| corrupt("version"))?,
        horizon_days: u32::try_from(model.horizon_days).map_err(|_| corrupt("horizon"))?,
        evaluated_at: Some(crate::convert::timestamp(model.evaluated_at)),
        currency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(period: &str, dim1: &str, dim2: &str, value: i64) -> KpiRow {
        KpiRow {
            period: period.into(),
            dim1: dim1.into(),
            dim2: dim2.into(),
            value,
        }
    }

    #[test]
    fn distribution_counts_from_the_start_of_time() {
        let rows = [
            row("2025-01-01", "none", "prospect", 3),
            row("2025-01-02", "prospect", "new", 2),
            row("2025-01-04", "new", "active", 1),
        ];
        let days = range::days("2025-01-03", "2025-01-04").unwrap();
        let out = stage_distribution(&rows, days).unwrap();
        assert_eq!(out.len(), 2);
        let counts = |d: &pb::DayDistribution| d.stages.iter().map(|s| s.count).collect::<Vec<_>>();
        assert_eq!(out[0].day, "2025-01-03");
        assert_eq!(
            counts(&out[0]),
            [1, 2, 0, 0, 0, 0, 0],
            "flows before the range count"
        );
        assert_eq!(counts(&out[1]), [1, 1, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn ratios_are_truncated_basis_points() {
        assert_eq!(basis_points(1, 3), 3333);
        assert_eq!(basis_points(-1, 3), -3333);
        assert_eq!(basis_points(5, 0), 0);
        let (stages, total) = nps(&[
            row("2025-01", "active", "promoter", 6),
            row("2025-01", "active", "detractor", 2),
            row("2025-02", "none", "passive", 2),
        ])
        .unwrap();
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[0].stage, 0, "no stage first");
        assert_eq!(stages[1].nps_bp, 5000, "(6 - 2) / 8");
        assert_eq!((total.responses, total.nps_bp), (10, 4000));
        let (_, total) =
            csat(&[row("2025-01", "new", "5", 1), row("2025-01", "new", "2", 2)]).unwrap();
        assert_eq!((total.average_centi, total.satisfied_bp), (300, 3333));
        assert!(
            csat(&[row("2025-01", "new", "9", 1)]).is_err(),
            "score out of range"
        );
    }

    #[test]
    fn cohorts_measure_months_since_the_first_purchase() {
        let out = cohorts(
            &[row("2024-12", "", "", 4)],
            &[
                row("2024-12", "2024-12", "", 4),
                row("2025-02", "2024-12", "", 1),
            ],
            &[row("2024-12", "", "", 1)],
        )
        .unwrap();
        assert_eq!(out[0].months[1].month_offset, 2);
        assert_eq!(out[0].months[1].retention_bp, 2500);
        assert_eq!(out[0].churned_bp, 2500);
    }

    #[test]
    fn cac_divides_cost_by_acquisitions() {
        let out = cac(
            &[row("2025-01", "ads", "", 3), row("2025-02", "ads", "", 1)],
            &[
                row("2025-01", "ads", "", 1000),
                row("2025-01", "tv", "", 50),
            ],
        );
        assert_eq!(out[0].cac_minor, Some(250));
        assert_eq!((out[1].acquired, out[1].cac_minor), (0, None));
    }
}
