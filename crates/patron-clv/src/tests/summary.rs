use chrono::{NaiveDate, TimeZone, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::{ClvError, Observation, PurchaseSummary, SpendObservation, TimeUnit};

fn day(m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, m, d).expect("valid date")
}

#[test]
fn empty_summary_has_no_statistics() {
    let s = PurchaseSummary::new();
    assert!(s.is_empty());
    assert_eq!(s.frequency(), 0);
    assert_eq!(s.recency_days(), None);
    assert_eq!(s.age_days(day(1, 1)), None);
    assert_eq!(s.mean_repeat_spend_minor(), None);
    assert_eq!(s.observation(day(1, 1), TimeUnit::Days), None);
}

#[test]
fn first_purchase_starts_the_clock_and_is_left_out_of_the_spend_mean() {
    let mut s = PurchaseSummary::new();
    s.record_purchase(day(1, 1), 10_000).unwrap();
    s.record_purchase(day(1, 15), 3_000).unwrap();
    s.record_purchase(day(1, 29), 5_000).unwrap();
    assert_eq!(s.frequency(), 2);
    assert_eq!(s.recency_days(), Some(28));
    assert_eq!(s.age_days(day(3, 1)), Some(60));
    assert_eq!(s.repeat_spend_minor(), 8_000);
    assert_eq!(s.mean_repeat_spend_minor(), Some(4000.0));
    assert_eq!(
        s.observation(day(3, 1), TimeUnit::Weeks),
        Some(Observation {
            frequency: 2,
            recency: 4.0,
            age: 60.0 / 7.0
        })
    );
}

#[test]
fn same_day_purchases_are_one_transaction_with_the_summed_amount() {
    let mut s = PurchaseSummary::new();
    s.record_purchase(day(1, 1), 100).unwrap();
    s.record_purchase(day(1, 3), 250).unwrap();
    s.record_purchase(day(1, 3), 150).unwrap();
    assert_eq!(
        s.frequency(),
        1,
        "two purchases on 01-03 are one repeat transaction"
    );
    assert_eq!(s.mean_repeat_spend_minor(), Some(400.0));
}

#[test]
fn an_earlier_purchase_arriving_late_becomes_the_first() {
    let mut s = PurchaseSummary::new();
    s.record_purchase(day(2, 1), 500).unwrap();
    s.record_purchase(day(3, 1), 700).unwrap();
    assert_eq!(s.mean_repeat_spend_minor(), Some(700.0));
    s.record_purchase(day(1, 1), 9_900).unwrap();
    assert_eq!(s.first_purchase_day(), Some(day(1, 1)));
    assert_eq!(s.frequency(), 2);
    assert_eq!(s.recency_days(), Some(60));
    assert_eq!(
        s.mean_repeat_spend_minor(),
        Some(600.0),
        "02-01 is now a repeat purchase and 01-01 leaves the mean"
    );
}

#[test]
fn observation_ignores_purchases_after_the_evaluation_day() {
    let mut s = PurchaseSummary::new();
    for (m, d, amount) in [(1, 1, 100), (1, 10, 200), (2, 1, 300), (4, 1, 400)] {
        s.record_purchase(day(m, d), amount).unwrap();
    }
    let at = day(2, 1);
    assert_eq!(
        s.observation(at, TimeUnit::Days),
        Some(Observation {
            frequency: 2,
            recency: 31.0,
            age: 31.0
        }),
        "a purchase on the evaluation day counts, so t_x = T"
    );
    assert_eq!(
        s.spend_observation(at),
        Some(SpendObservation {
            frequency: 2,
            mean_spend: 250.0
        })
    );
    assert_eq!(
        s.observation(day(12, 31), TimeUnit::Days)
            .map(|o| o.frequency),
        Some(3)
    );
    assert_eq!(s.age_days(day(1, 1)), Some(0));
    assert_eq!(
        s.observation(
            NaiveDate::from_ymd_opt(2023, 12, 31).unwrap(),
            TimeUnit::Days
        ),
        None
    );
}

#[test]
fn refunds_lower_the_day_value_but_not_the_transaction_count() {
    let mut s = PurchaseSummary::new();
    s.record_purchase(day(1, 1), 1_000).unwrap();
    s.record_purchase(day(1, 5), 1_000).unwrap();
    s.record_purchase(day(1, 9), 3_000).unwrap();
    s.record_refund(day(1, 9), 1_000).unwrap();
    assert_eq!(s.frequency(), 2);
    assert_eq!(s.mean_repeat_spend_minor(), Some(1500.0));
    // Over-refunding a day floors it at zero rather than making it negative.
    s.record_refund(day(1, 5), 5_000).unwrap();
    assert_eq!(s.repeat_spend_minor(), 2_000);
    assert_eq!(s.frequency(), 2);
    // Refunding the first purchase changes nothing the models use.
    let before = s.spend_observation(day(12, 31));
    s.record_refund(day(1, 1), 1_000).unwrap();
    assert_eq!(s.spend_observation(day(12, 31)), before);
}

#[test]
fn a_fully_refunded_repeat_history_has_no_spend_observation() {
    let mut s = PurchaseSummary::new();
    s.record_purchase(day(1, 1), 1_000).unwrap();
    s.record_purchase(day(1, 5), 1_000).unwrap();
    s.record_refund(day(1, 5), 1_000).unwrap();
    assert_eq!(s.mean_repeat_spend_minor(), Some(0.0));
    assert_eq!(s.spend_observation(day(12, 31)), None);
    assert_eq!(s.frequency(), 1, "the refunded purchase still happened");
}

#[test]
fn a_refund_before_its_purchase_is_netted_when_the_purchase_arrives() {
    let mut s = PurchaseSummary::new();
    s.record_refund(day(1, 5), 400).unwrap();
    assert!(s.is_empty(), "a refund alone is not a transaction");
    s.record_purchase(day(1, 1), 1_000).unwrap();
    assert_eq!(s.frequency(), 0);
    s.record_purchase(day(1, 5), 1_000).unwrap();
    assert_eq!(s.mean_repeat_spend_minor(), Some(600.0));
}

#[test]
fn negative_amounts_are_rejected() {
    let mut s = PurchaseSummary::new();
    assert_eq!(
        s.record_purchase(day(1, 1), -1),
        Err(ClvError::NegativeAmount(-1))
    );
    assert_eq!(
        s.record_refund(day(1, 1), -5),
        Err(ClvError::NegativeAmount(-5))
    );
    assert!(s.is_empty());
}

#[test]
fn instants_are_merged_by_utc_day() {
    let mut s = PurchaseSummary::new();
    let morning = Utc.with_ymd_and_hms(2024, 1, 2, 0, 30, 0).unwrap();
    let evening = Utc.with_ymd_and_hms(2024, 1, 2, 23, 59, 59).unwrap();
    s.record_purchase_at(Utc.with_ymd_and_hms(2024, 1, 1, 12, 0, 0).unwrap(), 1)
        .unwrap();
    s.record_purchase_at(morning, 2).unwrap();
    s.record_purchase_at(evening, 3).unwrap();
    assert_eq!(s.frequency(), 1);
    assert_eq!(s.repeat_spend_minor(), 5);
}

#[test]
fn shuffled_arrival_gives_the_in_order_summary() {
    let mut events: Vec<(bool, NaiveDate, i64)> = Vec::new();
    for i in 0..60_u32 {
        // Several purchases on some days, and refunds attributed to some purchase days.
        let d = day(1 + i % 12, 1 + (i * 7) % 28);
        events.push((true, d, i64::from(i) * 137 % 5_000));
        if i % 5 == 0 {
            events.push((false, d, i64::from(i) * 11));
        }
    }
    let build = |events: &[(bool, NaiveDate, i64)]| {
        let mut s = PurchaseSummary::new();
        for &(purchase, d, amount) in events {
            if purchase {
                s.record_purchase(d, amount).unwrap();
            } else {
                s.record_refund(d, amount).unwrap();
            }
        }
        s
    };
    let mut in_order = events.clone();
    in_order.sort_by_key(|e| (e.1, !e.0));
    let expected = build(&in_order);
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..20 {
        events.shuffle(&mut rng);
        let shuffled = build(&events);
        assert_eq!(
            shuffled, expected,
            "arrival order must not change the summary"
        );
        assert_eq!(
            shuffled.observation(day(12, 31), TimeUnit::Weeks),
            expected.observation(day(12, 31), TimeUnit::Weeks)
        );
        assert_eq!(
            shuffled.spend_observation(day(6, 30)),
            expected.spend_observation(day(6, 30))
        );
    }
}

#[test]
fn json_round_trip_keeps_the_summary() {
    let mut s = PurchaseSummary::new();
    s.record_purchase(day(1, 1), 1_000).unwrap();
    s.record_purchase(day(1, 5), 250).unwrap();
    s.record_refund(day(1, 5), 50).unwrap();
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(
        json,
        r#"{"days":{"2024-01-01":{"purchases":1,"gross_minor":1000},"2024-01-05":{"purchases":1,"gross_minor":250,"refunded_minor":50}}}"#
    );
    let back: PurchaseSummary = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
}
