//! Placing a partition at an offset, on a broker that may answer from a
//! later record batch.
//!
//! A broker must return the record batch that contains the offset fetched
//! from; tansu returns the next batch instead, which would skip the rest of
//! the batch. So when the first record comes from beyond the target, the
//! reader seeks back (1, 2, 4, ... records before the target) until a fetch
//! starts at or before it, or from the partition's first offset, where a gap
//! is real. Records before the target are then dropped by the reader. Both
//! the module consumers and the API reader place partitions this way.

use std::time::Instant;

/// A partition being placed at `target`.
#[derive(Debug)]
pub(super) struct Placing {
    pub(super) target: u64,
    /// The lowest offset worth seeking to (the partition's first).
    floor: u64,
    /// How far before `target` the last seek went.
    back: u64,
    /// When that seek was made.
    pub(super) since: Instant,
}

impl Placing {
    /// Start placing at `target`, never seeking below `floor`.
    pub(super) fn at(target: u64, floor: u64) -> Placing {
        Placing {
            target,
            floor: floor.min(target),
            back: 0,
            since: Instant::now(),
        }
    }

    /// A record at `offset` arrived. `None`: the partition is placed (the
    /// record may be used, or dropped if it is before the target);
    /// `Some(o)`: seek to `o` and wait for the next record.
    pub(super) fn on_record(&mut self, offset: u64) -> Option<u64> {
        if offset <= self.target || self.exhausted() {
            return None;
        }
        Some(self.seek_back())
    }

    /// Whether seeking further back cannot help.
    pub(super) fn exhausted(&self) -> bool {
        self.back >= self.target - self.floor
    }

    /// Twice as far back as last time; returns the offset to seek to.
    pub(super) fn seek_back(&mut self) -> u64 {
        self.back = (self.back * 2).max(1).min(self.target - self.floor);
        self.since = Instant::now();
        self.target - self.back
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeks_back_doubling_until_the_floor() {
        let mut p = Placing::at(10, 4);
        assert_eq!(p.on_record(10), None, "a fetch from the target is placed");
        assert_eq!(p.on_record(15), Some(9));
        assert_eq!(p.on_record(15), Some(8));
        assert_eq!(p.on_record(12), Some(6));
        assert_eq!(p.on_record(12), Some(4), "not below the floor");
        assert!(p.exhausted());
        assert_eq!(p.on_record(12), None, "the gap is real");
        let mut at_zero = Placing::at(0, 0);
        assert_eq!(at_zero.on_record(3), None, "nothing before offset 0");
    }
}
