//! Where the consumer reads each assigned partition next, and whether the broker answered where
//! it was asked to.
//!
//! At an assignment the consumer asks for each partition's stored offset; after an outage it
//! seeks each to the offset after the last record it read. The first record that comes back
//! should carry exactly that offset. When it does not, records were skipped (a broker serving
//! from the wrong place, retention deleting what was never read) or are read again (a topic
//! recreated, the offset reset to its beginning): either way the operator must hear of it.
//! Transaction markers and aborted transactions also take offsets, so a small jump forward can
//! be harmless on a topic written by transactional producers.

use std::collections::HashMap;

use rdkafka::topic_partition_list::Offset;

/// One partition's reading position.
#[derive(Debug, Clone, Copy)]
struct Position {
    /// The next offset to read (a logical one, such as the beginning, until a record is read).
    next: Offset,
    /// The offset asked for at the last assignment or seek, until its first record comes.
    asked: Option<i64>,
}

/// The first record after an assignment or seek was not at the offset asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Jump {
    /// The offset asked for.
    pub(crate) asked: i64,
    /// The offset of the first record that came.
    pub(crate) got: i64,
}

/// Reading positions by topic and partition (looked up by `&str` for every record: no
/// allocation).
#[derive(Debug, Default)]
pub(crate) struct Positions {
    topics: HashMap<String, HashMap<i32, Position>>,
}

impl Positions {
    /// The partition was assigned, starting at `offset`.
    pub(crate) fn start(&mut self, topic: &str, partition: i32, offset: Offset) {
        let asked = match offset {
            Offset::Offset(n) => Some(n),
            _ => None,
        };
        self.topics.entry(topic.to_owned()).or_default().insert(
            partition,
            Position {
                next: offset,
                asked,
            },
        );
    }

    /// A record at `offset` was read; returns the jump, if it is the first record after an
    /// assignment or seek and not at the offset asked for.
    pub(crate) fn read(&mut self, topic: &str, partition: i32, offset: i64) -> Option<Jump> {
        let next = Offset::Offset(offset.saturating_add(1));
        let Some(position) = self
            .topics
            .get_mut(topic)
            .and_then(|partitions| partitions.get_mut(&partition))
        else {
            self.topics
                .entry(topic.to_owned())
                .or_default()
                .insert(partition, Position { next, asked: None });
            return None;
        };
        position.next = next;
        let asked = position.asked.take()?;
        (asked != offset).then_some(Jump { asked, got: offset })
    }

    /// Every partition is sought to its next offset: the first record of each is checked again.
    pub(crate) fn sought(&mut self) {
        for position in self.topics.values_mut().flat_map(HashMap::values_mut) {
            if let Offset::Offset(n) = position.next {
                position.asked = Some(n);
            }
        }
    }

    /// The next offset to read of `topic`/`partition`, if it is assigned here.
    pub(crate) fn next(&self, topic: &str, partition: i32) -> Option<Offset> {
        self.topics
            .get(topic)
            .and_then(|partitions| partitions.get(&partition))
            .map(|position| position.next)
    }

    /// Forgets every partition (they were revoked).
    pub(crate) fn clear(&mut self) {
        self.topics.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_record_at_the_offset_asked_for_is_no_jump() {
        let mut positions = Positions::default();
        positions.start("t", 0, Offset::Offset(10));
        assert_eq!(positions.read("t", 0, 10), None);
        assert_eq!(positions.next("t", 0), Some(Offset::Offset(11)));
        // Later records are not checked: transaction markers take offsets between them.
        assert_eq!(positions.read("t", 0, 13), None);
        assert_eq!(positions.next("t", 0), Some(Offset::Offset(14)));
    }

    #[test]
    fn a_first_record_elsewhere_is_a_jump_either_way() {
        let mut positions = Positions::default();
        positions.start("t", 0, Offset::Offset(7541));
        positions.start("t", 1, Offset::Offset(1000));
        assert_eq!(
            positions.read("t", 0, 9128),
            Some(Jump {
                asked: 7541,
                got: 9128
            })
        );
        assert_eq!(
            positions.read("t", 1, 0),
            Some(Jump {
                asked: 1000,
                got: 0
            })
        );
        // Reported once.
        assert_eq!(positions.read("t", 0, 9129), None);
    }

    #[test]
    fn a_partition_started_at_its_beginning_is_not_checked() {
        let mut positions = Positions::default();
        positions.start("t", 0, Offset::Beginning);
        assert_eq!(positions.next("t", 0), Some(Offset::Beginning));
        assert_eq!(positions.read("t", 0, 500), None);
    }

    #[test]
    fn after_a_seek_the_first_record_is_checked_again() {
        let mut positions = Positions::default();
        positions.start("t", 0, Offset::Offset(0));
        positions.start("t", 1, Offset::Beginning);
        assert_eq!(positions.read("t", 0, 0), None);
        assert_eq!(positions.read("t", 0, 1), None);
        positions.sought();
        assert_eq!(positions.read("t", 0, 5), Some(Jump { asked: 2, got: 5 }));
        // Nothing read yet from partition 1: its position is still logical, not checked.
        assert_eq!(positions.read("t", 1, 3), None);
    }

    #[test]
    fn clear_forgets_every_partition() {
        let mut positions = Positions::default();
        positions.start("t", 0, Offset::Offset(4));
        positions.clear();
        assert_eq!(positions.next("t", 0), None);
        assert_eq!(positions.read("t", 0, 9), None);
    }
}
