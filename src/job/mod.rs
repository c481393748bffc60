//! Job files: what to read, how to window and count it, and where rows go.
//!
//! A job is a TOML file (see `jobs/clicks.toml`, which lists every key with
//! its default). [`load`] reads one, checks every key, and returns a [`Job`]
//! in engine units: all durations in milliseconds, all paths resolved
//! against the job file's directory, the window list sorted. Anything wrong
//! becomes a one-line [`ConfigError`] naming the file, the dotted key and the
//! reason (the reader is [`crate::config`], shared with the ingest config);
//! nothing in here panics on input.
//!
//! The rules checked here are the ones the counting contract
//! (`SEMANTICS.md`) relies on: every window is a whole number of 1m windows
//! and ends on an epoch boundary, and lateness and restatement horizons are
//! whole epochs, so every decision falls on an epoch tick.

mod read;

pub use read::{check_brokers, check_topic};
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use crate::config::{parse_table, read_text, ConfigError};
use crate::dataflow::dedup::DEFAULT_DEDUP_HORIZON_MS;
use crate::event::{KeyType, MINUTE_MS};
use crate::sources::generator::GeneratorConfig;
use crate::store::cassandra::CassandraConfig;
use crate::store::settings::{CatalogStamp, RunSettings};

/// Most partitions a source may have (a limit on per-partition state).
pub const MAX_PARTITIONS: u32 = 4096;
/// Default age of log segments before retention deletes them: 7 days.
pub const DEFAULT_LOG_RETENTION_MS: u64 = 7 * 86_400_000;
/// Default age of stored rows (by window start) before they are swept: 2 years.
pub const DEFAULT_ROWS_RETENTION_MS: u64 = crate::store::DEFAULT_RETENTION_MS;
/// Shortest epoch: data travels at epoch multiples, and the catalog join
/// retracts each partial one millisecond after it, which must not be a
/// multiple of the epoch.
pub const MIN_EPOCH_MS: u64 = 10;
/// Longest window a job may declare.
pub const MAX_WINDOW_MS: u64 = 86_400_000;
/// Longest watermark slack, allowed lateness and restatement horizon: a
/// year. With timestamps bounded by `MAX_EVENT_TIME_MS`, window ends plus
/// any of them stay far inside `u64`.
pub const MAX_LATENESS_MS: u64 = 366 * 86_400_000;
/// Shortest interval between early (partial) results.
pub const MIN_EARLY_RESULTS_MS: u64 = 100;
/// `windows.early_results` that switches partial rows off.
pub const EARLY_RESULTS_OFF: &str = "off";

const DEFAULT_PARTITIONS: u32 = 8;
const DEFAULT_EPOCH_MS: u64 = 1_000;
const DEFAULT_SLACK_MS: u64 = 5_000;
const DEFAULT_ALLOWED_LATENESS_MS: u64 = 10_000;
const DEFAULT_WINDOWS_MS: [u64; 3] = [MINUTE_MS, 5 * MINUTE_MS, 60 * MINUTE_MS];
const DEFAULT_EARLY_RESULTS_MS: u64 = 2_000;
const DEFAULT_RESTATE_WITHIN_MS: u64 = 3_600_000;

/// A checked job, in engine units.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// `name`; defaults to the job file's stem.
    pub name: String,
    /// The job file, as it was given.
    pub file: PathBuf,
    pub source: SourceSpec,
    /// `source.partitions`, in `1..=MAX_PARTITIONS`.
    pub partitions: u32,
    /// `time.epoch`: the commit interval; > 0 and divides 1m.
    pub epoch_ms: u64,
    /// `time.watermark_slack`: how far a partition watermark trails its
    /// largest event time.
    pub slack_ms: u64,
    /// `time.allowed_lateness`: a whole number of epochs.
    pub allowed_lateness_ms: u64,
    /// `dedup.horizon`: in `MIN_DEDUP_HORIZON_MS..=MAX_DEDUP_HORIZON_MS`.
    pub dedup_horizon_ms: u64,
    /// `windows.sizes`: sorted ascending, distinct, multiples of 1m, at most
    /// 1d; the first is always 1m.
    pub windows_ms: Vec<u64>,
    /// `windows.early_results`: wall-clock interval of partial rows; `None`
    /// (`"off"`) emits none, so a file run's output depends on its input
    /// alone, byte for byte.
    pub early_results_ms: Option<u64>,
    /// `aggregate.group_by`, in the order listed, without duplicates.
    pub group_by: Vec<KeyType>,
    /// Whether `aggregate.measures` includes `distinct_users` (`clicks` is
    /// always counted).
    pub distinct_users: bool,
    pub late: LatePolicy,
    pub sink: SinkSpec,
    /// `catalog.path`, resolved against the job file's directory. Its
    /// existence is checked by [`load`] (and [`Job::check_files`]), not by
    /// [`parse`].
    pub catalog: Option<PathBuf>,
    /// Log segments whose newest click is older than this are deleted
    /// (`[retention] log`, default 7 days).
    pub log_retention_ms: u64,
    /// Stored rows whose window started longer ago than this are swept
    /// (`[retention] rows`, default 2 years).
    pub rows_retention_ms: u64,
}

/// Where clicks come from (`[source]`).
#[derive(Clone, Debug, PartialEq)]
pub enum SourceSpec {
    /// An NDJSON file; `None` means the CLI must supply `--input`.
    File { path: Option<PathBuf> },
    /// The seeded generator, `[source.generator]`. Its `partitions` equals
    /// the job's `source.partitions`.
    Generator(GeneratorConfig),
    /// The embedded log; `None` means the CLI's default log directory.
    Log { dir: Option<PathBuf> },
    /// A Kafka topic (`brokers`, `topic`), one Kafka partition per job
    /// partition.
    Kafka { brokers: String, topic: String },
}

/// Bootstrap servers of a Kafka source that sets none.
pub const DEFAULT_KAFKA_BROKERS: &str = "127.0.0.1:9092";
/// Topic of a Kafka source that sets none.
pub const DEFAULT_KAFKA_TOPIC: &str = "raw_clicks";

/// What happens to a click that arrives after its window closed (`[late]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LatePolicy {
    /// Apply it and emit restated rows while the 1m window's end plus
    /// `within_ms` is ahead of the watermark; hold it in the ledger after.
    Restate { within_ms: u64 },
    /// Never change an emitted row; the click goes to the late ledger only.
    Hold,
}

impl LatePolicy {
    /// `late.restate_within` under the restate policy; `None` for hold.
    pub fn restate_within_ms(&self) -> Option<u64> {
        match *self {
            LatePolicy::Restate { within_ms } => Some(within_ms),
            LatePolicy::Hold => None,
        }
    }
}

/// Where rows go (`[sink]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkSpec {
    /// An NDJSON file; `None` means the CLI must supply `--output`.
    File { path: Option<PathBuf> },
    /// Kept in memory (benchmarks and tests).
    Memory,
    /// The embedded store in the data directory: one transaction per epoch,
    /// resumable after a crash.
    Store,
    /// A Cassandra (or ScyllaDB) keyspace: staged epochs and a fenced
    /// commit record (`store::cassandra`), resumable after a crash.
    Cassandra(CassandraConfig),
}

impl Job {
    /// The settings every commit of this job records, with the catalog it
    /// runs with (see [`RunSettings`]).
    pub fn settings(&self, catalog: Option<CatalogStamp>) -> RunSettings {
        RunSettings {
            partitions: self.partitions,
            epoch_ms: self.epoch_ms,
            slack_ms: self.slack_ms,
            allowed_lateness_ms: self.allowed_lateness_ms,
            dedup_horizon_ms: self.dedup_horizon_ms,
            windows_ms: self.windows_ms.clone(),
            group_by: self.group_by.iter().map(|key_type| key_type.as_str().to_string()).collect(),
            distinct_users: self.distinct_users,
            restate_within_ms: self.late.restate_within_ms(),
            catalog,
            log: match &self.source {
                // Offsets of a local input count its clicks in partition
                // order, as `tally log import` would have appended them.
                SourceSpec::File { .. } | SourceSpec::Generator(_) | SourceSpec::Log { .. } => "local".to_owned(),
                SourceSpec::Kafka { topic, .. } => format!("kafka topic {topic}"),
            },
        }
    }

    /// The job an empty file at `file` describes: every key at its default.
    pub fn defaults(file: &Path) -> Job {
        Job {
            name: read::default_name(file),
            file: file.to_path_buf(),
            source: SourceSpec::File { path: None },
            partitions: DEFAULT_PARTITIONS,
            epoch_ms: DEFAULT_EPOCH_MS,
            slack_ms: DEFAULT_SLACK_MS,
            allowed_lateness_ms: DEFAULT_ALLOWED_LATENESS_MS,
            dedup_horizon_ms: DEFAULT_DEDUP_HORIZON_MS,
            windows_ms: DEFAULT_WINDOWS_MS.to_vec(),
            early_results_ms: Some(DEFAULT_EARLY_RESULTS_MS),
            group_by: vec![KeyType::Ad, KeyType::Campaign, KeyType::Advertiser],
            distinct_users: true,
            late: LatePolicy::Restate { within_ms: DEFAULT_RESTATE_WITHIN_MS },
            sink: SinkSpec::File { path: None },
            catalog: None,
            log_retention_ms: DEFAULT_LOG_RETENTION_MS,
            rows_retention_ms: DEFAULT_ROWS_RETENTION_MS,
        }
    }

    /// Checks that the files the job needs up front exist: the catalog.
    ///
    /// Input and output paths are not checked here, since the CLI may
    /// override them.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        let Some(catalog) = &self.catalog else {
            return Ok(());
        };
        if catalog.is_file() {
            return Ok(());
        }
        let shown = std::path::absolute(catalog).unwrap_or_else(|_| catalog.clone());
        let reason =
            if shown.exists() { format!("not a file: {}", shown.display()) } else { format!("file not found: {}", shown.display()) };
        Err(ConfigError::Key { file: self.file.clone(), key: "catalog.path".to_string(), reason })
    }
}

/// Reads, parses and checks the job file at `path`, including that the
/// catalog file exists.
pub fn load(path: &Path) -> Result<Job, ConfigError> {
    let job = parse(&read_text(path)?, path)?;
    job.check_files()?;
    Ok(job)
}

/// Parses and checks job text as if read from `file` (used for messages and
/// to resolve relative paths). Touches no files.
pub fn parse(text: &str, file: &Path) -> Result<Job, ConfigError> {
    read::job(parse_table(text, file)?, file).map_err(|err| err.in_file(file.to_path_buf()))
}

/// `job` with its Kafka source's bootstrap servers replaced by `brokers`
/// (a `--brokers` flag). Refused for other sources, naming the key.
/// The job with `--cassandra HOSTS` in place of its `sink.hosts`.
pub fn with_cassandra(mut job: Job, hosts: Option<&str>) -> Result<Job, ConfigError> {
    let Some(hosts) = hosts else { return Ok(job) };
    let error = |reason: String| ConfigError::Key { file: job.file.clone(), key: "sink.hosts".into(), reason };
    match &mut job.sink {
        SinkSpec::Cassandra(config) => {
            config.hosts = crate::store::cassandra::config::parse_hosts(hosts).map_err(|reason| error(format!("--cassandra {reason}")))?;
            Ok(job)
        }
        _ => Err(error("--cassandra is only valid for a job with sink.kind = \"cassandra\"".into())),
    }
}

pub fn with_brokers(mut job: Job, brokers: Option<&str>) -> Result<Job, ConfigError> {
    let Some(brokers) = brokers else { return Ok(job) };
    let error = |reason: String| ConfigError::Key { file: job.file.clone(), key: "source.brokers".into(), reason };
    match &mut job.source {
        SourceSpec::Kafka { brokers: current, .. } => {
            read::check_brokers(brokers).map_err(|reason| error(format!("--brokers {reason}")))?;
            *current = brokers.to_owned();
            Ok(job)
        }
        _ => Err(error("--brokers is only valid for a job with source.kind = \"kafka\"".into())),
    }
}
