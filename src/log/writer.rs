//! The writer of one partition: appends batches to the active segment,
//! rolls to a new segment when it is full, and fsyncs.
//!
//! Only a group-commit leader calls it (under the partition's writer lock),
//! so there is one writer per partition at a time.
//!
//! Durability, in order, for a batch:
//! 1. the records that fit go to the active segment, which is then fsynced
//!    (`fdatasync`: the data and the file length);
//! 2. if the segment is full, a new segment file named by the next offset
//!    is created and the partition directory is fsynced, so the new file
//!    survives a crash; the rest of the batch goes there, and is fsynced.
//!
//! A segment is therefore created only once its predecessor is durable and
//! complete, which is what lets recovery treat damage anywhere but the end
//! of the last segment as corruption. The writer returns what it made
//! durable as segment deltas; the caller publishes them to readers only
//! after [`Writer::write`] has returned `Ok`. On an error the writer's state
//! is unknown and the partition is stopped by the group commit.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::mem;
use std::path::{Path, PathBuf};

use super::group::Batch;
use super::segment::{self, SegmentMeta};
use super::{sync_dir, Counters, LogError};

pub struct Writer {
    dir: PathBuf,
    segment_bytes: u64,
    file: File,
    /// The active segment as written so far; its `index` holds only the
    /// entries not yet published.
    active: SegmentMeta,
}

impl Writer {
    /// Opens the last segment of a recovered partition for appending at the
    /// end of its intact records.
    pub fn open(dir: &Path, last: &SegmentMeta, segment_bytes: u64) -> Result<Writer, LogError> {
        let path = &*last.path;
        let mut file = File::options().write(true).open(path).map_err(LogError::io(path, "open for append"))?;
        file.seek(SeekFrom::Start(last.bytes)).map_err(LogError::io(path, "seek"))?;
        let active = SegmentMeta { index: Vec::new(), path: last.path.clone(), ..*last };
        Ok(Writer { dir: dir.to_owned(), segment_bytes, file, active })
    }

    /// Writes and fsyncs `batch`; returns the updated segments (the last one
    /// active), each with the index entries it gained.
    pub fn write(&mut self, batch: &Batch, counters: &Counters) -> Result<Vec<SegmentMeta>, LogError> {
        assert_eq!(batch.first_offset, self.active.end, "offsets are contiguous");
        let mut updated = Vec::new();
        let (mut chunk_start, mut at) = (0, 0);
        for record in &batch.records {
            let len = record.len as usize;
            if self.active.bytes > 0 && self.active.bytes + len as u64 > self.segment_bytes {
                if at > chunk_start {
                    self.write_chunk(&batch.bytes[chunk_start..at], counters)?;
                    updated.push(self.delta());
                }
                self.roll(counters)?;
                chunk_start = at;
            }
            self.active.push(self.active.bytes, len, record.ts);
            at += len;
        }
        debug_assert_eq!(at, batch.bytes.len());
        if at > chunk_start {
            self.write_chunk(&batch.bytes[chunk_start..at], counters)?;
            updated.push(self.delta());
        }
        Ok(updated)
    }

    fn write_chunk(&mut self, chunk: &[u8], counters: &Counters) -> Result<(), LogError> {
        let path = &*self.active.path;
        self.file.write_all(chunk).map_err(LogError::io(path, "write"))?;
        self.file.sync_data().map_err(LogError::io(path, "fsync"))?;
        counters.fsync();
        Ok(())
    }

    /// Closes the active segment (already fsynced) and starts the next one.
    fn roll(&mut self, counters: &Counters) -> Result<(), LogError> {
        let base = self.active.end;
        let path = self.dir.join(segment::file_name(base));
        self.file = File::options().write(true).create_new(true).open(&path).map_err(LogError::io(&path, "create"))?;
        sync_dir(&self.dir)?;
        counters.dir_fsync();
        self.active = SegmentMeta::empty(base, &path);
        Ok(())
    }

    /// The active segment as it now stands, taking its unpublished index
    /// entries.
    fn delta(&mut self) -> SegmentMeta {
        let index = mem::take(&mut self.active.index);
        SegmentMeta { index, ..self.active.clone() }
    }
}
