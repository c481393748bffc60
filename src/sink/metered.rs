//! A sink that reports its epoch commits to the job's telemetry: how long
//! stage and commit took together, the rows by status, the partitions'
//! committed offsets and watermarks, and failures. What it reports is
//! recorded only once the commit succeeded.

use std::sync::Arc;
use std::time::Instant;

use super::{Epoch, EpochBatch, Sink, SinkError};
use crate::telemetry::{CommitStats, PartitionPosition};

/// `inner`, reporting to `stats`; `clock` gives the wall time (unix ms).
pub struct MeteredSink {
    inner: Box<dyn Sink>,
    stats: Arc<CommitStats>,
    clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// What the epoch being committed staged: since when, its rows'
    /// statuses and its partitions' positions.
    staged: Option<(Instant, Vec<&'static str>, Vec<PartitionPosition>)>,
}

impl MeteredSink {
    pub fn new(inner: Box<dyn Sink>, stats: Arc<CommitStats>, clock: Arc<dyn Fn() -> u64 + Send + Sync>) -> MeteredSink {
        MeteredSink { inner, stats, clock, staged: None }
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
            self.stats.committed(epoch.0, started.elapsed().as_secs_f64(), statuses, &positions, (self.clock)());
        }
        result
    }
}
