//! Sinks: where committed epochs go.
//!
//! The commit operator (on worker 0) hands the sink everything an epoch
//! commits (`stage`: rows, late-ledger entries, window state, partition
//! checkpoints) and then declares the epoch complete (`commit`). A sink must make an epoch visible only at `commit`, and all of
//! it: this is the contract the durable stores implement as one transaction
//! (embedded) or staged batches plus a commit record (Cassandra).

pub mod file;
pub mod memory;
pub mod metered;
pub mod store;

pub use file::FileSink;
pub use memory::MemorySink;

pub use crate::dataflow::commit::EpochBatch;

/// A step of the frontier: all rows emitted at timely time `e`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {target}: {source}")]
    Io { target: String, source: std::io::Error },
    #[error("store: {0}")]
    Store(String),
}

/// The output of a job: one per job, driven by the commit operator.
pub trait Sink {
    /// Stages everything epoch `epoch` commits.
    fn stage(&mut self, epoch: Epoch, batch: &EpochBatch) -> Result<(), SinkError>;
    /// Makes everything staged for `epoch` (and before) visible, all of it.
    fn commit(&mut self, epoch: Epoch) -> Result<(), SinkError>;
}
