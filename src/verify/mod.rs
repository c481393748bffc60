//! `tally verify`: an independent recount of the log, compared with what
//! the job committed to the store.
//!
//! The recount implements SEMANTICS.md from scratch and shares no code with
//! the dataflow (`src/dataflow/`), so that a bug in one is not silently
//! repeated by the other. It is deliberately plain: one partition at a time,
//! in offset order, with exact sets and ordered maps, clarity over speed
//! (about 2 s per million clicks on one core, most of it in the exact
//! distinct-user sets).
//!
//! Four steps, one module each:
//!
//! 1. [`mod@settings`]: the store's recorded settings against the job file
//!    and the catalog given; a store made under other counting settings or
//!    another catalog is refused, not compared.
//! 2. [`mod@judge`]: the fate of every click of a partition (duplicate, on
//!    time, too late and restating, too late and held), from the partition
//!    watermark and the dedup memory.
//! 3. [`mod@expected`]: the counted clicks into the totals of every window of
//!    every granularity and `group_by` key, and the too-late clicks into the
//!    late ledger.
//! 4. [`mod@compare`]: the recount against one snapshot of the store.
//!
//! # What is checked, and how exactly
//!
//! The recount reads every partition from the store's origin (the offsets
//! its first commit recorded, `store::settings::Origin`; 0 for a store that
//! records none) to the offsets of its last commit, with no progress and
//! empty dedup memory at the origin, as the job started, and compares on
//! the same snapshot. The log is read through a [`LogView`], so a recount
//! runs beside a job that owns the log. A too-late click
//! whose batch (its partition's watermark when read, rounded down to the
//! epoch) is at or past the committed epoch is pending in that commit
//! (SEMANTICS.md, "What a commit holds") and left out of rows and ledger.
//!
//! - **The newest version of every settled window** (the latest `final` or
//!   `restated` row) must hold the recount's totals of the window: every
//!   counted click, on time or too late and restating. `clicks` exactly;
//!   `distinct_users` within a tolerance (below).
//! - **The version history of every settled window** must be well formed:
//!   versions numbered 1, 2, … without gaps, version 1 `final` or
//!   `restated`, every later one `restated`, clicks never going down from
//!   one version to the next; and the latest row (what queries read) must
//!   be the newest version. How many versions a window went through, and
//!   what each intermediate one held, depends on when the frontier moved
//!   (the wall clock, in a live run), so they are not compared with the
//!   recount.
//! - **Windows that must be settled are**: a window the recount counts a
//!   click in, whose end plus `allowed_lateness` is at or below the store's
//!   committed epoch (the frontier of the last commit), must have a settled
//!   row. A settled window the recount counts no click in is a mismatch too.
//! - **The late ledger**: per key and 1m window, the request ids in the
//!   ledger must be those of the recount's too-late clicks (restating and
//!   held). The batch an entry was written in depends on timing and is not
//!   compared.
//! - `distinct_users` in the store is a HyperLogLog estimate; the recount
//!   knows the exact number of distinct *user keys* (the log holds keyed user
//!   hashes, never raw user ids, so distinct keys is what the sketch
//!   estimates). An estimate passes if it is within
//!   `max(2, 4 × 0.01625 × exact)` of the exact count: four standard errors
//!   of a dense sketch with 4096 registers (1.04/√4096 = 1.625 %), and at
//!   least ±2 for the sparse, near-exact range. See [`distinct_tolerance`].
//!   It is not checked at all when the job does not measure `distinct_users`.
//!
//! Not checked: windows still open (no settled row, and end plus
//! `allowed_lateness` beyond the committed epoch), and partial rows, which
//! are informative only (SEMANTICS.md).
//!
//! # What is assumed
//!
//! - The log still holds every partition from the origin on (else the
//!   recount refuses: retention deleted what it would need) and the store still
//!   holds every window the log's clicks fall in (rows retention is not
//!   taken into account).
//! - The catalog given is the one the last commit was made with (checked by
//!   fingerprint when the store records its settings; a store from before
//!   settings were recorded cannot be checked, and the report says so).
//!   Every window is recounted with this one catalog: if an earlier run
//!   used another, campaign and advertiser windows it settled may show as
//!   mismatches.

pub mod compare;
pub mod expected;
pub mod judge;
pub mod settings;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

use crate::catalog::Catalog;
use crate::event::salt::UserSalt;
use crate::event::{Click, EventTime, RequestId};
use crate::job::Job;
use crate::log::{LogError, LogView};
use crate::sources::kafka::KafkaTopic;
use crate::store::{versions, StoreError, StoreReader, StoreSnapshot, WindowKey};
use crate::telemetry::progress::{self, Amount, ProgressOptions, Work};

pub use compare::{compare, distinct_tolerance, Mismatch, MismatchKind, Report, SUMMARY_MISMATCH_LINES};
pub use expected::Totals;
pub use judge::{Fate, Rules};
pub use settings::CatalogFile;

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
    /// The job's settings cannot be recounted.
    #[error("verify: job setting {key}: {reason}")]
    Job { key: &'static str, reason: String },
    #[error("verify: the store has no committed epoch")]
    NothingCommitted,
    #[error("verify: the store's last commit has a checkpoint of partition {partition}, the log has {partitions} partitions")]
    CheckpointPartition { partition: u32, partitions: u32 },
    #[error("verify: {given} end offsets given, the log has {partitions} partitions")]
    EndsCount { given: usize, partitions: u32 },
    #[error("verify: {0}")]
    Kafka(String),
    #[error("verify: partition {partition}: end offset {end} is beyond the log's end offset {log_end}")]
    EndBeyondLog { partition: u32, end: u64, log_end: u64 },
    /// Retention deleted the start of a partition: it cannot be recounted
    /// from its origin, and a recount from elsewhere would not be exact.
    #[error("verify: partition {partition}: the log starts at offset {oldest}, a recount needs offset {origin}")]
    Retained { partition: u32, oldest: u64, origin: u64 },
    /// The store's origin is after its committed offset, or names other
    /// partitions than the log has.
    #[error("verify: the store's origin {0}")]
    Origin(String),
    #[error("verify: partition {partition}: the log ended at offset {offset}, before the end offset {end}")]
    ShortRead { partition: u32, offset: u64, end: u64 },
    /// The store's settings record cannot be read.
    #[error("verify: {0}")]
    Settings(String),
    /// The job file counts differently from the job that made the store.
    #[error(
        "verify: the store was committed with {key} = {stored}, the job file has {given}; verify with the job file the store was made with"
    )]
    Incompatible { key: &'static str, stored: String, given: String },
    /// The catalog given is not the one the store's last commit was made with.
    #[error("verify: {0}")]
    Catalog(String),
}

impl VerifyError {
    /// The status of [`crate::exit`]: a recount that cannot be made as
    /// asked is a usage error; the log, the store or Kafka failing is not.
    pub fn exit_code(&self) -> i32 {
        match self {
            VerifyError::Log(e) => e.exit_code(),
            VerifyError::Store(e) => e.exit_code(),
            VerifyError::Kafka(_) | VerifyError::ShortRead { .. } | VerifyError::Settings(_) => crate::exit::FAILED,
            _ => crate::exit::USAGE,
        }
    }
}

/// How the recount judged the clicks it read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecountStats {
    pub clicks_read: u64,
    pub duplicates: u64,
    pub on_time: u64,
    pub restating: u64,
    pub held: u64,
    /// Too-late clicks whose batch the committed epoch has not reached yet:
    /// committed as pending, not yet in rows or the ledger.
    pub pending: u64,
}

/// What the store must hold per SEMANTICS.md, for the clicks up to the end
/// offsets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recount {
    /// Per window with at least one counted click, its totals.
    windows: BTreeMap<WindowKey, Totals>,
    /// Per key and 1m window (`granularity_ms` 1m) with too-late clicks,
    /// their request ids.
    ledger: BTreeMap<WindowKey, BTreeSet<RequestId>>,
    stats: RecountStats,
    /// Whether the job measures `distinct_users` (else it is not compared).
    distinct_users: bool,
    allowed_lateness_ms: u64,
}

impl Recount {
    /// The totals of every window with at least one counted click.
    pub fn windows(&self) -> &BTreeMap<WindowKey, Totals> {
        &self.windows
    }

    /// The too-late request ids of every key and 1m window that has any.
    pub fn ledger(&self) -> &BTreeMap<WindowKey, BTreeSet<RequestId>> {
        &self.ledger
    }

    pub fn stats(&self) -> &RecountStats {
        &self.stats
    }
}

/// Recounts every partition of the log from offset 0 to `ends[p]`
/// (exclusive) per SEMANTICS.md, with the job's settings and catalog.
///
/// The clicks are read from the log's own partitions (the log's partition
/// count is authoritative, whatever `job.partitions` says). Without a
/// catalog every click counts under campaign and advertiser `unknown`.
pub fn recount(log: &dyn RecountLog, ends: &[u64], job: &Job, catalog: Option<&Catalog>) -> Result<Recount, VerifyError> {
    recount_through(log, &vec![0; ends.len()], ends, job, catalog, EventTime::MAX)
}

/// [`recount`] from `origin[p]` (each partition starting there with no
/// progress and empty dedup memory), as of a committed epoch: a too-late
/// click is applied (to rows and the ledger) in the batch of its
/// partition's watermark rounded down to the epoch, so one whose batch is
/// at or past `applied_below` is still pending in that commit and left out.
pub fn recount_through(
    log: &dyn RecountLog,
    origin: &[u64],
    ends: &[u64],
    job: &Job,
    catalog: Option<&Catalog>,
    applied_below: EventTime,
) -> Result<Recount, VerifyError> {
    let rules = Rules::of(job)?;
    check_ends(log, origin, ends)?;
    let mut counted = expected::Counted::default();
    let mut stats = RecountStats::default();
    let batches = Batches { epoch_ms: job.epoch_ms.max(1), applied_below };
    for (partition, (&start, &end)) in (0..).zip(origin.iter().zip(ends)) {
        recount_partition(log, partition, start..end, &rules, batches, &mut counted, &mut stats)?;
    }
    Ok(Recount {
        windows: expected::windows(&counted, job, catalog),
        ledger: expected::ledger(&counted, job, catalog),
        stats,
        distinct_users: job.distinct_users,
        allowed_lateness_ms: job.allowed_lateness_ms,
    })
}

/// `tally verify`: checks the store's settings against `job` and `catalog`,
/// recounts the log from the store's origin up to the offsets of its last
/// commit and compares, all on one snapshot of the store. The report lists
/// the first `show` mismatches in full, and shows the recount's progress.
pub fn verify(
    log: &dyn RecountLog,
    store: &dyn StoreReader,
    job: &Job,
    catalog: Option<&CatalogFile>,
    show: usize,
    progress: &ProgressOptions,
) -> Result<Report, VerifyError> {
    let snapshot = store.snapshot()?;
    let snapshot = snapshot.as_ref();
    let note = settings::check(snapshot, job, catalog.map(|c| &c.stamp))?;
    let ends = committed_ends(snapshot, log.partitions())?;
    let origin = versions::origin(snapshot, log.partitions()).map_err(VerifyError::Settings)?;
    if origin.offsets.len() != ends.len() {
        return Err(VerifyError::Origin(format!("lists {} partitions, the log has {}", origin.offsets.len(), ends.len())));
    }
    let applied_below = snapshot.committed_epoch()?.unwrap_or(0);
    let total = ends.iter().zip(&origin.offsets).map(|(end, from)| end.saturating_sub(*from)).sum();
    let read = AtomicU64::new(0);
    let counted = Counted { log, read: &read };
    let recount = progress::show(
        progress,
        Work { unit: "clicks", total: Some(total) },
        || Amount::items(read.load(Ordering::Relaxed)),
        || recount_through(&counted, &origin.offsets, &ends, job, catalog.map(|c| &c.catalog), applied_below),
    )?;
    let mut report = compare(&recount, snapshot, show)?;
    report.notes.extend(note);
    Ok(report)
}

/// The offsets of the last commit, per partition of a log of `partitions`
/// (0 for a partition never checkpointed).
pub fn committed_ends(snapshot: &dyn StoreSnapshot, partitions: u32) -> Result<Vec<u64>, VerifyError> {
    let committed = snapshot.last_committed()?.ok_or(VerifyError::NothingCommitted)?;
    let mut ends = vec![0; partitions as usize];
    for checkpoint in &committed.partitions {
        let end = ends.get_mut(checkpoint.partition as usize);
        *end.ok_or(VerifyError::CheckpointPartition { partition: checkpoint.partition, partitions })? = checkpoint.offset;
    }
    Ok(ends)
}

fn check_ends(log: &dyn RecountLog, origin: &[u64], ends: &[u64]) -> Result<(), VerifyError> {
    if ends.len() != log.partitions() as usize || origin.len() != ends.len() {
        return Err(VerifyError::EndsCount { given: ends.len(), partitions: log.partitions() });
    }
    let (starts, log_ends) = (log.start_offsets(), log.end_offsets());
    for (partition, ((&end, &log_end), (&oldest, &origin))) in (0..).zip(ends.iter().zip(&log_ends).zip(starts.iter().zip(origin))) {
        if end > log_end {
            return Err(VerifyError::EndBeyondLog { partition, end, log_end });
        }
        if origin > end {
            return Err(VerifyError::Origin(format!("of partition {partition}, offset {origin}, is past its committed offset {end}")));
        }
        if end > origin && oldest > origin {
            return Err(VerifyError::Retained { partition, oldest, origin });
        }
    }
    Ok(())
}

/// Judges the clicks of one partition in offset order and keeps the counted
/// and the too-late ones. The dedup memory lives only as long as the
/// partition is read.
/// Which too-late batches a commit has applied.
#[derive(Clone, Copy)]
struct Batches {
    epoch_ms: u64,
    applied_below: EventTime,
}

fn recount_partition(
    log: &dyn RecountLog,
    partition: u32,
    range: std::ops::Range<u64>,
    rules: &Rules,
    batches: Batches,
    counted: &mut expected::Counted,
    stats: &mut RecountStats,
) -> Result<(), VerifyError> {
    if range.is_empty() {
        return Ok(());
    }
    let end = range.end;
    let mut judge = judge::PartitionJudge::new(*rules);
    log.read_partition(partition, range.start, end, &mut |batch| {
        for click in batch {
            stats.clicks_read += 1;
            let watermark = judge.watermark();
            let fate = judge.judge(click);
            let batch = watermark - watermark % batches.epoch_ms;
            if matches!(fate, Fate::Restating | Fate::Held) && batch >= batches.applied_below {
                stats.pending += 1;
                continue;
            }
            match fate {
                Fate::Duplicate => stats.duplicates += 1,
                Fate::OnTime => {
                    stats.on_time += 1;
                    counted.count(click);
                }
                Fate::Restating => {
                    stats.restating += 1;
                    counted.count(click);
                    counted.late(click);
                }
                Fate::Held => {
                    stats.held += 1;
                    counted.late(click);
                }
            }
        }
    })
}

/// A log the recount reads: the embedded log, or a Kafka topic.
pub trait RecountLog {
    fn partitions(&self) -> u32;
    /// The first offset still in each partition.
    fn start_offsets(&self) -> Vec<u64>;
    fn end_offsets(&self) -> Vec<u64>;
    /// Hands the clicks of `partition` at offsets `from..end` to `each`, in
    /// offset order, in batches.
    fn read_partition(&self, partition: u32, from: u64, end: u64, each: &mut dyn FnMut(&[Click])) -> Result<(), VerifyError>;
}

impl RecountLog for LogView {
    fn partitions(&self) -> u32 {
        LogView::partitions(self)
    }

    fn start_offsets(&self) -> Vec<u64> {
        LogView::start_offsets(self)
    }

    fn end_offsets(&self) -> Vec<u64> {
        LogView::end_offsets(self)
    }

    fn read_partition(&self, partition: u32, from: u64, end: u64, each: &mut dyn FnMut(&[Click])) -> Result<(), VerifyError> {
        let mut reader = self.reader(partition, from)?;
        let mut batch = Vec::with_capacity(READ_BATCH_CLICKS);
        while reader.offset() < end {
            batch.clear();
            let want = (end - reader.offset()).min(READ_BATCH_CLICKS as u64) as usize;
            if reader.read(&mut batch, want)? == 0 {
                return Err(VerifyError::ShortRead { partition, offset: reader.offset(), end });
            }
            each(&batch);
        }
        Ok(())
    }
}

/// A log whose clicks read are counted, for the progress of a recount.
struct Counted<'a> {
    log: &'a dyn RecountLog,
    read: &'a AtomicU64,
}

impl RecountLog for Counted<'_> {
    fn partitions(&self) -> u32 {
        self.log.partitions()
    }

    fn start_offsets(&self) -> Vec<u64> {
        self.log.start_offsets()
    }

    fn end_offsets(&self) -> Vec<u64> {
        self.log.end_offsets()
    }

    fn read_partition(&self, partition: u32, from: u64, end: u64, each: &mut dyn FnMut(&[Click])) -> Result<(), VerifyError> {
        self.log.read_partition(partition, from, end, &mut |batch| {
            self.read.fetch_add(batch.len() as u64, Ordering::Relaxed);
            each(batch)
        })
    }
}

/// A Kafka topic as the recount reads it: its records from `from` up to
/// `end`, messages decoded as the job decodes them (a raw `user_id` hashed
/// with `salt`), records that are not clicks skipped.
pub struct KafkaRecount {
    pub topic: KafkaTopic,
    pub salt: UserSalt,
    bounds: (Vec<u64>, Vec<u64>),
}

impl KafkaRecount {
    pub fn new(topic: KafkaTopic, salt: UserSalt) -> Result<KafkaRecount, String> {
        let bounds = topic.bounds()?;
        Ok(KafkaRecount { topic, salt, bounds })
    }
}

impl RecountLog for KafkaRecount {
    fn partitions(&self) -> u32 {
        self.topic.partitions
    }

    fn start_offsets(&self) -> Vec<u64> {
        self.bounds.0.clone()
    }

    fn end_offsets(&self) -> Vec<u64> {
        self.bounds.1.clone()
    }

    fn read_partition(&self, partition: u32, from: u64, end: u64, each: &mut dyn FnMut(&[Click])) -> Result<(), VerifyError> {
        use crate::dataflow::{PartitionReader, ReadStatus};
        if from >= end {
            return Ok(());
        }
        let mut reader = self.topic.reader("tally-verify", partition, from, Some(end), self.salt).map_err(VerifyError::Kafka)?;
        let mut batch = Vec::with_capacity(READ_BATCH_CLICKS);
        let mut idle = 0;
        loop {
            batch.clear();
            let status = reader.read(&mut batch, READ_BATCH_CLICKS);
            each(&batch);
            if status == ReadStatus::Finished {
                return Ok(());
            }
            idle = if batch.is_empty() { idle + 1 } else { 0 };
            if idle > 2_000 {
                let offset = reader.position().unwrap_or(from);
                return Err(VerifyError::ShortRead { partition, offset, end });
            }
        }
    }
}
