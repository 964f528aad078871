//! Validated day and month ranges of the KPI queries.

use chrono::{Datelike, NaiveDate};

use crate::error::ApiError;

/// Most days a day range may span (both ends included).
pub const MAX_DAYS: i64 = 3660;
/// Most months a month range may span (both ends included).
pub const MAX_MONTHS: i32 = 120;

/// Days `from..=to`, `from <= to`, at most [`MAX_DAYS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Days {
    pub(crate) from: NaiveDate,
    pub(crate) to: NaiveDate,
}

/// Months `from..=to` as month indexes (`year * 12 + month - 1`), at most [`MAX_MONTHS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Months {
    pub(crate) from: i32,
    pub(crate) to: i32,
}

/// `YYYY-MM-DD` of a day.
pub(crate) fn day_text(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// `YYYY-MM` of a month index.
pub(crate) fn month_text(index: i32) -> String {
    format!(
        "{:04}-{:02}",
        index.div_euclid(12),
        index.rem_euclid(12) + 1
    )
}

fn day(field: &'static str, text: &str) -> Result<NaiveDate, ApiError> {
    if text.is_empty() {
        return Err(ApiError::invalid(field, "required, as YYYY-MM-DD"));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .filter(|day| day_text(*day) == text)
        .ok_or_else(|| ApiError::invalid(field, format!("expected YYYY-MM-DD, got {text:?}")))
}

/// The month index of a `YYYY-MM` text.
pub(crate) fn month(field: &'static str, text: &str) -> Result<i32, ApiError> {
    if text.is_empty() {
        return Err(ApiError::invalid(field, "required, as YYYY-MM"));
    }
    NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d")
        .ok()
        .map(|first| first.year() * 12 + i32::try_from(first.month0()).unwrap_or(0))
        .filter(|index| month_text(*index) == text)
        .ok_or_else(|| ApiError::invalid(field, format!("expected YYYY-MM, got {text:?}")))
}

/// Validates `from_day` and `to_day`.
pub(crate) fn days(from: &str, to: &str) -> Result<Days, ApiError> {
    let (from, to) = (day("from_day", from)?, day("to_day", to)?);
    if to < from {
        return Err(ApiError::invalid(
            "to_day",
            format!("{} is before from_day {}", day_text(to), day_text(from)),
        ));
    }
    let span = (to - from).num_days() + 1;
    if span > MAX_DAYS {
        return Err(ApiError::invalid(
            "to_day",
            format!("the range spans {span} days; at most {MAX_DAYS} are allowed"),
        ));
    }
    Ok(Days { from, to })
}

/// Validates `from_month` and `to_month`.
pub(crate) fn months(from: &str, to: &str) -> Result<Months, ApiError> {
    let (from, to) = (month("from_month", from)?, month("to_month", to)?);
    if to < from {
        return Err(ApiError::invalid(
            "to_month",
            format!(
                "{} is before from_month {}",
                month_text(to),
                month_text(from)
            ),
        ));
    }
    let span = to - from + 1;
    if span > MAX_MONTHS {
        return Err(ApiError::invalid(
            "to_month",
            format!("the range spans {span} months; at most {MAX_MONTHS} are allowed"),
        ));
    }
    Ok(Months { from, to })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(error: ApiError) -> String {
        error.to_string()
    }

    #[test]
    fn days_are_strict_ordered_and_bounded() {
        let range = days("2025-01-30", "2025-02-02").unwrap();
        assert_eq!((range.to - range.from).num_days(), 3);
        assert!(days("2024-02-29", "2024-02-29").is_ok(), "a leap day");
        let cases = [
            ("", "2025-01-01", "from_day: required, as YYYY-MM-DD"),
            (
                "2025-1-01",
                "2025-01-01",
                "from_day: expected YYYY-MM-DD, got \"2025-1-01\"",
            ),
            (
                "2025-01-01",
                "2025-02-30",
                "to_day: expected YYYY-MM-DD, got \"2025-02-30\"",
            ),
            (
                "2025-02-01",
                "2025-01-31",
                "to_day: 2025-01-31 is before from_day 2025-02-01",
            ),
            (
                "2000-01-01",
                "2010-12-31",
                "to_day: the range spans 4018 days; at most 3660 are allowed",
            ),
        ];
        for (from, to, expected) in cases {
            assert_eq!(
                message(days(from, to).unwrap_err()),
                expected,
                "{from}..{to}"
            );
        }
    }

    #[test]
    fn months_are_strict_ordered_and_bounded() {
        let range = months("2024-11", "2025-02").unwrap();
        assert_eq!(range.to - range.from, 3);
        assert_eq!(month_text(range.from), "2024-11");
        assert_eq!(month_text(range.to), "2025-02");
        let cases = [
            (
                "2025-13",
                "2025-12",
                "from_month: expected YYYY-MM, got \"2025-13\"",
            ),
            (
                "2025-01",
                "2025-1",
                "to_month: expected YYYY-MM, got \"2025-1\"",
            ),
            ("2025-01", "", "to_month: required, as YYYY-MM"),
            (
                "2025-03",
                "2025-02",
                "to_month: 2025-02 is before from_month 2025-03",
            ),
            (
                "2015-01",
                "2025-01",
                "to_month: the range spans 121 months; at most 120 are allowed",
            ),
        ];
        for (from, to, expected) in cases {
            assert_eq!(
                message(months(from, to).unwrap_err()),
                expected,
                "{from}..{to}"
            );
        }
    }
}
