//! The source partitions that hold the watermark back.
//!
//! Kafka delivers each partition in order, but not the partitions in step: after downtime, in a
//! backfill, or simply because one partition is fetched faster than another, the log can hold a
//! customer's events from months ahead of another partition's. Time-driven transitions fired at
//! the fast partitions' time would be wrong for every customer of the slow one (and corrected
//! later, as retractions). Ingest therefore reports, in the `$sources` stream, which partitions
//! it is reading *behind* their end and how far (the latest event time read from each), and when
//! they reach their end again ([`patron_domain::SourceProgress`]). The watermark stays at or
//! before the earliest of the partitions behind; a partition behind that has delivered no valid
//! event yet holds it where it is. Being in the log, the hold is the same live and in a replay.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use patron_domain::SourceProgress;

/// Source partitions read behind their end, by topic and partition, each with the latest event
/// time read from it (`None`: nothing valid yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceHold {
    partitions: BTreeMap<(String, i32), Option<DateTime<Utc>>>,
}

impl SourceHold {
    /// Takes a progress report: a partition behind is held at the latest event time read from it
    /// (which never moves back); one that reached its end holds nothing any more.
    pub fn apply(&mut self, progress: &SourceProgress) {
        for partition in &progress.partitions {
            let key = (partition.topic.clone(), partition.partition);
            if partition.behind {
                let read_to = self.partitions.entry(key).or_insert(None);
                if let Some(at) = partition.read_to {
                    *read_to = Some(read_to.map_or(at, |before| before.max(at)));
                }
            } else {
                self.partitions.remove(&key);
            }
        }
    }

    /// The evidence of time `high` allows while these partitions are behind: `high`, but no later
    /// than the earliest of their progress; `None` while one of them has delivered nothing.
    pub fn cap(&self, high: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.partitions
            .values()
            .try_fold(high, |low, read_to| read_to.map(|at| low.min(at)))
    }

    /// Whether no partition holds the watermark back.
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// The partitions behind, each with the latest event time read from it.
    pub fn iter(&self) -> impl Iterator<Item = (&(String, i32), &Option<DateTime<Utc>>)> {
        self.partitions.iter()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use patron_domain::PartitionProgress;

    use super::*;

    fn at(day: u32) -> DateTime<Utc> {
        format!("2026-03-{day:02}T00:00:00Z").parse().unwrap()
    }

    fn report(entries: &[(i32, Option<u32>, bool)]) -> SourceProgress {
        SourceProgress {
            partitions: entries
                .iter()
                .map(|&(partition, read_to, behind)| PartitionProgress {
                    topic: "events".into(),
                    partition,
                    read_to: read_to.map(at),
                    behind,
                })
                .collect(),
        }
    }

    #[test]
    fn the_earliest_partition_behind_caps_the_evidence_until_it_reaches_its_end() {
        let mut hold = SourceHold::default();
        assert_eq!(hold.cap(at(20)), Some(at(20)), "nothing behind: no cap");
        hold.apply(&report(&[
            (0, Some(5), true),
            (1, Some(9), true),
            (2, Some(3), false),
        ]));
        assert_eq!(hold.cap(at(20)), Some(at(5)));
        assert_eq!(
            hold.cap(at(4)),
            Some(at(4)),
            "never above the evidence itself"
        );
        // Progress never moves back (a redelivery after a crash reads earlier records again).
        hold.apply(&report(&[(0, Some(2), true)]));
        assert_eq!(hold.cap(at(20)), Some(at(5)));
        hold.apply(&report(&[(0, Some(7), true)]));
        assert_eq!(hold.cap(at(20)), Some(at(7)));
        hold.apply(&report(&[(0, Some(8), false)]));
        assert_eq!(hold.cap(at(20)), Some(at(9)));
        hold.apply(&report(&[(1, None, false)]));
        assert!(hold.is_empty());
        assert_eq!(hold.cap(at(20)), Some(at(20)));
    }

    #[test]
    fn a_partition_behind_with_nothing_read_holds_everything() {
        let mut hold = SourceHold::default();
        hold.apply(&report(&[(0, Some(5), true), (3, None, true)]));
        assert_eq!(hold.cap(at(20)), None);
        hold.apply(&report(&[(3, Some(6), true)]));
        assert_eq!(hold.cap(at(20)), Some(at(5)));
    }
}
