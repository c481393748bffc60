//! A partition held in memory, read from an offset: the reader behind file
//! sources, whose clicks are loaded before the job starts.

use crate::dataflow::{PartitionReader, ReadStatus};
use crate::event::Click;

/// Reads a fixed vector of clicks, then reports `Finished` (a bounded input).
pub struct VecReader {
    clicks: Vec<Click>,
    offset: usize,
}

impl VecReader {
    /// Reads `clicks` from `offset` on.
    pub fn new(clicks: Vec<Click>, offset: u64) -> Self {
        VecReader { offset: (offset as usize).min(clicks.len()), clicks }
    }
}

impl PartitionReader for VecReader {
    fn read(&mut self, out: &mut Vec<Click>, max: usize) -> ReadStatus {
        let end = (self.offset + max).min(self.clicks.len());
        out.extend_from_slice(&self.clicks[self.offset..end]);
        self.offset = end;
        if self.offset == self.clicks.len() {
            ReadStatus::Finished
        } else {
            ReadStatus::More
        }
    }
}
