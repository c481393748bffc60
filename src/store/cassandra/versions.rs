//! Versions of a Cassandra job's output: builds made by `tally backfill`,
//! their manifests, and which version is served.
//!
//! A version's rows are those of an internal job, `JOB/NAME/BUILD`, in the
//! same tables as the job's own rows (version `live`), written by the same
//! [`CassandraStore`](super::CassandraStore) and read by the same
//! [`CassandraReader`]. Job and version names have no `/` and a build id
//! is random, so a build never shares rows with a job or another build.
//! The partition `output_versions(JOB)` says which builds are versions:
//!
//! - one row per name: the published `build` with its manifest, the
//!   `pending` build of a backfill in progress (its claim, with a
//!   heartbeat), and the `retired` builds whose rows are being deleted;
//! - the static columns `serving` and `serving_build`: the version served
//!   (`live` while never switched).
//!
//! Every write to that partition is a lightweight transaction that sets
//! new values if the ones it read (SERIAL) are still there. The pointer
//! and a version's row are in one partition, so one Paxos round checks and
//! changes both: a switch requires the version's build to be the one
//! published, a delete or a replace requires the pointer to name another
//! version. Hence, whatever runs at the same time, `serving = N` (not
//! `live`) always goes with row `N` publishing `serving_build`. A
//! transaction that did not apply, or whose outcome is unknown, is decided
//! by reading the partition again.
//!
//! A version appears whole: a backfill claims the name (`pending`, which
//! takes the claim over from an earlier backfill of the name: that build
//! is retired), runs into its build, and publishes only once the run has
//! committed everything (`build`, if `pending` is still its build). An
//! interrupted backfill leaves its claim, which nobody publishes: the next
//! backfill of the name takes it over at once, the next backfill of any
//! name sweeps it once its heartbeat is
//! [`CLAIM_LEASE`](super::CLAIM_LEASE) old, and in both cases deletes its
//! rows (`purge.rs`).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;

use super::config::CassandraConfig;
use super::db::{applied, prepare, Access, Db, Kind};
use super::layout::signed;
use super::purge::purge;
use super::query::CassandraReader;
use super::version_rows::{
    build_job, buildable, publish, served, stale, switch_to, unpublish, CassandraManifest, Columns, Decision, Partition, Pending,
    Published, Served, COLUMNS,
};
use crate::store::versions::{check_name, fill_committed, VersionError, VersionInfo, LIVE};
use crate::store::StoreError;

/// How often a running backfill renews its claim.
pub const CLAIM_HEARTBEAT: Duration = Duration::from_secs(10);
/// How long a build replaced or deleted stays readable before its rows
/// are deleted: a reader that opened it just before it stopped being
/// served (the query API looks at the pointer every 200 ms) finishes its
/// answer first.
pub const PURGE_GRACE: Duration = Duration::from_secs(2);
/// Reads and transactions of one change to the versions partition before
/// it gives up (other processes change it meanwhile).
const CHANGE_ATTEMPTS: u32 = 8;
/// First pause after a transaction whose outcome is unknown; doubles.
const RETRY_FIRST: Duration = Duration::from_millis(200);

/// A backfill's claim on a version name, until it publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub name: String,
    pub build: String,
    /// The internal job the build's rows are stored under.
    pub job: String,
    /// The claim of an earlier backfill of the name this one took over.
    pub took_over: Option<Pending>,
}

/// The versions of one job's output in Cassandra.
///
/// For the query API, to follow the pointer as `ServedStore` follows
/// `DATA/serving`: call [`serving`](Self::serving) (one read of one
/// partition) at most every few hundred ms; when the [`Served`] differs
/// from the one held, [`reader_of`](Self::reader_of) gives its reader (no
/// round trip: it shares this handle's session); answer each request from
/// one `snapshot()` of the reader held. A version stops being served
/// before it can be deleted, and its rows stay [`PURGE_GRACE`] after
/// that. Every call blocks on the store's own runtime: from async code,
/// call it on a blocking thread.
pub struct CassandraVersions {
    /// The job's own rows; every build's reader shares its session.
    db: Db,
    config: CassandraConfig,
    st: Statements,
}

impl CassandraVersions {
    /// Connects to read, switch and delete versions: a keyspace without
    /// tally's tables is refused, nothing is created.
    pub fn open(config: &CassandraConfig, job: &str) -> Result<CassandraVersions, VersionError> {
        CassandraVersions::connect(config, job, Access::Read)
    }

    /// Connects as a backfill, which writes: the keyspace and the tables
    /// are created if missing.
    pub fn open_to_build(config: &CassandraConfig, job: &str) -> Result<CassandraVersions, VersionError> {
        CassandraVersions::connect(config, job, Access::Write)
    }

    fn connect(config: &CassandraConfig, job: &str, access: Access) -> Result<CassandraVersions, VersionError> {
        let db = Db::connect(config, job, access)?;
        let st = db.block_on(Statements::prepare(&db, config)).map_err(|e| db.error(format!("prepare: {e}")))?;
        Ok(CassandraVersions { db, config: config.clone(), st })
    }

    /// The version served now (QUORUM).
    pub fn serving(&self) -> Result<Served, VersionError> {
        let rows: Vec<(Option<String>, Option<String>)> = self.db.read_all(&self.st.read_serving, (self.db.job.as_str(),))?;
        let (serving, build) = rows.into_iter().next().unwrap_or_default();
        Ok(self.served(serving, build)?)
    }

    /// The reader of a served version.
    pub fn reader_of(&self, served: &Served) -> CassandraReader {
        let job = match &served.build {
            Some(build) => build_job(&self.db.job, &served.name, build),
            None => self.db.job.clone(),
        };
        CassandraReader::of(Arc::new(self.db.for_job(&job)))
    }

    /// The reader of version `name`: `live`, or a published version.
    pub fn reader(&self, name: &str) -> Result<CassandraReader, VersionError> {
        check_name(name)?;
        if name == LIVE {
            return Ok(self.reader_of(&Served { name: LIVE.to_owned(), build: None }));
        }
        let partition = self.read(false)?;
        let build = partition.published(name).ok_or_else(|| VersionError::Unknown(name.to_owned()))?;
        Ok(self.reader_of(&Served { name: name.to_owned(), build: Some(build.to_owned()) }))
    }

    /// The version served now, and its reader.
    pub fn serving_reader(&self) -> Result<(Served, CassandraReader), VersionError> {
        let served = self.serving()?;
        let reader = self.reader_of(&served);
        Ok((served, reader))
    }

    /// Every version: `live` first, then the published ones by name. Live's
    /// rows are counted (a scan of its rows); a version's were counted
    /// when it was published.
    pub fn list(&self) -> Result<Vec<VersionInfo>, VersionError> {
        let partition = self.read(false)?;
        let served = self.served_in(&partition)?;
        let mut out = vec![self.info(LIVE, None, served.name == LIVE)];
        for (name, row) in &partition.names {
            if let Some(published) = &row.published {
                out.push(self.info(name, Some(published), served.name == *name));
            }
        }
        Ok(out)
    }

    fn info(&self, name: &str, published: Option<&Published>, serving: bool) -> VersionInfo {
        let mut info = VersionInfo {
            name: name.to_owned(),
            serving,
            manifest: published.map(|p| p.manifest.manifest.clone()),
            origin: None,
            committed_offsets: None,
            committed_epoch: None,
            rows: published.map_or(0, |p| p.manifest.rows),
            problem: None,
        };
        let build = published.map(|p| p.build.clone());
        let reader = self.reader_of(&Served { name: name.to_owned(), build });
        let mut read = || -> Result<(), String> {
            let snapshot = reader.snapshot_now().map_err(|e| e.to_string())?;
            if published.is_none() {
                info.rows = crate::store::StoreSnapshot::row_count(&snapshot).map_err(|e| e.to_string())?;
            }
            fill_committed(&snapshot, &mut info)
        };
        if let Err(problem) = read() {
            info.problem = Some(problem);
        }
        info
    }

    /// Makes `name` the version served; returns the one served before.
    pub fn switch(&self, name: &str) -> Result<String, VersionError> {
        check_name(name)?;
        let job = self.db.job.clone();
        let mut previous = None;
        self.change(|partition| {
            let served = self.served_in(partition)?;
            let previous = previous.get_or_insert_with(|| served.name.clone()).clone();
            Ok(match switch_to(partition, &served, name)? {
                Decision::Done => Step::Done(previous),
                Decision::Write(None) => {
                    Step::Write(&self.st.switch_live, Box::new((LIVE, job.clone(), partition.serving.clone())), previous)
                }
                Decision::Write(Some(build)) => {
                    let values = (name.to_owned(), build.clone(), build.clone(), job.clone(), name.to_owned(), build);
                    Step::Write(&self.st.switch_to, Box::new(values), previous)
                }
            })
        })
    }

    /// Deletes version `name` (never `live`, never the one served): it is
    /// unpublished at once, its rows deleted [`PURGE_GRACE`] later.
    pub fn delete(&self, name: &str) -> Result<(), VersionError> {
        check_name(name)?;
        if name == LIVE {
            return Err(VersionError::Live);
        }
        let job = self.db.job.clone();
        let mut attempted: Option<String> = None;
        let build = self.change(|partition| {
            let served = self.served_in(partition)?;
            Ok(match unpublish(partition, &served, name, attempted.as_deref())? {
                Decision::Done => Step::Done(attempted.clone().expect("only an attempt is done")),
                Decision::Write(build) => {
                    attempted = Some(build.clone());
                    let values = (vec![build.clone()], job.clone(), name.to_owned(), build.clone(), partition.serving.clone());
                    Step::Write(&self.st.unpublish, Box::new(values), build)
                }
            })
        })?;
        std::thread::sleep(PURGE_GRACE);
        self.purge_build(name, &build)
    }

    /// Refuses to build `name` when it exists (unless `replace`) or is
    /// served; writes nothing.
    pub fn check_buildable(&self, name: &str, replace: bool) -> Result<(), VersionError> {
        let partition = self.read(true)?;
        buildable(&partition, &self.served_in(&partition)?, name, replace)
    }

    /// Claims `name` for a new build, taking the claim over from an earlier
    /// backfill of the name (whose build is retired, then deleted by
    /// [`sweep`](Self::sweep)).
    pub fn claim(&self, name: &str, replace: bool) -> Result<Claim, VersionError> {
        let build = new_build_id();
        let job = self.db.job.clone();
        let owner = owner();
        self.change(|partition| {
            let row = partition.names.get(name).cloned().unwrap_or_default();
            let claim = Claim { name: name.to_owned(), build: build.clone(), job: build_job(&job, name, &build), took_over: None };
            if row.pending.as_ref().is_some_and(|p| p.build == build) {
                return Ok(Step::Done(claim));
            }
            buildable(partition, &self.served_in(partition)?, name, replace)?;
            let previous = row.pending.as_ref().map(|p| p.build.clone());
            let values = (
                build.clone(),
                owner.clone(),
                signed(now_ms()),
                previous.iter().cloned().collect::<Vec<String>>(),
                job.clone(),
                name.to_owned(),
                previous,
                row.published.map(|p| p.build),
            );
            Ok(Step::Write(&self.st.claim, Box::new(values), Claim { took_over: row.pending, ..claim }))
        })
    }

    /// Runs `work` while a thread renews `claim` every [`CLAIM_HEARTBEAT`].
    pub fn while_claimed<R>(&self, claim: &Claim, work: impl FnOnce() -> R) -> R {
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut lost = false;
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CLAIM_HEARTBEAT) {
                    match self.renew(claim) {
                        Ok(true) => {}
                        Ok(false) if !lost => {
                            lost = true;
                            tracing::warn!("backfill {}: another backfill took this version over; this one stops", claim.name);
                        }
                        Ok(false) => {}
                        Err(error) => tracing::warn!("backfill {}: renewing its claim: {error}", claim.name),
                    }
                }
            });
            let result = work();
            drop(stop);
            result
        })
    }

    /// Writes a new heartbeat; `false` when the claim is no longer ours.
    fn renew(&self, claim: &Claim) -> Result<bool, VersionError> {
        let values = (signed(now_ms()), self.db.job.as_str(), claim.name.as_str(), claim.build.as_str());
        self.transaction(&self.st.renew, values).map_err(|e| self.db.error(e).into())
    }

    /// Runs a lightweight transaction: whether it applied, or why nobody
    /// knows.
    fn transaction(&self, statement: &PreparedStatement, values: impl SerializeRow) -> Result<bool, String> {
        applied(self.db.block_on(self.db.session.execute_unpaged(statement, values))).map_err(|e| e.to_string())
    }

    /// Publishes the build of `claim` as its version, if the claim is
    /// still its own (replacing a published one only with `replace`, and
    /// never the one served); then deletes the build it replaced.
    pub fn publish(&self, claim: &Claim, manifest: &CassandraManifest, replace: bool) -> Result<(), VersionError> {
        let job = self.db.job.clone();
        let m = &manifest.manifest;
        let offsets = |offsets: &[u64]| offsets.iter().map(|&o| signed(o)).collect::<Vec<i64>>();
        // The build an attempt whose outcome is unknown replaced.
        let mut attempted: Option<String> = None;
        let replaced = self.change(|partition| {
            let old = match publish(partition, &self.served_in(partition)?, &claim.name, &claim.build, replace)? {
                Decision::Done => return Ok(Step::Done(attempted.clone())),
                Decision::Write(old) => old,
            };
            attempted.clone_from(&old);
            let values = (
                claim.build.clone(),
                m.job.clone(),
                manifest.source.clone(),
                m.from.clone(),
                m.to.clone(),
                offsets(&m.start),
                offsets(&m.end),
                signed(m.created_ms),
                signed(manifest.rows),
                manifest.committed_epoch.map(signed),
                old.iter().cloned().collect::<Vec<String>>(),
                job.clone(),
                claim.name.clone(),
                claim.build.clone(),
                old.clone(),
                partition.serving.clone(),
            );
            Ok(Step::Write(&self.st.publish, Box::new(values), old))
        })?;
        if let Some(old) = replaced {
            std::thread::sleep(PURGE_GRACE);
            self.purge_build(&claim.name, &old)?;
        }
        Ok(())
    }

    /// Gives up `claim` after a failed run and deletes its build.
    pub fn abandon(&self, claim: &Claim) -> Result<(), VersionError> {
        self.release(&claim.name, &claim.build, None)?;
        self.purge_build(&claim.name, &claim.build)
    }

    /// Deletes what interrupted backfills, replacements and deletions
    /// left: the builds of claims whose heartbeat is [`CLAIM_LEASE`](super::CLAIM_LEASE) old,
    /// and every retired build. Returns how many builds it deleted.
    pub fn sweep(&self) -> Result<usize, VersionError> {
        let now = now_ms();
        for (name, row) in &self.read(true)?.names {
            if let Some(pending) = row.pending.as_ref().filter(|p| stale(p, now)) {
                self.release(name, &pending.build, Some(pending.beat_ms))?;
            }
        }
        let mut swept = 0;
        for (name, row) in &self.read(true)?.names {
            for build in &row.retired {
                self.purge_build(name, build)?;
                swept += 1;
            }
        }
        Ok(swept)
    }

    /// Moves the claim of `build` on `name` to the retired builds, if it
    /// still holds (and, with `beat_ms`, was not renewed since).
    fn release(&self, name: &str, build: &str, beat_ms: Option<u64>) -> Result<(), VersionError> {
        let job = self.db.job.clone();
        self.change(|partition| {
            let pending = partition.names.get(name).and_then(|row| row.pending.clone());
            let Some(pending) = pending.filter(|p| p.build == build) else { return Ok(Step::Done(())) };
            if beat_ms.is_some_and(|beat| beat != pending.beat_ms) {
                return Ok(Step::Done(()));
            }
            let values = (vec![build.to_owned()], job.clone(), name.to_owned(), build.to_owned(), signed(pending.beat_ms));
            Ok(Step::Write(&self.st.release, Box::new(values), ()))
        })
    }

    /// Deletes the rows of a retired build, then forgets it.
    fn purge_build(&self, name: &str, build: &str) -> Result<(), VersionError> {
        purge(&self.db.for_job(&build_job(&self.db.job, name, build)), &self.config)?;
        let job = self.db.job.clone();
        self.change(|partition| {
            if !partition.names.get(name).is_some_and(|row| row.retired.contains(build)) {
                return Ok(Step::Done(()));
            }
            let values = (vec![build.to_owned()], job.clone(), name.to_owned());
            Ok(Step::Write(&self.st.forget, Box::new(values), ()))
        })?;
        // A row left with nothing is dropped (if something came meanwhile,
        // it stays); one that stays after a failure here lists nothing.
        let _dropped_or_kept = self.transaction(&self.st.drop_empty, (self.db.job.as_str(), name));
        Ok(())
    }

    /// Runs `step` on the partition read with SERIAL consistency until it
    /// is done: a transaction that applied ends it; one that did not, or
    /// whose outcome is unknown, is followed by a new read, from which
    /// `step` decides again (so it must recognize its own change done).
    fn change<'s, T>(&'s self, mut step: impl FnMut(&Partition) -> Result<Step<'s, T>, VersionError>) -> Result<T, VersionError> {
        let mut pause = RETRY_FIRST;
        for _ in 0..CHANGE_ATTEMPTS {
            let partition = self.read(true)?;
            let (statement, values, result) = match step(&partition)? {
                Step::Done(result) => return Ok(result),
                Step::Write(statement, values, result) => (statement, values, result),
            };
            match self.transaction(statement, values) {
                Ok(true) => return Ok(result),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(
                        "cassandra: a change to the versions of job {} had an unknown outcome ({error}); reading it back",
                        self.db.job
                    );
                    std::thread::sleep(pause);
                    pause *= 2;
                }
            }
        }
        let reason = format!(
            "the versions of job {} did not settle in {CHANGE_ATTEMPTS} attempts (others change them at the same time)",
            self.db.job
        );
        Err(self.db.error(reason).into())
    }

    /// The whole versions partition, at SERIAL (before a change) or at the
    /// configured consistency.
    fn read(&self, serial: bool) -> Result<Partition, VersionError> {
        let statement = if serial { &self.st.read_serial } else { &self.st.read };
        let rows: Vec<Columns> = self.db.read_all(statement, (self.db.job.as_str(),))?;
        Partition::from_rows(rows).map_err(|e| self.db.corrupt(e).into())
    }

    fn served(&self, serving: Option<String>, build: Option<String>) -> Result<Served, StoreError> {
        served(serving, build).map_err(|e| self.db.corrupt(e))
    }

    /// The pointer of a partition read.
    fn served_in(&self, partition: &Partition) -> Result<Served, VersionError> {
        Ok(partition.served().map_err(|e| self.db.corrupt(e))?)
    }
}

/// What one read of the versions partition decides.
enum Step<'s, T> {
    /// Nothing (more) to write.
    Done(T),
    /// Run this transaction; if it applies, the change is done with `T`.
    Write(&'s PreparedStatement, Box<dyn SerializeRow + Send + Sync>, T),
}

/// A new build id: 16 hex digits, random.
fn new_build_id() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// Who builds: host and process, for messages.
fn owner() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    format!("{host} pid {}", std::process::id())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The statements on `output_versions`, prepared once per handle.
struct Statements {
    read: PreparedStatement,
    read_serial: PreparedStatement,
    read_serving: PreparedStatement,
    claim: PreparedStatement,
    renew: PreparedStatement,
    release: PreparedStatement,
    publish: PreparedStatement,
    switch_to: PreparedStatement,
    switch_live: PreparedStatement,
    unpublish: PreparedStatement,
    forget: PreparedStatement,
    drop_empty: PreparedStatement,
}

const ROW: &str = "WHERE job = ? AND name = ?";

impl Statements {
    async fn prepare(db: &Db, config: &CassandraConfig) -> Result<Statements, scylla::errors::ExecutionError> {
        let prepare = |cql: String, kind: Kind| prepare(&db.session, config, cql, kind);
        let read = format!("SELECT {COLUMNS} FROM output_versions WHERE job = ?");
        Ok(Statements {
            read: prepare(read.clone(), Kind::Read).await?,
            read_serial: prepare(read, Kind::SerialRead).await?,
            read_serving: prepare("SELECT serving, serving_build FROM output_versions WHERE job = ? LIMIT 1".into(), Kind::Read).await?,
            claim: prepare(
                format!(
                    "UPDATE output_versions SET pending = ?, pending_owner = ?, pending_beat = ?, retired = retired + ? {ROW} \
                     IF pending = ? AND build = ?"
                ),
                Kind::Lwt,
            )
            .await?,
            renew: prepare(format!("UPDATE output_versions SET pending_beat = ? {ROW} IF pending = ?"), Kind::Lwt).await?,
            release: prepare(
                format!(
                    "UPDATE output_versions SET pending = null, pending_owner = null, pending_beat = null, retired = retired + ? {ROW} \
                     IF pending = ? AND pending_beat = ?"
                ),
                Kind::Lwt,
            )
            .await?,
            publish: prepare(
                format!(
                    "UPDATE output_versions SET build = ?, job_file = ?, source = ?, from_pos = ?, to_pos = ?, start_offsets = ?, \
                     end_offsets = ?, created_ms = ?, rows = ?, committed_epoch = ?, pending = null, pending_owner = null, \
                     pending_beat = null, retired = retired + ? {ROW} IF pending = ? AND build = ? AND serving = ?"
                ),
                Kind::Lwt,
            )
            .await?,
            switch_to: prepare(
                format!("UPDATE output_versions SET serving = ?, serving_build = ?, build = ? {ROW} IF build = ?"),
                Kind::Lwt,
            )
            .await?,
            switch_live: prepare(
                "UPDATE output_versions SET serving = ?, serving_build = null WHERE job = ? IF serving = ?".into(),
                Kind::Lwt,
            )
            .await?,
            unpublish: prepare(
                format!("UPDATE output_versions SET build = null, retired = retired + ? {ROW} IF build = ? AND serving = ?"),
                Kind::Lwt,
            )
            .await?,
            forget: prepare(format!("UPDATE output_versions SET retired = retired - ? {ROW} IF EXISTS"), Kind::Lwt).await?,
            drop_empty: prepare(
                format!("DELETE FROM output_versions {ROW} IF build = null AND pending = null AND retired = null"),
                Kind::Lwt,
            )
            .await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_are_stored_apart_from_jobs_and_from_each_other() {
        let (a, b) = (new_build_id(), new_build_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert_eq!(build_job("clicks", "v1", &a), format!("clicks/v1/{a}"));
        let file = std::path::Path::new("j.toml");
        let named = crate::job::parse("name = \"clicks/v1\"\n[sink]\nkind = \"memory\"\n", file);
        assert!(named.is_err_and(|e| e.to_string().contains("name")), "no job file can name a build's job");
    }
}
