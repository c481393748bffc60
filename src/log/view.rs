//! Reading a log without owning it: [`LogView`].
//!
//! A job that appends to or reads a live log owns it ([`super::Log::open`]
//! takes `dir/LOCK`). A backfill or a recount only reads a fixed range of
//! offsets, and must be able to do so while `tally up` or `tally run` own the
//! log. [`LogView::open`] therefore takes no lock and writes nothing: it
//! lists every partition's segments and scans them once, and its readers see
//! exactly the records that were intact and durable at that moment (the
//! last segment of each partition is fsynced, through a read-only handle,
//! before its length is trusted, so a crash of the owner cannot take back
//! a record the view has shown). A record the owner is still writing, or an
//! unrepaired torn tail, ends the view's partition; the view never repairs.
//!
//! [`super::Log::view`] gives the same interface over a log this process
//! has open, whose readers follow its appends.
//!
//! Time lookups ([`LogView::offset_at_time`]) use the segments' newest event
//! times to skip whole segments, then read one segment at most.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::event::{Click, EventTime};

use super::partition::Shared;
use super::segment::{self, SegmentMeta};
use super::{meta, partition_dir_name, read, sync_dir, LogError, LogReader};

/// One segment file of a partition.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SegmentInfo {
    /// Offset of its first record.
    pub base: u64,
    /// One past its last record's offset.
    pub end: u64,
    /// Length of its intact records, in bytes.
    pub bytes: u64,
    /// Newest click time in it (ms); retention deletes a segment by it.
    pub newest_ms: Option<u64>,
    pub file: String,
}

/// Clicks read per call while looking for a time.
const TIME_SCAN_BATCH: usize = 4_096;

/// Read access to the partitions of a log. See the module docs.
#[derive(Clone)]
pub struct LogView {
    dir: PathBuf,
    partitions: Vec<Arc<Shared>>,
}

impl std::fmt::Debug for LogView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogView").field("dir", &self.dir).field("partitions", &self.partitions.len()).finish()
    }
}

impl LogView {
    /// A snapshot of the durable records of the existing log in `dir`,
    /// beside its owner if it has one. Fails if there is no log, or on a
    /// damaged record anywhere but at the end of a partition's last
    /// segment.
    pub fn open(dir: &Path) -> Result<LogView, LogError> {
        let count = meta::read_existing(dir)?;
        let mut partitions = Vec::with_capacity(count as usize);
        for p in 0..count {
            let pdir = dir.join(partition_dir_name(p));
            partitions.push(Arc::new(Shared { partition: p, published: RwLock::new(scan_partition(p, &pdir)?) }));
        }
        Ok(LogView { dir: dir.to_owned(), partitions })
    }

    pub(super) fn of_open(dir: &Path, partitions: Vec<Arc<Shared>>) -> LogView {
        LogView { dir: dir.to_owned(), partitions }
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn partitions(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// The oldest retained offset of every partition.
    pub fn start_offsets(&self) -> Vec<u64> {
        self.partitions.iter().map(|p| p.start()).collect()
    }

    /// The end offset of every partition (for a view opened from a
    /// directory, as of its opening).
    pub fn end_offsets(&self) -> Vec<u64> {
        self.partitions.iter().map(|p| p.end()).collect()
    }

    /// A reader of `partition` from `offset`, between the partition's start
    /// and end offsets (inclusive).
    pub fn reader(&self, partition: u32, offset: u64) -> Result<LogReader, LogError> {
        let p = self.partitions.get(partition as usize).ok_or(LogError::NoSuchPartition { partition, partitions: self.partitions() })?;
        LogReader::new(Arc::clone(p), offset)
    }

    /// The first retained offset of `partition` whose record time (the
    /// click's event time, the only time the log keeps) is at or after
    /// `time`; the end offset if there is none. Every record before it is
    /// older than `time`; records after it may be older too (event time is
    /// not ordered within a partition): this is a place in the log, not a
    /// filter on time.
    pub fn offset_at_time(&self, partition: u32, time: EventTime) -> Result<u64, LogError> {
        let p = self.partitions.get(partition as usize).ok_or(LogError::NoSuchPartition { partition, partitions: self.partitions() })?;
        let first = {
            let segments = read(&p.published);
            match segments.iter().find(|s| s.max_ts.is_some_and(|ts| ts >= time)) {
                Some(s) => s.base,
                None => return Ok(segments.back().expect("never empty").end),
            }
        };
        let mut reader = self.reader(partition, first)?;
        let mut batch: Vec<Click> = Vec::with_capacity(TIME_SCAN_BATCH);
        loop {
            batch.clear();
            let at = reader.offset();
            if reader.read(&mut batch, TIME_SCAN_BATCH)? == 0 {
                return Ok(reader.offset());
            }
            if let Some(i) = batch.iter().position(|click| click.ts >= time) {
                return Ok(at + i as u64);
            }
        }
    }

    /// The segment files of `partition`, oldest first: what `tally log
    /// describe` lists.
    pub fn segments(&self, partition: u32) -> Result<Vec<SegmentInfo>, LogError> {
        let p = self.partitions.get(partition as usize).ok_or(LogError::NoSuchPartition { partition, partitions: self.partitions() })?;
        let segments = read(&p.published);
        Ok(segments
            .iter()
            .map(|s| SegmentInfo { base: s.base, end: s.end, bytes: s.bytes, newest_ms: s.max_ts, file: s.path.display().to_string() })
            .collect())
    }

    /// [`LogView::offset_at_time`] of every partition.
    pub fn offsets_at_time(&self, time: EventTime) -> Result<Vec<u64>, LogError> {
        (0..self.partitions()).map(|p| self.offset_at_time(p, time)).collect()
    }
}

/// The intact segments of one partition, the last one up to its durable,
/// intact prefix.
fn scan_partition(partition: u32, dir: &Path) -> Result<VecDeque<SegmentMeta>, LogError> {
    let files = segment::list(partition, dir)?;
    // A segment the owner has just created is durable once its directory is.
    sync_dir(dir)?;
    let Some(last) = files.len().checked_sub(1) else {
        let path = dir.join(segment::file_name(0));
        return Ok(VecDeque::from([SegmentMeta::empty(0, &path)]));
    };
    let mut segments: VecDeque<SegmentMeta> = VecDeque::with_capacity(files.len());
    for (i, (base, path)) in files.into_iter().enumerate() {
        if let Some(prev) = segments.back() {
            if prev.end != base {
                let reason = format!("starts at offset {base}, but the segment before it ends at offset {}", prev.end);
                return Err(LogError::Layout { partition, path, reason });
            }
        }
        let scan = if i == last { segment::scan_durable_prefix(&path, base)? } else { segment::scan(&path, base, false)? };
        if let (Some(bad), false) = (scan.bad, i == last) {
            let reason = format!("{}; newer segments follow", bad.fault);
            return Err(LogError::Corrupt { partition, path, offset: bad.offset, position: bad.position, reason });
        }
        segments.push_back(scan.meta);
    }
    Ok(segments)
}
