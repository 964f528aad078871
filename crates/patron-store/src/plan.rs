//! The backend-independent half of an append: checks, de-duplication and version assignment.
//!
//! Every backend does the same thing inside its write lock: find which of the batch's event ids
//! are already stored (with their payload digests) and what version each stream is at, then call
//! [`plan_append`], then write the planned rows. Keeping the rules here means the backends cannot
//! disagree about them.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use patron_domain::{CustomerId, Event, EventDigest};
use uuid::Uuid;

use crate::error::{EventIdConflict, StoreError};
use crate::types::{AppendBatch, Position};

/// An event the plan will store, with its place.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedEvent<'a> {
    /// Global position.
    pub position: Position,
    /// Version in its stream.
    pub version: u64,
    /// The event.
    pub event: &'a Event,
    /// Its body's stored JSON (`EventBody::to_payload_string`), serialised once.
    pub payload: String,
    /// Its content digest, to store beside it.
    pub digest: EventDigest,
}

/// What an append will write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppendPlan<'a> {
    /// New events, in position order.
    pub events: Vec<PlannedEvent<'a>>,
    /// Each touched stream's new version.
    pub stream_versions: Vec<(CustomerId, u64)>,
    /// Events acknowledged as already stored or repeated within the batch.
    pub duplicates: u64,
}

impl AppendPlan<'_> {
    /// The position of the last planned event, or `head` when nothing new is stored.
    pub fn last_position(&self, head: Position) -> Position {
        self.events.last().map_or(head, |e| e.position)
    }
}

impl AppendBatch {
    /// Every event id in the batch, for the backend's "which are stored already" query.
    pub fn event_ids(&self) -> Vec<Uuid> {
        self.streams
            .iter()
            .flat_map(|s| s.events.iter().map(|e| e.event_id))
            .collect()
    }

    /// Every stream the batch touches, once each.
    pub fn customer_ids(&self) -> Vec<CustomerId> {
        let mut seen = HashSet::new();
        self.streams
            .iter()
            .filter(|s| seen.insert(&s.customer_id))
            .map(|s| s.customer_id.clone())
            .collect()
    }

    /// Structural checks that need no stored state.
    pub fn check(&self) -> Result<(), StoreError> {
        for stream in &self.streams {
            if let Some(stray) = stream
                .events
                .iter()
                .find(|e| e.customer_id != stream.customer_id)
            {
                return Err(StoreError::InvalidAppend(format!(
                    "event {} belongs to customer {} but was appended to stream {}",
                    stray.event_id, stray.customer_id, stream.customer_id
                )));
            }
        }
        for offset in &self.offsets {
            if offset.next_offset < 0 || offset.partition < 0 {
                return Err(StoreError::InvalidAppend(format!(
                    "offset {} of {}/{} is negative",
                    offset.next_offset, offset.topic, offset.partition
                )));
            }
        }
        Ok(())
    }
}

/// What the store already holds under one of the batch's event ids: the stored event's digest,
/// or `None` for an event stored before digests were kept (treated as the same content).
pub type StoredDigests = HashMap<Uuid, Option<EventDigest>>;

/// Plans an append given the store's state: `stored` holds the batch's event ids that are already
/// in the store (with their digests), `versions` the current version of each touched stream
/// (absent = 0), `head` the last committed position.
///
/// An event whose id is stored, or carried by an earlier event of the batch, is a duplicate when
/// its digest is the same and a conflict when it differs. Conflicts fail the plan with
/// [`StoreError::DuplicateEventIds`], listing all of them, before versions are checked.
pub fn plan_append<'a>(
    batch: &'a AppendBatch,
    stored: &StoredDigests,
    versions: &HashMap<CustomerId, u64>,
    head: Position,
) -> Result<AppendPlan<'a>, StoreError> {
    batch.check()?;
    let offered = batch.event_count() as u64;
    // First pass: digest every event and sort out duplicates and conflicts.
    let mut first_in_batch: HashMap<Uuid, EventDigest> = HashMap::new();
    let mut conflicts = Vec::new();
    let mut fresh: Vec<Vec<(&Event, String, EventDigest)>> =
        Vec::with_capacity(batch.streams.len());
    for (s, stream) in batch.streams.iter().enumerate() {
        let mut new_events = Vec::with_capacity(stream.events.len());
        for (i, event) in stream.events.iter().enumerate() {
            let payload = event.body.to_payload_string();
            let digest = event.digest_with_payload(&payload);
            let kept = match stored.get(&event.event_id) {
                Some(kept) => *kept,
                None => match first_in_batch.entry(event.event_id) {
                    Entry::Occupied(first) => Some(*first.get()),
                    Entry::Vacant(slot) => {
                        slot.insert(digest);
                        new_events.push((event, payload, digest));
                        continue;
                    }
                },
            };
            match kept {
                Some(kept) if kept != digest => conflicts.push(EventIdConflict {
                    stream: s,
                    index: i,
                    event_id: event.event_id,
                    kept,
                    offered: digest,
                }),
                // The same content (or stored before digests were kept): a duplicate.
                _ => {}
            }
        }
        fresh.push(new_events);
    }
    if !conflicts.is_empty() {
        return Err(StoreError::DuplicateEventIds(conflicts));
    }

    let mut plan = AppendPlan::default();
    let mut next_versions: HashMap<CustomerId, u64> = HashMap::new();
    let mut position = head;
    for (stream, new_events) in batch.streams.iter().zip(fresh) {
        if new_events.is_empty() {
            // Everything was stored before: an idempotent retry succeeds whatever it expected.
            continue;
        }
        let current = next_versions
            .get(&stream.customer_id)
            .or_else(|| versions.get(&stream.customer_id))
            .copied()
            .unwrap_or(0);
        if !stream.expected.admits(current) {
            return Err(StoreError::Conflict {
                customer_id: stream.customer_id.clone(),
                expected: stream.expected,
                actual: current,
            });
        }
        let mut version = current;
        for (event, payload, digest) in new_events {
            version += 1;
            position = position.advanced_by(1);
            plan.events.push(PlannedEvent {
                position,
                version,
                event,
                payload,
                digest,
            });
        }
        next_versions.insert(stream.customer_id.clone(), version);
    }
    plan.duplicates = offered - plan.events.len() as u64;
    plan.stream_versions = next_versions.into_iter().collect();
    Ok(plan)
}
