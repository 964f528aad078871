//! Read-model rows to wire messages.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use patron_lifecycle::Stage;
use patron_proto::api::v1 as pb;
use patron_proto::lifecycle::v1::Stage as PbStage;

use crate::error::ApiError;
use crate::model::{CustomerDetail, CustomerRow, HistoryRow, PredictionRow, Snapshot};

/// A timestamp on the wire.
pub(crate) fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A lifecycle stage on the wire.
pub(crate) fn stage_to_wire(stage: Stage) -> PbStage {
    match stage {
        Stage::Prospect => PbStage::Prospect,
        Stage::New => PbStage::New,
        Stage::Active => PbStage::Active,
        Stage::Loyal => PbStage::Loyal,
        Stage::AtRisk => PbStage::AtRisk,
        Stage::Churned => PbStage::Churned,
        Stage::Reactivated => PbStage::Reactivated,
    }
}

/// A wire stage as a lifecycle stage; `None` for STAGE_UNSPECIFIED.
pub(crate) fn stage_from_wire(stage: PbStage) -> Option<Stage> {
    match stage {
        PbStage::Unspecified => None,
        PbStage::Prospect => Some(Stage::Prospect),
        PbStage::New => Some(Stage::New),
        PbStage::Active => Some(Stage::Active),
        PbStage::Loyal => Some(Stage::Loyal),
        PbStage::AtRisk => Some(Stage::AtRisk),
        PbStage::Churned => Some(Stage::Churned),
        PbStage::Reactivated => Some(Stage::Reactivated),
    }
}

/// A stored stage name on the wire (a name the projector did not write means corrupt data).
pub(crate) fn stored_stage(name: Option<&str>) -> Result<i32, ApiError> {
    match name {
        None => Ok(PbStage::Unspecified as i32),
        Some(name) => Stage::from_str(name)
            .map(|stage| stage_to_wire(stage) as i32)
            .map_err(|error| ApiError::Internal(format!("read model: {error}"))),
    }
}

fn score(value: Option<i16>) -> Option<u32> {
    value.and_then(|v| u32::try_from(v).ok())
}

/// A customer without history.
pub(crate) fn customer(row: &CustomerRow, snapshot: &Snapshot) -> Result<pb::Customer, ApiError> {
    let tenure_days = tenure_days(row.first_purchase_at, snapshot.watermark);
    let rfm = match (score(row.rfm_r), score(row.rfm_f), score(row.rfm_m)) {
        (Some(recency), Some(frequency), Some(monetary)) => Some(pb::RfmScores {
            recency,
            frequency,
            monetary,
        }),
        _ => None,
    };
    Ok(pb::Customer {
        customer_id: row.customer_id.clone(),
        stage: stored_stage(row.stage.as_deref())?,
        stage_since: row.stage_since.map(timestamp),
        stage_history: Vec::new(),
        value: Some(pb::CustomerValue {
            orders: row.orders,
            refunds: row.refunds,
            gross_revenue_minor: row.gross_revenue_minor,
            refunded_minor: row.refunded_minor,
            net_revenue_minor: row.net_revenue_minor,
            currency: snapshot.currency.clone(),
            average_order_minor: row.average_order_minor,
            first_purchase_at: row.first_purchase_at.map(timestamp),
            last_purchase_at: row.last_purchase_at.map(timestamp),
            tenure_days,
        }),
        rfm,
        rfm_segment: row.rfm_segment.clone().unwrap_or_default(),
        tier: row.tier.clone().unwrap_or_default(),
        last_event_at: row.last_event_at.map(timestamp),
        prediction: None,
        consents: consents(row)?,
        merged_into: row.merged_into.clone().unwrap_or_default(),
    })
}

/// The stored consent answers on the wire, by purpose.
fn consents(row: &CustomerRow) -> Result<Vec<pb::Consent>, ApiError> {
    let Some(json) = &row.consents else {
        return Ok(Vec::new());
    };
    let consents: patron_projector::Consents = serde_json::from_str(json)
        .map_err(|e| ApiError::Internal(format!("consents of {}: {e}", row.customer_id)))?;
    Ok(consents
        .answers()
        .map(|(purpose, answer)| pb::Consent {
            purpose: purpose.to_owned(),
            granted: answer.granted,
            changed_at: Some(timestamp(answer.at)),
        })
        .collect())
}

/// Facts as a string map: strings as they are, other JSON values as JSON text.
pub(crate) fn facts(text: &str) -> Result<HashMap<String, String>, ApiError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|error| ApiError::Internal(format!("stage history facts: {error}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(ApiError::Internal(
            "stage history facts: not an object".into(),
        ));
    };
    Ok(map
        .into_iter()
        .map(|(key, value)| match value {
            serde_json::Value::String(text) => (key, text),
            other => (key, other.to_string()),
        })
        .collect())
}

/// History rows (by seq) as entries: each stay ends when the next begins; the current one is
/// measured to the watermark.
fn history(
    rows: &[HistoryRow],
    watermark: Option<DateTime<Utc>>,
) -> Result<Vec<pb::StageHistoryEntry>, ApiError> {
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let exited = rows.get(i + 1).map(|next| next.entered_at);
            let seconds_in_stage = seconds_in_stage(row.entered_at, exited.or(watermark));
            Ok(pb::StageHistoryEntry {
                from_stage: stored_stage(row.from_stage.as_deref())?,
                to_stage: stored_stage(Some(&row.to_stage))?,
                entered_at: Some(timestamp(row.entered_at)),
                exited_at: exited.map(timestamp),
                seconds_in_stage,
                rule: row.rule.clone(),
                facts: facts(&row.facts)?,
            })
        })
        .collect()
}

/// A customer with its history.
pub(crate) fn customer_detail(detail: &CustomerDetail) -> Result<pb::Customer, ApiError> {
    let mut customer = customer(&detail.customer, &detail.snapshot)?;
    customer.stage_history = history(&detail.history, detail.snapshot.watermark)?;
    customer.prediction = detail.prediction.as_ref().map(prediction).transpose()?;
    Ok(customer)
}

/// Whole days from the first purchase to the watermark (0 without either, or before it).
fn tenure_days(first_purchase_at: Option<DateTime<Utc>>, watermark: Option<DateTime<Utc>>) -> i64 {
    match (first_purchase_at, watermark) {
        (Some(first), Some(watermark)) if watermark > first => (watermark - first).num_days(),
        _ => 0,
    }
}

/// Seconds of a stay in a stage entered at `entered`, to `end` (0 without an end).
fn seconds_in_stage(entered: DateTime<Utc>, end: Option<DateTime<Utc>>) -> i64 {
    end.map(|end| (end - entered).num_seconds().max(0))
        .unwrap_or(0)
}

/// What, in a customer on the wire, is measured to the watermark: tenure (from the first
/// purchase) and the time in the current stage (from entering it). The rest of a customer stays
/// the same while nothing happens to it, so an answer converted once can be re-measured to a
/// later watermark instead of converted again (the customer cache does this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Measures {
    first_purchase_at: Option<DateTime<Utc>>,
    current_stage_entered_at: Option<DateTime<Utc>>,
}

impl Measures {
    /// The measures of the customer `detail` converts to.
    pub(crate) fn of(detail: &CustomerDetail) -> Self {
        Self {
            first_purchase_at: detail.customer.first_purchase_at,
            current_stage_entered_at: detail.history.last().map(|row| row.entered_at),
        }
    }

    /// Sets the figures of `customer` (converted from the detail these measures are of) as a
    /// conversion at `watermark` would.
    pub(crate) fn apply(&self, customer: &mut pb::Customer, watermark: Option<DateTime<Utc>>) {
        if let Some(value) = &mut customer.value {
            value.tenure_days = tenure_days(self.first_purchase_at, watermark);
        }
        if let (Some(entered), Some(current)) = (
            self.current_stage_entered_at,
            customer.stage_history.last_mut(),
        ) {
            current.seconds_in_stage = seconds_in_stage(entered, watermark);
        }
    }
}

/// A stored prediction on the wire.
pub(crate) fn prediction(row: &PredictionRow) -> Result<pb::Prediction, ApiError> {
    let corrupt = |what: &str| ApiError::Internal(format!("clv prediction: {what}"));
    Ok(pb::Prediction {
        model_version: u64::try_from(row.model_version).map_err(|_| corrupt("version"))?,
        evaluated_at: Some(timestamp(row.evaluated_at)),
        p_alive: row.p_alive,
        expected_purchases: row.expected_purchases,
        horizon_days: u32::try_from(row.horizon_days).map_err(|_| corrupt("horizon"))?,
        expected_spend_minor: row.expected_spend_minor,
        expected_revenue_minor: row.expected_revenue_minor,
        clv_minor: row.clv_minor,
    })
}

/// A model version on the wire.
pub(crate) fn model(version: &patron_projector::clv::ModelVersion) -> pb::ClvModel {
    let m = &version.model;
    pb::ClvModel {
        version: u64::try_from(version.version).unwrap_or(0),
        fitted_at: Some(timestamp(m.fitted_at)),
        evaluated_at: Some(timestamp(m.evaluated_at)),
        generation: m.generation,
        customers: m.customers,
        repeat_buyers: m.repeat_buyers,
        bgnbd: Some(pb::BgNbdParameters {
            r: m.bgnbd.r,
            alpha: m.bgnbd.alpha,
            a: m.bgnbd.a,
            b: m.bgnbd.b,
            log_likelihood: m.bgnbd_log_likelihood,
        }),
        gamma_gamma: m.gamma_gamma.map(|g| pb::GammaGammaParameters {
            p: g.p,
            q: g.q,
            gamma: g.gamma,
        }),
        spend_note: m.spend_note.clone().unwrap_or_default(),
        horizon_days: m.horizon_days,
        annual_discount_rate: m.annual_discount_rate,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, day, 0, 0, 0).unwrap()
    }

    fn row(seq: i32, from: Option<&str>, to: &str, day: u32) -> HistoryRow {
        HistoryRow {
            seq,
            from_stage: from.map(str::to_owned),
            to_stage: to.into(),
            entered_at: at(day),
            rule: "rule".into(),
            facts: r#"{"orders":"2","gap":3}"#.into(),
        }
    }

    #[test]
    fn stays_end_when_the_next_begins() {
        let rows = [
            row(0, None, "prospect", 1),
            row(1, Some("prospect"), "new", 3),
        ];
        let entries = history(&rows, Some(at(10))).unwrap();
        assert_eq!(entries[0].from_stage, PbStage::Unspecified as i32);
        assert_eq!(entries[0].exited_at, Some(timestamp(at(3))));
        assert_eq!(entries[0].seconds_in_stage, 2 * 86_400);
        assert_eq!(entries[1].to_stage, PbStage::New as i32);
        assert_eq!(entries[1].exited_at, None, "the current stage has no exit");
        assert_eq!(
            entries[1].seconds_in_stage,
            7 * 86_400,
            "measured to the watermark"
        );
        assert_eq!(entries[1].facts["orders"], "2");
        assert_eq!(entries[1].facts["gap"], "3");
    }

    fn detail(first_purchase_day: Option<u32>, history: Vec<HistoryRow>) -> CustomerDetail {
        CustomerDetail {
            snapshot: Snapshot {
                generation: 1,
                currency: "EUR".into(),
                watermark: Some(at(10)),
                checkpoint: 40,
            },
            customer: CustomerRow {
                customer_id: "c-1".into(),
                stage: history.last().map(|row| row.to_stage.clone()),
                stage_since: history.last().map(|row| row.entered_at),
                orders: 2,
                refunds: 0,
                gross_revenue_minor: 5_000,
                refunded_minor: 0,
                net_revenue_minor: 5_000,
                average_order_minor: Some(2_500),
                first_purchase_at: first_purchase_day.map(at),
                last_purchase_at: first_purchase_day.map(at),
                last_event_at: Some(at(9)),
                rfm_r: Some(3),
                rfm_f: Some(2),
                rfm_m: Some(4),
                rfm_segment: Some("promising".into()),
                tier: Some("B".into()),
                consents: None,
                merged_into: None,
            },
            history,
            prediction: None,
        }
    }

    #[test]
    fn a_conversion_re_measured_to_another_watermark_equals_a_conversion_at_it() {
        let histories = [
            Vec::new(),
            vec![row(0, None, "prospect", 1)],
            vec![
                row(0, None, "prospect", 1),
                row(1, Some("prospect"), "new", 3),
                row(2, Some("new"), "active", 8),
            ],
        ];
        let watermarks = [None, Some(at(2)), Some(at(10)), Some(at(27))];
        for history in histories {
            for first_purchase in [None, Some(3), Some(20)] {
                let detail = detail(first_purchase, history.clone());
                let measures = Measures::of(&detail);
                for from in watermarks {
                    for to in watermarks {
                        let mut then = detail.clone();
                        then.snapshot.watermark = from;
                        let mut now = detail.clone();
                        now.snapshot.watermark = to;
                        let mut moved = customer_detail(&then).unwrap();
                        measures.apply(&mut moved, to);
                        assert_eq!(
                            moved,
                            customer_detail(&now).unwrap(),
                            "{from:?} → {to:?}, first purchase {first_purchase:?}, {} stays",
                            history.len()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn unknown_stored_stages_are_internal_errors() {
        let rows = [row(0, None, "zombie", 1)];
        assert!(matches!(history(&rows, None), Err(ApiError::Internal(_))));
    }
}
