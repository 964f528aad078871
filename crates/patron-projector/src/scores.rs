//! Population-relative scores (RFM quintiles, RFM segment, A/B/C value tier), recomputed on an
//! event-time schedule: whenever the watermark enters a new UTC day.

use chrono::{DateTime, Utc};
use patron_value::{Rfm, Tier};
use serde::{Deserialize, Serialize};

/// A customer's scores as of the last scoring (the projection's `scored_at`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scores {
    /// RFM quintile scores (1–5 each); the segment follows from them ([`Rfm::segment`]).
    pub rfm: Rfm,
    /// The value tier by cumulative share of net revenue (A: the top 80 %, B: the next 15 %).
    pub tier: Option<Tier>,
}

/// The midnight (UTC) starting the day of `at`.
pub(crate) fn midnight(at: DateTime<Utc>) -> DateTime<Utc> {
    at.date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(at, |naive| naive.and_utc())
}
