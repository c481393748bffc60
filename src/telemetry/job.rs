//! What the job's sources decided about each click, summed over the
//! workers of a process: `tally_job_clicks_total{verdict}` and the dedup
//! memory.
//!
//! They are reports, not results: exactly-once is checked by recounting the
//! input independently, never by these numbers.

use std::collections::BTreeSet;
use std::sync::Mutex;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

use super::{register, MetricError, Registry};
use crate::event::Key;

/// Unknown ad names kept for the report, at most.
pub const MAX_UNKNOWN_ADS_KEPT: usize = 1_000;

/// The verdicts of the sources, as `tally_job_clicks_total` labels them.
pub const VERDICTS: [&str; 4] = ["on_time", "duplicate", "restating", "held"];

/// What the sources decided, summed over workers.
#[derive(Debug)]
pub struct SourceStats {
    /// By verdict, in [`VERDICTS`] order.
    verdicts: IntCounterVec,
    by_verdict: [IntCounter; 4],
    /// Clicks attributed to campaign `unknown` because the catalog lacks their ad.
    unknown_ad_clicks: IntCounter,
    /// Request ids the dedup memories of all partitions hold now ...
    remembered: IntGauge,
    /// ... and the most they have held at once.
    remembered_max: IntGauge,
    /// Names of ads attributed to `unknown` (the first [`MAX_UNKNOWN_ADS_KEPT`]).
    unknown_ads: Mutex<BTreeSet<Key>>,
}

impl Default for SourceStats {
    fn default() -> SourceStats {
        let verdicts = IntCounterVec::new(
            Opts::new(
                "tally_job_clicks_total",
                "Clicks the job read, by its verdict: on_time, duplicate (dropped), restating or held (late)",
            ),
            &["verdict"],
        )
        .unwrap_or_else(|e| unreachable!("a valid metric: {e}"));
        let by_verdict = VERDICTS.map(|v| verdicts.with_label_values(&[v]));
        SourceStats {
            verdicts,
            by_verdict,
            unknown_ad_clicks: counter(
                "tally_job_unknown_ad_clicks_total",
                "Clicks attributed to campaign `unknown`: their ad is not in the catalog",
            ),
            remembered: gauge("tally_job_remembered_request_ids", "Request ids the dedup memories of all partitions hold now"),
            remembered_max: gauge("tally_job_remembered_request_ids_max", "The most request ids the dedup memories have held at once"),
            unknown_ads: Mutex::new(BTreeSet::new()),
        }
    }
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("a valid metric: {e}"))
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("a valid metric: {e}"))
}

impl SourceStats {
    /// Adds one batch's verdict counts (on time, duplicate, restating,
    /// held) and the change of its partition's dedup memory.
    pub fn record(&self, counts: [u64; 4], remembered_change: i64) {
        for (counter, n) in self.by_verdict.iter().zip(counts) {
            if n > 0 {
                counter.inc_by(n);
            }
        }
        if remembered_change != 0 {
            self.remembered.add(remembered_change);
            let now = self.remembered.get();
            if now > self.remembered_max.get() {
                self.remembered_max.set(now);
            }
        }
    }

    /// Notes clicks of an ad the catalog could not attribute.
    pub fn record_unknown(&self, ad: &Key, clicks: u64) {
        self.unknown_ad_clicks.inc_by(clicks);
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
        let [on_time, duplicates, restating, held] = self.by_verdict.each_ref().map(IntCounter::get);
        StatsSnapshot {
            on_time,
            duplicates,
            restating,
            held,
            unknown_ad_clicks: self.unknown_ad_clicks.get(),
            remembered_max: self.remembered_max.get().max(0) as u64,
        }
    }

    /// Adds these figures to `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), MetricError> {
        register(registry, &self.verdicts)?;
        register(registry, &self.unknown_ad_clicks)?;
        register(registry, &self.remembered)?;
        register(registry, &self.remembered_max)
    }
}

/// A plain copy of [`SourceStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

    /// Adds another process's figures. The processes' dedup memories peak
    /// at different times, so the sum of their peaks is a bound (at most),
    /// as the report says.
    pub fn add(&mut self, other: &StatsSnapshot) {
        self.on_time += other.on_time;
        self.duplicates += other.duplicates;
        self.restating += other.restating;
        self.held += other.held;
        self.unknown_ad_clicks += other.unknown_ad_clicks;
        self.remembered_max += other.remembered_max;
    }
}
