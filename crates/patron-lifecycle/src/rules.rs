//! Lifecycle rules as data: the thresholds of every stage, read from TOML and validated.

use patron_domain::Currency;
use serde::{Deserialize, Serialize};

/// Seconds in a day: rule durations are whole days.
pub(crate) const DAY_SECONDS: i64 = 86_400;
/// The longest duration a rule may name (100 years): keeps deadline arithmetic far from overflow.
const MAX_DAYS: i64 = 36_500;
/// The largest gap multiple a rule may name, in percent (100x).
const MAX_PERCENT: i64 = 10_000;
/// The largest order count a rule may require.
const MAX_ORDERS: i64 = 1_000_000;

/// The lifecycle rules. Every field has a default (see [`Rules::default`] and
/// [`Rules::example_toml`]); a TOML file only names what it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// ISO 4217 code of the currency that counts towards net revenue (default `USD`).
    pub currency: String,
    /// Length of the `new` window after the first purchase, in days (default 30).
    pub honeymoon_days: i64,
    /// Orders that make a repeat buyer, needed for `active` (default 2, at least 2).
    pub active_min_orders: i64,
    /// Orders needed for `loyal` (default 4).
    pub loyal_min_orders: i64,
    /// Net revenue needed for `loyal`, in minor units of `currency` (default 50000).
    pub loyal_min_net_revenue_minor: i64,
    /// The usual gap between purchases assumed for customers with fewer than 2 (default 60 days).
    pub default_gap_days: i64,
    /// The smallest usual gap, so that same-day repeat orders do not churn a customer in hours
    /// (default 7 days).
    pub min_gap_days: i64,
    /// Inactivity, as a percentage of the usual gap, that makes a customer `at_risk` (default 200).
    pub at_risk_gap_multiple_percent: i64,
    /// Inactivity, as a percentage of the usual gap, that makes a customer `churned` (default 400).
    pub churn_gap_multiple_percent: i64,
    /// Length of the `reactivated` window before the customer counts as `active` (default 30 days).
    pub reactivated_days: i64,
    /// Whether a fitted BG/NBD model's probability alive decides `at_risk` and `churned` for
    /// repeat buyers (default `true`; only once a model event is in the log).
    pub p_alive: bool,
    /// Probability alive, in percent, below which a repeat buyer is `at_risk` (default 50).
    pub p_alive_at_risk_percent: i64,
    /// Probability alive, in percent, below which a repeat buyer is `churned` (default 10; must
    /// be smaller).
    pub p_alive_churn_percent: i64,
    /// How far, in minutes, event time may run behind the latest evidence of time before an
    /// event counts as late (default 60): time-driven transitions fire only once the watermark
    /// (the latest evidence, less this) has passed their deadline. See the README's *Time*.
    pub allowed_lateness_minutes: i64,
    /// A lifecycle record whose transition is more than this many days older than the commit
    /// of the event that caused it is marked `historical` (default 7): a backfill, not news.
    pub historical_after_days: i64,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            currency: "USD".to_owned(),
            honeymoon_days: 30,
            active_min_orders: 2,
            loyal_min_orders: 4,
            loyal_min_net_revenue_minor: 50_000,
            default_gap_days: 60,
            min_gap_days: 7,
            at_risk_gap_multiple_percent: 200,
            churn_gap_multiple_percent: 400,
            reactivated_days: 30,
            p_alive: true,
            p_alive_at_risk_percent: 50,
            p_alive_churn_percent: 10,
            allowed_lateness_minutes: 60,
            historical_after_days: 7,
        }
    }
}

/// Why lifecycle rules were refused.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The text is not TOML, has a value of the wrong type, or names an unknown key.
    #[error("lifecycle rules are not valid: {0}")]
    Toml(#[from] toml::de::Error),
    /// A rule has a value outside its allowed range.
    #[error("lifecycle rule `{field}` {reason}")]
    Invalid {
        /// The TOML key of the offending rule.
        field: &'static str,
        /// What is wrong, with the value that was given.
        reason: String,
    },
}

impl RulesError {
    /// The rule that was refused, when the error is about one value.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            RulesError::Toml(_) => None,
            RulesError::Invalid { field, .. } => Some(field),
        }
    }
}

/// Builds an [`RulesError::Invalid`].
fn invalid(field: &'static str, reason: String) -> RulesError {
    RulesError::Invalid { field, reason }
}

/// Checks that `value` lies in `min..=max`.
fn check_range(field: &'static str, value: i64, min: i64, max: i64) -> Result<(), RulesError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ))
    }
}

impl Rules {
    /// Parses rules from TOML (missing keys take their defaults) and validates them.
    pub fn from_toml_str(text: &str) -> Result<Self, RulesError> {
        let rules: Rules = toml::from_str(text)?;
        rules.validate()?;
        Ok(rules)
    }

    /// Checks every rule; the error names the first offending field.
    pub fn validate(&self) -> Result<(), RulesError> {
        if Currency::from_code(&self.currency).is_err() {
            return Err(invalid(
                "currency",
                format!(
                    "must be an ISO 4217 code such as USD, got {:?}",
                    self.currency
                ),
            ));
        }
        for (field, days) in [
            ("honeymoon_days", self.honeymoon_days),
            ("default_gap_days", self.default_gap_days),
            ("min_gap_days", self.min_gap_days),
            ("reactivated_days", self.reactivated_days),
        ] {
            check_range(field, days, 1, MAX_DAYS)?;
        }
        check_range("active_min_orders", self.active_min_orders, 2, MAX_ORDERS)?;
        check_range("loyal_min_orders", self.loyal_min_orders, 2, MAX_ORDERS)?;
        if self.loyal_min_orders < self.active_min_orders {
            return Err(invalid(
                "loyal_min_orders",
                format!(
                    "must be at least active_min_orders ({}), got {}",
                    self.active_min_orders, self.loyal_min_orders
                ),
            ));
        }
        check_range(
            "loyal_min_net_revenue_minor",
            self.loyal_min_net_revenue_minor,
            0,
            i64::MAX,
        )?;
        check_range(
            "at_risk_gap_multiple_percent",
            self.at_risk_gap_multiple_percent,
            1,
            MAX_PERCENT,
        )?;
        check_range(
            "churn_gap_multiple_percent",
            self.churn_gap_multiple_percent,
            1,
            MAX_PERCENT,
        )?;
        check_range(
            "p_alive_at_risk_percent",
            self.p_alive_at_risk_percent,
            1,
            99,
        )?;
        check_range("p_alive_churn_percent", self.p_alive_churn_percent, 1, 99)?;
        check_range(
            "allowed_lateness_minutes",
            self.allowed_lateness_minutes,
            0,
            MAX_DAYS * 24 * 60,
        )?;
        check_range(
            "historical_after_days",
            self.historical_after_days,
            0,
            MAX_DAYS,
        )?;
        if self.p_alive_churn_percent >= self.p_alive_at_risk_percent {
            return Err(invalid(
                "p_alive_churn_percent",
                format!(
                    "must be less than p_alive_at_risk_percent ({}), got {}",
                    self.p_alive_at_risk_percent, self.p_alive_churn_percent
                ),
            ));
        }
        if self.churn_gap_multiple_percent <= self.at_risk_gap_multiple_percent {
            return Err(invalid(
                "churn_gap_multiple_percent",
                format!(
                    "must be greater than at_risk_gap_multiple_percent ({}), got {}",
                    self.at_risk_gap_multiple_percent, self.churn_gap_multiple_percent
                ),
            ));
        }
        Ok(())
    }

    /// A commented TOML document that sets every rule to its default.
    pub fn example_toml() -> &'static str {
        EXAMPLE_TOML
    }
}

/// See [`Rules::example_toml`]; a unit test keeps it equal to [`Rules::default`].
const EXAMPLE_TOML: &str = r#"# Patron lifecycle rules. Every key is optional: a missing key takes the default shown here.
# Durations are whole days; gap multiples are integer percentages (200 means 2x).

# Only purchases and refunds in this ISO 4217 currency count towards net revenue; amounts in
# other currencies are counted apart (`other_currency_events`).
currency = "USD"

# A first purchase makes a prospect `new` for this many days. When the window ends, a repeat
# buyer becomes `active` (or `loyal`); a one-off buyer stays `new` until a repeat or inactivity.
honeymoon_days = 30

# Orders that make a repeat buyer (`active`). At least 2.
active_min_orders = 2

# `loyal`: at least this many orders AND at least this net revenue (refunds subtracted), in
# minor units of `currency` (50000 = 500.00 USD).
loyal_min_orders = 4
loyal_min_net_revenue_minor = 50000

# A customer's usual gap is the median of its (last 32) gaps between purchases, but never less
# than `min_gap_days`; with fewer than 2 purchases it is `default_gap_days`.
default_gap_days = 60
min_gap_days = 7

# `at_risk` once the time since the last purchase reaches this multiple of the usual gap...
at_risk_gap_multiple_percent = 200
# ...and `churned` once it reaches this one (must be larger).
churn_gap_multiple_percent = 400

# A purchase after churn makes the customer `reactivated`; the next purchase, or the end of this
# window, makes it `active` (or `loyal`) again.
reactivated_days = 30

# Once a BG/NBD model has been fitted (`patron fit`, or the schedule in `patron serve`, which
# write a `model_fitted` event to the log), a repeat buyer's probability alive replaces the two
# inactivity multiples above: `at_risk` when it falls below `p_alive_at_risk_percent`, `churned`
# below `p_alive_churn_percent` (must be smaller). Customers without a repeat purchase day, and
# every customer before the first model (or with `p_alive = false`), follow the inactivity rules.
p_alive = true
p_alive_at_risk_percent = 50
p_alive_churn_percent = 10

# Time-driven transitions (the honeymoon's end, inactivity, probability alive) fire only once the
# watermark has passed their deadline. The watermark is the latest evidence of time in the log
# (each event's time, but never later than the moment the store committed it, so a producer
# whose clock runs ahead proves nothing) less this many minutes: events up to that much out of
# order (partitions read at different speeds, batches) fire nothing early. A later event
# re-folds its customer in event-time order and the difference is published as corrections.
allowed_lateness_minutes = 60

# A lifecycle record whose transition is more than this many days older than the commit of the
# event that caused it is marked `historical` (a backfill or a late correction, not news).
historical_after_days = 7
"#;

impl Rules {
    /// Seconds in a duration of whole days, saturating (validated rules never saturate).
    pub(crate) fn days_seconds(days: i64) -> i64 {
        days.saturating_mul(DAY_SECONDS)
    }

    /// The allowed lateness as a duration.
    pub fn allowed_lateness(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::try_minutes(self.allowed_lateness_minutes).unwrap_or_default()
    }

    /// The age, as a duration, past which a record is historical.
    pub fn historical_after(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::try_days(self.historical_after_days).unwrap_or_default()
    }

    /// Whether amounts in `currency` count towards net revenue.
    pub(crate) fn counts(&self, currency: Currency) -> bool {
        currency.code() == self.currency
    }
}
