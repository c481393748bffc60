//! Counters the dataflow keeps about itself, shared by all workers of a process.
//!
//! They are reports, not results: exactly-once is checked by recounting the
//! input independently, never by these numbers.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::event::Key;

/// Unknown ad names kept for the report, at most.
pub const MAX_UNKNOWN_ADS_KEPT: usize = 1_000;

/// What the sources decided, summed over workers.
#[derive(Default, Debug)]
pub struct SourceStats {
    pub on_time: AtomicU64,
    pub duplicates: AtomicU64,
    pub restating: AtomicU64,
    pub held: AtomicU64,
    /// Clicks attributed to campaign `unknown` because the catalog lacks their ad.
    pub unknown_ad_clicks: AtomicU64,
    /// Request ids the dedup memories of all partitions hold now ...
    pub remembered: AtomicU64,
    /// ... and the most they have held at once.
    pub remembered_max: AtomicU64,
    /// Names of ads attributed to `unknown` (the first [`MAX_UNKNOWN_ADS_KEPT`]).
    pub unknown_ads: Mutex<BTreeSet<Key>>,
}

impl SourceStats {
    /// Adds one batch's verdict counts (on time, duplicate, restating,
    /// held) and the change of its partition's dedup memory.
    pub fn record(&self, counts: [u64; 4], remembered_change: i64) {
        self.on_time.fetch_add(counts[0], Relaxed);
        self.duplicates.fetch_add(counts[1], Relaxed);
        self.restating.fetch_add(counts[2], Relaxed);
        self.held.fetch_add(counts[3], Relaxed);
        let now = self.remembered.fetch_add(remembered_change as u64, Relaxed).wrapping_add(remembered_change as u64);
        self.remembered_max.fetch_max(now, Relaxed);
    }

    /// Notes clicks of an ad the catalog could not attribute.
    pub fn record_unknown(&self, ad: &Key, clicks: u64) {
        self.unknown_ad_clicks.fetch_add(clicks, Relaxed);
        let mut names = self.unknown_ads.lock().unwrap_or_else(|e| e.into_inner());
        if names.len() < MAX_UNKNOWN_ADS_KEPT && !names.contains(ad) {
            names.insert(ad.clone());
        }
    }

    /// Ads attributed to `unknown` so far (at most [`MAX_UNKNOWN_ADS_KEPT`]).
    pub fn unknown_ads(&self) -> Vec<Key> {
        self.unknown_ads.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
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
