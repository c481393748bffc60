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
//! name sweeps it once its heartbeat is [`CLAIM_LEASE`] old, and in both
//! cases deletes its rows (`purge.rs`).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row as CqlRow};

use super::config::CassandraConfig;
use super::db::{prepare, Access, Db, Kind};
use super::layout::{signed, unsigned};
use super::purge::purge;
use super::query::CassandraReader;
use crate::store::versions::{check_name, fill_committed, Manifest, VersionError, VersionInfo, LIVE};
use crate::store::StoreError;

/// How long a backfill's claim on a name holds without a heartbeat: after
/// that, a backfill of another name takes it for interrupted and deletes
/// its build (a backfill of the same name takes it over at once).
pub const CLAIM_LEASE: Duration = Duration::from_secs(60);
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

/// The version served, as the pointer names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub name: String,
    /// The build serving it; `None` for `live`. A name replaced by a new
    /// build is another `Served`.
    pub build: Option<String>,
}

/// What a published version counts, and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CassandraManifest {
    /// Name, job file, range as given and resolved (its start is the
    /// build's origin), creation time: as the embedded store's.
    pub manifest: Manifest,
    /// The log counted: `log DIR` or `kafka BROKERS topic TOPIC`.
    pub source: String,
    /// Windows with a row, and the last epoch, when it was published.
    pub rows: u64,
    pub committed_epoch: Option<u64>,
}

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

/// A build in progress, as its claim records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub build: String,
    /// Host and process of the backfill.
    pub owner: String,
    /// Unix ms of its last heartbeat.
    pub beat_ms: u64,
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
        let served = partition.served().map_err(|e| self.db.corrupt(e))?;
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
            let served = partition.served().map_err(|e| self.db.corrupt(e))?;
            let previous = previous.get_or_insert_with(|| served.name.clone()).clone();
            if name == LIVE {
                if served.name == LIVE {
                    return Ok(Step::Done(previous));
                }
                let values = (LIVE, job.clone(), partition.serving.clone());
                return Ok(Step::Write(&self.st.switch_live, Box::new(values), previous));
            }
            let build = partition.published(name).ok_or_else(|| VersionError::Unknown(name.to_owned()))?.to_owned();
            if served == (Served { name: name.to_owned(), build: Some(build.clone()) }) {
                return Ok(Step::Done(previous));
            }
            let values = (name.to_owned(), build.clone(), build.clone(), job.clone(), name.to_owned(), build);
            Ok(Step::Write(&self.st.switch_to, Box::new(values), previous))
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
        let mut unpublished: Option<String> = None;
        let build = self.change(|partition| {
            let published = partition.published(name);
            if let Some(build) = unpublished.as_ref().filter(|&b| published != Some(b.as_str())) {
                return Ok(Step::Done(build.clone()));
            }
            let build = published.ok_or_else(|| VersionError::Unknown(name.to_owned()))?.to_owned();
            if partition.served().map_err(|e| self.db.corrupt(e))?.name == name {
                return Err(VersionError::Serving { name: name.to_owned(), action: "switch to another version first" });
            }
            unpublished = Some(build.clone());
            let values = (vec![build.clone()], job.clone(), name.to_owned(), build.clone(), partition.serving.clone());
            Ok(Step::Write(&self.st.unpublish, Box::new(values), build))
        })?;
        std::thread::sleep(PURGE_GRACE);
        self.purge_build(name, &build)
    }

    /// Refuses to build `name` when it exists (unless `replace`) or is
    /// served; writes nothing.
    pub fn check_buildable(&self, name: &str, replace: bool) -> Result<(), VersionError> {
        buildable(&self.read(true)?, name, replace)
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
            buildable(partition, name, replace)?;
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
                            eprintln!("backfill {}: another backfill took this version over; this one stops", claim.name);
                        }
                        Ok(false) => {}
                        Err(error) => eprintln!("backfill {}: renewing its claim: {error}", claim.name),
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
        let answer = self.db.block_on(self.db.session.execute_unpaged(statement, values)).map_err(|e| e.to_string())?;
        let rows = answer.into_rows_result().map_err(|e| e.to_string())?;
        Ok(applied(rows.maybe_first_row::<CqlRow>().map_err(|e| e.to_string())?))
    }

    /// Publishes the build of `claim` as its version, if the claim is
    /// still its own (replacing a published one only with `replace`, and
    /// never the one served); then deletes the build it replaced.
    pub fn publish(&self, claim: &Claim, manifest: &CassandraManifest, replace: bool) -> Result<(), VersionError> {
        let job = self.db.job.clone();
        let m = &manifest.manifest;
        let offsets = |offsets: &[u64]| offsets.iter().map(|&o| signed(o)).collect::<Vec<i64>>();
        let replaced = self.change(|partition| {
            let row = partition.names.get(&claim.name).cloned().unwrap_or_default();
            let old = row.published.map(|p| p.build);
            if old.as_deref() == Some(claim.build.as_str()) {
                return Ok(Step::Done(None));
            }
            if row.pending.as_ref().is_none_or(|p| p.build != claim.build) {
                return Err(VersionError::TakenOver(claim.name.clone()));
            }
            buildable(partition, &claim.name, replace)?;
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
    /// left: the builds of claims whose heartbeat is [`CLAIM_LEASE`] old,
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
                    eprintln!("cassandra: a change to the versions of job {} had an unknown outcome ({error}); reading it back", self.db.job);
                    std::thread::sleep(pause);
                    pause *= 2;
                }
            }
        }
        let reason = format!("the versions of job {} did not settle in {CHANGE_ATTEMPTS} attempts (others change them at the same time)", self.db.job);
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
}

/// What one read of the versions partition decides.
enum Step<'s, T> {
    /// Nothing (more) to write.
    Done(T),
    /// Run this transaction; if it applies, the change is done with `T`.
    Write(&'s PreparedStatement, Box<dyn SerializeRow + Send + Sync>, T),
}

/// The versions partition of a job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Partition {
    /// The static columns as stored (`None`: never switched).
    serving: Option<String>,
    serving_build: Option<String>,
    names: BTreeMap<String, NameRow>,
}

/// One name's row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct NameRow {
    published: Option<Published>,
    pending: Option<Pending>,
    retired: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Published {
    build: String,
    manifest: CassandraManifest,
}

impl Partition {
    fn served(&self) -> Result<Served, String> {
        served(self.serving.clone(), self.serving_build.clone())
    }

    /// The build published as `name`.
    fn published(&self, name: &str) -> Option<&str> {
        self.names.get(name)?.published.as_ref().map(|p| p.build.as_str())
    }

    fn from_rows(rows: Vec<Columns>) -> Result<Partition, String> {
        let mut partition = Partition::default();
        for row in rows {
            partition.serving = row.serving.clone();
            partition.serving_build = row.serving_build.clone();
            // A partition with static columns only reads as one row without a name.
            let Some(name) = row.name.clone() else { continue };
            let parsed = row.into_name_row(&name).map_err(|reason| format!("output_versions row {name:?}: {reason}"))?;
            partition.names.insert(name, parsed);
        }
        Ok(partition)
    }
}

/// The pointer as stored, checked.
fn served(serving: Option<String>, build: Option<String>) -> Result<Served, String> {
    match (serving, build) {
        (None, _) => Ok(Served { name: LIVE.to_owned(), build: None }),
        (Some(name), None) if name == LIVE => Ok(Served { name, build: None }),
        (Some(name), Some(build)) if name != LIVE && check_name(&name).is_ok() => Ok(Served { name, build: Some(build) }),
        (serving, build) => Err(format!("serving pointer {serving:?} with build {build:?}")),
    }
}

/// May `name` be built: not existing (unless `replace`), and not served.
fn buildable(partition: &Partition, name: &str, replace: bool) -> Result<(), VersionError> {
    if partition.published(name).is_none() {
        return Ok(());
    }
    if !replace {
        return Err(VersionError::Exists(name.to_owned()));
    }
    if partition.served().is_ok_and(|s| s.name == name) {
        return Err(VersionError::Serving { name: name.to_owned(), action: "switch to another version before replacing it" });
    }
    Ok(())
}

/// Whether a claim's backfill has not renewed it for [`CLAIM_LEASE`].
fn stale(pending: &Pending, now_ms: u64) -> bool {
    now_ms.saturating_sub(pending.beat_ms) > CLAIM_LEASE.as_millis() as u64
}

/// The internal job name of a version's build.
pub fn build_job(job: &str, name: &str, build: &str) -> String {
    format!("{job}/{name}/{build}")
}

/// Whether a lightweight transaction applied: its first column.
fn applied(first: Option<CqlRow>) -> bool {
    matches!(first.and_then(|row| row.columns.into_iter().next().flatten()), Some(CqlValue::Boolean(true)))
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

/// The columns of `output_versions`, as [`Statements`] selects them.
#[derive(scylla::DeserializeRow)]
struct Columns {
    name: Option<String>,
    build: Option<String>,
    job_file: Option<String>,
    source: Option<String>,
    from_pos: Option<String>,
    to_pos: Option<String>,
    start_offsets: Option<Vec<i64>>,
    end_offsets: Option<Vec<i64>>,
    created_ms: Option<i64>,
    rows: Option<i64>,
    committed_epoch: Option<i64>,
    pending: Option<String>,
    pending_owner: Option<String>,
    pending_beat: Option<i64>,
    retired: Option<Vec<String>>,
    serving: Option<String>,
    serving_build: Option<String>,
}

impl Columns {
    fn into_name_row(self, name: &str) -> Result<NameRow, String> {
        let number = |column: &str, value: Option<i64>| value.and_then(unsigned).ok_or_else(|| format!("{column} is {value:?}"));
        let offsets = |column: &str, values: Option<Vec<i64>>| -> Result<Vec<u64>, String> {
            values.unwrap_or_default().into_iter().map(|v| unsigned(v).ok_or_else(|| format!("{column} holds {v}"))).collect()
        };
        let text = |column: &str, value: Option<String>| value.ok_or_else(|| format!("{column} is null"));
        let published = match self.build {
            None => None,
            Some(build) => Some(Published {
                build,
                manifest: CassandraManifest {
                    manifest: Manifest {
                        name: name.to_owned(),
                        job: text("job_file", self.job_file)?,
                        from: text("from_pos", self.from_pos)?,
                        to: text("to_pos", self.to_pos)?,
                        start: offsets("start_offsets", self.start_offsets)?,
                        end: offsets("end_offsets", self.end_offsets)?,
                        created_ms: number("created_ms", self.created_ms)?,
                    },
                    source: text("source", self.source)?,
                    rows: number("rows", self.rows)?,
                    committed_epoch: self.committed_epoch.map(|e| number("committed_epoch", Some(e))).transpose()?,
                },
            }),
        };
        let pending = match self.pending {
            None => None,
            Some(build) => Some(Pending {
                build,
                owner: self.pending_owner.unwrap_or_default(),
                beat_ms: number("pending_beat", self.pending_beat)?,
            }),
        };
        Ok(NameRow { published, pending, retired: self.retired.unwrap_or_default().into_iter().collect() })
    }
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

const COLUMNS: &str = "name, build, job_file, source, from_pos, to_pos, start_offsets, end_offsets, created_ms, rows, committed_epoch, \
                       pending, pending_owner, pending_beat, retired, serving, serving_build";
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
            switch_to: prepare(format!("UPDATE output_versions SET serving = ?, serving_build = ?, build = ? {ROW} IF build = ?"), Kind::Lwt)
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

    fn published(build: &str) -> NameRow {
        let manifest = Manifest {
            name: String::new(),
            job: "job.toml".into(),
            from: "earliest".into(),
            to: "latest".into(),
            start: vec![0],
            end: vec![5],
            created_ms: 1,
        };
        let manifest = CassandraManifest { manifest, source: "log d".into(), rows: 3, committed_epoch: Some(9) };
        NameRow { published: Some(Published { build: build.into(), manifest }), ..NameRow::default() }
    }

    fn partition(serving: Option<(&str, Option<&str>)>, names: &[(&str, NameRow)]) -> Partition {
        Partition {
            serving: serving.map(|(name, _)| name.to_owned()),
            serving_build: serving.and_then(|(_, build)| build.map(str::to_owned)),
            names: names.iter().map(|(name, row)| (name.to_string(), row.clone())).collect(),
        }
    }

    #[test]
    fn the_pointer_reads_as_live_until_switched_and_a_version_always_has_its_build() {
        let live = Served { name: LIVE.into(), build: None };
        assert_eq!(served(None, None), Ok(live.clone()));
        assert_eq!(served(Some(LIVE.into()), None), Ok(live));
        assert_eq!(served(Some("v1".into()), Some("b".into())), Ok(Served { name: "v1".into(), build: Some("b".into()) }));
        assert!(served(Some("v1".into()), None).is_err(), "a version without its build");
        assert!(served(Some(LIVE.into()), Some("b".into())).is_err());
        assert!(served(Some("../x".into()), Some("b".into())).is_err());
    }

    #[test]
    fn a_name_is_buildable_when_new_or_replaced_and_never_while_served() {
        let p = partition(Some(("v1", Some("b1"))), &[("v1", published("b1")), ("v2", published("b2"))]);
        assert!(buildable(&p, "v3", false).is_ok());
        assert!(matches!(buildable(&p, "v2", false), Err(VersionError::Exists(_))));
        assert!(buildable(&p, "v2", true).is_ok());
        assert!(matches!(buildable(&p, "v1", true), Err(VersionError::Serving { .. })));
        let pending = NameRow { pending: Some(Pending { build: "b9".into(), owner: String::new(), beat_ms: 0 }), ..NameRow::default() };
        assert!(buildable(&partition(None, &[("v4", pending)]), "v4", false).is_ok(), "a claim alone is no version");
    }

    #[test]
    fn a_claim_is_stale_only_past_its_lease() {
        let pending = Pending { build: "b".into(), owner: String::new(), beat_ms: 1_000_000 };
        let lease = CLAIM_LEASE.as_millis() as u64;
        assert!(!stale(&pending, 1_000_000 + lease));
        assert!(stale(&pending, 1_000_001 + lease));
        assert!(!stale(&pending, 0), "a heartbeat from a clock ahead is fresh");
    }

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
