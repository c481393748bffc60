//! Stores: where committed epochs live.
//!
//! An epoch commit is everything one epoch of the job produced and everything
//! a restarted job needs to resume after it: the window rows that changed (as
//! absolute values), the late-ledger entries, every partition's checkpoint
//! (offset, watermark inputs, dedup replay offset) and the keyed open-window
//! state. A store applies an [`EpochCommit`] all or nothing, and readers see
//! either all of an epoch or none of it.
//!
//! The types here are backend-neutral: the embedded store ([`embedded`], one
//! redb transaction per epoch) and the Cassandra store ([`cassandra`], a
//! staged payload, one fenced commit transaction, an apply under the epoch's
//! timestamp) implement [`EpochStore`], and both are read through
//! [`StoreReader`] / [`StoreSnapshot`] ([`read`]).
//!
//! What every store guarantees to the job:
//!
//! - **Atomic epochs.** After a crash, [`EpochStore::last_committed`] returns
//!   the last epoch whose commit returned `Ok`, with exactly the rows, ledger,
//!   checkpoints and state of the epochs up to it.
//! - **Order.** Epochs are committed in strictly increasing order, and no
//!   partition's offset moves backwards; both are asserted, since a violation
//!   is a bug in the job, not bad input.
//! - **Fencing.** A commit of a generation older than the newest one handed
//!   out by [`EpochStore::begin_generation`] is refused with
//!   [`StoreError::Fenced`]; a restarted job therefore cannot be overwritten
//!   by a zombie of its previous run.
//! - **Settled rows stay settled.** A `partial` row never replaces a `final`
//!   or `restated` one, and every settled version stays readable in the
//!   history until retention removes its window.

pub mod cassandra;
pub mod codes;
pub mod embedded;
pub mod read;
pub mod settings;
pub mod versions;

pub use embedded::{EmbeddedReader, EmbeddedStore, Snapshot};
pub use read::{LatePosition, LateRecord, ReadBack, StoreReader, StoreSnapshot, Visit};

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::event::{EventTime, Key, KeyType};
use crate::row::{LateEntry, Row, Status};

/// How long the job keeps rows, versions and ledger entries by default: two
/// years of event time (365-day years).
pub const DEFAULT_RETENTION_MS: u64 = 2 * 365 * 24 * 3_600_000;

/// Everything one epoch commits, all or nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochCommit {
    /// Strictly increasing across commits (asserted).
    pub epoch: u64,
    /// The committing job's generation: refused if below the stored one.
    pub generation: u64,
    /// Window rows emitted this epoch, with absolute values, in emission
    /// order.
    pub rows: Vec<StoredRow>,
    /// Late-ledger entries of this epoch.
    pub late: Vec<LateEntry>,
    /// Checkpoints of the partitions this epoch advanced. Partitions not
    /// listed keep their stored checkpoint.
    pub partitions: Vec<PartitionCheckpoint>,
    /// Opaque open-window state, keyed by the dataflow (keys are not tied to
    /// a worker, so a restart may use another worker count).
    pub state_upserts: Vec<(Vec<u8>, Vec<u8>)>,
    /// State keys to remove, applied after the upserts.
    pub state_deletes: Vec<Vec<u8>>,
}

/// A window row as stored: the row and its distinct-user sketch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRow {
    pub row: Row,
    /// Opaque sketch bytes; may be empty.
    pub sketch: Vec<u8>,
}

/// Where one log partition stands after an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionCheckpoint {
    pub partition: u32,
    /// Offset of the next click to read; never moves backwards.
    pub offset: u64,
    /// Largest event time read (the watermark is derived from it).
    pub max_ts: EventTime,
    /// Always 0 (partitions once had an idle floor); kept for the layout.
    pub floor: EventTime,
    /// Where to start reading to rebuild the dedup memory; at most `offset`.
    pub dedup_replay_offset: u64,
    /// The partition's progress (`max_ts`) just before `dedup_replay_offset`.
    pub dedup_replay_max_ts: EventTime,
}

/// What a restarting job resumes from: the last committed epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    pub epoch: u64,
    /// The generation that committed `epoch`.
    pub generation: u64,
    /// Every partition ever checkpointed, by partition.
    pub partitions: Vec<PartitionCheckpoint>,
    /// All open-window state, by key.
    pub state: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The identity of one window of one key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowKey {
    pub key_type: KeyType,
    pub key: Key,
    pub granularity_ms: u64,
    pub window_start: EventTime,
}

impl WindowKey {
    pub fn of(row: &Row) -> WindowKey {
        WindowKey { key_type: row.key_type, key: row.key.clone(), granularity_ms: row.granularity_ms, window_start: row.window_start }
    }
}

/// Rows of one key and granularity whose window starts in `[from, to)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowFilter {
    pub key_type: KeyType,
    pub key: Key,
    pub granularity_ms: u64,
    pub from: EventTime,
    pub to: EventTime,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store lock {} is held{}", path.display(), holder(*pid))]
    Locked { path: PathBuf, pid: Option<u32> },
    #[error("store {target}: commit of generation {generation} refused, generation {current} has started since")]
    Fenced { target: String, generation: u64, current: u64 },
    #[error("store {target}: format version {found}, this build reads version {expected}")]
    Format { target: String, found: u64, expected: u64 },
    #[error("store {target}: not closed cleanly, and its lock is held{} (a job repairs the store as it opens it; try again once it runs)", holder(*pid))]
    NeedsRepair { target: String, pid: Option<u32> },
    #[error("store {target}: closed (the process is stopping)")]
    Closed { target: String },
    #[error("store {target}: corrupt {what}")]
    Corrupt { target: String, what: String },
    #[error("store {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("store {target}: {source}")]
    Backend { target: String, source: Box<dyn std::error::Error + Send + Sync> },
}

impl StoreError {
    /// The status of [`crate::exit`]: busy while another process holds the
    /// store, usage when there is no store or it is of another format,
    /// failed otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            StoreError::Locked { .. } | StoreError::NeedsRepair { .. } => crate::exit::BUSY,
            StoreError::Format { .. } => crate::exit::USAGE,
            StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => crate::exit::USAGE,
            _ => crate::exit::FAILED,
        }
    }
}

fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!(" by process {pid}"),
        None => String::new(),
    }
}

/// A durable home for committed epochs.
pub trait EpochStore {
    /// Starts a new generation and persists it; commits of older generations
    /// are refused from now on. A (re)started job calls this once, first.
    fn begin_generation(&mut self) -> Result<u64, StoreError>;
    /// Applies the whole commit or nothing of it. Returns once it is durable.
    fn commit(&mut self, commit: EpochCommit) -> Result<(), StoreError>;
    /// The last committed epoch, or `None` if nothing was ever committed.
    fn last_committed(&self) -> Result<Option<Recovered>, StoreError>;
}

/// The stored checkpoints with this epoch's applied: every listed partition
/// moves forward (asserted), the others keep theirs.
pub(crate) fn advance_checkpoints(stored: Vec<PartitionCheckpoint>, advanced: &[PartitionCheckpoint]) -> Vec<PartitionCheckpoint> {
    let mut by_partition: BTreeMap<u32, PartitionCheckpoint> = stored.into_iter().map(|c| (c.partition, c)).collect();
    let mut seen = BTreeSet::new();
    for next in advanced {
        assert!(seen.insert(next.partition), "partition {} checkpointed twice in one epoch", next.partition);
        assert!(
            next.dedup_replay_offset <= next.offset,
            "partition {}: dedup replay offset {} beyond offset {}",
            next.partition,
            next.dedup_replay_offset,
            next.offset
        );
        if let Some(prev) = by_partition.get(&next.partition) {
            assert!(next.offset >= prev.offset, "partition {}: offset went back from {} to {}", next.partition, prev.offset, next.offset);
        }
        by_partition.insert(next.partition, *next);
    }
    by_partition.into_values().collect()
}

/// A row's version fits its status (asserted on every commit path).
pub(crate) fn assert_version_matches_status(row: &Row) {
    let ok = match row.status {
        Status::Partial => row.version == 0,
        Status::Final => row.version == 1,
        // A window whose first clicks were all too late has no final row:
        // its first restatement is version 1 (SEMANTICS.md).
        Status::Restated => row.version >= 1,
    };
    assert!(ok, "row with status {:?} and version {}: {row:?}", row.status, row.version);
}
