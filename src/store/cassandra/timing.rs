//! Where each epoch's commit spends its time, for benchmarks
//! (`bench/run-cassandra.sh`): with `TALLY_COMMIT_TIMES=FILE` in the
//! environment, the writer appends one line per commit to FILE.
//!
//! The line is tab-separated, under a header line written when the file is
//! new: the epoch, the microseconds of each step (encode and stage, the
//! commit transaction with any read-back, apply, mark applied and drop the
//! staging) and of the whole, the staged chunks
//! and bytes, and the rows the apply wrote (one per statement: serving
//! tables, ledger and state). A figure, never a decision: a file that
//! cannot be written is reported once and recording stops; the commit goes
//! on.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::store::StoreError;

/// The environment variable naming the file.
const COMMIT_TIMES_ENV: &str = "TALLY_COMMIT_TIMES";
/// The first line of a new file.
const HEADER: &str = "epoch\tstage_us\tcommit_us\tapply_us\tmark_us\ttotal_us\tchunks\tpayload_bytes\trows\n";

/// The steps of one commit, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Stage,
    Commit,
    Apply,
    Mark,
}

/// The timings of the commit in progress.
#[derive(Debug)]
pub struct CommitClock {
    started: Instant,
    last: Instant,
    steps: [Duration; 4],
}

impl CommitClock {
    pub fn start() -> CommitClock {
        let now = Instant::now();
        CommitClock { started: now, last: now, steps: [Duration::ZERO; 4] }
    }

    /// Ends `step`: the time since the previous step ended is its own.
    pub fn done(&mut self, step: Step) {
        let now = Instant::now();
        self.steps[step as usize] = now - self.last;
        self.last = now;
    }
}

/// What one commit wrote, besides its timings.
#[derive(Clone, Copy, Debug)]
pub struct CommitSize {
    pub epoch: u64,
    pub chunks: usize,
    pub payload_bytes: u64,
    pub rows: usize,
}

/// The file commits are recorded in, if any.
#[derive(Debug, Default)]
pub struct CommitTimes {
    file: Option<(PathBuf, File)>,
}

impl CommitTimes {
    /// Opens the file `TALLY_COMMIT_TIMES` names for appending (none if
    /// unset), writing the header if it is new.
    pub fn from_env() -> Result<CommitTimes, StoreError> {
        let Some(path) = std::env::var_os(COMMIT_TIMES_ENV).map(PathBuf::from) else {
            return Ok(CommitTimes::default());
        };
        let io = |source| StoreError::Io { path: path.clone(), source };
        let mut file = OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
        if file.metadata().map_err(io)?.len() == 0 {
            file.write_all(HEADER.as_bytes()).map_err(io)?;
        }
        Ok(CommitTimes { file: Some((path, file)) })
    }

    /// Appends the line of one commit.
    pub fn record(&mut self, clock: &CommitClock, size: CommitSize) {
        let Some((path, file)) = &mut self.file else { return };
        let us = |d: Duration| d.as_micros();
        let [stage, commit, apply, mark] = clock.steps;
        let line = format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            size.epoch,
            us(stage),
            us(commit),
            us(apply),
            us(mark),
            us(clock.last - clock.started),
            size.chunks,
            size.payload_bytes,
            size.rows
        );
        if let Err(error) = file.write_all(line.as_bytes()) {
            eprintln!("cassandra: {COMMIT_TIMES_ENV}: writing {}: {error}; no more commits are recorded", path.display());
            self.file = None;
        }
    }
}
