//! Reading a partition from an offset.
//!
//! A [`LogReader`] reads only published records, i.e. records that are
//! fsynced and acknowledged: a crash can never take back what a reader has
//! seen. It looks up its segment in the published list (a brief read lock),
//! then reads the file with its own handle and no lock held, up to the
//! segment's published length, so it never waits for an fsync and never
//! holds up an append for more than that lookup.
//!
//! Positioning uses the segment's sparse in-memory index and then decodes at
//! most [`INDEX_INTERVAL_RECORDS`](super::segment::INDEX_INTERVAL_RECORDS)
//! records forward. Every record read is CRC-checked; a bad one is an error
//! naming its offset, never skipped. A segment deleted by retention while a
//! reader is inside it stays readable through the open handle (POSIX
//! unlink semantics); a reader that has to open a deleted segment gets
//! [`LogError::OffsetRetained`].

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::event::Click;

use super::partition::{Located, Shared};
use super::record;
use super::segment::Window;
use super::LogError;

/// Reads one partition in offset order. See the module docs.
pub struct LogReader {
    shared: Arc<Shared>,
    /// The offset of the next record to read.
    offset: u64,
    cursor: Option<Cursor>,
}

/// An open segment and the byte position of `LogReader::offset` in it.
struct Cursor {
    /// The segment as last published.
    segment: Located,
    window: Window,
    position: u64,
}

impl LogReader {
    pub(crate) fn new(shared: Arc<Shared>, offset: u64) -> Result<LogReader, LogError> {
        let mut reader = LogReader { shared, offset, cursor: None };
        if let Some(located) = reader.shared.locate(offset)? {
            reader.open(located)?;
        }
        Ok(reader)
    }

    /// The offset of the next record to read.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The partition read.
    pub fn partition(&self) -> u32 {
        self.shared.partition
    }

    /// Appends up to `max` clicks to `out`; returns how many. 0 means the
    /// reader is at the end offset (or `max` is 0).
    pub fn read(&mut self, out: &mut Vec<Click>, max: usize) -> Result<usize, LogError> {
        let mut n = 0;
        while n < max {
            let Some(located) = self.locate()? else { break };
            match &mut self.cursor {
                Some(cursor) if cursor.segment.base == located.base => cursor.segment = located,
                _ => self.open(located)?,
            }
            n += self.read_segment(out, max - n)?;
        }
        Ok(n)
    }

    /// The segment of `self.offset`. If retention has deleted it since the
    /// cursor opened it, the cursor's file is still readable up to the end
    /// it last saw.
    fn locate(&self) -> Result<Option<Located>, LogError> {
        match self.shared.locate(self.offset) {
            Err(LogError::OffsetRetained { .. }) if self.cursor.as_ref().is_some_and(|c| self.offset < c.segment.end) => {
                Ok(self.cursor.as_ref().map(|c| c.segment.clone()))
            }
            other => other,
        }
    }

    /// Reads from the cursor's segment, up to its published end.
    fn read_segment(&mut self, out: &mut Vec<Click>, max: usize) -> Result<usize, LogError> {
        let partition = self.shared.partition;
        let cursor = self.cursor.as_mut().expect("opened by the caller");
        let (end, limit) = (cursor.segment.end, cursor.segment.bytes);
        let mut n = 0;
        while n < max && self.offset < end {
            let bytes = cursor.window.at(cursor.position, limit).map_err(LogError::io(&*cursor.segment.path, "read"))?;
            let view = record::decode(bytes).map_err(|f| corrupt(partition, &cursor.segment.path, self.offset, cursor.position, f))?;
            let len = view.len;
            out.push(view.to_click());
            cursor.position += len as u64;
            self.offset += 1;
            n += 1;
        }
        Ok(n)
    }

    /// Opens the segment of `self.offset` and positions the cursor on it.
    fn open(&mut self, segment: Located) -> Result<(), LogError> {
        let partition = self.shared.partition;
        let file = match File::open(&segment.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.offset < self.shared.start() => {
                return Err(LogError::OffsetRetained { partition, offset: self.offset, oldest: self.shared.start() });
            }
            Err(e) => return Err(LogError::io(&*segment.path, "open")(e)),
        };
        let mut window = Window::new(file);
        let mut position = segment.seek.position;
        for offset in segment.seek.offset..self.offset {
            let bytes = window.at(position, segment.bytes).map_err(LogError::io(&*segment.path, "read"))?;
            let view = record::decode(bytes).map_err(|f| corrupt(partition, &segment.path, offset, position, f))?;
            position += view.len as u64;
        }
        self.cursor = Some(Cursor { segment, window, position });
        Ok(())
    }
}

fn corrupt(partition: u32, path: &Path, offset: u64, position: u64, fault: record::Fault) -> LogError {
    LogError::Corrupt { partition, path: path.to_owned(), offset, position, reason: fault.to_string() }
}
