//! The writer: begin a generation, stage, commit, apply, recover.
//!
//! One [`CassandraStore`] per running job (the process that holds worker 0
//! of the cluster). Each step is described in `mod.rs`; the decisions on
//! the `jobs` row read back are in `protocol.rs`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use scylla::errors::ExecutionError;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;

use super::apply;
use super::config::CassandraConfig;
use super::db::{applied, Access, Db};
use super::layout::{signed, ttl_seconds};
use super::payload::{self, PayloadSummary, Staged};
use super::protocol::{
    began, commit_outcome, encode_checkpoints, epoch_column, mark_outcome, CommitOutcome, CommitRecord, JobColumns, JobRow, MarkOutcome,
};
use super::query::CassandraReader;
use super::timing::{CommitClock, CommitSize, CommitTimes, Step};
use crate::catalog::Catalog;
use crate::store::read::StoreReader;
use crate::store::settings::CatalogStamp;
use crate::store::{advance_checkpoints, EpochCommit, EpochStore, PartitionCheckpoint, Recovered, StoreError};

/// How long a staged payload lives if no apply deletes it: an epoch whose
/// commit never happened (its process died or was fenced first). A
/// committed epoch's payload must outlive the job's downtime before its
/// recovery: a job down longer than this after a commit whose apply did not
/// finish cannot recover it, and says so.
pub const STAGING_TTL_S: i32 = 30 * 24 * 3_600;
/// Attempts of one lightweight transaction whose outcome was read back as
/// "not applied" before the commit fails.
const LWT_ATTEMPTS: u32 = 5;
/// First pause before such a new attempt; doubles each time.
const LWT_RETRY_FIRST: Duration = Duration::from_millis(200);
/// Attempts of the SERIAL read of the `jobs` row before the step that
/// needed it fails. The driver never retries a serial read, and one fails
/// when its coordinator dies or while the cluster has not yet noticed a
/// dead replica; it is a read, so repeating it is always safe.
const SERIAL_READ_ATTEMPTS: u32 = 6;

/// Where a commit can be made to stop (`Faults::crash`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// The payload is staged, the commit record not written.
    Staged,
    /// The commit record is written, nothing applied.
    Committed,
    /// Half of the epoch's writes to the serving tables are done.
    HalfApplied,
}

/// Breakages of the protocol for tests, from `TALLY_FAULT`
/// (comma-separated): a process that stops at a chosen point, a commit
/// whose answer is lost, and a deliberately broken recovery that `tally
/// verify` must catch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// `crash:staged:N`, `crash:committed:N`, `crash:half-applied:N`: the
    /// process aborts at that point of its Nth commit (counting from 1), as
    /// if killed there.
    pub crash: Option<(CrashPoint, u32)>,
    /// `lost-answer:N`: the answer to the Nth commit's transaction is
    /// dropped after it ran, as if the request had timed out.
    pub lost_answer: Option<u32>,
    /// `commit-timeout:N:MS`: the Nth commit's transaction runs with a
    /// client-side timeout of MS milliseconds.
    pub commit_timeout: Option<(u32, Duration)>,
    /// `skip-reapply` (broken on purpose): a recovery marks the committed
    /// epoch applied without applying it.
    pub skip_reapply: bool,
}

impl Faults {
    pub fn from_env() -> Faults {
        Faults::parse(&std::env::var("TALLY_FAULT").unwrap_or_default())
    }

    /// Reads the faults this store knows from a `TALLY_FAULT` value and
    /// ignores the others (the sink's).
    pub fn parse(text: &str) -> Faults {
        let mut faults = Faults::default();
        for fault in text.split(',').map(str::trim) {
            let parts: Vec<&str> = fault.split(':').collect();
            let number = |i: usize| parts.get(i).and_then(|n| n.parse::<u32>().ok());
            match (parts.as_slice(), number(2), number(1)) {
                (["crash", "staged", _], Some(n), _) => faults.crash = Some((CrashPoint::Staged, n)),
                (["crash", "committed", _], Some(n), _) => faults.crash = Some((CrashPoint::Committed, n)),
                (["crash", "half-applied", _], Some(n), _) => faults.crash = Some((CrashPoint::HalfApplied, n)),
                (["lost-answer", _], _, Some(n)) => faults.lost_answer = Some(n),
                (["commit-timeout", _, _], Some(ms), Some(n)) => faults.commit_timeout = Some((n, Duration::from_millis(ms.into()))),
                (["skip-reapply"], ..) => faults.skip_reapply = true,
                _ => {}
            }
        }
        faults
    }
}

/// The Cassandra store of one job, as its writer.
pub struct CassandraStore {
    db: Arc<Db>,
    /// TTL of the serving tables' cells.
    ttl_s: i32,
    /// Who this writer is, in the `jobs` row.
    owner: String,
    /// The generation begun, once begun.
    generation: Option<u64>,
    /// The committed (and applied) epoch this writer commits on top of,
    /// with every partition's checkpoint after it.
    tip: Option<(u64, Vec<PartitionCheckpoint>)>,
    faults: Faults,
    /// Commits made by this process.
    commits: u32,
    /// Where each commit's timings go, if anywhere (`timing.rs`).
    times: CommitTimes,
}

impl CassandraStore {
    /// Connects, creating the keyspace and tables if missing. Rows,
    /// versions and ledger entries live `retention_ms` after they are
    /// written.
    pub fn open(config: &CassandraConfig, job: &str, retention_ms: u64, faults: Faults) -> Result<CassandraStore, StoreError> {
        let times = CommitTimes::from_env()?;
        let db = Arc::new(Db::connect(config, job, Access::Write)?);
        let ttl_s = ttl_seconds(retention_ms);
        Ok(CassandraStore { db, ttl_s, owner: owner_token(), generation: None, tip: None, faults, commits: 0, times })
    }

    /// Publishes the catalog the job counts with (`catalog.rs`), once per
    /// fingerprint; whether it wrote it.
    pub fn publish_catalog(&self, stamp: &CatalogStamp, catalog: &Catalog) -> Result<bool, StoreError> {
        super::catalog::publish(&self.db, stamp, catalog)
    }

    /// A reader sharing this store's session.
    pub fn reader(&self) -> CassandraReader {
        CassandraReader::of(Arc::clone(&self.db))
    }

    /// The `jobs` row read with SERIAL consistency, tried again after a
    /// failure ([`SERIAL_READ_ATTEMPTS`]).
    fn read_job(&self) -> Result<Option<JobRow>, StoreError> {
        let mut pause = LWT_RETRY_FIRST;
        let mut attempt = 1;
        loop {
            match self.db.read_all::<JobColumns>(&self.db.st.read_job_serial, (self.db.job.as_str(),)) {
                Ok(rows) => {
                    let row = rows.into_iter().next().map(JobRow::from_columns);
                    return row.transpose().map_err(|e| self.db.corrupt(e));
                }
                Err(error) if attempt < SERIAL_READ_ATTEMPTS => {
                    tracing::warn!("cassandra: reading the jobs row with SERIAL consistency: {error}; trying again in {pause:?}");
                    std::thread::sleep(pause);
                    pause *= 2;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The row read back with SERIAL consistency, which must exist.
    fn read_back(&self) -> Result<JobRow, StoreError> {
        self.read_job()?.ok_or_else(|| self.db.corrupt("the jobs row of this job is gone"))
    }

    /// Runs a lightweight transaction: whether it applied, or the error
    /// after which nobody knows.
    fn transaction(&self, statement: &PreparedStatement, values: impl SerializeRow) -> Result<bool, Box<ExecutionError>> {
        applied(self.db.block_on(self.db.session.execute_unpaged(statement, values)))
    }

    /// Begins the next generation: `generation + 1 IF generation = g`,
    /// read back after any failure. Another process beginning at the same
    /// time makes this one begin again from the newer row.
    fn begin(&self) -> Result<u64, StoreError> {
        let job = self.db.job.as_str();
        for _ in 0..LWT_ATTEMPTS {
            let row = self.read_job()?;
            let generation = row.as_ref().map_or(1, |r| r.generation + 1);
            let answer = match &row {
                None => self.transaction(&self.db.st.create_job, (job, signed(generation), self.owner.as_str())),
                Some(r) => self.transaction(&self.db.st.begin, (signed(generation), self.owner.as_str(), job, signed(r.generation))),
            };
            match answer {
                Ok(true) => return Ok(generation),
                Ok(false) => continue,
                Err(error) => {
                    if began(self.read_job()?.as_ref(), generation, &self.owner) {
                        tracing::warn!("cassandra: beginning generation {generation}: {error}; read back: begun");
                        return Ok(generation);
                    }
                }
            }
        }
        Err(self.db.error(format!("no generation could be begun in {LWT_ATTEMPTS} attempts (other processes begin at the same time)")))
    }

    /// Writes every chunk of `staged` under `(job, epoch, generation)`.
    fn stage(&self, epoch: u64, generation: u64, staged: &Staged) -> Result<(), StoreError> {
        let job = self.db.job.as_str();
        let writes = (0..).zip(&staged.chunks).map(|(number, chunk): (i32, &Vec<u8>)| {
            self.db.write(&self.db.st.stage_chunk, (job, signed(epoch), signed(generation), number, chunk.as_slice(), STAGING_TTL_S))
        });
        self.db.write_all(writes.collect())
    }

    /// The commit: one lightweight transaction on the `jobs` partition,
    /// `IF generation = ours AND committed_epoch = previous AND applied_epoch
    /// = previous`. Any failure is decided by reading the row back.
    fn write_commit_record(
        &self,
        epoch: u64,
        generation: u64,
        summary: PayloadSummary,
        checkpoints: &[PartitionCheckpoint],
    ) -> Result<(), StoreError> {
        let previous = self.tip.as_ref().map(|(epoch, _)| *epoch);
        let blob = encode_checkpoints(checkpoints);
        let mut pause = LWT_RETRY_FIRST;
        for attempt in 1..=LWT_ATTEMPTS {
            let values = (
                signed(epoch),
                signed(generation),
                summary.chunks as i32,
                signed(summary.bytes),
                i64::from(summary.crc),
                blob.as_slice(),
                self.db.job.as_str(),
                signed(generation),
                epoch_column(previous),
                epoch_column(previous),
            );
            let answer = self.commit_transaction(values, attempt == 1);
            let unknown = match answer {
                Ok(true) => return Ok(()),
                Ok(false) => None,
                Err(error) => Some(error),
            };
            let outcome = commit_outcome(&self.read_back()?, generation, epoch, previous);
            if let Some(error) = &unknown {
                tracing::warn!(
                    "cassandra: the commit of epoch {epoch} had an unknown outcome ({error}); read back with SERIAL: {outcome:?}"
                );
            }
            match outcome {
                CommitOutcome::Committed => return Ok(()),
                CommitOutcome::Fenced { current } => {
                    return Err(StoreError::Fenced { target: self.db.target.to_string(), generation, current })
                }
                CommitOutcome::Inconsistent(what) => return Err(self.db.corrupt(what)),
                CommitOutcome::NotCommitted => {
                    std::thread::sleep(pause);
                    pause *= 2;
                }
            }
        }
        Err(self.db.error(format!("epoch {epoch} was not committed in {LWT_ATTEMPTS} attempts")))
    }

    /// The commit transaction, with the faults a test asked for (on the
    /// first attempt of a commit only).
    fn commit_transaction(&self, values: impl SerializeRow, first: bool) -> Result<bool, Box<ExecutionError>> {
        let number = if first { self.commits } else { 0 };
        match self.faults.commit_timeout {
            Some((n, timeout)) if n == number => {
                let mut statement = self.db.st.commit.clone();
                statement.set_request_timeout(Some(timeout));
                self.transaction(&statement, values)
            }
            _ => {
                let answer = self.transaction(&self.db.st.commit, values);
                match self.faults.lost_answer {
                    Some(n) if n == number => Err(Box::new(ExecutionError::RequestTimeout(Duration::ZERO))),
                    _ => answer,
                }
            }
        }
    }

    /// Marks `epoch` applied (`IF committed_epoch = epoch`), read back after
    /// any failure.
    fn mark_applied(&self, epoch: u64, generation: u64, checkpoints: &[PartitionCheckpoint]) -> Result<(), StoreError> {
        let blob = encode_checkpoints(checkpoints);
        let values = (signed(epoch), signed(generation), blob.as_slice(), self.db.job.as_str(), signed(epoch));
        let mut pause = LWT_RETRY_FIRST;
        for _ in 0..LWT_ATTEMPTS {
            if let Ok(true) = self.transaction(&self.db.st.mark_applied, values) {
                return Ok(());
            }
            match mark_outcome(&self.read_back()?, epoch) {
                MarkOutcome::Marked => return Ok(()),
                MarkOutcome::Inconsistent(what) => return Err(self.db.corrupt(what)),
                MarkOutcome::NotMarked => {
                    std::thread::sleep(pause);
                    pause *= 2;
                }
            }
        }
        Err(self.db.error(format!("epoch {epoch} was not marked applied in {LWT_ATTEMPTS} attempts")))
    }

    /// Writes `commit` to the serving tables and the state; how many rows.
    fn apply(&self, commit: &EpochCommit, crash_halfway: bool) -> Result<usize, StoreError> {
        let mut writes = apply::writes(&self.db, commit, self.ttl_s);
        if crash_halfway {
            let _never_written = writes.split_off(writes.len() / 2);
            self.db.write_all(writes)?;
            crash("half of its apply");
        }
        let rows = writes.len();
        self.db.write_all(writes)?;
        Ok(rows)
    }

    /// Deletes an applied epoch's staging. A failure leaves it to its TTL.
    fn drop_staging(&self, epoch: u64, generation: u64) {
        let values = (self.db.job.as_str(), signed(epoch), signed(generation));
        let _expires_anyway = self.db.block_on(self.db.session.execute_unpaged(&self.db.st.drop_staging, values));
    }

    /// Applies a committed epoch that was not applied, from its staged
    /// payload, and marks it applied. Every chunk was written before the
    /// commit record, at the same consistency.
    fn recover(&self, committed: &CommitRecord) -> Result<(), StoreError> {
        let key = (self.db.job.as_str(), signed(committed.epoch), signed(committed.generation));
        let chunks: Vec<(i32, Vec<u8>)> = self.db.read_all(&self.db.st.read_staging, key)?;
        let chunks = chunks.into_iter().map(|(number, bytes)| (number as u32, bytes)).collect();
        let commit = payload::decode(chunks, &committed.payload).map_err(|e| {
            self.db.corrupt(format!("staged payload of committed epoch {} (generation {}): {e}", committed.epoch, committed.generation))
        })?;
        assert_eq!((commit.epoch, commit.generation), (committed.epoch, committed.generation), "the staged epoch is the one committed");
        if !self.faults.skip_reapply {
            self.apply(&commit, false)?;
        }
        self.mark_applied(committed.epoch, committed.generation, &committed.checkpoints)?;
        self.drop_staging(committed.epoch, committed.generation);
        Ok(())
    }

    fn crash_point(&self, point: CrashPoint) -> bool {
        self.faults.crash == Some((point, self.commits))
    }
}

impl EpochStore for CassandraStore {
    /// Begins the next generation, then finishes the last committed epoch
    /// if its apply did not: from here on, no older generation commits.
    fn begin_generation(&mut self) -> Result<u64, StoreError> {
        let generation = self.begin()?;
        let row = self.read_back()?;
        if let Some(committed) = row.unapplied() {
            tracing::warn!(
                "cassandra: epoch {} (generation {}) is committed but not applied: applying it from staging",
                committed.epoch,
                committed.generation
            );
            self.recover(committed)?;
        }
        self.tip = row.committed.map(|c| (c.epoch, c.checkpoints));
        self.generation = Some(generation);
        Ok(generation)
    }

    fn commit(&mut self, commit: EpochCommit) -> Result<(), StoreError> {
        let generation = self.generation.expect("a generation is begun before the first commit");
        assert_eq!(commit.generation, generation, "commit of generation {} by generation {generation}", commit.generation);
        if let Some((previous, _)) = &self.tip {
            assert!(commit.epoch > *previous, "epoch {} committed after epoch {previous}", commit.epoch);
        }
        self.commits += 1;
        let stored = self.tip.as_ref().map(|(_, checkpoints)| checkpoints.clone()).unwrap_or_default();
        let checkpoints = advance_checkpoints(stored, &commit.partitions);
        let mut clock = CommitClock::start();
        let staged = payload::encode(&commit);
        self.stage(commit.epoch, generation, &staged)?;
        clock.done(Step::Stage);
        if self.crash_point(CrashPoint::Staged) {
            crash("staging, before its commit record");
        }
        self.write_commit_record(commit.epoch, generation, staged.summary(), &checkpoints)?;
        clock.done(Step::Commit);
        if self.crash_point(CrashPoint::Committed) {
            crash("its commit record, before its apply");
        }
        let rows = self.apply(&commit, self.crash_point(CrashPoint::HalfApplied))?;
        clock.done(Step::Apply);
        self.mark_applied(commit.epoch, generation, &checkpoints)?;
        self.drop_staging(commit.epoch, generation);
        clock.done(Step::Mark);
        let size = CommitSize { epoch: commit.epoch, chunks: staged.chunks.len(), payload_bytes: staged.bytes, rows };
        self.times.record(&clock, size);
        self.tip = Some((commit.epoch, checkpoints));
        Ok(())
    }

    fn last_committed(&self) -> Result<Option<Recovered>, StoreError> {
        self.reader().snapshot()?.last_committed()
    }
}

/// Stops the process where a test asked, as a SIGKILL there would.
fn crash(after: &str) -> ! {
    tracing::error!("TALLY_FAULT: stopping the process after {after}");
    std::process::abort()
}

/// Names this writer in the `jobs` row: host, process and start time.
fn owner_token() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{host}/{}/{nanos}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_read_from_a_list_and_others_ignored() {
        let faults = Faults::parse("drop-state, crash:committed:7,lost-answer:3,commit-timeout:2:5,skip-reapply");
        assert_eq!(
            faults,
            Faults {
                crash: Some((CrashPoint::Committed, 7)),
                lost_answer: Some(3),
                commit_timeout: Some((2, Duration::from_millis(5))),
                skip_reapply: true
            }
        );
        assert_eq!(Faults::parse("crash:half-applied:1").crash, Some((CrashPoint::HalfApplied, 1)));
        assert_eq!(Faults::parse("crash:staged:x,offsets-before-rows"), Faults::default());
        assert_eq!(Faults::parse(""), Faults::default());
    }
}
