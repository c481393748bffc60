//! `tally verify`: an independent recount of the log, compared with the rows
//! the job committed to the store.
//!
//! The recount implements SEMANTICS.md from scratch and shares no code with
//! the dataflow (`src/dataflow/`), so that a bug in one is not silently
//! repeated by the other. It is deliberately plain: one partition at a time,
//! in offset order, with exact sets and ordered maps, clarity over speed
//! (about 2 s per million clicks on one core, most of it in the exact
//! distinct-user sets).
//!
//! Three steps, one module each:
//!
//! 1. [`mod@judge`]: the fate of every click of a partition (duplicate, on time,
//!    too late and restating in batch `tau`, too late and held), from the
//!    partition watermark and the dedup memory.
//! 2. [`mod@expected`]: the counted clicks into windows of every granularity and
//!    `group_by` key, and each window into its expected versions: the final
//!    row (version 1) and one restated row per later batch.
//! 3. [`mod@compare`]: every expected version against the store's version history
//!    and every stored final/restated version against the recount.
//!
//! # What is checked, and how exactly
//!
//! - `clicks`, `status` and `version` must match exactly.
//! - `distinct_users` in the store is a HyperLogLog estimate; the recount
//!   knows the exact number of distinct *user keys* (the log holds keyed user
//!   hashes, never raw user ids, so distinct keys is what the sketch
//!   estimates). An estimate passes if it is within
//!   `max(2, 4 × 0.01625 × exact)` of the exact count: four standard errors
//!   of a dense sketch with 4096 registers (1.04/√4096 = 1.625 %), and at
//!   least ±2 for the sparse, near-exact range. See [`distinct_tolerance`].
//!   It is not checked at all when the job does not measure `distinct_users`.
//! - Partial rows are informative only (SEMANTICS.md) and are not checked.
//!
//! # What is assumed
//!
//! The recount treats `ends` as the end of the input: every window it sees
//! is expected to be settled. Verifying a bounded run after it finished is
//! exact; verifying a live job flags the windows it has not closed yet as
//! missing. The recount also never raises a partition's idle floor (a bounded
//! replay from offset 0 has no idle partitions in the contract's sense), so
//! a live run whose floor moved may legitimately differ.

pub mod compare;
pub mod expected;
pub mod judge;

use std::collections::BTreeMap;

use thiserror::Error;

use crate::catalog::Catalog;
use crate::job::Job;
use crate::log::{Log, LogError};
use crate::row::Row;
use crate::store::{StoreError, WindowKey};

pub use compare::{compare, distinct_tolerance, Mismatch, Report, MAX_MISMATCHES_KEPT, SUMMARY_MISMATCH_LINES};
pub use expected::ExpectedVersion;
pub use judge::{Fate, Rules};

/// Clicks read from a partition per [`crate::log::LogReader::read`] call.
const READ_BATCH_CLICKS: usize = 64 * 1024;

/// Why a verification could not run (mismatches are not errors: they are
/// the [`Report`]).
#[derive(Debug, Error)]
pub enum VerifyError {
    #[error("verify: {0}")]
    Log(#[from] LogError),
    #[error("verify: {0}")]
    Store(#[from] StoreError),
    /// The job's settings cannot be recounted (they would divide by zero).
    #[error("verify: job setting {key}: {reason}")]
    Job { key: &'static str, reason: String },
    #[error("verify: {given} end offsets given, the log has {partitions} partitions")]
    EndsCount { given: usize, partitions: u32 },
    #[error("verify: partition {partition}: end offset {end} is beyond the log's end offset {log_end}")]
    EndBeyondLog { partition: u32, end: u64, log_end: u64 },
    /// Retention deleted the start of a partition: it cannot be recounted
    /// from offset 0, and a recount from elsewhere would not be exact.
    #[error("verify: partition {partition}: the log starts at offset {oldest}, a recount needs offset 0")]
    Retained { partition: u32, oldest: u64 },
    #[error("verify: partition {partition}: the log ended at offset {offset}, before the end offset {end}")]
    ShortRead { partition: u32, offset: u64, end: u64 },
}

/// How the recount judged the clicks it read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecountStats {
    pub clicks_read: u64,
    pub duplicates: u64,
    pub on_time: u64,
    pub restating: u64,
    pub held: u64,
}

/// The expected final and restated versions of every window, per
/// SEMANTICS.md.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recount {
    /// Per window, its versions in version order (never empty).
    windows: BTreeMap<WindowKey, Vec<ExpectedVersion>>,
    stats: RecountStats,
    /// Whether the job measures `distinct_users` (else it is not compared).
    distinct_users: bool,
}

impl Recount {
    /// Number of windows with at least one expected version.
    pub fn windows(&self) -> usize {
        self.windows.len()
    }

    pub fn stats(&self) -> &RecountStats {
        &self.stats
    }

    /// The expected versions of one window, oldest first; empty if the
    /// window has none.
    pub fn versions(&self, window: &WindowKey) -> &[ExpectedVersion] {
        self.windows.get(window).map_or(&[], Vec::as_slice)
    }

    /// Every expected version as a row, by window then version;
    /// `distinct_users` is the exact count.
    pub fn rows(&self) -> Vec<Row> {
        let rows = self.windows.iter().flat_map(|(window, versions)| versions.iter().map(move |v| v.row(window)));
        rows.collect()
    }
}

/// Recounts every partition of the log from offset 0 to `ends[p]`
/// (exclusive) per SEMANTICS.md, with the job's settings and catalog.
///
/// The clicks are read from the log's own partitions (the log's partition
/// count is authoritative, whatever `job.partitions` says). Without a
/// catalog every click counts under campaign and advertiser `unknown`.
pub fn recount(log: &Log, ends: &[u64], job: &Job, catalog: Option<&Catalog>) -> Result<Recount, VerifyError> {
    let rules = Rules::of(job)?;
    check_ends(log, ends)?;
    let mut counted = expected::Counted::default();
    let mut stats = RecountStats::default();
    for (partition, &end) in (0..).zip(ends) {
        recount_partition(log, partition, end, &rules, &mut counted, &mut stats)?;
    }
    let windows = expected::windows(&counted, job, catalog);
    Ok(Recount { windows, stats, distinct_users: job.distinct_users })
}

fn check_ends(log: &Log, ends: &[u64]) -> Result<(), VerifyError> {
    if ends.len() != log.partitions() as usize {
        return Err(VerifyError::EndsCount { given: ends.len(), partitions: log.partitions() });
    }
    let (starts, log_ends) = (log.start_offsets(), log.end_offsets());
    for (partition, ((&end, &log_end), &oldest)) in (0..).zip(ends.iter().zip(&log_ends).zip(&starts)) {
        if end > log_end {
            return Err(VerifyError::EndBeyondLog { partition, end, log_end });
        }
        if end > 0 && oldest > 0 {
            return Err(VerifyError::Retained { partition, oldest });
        }
    }
    Ok(())
}

/// Judges the clicks of one partition in offset order and keeps the counted
/// ones. The dedup memory lives only as long as the partition is read.
fn recount_partition(
    log: &Log,
    partition: u32,
    end: u64,
    rules: &Rules,
    counted: &mut expected::Counted,
    stats: &mut RecountStats,
) -> Result<(), VerifyError> {
    let mut judge = judge::PartitionJudge::new(*rules);
    let mut reader = log.reader(partition, 0)?;
    let mut batch = Vec::with_capacity(READ_BATCH_CLICKS);
    while reader.offset() < end {
        batch.clear();
        let want = (end - reader.offset()).min(READ_BATCH_CLICKS as u64) as usize;
        if reader.read(&mut batch, want)? == 0 {
            return Err(VerifyError::ShortRead { partition, offset: reader.offset(), end });
        }
        for click in &batch {
            stats.clicks_read += 1;
            match judge.judge(click) {
                Fate::Duplicate => stats.duplicates += 1,
                Fate::Held => stats.held += 1,
                Fate::OnTime => {
                    stats.on_time += 1;
                    counted.push(click, None);
                }
                Fate::Restating { tau } => {
                    stats.restating += 1;
                    counted.push(click, Some(tau));
                }
            }
        }
    }
    Ok(())
}
