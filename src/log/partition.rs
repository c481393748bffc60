//! One partition: its recovery at open, its appends (group commit into the
//! writer), what readers may see, and retention.
//!
//! Three pieces of state, three locks, never nested the other way round:
//! - the group commit queue ([`Group`]): appenders and the leader;
//! - the [`Writer`], held by the leader while it writes and fsyncs;
//! - the *published* segment list ([`Shared`]), what readers and retention
//!   see. The leader updates it after the fsync, holding the lock only to
//!   copy a few numbers; readers hold it only to find a segment.
//!
//! Durability contract: everything in the published list is fsynced, so a
//! reader never sees a record that a crash could take away, and an append
//! is acknowledged only after its records are published.
//!
//! Recovery: every segment is scanned and every record's CRC checked. A bad
//! record at the end of the last segment with no intact record after it is
//! a torn tail — an append that was never acknowledged — and is truncated
//! (and reported). Anything else is corruption and fails the open: a bad
//! record with an intact one after it, or a bad record in any segment but
//! the last, or a bad record whose CRC matches (it was written whole, so
//! it is no torn tail), or segments that do not follow each other. Offsets of a
//! truncated tail were never acknowledged nor visible, and are assigned
//! again.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use super::group::{Batch, Group, RecordInfo, Ticket};
use super::segment::{self, IndexEntry, SegmentMeta};
use super::writer::Writer;
use super::{lock, read, sync_dir, write, Counters, LogError, LogOptions, Retention, TruncatedTail};

/// The part of a partition that readers share.
pub struct Shared {
    pub partition: u32,
    /// Published segments, oldest first; the last one is active. Never empty.
    pub(super) published: RwLock<VecDeque<SegmentMeta>>,
}

/// Where a reader finds an offset.
#[derive(Clone)]
pub struct Located {
    pub base: u64,
    /// The segment's published end offset and length.
    pub end: u64,
    pub bytes: u64,
    pub path: Arc<Path>,
    /// The closest index entry at or before the offset.
    pub seek: IndexEntry,
}

impl Shared {
    /// The oldest retained offset.
    pub fn start(&self) -> u64 {
        read(&self.published).front().expect("never empty").base
    }

    /// The end offset: every offset below it is durable and readable.
    pub fn end(&self) -> u64 {
        read(&self.published).back().expect("never empty").end
    }

    /// The segment holding `offset`, or `None` if `offset` is the end offset.
    pub fn locate(&self, offset: u64) -> Result<Option<Located>, LogError> {
        let segments = read(&self.published);
        let (start, end) = (segments.front().expect("never empty").base, segments.back().expect("never empty").end);
        if offset < start {
            return Err(LogError::OffsetRetained { partition: self.partition, offset, oldest: start });
        }
        if offset > end {
            return Err(LogError::OffsetBeyondEnd { partition: self.partition, offset, end });
        }
        if offset == end {
            return Ok(None);
        }
        let s = &segments[segments.partition_point(|s| s.end <= offset)];
        Ok(Some(Located { base: s.base, end: s.end, bytes: s.bytes, path: s.path.clone(), seek: s.seek(offset) }))
    }

    /// Makes the writer's fsynced segments visible.
    fn publish(&self, updated: Vec<SegmentMeta>) {
        let mut segments = write(&self.published);
        for u in updated {
            let last = segments.back_mut().expect("never empty");
            if last.base == u.base {
                assert!(u.end >= last.end && u.bytes >= last.bytes, "a segment only grows");
                (last.end, last.bytes, last.max_ts) = (u.end, u.bytes, u.max_ts);
                last.index.extend(u.index);
            } else {
                assert_eq!(u.base, last.end, "a new segment starts where the last one ends");
                segments.push_back(u);
            }
        }
    }
}

/// A partition of an open log.
pub struct Partition {
    pub shared: Arc<Shared>,
    dir: PathBuf,
    group: Group,
    writer: Mutex<Writer>,
}

impl Partition {
    /// Recovers the partition in `dir` (which exists) and opens its writer.
    pub fn open(partition: u32, dir: &Path, options: &LogOptions) -> Result<(Partition, Option<TruncatedTail>), LogError> {
        let (segments, truncated) = recover(partition, dir)?;
        let last = segments.back().expect("recover returns at least one segment");
        let writer = Writer::open(dir, last, options.segment_bytes)?;
        let group = Group::new(partition, last.end, options.max_batch_bytes);
        let shared = Arc::new(Shared { partition, published: RwLock::new(segments) });
        Ok((Partition { shared, dir: dir.to_owned(), group, writer: Mutex::new(writer) }, truncated))
    }

    /// See [`Group::enqueue`].
    pub fn enqueue(&self, bytes: &[u8], records: &[RecordInfo], offsets: &mut Vec<u64>, counters: &Counters) -> Result<Ticket, LogError> {
        self.group.enqueue(bytes, records, offsets, &|batch| self.flush(batch, counters))
    }

    /// See [`Group::wait`].
    pub fn wait(&self, ticket: Ticket, counters: &Counters) -> Result<(), LogError> {
        self.group.wait(ticket, &|batch| self.flush(batch, counters))
    }

    fn flush(&self, batch: &Batch, counters: &Counters) -> Result<(), LogError> {
        let updated = lock(&self.writer).write(batch, counters)?;
        self.shared.publish(updated);
        counters.batch();
        Ok(())
    }

    /// Deletes the oldest closed segments whose newest event time is more
    /// than `retention_ms` before `now_ms` and that end at or before
    /// `needed` (the first offset the job still needs), stopping at the
    /// first one to keep (so retained offsets stay contiguous). The active
    /// segment is never deleted. Adds what it deleted, and how many expired
    /// segments it kept for `needed`, to `retention`.
    pub fn enforce_retention(
        &self,
        now_ms: u64,
        retention_ms: u64,
        needed: u64,
        counters: &Counters,
        retention: &mut Retention,
    ) -> Result<(), LogError> {
        let expired = |s: &SegmentMeta| s.max_ts.is_none_or(|ts| ts.saturating_add(retention_ms) < now_ms);
        let removed: Vec<SegmentMeta> = {
            let mut segments = write(&self.shared.published);
            let closed = segments.len() - 1;
            let old = segments.iter().take(closed).take_while(|s| expired(s)).count();
            let unneeded = segments.iter().take(old).take_while(|s| s.end <= needed).count();
            retention.kept_needed += old - unneeded;
            segments.drain(..unneeded).collect()
        };
        if removed.is_empty() {
            return Ok(());
        }
        // Readers already past these segments keep their open files; new
        // readers get `OffsetRetained`. Oldest first, so that a crash leaves
        // a contiguous suffix.
        for s in &removed {
            std::fs::remove_file(&s.path).map_err(LogError::io(&*s.path, "delete"))?;
            retention.deleted.push(s.path.to_path_buf());
        }
        sync_dir(&self.dir)?;
        counters.dir_fsync();
        Ok(())
    }
}

/// Scans every segment of a partition, truncates a torn tail, and returns
/// the segments (at least one: an empty partition gets its first segment).
fn recover(partition: u32, dir: &Path) -> Result<(VecDeque<SegmentMeta>, Option<TruncatedTail>), LogError> {
    let files = segment::list(partition, dir)?;
    if files.is_empty() {
        let path = dir.join(segment::file_name(0));
        File::options().write(true).create_new(true).open(&path).map_err(LogError::io(&path, "create"))?;
        sync_dir(dir)?;
        return Ok((VecDeque::from([SegmentMeta::empty(0, &path)]), None));
    }
    let mut segments: VecDeque<SegmentMeta> = VecDeque::with_capacity(files.len());
    let mut truncated = None;
    let last = files.len() - 1;
    for (i, (base, path)) in files.into_iter().enumerate() {
        if let Some(prev) = segments.back() {
            if prev.end != base {
                let reason = format!("starts at offset {base}, but the segment before it ends at offset {}", prev.end);
                return Err(LogError::Layout { partition, path, reason });
            }
        }
        let scan = segment::scan(&path, base, i == last)?;
        if let Some(bad) = scan.bad {
            let corrupt = |why: String| LogError::Corrupt {
                partition,
                path: path.clone(),
                offset: bad.offset,
                position: bad.position,
                reason: format!("{}; {why}, so it is not a torn tail and is not skipped", bad.fault),
            };
            if i != last {
                return Err(corrupt("newer segments follow".to_owned()));
            }
            if let Some(at) = bad.valid_after {
                return Err(corrupt(format!("an intact record follows at byte {at}")));
            }
            if bad.fault.whole_record() {
                return Err(corrupt("the record was written whole (its CRC matches)".to_owned()));
            }
            truncate(&path, bad.position)?;
            let bytes_dropped = scan.file_len - bad.position;
            let reason = bad.fault.to_string();
            truncated = Some(TruncatedTail { partition, segment: path, offset: bad.offset, position: bad.position, bytes_dropped, reason });
        }
        segments.push_back(scan.meta);
    }
    Ok((segments, truncated))
}

fn truncate(path: &Path, len: u64) -> Result<(), LogError> {
    let file = File::options().write(true).open(path).map_err(LogError::io(path, "open for truncation"))?;
    file.set_len(len).map_err(LogError::io(path, "truncate"))?;
    file.sync_all().map_err(LogError::io(path, "fsync"))
}
