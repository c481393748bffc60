//! Exact per-partition duplicate detection within an event-time horizon.
//!
//! A retry carries the request id of its original and lands in the same
//! partition, so each partition remembers the ids it has counted, with the
//! partition's event-time progress (`max_ts`) when it first saw them. An id
//! remembered at `t` is a duplicate while `t >= max_ts - horizon` (see
//! SEMANTICS.md). Remembering progress rather than the click's own time means
//! a retry of a very late click is caught too. Expired ids are swept out in
//! bulk every half horizon of event time; the check itself compares times, so
//! when the sweep runs never changes a decision, which keeps replays exact.
//!
//! Memory: one entry is 24 bytes (two 64-bit halves of the id and the event
//! time); the table keeps at most 8/7 slots per entry plus one control byte
//! per slot, about 28–56 bytes per remembered id depending on its fill.

use std::hash::{BuildHasher, Hasher};

use hashbrown::HashMap;

use crate::event::{mix64, EventTime, RequestId};

/// A request id stored as two 8-byte halves (8-byte alignment, not 16).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Id(u64, u64);

/// Request ids are random already; one mixing round spreads non-random ones.
#[derive(Clone, Copy, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        mix64(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(23) ^ n;
    }
}

#[derive(Clone, Copy, Default)]
struct BuildIdHasher;

impl BuildHasher for BuildIdHasher {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

/// The dedup memory of one partition.
pub struct Dedup {
    horizon_ms: u64,
    seen: HashMap<Id, EventTime, BuildIdHasher>,
    /// Event time of the last sweep's floor.
    swept_at: EventTime,
}

impl Dedup {
    pub fn new(horizon_ms: u64) -> Self {
        Dedup { horizon_ms, seen: HashMap::with_hasher(BuildIdHasher), swept_at: 0 }
    }

    /// Decides whether `id` is a duplicate, given the partition's `max_ts`
    /// including this click; remembers it at `max_ts` if not.
    #[inline]
    pub fn is_duplicate(&mut self, id: RequestId, max_ts: EventTime) -> bool {
        let floor = max_ts.saturating_sub(self.horizon_ms);
        let key = Id(id as u64, (id >> 64) as u64);
        match self.seen.get_mut(&key) {
            Some(remembered) if *remembered >= floor => true,
            Some(remembered) => {
                *remembered = max_ts;
                false
            }
            None => {
                self.seen.insert(key, max_ts);
                self.maybe_sweep(floor);
                false
            }
        }
    }

    /// Drops ids that can no longer match, at most once per half horizon.
    fn maybe_sweep(&mut self, floor: EventTime) {
        if floor >= self.swept_at + self.horizon_ms / 2 {
            self.seen.retain(|_, ts| *ts >= floor);
            self.swept_at = floor;
        }
    }

    /// Number of remembered ids.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_within_horizon_counts_once() {
        let mut d = Dedup::new(60_000);
        assert!(!d.is_duplicate(7, 1_000));
        assert!(d.is_duplicate(7, 50_000));
        assert!(d.is_duplicate(7, 61_000));
    }

    #[test]
    fn duplicate_beyond_horizon_counts_again() {
        let mut d = Dedup::new(60_000);
        assert!(!d.is_duplicate(7, 1_000));
        assert!(!d.is_duplicate(7, 61_001));
        // Re-remembered at 61 001: a duplicate again from now on.
        assert!(d.is_duplicate(7, 61_001));
    }

    #[test]
    fn sweep_never_changes_a_decision() {
        let mut swept = Dedup::new(10);
        let mut decisions = Vec::new();
        for i in 0..10_000u64 {
            let id = u128::from(i % 97);
            decisions.push(swept.is_duplicate(id, i));
        }
        // Replaying the decisions by brute force.
        let mut last: std::collections::HashMap<u128, u64> = Default::default();
        for i in 0..10_000u64 {
            let id = u128::from(i % 97);
            let floor = i.saturating_sub(10);
            let dup = matches!(last.get(&id), Some(&t) if t >= floor);
            if !dup {
                last.insert(id, i);
            }
            assert_eq!(dup, decisions[i as usize], "at {i}");
        }
        assert!(swept.len() <= 97);
    }
}
