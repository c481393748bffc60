//! Where each epoch's commit spends its time, for benchmarks
//! (`bench/run-cassandra.sh`): with `TALLY_COMMIT_TIMES=FILE` in the
//! environment, the writer appends one line per commit to FILE.
//!
//! The line is tab-separated, under a header line written when the file is
//! new: the epoch, the microseconds of each step (encode and stage, the
//! commit transaction with any read-back, apply, mark applied and drop the
//! staging) and of the whole, the staged chunks and bytes, and the rows the
//! apply wrote (one per statement: serving tables, ledger and state). A
//! figure, never a decision: a file that cannot be written is reported
//! once and recording stops; the commit goes on.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
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

/// The timings of the commit in progress: its steps follow one another,
/// so together they are the whole.
#[derive(Debug)]
pub struct CommitClock {
    last: Instant,
    steps: [Duration; 4],
}

impl CommitClock {
    pub fn start() -> CommitClock {
        CommitClock { last: Instant::now(), steps: [Duration::ZERO; 4] }
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
        match std::env::var_os(COMMIT_TIMES_ENV) {
            Some(path) => CommitTimes::open(Path::new(&path)),
            None => Ok(CommitTimes::default()),
        }
    }

    /// Opens `path` for appending, writing the header if it is new.
    fn open(path: &Path) -> Result<CommitTimes, StoreError> {
        let io = |source| StoreError::Io { path: path.to_owned(), source };
        let mut file = OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
        if file.metadata().map_err(io)?.len() == 0 {
            file.write_all(HEADER.as_bytes()).map_err(io)?;
        }
        Ok(CommitTimes { file: Some((path.to_owned(), file)) })
    }

    /// Appends the line of one commit.
    pub fn record(&mut self, clock: &CommitClock, size: CommitSize) {
        let Some((path, file)) = &mut self.file else { return };
        let [stage, commit, apply, mark] = clock.steps.map(|step| step.as_micros());
        let whole = stage + commit + apply + mark;
        let line = format!(
            "{}\t{stage}\t{commit}\t{apply}\t{mark}\t{whole}\t{}\t{}\t{}\n",
            size.epoch, size.chunks, size.payload_bytes, size.rows
        );
        if let Err(error) = file.write_all(line.as_bytes()) {
            tracing::warn!("cassandra: {COMMIT_TIMES_ENV}: writing {}: {error}; no more commits are recorded", path.display());
            self.file = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_commit_is_one_line_under_one_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("times.tsv");
        let size = |epoch| CommitSize { epoch, chunks: 2, payload_bytes: 300, rows: 40 };
        let mut clock = CommitClock::start();
        [Step::Stage, Step::Commit, Step::Apply, Step::Mark].into_iter().for_each(|step| clock.done(step));
        CommitTimes::open(&path).unwrap().record(&clock, size(1_000));
        CommitTimes::open(&path).unwrap().record(&clock, size(2_000));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Vec<&str>> = text.lines().map(|line| line.split('\t').collect()).collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], HEADER.trim_end().split('\t').collect::<Vec<_>>());
        for (line, epoch) in lines[1..].iter().zip(["1000", "2000"]) {
            assert_eq!((line.len(), line[0], &line[6..]), (9, epoch, &["2", "300", "40"][..]));
            let steps: u128 = line[1..5].iter().map(|us| us.parse::<u128>().unwrap()).sum();
            assert_eq!(steps, line[5].parse::<u128>().unwrap(), "the steps add up to the whole");
        }
    }
}
