//! The embedded log: a durable, partitioned, append-only log of [`Click`]s,
//! the single-machine stand-in for Kafka between ingest and the job.
//!
//! ```text
//! dir/meta                                format version + partition count
//! dir/p-0003/00000000000000000000.seg     segments of partition 3, named by base offset
//! dir/p-0003/00000000000000004711.seg     (the last one is active)
//! ```
//!
//! A click goes to partition [`partition_of`]`(request_id, partitions)`, so a
//! retry lands with its original. Offsets are record indexes within a
//! partition: 0-based, contiguous, and never reused for another visible
//! record. Records are framed with a length and a CRC32C ([`record`]).
//!
//! # Durability contract
//!
//! - [`Log::append`] returns `Ok` only after every record it wrote is
//!   fsynced (`fdatasync` of the segment file; a new segment file is also
//!   made durable by fsyncing its directory). A crash loses nothing that was
//!   acknowledged. An append that returned an error, or never returned, may
//!   be absent, partly present or wholly present after a restart: the caller
//!   retries it and the job's dedup by request id absorbs the repeat.
//! - Concurrent appends share fsyncs (group commit, `group.rs`): one write
//!   and one fsync per partition per batch, however many appends it holds.
//! - Readers ([`LogReader`]) and [`Log::end_offsets`] see only fsynced
//!   records, so nothing a reader has seen can be lost.
//! - [`Log::open`] checks every record of every segment. A torn tail (an
//!   unacknowledged partial or bad record at the end of the last segment,
//!   with no intact record after it) is truncated and listed in
//!   [`Log::recovery`]; any other damage fails the open with the partition,
//!   segment file and offset. Nothing is skipped silently.
//! - After a failed write or fsync a partition takes no more appends until
//!   the log is reopened ([`LogError::Failed`]).
//!
//! [`LogView`] reads a log without owning it (a backfill or a recount
//! beside a running job): a snapshot of its durable records, see `view.rs`.
//!
//! One case is refused rather than guessed: if a crash persists a later page
//! of an unacknowledged batch but not an earlier one, the tail holds a bad
//! record followed by intact ones. The log cannot tell that from corruption
//! of acknowledged data without more on-disk state, so the open fails with
//! the offset, and an operator decides (truncating there loses only
//! unacknowledged records if the damage is in the last batch).
//!
//! # Retention
//!
//! [`Log::enforce_retention`] deletes closed segments whose newest *event
//! time* (computed from the records, kept in memory, independent of file
//! times) is older than `retention_ms`, oldest first, stopping at the first
//! segment to keep. The active segment is never deleted, nor is a segment
//! holding an offset the job still needs: the caller passes, per
//! partition, the first offset it will read again (the lesser of its
//! committed offset and its dedup replay offset; 0 before its first
//! commit), so that age alone never takes away what a restart re-reads.
//! Event time is the client's clock: a click stamped far in the future
//! keeps its segment (and the ones after it) until then. Retention runs
//! where the job runs (`run.rs`, at start), with the job's offsets; appends
//! (`tally log import`, ingest) never delete anything.
//!
//! # Limits and costs
//!
//! Open scans every segment (reads the whole log once); the per-segment
//! sparse index ([`segment::INDEX_INTERVAL_RECORDS`]) and newest event times
//! are rebuilt by that scan and never stored. Each partition keeps its
//! active segment file open. One process at a time has a log open: `open`
//! takes an exclusive lock on `dir/LOCK` ([`LogError::Locked`] names the
//! holder's pid), so a second process can never truncate what the first is
//! writing.

mod error;
mod group;
mod meta;
mod partition;
mod reader;
pub mod record;
pub mod segment;
mod view;
mod writer;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::event::{partition_of, Click};

pub use error::LogError;
pub use meta::FORMAT_VERSION;
pub use reader::LogReader;
pub use view::{LogView, SegmentInfo};

use group::RecordInfo;
use partition::Partition;

/// Most partitions a log may have (each keeps a file open).
pub const MAX_PARTITIONS: u32 = 1024;
/// Default [`LogOptions::segment_bytes`]: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Default [`LogOptions::retention_ms`]: 7 days.
pub const DEFAULT_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;
/// Default [`LogOptions::max_batch_bytes`]: 8 MiB.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 8 << 20;

/// Settings of a log; not stored, so they may change between opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogOptions {
    /// A segment is closed when the next record would take it past this
    /// size (a segment always holds at least one record).
    pub segment_bytes: u64,
    /// Closed segments whose newest event time is older than this are
    /// deleted by [`Log::enforce_retention`].
    pub retention_ms: u64,
    /// Most bytes written per group commit, per partition; also bounds the
    /// memory of records waiting for a write. At least one record
    /// ([`record::MAX_RECORD_BYTES`]).
    pub max_batch_bytes: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions { segment_bytes: DEFAULT_SEGMENT_BYTES, retention_ms: DEFAULT_RETENTION_MS, max_batch_bytes: DEFAULT_MAX_BATCH_BYTES }
    }
}

impl LogOptions {
    fn check(&self, partitions: u32) -> Result<(), LogError> {
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(LogError::Options(format!("partitions is {partitions}, must be 1..={MAX_PARTITIONS}")));
        }
        if self.segment_bytes == 0 {
            return Err(LogError::Options("segment_bytes must be positive".to_owned()));
        }
        if self.max_batch_bytes < record::MAX_RECORD_BYTES {
            let min = record::MAX_RECORD_BYTES;
            return Err(LogError::Options(format!("max_batch_bytes is {}, must be at least {min} (one record)", self.max_batch_bytes)));
        }
        Ok(())
    }
}

/// Where each appended click went, in the order of the appended slice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendReceipt {
    /// `(partition, offset)` per click.
    pub positions: Vec<(u32, u64)>,
}

/// A torn tail that [`Log::open`] truncated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruncatedTail {
    pub partition: u32,
    pub segment: PathBuf,
    /// The first offset dropped: the partition's end offset after recovery.
    pub offset: u64,
    /// Byte position the segment was cut at.
    pub position: u64,
    pub bytes_dropped: u64,
    /// What was wrong with the first dropped record.
    pub reason: String,
}

impl fmt::Display for TruncatedTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "partition {}: dropped a torn tail of {} bytes at offset {} (byte {} of {}): {}",
            self.partition,
            self.bytes_dropped,
            self.offset,
            self.position,
            self.segment.display(),
            self.reason
        )
    }
}

/// What [`Log::open`] repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// At most one per partition.
    pub truncated: Vec<TruncatedTail>,
}

impl RecoveryReport {
    /// Whether the log was found exactly as it was last fsynced.
    pub fn is_clean(&self) -> bool {
        self.truncated.is_empty()
    }
}

/// What [`Log::enforce_retention`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// The deleted segment files, oldest first within a partition.
    pub deleted: Vec<PathBuf>,
    /// Closed segments old enough to delete that were kept because they
    /// hold an offset at or after the job's needed offset.
    pub kept_needed: usize,
}

impl Retention {
    /// One line for a run report, if retention did or skipped anything.
    pub fn report(&self, retention_ms: u64) -> Option<String> {
        if self.deleted.is_empty() && self.kept_needed == 0 {
            return None;
        }
        let age = crate::config::format_duration(retention_ms);
        let mut line = format!("log retention: deleted {} segments older than {age}", self.deleted.len());
        if self.kept_needed > 0 {
            line += &format!(
                "; kept {} segments older than {age} that hold offsets the job still needs \
                 (at or after its committed or dedup replay offsets; all of them before its first commit)",
                self.kept_needed
            );
        }
        Some(line)
    }
}

/// Counters since open, for benchmarks and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Successful non-empty [`Log::append`] calls.
    pub appends: u64,
    /// Records acknowledged by them.
    pub records: u64,
    /// Group commits: batches written by a leader (one per partition touched).
    pub batches: u64,
    /// Segment file fsyncs by appends.
    pub fsyncs: u64,
    /// Directory fsyncs by appends (new segments) and retention.
    pub dir_fsyncs: u64,
}

#[derive(Default)]
struct Counters {
    appends: AtomicU64,
    records: AtomicU64,
    batches: AtomicU64,
    fsyncs: AtomicU64,
    dir_fsyncs: AtomicU64,
}

impl Counters {
    fn fsync(&self) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
    }

    fn dir_fsync(&self) {
        self.dir_fsyncs.fetch_add(1, Ordering::Relaxed);
    }

    fn batch(&self) {
        self.batches.fetch_add(1, Ordering::Relaxed);
    }
}

/// The records of one append that go to one partition.
#[derive(Default)]
struct Encoded {
    bytes: Vec<u8>,
    records: Vec<RecordInfo>,
    /// Index of each record's click in the appended slice.
    clicks: Vec<usize>,
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log").field("dir", &self.dir).field("partitions", &self.partitions.len()).finish_non_exhaustive()
    }
}

/// An open log. `Send + Sync`: share it with an `Arc`.
pub struct Log {
    /// The exclusive lock on `dir/LOCK`, held while the log is open.
    _lock: File,
    dir: PathBuf,
    options: LogOptions,
    partitions: Vec<Partition>,
    recovery: RecoveryReport,
    counters: Counters,
}

impl Log {
    /// Opens or creates the log in `dir` with `partitions` partitions and
    /// recovers every partition (see the module docs).
    pub fn open(dir: &Path, partitions: u32, options: LogOptions) -> Result<Log, LogError> {
        options.check(partitions)?;
        create_dir(dir)?;
        let lock = crate::lockfile::lock_dir(dir).map_err(|e| match e {
            crate::lockfile::LockError::Held { pid } => LogError::Locked { path: dir.to_path_buf(), pid },
            crate::lockfile::LockError::Io(source) => LogError::Io { path: dir.join(crate::lockfile::LOCK_FILE), op: "lock", source },
        })?;
        meta::load_or_create(dir, partitions)?;
        let mut created = false;
        for p in 0..partitions {
            let pdir = dir.join(partition_dir_name(p));
            if !pdir.is_dir() {
                fs::create_dir(&pdir).map_err(LogError::io(&pdir, "create directory"))?;
                created = true;
            }
        }
        if created {
            sync_dir(dir)?;
        }
        let mut opened = Vec::with_capacity(partitions as usize);
        let mut recovery = RecoveryReport::default();
        for p in 0..partitions {
            let (partition, truncated) = Partition::open(p, &dir.join(partition_dir_name(p)), &options)?;
            opened.push(partition);
            recovery.truncated.extend(truncated);
        }
        Ok(Log { _lock: lock, dir: dir.to_owned(), options, partitions: opened, recovery, counters: Counters::default() })
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &LogOptions {
        &self.options
    }

    pub fn partitions(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// Appends `clicks`, each to its partition, keeping their order within a
    /// partition, and returns once all are fsynced. Concurrent calls share
    /// fsyncs. All clicks are checked before any is written; an ad id longer
    /// than [`record::MAX_AD_BYTES`] or an event time above
    /// [`crate::event::MAX_EVENT_TIME_MS`] fails the whole call.
    pub fn append(&self, clicks: &[Click]) -> Result<AppendReceipt, LogError> {
        if clicks.is_empty() {
            return Ok(AppendReceipt::default());
        }
        let mut parts: BTreeMap<u32, Encoded> = BTreeMap::new();
        for (i, click) in clicks.iter().enumerate() {
            let part = parts.entry(partition_of(click.request_id, self.partitions())).or_default();
            let len = record::encode(click, &mut part.bytes)?;
            part.records.push(RecordInfo { len: len as u32, ts: click.ts });
            part.clicks.push(i);
        }
        let mut positions = vec![(0, 0); clicks.len()];
        let mut tickets = Vec::with_capacity(parts.len());
        let mut offsets = Vec::new();
        let mut first_error = None;
        for (&p, part) in &parts {
            offsets.clear();
            match self.partitions[p as usize].enqueue(&part.bytes, &part.records, &mut offsets, &self.counters) {
                Ok(ticket) => tickets.push((p, ticket)),
                Err(e) => {
                    first_error = Some(e);
                    break;
                }
            }
            for (&i, &offset) in part.clicks.iter().zip(&offsets) {
                positions[i] = (p, offset);
            }
        }
        // Wait even after an error, so that nothing enqueued is left behind
        // without a leader.
        for (p, ticket) in tickets {
            if let Err(e) = self.partitions[p as usize].wait(ticket, &self.counters) {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        self.counters.appends.fetch_add(1, Ordering::Relaxed);
        self.counters.records.fetch_add(clicks.len() as u64, Ordering::Relaxed);
        Ok(AppendReceipt { positions })
    }

    /// The end offset of every partition: the next offset to be written.
    /// Every offset below it is durable and readable; a reader at it is
    /// caught up.
    pub fn end_offsets(&self) -> Vec<u64> {
        self.partitions.iter().map(|p| p.shared.end()).collect()
    }

    /// The oldest retained offset of every partition.
    pub fn start_offsets(&self) -> Vec<u64> {
        self.partitions.iter().map(|p| p.shared.start()).collect()
    }

    /// Read access to this log's partitions as a [`LogView`]; its readers
    /// follow appends, as [`Log::reader`]'s do.
    pub fn view(&self) -> LogView {
        LogView::of_open(&self.dir, self.partitions.iter().map(|p| Arc::clone(&p.shared)).collect())
    }

    /// A reader of `partition` from `offset`, which must lie between the
    /// partition's start and end offsets (inclusive).
    pub fn reader(&self, partition: u32, offset: u64) -> Result<LogReader, LogError> {
        let p = self.partitions.get(partition as usize).ok_or(LogError::NoSuchPartition { partition, partitions: self.partitions() })?;
        LogReader::new(p.shared.clone(), offset)
    }

    /// Deletes closed segments whose newest event time is more than
    /// `retention_ms` before `now_ms` and whose offsets all lie before
    /// `needed[p]`, the first offset of partition `p` the job still needs
    /// (see the module docs); a partition without an entry keeps all.
    pub fn enforce_retention(&self, now_ms: u64, needed: &[u64]) -> Result<Retention, LogError> {
        let mut retention = Retention::default();
        for (p, partition) in self.partitions.iter().enumerate() {
            let needed = needed.get(p).copied().unwrap_or(0);
            partition.enforce_retention(now_ms, self.options.retention_ms, needed, &self.counters, &mut retention)?;
        }
        Ok(retention)
    }

    /// The torn tails truncated by [`Log::open`].
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub fn stats(&self) -> LogStats {
        let c = &self.counters;
        LogStats {
            appends: c.appends.load(Ordering::Relaxed),
            records: c.records.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            dir_fsyncs: c.dir_fsyncs.load(Ordering::Relaxed),
        }
    }
}

/// `p-0003` for partition 3.
pub fn partition_dir_name(partition: u32) -> String {
    format!("p-{partition:04}")
}

/// Creates `dir` if missing, durably.
fn create_dir(dir: &Path) -> Result<(), LogError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(LogError::io(dir, "create directory"))?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => sync_dir(Path::new(".")),
    }
}

/// Makes the entries of `dir` (created, renamed, deleted files) durable.
fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(LogError::io(dir, "fsync directory"))
}

/// Locks ignore poisoning: a panicking writer stops its partition through
/// the group commit, and the data behind these locks stays consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
