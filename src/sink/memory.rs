//! In-memory sink: committed epochs collected for tests and benchmarks.

use std::sync::{Arc, Mutex};

use super::{Epoch, EpochBatch, Sink, SinkError};
use crate::row::{LateEntry, Row};

/// Everything committed, in commit order; shared by the workers of a process.
#[derive(Clone, Default)]
pub struct MemorySink {
    committed: Arc<Mutex<Committed>>,
    staged_rows: Vec<Row>,
    staged_late: Vec<LateEntry>,
}

#[derive(Default)]
pub struct Committed {
    pub rows: Vec<Row>,
    pub late: Vec<LateEntry>,
    pub epochs: u64,
}

impl MemorySink {
    /// A new handle on the same committed output.
    pub fn handle(&self) -> MemorySink {
        MemorySink { committed: Arc::clone(&self.committed), ..Default::default() }
    }

    /// Takes the committed output.
    pub fn take(&self) -> Committed {
        std::mem::take(&mut *self.committed.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Sink for MemorySink {
    fn stage(&mut self, _epoch: Epoch, batch: &EpochBatch) -> Result<(), SinkError> {
        self.staged_rows.extend_from_slice(&batch.rows);
        self.staged_late.extend_from_slice(&batch.late);
        Ok(())
    }

    fn commit(&mut self, _epoch: Epoch) -> Result<(), SinkError> {
        let mut committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        committed.rows.append(&mut self.staged_rows);
        committed.late.append(&mut self.staged_late);
        committed.epochs += 1;
        Ok(())
    }
}
