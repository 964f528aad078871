//! What the query layer returns: read-model rows, independent of the wire format.

use chrono::{DateTime, Utc};

/// One row of `customers` in the active generation.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CustomerRow {
    /// The customer's id.
    pub customer_id: String,
    /// Lifecycle stage name (`at_risk`, …), if classified.
    pub stage: Option<String>,
    /// When the current stage was entered.
    pub stage_since: Option<DateTime<Utc>>,
    /// Purchases counted.
    pub orders: i64,
    /// Refunds counted.
    pub refunds: i64,
    /// Purchases, minor units.
    pub gross_revenue_minor: i64,
    /// Refunds, minor units.
    pub refunded_minor: i64,
    /// Gross minus refunded, minor units.
    pub net_revenue_minor: i64,
    /// Average order, minor units (none without orders).
    pub average_order_minor: Option<i64>,
    /// First purchase (event time).
    pub first_purchase_at: Option<DateTime<Utc>>,
    /// Latest purchase (event time).
    pub last_purchase_at: Option<DateTime<Utc>>,
    /// Latest event of any kind (event time).
    pub last_event_at: Option<DateTime<Utc>>,
    /// RFM recency score 1-5.
    pub rfm_r: Option<i16>,
    /// RFM frequency score 1-5.
    pub rfm_f: Option<i16>,
    /// RFM monetary score 1-5.
    pub rfm_m: Option<i16>,
    /// Named RFM segment.
    pub rfm_segment: Option<String>,
    /// Value tier A/B/C.
    pub tier: Option<String>,
    /// Every consent answer as stored (JSON, see `patron_projector::Consents`); none when the
    /// customer answered nothing.
    pub consents: Option<String>,
    /// The customer this one was merged into, if it was.
    pub merged_into: Option<String>,
}

/// One row of `stage_history`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HistoryRow {
    /// Order within the customer's history, from 0.
    pub seq: i32,
    /// The stage left (none for the first entry).
    pub from_stage: Option<String>,
    /// The stage entered.
    pub to_stage: String,
    /// When it was entered (event time).
    pub entered_at: DateTime<Utc>,
    /// The rule that fired.
    pub rule: String,
    /// The rule's facts as JSON text (an object).
    pub facts: String,
}

/// Which generation a query read, and what holds for all of its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The active generation.
    pub generation: i64,
    /// ISO 4217 code of the reporting currency of every amount.
    pub currency: String,
    /// Event time the projection has reached, if any.
    pub watermark: Option<DateTime<Utc>>,
    /// The log position the generation had applied when read.
    pub checkpoint: u64,
}

/// Where the active generation's change feed is (see [`crate::cache`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeHead {
    /// The active generation.
    pub generation: i64,
    /// Its checkpoint, as of `changes_head`.
    pub checkpoint: u64,
    /// Its watermark, as of `changes_head`.
    pub watermark: Option<DateTime<Utc>>,
    /// The id of the last change record committed.
    pub changes_head: i64,
    /// The CLV model version in force, if any.
    pub model_version: Option<i64>,
}

/// One commit's change record: the customers it wrote, or `None` for "too many to list".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    /// Gapless, in commit order.
    pub id: i64,
    /// The customers written.
    pub customer_ids: Option<Vec<String>>,
}

/// A customer with its stage history, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerDetail {
    /// The generation read.
    pub snapshot: Snapshot,
    /// The customer's row.
    pub customer: CustomerRow,
    /// Every transition, by `seq`.
    pub history: Vec<HistoryRow>,
    /// The customer's predictions under the model in force, if any.
    pub prediction: Option<PredictionRow>,
}

/// One row of `clv_predictions`, with what it needs of its model version.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionRow {
    /// The model version that produced it.
    pub model_version: i64,
    /// The model's evaluation time (event time).
    pub evaluated_at: DateTime<Utc>,
    /// The model's horizon, days.
    pub horizon_days: i32,
    /// Probability alive.
    pub p_alive: f64,
    /// Expected purchases in the horizon.
    pub expected_purchases: f64,
    /// Expected spend per transaction, minor units.
    pub expected_spend_minor: Option<i64>,
    /// Expected revenue in the horizon, minor units.
    pub expected_revenue_minor: Option<i64>,
    /// Discounted expected revenue in the horizon, minor units.
    pub clv_minor: Option<i64>,
}

/// Predictions of the active generation summed by current tier.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TierForecastRow {
    /// `A`, `B`, `C`, or empty for customers not yet scored.
    pub tier: String,
    /// The model version of the predictions.
    pub model_version: i64,
    /// Customers with a prediction.
    pub customers: i64,
    /// Sum of expected purchases.
    pub expected_purchases: f64,
    /// Sum of expected revenue, minor units (`None` when nobody has one).
    pub expected_revenue_minor: Option<i64>,
    /// Sum of CLVs, minor units (`None` when nobody has one).
    pub clv_minor: Option<i64>,
    /// Sum of probabilities alive.
    pub expected_active: f64,
}

/// The model version a forecast comes from.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ForecastModel {
    /// Its version.
    pub version: i64,
    /// Its horizon, days.
    pub horizon_days: i32,
    /// Its evaluation time.
    pub evaluated_at: DateTime<Utc>,
}

/// The population forecast of the active generation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Forecast {
    /// The generation read (none before the projector has run once).
    pub snapshot: Option<Snapshot>,
    /// The model of the predictions (none without predictions).
    pub model: Option<ForecastModel>,
    /// By tier, in no particular order.
    pub tiers: Vec<TierForecastRow>,
}

/// One page of customers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerPage {
    /// The generation read (none before the projector has run once).
    pub snapshot: Option<Snapshot>,
    /// Up to the limit asked for, by customer id.
    pub customers: Vec<CustomerRow>,
}

/// Validated filters of a listing; every present filter must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerFilter {
    /// Stage name, e.g. `at_risk`.
    pub stage: Option<String>,
    /// Tier `A`, `B` or `C`.
    pub tier: Option<String>,
    /// RFM segment name.
    pub rfm_segment: Option<String>,
    /// Lowest net revenue, minor units.
    pub min_net_revenue_minor: Option<i64>,
    /// A consent purpose the customer must have granted.
    pub consent_purpose: Option<String>,
}

/// A listing: filters, a keyset position and a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerQuery {
    /// What to match.
    pub filter: CustomerFilter,
    /// Only customers with an id greater than this.
    pub after: Option<String>,
    /// Most rows returned.
    pub limit: u32,
}

/// Which column of `kpis` a range applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KpiColumn {
    /// The metric's period (a day or a month).
    Period,
    /// The first dimension (the cohort month of `cohort_active`).
    Dim1,
}

/// The counters of one metric whose `column` lies in `from..=to` (text comparison: both ends
/// have the same fixed-width format as the column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KpiQuery {
    /// The metric, one of `patron_projector::kpi`'s constants.
    pub metric: &'static str,
    /// The column the range applies to.
    pub column: KpiColumn,
    /// Lowest value, included (`""` = from the start of time).
    pub from: String,
    /// Highest value, included.
    pub to: String,
}

/// One KPI counter of the active generation.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KpiRow {
    /// `YYYY-MM-DD` or `YYYY-MM`.
    pub period: String,
    /// First dimension (metric-specific).
    pub dim1: String,
    /// Second dimension (metric-specific).
    pub dim2: String,
    /// The counter.
    pub value: i64,
}

/// KPI counters with the generation they were read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KpiRows {
    /// The generation read (none before the projector has run once).
    pub snapshot: Option<Snapshot>,
    /// The counters, in no particular order.
    pub rows: Vec<KpiRow>,
}

/// One row of `outbox`: a committed lifecycle transition.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxRow {
    /// Grows in commit order.
    pub id: i64,
    /// `{customer_id}:{seq}#{digest}` (`.r{revision}` before `#` once the customer's history
    /// was corrected); a retraction's is the retracted record's with `-retracted`.
    pub dedupe_key: String,
    /// The customer who changed stage.
    pub customer_id: String,
    /// Index in the customer's stage history.
    pub seq: i32,
    /// The stage left (none for the first).
    pub from_stage: Option<String>,
    /// The stage entered.
    pub to_stage: String,
    /// When (event time).
    pub occurred_at: DateTime<Utc>,
    /// The rule that fired.
    pub rule: String,
    /// The rule's facts as JSON text (an object).
    pub facts: String,
    /// The event log position whose processing fired it.
    pub position: i64,
    /// The customer's consent answers when it fired, as JSON (purpose -> granted); none when
    /// the customer had answered nothing.
    pub consent: Option<String>,
    /// For a retraction, the dedupe key of the record it withdraws.
    pub retracts: Option<String>,
    /// Whether the transition was older than the rules' horizon when processed.
    pub historical: bool,
}
