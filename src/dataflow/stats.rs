//! Counters the dataflow keeps about itself, shared by all workers of a process.
//!
//! They are reports, not results: exactly-once is checked by recounting the
//! input independently, never by these numbers.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What the sources decided, summed over workers.
#[derive(Default, Debug)]
pub struct SourceStats {
    pub on_time: AtomicU64,
    pub duplicates: AtomicU64,
    pub restating: AtomicU64,
    pub held: AtomicU64,
    /// Clicks attributed to campaign `unknown` because the catalog lacks their ad.
    pub unknown_ad_clicks: AtomicU64,
    /// Largest dedup memory seen in one partition.
    pub remembered_max: AtomicU64,
}

impl SourceStats {
    /// Adds one batch's verdict counts: on time, duplicate, restating, held.
    pub fn record(&self, counts: [u64; 4], remembered: usize) {
        self.on_time.fetch_add(counts[0], Relaxed);
        self.duplicates.fetch_add(counts[1], Relaxed);
        self.restating.fetch_add(counts[2], Relaxed);
        self.held.fetch_add(counts[3], Relaxed);
        self.remembered_max.fetch_max(remembered as u64, Relaxed);
    }

    pub fn read(&self) -> StatsSnapshot {
        StatsSnapshot {
            on_time: self.on_time.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            restating: self.restating.load(Relaxed),
            held: self.held.load(Relaxed),
            unknown_ad_clicks: self.unknown_ad_clicks.load(Relaxed),
            remembered_max: self.remembered_max.load(Relaxed),
        }
    }
}

/// A plain copy of [`SourceStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub on_time: u64,
    pub duplicates: u64,
    pub restating: u64,
    pub held: u64,
    pub unknown_ad_clicks: u64,
    pub remembered_max: u64,
}

impl StatsSnapshot {
    /// Clicks read, whatever their verdict.
    pub fn read_total(&self) -> u64 {
        self.on_time + self.duplicates + self.restating + self.held
    }
}
