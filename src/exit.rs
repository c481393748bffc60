//! Exit statuses: one table for every `tally` command, so that a script or
//! a supervisor (`scripts/cluster.sh`) can tell a mistake it must not
//! retry from a failure that a retry may mend. README's "Exit status"
//! section is this table.
//!
//! A panic is never an answer to anything a user can type: the status 101
//! it ends with ([`PANIC`]) means a bug.

/// The command did what it was asked.
pub const OK: i32 = 0;
/// It failed while running (I/O, the log, the store, Kafka, Cassandra, a
/// cluster peer), or `tally verify` found mismatches. A retry may succeed.
pub const FAILED: i32 = 1;
/// The command line, a job, config or catalog file, the input, or
/// something it names (a store, a version, a log position) is wrong or
/// missing: the same command will fail again.
pub const USAGE: i32 = 2;
/// Another process holds the data directory's log or store: try again once
/// it has stopped.
pub const BUSY: i32 = 3;
/// A bug: a worker thread panicked, and the process stopped (fail-stop).
pub const PANIC: i32 = 101;
