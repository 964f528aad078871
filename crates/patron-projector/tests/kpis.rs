//! The KPI counters agree with figures computed directly from the script and the final views.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;

use patron_lifecycle::Stage;
use patron_projector::kpi;
use support::*;

fn sum(kpis: &BTreeMap<patron_projector::KpiKey, i64>, metric: &str) -> i64 {
    kpis.iter()
        .filter(|(key, _)| key.metric == metric)
        .map(|(_, value)| *value)
        .sum()
}

#[tokio::test]
async fn kpi_counters_match_the_views_and_the_script() {
    let store = store_with(&year()).await;
    let outcome = replay(&store, 50).await;
    let kpis = &outcome.kpis;

    let transitions: usize = outcome
        .views
        .values()
        .map(|v| v.lifecycle.transitions())
        .sum();
    assert_eq!(
        sum(kpis, kpi::STAGE_FLOW),
        i64::try_from(transitions).unwrap()
    );

    let buyers = outcome
        .views
        .values()
        .filter(|v| v.value.orders > 0)
        .count();
    assert_eq!(sum(kpis, kpi::COHORT_SIZE), i64::try_from(buyers).unwrap());

    // Every cohort is the month of a first purchase, and its active count in that same month
    // equals its size (everyone bought in their first month).
    for (key, size) in kpis.iter().filter(|(k, _)| k.metric == kpi::COHORT_SIZE) {
        let active_first_month = kpis
            .iter()
            .find(|(k, _)| {
                k.metric == kpi::COHORT_ACTIVE && k.period == key.period && k.dim1 == key.period
            })
            .map(|(_, v)| *v);
        assert_eq!(active_first_month, Some(*size), "cohort {}", key.period);
    }

    let churned = outcome
        .views
        .values()
        .filter(|v| v.lifecycle.stage == Some(Stage::Churned))
        .count();
    assert_eq!(
        sum(kpis, kpi::COHORT_CHURNED),
        i64::try_from(churned).unwrap()
    );

    let revenue: i64 = outcome
        .views
        .values()
        .map(|v| v.value.net_revenue_minor())
        .sum();
    assert_eq!(
        sum(kpis, kpi::REVENUE),
        revenue,
        "revenue by tier sums to net revenue"
    );
    assert!(
        kpis.keys()
            .filter(|k| k.metric == kpi::REVENUE)
            .all(|k| k.dim1 != "none"),
        "every buyer has been scored by the end of the year: {kpis:?}"
    );

    let promoters = kpis
        .iter()
        .filter(|(k, _)| k.metric == kpi::NPS && k.dim2 == "promoter")
        .map(|(_, v)| *v)
        .sum::<i64>();
    assert_eq!(
        (sum(kpis, kpi::NPS), promoters),
        (3, 1),
        "three answers, one promoter"
    );
    assert_eq!(sum(kpis, kpi::CSAT), 3);
    let paid_search = |metric: &str| {
        kpis.iter()
            .filter(|(k, _)| k.metric == metric && k.dim1 == "paid_search")
            .map(|(_, v)| *v)
            .sum::<i64>()
    };
    assert_eq!(paid_search(kpi::ACQUIRED), 2);
    assert_eq!(paid_search(kpi::ACQUISITION_COST), 6_000);
}

#[tokio::test]
async fn every_buyer_has_scores_and_the_top_spender_is_tier_a() {
    let store = store_with(&year()).await;
    let outcome = replay(&store, 1000).await;
    for (id, view) in &outcome.views {
        assert_eq!(
            view.scores.is_some(),
            view.value.orders > 0,
            "{id}: scored exactly when a buyer"
        );
    }
    let top = outcome
        .views
        .iter()
        .max_by_key(|(_, v)| v.value.net_revenue_minor())
        .map(|(id, v)| (id.clone(), v.scores.clone()))
        .unwrap();
    assert_eq!(
        top.1.and_then(|s| s.tier),
        Some(patron_value::Tier::A),
        "{} has the most revenue",
        top.0
    );
}
