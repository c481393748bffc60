//! The generator source: the seeded click stream made while the job runs.
//!
//! Each partition's reader makes that partition's clicks itself, in the
//! worker that reads it, as an in-engine source does: the input is never
//! held in memory, generating it costs time inside the run, and partitions
//! stay independent of each other, like the partitions of a log. A
//! partition's clicks are exactly its lines in a file written by `tally gen`
//! with the same settings ([`PartitionClicks`]), so every decision is the
//! same as on that file. A reader opened at offset `n` makes and skips the
//! first `n` clicks of its partition: the stream is deterministic, so a
//! resumed job reads on from its committed offset.

use std::sync::Arc;

use crate::dataflow::{PartitionReader, ReadStatus, ReaderFactory};
use crate::event::Click;

use super::generator::{GeneratorConfig, PartitionClicks};

/// The factory of readers of `config`'s partitions, with user keys salted
/// with `salt`.
pub fn readers(config: &GeneratorConfig, salt: u64) -> ReaderFactory {
    let config = Arc::new(config.clone());
    Arc::new(move |partition, offset| {
        let mut clicks = PartitionClicks::new(&config, partition);
        if offset > 0 {
            clicks.nth(offset as usize - 1);
        }
        Box::new(GeneratedReader { clicks, salt })
    })
}

/// One partition's reader.
struct GeneratedReader {
    clicks: PartitionClicks,
    salt: u64,
}

impl PartitionReader for GeneratedReader {
    fn read(&mut self, out: &mut Vec<Click>, max: usize) -> ReadStatus {
        for _ in 0..max {
            match self.clicks.next() {
                Some(click) => out.push(click.to_click(self.salt)),
                None => return ReadStatus::Finished,
            }
        }
        ReadStatus::More
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::partition_of;
    use crate::sources::generator::Generator;

    fn config() -> GeneratorConfig {
        // 60 s of stream time: partition 0 is idle for the second half,
        // and its positions go to the others.
        GeneratorConfig { clicks: 60_000, ads: 100, partitions: 4, rate_per_s: 1_000, ..GeneratorConfig::default() }
    }

    /// Every click of partition `p` in the whole stream, in order.
    fn expected(config: &GeneratorConfig, p: u32) -> Vec<Click> {
        Generator::new(config).map(|c| c.to_click(9)).filter(|c| partition_of(c.request_id, config.partitions) == p).collect()
    }

    fn read_all(reader: &mut dyn PartitionReader, max: usize) -> Vec<Click> {
        let mut out = Vec::new();
        loop {
            let mut batch = Vec::new();
            let status = reader.read(&mut batch, max);
            assert!(batch.len() <= max);
            out.extend(batch);
            if status == ReadStatus::Finished {
                return out;
            }
        }
    }

    #[test]
    fn each_partition_reads_its_lines_of_the_whole_stream() {
        let config = config();
        let factory = readers(&config, 9);
        let mut total = 0;
        for p in 0..config.partitions {
            let clicks = read_all(factory(p, 0).as_mut(), 1_000);
            assert!(clicks.len() > 1_000, "partition {p}: {} clicks", clicks.len());
            total += clicks.len();
            assert_eq!(clicks, expected(&config, p), "partition {p}");
        }
        assert_eq!(total as u64, config.clicks);
    }

    #[test]
    fn a_reader_opened_at_an_offset_skips_what_was_read_before() {
        let config = config();
        let offset = 4_097;
        let clicks = read_all(readers(&config, 9)(2, offset).as_mut(), 333);
        assert_eq!(clicks, expected(&config, 2)[offset as usize..]);
    }
}
