//! A rebuild's corrections: what makes the published lifecycle records the new generation's
//! stage histories.
//!
//! Consumers of `patron.lifecycle.v1` hold, per customer, the records published and not
//! retracted (the *net* records). A rebuild — with other rules, or by a version that folds
//! differently — gives every customer a history of its own. Where the two part, the published
//! records from that point on are retracted (newest first, each naming the record it
//! withdraws) and the new history's records from that point on are published under a new
//! revision, so that no key is reused. Records before that point stay; the new generation
//! adopts their keys (their revisions), so that its own later corrections name what consumers
//! hold. A customer whose published records already are its new history gets nothing.

use std::collections::{BTreeMap, BTreeSet};

use patron_domain::CustomerId;
use patron_lifecycle::Transition;
use patron_store::Position;

use crate::port::{ReadModelError, ReadModelStore};
use crate::projection::dedupe_key;
use crate::{CustomerView, OutboxEntry};

/// The outbox as read so far: every customer's records, and the last id read.
#[derive(Debug, Default)]
pub(crate) struct Published {
    customers: BTreeMap<CustomerId, PublishedRecords>,
    head: i64,
}

/// One customer's published records.
#[derive(Debug, Default)]
struct PublishedRecords {
    /// Records (not retractions), in publication order.
    records: Vec<OutboxEntry>,
    /// The keys retractions named.
    retracted: BTreeSet<String>,
    /// The greatest revision any record's key carries (0: none).
    revision: u32,
}

impl Published {
    /// Reads the outbox records added since the last read.
    pub(crate) async fn read_more(
        &mut self,
        models: &dyn ReadModelStore,
    ) -> Result<(), ReadModelError> {
        const PAGE: usize = 10_000;
        loop {
            let page = models.outbox_after(self.head, PAGE).await?;
            let Some(last) = page.last().map(|record| record.id) else {
                return Ok(());
            };
            self.head = last;
            for record in page {
                let entry = record.entry;
                let customer = self.customers.entry(entry.customer_id.clone()).or_default();
                match &entry.retracts {
                    Some(key) => {
                        customer.retracted.insert(key.clone());
                    }
                    None => {
                        if let Some(revision) = revision_of(&entry) {
                            customer.revision = customer.revision.max(revision);
                        }
                        customer.records.push(entry);
                    }
                }
            }
        }
    }

    /// The last outbox id read.
    pub(crate) fn head(&self) -> i64 {
        self.head
    }
}

/// The new generation's stage histories as records (net of the corrections its own fold
/// made), by customer, in `seq` order.
#[derive(Debug, Default)]
pub(crate) struct Histories {
    customers: BTreeMap<CustomerId, Vec<OutboxEntry>>,
}

impl Histories {
    /// Takes what a page of the rebuild fired: transitions, and retractions of earlier ones.
    pub(crate) fn add(&mut self, fired: &[OutboxEntry]) {
        for entry in fired {
            let records = self.customers.entry(entry.customer_id.clone()).or_default();
            match &entry.retracts {
                Some(key) => records.retain(|record| record.dedupe_key != *key),
                None => records.push(entry.clone()),
            }
        }
    }
}

/// What to publish, and the revisions the new generation's views must take.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Retractions and replacements, customer by customer.
    pub(crate) entries: Vec<OutboxEntry>,
    /// Customers whose views take other revisions than they have.
    pub(crate) revisions: Vec<(CustomerId, Vec<(u64, u32)>)>,
    /// Customers whose published records differ from their new history.
    pub(crate) customers: usize,
    /// How many of `entries` are retractions.
    pub(crate) retractions: usize,
}

/// Plans the corrections for every customer published or in the new generation; `view` gives a
/// customer's view in the new generation (its revisions and consent), `position` is where the
/// new generation stands.
pub(crate) fn plan<'a>(
    published: &Published,
    histories: &Histories,
    view: impl Fn(&CustomerId) -> Option<&'a CustomerView>,
    position: Position,
) -> Plan {
    let mut plan = Plan::default();
    let customers: BTreeSet<&CustomerId> = published
        .customers
        .keys()
        .chain(histories.customers.keys())
        .collect();
    let none = PublishedRecords::default();
    for customer in customers {
        let old = published.customers.get(customer).unwrap_or(&none);
        let new = histories
            .customers
            .get(customer)
            .map_or(&[][..], Vec::as_slice);
        plan_customer(&mut plan, customer, old, new, view(customer), position);
    }
    plan
}

fn plan_customer(
    plan: &mut Plan,
    customer: &CustomerId,
    old: &PublishedRecords,
    new: &[OutboxEntry],
    view: Option<&CustomerView>,
    position: Position,
) {
    let mut held: Vec<&OutboxEntry> = old
        .records
        .iter()
        .filter(|record| !old.retracted.contains(&record.dedupe_key))
        .collect();
    held.sort_by_key(|record| record.seq);
    // The common part: the same transitions at the same places, under keys the new generation
    // can carry on (revisions that do not go down).
    let mut runs: Vec<(u64, u32)> = Vec::new();
    let mut common = 0;
    for (published, fresh) in held.iter().zip(new) {
        if published.seq != fresh.seq || published.transition != fresh.transition {
            break;
        }
        let Some(revision) = revision_of(published) else {
            break;
        };
        let current = runs.last().map_or(0, |(_, r)| *r);
        if revision < current {
            break;
        }
        if revision > current {
            runs.push((u64::try_from(published.seq).unwrap_or(u64::MAX), revision));
        }
        common += 1;
    }
    let changed = common < held.len() || common < new.len();
    let same_keys = held
        .iter()
        .zip(new)
        .take(common)
        .all(|(published, fresh)| published.dedupe_key == fresh.dedupe_key);
    let before = view.map(|v| v.revisions.as_slice()).unwrap_or_default();
    let ahead = before.last().map_or(0, |(_, r)| *r) >= old.revision;
    if !changed && same_keys && ahead {
        // What the live projector would have: the same fold, the same revisions, and later
        // records under a revision no published key carries.
        return;
    }
    let used = before
        .iter()
        .map(|(_, r)| *r)
        .chain(runs.iter().map(|(_, r)| *r))
        .max()
        .unwrap_or(0)
        .max(old.revision);
    let first = u64::try_from(common).unwrap_or(u64::MAX);
    if changed {
        runs.push((first, used.saturating_add(1)));
    } else if runs.last().map_or(0, |(_, r)| *r) < used {
        // Records after the common part were published (and retracted) under revisions up to
        // `used`: the next ones take a revision after it, never a published key.
        runs.push((first, used.saturating_add(1)));
    }
    if runs != before && view.is_some() {
        plan.revisions.push((customer.clone(), runs.clone()));
    }
    if !changed {
        return;
    }
    plan.customers += 1;
    let consent = view.map(|v| v.consents.marks()).unwrap_or_default();
    for published in held[common..].iter().rev() {
        plan.retractions += 1;
        plan.entries.push(OutboxEntry {
            dedupe_key: format!("{}-retracted", published.dedupe_key),
            customer_id: customer.clone(),
            seq: published.seq,
            transition: published.transition.clone(),
            position,
            consent: consent.clone(),
            retracts: Some(published.dedupe_key.clone()),
            historical: false,
        });
    }
    for fresh in &new[common..] {
        let mut entry = fresh.clone();
        entry.dedupe_key = dedupe_key(customer, fresh.seq, &runs, &fresh.transition);
        plan.entries.push(entry);
    }
}

/// The revision a record's key carries (0 for none), if the key is one Patron makes for it.
fn revision_of(record: &OutboxEntry) -> Option<u32> {
    let key = |revisions: &[(u64, u32)], transition: &Transition| {
        dedupe_key(&record.customer_id, record.seq, revisions, transition)
    };
    if record.dedupe_key == key(&[], &record.transition) {
        return Some(0);
    }
    let prefix = format!("{}:{}.r", record.customer_id, record.seq);
    let revision: u32 = record
        .dedupe_key
        .strip_prefix(&prefix)?
        .split('#')
        .next()?
        .parse()
        .ok()?;
    (record.dedupe_key == key(&[(0, revision)], &record.transition)).then_some(revision)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::{TimeZone, Utc};
    use patron_lifecycle::Stage;

    use super::*;

    fn customer() -> CustomerId {
        CustomerId::parse("c-1").unwrap()
    }

    fn transition(seq: usize, to: Stage) -> Transition {
        Transition {
            from: None,
            to,
            at: Utc
                .with_ymd_and_hms(2026, 1, 1 + u32::try_from(seq).unwrap(), 0, 0, 0)
                .unwrap(),
            rule: "r".into(),
            facts: BTreeMap::new(),
        }
    }

    /// A record of `seq` under `revisions`.
    fn record(seq: usize, to: Stage, revisions: &[(u64, u32)]) -> OutboxEntry {
        let transition = transition(seq, to);
        OutboxEntry {
            dedupe_key: dedupe_key(&customer(), seq, revisions, &transition),
            customer_id: customer(),
            seq,
            transition,
            position: Position(1),
            consent: BTreeMap::new(),
            retracts: None,
            historical: false,
        }
    }

    fn retraction(of: &OutboxEntry) -> OutboxEntry {
        OutboxEntry {
            dedupe_key: format!("{}-retracted", of.dedupe_key),
            retracts: Some(of.dedupe_key.clone()),
            ..of.clone()
        }
    }

    fn published(entries: Vec<OutboxEntry>) -> Published {
        let mut out = Published::default();
        for entry in entries {
            let records = out.customers.entry(entry.customer_id.clone()).or_default();
            match &entry.retracts {
                Some(key) => {
                    records.retracted.insert(key.clone());
                }
                None => {
                    records.revision = records.revision.max(revision_of(&entry).unwrap());
                    records.records.push(entry);
                }
            }
        }
        out
    }

    fn plan_for(published: &Published, new: Vec<OutboxEntry>, view: &CustomerView) -> Plan {
        let mut histories = Histories::default();
        histories.add(&new);
        plan(published, &histories, |_| Some(view), Position(9))
    }

    use Stage::{Active, AtRisk, Churned, New, Prospect};

    #[test]
    fn the_same_history_under_the_same_keys_needs_nothing() {
        let history = vec![record(0, Prospect, &[]), record(1, New, &[])];
        let plan = plan_for(
            &published(history.clone()),
            history,
            &CustomerView::default(),
        );
        assert!(plan.entries.is_empty() && plan.revisions.is_empty());
        assert_eq!(plan.customers, 0);
    }

    #[test]
    fn a_different_tail_is_retracted_newest_first_and_replaced_under_a_new_revision() {
        let old = vec![
            record(0, Prospect, &[]),
            record(1, New, &[]),
            record(2, AtRisk, &[]),
            record(3, Churned, &[]),
        ];
        let new = vec![
            record(0, Prospect, &[]),
            record(1, New, &[]),
            record(2, Active, &[]),
        ];
        let plan = plan_for(&published(old.clone()), new, &CustomerView::default());
        let keys: Vec<(&str, Option<&str>)> = plan
            .entries
            .iter()
            .map(|e| (e.dedupe_key.as_str(), e.retracts.as_deref()))
            .collect();
        let replacement = record(2, Active, &[(2, 1)]);
        assert_eq!(
            keys,
            vec![
                (
                    format!("{}-retracted", old[3].dedupe_key).as_str(),
                    Some(old[3].dedupe_key.as_str())
                ),
                (
                    format!("{}-retracted", old[2].dedupe_key).as_str(),
                    Some(old[2].dedupe_key.as_str())
                ),
                (replacement.dedupe_key.as_str(), None),
            ]
        );
        assert_eq!((plan.customers, plan.retractions), (1, 2));
        assert_eq!(plan.revisions, vec![(customer(), vec![(2, 1)])]);
    }

    #[test]
    fn published_revisions_are_adopted_and_never_reused_for_later_records() {
        // Published: 0 and 1, then 2 under revision 0 retracted, 2 under revision 1 retracted:
        // the history is two records long, and the next record at 2 must not take either key.
        let r0 = record(2, AtRisk, &[]);
        let r1 = record(2, AtRisk, &[(2, 1)]);
        let old = vec![
            record(0, Prospect, &[]),
            record(1, New, &[]),
            r0.clone(),
            retraction(&r0),
            r1.clone(),
            retraction(&r1),
        ];
        // The new generation folds the same two records without revisions of its own.
        let new = vec![record(0, Prospect, &[]), record(1, New, &[])];
        let plan = plan_for(&published(old), new, &CustomerView::default());
        assert!(plan.entries.is_empty(), "{:?}", plan.entries);
        assert_eq!(plan.revisions, vec![(customer(), vec![(2, 2)])]);
        let next = dedupe_key(&customer(), 2, &plan.revisions[0].1, &r1.transition);
        assert!(next != r0.dedupe_key && next != r1.dedupe_key, "{next}");
        // A changed history bumps past every revision published too.
        let new = vec![record(0, Prospect, &[]), record(1, Active, &[])];
        let mut old = published(vec![record(0, Prospect, &[]), record(1, New, &[])]);
        old.customers.get_mut(&customer()).unwrap().revision = 1;
        let plan = plan_for(&old, new, &CustomerView::default());
        assert_eq!(plan.revisions, vec![(customer(), vec![(1, 2)])]);
    }
}
