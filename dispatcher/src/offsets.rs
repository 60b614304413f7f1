//! Which offsets may be committed when records finish out of order.
//!
//! The deliverer hands each record to its target's lane and moves on, so records complete in
//! any order: a slow endpoint's record may still be in flight long after later records of the
//! same partition were delivered. A partition's commit may only cover a prefix in which every
//! record is done, or a crash would skip the unfinished one. [`OffsetTracker`] keeps the
//! offsets still in progress per partition; the committable position is just below the
//! lowest of them. A slow endpoint therefore holds back commits (a restart re-delivers a few
//! records, which receivers deduplicate by `webhook-id`), never deliveries.

use std::collections::{BTreeMap, BTreeSet};

use herald_log::LogPosition;

#[derive(Debug, Default)]
struct PartitionOffsets {
    in_progress: BTreeSet<u64>,
    highest_seen: Option<u64>,
    /// The last offset committed (inclusive).
    committed: Option<u64>,
}

impl PartitionOffsets {
    /// The highest offset whose every predecessor is done, if any.
    fn done_through(&self) -> Option<u64> {
        match self.in_progress.first() {
            Some(&lowest) => lowest.checked_sub(1),
            None => self.highest_seen,
        }
    }
}

#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: BTreeMap<(String, u32), PartitionOffsets>,
    in_progress: usize,
}

impl OffsetTracker {
    /// Records in progress, over every partition.
    pub fn in_progress(&self) -> usize {
        self.in_progress
    }

    pub fn begin(&mut self, position: &LogPosition) {
        let partition = self
            .partitions
            .entry((position.topic.clone(), position.partition))
            .or_default();
        if partition.in_progress.insert(position.offset) {
            self.in_progress += 1;
        }
        partition.highest_seen = partition.highest_seen.max(Some(position.offset));
    }

    pub fn finish(&mut self, position: &LogPosition) {
        if let Some(partition) = self
            .partitions
            .get_mut(&(position.topic.clone(), position.partition))
        {
            if partition.in_progress.remove(&position.offset) {
                self.in_progress -= 1;
            }
        }
    }

    /// Positions to commit now (each the last fully processed offset of its partition), only
    /// for partitions that moved since the last call.
    pub fn take_committable(&mut self) -> Vec<LogPosition> {
        let mut out = Vec::new();
        for ((topic, partition), offsets) in &mut self.partitions {
            let Some(done) = offsets.done_through() else {
                continue;
            };
            if offsets.committed.is_some_and(|committed| committed >= done) {
                continue;
            }
            offsets.committed = Some(done);
            out.push(LogPosition {
                topic: topic.clone(),
                partition: *partition,
                offset: done,
            });
        }
        out
    }

    /// Forgets what was taken but could not be committed, so the next call offers it again.
    pub fn commit_failed(&mut self, positions: &[LogPosition]) {
        for position in positions {
            if let Some(offsets) = self
                .partitions
                .get_mut(&(position.topic.clone(), position.partition))
            {
                offsets.committed = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> LogPosition {
        LogPosition {
            topic: "t".into(),
            partition: 0,
            offset,
        }
    }

    #[test]
    fn commits_only_a_fully_done_prefix() {
        let mut tracker = OffsetTracker::default();
        for offset in 0..5 {
            tracker.begin(&at(offset));
        }
        // 1..4 done, 0 (a slow endpoint) still in flight: nothing may be committed.
        for offset in 1..5 {
            tracker.finish(&at(offset));
        }
        assert_eq!(tracker.in_progress(), 1);
        assert!(tracker.take_committable().is_empty());
        tracker.finish(&at(0));
        assert_eq!(tracker.take_committable(), vec![at(4)]);
        assert!(tracker.take_committable().is_empty(), "nothing new");
    }

    #[test]
    fn a_gap_holds_the_commit_below_it() {
        let mut tracker = OffsetTracker::default();
        for offset in 10..15 {
            tracker.begin(&at(offset));
        }
        tracker.finish(&at(10));
        tracker.finish(&at(11));
        tracker.finish(&at(13));
        assert_eq!(tracker.take_committable(), vec![at(11)]);
        tracker.finish(&at(12));
        assert_eq!(tracker.take_committable(), vec![at(13)]);
    }

    #[test]
    fn a_failed_commit_is_offered_again() {
        let mut tracker = OffsetTracker::default();
        tracker.begin(&at(0));
        tracker.finish(&at(0));
        let taken = tracker.take_committable();
        tracker.commit_failed(&taken);
        assert_eq!(tracker.take_committable(), taken);
    }
}
