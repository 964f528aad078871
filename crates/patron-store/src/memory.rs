//! An in-memory event store: for tests, demos and as the reference the SQL backends must match.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use patron_domain::{CustomerId, EventDigest};
use uuid::Uuid;

use crate::EventStore;
use crate::error::StoreError;
use crate::plan::{StoredDigests, plan_append};
use crate::types::{AppendBatch, AppendReceipt, Position, RecordedEvent, SourceOffset};

#[derive(Default)]
struct State {
    log: Vec<RecordedEvent>,
    /// Every stored event id, with its payload digest.
    ids: HashMap<Uuid, EventDigest>,
    streams: HashMap<CustomerId, Vec<usize>>,
    offsets: BTreeMap<(String, String, i32), i64>,
}

/// An event store held in memory. One mutex serialises appends, which makes positions gapless
/// and commit-ordered by construction.
pub struct InMemoryEventStore {
    state: Mutex<State>,
    clock: fn() -> DateTime<Utc>,
}

impl Default for InMemoryEventStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryEventStore {
    /// An empty store stamping `recorded_at` with the system clock.
    pub fn new() -> Self {
        Self::with_clock(Utc::now)
    }

    /// An empty store stamping `recorded_at` with the given clock.
    pub fn with_clock(clock: fn() -> DateTime<Utc>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            clock,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied append (appends mutate only
        // after planning succeeded), so a poisoned lock is safe to keep using.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    async fn append(&self, batch: &AppendBatch) -> Result<AppendReceipt, StoreError> {
        let recorded_at = (self.clock)();
        let mut state = self.state();
        let stored: StoredDigests = batch
            .event_ids()
            .into_iter()
            .filter_map(|id| state.ids.get(&id).map(|digest| (id, Some(*digest))))
            .collect();
        let versions: HashMap<CustomerId, u64> = batch
            .customer_ids()
            .into_iter()
            .map(|c| {
                let version = state.streams.get(&c).map_or(0, |s| s.len() as u64);
                (c, version)
            })
            .collect();
        let head = Position(state.log.len() as u64);
        let plan = plan_append(batch, &stored, &versions, head)?;
        let receipt = AppendReceipt {
            appended: plan.events.len() as u64,
            duplicates: plan.duplicates,
            last_position: plan.events.last().map(|e| e.position),
        };
        for planned in plan.events {
            let index = state.log.len();
            state.ids.insert(planned.event.event_id, planned.digest);
            state
                .streams
                .entry(planned.event.customer_id.clone())
                .or_default()
                .push(index);
            state.log.push(RecordedEvent {
                position: planned.position,
                version: planned.version,
                recorded_at,
                event: planned.event.clone(),
            });
        }
        for offset in &batch.offsets {
            let slot = state
                .offsets
                .entry((
                    offset.consumer.clone(),
                    offset.topic.clone(),
                    offset.partition,
                ))
                .or_insert(offset.next_offset);
            *slot = (*slot).max(offset.next_offset);
        }
        Ok(receipt)
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let state = self.state();
        let start = usize::try_from(after.0)
            .unwrap_or(usize::MAX)
            .min(state.log.len());
        Ok(state.log[start..].iter().take(limit).cloned().collect())
    }

    async fn read_stream(
        &self,
        customer_id: &CustomerId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let state = self.state();
        let Some(indices) = state.streams.get(customer_id) else {
            return Ok(Vec::new());
        };
        let start = usize::try_from(after_version)
            .unwrap_or(usize::MAX)
            .min(indices.len());
        Ok(indices[start..]
            .iter()
            .take(limit)
            .map(|&i| state.log[i].clone())
            .collect())
    }

    async fn head(&self) -> Result<Position, StoreError> {
        Ok(Position(self.state().log.len() as u64))
    }

    async fn stream_version(&self, customer_id: &CustomerId) -> Result<u64, StoreError> {
        Ok(self
            .state()
            .streams
            .get(customer_id)
            .map_or(0, |s| s.len() as u64))
    }

    async fn source_offsets(&self, consumer: &str) -> Result<Vec<SourceOffset>, StoreError> {
        Ok(self
            .state()
            .offsets
            .iter()
            .filter(|((c, _, _), _)| c == consumer)
            .map(|((c, topic, partition), next)| SourceOffset {
                consumer: c.clone(),
                topic: topic.clone(),
                partition: *partition,
                next_offset: *next,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::event_store_contract!(async { InMemoryEventStore::new() });
}
