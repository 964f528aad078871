//! The stages of a customer's lifecycle, with their stable names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a customer is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Known (any event), but has not bought yet.
    Prospect,
    /// Made a first purchase and is in (or just past) the honeymoon window.
    New,
    /// A recent repeat buyer.
    Active,
    /// A repeat buyer in the top value tier.
    Loyal,
    /// Inactive for longer than the at-risk multiple of its usual gap between purchases.
    AtRisk,
    /// Inactive for longer than the churn multiple of its usual gap.
    Churned,
    /// Bought again after churning; becomes active on the next purchase or after a window.
    Reactivated,
}

impl Stage {
    /// Every stage, in lifecycle order.
    pub const ALL: [Stage; 7] = [
        Stage::Prospect,
        Stage::New,
        Stage::Active,
        Stage::Loyal,
        Stage::AtRisk,
        Stage::Churned,
        Stage::Reactivated,
    ];

    /// The stable snake_case name, e.g. `at_risk`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Prospect => "prospect",
            Stage::New => "new",
            Stage::Active => "active",
            Stage::Loyal => "loyal",
            Stage::AtRisk => "at_risk",
            Stage::Churned => "churned",
            Stage::Reactivated => "reactivated",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = UnknownStage;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|stage| stage.as_str() == s)
            .ok_or_else(|| UnknownStage(s.to_owned()))
    }
}

/// A stage name that is none of [`Stage::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown lifecycle stage {0:?} (expected prospect, new, active, loyal, at_risk, churned or reactivated)"
)]
pub struct UnknownStage(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_snake_case() {
        let names: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "prospect",
                "new",
                "active",
                "loyal",
                "at_risk",
                "churned",
                "reactivated"
            ]
        );
        for stage in Stage::ALL {
            assert_eq!(stage.as_str().parse::<Stage>(), Ok(stage));
            assert_eq!(stage.to_string(), stage.as_str());
            let json = serde_json::to_string(&stage).unwrap();
            assert_eq!(
                json,
                format!("\"{}\"", stage.as_str()),
                "serde uses the stable name"
            );
        }
    }

    #[test]
    fn unknown_names_are_refused() {
        assert_eq!(
            "AtRisk".parse::<Stage>(),
            Err(UnknownStage("AtRisk".into()))
        );
        let message = "lapsed".parse::<Stage>().unwrap_err().to_string();
        assert!(message.contains("\"lapsed\""), "names the input: {message}");
    }
}
