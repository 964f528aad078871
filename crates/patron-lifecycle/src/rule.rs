//! The names of the rules that move customers between stages, as stored in
//! [`Transition::rule`](crate::Transition::rule). They are stable: consumers may match on them.
//!
//! Most are fired by the engine itself ([`crate::apply`], [`crate::advance`]). [`MERGE`] and
//! [`UNMERGE`] are fired by a projector through [`crate::settle`] when it combines or splits
//! customers: they enter whatever stage the customer's (new) facts imply, from any stage.

/// Any first event of a customer: `prospect`.
pub const FIRST_SEEN: &str = "first_seen";
/// The first purchase: `prospect` → `new`.
pub const FIRST_PURCHASE: &str = "first_purchase";
/// The honeymoon ended with a repeat purchase: `new` → `active` (or `loyal`).
pub const HONEYMOON_END: &str = "honeymoon_end";
/// A repeat purchase after the honeymoon: `new` → `active` (or `loyal`).
pub const REPEAT_PURCHASE: &str = "repeat_purchase";
/// Orders and net revenue reached the loyal tier: `active` → `loyal`.
pub const LOYAL_THRESHOLD: &str = "loyal_threshold";
/// Inactivity reached the at-risk multiple of the usual gap: → `at_risk`.
pub const INACTIVITY_AT_RISK: &str = "inactivity_at_risk";
/// Inactivity reached the churn multiple of the usual gap: `at_risk` → `churned`.
pub const INACTIVITY_CHURN: &str = "inactivity_churn";
/// A purchase while at risk: `at_risk` → `active` (or `loyal`).
pub const RETURNED: &str = "returned";
/// A purchase after churn: `churned` → `reactivated`.
pub const WIN_BACK: &str = "win_back";
/// The purchase after a win-back: `reactivated` → `active` (or `loyal`).
pub const REACTIVATION_REPEAT: &str = "reactivation_repeat";
/// The reactivation window ended: `reactivated` → `active` (or `loyal`).
pub const REACTIVATION_END: &str = "reactivation_end";
/// A fitted model's probability alive fell below the at-risk threshold: → `at_risk`.
pub const P_ALIVE_AT_RISK: &str = "p_alive_at_risk";
/// A fitted model's probability alive fell below the churn threshold: `at_risk` → `churned`.
pub const P_ALIVE_CHURN: &str = "p_alive_churn";
/// Another customer was merged into this one: → the stage the combined facts imply (see
/// [`crate::settle`]). Facts: `merged_customer_id`, `identity_kind`, `evidence` (if any), and the
/// combined `orders` and `net_revenue_minor`.
pub const MERGE: &str = "customers_merged";
/// A merge was undone: each of the two customers → the stage its own facts imply again (see
/// [`crate::settle`]). Facts: `merged_customer_id` (for the customer split from) or
/// `into_customer_id` (for the customer split off), `reason` (if any), `orders` and
/// `net_revenue_minor`.
pub const UNMERGE: &str = "customers_unmerged";
