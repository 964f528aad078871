//! Rules from TOML: defaults, overrides, and refusals that name the offending field.

use crate::{Rules, RulesError};

#[test]
fn example_toml_parses_to_the_defaults_and_names_every_rule() {
    let example = Rules::example_toml();
    assert_eq!(Rules::from_toml_str(example).unwrap(), Rules::default());
    Rules::default().validate().unwrap();
    let serialised = toml::to_string(&Rules::default()).unwrap();
    for line in serialised.lines().filter(|line| !line.is_empty()) {
        assert!(
            example.lines().any(|l| l == line),
            "the example sets `{line}` explicitly"
        );
    }
}

#[test]
fn missing_keys_take_their_defaults() {
    assert_eq!(Rules::from_toml_str("").unwrap(), Rules::default());
    let rules = Rules::from_toml_str("honeymoon_days = 14\ncurrency = \"EUR\"\n").unwrap();
    assert_eq!(
        rules,
        Rules {
            honeymoon_days: 14,
            currency: "EUR".into(),
            ..Rules::default()
        }
    );
}

#[test]
fn invalid_values_are_refused_naming_the_field() {
    let cases = [
        ("honeymoon_days = 0", "honeymoon_days"),
        ("honeymoon_days = -5", "honeymoon_days"),
        ("honeymoon_days = 40000", "honeymoon_days"),
        ("default_gap_days = 0", "default_gap_days"),
        ("min_gap_days = -1", "min_gap_days"),
        ("reactivated_days = 0", "reactivated_days"),
        ("p_alive_at_risk_percent = 100", "p_alive_at_risk_percent"),
        ("p_alive_churn_percent = 0", "p_alive_churn_percent"),
        ("p_alive_churn_percent = 50", "p_alive_churn_percent"),
        ("active_min_orders = 1", "active_min_orders"),
        ("loyal_min_orders = 1", "loyal_min_orders"),
        (
            "active_min_orders = 5\nloyal_min_orders = 4",
            "loyal_min_orders",
        ),
        (
            "loyal_min_net_revenue_minor = -1",
            "loyal_min_net_revenue_minor",
        ),
        (
            "at_risk_gap_multiple_percent = 0",
            "at_risk_gap_multiple_percent",
        ),
        (
            "at_risk_gap_multiple_percent = 400",
            "churn_gap_multiple_percent",
        ),
        (
            "at_risk_gap_multiple_percent = 500",
            "churn_gap_multiple_percent",
        ),
        (
            "churn_gap_multiple_percent = 150",
            "churn_gap_multiple_percent",
        ),
        (
            "churn_gap_multiple_percent = 20000",
            "churn_gap_multiple_percent",
        ),
        ("currency = \"usd\"", "currency"),
        ("currency = \"XYZ\"", "currency"),
    ];
    for (text, field) in cases {
        let err = Rules::from_toml_str(text).expect_err(text);
        assert_eq!(err.field(), Some(field), "{text}: {err}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("lifecycle rule `{field}` ")),
            "{text}: message names the field: {message}"
        );
    }
}

#[test]
fn malformed_toml_is_refused_naming_the_key() {
    let cases = [
        ("honeymoon_dayz = 30", "honeymoon_dayz"),
        ("honeymoon_days = \"30\"", "honeymoon_days"),
        (
            "at_risk_gap_multiple_percent = 2.0",
            "at_risk_gap_multiple_percent",
        ),
        ("[lifecycle]\nhoneymoon_days = 30", "lifecycle"),
    ];
    for (text, key) in cases {
        let err = Rules::from_toml_str(text).expect_err(text);
        assert!(matches!(err, RulesError::Toml(_)), "{text}: {err:?}");
        assert_eq!(err.field(), None);
        let message = err.to_string();
        assert!(
            message.contains(key),
            "{text}: message names `{key}`: {message}"
        );
    }
}

#[test]
fn rules_built_in_code_are_validated_too() {
    let rules = Rules {
        churn_gap_multiple_percent: 200,
        ..Rules::default()
    };
    let err = rules.validate().unwrap_err();
    assert_eq!(err.field(), Some("churn_gap_multiple_percent"));
    assert!(
        err.to_string()
            .contains("at_risk_gap_multiple_percent (200)"),
        "says what it must exceed: {err}"
    );
}
