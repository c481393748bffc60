//! The job's epoch commits as an operator watches them: how long each
//! takes, which fail, the rows they write by status, how far the committed
//! frontier trails the wall clock, and per partition the committed offset,
//! its watermark, the log's end and the lag between them.

use std::sync::{Arc, Mutex};

use prometheus::{Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts};

use super::{register, MetricError, Registry};

/// Bounds of the commit-duration buckets, seconds: from a local fsync to a
/// Cassandra commit under load.
const COMMIT_BUCKETS_S: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Reads the log's end offset of every partition (`None`: not known now).
pub type EndOffsets = Arc<dyn Fn() -> Option<Vec<u64>> + Send + Sync>;

/// What a job's commits report.
pub struct CommitStats {
    duration: Histogram,
    failures: IntCounter,
    rows: IntCounterVec,
    committed_epoch: Gauge,
    frontier_delay: Gauge,
    committed_offset: IntGaugeVec,
    watermark: GaugeVec,
    end_offset: IntGaugeVec,
    lag: IntGaugeVec,
    /// Committed offset per partition, for the lag.
    committed: Mutex<Vec<Option<u64>>>,
    end_offsets: Mutex<Option<EndOffsets>>,
    /// Told each committed offset, when ingest runs in this process too.
    freshness: super::FreshnessHook,
}

impl std::fmt::Debug for CommitStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitStats").field("failures", &self.failures.get()).finish_non_exhaustive()
    }
}

/// One partition's position in an epoch commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionPosition {
    pub partition: u32,
    /// The next offset the job reads.
    pub offset: u64,
    /// The highest event time read, unix ms.
    pub watermark_ms: u64,
}

fn valid<T>(made: prometheus::Result<T>) -> T {
    made.unwrap_or_else(|e| unreachable!("a valid metric: {e}"))
}

impl Default for CommitStats {
    fn default() -> CommitStats {
        let partition = |name: &str, help: &str| valid(IntGaugeVec::new(Opts::new(name, help), &["partition"]));
        CommitStats {
            duration: valid(Histogram::with_opts(
                HistogramOpts::new("tally_epoch_commit_duration_seconds", "Time to stage and commit one epoch")
                    .buckets(COMMIT_BUCKETS_S.to_vec()),
            )),
            failures: valid(IntCounter::new("tally_epoch_commit_failures_total", "Epoch commits that failed (the job stops at the first)")),
            rows: valid(IntCounterVec::new(Opts::new("tally_rows_written_total", "Window rows committed, by status"), &["status"])),
            committed_epoch: valid(Gauge::new(
                "tally_committed_epoch_seconds",
                "The last committed epoch: the event-time frontier, unix seconds",
            )),
            frontier_delay: valid(Gauge::new(
                "tally_frontier_delay_seconds",
                "How far the last committed frontier was behind the wall clock when it committed",
            )),
            committed_offset: partition("tally_partition_committed_offset", "The next offset of the partition the last commit reads from"),
            watermark: valid(GaugeVec::new(
                Opts::new(
                    "tally_partition_watermark_seconds",
                    "The highest event time the last commit read of the partition, unix seconds",
                ),
                &["partition"],
            )),
            end_offset: partition("tally_partition_end_offset", "The log's end offset of the partition"),
            lag: partition("tally_partition_lag", "Clicks in the partition's log past its committed offset"),
            committed: Mutex::new(Vec::new()),
            end_offsets: Mutex::new(None),
            freshness: super::FreshnessHook::default(),
        }
    }
}

impl CommitStats {
    /// An epoch `epoch_ms` committed after `seconds`, with `rows` (status
    /// labels) and the positions of its partitions, at wall time `now_ms`.
    pub fn committed<'a>(
        &self,
        epoch_ms: u64,
        seconds: f64,
        rows: impl IntoIterator<Item = &'static str>,
        positions: impl IntoIterator<Item = &'a PartitionPosition>,
        now_ms: u64,
    ) {
        self.duration.observe(seconds);
        for status in rows {
            self.rows.with_label_values(&[status]).inc();
        }
        self.committed_epoch.set(epoch_ms as f64 / 1e3);
        self.frontier_delay.set(now_ms.saturating_sub(epoch_ms) as f64 / 1e3);
        let mut committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        for position in positions {
            let label = position.partition.to_string();
            self.committed_offset.with_label_values(&[&label]).set(position.offset as i64);
            self.watermark.with_label_values(&[&label]).set(position.watermark_ms as f64 / 1e3);
            let index = position.partition as usize;
            if committed.len() <= index {
                committed.resize(index + 1, None);
            }
            committed[index] = Some(position.offset);
            if let Some(freshness) = self.freshness.get() {
                freshness.committed(position.partition, position.offset, now_ms);
            }
        }
    }

    /// Tells `freshness` each committed offset from now on.
    pub fn track_freshness(&self, freshness: Arc<super::Freshness>) {
        self.freshness.set(freshness);
    }

    /// An epoch commit failed.
    pub fn failed(&self) {
        self.failures.inc();
    }

    /// Where the end offsets of the job's log are read, at each scrape.
    pub fn watch_end_offsets(&self, read: EndOffsets) {
        *self.end_offsets.lock().unwrap_or_else(|e| e.into_inner()) = Some(read);
    }

    /// Reads the end offsets now and sets the end and lag of each partition.
    pub fn refresh(&self) {
        self.lags();
    }

    /// [`CommitStats::refresh`], then the partitions whose lag is more than
    /// `max_lag` clicks, with their lag.
    pub fn lagging(&self, max_lag: u64) -> Vec<(u32, u64)> {
        self.lags().into_iter().filter(|&(_, lag)| lag > max_lag).collect()
    }

    /// Reads the end offsets now, sets the end and lag of each partition,
    /// and returns the lags known (a partition's is known from its first
    /// commit on).
    fn lags(&self) -> Vec<(u32, u64)> {
        let read = self.end_offsets.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(ends) = read.and_then(|read| read()) else { return Vec::new() };
        let committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        let mut lags = Vec::new();
        for (partition, end) in (0..).zip(ends) {
            let label = partition.to_string();
            self.end_offset.with_label_values(&[&label]).set(end as i64);
            if let Some(from) = committed.get(partition as usize).copied().flatten() {
                let lag = end.saturating_sub(from);
                self.lag.with_label_values(&[&label]).set(lag as i64);
                lags.push((partition, lag));
            }
        }
        lags
    }

    /// Adds these figures to `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), MetricError> {
        register(registry, &self.duration)?;
        register(registry, &self.failures)?;
        register(registry, &self.rows)?;
        register(registry, &self.committed_epoch)?;
        register(registry, &self.frontier_delay)?;
        register(registry, &self.committed_offset)?;
        register(registry, &self.watermark)?;
        register(registry, &self.end_offset)?;
        register(registry, &self.lag)
    }
}
