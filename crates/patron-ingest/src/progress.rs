//! What ingest tells the projector about its source partitions: which are read behind their end,
//! and how far (see [`patron_domain::SourceProgress`]).
//!
//! The transport says which partition each record came from ([`SourceTracker::read`]), which
//! partitions it was assigned ([`SourceTracker::assigned`]) and when a partition's end is reached
//! ([`SourceTracker::reached_end`]). A partition is *behind* while it has records left to read
//! (its end not reached since its last record) and either nothing valid was read from it yet or
//! the latest event time read from it trails the clock by more than [`BEHIND_AFTER`]: a consumer
//! that keeps up is never behind, however its batches are cut, and says nothing.
//!
//! A batch carries up to two `source_progress` events ([`SourceTracker::report`]), so that the
//! projector's watermark is held before it could pass an unread record and released only after
//! the records that justify it:
//!
//! - a *hold*, stored before the batch's events: the partitions that fall behind, at the
//!   progress they had before this batch;
//! - an *update*, stored after them: how far the batch read each partition behind, and the
//!   partitions no longer behind.
//!
//! Once the log says what is true of a partition, nothing more is said about it until that
//! changes.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use patron_domain::{CustomerId, Event, EventBody, PartitionProgress, SourceProgress};
use uuid::Uuid;

use crate::PreparedBatch;

/// How far a partition's latest event time may trail the clock, records left to read, before
/// it is behind. Well under the projector's default allowed lateness (60 minutes), so that what
/// a partition not reported behind can still deliver is within the lateness anyway.
pub const BEHIND_AFTER: TimeDelta = TimeDelta::minutes(5);

/// One partition as this consumer knows it.
#[derive(Debug, Clone, Default)]
struct Tracked {
    /// The latest event time read from it (each capped at the time it was read).
    read_to: Option<DateTime<Utc>>,
    /// Whether its end was reached after the last record read from it.
    ended: bool,
    /// Whether a committed report of this consumer says it is behind; `None` until this consumer
    /// has reported it (the log may say anything: another consumer, an earlier run).
    reported_behind: Option<bool>,
}

impl Tracked {
    fn behind(&self, now: DateTime<Utc>) -> bool {
        !self.ended && self.read_to.is_none_or(|at| at < now - BEHIND_AFTER)
    }
}

/// Per-partition progress of one consumer, for its `source_progress` reports.
#[derive(Debug, Clone, Default)]
pub struct SourceTracker {
    topics: Vec<String>,
    /// By topic, then partition (looked up by `&str` for every record: no allocation).
    partitions: BTreeMap<String, BTreeMap<i32, Tracked>>,
}

/// The progress events one batch carries (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reports {
    /// Stored before the batch's events: partitions that fall behind, at their earlier progress.
    pub hold: Option<Event>,
    /// Stored after them: the progress of the partitions behind, and those no longer behind.
    pub update: Option<Event>,
}

impl Reports {
    /// Whether there is nothing to store.
    pub fn is_empty(&self) -> bool {
        self.hold.is_none() && self.update.is_none()
    }
}

impl SourceTracker {
    /// A tracker for a consumer of `topics`.
    pub fn new(topics: Vec<String>) -> Self {
        Self {
            topics,
            partitions: BTreeMap::new(),
        }
    }

    /// Partitions were assigned to this consumer: each has records left (for all it knows) until
    /// its first record or its end, so the watermark waits for partitions whose records have
    /// not arrived yet, not only for those read slowly.
    pub fn assigned(&mut self, partitions: &[(String, i32)]) {
        for (topic, partition) in partitions {
            self.tracked(topic, *partition).ended = false;
        }
    }

    /// A record of `topic`/`partition` was read: records may be left after it until the
    /// partition's end is reported ([`SourceTracker::reached_end`]).
    pub fn read(&mut self, topic: &str, partition: i32) {
        match self
            .partitions
            .get_mut(topic)
            .and_then(|partitions| partitions.get_mut(&partition))
        {
            Some(tracked) => tracked.ended = false,
            None => *self.tracked(topic, partition) = Tracked::default(),
        }
    }

    /// The partition's entry, made if missing.
    fn tracked(&mut self, topic: &str, partition: i32) -> &mut Tracked {
        if !self.partitions.contains_key(topic) {
            self.partitions.insert(topic.to_owned(), BTreeMap::new());
        }
        self.partitions
            .get_mut(topic)
            .map(|partitions| partitions.entry(partition).or_default())
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// The end of partition `partition` was reached. The transport names the partition by
    /// number only, so it is taken to be that partition of every topic consumed (a topic whose
    /// partition still has records to read is reported behind again with its next record).
    pub fn reached_end(&mut self, partition: i32) {
        for topic in self.topics.clone() {
            self.tracked(&topic, partition).ended = true;
        }
    }

    /// The end of `topic`/`partition` was reached (its records read up to the high watermark
    /// the transport last saw). A partition this consumer does not know of is left alone.
    pub fn reached_end_of(&mut self, topic: &str, partition: i32) {
        if let Some(tracked) = self
            .partitions
            .get_mut(topic)
            .and_then(|partitions| partitions.get_mut(&partition))
        {
            tracked.ended = true;
        }
    }

    /// Whether what the log says of some partition is no longer true at `now` (a report is due
    /// even when no record is waiting).
    pub fn has_news(&self, now: DateTime<Utc>) -> bool {
        self.partitions
            .values()
            .flat_map(BTreeMap::values)
            .any(|t| t.reported_behind != Some(t.behind(now)))
    }

    /// Forgets everything: partitions were revoked (what they are is for their next owner to
    /// report; if they come back, they are reported afresh).
    pub fn reset(&mut self) {
        self.partitions.clear();
    }

    /// The progress events `prepared` must carry, written at `now`. Call once per batch, then
    /// [`SourceTracker::committed`] once the batch is stored.
    pub fn report(&mut self, prepared: &PreparedBatch, now: DateTime<Utc>) -> Reports {
        let mut hold = Vec::new();
        let mut update = Vec::new();
        for (topic, partition) in prepared.read_to.keys() {
            self.tracked(topic, *partition);
        }
        let tracked = self
            .partitions
            .iter_mut()
            .flat_map(|(topic, partitions)| partitions.iter_mut().map(move |(p, t)| (topic, p, t)));
        for (topic, partition, tracked) in tracked {
            let before = tracked.read_to;
            let key = (topic.clone(), *partition);
            if let Some(at) = prepared.read_to.get(&key) {
                tracked.read_to = Some(before.map_or(*at, |b| b.max(*at)));
            }
            let read = prepared
                .batch
                .offsets
                .iter()
                .any(|o| o.topic == *topic && o.partition == *partition);
            let progress = |read_to, behind| PartitionProgress {
                topic: topic.clone(),
                partition: *partition,
                read_to,
                behind,
            };
            if tracked.behind(now) {
                if tracked.reported_behind != Some(true) {
                    hold.push(progress(before, true));
                }
                if read {
                    update.push(progress(tracked.read_to, true));
                }
            } else if tracked.reported_behind != Some(false) {
                update.push(progress(tracked.read_to, false));
            }
        }
        let event = |partitions: Vec<PartitionProgress>| {
            (!partitions.is_empty()).then(|| Event {
                event_id: Uuid::now_v7(),
                customer_id: CustomerId::sources(),
                occurred_at: now,
                source: "patron-ingest".into(),
                body: EventBody::SourceProgress(SourceProgress { partitions }),
            })
        };
        Reports {
            hold: event(hold),
            update: event(update),
        }
    }

    /// The batch that carried `progress` (its hold, then its update) is stored: the log now says
    /// what they say.
    pub fn committed(&mut self, progress: &[Event]) {
        for event in progress {
            let EventBody::SourceProgress(progress) = &event.body else {
                continue;
            };
            for reported in &progress.partitions {
                if let Some(tracked) = self
                    .partitions
                    .get_mut(&reported.topic)
                    .and_then(|partitions| partitions.get_mut(&reported.partition))
                {
                    tracked.reported_behind = Some(reported.behind);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use patron_store::SourceOffset;

    use super::*;

    fn at(day: u32) -> DateTime<Utc> {
        format!("2026-03-{day:02}T00:00:00Z").parse().unwrap()
    }

    /// The time reports are made at.
    fn now() -> DateTime<Utc> {
        at(28)
    }

    /// A batch that read `partitions` of topic `t`, each with its latest event time.
    fn batch(partitions: &[(i32, Option<DateTime<Utc>>)]) -> PreparedBatch {
        let mut prepared = PreparedBatch::default();
        for &(partition, read_to) in partitions {
            prepared.batch.offsets.push(SourceOffset {
                consumer: "g".into(),
                topic: "t".into(),
                partition,
                next_offset: 1,
            });
            if let Some(read_to) = read_to {
                prepared.read_to.insert(("t".into(), partition), read_to);
            }
        }
        prepared
    }

    type Said = Vec<(i32, Option<DateTime<Utc>>, bool)>;

    /// What a report says, partition by partition: (partition, read_to, behind).
    fn said(progress: Option<&Event>) -> Said {
        let Some(Event {
            body: EventBody::SourceProgress(progress),
            customer_id,
            ..
        }) = progress
        else {
            return Vec::new();
        };
        assert_eq!(*customer_id, CustomerId::sources());
        progress
            .partitions
            .iter()
            .map(|p| (p.partition, p.read_to, p.behind))
            .collect()
    }

    /// Reports `prepared` and commits what it says: (hold, update).
    fn report(tracker: &mut SourceTracker, prepared: &PreparedBatch) -> (Said, Said) {
        let reports = tracker.report(prepared, now());
        let stored: Vec<Event> = reports
            .hold
            .iter()
            .chain(&reports.update)
            .cloned()
            .collect();
        tracker.committed(&stored);
        (said(reports.hold.as_ref()), said(reports.update.as_ref()))
    }

    #[test]
    fn partitions_are_held_before_a_batch_and_updated_after_it_until_they_keep_up() {
        let mut tracker = SourceTracker::new(vec!["t".into()]);
        assert!(!tracker.has_news(now()));
        tracker.assigned(&[("t".into(), 0), ("t".into(), 1)]);
        assert!(tracker.has_news(now()), "an assignment is reported at once");
        assert_eq!(
            report(&mut tracker, &batch(&[])),
            (vec![(0, None, true), (1, None, true)], vec![])
        );
        assert!(!tracker.has_news(now()));

        // A backlog on partition 0: every batch that reads it reports its progress after it.
        tracker.read("t", 0);
        assert_eq!(
            report(&mut tracker, &batch(&[(0, Some(at(3)))])),
            (vec![], vec![(0, Some(at(3)), true)])
        );
        tracker.read("t", 0);
        assert_eq!(
            report(&mut tracker, &batch(&[(0, Some(at(2)))])),
            (vec![], vec![(0, Some(at(3)), true)]),
            "progress never moves back"
        );
        // Partition 1 is empty: its end is news without any record.
        tracker.reached_end(1);
        assert!(tracker.has_news(now()));
        assert_eq!(
            report(&mut tracker, &batch(&[])),
            (vec![], vec![(1, None, false)])
        );
        assert!(!tracker.has_news(now()));

        // Partition 0 reaches its end: said once, after the batch.
        tracker.read("t", 0);
        tracker.reached_end(0);
        assert_eq!(
            report(&mut tracker, &batch(&[(0, Some(at(9)))])),
            (vec![], vec![(0, Some(at(9)), false)])
        );
        // Keeping up says nothing, even when a batch is cut before the end is seen.
        for minutes in [10, 4, 1] {
            tracker.read("t", 0);
            let recent = now() - TimeDelta::minutes(minutes);
            if minutes == 10 {
                tracker.reached_end(0);
            }
            assert_eq!(
                report(&mut tracker, &batch(&[(0, Some(recent))])),
                (vec![], vec![])
            );
        }
        tracker.reached_end(0);
        assert!(!tracker.has_news(now()));

        // A new partition with a backlog: held at what was known before the batch (nothing),
        // then updated after it.
        tracker.read("t", 2);
        assert_eq!(
            report(&mut tracker, &batch(&[(2, Some(at(20)))])),
            (vec![(2, None, true)], vec![(2, Some(at(20)), true)])
        );
    }

    #[test]
    fn an_uncommitted_report_is_made_again_and_a_revocation_forgets_everything() {
        let mut tracker = SourceTracker::new(vec!["t".into()]);
        tracker.reached_end(4);
        // The report is lost (its batch was abandoned): the end is still news.
        let lost = tracker.report(&batch(&[]), now());
        assert_eq!(said(lost.update.as_ref()), vec![(4, None, false)]);
        assert!(tracker.has_news(now()));
        assert_eq!(
            report(&mut tracker, &batch(&[])),
            (vec![], vec![(4, None, false)])
        );
        tracker.assigned(&[("t".into(), 5)]);
        tracker.reset();
        assert!(!tracker.has_news(now()));
        assert!(tracker.report(&batch(&[]), now()).is_empty());
        // With several topics, an end named by partition number covers that partition of each.
        let mut tracker = SourceTracker::new(vec!["a".into(), "b".into()]);
        tracker.reached_end(2);
        let progress = tracker.report(&batch(&[]), now()).update.unwrap();
        let EventBody::SourceProgress(progress) = progress.body else {
            panic!("a progress event");
        };
        let named: Vec<(&str, i32)> = progress
            .partitions
            .iter()
            .map(|p| (p.topic.as_str(), p.partition))
            .collect();
        assert_eq!(named, vec![("a", 2), ("b", 2)]);
    }
}
