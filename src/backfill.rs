//! `tally backfill`: re-aggregates a range of the embedded log into a new
//! version of the output, beside the live job.
//!
//! A backfill is a bounded run of the job over `[--from, --to)` into a store
//! of its own (`store::versions`): it reads the log through a
//! [`LogView`] (a snapshot of its durable records, without the lock that
//! the job running on it holds), so it can run while `tally up` or `tally
//! run` own the log and the live store, and it never touches either. Its
//! store records the range's start as its origin: every partition starts
//! there with no progress and empty dedup memory, so `tally verify
//! --version` recounts exactly that range (SEMANTICS.md, "Where a count
//! starts"). The version is built in a hidden directory and put in place
//! only once the run has committed everything; an interrupted or failed
//! backfill leaves no version (and the next backfill sweeps what it left).
//!
//! A job with `sink.kind = "cassandra"` keeps its versions in its keyspace
//! (`store::cassandra::CassandraVersions`): the run commits into a build of
//! its own under a claim on the name, and the version is published once
//! the run has committed everything; a failed backfill deletes its build,
//! an interrupted one's is deleted by the next backfill.
//!
//! Everything the user gives is checked before anything is written: the
//! name, the positions, the range (not empty, `--to` not before `--from`,
//! offsets within the log), and whether the name is free.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::datadir::DataDir;
use crate::job::{Job, SinkSpec, SourceSpec};
use crate::log::LogView;
use crate::run::{run, RunError, RunOptions, RunReport, SharedStore};
use crate::sources::kafka::KafkaTopic;
use crate::sources::position::{resolve_range, LogBounds, Position, Range};
use crate::store::cassandra::{CassandraConfig, CassandraManifest, CassandraVersions, Claim, Served};
use crate::store::versions::{self, Manifest, VersionError};
use crate::store::{EmbeddedStore, StoreReader};
use crate::telemetry::progress::{ProgressOptions, Style};
use crate::telemetry::StatsSnapshot;

/// What `tally backfill` is asked to do.
#[derive(Clone, Debug)]
pub struct BackfillOptions {
    /// The version to make.
    pub name: String,
    /// `--from` and `--to` as given.
    pub from: String,
    pub to: String,
    /// Build it again if it exists (never the serving version).
    pub replace: bool,
    pub workers: usize,
    pub catalog: Option<PathBuf>,
    /// How the run shows its progress on stderr, as `backfill NAME`.
    pub progress: Style,
}

/// Why a backfill did not make its version.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// Bad input, named by its flag; nothing was written.
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Version(#[from] VersionError),
    #[error("{0}")]
    Run(#[from] RunError),
}

impl BackfillError {
    /// The status of [`crate::exit`].
    pub fn exit_code(&self) -> i32 {
        match self {
            BackfillError::Usage(_) => crate::exit::USAGE,
            BackfillError::Version(e) => e.exit_code(),
            BackfillError::Run(e) => e.exit_code(),
        }
    }
}

/// What a finished backfill made.
#[derive(Clone, Debug)]
pub struct BackfillReport {
    pub name: String,
    pub range: Range,
    pub stats: StatsSnapshot,
    pub elapsed: Duration,
    pub rows: u64,
    pub committed_epoch: Option<u64>,
}

impl BackfillReport {
    /// Clicks read per second of the run.
    pub fn clicks_per_s(&self) -> f64 {
        self.stats.read_total() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Makes version `options.name` from a bounded run of `job` over the range.
pub fn backfill(job: &Job, data_dir: &DataDir, options: &BackfillOptions) -> Result<BackfillReport, BackfillError> {
    versions::check_new_name(&options.name).map_err(|e| BackfillError::Usage(format!("--version {}: {}", options.name, reason(e))))?;
    let from = parse_position("--from", &options.from)?;
    let to = parse_position("--to", &options.to)?;
    let view = open_view(job, data_dir)?;
    let range = match &view {
        Some(view) => {
            let bounds = LogBounds { earliest: view.start_offsets(), ends: view.end_offsets() };
            resolve_range(&from, &to, &bounds, |time| view.offsets_at_time(time).map_err(|e| e.to_string()))
        }
        None => {
            let SourceSpec::Kafka { brokers, topic } = &job.source else { unreachable!("open_view accepts log and kafka jobs") };
            let topic = KafkaTopic { brokers: brokers.clone(), topic: topic.clone(), partitions: job.partitions };
            let (earliest, ends) = topic.bounds().map_err(|e| BackfillError::Run(RunError::from(e)))?;
            let bounds = LogBounds { earliest, ends: ends.clone() };
            resolve_range(&from, &to, &bounds, |time| topic.offsets_at(time, &ends).map_err(String::from))
        }
    }
    .map_err(|e| BackfillError::Usage(e.to_string()))?;
    if range.records() == 0 {
        let reason = format!("--to {}: the range from --from {} holds no clicks", options.to, options.from);
        return Err(BackfillError::Usage(reason));
    }
    match &job.sink {
        SinkSpec::Cassandra(config) => into_cassandra(job, config, data_dir, options, view, &range),
        _ => into_embedded(job, data_dir, options, view, &range),
    }
}

/// The version as a store in `DATA/versions/NAME`.
fn into_embedded(
    job: &Job,
    data_dir: &DataDir,
    options: &BackfillOptions,
    view: Option<LogView>,
    range: &Range,
) -> Result<BackfillReport, BackfillError> {
    versions::check_replaceable(data_dir, &options.name, options.replace)?;
    versions::sweep_leftovers(data_dir)?;
    let building = versions::building_dir(data_dir, &options.name)?;
    let built = build(job, data_dir, options, view, range, &building);
    let report = match built {
        Ok(report) => report,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&building);
            return Err(error);
        }
    };
    if let Err(error) = versions::install(data_dir, &building, &options.name, options.replace) {
        let _ = std::fs::remove_dir_all(&building);
        return Err(error.into());
    }
    Ok(report)
}

/// The reason of a name error, without the name (the caller names the flag).
fn reason(error: VersionError) -> String {
    match error {
        VersionError::Name { reason, .. } => reason,
        other => other.to_string(),
    }
}

fn parse_position(field: &str, text: &str) -> Result<Position, BackfillError> {
    text.parse().map_err(|reason| BackfillError::Usage(format!("{field} {text}: {reason}")))
}

/// The job's embedded log, read without owning it; `None` for a Kafka
/// topic (any number of consumers read it).
fn open_view(job: &Job, data_dir: &DataDir) -> Result<Option<LogView>, BackfillError> {
    let dir = match &job.source {
        SourceSpec::Log { dir } => dir,
        SourceSpec::Kafka { .. } => return Ok(None),
        _ => {
            let reason = format!(
                "{}: source.kind: a backfill re-reads a log; the job must have source.kind = \"log\" or \"kafka\"",
                job.file.display()
            );
            return Err(BackfillError::Usage(reason));
        }
    };
    let dir = dir.clone().unwrap_or_else(|| data_dir.log());
    let view = LogView::open(&dir).map_err(|e| BackfillError::Usage(e.to_string()))?;
    if view.partitions() != job.partitions {
        let reason = format!("{}: source.partitions is {} but the log has {}", job.file.display(), job.partitions, view.partitions());
        return Err(BackfillError::Usage(reason));
    }
    Ok(Some(view))
}

/// The bounded run into a new store in `building`, with its manifest.
fn build(
    job: &Job,
    data_dir: &DataDir,
    options: &BackfillOptions,
    view: Option<LogView>,
    range: &Range,
    building: &std::path::Path,
) -> Result<BackfillReport, BackfillError> {
    manifest(job, options, range).write(building)?;
    let store = EmbeddedStore::open(&building.join("store")).map_err(RunError::from)?;
    let job = Job { sink: SinkSpec::Store, ..job.clone() };
    let report = run_range(&job, data_dir, options, view, range, Some(Arc::new(Mutex::new(Some(store)))))?;
    let reader = EmbeddedStore::open_read_only(&building.join("store")).map_err(RunError::from)?;
    built(options, range, report, &reader)
}

/// The report of a build that ran, with what its store holds.
fn built(options: &BackfillOptions, range: &Range, report: RunReport, store: &dyn StoreReader) -> Result<BackfillReport, BackfillError> {
    let snapshot = store.snapshot().map_err(RunError::from)?;
    Ok(BackfillReport {
        name: options.name.clone(),
        range: range.clone(),
        stats: report.stats,
        elapsed: report.elapsed,
        rows: snapshot.row_count().map_err(RunError::from)?,
        committed_epoch: snapshot.committed_epoch().map_err(RunError::from)?,
    })
}

/// What the version counts, as the user gave it and as resolved.
fn manifest(job: &Job, options: &BackfillOptions, range: &Range) -> Manifest {
    Manifest {
        name: options.name.clone(),
        job: job.file.display().to_string(),
        from: options.from.clone(),
        to: options.to.clone(),
        start: range.start.clone(),
        end: range.end.clone(),
        created_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
    }
}

/// The bounded run of `job` over `range` (into `store`, or the job's own
/// sink), showing its progress.
fn run_range(
    job: &Job,
    data_dir: &DataDir,
    options: &BackfillOptions,
    view: Option<LogView>,
    range: &Range,
    store: Option<SharedStore>,
) -> Result<RunReport, BackfillError> {
    let offsets = |offsets: &[u64]| Position::Offsets((0..).zip(offsets.iter().copied()).collect());
    let run_options = RunOptions {
        workers: options.workers.max(1),
        data_dir: data_dir.clone(),
        catalog: options.catalog.clone(),
        bounded: true,
        from: Some(offsets(&range.start)),
        to: Some(offsets(&range.end)),
        log_view: view,
        store,
        progress: ProgressOptions { style: options.progress, label: format!("backfill {}", options.name) },
        ..RunOptions::default()
    };
    Ok(run(job, &run_options)?)
}

/// The version as a build in the job's keyspace: claimed, built, then
/// published, or deleted.
fn into_cassandra(
    job: &Job,
    config: &CassandraConfig,
    data_dir: &DataDir,
    options: &BackfillOptions,
    view: Option<LogView>,
    range: &Range,
) -> Result<BackfillReport, BackfillError> {
    let versions = CassandraVersions::open_to_build(config, &job.name)?;
    versions.check_buildable(&options.name, options.replace)?;
    let manifest =
        CassandraManifest { manifest: manifest(job, options, range), source: source(job, data_dir), rows: 0, committed_epoch: None };
    let claim = versions.claim(&options.name, options.replace)?;
    if let Some(earlier) = &claim.took_over {
        tracing::warn!(
            "backfill {}: taking the name over from the backfill of {} (build {}, last heard of at unix ms {}); its rows are deleted",
            options.name,
            earlier.owner,
            earlier.build,
            earlier.beat_ms
        );
    }
    let built = versions.while_claimed(&claim, || {
        versions.sweep()?;
        let report = build_in_cassandra(&versions, job, &claim, data_dir, options, view, range)?;
        let manifest = CassandraManifest { rows: report.rows, committed_epoch: report.committed_epoch, ..manifest };
        versions.publish(&claim, &manifest, options.replace)?;
        Ok(report)
    });
    if built.is_err() {
        if let Err(error) = versions.abandon(&claim) {
            tracing::warn!("backfill {}: deleting build {}: {error} (the next backfill deletes it)", options.name, claim.build);
        }
    }
    built
}

/// The bounded run into the build of `claim`.
fn build_in_cassandra(
    versions: &CassandraVersions,
    job: &Job,
    claim: &Claim,
    data_dir: &DataDir,
    options: &BackfillOptions,
    view: Option<LogView>,
    range: &Range,
) -> Result<BackfillReport, BackfillError> {
    let job = Job { name: claim.job.clone(), ..job.clone() };
    let report = run_range(&job, data_dir, options, view, range, None)?;
    let reader = versions.reader_of(&Served { name: claim.name.clone(), build: Some(claim.build.clone()) });
    built(options, range, report, &reader)
}

/// The log a version counts, as its manifest names it.
fn source(job: &Job, data_dir: &DataDir) -> String {
    match &job.source {
        SourceSpec::Log { dir } => format!("log {}", dir.clone().unwrap_or_else(|| data_dir.log()).display()),
        SourceSpec::Kafka { brokers, topic } => format!("kafka {brokers} topic {topic}"),
        other => format!("{other:?}"),
    }
}
