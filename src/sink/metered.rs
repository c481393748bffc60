//! A sink that reports its epoch commits to the job's telemetry: how long
//! stage and commit took together, the rows by status, the partitions'
//! committed offsets and watermarks, and failures. What it reports is
//! recorded only once the commit succeeded.
//!
//! It also logs them: each commit as a debug event, a commit slower than
//! [`SLOW_COMMIT_MS`] as a warning, and in a live run, every
//! [`LAG_CHECK_EVERY`], partitions whose committed offset trails the log's
//! end by more than [`LAG_WARN_CLICKS`] (a bounded run reads a range of a
//! log that may go on past it, so its lag says nothing).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Epoch, EpochBatch, Sink, SinkError};
use crate::row::Status;
use crate::telemetry::{CommitStats, PartitionPosition};

/// A commit (stage and commit) that takes longer is logged as a warning:
/// the store is slow or overloaded, and a job whose commits take longer
/// than its epoch falls behind.
pub const SLOW_COMMIT_MS: u64 = 5_000;
/// A partition whose committed offset trails the log's end by more clicks
/// is logged as lagging.
pub const LAG_WARN_CLICKS: u64 = 1_000_000;
/// How often a live run compares its committed offsets with the log's end
/// (for a Kafka topic, a request to a broker).
pub const LAG_CHECK_EVERY: Duration = Duration::from_secs(30);

/// `inner`, reporting to `stats`; `clock` gives the wall time (unix ms).
pub struct MeteredSink {
    inner: Box<dyn Sink + Send>,
    stats: Arc<CommitStats>,
    clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// What the epoch being committed staged: since when, its rows'
    /// statuses and its partitions' positions.
    staged: Option<(Instant, Vec<&'static str>, Vec<PartitionPosition>)>,
    /// When the lag was last checked; `None`: never (a bounded run).
    lag_checked: Option<Instant>,
}

impl MeteredSink {
    /// `live`: the run has no end, and its lag is watched.
    pub fn new(inner: Box<dyn Sink + Send>, stats: Arc<CommitStats>, clock: Arc<dyn Fn() -> u64 + Send + Sync>, live: bool) -> MeteredSink {
        MeteredSink { inner, stats, clock, staged: None, lag_checked: live.then(Instant::now) }
    }

    /// Warns of partitions lagging by more than [`LAG_WARN_CLICKS`], at
    /// most once every [`LAG_CHECK_EVERY`].
    fn check_lag(&mut self) {
        if self.lag_checked.is_none_or(|checked| checked.elapsed() < LAG_CHECK_EVERY) {
            return;
        }
        self.lag_checked = Some(Instant::now());
        let lagging = self.stats.lagging(LAG_WARN_CLICKS);
        if lagging.is_empty() {
            return;
        }
        let behind: Vec<String> = lagging.iter().map(|(partition, lag)| format!("{partition}:{lag}")).collect();
        tracing::warn!(
            "lag: the committed offsets of partitions trail the log's end by more than {LAG_WARN_CLICKS} clicks \
             (partition:clicks {}): the job is not keeping up with its input",
            behind.join(",")
        );
    }

    fn failed<T>(&mut self, result: Result<T, SinkError>) -> Result<T, SinkError> {
        if result.is_err() {
            self.staged = None;
            self.stats.failed();
        }
        result
    }
}

impl Sink for MeteredSink {
    fn stage(&mut self, epoch: Epoch, batch: &EpochBatch) -> Result<(), SinkError> {
        let started = Instant::now();
        let result = self.inner.stage(epoch, batch);
        let statuses = batch.rows.iter().map(|row| row.status.as_str()).collect();
        let positions = batch
            .checkpoints
            .values()
            .map(|c| PartitionPosition { partition: c.partition, offset: c.offset, watermark_ms: c.max_ts })
            .collect();
        self.staged = Some((started, statuses, positions));
        self.failed(result)
    }

    fn commit(&mut self, epoch: Epoch) -> Result<(), SinkError> {
        let result = self.inner.commit(epoch);
        let result = self.failed(result);
        if let (Ok(()), Some((started, statuses, positions))) = (&result, self.staged.take()) {
            let took = started.elapsed();
            log_commit(epoch, took, &statuses);
            self.stats.committed(epoch.0, took.as_secs_f64(), statuses, &positions, (self.clock)());
            self.check_lag();
        }
        result
    }
}

/// The debug event of a commit, and a warning if it was slow.
fn log_commit(epoch: Epoch, took: Duration, statuses: &[&'static str]) {
    let rows = |status: Status| statuses.iter().filter(|&&s| s == status.as_str()).count();
    let duration_ms = took.as_millis() as u64;
    tracing::debug!(
        epoch = epoch.0,
        rows_final = rows(Status::Final),
        rows_partial = rows(Status::Partial),
        rows_restated = rows(Status::Restated),
        duration_ms,
        "epoch committed"
    );
    if duration_ms > SLOW_COMMIT_MS {
        tracing::warn!(
            "epoch {} took {duration_ms} ms to stage and commit, more than {SLOW_COMMIT_MS} ms: the store is slow or overloaded",
            epoch.0
        );
    }
}
