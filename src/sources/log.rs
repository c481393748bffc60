//! The embedded log as a source: a [`PartitionReader`] over a [`LogReader`].
//!
//! Bounded runs stop at the end offsets seen at start (`Finished`); live runs
//! report `CaughtUp` at the current end and keep polling. A log read error
//! (a corrupt record) stops the job: the partition cannot be skipped without
//! losing clicks, so the worker panics with the partition and offset, and the
//! cluster fails as a whole (fail-stop).

use crate::dataflow::{PartitionReader, ReadStatus};
use crate::event::Click;
use crate::log::LogReader;

/// Reads one log partition, up to `end` when bounded.
pub struct LogPartitionReader {
    reader: LogReader,
    end: Option<u64>,
}

impl LogPartitionReader {
    pub fn new(reader: LogReader, end: Option<u64>) -> Self {
        LogPartitionReader { reader, end }
    }
}

impl PartitionReader for LogPartitionReader {
    fn read(&mut self, out: &mut Vec<Click>, max: usize) -> ReadStatus {
        let max = match self.end {
            Some(end) => max.min(end.saturating_sub(self.reader.offset()) as usize),
            None => max,
        };
        let read = match self.reader.read(out, max) {
            Ok(read) => read,
            Err(error) => panic!("log partition {} at offset {}: {error}", self.reader.partition(), self.reader.offset()),
        };
        match self.end {
            Some(end) if self.reader.offset() >= end => ReadStatus::Finished,
            // Bounded: everything up to `end` is already durable.
            Some(_) => ReadStatus::More,
            None if read == max && read > 0 => ReadStatus::More,
            None => ReadStatus::CaughtUp,
        }
    }
}
