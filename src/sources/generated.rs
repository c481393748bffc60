//! The generator source: the seeded click stream made while the job runs.
//!
//! One producer thread runs the [`Generator`] and hands each partition's
//! clicks, in chunks, to that partition's reader through a bounded channel,
//! as a log serves a partition to its consumer: the input is never held in
//! memory whole, and generating it costs time inside the run, as an
//! in-engine source does.
//!
//! Each partition receives its clicks in the generator's order, the same
//! partition sequence that a file written by `tally gen` gives, so every
//! decision is the same as on that file. A reader opened at offset `n` skips
//! the first `n` clicks of its partition: the stream is deterministic, so a
//! resumed job regenerates them and reads on from its committed offset.
//!
//! A reader waiting for its next chunk reports [`ReadStatus::More`], never
//! `CaughtUp`: the generator has not finished, so the partition keeps
//! holding the watermark back, like a log partition with lag.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::dataflow::{PartitionReader, ReadStatus, ReaderFactory};
use crate::event::{partition_of, Click};

use super::generator::{Generator, GeneratorConfig};

/// Clicks per chunk sent to a partition's reader.
pub const CHUNK_CLICKS: usize = 4_096;
/// Chunks waiting per partition before the producer blocks: bounds the
/// clicks in flight to `CHUNK_CLICKS * CHUNKS_IN_FLIGHT` per partition.
pub const CHUNKS_IN_FLIGHT: usize = 4;
/// Longest a reader with nothing to hand out waits for the next chunk.
const WAIT: Duration = Duration::from_millis(1);

/// Starts generating `config`'s clicks (user keys salted with `salt`) for the
/// partitions `owned` says this process reads, and returns the factory of
/// their readers, and the producer thread. Each owned partition's reader is
/// opened once.
///
/// The producer ends when every click is sent or when a reader it sends to
/// (or, before the readers are opened, the factory) is dropped.
pub fn start(config: &GeneratorConfig, salt: u64, owned: impl Fn(u32) -> bool) -> (ReaderFactory, JoinHandle<()>) {
    let partitions = config.partitions;
    let mut senders = Vec::with_capacity(partitions as usize);
    let mut receivers = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        if owned(p) {
            let (tx, rx) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);
            senders.push(Some(tx));
            receivers.push(Mutex::new(Some(rx)));
        } else {
            senders.push(None);
            receivers.push(Mutex::new(None));
        }
    }
    let config = config.clone();
    let producer = std::thread::Builder::new()
        .name("generator".into())
        .spawn(move || produce(&config, salt, senders))
        .expect("the generator thread starts");
    let receivers = Arc::new(receivers);
    let factory: ReaderFactory = Arc::new(move |p, offset| {
        let taken = receivers.get(p as usize).and_then(|slot| slot.lock().unwrap_or_else(|e| e.into_inner()).take());
        let chunks = taken.unwrap_or_else(|| panic!("generated partition {p} is not read by this process, or was opened twice"));
        Box::new(GeneratedReader { chunks, chunk: Vec::new(), at: 0, skip: offset, finished: false })
    });
    (factory, producer)
}

/// Runs the generator, sending every owned partition's clicks in chunks.
fn produce(config: &GeneratorConfig, salt: u64, senders: Vec<Option<SyncSender<Vec<Click>>>>) {
    let mut chunks: Vec<Vec<Click>> = senders.iter().map(|_| Vec::with_capacity(CHUNK_CLICKS)).collect();
    for generated in Generator::new(config) {
        let p = partition_of(generated.request_id, config.partitions) as usize;
        let Some(sender) = &senders[p] else { continue };
        chunks[p].push(generated.to_click(salt));
        if chunks[p].len() == CHUNK_CLICKS {
            let full = std::mem::replace(&mut chunks[p], Vec::with_capacity(CHUNK_CLICKS));
            if sender.send(full).is_err() {
                return; // the reader is gone: the job has ended
            }
        }
    }
    for (sender, chunk) in senders.iter().zip(chunks) {
        if let (Some(sender), false) = (sender, chunk.is_empty()) {
            let _ = sender.send(chunk);
        }
    }
}

/// One partition's reader: the chunks of the producer, from an offset.
struct GeneratedReader {
    chunks: Receiver<Vec<Click>>,
    chunk: Vec<Click>,
    at: usize,
    /// Clicks still to skip before the offset the reader was opened at.
    skip: u64,
    finished: bool,
}

impl GeneratedReader {
    /// The next chunk; waits up to [`WAIT`] for it if `wait`. `None`: none
    /// yet, or none ever again (`finished` is then set).
    fn next_chunk(&mut self, wait: bool) -> Option<Vec<Click>> {
        let got = if wait {
            self.chunks.recv_timeout(WAIT).map_err(|e| matches!(e, RecvTimeoutError::Disconnected))
        } else {
            self.chunks.try_recv().map_err(|e| matches!(e, TryRecvError::Disconnected))
        };
        match got {
            Ok(chunk) => Some(chunk),
            Err(disconnected) => {
                self.finished = disconnected;
                None
            }
        }
    }
}

impl PartitionReader for GeneratedReader {
    fn read(&mut self, out: &mut Vec<Click>, max: usize) -> ReadStatus {
        let wanted = out.len() + max;
        while out.len() < wanted {
            if self.at == self.chunk.len() {
                match self.next_chunk(out.is_empty()) {
                    Some(chunk) => (self.chunk, self.at) = (chunk, 0),
                    None if self.finished => return ReadStatus::Finished,
                    None => return ReadStatus::More,
                }
            }
            let skipped = (self.skip.min((self.chunk.len() - self.at) as u64)) as usize;
            self.at += skipped;
            self.skip -= skipped as u64;
            let end = (self.at + (wanted - out.len())).min(self.chunk.len());
            out.extend_from_slice(&self.chunk[self.at..end]);
            self.at = end;
        }
        ReadStatus::More
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GeneratorConfig {
        GeneratorConfig { clicks: 30_000, ads: 100, partitions: 4, rate_per_s: 5_000, ..GeneratorConfig::default() }
    }

    /// Every click of partition `p` in generator order.
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
            assert_eq!(status, ReadStatus::More, "a generated partition is never caught up");
        }
    }

    #[test]
    fn each_partition_gets_its_clicks_in_generator_order() {
        let config = config();
        let (factory, _) = start(&config, 9, |_| true);
        // Read the partitions from threads of their own, as workers do.
        let handles: Vec<_> = (0..config.partitions)
            .map(|p| {
                let factory = Arc::clone(&factory);
                std::thread::spawn(move || read_all(factory(p, 0).as_mut(), 1_000))
            })
            .collect();
        for (p, handle) in handles.into_iter().enumerate() {
            assert_eq!(handle.join().unwrap(), expected(&config, p as u32), "partition {p}");
        }
    }

    #[test]
    fn a_reader_opened_at_an_offset_skips_what_was_read_before() {
        let config = GeneratorConfig { partitions: 1, idle_partitions: 0, ..config() };
        let offset = CHUNK_CLICKS as u64 * 2 + 17;
        let mut reader = start(&config, 9, |_| true).0(0, offset);
        assert_eq!(read_all(reader.as_mut(), 333), expected(&config, 0)[offset as usize..]);
    }

    #[test]
    fn partitions_of_other_processes_are_not_generated() {
        let config = config();
        let (factory, _) = start(&config, 9, |p| p % 2 == 1);
        let mut reader = factory(1, 0);
        assert_eq!(read_all(reader.as_mut(), 4_096), expected(&config, 1));
        let other = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| factory(0, 0)));
        assert!(other.is_err(), "partition 0 belongs to another process");
    }

    #[test]
    fn dropping_the_readers_stops_the_producer() {
        let config = GeneratorConfig { clicks: 1_000_000_000, ..config() };
        let (factory, producer) = start(&config, 9, |_| true);
        let mut reader = factory(0, 0);
        let mut batch = Vec::new();
        while batch.is_empty() {
            reader.read(&mut batch, 10);
        }
        drop((reader, factory));
        // With every receiver gone the producer's next send fails and it
        // returns, long before it could have made 1G clicks.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !producer.is_finished() {
            assert!(std::time::Instant::now() < deadline, "the producer still runs with no reader left");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
