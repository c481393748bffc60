//! A partition held in memory, read from an offset: the reader behind file
//! sources, whose clicks are loaded before the job starts.
//!
//! The clicks are held in chunks of [`CHUNK_CLICKS`]: a load never moves
//! what it holds (a vector grown by doubling copies everything it held and
//! has the kernel zero twice the memory), and the reader frees each chunk
//! once it has read it, so the job's own memory reuses it.

use crate::dataflow::{PartitionReader, ReadStatus};
use crate::event::Click;

/// Clicks per chunk: 2 MiB of them.
pub const CHUNK_CLICKS: usize = 32_768;

/// One partition's clicks in order, in chunks that never move. Equal
/// when the clicks are, however they are chunked.
#[derive(Clone, Debug, Default)]
pub struct ClickChunks {
    chunks: Vec<Vec<Click>>,
}

impl ClickChunks {
    /// Appends a click, starting a new chunk when the last one is full.
    pub fn push(&mut self, click: Click) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < chunk.capacity() => chunk.push(click),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK_CLICKS);
                chunk.push(click);
                self.chunks.push(chunk);
            }
        }
    }

    /// Appends every click of `other` after these, without copying them.
    pub fn append(&mut self, other: ClickChunks) {
        self.chunks.extend(other.chunks.into_iter().filter(|chunk| !chunk.is_empty()));
    }

    /// Clicks held.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.iter().all(Vec::is_empty)
    }

    /// The clicks in order.
    pub fn iter(&self) -> impl Iterator<Item = &Click> {
        self.chunks.iter().flatten()
    }
}

impl PartialEq for ClickChunks {
    fn eq(&self, other: &ClickChunks) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for ClickChunks {}

impl From<Vec<Click>> for ClickChunks {
    fn from(clicks: Vec<Click>) -> ClickChunks {
        let chunks = if clicks.is_empty() { Vec::new() } else { vec![clicks] };
        ClickChunks { chunks }
    }
}

impl FromIterator<Click> for ClickChunks {
    fn from_iter<I: IntoIterator<Item = Click>>(clicks: I) -> ClickChunks {
        let mut chunks = ClickChunks::default();
        for click in clicks {
            chunks.push(click);
        }
        chunks
    }
}

/// Reads a fixed set of clicks, then reports `Finished` (a bounded input).
/// Clicks are moved out, not copied, and a chunk is freed once read.
pub struct VecReader {
    chunks: std::vec::IntoIter<Vec<Click>>,
    current: std::vec::IntoIter<Click>,
}

impl VecReader {
    /// Reads `clicks` from `offset` on.
    pub fn new(clicks: impl Into<ClickChunks>, offset: u64) -> Self {
        let mut chunks = clicks.into().chunks.into_iter();
        let mut skip = usize::try_from(offset).unwrap_or(usize::MAX);
        let mut current = Vec::new().into_iter();
        for chunk in chunks.by_ref() {
            if skip < chunk.len() {
                current = chunk.into_iter();
                if skip > 0 {
                    current.nth(skip - 1);
                }
                break;
            }
            skip -= chunk.len();
        }
        VecReader { chunks, current }
    }
}

impl PartitionReader for VecReader {
    fn read(&mut self, out: &mut Vec<Click>, max: usize) -> ReadStatus {
        let mut left = max;
        loop {
            let before = out.len();
            out.extend(self.current.by_ref().take(left));
            left -= out.len() - before;
            if self.current.len() > 0 {
                return ReadStatus::More;
            }
            match self.chunks.next() {
                Some(chunk) => self.current = chunk.into_iter(),
                None => return ReadStatus::Finished,
            }
            if left == 0 {
                return ReadStatus::More;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Key;

    fn click(n: u64) -> Click {
        Click { ad: Key::from("ad"), ts: n, user: n, request_id: u128::from(n) }
    }

    fn read_all(mut reader: VecReader, max: usize) -> Vec<u64> {
        let mut out = Vec::new();
        loop {
            let mut batch = Vec::new();
            let status = reader.read(&mut batch, max);
            assert!(batch.len() <= max);
            out.extend(batch.iter().map(|c| c.ts));
            if matches!(status, ReadStatus::Finished) {
                return out;
            }
            assert_eq!(batch.len(), max, "a reader with clicks left fills the batch");
        }
    }

    #[test]
    fn chunks_hold_every_click_in_order_and_read_from_any_offset() {
        let total = 2 * CHUNK_CLICKS as u64 + 5;
        let mut first: ClickChunks = (0..CHUNK_CLICKS as u64 + 3).map(click).collect();
        first.append(ClickChunks::default());
        first.append((CHUNK_CLICKS as u64 + 3..total).map(click).collect());
        assert_eq!(first.len(), total as usize);
        assert_eq!(first, (0..total).map(click).collect::<ClickChunks>());
        assert_ne!(first, (0..total - 1).map(click).collect::<ClickChunks>());
        assert!(first.iter().map(|c| c.ts).eq(0..total));
        for offset in [0, 1, CHUNK_CLICKS as u64 - 1, CHUNK_CLICKS as u64, CHUNK_CLICKS as u64 + 3, total - 1, total, total + 7] {
            for max in [1, 1000, CHUNK_CLICKS + 1] {
                let read = read_all(VecReader::new(first.clone(), offset), max);
                assert!(read.iter().copied().eq(offset.min(total)..total), "offset {offset}, max {max}");
            }
        }
    }

    #[test]
    fn a_vector_reads_as_one_chunk() {
        let clicks: Vec<Click> = (0..10).map(click).collect();
        assert_eq!(read_all(VecReader::new(clicks.clone(), 4), 3), (4..10).collect::<Vec<_>>());
        assert_eq!(read_all(VecReader::new(Vec::new(), 0), 3), Vec::<u64>::new());
        assert_eq!(ClickChunks::from(clicks).len(), 10);
    }
}
