//! Errors of the embedded log, one line each.
//!
//! Every error names what it is about (the path, the partition, the offset)
//! and the reason, so that an operator can act on it without a debugger.
//! Corruption is always an error: the log never skips a record it cannot
//! read. The only damage it repairs by itself is a torn tail (see
//! [`super::RecoveryReport`]), which by the durability contract holds no
//! acknowledged record.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use super::record::MAX_AD_BYTES;

/// What went wrong in the embedded log.
#[derive(Debug, Error)]
pub enum LogError {
    /// A file system call failed.
    #[error("log {}: {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        /// What was being done: "open", "fsync", "truncate", ...
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// Another process has the log open (`pid` as it recorded itself).
    #[error("log {} is in use by {}: one process at a time writes a log (stop it first)", path.display(), pid.map_or("another process".to_owned(), |pid| format!("pid {pid}")))]
    Locked { path: PathBuf, pid: Option<u32> },

    /// [`super::LogOptions`] or the partition count are out of range.
    #[error("log options: {0}")]
    Options(String),

    /// `dir/meta` is missing a field, malformed, or of another format version.
    /// There is no log in this directory.
    #[error("log {}: no log here (nothing was ever appended to it)", path.display())]
    Missing { path: PathBuf },

    #[error("log meta {}: {reason}", path.display())]
    Meta { path: PathBuf, reason: String },

    /// The log was created with another partition count.
    #[error("log {}: created with {stored} partitions, opened with {requested}", dir.display())]
    PartitionCount { dir: PathBuf, stored: u32, requested: u32 },

    /// A partition directory holds something that is not a valid segment
    /// layout (a bad segment file name, a gap between segments).
    #[error("log partition {partition}: {}: {reason}", path.display())]
    Layout { partition: u32, path: PathBuf, reason: String },

    /// A record that cannot be read, with valid data after it (or found by a
    /// reader): never skipped.
    #[error("log partition {partition}: corrupt record at offset {offset} (byte {position} of {}): {reason}", path.display())]
    Corrupt { partition: u32, path: PathBuf, offset: u64, position: u64, reason: String },

    /// No such partition.
    #[error("log: no partition {partition} (the log has {partitions})")]
    NoSuchPartition { partition: u32, partitions: u32 },

    /// A reader asked for an offset that retention has deleted.
    #[error("log partition {partition}: offset {offset} is no longer retained (oldest retained offset is {oldest})")]
    OffsetRetained { partition: u32, offset: u64, oldest: u64 },

    /// A reader asked for an offset that has not been written yet.
    #[error("log partition {partition}: offset {offset} is beyond the end offset {end}")]
    OffsetBeyondEnd { partition: u32, offset: u64, end: u64 },

    /// A click's ad id does not fit the record's one-byte length.
    #[error("log: ad id of {len} bytes does not fit a record (max {MAX_AD_BYTES})")]
    AdTooLong { len: usize },

    /// A click's event time is above [`crate::event::MAX_EVENT_TIME_MS`].
    #[error("log: timestamp {ts} is too large: {}", crate::event::MAX_EVENT_TIME_REASON)]
    TimestampTooLarge { ts: u64 },

    /// An earlier append to this partition failed to write or fsync; the
    /// partition takes no more appends until the log is reopened (after a
    /// failed fsync the page cache can no longer be trusted).
    #[error("log partition {partition}: appends stopped after a write failure ({reason}); reopen the log")]
    Failed { partition: u32, reason: String },
}

impl LogError {
    /// The status of [`crate::exit`]: busy while another process writes the
    /// log, usage when it was asked for what it does not have, failed
    /// otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            LogError::Locked { .. } => crate::exit::BUSY,
            LogError::Options(_)
            | LogError::Missing { .. }
            | LogError::PartitionCount { .. }
            | LogError::NoSuchPartition { .. }
            | LogError::OffsetRetained { .. }
            | LogError::OffsetBeyondEnd { .. } => crate::exit::USAGE,
            _ => crate::exit::FAILED,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str) -> impl FnOnce(io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { path, op, source }
    }
}
