//! The names of the RFM segments that [`Rfm::segment`](crate::Rfm::segment) returns. They are
//! stable: consumers may match on them.
//!
//! The rule table, read top to bottom, first match wins (`r`, `f`, `m` are the 1–5 scores; a
//! score outside 1–5 counts as the nearer end):
//!
//! | segment               | rule                      | who                                     |
//! |-----------------------|---------------------------|-----------------------------------------|
//! | `champions`           | r ≥ 4, f ≥ 4, m ≥ 4       | recent, frequent, high spend            |
//! | `loyal`               | r ≥ 3, f ≥ 4              | buy often, still fairly recent          |
//! | `new`                 | r ≥ 4, f ≤ 1              | recent first-time (or rare) buyers      |
//! | `potential_loyalists` | r ≥ 4, f ≤ 3              | recent, a few orders                    |
//! | `cant_lose_them`      | r ≤ 2, f ≥ 4, m ≥ 4       | were frequent big spenders, lapsing     |
//! | `at_risk`             | r ≤ 2, f ≥ 3              | were regulars, lapsing                  |
//! | `need_attention`      | r = 3                     | middling recency, few orders            |
//! | `hibernating`         | r = 2                     | lapsing, few orders                     |
//! | `lost`                | r ≤ 1                     | longest gone, few orders                |
//!
//! Every combination of scores falls in exactly one segment.

/// Recent, frequent, high-spending customers: r ≥ 4, f ≥ 4, m ≥ 4.
pub const CHAMPIONS: &str = "champions";
/// Frequent buyers who are still fairly recent but not champions: r ≥ 3, f ≥ 4.
pub const LOYAL: &str = "loyal";
/// Recent buyers in the lowest frequency quintile: r ≥ 4, f ≤ 1.
pub const NEW: &str = "new";
/// Recent buyers with a few orders: r ≥ 4, f 2–3.
pub const POTENTIAL_LOYALISTS: &str = "potential_loyalists";
/// Frequent big spenders who have not bought for a while: r ≤ 2, f ≥ 4, m ≥ 4.
pub const CANT_LOSE_THEM: &str = "cant_lose_them";
/// Former regulars who have not bought for a while: r ≤ 2, f ≥ 3 (not `cant_lose_them`).
pub const AT_RISK: &str = "at_risk";
/// Middling recency and few orders: r = 3, f ≤ 3.
pub const NEED_ATTENTION: &str = "need_attention";
/// Lapsing customers with few orders: r = 2, f ≤ 2.
pub const HIBERNATING: &str = "hibernating";
/// The longest gone, with few orders: r ≤ 1, f ≤ 2.
pub const LOST: &str = "lost";

/// Every segment, in rule-table order.
pub const ALL: [&str; 9] = [
    CHAMPIONS,
    LOYAL,
    NEW,
    POTENTIAL_LOYALISTS,
    CANT_LOSE_THEM,
    AT_RISK,
    NEED_ATTENTION,
    HIBERNATING,
    LOST,
];
