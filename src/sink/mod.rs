//! Sinks: where committed epochs go.
//!
//! The commit operator hands every worker's sink the rows and late-ledger
//! entries of an epoch (`stage`) and then declares the epoch complete
//! (`commit`). A sink must make an epoch visible only at `commit`, and all of
//! it: this is the contract the durable stores implement as one transaction
//! (embedded) or staged batches plus a commit record (Cassandra).

pub mod file;
pub mod memory;

pub use file::FileSink;
pub use memory::MemorySink;

use crate::row::{LateEntry, Row};

/// A step of the frontier: all rows emitted at timely time `e`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {target}: {source}")]
    Io { target: String, source: std::io::Error },
}

/// One worker's handle on the output.
pub trait Sink {
    /// Adds rows and late entries to the epoch being staged.
    fn stage(&mut self, epoch: Epoch, rows: &[Row], late: &[LateEntry]) -> Result<(), SinkError>;
    /// Makes everything staged for `epoch` (and before) visible.
    fn commit(&mut self, epoch: Epoch) -> Result<(), SinkError>;
}

/// Creates the sink of a worker, by worker index.
pub type SinkFactory = std::sync::Arc<dyn Fn(usize) -> Box<dyn Sink> + Send + Sync>;
