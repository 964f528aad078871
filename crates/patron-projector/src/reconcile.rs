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
    let before = view.map(|v| v.revisions.as_slice()).unwrap_or_default();
    if changed {
        let used = before
            .iter()
            .map(|(_, r)| *r)
            .chain(runs.iter().map(|(_, r)| *r))
            .max()
            .unwrap_or(0)
            .max(old.revision);
        runs.push((
            u64::try_from(common).unwrap_or(u64::MAX),
            used.saturating_add(1),
        ));
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
