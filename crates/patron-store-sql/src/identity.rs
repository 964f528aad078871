//! Identity resolution: which customer holds an identifier, and which customers are one.
//!
//! The index lives beside the log and changes only in the append transaction of the events
//! that change it, so log and index always agree:
//!
//! - `identities_linked` in stream L claims each identifier nobody holds for L. An identifier
//!   another customer's cluster holds merges that cluster and L's into one: a `customers_merged`
//!   event (the evidence: the link event, the kind of the shared identifier, the link's
//!   evidence) is appended, in the same transaction, to the stream of the survivor — the root of
//!   L's cluster, unless that is a provisional customer and the other is not. The projector
//!   follows those events; it never decides a merge itself.
//! - Merges are bounded: no cluster holds more identifiers of a kind than
//!   [`IdentityKind::limit`] or more than [`MAX_CLUSTER_CUSTOMERS`] customers, and two clusters
//!   once split by an unmerge are never merged again. A link past a bound claims or merges
//!   nothing (the event is stored all the same; a warning and the
//!   `patron_identity_links_refused_total{reason}` counter say why).
//! - `customers_unmerged` in stream S splits `merged_customer_id` off again if it was merged
//!   directly into S, and blocks the pair.
//! - `erasure_requested` drops the customer's identifiers from the index.
//! - An event naming only an identifier is stored for the root of the cluster holding it, or
//!   for a new provisional customer `~kind:digest` that claims it (see [`resolve`]).
//!
//! Identifiers are found by kind and a digest of [`Identity::normalized_value`]: HMAC-SHA-256
//! under the master key when there is one, plain SHA-256 otherwise (a deployment without a
//! master key stores personal data in plain text anyway).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use patron_domain::{CustomerId, CustomersMerged, Event, EventBody, Identity, IdentityKind};
use patron_privacy::MasterKey;
use patron_store::{PlannedEvent, Position, StoreError};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::error::map;
use crate::row::to_i64;

/// The most customers one merged cluster may hold.
pub(crate) const MAX_CLUSTER_CUSTOMERS: usize = 32;

/// The source stamped on the events the store derives.
const SOURCE: &str = "patron";

/// Namespace of derived merge event ids: the id is a function of the link event and the merged
/// customer, so the same link can never produce two merges.
const MERGE_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_4c1e_8a3d_4f52_9c1d_2e6f_7a80_b3c4);

/// An identifier as the index knows it: its kind and the hex digest of its normalized value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct IdentifierKey {
    pub(crate) kind: String,
    pub(crate) digest: String,
}

/// Turns identifiers into index keys.
#[derive(Clone, Default)]
pub(crate) struct Digester {
    master: Option<Arc<MasterKey>>,
}

impl Digester {
    pub(crate) fn new(master: Option<Arc<MasterKey>>) -> Self {
        Self { master }
    }

    pub(crate) fn key(&self, identity: &Identity) -> IdentifierKey {
        let kind = identity.kind.as_str();
        let value = identity.normalized_value();
        let digest: [u8; 32] = match &self.master {
            Some(master) => master.identifier_digest(kind, &value),
            None => Sha256::new()
                .chain_update(b"patron identifier\0")
                .chain_update(kind.as_bytes())
                .chain_update(b"\0")
                .chain_update(value.as_bytes())
                .finalize()
                .into(),
        };
        IdentifierKey {
            kind: kind.to_owned(),
            digest: digest.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

/// The index operations a backend provides, inside one transaction.
#[allow(async_fn_in_trait)]
pub(crate) trait IdentityIndex {
    /// The customers holding those of `keys` someone holds.
    async fn owners(
        &mut self,
        keys: &[IdentifierKey],
    ) -> Result<HashMap<IdentifierKey, CustomerId>, StoreError>;
    /// For those of `customers` merged into another: merged → into.
    async fn parents(
        &mut self,
        customers: &[CustomerId],
    ) -> Result<HashMap<CustomerId, CustomerId>, StoreError>;
    /// The customers merged directly into any of `customers`.
    async fn children(&mut self, customers: &[CustomerId]) -> Result<Vec<CustomerId>, StoreError>;
    /// How many identifiers of each kind `customers` hold together.
    async fn kind_counts(
        &mut self,
        customers: &[CustomerId],
    ) -> Result<HashMap<String, usize>, StoreError>;
    /// Whether an unmerge split any customer of `left` from any of `right`.
    async fn blocked(
        &mut self,
        left: &[CustomerId],
        right: &[CustomerId],
    ) -> Result<bool, StoreError>;
    /// `customer` holds `key` from now on, unless someone already does; returns whether it
    /// does now because of this call.
    async fn claim(
        &mut self,
        key: &IdentifierKey,
        customer: &CustomerId,
        position: Option<Position>,
    ) -> Result<bool, StoreError>;
    /// Records that `merged` was merged into `into` at `position`.
    async fn merge(
        &mut self,
        merged: &CustomerId,
        into: &CustomerId,
        position: Position,
    ) -> Result<(), StoreError>;
    /// Removes the merge of `merged` into `into`, if there is one, and blocks the pair; returns
    /// whether there was.
    async fn unmerge(
        &mut self,
        merged: &CustomerId,
        into: &CustomerId,
        position: Position,
    ) -> Result<bool, StoreError>;
    /// Drops every identifier `customer` holds.
    async fn forget(&mut self, customer: &CustomerId) -> Result<(), StoreError>;
}

/// The customer `customer` was merged into directly, if it was.
pub(crate) async fn parent(
    index: &mut impl IdentityIndex,
    customer: &CustomerId,
) -> Result<Option<CustomerId>, StoreError> {
    Ok(index
        .parents(std::slice::from_ref(customer))
        .await?
        .remove(customer))
}

/// The root of `customer`'s cluster (itself when not merged).
async fn root(
    index: &mut impl IdentityIndex,
    customer: &CustomerId,
) -> Result<CustomerId, StoreError> {
    let mut current = customer.clone();
    // Merges always join roots, so the path is at most the cluster size long.
    for _ in 0..=MAX_CLUSTER_CUSTOMERS {
        match parent(index, &current).await? {
            Some(parent) => current = parent,
            None => return Ok(current),
        }
    }
    Err(StoreError::Backend(
        format!("the merges above customer {customer} form a cycle or a chain too long").into(),
    ))
}

/// Every customer of the cluster under `root`, the root first, the rest sorted.
async fn members(
    index: &mut impl IdentityIndex,
    root: &CustomerId,
) -> Result<Vec<CustomerId>, StoreError> {
    let mut all = BTreeSet::new();
    let mut frontier = vec![root.clone()];
    while !frontier.is_empty() && all.len() <= MAX_CLUSTER_CUSTOMERS {
        let children = index.children(&frontier).await?;
        frontier = children
            .into_iter()
            .filter(|c| c != root && all.insert(c.clone()))
            .collect();
    }
    let mut members = vec![root.clone()];
    members.extend(all);
    Ok(members)
}

/// Why a link claimed or merged nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The cluster holds as many identifiers of the kind as it may.
    KindLimit,
    /// The merged cluster would hold too many customers.
    ClusterLimit,
    /// The two clusters were split by an unmerge.
    Unmerged,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::KindLimit => "kind_limit",
            Refusal::ClusterLimit => "cluster_limit",
            Refusal::Unmerged => "unmerged",
        }
    }
}

/// Updates the index for the events about to be stored (`events`, in position order) and
/// returns the `customers_merged` events they cause, each with the index of the event it must
/// directly follow. Positions given to the index already count the merges before them: the
/// order [`interleave`] stores them in.
pub(crate) async fn index_events(
    index: &mut impl IdentityIndex,
    digester: &Digester,
    events: &[PlannedEvent<'_>],
) -> Result<Vec<(usize, Event)>, StoreError> {
    let mut merges = Vec::new();
    for (at, planned) in events.iter().enumerate() {
        let event = planned.event;
        let position = Position(planned.position.0 + merges.len() as u64);
        match &event.body {
            EventBody::IdentitiesLinked(link) => {
                let keys: Vec<(IdentityKind, IdentifierKey)> = link
                    .identities
                    .iter()
                    .map(|identity| (identity.kind.clone(), digester.key(identity)))
                    .collect();
                let derived = link_identities(index, event, position, &keys).await?;
                merges.extend(derived.into_iter().map(|merge| (at, merge)));
            }
            EventBody::CustomersUnmerged(unmerged) => {
                let split = index
                    .unmerge(&unmerged.merged_customer_id, &event.customer_id, position)
                    .await?;
                if !split {
                    tracing::info!(
                        customer = %event.customer_id, merged = %unmerged.merged_customer_id,
                        "customers_unmerged names a customer not merged into this one: nothing to split"
                    );
                }
            }
            EventBody::ErasureRequested(_) => index.forget(&event.customer_id).await?,
            _ => {}
        }
    }
    Ok(merges)
}

/// The survivors of `merges` whose stream version is not among `versions` yet (each once):
/// what [`interleave`] still needs to number their merges.
pub(crate) fn unversioned(
    merges: &[(usize, Event)],
    versions: &HashMap<CustomerId, u64>,
) -> Vec<String> {
    let survivors: BTreeSet<&str> = merges
        .iter()
        .map(|(_, merge)| &merge.customer_id)
        .filter(|c| !versions.contains_key(*c))
        .map(CustomerId::as_str)
        .collect();
    survivors.into_iter().map(str::to_owned).collect()
}

/// The events to store: `planned` with each merge of `merges` placed right after the event that
/// caused it, positions renumbered from the first and versions from `stored` (each stream's
/// version before the append).
pub(crate) fn interleave<'a>(
    planned: Vec<PlannedEvent<'a>>,
    merges: &'a [(usize, Event)],
    stored: &HashMap<CustomerId, u64>,
) -> Vec<PlannedEvent<'a>> {
    let Some(first) = planned.first().map(|p| p.position) else {
        return planned;
    };
    let mut versions: HashMap<&CustomerId, u64> = HashMap::new();
    let mut out = Vec::with_capacity(planned.len() + merges.len());
    let mut pending = merges.iter().peekable();
    let mut place = |out: &mut Vec<PlannedEvent<'a>>, mut event: PlannedEvent<'a>| {
        let version = versions
            .entry(&event.event.customer_id)
            .or_insert_with(|| stored.get(&event.event.customer_id).copied().unwrap_or(0));
        *version += 1;
        event.version = *version;
        event.position = Position(first.0 + out.len() as u64);
        out.push(event);
    };
    for (at, event) in planned.into_iter().enumerate() {
        place(&mut out, event);
        while let Some((_, merge)) = pending.next_if(|(after, _)| *after == at) {
            let payload = merge.body.to_payload_string();
            let digest = merge.digest_with_payload(&payload);
            place(
                &mut out,
                PlannedEvent {
                    position: Position::ZERO,
                    version: 0,
                    event: merge,
                    payload,
                    digest,
                },
            );
        }
    }
    out
}

/// Claims or merges on the identifiers of one `identities_linked` event.
async fn link_identities(
    index: &mut impl IdentityIndex,
    event: &Event,
    position: Position,
    keys: &[(IdentityKind, IdentifierKey)],
) -> Result<Vec<Event>, StoreError> {
    let EventBody::IdentitiesLinked(link) = &event.body else {
        return Ok(Vec::new());
    };
    let lookup: Vec<IdentifierKey> = keys.iter().map(|(_, key)| key.clone()).collect();
    let owners = index.owners(&lookup).await?;
    let mut merges = Vec::new();
    let mut survivor = root(index, &event.customer_id).await?;
    let mut seen = BTreeSet::new();
    for (kind, key) in keys {
        if !seen.insert(key) {
            continue;
        }
        let mut owner = owners.get(key).cloned();
        if owner.is_none() {
            let cluster = members(index, &survivor).await?;
            let held = index.kind_counts(&cluster).await?;
            if held.get(key.kind.as_str()).copied().unwrap_or(0) >= kind.limit() {
                refused(event, key, Refusal::KindLimit);
                continue;
            }
            if index.claim(key, &event.customer_id, Some(position)).await? {
                continue;
            }
            // Claimed meanwhile (a provisional customer created by ingest on PostgreSQL, whose
            // resolution does not wait for appends): whoever holds it now is the other side.
            owner = index.owners(std::slice::from_ref(key)).await?.remove(key);
        }
        let refusal = match owner {
            None => None,
            Some(owner) => {
                let other = root(index, &owner).await?;
                if other == survivor {
                    None
                } else {
                    match merge_clusters(index, &survivor, &other).await? {
                        Err(refusal) => Some(refusal),
                        Ok((into, merged)) => {
                            index.merge(&merged, &into, position).await?;
                            merges.push(merge_event(event, link, kind, &into, &merged));
                            survivor = into;
                            None
                        }
                    }
                }
            }
        };
        if let Some(refusal) = refusal {
            refused(event, key, refusal);
        }
    }
    Ok(merges)
}

/// Reports an identifier of `event` that was neither claimed nor merged.
fn refused(event: &Event, key: &IdentifierKey, refusal: Refusal) {
    metrics::counter!("patron_identity_links_refused_total", "reason" => refusal.as_str())
        .increment(1);
    tracing::warn!(
        customer = %event.customer_id, event_id = %event.event_id, kind = %key.kind,
        reason = refusal.as_str(),
        "identities_linked: an identifier was neither claimed nor merged"
    );
}

/// Checks the bounds for merging the clusters under `linking` and `other`; returns the
/// survivor and the merged root, or why not.
async fn merge_clusters(
    index: &mut impl IdentityIndex,
    linking: &CustomerId,
    other: &CustomerId,
) -> Result<Result<(CustomerId, CustomerId), Refusal>, StoreError> {
    let left = members(index, linking).await?;
    let right = members(index, other).await?;
    if left.len() + right.len() > MAX_CLUSTER_CUSTOMERS {
        return Ok(Err(Refusal::ClusterLimit));
    }
    if index.blocked(&left, &right).await? {
        return Ok(Err(Refusal::Unmerged));
    }
    let mut held = index.kind_counts(&left).await?;
    for (kind, count) in index.kind_counts(&right).await? {
        *held.entry(kind).or_default() += count;
    }
    if held
        .iter()
        .any(|(kind, count)| *count > IdentityKind::from_name(kind).limit())
    {
        return Ok(Err(Refusal::KindLimit));
    }
    Ok(Ok(if linking.is_provisional() && !other.is_provisional() {
        (other.clone(), linking.clone())
    } else {
        (linking.clone(), other.clone())
    }))
}

/// The `customers_merged` event recording that `merged` joined `into` because of `event`.
fn merge_event(
    event: &Event,
    link: &patron_domain::IdentitiesLinked,
    kind: &IdentityKind,
    into: &CustomerId,
    merged: &CustomerId,
) -> Event {
    let mut name = event.event_id.as_bytes().to_vec();
    name.extend_from_slice(merged.as_str().as_bytes());
    Event {
        event_id: Uuid::new_v5(&MERGE_NAMESPACE, &name),
        customer_id: into.clone(),
        occurred_at: event.occurred_at,
        source: SOURCE.to_owned(),
        body: EventBody::CustomersMerged(CustomersMerged {
            merged_customer_id: merged.clone(),
            link_event_id: event.event_id,
            identity_kind: kind.clone(),
            evidence: link.evidence.clone(),
            extra: Default::default(),
        }),
    }
}

/// The customer an event naming only `identity` belongs to: the root of the cluster holding it,
/// or a new provisional customer that claims it now.
pub(crate) async fn resolve(
    index: &mut impl IdentityIndex,
    digester: &Digester,
    identity: &Identity,
) -> Result<CustomerId, StoreError> {
    let key = digester.key(identity);
    let owner = index.owners(std::slice::from_ref(&key)).await?.remove(&key);
    let owner = match owner {
        Some(owner) => owner,
        None => {
            let provisional = CustomerId::provisional(&identity.kind, &key.digest[..32]);
            if index.claim(&key, &provisional, None).await? {
                provisional
            } else {
                // Someone else claimed it first: whoever holds it now is the answer.
                index
                    .owners(std::slice::from_ref(&key))
                    .await?
                    .remove(&key)
                    .unwrap_or(provisional)
            }
        }
    };
    root(index, &owner).await
}

/// Customer ids as text, for binding.
fn texts(customers: &[CustomerId]) -> Vec<&str> {
    customers.iter().map(CustomerId::as_str).collect()
}

/// Parses a stored customer id.
fn customer(id: &str) -> Result<CustomerId, StoreError> {
    CustomerId::parse(id).map_err(|reason| {
        StoreError::Backend(format!("stored customer id {id:?}: {reason}").into())
    })
}

fn count(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

/// The index in a SQLite transaction.
pub(crate) struct SqliteIndex<'c>(pub(crate) &'c mut sqlx::SqliteConnection);

impl IdentityIndex for SqliteIndex<'_> {
    async fn owners(
        &mut self,
        keys: &[IdentifierKey],
    ) -> Result<HashMap<IdentifierKey, CustomerId>, StoreError> {
        let pairs: Vec<[&str; 2]> = keys.iter().map(|k| [k.kind.as_str(), &k.digest]).collect();
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT i.kind, i.digest, i.customer_id FROM json_each(?1) AS k \
             JOIN identities i ON i.kind = k.value ->> 0 AND i.digest = k.value ->> 1",
        )
        .bind(serde_json::json!(pairs).to_string())
        .fetch_all(&mut *self.0)
        .await
        .map_err(map)?;
        rows.into_iter()
            .map(|(kind, digest, id)| Ok((IdentifierKey { kind, digest }, customer(&id)?)))
            .collect()
    }

    async fn parents(
        &mut self,
        customers: &[CustomerId],
    ) -> Result<HashMap<CustomerId, CustomerId>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT merged_id, into_id FROM customer_merges \
             WHERE merged_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(serde_json::json!(texts(customers)).to_string())
        .fetch_all(&mut *self.0)
        .await
        .map_err(map)?;
        rows.into_iter()
            .map(|(merged, into)| Ok((customer(&merged)?, customer(&into)?)))
            .collect()
    }

    async fn children(&mut self, customers: &[CustomerId]) -> Result<Vec<CustomerId>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT merged_id FROM customer_merges \
             WHERE into_id IN (SELECT value FROM json_each(?1)) ORDER BY merged_id",
        )
        .bind(serde_json::json!(texts(customers)).to_string())
        .fetch_all(&mut *self.0)
        .await
        .map_err(map)?;
        rows.iter().map(|id| customer(id)).collect()
    }

    async fn kind_counts(
        &mut self,
        customers: &[CustomerId],
    ) -> Result<HashMap<String, usize>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT kind, count(*) FROM identities \
             WHERE customer_id IN (SELECT value FROM json_each(?1)) GROUP BY kind",
        )
        .bind(serde_json::json!(texts(customers)).to_string())
        .fetch_all(&mut *self.0)
        .await
        .map_err(map)?;
        Ok(rows.into_iter().map(|(kind, n)| (kind, count(n))).collect())
    }

    async fn blocked(
        &mut self,
        left: &[CustomerId],
        right: &[CustomerId],
    ) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM merge_blocks \
             WHERE (a IN (SELECT value FROM json_each(?1)) AND b IN (SELECT value FROM json_each(?2))) \
                OR (a IN (SELECT value FROM json_each(?2)) AND b IN (SELECT value FROM json_each(?1))) \
             LIMIT 1",
        )
        .bind(serde_json::json!(texts(left)).to_string())
        .bind(serde_json::json!(texts(right)).to_string())
        .fetch_optional(&mut *self.0)
        .await
        .map_err(map)?;
        Ok(found.is_some())
    }

    async fn claim(
        &mut self,
        key: &IdentifierKey,
        customer: &CustomerId,
        position: Option<Position>,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO identities (kind, digest, customer_id, position) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (kind, digest) DO NOTHING",
        )
        .bind(&key.kind)
        .bind(&key.digest)
        .bind(customer.as_str())
        .bind(position.map(|p| to_i64(p.0)))
        .execute(&mut *self.0)
        .await
        .map_err(map)?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn merge(
        &mut self,
        merged: &CustomerId,
        into: &CustomerId,
        position: Position,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO customer_merges (merged_id, into_id, position) VALUES (?1, ?2, ?3)",
        )
        .bind(merged.as_str())
        .bind(into.as_str())
        .bind(to_i64(position.0))
        .execute(&mut *self.0)
        .await
        .map_err(map)?;
        Ok(())
    }

    async fn unmerge(
        &mut self,
        merged: &CustomerId,
        into: &CustomerId,
        position: Position,
    ) -> Result<bool, StoreError> {
        let deleted =
            sqlx::query("DELETE FROM customer_merges WHERE merged_id = ?1 AND into_id = ?2")
                .bind(merged.as_str())
                .bind(into.as_str())
                .execute(&mut *self.0)
                .await
                .map_err(map)?
                .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        let (a, b) = if merged < into {
            (merged, into)
        } else {
            (into, merged)
        };
        sqlx::query(
            "INSERT INTO merge_blocks (a, b, position) VALUES (?1, ?2, ?3) \
             ON CONFLICT (a, b) DO NOTHING",
        )
        .bind(a.as_str())
        .bind(b.as_str())
        .bind(to_i64(position.0))
        .execute(&mut *self.0)
        .await
        .map_err(map)?;
        Ok(true)
    }

    async fn forget(&mut self, customer: &CustomerId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM identities WHERE customer_id = ?1")
            .bind(customer.as_str())
            .execute(&mut *self.0)
            .await
            .map_err(map)?;
        Ok(())
    }
}

/// The index in a PostgreSQL transaction.
pub(crate) struct PgIndex<'c>(pub(crate) &'c mut sqlx::PgConnection);

impl IdentityIndex for PgIndex<'_> {
    async fn owners(
        &mut self,
        keys: &[IdentifierKey],
    ) -> Result<HashMap<IdentifierKey, CustomerId>, StoreError> {
        let kinds: Vec<&str> = keys.iter().map(|k| k.kind.as_str()).collect();
        let digests: Vec<&str> = keys.iter().map(|k| k.digest.as_str()).collect();
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT i.kind, i.digest, i.customer_id FROM UNNEST($1::text[], $2::text[]) AS k(kind, digest) \
             JOIN identities i ON i.kind = k.kind AND i.digest = k.digest",
        )
        .bind(kinds)
        .bind(digests)
        .fetch_all(&mut *self.0)
        .await
        .map_err(map)?;
        rows.into_iter()
            .map(|(kind, digest, id)| Ok((IdentifierKey { kind, digest }, customer(&id)?)))
            .collect()
    }

    async fn parents(
        &mut self,
        customers: &[CustomerId],
    ) -> Result<HashMap<CustomerId, CustomerId>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT merged_id, into_id FROM customer_merges WHERE merged_id = ANY($1)",
        )
        .bind(texts(customers))
        .fetch_all(&mut *self.0)
        .await
        .map_err(map)?;
        rows.into_iter()
            .map(|(merged, into)| Ok((customer(&merged)?, customer(&into)?)))
            .collect()
    }

    async fn children(&mut self, customers: &[CustomerId]) -> Result<Vec<CustomerId>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT merged_id FROM customer_merges WHERE into_id = ANY($1) ORDER BY merged_id",
        )
        .bind(texts(customers))
        .fetch_all(&mut *self.0)
        .await
        .map_err(map)?;
        rows.iter().map(|id| customer(id)).collect()
    }

    async fn kind_counts(
        &mut self,
        customers: &[CustomerId],
    ) -> Result<HashMap<String, usize>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT kind, count(*) FROM identities WHERE customer_id = ANY($1) GROUP BY kind",
        )
        .bind(texts(customers))
        .fetch_all(&mut *self.0)
        .await
        .map_err(map)?;
        Ok(rows.into_iter().map(|(kind, n)| (kind, count(n))).collect())
    }

    async fn blocked(
        &mut self,
        left: &[CustomerId],
        right: &[CustomerId],
    ) -> Result<bool, StoreError> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM merge_blocks \
             WHERE (a = ANY($1) AND b = ANY($2)) OR (a = ANY($2) AND b = ANY($1)) LIMIT 1",
        )
        .bind(texts(left))
        .bind(texts(right))
        .fetch_optional(&mut *self.0)
        .await
        .map_err(map)?;
        Ok(found.is_some())
    }

    async fn claim(
        &mut self,
        key: &IdentifierKey,
        customer: &CustomerId,
        position: Option<Position>,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO identities (kind, digest, customer_id, position) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (kind, digest) DO NOTHING",
        )
        .bind(&key.kind)
        .bind(&key.digest)
        .bind(customer.as_str())
        .bind(position.map(|p| to_i64(p.0)))
        .execute(&mut *self.0)
        .await
        .map_err(map)?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn merge(
        &mut self,
        merged: &CustomerId,
        into: &CustomerId,
        position: Position,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO customer_merges (merged_id, into_id, position) VALUES ($1, $2, $3)",
        )
        .bind(merged.as_str())
        .bind(into.as_str())
        .bind(to_i64(position.0))
        .execute(&mut *self.0)
        .await
        .map_err(map)?;
        Ok(())
    }

    async fn unmerge(
        &mut self,
        merged: &CustomerId,
        into: &CustomerId,
        position: Position,
    ) -> Result<bool, StoreError> {
        let deleted =
            sqlx::query("DELETE FROM customer_merges WHERE merged_id = $1 AND into_id = $2")
                .bind(merged.as_str())
                .bind(into.as_str())
                .execute(&mut *self.0)
                .await
                .map_err(map)?
                .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        let (a, b) = if merged < into {
            (merged, into)
        } else {
            (into, merged)
        };
        sqlx::query(
            "INSERT INTO merge_blocks (a, b, position) VALUES ($1, $2, $3) \
             ON CONFLICT (a, b) DO NOTHING",
        )
        .bind(a.as_str())
        .bind(b.as_str())
        .bind(to_i64(position.0))
        .execute(&mut *self.0)
        .await
        .map_err(map)?;
        Ok(true)
    }

    async fn forget(&mut self, customer: &CustomerId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM identities WHERE customer_id = $1")
            .bind(customer.as_str())
            .execute(&mut *self.0)
            .await
            .map_err(map)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{TimeZone, Utc};
    use patron_domain::IdentitiesLinked;

    use super::*;

    /// The index in memory, with one claim that someone else wins (as a concurrent
    /// resolution on PostgreSQL can).
    #[derive(Default)]
    struct Fake {
        identities: BTreeMap<IdentifierKey, CustomerId>,
        merges: BTreeMap<CustomerId, CustomerId>,
        stolen: Option<(IdentifierKey, CustomerId)>,
    }

    impl IdentityIndex for Fake {
        async fn owners(
            &mut self,
            keys: &[IdentifierKey],
        ) -> Result<HashMap<IdentifierKey, CustomerId>, StoreError> {
            Ok(keys
                .iter()
                .filter_map(|k| Some((k.clone(), self.identities.get(k)?.clone())))
                .collect())
        }
        async fn parents(
            &mut self,
            customers: &[CustomerId],
        ) -> Result<HashMap<CustomerId, CustomerId>, StoreError> {
            Ok(customers
                .iter()
                .filter_map(|c| Some((c.clone(), self.merges.get(c)?.clone())))
                .collect())
        }
        async fn children(
            &mut self,
            customers: &[CustomerId],
        ) -> Result<Vec<CustomerId>, StoreError> {
            Ok(self
                .merges
                .iter()
                .filter(|(_, into)| customers.contains(into))
                .map(|(merged, _)| merged.clone())
                .collect())
        }
        async fn kind_counts(
            &mut self,
            customers: &[CustomerId],
        ) -> Result<HashMap<String, usize>, StoreError> {
            let mut counts = HashMap::new();
            for (key, owner) in &self.identities {
                if customers.contains(owner) {
                    *counts.entry(key.kind.clone()).or_default() += 1;
                }
            }
            Ok(counts)
        }
        async fn blocked(
            &mut self,
            _left: &[CustomerId],
            _right: &[CustomerId],
        ) -> Result<bool, StoreError> {
            Ok(false)
        }
        async fn claim(
            &mut self,
            key: &IdentifierKey,
            customer: &CustomerId,
            _position: Option<Position>,
        ) -> Result<bool, StoreError> {
            if let Some((stolen, thief)) = self.stolen.take_if(|(k, _)| k == key) {
                self.identities.insert(stolen, thief);
                return Ok(false);
            }
            Ok(match self.identities.entry(key.clone()) {
                std::collections::btree_map::Entry::Occupied(_) => false,
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(customer.clone());
                    true
                }
            })
        }
        async fn merge(
            &mut self,
            merged: &CustomerId,
            into: &CustomerId,
            _position: Position,
        ) -> Result<(), StoreError> {
            self.merges.insert(merged.clone(), into.clone());
            Ok(())
        }
        async fn unmerge(
            &mut self,
            merged: &CustomerId,
            into: &CustomerId,
            _position: Position,
        ) -> Result<bool, StoreError> {
            Ok(self
                .merges
                .remove_entry(merged)
                .is_some_and(|(_, i)| &i == into))
        }
        async fn forget(&mut self, customer: &CustomerId) -> Result<(), StoreError> {
            self.identities.retain(|_, owner| owner != customer);
            Ok(())
        }
    }

    fn link(customer: &str, value: &str) -> Event {
        Event {
            event_id: Uuid::from_u128(7),
            customer_id: CustomerId::parse(customer).expect("an id"),
            occurred_at: Utc
                .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
                .single()
                .expect("a time"),
            source: "test".into(),
            body: EventBody::IdentitiesLinked(IdentitiesLinked {
                identities: vec![Identity {
                    kind: IdentityKind::DeviceId,
                    value: value.into(),
                }],
                evidence: None,
                extra: Default::default(),
            }),
        }
    }

    #[tokio::test]
    async fn a_claim_lost_to_a_concurrent_resolution_merges_with_the_winner() {
        let digester = Digester::default();
        let key = digester.key(&Identity {
            kind: IdentityKind::DeviceId,
            value: "dev-1".into(),
        });
        let thief = CustomerId::provisional(&IdentityKind::DeviceId, &key.digest[..32]);
        let mut index = Fake {
            stolen: Some((key.clone(), thief.clone())),
            ..Fake::default()
        };
        let event = link("c-1", "dev-1");
        let keys = vec![(IdentityKind::DeviceId, key.clone())];
        let merges = link_identities(&mut index, &event, Position(1), &keys)
            .await
            .expect("linked");
        assert_eq!(merges.len(), 1, "the winner is merged: {merges:?}");
        let EventBody::CustomersMerged(merge) = &merges[0].body else {
            panic!("{merges:?}");
        };
        assert_eq!(
            merges[0].customer_id.as_str(),
            "c-1",
            "the named customer survives"
        );
        assert_eq!(merge.merged_customer_id, thief);
        assert_eq!(
            index.identities.get(&key),
            Some(&thief),
            "the winner keeps its claim"
        );
    }
}
