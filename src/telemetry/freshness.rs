//! Freshness: how long after its `202` a click's row is committed, the
//! delay an advertiser watching the dashboard sees.
//!
//! Ingest notes, for each partition a request wrote to, the end of what it
//! wrote (one past its highest offset) and when it answered. The job's
//! commits report each partition's committed offset; once it reaches a
//! noted end, every click of that request in that partition is in a
//! committed epoch, and the time since the answer is observed. One
//! observation per request and partition; both sides must run in one
//! process (`tally up`).
//!
//! The notes are bounded ([`MAX_NOTES_PER_PARTITION`]): past it, a request
//! is not noted (sampling under load), so memory never grows with lag.

use std::collections::VecDeque;
use std::sync::Mutex;

use prometheus::{Histogram, HistogramOpts};

use super::{register, MetricError, Registry};

/// Notes kept per partition before new requests go unnoted.
pub const MAX_NOTES_PER_PARTITION: usize = 4_096;

/// Bounds of the freshness buckets, seconds: from one early-results tick
/// to a long catch-up.
const FRESHNESS_BUCKETS_S: [f64; 14] = [0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];

/// Where a figure set reports to [`Freshness`] once both run in one
/// process (`tally up`): set at most once, read on every report.
#[derive(Debug, Default)]
pub struct FreshnessHook(std::sync::OnceLock<std::sync::Arc<Freshness>>);

impl FreshnessHook {
    /// Reports go to `freshness` from now on (a second call is ignored).
    pub fn set(&self, freshness: std::sync::Arc<Freshness>) {
        let _ = self.0.set(freshness);
    }

    /// Where to report, if anywhere.
    pub fn get(&self) -> Option<&Freshness> {
        self.0.get().map(|f| f.as_ref())
    }
}

/// See the module docs.
pub struct Freshness {
    seconds: Histogram,
    /// Per partition, (end offset, answered at ms), oldest first.
    notes: Mutex<Vec<VecDeque<(u64, u64)>>>,
}

impl std::fmt::Debug for Freshness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Freshness").field("observed", &self.seconds.get_sample_count()).finish_non_exhaustive()
    }
}

impl Default for Freshness {
    fn default() -> Freshness {
        let opts = HistogramOpts::new(
            "tally_freshness_seconds",
            "Time from a click's 202 to the commit of the epoch holding it (one observation per request and partition)",
        )
        .buckets(FRESHNESS_BUCKETS_S.to_vec());
        Freshness {
            seconds: Histogram::with_opts(opts).unwrap_or_else(|e| unreachable!("a valid metric: {e}")),
            notes: Mutex::new(Vec::new()),
        }
    }
}

impl Freshness {
    /// A request was answered `202` at `now_ms` after writing clicks at
    /// these (partition, offset) positions.
    pub fn acknowledged(&self, positions: &[(u32, u64)], now_ms: u64) {
        let mut ends: Vec<(u32, u64)> = Vec::new();
        for &(partition, offset) in positions {
            match ends.iter_mut().find(|(p, _)| *p == partition) {
                Some((_, end)) => *end = (*end).max(offset + 1),
                None => ends.push((partition, offset + 1)),
            }
        }
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        for (partition, end) in ends {
            let index = partition as usize;
            if notes.len() <= index {
                notes.resize_with(index + 1, VecDeque::new);
            }
            if notes[index].len() < MAX_NOTES_PER_PARTITION {
                notes[index].push_back((end, now_ms));
            }
        }
    }

    /// `partition` is committed below `offset` at `now_ms`.
    pub fn committed(&self, partition: u32, offset: u64, now_ms: u64) {
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        let Some(noted) = notes.get_mut(partition as usize) else { return };
        while let Some(&(end, at)) = noted.front() {
            if end > offset {
                break;
            }
            self.seconds.observe(now_ms.saturating_sub(at) as f64 / 1e3);
            noted.pop_front();
        }
    }

    /// Requests observed so far.
    pub fn observed(&self) -> u64 {
        self.seconds.get_sample_count()
    }

    /// Adds the histogram to `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), MetricError> {
        register(registry, &self.seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_observed_once_every_partition_it_wrote_is_committed_past_it() {
        let freshness = Freshness::default();
        freshness.acknowledged(&[(0, 10), (0, 11), (2, 5)], 1_000);
        freshness.acknowledged(&[(0, 12)], 2_000);
        freshness.committed(0, 11, 3_000); // offset 11 not yet committed
        assert_eq!(freshness.observed(), 0);
        freshness.committed(0, 12, 3_500); // the first request's part in 0
        assert_eq!(freshness.observed(), 1);
        assert_eq!(freshness.seconds.get_sample_sum(), 2.5);
        freshness.committed(2, 6, 4_000);
        freshness.committed(0, 13, 4_000);
        assert_eq!(freshness.observed(), 3);
        assert_eq!(freshness.seconds.get_sample_sum(), 2.5 + 3.0 + 2.0);
        freshness.committed(1, 100, 5_000); // a partition never written
        assert_eq!(freshness.observed(), 3);
    }

    #[test]
    fn notes_are_bounded_per_partition() {
        let freshness = Freshness::default();
        for offset in 0..(MAX_NOTES_PER_PARTITION as u64 + 100) {
            freshness.acknowledged(&[(0, offset)], offset);
        }
        freshness.committed(0, u64::MAX, 0);
        assert_eq!(freshness.observed(), MAX_NOTES_PER_PARTITION as u64);
    }
}
